"""Rate control: quality presets, and ``--kbps`` by bisection over one quality knob.

Every operating point of the encoder is placed on one monotone ladder ``u`` in
``[U_MIN, U_MAX]`` (below 0: the animation's floor, :data:`U_MIN`): as ``u`` grows the
keyframes get better, keyframe refreshes come sooner, and the motion is quantised more
finely. :func:`fit_bitrate` bisects ``u`` with real encodes until
the stream lands within ``TOLERANCE`` of the target. It takes the encode step as a callable
(``CodecConfig -> result with a kbps``), so it knows nothing of files or analysis:
``keyface.pipeline.encode_at_kbps`` passes one that re-runs only the encoder over an analysed
clip (landmarks measured once).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, Protocol, TypeVar

from keyface.bitstream import RefreshMode
from keyface.codec.config import CodecConfig
from keyface.intra._base import qp_to_quality


class HasRate(Protocol):
    @property
    def kbps(self) -> float: ...


R = TypeVar("R", bound=HasRate)

U_MIN = -0.3
"""The bottom of the animation ladder (and of the one ladder). Between ``U_MIN`` and 0 the
animation goes below its u 0 (5.5 kbit/s on the 12 validation people): the motion quantised
at levels 5-7 (41.6-26.0 bits a frame instead of 49.9), keyframes down to quality 4, the motion
gate widened to 0.60 and no PSNR check below -0.1, down to 2.9 kbit/s at LPIPS 0.222, a rate
no conventional codec reaches (VVC at QP 52: 5.5 kbit/s, LPIPS 0.290). The price was on the
eyes: the coarse motion loses their shape, and the eye state was wrong in 9-17 % of frames
(6.4 % at u 0; results/bench/report.md of 2026-12-07 09:12); with the eyes judged on the
landmarks (:data:`EYE_LANDMARKS_BELOW`) 4.8-4.9 %, the floor at 3.4 kbit/s and LPIPS 0.220
(bench of 21:30). docs/codec.md, "Rate control"."""
U_MAX = 2.5
TOLERANCE = 0.08
"""Relative rate error at which the search stops (the promise to users is 15%)."""
MAX_TRIALS = 9
SEARCH_TRIALS_MAX = 2 + 2 * MAX_TRIALS
"""Most encodes one :func:`fit_bitrate` runs (the two ends, then both bisections)."""

QUALITY_PRESETS: dict[str, float] = {"low": 0.2, "medium": 0.6, "high": 1.0, "best": 1.4}
"""``--quality`` name -> ladder position ``u``."""


def config_at(u: float, base: CodecConfig | None = None) -> CodecConfig:
    """The encoder settings at ladder position ``u`` (0 = fewest bits) of ``base``'s mode:
    ``animation``, ``hybrid`` and ``bidirectional`` each have their own ladder
    (:func:`animation_config_at`, :func:`hybrid_config_at`); ``auto`` is the one ladder
    over all modes, :data:`LADDER` (what ``--quality`` and ``--kbps`` use by default)."""
    base = base or CodecConfig()
    u = min(max(u, U_MIN), U_MAX)
    if base.mode not in ("auto", "animation"):
        u = max(u, 0.0)  # the aux ladders start at 0
    if base.mode == "auto":
        mode, u, aux = ladder_position(u)
        base = replace(base, mode=mode)
        if not aux:
            return groups_config_at(u, base)
    if base.mode == "animation":
        return animation_config_at(u, base)
    return hybrid_config_at(u, base)


PSNR_CHECK = 4
PSNR_FLOOR = 16.0
"""The animation ladder (motion gate; every motion route, the FOMM one included) renders every
``PSNR_CHECK``-th frame at the encoder and codes a keyframe below ``PSNR_FLOOR`` dB, at most one
a second (``CodecConfig.psnr_check``): on the 12 validation people at u 0 / 0.15 / 0.29 it fires on
3 clips (a camera zoom, stage lights and a head turn, a fast turn), costs 0.5-0.6 kbit/s on
the mean and is neutral there at equal rate (BD-rate on LPIPS -0.9 %), while the worst clip's
LPIPS falls from 0.285 to 0.181 (docs/codec.md, results/content/psnr_check.md). Floors of 16
and 18 dB with a keyframe allowed every 12 frames cost 1.2-2.1 kbit/s and lost at equal rate
(+4 / +12 %)."""


EYE_LANDMARKS_BELOW = 0.3
"""The animation ladder judges the eyes for the content rule on the source's landmarks
(``CodecConfig.eye_landmarks``) below this ``u``, where the motion is quantised at levels 3-7
(24-4 shape coefficients) that keep little or nothing of the eyes' shape. On the 12
validation people at u -0.3 / -0.2 / -0.1 / 0 / 0.29 (``benchmarks/content_refresh.py``,
results/eyes/eye_landmarks): eye state wrong in 4.8 / 4.9 / 4.8 / 3.9 / 4.0 % of frames
instead of 13.1 / 16.9 / 9.4 / 6.4 / 4.8 % (00015: 67-79 % -> 5-10 %, its first keyframe
taken with an eye shut), for 3.43 / 4.22 / 4.95 / 5.43 / 6.92 kbit/s instead of 2.89 / 3.80 /
4.62 / 5.50 / 6.88; at equal rate whole-frame LPIPS +3 / +5 / +2 / -1 % (BD-rate +3.8 %)."""


def animation_config_at(u: float, base: CodecConfig) -> CodecConfig:
    """The animation ladder: keyframe quality, refresh threshold and motion quantiser
    (below 0, the floor: :data:`U_MIN`); below :data:`EYE_LANDMARKS_BELOW` the eyes judged on
    the landmarks."""
    quality = min(95, max(4, round(10 + 20 * u)))
    if u < 0:
        level = 7 if u < -0.2 else 6 if u < -0.1 else 5
    else:
        level = 4 if u < 0.15 else 3 if u < 0.3 else 2 if u < 2.0 else 1
    mode = RefreshMode(base.refresh_mode)
    if mode == RefreshMode.MOTION:
        # Motion distance above which a keyframe is sent. Measured with LPIPS on 8 validation
        # clips (docs/codec.md): for the same rate, frequent refreshes of modest keyframes
        # (quality 20-40) beat rare refreshes of good ones, so both knobs move together.
        threshold = max(0.08, 0.45 - 0.22 * u) if u >= 0 else 0.45 - 0.5 * u
    elif mode == RefreshMode.PSNR:
        threshold = 16.0 + 8.0 * u  # dB below which a keyframe is sent
    else:
        threshold = 0.0 if u < 0.5 else round(300 / u)  # keyframe interval in frames
    checked = {"psnr_check": PSNR_CHECK if u >= -0.1 else 0, "psnr_floor": PSNR_FLOOR}
    return replace(
        base,
        keyframe_quality=quality,
        max_keyframe_quality=min(100, quality + 30),
        quant_level=level,
        refresh_threshold=threshold,
        eye_landmarks=base.eye_landmarks or u < EYE_LANDMARKS_BELOW,
        **(checked if mode == RefreshMode.MOTION else {}),
    )


GROUPS_INTRA = "vvc-ld"
"""The groups' keyframe codec: one low-delay VVC sequence (files; a live sender codes its own
keyframes, ``keyface send --intra``). Against ``hevc-ld`` on the 12 validation people at the
one ladder's group rungs (``benchmarks/encoder_settings.py``, results/hybrid/keyframe_vvc):
BD-rate -3.3 % on LPIPS, -4.3 % on eye LPIPS, -54.5 % on the eye state, -6.5 % on PSNR,
+3.6 % on open-mouth LPIPS; the encoder runs at half the speed or less, slower still on long
files (docs/hybrid.md)."""
GROUPS_CUT = ("eyes", "mouth")
GROUPS_SWITCH = 2.0
"""The groups' switch cost (``CodecConfig.group_switch``, dB): the frames of a group are
assigned to their two keyframes together, a change of keyframe from one frame to the next
paying 2 dB of the choice's score. On the 12 validation people at the one ladder's u 0.6 / 1
/ 1.8 (``benchmarks/content_refresh.py``, results/hybrid/group_switch) at the same rate:
background flicker -5 / -5 / -2 % (spata -12 %, 00015 -9 %), eye state wrong in 1.8 / 1.8 /
1.8 % of frames instead of 2.0 / 1.9 / 1.8 %, whole-frame LPIPS +0.4 % (BD-rate); 4 dB
gained no more flicker and cost more LPIPS (+0.6 %)."""
GROUP_LADDER: tuple[tuple[float, int, float, float], ...] = (
    (0.0, 30, 43.0, 34.0),
    (0.8, 20, 34.0, 31.0),
    (1.3, 10, 33.0, 30.0),
    (1.8, 5, 32.0, 29.0),
)
"""The groups' own ladder, ``(v_start, gop, qp_start, qp_end)`` segments over ``v`` in
``[0, GROUPS_V_MAX]``: bidirectional groups of ``gop`` frames without an aux stream, their
keyframes one low-delay sequence (:data:`GROUPS_INTRA`; each predicted from the ones before)
at a QP that falls linearly from ``qp_start`` to ``qp_end`` along the segment (chosen with
``hevc-ld`` keyframes), and the content rule cutting a group short where neither keyframe
holds a frame's eyes or mouth (:data:`GROUPS_CUT`).
Chosen from the grid of group length x keyframe QP x cut on the 12 validation people
(``benchmarks/group_grid.py``, docs/hybrid.md, "Groups along the rate axis"): with keyframes
that predict each other, long groups (30 frames) lead up to ~20 kbit/s and shorter ones
above, and the cut costs ~12 % more bits for far better mouths and eyes. The same grid with
``vvc-ld`` keyframes (results/hybrid/group_grid_vvc) has the same front, the ladder's rungs on
it. :data:`GROUPS_V_MAX` is where the one ladder's top (``U_MAX``) falls on it
(:data:`LADDER`)."""


def segment_at(
    ladder: tuple[tuple[float, int, float, float], ...], v: float, end: float
) -> tuple[int, int]:
    """``(frames, QP)`` at position ``v`` (clamped to ``[0, end]``) of a ladder of
    ``(v_start, frames, qp_start, qp_end)`` segments (:data:`GROUP_LADDER`,
    :data:`CALL_LADDER`): the segment's frame count, its QP linear from ``qp_start`` at its start
    to ``qp_end`` at the next segment's start (or ``end``), rounded into 0..51."""
    v = min(max(v, 0.0), end)
    starts = [s[0] for s in ladder] + [end]
    k = max(i for i, s in enumerate(ladder) if v >= s[0])
    _, frames, qp_start, qp_end = ladder[k]
    t = (v - starts[k]) / (starts[k + 1] - starts[k])
    return frames, min(51, max(0, round(qp_start + (qp_end - qp_start) * t)))


