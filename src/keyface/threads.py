"""One thread policy for every compute library keyface loads (docs/threads.md).

keyface runs torch (OpenMP + oneDNN), onnxruntime, OpenCV and numpy/scipy (OpenBLAS) in one
process. Left alone, each sizes its own thread pool to the machine and lets idle workers spin,
so on a CPU shared with other work they fight for the same cores: every barrier then costs a
scheduler time slice (a training step 6x slower beside two busy processes), and oneDNN's
barrier can wait forever for threads that the OpenMP team does not have (the suite hung there).

The policy is one record, :class:`ThreadPolicy`, decided once per process:

- ``compute``: intra-op threads for torch, onnxruntime, OpenCV and OpenMP. Default: half the
  CPUs, at least 1 and at most 4 (1 on a 2-core laptop): the rest of the machine is left to
  the call application, the browser and the other side of a conference;
- ``blas``: OpenBLAS/MKL threads, always 1 by default: the codec's linear algebra is on small
  matrices, where BLAS threads gain nothing and collapse under load (warping 20 frames beside a
  training job: 182 s with the default OpenBLAS threads, 0.82 s with one);
- ``spin``: whether idle workers may busy-wait (OpenMP ``OMP_WAIT_POLICY``, onnxruntime's
  ``allow_spinning``). Off by default: a spinning worker steals the core its neighbour needs.

The one override is ``KEYFACE_THREADS=N`` in the environment or ``keyface --threads N`` on the
command line (which sets the variable, so child processes inherit it); ``N`` is the compute
thread count, or ``all`` for every CPU. ``KEYFACE_THREADS=N,spin`` also lets workers spin.

How it is applied: ``import keyface`` writes the policy into the environment variables that the
libraries read when they load (only variables the user has not set), and
:func:`apply_thread_policy` sets the pools of the libraries that are already loaded (torch,
OpenCV, every BLAS and OpenMP runtime, through threadpoolctl). keyface calls it wherever it
starts compute work (the pipeline, the renderers, training, metrics, the server), so a program
that uses the library gets the policy without doing anything. The thread counts are set once
and never changed afterwards in the process: changing torch's count between parallel regions
is one way to reach oneDNN's barrier with a team of the wrong size.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

ENV_VAR = "KEYFACE_THREADS"
MAX_DEFAULT_THREADS = 4


@dataclass(frozen=True)
class ThreadPolicy:
    """How many threads each compute library may use, and whether idle ones may spin."""

    compute: int
    """Intra-op threads: torch, onnxruntime, OpenCV, OpenMP."""
    blas: int = 1
    """OpenBLAS / MKL threads (numpy, scipy)."""
    spin: bool = False
    """Idle workers busy-wait (faster hand-offs on an idle machine, collapse on a busy one)."""
    source: str = "default"
    """Where the policy came from: ``default``, ``KEYFACE_THREADS`` or ``api``."""

    def __post_init__(self) -> None:
        if self.compute < 1 or self.blas < 1:
            raise ValueError(
                f"thread counts must be >= 1 (compute={self.compute}, blas={self.blas})"
            )

    def environment(self) -> dict[str, str]:
        """The environment variables through which libraries that load later (and child
        processes) read this policy."""
        n, b = str(self.compute), str(self.blas)
        return {
            "OMP_NUM_THREADS": n,
            "OMP_WAIT_POLICY": "ACTIVE" if self.spin else "PASSIVE",
            "KMP_BLOCKTIME": "200" if self.spin else "0",  # Intel OpenMP, where present
            "OMP_DYNAMIC": "FALSE",  # a team never shrinks below what was asked for
            "OPENBLAS_NUM_THREADS": b,
            "MKL_NUM_THREADS": b,
            "OPENCV_FOR_THREADS_NUM": n,
        }

    def override(self) -> str:
        """The ``KEYFACE_THREADS`` value that reproduces this policy's compute and spin."""
        return f"{self.compute},spin" if self.spin else str(self.compute)


