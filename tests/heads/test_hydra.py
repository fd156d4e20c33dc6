"""Hydra / SimLAP: the gated multi-positive loss against plain computations, its SupCon and
InfoNCE special cases, the gates, the head, 1 vs 2 processes, and the recipe's label check."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from two_processes import run_case

from conftest import REPO, tiny_recipe
from ssl_toolkit.errors import RecipeError
from ssl_toolkit.eval.gate_plot import gate_overlap, plot_gates
from ssl_toolkit.heads import HEADS, BatchInfo, HydraHead, Views
from ssl_toolkit.losses.hydra import HydraLoss
from ssl_toolkit.recipe.build import build_parts, build_trainer


def reference_loss(z_a, z_b, gate, y1, y2, scale):
    """Direct per-anchor loops: positives are the other view's samples of class y2_i, negatives
    those of any class but y1_i and y2_i; each positive against the negatives only; mean over
    positives, then over anchors with positives and both directions."""
    z_a, z_b = F.normalize(z_a.double(), dim=1), F.normalize(z_b.double(), dim=1)
    gate = gate.double()
    losses = []
    for anchors, keys in ((z_a, z_b), (z_b, z_a)):
        for i in range(len(anchors)):
            sim = [scale * float((anchors[i] * gate[i] * gate[i] * keys[j]).sum()) for j in range(len(keys))]
            pos = [j for j in range(len(keys)) if y1[j] == y2[i]]
            neg = [j for j in range(len(keys)) if y1[j] not in (y1[i], y2[i])]
            if pos:
                terms = [-math.log(math.exp(sim[p]) / (math.exp(sim[p]) + sum(math.exp(sim[n]) for n in neg)))
                         for p in pos]  # fmt: skip
                losses.append(sum(terms) / len(terms))
    return sum(losses) / len(losses)


# Hand-checked batch: classes y1 = [0, 0, 1, 2, 3, 1], partners y2 = [1, 2, 0, 0, 1, 3].
Y1 = torch.tensor([0, 0, 1, 2, 3, 1])
Y2 = torch.tensor([1, 2, 0, 0, 1, 3])


def test_positives_and_exclusions_by_hand() -> None:
    # anchor (y1, y2): positives | negatives (keys of other classes than y1 and y2)
    # 0 (0, 1): {2, 5} | {3, 4}      1 (0, 2): {3} | {2, 4, 5}      2 (1, 0): {0, 1} | {3, 4}
    # 3 (2, 0): {0, 1} | {2, 4, 5}   4 (3, 1): {2, 5} | {0, 1, 3}   5 (1, 3): {4} | {0, 1, 3}
    # With orthogonal one-hot embeddings and g = 1 every logit between different images is 0, and
    # each anchor's own other view (logit 2) is of class y1, so excluded: loss_i = log(1 + #neg_i).
    z = torch.eye(6, 8)
    loss = HydraLoss(temperature=0.5)(z, z.clone(), torch.ones(6, 8), Y1, Y2)
    expected = sum(math.log(1 + n) for n in (2, 3, 2, 3, 3, 3)) / 6
    torch.testing.assert_close(loss, torch.tensor(expected))


def test_loss_matches_direct_computation() -> None:
    g = torch.Generator().manual_seed(0)
    z_a, z_b = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    gate = torch.rand(6, 8, generator=g)
    loss = HydraLoss(temperature=0.2)(z_a, z_b, gate, Y1, Y2)
    torch.testing.assert_close(loss.double(), torch.tensor(reference_loss(z_a, z_b, gate, Y1, Y2, 5.0)).double())


def test_anchors_without_positives_are_left_out() -> None:
    g = torch.Generator().manual_seed(1)
    z_a, z_b, gate = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g), torch.rand(6, 8, generator=g)
    y2 = Y2.clone()
    y2[1] = 7  # no sample of class 7 in the batch: anchor 1 has no positive ("distinct" pairing)
    loss = HydraLoss(temperature=0.2)(z_a, z_b, gate, Y1, y2)
    torch.testing.assert_close(loss.double(), torch.tensor(reference_loss(z_a, z_b, gate, Y1, y2, 5.0)).double())
    # Nothing to learn at all: 0, still differentiable.
    z = z_a.clone().requires_grad_(True)
    empty = HydraLoss()(z, z_b, gate, Y1, torch.full((6,), 9))
    empty.backward()
    assert empty.item() == 0 and z.grad is not None


def supcon(z_a, z_b, y, temperature):
    """SupCon (Khosla et al., 2020, Eq. 2) across views, each positive contrasted with the negatives
    only: for anchor i of view a and every key p of view b with y_p = y_i, a (1 + #negatives)-way
    softmax cross-entropy whose target is p; mean over positives, anchors and both directions."""
    total, count = 0.0, 0
    for anchors, keys in ((z_a, z_b), (z_b, z_a)):
        logits = F.normalize(anchors, dim=1) @ F.normalize(keys, dim=1).T / temperature
        for i in range(len(y)):
            negatives = logits[i, y != y[i]]
            per_positive = [F.cross_entropy(torch.cat([logits[i, p : p + 1], negatives])[None], torch.tensor([0]))
                            for p in torch.nonzero(y == y[i]).flatten()]  # fmt: skip
            total, count = total + torch.stack(per_positive).mean(), count + 1
    return total / count


def test_identical_pairing_with_open_gates_is_supcon() -> None:
    g = torch.Generator().manual_seed(2)
    z_a, z_b, y = (
        torch.randn(8, 16, generator=g),
        torch.randn(8, 16, generator=g),
        torch.tensor([0, 1, 2, 0, 1, 2, 0, 3]),
    )
    loss = HydraLoss(temperature=0.3)(z_a, z_b, torch.ones(8, 16), y, y)
    torch.testing.assert_close(loss, supcon(z_a, z_b, y, 0.3))
    # And the head's identical pairing does pair every sample with its own class.
    head = HydraHead(in_dim=16, num_classes=4, pairing="identical")
    assert torch.equal(head.partner_classes(y), y)


def test_unique_labels_reduce_to_cross_view_infonce() -> None:
    # One class per image, y2 = y1, g = 1: the only positive is the other view of the same image
    # and all other images are negatives: symmetric cross-view InfoNCE (as in CLIP).
    g = torch.Generator().manual_seed(3)
    z_a, z_b, y = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g), torch.arange(8)
    logits = F.normalize(z_a, dim=1) @ F.normalize(z_b, dim=1).T / 0.1
    expected = (F.cross_entropy(logits, y) + F.cross_entropy(logits.T, y)) / 2
    torch.testing.assert_close(HydraLoss(temperature=0.1)(z_a, z_b, torch.ones(8, 16), y, y), expected)


def batch_info(labels: torch.Tensor) -> BatchInfo:
    return BatchInfo(labels=labels, index=torch.arange(len(labels)), step=0, epoch=0)


def test_gates_are_in_open_interval_and_every_parameter_learns() -> None:
    torch.manual_seed(0)
    head = HydraHead(in_dim=24, num_classes=4, hidden_dim=32, out_dim=16, label_dim=8, gate_hidden_dim=12)
    assert HEADS["hydra"] is HydraHead and head.uses_labels
    feats = [torch.randn(8, 24), torch.randn(8, 24)]
    out = head(Views(feats), batch_info(torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])))
    assert out.loss.isfinite()
    out.loss.backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert head.gate.embedding.weight.grad.abs().sum() > 0 and head.loss.log_scale.grad != 0
    gates = head.pair_gates()
    assert gates.shape == (4, 4, 16) and bool((gates > 0).all()) and bool((gates < 1).all())
    assert head.gate.training  # pair_gates restores the mode
    assert {"gate_mean", "gate_open", "gate_entropy", "scale", "z_std"} <= set(out.logs)
    assert 0 < out.logs["gate_mean"] < 1 and 0 <= out.logs["gate_open"] <= 1
    assert 0 < out.logs["gate_entropy"] <= math.log(2)
    torch.testing.assert_close(out.logs["scale"], torch.tensor(10.0))  # 1 / temperature at init


def test_pairings_and_optional_simclr_term() -> None:
    torch.manual_seed(0)
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    arbitrary = HydraHead(in_dim=8, num_classes=4, pairing="arbitrary").partner_classes(y)
    assert sorted(arbitrary.tolist()) == sorted(y.tolist())  # a permutation: partners are in the batch
    distinct = HydraHead(in_dim=8, num_classes=4, pairing="distinct").partner_classes(y)
    assert bool((distinct != y).all()) and bool((distinct < 4).all())
    head = HydraHead(in_dim=8, num_classes=4, hidden_dim=16, out_dim=8, simclr_weight=0.5)
    out = head(Views([torch.randn(8, 8), torch.randn(8, 8)]), batch_info(y))
    torch.testing.assert_close(out.loss.detach(), out.logs["hydra"] + 0.5 * out.logs["simclr"])
    with pytest.raises(ValueError, match="pairing: 'random'"):
        HydraHead(in_dim=8, num_classes=4, pairing="random")
    with pytest.raises(ValueError, match="class labels"):
        head(Views([torch.randn(8, 8), torch.randn(8, 8)]), batch_info(torch.full((8,), -1)))


def test_gate_plot(tmp_path: Path) -> None:
    gates = torch.zeros(3, 3, 4)
    gates[0, 1, :2] = gates[1, 0, :2] = 0.9
    torch.testing.assert_close(gate_overlap(gates)[0, 1], torch.tensor(0.5))
    torch.testing.assert_close(gate_overlap(gates)[2, 2], torch.tensor(0.0))
    path = plot_gates(gates, tmp_path / "gates.png", class_names=["a", "b", "c"])
    assert path.stat().st_size > 1000


@pytest.mark.distributed
def test_two_processes_equal_one(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(4)
    n, d, t = 12, 8, 0.2  # global batch 12 -> 6 per rank
    y1 = torch.tensor([0, 1, 2, 0, 1, 2, 0, 0, 1, 3, 3, 2])
    y2 = torch.tensor([1, 2, 0, 4, 0, 1, 2, 3, 0, 2, 1, 0])  # class 4 absent: rank 0 has 5 valid anchors, rank 1 six
    inputs = {"z_a": torch.randn(n, d, generator=g), "z_b": torch.randn(n, d, generator=g),
              "gate": torch.rand(n, d, generator=g), "y1": y1, "y2": y2, "temperature": t}  # fmt: skip
    ranks = run_case("hydra", inputs, tmp_path)

    a, b, gate = (inputs[k].clone().requires_grad_(True) for k in ("z_a", "z_b", "gate"))
    loss_fn = HydraLoss(temperature=t)
    loss = loss_fn(a, b, gate, y1, y2)
    loss.backward()
    torch.testing.assert_close(torch.stack([r["loss"] for r in ranks]).mean(), loss.detach())
    for key, full in (("grad_a", a.grad), ("grad_b", b.grad), ("grad_gate", gate.grad)):
        torch.testing.assert_close(torch.cat([r[key] for r in ranks]) / 2, full, rtol=1e-5, atol=1e-7)
    # DDP averages parameter gradients over processes.
    torch.testing.assert_close((ranks[0]["grad_scale"] + ranks[1]["grad_scale"]) / 2, loss_fn.log_scale.grad)


def test_recipe_trains_and_refuses_data_without_labels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = tiny_recipe(REPO / "recipes" / "fashion_mnist" / "hydra.yaml", tmp_path)
    recipe["data"]["classes_per_batch"] = 4  # 4 synthetic classes x 4 samples
    parts = build_parts(recipe)
    assert parts.module.head.num_classes == 4
    trainer = build_trainer(recipe, tmp_path)
    trainer.fit(parts.module, datamodule=parts.datamodule)
    assert trainer.global_step == 2 and trainer.logged_metrics["train/loss"].isfinite()
    assert {"train/gate_mean", "train/gate_open", "train/gate_entropy"} <= set(trainer.logged_metrics)

    from ssl_toolkit.data import SyntheticData, TensorImageDataset

    labelled = SyntheticData._build

    def unlabelled(self: SyntheticData) -> tuple[TensorImageDataset, TensorImageDataset]:
        train, val = labelled(self)
        return TensorImageDataset(train.images, torch.full_like(train.labels, -1)), val

    monkeypatch.setattr(SyntheticData, "_build", unlabelled)  # the same images, every label unknown (-1)
    with pytest.raises(RecipeError, match="^head.name: 'hydra' needs class labels, but data 'synthetic' has none$"):
        build_parts(tiny_recipe(REPO / "recipes" / "fashion_mnist" / "hydra.yaml", tmp_path))
