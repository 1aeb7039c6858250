"""``keyface import-fomm CHECKPOINT -o model.safetensors``: a public FOMM checkpoint as a keyface
model file (docs/motion.md, "FOMM")."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from keyface.cli._common import add_force_argument, existing_file, output_file
from keyface.cli.main import UserError
from keyface.io import atomic_output


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "import-fomm",
        help="convert a First Order Motion Model checkpoint into a keyface model file",
        description="Convert an upstream FOMM checkpoint (e.g. vox-cpk.pth.tar: a dict with "
        "'kp_detector' and 'generator' state dicts) into a keyface model file (.safetensors) "
        "for `keyface encode --motion fomm --model FILE`. Every key and shape is checked; the "
        "output's metadata holds the configuration, the source's SHA-256 and its name. Prints "
        "the output's SHA-256.",
    )
    p.add_argument("checkpoint", help="upstream checkpoint (.pth.tar, read as plain tensors)")
    p.add_argument("-o", "--output", required=True, help="keyface model file (.safetensors)")
    p.add_argument(
        "--config",
        help="the checkpoint's configuration as a JSON file of keyface.fomm.FommConfig fields "
        "(default: vox-256)",
    )
    add_force_argument(p)
    return p


def run(args: argparse.Namespace) -> int:
    from keyface.fomm.checkpoint import import_checkpoint
    from keyface.fomm.config import FommConfig

    source = existing_file(args.checkpoint)
    out = output_file(args.output, inputs=[source], force=args.force, suffixes=(".safetensors",))
    config = FommConfig.vox256()
    if args.config is not None:
        try:
            config = FommConfig.from_json(existing_file(args.config).read_text())
        except (ValueError, TypeError) as exc:
            raise UserError(f"{args.config}: not a FOMM configuration ({exc})") from None
    with atomic_output(out) as tmp:
        result = import_checkpoint(source, Path(tmp), config)
    print(f"{result.sha256}  {out}")
    return 0
