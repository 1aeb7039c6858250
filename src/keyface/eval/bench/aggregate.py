"""From points to results: curves averaged over clips, BD-rate tables, rates at quality
targets, timing and versions."""

from __future__ import annotations

import math
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from keyface.eval.bench.cache import _num
from keyface.eval.bench.config import BenchConfig

# aggregation


def _mean(values: list[float | None]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def average_points(points: list[dict[str, Any]], cfg: BenchConfig) -> list[dict[str, Any]]:
    """Mean kbit/s and mean of each metric over the clips, per (codec, parameter)."""
    out = []
    for codec in cfg.codecs():
        for param in cfg.params(codec):
            group = [p for p in points if p["codec"] == codec and p["param"] == param]
            if not group:
                continue
            out.append(
                {
                    "codec": codec,
                    "param": param,
                    "param_name": "u" if cfg.is_keyface(codec) else "qp",
                    "clips": len(group),
                    "bytes": _num(float(np.mean([p["bytes"] for p in group])), 2),
                    "kbps": _num(float(np.mean([p["kbps"] for p in group]))),
                    "metrics": {
                        m: _num(_mean([p["metrics"].get(m) for p in group])) for m in cfg.metrics
                    },
                }
            )
    return out


def _curve(rows: list[dict[str, Any]], codec: str, metric: str) -> tuple[list[float], list[float]]:
    pts = [
        (r["kbps"], r["metrics"].get(metric))
        for r in rows
        if r["codec"] == codec and r["metrics"].get(metric) is not None and r["kbps"]
    ]
    return [p[0] for p in pts], [p[1] for p in pts]


def bd_table(
    averages: list[dict[str, Any]], points: list[dict[str, Any]], cfg: BenchConfig
) -> list[dict[str, Any]]:
    """BD-rate and BD-quality of keyface against each anchor, per metric: on the averaged
    curves (``scope: "average"``), per clip (``scope: "clip"``) and the mean of the per-clip
    values (``scope: "clip_mean"``)."""
    from keyface.eval.bdrate import inversion

    if not cfg.keyface:
        return []
    test = cfg.keyface_codec
    out = []
    for anchor in cfg.anchors:
        for metric in cfg.metrics:
            out.append(_bd_entry(averages, test, anchor, metric, "average", None, cfg))
            per_clip = [
                _bd_entry(
                    [p for p in points if p["clip"] == c.name],
                    test,
                    anchor,
                    metric,
                    "clip",
                    c.name,
                    cfg,
                )
                for c in cfg.clips
            ]
            out.extend(per_clip)
            summary: dict[str, Any] = {
                "test": test,
                "anchor": anchor,
                "metric": metric,
                "inversion": inversion(metric),
                "scope": "clip_mean",
                "clip": None,
            }
            for what in ("bd_rate", "bd_quality"):
                vals = [e[what]["value"] for e in per_clip if e[what]["value"] is not None]
                summary[what] = {
                    "value": _num(float(np.mean(vals))) if vals else None,
                    "reason": None if vals else "no clip gave a value",
                    "clips": len(vals),
                }
            out.append(summary)
    return out


def _bd_entry(
    rows: list[dict[str, Any]],
    test: str,
    anchor: str,
    metric: str,
    scope: str,
    clip: str | None,
    cfg: BenchConfig,
) -> dict[str, Any]:
    from keyface.eval.bdrate import bd_quality, bd_rate, inversion

    ra, qa = _curve(rows, anchor, metric)
    rt, qt = _curve(rows, test, metric)
    opts: dict[str, Any] = {"method": cfg.bd_method, "min_overlap": cfg.min_overlap}
    return {
        "test": test,
        "anchor": anchor,
        "metric": metric,
        "inversion": inversion(metric),
        "scope": scope,
        "clip": clip,
        "bd_rate": bd_rate(ra, qa, rt, qt, metric, **opts).to_json(),
        "bd_quality": bd_quality(ra, qa, rt, qt, metric, **opts).to_json(),
    }


def target_table(averages: list[dict[str, Any]], cfg: BenchConfig) -> list[dict[str, Any]]:
    """kbit/s each codec needs to reach each quality target, on its averaged curve."""
    from keyface.eval.bdrate import rate_at_quality

    out = []
    for metric, values in cfg.targets.items():
        if metric not in cfg.metrics:
            continue
        for codec in cfg.codecs():
            rates, quality = _curve(averages, codec, metric)
            for v in values:
                res = rate_at_quality(rates, quality, v, metric)
                out.append({"codec": codec, "metric": metric, "target": v, **res.to_json()})
    return out


def timing_summary(
    points: list[dict[str, Any]], metas: dict[str, dict[str, Any]], cfg: BenchConfig
) -> dict[str, Any]:
    """Mean seconds per point and per frame, per codec and per metric (from the point
    records, so cached points report the time they took when computed)."""
    per_codec = {}
    for codec in cfg.codecs():
        group = [p for p in points if p["codec"] == codec]
        if not group:
            continue
        frames = sum(p["frames"] for p in group)
        per_codec[codec] = {
            "points": len(group),
            **{
                f"{k}_s": _num(float(np.mean([p["seconds"][k] for p in group])), 3)
                for k in ("encode", "decode", "metrics", "total")
            },
            "total_s_per_frame": _num(sum(p["seconds"]["total"] for p in group) / frames, 4),
        }
    per_metric = {}
    for m in cfg.metrics:
        spent = sum(p["seconds"]["per_metric"].get(m, 0.0) for p in points)
        # Frames the metric was measured on (a sampled metric sees every N-th frame only).
        measured = sum(-(-p["frames"] // p.get("sampled", {}).get(m, 1)) for p in points)
        per_metric[m] = {
            "total_s": _num(spent, 2),
            "s_per_frame": _num(spent / measured, 5) if measured else None,
        }
    prep = {name: m.get("seconds", {}) for name, m in metas.items()}
    return {"per_codec": per_codec, "per_metric": per_metric, "prepare": prep}


def versions() -> dict[str, str]:
    """Versions of what the numbers depend on."""
    from importlib import metadata

    from keyface import __version__

    out = {"keyface": __version__, "python": platform.python_version()}
    for dist in ("numpy", "scipy", "torch", "av", "mediapipe", "imageio-ffmpeg", "bjontegaard"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    try:
        import av

        libs = getattr(av, "library_versions", {})
        if "libavcodec" in libs:
            out["libavcodec"] = ".".join(str(x) for x in libs["libavcodec"])
    except Exception:
        pass
    out["platform"] = platform.platform()
    out["cpus"] = str(os.cpu_count())
    root = Path(__file__).resolve().parents[3]
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if head.returncode == 0:
            dirty = subprocess.run(
                ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                timeout=10,
            )
            out["git"] = head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return out
