"""Full-reference video quality metrics (PSNR, SSIM, MS-SSIM, VIF, VMAF, L1, LPIPS, DISTS,
AKD, AED) between a reference and a distorted video; see ``docs/metrics.md``.

Importing this package is cheap: torch models, mediapipe and dlib are loaded on first use.
"""

from keyface.eval.metrics import (
    METRICS,
    MetricsInputError,
    MetricSpec,
    VideoMetrics,
    compute_metrics,
    evaluate_videos,
    resolve_metrics,
)
from keyface.eval.weights import WeightsNotFoundError

__all__ = [
    "METRICS",
    "MetricSpec",
    "MetricsInputError",
    "VideoMetrics",
    "WeightsNotFoundError",
    "compute_metrics",
    "evaluate_videos",
    "resolve_metrics",
]
