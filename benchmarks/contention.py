"""How much slower keyface gets when the CPU is shared: a command run alone, then beside N
busy-loop processes (each one spins one core at 100 %, as another user's build or call would).

    python benchmarks/contention.py decode                  # one named job, idle then 2 busy
    python benchmarks/contention.py suite decode train server --busy 2 \
        --json results/threads/contention.json
    python benchmarks/contention.py --cmd "keyface decode x.kf -o /tmp/x.y4m" --busy 1

Jobs (each prepared once, outside the timing, in a scratch folder):
- ``suite``: the full test suite, ``python -m pytest -q -p no:cacheprovider`` (what
  ``make test`` runs after ruff);
- ``decode``: ``keyface decode`` of the carphone clip coded at the default quality (300 frames);
- ``train``: a short ``keyface train fit`` (generator, 30 steps, batch 2, patch 64) on a data
  cache prepared from carphone;
- ``server``: ``benchmarks/server_load.py --max-senders 1`` (one live sender, one receiver,
  8 s): the figure is the sender's rendered frames/s at the server, not the wall time.

For every job the table gives the idle and the loaded figure and their ratio (wall time: loaded
/ idle, so 2.0 means twice as long; frames/s: idle / loaded). ``--timeout`` bounds each run: a run
that does not end in time is killed and reported as such (with its time so far), which is how a
stall shows. The environment of the measured command is this process's own, so a thread policy
set by ``KEYFACE_THREADS`` (see docs/threads.md) applies to it as it would to a user.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _spin(stop: multiprocessing.synchronize.Event) -> None:  # type: ignore[name-defined]
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x += 1


@dataclass
class Job:
    name: str
    command: list[str]
    metric: str | None = None  # regex with one group: a frames/s figure in the output


@dataclass
class Run:
    job: str
    busy: int
    seconds: float
    returncode: int | None  # None: killed at the timeout
    value: float | None  # the metric's figure, when the job has one


def _carphone() -> Path:
    from keyface.cli.demo import default_clip

    return default_clip()


def prepare(names: list[str], scratch: Path) -> list[Job]:
    jobs: list[Job] = []
    keyface = str(BIN / "keyface")
    for name in names:
        if name == "suite":
            cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x"]
            jobs.append(Job(name, cmd))
        elif name == "decode":
            kf = scratch / "carphone.kf"
            if not kf.exists():
                subprocess.run(
                    [keyface, "encode", str(_carphone()), "-o", str(kf), "-q"], check=True
                )
            cmd = [keyface, "decode", str(kf), "-o", str(scratch / "decoded.y4m"), "-q"]
            jobs.append(Job(name, cmd))
        elif name == "train":
            data = scratch / "train_data"
            if not data.exists():
                clips = scratch / "clips"
                clips.mkdir(exist_ok=True)
                link = clips / "carphone.mp4"
                if not link.exists():
                    link.symlink_to(_carphone())
                prep = [keyface, "train", "prepare", "--clips", str(clips), "--out", str(data)]
                prep += ["--max-frames", "120", "--workers", "1", "-q"]
                subprocess.run(prep, check=True)
            run = scratch / "train_run"
            cmd = [keyface, "train", "fit", "--data", str(data), "--run", str(run)]
            cmd += ["--steps", "30", "--batch", "2", "--patch", "64", "--val-every", "0", "-q"]
            jobs.append(Job(name, cmd))
        elif name == "server":
            cmd = [sys.executable, str(ROOT / "benchmarks" / "server_load.py")]
            cmd += ["--max-senders", "1", "--seconds", "8", "--input", str(_carphone())]
            jobs.append(Job(name, cmd, metric=r"slowest ([0-9.]+) frames/s"))
        else:
            raise SystemExit(f"contention: unknown job {name!r} (suite, decode, train, server)")
    return jobs


def run_once(job: Job, busy: int, timeout: float, scratch: Path) -> Run:
    stop = multiprocessing.Event()
    spinners = [
        multiprocessing.Process(target=_spin, args=(stop,), daemon=True) for _ in range(busy)
    ]
    for p in spinners:
        p.start()
    if job.name == "train":  # a fresh run each time, not a resume
        subprocess.run(["rm", "-rf", str(scratch / "train_run")], check=True)
    try:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            job.command,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            out, _ = proc.communicate(timeout=timeout)
            rc: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            rc = None
        seconds = time.perf_counter() - t0
    finally:
        stop.set()
        for p in spinners:
            p.join(5)
            if p.is_alive():
                p.kill()
    value = None
    if job.metric:
        found = re.findall(job.metric, out)
        value = float(found[-1]) if found else None
    if rc not in (0, None):
        tail = "\n".join(out.splitlines()[-15:])
        print(f"  {job.name} exited {rc}:\n{tail}", file=sys.stderr)
    return Run(job.name, busy, round(seconds, 2), rc, value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("jobs", nargs="*", help="suite, decode, train, server")
    parser.add_argument("--cmd", help="a command line to measure instead of named jobs")
    parser.add_argument("--busy", type=int, default=2, help="busy-loop neighbours (default 2)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
    parser.add_argument("--skip-idle", action="store_true", help="only the loaded run")
    parser.add_argument("--label", default="", help="a name for this code state (before/after)")
    parser.add_argument("--json", type=Path, help="append the results to this JSON file")
    args = parser.parse_args()
    if not args.jobs and not args.cmd:
        parser.error("name a job or give --cmd")
    scratch = Path(tempfile.gettempdir()) / "keyface_contention"
    scratch.mkdir(exist_ok=True)
    jobs = prepare(args.jobs, scratch)
    if args.cmd:
        jobs.append(Job("cmd", shlex.split(args.cmd)))
    env_policy = os.environ.get("KEYFACE_THREADS", "(default)")
    print(f"load average at start {os.getloadavg()[0]:.2f}; KEYFACE_THREADS={env_policy}")
    runs: list[Run] = []
    header = f"{'job':8} {'idle':>10} {f'{args.busy} busy':>10} {'ratio':>6}"
    rows = []
    for job in jobs:
        pair = []
        for busy in ([] if args.skip_idle else [0]) + [args.busy]:
            r = run_once(job, busy, args.timeout, scratch)
            runs.append(r)
            pair.append(r)
            what = f"{r.value} frames/s" if job.metric else f"{r.seconds:.1f} s"
            state = "" if r.returncode == 0 else (" KILLED" if r.returncode is None else " FAILED")
            print(f"  {job.name} beside {busy} busy: {what}{state}", flush=True)
        if len(pair) == 2:
            a, b = pair
            if job.metric and a.value and b.value:
                ratio = a.value / b.value
                cells = (f"{a.value:.1f} fps", f"{b.value:.1f} fps")
            else:
                ratio = b.seconds / a.seconds
                cells = (f"{a.seconds:.1f} s", f"{b.seconds:.1f} s")
            rows.append(f"{job.name:8} {cells[0]:>10} {cells[1]:>10} {ratio:6.2f}")
    if rows:
        print(header)
        print("\n".join(rows))
    if args.json:
        doc = json.loads(args.json.read_text()) if args.json.exists() else []
        doc.append(
            {
                "label": args.label,
                "keyface_threads": env_policy,
                "cpu_count": os.cpu_count(),
                "busy": args.busy,
                "runs": [asdict(r) for r in runs],
            }
        )
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
