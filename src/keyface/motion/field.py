"""Body motion: a coarse field of displacements that corrects the warp where landmarks say nothing.

The face-mesh landmarks drive the face well, but the hair, the neck, the shoulders and the
background move on their own: a person leans, sways, shrugs, or the camera shakes. The warp
can only guess that motion from the head's, and it is where most of the warp's error is
(``docs/motion.md``). So the encoder measures it and sends it: per frame, a ``G x G`` grid
(``FIELD_GRID``) of 2-D displacements that the decoder adds to the warp's backward flow.

**Estimation (encoder).** The encoder takes the warp flow ``f`` of the frame exactly as the
decoder computes it without the field, renders the reference with it on a half-resolution grey
grid, measures the dense optical flow ``o`` from the real frame to that rendering (DIS), composes
the two, ``c(x) = f(x + o(x))``, and averages ``c - f`` over each of the ``G x G`` cells,
weighted away from the face (pixels of a 256 crop, ``REFERENCE_SIZE``).
The grid is sent as the low-frequency coefficients of its orthonormal 2-D DCT (coefficients
``(u, v)``, ``u`` along ``y``, with ``u + v <= FIELD_BANDS``, in order of ``u + v`` then
``u``; for each, its ``x`` then its ``y`` component), coarser at higher frequencies, and the
encoder holds a coefficient at its previous value while the measurement stays near it
(``FIELD_HOLD``).

**Synthesis (decoder, normative).** The inverse DCT of the coefficients (the others zero) gives
the ``G x G`` grid. It is upsampled to the picture with bilinear
interpolation, cell ``(i, j)`` sitting at the centre of its cell, ``((j + 0.5) W / G,
(i + 0.5) H / G)``, and edge cells extended beyond the outer centres (OpenCV's
``resize(INTER_LINEAR)`` does exactly this), scaled from 256-crop pixels to picture pixels,
weighted by :func:`body_weight` (0 inside the face oval of the frame's keypoints, 1 away from
it), and added to the warp's backward flow before sampling.

:class:`FaceMeshField` appends the grid to the face-mesh parameters, so the entropy coder, the
quantiser and the bitstream treat it as more motion parameters; a stream that has it names the
representation ``facemesh-pca-field`` in its header.
"""

from __future__ import annotations

from functools import cache

import cv2
import numpy as np

from keyface.facemesh import FACE_OVAL
from keyface.motion.base import REFERENCE_SIZE, FaceState, MotionStatistics, QuantLevel
from keyface.motion.facemesh_pca import FaceMeshPCA, default_facemesh_pca

FIELD_GRID = 4
"""Cells per side of the body-motion grid."""
FIELD_BANDS = 2
"""Coded DCT coefficients of the grid: those with ``u + v <= FIELD_BANDS`` (6 of the 16, so 12
parameters per frame); the others are zero. Chosen with ``benchmarks/motion_field.py``."""
FIELD_STEP = 2.0
"""Quantiser step of the DC coefficient (orthonormal DCT: 0.5 px of mean displacement in a
256 crop)."""
FIELD_BAND_GROWTH = 1.0
"""Step of a coefficient in band ``u + v``: ``FIELD_STEP * (1 + FIELD_BAND_GROWTH * (u + v))``."""
FIELD_SPREAD = 4.0
"""Prior mean absolute coefficient (entropy-coder start after a reset)."""
FIELD_DELTA_SPREAD = 1.0
"""Prior mean absolute frame-to-frame change of a coefficient (the coder adapts from it)."""
FIELD_HOLD = 0.5
"""Hysteresis of the encoder's quantiser, in steps: a coefficient keeps its previous value
unless the new measurement is more than ``0.5 + FIELD_HOLD`` steps away from it (the optical
flow jitters; without the hold that jitter would cost most of the grid's bits)."""
FACE_FEATHER = 0.06
"""Width of the ramp between the face (field off) and the body (field on): the Gaussian blur's
sigma as a share of the picture side."""
FIELD_LIMIT = 64.0
"""Displacements are clipped to +-this many 256-crop pixels (a quarter of the picture)."""


@cache
def _dis() -> cv2.DISOpticalFlow:
    return cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)


