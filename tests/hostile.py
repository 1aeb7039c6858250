"""Crafting hostile keyface streams for tests and the fuzzer (issue 14).

Every record keeps a valid CRC (``bytes(packet)`` recomputes it), so the damage reaches past
the container parser into the decoder: the kind of input that found the decoder's defects.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from keyface.bitstream import MotionPacket, Packet, StreamHeader, read_stream
from keyface.codec.decoder import DecoderCore
from keyface.entropy import MotionCoderState
from keyface.entropy.motion_coder import CodedFrame, encode_frames


def split(data: bytes) -> tuple[StreamHeader, list[Packet]]:
    """A whole valid stream as its header and packets."""
    parsed = read_stream(data)
    assert parsed.header is not None and parsed.error is None, parsed.error
    return parsed.header, list(parsed.packets)


def join(header: StreamHeader, packets: Sequence[Packet]) -> bytes:
    """Header and packets as bytes, without ``write_stream``'s stream-level checks (a
    hostile stream breaks them on purpose); every CRC is valid."""
    return bytes(header) + b"".join(bytes(p) for p in packets)


def motion_state(header: StreamHeader) -> MotionCoderState:
    """A fresh motion coder state for ``header`` (as the decoder has after a reset)."""
    return DecoderCore(header).state


def crafted_motion(
    header: StreamHeader,
    first_frame: int,
    q: Sequence[np.ndarray],
    references: Sequence[int | None],
) -> MotionPacket:
    """A reset MOTION packet that codes the quantised parameters ``q`` as they are (no
    clamping), with a valid CRC."""
    state = motion_state(header)
    frames = [
        CodedFrame(q=np.asarray(x, dtype=np.int64), reference=r)
        for x, r in zip(q, references, strict=True)
    ]
    data = encode_frames(state, frames)
    return MotionPacket(first_frame=first_frame, n_frames=len(frames), reset=True, data=data)


def neutral_q(header: StreamHeader) -> np.ndarray:
    """The quantised neutral motion of ``header``'s representation (a centred face)."""
    decoder = DecoderCore(header)
    return decoder.state.quantize(decoder.representation.neutral())
