"""Seeded packet-loss models for tests and benchmarks of live links (sans-I/O).

Each model answers ``drop(now)`` for one datagram at time ``now`` (seconds, any origin):

* :class:`RandomLoss`: every datagram independently with probability ``rate``;
* :class:`GilbertElliott`: a two-state Markov chain (good: delivered, bad: dropped) with a
  mean loss ``rate`` and a mean burst of ``burst`` consecutive datagrams: bursty loss, as on
  a congested or fading link;
* :class:`Outage`: everything between ``start`` and ``start + duration`` (a link that drops
  out for a while), optionally on top of another model.

``keyface send --loss P [--burst L] [--outage START:SECONDS] --seed S`` builds one with
:func:`loss_model`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Protocol


class LossModel(Protocol):
    def drop(self, now: float) -> bool:
        """Whether the datagram sent at ``now`` is lost."""
        ...


@dataclass
class NoLoss:
    def drop(self, now: float) -> bool:
        return False


@dataclass
class RandomLoss:
    rate: float
    seed: int = 0
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate < 1.0:
            raise ValueError("loss rate must be in [0, 1)")
        self._rng = random.Random(self.seed)

    def drop(self, now: float) -> bool:
        return bool(self.rate) and self._rng.random() < self.rate


@dataclass
class GilbertElliott:
    """Bursty loss: from *good* a datagram is lost (the chain enters *bad*) with probability
    ``p``; in *bad* the next one is lost too with probability ``1 - r``. ``p`` and ``r`` follow
    from the mean loss ``rate = p / (p + r)`` and the mean burst length ``burst = 1 / r``."""

    rate: float
    burst: float
    seed: int = 0
    _rng: random.Random = field(init=False, repr=False)
    _bad: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate < 1.0:
            raise ValueError("loss rate must be in [0, 1)")
        if self.burst < 1.0:
            raise ValueError("the mean burst length must be >= 1 datagram")
        self.r = 1.0 / self.burst
        self.p = self.rate * self.r / (1.0 - self.rate)
        if self.p > 1.0:
            raise ValueError("this loss rate needs longer bursts")
        self._rng = random.Random(self.seed)

    def drop(self, now: float) -> bool:
        u = self._rng.random()
        self._bad = u >= self.r if self._bad else u < self.p
        return self._bad


@dataclass
class Outage:
    """Every datagram from ``start`` for ``duration`` seconds is lost; outside it, ``then``
    decides (default: nothing is lost)."""

    start: float
    duration: float
    then: LossModel = field(default_factory=NoLoss)

    def drop(self, now: float) -> bool:
        inside = self.start <= now < self.start + self.duration
        lost = self.then.drop(now)  # the other model advances either way (reproducible)
        return inside or lost


def loss_model(
    rate: float = 0.0,
    burst: float = 1.0,
    seed: int = 0,
    outage: tuple[float, float] | None = None,
) -> LossModel:
    """Independent loss at ``rate`` (``burst == 1``) or Gilbert-Elliott bursts of mean length
    ``burst``; with ``outage = (start, seconds)`` also everything in that window."""
    base: LossModel
    if rate == 0.0:
        base = NoLoss()
    elif burst == 1.0:
        base = RandomLoss(rate, seed)
    else:
        base = GilbertElliott(rate, burst, seed)
    if outage is not None:
        return Outage(outage[0], outage[1], base)
    return base
