"""``keyface encode IN -o OUT.kf``: code a talking-head video at a few kbit/s."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from typing import Any

from keyface.bitstream import MAX_GOP, MIN_GOP, RefreshMode
from keyface.cli._common import (
    Progress,
    add_force_argument,
    add_motion_arguments,
    existing_file,
    expected_frames,
    human_bytes,
    non_negative_int,
    output_file,
    positive_float,
    positive_int,
    progress_bar,
    stage_bars,
    use_fomm_arguments,
)
from keyface.cli.main import UserError
from keyface.codec.config import GAZE_RULES, MODES, CodecConfig
from keyface.codec.encoder import EncoderStats
from keyface.codec.ratecontrol import QUALITY_PRESETS, SEARCH_TRIALS_MAX, config_for_preset
from keyface.intra import available_intra_codecs
from keyface.io import write_bytes_atomic
from keyface.pipeline import (
    Analysis,
    EncodeResult,
    UserInputError,
    analyze,
    encode_analysis,
    encode_at_kbps,
)

REFRESH_NAMES = {"psnr": RefreshMode.PSNR, "motion": RefreshMode.MOTION, "fixed": RefreshMode.FIXED}


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "encode",
        help="encode a video into a keyface stream",
        description="Encode a video of a talking person into a keyface stream (.kf).",
    )
    p.add_argument("input", help="input video (any common container)")
    p.add_argument("-o", "--output", required=True, help="output stream (.kf)")
    add_codec_arguments(p)
    add_force_argument(p)
    return p


def add_codec_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=int, default=256, choices=(256, 384, 512), help="crop size")
    p.add_argument(
        "--no-crop",
        action="store_true",
        help="the input is already a square face crop: code it as it is",
    )
    rate = p.add_mutually_exclusive_group()
    rate.add_argument(
        "--kbps", type=positive_float, help="target bitrate (kbit/s), met within ~15%%"
    )
    rate.add_argument(
        "--quality",
        choices=tuple(QUALITY_PRESETS),
        default="medium",
        help="quality preset when no --kbps is given (default: medium)",
    )
    p.add_argument("--intra", choices=available_intra_codecs(), help="keyframe codec")
    p.add_argument(
        "--keyframe-quality", type=positive_int, help="keyframe quality 1..100 (overrides)"
    )
    p.add_argument("--refresh", choices=tuple(REFRESH_NAMES), help="keyframe refresh rule")
    p.add_argument("--threshold", type=float, help="refresh threshold (dB, distance or frames)")
    p.add_argument(
        "--psnr-check",
        type=non_negative_int,
        metavar="N",
        help="motion refresh: render every N-th frame as the decoder will and send a keyframe "
        "when its PSNR is below --psnr-floor (catches zooms and lighting changes the motion "
        "gate does not see; costs bits, docs/codec.md; 0: off, the default)",
    )
    p.add_argument(
        "--psnr-floor", type=float, metavar="DB", help="the floor of --psnr-check (default 16)"
    )
    p.add_argument(
        "--max-interval",
        type=non_negative_int,
        metavar="N",
        help="psnr and motion refresh: also send a keyframe when the newest one is N frames "
        "old (the rules still send theirs in between; 0: off, the default)",
    )
    p.add_argument("--buffer", type=int, choices=range(1, 6), help="reference buffer size 1..5")
    p.add_argument(
        "--motion-level", type=non_negative_int, help="motion quantiser level (0 = finest)"
    )
    p.add_argument(
        "--chunk", type=positive_int, help="frames per motion packet (1 = lowest latency)"
    )
    add_motion_arguments(p)
    p.add_argument(
        "--no-motion-field",
        action="store_true",
        help="do not send the body-motion grid (hair, shoulders and background held still)",
    )
    p.add_argument(
        "--content",
        choices=("off", "keyframe", "detail"),
        help="when no reference shows the frame's open mouth or eyes: send a keyframe, or the "
        "missing eyes/mouth as DETAIL rectangles on the rendered frame (docs/codec.md); off: "
        "the motion gate alone. --motion fomm: off unless given, judged on the face mesh's "
        "landmarks, and detail sends keyframes (docs/motion.md)",
    )
    p.add_argument(
        "--gaze",
        choices=GAZE_RULES,
        help="where the eyes look (a warp barely moves an iris): choose (default) draws each "
        "frame from a reference whose eyes look the same way where one holds it; refresh also "
        "sends a keyframe for a glance no reference shows (more bits: docs/codec.md); off",
    )
    p.add_argument(
        "--detail-boost",
        type=non_negative_int,
        help="code each keyframe's eyes and mouth again this many quality steps higher (0: no)",
    )
    p.add_argument(
        "--detail-parts",
        choices=["eyes,mouth", "eyes", "mouth"],
        help="which parts --detail-boost codes again (default eyes,mouth)",
    )
    hybrid = p.add_argument_group("hybrid modes (docs/hybrid.md)")
    hybrid.add_argument(
        "--mode",
        choices=(*MODES, "auto"),
        help="animation (keyframes + motion), hybrid (+ a low-delay auxiliary stream fused at "
        "the decoder), bidirectional (groups between two keyframes; adds gop-1 frames of "
        "delay) or auto (default: the mode the measured ladder puts at that quality or rate)",
    )
    hybrid.add_argument(
        "--aux-scale",
        type=int,
        choices=(0, 2, 4, 8),
        help="aux stream downsampling (default 4); 0: no aux stream (bidirectional only)",
    )
    hybrid.add_argument("--aux-qp", type=int, choices=range(52), metavar="0..51", help="aux QP")
    hybrid.add_argument(
        "--gop",
        type=int,
        choices=range(MIN_GOP, MAX_GOP + 1),
        metavar=f"{MIN_GOP}..{MAX_GOP}",
        help="bidirectional: frames per group, both keyframes included (default 15)",
    )
    hybrid.add_argument("--fusion", help="the fusion the header names as the decoder's default")
    hybrid.add_argument(
        "--group-content",
        choices=tuple(GROUP_CONTENT),
        help="bidirectional groups: off (each frame from the nearer keyframe; the default of "
        "--mode bidirectional), choice (from a keyframe that shows its mouth and eyes), or "
        "also cut a group short, with a keyframe, where neither keyframe shows its eyes / "
        "mouth (eyes+mouth: the default of the one ladder's groups; docs/hybrid.md)",
    )
    p.add_argument("--max-frames", type=positive_int, help="code only the first N frames")
    p.add_argument(
        "--full-frame",
        action="store_true",
        help="also send the first full source frame so decode --full-frame can paste back",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars or summary")


GROUP_CONTENT: dict[str, tuple[str, ...] | None] = {
    "off": None,
    "choice": (),
    "eyes": ("eyes",),
    "mouth": ("mouth",),
    "eyes+mouth": ("eyes", "mouth"),
}
"""``--group-content`` -> :attr:`CodecConfig.group_cut`."""


def config_from_args(
    args: argparse.Namespace, settings: dict[str, Any] | None = None
) -> CodecConfig:
    """The settings the options ask for: the ladder at ``--quality`` (default medium) of
    ``--mode`` (default auto), with every option given explicitly (``settings``, default
    :func:`explicit_settings`) over it."""
    mode = getattr(args, "mode", None) or "auto"
    config = config_for_preset(args.quality or "medium", CodecConfig(mode=mode))
    if settings is None:
        settings = explicit_settings(args)
    try:
        return replace(config, **settings)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def explicit_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`CodecConfig` fields the options set explicitly (over the ladder's choice,
    at ``--quality`` and at every trial of a ``--kbps`` search)."""
    if getattr(args, "kbps", None) is not None and args.keyframe_quality is not None:
        raise UserError("--kbps chooses the keyframe quality: leave out --keyframe-quality")
    overrides: dict[str, Any] = {"size": args.size}
    if args.intra:
        overrides["intra_codec"] = args.intra
    if args.keyframe_quality is not None:
        overrides["keyframe_quality"] = args.keyframe_quality
    if args.refresh:
        overrides["refresh_mode"] = REFRESH_NAMES[args.refresh]
        overrides["refresh_threshold"] = None
    if args.threshold is not None:
        overrides["refresh_threshold"] = args.threshold
    if args.buffer is not None:
        overrides["buffer_size"] = args.buffer
    if getattr(args, "psnr_check", None) is not None:
        overrides["psnr_check"] = args.psnr_check
    if getattr(args, "psnr_floor", None) is not None:
        if not overrides.get("psnr_check"):
            raise UserError("--psnr-floor is the floor of --psnr-check N: give both")
        overrides["psnr_floor"] = args.psnr_floor
    if getattr(args, "max_interval", None) is not None:
        if args.refresh == "fixed":
            raise UserError("--max-interval is for --refresh psnr or motion (fixed: --threshold)")
        overrides["max_interval"] = args.max_interval
    if args.motion_level is not None:
        overrides["quant_level"] = args.motion_level
    if args.chunk is not None:
        overrides["motion_chunk"] = args.chunk
    if getattr(args, "no_motion_field", False):
        overrides["motion_field"] = False
    overrides.update(motion_overrides(args))
    content = getattr(args, "content", None)
    if content == "off":
        overrides["content_refresh"] = False
    elif content is not None:
        overrides["content_refresh"] = True
        overrides["content_update"] = content
        overrides["landmark_content"] = True  # FOMM streams: judged on the landmarks
    if getattr(args, "detail_boost", None) is not None:
        overrides["detail_boost"] = args.detail_boost
    if getattr(args, "detail_parts", None) is not None:
        overrides["detail_parts"] = tuple(args.detail_parts.split(","))
    if getattr(args, "gaze", None) is not None:
        overrides["gaze_rule"] = args.gaze
    if getattr(args, "group_content", None) is not None:
        overrides["group_cut"] = GROUP_CONTENT[args.group_content]
    for name in ("aux_scale", "aux_qp", "gop", "fusion"):
        if getattr(args, name, None) is not None:
            overrides[name] = getattr(args, name)
    if overrides.get("fusion") is not None:
        from keyface.fusion import UnknownFusionError, get_fusion

        try:
            get_fusion(overrides["fusion"])
        except UnknownFusionError as exc:
            raise UserError(str(exc)) from None
    return overrides


