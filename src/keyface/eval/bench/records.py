"""The typed records a bench run passes around: what a worker is asked to do
(:class:`PrepareTask`, :class:`PointTask`) and what a point is (:class:`PointRecord`, one entry of
``points.json`` and one cached ``OUT/cache/<clip>/<codec>_<param>.json``). JSON stays at the
edges: :meth:`PointRecord.to_json` and :meth:`PointRecord.from_json`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PrepareTask:
    """Crop a clip to the bench's reference (``crop.y4m``) and analyse it, once per clip."""

    clip: str
    path: str
    """The source video."""
    dir: str
    """The clip's cache folder."""
    frames: int
    size: int
    force: bool = False


@dataclass(frozen=True)
class PointTask:
    """Code one clip with one codec at one parameter, decode it and measure it."""

    clip: str
    person: str
    codec: str
    param: float | int
    is_keyface: bool
    generator: str
    preset: str | None
    metrics: tuple[str, ...]
    device: str
    dir: str
    """The clip's cache folder (``crop.y4m``, ``analysis.npz``)."""
    path: str
    """Where the point's record is cached."""
    meta: dict[str, Any]
    """The prepared clip's ``meta.json``."""
    key: dict[str, Any]
    """What a cached record must match to be reused (``cache._point_key``)."""
    previous: dict[str, Any] | None = None
    """A cached record of the same key that lacks some metrics: its values are kept."""
    slow_every: int = 1
    fomm_model: str | None = None
    """A FOMM model file that keyface codes and renders with (``BenchConfig.fomm_model``)."""
    fomm_student: str | None = None
    """A student file that measures the keypoints (``BenchConfig.fomm_student``)."""


@dataclass
class PointRecord:
    """One measured point."""

    key: dict[str, Any]
    clip: str
    person: str
    codec: str
    param: float | int
    bytes: int
    kbps: float
    frames: int
    metrics: dict[str, float | None]
    notes: dict[str, Any]
    info: dict[str, Any]
    seconds: dict[str, Any]
    created: str
    sampled: dict[str, int] = field(default_factory=dict)
    """Metrics measured on every N-th frame only: name -> N."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "key": self.key,
            "clip": self.clip,
            "person": self.person,
            "codec": self.codec,
            "param": self.param,
            "bytes": self.bytes,
            "kbps": self.kbps,
            "frames": self.frames,
            "metrics": self.metrics,
            "notes": self.notes,
            "info": self.info,
            "seconds": self.seconds,
            "created": self.created,
        }
        if self.sampled:
            out["sampled"] = self.sampled
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PointRecord:
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**fields)


REPORT_SCHEMA = "keyface-bench/1"
"""The ``schema`` tag of ``points.json``; bumped when a field changes meaning."""


class ReportSchemaError(ValueError):
    """A ``points.json`` of another schema, or missing one of its parts."""


@dataclass
class BenchReport:
    """The ``points.json`` document of a run (docs/bench.md, "Output"): what was measured and
    how (``protocol``), the run's counters (``run``), every point, the averaged curves, the
    BD-rate table, the rates at quality targets, timing, and the failures."""

    protocol: dict[str, Any]
    run: dict[str, Any]
    points: list[dict[str, Any]]
    averages: list[dict[str, Any]]
    bd: list[dict[str, Any]]
    targets: list[dict[str, Any]]
    timing: dict[str, Any]
    failures: list[dict[str, Any]]
    schema: str = REPORT_SCHEMA

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "protocol": self.protocol,
            "run": self.run,
            "points": self.points,
            "averages": self.averages,
            "bd": self.bd,
            "targets": self.targets,
            "timing": self.timing,
            "failures": self.failures,
        }

    @classmethod
    def from_json(cls, data: Any) -> BenchReport:
        """A report read back; :class:`ReportSchemaError` for another schema or a missing part."""
        if not isinstance(data, dict) or data.get("schema") != REPORT_SCHEMA:
            found = data.get("schema") if isinstance(data, dict) else type(data).__name__
            raise ReportSchemaError(f"not a {REPORT_SCHEMA} document (schema: {found!r})")
        missing = [k for k in cls.__dataclass_fields__ if k not in data]
        if missing:
            raise ReportSchemaError(f"{REPORT_SCHEMA} document without {', '.join(missing)}")
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})
