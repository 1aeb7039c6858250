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
interrupted run resumes. Jobs run in a process pool, one torch thread each.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from keyface.clips import Clip
from keyface.eval.registry import METRIC_REGISTRY
from keyface.threads import child_environment

SCHEMA = "keyface-bench/1"
KEYFACE = "keyface"
DEFAULT_FRAMES = 125
DEFAULT_SIZE = 256
DEFAULT_U: tuple[float, ...] = (0.0, 0.3, 0.6, 0.9, 1.2, 1.5)

DEFAULT_METRICS: tuple[str, ...] = ("psnr", "ssim", "ms_ssim", "vmaf", "lpips_alex", "akd")
"""Metrics computed unless ``--metrics`` says otherwise (on a CPU device).

Measured on 256x256 frames, one torch thread, a shared 2-core machine: psnr + ssim + ms_ssim
+ vmaf + lpips_alex + akd together cost about 0.12 s a frame pair, while lpips_vgg and dists
cost about 1.5 s each and aed 0.3 s. The VGG metrics would make a 12-clip run take days on
CPU, so they are only in the default set on an accelerator (:data:`ACCELERATOR_METRICS`)."""

ACCELERATOR_METRICS: tuple[str, ...] = ("lpips_vgg", "dists")

SLOW_METRICS: tuple[str, ...] = tuple(METRIC_REGISTRY.names(speed="slow"))
"""Metrics that ``slow_every`` (``--slow-every N``) measures on every N-th frame only (frames
0, N, 2N, ...); the others always see every frame. A point records the stride of each
metric it measured sparsely under ``sampled``."""
"""Added to :data:`DEFAULT_METRICS` when the metrics run on a non-CPU torch device."""

DEFAULT_TARGETS: dict[str, tuple[float, ...]] = {"lpips_alex": (0.20, 0.15)}
"""Quality targets whose rate the report gives per codec (interpolated on averaged curves)."""


class BenchError(Exception):
    """Bad benchmark input (no clips, unknown codec, bad QP, ...): one line for the user."""


# --------------------------------------------------------------------------------------------
# configuration


@dataclass
class BenchConfig:
    """Everything a run depends on (what ``points.json`` records as its protocol)."""

    clips: list[Clip]
    out: Path = Path("results/bench")
    frames: int = DEFAULT_FRAMES
    size: int = DEFAULT_SIZE
    u_values: tuple[float, ...] = DEFAULT_U
    keyface: bool = True
    generator: str = "warp"
    anchors: tuple[str, ...] = ()
    qps: dict[str, tuple[int, ...]] = field(default_factory=dict)
    presets: dict[str, str] = field(default_factory=dict)
    metrics: tuple[str, ...] = DEFAULT_METRICS
    device: str = "cpu"
    targets: dict[str, tuple[float, ...]] = field(default_factory=lambda: dict(DEFAULT_TARGETS))
    jobs: int = 2
    force: bool = False
    progress: bool = True
    command: str = ""
    bd_method: str = "pchip"
    min_overlap: float = 0.0
    """BD values whose curves share at most this fraction of their range are reported null."""
    slow_every: int = 1
    """Measure :data:`SLOW_METRICS` on every N-th frame only (1: every frame)."""

    @property
    def keyface_codec(self) -> str:
        """Codec label of keyface in results: ``keyface``, or ``keyface-<generator>``."""
        return KEYFACE if self.generator == "warp" else f"{KEYFACE}-{self.generator}"

    def codecs(self) -> list[str]:
        return ([self.keyface_codec] if self.keyface else []) + list(self.anchors)

    def params(self, codec: str) -> list[float] | list[int]:
        if codec == self.keyface_codec:
            return [float(u) for u in self.u_values]
        return [int(q) for q in self.qps[codec]]


def default_metrics(device: str = "cpu") -> tuple[str, ...]:
    if str(device).startswith("cpu"):
        return DEFAULT_METRICS
    return DEFAULT_METRICS[:-1] + ACCELERATOR_METRICS + DEFAULT_METRICS[-1:]


