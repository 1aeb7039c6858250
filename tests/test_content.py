"""The content rule: a frame is rendered only from a reference that shows its mouth and eyes.

A warp can close a mouth or an eye that a reference shows open, but it cannot open one that the
reference shows closed (the lips are stretched over nothing: a flat red oval). The encoder
therefore checks the mouth and eye state of each reference before the motion gate.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from keyface.bitstream import DetailPacket, KeyframePacket, RefreshMode, read_stream, write_stream
from keyface.codec.config import CodecConfig
from keyface.codec.content import EYE_READ_SHARE, ContentRule, unread_eyes
from keyface.codec.decoder import DecoderCore
from keyface.codec.encoder import EncoderCore
from keyface.facemesh import INNER_MOUTH, LEFT_EYE_LIDS, RIGHT_EYE_LIDS
from keyface.imageops import psnr
from keyface.motion import FaceState, get_representation
from keyface.pipeline import decode_bytes

# Everything that moves with the lower jaw when the mouth opens: the lower lips and the chin.
LOWER_LIP = (14, 87, 178, 88, 95, 317, 402, 318, 324, 146, 91, 181, 84, 17, 314, 405, 321, 375)
CHIN = (152, 148, 176, 149, 150, 377, 400, 378, 379, 365, 199, 175, 18, 200, 201, 421, 428)


def test_rule_opening_needs_a_reference_that_shows_it() -> None:
    rule = ContentRule(mouth_margin=0.1, eye_share=0.6)
    closed = FaceState(mouth=0.02, eyes=(0.3, 0.3))
    assert rule.holds(closed, closed)
    assert rule.missing(closed, replace(closed, mouth=0.4)) == "mouth"
    assert rule.holds(replace(closed, mouth=0.4), closed), "closing a mouth by warping is fine"
    blink = replace(closed, eyes=(0.05, 0.3))
    assert rule.missing(blink, closed) == "eyes", "a blink keyframe cannot show an open eye"
    assert rule.holds(closed, replace(closed, eyes=(0.2, 0.3))), "narrowing an eye is fine"
    assert rule.holds(replace(closed, mouth=0.1), replace(closed, mouth=0.19))


def open_mouth(landmarks: np.ndarray, px: float) -> np.ndarray:
    out = landmarks.copy()
    out[list(LOWER_LIP), 1] += px
    out[list(CHIN), 1] += px
    return out


def close_eyes(landmarks: np.ndarray) -> np.ndarray:
    out = landmarks.copy()
    for lids in (RIGHT_EYE_LIDS, LEFT_EYE_LIDS):
        for upper, lower in lids:
            mid = (out[upper, :2] + out[lower, :2]) / 2
            out[upper, :2] = out[lower, :2] = mid
    return out


@pytest.fixture(scope="module")
def face(carphone_analysis):
    """The first carphone crop and its landmarks, with the mouth pressed shut."""
    image = carphone_analysis.crops[0]
    lm = carphone_analysis.landmarks[0].astype(np.float64)
    inner = list(INNER_MOUTH)
    lm[inner, 1] = lm[inner, 1].mean()  # lips together
    return image, lm


def states(config: CodecConfig, sequence) -> tuple[list, EncoderCore]:
    encoder = EncoderCore(config, fps=25)
    packets = []
    for image, lm in sequence:
        packets += encoder.encode(image, lm)
    packets += encoder.flush()
    return packets, encoder


CONFIG = CodecConfig(
    intra_codec="hevc",
    content_update="keyframe",  # the detail update has its own test below
    keyframe_quality=30,
    refresh_mode=RefreshMode.MOTION,
    refresh_threshold=10.0,  # the motion gate never fires: only the content rule can
    motion_field=False,
)


def test_an_opening_mouth_gets_a_keyframe_and_keeps_using_it(face) -> None:
    image, closed = face
    rep = get_representation("facemesh-pca").for_level(CONFIG.quant_level)
    opened = open_mouth(closed, 14.0)
    # The precondition: the quantised keypoints show the mouth open wider than the rule allows.
    kp = [rep.keypoints(rep.analyze(lm, 256), 256) for lm in (closed, opened)]
    assert rep.face_state(kp[1]).mouth > rep.face_state(kp[0]).mouth + 0.2

    sequence = [(image, closed)] * 4 + [(image, opened)] * 4 + [(image, closed)] * 4
    packets, encoder = states(CONFIG, sequence)
    decisions = encoder.stats.decisions
    assert [d.index for d in decisions if d.keyframe] == [0, 4]
    assert decisions[0].refresh == "first" and decisions[4].refresh == "mouth"
    assert all(d.reference_frame == 4 for d in decisions[5:8]), "the open mouth is held"
    assert all(d.reference_frame == 0 for d in decisions[8:]), "closed again: nearest reference"

    # The decoder renders each frame from the reference the encoder chose.
    decoded = decode_bytes(write_stream(encoder.header, packets))
    assert decoded.error is None
    assert [f.reference_frame for f in decoded.frames] == [d.reference_frame for d in decisions]

    # Without the rule, one closed-mouth keyframe serves every frame (the red oval).
    _, plain = states(replace(CONFIG, content_refresh=False), sequence)
    assert [d.index for d in plain.stats.decisions if d.keyframe] == [0]


def test_regular_keyframes_do_not_switch_the_content_rule_off(face) -> None:
    """``max_interval`` (the call ladder's regular keyframes) comes on top of the rules: the
    mouth that opens between two regular keyframes gets its own, the clock restarts there, and
    a frame is drawn from whichever buffered keyframe holds its mouth, not always the newest.
    The fixed-interval refresh (``RefreshMode.FIXED``) knows only the clock: the red oval."""
    image, closed = face
    opened = open_mouth(closed, 14.0)
    sequence = [(image, closed)] * 3 + [(image, opened)] * 2 + [(image, closed)] * 10
    _, encoder = states(replace(CONFIG, max_interval=6), sequence)
    decisions = encoder.stats.decisions
    assert [(d.index, d.refresh) for d in decisions if d.keyframe] == [
        (0, "first"),
        (3, "mouth"),
        (9, "interval"),
    ]
    assert [d.reference_frame for d in decisions[4:9]] == [3, 0, 0, 0, 0]

    fixed = replace(CONFIG, refresh_mode=RefreshMode.FIXED, refresh_threshold=6)
    _, encoder = states(fixed, sequence)
    assert [d.index for d in encoder.stats.decisions if d.keyframe] == [0, 6, 12]


def test_the_gaze_rule_keeps_eyes_from_looking_the_wrong_way(face) -> None:
    """A warp barely moves an iris: drawn from a sideways glance, eyes that look ahead keep
    looking sideways. ``gaze_rule="refresh"``: a glance gets its own keyframe, and the look
    ahead afterwards goes back to the first keyframe; with the default (``"choose"``) the
    glance is drawn from the first keyframe (the eyes stay ahead) and nothing is refreshed."""
    from face_utils import glance

    from keyface.codec.content import GAZE_MARGIN

    image, ahead = face
    aside = glance(ahead, 0.25)
    rep = get_representation("facemesh-pca").for_level(CONFIG.quant_level)
    states_ = [rep.face_state(rep.keypoints(rep.analyze(lm, 256), 256)) for lm in (ahead, aside)]
    assert states_[0].gaze is not None and states_[1].gaze is not None
    moved = [abs(a - b) for a, b in zip(states_[0].gaze, states_[1].gaze, strict=True)]
    assert min(moved) > 1.5 * GAZE_MARGIN, "the quantised keypoints show the glance"
    rule = ContentRule(gaze_margin=GAZE_MARGIN)
    assert rule.missing(states_[0], states_[1]) == "eyes" and rule.holds(states_[0], states_[0])
    assert ContentRule().holds(states_[0], states_[1]), "off by default"

    sequence = [(image, ahead)] * 3 + [(image, aside)] * 3 + [(image, ahead)] * 3
    _, encoder = states(replace(CONFIG, gaze_rule="refresh"), sequence)
    decisions = encoder.stats.decisions
    assert [(d.index, d.refresh) for d in decisions if d.keyframe] == [(0, "first"), (3, "eyes")]
    assert [d.reference_frame for d in decisions[4:]] == [3, 3, 0, 0, 0]
    _, plain = states(CONFIG, sequence)
    assert [d.index for d in plain.stats.decisions if d.keyframe] == [0]


def test_the_gaze_choice_picks_a_reference_that_looks_the_same_way(face) -> None:
    """``gaze_rule="choose"`` sends no keyframe for a glance; it only prefers, among the
    references that hold a frame, one whose eyes look where the frame's do. Here the glance
    came with an open mouth (a keyframe by the mouth rule), and later glances with the mouth
    shut are drawn from it, where without the choice they are drawn from the nearer first
    keyframe, which looks ahead."""
    from face_utils import glance

    image, ahead = face
    aside = glance(ahead, 0.25)
    sequence = (
        [(image, ahead)] * 3
        + [(image, open_mouth(aside, 14.0))] * 2
        + [(image, ahead)] * 2
        + [(image, aside)] * 2
    )
    _, encoder = states(replace(CONFIG, gaze_rule="choose"), sequence)
    decisions = encoder.stats.decisions
    assert [(d.index, d.refresh) for d in decisions if d.keyframe] == [(0, "first"), (3, "mouth")]
    assert [d.reference_frame for d in decisions[5:]] == [0, 0, 3, 3]
    _, plain = states(replace(CONFIG, gaze_rule="off"), sequence)
    assert [d.index for d in plain.stats.decisions if d.keyframe] == [0, 3]
    assert [d.reference_frame for d in plain.stats.decisions[7:]] == [0, 0]


def test_a_keyframe_taken_in_a_blink_is_replaced_when_the_eyes_open(face) -> None:
    image, lm = face
    sequence = [(image, close_eyes(lm))] * 3 + [(image, lm)] * 3 + [(image, close_eyes(lm))] * 3
    _, encoder = states(CONFIG, sequence)
    decisions = encoder.stats.decisions
    assert [(d.index, d.refresh) for d in decisions if d.keyframe] == [(0, "first"), (3, "eyes")]
    # The next blink is rendered from the nearest reference: the blink keyframe.
    assert [d.reference_frame for d in decisions[6:]] == [0, 0, 0]


def test_at_the_coarsest_levels_the_eyes_are_judged_on_the_source_landmarks(face) -> None:
    """Issue 18 (00015 and 00098 at the ladder's floor: an eye shut in 48-79 % of frames): with
    4 shape coefficients the quantised keypoints keep almost nothing of the eyes, so a first
    keyframe taken with the eyes shut reads as open and holds every later open eye. With
    ``eye_landmarks`` the rule reads the eyes on the source's landmarks and the first frame
    whose eyes open gets a keyframe."""
    image, lm = face
    level = 7
    rep = get_representation("facemesh-pca").for_level(level)
    shut, opened = (
        rep.face_state(rep.keypoints(rep.analyze(m, 256), 256)).eyes for m in (close_eyes(lm), lm)
    )
    # The precondition: the keypoints read the shut eyes at least as open as the rule allows.
    assert min(s / o for s, o in zip(shut, opened, strict=True)) > ContentRule().eye_share
    sequence = [(image, close_eyes(lm))] * 3 + [(image, lm)] * 3
    config = replace(CONFIG, quant_level=level)
    _, keypoints_only = states(config, sequence)
    assert [d.index for d in keypoints_only.stats.decisions if d.keyframe] == [0]
    _, on_landmarks = states(replace(config, eye_landmarks=True), sequence)
    refreshed = [(d.index, d.refresh) for d in on_landmarks.stats.decisions if d.keyframe]
    assert refreshed == [(0, "first"), (3, "eyes")]


def test_a_detail_update_promotes_the_rendered_frame_instead_of_a_keyframe(face) -> None:
    """``content_update="detail"``: the opening mouth costs one rectangle, not a keyframe."""
    image, closed = face
    opened = open_mouth(closed, 14.0)
    sequence = [(image, closed)] * 4 + [(image, opened)] * 4 + [(image, closed)] * 2
    config = replace(CONFIG, content_update="detail")
    packets, encoder = states(config, sequence)
    decisions = encoder.stats.decisions
    assert encoder.header.promotes
    assert [d.index for d in decisions if d.keyframe] == [0]
    assert decisions[4].promoted and decisions[4].refresh == "mouth"
    assert decisions[4].reference_frame == 0, "rendered from the reference it promotes"
    assert all(d.reference_frame == 4 for d in decisions[5:8]), "then the open mouth is held"
    details = [p for p in packets if isinstance(p, DetailPacket)]
    assert [p.frame_index for p in details] == [4], "one rectangle: the mouth"
    assert encoder.stats.detail_bytes < encoder.stats.keyframe_bytes / 3

    # The decoder promotes the same frame and holds the same reference picture.
    stream = read_stream(write_stream(encoder.header, packets))
    decoder = DecoderCore(stream.header)
    frames = [f for p in stream.packets for f in decoder.receive(p)]
    assert [f.reference_frame for f in frames] == [d.reference_frame for d in decisions]
    assert decoder.buffer.frame_indices() == encoder.buffer.frame_indices() == [4, 0]
    assert np.array_equal(decoder.buffer[0].reference.image, encoder.buffer[0].reference.image)

    # Frame 4's mouth is what was sent, not the closed lips stretched: compare with the render
    # of the same frame without the rule, against the picture the landmarks were drawn on.
    plain_packets, plain = states(replace(CONFIG, content_refresh=False), sequence)
    plain_frames = decode_bytes(write_stream(plain.header, plain_packets)).frames
    [(x, y, w, h)] = [(p.x, p.y, p.width, p.height) for p in details]
    cut = np.s_[y : y + h, x : x + w]
    assert psnr(frames[4].image[cut], image[cut]) > psnr(plain_frames[4].image[cut], image[cut]) + 3


def test_unread_eyes_are_the_open_eyes_a_picture_shows_less_open() -> None:
    """Issue 18: at the lowest rungs a keyframe's eyes blur shut, and every frame warped from it
    keeps them shut; the encoder reads the eyes of each reference picture against the source."""
    assert unread_eyes((0.3, 0.3), (0.29, 0.31)) == []
    assert unread_eyes((0.3, 0.3), (0.15, 0.3)) == [0]
    assert unread_eyes((0.3, 0.25), (0.1, 0.1)) == [0, 1]
    assert unread_eyes((0.05, 0.3), (0.01, 0.3)) == [], "a blink in the source is not checked"
    assert unread_eyes((0.3, 0.3), None) == [], "no face found in the picture: not judged"


class SharpnessEyes:
    """A stand-in for the face mesh: an eye reads open (0.3) as far as its rectangle keeps the
    source's fine detail (Laplacian energy), the way coarse coding blurs an eye shut."""

    def __init__(self, source: np.ndarray, boxes) -> None:
        self.source, self.boxes = source, boxes
        self.reads = 0

    def energy(self, image: np.ndarray, box) -> float:
        import cv2

        x, y, w, h = box
        grey = cv2.cvtColor(image[y : y + h, x : x + w], cv2.COLOR_RGB2GRAY).astype(np.float64)
        return float(np.abs(cv2.Laplacian(grey, cv2.CV_64F)).mean())

    def ears(self, image: np.ndarray) -> tuple[float, float]:
        self.reads += 1
        share = [min(1.0, self.energy(image, b) / self.energy(self.source, b)) for b in self.boxes]
        return 0.3 * share[0], 0.3 * share[1]


def test_eyes_a_coarse_keyframe_blurs_shut_are_coded_again_until_they_read_open(face) -> None:
    """The eye check (``CodecConfig.eye_check``): a keyframe coded so coarsely that its eyes do
    not read open gets its eyes again as DETAIL rectangles, at the first quality step that
    shows them open; the decoder holds the same picture. Without it, no rectangles."""
    from keyface.codec.detail import detail_boxes

    image, lm = face
    config = replace(CONFIG, content_update="detail", keyframe_quality=5)
    sequence = [(image, lm)] * 3
    rep = get_representation("facemesh-pca").for_level(config.quant_level)
    kp = rep.keypoints(rep.analyze(lm, 256), 256)
    boxes = detail_boxes(rep.detail_regions(kp)["eyes"], 256, 256)
    reader = SharpnessEyes(image, boxes)

    encoder = EncoderCore(config, fps=25)
    assert encoder.eye_reader is not None, "on by default where DETAIL packets may be sent"
    encoder.eye_reader = reader
    packets = [p for im, m in sequence for p in encoder.encode(im, m)] + encoder.flush()
    details = [p for p in packets if isinstance(p, DetailPacket)]
    assert {p.frame_index for p in details} == {0}
    assert len(details) in (1, 2) and all(p.quality > config.keyframe_quality for p in details)
    assert encoder.stats.eye_details == 1
    held = encoder.buffer[0].reference.image
    assert not unread_eyes(reader.ears(image), reader.ears(held)), "the eyes read open now"

    stream = read_stream(write_stream(encoder.header, packets))
    decoder = DecoderCore(stream.header)
    for p in stream.packets:
        decoder.receive(p)
    assert np.array_equal(decoder.buffer[0].reference.image, held)

    plain_packets, _ = states(replace(config, eye_check=False), sequence)
    assert not [p for p in plain_packets if isinstance(p, DetailPacket)]


def test_the_bidirectional_groups_check_their_keyframes_eyes(face) -> None:
    """The groups have no content rule, so their keyframes are their only references: a
    keyframe that blurs the eyes shut gets them again as DETAIL rectangles, and the decoder
    renders the group's frames from the same picture."""
    from keyface.codec.detail import detail_boxes

    image, lm = face
    config = replace(CONFIG, mode="bidirectional", aux_scale=0, gop=5, keyframe_quality=5)
    rep = get_representation("facemesh-pca").for_level(config.quant_level)
    kp = rep.keypoints(rep.analyze(lm, 256), 256)
    reader = SharpnessEyes(image, detail_boxes(rep.detail_regions(kp)["eyes"], 256, 256))
    encoder = EncoderCore(config, fps=25)
    assert encoder.eye_reader is not None
    encoder.eye_reader = reader
    packets = [p for _ in range(5) for p in encoder.encode(image, lm)] + encoder.flush()
    details = [p for p in packets if isinstance(p, DetailPacket)]
    keyframes = {p.frame_index for p in packets if isinstance(p, KeyframePacket)}
    assert details and {p.frame_index for p in details} <= keyframes
    held = encoder.buffer[0].reference.image
    assert not unread_eyes(reader.ears(image), reader.ears(held)), "the eyes read open now"

    stream = read_stream(write_stream(encoder.header, packets))
    decoder = DecoderCore(stream.header)
    for p in stream.packets:
        decoder.receive(p)
    assert np.array_equal(decoder.buffer[0].reference.image, held)
    off = EncoderCore(replace(config, eye_check=False), fps=25)
    assert off.eye_reader is None


def test_rule_a_blink_needs_a_reference_that_shows_it_closed() -> None:
    """A warp squeezes only what lies between the lid points: a blink rendered from open eyes
    kept the lashes, white and iris beside them and read open (``benchmarks/eye_causes.py``).
    An eye closed below ``blink_share`` of the reference's is content the reference lacks."""
    rule = ContentRule()
    open_eyes = FaceState(mouth=0.02, eyes=(0.3, 0.3))
    assert rule.missing(open_eyes, replace(open_eyes, eyes=(0.3, 0.03))) == "eyes"
    assert rule.holds(open_eyes, replace(open_eyes, eyes=(0.3, 0.2))), "narrowing is fine"
    blink = replace(open_eyes, eyes=(0.04, 0.04))
    assert rule.holds(blink, replace(blink, eyes=(0.03, 0.05)))


def test_groups_judge_the_eyes_on_the_landmarks_when_asked(face) -> None:
    """``eye_landmarks`` in the bidirectional groups (the option applies to them too; the one
    ladder leaves it off there): at level 7 the keypoints read shut eyes as open, so neither
    keyframe of a group lacks the open eyes between its two shut-eyed keyframes; read on the
    landmarks, the group is cut where they open."""
    image, lm = face
    sequence = [(image, close_eyes(lm))] * 4 + [(image, lm)] * 2 + [(image, close_eyes(lm))] * 7
    base = replace(CONFIG, mode="bidirectional", aux_scale=0, gop=8, eye_check=False, quant_level=7)
    base = replace(base, group_cut=("eyes",))
    _, keypoints_only = states(base, sequence)
    assert [d.index for d in keypoints_only.stats.decisions if d.keyframe] == [0, 7, 12]
    _, on_landmarks = states(replace(base, eye_landmarks=True), sequence)
    refreshed = [(d.index, d.refresh) for d in on_landmarks.stats.decisions if d.keyframe]
    assert (4, "content") in refreshed, refreshed


def test_groups_are_cut_short_at_an_open_mouth_only_when_asked(face) -> None:
    """``group_cut=("mouth",)``: a mouth opened wide between two closed-mouth keyframes of a
    group is content neither holds, so the group closes there (a keyframe) and the rest of
    its frames open the next group; the decoder follows the encoder's choices. By default (as
    measured, docs/hybrid.md) the groups keep their length."""
    image, closed = face
    opened = open_mouth(closed, 14.0)
    sequence = [(image, closed)] * 5 + [(image, opened)] * 2 + [(image, closed)] * 6
    base = replace(CONFIG, mode="bidirectional", aux_scale=0, gop=8, eye_check=False)

    _, plain = states(base, sequence)
    assert [d.index for d in plain.stats.decisions if d.keyframe] == [0, 7, 12]

    packets, cut = states(replace(base, group_cut=("mouth",)), sequence)
    decisions = cut.stats.decisions
    assert [(d.index, d.refresh) for d in decisions if d.keyframe] == [
        (0, "first"),
        (5, "content"),
        (12, "gop"),
    ]
    # The second open-mouth frame is animated from the open-mouth keyframe, the closed
    # frames after it from either keyframe of their group (both hold them).
    by_index = {d.index: d for d in decisions}
    assert by_index[6].reference_frame == 5
    assert all(by_index[i].reference_frame in (5, 12) for i in range(7, 12))
    decoded = decode_bytes(write_stream(cut.header, packets))
    assert decoded.error is None and len(decoded.frames) == len(sequence)
    assert [f.reference_frame for f in decoded.frames] == [
        by_index[i].reference_frame for i in range(len(sequence))
    ]
    # Cutting on the eyes only leaves this group alone.
    _, eyes = states(replace(base, group_cut=("eyes",)), sequence)
    assert [d.index for d in eyes.stats.decisions if d.keyframe] == [0, 7, 12]


class BlinkEdgeEyes:
    """A stand-in for the face mesh on still pictures: it reads the right eye of ``edge`` (a
    source frame at a blink's edge) at a third of what the keypoints say, everything else as
    the keypoints say."""

    def __init__(self, edge: np.ndarray, eyes: tuple[float, float]) -> None:
        self.edge, self.eyes = edge, eyes

    def ears(self, image: np.ndarray) -> tuple[float, float]:
        if image is self.edge:
            return self.eyes[0] / 3, self.eyes[1]
        return self.eyes


def test_a_reference_taken_at_a_blinks_edge_holds_the_eye_as_its_picture_shows_it(face) -> None:
    """Issue 18 (00015 at u 0: a quarter of its frames): the tracker smooths over a blink's
    edge, so a reference's keypoints can say "open" where its picture shows a half-shut eye,
    and every later frame with that eye open was warped from it and read closed. With
    ``eye_source_state`` the reference holds the eye as the face mesh reads it on the source
    picture, so the next frame whose eye is open gets an eye update instead."""
    image, lm = face
    rep = get_representation("facemesh-pca").for_level(CONFIG.quant_level)
    eyes = rep.face_state(rep.keypoints(rep.analyze(lm, 256), 256)).eyes
    edge = image.copy()
    config = replace(CONFIG, content_update="detail")
    sequence = [(edge, lm), (image, lm), (image, lm)]

    def run(on: bool) -> EncoderCore:
        encoder = EncoderCore(replace(config, eye_source_state=on), fps=25)
        encoder.eye_reader = BlinkEdgeEyes(edge, eyes)
        for im, m in sequence:
            encoder.encode(im, m)
        encoder.flush()
        return encoder

    off = run(False)
    assert off.stats.updates == 0
    coded = off.buffer[0].state  # the keypoints' state (quantised keypoints)
    assert coded is not None and coded.eyes[0] > eyes[0] / 3 / EYE_READ_SHARE

    on = run(True)
    first = next(e for e in on.buffer if e.frame_index == 0)
    assert first.state == replace(coded, eyes=(eyes[0] / 3, coded.eyes[1]))
    assert [e.frame_index for e in on.buffer if e.promoted] == [1], "frame 1's eyes are sent"
    assert on.stats.updates == 1, "frame 2 is held by frame 1's reference"
