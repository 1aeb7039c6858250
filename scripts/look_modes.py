"""Decoded frames of the carphone clip side by side: source | animation ladder u 0.9 | the one
ladder at the medium preset (bidirectional groups without aux), frames 30, 45, 75, 100;
writes /tmp/look_modes.png (copied to results/hybrid/look_modes_carphone.png)."""

import numpy as np
from PIL import Image

from keyface.cli.demo import default_clip
from keyface.codec.config import CodecConfig
from keyface.codec.ratecontrol import config_at
from keyface.pipeline import analyze, cropped_frames, decode_bytes, encode_analysis

a = analyze(default_clip(), max_frames=120)
src = [img for _, img in cropped_frames(a.path, a.crop, a.size, a.frame_count)]
rows = []
for name, cfg in [
    ("animation u0.9", config_at(0.9)),
    ("auto medium (bidir u0)", config_at(0.6, CodecConfig(mode="auto"))),
]:
    r = encode_analysis(a, cfg)
    d = decode_bytes(r.data)
    print(name, round(r.kbps, 2), r.stats.keyframes)
    rows.append([f.image for f in d.frames])
out = [np.concatenate([src[k], rows[0][k], rows[1][k]], 1) for k in (30, 45, 75, 100)]
Image.fromarray(np.concatenate(out, 0)).save("/tmp/look_modes.png")