def parse_metrics(text: str | None, device: str = "cpu") -> tuple[str, ...]:
    """``--metrics`` value: comma-separated names; ``default`` stands for the default set."""
    from keyface.eval.registry import MetricsInputError, resolve_metrics

    if text is None or not text.strip():
        return default_metrics(device)
    names: list[str] = []
    for raw in text.split(","):
        if raw.strip().lower() == "default":
            names.extend(default_metrics(device))
        elif raw.strip():
            names.append(raw)
    try:
        return tuple(resolve_metrics(names))
    except MetricsInputError as exc:
        raise BenchError(str(exc)) from None


def check_metric_weights(metrics: Iterable[str]) -> None:
    """Fail early (one line) when a learned metric's weights are not installed."""
    from keyface.eval import weights

    try:
        for m in metrics:
            weights.check_weights(METRIC_REGISTRY.entry(m).weights)
    except weights.WeightsNotFoundError as exc:
        raise BenchError(f"metric {m}: {exc}") from None


def resolve_anchors(text: str | None) -> tuple[str, ...]:
    """``--anchors`` value: names, ``all`` (every available anchor) or ``none``."""
    from keyface.eval.anchors import ANCHORS, anchor_available

    if text is None or text.strip().lower() == "all":
        return tuple(a for a in ANCHORS if anchor_available(a))
    if text.strip().lower() == "none":
        return ()
    out: list[str] = []
    for raw in text.split(","):
        name = raw.strip().lower()
        if not name:
            continue
        if name not in ANCHORS:
            raise BenchError(f"unknown anchor {raw.strip()!r}; choose from {', '.join(ANCHORS)}")
        if not anchor_available(name):
            raise BenchError(f"anchor {name} is not available here (encoder or decoder missing)")
        if name not in out:
            out.append(name)
    return tuple(out)