def groups_config_at(v: float, base: CodecConfig) -> CodecConfig:
    """The groups' settings at position ``v`` of their own ladder (:data:`GROUP_LADDER`); the
    motion is quantised as on the animation ladder at u 0.5 (level 2), the eye check is on, the
    frames of a group switch keyframe at a cost (:data:`GROUPS_SWITCH`)."""
    gop, qp = segment_at(GROUP_LADDER, v, GROUPS_V_MAX)
    quality = qp_to_quality(qp)
    config = animation_config_at(0.5, base)
    return replace(
        config,
        aux_scale=0,
        gop=gop,
        intra_codec=GROUPS_INTRA,
        keyframe_quality=quality,
        max_keyframe_quality=max(config.max_keyframe_quality, quality),
        group_cut=GROUPS_CUT,
        group_switch=GROUPS_SWITCH,
    )


CALL_INTRA = "hevc-ld"
"""The call ladder's keyframe codec: one low-delay HEVC sequence, each keyframe a P picture
predicted from the one before (x265 in process; ``vvc-ld`` is for files only)."""
CALL_LADDER: tuple[tuple[float, int, float, float], ...] = (
    (0.0, 30, 45.0, 41.0),
    (0.2, 15, 40.0, 37.0),
    (0.6, 15, 37.0, 35.0),
    (1.0, 10, 35.0, 33.0),
    (1.4, 8, 32.0, 28.0),
)
"""The call ladder (``keyface send --ladder call``): ``(u_start, interval, qp_start, qp_end)``
segments over ``u`` in ``[0, U_MAX]``: the animation mode with a :data:`CALL_INTRA` keyframe
at least every ``interval`` frames (``CodecConfig.max_interval``), at a QP that falls linearly
from ``qp_start`` to ``qp_end`` along the segment; past keyframes only, no added delay. The
rules still send keyframes in between: the content rule (a mouth or eyes no buffered keyframe
holds), the motion gate and the PSNR check, and each frame is drawn from the buffered keyframe
that suits it (its eyes looking the same way, ``gaze_rule="choose"``). The quality presets
fall on measured points: ``low`` (u 0.2) a keyframe at least every 15 frames at QP 40,
``medium`` every 15 at QP 37, ``high`` every 10 at QP 35, ``best`` every 8 at QP 32. On the 12
validation people (``benchmarks/group_grid.py --low-delay --intra hevc-ld``, configs
``GOP:QP:cut``, results/hybrid/low_delay) they code 10.8 / 14.1 / 20.3 / 30.3 kbit/s at LPIPS
0.109 / 0.092 / 0.078 / 0.063, open-mouth LPIPS 0.076 / 0.064 / 0.054 / 0.049, the eye state
wrong in 7.5 / 4.6 / 4.4 / 4.6 % of frames,
where the animation ladder as live calls coded it (HEVC intra keyframes from the motion gate
and the content rule, results/hybrid/live_presets) had 9.41 / 15.6 / 24.7 / 50.5 kbit/s at
0.147 / 0.110 / 0.089 / 0.069, open mouths 0.102 / 0.084 / 0.072 / 0.055 and 18.5 / 5.9 / 3.6
/ 1.9 %: BD-rate -39 % on LPIPS and -57 % on open-mouth LPIPS; against VVC (random access,
with its delay) -19 % on LPIPS. The first version of this ladder sent no keyframe between its
regular ones (``RefreshMode.FIXED``, configs ``GOP:QP``): 9 % fewer bits at equal LPIPS, but
24 % more at equal open-mouth LPIPS, and looked at (``benchmarks/call_gallery.py``) d10's
wide-open mouth became a flat red oval and s13's fast turn a bent face; with the rules both are
drawn right (results/server/call_gallery_medium.jpg). u 0 (at least every 30 frames at QP 45)
codes 6.6 kbit/s at 0.165; above ``best`` the ladder goes on to QP 28, not measured. Not the
default, for latency: each keyframe stalls the server ~70 ms (the keyframe enhancer), and with
a keyframe every 8-15 frames that is often (docs/server.md, "The call ladder")."""


