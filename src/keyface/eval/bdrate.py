"""Bjøntegaard deltas between two rate-distortion curves (BD-rate, BD-quality).

Thin, defensive layer over the ``bjontegaard`` package (PCHIP interpolation by default, as in
the JVET common test conditions since 2022):

* every metric is first put in a *higher is better* form (:func:`oriented`). Following JVET
  GFVC practice, bounded "lower is better" metrics use ``1 - x`` (``1 - LPIPS``, ``1 - DISTS``,
  ``1 - L1``); unbounded ones (AKD in pixels, AED) are negated, ``-x``. Both maps are affine
  with slope -1, so BD-rate does not depend on which one is used and BD-quality is the plain
  difference of the metric with its sign flipped;
* each curve is reduced to its Pareto front (points that another point of the same curve beats
  on both rate and quality are dropped), so the interpolation sees strictly monotone data;
* curves that do not overlap, or that have fewer than two usable points, give ``None`` with a
  reason instead of an exception or a warning.

``bd_rate`` is the average rate difference of the test against the anchor at equal quality, in
percent (negative: the test needs fewer bits). ``bd_quality`` is the average quality difference
at equal rate, in the metric's own unit, signed so that positive means the test is better (for
LPIPS it is how much lower the test's LPIPS is).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_METHOD = "pchip"

INVERSIONS: dict[str, str] = {
    "lpips_alex": "1-x",
    "lpips_vgg": "1-x",
    "dists": "1-x",
    "l1": "1-x",
    "akd": "-x",
    "aed": "-x",
}
"""How each "lower is better" metric is turned into a "higher is better" one. A lower-is-better
metric not listed here is negated."""


def direction(metric: str | None) -> str:
    """``"higher"`` or ``"lower"`` (is better) for a metric name; unknown names: higher."""
    if metric is None:
        return "higher"
    if metric in INVERSIONS:
        return "lower"
    try:
        from keyface.eval.registry import METRICS
    except ImportError:  # pragma: no cover - metrics module always ships with keyface
        return "higher"
    spec = METRICS.get(metric)
    return spec.direction if spec is not None else "higher"


def inversion(metric: str | None) -> str:
    """``"x"`` (kept), ``"1-x"`` or ``"-x"``: the map :func:`oriented` applies to ``metric``."""
    if direction(metric) == "higher":
        return "x"
    return INVERSIONS.get(metric or "", "-x")


def oriented(metric: str | None, values: Sequence[float] | np.ndarray) -> np.ndarray:
    """``values`` of ``metric`` in a higher-is-better form (see :data:`INVERSIONS`)."""
    v = np.asarray(values, dtype=np.float64)
    kind = inversion(metric)
    if kind == "1-x":
        return 1.0 - v
    if kind == "-x":
        return -v
    return v


@dataclass(frozen=True)
class BDResult:
    """A Bjøntegaard delta, or ``None`` with the reason it could not be computed.

    ``overlap`` is the shared part of the two curves' ranges along the integration axis
    (quality for BD-rate, log-rate for BD-quality) as a fraction of their union.
    """

    value: float | None
    reason: str | None = None
    overlap: float | None = None

    def to_json(self) -> dict[str, float | str | None]:
        return {
            "value": None if self.value is None else round(float(self.value), 6),
            "reason": self.reason,
            "overlap": None if self.overlap is None else round(float(self.overlap), 4),
        }


def rd_front(
    rates: Sequence[float] | np.ndarray, quality: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The Pareto front of an RD curve (``quality`` higher is better), sorted by rate.

    Points with a non-finite value or a rate <= 0 are dropped, and so is every point that
    another point matches or beats on both axes. Rate and quality of what is left both rise
    strictly.
    """
    r = np.asarray(rates, dtype=np.float64)
    q = np.asarray(quality, dtype=np.float64)
    if r.shape != q.shape:
        raise ValueError(f"rates and quality differ in length ({r.size} vs {q.size})")
    keep = np.isfinite(r) & np.isfinite(q) & (r > 0)
    r, q = r[keep], q[keep]
    order = np.lexsort((-q, r))  # by rate, then best quality first among equal rates
    out_r: list[float] = []
    out_q: list[float] = []
    for i in order:
        if out_q and q[i] <= out_q[-1]:
            continue
        if out_r and r[i] == out_r[-1]:
            continue  # same rate, lower quality (sorted best first)
        out_r.append(float(r[i]))
        out_q.append(float(q[i]))
    return np.array(out_r), np.array(out_q)


