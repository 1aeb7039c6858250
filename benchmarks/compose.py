"""Full-frame composition on upper-body clips: bitrate, full-frame PSNR, seam-band PSNR/SSIM.

    nice -n 15 python benchmarks/compose.py --frames 125 --out results/compose

Each clip is coded with the real codec (``keyface.pipeline``: analyze, encode with the
full-frame BACKGROUND as ``keyface encode --full-frame`` does, decode), then every decoded
crop is put back into the full frame two ways and compared with the original full frame:

* ``paste``: ``pipeline.full_frame`` (bilinear paste with the soft ring, no hold);
* ``compose``: :class:`keyface.compose.Composer` (motion held near the body and the crop
  border, bicubic upscaling), each frame with the reference it was rendered from.

Metrics (per frame, averaged): PSNR of the whole frame and of the face box; PSNR and SSIM
(luma, 11x11 Gaussian window) in the *seam band*, the part of the box where the composer
holds motion or blends into the background (motion weight of the first keyframe below 1),
and in its part below the chin (*neck band*: neck, shoulders, the lower ring). Clips larger
than 1280x720 are scaled to 1280x720 first (into a temporary file, never into the repo).

Writes ``<out>/compose.json``, per clip ``<out>/<person>_strip.png`` (frames: original |
composed), ``<out>/<person>_seam.png`` (the neck/shoulder seam of the frame that moved most,
2x: original | paste | compose) and ``<out>/<person>_seam_sharp.png`` (the same join with
the sharp original first frame as reference and background: paste | compose, where doubled
edges are easy to see), and prints a table. Then the avatar-mode demo: the first frame of
the retalking clip as the avatar photo, animated with the decoded motion of ``lp_s18`` and
of ``lp_d20`` (whose head turns far enough for the gate): ``<out>/avatar_<driver>.png``,
driver's decoded face | avatar crop | avatar full frame.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from _common import CLIPS as CLIP_DIR

from keyface.codec.ratecontrol import config_for_preset
from keyface.compose import DEFAULT_FEATHER, BodyHold, Composer, motion_weight
from keyface.compose.avatar import AvatarAnimator
from keyface.face import apply_crop, paste_back
from keyface.facemesh import FACE_OVAL
from keyface.imageops import psnr
from keyface.io import VideoWriter, probe, read_frames
from keyface.pipeline import analyze, decode_bytes, encode_analysis, full_frame
from keyface.renderers import get_renderer
from keyface.types import CropBox

CLIPS = (
    ("KwaiVGI+LivePortrait__s18.mp4", "lp_s18"),
    ("OpenTalker+video-retalking__4.mp4", "retalking4"),
    ("jixinya+EAMM__M030_sad_3_001.mp4", "mead_M030"),
)
MAX_SIZE = (1280, 720)
AVATAR_PHOTO = "OpenTalker+video-retalking__4.mp4"
"""Its first frame is the avatar photo of the avatar-mode demo ..."""
AVATAR_DRIVERS = (
    ("KwaiVGI+LivePortrait__s18.mp4", "lp_s18"),
    ("KwaiVGI+LivePortrait__d20.mp4", "lp_d20"),
)
"""... animated with these clips' decoded motion (``lp_d20`` turns its head far: the gate)."""


@dataclass
class Masks:
    seam: np.ndarray
    neck: np.ndarray


def luma(image: np.ndarray) -> np.ndarray:
    rgb = image.astype(np.float64)
    return 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]


def ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel SSIM of two lumas (11x11 Gaussian window, sigma 1.5)."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(x: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(x, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    mu_a, mu_b = blur(a), blur(b)
    saa = blur(a * a) - mu_a**2
    sbb = blur(b * b) - mu_b**2
    sab = blur(a * b) - mu_a * mu_b
    return ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (saa + sbb + c2))


def masked_psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    d = a[mask].astype(np.float64) - b[mask].astype(np.float64)
    mse = float(np.mean(d * d))
    return 100.0 if mse <= 0 else min(100.0, 10 * np.log10(255.0**2 / mse))


