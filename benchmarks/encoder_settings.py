"""Settings of the conventional encoders inside keyface, at equal rate (issue 13): the x265
preset and psycho-visual options of the ``hevc-ld`` keyframe sequence (the group rungs), the
groups' keyframe codec (``vvc-ld`` and its VVenC settings), and the VVenC preset, perceptual
QP adaptation and QP scale of the ``vvc`` keyframes (the animation rungs).

None of these changes the bitstream's format: a decoder reads the pictures whatever settings
made them (a ``vvc-ld`` variant names its codec in the header). For the clips a ``keyface
bench`` run prepared (``cache/CLIP/crop.y4m``, ``analysis.npz``), every clip is coded at each
position ``--u`` of the one ladder once per variant, decoded with the default renderer and
measured (``content_refresh.code_point``); ``report.md`` gives the clip-averaged curves and
each variant's BD-rates against ``--baseline``:

    python benchmarks/encoder_settings.py --bench results/bench --u 1,1.4,1.8,2.1 \\
        --variants x265-slow,x265-slower,x265-slow-psy1,x265-slower-psy1 \\
        --baseline x265-slow --out results/hybrid/keyframe_x265

A variant sets the encoder in each worker process before anything is coded (``VARIANTS``).
Set ``KEYFACE_THREADS`` as for any benchmark; ``--jobs`` worker processes. ``--gallery
CLIPS@U`` codes only those clips at ``U`` and writes ``OUT/gallery_uU.jpg``: source | each
variant on each clip's widest-open mouth and most closed eye.
"""

from __future__ import annotations

import argparse
import json
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import numpy as np
from _common import code_cached_clip, command_line, mouth_and_eye_frames, save_rows

METRICS = ("lpips_alex", "lpips_mouth_open", "lpips_eyes", "eye_state", "psnr")
VARIANTS: dict[str, dict[str, str]] = {
    "x265-slow": {"groups_intra": "hevc-ld", "x265_preset": "slow", "x265_psy": "psy-rd=0"},
    "x265-slower": {"groups_intra": "hevc-ld", "x265_preset": "slower", "x265_psy": "psy-rd=0"},
    "x265-slow-psy1": {"groups_intra": "hevc-ld", "x265_preset": "slow", "x265_psy": "psy-rd=1"},
    "x265-slower-psy1": {
        "groups_intra": "hevc-ld",
        "x265_preset": "slower",
        "x265_psy": "psy-rd=1",
    },
    "x265-slower-psy2q": {
        "groups_intra": "hevc-ld",
        "x265_preset": "slower",
        "x265_psy": "psy-rd=2:psy-rdoq=1",
    },
    "vvc-fast": {"vvc_preset": "fast", "vvc_qpa": "0"},
    "vvc-qpa": {"vvc_preset": "fast", "vvc_qpa": "1"},
    "vvc-qpa+5": {"vvc_preset": "fast", "vvc_qpa": "1", "vvc_dqp": "5"},
    "vvc-qpa+8": {"vvc_preset": "fast", "vvc_qpa": "1", "vvc_dqp": "8"},
    "vvc-qpa-63": {"vvc_preset": "fast", "vvc_qpa": "1", "vvc_max_qp": "63"},
    "vvc-medium": {"vvc_preset": "medium", "vvc_qpa": "0"},
    "vvc-ld": {"groups_intra": "vvc-ld"},
    "vvc-ld-gop8": {"groups_intra": "vvc-ld", "vvc_ld_gop": "8", "vvc_ld_alf": "1"},
    "vvc-ld-alf": {"groups_intra": "vvc-ld", "vvc_ld_alf": "1"},
}
"""Variant name -> the settings it changes (the others as shipped)."""


