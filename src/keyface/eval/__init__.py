"""Full-reference video quality metrics (PSNR, SSIM, MS-SSIM, VIF, VMAF, L1, LPIPS, DISTS,
AKD, AED) between a reference and a distorted video; see ``docs/metrics.md``.

Importing this package is cheap: the metric registry (:mod:`keyface.eval.registry`) is plain
data; torch, the metric networks, mediapipe and dlib load when :func:`compute_metrics` or
:func:`evaluate_videos` is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from keyface.eval.registry import (
    METRIC_REGISTRY,
    METRICS,
    MetricsInputError,
    MetricSpec,
    resolve_metrics,
)
from keyface.eval.weights import WeightsNotFoundError

if TYPE_CHECKING:
    from keyface.eval.metrics import VideoMetrics, compute_metrics, evaluate_videos

_LAZY = ("VideoMetrics", "compute_metrics", "evaluate_videos")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from keyface.eval import metrics

        return getattr(metrics, name)
    raise AttributeError(f"module 'keyface.eval' has no attribute {name!r}")


__all__ = [
    "METRICS",
    "METRIC_REGISTRY",
    "MetricSpec",
    "MetricsInputError",
    "VideoMetrics",
    "WeightsNotFoundError",
    "compute_metrics",
    "evaluate_videos",
    "resolve_metrics",
]
