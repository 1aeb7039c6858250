"""The aux stream's codec (issue 13 asks for VVenC to be selectable beside x265): the bytes
each codec needs for the downsampled frames at equal PSNR.

For the clips a ``keyface bench`` run prepared (``cache/CLIP/crop.y4m``), the first
``--frames`` frames are downsampled as the aux stream downsamples them (``--scale``, 4: 64x64
for the 256x256 crops) and coded as one low-delay stream at each ``--qps``:

* ``x265``: the aux stream as it ships (:class:`keyface.auxstream.AuxEncoder`, packed pictures);
* ``vvc``: VVenC as the ``vvc-ld`` keyframe sequence drives it
  (:class:`keyface.intra.vvc_sequence.VvcSequenceCodec`: every P picture at the QP, no
  reordering, ALF off, compact access units; preset ``--vvc-preset``), one picture per frame,
  the run never restarted.

Each picture is decoded and measured against the downsampled frame (PSNR, RGB). Prints and
writes ``--out`` (JSON): bytes and PSNR per clip, codec and QP, and the BD-rate of ``vvc``
against ``x265`` per clip (PSNR; negative: VVC needs fewer bytes) with its mean, plus the
time VVenC took (it codes the whole run again for every picture). Set ``KEYFACE_THREADS`` as
for any benchmark (``keyface.threads``):

    python benchmarks/aux_codec.py --bench results/bench --clips spata,d10,00015,d18 \\
        --out results/hybrid/aux_codec.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import bjontegaard
import numpy as np
from _common import cached_clip, command_line, emit_json, find_cached_clip


def code_x265(frames: list[np.ndarray], scale: int, qp: int) -> tuple[int, float]:
    from keyface.auxstream import AuxDecoder, AuxEncoder, downsample
    from keyface.imageops import psnr

    size = frames[0].shape[0]
    encoder, decoder = AuxEncoder(size, scale, qp), AuxDecoder(size, scale)
    data = [encoder.encode(f) for f in frames]
    encoder.close()
    side = encoder.side
    pairs = zip(data, frames, strict=True)
    scores = [psnr(decoder.decode(d), downsample(f, side)) for d, f in pairs]
    return sum(map(len, data)), float(np.mean(scores))


def code_vvc(
    frames: list[np.ndarray], scale: int, qp: int, preset: str
) -> tuple[int, float, float]:
    from keyface.auxstream import aux_side, downsample
    from keyface.imageops import psnr
    from keyface.intra._base import qp_to_quality
    from keyface.intra.vvc_sequence import VvcSequenceCodec

    side = aux_side(frames[0].shape[0], scale)
    small = [downsample(f, side) for f in frames]
    encoder = VvcSequenceCodec(preset, max_run=len(small) + 1)
    start = time.perf_counter()
    data = [encoder.encode_keyframe(s, qp_to_quality(qp)) for s in small]
    seconds = time.perf_counter() - start
    assert encoder.restarts == 0
    decoder = VvcSequenceCodec()
    scores = [psnr(decoder.decode_keyframe(d), s) for d, s in zip(data, small, strict=True)]
    return sum(map(len, data)), float(np.mean(scores)), seconds


def main(argv: list[str] | None = None) -> None:
    from keyface.threads import apply_thread_policy

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bench", type=Path, required=True, help="a keyface bench --out folder")
    parser.add_argument("--clips", default="spata,d10,00015,d18", help="parts of clip names")
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--qps", default="36,40,44,48")
    parser.add_argument("--vvc-preset", default="fast", help="VVenC preset (vvc-ld's: fast)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    apply_thread_policy()
    qps = [int(q) for q in args.qps.split(",")]
    doc: dict = {"command": command_line("aux_codec.py", args), "clips": {}}
    rates = []
    for part in args.clips.split(","):
        clip_dir = find_cached_clip(args.bench, part)
        frames = cached_clip(clip_dir)[2][: args.frames]
        x265 = [code_x265(frames, args.scale, qp) for qp in qps]
        vvc = [code_vvc(frames, args.scale, qp, args.vvc_preset) for qp in qps]
        rate = bjontegaard.bd_rate(
            [b for b, _ in x265],
            [p for _, p in x265],
            [b for b, _, _ in vvc],
            [p for _, p, _ in vvc],
            method="pchip",
        )
        rates.append(rate)
        doc["clips"][clip_dir.name] = {
            "frames": len(frames),
            "qps": qps,
            "x265": [{"bytes": b, "psnr": round(p, 3)} for b, p in x265],
            "vvc": [{"bytes": b, "psnr": round(p, 3), "seconds": round(s, 2)} for b, p, s in vvc],
            "bd_rate_vvc_vs_x265": round(float(rate), 2),
        }
    doc["mean_bd_rate_vvc_vs_x265"] = round(float(np.mean(rates)), 2)
    emit_json(doc, args.out)


if __name__ == "__main__":
    main()
