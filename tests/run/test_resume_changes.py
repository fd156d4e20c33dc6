"""ResumeChanges on a bare optimizer: the recipe's values over the restored ones, with and without a
scheduler (the whole CLI path is tests/integration/test_hostile_user.py's resume cases)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from ssl_toolkit.run.resume_changes import ResumeChanges


def _trainer(lr: float, scheduled: bool) -> SimpleNamespace:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=lr, momentum=0.9)
    configs = [SimpleNamespace(scheduler=torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5))] if scheduled else []
    return SimpleNamespace(optimizers=[opt], lr_scheduler_configs=configs, global_step=7)


def test_without_a_scheduler_a_new_lr_is_applied_said_and_recorded(tmp_path: Path, capsys) -> None:
    record = tmp_path / "resume-1.json"
    record.write_text("{}")
    changes = ResumeChanges(record)
    changes.on_fit_start(_trainer(0.1, scheduled=False), None)  # the recipe's optimizer: lr 0.1
    restored = _trainer(0.3, scheduled=False)  # the checkpoint's: lr 0.3
    changes.on_train_start(restored, None)
    assert restored.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.1)
    assert (
        "applied the recipe's values over the checkpoint's: lr 0.3 -> 0.1 (from step 7 on)" in capsys.readouterr().err
    )
    assert json.loads(record.read_text())["applied"] == {"lr": {"checkpoint": 0.3, "now": 0.1}}


def test_with_a_scheduler_the_lr_of_the_step_is_the_new_base_lr_times_the_schedule(tmp_path: Path) -> None:
    changes = ResumeChanges(tmp_path / "absent.json")
    changes.on_fit_start(_trainer(0.1, scheduled=True), None)
    restored = _trainer(0.3, scheduled=True)
    changes.on_train_start(restored, None)
    assert restored.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.1 * 0.5)
    assert changes.applied["lr"] == [pytest.approx(0.3), pytest.approx(0.1)]
