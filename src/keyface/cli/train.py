"""``keyface train prepare|fit|eval-fomm``: train the learned networks (per-frame generator,
keyframe enhancer, the First Order Motion Model) on a folder of videos."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keyface.cli.main import UserError

if TYPE_CHECKING:
    from keyface.fomm.model import FommModel


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "train",
        help="train the learned generator and keyframe enhancer",
        description="Train the learned networks: `prepare` caches face crops, motion and "
        "codec-degraded references and keyframes of a set of clips (split by person), `fit` "
        "trains the per-frame generator or the keyframe enhancer on them. See docs/generator.md.",
    )
    steps = p.add_subparsers(dest="train_command", metavar="STEP")
    steps.required = True

    prep = steps.add_parser("prepare", help="crop, analyse and degrade clips into a data cache")
    prep.add_argument("--clips", required=True, help="folder of videos or a MANIFEST.tsv")
    prep.add_argument("--split", help="splits/*.json: prepare its train and validation clips")
    prep.add_argument("--out", required=True, help="data cache folder")
    prep.add_argument("--max-frames", type=int, default=200)
    prep.add_argument("--references", type=int, default=8, help="references per clip")
    prep.add_argument("--codec", default="vvc", help="keyframe codec that degrades references")
    prep.add_argument(
        "--keyframes",
        type=int,
        default=24,
        help="frames per clip coded as keyframes for the enhancer (0: none)",
    )
    prep.add_argument("--workers", type=int, default=2)
    prep.add_argument("--seed", type=int, default=0)
    prep.add_argument(
        "--task",
        default="generator",
        choices=("generator", "fomm"),
        help="fomm: face crops only (no face mesh, no codec), --size x --size, every "
        "--stride-th of the first --max-frames frames (docs/motion.md, training fomm)",
    )
    prep.add_argument("--size", type=int, default=128, help="fomm: crop side in the cache")
    prep.add_argument("--stride", type=int, default=3, help="fomm: keep every N-th frame")
    prep.add_argument("-q", "--quiet", action="store_true")

    fit = steps.add_parser("fit", help="train (or resume) a generator run")
    fit.add_argument("--data", required=True, help="data cache from `keyface train prepare`")
    fit.add_argument(
        "--split",
        help="splits/*.json: train on its train people, validate on "
        "its validation people (default: every prepared clip, no validation)",
    )
    fit.add_argument("--run", required=True, help="run folder (checkpoints, log, weights)")
    fit.add_argument(
        "--task",
        default="generator",
        choices=("generator", "enhancer", "fusion", "fomm", "fomm-distill", "fomm-half"),
        help="the per-frame generator, the keyframe enhancer, the aux-stream fusion (--data "
        "from `python -m keyface.train.fusion_data`; docs/fusion.md), the First Order Motion "
        "Model (data from `prepare --task fomm`), the MobileNetV2-style keypoint encoder "
        "distilled from a FOMM model's detector (--teacher) or a FOMM model's generator at "
        "half the channels fine-tuned from it (--teacher; docs/motion.md)",
    )
    fit.add_argument("--steps", type=int, default=2000)
    fit.add_argument("--batch", type=int, default=8)
    fit.add_argument("--patch", type=int, default=96, help="training patch side (0: whole)")
    fit.add_argument("--lr", type=float, help="learning rate (default 3e-4; fomm: 2e-4)")
    fit.add_argument(
        "--config",
        default="tiny",
        choices=("tiny", "small", "vox256"),
        help="fomm: network shape (tiny 80 k parameters, small 1.2 M, vox256 59.8 M)",
    )
    fit.add_argument("--size", type=int, default=128, help="fomm: picture side the model sees")
    fit.add_argument(
        "--minutes", type=float, default=0.0, help="fomm: stop after this wall time (0: none)"
    )
    fit.add_argument("--checkpoint-every", type=int, default=100, help="fomm: steps")
    fit.add_argument(
        "--teacher",
        help="fomm-distill: the FOMM model file whose detector teaches; fomm-half: the FOMM "
        "model file whose generator is halved",
    )
    fit.add_argument(
        "--width", type=float, default=1.0, help="fomm-distill: the student's channel multiplier"
    )
    fit.add_argument(
        "--prune-last",
        type=int,
        default=0,
        help="fomm-distill: inverted residual blocks left out at the end (with --init: the "
        "unpruned student's student.safetensors, fine-tuned)",
    )
    fit.add_argument("--near", type=int, default=6, help="near-target window (frames)")
    fit.add_argument("--near-share", type=float, default=0.85, help="share of near targets")
    fit.add_argument(
        "--widths",
        help="channels at 1, 1/2, 1/4, 1/8 (generator, default 16,32,64,128) or at 1/2, 1/4, "
        "1/8 (enhancer, default 48,64,96)",
    )
    fit.add_argument("--blocks", type=int, default=3, help="residual blocks at 1/8")
    fit.add_argument("--vgg-layers", type=int, default=4, choices=(1, 2, 3, 4, 5))
    fit.add_argument(
        "--vgg-mode",
        default="unit",
        choices=("l1", "unit"),
        help="l1 of VGG features, or squared distance of channel-normalised features",
    )
    fit.add_argument("--vgg-scales", default="1,0.5", help="image scales of the VGG loss")
    fit.add_argument(
        "--adv-weight", type=float, default=0.0, help="adversarial term weight (0: none)"
    )
    fit.add_argument("--adv-lr", type=float, default=1e-4, help="discriminator learning rate")
    fit.add_argument("--init", default="", help="weights (.safetensors) a new run starts from")
    fit.add_argument(
        "--resample-share",
        type=float,
        default=0.0,
        help="enhancer: share of steps with output and target resampled alike (0: none)",
    )
    fit.add_argument("--device", default="cpu", help="cpu or cuda")
    fit.add_argument(
        "--amp",
        action="store_true",
        help="bfloat16 mixed precision (CUDA, or CPUs with AVX512-BF16/AMX)",
    )
    fit.add_argument(
        "--threads",
        type=int,
        default=0,
        help="compute threads for the run (0: the thread policy, `keyface --threads`)",
    )
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--val-every", type=int, default=200)
    fit.add_argument("-q", "--quiet", action="store_true")

    ev = steps.add_parser(
        "eval-fomm", help="reconstruction quality of a FOMM model on held-out pairs"
    )
    ev.add_argument("--model", required=True, help="FOMM model file (.safetensors)")
    ev.add_argument("--data", required=True, help="data cache from `prepare --task fomm`")
    ev.add_argument("--split", help="splits/*.json: pairs of its validation people")
    ev.add_argument("--pairs", type=int, default=64)
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--json", help="also write the figures to this JSON file")
    return p


def _people(split: str | None) -> tuple[set[str] | None, set[str] | None]:
    if split is None:
        return None, None
    from keyface.clips import ClipSelectionError, load_split

    try:
        people = load_split(split).people
        return set(people["train"]), set(people["validation"])
    except ClipSelectionError as exc:
        raise UserError(str(exc)) from None
    except KeyError as exc:
        raise UserError(f"{split}: not a split file (no {exc.args[0]}_people)") from None


def _select(args: argparse.Namespace) -> list[Any]:
    from keyface.clips import ClipSelectionError, select_clips

    try:
        clips = []
        subsets = ("train", "validation") if args.split else (None,)
        for subset in subsets:
            clips += (
                select_clips(
                    args.clips,
                    split=args.split,
                    subset=subset or "validation",
                    one_per_person=False,
                )
                if subset
                else select_clips(args.clips, one_per_person=False)
            )
    except ClipSelectionError as exc:
        raise UserError(str(exc)) from None
    return clips


def _prepare_fomm(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from keyface.train.fomm_data import FommPrepareConfig, prepare_fomm_clips

    if args.size < 16 or args.stride < 1:
        raise UserError("--size must be at least 16 and --stride at least 1")
    clips = _select(args)
    config = FommPrepareConfig(size=args.size, max_frames=args.max_frames, stride=args.stride)
    bar = tqdm(total=len(clips), desc="prepare", unit="clip", disable=args.quiet)

    def progress(name: str, error: str | None) -> None:
        bar.update(1)
        if error:
            tqdm.write(f"keyface train prepare: skipped {name}: {error}", file=sys.stderr)

    failed = prepare_fomm_clips(
        [(c.path, c.person) for c in clips],
        Path(args.out),
        config,
        workers=args.workers,
        progress=progress,
    )
    bar.close()
    print(f"prepared {len(clips) - len(failed)} of {len(clips)} clips in {args.out}")
    return 1 if failed and len(failed) == len(clips) else 0


def _prepare(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from keyface.train.data import (
        KeyframeConfig,
        PrepareConfig,
        prepare_all_keyframes,
        prepare_clips,
    )

    if args.task == "fomm":
        return _prepare_fomm(args)
    clips = _select(args)
    config = PrepareConfig(max_frames=args.max_frames, references=args.references, codec=args.codec)
    bar = tqdm(total=len(clips), desc="prepare", unit="clip", disable=args.quiet)

    def progress(name: str, error: str | None) -> None:
        bar.update(1)
        if error:
            tqdm.write(f"keyface train prepare: skipped {name}: {error}", file=sys.stderr)

    failed = prepare_clips(
        [(c.path, c.person) for c in clips],
        Path(args.out),
        config,
        seed=args.seed,
        workers=args.workers,
        progress=progress,
    )
    bar.close()
    print(f"prepared {len(clips) - len(failed)} of {len(clips)} clips in {args.out}")
    if failed and len(failed) == len(clips):
        return 1
    if args.keyframes > 0:
        bar = tqdm(
            total=len(clips) - len(failed), desc="keyframes", unit="clip", disable=args.quiet
        )
        prepare_all_keyframes(
            Path(args.out),
            KeyframeConfig(count=args.keyframes),
            seed=args.seed,
            workers=args.workers,
            progress=progress,
        )
        bar.close()
    return 0


def _fit_fusion(args: argparse.Namespace) -> int:
    """``--task fusion``: :mod:`keyface.train.fusion` with the shared options."""
    from keyface.train.fusion import main

    argv = ["--data", args.data, "--run", args.run, "--steps", str(args.steps)]
    lr = args.lr if args.lr is not None else 3e-4
    argv += ["--batch", str(args.batch), "--patch", str(args.patch), "--lr", str(lr)]
    argv += ["--vgg-layers", str(args.vgg_layers), "--seed", str(args.seed)]
    argv += ["--val-every", str(args.val_every), "--threads", str(args.threads or 1)]
    return main([*argv, *(["-q"] if args.quiet else [])])


def _fit(args: argparse.Namespace) -> int:
    if args.task == "fusion":
        return _fit_fusion(args)
    from tqdm import tqdm

    from keyface.generator.enhancer import EnhancerConfig
    from keyface.generator.model import GeneratorConfig
    from keyface.train.data import load_prepared
    from keyface.train.loop import TrainConfig, train
    from keyface.train.pairs import PairConfig

    data = Path(args.data)
    if not data.is_dir():
        raise UserError(f"{data}: no such data cache (run `keyface train prepare` first)")
    if args.task == "fomm":
        return _fit_fomm(args)
    if args.task == "fomm-distill":
        return _fit_fomm_distill(args)
    if args.task == "fomm-half":
        return _fit_fomm_half(args)
    train_people, val_people = _people(args.split)
    train_clips = load_prepared(data, train_people)
    val_clips = load_prepared(data, val_people) if val_people else []
    if not train_clips:
        raise UserError(f"{data}: no prepared clip of the training people")
    overlap = {c.person for c in train_clips} & {c.person for c in val_clips}
    if overlap:
        raise UserError(f"people in both train and validation: {', '.join(sorted(overlap))}")
    model, enhancer = GeneratorConfig(blocks=args.blocks), EnhancerConfig(blocks=args.blocks)
    try:
        if args.widths:
            widths = tuple(int(w) for w in args.widths.split(","))
            if args.task == "enhancer":
                enhancer = EnhancerConfig.from_dict({"widths": widths, "blocks": args.blocks})
            else:
                model = GeneratorConfig.from_dict({"widths": widths, "blocks": args.blocks})
    except ValueError as exc:
        raise UserError(f"--widths: {exc}") from None
    if args.task == "enhancer" and not any(c.keyframes is not None for c in train_clips):
        raise UserError(
            f"{data}: no prepared keyframes (run `keyface train prepare --keyframes N`)"
        )
    config = TrainConfig(
        task=args.task,
        steps=args.steps,
        batch=args.batch,
        lr=3e-4 if args.lr is None else args.lr,
        vgg_layers=args.vgg_layers,
        vgg_mode=args.vgg_mode,
        vgg_scales=tuple(float(v) for v in args.vgg_scales.split(",")),
        adv_weight=args.adv_weight,
        adv_lr=args.adv_lr,
        init=args.init,
        resample_share=args.resample_share,
        seed=args.seed,
        device=args.device,
        amp=args.amp,
        threads=args.threads,
        val_every=args.val_every,
        pairs=PairConfig(patch=args.patch, near=args.near, near_share=args.near_share),
        model=model,
        enhancer=enhancer,
    )
    print(
        f"train: {len(train_clips)} clips of {len({c.person for c in train_clips})} people, "
        f"validation: {len(val_clips)} clips of {len({c.person for c in val_clips})} people",
        file=sys.stderr,
    )
    bar = tqdm(total=args.steps, desc="train", unit="step", disable=args.quiet)

    def progress(step: int, record: dict[str, float]) -> None:
        bar.n = step
        if "loss" in record:
            bar.set_postfix(loss=f"{record['loss']:.3f}")
        bar.refresh()
        if "val_lpips_generator" in record:
            base = "decoded keyframe" if args.task == "enhancer" else "warp"
            tqdm.write(
                f"step {step}: validation LPIPS {base} {record['val_lpips_warp']:.4f} -> "
                f"{args.task} {record['val_lpips_generator']:.4f} "
                f"({100 * record['val_lpips_gain']:.1f}% lower)",
                file=sys.stderr,
            )

    train(Path(args.run), train_clips, val_clips, config, progress=progress)
    bar.close()
    print(f"weights: {Path(args.run) / f'{args.task}.safetensors'}")
    return 0


def _fomm_clips(args: argparse.Namespace, size: int) -> tuple[list, list]:
    """The FOMM training runs' clips at ``size``: the split's train people and validation
    people (none without ``--split``) from the ``prepare --task fomm`` cache ``--data``."""
    from keyface.train.fomm_data import load_fomm_clips

    train_people, val_people = _people(args.split)
    data = Path(args.data)
    train_clips = load_fomm_clips(data, train_people, size)
    val_clips = load_fomm_clips(data, val_people, size) if val_people else []
    if not train_clips:
        raise UserError(f"{data}: no clip of the training people (`prepare --task fomm`)")
    return train_clips, val_clips


def _wall_time_stop(minutes: float) -> Callable[[], bool] | None:
    """``--minutes``: a stop test that turns true that long from now (``None``: no limit)."""
    if minutes <= 0:
        return None
    deadline = time.monotonic() + 60 * minutes
    return lambda: time.monotonic() > deadline


def _run_threads(args: argparse.Namespace) -> None:
    """``--threads`` over the thread policy's compute threads, then the policy applied."""
    from dataclasses import replace

    from keyface.threads import apply_thread_policy, current_policy, set_thread_policy

    if args.threads and args.threads != current_policy().compute:
        set_thread_policy(replace(current_policy(), compute=args.threads, source="--threads"))
    apply_thread_policy()


