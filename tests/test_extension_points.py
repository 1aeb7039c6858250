"""The codec's public extension points (what a new motion representation or coding mode uses):
the reset / IDR policy in ``CodecConfig`` reported in ``FrameDecision``, a motion
representation added with one registry line, and layers that only import downward."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from dataclasses import replace
from fractions import Fraction

import numpy as np
import pytest

from keyface.bitstream import MotionPacket, RefreshMode
from keyface.codec.config import CodecConfig
from keyface.codec.decoder import DecoderCore
from keyface.codec.encoder import EncoderCore
from keyface.motion import REPRESENTATIONS, MotionStatistics, QuantLevel, get_representation
from keyface.motion.base import MotionRepresentation
from keyface.registry import Entry, Registry
from keyface.server.session import SenderSession, live_codec_config

BASE = CodecConfig(intra_codec="hevc", keyframe_quality=40, generator="warp")


def _frames(n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A textured picture that drifts right, and face-mesh landmarks that follow it."""
    rng = np.random.default_rng(0)
    base = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    big = np.kron(base, np.ones((4, 4, 1), dtype=np.uint8))
    mesh = get_representation()
    neutral = mesh.keypoints(mesh.neutral(), 256)
    images, marks = [], []
    for i in range(n):
        images.append(np.roll(big, i, axis=1))
        lm = np.zeros((neutral.shape[0], 3))
        lm[:, :2] = neutral + np.array([i, 0])
        marks.append(lm)
    return images, marks


def test_file_streams_reset_the_motion_coder_once() -> None:
    images, marks = _frames(12)
    encoder = EncoderCore(replace(BASE, motion_chunk=4), Fraction(25))
    packets = [p for im, lm in zip(images, marks, strict=True) for p in encoder.encode(im, lm)]
    packets += encoder.flush()
    resets = [p.reset for p in packets if isinstance(p, MotionPacket)]
    assert resets == [True, False, False]
    decisions = encoder.stats.decisions
    assert [d.motion_reset for d in decisions] == [True] + [False] * 11
    assert decisions[0].idr and decisions[0].keyframe and encoder.last_idr == 0


def test_live_policy_resets_on_interval_and_keyframes_and_reports_idr() -> None:
    config = live_codec_config(
        replace(BASE, refresh_mode=RefreshMode.FIXED, refresh_threshold=0), reset_interval=4
    )
    assert config.motion_chunk == 1 and config.reset_at_keyframes
    images, marks = _frames(14)
    encoder = EncoderCore(config, Fraction(25))
    for i, (im, lm) in enumerate(zip(images, marks, strict=True)):
        if i == 6:
            encoder.force_keyframe(idr=True)
        if i == 9:
            encoder.force_keyframe()  # a keyframe that keeps the buffer: not an IDR
        packets = encoder.encode(im, lm)
        motion = [p for p in packets if isinstance(p, MotionPacket)]
        assert len(motion) == 1 and motion[0].reset == encoder.stats.decisions[-1].motion_reset
    d = encoder.stats.decisions
    assert [x.index for x in d if x.keyframe] == [0, 6, 9]
    assert [x.index for x in d if x.idr] == [0, 6]
    # Resets: the first frame, every 4 frames after the last reset, every keyframe.
    assert [x.index for x in d if x.motion_reset] == [0, 4, 6, 9, 13]
    assert encoder.last_idr == 6


def test_a_live_sender_predicts_with_the_warp_unless_it_names_another_renderer() -> None:
    """The server draws with its own renderer, so a sender whose config names the default
    renderer predicts its frames with ``LIVE_MIRROR`` (the warp: the keyframe enhancer would
    only stall it); a config that names another renderer (a FOMM model's, a weights file)
    keeps it, and ``mirror=None`` keeps the default too."""
    from keyface.renderers import DEFAULT_RENDERER
    from keyface.server.session import LIVE_MIRROR

    default = CodecConfig()
    assert default.generator == DEFAULT_RENDERER != LIVE_MIRROR == "warp"
    assert live_codec_config(default, None).generator == "warp"
    assert live_codec_config(default, None, mirror=None).generator == DEFAULT_RENDERER
    other = replace(default, generator="my-generator.safetensors")
    assert live_codec_config(other, None).generator == "my-generator.safetensors"
    session = SenderSession(replace(default, intra_codec="hevc"), Fraction(25))
    assert session.encoder.config.generator == "warp"


def test_sender_session_uses_the_public_policy_only() -> None:
    """The live sender is a plain EncoderCore configured for live links: no subclass. It
    decides motion resets and bases itself, through ``reset_motion`` and ``continue_motion``."""
    sender = SenderSession(BASE, Fraction(25), reset_interval=5)
    assert type(sender.encoder) is EncoderCore
    assert sender.reset_interval == 5 and sender.encoder.config.reset_interval is None
    assert sender.encoder.config.motion_chunk == 1


