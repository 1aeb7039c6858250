"""Reproducible rate-distortion benchmark: keyface against conventional codec anchors.

Protocol (JVET GFVC / DAC style; see ``docs/bench.md``):

1. every clip is cut to its first ``frames`` frames and cropped to the ``size`` x ``size`` face
   crop of :func:`keyface.pipeline.crop_video`, written once as raw 4:2:0 ``.y4m`` (no extra
   lossy generation). That file is both every codec's input and the metrics' reference;
2. keyface codes the crop as it is (``--no-crop``) at ladder positions ``u``
   (:func:`keyface.codec.ratecontrol.config_at`); the face-mesh analysis is done once per clip;
3. every anchor (:mod:`keyface.eval.anchors`) codes it at each of its QPs;
4. metrics (:func:`keyface.eval.metrics.compute_metrics`) compare decoded and reference frames;
   the rate is the real stream size over the clip's duration at its native frame rate;
5. curves are averaged over clips per (codec, parameter); BD-rate / BD-quality of keyface
   against each anchor (:mod:`keyface.eval.bdrate`) per metric, on the averaged curves and per
   clip.

Every finished (clip, codec, parameter) point is cached under ``OUT/cache/<clip>/`` so an
interrupted run resumes. Jobs run in a process pool, one compute thread each.

Modules, in the order of a run: ``config`` (defaults, :class:`BenchConfig`, option parsing),
``cache`` (paths, cached-point keys, the code digest), ``worker`` (what runs in the pool:
prepare a clip, compute a point), ``runner`` (the pool, progress, cache reuse), ``aggregate``
(averages, BD-rate, targets, timing), ``run`` (:func:`run_bench`); ``records`` holds the typed
tasks and points they pass. Clip manifests and splits
are :mod:`keyface.clips`.
"""

from keyface.eval.bench.aggregate import (
    average_points,
    bd_table,
    target_table,
    timing_summary,
    versions,
)
from keyface.eval.bench.cache import (
    POINT_ENTRY_MODULES,
    codec_dependencies,
    codec_digest,
    param_label,
)
from keyface.eval.bench.config import (
    ACCELERATOR_METRICS,
    DEFAULT_FRAMES,
    DEFAULT_METRICS,
    DEFAULT_SIZE,
    DEFAULT_TARGETS,
    DEFAULT_U,
    KEYFACE,
    SCHEMA,
    SLOW_METRICS,
    BenchConfig,
    BenchError,
    check_metric_weights,
    default_metrics,
    parse_metrics,
    parse_qps,
    parse_targets,
    parse_u,
    resolve_anchors,
)
from keyface.eval.bench.records import (
    BenchReport,
    PointRecord,
    PointTask,
    PrepareTask,
    ReportSchemaError,
)
from keyface.eval.bench.run import BenchResult, run_bench
from keyface.eval.bench.worker import load_analysis, prepare_clip, run_point

__all__ = [
    "ACCELERATOR_METRICS",
    "DEFAULT_FRAMES",
    "DEFAULT_METRICS",
    "DEFAULT_SIZE",
    "DEFAULT_TARGETS",
    "DEFAULT_U",
    "KEYFACE",
    "POINT_ENTRY_MODULES",
    "SCHEMA",
    "SLOW_METRICS",
    "BenchConfig",
    "BenchError",
    "BenchReport",
    "BenchResult",
    "PointRecord",
    "PointTask",
    "PrepareTask",
    "ReportSchemaError",
    "average_points",
    "bd_table",
    "check_metric_weights",
    "codec_dependencies",
    "codec_digest",
    "default_metrics",
    "load_analysis",
    "param_label",
    "parse_metrics",
    "parse_qps",
    "parse_targets",
    "parse_u",
    "prepare_clip",
    "resolve_anchors",
    "run_bench",
    "run_point",
    "target_table",
    "timing_summary",
    "versions",
]