def call_config_at(u: float, base: CodecConfig | None = None) -> CodecConfig:
    """The call ladder's settings at ``u`` (:data:`CALL_LADDER`; below 0: its u 0): the
    motion quantised as on the animation ladder at u 0.5 (level 2)."""
    interval, qp = segment_at(CALL_LADDER, u, U_MAX)
    return low_delay_config(interval, qp, base)


def low_delay_config(
    interval: int,
    qp: int,
    base: CodecConfig | None = None,
    *,
    intra: str = CALL_INTRA,
    fixed: bool = False,
) -> CodecConfig:
    """The animation mode with an ``intra`` keyframe at ``qp`` at least every ``interval``
    frames (the call ladder's points, :func:`call_config_at`), the motion as on the animation
    ladder at u 0.5, and its rules: the content rule (a keyframe where no reference holds the
    frame's mouth or eyes), the motion gate and the PSNR check still send keyframes between the
    regular ones, and each frame is drawn from the buffered keyframe that suits it.
    ``fixed=True``: a keyframe every ``interval`` frames and no other, every frame drawn from
    the newest (the fixed-interval refresh; measured first, see :data:`CALL_LADDER`)."""
    base = base or CodecConfig()
    quality = qp_to_quality(min(51, max(0, qp)))
    config = animation_config_at(
        0.5, replace(base, mode="animation", refresh_mode=RefreshMode.MOTION)
    )
    config = replace(
        config,
        keyframe_quality=quality,
        max_keyframe_quality=max(config.max_keyframe_quality, quality),
        content_update="keyframe",
        intra_codec=intra,
    )
    if fixed:
        return replace(config, refresh_mode=RefreshMode.FIXED, refresh_threshold=float(interval))
    return replace(config, max_interval=interval)


