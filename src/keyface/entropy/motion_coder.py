"""Quantise, predict and arithmetic-code the per-frame motion (sans-I/O, deterministic).

Per frame the coder writes, in this order:

1. for a frame that is *not* a keyframe, the index of the reference it is rendered from
   (0 = newest entry of the reference buffer), with an adaptive categorical model;
2. the quantised motion parameters ``q = round(params / steps)`` as integer residuals
   ``r = q - q_prev`` against the previous frame (or, after a reset, ``r = q - round(mean /
   steps)``), each with a discrete Laplace model whose scale adapts to the recent residuals.

Encoder and decoder run the same :class:`MotionCoderState` updates, so they stay in lockstep;
the state is reset at the start of a stream and wherever a MOTION packet has its reset flag.
The arithmetic coder is ``constriction``'s range coder (32-bit words).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import constriction
import numpy as np

from keyface.motion.base import MotionStatistics, QuantLevel

SYMBOL_LIMIT = 1 << 20
"""Residuals are clamped to ``[-SYMBOL_LIMIT, SYMBOL_LIMIT - 1]`` (closed loop, never reached)."""
PARAM_RANGE_SPREADS = 256.0
"""Quantised parameters are bounded to ``|q - round(mean / step)| <= max(256 spread / step,
64)``: 256 times the spread of the training fits (log scale: +-7.4 around 4.0, so ``exp`` stays
far from overflow; translation: +-7500 px; field coefficients: >= +-1024 px, four times what
``keyface.motion.field.FIELD_LIMIT`` lets the encoder measure). :meth:`MotionCoderState.quantize`
clamps to it (a real fit never gets near); the decoder refuses a frame outside it (corrupt
motion behind a valid CRC, issue 14), so no dequantised parameter overflows what it feeds."""
MIN_SCALE = 0.15
ADAPT_RATE = 0.08
MAX_REFERENCES = 5
STRETCH_POWER = 0.5
"""A frame coded ``k`` frames after the state it continues from (live links,
:meth:`MotionCoderState.restore`) has its Laplace scales widened by ``k ** STRETCH_POWER``."""

_LAPLACE = constriction.stream.model.QuantizedLaplace(-SYMBOL_LIMIT, SYMBOL_LIMIT - 1)


class MotionCodingError(Exception):
    """The entropy-coded motion data cannot be decoded."""


@dataclass(frozen=True)
class MotionSnapshot:
    """The adaptive part of a :class:`MotionCoderState` after some frame: what a live link
    codes a later frame from (prediction from an acknowledged frame, docs/server.md)."""

    prev: np.ndarray | None
    scale: np.ndarray
    ref_counts: np.ndarray


@dataclass(frozen=True)
class CodedFrame:
    """What the entropy coder carries for one frame."""

    q: np.ndarray
    """``(D,)`` int64 quantised parameters."""
    reference: int | None
    """Index into the reference buffer (0 = newest); ``None`` for a keyframe."""


class MotionCoderState:
    """Adaptive state mirrored by encoder and decoder."""

    def __init__(self, level: QuantLevel, stats: MotionStatistics) -> None:
        self.steps = np.asarray(level.steps, dtype=np.float64)
        d = len(self.steps)
        self._prior_q = np.round(stats.mean[:d] / self.steps).astype(np.int64)
        self._abs_scale = np.maximum(stats.spread[:d] / self.steps, MIN_SCALE)
        self._delta_prior = np.maximum(stats.delta_spread[:d] / self.steps, MIN_SCALE)
        reach = np.ceil(np.maximum(PARAM_RANGE_SPREADS * stats.spread[:d] / self.steps, 64.0))
        self.q_min = self._prior_q - reach.astype(np.int64)
        """Smallest quantised value of each parameter a stream may carry."""
        self.q_max = self._prior_q + reach.astype(np.int64)
        """Largest quantised value of each parameter a stream may carry."""
        self.reset()

    @property
    def num_params(self) -> int:
        return len(self.steps)

    def reset(self) -> None:
        self._stretch = 1.0
        self.prev: np.ndarray | None = None
        self.scale = self._delta_prior.copy()
        self.ref_counts = np.ones(MAX_REFERENCES, dtype=np.float64)
        self.ref_counts[0] = 8.0

    def snapshot(self) -> MotionSnapshot:
        """A copy of the adaptive state (prediction, Laplace scales, reference model)."""
        return MotionSnapshot(
            None if self.prev is None else self.prev.copy(),
            self.scale.copy(),
            self.ref_counts.copy(),
        )

    def restore(self, snapshot: MotionSnapshot, distance: int = 1) -> None:
        """Continue from ``snapshot``, taken ``distance`` frames before the next one: that
        frame is predicted from the snapshot's frame, with the Laplace scales widened by
        ``distance ** STRETCH_POWER`` (motion over several frames strays further; the scales
        adapt to the per-frame figure again)."""
        if len(snapshot.scale) != self.num_params:
            raise ValueError("snapshot of another motion coder")
        if distance < 1:
            raise ValueError("distance must be >= 1")
        self.prev = None if snapshot.prev is None else snapshot.prev.copy()
        self.scale = snapshot.scale.copy()
        self.ref_counts = snapshot.ref_counts.copy()
        self._stretch = float(distance) ** STRETCH_POWER

    def quantize(self, params: np.ndarray) -> np.ndarray:
        """``round(params / steps)``, clamped to ``[q_min, q_max]``."""
        p = np.asarray(params, dtype=np.float64)[: self.num_params]
        if not np.all(np.isfinite(p)):
            raise ValueError("motion parameters must be finite")
        return np.clip(np.round(p / self.steps), self.q_min, self.q_max).astype(np.int64)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        return np.asarray(q, dtype=np.float64) * self.steps

    def _model(self) -> tuple[np.ndarray, np.ndarray]:
        """(prediction, Laplace scale) for the next frame."""
        if self.prev is None:
            return self._prior_q, self._abs_scale
        if self._stretch != 1.0:
            return self.prev, self.scale * self._stretch
        return self.prev, self.scale

    def _update(self, q: np.ndarray, reference: int | None) -> None:
        if self.prev is not None:
            r = np.abs(q - self.prev).astype(np.float64) / self._stretch
            self.scale = np.maximum((1 - ADAPT_RATE) * self.scale + ADAPT_RATE * r, MIN_SCALE)
        self._stretch = 1.0
        self.prev = q.copy()
        if reference is not None:
            self.ref_counts[reference] += 1.0
            if self.ref_counts.sum() > 1024:
                self.ref_counts = np.maximum(self.ref_counts / 2, 1.0)

    def _ref_model(self) -> constriction.stream.model.Categorical:
        return constriction.stream.model.Categorical(
            self.ref_counts / self.ref_counts.sum(), perfect=False
        )


def encode_frames(state: MotionCoderState, frames: Sequence[CodedFrame]) -> bytes:
    """Entropy-code ``frames`` (advancing ``state``); returns the payload bytes."""
    encoder = constriction.stream.queue.RangeEncoder()
    for frame in frames:
        if frame.reference is not None:
            if not 0 <= frame.reference < MAX_REFERENCES:
                raise ValueError(f"reference index {frame.reference} out of range")
            encoder.encode(np.array([frame.reference], dtype=np.int32), state._ref_model())
        pred, scale = state._model()
        q = np.asarray(frame.q, dtype=np.int64)
        if q.shape != (state.num_params,):
            raise ValueError(f"expected {state.num_params} parameters, got {q.shape}")
        r = np.clip(q - pred, -SYMBOL_LIMIT, SYMBOL_LIMIT - 1)
        encoder.encode(r.astype(np.int32), _LAPLACE, np.zeros(len(r)), scale.astype(np.float64))
        state._update(pred + r, frame.reference)
    words = encoder.get_compressed()
    return np.asarray(words, dtype="<u4").tobytes()


def decode_frames(
    state: MotionCoderState, data: bytes, is_keyframe: Sequence[bool]
) -> list[CodedFrame]:
    """Decode one payload holding ``len(is_keyframe)`` frames (advancing ``state``)."""
    if len(data) % 4:
        raise MotionCodingError(f"motion payload length {len(data)} is not a multiple of 4")
    words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
    decoder = constriction.stream.queue.RangeDecoder(words)
    out: list[CodedFrame] = []
    try:
        for key in is_keyframe:
            reference = None
            if not key:
                reference = int(decoder.decode(state._ref_model(), 1)[0])
            pred, scale = state._model()
            r = np.asarray(
                decoder.decode(_LAPLACE, np.zeros(len(pred)), scale.astype(np.float64)),
                dtype=np.int64,
            )
            q = pred + r
            bad = np.flatnonzero((q < state.q_min) | (q > state.q_max))
            if len(bad):
                d = int(bad[0])
                raise MotionCodingError(
                    f"corrupt motion payload (frame {len(out)} of the packet: parameter {d} "
                    f"= {int(q[d])} steps, outside {int(state.q_min[d])}..{int(state.q_max[d])})"
                )
            state._update(q, reference)
            out.append(CodedFrame(q=q, reference=reference))
    except (ValueError, RuntimeError, AssertionError) as exc:
        raise MotionCodingError(f"corrupt motion payload ({exc})") from None
    return out
