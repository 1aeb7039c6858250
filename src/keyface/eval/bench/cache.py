"""Where points are cached and what a cached point must match: paths, JSON files, and the
digest of the code a keyface point depends on (derived from the imports, not a hand-kept list)."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
from fractions import Fraction
from pathlib import Path
from typing import Any

from keyface.eval.bench.config import KEYFACE, BenchConfig

# cache layout and small helpers


def param_label(codec: str, param: float | int) -> str:
    return f"qp{int(param)}" if not codec.startswith(KEYFACE) else f"u{float(param):.2f}"


def _clip_dir(out: Path, clip: str) -> Path:
    return out / "cache" / clip


def _point_path(out: Path, clip: str, codec: str, param: float | int) -> Path:
    return _clip_dir(out, clip) / f"{codec}_{param_label(codec, param)}.json"


def _write_json(path: Path, data: Any) -> None:
    """Write ``data`` atomically (a crash never leaves half a file for the next run)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1, allow_nan=False) + "\n")
    os.replace(tmp, path)


def _read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _num(value: float | None, digits: int = 6) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)


def _fps_text(fps: Fraction) -> str:
    return f"{fps.numerator}/{fps.denominator}"


POINT_ENTRY_MODULES = ("keyface.pipeline", "keyface.renderers", "keyface.generator.renderer")
"""What computes a keyface point: the pipeline (crop, landmarks, encoder, decoder) and every
renderer. :func:`codec_dependencies` follows their imports from there."""
DATA_SUFFIXES = (".npz", ".safetensors", ".json")


def _source_root() -> Path:
    return Path(__file__).resolve().parents[3]  # the folder that holds the keyface package


@functools.cache
def codec_dependencies(root: Path | None = None) -> tuple[Path, ...]:
    """Every keyface source file a keyface point depends on (the import closure of
    :data:`POINT_ENTRY_MODULES`, imports inside functions included, found by reading the
    sources under ``root``), and the model files (``.npz``, ``.safetensors``, ``.json``) beside
    them: in a module's folder and in its sub-folders that are not packages (``weights/``,
    ``models/``)."""
    import ast

    root = root or _source_root()

    def source(module: str) -> Path | None:
        base = root.joinpath(*module.split("."))
        for path in (base.with_suffix(".py"), base / "__init__.py"):
            if path.is_file():
                return path
        return None

    seen: dict[str, Path] = {}
    todo = list(POINT_ENTRY_MODULES)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        path = source(module)
        if path is None:
            continue
        seen[module] = path
        parts = module.split(".")
        for i in range(1, len(parts)):  # a module's parent packages run first
            todo.append(".".join(parts[:i]))
        package = module if path.name == "__init__.py" else ".".join(parts[:-1])
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                todo += [a.name for a in node.names if a.name.startswith("keyface")]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                if base.startswith("keyface"):
                    todo.append(base)
                    todo += [f"{base}.{a.name}" for a in node.names]  # submodules by name
    files = set(seen.values())
    for folder in {p.parent for p in files}:
        data_dirs = [folder] + [
            d for d in folder.iterdir() if d.is_dir() and not (d / "__init__.py").exists()
        ]
        for d in data_dirs:
            files.update(p for p in d.rglob("*") if p.is_file() and p.suffix in DATA_SUFFIXES)
    return tuple(sorted(files))


@functools.cache
def codec_digest(root: Path | None = None) -> str:
    """SHA-256 (first 16 hex digits) of :func:`codec_dependencies`: a keyface point cached by
    another version of any of those files is computed again."""
    root = root or _source_root()
    digest = hashlib.sha256()
    for path in codec_dependencies(root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _point_key(cfg: BenchConfig, codec: str, param: float | int) -> dict[str, Any]:
    """What a cached point must match to be reused (besides containing the metrics asked)."""
    from keyface import __version__

    key: dict[str, Any] = {"codec": codec, "param": param, "keyface": __version__}
    if cfg.is_keyface(codec):
        from keyface.codec.config import CodecConfig
        from keyface.codec.ratecontrol import config_at
        from keyface.eval.bench.config import keyface_mode

        conf = dataclasses.asdict(config_at(float(param), CodecConfig(mode=keyface_mode(codec))))
        conf["refresh_mode"] = int(conf["refresh_mode"])
        key["config"] = conf
        key["generator"] = cfg.generator
        if cfg.fomm_model is not None:
            key["fomm_model"] = cfg.fomm_digest
        key["code"] = codec_digest()
    else:
        from keyface.eval.anchors import DEFAULT_PRESETS

        key["preset"] = cfg.presets.get(codec, DEFAULT_PRESETS[codec])
    return json.loads(json.dumps(key))  # as a cached point holds it (tuples become lists)
