"""What the benchmark scripts share: where the development clips are, the default split, the
clip options and their selection (through :mod:`keyface.clips`, as ``keyface bench`` and
``keyface train`` do). Scripts import it as ``from _common import ...`` (they run from this
folder's parent: ``python benchmarks/NAME.py``)."""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from keyface.clips import select_clips

if TYPE_CHECKING:
    from keyface.codec.config import CodecConfig

ROOT = Path(__file__).resolve().parents[1]
CLIPS = ROOT.parent / "shared" / "data" / "clips"
"""The development clips (``../shared/data/clips`` beside the repository; never committed)."""
MANIFEST = CLIPS / "MANIFEST.tsv"
SPLIT = ROOT / "splits" / "dev_v1.json"
"""The person split every benchmark, the bench and training use."""


def add_clip_options(
    parser: argparse.ArgumentParser, *, limit: int | None = 12, manifest: bool = False
) -> None:
    """``--clips`` (the folder, or with ``manifest`` its MANIFEST.tsv), ``--split``,
    ``--subset`` and ``--limit`` (people)."""
    parser.add_argument("--clips", type=Path, default=MANIFEST if manifest else CLIPS)
    parser.add_argument("--split", type=Path, default=SPLIT)
    parser.add_argument("--subset", default="validation", choices=["validation", "train"])
    parser.add_argument("--limit", type=int, default=limit, help="at most this many people")


def pick_clips(clips: Path, split: Path, subset: str, limit: int | None) -> list[Path]:
    """One clip per person of the split's subset (the first by file name), at most ``limit``."""
    return [c.path for c in select_clips(clips, split=split, subset=subset, limit=limit)]


@dataclass
class CodedClip:
    """One clip of a ``keyface bench`` cache coded and decoded at ladder position ``u``."""

    ref: list[Any]
    """The source frames (the cache's ``crop.y4m``)."""
    analysis: Any
    """Its cached :class:`keyface.pipeline.Analysis`, cut to the frames used."""
    coded: Any
    """The :class:`keyface.pipeline.EncodeResult`."""
    result: Any
    """The :class:`keyface.pipeline.DecodeResult`."""
    seconds: float
    """The clip's duration."""
    encode_s: float
    decode_s: float

    @property
    def frames(self) -> int:
        return len(self.ref)

    @property
    def decoded(self) -> list[Any]:
        return [f.image for f in self.result.frames]

    @property
    def kbps(self) -> float:
        return 8 * len(self.coded.data) / 1000 / self.seconds


def cached_clip(clip_dir: Path) -> tuple[dict[str, Any], Any, list[np.ndarray]]:
    """A clip a ``keyface bench`` run prepared: its ``meta.json``, its cached analysis
    (``analysis.npz``, :class:`keyface.pipeline.Analysis`) and its source frames
    (``crop.y4m``, RGB)."""
    from keyface.eval.bench.worker import load_analysis
    from keyface.io import read_frames

    meta = json.loads((clip_dir / "meta.json").read_text())
    analysis = load_analysis(clip_dir, meta)
    return meta, analysis, [f.image for f in read_frames(clip_dir / "crop.y4m", meta["frames"])]


def find_cached_clip(bench: Path, part: str) -> Path:
    """The first (by name) clip folder in ``bench``'s cache whose name contains ``part``."""
    return next(p for p in sorted((bench / "cache").iterdir()) if part in p.name)


def code_cached_clip(
    clip_dir: Path, u: float, frames: int, base: CodecConfig | None = None
) -> CodedClip:
    """The first ``frames`` frames of a bench-cache clip (``clip_dir/crop.y4m`` + its
    ``analysis.npz``) coded at ``config_at(u, base)`` (``base``: the ladder's mode; default
    the animation ladder) and decoded, with the time each took."""
    from keyface.codec.ratecontrol import config_at
    from keyface.eval.bench.worker import load_analysis
    from keyface.io import read_frames
    from keyface.pipeline import decode_bytes, encode_analysis

    meta = json.loads((clip_dir / "meta.json").read_text())
    meta["frames"] = n = min(int(meta["frames"]), frames)
    ref = [f.image for f in read_frames(clip_dir / "crop.y4m", n)]
    analysis = load_analysis(clip_dir, meta)
    analysis.landmarks = analysis.landmarks[:n]
    t0 = time.perf_counter()
    coded = encode_analysis(analysis, config_at(u, base))
    t1 = time.perf_counter()
    result = decode_bytes(coded.data)
    t2 = time.perf_counter()
    seconds = n / float(Fraction(meta["fps"]))
    return CodedClip(ref, analysis, coded, result, seconds, t1 - t0, t2 - t1)