def _check_device(args: argparse.Namespace) -> None:
    """A clear error for ``--device cuda`` where there is none."""
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise UserError("--device cuda: no CUDA device here")


def _teacher(args: argparse.Namespace, what: str) -> FommModel:
    """The FOMM model ``--teacher`` names (``what`` says what it must be); a clear error
    without one or for a file that is not one."""
    from keyface.fomm.model import FommModelError, load_model

    if not args.teacher:
        raise UserError(f"--task {args.task} needs --teacher MODEL ({what})")
    try:
        return load_model(args.teacher)
    except FommModelError as exc:
        raise UserError(f"--teacher: {exc}") from None


def _step_progress(
    bar: Any, key: str, line: Callable[[dict[str, float]], str]
) -> Callable[[int, dict[str, float]], None]:
    """The FOMM training runs' progress: the bar at the step with the loss (``total``), and
    ``line(record)`` written under it when the record has ``key`` (a validation)."""
    from tqdm import tqdm

    def progress(step: int, record: dict[str, float]) -> None:
        bar.n = step
        if "total" in record:
            bar.set_postfix(loss=f"{record['total']:.3f}")
        bar.refresh()
        if key in record:
            tqdm.write(f"step {step}: {line(record)}", file=sys.stderr)

    return progress


def _fit_fomm(args: argparse.Namespace) -> int:
    import json

    from tqdm import tqdm

    from keyface.train.fomm import MODEL, FommTrainConfig, model_config, train_fomm

    _run_threads(args)
    run_dir = Path(args.run)
    saved = run_dir / "config.json"
    if (run_dir / "checkpoint.pt").is_file() and saved.is_file():
        # A resumed run keeps its network and picture size (train_fomm reads them).
        args.size = int(json.loads(saved.read_text())["model"]["image_size"])
    try:
        model = model_config(args.config, args.size)
    except ValueError as exc:
        raise UserError(f"--config {args.config} --size {args.size}: {exc}") from None
    train_clips, val_clips = _fomm_clips(args, args.size)
    _check_device(args)
    config = FommTrainConfig(
        model=model,
        steps=args.steps,
        batch=args.batch,
        lr=2e-4 if args.lr is None else args.lr,
        seed=args.seed,
        device=args.device,
        amp=args.amp,
        val_every=args.val_every,
        checkpoint_every=args.checkpoint_every,
    )
    print(
        f"train: {len(train_clips)} clips of {len({c.person for c in train_clips})} people, "
        f"validation: {len(val_clips)} clips of {len({c.person for c in val_clips})} people",
        file=sys.stderr,
    )
    bar = tqdm(total=args.steps, desc="train fomm", unit="step", disable=args.quiet)

    progress = _step_progress(
        bar,
        "val_lpips",
        lambda r: (
            f"validation L1 {r['val_l1']:.4f} LPIPS {r['val_lpips']:.4f} (source frame: "
            f"L1 {r['val_l1_source']:.4f} LPIPS {r['val_lpips_source']:.4f})"
        ),
    )

    train_fomm(
        run_dir,
        train_clips,
        val_clips,
        config,
        progress=progress,
        stop=_wall_time_stop(args.minutes),
    )
    bar.close()
    print(f"model: {run_dir / MODEL}")
    return 0


