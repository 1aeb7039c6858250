"""The metrics by name: what each measures, which way is better, how fast it is and which
weights it needs. Plain data and the name resolution, no torch, so that the bench's parent
process and the CLI read it without loading the networks (:mod:`keyface.eval.metrics`
computes them)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from keyface.registry import Entry, Registry, Speed

PSNR_CAP_DB = 100.0
"""PSNR of identical frames (and the ceiling of any PSNR), so that means stay finite."""
VMAF_MODEL = "vmaf_v0.6.1"


class MetricsInputError(ValueError):
    """The two videos cannot be compared (size or length mismatch, unknown metric, ...)."""


@dataclass(frozen=True)
class MetricSpec:
    """What a metric's numbers mean."""

    direction: str  # "higher" or "lower" is better
    range: tuple[float, float]  # possible values (math.inf where unbounded)
    description: str
    unit: str = ""


METRIC_REGISTRY: Registry[MetricSpec] = Registry("metric", error=MetricsInputError)
"""Every metric by name, with its speed class (``slow``: sampled every N-th frame by the bench,
on request only in interactive use) and the weight packages it needs
(``keyface.eval.weights.WEIGHT_PACKAGES``)."""


def _metric(
    name: str,
    spec: MetricSpec,
    *,
    speed: Speed = "fast",
    weights: tuple[str, ...] = (),
) -> None:
    METRIC_REGISTRY.add(Entry(name, lambda: spec, spec.description, speed, weights))


_metric("psnr", MetricSpec("higher", (0.0, PSNR_CAP_DB), "PSNR over RGB, identical = 100", "dB"))
_metric(
    "psnr_y", MetricSpec("higher", (0.0, PSNR_CAP_DB), "PSNR of BT.601 Y, identical = 100", "dB")
)
_metric("ssim", MetricSpec("higher", (-1.0, 1.0), "SSIM of luma, Gaussian 11x11 sigma 1.5"))
_metric("ms_ssim", MetricSpec("higher", (0.0, 1.0), "MS-SSIM of luma, 5 scales"))
_metric("vif", MetricSpec("higher", (0.0, math.inf), "pixel-domain VIF of luma (1 = identical)"))
_metric("vmaf", MetricSpec("higher", (0.0, 100.0), f"VMAF ({VMAF_MODEL}, libvmaf)"))
_metric("l1", MetricSpec("lower", (0.0, 1.0), "mean absolute RGB error on a 0..1 scale"))
_metric(
    "lpips_alex",
    MetricSpec("lower", (0.0, math.inf), "LPIPS v0.1, AlexNet"),
    weights=("lpips-alexnet",),
)
_metric(
    "lpips_vgg",
    MetricSpec("lower", (0.0, math.inf), "LPIPS v0.1, VGG16"),
    speed="slow",
    weights=("lpips-vgg16",),
)
_metric(
    "dists",
    MetricSpec("lower", (0.0, 1.0), "DISTS (VGG16 structure + texture)"),
    speed="slow",
    weights=("lpips-vgg16", "dists"),
)
_metric(
    "akd", MetricSpec("lower", (0.0, math.inf), "mean distance of 478 face-mesh landmarks", "px")
)
_metric(
    "lpips_mouth",
    MetricSpec("lower", (0.0, math.inf), "LPIPS-Alex of the mouth region (reference landmarks)"),
    weights=("lpips-alexnet",),
)
_metric(
    "lpips_mouth_open",
    MetricSpec(
        "lower",
        (0.0, math.inf),
        "LPIPS-Alex of the mouth region on frames whose reference mouth is open",
    ),
    weights=("lpips-alexnet",),
)
_metric(
    "lpips_eyes",
    MetricSpec("lower", (0.0, math.inf), "LPIPS-Alex of the eye regions (reference landmarks)"),
    weights=("lpips-alexnet",),
)
_metric(
    "eye_state",
    MetricSpec("lower", (0.0, 1.0), "share of frames whose eye open/closed state differs"),
)
_metric(
    "gaze_off",
    MetricSpec("lower", (0.0, 1.0), "share of frames whose open eyes look elsewhere"),
)
_metric(
    "mouth_open",
    MetricSpec("lower", (0.0, math.inf), "|mouth opening (inner-lip gap / width) difference|"),
)
_metric(
    "flicker",
    MetricSpec(
        "lower", (0.0, 255.0), "error of the frame-to-frame change outside the face", "grey"
    ),
)
_metric(
    "aed",
    MetricSpec("lower", (0.0, math.inf), "L2 distance of dlib face identity embeddings"),
    speed="slow",
    weights=("dlib-identity",),
)

REGION_GROUP = (
    "lpips_mouth",
    "lpips_mouth_open",
    "lpips_eyes",
    "eye_state",
    "gaze_off",
    "mouth_open",
    "flicker",
)
"""What ``regions`` stands for in a metric list."""