def command_line(script: str, args: argparse.Namespace, skip: Sequence[str] = ()) -> str:
    """The command that reproduces a run of ``benchmarks/SCRIPT``: every option of ``args``
    spelled out as ``--name=value`` (negative numbers and lists stay one argument), flags that
    are set as ``--name``; unset options, unset flags and ``skip`` left out."""
    parts = [f"python benchmarks/{script}"]
    for name, value in vars(args).items():
        if value is None or value is False or name in skip:
            continue
        option = "--" + name.replace("_", "-")
        parts.append(option if value is True else f"{option}={value}")
    return " ".join(parts)


def emit_json(doc: Any, path: Path | None) -> None:
    """Print ``doc`` as indented JSON and, with ``path``, write it there too."""
    text = json.dumps(doc, indent=1)
    print(text)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")


def vvc_at(anchors: list[dict], clips: Sequence[str], rate: float, metric: str) -> float:
    """The VVC anchor's ``metric`` at ``rate`` on its clip-averaged curve (a ``keyface bench``
    ``points.json``'s points; QPs coded for every clip in ``clips`` only), interpolated
    linearly in log-rate; NaN outside the curve."""
    vvc = [p for p in anchors if p["codec"] == "vvc" and p["clip"] in clips]
    rates, values = [], []
    for q in sorted({p["param"] for p in vvc}):
        sel = [p for p in vvc if p["param"] == q]
        if len(sel) != len(clips):
            continue
        rates.append(np.mean([p["kbps"] for p in sel]))
        values.append(np.nanmean([p["metrics"][metric] for p in sel]))
    if len(rates) < 2:
        return math.nan
    return at_rate(np.array(rates), np.array(values), rate)


def beside_vvc(
    value: float, anchors: list[dict], clips: Sequence[str], rate: float, metric: str
) -> str:
    """A report cell: ``value`` and, in brackets, VVC's ``metric`` at ``rate`` (:func:`vvc_at`;
    n/a outside its curve)."""
    anchor = vvc_at(anchors, clips, rate, metric)
    return f"{value:.4f} ({'n/a' if math.isnan(anchor) else f'{anchor:.4f}'})"


def at_rate(rates: np.ndarray, values: np.ndarray, rate: float) -> float:
    """``values`` interpolated linearly in log-rate at ``rate`` (NaN outside the curve)."""
    order = np.argsort(rates)
    r, v = np.log(np.asarray(rates)[order]), np.asarray(values)[order]
    if not r[0] <= math.log(rate) <= r[-1]:
        return math.nan
    return float(np.interp(math.log(rate), r, v))


def check_same_crops(bench: Path, anchors: Path, clips: list[str]) -> None:
    """Refuse to compare a sweep over the clips prepared in ``bench`` (``cache/CLIP``) with
    anchor points of ``anchors`` (a ``keyface bench`` ``points.json``) that were coded from
    other crops: the anchors' own ``cache/CLIP/meta.json`` must name the same source and crop
    box. (Sweeps once compared a cache prepared before the crop decision of issue 17 with
    anchors coded from the newer, tighter crops.)"""
    other = anchors.parent / "cache"
    for clip in clips:
        mine, theirs = bench / "cache" / clip / "meta.json", other / clip / "meta.json"
        if not theirs.is_file():
            raise SystemExit(f"{anchors}: no {theirs} to check that {clip}'s crop is the same")
        a, b = json.loads(mine.read_text()), json.loads(theirs.read_text())
        keys = ("source_sha256", "crop_box", "frames")
        if any(a.get(k) != b.get(k) for k in keys):
            raise SystemExit(
                f"{clip}: {bench} and the anchors of {anchors} were cut from different crops "
                f"or frames ({', '.join(k for k in keys if a.get(k) != b.get(k))}): compare "
                "against anchors coded from the same bench folder"
            )


def collect_points(
    work: Callable[[Any], dict[str, Any]],
    tasks: Sequence[Any],
    jobs: int,
    points: list[dict[str, Any]],
    saved: Path,
    describe: Callable[[dict[str, Any]], str],
) -> None:
    """Run ``work`` on every task in ``jobs`` worker processes, append each point to
    ``points`` as it arrives, print ``describe(point)`` and rewrite ``saved`` (a JSON list:
    a stopped run resumes from it)."""
    with ProcessPoolExecutor(jobs) as pool:
        for k, point in enumerate(pool.map(work, tasks), 1):
            points.append(point)
            print(f"[{k}/{len(tasks)}] {describe(point)}", flush=True)
            saved.write_text(json.dumps(points))


