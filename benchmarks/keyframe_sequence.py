"""Keyframes as one low-delay sequence instead of intra pictures, at the one ladder's group
rungs (issue 13): VVC measured offline, and the ``hevc-ld`` keyframe codec.

    python benchmarks/keyframe_sequence.py --bench results/bench --u 1,1.5,2,2.5 \\
        --deltas=-3,-6,-9 --codecs vvc,hevc --out results/hybrid/keyframe_sequence

At the one ladder's group rungs (u >= 1: bidirectional groups of 15 frames without an aux
stream), keyframes are 86-94 % of the bits (results/bench/points.json). Each keyframe is a VVC
intra picture. Consecutive keyframes are half a second apart and show the same person in front
of the same background, so a VVC encoder could predict each from the one before. That is a
low-delay P sequence (VVenC ``PicReordering=0``, ``GOPSize=8``, no intra refresh).

VVenC through FFmpeg cannot code one picture at a time: it holds the pictures it is given
until the stream ends, and a stream coded again with one more picture does not repeat the
earlier pictures' bits (checked: prefixes differ). So this is measured offline. The keyframe
positions of a group rung are fixed: frames 0, 14, 28, ... (a group of 15 frames shares its
first and last frame with its neighbours) and the clip's last frame. Those
source frames are coded in one VVenC run at the rung's keyframe QP plus each ``--deltas``
entry. Its access units (sizes) and decoded pictures are handed to the keyface encoder by an
intra codec registered only in this process, ``vvc-ld-oracle``. Each KEYFRAME packet carries
as many bytes as that picture's access unit: a marker and seeded random filler that nothing
compresses. Its decoder returns the picture VVC decoded. Every other picture the encoder
codes (DETAIL rectangles) goes to the real VVC intra codec, with a 4-byte marker. The stream
is then decoded by the normal decoder and default renderer and measured like the bench.

``--codecs hevc`` codes the same rungs with the shipped ``hevc-ld`` keyframe codec
(``keyface.intra.sequence``: x265 P pictures in process, one at a time, so a live sender can
use it too), at the keyframe QP plus each delta, with nothing offline.

The intra-keyframe points are the bench's own (``--bench``'s ``points.json``, the same clips
and code), or ``--reference``'s: the shipped ladder's group rungs use ``hevc-ld`` since, and
``results/hybrid/keyframe_sequence/bench_1715.json`` keeps the points of the bench before.
Writes ``points.json`` (a stopped run resumes) and ``report.md``: each rung before and after,
VVC at the same rate, and the BD-rate of the keyface curve against VVC with the group rungs
replaced. Set ``KEYFACE_THREADS`` as for any benchmark; ``--jobs`` workers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from _common import beside_vvc, command_line, resume_points

ORACLE = "vvc-ld-oracle"
METRICS = ["psnr", "lpips_alex", "dists", "lpips_mouth_open", "lpips_eyes", "eye_state"]
SLOW_EVERY = 25
LD_PARAMS = (
    "CbQpOffset=-4:CrQpOffset=-4:PicReordering=0:GOPSize=8:DecodingRefreshType=none:"
    "MaxParallelFrames=0"
)
LD_MARK, INTRA_MARK = b"LDAU", b"INTR"
GROUP_RUNGS = {1.0: 1.5, 1.5: 2.0, 2.0: 2.5, 2.5: 4.0}
"""The one ladder's group rungs as the bench of 2026-12-06 17:15 placed them (its u -> the
groups' own u, :func:`keyface.codec.ratecontrol.hybrid_config_at`: GOP 15, keyframe quality
10 + 8 u). The shipped ladder has moved since (``hevc-ld`` keyframes, the groups from u 0.8);
the points here stay comparable with ``bench_1715.json``."""

_SOURCES: dict[bytes, tuple[int, int]] = {}
"""sha1 of a source picture -> (its index in the sequence, its access unit's bytes)."""
_PICTURES: dict[int, np.ndarray] = {}
"""Index in the sequence -> the picture VVC decoded."""
_USED: set[int] = set()


class LdOracle:
    """The intra codec interface over a pre-coded low-delay sequence (this process only)."""

    name = ORACLE

    def __init__(self) -> None:
        from keyface.intra import get_intra_codec

        self.vvc = get_intra_codec("vvc")

    def encode(self, image: np.ndarray, quality: int) -> bytes:
        found = _SOURCES.get(hashlib.sha1(np.ascontiguousarray(image).tobytes()).digest())
        if found is None:
            return INTRA_MARK + self.vvc.encode(image, quality)
        index, size = found
        _USED.add(index)
        filler = np.random.default_rng(index).bytes(max(0, size - 8))
        return LD_MARK + index.to_bytes(4, "big") + filler

    def decode(self, data: bytes, max_pixels: int | None = None) -> np.ndarray:
        if data[:4] == LD_MARK:
            return _PICTURES[int.from_bytes(data[4:8], "big")]
        return self.vvc.decode(data[4:], max_pixels)


def register() -> None:
    from keyface.intra import CODECS

    if ORACLE not in CODECS:
        CODECS.register(ORACLE, summary="offline low-delay VVC sequence (benchmark only)")(LdOracle)


def code_sequence(pictures: list[np.ndarray], qp: int) -> tuple[list[int], list[np.ndarray]]:
    """``pictures`` as one low-delay VVC sequence at ``qp``: each access unit's bytes and the
    decoded pictures (keyface's colour conversion, 10 bit, as the intra codec)."""
    import av

    from keyface.ffmpeg import run_ffmpeg
    from keyface.intra._color import decode_planes, encode_planes
    from keyface.intra.hevc import frame_to_planes

    planes = [encode_planes(p, 10) for p in pictures]
    h, w = planes[0][0][0].shape
    raw = b"".join(b"".join(x.astype("<u2").tobytes() for x in pl) for pl, _ in planes)
    args = [
        "-f", "rawvideo", "-pix_fmt", "yuv420p10le", "-s", f"{w}x{h}", "-framerate", "2",
        "-i", "pipe:0", "-c:v", "libvvenc", "-preset", "fast", "-qp", str(qp), "-qpa", "0",
        "-period", "100000", "-threads", "1", "-vvenc-params", LD_PARAMS, "-f", "vvc", "pipe:1",
    ]  # fmt: skip
    stream = run_ffmpeg(args, stdin=raw, timeout=600, what="vvc sequence").stdout
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "keyframes.266"
        path.write_bytes(stream)
        with av.open(str(path), format="vvc") as container:
            sizes = [p.size for p in container.demux(video=0) if p.size]
        with av.open(str(path), format="vvc") as container:
            frames = list(container.decode(video=0))
    if len(sizes) != len(pictures) or len(frames) != len(pictures):
        raise RuntimeError(f"{len(pictures)} pictures, {len(sizes)} units, {len(frames)} decoded")
    if sum(sizes) != len(stream):
        raise RuntimeError(f"access units {sum(sizes)} bytes, stream {len(stream)}")
    decoded = [
        decode_planes(frame_to_planes(f, np.dtype("<u2")), flags, 10)
        for f, (_, flags) in zip(frames, planes, strict=True)
    ]
    return sizes, decoded


def code_point(task: tuple[str, float, int, str]) -> dict[str, Any]:
    """Code one (clip, u, QP delta, sequence codec) point with the keyframes of a low-delay
    sequence."""
    from keyface.codec import CodecConfig
    from keyface.codec.ratecontrol import hybrid_config_at
    from keyface.eval.bench.worker import load_analysis
    from keyface.eval.metrics import compute_metrics
    from keyface.intra._base import qp_to_quality, quality_to_qp
    from keyface.io import read_frames
    from keyface.pipeline import decode_bytes, encode_analysis
    from keyface.threads import apply_thread_policy

    apply_thread_policy()
    register()
    clip_dir, u, delta, codec = Path(task[0]), task[1], task[2], task[3]
    meta = json.loads((clip_dir / "meta.json").read_text())
    analysis = load_analysis(clip_dir, meta)
    ref = [f.image for f in read_frames(clip_dir / "crop.y4m", meta["frames"])]
    if u not in GROUP_RUNGS:
        raise SystemExit(f"u={u} is not one of the group rungs {sorted(GROUP_RUNGS)}")
    # The rung as the bench of 17:15 coded it: VVC intra keyframes at the groups' own QP.
    config = replace(
        hybrid_config_at(GROUP_RUNGS[u], CodecConfig(mode="bidirectional")), aux_scale=0
    )
    qp = quality_to_qp(config.keyframe_quality) + delta
    extra: dict[str, Any] = {}
    if codec == "hevc":  # the shipped hevc-ld codec, nothing offline
        quality = qp_to_quality(qp)
        coded = encode_analysis(
            analysis, replace(config, intra_codec="hevc-ld", keyframe_quality=quality)
        )
    else:
        n = len(ref)
        positions = sorted({*range(0, n, config.gop - 1), n - 1})  # a group shares its ends
        sizes, pictures = code_sequence([ref[i] for i in positions], qp)
        _SOURCES.clear()
        _PICTURES.clear()
        _USED.clear()
        for k, i in enumerate(positions):
            key = hashlib.sha1(np.ascontiguousarray(ref[i]).tobytes()).digest()
            _SOURCES[key] = (k, sizes[k])
            _PICTURES[k] = pictures[k]
        coded = encode_analysis(analysis, replace(config, intra_codec=ORACLE))
        if _USED != set(range(max(_USED) + 1)):
            raise RuntimeError(f"keyframes used {sorted(_USED)}: not a prefix of the sequence")
        unused = sum(sizes[k] for k in range(len(sizes)) if k not in _USED)
        extra = {"sequence_bytes": sum(sizes), "unused_tail_bytes": unused}
    frames = [f.image for f in decode_bytes(coded.data).frames]
    m = compute_metrics(ref, frames, METRICS, progress=False, slow_every=SLOW_EVERY)
    return {
        "clip": clip_dir.name,
        "u": u,
        "delta": delta,
        "codec": codec,
        "qp": qp,
        "kbps": coded.kbps,
        "keyframes": coded.stats.keyframes,
        **extra,
        "mean": m.mean,
    }


def curve(points: list[dict], key: Any) -> tuple[list[float], dict[str, list[float]]]:
    """Clip-averaged rates and metrics of the points grouped by ``key(point)``, sorted by rate."""
    groups: dict[Any, list[dict]] = {}
    for p in points:
        groups.setdefault(key(p), []).append(p)
    rows = sorted(
        (
            float(np.mean([p["kbps"] for p in g])),
            {m: float(np.nanmean([p["metrics"][m] for p in g])) for m in METRICS},
        )
        for g in groups.values()
    )
    return [r for r, _ in rows], {m: [v[m] for _, v in rows] for m in METRICS}


def report(points: list[dict], bench: list[dict], out: Path, command: str) -> str:
    from keyface.eval.bdrate import bd_rate

    clips = sorted({p["clip"] for p in points})
    bench = [p for p in bench if p["clip"] in clips]
    ours = [{**p, "metrics": p["mean"], "codec": p.get("codec", "vvc")} for p in points]
    intra = [p for p in bench if p["codec"].startswith("keyface")]
    vvc = [p for p in bench if p["codec"] == "vvc"]
    vr, vm = curve(vvc, lambda p: p["param"])

    lines = [
        "# Keyframes as one low-delay sequence: VVC offline, and the hevc-ld codec (issue 13)",
        "",
        f"Command: `{command}`",
        "",
        f"{len(clips)} clips, the bench's frames and crops. `intra`: the bench's keyface points "
        "(keyframes as VVC intra pictures). `VVC LD d` / `HEVC LD d`: the same rung with the "
        "keyframes of one low-delay VVC (VVenC, offline) / HEVC (x265 in process, one picture "
        "at a time) sequence at the rung's keyframe QP + d. VVC in brackets: the bench's "
        "VVC curve at the row's rate (log-rate interpolation). Means over clips; DISTS on every "
        f"{SLOW_EVERY}th frame.",
        "",
        "| u | keyframes | kbit/s | " + " | ".join(f"{m} (VVC)" for m in METRICS) + " |",
        "|---|---|---|" + "---|" * len(METRICS),
    ]
    us = sorted({p["u"] for p in points})
    variants = sorted(
        {(p["codec"], p["delta"]) for p in ours}, key=lambda v: (v[0] != "vvc", -v[1])
    )

    def label(v: tuple[str, int]) -> str:
        return f"{v[0].upper()} LD {v[1]:+d}"

    for u in us:
        rows = [("intra", [p for p in intra if p["param"] == u])]
        rows += [
            (label(v), [p for p in ours if p["u"] == u and (p["codec"], p["delta"]) == v])
            for v in variants
        ]
        for name, sel in rows:
            if len(sel) != len(clips):
                continue
            rate = float(np.mean([p["kbps"] for p in sel]))
            cells = [
                beside_vvc(float(np.nanmean([p["metrics"][m] for p in sel])), bench, clips, rate, m)
                for m in METRICS
            ]
            lines.append(f"| {u:g} | {name} | {rate:.2f} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "BD-rate of the keyface curve against VVC (pchip, clip-averaged curves; negative: "
        "fewer bits than VVC). `intra`: the bench's curve. `... LD d`: the same curve with its "
        "group rungs (" + ", ".join(f"{u:g}" for u in us) + ") replaced by those points.",
        "",
        "| curve | " + " | ".join(METRICS) + " |",
        "|---|" + "---|" * len(METRICS),
    ]
    low = [p for p in intra if p["param"] not in us]
    curves = [("intra", intra)] + [
        (label(v), low + [{**p, "param": p["u"]} for p in ours if (p["codec"], p["delta"]) == v])
        for v in variants
    ]
    for name, pts in curves:
        tr, tm = curve(pts, lambda p: p["param"])
        cells = []
        for m in METRICS:
            r = bd_rate(vr, vm[m], tr, tm[m], m, method="pchip")
            value = r.to_json().get("value")
            cells.append("n/a" if value is None else f"{value:+.1f} %")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    (out / "report.md").write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, default=Path("results/bench"))
    parser.add_argument("--u", default="1,1.5,2,2.5", help="group rungs of the one ladder")
    parser.add_argument("--deltas", default="-6", help="QP offsets of the sequence")
    parser.add_argument("--codecs", default="vvc", help="sequence codecs: vvc, hevc or both")
    parser.add_argument(
        "--reference",
        type=Path,
        help="the intra-keyframe and VVC points (default: --bench's points.json; the shipped "
        "ladder's group rungs use hevc-ld since, so results/hybrid/keyframe_sequence/"
        "bench_1715.json keeps the bench's points from before)",
    )
    parser.add_argument("--out", type=Path, default=Path("results/hybrid/keyframe_sequence"))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None, help="at most this many clips")
    parser.add_argument(
        "--report-only", action="store_true", help="report the saved points, code nothing"
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    bench = json.loads((args.reference or args.bench / "points.json").read_text())["points"]
    clips = sorted({p["clip"] for p in bench})[: args.limit]
    us = [float(x) for x in args.u.split(",")]
    deltas = [int(x) for x in args.deltas.split(",")]
    codecs = args.codecs.split(",")
    t0 = time.perf_counter()
    points, computed = resume_points(
        code_point,
        {
            (c, u, d, k): (str(args.bench / "cache" / c), u, d, k)
            for c in clips
            for u in us
            for d in deltas
            for k in codecs
        },
        lambda p: (p["clip"], p["u"], p["delta"], p.get("codec", "vvc")),
        args.jobs,
        args.out / "points.json",
        lambda p: f"{p['clip']} u {p['u']:g} {p['codec']} QP {p['qp']} {p['kbps']:.2f} kbit/s",
        compute=not args.report_only,
    )
    command = command_line("keyframe_sequence.py", args, skip=("report_only",))
    print(report(points, bench, args.out, command))
    print(f"{computed} points in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
