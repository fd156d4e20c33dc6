"""Contract shared by every entry of ``HEADS``, driven by the table ``CASES`` below.

For every head: a plain typed constructor, a finite scalar loss, backward reaching every trainable
parameter, ``embed`` giving (B, D), a strict state-dict round trip, the state-dict keys that existing
checkpoints hold (``head_state_dict_keys.json``), and (for heads whose loss gathers
across processes) 2 gloo processes giving the loss and gradients of 1 process.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from contracts.constructor import assert_plain_typed_constructor
from two_processes import run_ranks

from ssl_toolkit.heads import HEADS, BatchInfo, SSLHead, Views

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("heads_distributed_worker.py")
# The state-dict keys of every row's head, as written by the code that saved the existing
# checkpoints. A head whose keys change breaks loading those checkpoints: add a load-time mapping
# (and a test loading an old checkpoint) before updating this file.
STATE_DICT_KEYS = Path(__file__).with_name("head_state_dict_keys.json")

# The contract table: one row of tiny constructor keywords per entry of HEADS. A head without a row
# fails test_every_head_has_exactly_one_row. `in_dim` and, when the signature has it, `num_classes`
# are filled in like the recipe builder does. Row keys: kwargs (constructor keywords, tiny widths);
# views (views per step: 2, more for multi-crop heads); gathers (the loss gathers across processes,
# so 2 processes must equal 1; use deterministic settings: random draws cannot match across a
# different process count; no BatchNorm in a projector: its batch statistics are per process
# unless SyncBN, which tests/integration/test_ddp_fit.py covers through whole fits); fit_overrides (head keywords
# that tests/integration/test_ddp_fit.py sets on the head's Fashion-MNIST recipes for its 3-step 1-vs-2-process
# fit: a queue of a few batches, no per-process random draws).
FEATURE_DIM, NUM_CLASSES, BATCH = 12, 4, 8

CASES: dict[str, dict[str, Any]] = {
    "simclr": {"kwargs": {"hidden_dim": 16, "out_dim": 8, "batch_norm": False, "last_norm": "none"}, "views": 2,
               "gathers": True},
    "amcl": {"kwargs": {"num_heads": 2, "hidden_dim": 16, "out_dim": 8, "temperature_hidden_dim": 8},
             "views": 2, "gathers": True},
    "hydra": {"kwargs": {"hidden_dim": 16, "out_dim": 8, "label_dim": 8, "gate_hidden_dim": 8, "batch_norm": False,
                         "pairing": "identical"}, "views": 2, "gathers": True,
              "fit_overrides": {"pairing": "identical"}},
    "mocov2": {"kwargs": {"hidden_dim": 16, "out_dim": 8, "queue_size": 24}, "views": 2, "gathers": True,
               "fit_overrides": {"queue_size": 64}},
    "mochi": {"kwargs": {"hidden_dim": 16, "out_dim": 8, "queue_size": 24, "num_hard": 4, "num_mixed": 3,
                         "num_query_mixed": 2, "mix_start_step": 1000}, "views": 2, "gathers": True,
              "fit_overrides": {"queue_size": 64, "num_hard": 16, "num_mixed": 8, "num_query_mixed": 4,
                                "mix_start_step": 1000}},
    "mocov2_ft": {"kwargs": {"hidden_dim": 16, "out_dim": 8, "queue_size": 24, "pos_alpha": 2.0, "neg_alpha": 1.6,
                             "seed": 3}, "views": 2, "gathers": True, "fit_overrides": {"queue_size": 64}},
    "swav": {"kwargs": {"hidden_dim": 16, "out_dim": 8, "num_prototypes": 10, "num_global": 2,
                        "batch_norm": False},
             "views": 4, "gathers": True, "fit_overrides": {"freeze_prototypes_steps": 1, "num_prototypes": 12}},
    "barlow_twins": {"kwargs": {"hidden_dim": 16, "out_dim": 8, "batch_norm": False, "lambd": 0.1}, "views": 2,
                     "gathers": True},
    "vicreg": {"kwargs": {"hidden_dim": 16, "out_dim": 8, "batch_norm": False}, "views": 2, "gathers": True},
    "dino": {"kwargs": {"hidden_dim": 16, "bottleneck_dim": 8, "out_dim": 10, "teacher_temp": 0.07,
                        "freeze_last_layer_epochs": 0}, "views": 4, "gathers": True},
    "nnclr": {"kwargs": {"hidden_dim": 16, "out_dim": 8, "batch_norm": False, "last_norm": "none",
                         "pred_hidden_dim": 16, "pred_batch_norm": False, "queue_size": 24}, "views": 2,
              "gathers": True, "fit_overrides": {"queue_size": 64}},

    "mocov3": {"kwargs": {"hidden_dim": 16, "out_dim": 8, "pred_hidden_dim": 16, "batch_norm": False,
                          "last_norm": "none", "temperature": 0.2}, "views": 2, "gathers": True},
    "byol": {"kwargs": {"hidden_dim": 16, "out_dim": 8, "pred_hidden_dim": 16, "batch_norm": False}, "views": 3,
             "gathers": True},
    "simsiam": {"kwargs": {"hidden_dim": 16, "out_dim": 8, "pred_hidden_dim": 4, "batch_norm": False,
                           "last_norm": "none"}, "views": 2, "gathers": True},
}  # fmt: skip


def build(name: str, seed: int = 0) -> SSLHead:
    """``HEADS[name]`` from its table row, ``in_dim`` / ``num_classes`` filled in as the builder does."""
    torch.manual_seed(seed)
    cls = HEADS[name]
    kwargs = dict(CASES[name]["kwargs"])
    if "num_classes" in inspect.signature(cls).parameters:
        kwargs["num_classes"] = NUM_CLASSES
    return cls(in_dim=FEATURE_DIM, **kwargs)


def inputs(name: str, seed: int = 1) -> tuple[Views, BatchInfo]:
    g = torch.Generator().manual_seed(seed)
    num_views = CASES[name]["views"]
    feats = [torch.randn(BATCH, FEATURE_DIM, generator=g) for _ in range(num_views)]
    teacher = [torch.randn(BATCH, FEATURE_DIM, generator=g) for _ in range(2)] if HEADS[name].uses_teacher else None
    labels = torch.arange(BATCH) % NUM_CLASSES
    return Views(feats, teacher=teacher), BatchInfo(labels=labels, index=torch.arange(BATCH), step=0, epoch=0)


def test_every_head_has_exactly_one_row() -> None:
    assert set(CASES) == set(HEADS), f"rows missing: {set(HEADS) - set(CASES)}, extra: {set(CASES) - set(HEADS)}"


@pytest.mark.parametrize("name", sorted(HEADS))
def test_plain_typed_constructor(name: str) -> None:
    cls = HEADS[name]
    assert issubclass(cls, SSLHead)
    assert assert_plain_typed_constructor(cls, set(CASES[name]["kwargs"]))[0] == "in_dim"


@pytest.mark.parametrize("name", sorted(HEADS))
def test_loss_is_finite_and_reaches_every_trainable_parameter(name: str) -> None:
    head = build(name)
    views, batch = inputs(name)
    feats = [f.clone().requires_grad_(True) for f in views.feats]
    out = head(Views(feats, teacher=views.teacher), batch)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    head.after_backward(0)
    missing = [
        n for n, p in head.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)
    ]
    assert not missing, f"no gradient reaches {missing}"
    assert all(f.grad is not None and torch.isfinite(f.grad).all() for f in feats)
    for key, value in out.logs.items():
        assert isinstance(value, torch.Tensor) and value.ndim == 0, key


@pytest.mark.parametrize("name", sorted(HEADS))
def test_embed_gives_one_row_per_sample(name: str) -> None:
    head = build(name).eval()
    z = head.embed(torch.randn(BATCH, FEATURE_DIM))
    assert z.ndim == 2 and z.shape[0] == BATCH and torch.isfinite(z).all()


@pytest.mark.parametrize("name", sorted(HEADS))
def test_state_dict_round_trip(name: str) -> None:
    head = build(name, seed=0)
    views, batch = inputs(name)
    head(views, batch).loss.backward()  # queues and other buffers move away from their init
    other = build(name, seed=123)
    other.load_state_dict(head.state_dict(), strict=True)
    theirs = other.state_dict()
    for key, value in head.state_dict().items():
        torch.testing.assert_close(theirs[key], value, rtol=0, atol=0, msg=key)
    head.eval(), other.eval()
    torch.testing.assert_close(other.embed(views.feats[0]), head.embed(views.feats[0]))


@pytest.mark.parametrize("name", sorted(HEADS))
def test_state_dict_keys_are_those_old_checkpoints_hold(name: str) -> None:
    expected = json.loads(STATE_DICT_KEYS.read_text())
    assert name in expected, f"{name}: no entry in {STATE_DICT_KEYS.name}"
    keys = list(build(name).state_dict())
    assert sorted(keys) == sorted(expected[name]), (
        f"added {set(keys) - set(expected[name])}, missing {set(expected[name]) - set(keys)}"
    )


GATHERING = sorted(n for n, row in CASES.items() if row["gathers"])


@pytest.fixture(scope="module")
def two_process_heads(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """Every gathering head run once on 2 gloo ranks (one launch for the whole table)."""
    out = tmp_path_factory.mktemp("heads_2p")
    return run_ranks(WORKER, out, GATHERING)


@pytest.mark.distributed
@pytest.mark.parametrize("name", GATHERING)
def test_two_processes_equal_one(name: str, two_process_heads: list[dict]) -> None:
    head = build(name)
    views, batch = inputs(name)
    feats = [f.clone().requires_grad_(True) for f in views.feats]
    loss = head(Views(feats, teacher=views.teacher), batch).loss
    loss.backward()
    ranks = [r[name] for r in two_process_heads]
    # DDP averages: the global loss is the mean of the rank losses, parameter gradients are averaged,
    # and each rank's input gradient is world x dL/d(its rows).
    torch.testing.assert_close(torch.stack([r["loss"] for r in ranks]).mean(), loss.detach(), rtol=1e-5, atol=1e-6)
    for v, f in enumerate(feats):
        torch.testing.assert_close(torch.cat([r["feat_grads"][v] for r in ranks]) / 2, f.grad, rtol=1e-4, atol=1e-6)
    for key, p in head.named_parameters():
        if p.grad is not None:
            mean = (ranks[0]["param_grads"][key] + ranks[1]["param_grads"][key]) / 2
            torch.testing.assert_close(mean, p.grad, rtol=1e-4, atol=1e-6, msg=key)
    # Queues and centres hold what 1 process on the global batch holds (BatchNorm's running
    # statistics are per process without SyncBN: tests/integration/test_ddp_fit.py).
    for key, b in head.named_buffers():
        if key.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked"):
            continue
        for r in ranks:
            torch.testing.assert_close(r["buffers"][key], b, rtol=1e-5, atol=1e-6, msg=key)