def _fit_fomm_distill(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from keyface.fomm.student import StudentConfig, count_macs, parameter_bytes
    from keyface.train.fomm_distill import ONNX, STUDENT, DistillConfig, distill, load_student

    _run_threads(args)
    teacher = _teacher(args, "a FOMM model file")
    size = teacher.config.image_size
    try:
        student = StudentConfig(
            image_size=size,
            num_kp=teacher.config.num_kp,
            width=args.width,
            prune_last=args.prune_last,
        )
    except ValueError as exc:
        raise UserError(f"student: {exc}") from None
    init = None
    if args.init:
        try:
            init = load_student(Path(args.init))
        except (OSError, ValueError) as exc:
            raise UserError(f"--init: {exc}") from None
    train_clips, val_clips = _fomm_clips(args, size)
    config = DistillConfig(
        student=student,
        steps=args.steps,
        batch=args.batch,
        lr=1e-3 if args.lr is None else args.lr,
        seed=args.seed,
        val_every=args.val_every,
        checkpoint_every=args.checkpoint_every,
    )
    from keyface.fomm.student import KeypointStudent

    net = KeypointStudent(student)
    print(
        f"student: {count_macs(net, size) / 1e6:.1f} M MAC at {size}x{size}, "
        f"{parameter_bytes(net) / 1e3:.0f} kB; train: {len(train_clips)} clips, "
        f"validation: {len(val_clips)} clips",
        file=sys.stderr,
    )
    bar = tqdm(total=args.steps, desc="distill", unit="step", disable=args.quiet)

    progress = _step_progress(
        bar,
        "val_px",
        lambda r: (
            f"student vs teacher {r['val_px']:.2f} px at 256, Jacobian {r['val_jacobian']:.4f}"
        ),
    )

    distill(
        Path(args.run),
        teacher,
        train_clips,
        val_clips,
        config,
        init=init,
        progress=progress,
        stop=_wall_time_stop(args.minutes),
    )
    bar.close()
    print(f"student: {Path(args.run) / STUDENT}, {Path(args.run) / ONNX}")
    return 0


def _fit_fomm_half(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from keyface.train.fomm import MODEL
    from keyface.train.fomm_half import HalfConfig, fine_tune_half, half_config

    _run_threads(args)
    parent = _teacher(args, "the FOMM model file to halve")
    try:
        half_config(parent.config)
    except ValueError as exc:
        raise UserError(f"--teacher: {exc}") from None
    _check_device(args)
    size = parent.config.image_size
    train_clips, val_clips = _fomm_clips(args, size)
    config = HalfConfig(
        steps=args.steps,
        batch=args.batch,
        lr=2e-4 if args.lr is None else args.lr,
        seed=args.seed,
        device=args.device,
        val_every=args.val_every,
        checkpoint_every=args.checkpoint_every,
    )
    print(
        f"halving {args.teacher} ({size}x{size}); train: {len(train_clips)} clips, "
        f"validation: {len(val_clips)} clips",
        file=sys.stderr,
    )
    bar = tqdm(total=args.steps, desc="fomm-half", unit="step", disable=args.quiet)

    progress = _step_progress(
        bar,
        "val_lpips",
        lambda r: f"validation L1 {r['val_l1']:.4f} LPIPS {r['val_lpips']:.4f}",
    )

    try:
        fine_tune_half(
            Path(args.run),
            parent,
            train_clips,
            val_clips,
            config,
            progress=progress,
            stop=_wall_time_stop(args.minutes),
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None
    bar.close()
    print(f"model: {Path(args.run) / MODEL}")
    return 0


def _eval_fomm(args: argparse.Namespace) -> int:
    import json

    from keyface.fomm.model import FommModelError, load_model
    from keyface.train.fomm import Validator
    from keyface.train.fomm_data import fixed_pairs, load_fomm_clips

    try:
        model = load_model(args.model)
    except FommModelError as exc:
        raise UserError(str(exc)) from None
    _, val_people = _people(args.split)
    size = model.config.image_size
    clips = load_fomm_clips(Path(args.data), val_people, size)
    if not clips:
        raise UserError(f"{args.data}: no clip of the validation people (`prepare --task fomm`)")
    result = Validator(*fixed_pairs(clips, args.pairs, args.seed), "cpu").run(model.networks)
    figures = {
        "model": str(args.model),
        "pairs": args.pairs,
        "clips": len(clips),
        "people": len({c.person for c in clips}),
        "size": size,
        **vars(result),
    }
    print(
        f"{args.pairs} pairs of {figures['people']} people at {size}x{size}: "
        f"L1 {result.l1:.4f} LPIPS {result.lpips:.4f} "
        f"(source frame unwarped: L1 {result.l1_source:.4f} LPIPS {result.lpips_source:.4f})"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.train_command == "prepare":
        return _prepare(args)
    if args.train_command == "eval-fomm":
        return _eval_fomm(args)
    return _fit(args)
