"""Atomic checkpoint writes, and checkpoints that must never be unpickled."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ssl_toolkit.errors import CheckpointError, RecipeError
from ssl_toolkit.recipe.checkpoint import read_checkpoint
from ssl_toolkit.run.checkpoint_io import AtomicCheckpointIO, atomic_save
from ssl_toolkit.run.cli import main
from ssl_toolkit.run.resume import find_resume


class Unpicklable:
    """Fails half-way through ``torch.save`` (after the tensors before it were written)."""

    def __reduce__(self):  # noqa: ANN204
        raise RuntimeError("disk full")


class Payload:
    """A pickle bomb: unpickling it would create ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):  # noqa: ANN204
        return (Path.touch, (self.path,))


def test_exception_mid_write_leaves_previous_checkpoint_intact(tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    atomic_save({"state_dict": {"w": torch.arange(4.0)}, "global_step": 3}, path)
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="disk full"):
        atomic_save({"state_dict": {"w": torch.randn(100_000)}, "boom": Unpicklable()}, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["last.ckpt"]  # the temporary file is gone
    assert torch.equal(read_checkpoint(path)["state_dict"]["w"], torch.arange(4.0))


def test_lightning_plugin_replaces_in_one_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    io, path = AtomicCheckpointIO(), tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.zeros(2)}, "global_step": 1}, path)
    seen: list[tuple[str, bytes]] = []
    replace = os.replace

    def spy(src: str, dst: str) -> None:  # at the moment of the swap, dst still holds the old file
        seen.append((Path(src).name, Path(dst).read_bytes()))
        replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    old = path.read_bytes()
    io.save_checkpoint({"state_dict": {"w": torch.ones(2)}, "global_step": 2}, path)
    assert len(seen) == 1 and seen[0][0].startswith(".last.ckpt.") and seen[0][0].endswith(".tmp")
    assert seen[0][1] == old
    assert read_checkpoint(path)["global_step"] == 2 and oct(path.stat().st_mode & 0o777) != "0o600"


def test_kill_during_write_keeps_the_old_file(tmp_path: Path) -> None:
    # A process killed (SIGKILL) between writing its temporary file and the rename.
    path = tmp_path / "checkpoints" / "last.ckpt"
    atomic_save({"state_dict": {"w": torch.zeros(3)}, "global_step": 5}, path)
    script = (
        "import os, signal, sys, torch\n"
        "from ssl_toolkit.run.checkpoint_io import atomic_save\n"
        "os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)\n"
        "atomic_save({'state_dict': {'w': torch.ones(10**6)}, 'global_step': 6}, sys.argv[1])\n"
    )
    res = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, timeout=60)
    assert res.returncode == -9
    assert read_checkpoint(path)["global_step"] == 5  # the old file, whole
    leftovers = [p for p in path.parent.iterdir() if p.name != "last.ckpt"]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".last.ckpt.")
    assert find_resume(str(tmp_path), "x").step == 5  # resume never picks the partial file


def test_pickle_bomb_is_refused_without_running_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    marker, evil = tmp_path / "pwned", tmp_path / "run" / "checkpoints" / "evil.ckpt"
    evil.parent.mkdir(parents=True)
    torch.save({"state_dict": {"w": torch.zeros(1)}, "epoch": Payload(marker)}, evil)
    with pytest.raises(CheckpointError, match="refuses"):
        read_checkpoint(evil)
    with pytest.raises(RecipeError, match="^resume: .*evil.ckpt holds objects"):
        find_resume(str(evil), "x")
    for args in (["knn", str(evil)], ["probe", str(evil)], ["select", str(tmp_path / "run")]):
        assert main([*args, "--out", str(tmp_path / "sel.json")] if args[0] == "select" else args) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("ssl-toolkit: error: checkpoint:") and "refuses" in err and "\n" not in err, err
    assert not marker.exists()