HYBRID_ANIMATION_SHARE = 0.4
"""The hybrid ladders code their animation at this share of their own ladder position."""


def hybrid_config_at(u: float, base: CodecConfig) -> CodecConfig:
    """The hybrid and bidirectional ladders: the animation at ``HYBRID_ANIMATION_SHARE * u``
    on the animation ladder, and the aux stream from x4 at QP 46 (u = 0) to x4 at QP 36
    (u < 1.25), then x2 from QP 46 to QP 36 (u = 2.5); bidirectional groups of 30 frames
    below u = 1.25, 15 above."""
    config = animation_config_at(HYBRID_ANIMATION_SHARE * u, base)
    if u < 1.25:
        scale, qp = 4, round(46 - 8 * u)
    else:
        scale, qp = 2, round(46 - 8 * (u - 1.25))
    gop = 30 if u < 1.25 else 15
    return replace(config, aux_scale=scale, aux_qp=qp, gop=gop, eye_landmarks=base.eye_landmarks)


LADDER: tuple[tuple[float, str, float, float, bool], ...] = (
    (0.0, "animation", 0.0, 1.0, True),
    (0.3, "bidirectional", 0.0, 1.0, False),
)
"""The one ladder (``mode="auto"``): ``(u_start, mode, mode_u_start, slope, aux)`` segments;
position ``u`` of a segment is ``mode_u_start + slope * (u - u_start)`` on that mode's ladder,
``aux=False``: the bidirectional groups without an aux stream on their own ladder
(:data:`GROUP_LADDER`). The animation ladder from its floor (``U_MIN``, 3.43 kbit/s; 2.89
before the eyes were judged on the landmarks, :data:`EYE_LANDMARKS_BELOW`) up to u = 0.3 (5.43
kbit/s at u = 0, 6.92 at u = 0.29 on the 12 validation people, with the PSNR check), then
the groups from their v = 0 (groups of 30 frames, keyframe QP 43, 7.90 kbit/s)
to their top (groups of 5 frames, QP 29, 63.3 kbit/s) at u = 2.5 (rates:
results/bench/report.md of 2026-12-07 11:33, with ``vvc-ld`` keyframes; BD-rate on LPIPS
against VVC -31.4 %, -31.1 % with the gaze choice (16:39), -29.7 % with the eyes judged on
the landmarks (21:30); -29.8 % with ``hevc-ld`` ones,
-26.9 % before the keyframe sequence's x265 settings and 64-frame motion packets, -19.8 %
without the floor's rungs, whose curve started at 5.6 kbit/s; -20.9 % without the PSNR check;
the ladder before the groups' own -10.5 %).

Why there (``benchmarks/group_grid.py`` on the 12 validation people, docs/hybrid.md, "Groups
along the rate axis"): with ``hevc-ld`` keyframes and the content cut, groups of 30 frames
reach LPIPS 0.132 at 8.6 kbit/s and 0.103 at 10.6, where the animation ladder has 0.161 at
7.4 and 0.140 at 9.6 kbit/s, with better mouths (open-mouth LPIPS 0.085 / 0.065 against
0.087 / 0.078) and eyes (eye state wrong in 2.6 % of frames against 3.8-3.9 %). Below ~8
kbit/s the groups' keyframes get too coarse (QP 46: LPIPS 0.180 at 6.2 kbit/s) and the
animation, with a keyframe every few seconds, leads. Before the keyframe sequence and the cut
the groups' lowest rungs lost mouths and eyes (eye state wrong in 15-19 % of frames at
7.7-9.3 kbit/s with intra keyframes of quality 10-20, results/bench/report.md of 2026-12-06
14:32), so the ladder switched at ~16-18 kbit/s (docs/hybrid.md)."""


