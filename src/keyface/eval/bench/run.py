"""The run: select, prepare, compute or reuse every point, aggregate, write ``points.json`` and
the report (:func:`run_bench`)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keyface.eval.bench.aggregate import (
    average_points,
    bd_table,
    target_table,
    timing_summary,
    versions,
)
from keyface.eval.bench.cache import _clip_dir, _point_key, _point_path, _write_json
from keyface.eval.bench.config import (
    SLOW_METRICS,
    BenchConfig,
    BenchError,
    check_metric_weights,
    keyface_mode,
)
from keyface.eval.bench.records import BenchReport, PointTask, PrepareTask
from keyface.eval.bench.runner import _bar, _cached_point, _Runner
from keyface.eval.bench.worker import _prep_is_cached, _safe_prepare, prepare_clip, run_point

# the run


@dataclass
class BenchResult:
    """What :func:`run_bench` returns: the ``points.json`` document and run counters."""

    data: dict[str, Any]
    computed: int
    cached: int
    failed: int
    out: Path


def _path(path: Path | None, keyface: bool) -> str | None:
    """A FOMM file a point task carries: keyface's points only."""
    return str(path) if path is not None and keyface else None


def run_bench(cfg: BenchConfig, *, log: Callable[[str], None] | None = None) -> BenchResult:
    """Run the benchmark; write ``points.json``, the RD plots and ``report.md`` into
    ``cfg.out``; return the document. Raises :class:`BenchError` for bad configurations."""
    say = log or (lambda _msg: None)
    if not cfg.clips:
        raise BenchError("no clips")
    if not cfg.codecs():
        raise BenchError("nothing to run: no keyface points and no anchors")
    if cfg.frames < 2:
        raise BenchError("--frames must be at least 2")
    if cfg.jobs < 1:
        raise BenchError("--jobs must be at least 1")
    if cfg.keyface:
        from keyface.renderers import UnknownRendererError, get_renderer

        try:
            get_renderer(cfg.generator)
        except UnknownRendererError as exc:
            raise BenchError(str(exc)) from None
    check_metric_weights(cfg.metrics)
    t_start = time.perf_counter()
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    out = cfg.out
    out.mkdir(parents=True, exist_ok=True)

    prep_tasks = [
        PrepareTask(
            clip=c.name,
            path=str(c.path),
            dir=str(_clip_dir(out, c.name)),
            frames=cfg.frames,
            size=cfg.size,
            force=cfg.force,
        )
        for c in cfg.clips
    ]
    metas: dict[str, dict[str, Any]] = {}
    failures: list[dict[str, Any]] = []
    computed = cached = 0
    persons = {c.name: c.person for c in cfg.clips}
    records: list[dict[str, Any]] = []

    # A fully cached run starts no worker process at all.
    with _Runner(cfg.jobs) as runner:
        need_prep = [t for t in prep_tasks if cfg.force or not _prep_is_cached(t)]
        bar = _bar(len(prep_tasks), "prepare clips", cfg.progress)
        done = [(t, prepare_clip(t)) for t in prep_tasks if t not in need_prep]
        for task, meta in [*done, *runner.map_unordered(_safe_prepare, need_prep)]:
            bar.update(1)
            if "error" in meta:
                failures.append({"clip": task.clip, "stage": "prepare", "error": meta["error"]})
                say(f"{task.clip}: skipped ({meta['error']})")
                continue
            metas[task.clip] = meta
        bar.close()

        point_tasks: list[PointTask] = []
        for c in cfg.clips:
            if c.name not in metas:
                continue
            for codec in cfg.codecs():
                for param in cfg.params(codec):
                    key = _point_key(cfg, codec, param)
                    path = _point_path(out, c.name, codec, param)
                    frames = metas[c.name]["frames"]
                    hit, partial = (
                        (None, None)
                        if cfg.force
                        else _cached_point(path, key, cfg.metrics, frames, cfg.slow_every)
                    )
                    if hit is not None:
                        records.append(hit)
                        cached += 1
                        continue
                    point_tasks.append(
                        PointTask(
                            clip=c.name,
                            person=c.person,
                            codec=codec,
                            param=param,
                            is_keyface=cfg.is_keyface(codec),
                            generator=cfg.generator,
                            preset=cfg.presets.get(codec),
                            metrics=tuple(cfg.metrics),
                            device=cfg.device,
                            dir=str(_clip_dir(out, c.name)),
                            path=str(path),
                            meta=metas[c.name],
                            key=key,
                            previous=partial,
                            slow_every=cfg.slow_every,
                            fomm_model=_path(cfg.fomm_model, cfg.is_keyface(codec)),
                            fomm_student=_path(cfg.fomm_student, cfg.is_keyface(codec)),
                        )
                    )
        # Slow jobs first (VVC, keyface decodes) so that the pool does not end on one long job.
        weight = {"vvc": 0} | {k: 1 for k in cfg.keyface_codecs()}
        point_tasks.sort(key=lambda t: (weight.get(t.codec, 2), t.clip))
        bar = _bar(len(point_tasks), "points", cfg.progress)
        for task, rec in runner.map_unordered(run_point, point_tasks):
            bar.update(1)
            if "error" in rec:
                failures.append({**rec, "stage": "point"})
                say(f"{task.clip} {task.codec} {task.param}: failed ({rec['error']})")
                continue
            records.append(rec)
            computed += 1
        bar.close()

    order = {c: i for i, c in enumerate(cfg.codecs())}
    clip_order = {c.name: i for i, c in enumerate(cfg.clips)}
    records.sort(key=lambda r: (clip_order[r["clip"]], order[r["codec"]], r["param"]))
    points = [
        {
            "clip": r["clip"],
            "person": persons[r["clip"]],
            "codec": r["codec"],
            "param": r["param"],
            "param_name": "u" if cfg.is_keyface(r["codec"]) else "qp",
            "bytes": r["bytes"],
            "kbps": r["kbps"],
            "frames": r["frames"],
            "metrics": {m: r["metrics"].get(m) for m in cfg.metrics},
            "sampled": {m: n for m, n in r.get("sampled", {}).items() if m in cfg.metrics},
            "info": r.get("info", {}),
            "seconds": r["seconds"],
        }
        for r in records
    ]
    averages = average_points(points, cfg)
    bd = bd_table(averages, points, cfg)
    targets = target_table(averages, cfg)
    wall = time.perf_counter() - t_start

    from keyface.eval.anchors import DEFAULT_PRESETS
    from keyface.eval.bdrate import inversion
    from keyface.eval.registry import METRICS

    report = BenchReport(
        protocol={
            "frames": cfg.frames,
            "size": cfg.size,
            "clips": [
                {
                    "clip": c.name,
                    "person": c.person,
                    "source": str(c.path),
                    "frames": metas[c.name]["frames"] if c.name in metas else None,
                    "fps": metas[c.name]["fps"] if c.name in metas else None,
                    "face_frames": metas[c.name].get("face_frames") if c.name in metas else None,
                }
                for c in cfg.clips
            ],
            "codecs": {
                codec: {
                    "param_name": "u" if cfg.is_keyface(codec) else "qp",
                    "params": cfg.params(codec),
                    **(
                        {"generator": cfg.generator, "mode": keyface_mode(codec)}
                        if cfg.is_keyface(codec)
                        else {"preset": cfg.presets.get(codec, DEFAULT_PRESETS[codec])}
                    ),
                }
                for codec in cfg.codecs()
            },
            "metrics": {
                m: {
                    "direction": METRICS[m].direction,
                    "unit": METRICS[m].unit,
                    "inversion": inversion(m),
                    "every": cfg.slow_every if m in SLOW_METRICS else 1,
                }
                for m in cfg.metrics
            },
            "device": cfg.device,
            "bd_method": cfg.bd_method,
            "bd_min_overlap": cfg.min_overlap,
            "targets": {m: list(v) for m, v in cfg.targets.items()},
            "command": cfg.command,
            "argv": list(sys.argv),
            "versions": versions(),
        },
        run={
            "started": started,
            "wall_seconds": round(wall, 2),
            "jobs": cfg.jobs,
            "computed": computed,
            "cached": cached,
            "failed": len(failures),
        },
        points=points,
        averages=averages,
        bd=bd,
        targets=targets,
        timing=timing_summary(points, metas, cfg),
        failures=failures,
    )
    data = report.to_json()
    _write_json(out / "points.json", data)
    from keyface.eval.report import write_report

    write_report(data, out)
    data["run"]["wall_seconds"] = round(time.perf_counter() - t_start, 2)
    _write_json(out / "points.json", data)
    return BenchResult(data, computed, cached, len(failures), out)
