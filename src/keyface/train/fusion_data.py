"""Training and benchmark material for the fusion: face crops, keyface's animated frames and
the real auxiliary stream's decoded frames, as the decoder sees them.

``prepare_fusion_clip`` writes one folder per clip (``frames.npy``: the crops; ``anim_U.npy``:
keyface's decoded frames at ladder position ``U``; ``aux_sK_qQ.npy``: the auxiliary stream at
downscale ``K`` and x265 QP ``Q``, decoded, at low resolution; ``meta.json``: rates). The clips
themselves never enter the repository.

The auxiliary stream is :mod:`keyface.auxstream` where it exists; until it does, the same coding
as ``benchmarks/hybrid_feasibility.py`` (x265 through PyAV, P frames only, ``zerolatency``,
constant QP, one packet per frame).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

AUX_GRID: tuple[tuple[int, int], ...] = (
    (4, 30),
    (4, 34),
    (4, 38),
    (4, 42),
    (4, 46),
    (2, 38),
    (2, 44),
    (2, 50),
    (8, 30),
    (8, 38),
)
"""(scale, QP) of the auxiliary streams the fusion is trained on: the rates that matter
(scale 4 at QP 30-46, scale 2 at 38-50) and a few of scale 8."""


def code_aux(frames: Sequence[np.ndarray], scale: int, qp: int) -> tuple[list[np.ndarray], int]:
    """The auxiliary stream of ``frames`` (all one size): (decoded low-resolution frames, bytes)."""
    from keyface.auxstream import AuxDecoder, AuxEncoder

    size = frames[0].shape[0]
    enc, dec = AuxEncoder(size, scale, qp), AuxDecoder(size, scale)
    out, total = [], 0
    for f in frames:
        data = enc.encode(f)
        total += len(data)
        out.append(dec.decode(data))
    return out, total


def animate(clip_dir: Path, meta: dict, u: float) -> tuple[list[np.ndarray], int]:
    """keyface's decoded frames of a bench-style clip folder at ladder position ``u``, and the
    stream's bytes."""
    from keyface.codec.ratecontrol import config_at
    from keyface.eval.bench.worker import load_analysis
    from keyface.pipeline import decode_bytes, encode_analysis

    analysis = load_analysis(clip_dir, meta)
    coded = encode_analysis(analysis, config_at(u))
    return [f.image for f in decode_bytes(coded.data).frames], len(coded.data)


def prepare_fusion_clip(
    source: Path,
    clip_dir: Path,
    *,
    frames: int,
    us: Sequence[float],
    aux: Sequence[tuple[int, int]] = AUX_GRID,
    size: int = 256,
) -> dict:
    """Crop and analyse ``source`` (as ``keyface bench`` does), then write the fusion material
    (module doc) into ``clip_dir``. Returns the clip's fusion meta; a finished folder is kept."""
    from keyface.eval.bench.records import PrepareTask
    from keyface.eval.bench.worker import prepare_clip
    from keyface.io import read_frames

    done = clip_dir / "fusion.json"
    if done.is_file():
        return json.loads(done.read_text())
    meta = prepare_clip(PrepareTask(source.stem, str(source), str(clip_dir), frames, size))
    ref = [f.image for f in read_frames(clip_dir / "crop.y4m", meta["frames"])]
    np.save(clip_dir / "frames.npy", np.stack(ref))
    seconds = len(ref) / float(Fraction(meta["fps"]))
    info: dict = {
        "clip": source.stem,
        "frames": len(ref),
        "seconds": seconds,
        "anim": {},
        "aux": {},
    }
    for u in us:
        anim, nbytes = animate(clip_dir, meta, u)
        np.save(clip_dir / f"anim_{u:.2f}.npy", np.stack(anim))
        info["anim"][f"{u:.2f}"] = 8 * nbytes / 1000 / seconds
    for scale, qp in aux:
        low, nbytes = code_aux(ref, scale, qp)
        np.save(clip_dir / f"aux_s{scale}_q{qp}.npy", np.stack(low))
        info["aux"][f"s{scale}_q{qp}"] = 8 * nbytes / 1000 / seconds
    done.write_text(json.dumps(info, indent=1))
    return info


def main(argv: list[str] | None = None) -> int:
    """``python -m keyface.train.fusion_data``: prepare fusion material for training people."""
    import argparse
    import time

    from keyface.clips import select_clips
    from keyface.threads import apply_thread_policy

    parser = argparse.ArgumentParser(description="Prepare fusion training material.")
    parser.add_argument("--clips", required=True, help="a MANIFEST.tsv or folder of videos")
    parser.add_argument("--split", required=True, help="splits/*.json (its train people only)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--count", type=int, default=30, help="clips (one per person, random)")
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args(argv)
    apply_thread_policy()
    clips = select_clips(args.clips, split=args.split, subset="train", frames=args.frames)
    rng = np.random.default_rng(args.seed)
    picked = [clips[i] for i in rng.permutation(len(clips))[: args.count]]
    for k, clip in enumerate(picked):
        t0 = time.perf_counter()
        # One animation low on the ladder, one high (u in 0..0.45 and 0.6..1.4).
        us = (round(float(rng.uniform(0.0, 0.45)), 2), round(float(rng.uniform(0.6, 1.4)), 2))
        try:
            info = prepare_fusion_clip(clip.path, args.out / clip.name, frames=args.frames, us=us)
        except Exception as exc:  # a clip without a face: skip it, say so
            print(f"{k} {clip.name}: skipped ({exc})", flush=True)
            continue
        print(f"{k} {clip.name} {time.perf_counter() - t0:.1f} s {info['anim']}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
