"""Preemption through the CLI with a real signal: SIGTERM (or SIGUSR1, Ctrl-C) in the middle of an
epoch saves a checkpoint at that step, prints one line with the resume command and exits with
128 + signal; ``resume=auto`` then ends bit for bit where an uninterrupted run ends."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_resume import _assert_same_tensors, _load, _recipe, reference  # noqa: F401 (fixture)

from ssl_toolkit.run.cli import main

# Steps slowed to ~0.3 s so the signal lands mid-run; a marker file says training has started.
SLOW = """
import sys, time
from pathlib import Path
from ssl_toolkit.module import SSLModule
from ssl_toolkit.run.cli import main

def on_train_batch_end(self, outputs, batch, batch_idx):
    if self.global_step == 3:
        Path(sys.argv[1]).touch()
    time.sleep(0.3)

SSLModule.on_train_batch_end = on_train_batch_end
sys.exit(main(sys.argv[2:]))
"""


def _signal_mid_run(tmp_path: Path, recipe: Path, signum: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    marker = tmp_path / "training"
    proc = subprocess.Popen([sys.executable, "-c", SLOW, str(marker), "fit", str(recipe)], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signum)  # a real signal from another process, at whatever point the run is
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGUSR1, 138)])
def test_signal_mid_epoch_saves_exits_128_plus_signal_and_resume_is_exact(
    tmp_path: Path,
    reference: dict,  # noqa: F811
    signum: int,
    code: int,
) -> None:
    recipe = _recipe(tmp_path, "run")
    res = _signal_mid_run(tmp_path, recipe, signum)
    assert res.returncode == code, res.stderr[-3000:]
    line = res.stderr.strip().splitlines()[-1]
    name = signal.Signals(signum).name
    assert line.startswith(f"ssl-toolkit: stopped by {name} after step "), line
    step = int(line.split("after step ")[1].split(";")[0])
    assert 3 <= step < 10  # mid-run; 4 steps per epoch: usually mid-epoch
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert f"checkpoint: {last};" in line
    saved = _load(last)
    assert saved["global_step"] == step  # the step the signal stopped, not the last periodic checkpoint
    assert saved["SyntheticData"] == {"epoch": step // 4, "batches": step % 4}
    assert "run folder:" not in res.stdout  # no summary of a finished run
    assert "`weights_only` was not set" not in res.stderr  # the save says weights_only=False itself

    command = shlex.split(line.split("resume with: ")[1])
    assert command == ["ssl-toolkit", "fit", str(recipe), f"resume={tmp_path / 'run'}"]
    assert main(command[1:]) == 0
    resumed = _load(last)
    assert resumed["global_step"] == 10
    _assert_same_tensors(resumed["state_dict"], reference["state_dict"], "state_dict")  # bit for bit
    _assert_same_tensors(resumed["optimizer_states"], reference["optimizer_states"], "optimizer")
