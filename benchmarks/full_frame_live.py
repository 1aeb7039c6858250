"""Live full frame at 1280x720: the time per frame of every stage of `keyface send --full-frame`
-> `keyface serve` -> one receiver, and the frame rate each stage (and the whole path) holds.

    python benchmarks/full_frame_live.py                       # lp_s18 (1280x720), 150 frames
    python benchmarks/full_frame_live.py --input clip.mp4 --frames 300 --json out.json

Stages, each timed per frame over the same frames, in one process and one after the other
(no network, no event loop: the sans-I/O cores the real processes run):

* sender: ``LiveFaceAnalyzer.process`` (crop of the fixed full-frame box + face mesh) and
  ``SenderSession.push_frame`` (the live encoder); the background is coded once, not timed;
* server: ``ParticipantDecoder.receive`` (decode + render) and ``SenderPictures.picture``
  (the face composed into the 1280x720 background);
* publish: the picture turned into the yuv420p video frame a subscriber track sends
  (``keyface.server.media.picture_yuv``) and coded by aiortc's VP8 encoder, as the server's
  RTP sender does for each receiver;
* receiver: VP8 decoding of that frame (what a Python receiver does; a browser does it on its
  own machine).

In a call the sender and the server are separate processes (and machines); on this 2-core
machine they share the CPU, so the figure to compare with 25 frames/s is each process's
stages alone: sender frames/s = 1 / sender time, server frames/s = 1 / (server + publish time).
Wall time and this thread's CPU time are both reported: on a shared CPU the wall time grows
with the neighbours' load, the CPU time much less (MediaPipe runs the face mesh in threads of
its own, so the ``analyse`` CPU time leaves most of it out). ``PYTHONPATH=<other checkout>/src``
measures another version of keyface with the same script. Runs under the project's thread
policy (``keyface.threads``); say whether the CPU was shared.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from _common import CLIPS

from keyface.bitstream import BackgroundPacket
from keyface.cli.send import LIVE_INTRA
from keyface.codec.ratecontrol import config_for_preset
from keyface.io import probe, read_frames
from keyface.pipeline import flatten_inside
from keyface.server.live import SenderSession
from keyface.server.pictures import SenderPictures
from keyface.server.receiver import ParticipantDecoder
from keyface.server.sender import LiveFaceAnalyzer
from keyface.threads import apply_thread_policy

CLIP = CLIPS / "KwaiVGI+LivePortrait__s18.mp4"
"""1280x720, 30 frames/s, upper body in a room (the development clips, never committed)."""
SIZE = (1280, 720)


def load(path: Path, frames: int) -> tuple[list[np.ndarray], Fraction]:
    info = probe(path)
    images = []
    for frame in read_frames(path, frames):
        image = frame.image
        if image.shape[1::-1] != SIZE:
            image = cv2.resize(image, SIZE, interpolation=cv2.INTER_AREA)
        images.append(image)
    return images, info.fps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input", type=Path, help=f"clip (default: {CLIP.name})")
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    policy = apply_thread_policy()
    images, fps = load(args.input or CLIP, args.frames)
    config = replace(config_for_preset("medium"), intra_codec=LIVE_INTRA)  # as keyface send
    analyzer = LiveFaceAnalyzer(SIZE[0], SIZE[1], size=config.size, freeze=True)
    box = analyzer.find_face(images[0])
    assert box is not None, "no face in the first frame"
    session = SenderSession(config, fps, crop=box)
    background = session.encoder.intra.encode(flatten_inside(images[0], box), 90)
    decoder = ParticipantDecoder("sender")
    pictures = SenderPictures("sender", decoder, config.generator)

    from aiortc.codecs.vpx import Vp8Decoder, Vp8Encoder

    encoder, vp8_decoder = Vp8Encoder(), Vp8Decoder()
    stages = ("analyse", "encode", "decode", "compose", "publish", "receive")
    times: dict[str, list[float]] = {k: [] for k in stages}
    cpu: dict[str, list[float]] = {k: [] for k in stages}
    shown = 0
    for i, image in enumerate(images):
        clock = Clock(times, cpu)
        crop, landmarks = analyzer.process(image)
        clock.lap("analyse")
        datagrams = session.push_frame(crop, landmarks, time.monotonic())
        clock.lap("encode")
        frames = [f for d in datagrams for f in decoder.receive(d.payload, time.monotonic())]
        if i == 0:
            pictures.take_background(bytes(BackgroundPacket(frame_index=0, data=background)))
        clock.lap("decode")
        for f in frames:
            picture = pictures.picture(f)
            clock.lap("compose")
            video_frame = published_frame(picture)
            video_frame.pts, video_frame.time_base = i * 3000, Fraction(1, 90_000)
            payloads, _ = encoder.encode(video_frame)
            clock.lap("publish")
            for _ in vp8_decoder.decode(_jitter_frame(payloads)):
                shown += 1
            clock.lap("receive")
    analyzer.close()
    skip = 5  # the first frames load models and start the encoders
    ms = {k: 1000 * float(np.mean(v[skip:])) for k, v in times.items() if len(v) > skip}
    cpu_ms = {k: 1000 * float(np.mean(v[skip:])) for k, v in cpu.items() if len(v) > skip}
    sender = ms["analyse"] + ms["encode"]
    server = ms["decode"] + ms["compose"] + ms["publish"]
    server_cpu = cpu_ms["decode"] + cpu_ms["compose"] + cpu_ms["publish"]
    result = {
        "clip": (args.input or CLIP).name,
        "size": list(SIZE),
        "frames": len(images),
        "pictures_shown": shown,
        "ms_per_frame": {k: round(v, 2) for k, v in ms.items()},
        "cpu_ms_per_frame": {k: round(v, 2) for k, v in cpu_ms.items()},
        "sender_fps": round(1000 / sender, 1),
        "server_fps": round(1000 / server, 1),
        "server_fps_cpu": round(1000 / server_cpu, 1),
        "one_cpu_fps": round(1000 / (sender + server), 1),
        "threads": policy.compute,
        "cpus": os.cpu_count(),
        "load": [round(x, 2) for x in os.getloadavg()],
    }
    for k, v in ms.items():
        print(f"{k:<8} {v:7.2f} ms/frame wall, {cpu_ms[k]:7.2f} ms CPU")
    print(
        f"sender {result['sender_fps']} frames/s, server (decode + compose + publish) "
        f"{result['server_fps']} frames/s ({result['server_fps_cpu']} by CPU time), both on "
        f"one CPU {result['one_cpu_fps']} frames/s; receiver decoding "
        f"{1000 / ms['receive']:.0f} frames/s"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


def published_frame(picture: np.ndarray) -> av.VideoFrame:
    """The frame a subscriber track sends for ``picture``: yuv420p since issue 17; RGB (that
    the VP8 encoder converted) in a checkout from before, so the script measures both."""
    try:
        from keyface.server.media import picture_yuv
    except ImportError:
        return av.VideoFrame.from_ndarray(picture, format="rgb24")
    return av.VideoFrame.from_ndarray(picture_yuv(picture), format="yuv420p")


class Clock:
    """Wall and CPU time (this thread's) of consecutive stages."""

    def __init__(self, wall: dict[str, list[float]], cpu: dict[str, list[float]]) -> None:
        self.wall, self.cpu = wall, cpu
        self.t, self.c = time.perf_counter(), time.thread_time()

    def lap(self, stage: str) -> None:
        t, c = time.perf_counter(), time.thread_time()
        self.wall[stage].append(t - self.t)
        self.cpu[stage].append(c - self.c)
        self.t, self.c = t, c


def _jitter_frame(payloads: list[bytes]) -> object:
    """The VP8 frame inside aiortc's RTP payloads, as its jitter buffer hands it over."""
    from aiortc.codecs.vpx import VpxPayloadDescriptor
    from aiortc.jitterbuffer import JitterFrame

    data = b""
    for payload in payloads:
        _, rest = VpxPayloadDescriptor.parse(payload)
        data += rest
    return JitterFrame(data=data, timestamp=0)


if __name__ == "__main__":
    main()