GROUPS_V_MAX = LADDER[-1][2] + LADDER[-1][3] * (U_MAX - LADDER[-1][0])
"""The top of the groups' own ladder: where the one ladder's ``U_MAX`` falls on it."""


def ladder_position(u: float) -> tuple[str, float, bool]:
    """``(mode, position on that mode's ladder, with an aux stream)`` of position ``u`` of
    the one ladder."""
    start, mode, mode_start, slope, aux = LADDER[0]
    for segment in LADDER:
        if u >= segment[0]:
            start, mode, mode_start, slope, aux = segment
    return mode, mode_start + slope * (u - start), aux


def config_for_preset(
    name: str, base: CodecConfig | None = None, *, call: bool = False
) -> CodecConfig:
    """The settings of quality preset ``name`` on the ladder of ``base.mode`` (:func:`config_at`),
    or with ``call`` on the call ladder (:func:`call_config_at`)."""
    if name not in QUALITY_PRESETS:
        raise ValueError(f"unknown quality preset {name!r} (choose from {list(QUALITY_PRESETS)})")
    if call:
        return call_config_at(QUALITY_PRESETS[name], base)
    return config_at(QUALITY_PRESETS[name], base)


def fit_bitrate(
    encode: Callable[[CodecConfig], R],
    base: CodecConfig,
    kbps: float,
    *,
    verbose: bool = False,
    on_trial: Callable[[CodecConfig, R], None] | None = None,
    pinned: Mapping[str, Any] | None = None,
) -> R:
    """The result of ``encode`` at the ladder position whose bitrate is closest to ``kbps``.

    Prefers results at or under the target; if even ``U_MIN`` is over it, returns that (the
    floor of this clip) and says so on stderr; ``verbose`` prints every trial, ``on_trial``
    is called after each (at most :data:`SEARCH_TRIALS_MAX`) with its settings and result.
    ``pinned``: :class:`CodecConfig` fields the search keeps as given (the user's options,
    e.g. ``intra_codec`` or ``group_cut``) over the ladder's choice at every position; the
    keyframe quality cannot be pinned, the search moves it.
    """
    pinned = dict(pinned or {})
    if "keyframe_quality" in pinned:
        raise ValueError("the rate search chooses the keyframe quality: it cannot be pinned")

    def config_at_u(u: float) -> CodecConfig:
        return replace(config_at(u, base), **pinned)

    lo, hi = U_MIN, U_MAX
    best: R | None = None

    def trial(config: CodecConfig) -> R:
        nonlocal best
        result = encode(config)
        if on_trial is not None:
            on_trial(config, result)
        if verbose:
            print(
                f"rate control: keyframe quality {config.keyframe_quality}, threshold "
                f"{config.threshold:.3f} -> {result.kbps:.2f} kbit/s",
                file=sys.stderr,
            )
        if best is None or _better(result.kbps, best.kbps, kbps):
            best = result
        return result

    floor = trial(config_at_u(lo))
    if floor.kbps >= kbps:
        print(
            f"keyface: {kbps:g} kbit/s is below this clip's floor; coding at "
            f"{floor.kbps:.2f} kbit/s",
            file=sys.stderr,
        )
        return floor
    if trial(config_at_u(hi)).kbps <= kbps:
        assert best is not None
        return best
    # 1. Bisect the ladder. The rate is a step function of u where the keyframe count changes.
    under = config_at_u(lo)
    for _ in range(MAX_TRIALS):
        mid = (lo + hi) / 2
        rate = trial(config_at_u(mid)).kbps
        if abs(rate - kbps) <= TOLERANCE * kbps:
            break
        if rate > kbps:
            hi = mid
        else:
            lo, under = mid, config_at_u(mid)
    assert best is not None
    if abs(best.kbps - kbps) <= TOLERANCE * kbps:
        return best
    # 2. Between two steps: keep the refresh decisions of the last point under the target and
    #    spend the rest on keyframe quality (bytes grow monotonically with it).
    q_lo, q_hi = under.keyframe_quality, 100
    for _ in range(MAX_TRIALS):
        if q_hi - q_lo <= 1:
            break
        q = (q_lo + q_hi) // 2
        rate = trial(replace(under, keyframe_quality=q, max_keyframe_quality=100)).kbps
        if abs(rate - kbps) <= TOLERANCE * kbps:
            break
        if rate > kbps:
            q_hi = q
        else:
            q_lo = q
    return best


def _better(candidate: float, current: float, target: float) -> bool:
    """Closer to the target, with overshoot beyond the tolerance counted as worse."""

    def cost(rate: float) -> float:
        err = (rate - target) / target
        return abs(err) + (1.0 if err > TOLERANCE else 0.0)

    return cost(candidate) < cost(current)
