"""One sender -> server -> one receiver on loopback: uplink kbit/s, receiver frames/s and
glass-to-glass latency.

    python benchmarks/server_stream.py                       # d6 dev clip (or carphone), 600 frames
    python benchmarks/server_stream.py --intra hevc --json results/server/stream_hevc.json
    python benchmarks/server_stream.py --full-frame --input CLIPS/KwaiVGI+LivePortrait__s18.mp4
    python benchmarks/server_stream.py --mode video --mode relay --json results/server/downlink.json
    python benchmarks/server_stream.py --fomm-model MODEL --json results/fomm/server_stream.json
    python benchmarks/server_stream.py --ladder call --ladder animation \\
        --json results/server/stream_call.json
    python benchmarks/server_stream.py --ladder call --server-generator warp

Three processes: ``keyface serve --stamp-frames``, ``keyface send`` (the clip played in real
time: face crop + landmarks + live coding + data channels) and this script's aiortc receiver.
Latency = the time the receiver has decoded a picture minus the capture time of the frame it
shows (the time the file source hands the frame over, as a camera would); both read
CLOCK_MONOTONIC. It includes the sender's analysis and coding, the data channel, the server's
reordering, decoding, rendering and VP8 coding, RTP and the receiver's VP8 decoding; it does
not include a camera's exposure/readout or a display's refresh.

``--mode relay`` runs ``keyface serve --relay`` and a Python receiver that decodes the relayed
datagrams itself (``RelayReceiverClient``); its latency is capture to decoded picture (no VP8).
Both modes report the receiver's downlink: every byte its connection received (wire kbit/s:
SRTP + RTCP for video, SCTP over DTLS for relay) and, for relay, the data channel payloads.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from _server_common import default_clip, machine, print_table, receiver_figures, run_session


def measure(
    clip: Path,
    frames: int,
    intra: str | None,
    loss: float,
    seed: int,
    reset_interval: int | None = None,
    full_frame: bool = False,
    extra: tuple[str, ...] = (),
    mode: str = "video",
    fomm_model: Path | None = None,
    server_generator: str | None = None,
) -> dict[str, Any]:
    """One session; ``extra``: more ``keyface send`` arguments; ``mode``: the receiver's
    (``video``: the server transcodes; ``relay``: ``keyface serve --relay``);
    ``server_generator``: the server's renderer (``keyface serve --generator``)."""
    send_args: tuple[str, ...] = (("--intra", intra) if intra else ()) + extra
    if full_frame:
        send_args += ("--full-frame",)
    if reset_interval is not None:
        send_args += ("--reset-interval", str(reset_interval))
    server_args: tuple[str, ...] = ()
    if fomm_model is not None:  # the same model file at both ends
        send_args += ("--motion", "fomm", "--model", str(fomm_model))
        server_args = ("--model", str(fomm_model))
    if server_generator is not None:
        server_args += ("--generator", server_generator)
    r = run_session(
        clip,
        frames,
        loss=loss,
        seed=seed,
        send_args=send_args,
        relay=mode == "relay",
        server_args=server_args,
    )
    s = r.sender["summary"]
    row: dict[str, Any] = {
        "mode": mode,
        "downlink_wire_kbps": r.downlink.get("wire_kbps"),
        "downlink_payload_kbps": r.downlink.get("payload_kbps"),
        "clip": clip.name,
        "intra": intra or "default",
        "ladder": extra[extra.index("--ladder") + 1] if "--ladder" in extra else "animation",
        "motion": "fomm" if fomm_model is not None else "facemesh",
        "server_generator": server_generator or "default",
        "full_frame": full_frame,
        "loss": loss,
        "seed": seed,
        "reset_interval": reset_interval or "default (10)",
        "frames_sent": s["frames"],
        "sender_fps": s["fps"],
        "keyframes": s["keyframes"],
        "uplink_kbps": s["kbps"],
        "motion_kbps": s.get("motion_bits", 0) / 1000 / max(s["seconds"], 1e-9),
        "acks": s.get("acks"),
        "based": s.get("based"),
        "redundant": s.get("redundant"),
        "copies": s.get("copies"),
        "uplink_kbps_windows": s["kbps_windows"],
        "dropped_motion": s["dropped_motion"],
        "skipped_source_frames": s["skipped"],
        "server_uplink_kbps_mean": r.server.get("uplink_kbps_mean"),
        "server_decoded": r.server.get("decoded"),
        "server_concealed": r.server.get("concealed"),
        "server_lost": r.server.get("lost"),
        "server_shed": r.server.get("shed"),
        "server_refresh_requests": r.server.get("refresh_requests"),
        "loss_episodes": r.server.get("loss_episodes"),
        "recovery_frames_mean": r.server.get("recovery_frames_mean"),
        "recovery_frames_max": r.server.get("recovery_frames_max"),
        "server_alive": r.server_alive,
        "wall_s": r.wall_s,
    }
    row.update(receiver_figures(r))
    row.update(cpu_figures(r.cpu_s, s["frames"]))
    return row


