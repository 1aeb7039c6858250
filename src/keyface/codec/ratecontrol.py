"""Rate control: quality presets, and ``--kbps`` by bisection over one quality knob.

Every operating point of the encoder is placed on one monotone ladder ``u`` in
``[0, U_MAX]``: as ``u`` grows the keyframes get better, keyframe refreshes come sooner, and the
motion is quantised more finely. :func:`fit_bitrate` bisects ``u`` with real encodes until
the stream lands within ``TOLERANCE`` of the target. It takes the encode step as a callable
(``CodecConfig -> result with a kbps``), so it knows nothing of files or analysis:
``keyface.pipeline.encode_at_kbps`` passes one that re-runs only the encoder over an analysed
clip (landmarks measured once).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol, TypeVar

from keyface.bitstream import RefreshMode
from keyface.codec.config import CodecConfig
from keyface.intra._base import qp_to_quality, quality_to_qp


class HasRate(Protocol):
    @property
    def kbps(self) -> float: ...


R = TypeVar("R", bound=HasRate)

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
    u = min(max(u, 0.0), U_MAX)
    if base.mode == "auto":
        mode, u, aux = ladder_position(u)
        base = replace(base, mode=mode)
        if not aux:
            return groups_config_at(u, base)
    if base.mode == "animation":
        return animation_config_at(u, base)
    return hybrid_config_at(u, base)


def animation_config_at(u: float, base: CodecConfig) -> CodecConfig:
    """The animation ladder: keyframe quality, refresh threshold and motion quantiser."""
    quality = min(95, round(10 + 20 * u))
    level = 4 if u < 0.15 else 3 if u < 0.3 else 2 if u < 2.0 else 1
    mode = RefreshMode(base.refresh_mode)
    if mode == RefreshMode.MOTION:
        # Motion distance above which a keyframe is sent. Measured with LPIPS on 8 validation
        # clips (docs/codec.md): for the same rate, frequent refreshes of modest keyframes
        # (quality 20-40) beat rare refreshes of good ones, so both knobs move together.
        threshold = max(0.08, 0.45 - 0.22 * u)
    elif mode == RefreshMode.PSNR:
        threshold = 16.0 + 8.0 * u  # dB below which a keyframe is sent
    else:
        threshold = 0.0 if u < 0.5 else round(300 / u)  # keyframe interval in frames
    return replace(
        base,
        keyframe_quality=quality,
        max_keyframe_quality=min(100, quality + 30),
        quant_level=level,
        refresh_threshold=threshold,
    )


GROUPS_U_MAX = 4.0
"""How far the one ladder takes the bidirectional groups without an aux stream along their own
ladder (:func:`hybrid_config_at` beyond ``U_MAX``: GOP 15, keyframe quality 10 + 8 u, so 42 at
the top). ``--mode bidirectional`` alone stops at ``U_MAX`` (quality 30)."""

GROUPS_INTRA = "hevc-ld"
GROUPS_QP_OFFSET = -6
"""The one ladder's group rungs code their keyframes as one low-delay HEVC sequence
(``hevc-ld``: each keyframe predicted from the ones before) at the QP their own ladder gives
VVC intra keyframes plus this offset (better keyframes for about the same bits). Measured on
the 12 validation people (``benchmarks/keyframe_sequence.py``, docs/hybrid.md, "Keyframes as
one sequence")."""


def groups_config_at(u: float, base: CodecConfig) -> CodecConfig:
    """The one ladder's group segment at position ``u`` of the groups' own ladder: the
    bidirectional groups without an aux stream (:func:`hybrid_config_at` up to
    :data:`GROUPS_U_MAX`), keyframes as a :data:`GROUPS_INTRA` sequence."""
    config = replace(hybrid_config_at(min(u, GROUPS_U_MAX), base), aux_scale=0)
    qp = min(51, max(0, quality_to_qp(config.keyframe_quality) + GROUPS_QP_OFFSET))
    quality = qp_to_quality(qp)
    return replace(
        config,
        intra_codec=GROUPS_INTRA,
        keyframe_quality=quality,
        max_keyframe_quality=max(config.max_keyframe_quality, quality),
    )


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
    return replace(config, aux_scale=scale, aux_qp=qp, gop=gop)


LADDER: tuple[tuple[float, str, float, float, bool], ...] = (
    (0.0, "animation", 0.0, 1.0, True),
    (0.8, "bidirectional", 1.25, 1.25 / 1.2, False),
    (2.0, "bidirectional", 2.5, 3.0, False),
)
"""The one ladder (``mode="auto"``): ``(u_start, mode, mode_u_start, slope, aux)`` segments;
position ``u`` of a segment is ``mode_u_start + slope * (u - u_start)`` on that mode's ladder,
``aux=False`` without an aux stream. The animation ladder up to u = 0.8 (11.4 kbit/s at
u = 0.75), then the bidirectional groups without an aux stream from their u = 1.25 (GOP 15,
16.5 kbit/s) to 2.5 at u = 2 (27.5 kbit/s), then on to their u = 4 (53.1 kbit/s) at u = 2.5,
their keyframes one ``hevc-ld`` sequence (:func:`groups_config_at`; rates: the 12 validation
people, results/bench/report.md of 2026-12-06 21:35). The animation's curve is flat from
u = 0.6 to 0.75 (LPIPS 0.140 -> 0.139 for 9.6 -> 11.4 kbit/s), where the groups with
``hevc-ld`` keyframes already lead it (LPIPS 0.075 at 16.5 kbit/s), so they start at
u = 0.8 (before the keyframe sequence they started at u = 1, ~20 kbit/s, with VVC intra
keyframes).

Chosen on the 12 validation people (docs/hybrid.md, "The one ladder"): on LPIPS alone the
groups beat the animation ladder from ~8 kbit/s (and VVC from 7.7 to ~15 kbit/s,
results/bench/report.md of 14:32), but their lowest rungs (keyframes of
quality 10-20 every 29 frames) lose the mouths and eyes the animation ladder keeps: at
7.7-9.3 kbit/s open-mouth LPIPS 0.105-0.120 and eye state wrong in 15-19 % of frames, against
0.078 and 6 % for the animation at 9 kbit/s (results/bench/report.md of 2026-12-06 14:32 and
of 08:27). From ~18 kbit/s the groups' keyframes are good enough (eye state 4.5 %,
open-mouth LPIPS 0.066 at 25 kbit/s) and they lead the animation ladder on LPIPS and DISTS
(VVC is ahead of both there: README, "Where it stands"). The groups with the content cut at
11-16 kbit/s were tried and benched, and not adopted (docs/hybrid.md). Above ~25 kbit/s
better keyframes bought more than shorter groups (~40 kbit/s: LPIPS 0.0588 with GOP 15 and
quality 38, 0.0647 with GOP 10 and quality 30; results/hybrid/ladder_top), so the top keeps
GOP 15 and raises the keyframe quality; VVC is ahead there (0.0462 at 39.5 kbit/s). Those
figures are for VVC intra keyframes; with the keyframe sequence every group rung is better at
about the same rate (docs/hybrid.md, "Keyframes as one sequence")."""


def ladder_position(u: float) -> tuple[str, float, bool]:
    """``(mode, position on that mode's ladder, with an aux stream)`` of position ``u`` of
    the one ladder."""
    start, mode, mode_start, slope, aux = LADDER[0]
    for segment in LADDER:
        if u >= segment[0]:
            start, mode, mode_start, slope, aux = segment
    return mode, mode_start + slope * (u - start), aux


def config_for_preset(name: str, base: CodecConfig | None = None) -> CodecConfig:
    if name not in QUALITY_PRESETS:
        raise ValueError(f"unknown quality preset {name!r} (choose from {list(QUALITY_PRESETS)})")
    return config_at(QUALITY_PRESETS[name], base)


def fit_bitrate(
    encode: Callable[[CodecConfig], R],
    base: CodecConfig,
    kbps: float,
    *,
    verbose: bool = False,
    on_trial: Callable[[CodecConfig, R], None] | None = None,
) -> R:
    """The result of ``encode`` at the ladder position whose bitrate is closest to ``kbps``.

    Prefers results at or under the target; if even ``u = 0`` is over it, returns that (the
    floor of this clip) and says so on stderr; ``verbose`` prints every trial, ``on_trial``
    is called after each (at most :data:`SEARCH_TRIALS_MAX`) with its settings and result.
    """
    lo, hi = 0.0, U_MAX
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

    floor = trial(config_at(lo, base))
    if floor.kbps >= kbps:
        print(
            f"keyface: {kbps:g} kbit/s is below this clip's floor; coding at "
            f"{floor.kbps:.2f} kbit/s",
            file=sys.stderr,
        )
        return floor
    if trial(config_at(hi, base)).kbps <= kbps:
        assert best is not None
        return best
    # 1. Bisect the ladder. The rate is a step function of u where the keyframe count changes.
    under = config_at(lo, base)
    for _ in range(MAX_TRIALS):
        mid = (lo + hi) / 2
        rate = trial(config_at(mid, base)).kbps
        if abs(rate - kbps) <= TOLERANCE * kbps:
            break
        if rate > kbps:
            hi = mid
        else:
            lo, under = mid, config_at(mid, base)
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
