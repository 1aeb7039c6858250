"""The learned renderer: the codec's dense warp, refined by the generator network.

It implements the same :class:`keyface.render.Renderer` protocol as the training-free warp, so
the decoder, the CLI and the server take either. The network runs in onnxruntime when it is
installed (about twice as fast as eager torch on a laptop CPU; the export is checked against
torch by the tests) and in torch otherwise.
"""

from __future__ import annotations

import io
from pathlib import Path
from weakref import WeakKeyDictionary

import numpy as np
import torch

from keyface.generator.features import generator_input, to_uint8
from keyface.generator.model import IN_CHANNELS, Generator
from keyface.generator.weights import load_weights
from keyface.render.warp import Reference, WarpRenderer, warp_image

_EXPORTED: WeakKeyDictionary[Generator, bytes] = WeakKeyDictionary()


def export_onnx(model: Generator, size: int = 256) -> bytes:
    """The network as an ONNX model (opset 17) with a dynamic batch, height and width."""
    x = torch.zeros(1, IN_CHANNELS, size, size)
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
    def __init__(self, model: Generator, threads: int | None) -> None:
        self.model = model.eval()
        if threads:
            torch.set_num_threads(threads)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.model(torch.from_numpy(x)).numpy()


class _OnnxRunner:
    def __init__(self, model: Generator, threads: int | None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        # Worker threads must not spin between frames: the warp runs on the same cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads
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


class GeneratorRenderer:
    """Warp the reference with the codec's flow, then let the network fix what the warp cannot
    explain (``name`` is the registered weights' name)."""

    def __init__(
        self,
        model: Generator,
        name: str = "generator",
        *,
        backend: str = "auto",
        threads: int | None = None,
    ) -> None:
        if backend not in ("auto", "onnx", "torch"):
            raise ValueError(f"backend must be auto, onnx or torch, got {backend!r}")
        if backend == "auto":
            backend = "onnx" if _onnxruntime_available() else "torch"
        self.name = name
        self.backend = backend
        self.warp = WarpRenderer()
        runner = _OnnxRunner if backend == "onnx" else _TorchRunner
        self._run = runner(model, threads)

    @classmethod
    def from_file(cls, path: Path, name: str = "generator", **kwargs: object) -> GeneratorRenderer:
        return cls(load_weights(path), name, **kwargs)  # type: ignore[arg-type]

    def prepare(self, image: np.ndarray, keypoints: np.ndarray) -> Reference:
        return self.warp.prepare(image, keypoints)  # checks the image

    def inputs(self, reference: Reference, keypoints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(network input (6, H, W), warped reference)`` for driving ``keypoints``."""
        flow = self.warp.flow(reference, keypoints)
        warped = warp_image(reference.image, flow)
        return generator_input(warped, flow, keypoints), warped

    def render(self, reference: Reference, keypoints: np.ndarray) -> np.ndarray:
        x, warped = self.inputs(reference, keypoints)
        h, w = warped.shape[:2]
        ph, pw = -h % 8, -w % 8  # the network needs multiples of 8
        if ph or pw:
            x = np.pad(x, ((0, 0), (0, ph), (0, pw)), mode="edge")
        out = self._run(x[None])[0, :, :h, :w]
        return to_uint8(out)