class ShiftOnly:
    """A toy representation: the face mesh's average face, moved by two parameters. It lives
    in this test module and reaches the codec through one registry line."""

    name = "test-shift"
    version = 1
    digest = 0

    def __init__(self) -> None:
        mesh = get_representation()
        self._shape = mesh.keypoints(mesh.neutral(), 256).astype(np.float64)
        self.num_keypoints = len(self._shape)

    num_params = 2
    statistics = MotionStatistics(np.zeros(2), np.full(2, 4.0), np.full(2, 1.0))
    num_levels = 1
    field_component = None

    def quant_level(self, level: int) -> QuantLevel:
        return QuantLevel(num_params=2, steps=np.full(2, 0.25))

    def for_level(self, level: int) -> ShiftOnly:
        return self

    def analyze(self, landmarks: np.ndarray, size: int) -> np.ndarray:
        return (np.asarray(landmarks)[:, :2] * 256 / size - self._shape).mean(axis=0)

    def keypoints(self, params: np.ndarray, size: int) -> np.ndarray:
        return ((self._shape + np.asarray(params)[:2]) * size / 256).astype(np.float32)

    def neutral(self) -> np.ndarray:
        return np.zeros(2)

    def gate_distance(self, reference: np.ndarray, current: np.ndarray) -> float:
        return float(np.abs(reference - current).mean() / 256)


@pytest.fixture
def shift_registered():
    REPRESENTATIONS.register(ShiftOnly.name, summary="test only")(ShiftOnly)
    try:
        yield
    finally:  # keep the registry as it was for the other tests
        REPRESENTATIONS.unregister(ShiftOnly.name)


def test_a_new_representation_needs_only_its_module_and_a_registry_line(
    shift_registered,
) -> None:
    assert isinstance(ShiftOnly(), MotionRepresentation)
    config = replace(BASE, motion=ShiftOnly.name, quant_level=0, motion_chunk=3)
    images, marks = _frames(9)
    encoder = EncoderCore(config, Fraction(25))
    packets = [p for im, lm in zip(images, marks, strict=True) for p in encoder.encode(im, lm)]
    packets += encoder.flush()
    assert encoder.header.motion_name == ShiftOnly.name
    decoder = DecoderCore(encoder.header)
    frames = [f for p in packets for f in decoder.receive(p)]
    assert len(frames) == 9 and decoder.finished
    # The decoded keypoints follow the drift to within the quantiser step.
    for i, f in enumerate(frames):
        shift = f.keypoints.mean(axis=0) - frames[0].keypoints.mean(axis=0)
        assert abs(shift[0] - i) <= 0.25 and abs(shift[1]) <= 0.25


def test_registry_builds_lazily_once_and_names_what_it_has() -> None:
    built: list[int] = []
    reg: Registry[list[int]] = Registry("thing", error=LookupError)

    @reg.register("a", summary="first", speed="slow", weights=("w",))
    def _a() -> list[int]:
        built.append(1)
        return built

    assert built == [] and "a" in reg and reg.names(speed="slow") == ["a"]
    assert reg.get("a") is reg.get("a") and built == [1]
    assert reg.entry("a") == Entry("a", _a, "first", "slow", ("w",))
    with pytest.raises(LookupError, match="unknown thing 'b' \\(available: a\\)"):
        reg.get("b")
    with pytest.raises(ValueError, match="twice"):
        reg.register("a")(_a)


LAYERS = {
    # package: modules it must not bring in (higher layers, or heavy libraries)
    "keyface.bitstream": ("torch", "numpy", "keyface.codec", "keyface.motion"),
    "keyface.motion": ("torch", "keyface.codec", "keyface.render", "keyface.pipeline"),
    "keyface.entropy": ("torch", "keyface.codec", "keyface.render", "keyface.pipeline"),
    "keyface.render": ("torch", "keyface.generator.renderer", "keyface.codec", "keyface.pipeline"),
    "keyface.intra": ("torch", "keyface.codec", "keyface.pipeline"),
    "keyface.codec": (
        "torch",
        "onnxruntime",
        "mediapipe",
        "keyface.pipeline",
        "keyface.face",
        "keyface.io",
        "keyface.generator.renderer",
        "keyface.server",
        "keyface.eval",
    ),
    "keyface.renderers": ("torch", "onnxruntime", "keyface.codec", "keyface.pipeline"),
}


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_layers_import_only_downward(package: str) -> None:
    forbidden = LAYERS[package]
    code = textwrap.dedent(
        f"""
        import importlib, sys
        importlib.import_module({package!r})
        forbidden = {forbidden!r}
        def banned(m):
            return any(m == f or m.startswith(f + ".") for f in forbidden)
        print(" ".join(sorted(filter(banned, sys.modules))))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "", f"{package} imports {out.stdout.strip()}"


def test_an_encoder_with_the_warp_imports_no_torch() -> None:
    code = textwrap.dedent(
        """
        import sys
        from fractions import Fraction
        import numpy as np
        from keyface.codec import EncoderCore
        from keyface.codec.config import CodecConfig
        enc = EncoderCore(CodecConfig(generator="warp", intra_codec="hevc"), Fraction(25))
        enc.encode(np.zeros((256, 256, 3), np.uint8), None)
        enc.flush()
        print(sorted(m for m in ("torch", "onnxruntime") if m in sys.modules))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]"


def test_no_package_imports_a_layer_above_it() -> None:
    """Read from the sources (imports inside functions too): ``scripts/package_graph.py``
    orders the packages by the data flow, and no import may run back up."""
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location(
        "package_graph", root / "scripts/package_graph.py"
    )
    assert spec is not None and spec.loader is not None
    graph = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(graph)
    edges = graph.graph(root / "src")
    upward = [f"{a} -> {b}" for (a, b) in edges if graph.layer(a) < graph.layer(b)]
    assert upward == []
    unknown = {p for edge in edges for p in edge} - set().union(*graph.LAYERS) - {"cli"}
    assert unknown <= {"__main__"}, f"packages without a layer: {unknown}"
