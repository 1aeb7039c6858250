"""The motion model as the browser decoder loads it (``keyface.server`` static
``decoder/``; docs/browser.md).

The receiver page decodes motion itself, so it needs the same model the Python decoder
rebuilds keypoints with: ``models.json`` (a versioned manifest: per model its name, version,
the CRC-32 digest streams name it by, the quantiser levels, the file, size and SHA-256 of its
arrays; the body-field constants and the face-mesh index tables the warp needs) and
``facemesh_pca_v1.bin`` (the float32 little-endian arrays, exactly the values of
``facemesh_pca_v1.npz``). The page checks the SHA-256 before it
uses the arrays and the digest against every stream header.

:func:`export_web_model` writes both; ``python -m keyface.motion.web_export`` rewrites the
shipped copies, and ``tests/test_js_decoder.py`` checks that they are up to date.
"""

from __future__ import annotations

import hashlib
import json
import sys
from importlib import resources
from pathlib import Path

import numpy as np

from keyface.facemesh import (
    FACE_OVAL,
    INNER_LIPS,
    INNER_MOUTH_CORNERS,
    NUM_POINTS,
    OUTER_LIP_MIDDLE,
)
from keyface.motion.facemesh_pca import MODEL_FILE, FaceMeshPCA
from keyface.motion.field import (
    FACE_FEATHER,
    FIELD_BAND_GROWTH,
    FIELD_BANDS,
    FIELD_DELTA_SPREAD,
    FIELD_GRID,
    FIELD_SPREAD,
    FIELD_STEP,
)

MANIFEST_FORMAT = 1
"""Bumped when the manifest's layout changes (the page refuses other formats)."""
MANIFEST_NAME = "models.json"
BINARY_NAME = "facemesh_pca_v1.bin"
ARRAYS = ("mean", "basis", "param_mean", "param_spread", "param_delta_spread", "level_steps")
"""The model's arrays the decoder needs, in file order (``rigid_weights`` only serves the
encoder's analysis)."""


def web_model_dir() -> Path:
    """Where the package ships the browser decoder's model files."""
    return Path(str(resources.files("keyface.server").joinpath("static", "decoder", "models")))


def web_model_files(model_path: str | Path | None = None) -> dict[str, bytes]:
    """``{file name: bytes}`` of the manifest and the binary for the model at ``model_path``
    (default: the shipped ``facemesh_pca_v1.npz``). Deterministic: the same model always
    gives the same bytes."""
    if model_path is None:
        raw = resources.files("keyface.motion").joinpath("models", MODEL_FILE).read_bytes()
    else:
        raw = Path(model_path).read_bytes()
    model = FaceMeshPCA(model_path)
    import io

    chunks: list[bytes] = []
    layout: dict[str, dict[str, object]] = {}
    offset = 0
    with np.load(io.BytesIO(raw)) as z:
        level_k = [int(k) for k in z["level_num_coeffs"]]
        for name in ARRAYS:
            arr = np.ascontiguousarray(z[name], dtype="<f4")
            if z[name].dtype != np.float32:
                raise ValueError(f"{name} is {z[name].dtype}, the web model stores float32")
            data = arr.tobytes()
            layout[name] = {"offset": offset, "shape": list(arr.shape)}
            chunks.append(data)
            offset += len(data)
    binary = b"".join(chunks)
    manifest = {
        "format": MANIFEST_FORMAT,
        "models": {
            model.name: {
                "version": model.version,
                "digest": model.digest,
                "file": BINARY_NAME,
                "bytes": len(binary),
                "sha256": hashlib.sha256(binary).hexdigest(),
                "dtype": "float32-le",
                "arrays": layout,
                "level_num_coeffs": level_k,
                "num_pose": 6,
                "reference_size": 256,
            }
        },
        "facemesh": {
            "num_points": NUM_POINTS,
            "face_oval": list(FACE_OVAL),
            "inner_lips": [list(pair) for pair in INNER_LIPS],
            "inner_mouth_corners": list(INNER_MOUTH_CORNERS),
            "outer_lip_middle": list(OUTER_LIP_MIDDLE),
        },
        "field": {
            "name": "facemesh-pca-field",
            "version": 1,
            "base": model.name,
            "grid": FIELD_GRID,
            "bands": FIELD_BANDS,
            "step": FIELD_STEP,
            "band_growth": FIELD_BAND_GROWTH,
            "spread": FIELD_SPREAD,
            "delta_spread": FIELD_DELTA_SPREAD,
            "face_feather": FACE_FEATHER,
        },
    }
    text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
    return {MANIFEST_NAME: text.encode("ascii"), BINARY_NAME: binary}


def export_web_model(out_dir: str | Path | None = None) -> list[Path]:
    """Write the manifest and the binary into ``out_dir`` (default: the shipped folder);
    returns the paths written."""
    target = Path(out_dir) if out_dir is not None else web_model_dir()
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in web_model_files().items():
        path = target / name
        path.write_bytes(data)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1 or (args and args[0].startswith("-")):
        print("usage: python -m keyface.motion.web_export [OUT_DIR]", file=sys.stderr)
        return 2
    for path in export_web_model(args[0] if args else None):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