def parse_qps(items: Sequence[str] | None, anchors: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """QPs per anchor: :data:`keyface.eval.anchors.DEFAULT_QPS`, overridden by ``codec=a,b,c``
    items (several may be given, or one with ``;`` between codecs)."""
    from keyface.eval.anchors import ANCHORS, DEFAULT_QPS, QP_RANGES

    qps = {a: tuple(DEFAULT_QPS[a]) for a in anchors}
    for item in items or ():
        for part in item.split(";"):
            if not part.strip():
                continue
            codec, sep, values = part.partition("=")
            codec = codec.strip().lower()
            if not sep:
                raise BenchError(f"--qps {part!r}: expected CODEC=QP,QP,... (e.g. x264=35,40)")
            if codec not in ANCHORS:
                raise BenchError(
                    f"--qps: unknown anchor {codec!r}; choose from {', '.join(ANCHORS)}"
                )
            try:
                parsed = tuple(int(v) for v in values.split(",") if v.strip())
            except ValueError:
                raise BenchError(f"--qps {part!r}: QPs must be integers") from None
            lo, hi = QP_RANGES[codec]
            bad = [q for q in parsed if not lo <= q <= hi]
            if bad or not parsed:
                raise BenchError(f"--qps {codec}: QPs must be integers in [{lo}, {hi}]")
            if codec in qps:
                qps[codec] = tuple(sorted(set(parsed)))
    return qps


def parse_u(text: str | None) -> tuple[float, ...]:
    from keyface.codec.ratecontrol import U_MAX

    if text is None:
        return DEFAULT_U
    try:
        values = tuple(sorted({round(float(v), 4) for v in text.split(",") if v.strip()}))
    except ValueError:
        raise BenchError(f"--u {text!r}: expected numbers like 0,0.5,1") from None
    if not values or any(not 0.0 <= v <= U_MAX for v in values):
        raise BenchError(f"--u values must be in [0, {U_MAX}]")
    return values


def parse_targets(
    items: Sequence[str] | None, metrics: Sequence[str]
) -> dict[str, tuple[float, ...]]:
    """``METRIC=v1,v2`` items (default :data:`DEFAULT_TARGETS`); only computed metrics kept."""
    from keyface.eval.registry import MetricsInputError, resolve_metrics

    if not items:
        return {m: t for m, t in DEFAULT_TARGETS.items() if m in metrics}
    out: dict[str, tuple[float, ...]] = {}
    for item in items:
        name, sep, values = item.partition("=")
        if not sep:
            raise BenchError(f"--target {item!r}: expected METRIC=VALUE,VALUE")
        try:
            (metric,) = resolve_metrics([name])
            out[metric] = tuple(float(v) for v in values.split(",") if v.strip())
        except (MetricsInputError, ValueError) as exc:
            raise BenchError(f"--target {item!r}: {exc}") from None
        if metric not in metrics:
            raise BenchError(f"--target {metric}: that metric is not computed (see --metrics)")
    return out


# --------------------------------------------------------------------------------------------
# cache layout and small helpers


def param_label(codec: str, param: float | int) -> str:
    return f"qp{int(param)}" if not codec.startswith(KEYFACE) else f"u{float(param):.2f}"


def _clip_dir(out: Path, clip: str) -> Path:
    return out / "cache" / clip


def _point_path(out: Path, clip: str, codec: str, param: float | int) -> Path:
    return _clip_dir(out, clip) / f"{codec}_{param_label(codec, param)}.json"


def _write_json(path: Path, data: Any) -> None:
    """Write ``data`` atomically (a crash never leaves half a file for the next run)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, allow_nan=False) + "\n")
    os.replace(tmp, path)


def _read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _num(value: float | None, digits: int = 6) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)


def _fps_text(fps: Fraction) -> str:
    return f"{fps.numerator}/{fps.denominator}"


POINT_ENTRY_MODULES = ("keyface.pipeline", "keyface.renderers", "keyface.generator.renderer")
"""What computes a keyface point: the pipeline (crop, landmarks, encoder, decoder) and every
renderer. :func:`codec_dependencies` follows their imports from there."""
DATA_SUFFIXES = (".npz", ".safetensors", ".json")


def _source_root() -> Path:
    return Path(__file__).resolve().parents[2]  # the folder that holds the keyface package


@functools.cache
def codec_dependencies(root: Path | None = None) -> tuple[Path, ...]:
    """Every keyface source file a keyface point depends on (the import closure of
    :data:`POINT_ENTRY_MODULES`, imports inside functions included, found by reading the
    sources under ``root``), and the model files (``.npz``, ``.safetensors``, ``.json``) beside
    them: in a module's folder and in its sub-folders that are not packages (``weights/``,
    ``models/``)."""
    import ast

    root = root or _source_root()

    def source(module: str) -> Path | None:
        base = root.joinpath(*module.split("."))
        for path in (base.with_suffix(".py"), base / "__init__.py"):
            if path.is_file():
                return path
        return None

    seen: dict[str, Path] = {}
    todo = list(POINT_ENTRY_MODULES)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        path = source(module)
        if path is None:
            continue
        seen[module] = path
        parts = module.split(".")
        for i in range(1, len(parts)):  # a module's parent packages run first
            todo.append(".".join(parts[:i]))
        package = module if path.name == "__init__.py" else ".".join(parts[:-1])
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                todo += [a.name for a in node.names if a.name.startswith("keyface")]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                if base.startswith("keyface"):
                    todo.append(base)
                    todo += [f"{base}.{a.name}" for a in node.names]  # submodules by name
    files = set(seen.values())
    for folder in {p.parent for p in files}:
        data_dirs = [folder] + [
            d for d in folder.iterdir() if d.is_dir() and not (d / "__init__.py").exists()
        ]
        for d in data_dirs:
            files.update(p for p in d.rglob("*") if p.is_file() and p.suffix in DATA_SUFFIXES)
    return tuple(sorted(files))


@functools.cache
def codec_digest(root: Path | None = None) -> str:
    """SHA-256 (first 16 hex digits) of :func:`codec_dependencies`: a keyface point cached by
    another version of any of those files is computed again."""
    root = root or _source_root()
    digest = hashlib.sha256()
    for path in codec_dependencies(root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _point_key(cfg: BenchConfig, codec: str, param: float | int) -> dict[str, Any]:
    """What a cached point must match to be reused (besides containing the metrics asked)."""
    from keyface import __version__

    key: dict[str, Any] = {"codec": codec, "param": param, "keyface": __version__}
    if codec == cfg.keyface_codec:
        from keyface.codec.ratecontrol import config_at

        conf = dataclasses.asdict(config_at(float(param)))
        conf["refresh_mode"] = int(conf["refresh_mode"])
        key["config"] = conf
        key["generator"] = cfg.generator
        key["code"] = codec_digest()
    else:
        from keyface.eval.anchors import DEFAULT_PRESETS

        key["preset"] = cfg.presets.get(codec, DEFAULT_PRESETS[codec])
    return key


# --------------------------------------------------------------------------------------------
# worker side (module-level functions: they run in pool processes)


def _worker_init() -> None:
    """One compute thread per worker (the parent's environment says so, keyface.threads);
    Ctrl-C is handled by the parent, which stops the workers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from keyface.threads import apply_thread_policy

    apply_thread_policy()


def _source_stamp(path: Path) -> dict[str, Any]:
    """What identifies a clip's source: its path, size and content digest. Not its mtime: a
    copied or re-synced data folder must not throw the cached crops and points away."""
    st = path.stat()
    return {
        "source": str(path.resolve()),
        "source_bytes": st.st_size,
        "source_sha256": _sha256(str(path.resolve()), st.st_size, st.st_mtime_ns),
    }


@functools.cache
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    """SHA-256 of a file's content, read once per process while its size and mtime hold (the
    run checks each clip's stamp more than once)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def prepare_clip(task: dict[str, Any]) -> dict[str, Any]:
    """Crop ``frames`` frames of a clip to ``crop.y4m`` and analyse it (face mesh) once.

    Returns the clip's ``meta`` (frames, fps, crop box, timings), cached in ``meta.json``.
    A cached crop is reused when it was made from the same source with the same frame count
    and size; otherwise the clip's cache folder (points included) is cleared first.
    """
    from keyface.io.video import probe
    from keyface.pipeline import analyze, crop_video

    clip_dir = Path(task["dir"])
    source = Path(task["path"])
    want = {"frames_asked": task["frames"], "size": task["size"], **_source_stamp(source)}
    meta_path = clip_dir / "meta.json"
    meta = None if task["force"] else _read_json(meta_path)
    if meta and all(meta.get(k) == v for k, v in want.items()):
        if (clip_dir / "crop.y4m").is_file() and (clip_dir / "analysis.npz").is_file():
            meta["cached"] = True
            return meta
    if clip_dir.exists():
        shutil.rmtree(clip_dir)
    clip_dir.mkdir(parents=True)
    crop_path = clip_dir / "crop.y4m"
    t0 = time.perf_counter()
    box = crop_video(source, crop_path, size=task["size"], max_frames=task["frames"])
    crop_seconds = time.perf_counter() - t0
    analysis = analyze(crop_path, crop=False, max_frames=task["frames"])
    source_info = probe(source)
    marks = analysis.landmarks
    shape = next(lm.shape for lm in marks if lm is not None)
    array = np.full((len(marks), *shape), np.nan, dtype=np.float32)
    for i, lm in enumerate(marks):
        if lm is not None:
            array[i] = lm
    np.savez_compressed(
        clip_dir / "analysis.npz",
        landmarks=array,
        found=np.array([lm is not None for lm in marks]),
    )
    meta = {
        **want,
        "clip": task["clip"],
        "frames": analysis.frame_count,
        "fps": _fps_text(analysis.fps),
        "size": analysis.size,
        "source_size": [source_info.width, source_info.height],
        "crop_box": dataclasses.asdict(box),
        "face_frames": analysis.face_frames,
        "seconds": {"crop": round(crop_seconds, 3), "analyze": round(analysis.seconds, 3)},
    }
    _write_json(meta_path, meta)
    meta["cached"] = False
    return meta


def load_analysis(clip_dir: Path, meta: dict[str, Any]) -> Any:
    """The cached :class:`keyface.pipeline.Analysis` of a prepared clip (of ``crop.y4m``)."""
    from keyface.pipeline import Analysis

    data = np.load(clip_dir / "analysis.npz")
    marks = [lm if ok else None for lm, ok in zip(data["landmarks"], data["found"], strict=True)]
    return Analysis(
        path=clip_dir / "crop.y4m",
        fps=Fraction(meta["fps"]),
        size=int(meta["size"]),
        crop=None,
        landmarks=marks,
        source_size=(int(meta["size"]), int(meta["size"])),
    )


def _code_keyface(task: dict[str, Any], clip_dir: Path, meta: dict[str, Any]) -> dict[str, Any]:
    from dataclasses import replace

    from keyface.codec.ratecontrol import config_at
    from keyface.pipeline import decode_bytes, encode_analysis
    from keyface.renderers import get_renderer

    analysis = load_analysis(clip_dir, meta)
    config = replace(config_at(float(task["param"])), generator=task["generator"])
    t0 = time.perf_counter()
    result = encode_analysis(analysis, config)
    encode_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    decoded = decode_bytes(result.data, renderer=get_renderer(task["generator"]))
    decode_seconds = time.perf_counter() - t0
    if decoded.error is not None or len(decoded.frames) != analysis.frame_count:
        raise RuntimeError(
            f"decoded {len(decoded.frames)} of {analysis.frame_count} frames ({decoded.error})"
        )
    return {
        "bytes": len(result.data),
        "frames_out": [f.image for f in decoded.frames],
        "seconds": {"encode": encode_seconds, "decode": decode_seconds},
        "info": {
            "keyframes": result.stats.keyframes,
            "keyframe_bytes": result.stats.keyframe_bytes,
            "motion_bytes": result.stats.motion_bytes,
        },
    }


def _code_anchor(task: dict[str, Any], ref: list[np.ndarray], fps: Fraction) -> dict[str, Any]:
    from keyface.eval.anchors import encode_anchor

    r = encode_anchor(ref, fps, task["codec"], int(task["param"]), preset=task.get("preset"))
    return {
        "bytes": r.bytes,
        "frames_out": r.frames,
        "seconds": {"encode": r.encode_seconds, "decode": r.decode_seconds},
        "info": {"intra_frames": r.intra_frames, "in_order": r.in_order},
    }


def run_point(task: dict[str, Any]) -> dict[str, Any]:
    """Code, decode and measure one (clip, codec, parameter) point; cache and return it.

    Never raises: a failure comes back as ``{"error": ...}`` (and is not cached, so the next
    run tries again).
    """
    from keyface.eval.metrics import compute_metrics
    from keyface.io.video import read_frames

    t_start = time.perf_counter()
    clip_dir = Path(task["dir"])
    meta = task["meta"]
    try:
        fps = Fraction(meta["fps"])
        ref = [f.image for f in read_frames(clip_dir / "crop.y4m", meta["frames"])]
        if task["is_keyface"]:
            coded = _code_keyface(task, clip_dir, meta)
        else:
            coded = _code_anchor(task, ref, fps)
        t0 = time.perf_counter()
        previous = task.get("previous") or {}
        todo = [m for m in task["metrics"] if m not in previous.get("metrics", {})]
        every = int(task.get("slow_every", 1))
        dense = [m for m in todo if m not in SLOW_METRICS or every == 1]
        sparse = [m for m in todo if m not in dense]
        out_frames = coded["frames_out"]
        mean: dict[str, Any] = dict(previous.get("metrics", {}))
        notes: dict[str, Any] = dict(previous.get("notes", {}))
        per_metric: dict[str, float] = dict(previous.get("seconds", {}).get("per_metric", {}))
        sampled: dict[str, int] = dict(previous.get("sampled", {}))
        for names, step in ((dense, 1), (sparse, every)):
            if not names:
                continue
            measured = compute_metrics(
                ref[::step], out_frames[::step], names, device=task["device"]
            )
            mean.update({k: _num(v) for k, v in measured.mean.items()})
            notes.update(measured.notes)
            per_metric.update({k: round(v, 4) for k, v in measured.seconds.items()})
            if step > 1:
                sampled.update({k: step for k in names})
        metric_seconds = time.perf_counter() - t0
    except Exception as exc:
        return {
            "clip": task["clip"],
            "codec": task["codec"],
            "param": task["param"],
            "error": f"{type(exc).__name__}: {exc}",
        }
    n = len(ref)
    duration = float(n / fps)
    record = {
        "key": task["key"],
        "clip": task["clip"],
        "person": task["person"],
        "codec": task["codec"],
        "param": task["param"],
        "bytes": int(coded["bytes"]),
        "kbps": round(8 * coded["bytes"] / duration / 1000, 6),
        "frames": n,
        "metrics": mean,
        "notes": notes,
        "info": coded["info"],
        "seconds": {
            "encode": round(coded["seconds"]["encode"], 4),
            "decode": round(coded["seconds"]["decode"], 4),
            "metrics": round(metric_seconds, 4),
            "per_metric": per_metric,
            "total": round(time.perf_counter() - t_start, 4),
        },
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if sampled:
        record["sampled"] = sampled
    _write_json(Path(task["path"]), record)
    return record


# --------------------------------------------------------------------------------------------
# scheduling


class _Runner:
    """Runs jobs in-process (``jobs <= 1``, or a single job) or in a process pool started on
    first need and kept for later batches; stops its workers when left by an exception."""

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self.pool: ProcessPoolExecutor | None = None
        self._env: dict[str, str | None] = {}

    def __enter__(self) -> _Runner:
        return self

    def _start(self) -> ProcessPoolExecutor:
        if self.pool is None:
            import multiprocessing

            # Children inherit these: one compute thread each, the parallelism is the pool
            # (read by keyface.threads in the worker, before it imports torch).
            for k, v in child_environment(compute=1).items():
                self._env[k] = os.environ.get(k)
                os.environ[k] = v
            if "SVT_LOG" not in os.environ:  # SVT-AV1: errors only, not its banner per encode
                self._env["SVT_LOG"] = None
                os.environ["SVT_LOG"] = "1"
            self.pool = ProcessPoolExecutor(
                max_workers=self.jobs,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_init,
            )
        return self.pool

    def map_unordered(
        self, fn: Callable[[dict[str, Any]], dict[str, Any]], tasks: Sequence[dict[str, Any]]
    ) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """Yield ``(task, result)`` as jobs finish."""
        if self.jobs <= 1 or (len(tasks) <= 1 and self.pool is None):
            for task in tasks:
                yield task, fn(task)
            return
        pool = self._start()
        futures: dict[Future[dict[str, Any]], dict[str, Any]] = {
            pool.submit(fn, t): t for t in tasks
        }
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                try:
                    result = fut.result()
                except BrokenProcessPool:
                    raise BenchError(
                        "a worker process died (out of memory or a crash in native code); "
                        "finished points are cached: run again to resume, --jobs 1 to see why"
                    ) from None
                yield futures[fut], result

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        for k, v in self._env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if self.pool is None:
            return
        if exc_type is not None:
            # Interrupted or failed: drop queued jobs and stop the workers we started.
            processes = list(getattr(self.pool, "_processes", {}).values())
            self.pool.shutdown(wait=False, cancel_futures=True)
            for p in processes:
                if p.is_alive():
                    p.terminate()
            for p in processes:
                p.join(timeout=5)
        else:
            self.pool.shutdown(wait=True)


def _bar(total: int, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit="job",
        disable=not enabled or not sys.stderr.isatty(),
        dynamic_ncols=True,
        leave=False,
    )


def _cached_point(
    path: Path, key: dict[str, Any], metrics: Sequence[str], frames: int, slow_every: int = 1
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """``(record, None)`` when the cached point has every metric asked for; ``(None, partial)``
    when it matches but lacks some (``partial`` keeps the ones it has, so only the missing ones
    are measured); ``(None, None)`` when there is nothing usable."""
    record = _read_json(path)
    if not isinstance(record, dict) or record.get("key") != key or record.get("frames") != frames:
        return None, None
    sampled = record.get("sampled", {})
    kept = {
        m: v
        for m, v in record.get("metrics", {}).items()
        if m not in SLOW_METRICS or sampled.get(m, 1) == slow_every
    }
    if all(m in kept for m in metrics):
        return record, None
    partial = {
        **record,
        "metrics": kept,
        "sampled": {m: n for m, n in sampled.items() if m in kept},
    }
    partial["notes"] = {k: v for k, v in record.get("notes", {}).items() if k in kept}
    return None, partial


# --------------------------------------------------------------------------------------------
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
                    "param_name": "u" if codec == cfg.keyface_codec else "qp",
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


# --------------------------------------------------------------------------------------------
# the run


@dataclass
class BenchResult:
    """What :func:`run_bench` returns: the ``points.json`` document and run counters."""

    data: dict[str, Any]
    computed: int
    cached: int
    failed: int
    out: Path


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
        {
            "clip": c.name,
            "path": str(c.path),
            "dir": str(_clip_dir(out, c.name)),
            "frames": cfg.frames,
            "size": cfg.size,
            "force": cfg.force,
        }
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
                failures.append({"clip": task["clip"], "stage": "prepare", "error": meta["error"]})
                say(f"{task['clip']}: skipped ({meta['error']})")
                continue
            metas[task["clip"]] = meta
        bar.close()

        point_tasks = []
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
                        {
                            "clip": c.name,
                            "person": c.person,
                            "codec": codec,
                            "param": param,
                            "is_keyface": codec == cfg.keyface_codec,
                            "generator": cfg.generator,
                            "preset": cfg.presets.get(codec),
                            "metrics": list(cfg.metrics),
                            "device": cfg.device,
                            "dir": str(_clip_dir(out, c.name)),
                            "path": str(path),
                            "meta": metas[c.name],
                            "key": key,
                            "previous": partial,
                            "slow_every": cfg.slow_every,
                        }
                    )
        # Slow jobs first (VVC, keyface decodes) so that the pool does not end on one long job.
        weight = {"vvc": 0, cfg.keyface_codec: 1}
        point_tasks.sort(key=lambda t: (weight.get(t["codec"], 2), t["clip"]))
        bar = _bar(len(point_tasks), "points", cfg.progress)
        for task, rec in runner.map_unordered(run_point, point_tasks):
            bar.update(1)
            if "error" in rec:
                failures.append({**rec, "stage": "point"})
                say(f"{task['clip']} {task['codec']} {task['param']}: failed ({rec['error']})")
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
            "param_name": "u" if r["codec"] == cfg.keyface_codec else "qp",
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

    data = {
        "schema": SCHEMA,
        "protocol": {
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
                    "param_name": "u" if codec == cfg.keyface_codec else "qp",
                    "params": cfg.params(codec),
                    **(
                        {"generator": cfg.generator}
                        if codec == cfg.keyface_codec
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
        "run": {
            "started": started,
            "wall_seconds": round(wall, 2),
            "jobs": cfg.jobs,
            "computed": computed,
            "cached": cached,
            "failed": len(failures),
        },
        "points": points,
        "averages": averages,
        "bd": bd,
        "targets": targets,
        "timing": timing_summary(points, metas, cfg),
        "failures": failures,
    }
    _write_json(out / "points.json", data)
    from keyface.eval.report import write_report

    write_report(data, out)
    data["run"]["wall_seconds"] = round(time.perf_counter() - t_start, 2)
    _write_json(out / "points.json", data)
    return BenchResult(data, computed, cached, len(failures), out)


def _prep_is_cached(task: dict[str, Any]) -> bool:
    clip_dir = Path(task["dir"])
    meta = _read_json(clip_dir / "meta.json")
    if not meta:
        return False
    try:
        want = {
            "frames_asked": task["frames"],
            "size": task["size"],
            **_source_stamp(Path(task["path"])),
        }
    except OSError:
        return False
    return (
        all(meta.get(k) == v for k, v in want.items())
        and (clip_dir / "crop.y4m").is_file()
        and (clip_dir / "analysis.npz").is_file()
    )


def _safe_prepare(task: dict[str, Any]) -> dict[str, Any]:
    """:func:`prepare_clip` that reports a failure (e.g. no face) instead of raising."""
    try:
        return prepare_clip(task)
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