def resume_points(
    work: Callable[[Any], dict[str, Any]],
    wanted: dict[Hashable, Any],
    key: Callable[[dict[str, Any]], Hashable],
    jobs: int,
    saved: Path,
    describe: Callable[[dict[str, Any]], str],
    compute: bool = True,
) -> tuple[list[dict[str, Any]], int]:
    """The points of a sweep that resumes: ``wanted`` maps each point's key to its task;
    points already in ``saved`` (``key(point)``) are reused, the others computed by
    :func:`collect_points` (none unless ``compute``). Returns the wanted points (``saved``
    keeps every point, wanted or not) and how many were computed."""
    points = json.loads(saved.read_text()) if saved.is_file() else []
    have = {key(p) for p in points}
    tasks = [task for k, task in wanted.items() if k not in have] if compute else []
    collect_points(work, tasks, jobs, points, saved, describe)
    return [p for p in points if key(p) in wanted], len(tasks)


# -- before / after studies (benchmarks/lips.py, benchmarks/ripple.py) ---------------------


def before_after_parser(
    doc: str,
    run_command: Callable[[argparse.Namespace], None],
    report_command: Callable[[argparse.Namespace], None],
) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser, argparse.ArgumentParser]:
    """The command line of a before / after study: ``run`` codes and measures the clips of a
    ``keyface bench`` folder into ``--out`` (one JSON per clip and rung, resumable), ``report``
    pairs two such runs. Returns the parser and its two sub-parsers, for the study's own
    options; ``args.func`` is the command to call."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="code and measure the clips")
    run.add_argument("--bench", required=True, help="folder of a keyface bench run (cache/)")
    run.add_argument("--u", default="0,0.6,1.2", help="ladder positions, comma-separated")
    run.add_argument("--frames", type=int, default=125)
    run.add_argument("--limit", type=int, default=0, help="first N clips only")
    run.add_argument("--out", required=True)
    run.set_defaults(func=run_command)
    report = sub.add_parser("report", help="pair two runs into report.md and a gallery")
    report.add_argument("--before", required=True)
    report.add_argument("--after", required=True)
    report.add_argument("--out", required=True)
    report.set_defaults(func=report_command)
    return parser, run, report


def pending_points(args: argparse.Namespace) -> Iterator[tuple[Path, float]]:
    """The (clip folder, rung) pairs of a study's ``run`` not yet in ``args.out``: the clips
    of ``args.bench`` (those whose name holds one of ``args.clips``, if the study has that
    option), the first ``args.limit``, at every rung of ``args.u``."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    clips = sorted(p for p in (Path(args.bench) / "cache").iterdir() if (p / "meta.json").is_file())
    if getattr(args, "clips", ""):
        wanted = args.clips.split(",")
        clips = [c for c in clips if any(w in c.name for w in wanted)]
    if args.limit:
        clips = clips[: args.limit]
    for clip in clips:
        for u in (float(x) for x in args.u.split(",")):
            if not (out / f"{clip.name}_u{u:.2f}.json").is_file():  # resumable
                yield clip, u


def load_rows(folder: Path) -> dict[tuple[str, float], dict]:
    """A study run's rows by (clip, rung)."""
    rows = {}
    for path in sorted(folder.glob("*.json")):
        row = json.loads(path.read_text())
        rows[(row["clip"], row["u"])] = row
    return rows


def finite_mean(values: Sequence[float | None]) -> float:
    """The mean of the values that are numbers (NaN when none is)."""
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def short_name(clip: str) -> str:
    """A clip's name without its source prefix (``d6`` of ``KwaiVGI+LivePortrait__d6``)."""
    return clip.split("__")[-1]


def mouth_and_eye_frames(landmarks: Sequence[Any]) -> tuple[int, int]:
    """The frames of the widest-open mouth and of the most closed eye, by the source's face
    mesh (a frame without a face is neither)."""
    from keyface.facemesh import LEFT_EYE_EAR, RIGHT_EYE_EAR, eye_aspect_ratio, mouth_opening

    mouth = [mouth_opening(m) if m is not None else -math.inf for m in landmarks]
    eye = [
        min(eye_aspect_ratio(m, RIGHT_EYE_EAR), eye_aspect_ratio(m, LEFT_EYE_EAR))
        if m is not None
        else math.inf
        for m in landmarks
    ]
    return int(np.argmax(mouth)), int(np.argmin(eye))


def save_rows(rows: Sequence[np.ndarray], out: Path) -> None:
    """Picture rows (uint8 RGB) stacked, each padded right to the widest and 4 pixels below,
    saved as ``out`` (JPEG quality 85)."""
    from PIL import Image

    width = max(r.shape[1] for r in rows)
    padded = [np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0))) for r in rows]
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(padded, axis=0)).save(out, quality=85)