def seam_masks(composer: Composer, keypoints: np.ndarray, size: int) -> Masks:
    """Frame masks of the seam band and its part below the chin (see the module docstring)."""
    box = composer.box
    weight = motion_weight(keypoints, size, composer.hold or BodyHold(), composer.feather)
    matrix = box.to_crop_matrix(size)
    h, w = composer.background.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    u = matrix[0, 0] * xs + matrix[0, 2]
    v = matrix[1, 1] * ys + matrix[1, 2]
    inside = (u > -0.5) & (u < size - 0.5) & (v > -0.5) & (v < size - 0.5)
    sampled = cv2.remap(weight, u, v, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    seam = inside & (sampled < 0.999)
    chin = float(np.asarray(keypoints)[list(FACE_OVAL), 1].max())
    return Masks(seam=seam, neck=seam & (v > chin))


def prepare_clip(path: Path, tmp: Path, frames: int) -> Path:
    """The clip itself, or a 1280x720 (at most) copy of it in ``tmp``."""
    info = probe(path)
    scale = min(MAX_SIZE[0] / info.width, MAX_SIZE[1] / info.height, 1.0)
    if scale >= 1.0:
        return path
    size = (round(info.width * scale / 2) * 2, round(info.height * scale / 2) * 2)
    out = tmp / (path.stem + f"_{size[0]}x{size[1]}.mp4")
    with VideoWriter(out, info.fps, crf=6) as writer:
        for frame in read_frames(path, frames):
            writer.write(cv2.resize(frame.image, size, interpolation=cv2.INTER_AREA))
    return out


def seam_view(images: list[np.ndarray], composer: Composer, chin_y: float) -> np.ndarray:
    """The neck/shoulder seam of each image side by side, 2x (nearest neighbour)."""
    box = composer.box
    h, w = composer.background.shape[:2]
    y0 = max(0, int(chin_y - 0.12 * box.side))
    y1 = min(h, int(box.y0 + box.side + 0.06 * box.side))
    x0 = max(0, int(box.cx - 0.36 * box.side))
    x1 = min(w, int(box.cx + 0.36 * box.side))
    parts = []
    for img in images:
        part = img[y0:y1, x0:x1].copy()
        edge = round(box.y0 + box.side) - y0
        if 0 <= edge < part.shape[0]:  # the box's lower border, dotted
            part[edge, ::6] = (255, 0, 0)
        parts.append(cv2.resize(part, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST))
        parts.append(np.full((parts[-1].shape[0], 6, 3), 255, np.uint8))
    return np.concatenate(parts[:-1], axis=1)


def strip_view(pairs: list[tuple[np.ndarray, np.ndarray]], width: int = 400) -> np.ndarray:
    rows = []
    for orig, comp in pairs:
        s = width / orig.shape[1]
        a = cv2.resize(orig, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        b = cv2.resize(comp, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        gap = np.full((a.shape[0], 6, 3), 255, np.uint8)
        rows.append(np.concatenate([a, gap, b], axis=1))
        rows.append(np.full((6, rows[-1].shape[1], 3), 255, np.uint8))
    return np.concatenate(rows[:-1], axis=0)


def write_png(path: Path, image: np.ndarray) -> None:
    cv2.imwrite(str(path), image[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9])


@dataclass
class ClipRun:
    row: dict
    faces: list[np.ndarray]
    """The decoded face crops."""
    keypoints: list[np.ndarray]
    """Their decoded keypoints (what a receiver gets)."""
    fps: float


def sharp_seam(
    originals: list[np.ndarray], box: CropBox, keypoints: np.ndarray, driving: np.ndarray, size: int
) -> list[np.ndarray]:
    """A stress test of the join: the first *original* frame (sharp, not intra-coded) as the
    reference and the background, warped to ``driving`` at twice the crop size, pasted
    (``paste``) and composed (``compose``). Doubled edges are easy to see on sharp pictures."""
    renderer = get_renderer()
    crop = apply_crop(originals[0], box, 2 * size)
    ref = renderer.prepare(crop, keypoints * 2)
    face = renderer.render(ref, driving * 2)
    pasted = paste_back(originals[0], face, box, feather=DEFAULT_FEATHER)
    composed = Composer(originals[0], box).compose(face, ref, driving * 2)
    return [pasted, composed]


def run_clip(path: Path, person: str, args: argparse.Namespace, tmp: Path) -> ClipRun:
    source = prepare_clip(path, tmp, args.frames)
    config = config_for_preset(args.quality)
    analysis = analyze(source, max_frames=args.frames)
    encoded = encode_analysis(analysis, config, with_background=True)
    decoded = decode_bytes(encoded.data)
    assert decoded.background is not None and analysis.crop is not None
    originals = [f.image for f in read_frames(source, analysis.frame_count)]
    box = analysis.crop
    renderer = get_renderer()
    references = {
        f.index: renderer.prepare(f.image, f.keypoints) for f in decoded.frames if f.keyframe
    }
    composer = Composer(decoded.background, box)
    first = references[decoded.frames[0].reference_frame]
    masks = seam_masks(composer, first.keypoints, analysis.size)
    chin_frame = box.to_source_matrix(analysis.size) @ np.array(
        [0.0, float(first.keypoints[list(FACE_OVAL), 1].max()), 1.0]
    )
    kp0 = decoded.frames[0].keypoints
    motion = [float(np.abs(f.keypoints - kp0).mean()) for f in decoded.frames]
    shown = sorted({0, len(motion) // 2, int(np.argmax(motion))})
    per: dict[str, dict[str, list[float]]] = {"paste": {}, "compose": {}}
    images: dict[int, tuple[np.ndarray, ...]] = {}
    seconds = 0.0
    for frame, orig in zip(decoded.frames, originals, strict=True):
        pasted = full_frame(decoded.header, decoded.background, frame.image)
        t0 = time.perf_counter()
        composed = composer.compose(frame.image, references[frame.reference_frame], frame.keypoints)
        seconds += time.perf_counter() - t0
        y_orig = luma(orig)
        box_mask = np.zeros(orig.shape[:2], bool)
        x0, y0, x1, y1 = composer.region
        box_mask[y0:y1, x0:x1] = True
        for name, image in (("paste", pasted), ("compose", composed)):
            ssim = ssim_map(y_orig, luma(image))
            scores = {
                "psnr_full": psnr(image, orig),
                "psnr_box": masked_psnr(image, orig, box_mask),
                "psnr_seam": masked_psnr(image, orig, masks.seam),
                "ssim_seam": float(ssim[masks.seam].mean()),
                "psnr_neck": masked_psnr(image, orig, masks.neck),
                "ssim_neck": float(ssim[masks.neck].mean()),
            }
            for k, v in scores.items():
                per[name].setdefault(k, []).append(float(v))
        if frame.index in shown:
            images[frame.index] = (orig, pasted, composed)
    n = len(decoded.frames)
    stats = encoded.stats
    info = probe(path)
    row = {
        "clip": path.name,
        "person": person,
        "source_size": [info.width, info.height],
        "frame_size": list(analysis.source_size),
        "box_side": round(box.side, 1),
        "frames": n,
        "keyframes": stats.keyframes,
        "kbps": encoded.kbps,
        "kbps_without_background": 8
        * (len(encoded.data) - stats.background_bytes)
        / 1000
        / analysis.duration,
        "background_bytes": stats.background_bytes,
        "compose_ms_per_frame": 1000 * seconds / n,
        "shown_frames": shown,
        "paste": {k: float(np.mean(v)) for k, v in per["paste"].items()},
        "compose": {k: float(np.mean(v)) for k, v in per["compose"].items()},
    }
    if args.out:
        stem = person
        write_png(
            args.out / f"{stem}_strip.png",
            strip_view([(images[i][0], images[i][2]) for i in shown]),
        )
        worst = int(np.argmax(motion))
        write_png(
            args.out / f"{stem}_seam.png",
            seam_view(list(images[worst]), composer, float(chin_frame[1])),
        )
        stress = sharp_seam(originals, box, kp0, decoded.frames[worst].keypoints, analysis.size)
        write_png(
            args.out / f"{stem}_seam_sharp.png",
            seam_view(stress, composer, float(chin_frame[1])),
        )
        row["seam_view_frame"] = worst
    faces = [f.image for f in decoded.frames]
    keypoints = [f.keypoints for f in decoded.frames]
    return ClipRun(row, faces, keypoints, float(analysis.fps))


def decode_motion(path: Path, args: argparse.Namespace) -> ClipRun:
    """Code and decode a clip's face crops only (a driver for the avatar demo)."""
    analysis = analyze(path, max_frames=args.frames)
    encoded = encode_analysis(analysis, config_for_preset(args.quality))
    decoded = decode_bytes(encoded.data)
    return ClipRun(
        {"clip": path.name},
        [f.image for f in decoded.frames],
        [f.keypoints for f in decoded.frames],
        float(analysis.fps),
    )


def label(image: np.ndarray, text: str) -> np.ndarray:
    out = image.copy()
    cv2.putText(out, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(out, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
    return out


def avatar_demo(photo_clip: Path, driver: ClipRun, person: str, out: Path | None) -> dict:
    """Animate the first frame of ``photo_clip`` (as an avatar photo) with the decoded motion
    of ``driver``; a strip of frames: driver's decoded face | avatar crop | avatar full frame,
    each labelled with the motion distance and the share of the idle fallback."""
    photo = next(iter(read_frames(photo_clip, 1))).image
    animator = AvatarAnimator.from_photo(photo, fps=driver.fps)
    frames = [animator.animate(kp) for kp in driver.keypoints]
    distances = np.array([f.distance for f in frames])
    share = np.array([f.fallback for f in frames])
    result = {
        "avatar_photo": photo_clip.name,
        "driver": driver.row["clip"],
        "frames": len(frames),
        "threshold": animator.threshold,
        "distance_median": float(np.nanmedian(distances)),
        "distance_max": float(np.nanmax(distances)),
        "gated_frames": int(sum(f.gated for f in frames)),
        "frames_with_fallback": int((share > 0).sum()),
    }
    rebased = [f.index for f in frames if f.rebased]
    result["rebased_at"] = rebased
    if out:
        picks = {0, int(np.nanargmax(distances))}
        if share.max() > 0:
            picks |= {int(np.argmax(share > 0)), int(np.argmax(share))}
            blinks = [
                i
                for i in range(len(frames))
                if share[i] >= 1.0 and animator.idle.blink(i / driver.fps) > 0.9
            ]
            picks |= set(blinks[:1])
        picks |= {i + animator.transition_frames for i in rebased[:1]}
        picks = sorted(i for i in picks if i < len(frames))
        rows = []
        for i in picks:
            full = animator.full_frame(frames[i])
            n = frames[i].image.shape[0]
            small = cv2.resize(
                full, (n * full.shape[1] // full.shape[0], n), interpolation=cv2.INTER_AREA
            )
            gap = np.full((n, 6, 3), 255, np.uint8)
            text = f"#{i} d={distances[i]:.2f} idle {share[i]:.2f}"
            avatar = label(frames[i].image, text)
            rows.append(np.concatenate([driver.faces[i], gap, avatar, gap, small], 1))
            rows.append(np.full((6, rows[-1].shape[1], 3), 255, np.uint8))
        write_png(out / f"avatar_{person}.png", np.concatenate(rows[:-1], axis=0))
        result["shown_frames"] = picks
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=Path, default=CLIP_DIR)
    parser.add_argument("--frames", type=int, default=125)
    parser.add_argument("--quality", default="medium")
    parser.add_argument("--out", type=Path, default=Path("results/compose"))
    parser.add_argument("--only", help="run only the clips whose person contains this")
    parser.add_argument("--no-avatar", action="store_true", help="skip the avatar demo")
    args = parser.parse_args()
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    runs: dict[str, ClipRun] = {}
    print(
        f"{'person':<11} {'box':>4} {'keys':>4} {'kbps':>6} {'-bg':>5} | "
        f"{'method':<7} {'PSNR':>6} {'box':>6} {'seam':>6} {'SSIM':>6} {'neck':>6} {'SSIM':>6}"
    )
    with tempfile.TemporaryDirectory(prefix="keyface_compose_") as tmp:
        for name, person in CLIPS:
            if args.only and args.only not in person:
                continue
            run = run_clip(args.clips / name, person, args, Path(tmp))
            runs[person] = run
            row = run.row
            rows.append(row)
            for method in ("paste", "compose"):
                m = row[method]
                lead = (
                    f"{person:<11} {row['box_side']:>4.0f} {row['keyframes']:>4} "
                    f"{row['kbps']:>6.1f} {row['kbps_without_background']:>5.1f}"
                    if method == "paste"
                    else " " * 34
                )
                print(
                    f"{lead} | {method:<7} {m['psnr_full']:>6.2f} {m['psnr_box']:>6.2f} "
                    f"{m['psnr_seam']:>6.2f} {m['ssim_seam']:>6.4f} {m['psnr_neck']:>6.2f} "
                    f"{m['ssim_neck']:>6.4f}",
                    flush=True,
                )
    result: dict = {"frames": args.frames, "quality": args.quality, "clips": rows}
    result["avatar"] = []
    for name, person in AVATAR_DRIVERS if not args.no_avatar else ():
        driver = runs[person] if person in runs else decode_motion(args.clips / name, args)
        avatar = avatar_demo(args.clips / AVATAR_PHOTO, driver, person, args.out)
        result["avatar"].append(avatar)
        print(
            f"avatar driven by {person}: distance median {avatar['distance_median']:.3f}, "
            f"max {avatar['distance_max']:.3f}, gated {avatar['gated_frames']}"
            f"/{avatar['frames']} frames, idle motion in {avatar['frames_with_fallback']}, "
            f"rebased at {avatar['rebased_at']}"
        )
    if args.out:
        path = args.out / "compose.json"
        if args.only and path.exists():  # a partial run updates its own entries only
            old = json.loads(path.read_text())
            done = {r["person"] for r in rows}
            result["clips"] = [r for r in old["clips"] if r["person"] not in done] + rows
            result["clips"].sort(key=lambda r: [p for _, p in CLIPS].index(r["person"]))
        path.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
