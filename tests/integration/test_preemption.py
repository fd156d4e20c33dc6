"""Preemption through the CLI with a real signal: SIGTERM (or SIGUSR1, Ctrl-C) in the middle of an
epoch saves a checkpoint at that step, prints one line with the resume command and exits with
128 + signal; ``resume=auto`` then ends bit for bit where an uninterrupted run ends. A SIGTERM
before the first training step stops the run there with one line and 143, saving nothing and
leaving a resumed run's checkpoints as they were."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from run.test_resume import _assert_same_tensors, _load, _recipe, reference  # noqa: F401 (fixture)

from conftest import REPO, tiny_recipe
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
    if signum != signal.SIGTERM:
        return  # one handler for every signal: the resume from its checkpoint is checked once, for SIGTERM
    assert main(command[1:]) == 0
    resumed = _load(last)
    assert resumed["global_step"] == 10
    _assert_same_tensors(resumed["state_dict"], reference["state_dict"], "state_dict")  # bit for bit
    _assert_same_tensors(resumed["optimizer_states"], reference["optimizer_states"], "optimizer")


# A pause at one point of the start-up (a marker file says it has been reached) that lasts until
# the test has sent its signal (a second file says so).
PAUSE = """
import sys, time
from pathlib import Path
import ssl_toolkit.run.fit as fit_module
from ssl_toolkit.module import SSLModule
from ssl_toolkit.run.cli import main

where, reached, sent = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])

def pause():
    reached.touch()
    while not sent.exists():
        time.sleep(0.05)

if where == "checks":  # the recipe's parts are being built: nothing written yet
    build_parts = fit_module.build_parts
    fit_module.build_parts = lambda recipe: (pause(), build_parts(recipe))[1]
elif where == "setup":  # inside trainer.fit, before Lightning installs its SIGTERM handler
    SSLModule.setup = lambda self, stage: pause()
elif where == "sanity":  # inside the sanity check, where Lightning's SIGTERM handler is in place
    validation_step = SSLModule.validation_step
    def step(self, *args, **kwargs):
        if self.trainer.sanity_checking and kwargs.get("dataloader_idx", args[2] if len(args) > 2 else 0) == 0:
            pause()
        return validation_step(self, *args, **kwargs)
    SSLModule.validation_step = step