DEFAULT_EVAL_METRICS: tuple[str, ...] = (
    "psnr",
    "ssim",
    "ms_ssim",
    "vmaf",
    "lpips_alex",
    "dists",
    "akd",
)
"""What ``keyface eval`` computes unless ``--metrics`` says otherwise: the metrics papers on
generative face video report first, the bench's default set plus DISTS. DISTS is slow (VGG16)
and is measured on 1 frame in :data:`EVAL_SLOW_EVERY`, as ``make bench`` does; LPIPS-VGG, AED,
VIF and the region metrics are on request. Before issue 17 the default was every metric on
every frame: 898 s for 216 frames at 256x256 (4.2 s a frame, LPIPS-VGG 2.6 s and DISTS 1.0 s of
it). Measured here (``python benchmarks/eval_speed.py --metrics none --default --frames 50``,
shared 2-core CPU): the default set 0.162 s a frame, every metric on every frame 3.41 s. The
time per frame of each metric is in :data:`SECONDS_PER_FRAME`."""

EVAL_SLOW_EVERY = 25
"""``keyface eval`` measures the slow metrics on 1 frame in this many (``--slow-every``; the
same stride as ``make bench``)."""

SECONDS_PER_FRAME: dict[str, float] = {
    "psnr": 0.0066,
    "psnr_y": 0.0018,
    "ssim": 0.0125,
    "ms_ssim": 0.0146,
    "vif": 0.0202,
    "vmaf": 0.0131,
    "l1": 0.0053,
    "lpips_alex": 0.0793,
    "lpips_vgg": 1.406,
    "dists": 1.304,
    "akd": 0.0153,
    "lpips_mouth": 0.0246,
    "lpips_mouth_open": 0.0484,
    "lpips_eyes": 0.0304,
    "eye_state": 0.0218,
    "gaze_off": 0.0135,
    "mouth_open": 0.0177,
    "flicker": 0.0166,
    "aed": 0.2618,
}
"""Seconds per 256x256 frame pair of each metric computed alone, every frame, one thread
(``python benchmarks/eval_speed.py --frames 24 --default``: carphone's face crop against its
``--quality low`` round trip; 2-core CPU shared with two other jobs, load average 2.7-3.9).
The region metrics and AKD share one landmark pass when asked for together. ``lpips_mouth_open``
came later and was timed in a run of its own on a busier CPU (load average 4.9; lpips_mouth
read 73 ms there), so it reads high against the others; ``gaze_off`` came later still, timed
with ``--metrics gaze_off,eye_state`` on a quiet CPU (eye_state read 13.2 ms there)."""

METRICS: dict[str, MetricSpec] = {name: METRIC_REGISTRY.get(name) for name in METRIC_REGISTRY}
"""``name -> MetricSpec`` in registry order (the order reports use)."""

ALIASES = {
    "lpips": "lpips_alex",
    "lpips_vgg16": "lpips_vgg",
    "msssim": "ms_ssim",
    "vifp": "vif",
    "mae": "l1",
    "psnr_rgb": "psnr",
}


def resolve_eval_metrics(names: Sequence[str] | str | None) -> list[str]:
    """:func:`resolve_metrics`, where ``None`` (or an empty string) means
    :data:`DEFAULT_EVAL_METRICS` and ``default`` in a list stands for them."""
    if names is None or (isinstance(names, str) and not names.strip()):
        return resolve_metrics(DEFAULT_EVAL_METRICS)
    if isinstance(names, str):
        names = names.split(",")
    expanded: list[str] = []
    for raw in names:
        if raw.strip().lower() == "default":
            expanded.extend(DEFAULT_EVAL_METRICS)
        elif raw.strip():
            expanded.append(raw)
    return resolve_metrics(expanded)


def resolve_metrics(names: Sequence[str] | str | None) -> list[str]:
    """Canonical metric names, in :data:`METRICS` order; ``None`` means all of them.

    Accepts a comma-separated string, any case, ``-`` for ``_`` and a few aliases
    (``lpips`` = ``lpips_alex``).
    """
    if names is None:
        return list(METRICS)
    if isinstance(names, str):
        names = [n for n in names.split(",") if n.strip()]
    wanted = set()
    for raw in names:
        name = raw.strip().lower().replace("-", "_")
        name = ALIASES.get(name, name)
        if name == "all":
            wanted.update(METRICS)
            continue
        if name == "regions":  # where viewers look: mouth, eyes, flicker (eval/regions.py)
            wanted.update(REGION_GROUP)
            continue
        if name not in METRICS:
            raise MetricsInputError(
                f"unknown metric {raw.strip()!r}; choose from {', '.join(METRICS)}"
            )
        wanted.add(name)
    if not wanted:
        raise MetricsInputError("no metric named")
    return [n for n in METRICS if n in wanted]


__all__ = [
    "ALIASES",
    "DEFAULT_EVAL_METRICS",
    "EVAL_SLOW_EVERY",
    "METRICS",
    "METRIC_REGISTRY",
    "PSNR_CAP_DB",
    "SECONDS_PER_FRAME",
    "VMAF_MODEL",
    "MetricSpec",
    "MetricsInputError",
    "resolve_eval_metrics",
    "resolve_metrics",
]
