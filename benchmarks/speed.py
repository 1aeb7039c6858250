"""Encoder and decoder speed at 256x256 on this machine (frames per second).

    python benchmarks/speed.py                       # the carphone clip, 120 frames
    python benchmarks/speed.py --input clip.mp4 --frames 300 --repeat 3

Stages timed separately, best of ``--repeat`` runs:
- analysis: read + crop + face-mesh landmarks (the per-frame work of a live sender);
- coding: the encoder state machine (motion quantisation, entropy coding, refresh decisions,
  keyframe coding) over frames that are already cropped;
- encoder = analysis + coding, the figure to compare with the 50 frames/s target;
- decoder: bitstream parsing, keyframe decoding, motion decoding and rendering with
  ``--generator`` (the default renderer, the keyframe enhancer, unless named; the encoder
  renders with the same one; 25 frames/s target).

``--mode animation,hybrid,bidirectional`` times each stream mode on the same analysis (the
hybrid modes add the aux stream's coding, decoding and the fusion; targets: hybrid decode and
encode >= 25 frames/s at 256x256 with the HEVC aux stream, docs/hybrid.md); ``--mode auto``
times the one ladder at ``--quality`` as ``keyface encode`` codes it by default (its own mode,
group length and keyframe codec; ``--aux-scale``, ``--aux-qp`` and ``--gop`` do not apply).

``--motion fomm --model FILE`` times the FOMM route (issue 15, docs/motion.md): the model's
keypoint detector runs in the coding stage (on each cropped frame), its dense motion and
generator in the decoder (``--generator`` is then the model's renderer). Speed does not depend
on the weights, so a model file of the upstream vox-256 architecture with random weights
(``--fomm-random vox256 --model FILE`` writes one; ``vox256-half`` the same with ZTE's
half-width generator) times the full model
where no trained one is at hand:

    python benchmarks/speed.py --fomm-random vox256 --model /tmp/fomm_full.safetensors
    python benchmarks/speed.py --motion fomm --model /tmp/fomm_full.safetensors --frames 30
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path

from keyface.bitstream import RefreshMode
from keyface.cli.demo import default_clip
from keyface.cli.encode import motion_overrides
from keyface.cli.main import UserError
from keyface.codec.config import CodecConfig
from keyface.codec.ratecontrol import config_for_preset
from keyface.pipeline import analyze, decode_bytes, encode_analysis
from keyface.renderers import DEFAULT_RENDERER, get_renderer
from keyface.threads import apply_thread_policy

MODES = {"psnr": RefreshMode.PSNR, "motion": RefreshMode.MOTION, "fixed": RefreshMode.FIXED}


def best_of(repeat: int, fn):  # type: ignore[no-untyped-def]
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path)
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quality", default="medium")
    parser.add_argument("--refresh", choices=tuple(MODES), default="motion")
    parser.add_argument("--intra")
    parser.add_argument(
        "--generator",
        default=DEFAULT_RENDERER,
        help=f"encoder and decoder renderer (default {DEFAULT_RENDERER}; warp, a name, a file)",
    )
    parser.add_argument(
        "--mode", default="animation", help="comma-separated stream modes to time (see above)"
    )
    parser.add_argument("--aux-scale", type=int, default=4)
    parser.add_argument("--aux-qp", type=int, default=40)
    parser.add_argument("--gop", type=int, default=15)
    parser.add_argument("--fusion", help="hybrid modes: the fusion (default: keyface.fusion's)")
    parser.add_argument("--motion", choices=("facemesh", "fomm"), default="facemesh")
    parser.add_argument("--model", type=Path, help="--motion fomm: the model file")
    parser.add_argument(
        "--fomm-random",
        choices=("vox256", "vox256-half", "small"),
        help="write a FOMM model file of that shape (keyface.train.fomm.model_config, at 256) "
        "with random weights to --model and stop",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    apply_thread_policy()  # keyface.threads: KEYFACE_THREADS or the default
    if args.fomm_random:
        write_random_fomm(args.fomm_random, args.model)
        return
    try:  # --motion fomm --model FILE: loaded and named as keyface encode does
        fomm = motion_overrides(args)
    except UserError as exc:
        parser.error(str(exc))
    if fomm:
        args.generator = fomm["generator"]
    source = args.input or default_clip()
    config = config_for_preset(args.quality)
    config = config_for_preset(args.quality, replace(config, refresh_mode=MODES[args.refresh]))
    if args.intra:
        config = replace(config, intra_codec=args.intra)
    config = replace(config, generator=args.generator, motion=fomm.get("motion"))

    t_ana, analysis = best_of(args.repeat, lambda: analyze(source, max_frames=args.frames))
    renderer = get_renderer(args.generator)
    n = analysis.frame_count
    reports = []
    for mode in args.mode.split(","):
        if mode == "auto":  # the one ladder at --quality, as keyface encode codes it
            base = CodecConfig(mode="auto", refresh_mode=MODES[args.refresh])
            ladder = config_for_preset(args.quality, base)
            cfg = replace(ladder, generator=config.generator, motion=config.motion)
            if args.intra:
                cfg = replace(cfg, intra_codec=args.intra)
        else:
            cfg = replace(
                config, mode=mode, aux_scale=args.aux_scale, aux_qp=args.aux_qp, gop=args.gop
            )
        t_enc, result = best_of(args.repeat, lambda c=cfg: encode_analysis(analysis, c))
        t_dec, decoded = best_of(
            args.repeat,
            lambda r=result: decode_bytes(r.data, renderer=renderer, fusion=args.fusion),
        )
        report = {
            "input": str(source),
            "frames": n,
            "size": analysis.size,
            "cpu_count": os.cpu_count(),
            "threads": os.environ.get("KEYFACE_THREADS", "default"),
            "mode": mode if mode != "auto" else f"auto ({cfg.mode})",
            "refresh": args.refresh,
            "intra": cfg.intra_codec,
            "keyframes": result.stats.keyframes,
            "kbps": result.kbps,
            "analysis_fps": n / t_ana,
            "coding_fps": n / t_enc,
            "encoder_fps": n / (t_ana + t_enc),
            "generator": args.generator,
            "decoder_fps": len(decoded.frames) / t_dec,
        }
        if fomm:
            report |= {"motion": fomm["motion"], "model": str(args.model)}
        if cfg.mode != "animation":
            from keyface.fusion import DEFAULT_FUSION

            report |= {
                "aux_scale": cfg.aux_scale,
                "aux_qp": cfg.aux_qp,
                "aux_kbps": 8 * result.stats.aux_bytes / 1000 / (n / float(analysis.fps)),
                "fusion": args.fusion or DEFAULT_FUSION,
            }
            if cfg.mode == "bidirectional":
                report["gop"] = cfg.gop
        reports.append(report)
        for key, value in report.items():
            print(f"{key:<14} {value:.2f}" if isinstance(value, float) else f"{key:<14} {value}")
        print()
    report = reports[0] if len(reports) == 1 else {"modes": reports}  # type: ignore[assignment]
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


def write_random_fomm(name: str, path: Path | None) -> None:
    """A FOMM model file of shape ``name`` (:func:`keyface.train.fomm.model_config` at 256)
    with random weights: for timing only."""
    import torch

    from keyface.fomm.model import FommNetworks, save_model
    from keyface.train.fomm import model_config

    if path is None:
        raise SystemExit("--fomm-random needs --model FILE (where to write it)")
    torch.manual_seed(0)
    networks = FommNetworks(model_config(name, 256))
    count = sum(p.numel() for p in networks.parameters())
    save_model(path, networks, {"provenance": f"random weights, shape {name} (timing only)"})
    print(f"wrote {path}: FOMM {name}, {count / 1e6:.1f} M parameters, random weights")


if __name__ == "__main__":
    main()
