"""Fusion ablation (issue 13 item 2): the animation, the auxiliary stream and their fusions on
the same bitstreams.

On the clips a ``keyface bench`` run prepared (``BENCH/cache/CLIP/crop.y4m``, ``analysis.npz``),
for each animation ladder position ``--u`` and each auxiliary stream ``--aux SCALE:QP``:

* ``anim``: keyface alone (the default renderer), ``aux``: the auxiliary stream upsampled
  (bicubic, what ``keyface decode --aux-only`` shows);
* one row per fusion (``--fusions``; a ``.safetensors`` path is a learned fusion's weights),
  with the fusion's milliseconds per frame (one thread).

Rates add the animation's and the auxiliary stream's bytes. The anchors of the same clips come
from ``results/bench/points.json``. Writes ``points.json``, ``report.md`` and a side-by-side
picture (source | anim | aux up | each fusion) into ``--out``:

    python benchmarks/fusion.py --bench /tmp/bench12 --out results/fusion
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

METRICS = ["psnr", "lpips_alex", "dists"]


def _fusion(name: str) -> Any:
    from keyface.fusion import get_fusion

    return get_fusion(name)  # a registered name or a learned fusion's .safetensors


def _material(clip_dir: Path, work: Path, frames: int, us: list[float], aux: list) -> dict:
    """Reference, animations and auxiliary streams of one clip, cached in ``work``."""
    from keyface.io import read_frames
    from keyface.train.fusion_data import animate, code_aux

    meta = json.loads((clip_dir / "meta.json").read_text())
    n = min(frames, meta["frames"])
    ref = np.stack([f.image for f in read_frames(clip_dir / "crop.y4m", n)])
    seconds = n / float(Fraction(meta["fps"]))
    work.mkdir(parents=True, exist_ok=True)
    info_path = work / "info.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    if info.get("frames") != n:
        info = {"frames": n, "seconds": seconds, "anim": {}, "aux": {}}
    out: dict[str, Any] = {"ref": ref, "anim": {}, "aux": {}, "info": info}
    for u in us:
        key, path = f"{u:.2f}", work / f"anim_{u:.2f}.npy"
        if key not in info["anim"] or not path.is_file():
            # The animation is coded from the clip's first frame, as the bench does, then cut.
            anim, nbytes = animate(clip_dir, meta, u)
            np.save(path, np.stack(anim[:n]))
            info["anim"][key] = 8 * nbytes / 1000 / (meta["frames"] / float(Fraction(meta["fps"])))
        out["anim"][key] = np.load(path)
    for scale, qp in aux:
        key, path = f"s{scale}_q{qp}", work / f"aux_s{scale}_q{qp}.npy"
        if key not in info["aux"] or not path.is_file():
            low, nbytes = code_aux(list(ref), scale, qp)
            np.save(path, np.stack(low))
            info["aux"][key] = 8 * nbytes / 1000 / seconds
        out["aux"][key] = np.load(path)
    info_path.write_text(json.dumps(info, indent=1))
    return out


def run_clip(clip_dir: Path, args: argparse.Namespace, fusions: dict[str, Any]) -> list[dict]:
    from keyface.eval.metrics import compute_metrics
    from keyface.fusion import upsample_aux

    aux_specs = [tuple(int(v) for v in a.split(":")) for a in args.aux]
    m = _material(clip_dir, args.work / clip_dir.name, args.frames, args.u, aux_specs)
    # Frames 0, stride, 2 stride, ... are measured (fusions keep no state between frames).
    step = args.stride
    m["aux"] = {k: v[::step] for k, v in m["aux"].items()}
    m["anim"] = {k: v[::step] for k, v in m["anim"].items()}
    ref, info = list(m["ref"][::step]), m["info"]
    size = ref[0].shape[0]

    def score(frames: list[np.ndarray]) -> dict[str, float]:
        res = compute_metrics(ref, frames, METRICS, slow_every=args.dists_every)
        return {k: float(v) for k, v in res.mean.items()}

    rows = []
    base = {"clip": clip_dir.name, "frames": len(ref)}
    for (scale, qp), (key, low) in zip(aux_specs, m["aux"].items(), strict=True):
        aux_kbps = info["aux"][key]
        spec = {"scale": scale, "qp": qp, "aux_kbps": aux_kbps}
        up = [upsample_aux(x, size) for x in low]
        rows.append(base | {"kind": "aux", "kbps": aux_kbps} | spec | score(up))
        for ukey, anim in m["anim"].items():
            anim_kbps = info["anim"][ukey]
            for name, fusion in fusions.items():
                t0 = time.perf_counter()
                fused = [fusion.fuse(a, x) for a, x in zip(anim, low, strict=True)]
                ms = 1000 * (time.perf_counter() - t0) / len(fused)
                rows.append(
                    base
                    | {"kind": name, "u": float(ukey), "kbps": anim_kbps + aux_kbps, "ms": ms}
                    | spec
                    | score(fused)
                )
                if args.picture and clip_dir.name == args.picture_clip:
                    _keep_picture(args, clip_dir.name, ukey, key, name, fused, anim, up, ref)
    for ukey, anim in m["anim"].items():
        rows.append(
            base
            | {"kind": "anim", "u": float(ukey), "kbps": info["anim"][ukey]}
            | score(list(anim))
        )
    return rows


_PICTURES: dict[tuple[str, str], dict[str, np.ndarray]] = {}


def _keep_picture(args, clip, ukey, akey, name, fused, anim, up, ref) -> None:
    if akey != args.picture_aux or ukey != f"{args.u[0]:.2f}":
        return
    t = min(args.picture_frame // args.stride, len(ref) - 1)
    d = _PICTURES.setdefault((clip, akey), {})
    d |= {"source": ref[t], "anim": anim[t], "aux up": up[t], name: fused[t]}


def _write_pictures(out: Path, names: list[str]) -> list[str]:
    import cv2

    written = []
    for (clip, akey), d in _PICTURES.items():
        cols = ["source", "anim", "aux up"] + [n for n in names if n in d and n != "band"]
        tiles = []
        for c in cols:
            tile = cv2.cvtColor(d[c], cv2.COLOR_RGB2BGR).copy()
            cv2.putText(tile, Path(c).stem, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255,) * 3, 1)
            tiles.append(tile)
        path = out / f"side_by_side_{clip}_{akey}.png"
        cv2.imwrite(str(path), np.concatenate(tiles, axis=1))
        written.append(path.name)
    return written


def report(rows: list[dict], anchors: Path, command: str, notes: list[str]) -> str:
    clips = sorted({r["clip"] for r in rows})
    points = json.loads(anchors.read_text())["points"] if anchors.is_file() else []
    vvc = [p for p in points if p["codec"] == "vvc" and p["clip"] in clips]
    lines = [
        "# Fusion ablation: animation, auxiliary stream and their fusions on the same bitstreams",
        "",
        f"Command: `{command}`",
        "",
        f"Means over {len(clips)} clips (the validation people of `keyface bench`). "
        + " ".join(notes),
        "",
        "| aux | u | kind | kbit/s | PSNR | LPIPS-Alex | DISTS | ms/frame |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    order = {"anim": 0, "aux": 1, "band": 2, "aligned": 3}

    def key(r: dict) -> tuple:
        return (r.get("scale") or 0, r.get("qp") or 0, r.get("u") or 0, order.get(r["kind"], 9))

    groups: dict[tuple, list[dict]] = {}
    for r in sorted(rows, key=key):
        groups.setdefault((r["kind"], r.get("scale"), r.get("qp"), r.get("u")), []).append(r)
    for (kind, scale, qp, u), sel in groups.items():
        ms = [r["ms"] for r in sel if "ms" in r]
        lines.append(
            f"| {f'x{scale} QP {qp}' if scale else ''} | {'' if u is None else u} | {kind} | "
            f"{np.mean([r['kbps'] for r in sel]):.2f} | "
            f"{np.mean([r['psnr'] for r in sel]):.2f} | "
            f"{np.mean([r['lpips_alex'] for r in sel]):.4f} | "
            f"{np.nanmean([r['dists'] for r in sel]):.4f} | "
            f"{f'{np.mean(ms):.1f}' if ms else ''} |"
        )
    for qp in sorted({p["param"] for p in vvc}):
        sel = [p for p in vvc if p["param"] == qp]
        lines.append(
            f"| VVC QP {qp} (bench anchor, 125 frames) | | vvc | "
            f"{np.mean([p['kbps'] for p in sel]):.2f} | "
            f"{np.mean([p['metrics']['psnr'] for p in sel]):.2f} | "
            f"{np.mean([p['metrics']['lpips_alex'] for p in sel]):.4f} | "
            f"{np.nanmean([p['metrics'].get('dists', np.nan) for p in sel]):.4f} | |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, required=True, help="a keyface bench --out folder")
    parser.add_argument("--out", type=Path, default=Path("results/fusion"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/fusion_bench"))
    parser.add_argument("--u", type=float, nargs="+", default=[0.3])
    parser.add_argument("--aux", nargs="+", default=["4:34", "4:40", "4:46", "2:44", "2:50"])
    parser.add_argument("--fusions", nargs="+", default=["band", "aligned"])
    parser.add_argument("--frames", type=int, default=125)
    parser.add_argument("--stride", type=int, default=1, help="measure every Nth frame")
    parser.add_argument("--dists-every", type=int, default=5, help="DISTS on every Nth of those")
    parser.add_argument("--limit", type=int, default=None, help="at most this many clips")
    parser.add_argument("--anchors", type=Path, default=Path("results/bench/points.json"))
    parser.add_argument("--picture", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--picture-clip", default="KwaiVGI+LivePortrait__d6")
    parser.add_argument("--picture-aux", default="s4_q40")
    parser.add_argument("--picture-frame", type=int, default=100)
    args = parser.parse_args(argv)

    from keyface.threads import apply_thread_policy

    apply_thread_policy()
    args.out.mkdir(parents=True, exist_ok=True)
    fusions = {Path(n).stem if n.endswith(".safetensors") else n: _fusion(n) for n in args.fusions}
    clips = sorted(p for p in (args.bench / "cache").iterdir() if (p / "analysis.npz").is_file())
    clips = clips[: args.limit]
    t0 = time.perf_counter()
    rows: list[dict] = []
    for k, clip in enumerate(clips, 1):
        rows.extend(run_clip(clip, args, fusions))
        print(f"[{k}/{len(clips)}] {clip.name} {time.perf_counter() - t0:.0f} s", flush=True)
        (args.out / "points.json").write_text(json.dumps(rows, indent=1))
    pictures = _write_pictures(args.out, list(fusions))
    command = "python benchmarks/fusion.py " + " ".join(argv if argv is not None else sys.argv[1:])
    notes = [
        f"Streams of the first {args.frames} frames per clip (rates over all of them), measured "
        f"on every {args.stride}th frame; DISTS on every {args.dists_every}th of those;",
        "ms/frame: the fusion alone on one thread (the CPU was shared with other jobs).",
        f"Pictures: {', '.join(pictures)}." if pictures else "",
    ]
    text = report(rows, args.anchors, command, notes)
    (args.out / "report.md").write_text(text)
    print(text)
    print(f"{len(clips)} clips in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
