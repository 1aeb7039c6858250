"""Training of the learned fusion (:mod:`keyface.fusion.net`) on material from
:mod:`keyface.train.fusion_data`: real face crops, keyface's own animated frames and the real
auxiliary stream's decoded frames at several scales and QPs.

    python -m keyface.train.fusion --data /tmp/fusion_train --run runs/fuse_v1 --steps 1500

Each step draws frames (a clip, a frame, one of its animations, one of its auxiliary streams),
runs the training-free fusion on the whole frame exactly as the decoder does, crops a patch
(aligned to 8 pixels) and trains the residual network on L1 + the VGG feature loss of
:mod:`keyface.train.losses`. A run is resumable: ``checkpoint.pt`` in the run folder holds the
network, the optimiser, the step and the random state; ``log.jsonl`` one line per logged step;
``fusion.safetensors`` the weights. The last ``--monitor`` clips (other people) are held out and
scored every ``--val-every`` steps against the training-free fusion.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from keyface.fusion.classic import AlignedFusion
from keyface.fusion.net import FusionNet, FusionNetConfig
from keyface.fusion.weights import save_fusion


@dataclass
class _Clip:
    frames: np.ndarray
    anims: list[np.ndarray]
    auxes: list[np.ndarray]


def load_material(root: Path) -> list[_Clip]:
    """The clip folders under ``root`` that ``prepare_fusion_clip`` finished (sorted)."""
    clips = []
    for d in sorted(p for p in Path(root).iterdir() if (p / "fusion.json").is_file()):
        anims = [np.load(f, mmap_mode="r") for f in sorted(d.glob("anim_*.npy"))]
        auxes = [np.load(f, mmap_mode="r") for f in sorted(d.glob("aux_s*_q*.npy"))]
        clips.append(_Clip(np.load(d / "frames.npy", mmap_mode="r"), anims, auxes))
    if not clips:
        raise ValueError(f"{root}: no prepared fusion clips")
    return clips


def _to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


class Sampler:
    """Training examples: (fused, aux_up, aligned, target) patches as ``(B, 3, P, P)`` tensors."""

    def __init__(self, clips: list[_Clip], patch: int, seed: int) -> None:
        self.clips = clips
        self.patch = patch
        self.rng = np.random.default_rng(seed)
        self.fusion = AlignedFusion()

    def example(self, clip: _Clip, t: int, a: int, x: int) -> list[np.ndarray]:
        parts = self.fusion.parts(np.asarray(clip.anims[a][t]), np.asarray(clip.auxes[x][t]))
        return [parts["fused"], parts["aux_up"], parts["aligned"], np.asarray(clip.frames[t])]

    def batch(self, size: int) -> list[torch.Tensor]:
        out: list[list[np.ndarray]] = [[], [], [], []]
        for _ in range(size):
            clip = self.clips[self.rng.integers(len(self.clips))]
            t = int(self.rng.integers(len(clip.frames)))
            a = int(self.rng.integers(len(clip.anims)))
            x = int(self.rng.integers(len(clip.auxes)))
            images = self.example(clip, t, a, x)
            side = images[0].shape[0]
            p = self.patch or side
            y0, x0 = (8 * self.rng.integers(0, (side - p) // 8 + 1, size=2)).tolist()
            for k, im in enumerate(images):
                out[k].append(im[y0 : y0 + p, x0 : x0 + p])
        return [_to_tensor(o) for o in out]


def train(args: argparse.Namespace) -> Path:
    torch.set_num_threads(args.threads)
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    clips = load_material(Path(args.data))
    held = clips[-args.monitor :] if args.monitor else []
    clips = clips[: len(clips) - len(held)] or clips
    torch.manual_seed(args.seed)
    net = FusionNet(FusionNetConfig(args.channels, args.layers, args.fold))
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    from keyface.train.losses import VGGLoss

    vgg = VGGLoss(scales=(1.0,), layers=args.vgg_layers)
    sampler = Sampler(clips, args.patch, args.seed)
    step = 0
    ckpt = run / "checkpoint.pt"
    if ckpt.is_file():
        state = torch.load(ckpt, weights_only=False)
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        vgg.norm.copy_(state["vgg_norm"])
        sampler.rng.bit_generator.state = state["rng"]
        step = state["step"]
    else:
        fused, _, _, target = sampler.batch(args.batch)
        vgg.calibrate(fused, target)
    monitor = Sampler(held, args.patch, args.seed + 1).batch(args.val_batch) if held else None
    log = open(run / "log.jsonl", "a")

    def save() -> None:
        torch.save(
            {
                "net": net.state_dict(),
                "opt": opt.state_dict(),
                "vgg_norm": vgg.norm,
                "rng": sampler.rng.bit_generator.state,
                "step": step,
                "args": vars(args),
            },
            run / "checkpoint.tmp",
        )
        (run / "checkpoint.tmp").replace(ckpt)
        save_fusion(run / "fusion.safetensors", net, {"step": str(step)})

    def validate() -> dict[str, float]:
        if monitor is None:
            return {}
        fused, aux_up, aligned, target = monitor
        with torch.no_grad():
            out = net(fused, aux_up, aligned).clamp(-1, 1)
            return {
                "val_l1_base": float((fused - target).abs().mean()),
                "val_l1": float((out - target).abs().mean()),
                "val_vgg_base": float(vgg(fused, target)),
                "val_vgg": float(vgg(out, target)),
            }

    t0 = time.perf_counter()
    while step < args.steps:
        lr = args.lr * (0.1 if step >= 0.8 * args.steps else 1.0)
        for g in opt.param_groups:
            g["lr"] = lr
        fused, aux_up, aligned, target = sampler.batch(args.batch)
        out = net(fused, aux_up, aligned)
        l1 = (out - target).abs().mean()
        perc = vgg(out, target)
        loss = l1 + args.vgg_weight * perc
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % args.log_every == 0 or step == args.steps:
            rec = {"step": step, "l1": float(l1.detach()), "vgg": float(perc.detach()), "lr": lr}
            rec["s_per_step"] = (time.perf_counter() - t0) / args.log_every
            t0 = time.perf_counter()
            if step % args.val_every == 0 or step == args.steps:
                rec |= validate()
                save()
            log.write(json.dumps(rec) + "\n")
            log.flush()
            if not args.quiet:
                print(json.dumps(rec), flush=True)
    save()
    return run / "fusion.safetensors"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m keyface.train.fusion", description=__doc__)
    p.add_argument("--data", required=True, help="folder of keyface.train.fusion_data clip folders")
    p.add_argument("--run", required=True, help="run folder (checkpoint, log, weights)")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch", type=int, default=6)
    p.add_argument("--patch", type=int, default=96, help="patch side (multiple of 8; 0: whole)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--vgg-weight", type=float, default=0.1)
    p.add_argument("--vgg-layers", type=int, default=3)
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--fold", type=int, default=4)
    p.add_argument("--monitor", type=int, default=2, help="clips held out for monitoring")
    p.add_argument("--val-batch", type=int, default=24)
    p.add_argument("--val-every", type=int, default=100)
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-q", "--quiet", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.patch % 8:
        raise SystemExit("--patch must be a multiple of 8")
    print(f"weights: {train(args)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
