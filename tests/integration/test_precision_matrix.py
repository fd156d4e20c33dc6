"""Every head x every evaluation callback x every training precision, through a whole run.

For each entry of ``HEADS`` (its first Fashion-MNIST recipe, shrunk to a tiny CPU run) and each of
``32-true``, ``bf16-mixed`` and ``16-mixed`` (CPU autocast): the sanity check, 2 training steps, one
evaluation with k-NN, linear probe, RankMe and diagnostics, a checkpoint, then (every head under
``bf16-mixed``; under ``16-mixed`` the simclr head, for the gradient scaler's state, which no head
changes) a resume from that checkpoint for 2 more steps and another evaluation. Each
run must end with finite ``val/`` metrics from every callback, and the features the evaluation
stored must be ``FEATURE_DTYPE`` whatever the precision (the boundary between the validation loop,
which runs under autocast, and the callbacks, which do not). The heads' projectors are narrowed to
64: the boundary does not depend on the width. An fp32 resume is exact in tests/run/test_resume.py,
and every head's state round-trips in tests/contracts/test_heads_contract.py.

Each loss of the simclr head (DCL, GroCo, MV-InfoNCE, ...) is covered under both autocast dtypes by
``test_every_loss_keeps_fp32_under_autocast`` (a forward and backward, no whole run).
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from contracts.test_heads_contract import CASES

from conftest import REPO, narrow_head, tiny_recipe
from ssl_toolkit.heads import HEADS
from ssl_toolkit.module import FEATURE_DTYPE
from ssl_toolkit.run.fit import fit

PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")
EVAL_METRICS = ("val/knn_top1", "val/linear_top1", "val/rankme", "val/rankme_proj")


def recipe_of(head: str) -> Path:
    """The first Fashion-MNIST recipe (sorted by name) whose head is ``head``."""
    for path in sorted((REPO / "recipes" / "fashion_mnist").glob("*.yaml")):
        if yaml.safe_load(path.read_text())["head"]["name"] == head:
            return path
    raise AssertionError(f"no recipes/fashion_mnist recipe uses head {head!r}: add one")


def matrix_recipe(head: str, precision: str, tmp_path: Path) -> dict[str, Any]:
    """The head's recipe as a seconds-long run that evaluates with every callback (sized down)."""
    recipe = tiny_recipe(recipe_of(head), tmp_path, steps=2)
    recipe["head"].update(CASES[head].get("fit_overrides", {}))  # a queue of a few batches
    narrow_head(recipe["head"])  # the dtype boundary does not depend on the projector's width; the run time does
    recipe["data"].update(batch_size=8, num_samples=32, num_val_samples=16)
    recipe["trainer"].update(
        precision=precision, val_check_interval=2, limit_val_batches=2, num_sanity_val_steps=1, max_epochs=None
    )
    recipe["callbacks"] = {
        "knn": {"k": 5, "temperature": 0.07},
        "linear_probe": {"lr": 0.1},
        "rankme": {"num_samples": 16},
        "diagnostics": {"num_images": 8},
        "checkpoint": {"every_n_train_steps": 2, "save_top_k": -1},
    }
    return recipe


def fp16_autocast_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``precision: 16-mixed`` run float16 autocast with a gradient scaler on the CPU.

    Lightning's Trainer turns ``16-mixed`` into ``bf16-mixed`` on a CPU ("AMP with fp16 is not
    supported on CPU"); torch's CPU autocast does support float16, so the test gives the built
    trainer Lightning's own ``MixedPrecision("16-mixed", "cpu", GradScaler("cpu"))`` plugin, the path
    a GPU takes (float16 activations, scaled loss, gradients unscaled before the optimizer step).
    """
    from lightning.pytorch.plugins.precision import MixedPrecision

    from ssl_toolkit.run import fit as fit_module

    build = fit_module.build_trainer

    def build_fp16(recipe: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        trainer = build(recipe, *args, **kwargs)
        if recipe["trainer"].get("precision") == "16-mixed":
            trainer.strategy.precision_plugin = MixedPrecision("16-mixed", "cpu", torch.amp.GradScaler("cpu"))
        return trainer

    monkeypatch.setattr(fit_module, "build_trainer", build_fp16)


class StoredFeatureDtypes:
    """Records the dtype of every feature tensor the evaluation callbacks are handed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from ssl_toolkit.callbacks import eval_features

        self.seen: set[torch.dtype] = set()
        add = eval_features.FeatureStore.add

        def recording_add(store: Any, role: Any, feats: torch.Tensor, labels: Any, index: Any) -> None:
            self.seen.add(feats.dtype)
            add(store, role, feats, labels, index)

        monkeypatch.setattr(eval_features.FeatureStore, "add", recording_add)