def motion_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """``--motion fomm --model FILE``: load the model (once) and code and render with it."""
    if use_fomm_arguments(args) is None:
        return {}
    from keyface.fomm import MOTION_NAME

    return {"motion": MOTION_NAME, "generator": MOTION_NAME}


def encode_from_args(args: argparse.Namespace) -> EncodeResult:
    """Analyse and code ``args.input`` as the options say (every option and path is checked
    by the caller before: this is the work)."""
    source = existing_file(args.input)
    settings = explicit_settings(args)
    config = config_from_args(args, settings)
    quiet = getattr(args, "quiet", False)
    total = expected_frames(source, args.max_frames)
    try:
        first = "analyse" if args.no_crop else "find face"
        with stage_bars(total, first, "analyse", not quiet) as (plan_tick, tick):
            analysis = analyze(
                source,
                size=config.size,
                crop=not args.no_crop,
                max_frames=args.max_frames,
                progress=tick,
                plan_progress=plan_tick,
            )
    except UserInputError as exc:
        raise UserError(str(exc)) from None
    if args.kbps is not None:
        # The search walks the ladder of the mode asked for (auto: the one over all modes),
        # the options given explicitly kept at every trial.
        ladder = replace(config, mode=getattr(args, "mode", None) or "auto")
        # --refresh without --threshold: the ladder picks that rule's threshold at each trial.
        pinned = {k: v for k, v in settings.items() if (k, v) != ("refresh_threshold", None)}
        return _encode_at_kbps(analysis, ladder, pinned, args.kbps, args.full_frame, quiet)
    with progress_bar(analysis.frame_count, "encode", not quiet) as tick:
        return encode_analysis(analysis, config, with_background=args.full_frame, progress=tick)


