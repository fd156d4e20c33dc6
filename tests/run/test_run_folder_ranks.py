"""Every process of a multi-process run trains into one run folder (``run_folder.agreed_run_dir``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ssl_toolkit.run_folder import RUN_DIR_ENV, agreed_run_dir

REPO = Path(__file__).resolve().parents[2]
CHILD = (
    "import sys; from ssl_toolkit.run_folder import agreed_run_dir; "
    "print(agreed_run_dir(sys.argv[1], int(sys.argv[2])))"
)


def child_run_dir(out_dir: Path, rank: int) -> Path:
    """``agreed_run_dir`` in a child process started from this one (as Lightning starts ranks 1..N-1)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(out_dir), str(rank)], env=env, capture_output=True,
                          text=True, check=True)  # fmt: skip
    return Path(proc.stdout.strip())


@pytest.fixture(autouse=True)
def no_inherited_run_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RUN_DIR_ENV, raising=False)


def test_child_ranks_join_the_folder_rank_0_already_wrote_into(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_dir = agreed_run_dir(out, rank=0)
    assert run_dir == out
    run_dir.mkdir()
    (run_dir / "recipe.yaml").write_text("seed: 0\n")  # rank 0 has started writing
    # Rank 1, started by rank 0 afterwards: the same folder, not run_1.
    assert child_run_dir(out, rank=1) == out
    # A new run (rank 0 again) never reuses a folder with files in it.
    assert agreed_run_dir(out, rank=0) == tmp_path / "run_1"


def test_a_stale_value_from_another_parent_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    (out).mkdir()
    (out / "recipe.yaml").write_text("seed: 0\n")
    # Exported by some other process (not this one's parent): rank 1 computes the folder itself.
    monkeypatch.setenv(RUN_DIR_ENV, f"{os.getpid() + 12345}:{tmp_path / 'elsewhere'}")
    assert agreed_run_dir(out, rank=1) == tmp_path / "run_1"
    # Rank 0 always chooses, whatever it inherited, and exports its own pid with the folder.
    assert agreed_run_dir(out, rank=0) == tmp_path / "run_1"
    assert os.environ[RUN_DIR_ENV] == f"{os.getpid()}:{tmp_path / 'run_1'}"


def test_two_process_fit_writes_one_folder_and_prints_one_summary(tmp_path: Path) -> None:
    # ``trainer.devices=2`` on the CPU: Lightning starts rank 1 as a child of rank 0 (gloo), after
    # rank 0 has written into the run folder.
    from omegaconf import OmegaConf

    from conftest import tiny_recipe

    recipe = tiny_recipe(REPO / "recipes" / "fashion_mnist" / "simclr.yaml", tmp_path, steps=2)
    recipe["trainer"].update(devices=2, val_check_interval=2, limit_val_batches=1)
    recipe["callbacks"]["rankme"] = {"num_samples": 16}
    recipe["callbacks"]["diagnostics"] = {"num_images": 16}
    path = tmp_path / "ddp.yaml"
    path.write_text(OmegaConf.to_yaml(recipe))
    cli = Path(sys.executable).with_name("ssl-toolkit")
    env = {k: v for k, v in os.environ.items() if k != RUN_DIR_ENV}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.run([str(cli), "fit", str(path)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    folders = [line for line in proc.stdout.splitlines() if line.startswith("run folder:")]
    assert folders == [f"run folder:       {tmp_path / 'run'}"]  # one summary, rank 0's
    assert not (tmp_path / "run_1").exists()
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    assert "val/diag_proj_auc" in proc.stdout and "sync_dist=True" not in proc.stderr