@pytest.mark.slow
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("head", sorted(HEADS))
def test_fit_evaluate_checkpoint_resume(head: str, precision: str, tmp_path: Path, monkeypatch) -> None:
    dtypes = StoredFeatureDtypes(monkeypatch)
    fp16_autocast_on_cpu(monkeypatch)
    if precision != "32-true":
        # oneDNN's bf16 CPU kernels (this machine's CPU) left non-finite weights after a step with a
        # finite loss (DINO, layer4 conv, reproducible in this process); with oneDNN off the same run
        # is finite. FiniteLoss now stops such a run with one line (tests/run/test_nan.py); this matrix
        # tests the dtype boundary, not a CPU kernel, so it runs the plain CPU kernels.
        monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)
    recipe = matrix_recipe(head, precision, tmp_path)
    first = fit(copy.deepcopy(recipe))
    assert first.steps == 2 and math.isfinite(first.final_loss)
    for name in EVAL_METRICS:
        assert math.isfinite(first.val_metrics[name]), (name, first.val_metrics)
    assert any(k.startswith("val/diag_") for k in first.val_metrics), first.val_metrics
    assert first.checkpoint is not None and first.checkpoint.is_file()
    if precision == "32-true" or (precision == "16-mixed" and head != "simclr"):  # see the module docstring
        assert dtypes.seen == {FEATURE_DTYPE}
        return

    again = copy.deepcopy(recipe)
    again["resume"] = str(first.checkpoint)
    again["trainer"]["max_steps"] = 4
    resumed = fit(again)
    assert resumed.run_dir == first.run_dir and resumed.steps == 4 and math.isfinite(resumed.final_loss)
    for name in EVAL_METRICS:
        assert math.isfinite(resumed.val_metrics[name]), (name, resumed.val_metrics)
    assert dtypes.seen == {FEATURE_DTYPE}


def simclr_losses() -> list[tuple[str, dict[str, Any], int]]:
    """(recipe name, head.loss section, views per step) of every Fashion-MNIST simclr-head recipe."""
    out = []
    for path in sorted((REPO / "recipes" / "fashion_mnist").glob("*.yaml")):
        recipe = yaml.safe_load(path.read_text())
        if recipe["head"]["name"] == "simclr":
            out.append((path.stem, recipe["head"]["loss"], int(recipe["augment"].get("num_views", 2))))
    return out


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize(("recipe", "loss", "num_views"), simclr_losses(), ids=[r for r, _, _ in simclr_losses()])
def test_every_loss_keeps_fp32_under_autocast(recipe: str, loss: dict[str, Any], num_views: int, dtype) -> None:
    """The simclr head with each recipe's loss, forward + backward under CPU autocast: a finite fp32
    loss and finite gradients (the losses compute their logits in fp32)."""
    from ssl_toolkit.heads import BatchInfo, Views
    from ssl_toolkit.losses import LOSSES

    torch.manual_seed(0)
    kwargs = {k: v for k, v in loss.items() if k != "name"}
    head = HEADS["simclr"](in_dim=24, hidden_dim=32, out_dim=16, loss=LOSSES[loss["name"]](**kwargs))
    views = [torch.randn(16, 24, requires_grad=True) for _ in range(num_views)]
    info = BatchInfo(labels=torch.arange(16) % 4, index=torch.arange(16), step=0, epoch=0)
    with torch.autocast("cpu", dtype=dtype):
        out = head(Views(views), info)
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss), recipe
    out.loss.backward()
    assert all(torch.isfinite(v.grad).all() for v in views), recipe
