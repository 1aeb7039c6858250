"""Training-free fusions of the animated frame with the decoded auxiliary frame.

* :class:`BandFusion` (``"band"``): the auxiliary frame's low band plus the animation's high band,
  ``up(aux) + anim - up(down(anim))``. The baseline of ``benchmarks/hybrid_feasibility.py``:
  worse than the animation alone on LPIPS (blocking magnified, ghosts where the animation is
  displaced; docs/hybrid.md). Kept for the ablation.
* :class:`AlignedFusion` (``"aligned"``): the animation aligned to the auxiliary frame's geometry
  first (optical flow at low resolution), then corrected by the auxiliary frame only in its low
  band and only where the two disagree by more than coding noise, and replaced by the
  (deblocked) upsampled auxiliary frame where the aligned animation still disagrees strongly.
  See docs/fusion.md for the measurements behind each constant.

Pure numpy + OpenCV, stateless (each frame alone), deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


def check_pair(animated: np.ndarray, aux: np.ndarray) -> int:
    """The downscale factor between an animated frame and its auxiliary frame (2, 4 or 8);
    ``ValueError`` for frames that do not fit together."""
    if animated.ndim != 3 or animated.shape[2] != 3 or animated.shape[0] != animated.shape[1]:
        raise ValueError(f"animated frame must be (S, S, 3), got {animated.shape}")
    if aux.ndim != 3 or aux.shape[2] != 3 or aux.shape[0] != aux.shape[1]:
        raise ValueError(f"aux frame must be (s, s, 3), got {aux.shape}")
    if animated.dtype != np.uint8 or aux.dtype != np.uint8:
        raise ValueError("animated and aux frames must be uint8")
    size, small = animated.shape[0], aux.shape[0]
    scale = size // small if small else 0
    if scale not in (2, 4, 8) or scale * small != size:
        raise ValueError(f"aux frame {small}x{small} is not 1/2, 1/4 or 1/8 of {size}x{size}")
    return scale


def upsample_aux(aux: np.ndarray, size: int) -> np.ndarray:
    """The auxiliary frame upsampled to ``size`` (bicubic, uint8): ``--aux-only`` decoding."""
    return cv2.resize(aux, (size, size), interpolation=cv2.INTER_CUBIC)


def _down(image: np.ndarray, small: int) -> np.ndarray:
    return cv2.resize(image, (small, small), interpolation=cv2.INTER_AREA)


def _up(image: np.ndarray, size: int) -> np.ndarray:
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_CUBIC)


_THIRDS = np.full(3, 1.0 / 3.0, np.float32)


def _to_u8(image: np.ndarray) -> np.ndarray:
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


class NoFusion:
    """The animated frame as it is (the aux picture is still decoded and kept): the ablation
    baseline, and ``keyface decode --fusion none``."""

    name = "none"

    def fuse(self, animated: np.ndarray, aux: np.ndarray) -> np.ndarray:
        check_pair(animated, aux)
        return animated


class BandFusion:
    """``up(aux) + anim - up(down(anim))`` (module doc)."""

    name = "band"

    def fuse(self, animated: np.ndarray, aux: np.ndarray) -> np.ndarray:
        check_pair(animated, aux)
        size, small = animated.shape[0], aux.shape[0]
        a = animated.astype(np.float32)
        low = _up(_down(a, small), size)
        return _to_u8(_up(aux.astype(np.float32), size) + (a - low))


@dataclass(frozen=True)
class AlignedParams:
    """The constants of :class:`AlignedFusion`, tuned on training people (docs/fusion.md)."""

    flow_side: int = 64
    """Optical flow is estimated at this resolution (the auxiliary frame and the animation's low
    band resized to it): 64 for a 256x256 frame whatever the aux scale, 1.8 ms on one thread."""
    flow_limit: float = 0.06
    """Largest displacement the alignment accepts, as a share of the frame side."""
    core: float = 16.0
    """Low-band differences (RMS over the colours, levels) well below this are coding noise of
    the auxiliary frame and dropped; well above it they are kept whole."""
    core_noise: float = 0.0
    """Experimental (0: off): the coring threshold rises to this many times the frame's median
    RMS low-band difference (an estimate of the aux stream's noise)."""
    corr_sigma: float = 1.5
    """Gaussian blur (auxiliary pixels) of the low-band correction: its block edges go."""
    fallback: float = 40.0
    """Local RMS low-band disagreement (levels) after alignment at which the animation is
    half replaced by the upsampled auxiliary frame."""
    min_ncc: float = 0.0
    """Below this local correlation of the two low bands (where the auxiliary frame has
    structure) the animation is replaced by the upsampled auxiliary frame (``-1``: never)."""
    frame_gate: tuple[float, float] = (0.6, 0.9)
    """Mean confidence over the frame below which the animation is dropped whole, and above
    which it is kept where it is locally trusted (in between: linear). A wrong animation (the
    wrong face, a lost reference) then shows the auxiliary frame instead of two overlaid."""


class AlignedFusion:
    """Align, correct the low band where needed, fall back where the animation cannot be placed
    (module doc)."""

    name = "aligned"

    def __init__(self, params: AlignedParams | None = None) -> None:
        self.params = params or AlignedParams()
        self._dis: dict[int, cv2.DISOpticalFlow] = {}
        self._grid: dict[int, np.ndarray] = {}

    def _flow(self, side: int) -> cv2.DISOpticalFlow:
        if side not in self._dis:
            dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
            dis.setPatchSize(8)
            dis.setPatchStride(3)
            dis.setFinestScale(0)
            dis.setGradientDescentIterations(16)
            dis.setVariationalRefinementIterations(5)
            dis.setVariationalRefinementAlpha(20.0)
            self._dis[side] = dis
        return self._dis[side]

    def _mesh(self, size: int) -> np.ndarray:
        """``(size, size, 2)`` pixel coordinates (x, y)."""
        if size not in self._grid:
            g = np.arange(size, dtype=np.float32)
            self._grid[size] = np.stack(np.meshgrid(g, g), axis=2)
        return self._grid[size]

    def parts(self, animated: np.ndarray, aux: np.ndarray) -> dict[str, np.ndarray]:
        """The fusion's intermediate pictures: ``aligned`` animation (uint8), ``aux_up``
        (upsampled, uint8), ``confidence`` (full resolution, float32 0..1; 1: the corrected
        animation, 0: ``aux_up``) and ``fused`` (uint8)."""
        check_pair(animated, aux)
        p = self.params
        size, small = animated.shape[0], aux.shape[0]
        low_anim = _down(animated, small)
        # Flow from the aux frame to the animation's low band, at flow_side pixels.
        side = p.flow_side
        ga = cv2.cvtColor(low_anim, cv2.COLOR_RGB2GRAY)
        gx = cv2.cvtColor(aux, cv2.COLOR_RGB2GRAY)
        if side > small:
            ga, gx = _up(ga, side), _up(gx, side)
        elif side < small:
            ga, gx = _down(ga, side), _down(gx, side)
        flow = self._flow(side).calc(gx, ga, None)
        limit = p.flow_limit * side
        norm = cv2.magnitude(flow[..., 0], flow[..., 1])[..., None]
        flow *= np.minimum(1.0, limit / np.maximum(norm, 1e-6))
        flow_full = cv2.resize(flow * (size / side), (size, size), interpolation=cv2.INTER_LINEAR)
        flow_full += self._mesh(size)
        aligned = cv2.remap(
            animated, flow_full, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        # Low-band disagreement after alignment, at aux resolution.
        x = aux.astype(np.float32)
        la = _down(aligned, small).astype(np.float32)
        d = x - la
        e2 = (d * d) @ _THIRDS
        core = p.core
        if p.core_noise > 0:
            core = max(core, p.core_noise * float(np.sqrt(np.median(e2))))
        keep = 1.0 - np.exp(-e2 / (core * core))  # coring: small differences are noise
        corr = d * keep[..., None]
        if p.corr_sigma > 0:
            corr = cv2.GaussianBlur(corr, (0, 0), p.corr_sigma)
        fused = cv2.add(aligned, _up(corr, size), dtype=cv2.CV_8U)
        conf = 1.0 / (1.0 + (cv2.GaussianBlur(e2, (0, 0), 1.0) / p.fallback**2) ** 2)
        if p.min_ncc > -1:
            conf = np.minimum(conf, self._ncc_gate(x @ _THIRDS, la @ _THIRDS))
        lo, hi = p.frame_gate
        conf = conf * float(np.clip((conf.mean() - lo) / max(hi - lo, 1e-6), 0.0, 1.0))
        aux_up = upsample_aux(aux, size)
        if conf.min() < 0.995:
            c = _up(conf, size).clip(0.0, 1.0)
            fused = cv2.blendLinear(fused, aux_up, c, 1.0 - c)
        else:
            c = np.ones((size, size), np.float32)
        return {"aligned": aligned, "aux_up": aux_up, "confidence": c, "fused": fused}

    def _ncc_gate(self, gx: np.ndarray, ga: np.ndarray) -> np.ndarray:
        """1 where the two low bands correlate locally (or the aux frame is flat there), falling
        to 0 below :attr:`AlignedParams.min_ncc`."""
        blur = lambda im: cv2.blur(im, (5, 5))  # noqa: E731
        mx, ma = blur(gx), blur(ga)
        vx = np.maximum(blur(gx * gx) - mx * mx, 0.0)
        va = np.maximum(blur(ga * ga) - ma * ma, 0.0)
        cov = blur(gx * ga) - mx * ma
        ncc = cov / np.sqrt(vx * va + 1e-3)
        flat = np.clip(1.0 - vx / 100.0, 0.0, 1.0)  # aux std below 10 levels: no evidence
        gate = np.clip((ncc - self.params.min_ncc) / 0.3, 0.0, 1.0)
        return np.maximum(gate, flat)

    def fuse(self, animated: np.ndarray, aux: np.ndarray) -> np.ndarray:
        return self.parts(animated, aux)["fused"]
