"""The learned renderer: the keyframe enhancer, the codec's dense warp, the generator network.

When a keyframe arrives (:meth:`GeneratorRenderer.prepare`) the enhancer, if there is one,
removes what the keyframe codec did to it; every frame is then the warp of that enhanced
picture, refined by the per-frame generator if there is one. Either network may be left out:
enhancer only is the fast preset (the per-frame cost is the warp's).

It implements the same :class:`keyface.render.Renderer` protocol as the training-free warp, so
the decoder, the CLI and the server take either. The networks run in onnxruntime when it is
installed (about twice as fast as eager torch on a laptop CPU; the export is checked against
torch by the tests) and in torch otherwise.
"""

from __future__ import annotations

import io
from pathlib import Path
from weakref import WeakKeyDictionary

import numpy as np
import torch

from keyface.generator.enhancer import Enhancer
from keyface.generator.features import generator_input, to_uint8
from keyface.generator.model import IN_CHANNELS, Generator
from keyface.generator.weights import load_network
from keyface.render.warp import Reference, WarpRenderer, warp_image
from keyface.threads import apply_thread_policy, onnx_session_options
from keyface.types import check_image

Network = Generator | Enhancer

_EXPORTED: WeakKeyDictionary[Network, bytes] = WeakKeyDictionary()


def export_onnx(model: Network, size: int = 256) -> bytes:
    """The network as an ONNX model (opset 17) with a dynamic batch, height and width."""
    channels = 3 if isinstance(model, Enhancer) else IN_CHANNELS
    x = torch.zeros(1, channels, size, size)
    buf = io.BytesIO()
    torch.onnx.export(
        model.eval(),
        (x,),
        buf,
        input_names=["inputs"],
        output_names=["frame"],
        dynamic_axes={"inputs": {0: "n", 2: "h", 3: "w"}, "frame": {0: "n", 2: "h", 3: "w"}},
        opset_version=17,
        dynamo=False,
    )
    return buf.getvalue()


class _TorchRunner:
    def __init__(self, model: Network) -> None:
        self.model = model.eval()
        apply_thread_policy()  # torch's pool is the process's: set once, never per renderer

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.model(torch.from_numpy(x)).numpy()


class _OnnxRunner:
    def __init__(self, model: Network) -> None:
        import onnxruntime as ort

        # The policy's thread count, and workers that sleep between frames (the warp runs on
        # the same cores): keyface.threads.
        options = onnx_session_options()
        onnx = _EXPORTED.get(model)
        if onnx is None:  # export once per network, not once per renderer
            onnx = _EXPORTED[model] = export_onnx(model)
        self.session = ort.InferenceSession(onnx, options, providers=["CPUExecutionProvider"])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"inputs": x})[0]


def _onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _pad8(x: np.ndarray) -> np.ndarray:
    """Pad ``(C, H, W)`` to multiples of 8 (edge values), as the networks need."""
    ph, pw = -x.shape[1] % 8, -x.shape[2] % 8
    return np.pad(x, ((0, 0), (0, ph), (0, pw)), mode="edge") if ph or pw else x


class GeneratorRenderer:
    """Enhance the keyframe once, warp it with the codec's flow every frame, and let the
    per-frame network fix what the warp cannot explain (``name`` is the registered name)."""

    def __init__(
        self,
        model: Generator | None,
        name: str = "generator",
        *,
        enhancer: Enhancer | None = None,
        backend: str = "auto",
    ) -> None:
        if backend not in ("auto", "onnx", "torch"):
            raise ValueError(f"backend must be auto, onnx or torch, got {backend!r}")
        if model is None and enhancer is None:
            raise ValueError("a learned renderer needs a generator, an enhancer or both")
        if backend == "auto":
            backend = "onnx" if _onnxruntime_available() else "torch"
        self.name = name
        self.backend = backend
        self.warp = WarpRenderer()
        runner = _OnnxRunner if backend == "onnx" else _TorchRunner
        self._run = runner(model) if model is not None else None
        self._enhance = runner(enhancer) if enhancer is not None else None

    @classmethod
    def from_file(cls, path: Path, name: str = "generator", **kwargs: object) -> GeneratorRenderer:
        """A renderer from one weights file: a generator, or an enhancer (then the frames are
        warps of the enhanced keyframe)."""
        network = load_network(path)
        if isinstance(network, Enhancer):
            return cls(None, name, enhancer=network, **kwargs)  # type: ignore[arg-type]
        return cls(network, name, **kwargs)  # type: ignore[arg-type]

    def enhance(self, image: np.ndarray) -> np.ndarray:
        """The keyframe ``image`` (uint8 RGB) after the enhancer (itself if there is none)."""
        check_image(image, "reference image")
        if self._enhance is None:
            return image
        h, w = image.shape[:2]
        x = image.transpose(2, 0, 1).astype(np.float32) * (2.0 / 255.0) - 1.0
        out = self._enhance(_pad8(x)[None])[0, :, :h, :w]
        return to_uint8(out)

    def prepare(self, image: np.ndarray, keypoints: np.ndarray) -> Reference:
        return self.warp.prepare(self.enhance(image), keypoints)

    def inputs(
        self, reference: Reference, keypoints: np.ndarray, field: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(network input (6, H, W), warped reference)`` for driving ``keypoints``."""
        flow = self.warp.flow(reference, keypoints, field)
        warped = warp_image(reference.image, flow)
        return generator_input(warped, flow, keypoints), warped

    def render(
        self, reference: Reference, keypoints: np.ndarray, field: np.ndarray | None = None
    ) -> np.ndarray:
        if self._run is None:
            return self.warp.render(reference, keypoints, field)
        x, warped = self.inputs(reference, keypoints, field)
        h, w = warped.shape[:2]
        out = self._run(_pad8(x)[None])[0, :, :h, :w]
        return to_uint8(out)
