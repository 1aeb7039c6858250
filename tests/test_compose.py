"""Full-frame composition: background kept, continuous seam, body held still, sizes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from keyface.compose import BodyHold, Composer, hold_motion, motion_weight
from keyface.face import paste_back
from keyface.facemesh import FACE_OVAL
from keyface.motion import get_representation
from keyface.render import WarpRenderer
from keyface.types import CropBox


def smooth_image(width: int, height: int, phase: float = 0.0) -> np.ndarray:
    """A smooth colourful test picture (low frequencies only)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    r = 128 + 100 * np.sin(x / 37.0 + phase) * np.cos(y / 53.0)
    g = 128 + 100 * np.cos((x + y) / 61.0 + phase)
    b = 40 + 170 * x / width
    return np.clip(np.stack([r, g, b], axis=-1), 0, 255).astype(np.uint8)


def face_keypoints() -> np.ndarray:
    """Face-mesh keypoints of the motion model's mean face, framed like a codec crop (256)."""
    rep = get_representation()
    kp = rep.keypoints(rep.statistics.mean, 256).astype(np.float64)
    centre = kp[list(FACE_OVAL)].mean(axis=0)
    return ((kp - centre) * 0.7 + (128.0, 112.0)).astype(np.float32)


BOX = CropBox(cx=700.0, cy=300.0, side=450.0, source_width=1280, source_height=720)


def test_sizes_and_dtype() -> None:
    background = smooth_image(1280, 720)
    composer = Composer(background, BOX)
    for n in (128, 256, 384, 1024):
        out = composer.compose(np.full((n, n, 3), 90, np.uint8))
        assert out.shape == (720, 1280, 3) and out.dtype == np.uint8
    assert composer.alpha.shape == (450, 450)


def test_background_kept_exactly_outside_the_blend_ring() -> None:
    background = smooth_image(1280, 720)
    composer = Composer(background, BOX)
    out = composer.compose(np.full((256, 256, 3), 7, np.uint8))
    x0, y0, x1, y1 = composer.region
    outside = np.ones((720, 1280), bool)
    outside[y0:y1, x0:x1] = composer.alpha <= 0
    np.testing.assert_array_equal(out[outside], background[outside])
    core = np.zeros((720, 1280), bool)
    core[y0:y1, x0:x1] = composer.alpha >= 1
    assert core.sum() > 300 * 300
    assert (out[core] == 7).all()
    assert (background == smooth_image(1280, 720)).all()  # the input is not modified


def test_box_beyond_the_frame() -> None:
    background = smooth_image(640, 360)
    box = CropBox(cx=600.0, cy=60.0, side=300.0, source_width=640, source_height=360)
    composer = Composer(background, box)
    out = composer.compose(np.full((256, 256, 3), 200, np.uint8))
    assert composer.region == (450, 0, 640, 210)
    np.testing.assert_array_equal(out[:, :450], background[:, :450])
    np.testing.assert_array_equal(out[210:], background[210:])
    assert out[100, 630].tolist() == [200, 200, 200]


def test_seam_is_continuous_and_monotone() -> None:
    background = np.full((720, 1280, 3), 40, np.uint8)
    composer = Composer(background, BOX, hold=None)
    out = composer.compose(np.full((256, 256, 3), 220, np.uint8)).astype(int)
    row = out[300, :, 0]
    col = out[:, 700, 0]
    ring = 0.08 * BOX.side
    # A raised cosine over `ring` pixels: its steepest step is pi / 2 * (220 - 40) / ring.
    limit = np.pi / 2 * 180 / ring + 1
    for line in (row, col):
        steps = np.diff(line)
        assert np.abs(steps).max() <= limit
        half = len(line) // 2 if line is row else 300
        assert (steps[:half] >= 0).all() and (steps[half:] <= 0).all()
    assert row.max() == 220 and row.min() == 40


