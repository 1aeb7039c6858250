"""Benchmark settings: the defaults, :class:`BenchConfig` and the parsing of its options."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from keyface.clips import Clip
from keyface.eval.bench.records import REPORT_SCHEMA
from keyface.eval.registry import METRIC_REGISTRY

SCHEMA = REPORT_SCHEMA
KEYFACE = "keyface"
FOMM = "fomm"
DEFAULT_FRAMES = 125
DEFAULT_SIZE = 256
DEFAULT_U: tuple[float, ...] = (0.0, 0.3, 0.6, 0.9, 1.2, 1.5)

DEFAULT_METRICS: tuple[str, ...] = ("psnr", "ssim", "ms_ssim", "vmaf", "lpips_alex", "akd")
"""Metrics computed unless ``--metrics`` says otherwise (on a CPU device).

Measured on 256x256 frames, one torch thread, a shared 2-core machine: psnr + ssim + ms_ssim
+ vmaf + lpips_alex + akd together cost about 0.12 s a frame pair, while lpips_vgg and dists
cost about 1.5 s each and aed 0.3 s. The VGG metrics would make a 12-clip run take days on
CPU, so they are only in the default set on an accelerator (:data:`ACCELERATOR_METRICS`)."""

ACCELERATOR_METRICS: tuple[str, ...] = ("lpips_vgg", "dists")

SLOW_METRICS: tuple[str, ...] = tuple(METRIC_REGISTRY.names(speed="slow"))
"""Metrics that ``slow_every`` (``--slow-every N``) measures on every N-th frame only (frames
0, N, 2N, ...); the others always see every frame. A point records the stride of each
metric it measured sparsely under ``sampled``."""
"""Added to :data:`DEFAULT_METRICS` when the metrics run on a non-CPU torch device."""

DEFAULT_TARGETS: dict[str, tuple[float, ...]] = {"lpips_alex": (0.20, 0.15)}
"""Quality targets whose rate the report gives per codec (interpolated on averaged curves)."""


class BenchError(Exception):
    """Bad benchmark input (no clips, unknown codec, bad QP, ...): one line for the user."""


# configuration


@dataclass
class BenchConfig:
    """Everything a run depends on (what ``points.json`` records as its protocol)."""

    clips: list[Clip]
    out: Path = Path("results/bench")
    frames: int = DEFAULT_FRAMES
    size: int = DEFAULT_SIZE
    u_values: tuple[float, ...] = DEFAULT_U
    keyface: bool = True
    generator: str = "warp"
    anchors: tuple[str, ...] = ()
    qps: dict[str, tuple[int, ...]] = field(default_factory=dict)
    presets: dict[str, str] = field(default_factory=dict)
    metrics: tuple[str, ...] = DEFAULT_METRICS
    device: str = "cpu"
    targets: dict[str, tuple[float, ...]] = field(default_factory=lambda: dict(DEFAULT_TARGETS))
    jobs: int = 2
    force: bool = False
    progress: bool = True
    command: str = ""
    bd_method: str = "pchip"
    min_overlap: float = 0.0
    """BD values whose curves share at most this fraction of their range are reported null."""
    slow_every: int = 1
    """Measure :data:`SLOW_METRICS` on every N-th frame only (1: every frame)."""
    modes: tuple[str, ...] = ()
    """Stream modes measured on their own ladders besides keyface's one ladder (``auto``):
    each is the codec ``<keyface codec>@<mode>`` of the results (``--modes``)."""
    fomm_model: Path | None = None
    """``--motion fomm --model FILE``: keyface codes with the FOMM model of that file (its
    keypoints and Jacobians, its generator) on the animation ladder, as the codec
    ``keyface-fomm-<digest>`` (docs/motion.md)."""
    fomm_student: Path | None = None
    """``--student FILE``: a keypoint encoder distilled from the model measures the motion."""
    fomm_digest: str = ""
    """The model file's CRC-32 as 8 hex digits (what streams name it by), then ``-`` and the
    student file's with a student."""

    @property
    def keyface_codec(self) -> str:
        """Codec label of keyface's one ladder in results: ``keyface``,
        ``keyface-<generator>``, or ``keyface-fomm-<digest>`` with a FOMM model."""
        if self.fomm_model is not None:
            return f"{KEYFACE}-{FOMM}-{self.fomm_digest}"
        return KEYFACE if self.generator == "warp" else f"{KEYFACE}-{self.generator}"

    def keyface_codecs(self) -> list[str]:
        """The one ladder's label, then one per extra mode."""
        if not self.keyface:
            return []
        return [self.keyface_codec] + [f"{self.keyface_codec}@{m}" for m in self.modes]

    def is_keyface(self, codec: str) -> bool:
        return codec in self.keyface_codecs()

    def codecs(self) -> list[str]:
        return self.keyface_codecs() + list(self.anchors)

    def params(self, codec: str) -> list[float] | list[int]:
        if self.is_keyface(codec):
            return [float(u) for u in self.u_values]
        return [int(q) for q in self.qps[codec]]


def keyface_mode(codec: str) -> str:
    """The stream mode a keyface codec label measures (``auto``: the one ladder; a FOMM
    model's codec: the animation ladder, whose keypoints are all it codes)."""
    if "@" in codec:
        return codec.split("@", 1)[1]
    return "animation" if codec.startswith(f"{KEYFACE}-{FOMM}-") else "auto"