def _encode_at_kbps(
    analysis: Analysis,
    config: CodecConfig,
    pinned: dict[str, Any],
    kbps: float,
    full_frame: bool,
    quiet: bool,
) -> EncodeResult:
    """The rate search (each trial one encode of every frame) with a bar per trial."""
    desc = f"rate trial 1 (of at most {SEARCH_TRIALS_MAX})"
    bar = Progress(analysis.frame_count, desc, not quiet)
    trials = 0

    def on_trial(trial_config: CodecConfig, result: EncodeResult) -> None:
        nonlocal trials
        trials += 1
        bar.restart(
            f"rate trial {trials + 1} (of at most {SEARCH_TRIALS_MAX})",
            f"last {result.kbps:.2f} kbit/s, target {kbps:g}",
        )

    try:
        return encode_at_kbps(
            analysis,
            config,
            kbps,
            with_background=full_frame,
            progress=bar.update,
            on_trial=on_trial,
            pinned=pinned,
        )
    finally:
        bar.close()


def check_encode_args(args: argparse.Namespace) -> None:
    """Everything about the options that can be checked before reading the video."""
    config_from_args(args)


def print_summary(result: EncodeResult, file: Any = None) -> None:
    s = result.stats
    a = result.analysis
    fps = a.frame_count / max(result.encode_seconds, 1e-9)
    print(
        f"{a.frame_count} frames {a.size}x{a.size} @ {float(a.fps):.2f} fps: "
        f"{human_bytes(len(result.data))}, {result.kbps:.2f} kbit/s "
        f"({_parts(s)}); encoder {fps:.0f} frames/s",
        file=file or sys.stderr,
    )


def _parts(s: EncoderStats) -> str:
    """Where the bytes went; the parts add up to the stream's size."""
    parts = [
        f"header {human_bytes(s.header_bytes)}",
        f"{s.keyframes} keyframes {human_bytes(s.keyframe_bytes)}",
        f"motion {human_bytes(s.motion_bytes)} = "
        f"{8 * s.motion_bytes / max(s.frames, 1):.0f} bits/frame",
    ]
    if s.detail_bytes:
        parts.append(f"{s.updates} detail updates {human_bytes(s.detail_bytes)}")
    if s.aux_bytes:
        parts.append(
            f"aux {human_bytes(s.aux_bytes)} = {8 * s.aux_bytes / max(s.frames, 1):.0f} bits/frame"
        )
    if s.background_bytes:
        parts.append(f"background {human_bytes(s.background_bytes)}")
    if s.other_bytes:
        parts.append(f"other {human_bytes(s.other_bytes)}")
    return ", ".join(parts)


def run(args: argparse.Namespace) -> int:
    source = existing_file(args.input)
    out = output_file(args.output, inputs=[source], force=args.force, suffixes=(".kf",))
    check_encode_args(args)
    result = encode_from_args(args)
    write_bytes_atomic(out, result.data)
    if not args.quiet:
        print_summary(result)
    return 0