def body_weight(keypoints: np.ndarray, width: int, height: int) -> np.ndarray:
    """``(height, width)`` float32 weight of the field: 0 inside the face oval of ``keypoints``
    (the landmarks drive the face), 1 away from it, a smooth ramp across its outline.

    The oval is filled at a quarter of the resolution (``fillPoly``, keypoints divided by 4),
    blurred (Gaussian, sigma ``FACE_FEATHER * max(width, height) / 4``) and upsampled
    bilinearly."""
    qw, qh = max(width // 4, 1), max(height // 4, 1)
    oval = np.asarray(keypoints, dtype=np.float64)[list(FACE_OVAL), :2]
    scale = np.array([qw / width, qh / height])
    mask = np.zeros((qh, qw), np.float32)
    cv2.fillPoly(mask, [np.round(oval * scale).astype(np.int32)], 1.0)
    mask = cv2.GaussianBlur(mask, (0, 0), FACE_FEATHER * max(qw, qh))
    full = cv2.resize(mask, (width, height), interpolation=cv2.INTER_LINEAR)
    return 1.0 - full


def upsample_field(field: np.ndarray, width: int, height: int) -> np.ndarray:
    """The dense displacement ``(height, width, 2)`` float32, in picture pixels, of a
    ``(G, G, 2)`` grid given in 256-crop pixels (the normative synthesis above)."""
    grid = np.asarray(field, dtype=np.float32)
    if grid.ndim != 3 or grid.shape[2] != 2:
        raise ValueError(f"field must be (G, G, 2), got {grid.shape}")
    dense = cv2.resize(grid, (width, height), interpolation=cv2.INTER_LINEAR)
    dense[..., 0] *= width / REFERENCE_SIZE
    dense[..., 1] *= height / REFERENCE_SIZE
    return dense


def estimate_field(
    target: np.ndarray,
    reference: np.ndarray,
    flow: np.ndarray,
    grid: int = FIELD_GRID,
    weight: np.ndarray | None = None,
) -> np.ndarray:
    """The ``(grid, grid, 2)`` correction, in 256-crop pixels, that makes the warp of
    ``reference`` with backward ``flow`` land on ``target`` (both uint8 RGB).

    ``weight`` (``(H, W)``, e.g. :func:`body_weight`) says where the correction applies: each
    cell averages the measured correction with these weights (a cell with almost no weight
    gets 0). Everything runs on a half-resolution grey picture (about 1 ms at 256x256)."""
    height, width = target.shape[:2]
    hw, hh = max(width // 2, 8), max(height // 2, 8)
    # The warp's flow at the half-resolution pixel centres, and the grey warp sampled there.
    half_flow = cv2.resize(flow, (hw, hh), interpolation=cv2.INTER_LINEAR)
    grey_ref = cv2.cvtColor(reference, cv2.COLOR_RGB2GRAY)
    rendered = cv2.remap(
        grey_ref,
        half_flow[..., 0],
        half_flow[..., 1],
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    grey_t = cv2.resize(
        cv2.cvtColor(target, cv2.COLOR_RGB2GRAY), (hw, hh), interpolation=cv2.INTER_AREA
    )
    of = _dis().calc(grey_t, rendered, None)  # half-resolution pixels
    composed = compose_flow(half_flow, of)
    w = (
        np.ones((hh, hw), np.float32)
        if weight is None
        else cv2.resize(weight.astype(np.float32), (hw, hh), interpolation=cv2.INTER_AREA)
    )
    delta = (composed - half_flow) * w[..., None]
    sums = cv2.resize(delta, (grid, grid), interpolation=cv2.INTER_AREA)
    mass = cv2.resize(w, (grid, grid), interpolation=cv2.INTER_AREA)[..., None]
    cells = np.where(mass > 0.05, sums / np.maximum(mass, 0.05), 0.0).astype(np.float32)
    cells[..., 0] *= REFERENCE_SIZE / width
    cells[..., 1] *= REFERENCE_SIZE / height
    return np.clip(cells, -FIELD_LIMIT, FIELD_LIMIT).astype(np.float64)


def compose_flow(flow: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """``flow`` sampled at ``x + offset(x)`` (both ``(H, W, 2)`` float32, same size; bilinear,
    edges repeated): the backward flow that first follows ``offset``, then ``flow``."""
    height, width = offset.shape[:2]
    xs, ys = _grid(width, height)
    return cv2.remap(
        flow, xs + offset[..., 0], ys + offset[..., 1], cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )  # fmt: skip


@cache
def _grid(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    return xs, ys


class FaceMeshField:
    """Face-mesh motion plus the body-motion grid (``name = "facemesh-pca-field"``).

    Parameter layout: the face-mesh parameters of the level (``[rx, ry, rz, tx, ty, log_s,
    c_1 .. c_K]``), then the grid's coded DCT coefficients (``field_params`` of them, ``x`` and
    ``y`` of each in turn). :meth:`analyze` fills them with zeros (the grid needs pictures, not
    landmarks): the encoder measures it with :func:`estimate_field` and writes it with
    :meth:`with_field`.
    """

    name = "facemesh-pca-field"
    version = 1

    def __init__(self, base: FaceMeshPCA, grid: int = FIELD_GRID) -> None:
        self.base = base
        self.field_grid = grid
        self.digest = base.digest
        self.num_keypoints = base.num_keypoints
        self.mean = base.mean
        self._dct = _dct_matrix(grid)
        u, v = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
        order = np.argsort((u + v).ravel(), kind="stable")
        keep = order[(u + v).ravel()[order] <= FIELD_BANDS]
        self._keep = keep  # flat (u, v) indices of the coded DCT coefficients
        band = (u + v).ravel()[keep]
        self._steps = np.repeat(FIELD_STEP * (1.0 + FIELD_BAND_GROWTH * band), 2)

    @property
    def field_params(self) -> int:
        return 2 * len(self._keep)

    @property
    def num_params(self) -> int:
        return self.base.num_params + self.field_params

    @property
    def num_levels(self) -> int:
        return self.base.num_levels

    @property
    def statistics(self) -> MotionStatistics:
        s = self.base.statistics
        n = self.field_params
        return MotionStatistics(
            mean=np.concatenate([s.mean, np.zeros(n)]),
            spread=np.concatenate([s.spread, np.full(n, FIELD_SPREAD)]),
            delta_spread=np.concatenate([s.delta_spread, np.full(n, FIELD_DELTA_SPREAD)]),
        )

    def quant_level(self, level: int) -> QuantLevel:
        q = self.base.quant_level(level)
        steps = np.concatenate([q.steps, self._steps])
        return QuantLevel(num_params=q.num_params + self.field_params, steps=steps)

    def for_level(self, level: int) -> FaceMeshField:
        return FaceMeshField(self.base.for_level(level), self.field_grid)

    def analyze(self, landmarks: np.ndarray, size: int) -> np.ndarray:
        return np.concatenate([self.base.analyze(landmarks, size), np.zeros(self.field_params)])

    def with_field(self, params: np.ndarray, field: np.ndarray) -> np.ndarray:
        """``params`` with its grid part replaced by the coefficients of ``field``
        ``(G, G, 2)``."""
        d = self._dct
        grid = np.asarray(field, dtype=np.float64)
        coeffs = np.einsum("ui,ijc,vj->uvc", d, grid, d).reshape(-1, 2)[self._keep]
        out = np.array(params, dtype=np.float64)
        out[self.base.num_params :] = coeffs.reshape(-1)
        return out

    def quantize_field(
        self, params: np.ndarray, steps: np.ndarray, previous: np.ndarray | None
    ) -> np.ndarray:
        """``round(params / steps)``, the grid part held at ``previous`` (the last frame's
        quantised parameters) within the hysteresis ``FIELD_HOLD``."""
        x = np.asarray(params, dtype=np.float64) / steps
        q = np.round(x).astype(np.int64)
        if previous is not None:
            n = self.base.num_params
            prev = np.asarray(previous, dtype=np.int64)[n:]
            hold = np.abs(x[n:] - prev) <= 0.5 + FIELD_HOLD
            q[n:] = np.where(hold, prev, q[n:])
        return q

    def field(self, params: np.ndarray) -> np.ndarray:
        """The ``(G, G, 2)`` grid of ``params`` (256-crop pixels)."""
        g = self.field_grid
        coeffs = np.zeros((g * g, 2))
        coeffs[self._keep] = np.asarray(params, dtype=np.float64)[self.base.num_params :].reshape(
            -1, 2
        )
        d = self._dct
        return np.einsum("ui,uvc,vj->ijc", d, coeffs.reshape(g, g, 2), d)

    def keypoints(self, params: np.ndarray, size: int) -> np.ndarray:
        return self.base.keypoints(np.asarray(params)[: self.base.num_params], size)

    def neutral(self) -> np.ndarray:
        """The face mesh's neutral parameters and a still grid."""
        return np.concatenate([self.base.neutral(), np.zeros(self.field_params)])

    def gate_distance(self, reference: np.ndarray, current: np.ndarray) -> float:
        return self.base.gate_distance(reference, current)

    def face_state(self, keypoints: np.ndarray) -> FaceState:
        return self.base.face_state(keypoints)

    def detail_regions(self, keypoints: np.ndarray) -> dict[str, tuple[np.ndarray, ...]]:
        return self.base.detail_regions(keypoints)

    @property
    def field_component(self) -> FaceMeshField:
        """Itself: the grid is the parameters after the face mesh's."""
        return self


def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix ``(n, n)``: row ``u`` is basis function ``u``."""
    k = np.arange(n)
    d = np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n)) * np.sqrt(2.0 / n)
    d[0] /= np.sqrt(2.0)
    return d


@cache
def default_facemesh_field() -> FaceMeshField:
    """The shipped face-mesh model with the default grid, built once."""
    return FaceMeshField(default_facemesh_pca())