def default_metrics(device: str = "cpu") -> tuple[str, ...]:
    if str(device).startswith("cpu"):
        return DEFAULT_METRICS
    return DEFAULT_METRICS[:-1] + ACCELERATOR_METRICS + DEFAULT_METRICS[-1:]


def parse_metrics(text: str | None, device: str = "cpu") -> tuple[str, ...]:
    """``--metrics`` value: comma-separated names; ``default`` stands for the default set."""
    from keyface.eval.registry import MetricsInputError, resolve_metrics

    if text is None or not text.strip():
        return default_metrics(device)
    names: list[str] = []
    for raw in text.split(","):
        if raw.strip().lower() == "default":
            names.extend(default_metrics(device))
        elif raw.strip():
            names.append(raw)
    try:
        return tuple(resolve_metrics(names))
    except MetricsInputError as exc:
        raise BenchError(str(exc)) from None


def check_metric_weights(metrics: Iterable[str]) -> None:
    """Fail early (one line) when a learned metric's weights are not installed."""
    from keyface.eval import weights

    try:
        for m in metrics:
            weights.check_weights(METRIC_REGISTRY.entry(m).weights)
    except weights.WeightsNotFoundError as exc:
        raise BenchError(f"metric {m}: {exc}") from None


def resolve_anchors(text: str | None) -> tuple[str, ...]:
    """``--anchors`` value: names, ``all`` (every available anchor) or ``none``."""
    from keyface.eval.anchors import ANCHORS, anchor_available

    if text is None or text.strip().lower() == "all":
        return tuple(a for a in ANCHORS if anchor_available(a))
    if text.strip().lower() == "none":
        return ()
    out: list[str] = []
    for raw in text.split(","):
        name = raw.strip().lower()
        if not name:
            continue
        if name not in ANCHORS:
            raise BenchError(f"unknown anchor {raw.strip()!r}; choose from {', '.join(ANCHORS)}")
        if not anchor_available(name):
            raise BenchError(f"anchor {name} is not available here (encoder or decoder missing)")
        if name not in out:
            out.append(name)
    return tuple(out)


def parse_qps(items: Sequence[str] | None, anchors: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """QPs per anchor: :data:`keyface.eval.anchors.DEFAULT_QPS`, overridden by ``codec=a,b,c``
    items (several may be given, or one with ``;`` between codecs)."""
    from keyface.eval.anchors import ANCHORS, DEFAULT_QPS, QP_RANGES

    qps = {a: tuple(DEFAULT_QPS[a]) for a in anchors}
    for item in items or ():
        for part in item.split(";"):
            if not part.strip():
                continue
            codec, sep, values = part.partition("=")
            codec = codec.strip().lower()
            if not sep:
                raise BenchError(f"--qps {part!r}: expected CODEC=QP,QP,... (e.g. x264=35,40)")
            if codec not in ANCHORS:
                raise BenchError(
                    f"--qps: unknown anchor {codec!r}; choose from {', '.join(ANCHORS)}"
                )
            try:
                parsed = tuple(int(v) for v in values.split(",") if v.strip())
            except ValueError:
                raise BenchError(f"--qps {part!r}: QPs must be integers") from None
            lo, hi = QP_RANGES[codec]
            bad = [q for q in parsed if not lo <= q <= hi]
            if bad or not parsed:
                raise BenchError(f"--qps {codec}: QPs must be integers in [{lo}, {hi}]")
            if codec in qps:
                qps[codec] = tuple(sorted(set(parsed)))
    return qps


def parse_u(text: str | None) -> tuple[float, ...]:
    from keyface.codec.ratecontrol import U_MAX, U_MIN

    if text is None:
        return DEFAULT_U
    try:
        values = tuple(sorted({round(float(v), 4) for v in text.split(",") if v.strip()}))
    except ValueError:
        raise BenchError(f"--u {text!r}: expected numbers like 0,0.5,1") from None
    if not values or any(not U_MIN <= v <= U_MAX for v in values):
        raise BenchError(f"--u values must be in [{U_MIN}, {U_MAX}]")
    return values


def parse_targets(
    items: Sequence[str] | None, metrics: Sequence[str]
) -> dict[str, tuple[float, ...]]:
    """``METRIC=v1,v2`` items (default :data:`DEFAULT_TARGETS`); only computed metrics kept."""
    from keyface.eval.registry import MetricsInputError, resolve_metrics

    if not items:
        return {m: t for m, t in DEFAULT_TARGETS.items() if m in metrics}
    out: dict[str, tuple[float, ...]] = {}
    for item in items:
        name, sep, values = item.partition("=")
        if not sep:
            raise BenchError(f"--target {item!r}: expected METRIC=VALUE,VALUE")
        try:
            (metric,) = resolve_metrics([name])
            out[metric] = tuple(float(v) for v in values.split(",") if v.strip())
        except (MetricsInputError, ValueError) as exc:
            raise BenchError(f"--target {item!r}: {exc}") from None
        if metric not in metrics:
            raise BenchError(f"--target {metric}: that metric is not computed (see --metrics)")
    return out
