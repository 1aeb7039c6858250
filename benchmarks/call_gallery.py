"""What a call looks like on each of ``keyface send``'s ladders: source | the default ladder |
``--ladder call``, at one quality preset, on each clip's widest-open mouth and most closed eye
(by the source's face mesh).

    python benchmarks/call_gallery.py --bench results/bench --clips vscodehappy,d10,00015,s13 \\
        --quality medium --out results/server/call_gallery_medium.jpg

The settings are the ones ``keyface send`` builds from its arguments
(``keyface.cli.send._config``) as its sender session codes them, applied to the clips a
``keyface bench`` run prepared (its ``cache/CLIP/crop.y4m`` and ``analysis.npz``); each
stream is decoded with the default renderer, as the server draws it. File streams: no
network, no loss. Prints each clip's rate and chosen frames. Set ``KEYFACE_THREADS`` as for
any benchmark.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
from _common import cached_clip, find_cached_clip, mouth_and_eye_frames, save_rows

LADDERS = ("animation", "call")


def send_config(ladder: str, quality: str) -> Any:
    """The settings ``keyface send --quality QUALITY --ladder LADDER`` codes with, as its
    sender session applies them (``live_codec_config``: keyframes for the content rule, no
    DETAIL; acknowledged, so no periodic motion resets)."""
    from keyface.cli.main import build_parser
    from keyface.cli.send import _config
    from keyface.server.live import live_codec_config

    argv = ["send", "--input", "x.mp4", "--server", "http://h:1", "--room", "r"]
    args = build_parser().parse_args([*argv, "--quality", quality, "--ladder", ladder])
    return live_codec_config(_config(args), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, default=Path("results/bench"))
    parser.add_argument("--clips", required=True, help="comma-separated substrings")
    parser.add_argument("--quality", default="medium")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    from keyface.pipeline import decode_bytes, encode_analysis
    from keyface.threads import apply_thread_policy

    apply_thread_policy()
    configs = {ladder: send_config(ladder, args.quality) for ladder in LADDERS}
    rows = []
    for key in args.clips.split(","):
        clip_dir = find_cached_clip(args.bench, key)
        _, analysis, source = cached_clip(clip_dir)
        picks = mouth_and_eye_frames(analysis.landmarks)
        decoded, rates = {}, {}
        for ladder, config in configs.items():
            coded = encode_analysis(analysis, config)
            decoded[ladder] = [f.image for f in decode_bytes(coded.data).frames]
            rates[ladder] = coded.kbps
        print(
            f"{clip_dir.name}: frames {picks} (mouth, eye), kbit/s "
            + ", ".join(f"{ladder} {rate:.1f}" for ladder, rate in rates.items())
        )
        for t in picks:
            rows.append(np.concatenate([source[t]] + [decoded[k][t] for k in LADDERS], axis=1))
    save_rows(rows, args.out)
    print(f"wrote {args.out}: rows source | {' | '.join(LADDERS)}")


if __name__ == "__main__":
    main()