def _overlap(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    lo, hi = max(a.min(), b.min()), min(a.max(), b.max())
    union = max(a.max(), b.max()) - min(a.min(), b.min())
    frac = max(hi - lo, 0.0) / union if union > 0 else 0.0
    return float(lo), float(hi), float(frac)


def _fmt_range(values: np.ndarray, log: bool = False) -> str:
    lo, hi = (10 ** values.min(), 10 ** values.max()) if log else (values.min(), values.max())
    return f"{lo:.4g}..{hi:.4g}"


def _prepare(
    rate_anchor: Sequence[float] | np.ndarray,
    quality_anchor: Sequence[float] | np.ndarray,
    rate_test: Sequence[float] | np.ndarray,
    quality_test: Sequence[float] | np.ndarray,
    metric: str | None,
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None, str | None]:
    ra, qa = rd_front(rate_anchor, oriented(metric, quality_anchor))
    rt, qt = rd_front(rate_test, oriented(metric, quality_test))
    for name, r in (("anchor", ra), ("test", rt)):
        if r.size < 2:
            return (
                None,
                f"{name} curve has {r.size} usable RD point(s) after removing dominated ones",
            )
    return (ra, qa, rt, qt), None


def _call(fn_name: str, *args: np.ndarray, method: str) -> float:
    import bjontegaard

    fn = getattr(bjontegaard, fn_name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = fn(*args, method, require_matching_points=False, min_overlap=0.0)
    return float(value)


def bd_rate(
    rate_anchor: Sequence[float] | np.ndarray,
    quality_anchor: Sequence[float] | np.ndarray,
    rate_test: Sequence[float] | np.ndarray,
    quality_test: Sequence[float] | np.ndarray,
    metric: str | None = None,
    *,
    method: str = DEFAULT_METHOD,
    min_overlap: float = 0.0,
) -> BDResult:
    """Average rate difference (%) of the test curve against the anchor at equal quality.

    Negative means the test needs fewer bits. ``metric`` (a :data:`keyface.eval.METRICS` name)
    decides the orientation of the quality values; ``None``: higher is better. Integrates over
    the quality range both curves cover; ``None`` (with a reason) when that range is empty or
    below ``min_overlap`` of their union, or a curve has fewer than two usable points.
    """
    curves, reason = _prepare(rate_anchor, quality_anchor, rate_test, quality_test, metric)
    if curves is None:
        return BDResult(None, reason)
    ra, qa, rt, qt = curves
    lo, hi, frac = _overlap(qa, qt)
    if hi <= lo or frac <= min_overlap:
        what = "no" if hi <= lo else f"too little ({100 * frac:.0f}%)"
        q_a, q_t = oriented(metric, qa), oriented(metric, qt)  # back to the metric's own values
        return BDResult(
            None,
            f"{what} quality overlap: anchor {_fmt_range(q_a)}, test {_fmt_range(q_t)}",
            frac,
        )
    return _interpolate("bd_rate", ra, qa, rt, qt, method, frac)


def _interpolate(
    name: str,
    ra: np.ndarray,
    qa: np.ndarray,
    rt: np.ndarray,
    qt: np.ndarray,
    method: str,
    frac: float,
) -> BDResult:
    """Run the ``bjontegaard`` function ``name``; failures become a null with a reason."""
    try:
        value = _call(name, ra, qa, rt, qt, method=method)
    except (ValueError, AssertionError, ZeroDivisionError) as exc:
        return BDResult(None, f"interpolation failed: {exc}", frac)
    if not math.isfinite(value):
        return BDResult(None, "interpolation gave a non-finite value", frac)
    return BDResult(value, None, frac)


def bd_quality(
    rate_anchor: Sequence[float] | np.ndarray,
    quality_anchor: Sequence[float] | np.ndarray,
    rate_test: Sequence[float] | np.ndarray,
    quality_test: Sequence[float] | np.ndarray,
    metric: str | None = None,
    *,
    method: str = DEFAULT_METHOD,
    min_overlap: float = 0.0,
) -> BDResult:
    """Average quality difference of the test curve against the anchor at equal rate (BD-PSNR
    generalised), in the metric's unit, positive when the test is better. Integrates over the
    shared log-rate range; ``None`` with a reason when there is none (see :func:`bd_rate`)."""
    curves, reason = _prepare(rate_anchor, quality_anchor, rate_test, quality_test, metric)
    if curves is None:
        return BDResult(None, reason)
    ra, qa, rt, qt = curves
    lo, hi, frac = _overlap(np.log10(ra), np.log10(rt))
    if hi <= lo or frac <= min_overlap:
        what = "no" if hi <= lo else f"too little ({100 * frac:.0f}%)"
        return BDResult(
            None,
            f"{what} rate overlap: anchor {_fmt_range(ra)} kbit/s, test {_fmt_range(rt)} kbit/s",
            frac,
        )
    return _interpolate("bd_psnr", ra, qa, rt, qt, method, frac)


@dataclass(frozen=True)
class RateAtQuality:
    """The rate a curve needs to reach a quality target.

    ``status``: ``"interpolated"`` (between two points, linear in log-rate), ``"at_lowest"``
    (already reached at the lowest rate measured, ``kbps`` is that rate, an upper bound) or
    ``"not_reached"`` (``kbps`` is ``None``; ``best`` is the best quality the curve reached).
    """

    kbps: float | None
    status: str
    best: float | None = None

    def label(self) -> str:
        if self.status == "not_reached":
            best = "" if self.best is None else f" (best {self.best:.3g})"
            return "not reached" + best
        assert self.kbps is not None
        return f"≤ {self.kbps:.3g}" if self.status == "at_lowest" else f"{self.kbps:.3g}"

    def to_json(self) -> dict[str, float | str | None]:
        return {
            "kbps": None if self.kbps is None else round(self.kbps, 4),
            "status": self.status,
            "best": None if self.best is None else round(self.best, 6),
        }


def rate_at_quality(
    rates: Sequence[float] | np.ndarray,
    quality: Sequence[float] | np.ndarray,
    target: float,
    metric: str | None = None,
) -> RateAtQuality:
    """kbit/s at which the RD curve ``(rates, quality)`` first reaches ``target`` (a value of
    ``metric``, e.g. LPIPS 0.20), interpolated linearly in log-rate on its Pareto front."""
    r, q = rd_front(rates, oriented(metric, quality))
    goal = float(oriented(metric, [target])[0])
    if r.size == 0:
        return RateAtQuality(None, "not_reached")
    if q[0] >= goal:
        return RateAtQuality(float(r[0]), "at_lowest")
    if q[-1] < goal:
        best = float(oriented(metric, [q[-1]])[0])
        return RateAtQuality(None, "not_reached", best)
    k = int(np.searchsorted(q, goal))  # q[k-1] < goal <= q[k]
    t = (goal - q[k - 1]) / (q[k] - q[k - 1])
    log_r = math.log10(r[k - 1]) + t * (math.log10(r[k]) - math.log10(r[k - 1]))
    return RateAtQuality(10**log_r, "interpolated")
