"""The one launcher of the tests' multi-process runs (gloo, CPU): every test that starts more than
one process goes through here.

Two ways to start the processes:

- ``run_ranks(worker, out, args)``: ``python WORKER RANK WORLD OUT/init OUT *args`` for every rank
  (a rank-explicit gloo worker that joins through the file ``OUT/init`` and writes its result to
  ``OUT/rank{RANK}.pt``); returns the ranks' results, ``torch.load``-ed, in rank order.
  ``run_case(case, inputs, out)`` is the same for a case of tests/distributed_worker.py.
- ``torchrun(args, cwd)``: ``python -m torch.distributed.run --standalone --nproc_per_node WORLD
  *args`` (the README's multi-GPU command, and how Lightning's DDP is launched on a cluster).

Both give every process ``PYTHONPATH=<repo>:<repo>/tests`` and one OpenMP thread (the suite shares
2 cores), and fail with ``AssertionError`` holding each process's exit status and the tail of its
stderr when a process fails or the run outlives ``timeout`` (seconds); on a timeout or a failed rank
the other processes are killed rather than left waiting on a collective.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
DISTRIBUTED_WORKER = Path(__file__).with_name("distributed_worker.py")
STDERR_TAIL = 4000  # characters of each process's stderr quoted in a failure


def process_env(**extra: str) -> dict[str, str]:
    """This process's environment with the repository and tests/ importable and 1 OpenMP thread."""
    return {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}", "OMP_NUM_THREADS": "1", **extra}


def run_ranks(worker: Path, out: Path, args: Sequence[str] = (), world: int = 2, timeout: float = 300) -> list[dict]:
    """Start ``world`` ranks of ``worker`` (see the module docstring), wait for all of them, and return
    ``torch.load(out / f"rank{r}.pt")`` for r = 0 .. world - 1. Each rank's stderr is kept in
    ``out/rank{r}.err``. Raises ``AssertionError`` if a rank exits non-zero or the ranks are not all
    done within ``timeout`` seconds."""
    out.mkdir(parents=True, exist_ok=True)
    procs, errs = [], [out / f"rank{r}.err" for r in range(world)]
    for r in range(world):
        with errs[r].open("w") as err:  # a file, not a pipe: a full pipe would stall the rank
            command = [sys.executable, str(worker), str(r), str(world), str(out / "init"), str(out), *args]
            procs.append(subprocess.Popen(command, env=process_env(), stderr=err, text=True))
    deadline = time.monotonic() + timeout
    while not all(code == 0 for code in [p.poll() for p in procs]):
        codes = [p.returncode for p in procs]
        failed = any(code not in (None, 0) for code in codes)
        if failed or time.monotonic() > deadline:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            why = "a rank failed" if failed else f"ranks still running after {timeout:.0f} s"
            raise AssertionError(_report(worker, why, [p.returncode for p in procs], [e.read_text() for e in errs]))
        time.sleep(0.05)
    return [torch.load(out / f"rank{r}.pt") for r in range(world)]


def run_case(case: str, inputs: dict, out: Path, timeout: float = 300) -> list[dict]:
    """Run ``CASES[case]`` of tests/distributed_worker.py on 2 ranks: ``inputs`` (the global batch and
    settings) is saved to ``out/inputs.pt``, which every rank reads; returns the ranks' results."""
    out.mkdir(parents=True, exist_ok=True)
    torch.save(inputs, out / "inputs.pt")
    return run_ranks(DISTRIBUTED_WORKER, out, [case], timeout=timeout)


def torchrun(
    args: Sequence[str],
    cwd: Path,
    world: int = 2,
    timeout: float = 300,
    env: dict[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --standalone --nproc_per_node WORLD *args`` in ``cwd``, with
    ``process_env(**env)``; returns the finished process (stdout and stderr as text). With ``check``
    (the default) a non-zero exit raises ``AssertionError`` with the stderr tail; a run past ``timeout``
    seconds is killed, launcher and processes together, and raises ``AssertionError`` either way."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(world), *args]
    proc = subprocess.Popen(command, env=process_env(**(env or {})), cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher's session holds the processes it started
        stdout, stderr = proc.communicate()
        raise AssertionError(_report(args[0], f"still running after {timeout:.0f} s", [None], [stderr])) from None
    if check and proc.returncode != 0:
        raise AssertionError(_report(args[0], "failed", [proc.returncode], [stderr]))
    return subprocess.CompletedProcess(command, proc.returncode, stdout, stderr)


def _report(what: object, why: str, codes: list[int | None], errs: list[str]) -> str:
    lines = [f"{what}: {why}"]
    for r, (code, err) in enumerate(zip(codes, errs, strict=True)):
        lines.append(f"--- process {r}: exit status {code}; stderr tail ---\n{err[-STDERR_TAIL:]}")
    return "\n".join(lines)
