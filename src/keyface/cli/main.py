"""``keyface`` entry point.

Each sub-command lives in ``keyface/cli/<name>.py`` and exposes two functions:

* ``add_parser(subparsers) -> argparse.ArgumentParser`` registers its arguments;
* ``run(args: argparse.Namespace) -> int`` does the work and returns the exit code.

A command with a dash lives in the module with an underscore (``import-fomm``: ``import_fomm.py``).

Expected failures (bad input, damaged streams) raise :class:`UserError` or one of the library's
own error types listed in ``_USER_ERRORS``; they are printed as one line on stderr with exit
code 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

COMMANDS: tuple[str, ...] = (
    "encode",
    "decode",
    "info",
    "crop",
    "demo",
    "eval",
    "bench",
    "train",
    "serve",
    "send",
    "token",
    "import-fomm",
    "janus",
)


class UserError(Exception):
    """An error caused by the user's input: printed as one line, exit code 2."""


def _user_error_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [UserError, FileNotFoundError, IsADirectoryError]
    for module, name in (
        ("keyface.io.video", "VideoError"),
        ("keyface.io.output", "OutputError"),
        ("keyface.bitstream", "BitstreamError"),
        ("keyface.intra", "IntraCodecError"),
        ("keyface.face", "FaceNotFoundError"),
        ("keyface.renderers", "UnknownRendererError"),
        ("keyface.generator.weights", "GeneratorWeightsError"),
        ("keyface.fomm.model", "FommModelError"),
        ("keyface.fomm.student", "StudentFileError"),
        ("keyface.server.client", "JoinRefused"),
        ("keyface.server.client", "ConnectionLost"),
    ):
        try:
            types.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(types)


class Parser(argparse.ArgumentParser):
    """argparse with the CLI's one-line errors (exit 2), for every sub-command too."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from keyface import __version__

    parser = Parser(
        prog="keyface",
        description="Generative talking-head video codec for ultra-low bitrate conferencing.",
    )
    parser.add_argument("--version", action="version", version=f"keyface {__version__}")
    parser.add_argument(
        "--threads",
        dest="policy_threads",  # not `threads`: `train fit --threads` has its own
        metavar="N",
        help="compute threads for torch, onnxruntime, OpenCV and OpenMP: N, 'all', or 'N,spin' "
        "(default: $KEYFACE_THREADS, else half the CPUs, at most 4; docs/threads.md)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        module_name = f"keyface.cli.{name.replace('-', '_')}"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue  # sub-command not built in this installation
            raise
        sub_parser = module.add_parser(sub)
        sub_parser.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code (also used by tests)."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    parser = build_parser()
    args = parser.parse_args(argv)
    from keyface.threads import ENV_VAR, apply_thread_policy, parse_override, set_thread_policy

    try:
        if args.policy_threads is not None:
            set_thread_policy(parse_override(args.policy_threads, what="--threads"))
        elif os.environ.get(ENV_VAR):
            set_thread_policy(parse_override(os.environ[ENV_VAR]))
        else:
            apply_thread_policy()
    except ValueError as exc:
        print(f"keyface: error: {exc}", file=sys.stderr)
        return 2
    try:
        code = int(args._run(args))
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except _user_error_types() as exc:
        print(f"keyface {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"keyface {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return _closed_pipe()


SIGPIPE_EXIT = 141
"""Exit status of a command whose output pipe was closed (``keyface eval ... | head``): what a
shell reports for a process ended by SIGPIPE (128 + 13), without a traceback."""


def _closed_pipe() -> int:
    """The reader of stdout went away: point stdout at /dev/null so that the interpreter's own
    flush at exit does not fail again, and exit quietly."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout without a descriptor (tests capture it)
        pass
    return SIGPIPE_EXIT


if __name__ == "__main__":
    sys.exit(main())
