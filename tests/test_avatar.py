"""Avatar mode: relative motion transfer, the output is always the avatar, the gate's fallback."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from keyface.compose.avatar import (
    LEFT_EYE_LIDS,
    MOUTH_CORNERS,
    RIGHT_EYE_LIDS,
    AvatarAnimator,
    IdleMotion,
    close_eyes,
    closest_pose,
    shape_distance,
    smile,
)
from keyface.facemesh import FACE_OVAL
from keyface.motion import get_representation

LOWER_LIP = (146, 91, 181, 84, 17, 314, 405, 321, 375, 78, 95, 88, 178, 87, 14, 317, 402, 318, 324)


def avatar_keypoints() -> np.ndarray:
    """The motion model's mean face, framed like a codec crop (256)."""
    rep = get_representation()
    kp = rep.keypoints(rep.statistics.mean, 256).astype(np.float64)
    centre = kp[list(FACE_OVAL)].mean(axis=0)
    return ((kp - centre) * 0.7 + (128.0, 112.0)).astype(np.float32)


def avatar_image() -> np.ndarray:
    """A textured avatar with no blue at all (so any blue in an output would not be its own)."""
    y, x = np.mgrid[0:256, 0:256].astype(np.float64)
    r = 128 + 100 * np.sin(x / 9.0) * np.cos(y / 13.0)
    g = 128 + 100 * np.cos((x + 2 * y) / 11.0)
    return np.stack([r, g, np.zeros_like(r)], axis=-1).astype(np.uint8)


def similar(kp: np.ndarray, scale: float, angle: float, shift: tuple[float, float]) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    rot = scale * np.array([[c, -s], [s, c]])
    return (np.asarray(kp, np.float64) @ rot.T + shift).astype(np.float32)


def animator(**kwargs: object) -> AvatarAnimator:
    return AvatarAnimator(avatar_image(), avatar_keypoints(), **kwargs)  # type: ignore[arg-type]


def test_output_is_always_the_avatar(carphone_analysis) -> None:
    rep = get_representation().for_level(2)
    sender = [
        rep.keypoints(rep.analyze(lm, 256), 256)
        for lm in carphone_analysis.landmarks
        if lm is not None
    ]
    anim = animator()
    for kp in sender:
        frame = anim.animate(kp)
        assert frame.image.shape == (256, 256, 3) and frame.image.dtype == np.uint8
        # The avatar has no blue: a warp of it has none either, whatever the sender shows.
        assert frame.image[..., 2].max() == 0
    assert anim.animate(None).image[..., 2].max() == 0


def test_first_frame_is_the_avatar_itself() -> None:
    anim = animator()
    sender = similar(avatar_keypoints(), 1.7, 0.2, (30.0, -10.0))
    frame = anim.animate(sender)
    np.testing.assert_allclose(frame.keypoints, avatar_keypoints(), atol=1e-3)
    assert frame.distance == pytest.approx(0.0, abs=1e-6)
    assert not frame.gated and frame.fallback == 0.0


@pytest.mark.parametrize(("scale", "angle"), [(1.0, 0.0), (2.0, 0.0), (0.5, 0.3), (1.3, -0.5)])
def test_translation_transfers_in_the_avatars_scale(scale: float, angle: float) -> None:
    anim = animator()
    initial = similar(avatar_keypoints(), scale, angle, (40.0, 20.0))
    anim.animate(initial)
    move = np.array([6.0, -4.0])
    frame = anim.animate(initial + move.astype(np.float32))
    # The sender's move, seen in the avatar's frame: undo the sender's rotation and scale.
    c, s = np.cos(-angle), np.sin(-angle)
    expected = np.array([[c, -s], [s, c]]) @ move / scale
    np.testing.assert_allclose(
        frame.keypoints - avatar_keypoints(), np.tile(expected, (478, 1)), atol=1e-3
    )