def test_same_as_paste_back_without_hold() -> None:
    background = smooth_image(1280, 720)
    face = smooth_image(256, 256, phase=1.0)
    ours = Composer(background, BOX, hold=None, interpolation="linear").compose(face)
    theirs = paste_back(background, face, BOX, feather=0.08)
    assert np.abs(ours.astype(int) - theirs).max() <= 1


def test_mismatched_inputs_are_rejected() -> None:
    background = smooth_image(1280, 720)
    with pytest.raises(ValueError, match="640x360"):
        Composer(smooth_image(640, 360), BOX)
    with pytest.raises(ValueError, match="interpolation"):
        Composer(background, BOX, interpolation="sinc")
    with pytest.raises(ValueError, match="square"):
        Composer(background, BOX).compose(np.zeros((256, 200, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        Composer(background, BOX).compose(np.zeros((256, 256, 3), np.float32))
    with pytest.raises(ValueError):
        BodyHold(neck_start=0.5, neck_end=0.2)


def test_motion_weight_shape() -> None:
    kp = face_keypoints()
    w = motion_weight(kp, 256, BodyHold())
    assert w.shape == (256, 256) and w.dtype == np.float32
    assert 0.0 <= w.min() and w.max() <= 1.0
    ring = int(0.08 * 256)
    assert (w[:ring] == 0).all() and (w[:, :ring] == 0).all() and (w[:, -ring:] == 0).all()
    centre = kp[list(FACE_OVAL)].mean(axis=0).round().astype(int)
    assert w[centre[1], centre[0]] == 1.0
    chin = int(kp[list(FACE_OVAL), 1].max())
    assert (w[chin + 40 :] == 0).all()  # 0.3 face heights below the chin: held


def test_keyframe_is_unchanged_by_the_hold() -> None:
    image = smooth_image(256, 256)
    ref = WarpRenderer().prepare(image, face_keypoints())
    held = hold_motion(image, ref, ref.keypoints)
    assert np.abs(held.astype(int) - image).max() <= 1


def test_hold_keeps_the_body_still_and_the_head_moving() -> None:
    image = smooth_image(256, 256)
    kp = face_keypoints()
    renderer = WarpRenderer()
    ref = renderer.prepare(image, kp)
    moved = kp + np.array([9.0, 5.0], np.float32)  # the head moves, the body should not
    face = renderer.render(ref, moved)
    held = hold_motion(face, ref, moved)
    w = motion_weight(kp, 256, BodyHold())
    head = w >= 1.0
    still = w <= 0.0
    np.testing.assert_array_equal(held[head], face[head])
    assert np.abs(held[still].astype(int) - image[still]).max() <= 1
    # The warp alone used to move the neck and shoulders near the bottom (its rings followed
    # the head); since issue 18's head-follow share fades with the distance from the face it
    # leaves them nearly still, and the hold keeps them still.
    chin = int(kp[list(FACE_OVAL), 1].max())
    body = np.zeros((256, 256), bool)
    body[chin + 40 : 256 - 21, 21:-21] = True
    assert body.sum() > 3000
    assert np.abs(face[body].astype(int) - image[body]).mean() < 0.5
    assert np.abs(held[body].astype(int) - image[body]).max() <= 1
    # No seam: one warp, so no step bigger than the picture's own steepest one (plus the stretch).
    own = max(np.abs(np.diff(image.astype(int), axis=a)).max() for a in (0, 1))
    steps = max(np.abs(np.diff(held.astype(int), axis=a)).max() for a in (0, 1))
    assert steps <= 2 * own


def test_hold_reuses_the_renderers_flow_and_gives_the_same_picture() -> None:
    """Issue 17: the hold takes the face flow the renderer already computed for the frame
    (``keyface.render.warp.face_flow``) instead of triangulating again; the result is the
    one a fresh reference (nothing cached) gives."""
    image = smooth_image(256, 256)
    kp = face_keypoints()
    renderer = WarpRenderer()
    moved = kp + np.array([7.0, -3.0], np.float32)
    warm = renderer.prepare(image, kp)
    face = renderer.render(warm, moved)
    assert "face_flow" in warm.cache
    held = hold_motion(face, warm, moved)
    fresh = hold_motion(face, renderer.prepare(image, kp), moved)
    np.testing.assert_array_equal(held, fresh)


def test_compose_with_hold_end_to_end() -> None:
    background = smooth_image(1280, 720)
    kp = face_keypoints()
    renderer = WarpRenderer()
    crop = np.ascontiguousarray(smooth_image(1280, 720)[75:525, 475:925])
    crop = cv2.resize(crop, (256, 256), interpolation=cv2.INTER_AREA)
    ref = renderer.prepare(crop, kp)
    moved = kp + np.array([6.0, -4.0], np.float32)
    composer = Composer(background, BOX)
    out = composer.compose(renderer.render(ref, moved), ref, moved)
    plain = Composer(background, BOX, hold=None).compose(renderer.render(ref, moved))
    # The crop's border ring is held, so the frame around the box joins the background.
    x0, y0, x1, y1 = composer.region
    ring = (composer.alpha > 0) & (composer.alpha < 1)
    err_hold = np.abs(out[y0:y1, x0:x1][ring].astype(int) - background[y0:y1, x0:x1][ring])
    err_plain = np.abs(plain[y0:y1, x0:x1][ring].astype(int) - background[y0:y1, x0:x1][ring])
    assert err_hold.mean() < err_plain.mean()
    assert err_hold.mean() < 2.0


@pytest.mark.parametrize("interpolation", ["cubic", "linear"])
@pytest.mark.parametrize(
    "x0, y0, side", [(476, 10, 450), (-30, 300, 495), (1000, -40, 320), (200, 200, 256)]
)
def test_box_on_the_pixel_grid_resizes_like_the_warp(interpolation, x0, y0, side) -> None:
    """Issue 17: a box on the pixel grid (``keyface send --full-frame``) scales the crop in
    with a separable resize instead of the warp: the same geometry (a box half a pixel off
    differs by far more), within 3 levels at a hard edge (the warp rounds its sub-pixel
    positions to 1/32), also where the box leaves the frame."""
    background = smooth_image(1280, 720)
    box = CropBox(x0 + side / 2, y0 + side / 2, float(side), 1280, 720)
    face = smooth_image(256, 256, phase=1.0)
    face[100:140, 60:200] = 255 - face[100:140, 60:200]  # an edge to place exactly
    fast = Composer(background, box, hold=None, interpolation=interpolation)
    assert fast._grid_side == side
    slow = Composer(background, box, hold=None, interpolation=interpolation)
    slow._grid_side = None  # the general warp
    diff = np.abs(fast.compose(face).astype(int) - slow.compose(face))
    assert diff.max() <= 3
    assert diff.mean() < 0.05
    shifted = CropBox(box.cx + 0.5, box.cy, box.side, 1280, 720)
    moved = Composer(background, shifted, hold=None, interpolation=interpolation)
    assert np.abs(fast.compose(face).astype(int) - moved.compose(face)).max() > 20


def test_box_off_the_grid_keeps_the_warp() -> None:
    off = CropBox(700.3, 300.0, 450.0, 1280, 720)
    assert Composer(smooth_image(1280, 720), off)._grid_side is None
    assert Composer(smooth_image(1280, 720), BOX)._grid_side == 450


def test_snap_to_grid() -> None:
    from keyface.face import snap_to_grid

    box = CropBox(cx=790.083, cy=237.967, side=475.934, source_width=1280, source_height=720)
    snapped = snap_to_grid(box)
    assert (snapped.x0, snapped.y0, snapped.side) == (552.0, 0.0, 476.0)
    assert abs(snapped.cx - box.cx) <= 1 and abs(snapped.side - box.side) <= 0.5
    assert Composer(smooth_image(1280, 720), snapped)._grid_side == 476
    assert snap_to_grid(snapped) == snapped
