"""The thread policy (keyface.threads, docs/threads.md): one record decides the threads of torch,
onnxruntime, OpenCV, OpenMP and BLAS; ``KEYFACE_THREADS`` / ``keyface --threads`` override it;
children inherit it; ``keyface info --system`` reports it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from keyface.cli.main import main
from keyface.threads import (
    ENV_VAR,
    ThreadPolicy,
    child_environment,
    current_policy,
    default_threads,
    onnx_session_options,
    parse_override,
)


def test_default_leaves_half_the_machine_free() -> None:
    assert [default_threads(n) for n in (1, 2, 3, 4, 8, 16, 64)] == [1, 1, 1, 2, 4, 4, 4]


def test_override_grammar() -> None:
    assert parse_override("3") == ThreadPolicy(compute=3, source=ENV_VAR)
    assert parse_override("all", cpu_count=6).compute == 6
    assert parse_override(" 2,spin ").spin is True
    assert parse_override("2,nospin").spin is False
    for bad in ("0", "-1", "two", "2,fast", "1,2,3", ""):
        with pytest.raises(ValueError, match=ENV_VAR):
            parse_override(bad)
    with pytest.raises(ValueError, match="--threads"):
        parse_override("x", what="--threads")


def test_policy_maps_onto_the_libraries_variables() -> None:
    env = ThreadPolicy(compute=3).environment()
    assert env["OMP_NUM_THREADS"] == env["OPENCV_FOR_THREADS_NUM"] == "3"
    assert env["OPENBLAS_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "1"
    assert env["OMP_WAIT_POLICY"] == "PASSIVE" and env["KMP_BLOCKTIME"] == "0"
    assert ThreadPolicy(compute=1, spin=True).environment()["OMP_WAIT_POLICY"] == "ACTIVE"
    with pytest.raises(ValueError):
        ThreadPolicy(compute=0)


def test_this_process_follows_the_policy() -> None:
    """The suite itself runs under the policy (conftest imports keyface before torch)."""
    import torch

    from keyface.threads import apply_thread_policy

    policy = apply_thread_policy()
    assert policy == current_policy()
    assert torch.get_num_threads() == policy.compute
    assert os.environ["OMP_WAIT_POLICY"] in ("PASSIVE", "ACTIVE")


def test_onnxruntime_sessions_follow_the_policy() -> None:
    options = onnx_session_options()
    assert options.intra_op_num_threads == current_policy().compute
    assert options.inter_op_num_threads == 1
    spin = "1" if current_policy().spin else "0"
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == spin
    assert options.get_session_config_entry("session.inter_op.allow_spinning") == spin
    assert onnx_session_options(threads=3).intra_op_num_threads == 3


def test_child_environment_for_pool_workers() -> None:
    env = child_environment(compute=1)
    assert env[ENV_VAR] in ("1", "1,spin") and env["OMP_NUM_THREADS"] == "1"


def _child(code: str, env: dict[str, str]) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ThreadPolicy(1).environment()}
    clean.pop(ENV_VAR, None)
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return out.stdout.strip()


@pytest.mark.slow
def test_a_fresh_process_gets_the_override_everywhere() -> None:
    code = (
        "import keyface, torch, cv2\n"
        "from keyface.threads import apply_thread_policy, onnx_session_options\n"
        "apply_thread_policy()\n"
        "import os\n"
        "print(torch.get_num_threads(), cv2.getNumThreads(),"
        " onnx_session_options().intra_op_num_threads, os.environ['OMP_WAIT_POLICY'])"
    )
    assert _child(code, {ENV_VAR: "2"}).split() == ["2", "2", "2", "PASSIVE"]
    assert _child(code, {ENV_VAR: "1,spin"}).split() == ["1", "1", "1", "ACTIVE"]


def test_the_users_own_variables_are_kept() -> None:
    code = "import keyface, os; print(os.environ['OMP_NUM_THREADS'], os.environ['OMP_WAIT_POLICY'])"
    assert _child(code, {"OMP_NUM_THREADS": "7"}).split() == ["7", "PASSIVE"]


@pytest.mark.slow
def test_torch_imported_first_is_still_set() -> None:
    """A program that imports torch before keyface gets the policy once keyface starts work."""
    code = (
        "import torch; torch.set_num_threads(2)\n"
        "from keyface.threads import apply_thread_policy; apply_thread_policy()\n"
        "print(torch.get_num_threads())"
    )
    assert _child(code, {ENV_VAR: "1"}) == "1"


def test_info_system_reports_the_policy(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--system", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    threads = info["threads"]
    assert threads["policy"]["compute"] == current_policy().compute
    assert threads["torch"]["intra_op"] == current_policy().compute
    assert threads["onnxruntime"]["intra_op"] == current_policy().compute
    assert {p["api"] for p in threads["pools"]} >= {"blas", "openmp"}
    assert all(p["threads"] == 1 for p in threads["pools"] if p["api"] == "blas")
    assert main(["info", "--system"]) == 0
    assert "thread policy" in capsys.readouterr().out


def test_cli_refuses_a_bad_thread_count(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--threads", "0", "info", "--system"]) == 2
    assert "--threads='0'" in capsys.readouterr().err
    assert main(["info"]) == 2  # neither a stream nor --system


@pytest.mark.slow
def test_cli_override_reaches_child_processes() -> None:
    code = (
        "import os, sys\n"
        "from keyface.cli.main import main\n"
        "main(['--threads', '2', 'info', '--system', '--json'])\n"
        "sys.stdout.flush()\n"
        "print(os.environ['KEYFACE_THREADS'], os.environ['OMP_NUM_THREADS'], file=sys.stderr)\n"
    )
    clean = {k: v for k, v in os.environ.items() if k not in ThreadPolicy(1).environment()}
    clean.pop(ENV_VAR, None)
    out = subprocess.run(
        [sys.executable, "-c", code], env=clean, capture_output=True, text=True, timeout=120
    )
    assert json.loads(out.stdout)["threads"]["torch"]["intra_op"] == 2
    assert out.stderr.split()[-2:] == ["2", "2"]


def test_every_test_has_a_time_limit(pytestconfig: pytest.Config) -> None:
    """A stall (a spin barrier in native code) must end the run with every thread's stack, not
    hold the CI for 90 minutes: the thread method works where a signal would never be handled."""
    assert float(pytestconfig.getini("timeout")) > 0
    assert pytestconfig.getini("timeout_method") == "thread"