def test_mouth_opening_transfers_in_the_avatars_scale() -> None:
    anim = animator()
    initial = similar(avatar_keypoints(), 2.0, 0.0, (-60.0, -40.0))
    anim.animate(initial)
    opened = initial.copy()
    opened[list(LOWER_LIP), 1] += 8.0  # the sender opens its mouth by 8 of its pixels
    frame = anim.animate(opened)
    delta = frame.keypoints - avatar_keypoints()
    np.testing.assert_allclose(delta[list(LOWER_LIP)], [[0.0, 4.0]] * len(LOWER_LIP), atol=1e-3)
    others = np.setdiff1d(np.arange(478), LOWER_LIP)
    np.testing.assert_allclose(delta[others], 0.0, atol=1e-3)
    assert not frame.gated


def test_fallback_triggers_over_the_threshold_and_glides_to_natural_motion() -> None:
    anim = animator(transition_frames=4, threshold=0.2)
    initial = avatar_keypoints()
    anim.animate(initial)
    small = initial + np.array([3.0, 0.0], np.float32)
    good = anim.animate(small)
    assert not good.gated
    far = initial + np.array([70.0, 0.0], np.float32)  # the head leaves the avatar's crop
    shares = []
    for _ in range(6):
        frame = anim.animate(far)
        assert frame.gated and frame.distance > 0.2
        # Over-threshold motion is never rendered: only the last good frame and natural motion.
        assert anim.distance(frame.keypoints) <= 0.2
        shares.append(frame.fallback)
    assert shares[0] > 0 and all(a < b for a, b in itertools.pairwise(shares[:4]))
    assert shares[-1] == 1.0
    np.testing.assert_allclose(frame.keypoints, anim.natural(frame.index), atol=1e-4)
    # Back under the threshold: it glides back to the transferred motion.
    back = [anim.animate(small) for _ in range(5)]
    assert not back[0].gated and back[-1].fallback == 0.0
    np.testing.assert_allclose(back[-1].keypoints, good.keypoints, atol=1e-4)


def test_a_sender_who_stays_elsewhere_is_followed_again() -> None:
    anim = animator(fps=10.0, rebase_s=1.0, transition_frames=2)
    initial = similar(avatar_keypoints(), 1.5, 0.0, (0.0, 0.0))
    anim.animate(initial)
    moved = similar(avatar_keypoints(), 1.0, 0.1, (60.0, 30.0))  # zoomed out, moved, tilted
    frames = [anim.animate(moved) for _ in range(12)]
    # Gated for 1 s (10 frames, counting the one that rebases), then followed again.
    assert all(f.gated for f in frames[:9]) and not any(f.rebased for f in frames[:9])
    assert frames[9].rebased and not frames[9].gated and frames[9].distance < 1e-6
    assert frames[-1].fallback == 0.0
    np.testing.assert_allclose(frames[-1].keypoints, avatar_keypoints(), atol=1e-3)
    # It follows from the new pose: the same 4-pixel move, in the sender's new scale (1.0).
    step = anim.animate(moved + np.array([4.0, 0.0], np.float32))
    c, s = np.cos(-0.1), np.sin(-0.1)
    np.testing.assert_allclose(
        step.keypoints - avatar_keypoints(), [[4 * c, 4 * s]] * 478, atol=1e-3
    )


def test_no_rebase_onto_a_face_turned_away() -> None:
    anim = animator(fps=10.0, rebase_s=1.0)
    kp = avatar_keypoints()
    anim.animate(kp)
    turned = kp.copy()
    turned[:, 0] = 128 + (turned[:, 0] - 128) * 0.6 + 40.0
    frames = [anim.animate(turned) for _ in range(30)]
    assert all(f.gated and not f.rebased for f in frames)
    assert AvatarAnimator(avatar_image(), kp, rebase_s=None).rebase_s is None
    with pytest.raises(ValueError, match="rebase_s"):
        AvatarAnimator(avatar_image(), kp, rebase_s=0.0)