def cpu_figures(cpu: dict[str, float], frames: int) -> dict[str, Any]:
    """Each process's CPU time while the receiver was connected, per frame sent and as a
    share of one core (``cpu_cores``): what each needs of a machine of its own."""
    stream_s = cpu.get("stream_s") or 0.0
    names = [k for k in ("sender", "server", "receiver") if k in cpu]
    return {
        "cpu_s": cpu,
        "cpu_ms_per_frame": {k: round(1000 * cpu[k] / max(frames, 1), 2) for k in names},
        "cpu_cores": {k: round(cpu[k] / stream_s, 2) for k in names} if stream_s else {},
    }


COLUMNS = [
    ("mode", "mode", ""),
    ("intra", "intra", ""),
    ("ladder", "ladder", ""),
    ("server_generator", "server renders", ""),
    ("frames_sent", "sent", "d"),
    ("uplink_kbps", "kbit/s", ".2f"),
    ("keyframes", "keys", "d"),
    ("downlink_wire_kbps", "down kbit/s", ".2f"),
    ("distinct_frames", "shown", "d"),
    ("fps", "rx fps", ".1f"),
    ("latency_ms_median", "lat p50", ".0f"),
    ("latency_ms_p90", "lat p90", ".0f"),
    ("latency_ms_p99", "lat p99", ".0f"),
    ("latency_ms_max", "lat max", ".0f"),
    ("latency_ms_max_after_1s", "max >1s", ".0f"),
    ("server_concealed", "concealed", "d"),
    ("server_shed", "shed", "d"),
    ("cpu_sender", "tx CPU ms", ".1f"),
    ("cpu_server", "srv CPU ms", ".1f"),
    ("cpu_receiver", "rx CPU ms", ".1f"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, help="clip (default: the d6 dev clip or carphone)")
    parser.add_argument("--frames", type=int, default=600, help="frames to send (default 600)")
    parser.add_argument(
        "--intra", action="append", help="keyframe codec(s) to compare (repeatable)"
    )
    parser.add_argument(
        "--full-frame",
        action="store_true",
        help="send --full-frame: the server composes the face into the sender's background "
        "and publishes the full frame",
    )
    parser.add_argument(
        "--mode",
        action="append",
        choices=["video", "relay"],
        help="receiver mode(s) to compare (repeatable; default video)",
    )
    parser.add_argument(
        "--fomm-model",
        type=Path,
        help="a FOMM model file: the sender codes --motion fomm with it, the server draws "
        "with it (keyface serve --model)",
    )
    parser.add_argument(
        "--ladder",
        action="append",
        choices=["call", "animation"],
        help="the sender's ladder(s) to compare (repeatable; keyface send --ladder; default "
        "animation, keyface send's default)",
    )
    parser.add_argument(
        "--server-generator",
        action="append",
        help="the server's renderer(s) to compare (repeatable; keyface serve --generator; "
        "default: the server's default)",
    )
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    clip = args.input or default_clip()
    info = machine()
    rows = [
        measure(
            clip,
            args.frames,
            intra,
            0.0,
            0,
            full_frame=args.full_frame,
            extra=("--ladder", ladder),
            mode=mode,
            fomm_model=args.fomm_model,
            server_generator=generator,
        )
        for mode in (args.mode or ["video"])
        for intra in (args.intra or [None])
        for ladder in (args.ladder or ["animation"])
        for generator in (args.server_generator or [None])
    ]
    print(f"{clip.name}, {args.frames} frames, loopback, {info['cpu_count']} CPUs")
    table = [{**r, **{f"cpu_{k}": v for k, v in r["cpu_ms_per_frame"].items()}} for r in rows]
    print_table(table, COLUMNS)
    print("(CPU ms: each process's CPU time per frame sent, while the receiver was connected)")
    if args.json:
        info["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        args.json.parent.mkdir(parents=True, exist_ok=True)
        command = "python " + " ".join(sys.argv)
        out = {"command": command, "machine": info, "runs": rows}
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
