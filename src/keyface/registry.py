"""One registry shape for everything keyface looks up by name: intra codecs, motion
representations, renderers, conventional anchors and metrics.

A :class:`Registry` maps a name (what streams, the CLI and reports store) to an :class:`Entry`:
a builder called on first use (so that registering costs no import: torch, onnxruntime and the
model files load only when an entry that needs them is asked for), a one-line summary, and the
metadata the bench and the CLI need (``speed``: ``"fast"`` or ``"slow"``; ``weights``: the
weight packages an entry needs). Built objects are cached per registry unless the entry says
otherwise. Names are explicit strings, never derived from registration order, so a stream that
stores a name keeps meaning the same thing.

    CODECS = Registry[IntraCodec]("intra codec", error=IntraCodecError)

    @CODECS.register("hevc", summary="HEVC intra (x265)")
    def _hevc() -> IntraCodec:
        from keyface.intra.hevc import HevcIntra
        return HevcIntra()

    CODECS.get("hevc")          # built once, then cached
    CODECS.names()              # ["hevc", ...] in registration order
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

T = TypeVar("T")
Speed = Literal["fast", "slow"]


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered name."""

    name: str
    build: Callable[[], T]
    summary: str = ""
    speed: Speed = "fast"
    """``"slow"`` entries are left out of defaults that must stay interactive (the bench
    samples them every few frames, ``keyface eval`` runs them on request)."""
    weights: tuple[str, ...] = ()
    """Names of the weight packages the entry needs (docs/metrics.md)."""
    cached: bool = True
    """Build once per process and share (``False``: a new object per :meth:`Registry.get`)."""
    extra: dict[str, object] = field(default_factory=dict)
    """Anything else a registry's users need to know about the entry."""


class UnknownNameError(KeyError):
    """A name no registry entry has (each registry may raise its own subclass-free error type
    instead, see :class:`Registry`)."""

    def __str__(self) -> str:  # KeyError quotes its argument; this is a sentence
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """Name -> lazily built object, with metadata."""

    def __init__(self, kind: str, *, error: Callable[[str], Exception] = UnknownNameError) -> None:
        self.kind = kind
        self._error = error
        self._entries: dict[str, Entry[T]] = {}
        self._built: dict[str, T] = {}
        self._lock = threading.RLock()  # a builder may look up another entry

    # -- registration -------------------------------------------------------------------------
    def add(self, entry: Entry[T]) -> Entry[T]:
        if entry.name in self._entries:
            raise ValueError(f"{self.kind} {entry.name!r} is registered twice")
        self._entries[entry.name] = entry
        return entry

    def register(
        self,
        name: str,
        *,
        summary: str = "",
        speed: Speed = "fast",
        weights: tuple[str, ...] = (),
        cached: bool = True,
        **extra: object,
    ) -> Callable[[Callable[[], T]], Callable[[], T]]:
        """Decorator: register a builder function under ``name``."""

        def decorate(build: Callable[[], T]) -> Callable[[], T]:
            self.add(Entry(name, build, summary, speed, weights, cached, dict(extra)))
            return build

        return decorate

    def unregister(self, name: str) -> None:
        """Remove ``name`` and its built object (a plug-in unloading, a test cleaning up)."""
        with self._lock:
            self._entries.pop(name, None)
            self._built.pop(name, None)

    # -- look-up ------------------------------------------------------------------------------
    def entry(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            raise self._error(
                f"unknown {self.kind} {name!r} (available: {', '.join(self._entries)})"
            ) from None

    def get(self, name: str) -> T:
        """The object registered as ``name``, built on first use."""
        entry = self.entry(name)
        if not entry.cached:
            return entry.build()
        with self._lock:
            if name not in self._built:
                self._built[name] = entry.build()
            return self._built[name]

    def names(self, *, speed: Speed | None = None) -> list[str]:
        """Registered names in registration order (only those of ``speed`` if given)."""
        return [n for n, e in self._entries.items() if speed is None or e.speed == speed]

    def entries(self) -> list[Entry[T]]:
        return list(self._entries.values())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._entries)})"
