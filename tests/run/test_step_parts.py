"""``StepParts``: the parts timed inside the real training step add up to the step, a known delay put
into one part is found in that part, and bench's step rate is the rate ``fit`` reports."""

from __future__ import annotations

import functools
import statistics
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch

from conftest import REPO, tiny_recipe
from ssl_toolkit.recipe.build import build_parts
from ssl_toolkit.run.bench import _fit_steps
from ssl_toolkit.run.step_parts import PARTS, StepParts

CPU = torch.device("cpu")


def _parts_and_batch(name: str, tmp_path: Path, **data: Any) -> tuple[Any, tuple[torch.Tensor, ...], dict]:
    recipe = tiny_recipe(REPO / "recipes" / "fashion_mnist" / f"{name}.yaml", tmp_path)
    recipe["data"].update(data)
    parts = build_parts(recipe)
    batch = tuple(next(iter(parts.datamodule.train_dataloader())))
    return parts.module, batch, recipe


@pytest.mark.parametrize("name", ["simclr", "mocov2", "swav"])  # EMA teacher + queue; multi-crop
def test_parts_add_up_to_the_step(name: str, tmp_path: Path) -> None:
    """Each part is timed by its own pair of clock readings, the step from one batch fetch to the
    next: the parts (all but the unattributed ``loop``) cover 90-100% of the timed steps."""
    module, batch, recipe = _parts_and_batch(name, tmp_path)
    steps = _fit_steps(module, batch, recipe, CPU, steps=8, warmup=2).durations()[2:]
    assert len(steps) == 8
    named = [k for k in PARTS if k != "loop"]
    for d in steps:
        assert all(d[k] >= 0 for k in named), d
        assert sum(d[k] for k in named) <= d["step"] * (1 + 1e-9), d  # no time counted twice
        assert d["loop"] == pytest.approx(d["step"] - sum(d[k] for k in named))
    total = sum(d["step"] for d in steps)
    covered = sum(d[k] for d in steps for k in named)
    assert covered >= 0.9 * total, {k: sum(d[k] for d in steps) / total for k in PARTS}
    for key in ("augment", "backbone_fwd", "head_fwd", "head_bwd", "backbone_bwd", "optimizer"):
        assert min(d[key] for d in steps) > 0, key
    teacher = [d["teacher_fwd"] for d in steps]
    assert (min(teacher) > 0) if name == "mocov2" else (max(teacher) == 0)


def test_known_delays_land_in_their_parts(tmp_path: Path) -> None:
    """A sleep of known length in each part (h2d copy, augmentation, backbone forward, head forward,
    logging, backbone backward, optimizer, EMA/after-step hook) is found in that part's time."""
    module, batch, recipe = _parts_and_batch("simclr", tmp_path)
    delays = {"h2d": 0.020, "augment": 0.030, "backbone_fwd": 0.040, "head_fwd": 0.050, "log": 0.025,
              "backbone_bwd": 0.035, "optimizer": 0.045, "hooks": 0.055}  # fmt: skip

    def after(seconds: float, fn: Any) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            out = fn(*args, **kwargs)
            time.sleep(seconds)
            return out

        return wrapped

    module.transfer_batch_to_device = after(delays["h2d"], module.transfer_batch_to_device)
    module.augment.register_forward_hook(lambda *_: time.sleep(delays["augment"]))
    module.backbone.register_forward_hook(lambda *_: time.sleep(delays["backbone_fwd"]))
    module.head.register_forward_hook(lambda *_: time.sleep(delays["head_fwd"]))
    log = module.log
    module.log = lambda name, *a, **k: (time.sleep(delays["log"]) if name == "train/loss" else None, log(name, *a, **k))

    def slow_first_layer_grad(layer: Any, inputs: Any, out: torch.Tensor) -> None:
        """The first layer's output gradient comes at the end of the backbone's backward."""
        out.register_hook(lambda grad: time.sleep(delays["backbone_bwd"]))

    module.backbone.conv1.register_forward_hook(slow_first_layer_grad)
    module.optimizer_zero_grad = after(delays["optimizer"], module.optimizer_zero_grad)
    module.after_optimizer_step = after(delays["hooks"], module.after_optimizer_step)

    steps = _fit_steps(module, batch, recipe, CPU, steps=5, warmup=1).durations()[1:]
    median = {k: statistics.median(d[k] for d in steps) for k in (*PARTS, "step")}
    for key, seconds in delays.items():
        assert median[key] >= seconds, (key, median)
    assert median["step"] >= sum(delays.values())
    assert median["fetch"] < 0.015 and median["loop"] < 0.015, median  # no delay leaked out of its part


def test_step_rate_is_the_rate_fit_reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a real ``fit`` (its loader, logger, callbacks; tiny model, 40 steps), the images/s that
    bench computes from ``StepParts``' steps and the images/s ``fit`` reports (``Throughput``)
    agree within 5%; and what bench's own run leaves out (cached batches instead of the loader's
    ``fetch``, no callbacks or logger in ``loop``) saves under 5% of fit's step time.

    One run for both sides: two separate runs of the same steps differ by +-10-15% on a shared
    2-core machine (other jobs), in wall-clock and in CPU time alike."""
    import ssl_toolkit.run.fit as fit_module

    held: dict[str, Any] = {}

    def build_parts_kept(recipe: dict[str, Any]) -> Any:
        held["parts"] = build_parts(recipe)
        held["timer"] = StepParts(held["parts"].module, CPU)
        return held["parts"]

    trainer_init = pl.Trainer.__init__

    @functools.wraps(trainer_init)  # the recipe check reads the signature
    def profiled_init(self: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        trainer_init(self, *args, **{"profiler": held["timer"], **kwargs})  # bench passes its own

    monkeypatch.setattr(fit_module, "build_parts", build_parts_kept)
    monkeypatch.setattr(pl.Trainer, "__init__", profiled_init)
    recipe = tiny_recipe(REPO / "recipes" / "fashion_mnist" / "simclr.yaml", tmp_path, steps=40)
    recipe["data"]["num_samples"] = 16 * 48  # one epoch is longer than the run
    recipe["trainer"]["log_every_n_steps"] = 10
    recipe["callbacks"] = {"knn": None, "linear_probe": None, "rankme": None, "diagnostics": None,
                           "rankme_checkpoint": None, "checkpoint": {"every_n_epochs": 1}}  # fmt: skip
    result = fit_module.fit(recipe)
    assert result.measured_steps == 38  # Throughput skips 2 steps
    steps = held["timer"].durations()[2:]  # the same steps (the last one has no end mark)
    assert len(steps) == 37
    bench_rate = 16 * len(steps) / sum(d["step"] for d in steps)
    assert bench_rate == pytest.approx(result.images_per_sec, rel=0.05)
    # bench's own run of the recipe: cached batches, no callbacks or logger; what it saves per step
    module, batch = held["parts"].module, tuple(next(iter(held["parts"].datamodule.train_dataloader())))
    bench_steps = _fit_steps(module, batch, recipe, CPU, steps=10, warmup=2).durations()[2:]

    def outside(runs: list[dict[str, float]]) -> float:
        return statistics.median(d["fetch"] + d["loop"] for d in runs)

    saved = outside(steps) - outside(bench_steps)
    assert saved < 0.05 * statistics.median(d["step"] for d in steps), (outside(steps), outside(bench_steps))