def default_threads(cpu_count: int | None = None) -> int:
    """Half the CPUs, at least 1 and at most :data:`MAX_DEFAULT_THREADS`."""
    cpus = cpu_count if cpu_count is not None else _cpu_count()
    return max(1, min(MAX_DEFAULT_THREADS, cpus // 2))


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the CPUs this process may run on
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def parse_override(
    value: str, cpu_count: int | None = None, *, what: str = ENV_VAR
) -> ThreadPolicy:
    """``KEYFACE_THREADS``'s grammar: ``N``, ``all``, optionally followed by ``,spin``
    (``what`` names the setting in error messages)."""
    text = value.strip().lower()
    parts = [p.strip() for p in text.split(",")]
    spin = False
    if len(parts) == 2 and parts[1] in ("spin", "nospin"):
        spin = parts[1] == "spin"
    elif len(parts) != 1:
        raise ValueError(f"{what}={value!r}: expected N, 'all', 'N,spin' or 'all,spin'")
    count = parts[0]
    if count == "all":
        compute = cpu_count if cpu_count is not None else _cpu_count()
    else:
        try:
            compute = int(count)
        except ValueError:
            raise ValueError(
                f"{what}={value!r}: expected N, 'all', 'N,spin' or 'all,spin'"
            ) from None
        if compute < 1:
            raise ValueError(f"{what}={value!r}: the thread count must be at least 1")
    return ThreadPolicy(compute=compute, spin=spin, source=what)


def policy_from_environment() -> ThreadPolicy:
    """The policy ``KEYFACE_THREADS`` asks for, or the default. A malformed value is logged and
    ignored (the default applies), so that an import never fails on it; the CLI refuses it."""
    value = os.environ.get(ENV_VAR)
    if value:
        try:
            return parse_override(value)
        except ValueError as exc:
            logger.warning("%s; using the default thread policy", exc)
    return ThreadPolicy(compute=default_threads())


_lock = threading.Lock()
_policy: ThreadPolicy | None = None
_preset: set[str] = set()  # environment variables keyface wrote (the user's are never touched)
_applied: dict[str, Any] = {}  # library -> what was set


def _preset_environment(policy: ThreadPolicy) -> None:
    for key, value in policy.environment().items():
        if key not in os.environ or key in _preset:
            os.environ[key] = value
            _preset.add(key)


def current_policy() -> ThreadPolicy:
    """The process's policy (decided from the environment on first use)."""
    global _policy
    with _lock:
        if _policy is None:
            _policy = policy_from_environment()
            _preset_environment(_policy)
        return _policy


def set_thread_policy(policy: ThreadPolicy | int | str) -> ThreadPolicy:
    """Choose the process's policy (a :class:`ThreadPolicy`, a compute thread count or a
    ``KEYFACE_THREADS`` string) and apply it. Call it before any compute work: the counts are
    meant to be set once per process. Child processes inherit it through ``KEYFACE_THREADS``."""
    global _policy
    if isinstance(policy, str):
        policy = parse_override(policy)
    elif isinstance(policy, int):
        policy = ThreadPolicy(compute=policy, source="api")
    with _lock:
        _policy = policy
        os.environ[ENV_VAR] = policy.override()
        _preset_environment(policy)
        _applied.clear()
    return apply_thread_policy()


def apply_thread_policy() -> ThreadPolicy:
    """Set the thread pools of every compute library loaded so far to the process's policy.

    Cheap and idempotent: a library already set is not touched again (its count is never
    changed twice), one loaded since the last call is set now. Returns the policy."""
    policy = current_policy()
    with _lock:
        if "torch" in sys.modules and "torch" not in _applied:
            _applied["torch"] = _apply_torch(policy)
        if "cv2" in sys.modules and "cv2" not in _applied:
            import cv2

            cv2.setNumThreads(policy.compute)
            _applied["cv2"] = policy.compute
        loaded = _native_pools_signature()
        if loaded and _applied.get("threadpoolctl") != loaded:
            _apply_threadpoolctl(policy)
            _applied["threadpoolctl"] = loaded
    return policy


def _apply_torch(policy: ThreadPolicy) -> dict[str, int]:
    import torch

    if torch.get_num_threads() != policy.compute:
        torch.set_num_threads(policy.compute)
    interop = torch.get_num_interop_threads()
    if interop != 1:
        try:  # allowed once, before any inter-op work; keyface runs none
            torch.set_num_interop_threads(1)
            interop = 1
        except RuntimeError:
            pass
    return {"intra_op": torch.get_num_threads(), "inter_op": interop}


def _native_pools_signature() -> tuple[str, ...]:
    """Which native libraries with thread pools are loaded (numpy, scipy, torch, sklearn...):
    a new one since the last call means threadpoolctl must look again."""
    names = ("numpy", "scipy", "scipy.linalg", "torch", "cv2", "onnxruntime", "sklearn")
    return tuple(m for m in names if m in sys.modules)


def _apply_threadpoolctl(policy: ThreadPolicy) -> None:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        logger.debug("threadpoolctl missing: BLAS/OpenMP pools not limited")
        return
    threadpool_limits(limits=policy.blas, user_api="blas")
    threadpool_limits(limits=policy.compute, user_api="openmp")


def onnx_session_options(threads: int | None = None) -> Any:
    """onnxruntime ``SessionOptions`` that follow the policy: ``threads`` (default: the
    policy's compute count) intra-op threads, one inter-op thread, sequential execution, and
    workers that sleep instead of spinning unless the policy says spin."""
    import onnxruntime as ort

    policy = current_policy()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads or policy.compute
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    spin = "1" if policy.spin else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", spin)
    options.add_session_config_entry("session.inter_op.allow_spinning", spin)
    return options


def child_environment(compute: int | None = None) -> dict[str, str]:
    """Environment entries for a child process: the policy (or one with ``compute`` threads,
    as a pool worker that is one of several wants)."""
    policy = current_policy()
    if compute is not None:
        policy = ThreadPolicy(compute=compute, blas=policy.blas, spin=policy.spin, source="api")
    return {ENV_VAR: policy.override(), **policy.environment()}


def describe_threads() -> dict[str, Any]:
    """The policy and what each loaded library actually uses (``keyface info --system``)."""
    policy = apply_thread_policy()
    out: dict[str, Any] = {
        "policy": {
            "compute": policy.compute,
            "blas": policy.blas,
            "spin": policy.spin,
            "source": policy.source,
            ENV_VAR: os.environ.get(ENV_VAR),
        },
        "cpus": _cpu_count(),
        "environment": {k: os.environ.get(k) for k in policy.environment()},
    }
    if "torch" in sys.modules:
        import torch

        out["torch"] = {
            "intra_op": torch.get_num_threads(),
            "inter_op": torch.get_num_interop_threads(),
        }
    if "cv2" in sys.modules:
        import cv2

        out["opencv"] = cv2.getNumThreads()
    try:
        from threadpoolctl import threadpool_info

        out["pools"] = [
            {
                "library": p.get("internal_api"),
                "api": p.get("user_api"),
                "threads": p.get("num_threads"),
                "path": os.path.basename(str(p.get("filepath", ""))),
            }
            for p in threadpool_info()
        ]
    except ImportError:  # pragma: no cover
        pass
    return out