def apply_variant(name: str) -> None:
    """Set this process's encoders as variant ``name`` says (before any codec is built)."""
    settings = VARIANTS[name]
    if "groups_intra" in settings:  # the groups' keyframe sequence codec
        import keyface.codec.ratecontrol as ratecontrol

        ratecontrol.GROUPS_INTRA = settings["groups_intra"]
    if "vvc_ld_gop" in settings:  # VVenC's own low-delay GOP (QP offsets by position)
        import keyface.intra.vvc_sequence as vvc_ld

        gop = settings["vvc_ld_gop"]
        vvc_ld.LD_PARAMS = vvc_ld.LD_PARAMS.split(":GOPSize=")[0] + f":GOPSize={gop}"
    if "vvc_ld_alf" in settings:  # VVenC's adaptive loop filter on (1) or off (0)
        import keyface.intra.vvc_sequence as vvc_ld

        vvc_ld.LD_PARAMS = vvc_ld.LD_PARAMS.replace("ALF=0", f"ALF={settings['vvc_ld_alf']}")
    if "x265_preset" in settings:
        import keyface.intra.sequence as seq

        seq.HevcSequenceCodec.__init__.__defaults__ = (settings["x265_preset"],)
        seq._X265_PARAMS = seq._X265_PARAMS.replace("psy-rd=1", settings["x265_psy"])
    if "vvc_preset" in settings:
        import keyface.intra.vvc as vvc

        defaults = vvc.VvcIntraCodec.__init__.__defaults__
        assert defaults is not None
        vvc.VvcIntraCodec.__init__.__defaults__ = (settings["vvc_preset"], *defaults[1:])
        run, qpa = vvc._run, settings["vvc_qpa"]
        scale = vvc.quality_to_qp
        top, dqp = int(settings.get("vvc_max_qp", "51")), int(settings.get("vvc_dqp", "0"))
        # The quality scale of the keyframes (and DETAIL rectangles): QP 0..top, plus dqp.
        vvc.quality_to_qp = lambda quality, max_qp=51: min(63, scale(quality, top) + dqp)

        def with_qpa(args: list[str], stdin: bytes, timeout: float, what: str) -> bytes:
            if "-qpa" in args:
                args = list(args)
                args[args.index("-qpa") + 1] = qpa
            return run(args, stdin, timeout, what)

        vvc._run = with_qpa


def code(task: tuple[str, float]) -> dict[str, Any]:
    from content_refresh import code_point

    clip, u = task
    point = code_point((clip, "as-shipped", u, {}, "auto"))
    return {"clip": point["clip"], "u": u, "kbps": point["kbps"], "mean": point["mean"]}


def frames_of(task: tuple[str, float]) -> dict[str, Any]:
    """The decoded frames of the widest-open mouth and the most closed eye (by the source's
    face mesh) of one clip at ``u`` of the one ladder, with the source's and the rate."""
    from keyface.codec import CodecConfig
    from keyface.threads import apply_thread_policy

    apply_thread_policy()
    clip = code_cached_clip(Path(task[0]), task[1], 1 << 30, CodecConfig(mode="auto"))
    picks = mouth_and_eye_frames(clip.analysis.landmarks)
    decoded = clip.decoded
    return {
        "clip": Path(task[0]).name,
        "kbps": clip.kbps,
        "picks": picks,
        "source": [clip.ref[i] for i in picks],
        "decoded": [decoded[i] for i in picks],
    }


def gallery(names: list[str], clips: list[Path], u: float, out: Path) -> None:
    """``out``: per clip, its widest-open mouth then its most closed eye, as source | one
    picture per variant (in ``names``' order)."""
    coded: dict[str, list[dict]] = {}
    for name in names:
        with Pool(1, initializer=apply_variant, initargs=(name,)) as pool:
            coded[name] = pool.map(frames_of, [(str(c), u) for c in clips])
    rows = []
    for k, clip in enumerate(clips):
        rates = ", ".join(f"{n} {coded[n][k]['kbps']:.1f}" for n in names)
        print(f"{clip.name}: frames {coded[names[0]][k]['picks']}, kbit/s {rates}")
        for j in range(2):
            pictures = [coded[names[0]][k]["source"][j]] + [
                coded[n][k]["decoded"][j] for n in names
            ]
            rows.append(np.concatenate(pictures, axis=1))
    save_rows(rows, out)
    print(f"wrote {out}: rows source | {' | '.join(names)}")


