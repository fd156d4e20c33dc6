"""A resume with changed optimizer or schedule values: applied (and said, and recorded) or refused.

Lightning restores the optimizer and the scheduler from the checkpoint, hyper-parameters included,
so ``resume=... optimizer.lr=...`` alone would keep training at the checkpoint's lr. ``ResumeChanges``
notes the hyper-parameters the recipe builds (``on_fit_start``, after ``configure_optimizers``,
before the restore) and puts them back over the restored ones (``on_train_start``): every
param-group value (lr per 256 images scaled by the batch, weight decay, momentum, betas, ...), the
scheduler's base lrs and its schedule (warm-up and total steps, start and end factors). The lr of the
current step is then ``base lr x schedule(step)``. Optimizer state (momentum buffers, Adam moments)
and the step count are kept. What changed is printed in one line and added to ``resume-N.json``.
A change of optimizer or scheduler *kind* cannot be applied to the saved state and is refused
before anything is written (``resume_recipe.check_same_kinds``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.fabric.utilities.rank_zero import rank_zero_only

# LambdaLR's schedule object (optim._WarmupCosineFactor) field -> what the user calls it.
SCHEDULE_FIELDS = {"warmup": "warm-up steps", "total": "total steps", "start": "start_factor", "floor": "min_factor"}


def _groups(trainer: pl.Trainer) -> list[list[dict[str, Any]]]:
    return [[{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups] for opt in trainer.optimizers]


def _schedules(trainer: pl.Trainer) -> list[dict[str, Any]]:
    out = []
    for config in trainer.lr_scheduler_configs:
        sched = config.scheduler
        # getattr with a default: LambdaLR has lr_lambdas; a scheduler of another kind has none.
        fns = [dict(vars(fn)) for fn in getattr(sched, "lr_lambdas", [])]
        out.append({"base_lrs": list(sched.base_lrs), "lambdas": fns})
    return out


def _show(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


class ResumeChanges(pl.Callback):
    """Applies the recipe's optimizer and schedule values to a resumed run (see the module docstring).

    Args:
        record: the run's ``resume-N.json`` (written before training); ``applied`` is added to it.
    """

    def __init__(self, record: Path) -> None:
        self.record = Path(record)
        self.fresh_groups: list[list[dict[str, Any]]] = []
        self.fresh_schedules: list[dict[str, Any]] = []
        self.applied: dict[str, list[Any]] = {}

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.fresh_groups, self.fresh_schedules = _groups(trainer), _schedules(trainer)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        changes: dict[str, list[Any]] = {}
        # With a scheduler the step's lr follows from its base lr (``initial_lr``) and the schedule,
        # set below; without one (``scheduler: null``) the group's ``lr`` is the recipe's value.
        scheduled = bool(trainer.lr_scheduler_configs)
        for opt, fresh in zip(trainer.optimizers, self.fresh_groups):
            for group, new in zip(opt.param_groups, fresh):
                for key, value in new.items():
                    if (key != "lr" or not scheduled) and group.get(key) != value:
                        name = "lr" if key == "initial_lr" else key
                        changes.setdefault(name, [group.get(key), value])
                        group[key] = value
        for config, fresh in zip(trainer.lr_scheduler_configs, self.fresh_schedules):
            sched = config.scheduler
            for fn, new in zip(getattr(sched, "lr_lambdas", []), fresh["lambdas"]):  # as in _schedules
                for key, value in new.items():
                    if vars(fn).get(key) != value:
                        changes.setdefault(f"schedule {SCHEDULE_FIELDS.get(key, key)}", [vars(fn).get(key), value])
                        setattr(fn, key, value)
            if list(sched.base_lrs) != fresh["base_lrs"]:
                changes.setdefault("lr", [sched.base_lrs[0], fresh["base_lrs"][0]])
                sched.base_lrs = list(fresh["base_lrs"])
            if changes and hasattr(sched, "lr_lambdas"):  # the lr of this step under the recipe's values
                for group, base, fn in zip(sched.optimizer.param_groups, sched.base_lrs, sched.lr_lambdas):
                    group["lr"] = base * fn(sched.last_epoch)
                sched._last_lr = [g["lr"] for g in sched.optimizer.param_groups]
        self.applied = changes
        if rank_zero_only.rank != 0:
            return
        if changes:
            said = ", ".join(f"{k} {_show(a)} -> {_show(b)}" for k, (a, b) in changes.items())
            print(f"ssl-toolkit: resume: applied the recipe's values over the checkpoint's: {said} "
                  f"(from step {trainer.global_step} on)", file=sys.stderr)  # fmt: skip
        if self.record.is_file():
            data = json.loads(self.record.read_text())
            data["applied"] = {k: {"checkpoint": a, "now": b} for k, (a, b) in changes.items()}
            self.record.write_text(json.dumps(data, indent=2) + "\n")
