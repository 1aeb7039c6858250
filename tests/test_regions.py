"""Region metrics (keyface.eval.regions): what a viewer looks at, measured where it is. Each
test makes the failure of issue 18 on real carphone frames and checks that the right measure
sees it and the others do not."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from face_utils import glance

from keyface.eval.metrics import compute_metrics
from keyface.eval.regions import (
    OPEN_MOUTH,
    eye_aspect_ratio,
    eye_states,
    flicker,
    gaze_measures,
    mouth_opening,
    outside_face,
    state_measures,
)
from keyface.facemesh import LEFT_EYE_EAR, OUTER_LIPS, RIGHT_EYE_EAR, RIGHT_EYE_LIDS, gaze
from keyface.pipeline import cropped_frames

REGIONS = ["lpips_mouth", "lpips_eyes", "eye_state", "gaze_off", "mouth_open", "flicker"]


@pytest.fixture(scope="module")
def clip(carphone_analysis) -> tuple[list[np.ndarray], list[np.ndarray]]:
    a = carphone_analysis
    frames = [img for _, img in cropped_frames(a.path, a.crop, a.size, 8)]
    marks = [lm for lm in a.landmarks[:8]]
    assert all(m is not None for m in marks)
    return frames, marks


def test_identical_frames_score_perfect(clip) -> None:
    frames, _ = clip
    m = compute_metrics(frames, [f.copy() for f in frames], REGIONS, progress=False)
    assert m.mean["lpips_mouth"] == pytest.approx(0, abs=1e-6)
    assert m.mean["lpips_eyes"] == pytest.approx(0, abs=1e-6)
    assert m.mean["eye_state"] == 0 and m.mean["mouth_open"] == pytest.approx(0, abs=1e-9)
    assert m.mean["gaze_off"] == 0
    assert m.mean["flicker"] == 0
    assert np.isnan(m.per_frame["flicker"][0])  # no change before the first frame


def test_a_flat_red_mouth_is_seen_by_the_mouth_measure(clip) -> None:
    """The failure of issue 18: the mouth painted as a flat red oval."""
    frames, marks = clip
    painted = []
    for f, lm in zip(frames, marks, strict=True):
        g = f.copy()
        cv2.fillPoly(g, [np.round(lm[list(OUTER_LIPS), :2]).astype(np.int32)], (170, 30, 40))
        painted.append(g)
    m = compute_metrics(
        frames,
        painted,
        ["lpips_alex", "lpips_mouth", "lpips_mouth_open", "lpips_eyes"],
        progress=False,
    )
    assert m.mean["lpips_mouth"] > 0.1
    # The open-mouth measure scores exactly the frames whose mouth is open, the same way.
    opened = [mouth_opening(lm) > OPEN_MOUTH for lm in marks]
    assert 0 < sum(opened) < len(opened), "carphone's first frames open and close the mouth"
    for is_open, a, b in zip(
        opened, m.per_frame["lpips_mouth_open"], m.per_frame["lpips_mouth"], strict=True
    ):
        assert (a == pytest.approx(b)) if is_open else np.isnan(a)
    assert m.mean["lpips_mouth"] > 5 * m.mean["lpips_alex"]  # the whole frame hides it
    assert m.mean["lpips_eyes"] < 0.2 * m.mean["lpips_mouth"]


def test_eye_and_mouth_state_from_landmarks(clip) -> None:
    _, marks = clip
    lm = marks[0].copy()
    open_ears = (eye_aspect_ratio(lm, RIGHT_EYE_EAR), eye_aspect_ratio(lm, LEFT_EYE_EAR))
    assert min(open_ears) > 0.15
    assert eye_states(lm, open_ears) == ("open", "open")
    shut = lm.copy()
    for upper, lower in RIGHT_EYE_LIDS:  # the upper lid lowered onto the lower one
        shut[upper] = shut[lower]
    assert eye_aspect_ratio(shut, RIGHT_EYE_EAR) < 0.05
    assert eye_states(shut, open_ears) == ("closed", "open")
    squint = lm.copy()  # lids a third of the way closed: unsure, never a disagreement
    for upper, lower in RIGHT_EYE_LIDS:
        squint[upper] = lm[upper] + (lm[lower] - lm[upper]) * 0.3
    assert eye_states(squint, open_ears)[0] == "unsure"
    assert state_measures([lm, lm], [squint, lm])[0] == [0.0, 0.0]
    assert eye_aspect_ratio(shut, LEFT_EYE_EAR) == eye_aspect_ratio(lm, LEFT_EYE_EAR)
    eye, _ = state_measures([lm, lm, lm, None], [lm, shut, None, lm])
    assert eye[:2] == [0.0, 1.0] and np.isnan(eye[2]) and np.isnan(eye[3])
    opened = lm.copy()
    opened[14, 1] += 20  # the lower inner lip dropped
    assert mouth_opening(opened) > mouth_opening(lm) + 0.1
    assert state_measures([lm], [opened])[1][0] == pytest.approx(
        mouth_opening(opened) - mouth_opening(lm)
    )


def test_eyes_that_look_elsewhere_are_gaze_off(clip) -> None:
    """``gaze_off``: an iris moved by more than a tenth of the eye's width (a glance) counts,
    less does not, and a closed eye's gaze is not compared (eye_state measures it)."""
    _, marks = clip
    lm = marks[0]
    g0 = gaze(lm)
    assert g0 is not None and all(0.35 < g < 0.65 for g in g0), "carphone looks ahead"
    g1 = gaze(glance(lm, 0.2))
    assert g1 is not None
    assert g1[0] - g0[0] == pytest.approx(0.2) and g1[1] - g0[1] == pytest.approx(-0.2)
    shut = glance(lm, 0.2)
    for upper, lower in RIGHT_EYE_LIDS:
        shut[upper] = shut[lower]
    values = gaze_measures(
        [lm, lm, lm, lm, None], [glance(lm, 0.2), glance(lm, 0.05), lm, shut, lm]
    )
    assert values[:3] == [1.0, 0.0, 0.0]
    assert values[3] == 1.0, "the left eye is open in both and looks elsewhere"
    assert np.isnan(values[4])
    assert gaze(lm[:468]) is None, "no irises, no gaze"


def test_a_pumping_background_is_flicker(clip) -> None:
    frames, marks = clip
    pumped = []
    for t, (f, lm) in enumerate(zip(frames, marks, strict=True)):
        out = outside_face(lm, f.shape)
        g = f.astype(np.int16)
        g[out] += 12 if t % 2 else 0
        pumped.append(np.clip(g, 0, 255).astype(np.uint8))
    values = flicker(frames, pumped, marks)
    assert np.isnan(values[0])
    assert 8 < np.nanmean(values) < 13
    assert np.nanmax(flicker(frames, [f.copy() for f in frames], marks)) == 0