def curves(points: list[dict]) -> tuple[list[float], np.ndarray, dict[str, np.ndarray]]:
    """``(u, rate, {metric: values})``: clip averages at each ``u`` that every clip has."""
    clips = {p["clip"] for p in points}
    us, rates, values = [], [], {m: [] for m in METRICS}
    for u in sorted({p["u"] for p in points}):
        sel = [p for p in points if p["u"] == u]
        if {p["clip"] for p in sel} != clips:
            continue
        us.append(u)
        rates.append(np.mean([p["kbps"] for p in sel]))
        for m in METRICS:
            values[m].append(np.mean([p["mean"][m] for p in sel]))
    return us, np.array(rates), {m: np.array(v) for m, v in values.items()}


def report(points: dict[str, list[dict]], baseline: str, command: str) -> str:
    from keyface.eval.bdrate import bd_rate

    table = {name: curves(pts) for name, pts in points.items()}
    lines = ["# Encoder settings at equal rate", "", f"Command: `{command}`", ""]
    lines += [f"- `{name}`: {VARIANTS[name]}" for name in points]
    lines += ["", "| variant | u | kbit/s | " + " | ".join(METRICS) + " |"]
    lines.append("|---|---|---|" + "---|" * len(METRICS))
    for name, (us, rates, values) in table.items():
        for i, (u, rate) in enumerate(zip(us, rates, strict=True)):
            cells = " | ".join(f"{values[m][i]:.4f}" for m in METRICS)
            lines.append(f"| {name} | {u:g} | {rate:.2f} | {cells} |")
    lines += ["", f"BD-rate against `{baseline}` (negative: fewer bits at equal quality):", ""]
    lines.append("| variant | " + " | ".join(METRICS) + " |")
    lines.append("|---|" + "---|" * len(METRICS))
    _, base_rates, base_values = table[baseline]
    for name, (_, rates, values) in table.items():
        if name == baseline:
            continue
        cells = []
        for m in METRICS:
            r = bd_rate(base_rates, base_values[m], rates, values[m], m)
            cells.append("n/a" if r.value is None else f"{r.value:+.1f} %")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, required=True, help="a keyface bench --out folder")
    parser.add_argument("--u", required=True, help="positions on the one ladder")
    parser.add_argument("--variants", required=True, help="of: " + ", ".join(VARIANTS))
    parser.add_argument("--baseline", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument(
        "--gallery",
        help="instead of the sweep: CLIPS@U (comma-separated substrings of clip names, one "
        "ladder position) -> OUT/gallery_uU.jpg, source | each variant on each clip's "
        "widest-open mouth and most closed eye",
    )
    args = parser.parse_args()
    names = args.variants.split(",")
    if args.baseline not in names or any(n not in VARIANTS for n in names):
        parser.error(f"--variants: names from {', '.join(VARIANTS)}, including --baseline")
    us = [float(x) for x in args.u.split(",")]
    clips = sorted(p for p in (args.bench / "cache").iterdir() if (p / "analysis.npz").is_file())
    args.out.mkdir(parents=True, exist_ok=True)
    if args.gallery:
        wanted, at = args.gallery.split("@")
        picked = [c for key in wanted.split(",") for c in clips if key in c.name]
        gallery(names, picked, float(at), args.out / f"gallery_u{float(at):g}.jpg")
        return
    points: dict[str, list[dict]] = {}
    for name in names:
        saved = args.out / f"{name}.json"
        done = json.loads(saved.read_text()) if saved.is_file() else []
        have = {(p["clip"], p["u"]) for p in done}
        tasks = [(str(c), u) for u in us for c in clips if (c.name, u) not in have]
        with Pool(args.jobs, initializer=apply_variant, initargs=(name,)) as pool:
            for point in pool.imap_unordered(code, tasks):
                done.append(point)
                saved.write_text(json.dumps(done))
                line = f"{name} {point['clip']} u={point['u']:g} {point['kbps']:.2f} kbit/s"
                print(line, flush=True)
        points[name] = done
    text = report(points, args.baseline, command_line("encoder_settings.py", args))
    (args.out / "report.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