sys.exit(main(sys.argv[4:]))
"""


def _sigterm_at(tmp_path: Path, where: str, args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    reached, sent = tmp_path / f"reached-{where}", tmp_path / f"sent-{where}"
    proc = subprocess.Popen([sys.executable, "-c", PAUSE, where, str(reached), str(sent), *args], env=env,
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 600  # imports alone take minutes on busy cores
    while not reached.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert reached.exists(), proc.communicate(timeout=60)[1][-3000:]
    proc.send_signal(signal.SIGTERM)
    sent.touch()
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _eval_recipe(tmp_path: Path) -> Path:
    # 4 steps with k-NN on and Lightning's 2-batch sanity check before them.
    recipe = tiny_recipe(REPO / "recipes" / "fashion_mnist" / "simclr.yaml", tmp_path, steps=4)
    recipe["trainer"]["num_sanity_val_steps"] = 2
    recipe["callbacks"] = {"knn": {"k": 5}, "checkpoint": {}}
    path = tmp_path / "eval.yaml"
    path.write_text(OmegaConf.to_yaml(recipe))
    return path


@pytest.mark.parametrize("where", ["checks", "sanity"])
def test_sigterm_before_training_stops_with_one_line_and_143(tmp_path: Path, where: str) -> None:
    # "checks": Python's default action killed the process silently (143, nothing printed);
    # "sanity": Lightning's SIGTERMException left fit with status 0, as if the run had finished.
    recipe = _eval_recipe(tmp_path)
    res = _sigterm_at(tmp_path, where, ["fit", str(recipe)])
    assert res.returncode == 143, res.stderr[-3000:]
    line = res.stderr.strip().splitlines()[-1]
    start = shlex.join(["ssl-toolkit", "fit", str(recipe)])
    if where == "checks":
        assert (
            line
            == f"ssl-toolkit: stopped by SIGTERM before training started; nothing written; start again with: {start}"
        )  # noqa: E501
        assert not (tmp_path / "run").exists()
    else:
        assert line == (f"ssl-toolkit: stopped by SIGTERM before training started; no checkpoint written "
                        f"({tmp_path / 'run'} holds the recipe and logs only); start again with: {start}")  # fmt: skip
        assert not any((tmp_path / "run").rglob("*.ckpt")) and (tmp_path / "run" / "recipe.yaml").is_file()
    assert "Traceback" not in res.stderr and "run folder:" not in res.stdout


def test_sigterm_while_a_resume_sets_up_leaves_its_checkpoints_as_they_were(tmp_path: Path) -> None:
    recipe = _eval_recipe(tmp_path)
    assert main(["fit", str(recipe), "trainer.max_steps=2"]) == 0
    checkpoints = {p: p.read_bytes() for p in (tmp_path / "run" / "checkpoints").glob("*.ckpt")}
    assert tmp_path / "run" / "checkpoints" / "last.ckpt" in checkpoints
    res = _sigterm_at(tmp_path, "setup", ["fit", str(recipe), "resume=auto"])
    assert res.returncode == 143, res.stderr[-3000:]
    line = res.stderr.strip().splitlines()[-1]
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    resume = shlex.join(["ssl-toolkit", "fit", str(recipe), f"resume={tmp_path / 'run'}"])
    assert line == (f"ssl-toolkit: stopped by SIGTERM before training started; checkpoints unchanged "
                    f"({last} is at step 2); resume with: {resume}")  # fmt: skip
    assert {p: p.read_bytes() for p in (tmp_path / "run" / "checkpoints").glob("*.ckpt")} == checkpoints
    assert main(shlex.split(resume)[1:]) == 0 and _load(last)["global_step"] == 4  # the resume then works


def test_sigterm_to_the_whole_process_group_with_loader_workers_still_saves_and_exits_143(tmp_path: Path) -> None:
    # timeout, a terminal's Ctrl-C and SLURM signal every process of the job: the DataLoader worker
    # gets the SIGTERM too, and must leave it to the training process (data/worker_signals.py).
    recipe_path = _recipe(tmp_path, "run")
    recipe = OmegaConf.to_container(OmegaConf.load(recipe_path))
    recipe["data"]["num_workers"] = 1
    recipe_path.write_text(OmegaConf.to_yaml(recipe))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    marker = tmp_path / "training"
    proc = subprocess.Popen([sys.executable, "-c", SLOW, str(marker), "fit", str(recipe_path)], env=env,
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGTERM)  # the run and its loader worker alike
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    assert "Traceback" not in err and "killed by signal" not in err, err[-3000:]
    line = err.strip().splitlines()[-1]
    assert line.startswith("ssl-toolkit: stopped by SIGTERM after step "), line
    step = int(line.split("after step ")[1].split(";")[0])
    assert _load(tmp_path / "run" / "checkpoints" / "last.ckpt")["global_step"] == step


LEFT_ITERATING = """
import torch
from ssl_toolkit.data.worker_signals import ignore_stop_signals

loader = torch.utils.data.DataLoader(torch.arange(64), batch_size=4, num_workers=2,
                                     worker_init_fn=ignore_stop_signals)
batches = iter(loader)
next(batches)  # workers started and still iterating, as inside an evaluation that fails
raise RuntimeError("failed while a loader was being iterated")
"""


def test_an_error_while_workers_that_ignore_sigterm_are_iterating_still_exits(tmp_path: Path) -> None:
    # multiprocessing's exit hook ends daemonic children with SIGTERM and then joins them; workers
    # that ignore SIGTERM kept the process alive forever after its traceback (seen after an error in
    # evaluation). The toolkit's exit hook ends them with SIGKILL first.
    script = tmp_path / "left_iterating.py"
    script.write_text(LEFT_ITERATING)
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    assert done.returncode == 1 and "failed while a loader was being iterated" in done.stderr
    assert time.monotonic() - started < 120