def test_no_face_falls_back_too() -> None:
    anim = animator(transition_frames=2)
    frames = [anim.animate(None) for _ in range(3)]
    assert all(f.gated for f in frames) and frames[-1].fallback == 1.0
    assert np.isnan(frames[0].distance)


def test_natural_motion_blinks_and_smiles() -> None:
    kp = avatar_keypoints()
    closed = close_eyes(kp, 1.0)
    for upper, lower in RIGHT_EYE_LIDS + LEFT_EYE_LIDS:
        assert kp[lower, 1] - kp[upper, 1] > 0.5
        np.testing.assert_allclose(closed[upper], kp[lower], atol=1e-4)
        np.testing.assert_allclose(closed[lower], kp[lower], atol=1e-4)
    smiling = smile(kp, 1.0)
    right, left = MOUTH_CORNERS
    assert smiling[right, 0] < kp[right, 0] and smiling[left, 0] > kp[left, 0]
    assert smiling[right, 1] < kp[right, 1] and smiling[left, 1] < kp[left, 1]
    idle = IdleMotion(blink_period_s=2.0, blink_s=0.4, first_blink_s=1.0)
    assert idle.blink(0.5) == 0.0 and idle.blink(1.2) == pytest.approx(1.0)
    assert idle.blink(3.2) == pytest.approx(1.0) and idle.blink(1.6) == 0.0
    # The natural motion is itself well inside the gate.
    anim = animator(fps=10.0, idle=idle)
    worst = max(anim.distance(anim.natural(i)) for i in range(40))
    assert 0 < worst < 0.5 * anim.threshold


def test_pose_choice_and_warmup() -> None:
    kp = avatar_keypoints()
    turned = kp.copy()
    turned[:, 0] = 128 + (turned[:, 0] - 128) * 0.6  # a head turned away (foreshortened)
    assert shape_distance(kp, similar(kp, 2.0, 0.4, (5.0, 5.0))) < 1e-6
    candidates = [turned, None, similar(kp, 1.5, 0.1, (10.0, 0.0)), turned]
    assert closest_pose(kp, candidates) == 2
    with pytest.raises(ValueError):
        closest_pose(kp, [None])
    anim = animator(warmup=4)
    for c in candidates:
        frame = anim.animate(c)
        assert frame.gated and frame.fallback == 1.0
    assert anim.initial is not None
    np.testing.assert_allclose(anim.initial, candidates[2])
    frame = anim.animate(candidates[2])
    assert not frame.gated and 0.0 < frame.fallback < 1.0


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="square"):
        AvatarAnimator(np.zeros((256, 200, 3), np.uint8), avatar_keypoints())
    with pytest.raises(ValueError, match="478"):
        AvatarAnimator(avatar_image(), avatar_keypoints()[:100])
    anim = animator()
    with pytest.raises(ValueError, match="sender keypoints"):
        anim.set_initial(np.zeros((68, 2), np.float32))
    with pytest.raises(ValueError, match="from_photo"):
        anim.full_frame(anim.animate(avatar_keypoints()))


def test_from_photo_composes_into_the_photo(carphone_path, carphone_analysis) -> None:
    from keyface.io import read_frames

    photo = next(iter(read_frames(carphone_path, 1))).image
    anim = AvatarAnimator.from_photo(photo, size=128)
    assert anim.image.shape == (128, 128, 3) and anim.composer is not None
    rep = get_representation().for_level(2)
    lm = next(lm for lm in carphone_analysis.landmarks[5:] if lm is not None)
    anim.animate(rep.keypoints(rep.analyze(lm, 256), 256))
    full = anim.full_frame(anim.animate(rep.keypoints(rep.analyze(lm, 256), 256) + 2.0))
    assert full.shape == photo.shape and full.dtype == np.uint8
    x0, y0, x1, y1 = anim.composer.region
    outside = np.ones(photo.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert outside.sum() > 10000
    np.testing.assert_array_equal(full[outside], photo[outside])
