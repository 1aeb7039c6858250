"""Quantisation, prediction and arithmetic coding of the motion stream."""

from keyface.entropy.motion_coder import (
    CodedFrame,
    MotionCoderState,
    MotionCodingError,
    MotionSnapshot,
    decode_frames,
    encode_frames,
)

__all__ = [
    "CodedFrame",
    "MotionCoderState",
    "MotionCodingError",
    "MotionSnapshot",
    "decode_frames",
    "encode_frames",
]
