"""The FOMM route in a call, without a network: sender -> server -> avatar (issue 15, item 5).

    KEYFACE_THREADS=2 python benchmarks/fomm_live.py --model MODEL \
        --json results/fomm/live.json --gallery results/fomm/live_avatar.png

For a few validation clips (one per person, ``splits/dev_v1.json``): the face crop and the
face mesh are measured once (the crop plan); then, in real-time order, the sans-I/O sender
(:class:`keyface.server.SenderSession`, ``--motion fomm``, the live ``medium`` preset) codes
each crop, the server's decoder (:class:`keyface.server.receiver.ParticipantDecoder`, the
room's renderer being the warp: the stream's own renderer must take over) decodes and draws it,
and an avatar (the first frame of the *next* clip's person, ``FommAvatarAnimator`` with its
default gate) is animated by the decoded keypoints. Reported per clip: the sender's and the
server's milliseconds per frame (mean and 95th percentile), the uplink rate, PSNR of the
server's picture against the source crop, and the avatar's milliseconds per frame, gated
share and rebases. ``--gallery`` writes source | server picture | avatar for a few frames of
each clip (look at it: the numbers do not show whether the avatar follows).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from _common import CLIPS, SPLIT, pick_clips
from PIL import Image

from keyface.codec.config import CodecConfig
from keyface.codec.ratecontrol import config_for_preset
from keyface.compose.fomm_avatar import FommAvatarAnimator
from keyface.fomm import MOTION_NAME, use_model
from keyface.io import read_frames
from keyface.pipeline import analyze, cropped_frames
from keyface.renderers import get_renderer
from keyface.server import SenderSession
from keyface.server.receiver import ParticipantDecoder
from keyface.threads import apply_thread_policy


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / max(mse, 1e-10))


def run_clip(clip: Path, avatar_photo: np.ndarray, frames: int) -> tuple[dict, list[np.ndarray]]:
    analysis = analyze(clip, max_frames=frames)
    crops = [img for _, img in cropped_frames(clip, analysis.crop, analysis.size, frames)]
    config = config_for_preset(
        "medium", CodecConfig(size=analysis.size, motion=MOTION_NAME, generator=MOTION_NAME)
    )
    sender = SenderSession(config, analysis.fps, crop=analysis.crop)
    server = ParticipantDecoder(clip.stem, renderer=get_renderer("warp"))  # the room's
    avatar = FommAvatarAnimator.from_photo(
        avatar_photo, fps=float(analysis.fps), sender_size=analysis.size
    )
    send_ms, server_ms, avatar_ms, psnr, gated, rebased = [], [], [], [], 0, 0
    tiles: list[np.ndarray] = []
    show = {len(crops) // 4, len(crops) // 2, (3 * len(crops)) // 4}
    for i, (img, lm) in enumerate(zip(crops, analysis.landmarks, strict=False)):
        now = i / float(analysis.fps)
        t0 = time.perf_counter()
        datagrams = sender.push_frame(img, lm, now)
        send_ms.append(1000 * (time.perf_counter() - t0))
        t0 = time.perf_counter()
        out = []
        for d in datagrams:
            out += server.receive(d.payload, now)
        server_ms.append(1000 * (time.perf_counter() - t0))
        for feedback in server.datagrams_to_send():
            sender.receive_feedback(feedback.payload, now)
        for frame in out:
            psnr.append(_psnr(frame.image, crops[frame.index]))
            if frame.keypoints is None:
                continue
            t0 = time.perf_counter()
            animated = avatar.animate(frame.keypoints)
            avatar_ms.append(1000 * (time.perf_counter() - t0))
            gated += animated.gated
            rebased += animated.rebased
            if frame.index in show:
                tiles.append(np.concatenate([crops[frame.index], frame.image, animated.image], 1))
    assert server.decoder is not None and server.decoder.renderer.name == MOTION_NAME
    seconds = len(crops) / float(analysis.fps)
    row = {
        "clip": clip.name,
        "frames": len(crops),
        "mean_kbps": sender.stats.bits / 1000 / seconds,
        "keyframes": sender.stats.keyframes,
        "sender_ms": float(np.mean(send_ms)),
        "sender_ms_p95": float(np.percentile(send_ms, 95)),
        "server_ms": float(np.mean(server_ms)),
        "server_ms_p95": float(np.percentile(server_ms, 95)),
        "server_psnr": float(np.mean(psnr)),
        "avatar_ms": float(np.mean(avatar_ms)),
        "avatar_gated": gated / max(len(avatar_ms), 1),
        "avatar_rebases": rebased,
    }
    return row, tiles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="the FOMM model file")
    parser.add_argument("--clips", type=Path, default=CLIPS)
    parser.add_argument("--split", type=Path, default=SPLIT)
    parser.add_argument("--limit", type=int, default=4, help="clips (one per person)")
    parser.add_argument("--frames", type=int, default=125)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--gallery", type=Path)
    args = parser.parse_args()
    use_model(args.model)
    apply_thread_policy()
    clips = pick_clips(args.clips, args.split, "validation", args.limit + 1)
    photos = [next(iter(read_frames(clip, 1))).image for clip in clips]
    rows, gallery = [], []
    for i, clip in enumerate(clips[: args.limit]):
        row, tiles = run_clip(clip, photos[i + 1], args.frames)
        rows.append(row)
        gallery += tiles
        print(
            f"{clip.name[:40]:<40} send {row['sender_ms']:5.1f} ms "
            f"(p95 {row['sender_ms_p95']:5.1f})"
            f"  server {row['server_ms']:5.1f} ms (p95 {row['server_ms_p95']:5.1f})"
            f"  {row['mean_kbps']:5.2f} kbit/s  PSNR {row['server_psnr']:5.2f}"
            f"  avatar {row['avatar_ms']:5.1f} ms, gated {100 * row['avatar_gated']:4.1f} %"
            f", {row['avatar_rebases']} rebases",
            flush=True,
        )
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k not in ("clip",)}
    print("mean", json.dumps({k: round(v, 2) for k, v in mean.items()}))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {"args": {k: str(v) for k, v in vars(args).items()}, "clips": rows, "mean": mean},
                indent=1,
            )
        )
    if args.gallery and gallery:
        args.gallery.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.concatenate(gallery, axis=0)).save(args.gallery)


if __name__ == "__main__":
    main()
