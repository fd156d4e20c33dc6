"""1 process vs 2 processes (gloo, CPU) on the same global batch: same loss, same gradients."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from two_processes import run_case

from ssl_toolkit.losses import LOSSES

# V > 2 views for the multi-view losses (2 views of every LOSSES entry: tests/contracts/test_losses_contract.py).
MULTI_VIEW_CASES = {
    "mv_infonce": ("mv_infonce", {"temperature": 0.2}, 4),
    "mv_dhel": ("mv_dhel", {"temperature": 0.2}, 3),
    "groco": ("groco", {"top_k_negatives": 3}, 3),
    "groco_no_stop_grad_multicrop": ("groco", {"top_k_negatives": 4, "stop_grad": False, "positive_views": 2}, 4),
}


def multi_view_inputs(num_views: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(num_views)
    return [torch.randn(12, 16, generator=g) for _ in range(num_views)]  # global batch 12 -> 6 per rank


@pytest.fixture(scope="module")
def multi_view_ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """Every case of MULTI_VIEW_CASES on 2 gloo ranks, in one launch."""
    cases = {key: (name, kwargs, multi_view_inputs(v)) for key, (name, kwargs, v) in MULTI_VIEW_CASES.items()}
    return run_case("multi_view_losses", {"cases": cases}, tmp_path_factory.mktemp("multi_view"))


@pytest.mark.distributed
@pytest.mark.parametrize("key", sorted(MULTI_VIEW_CASES))
def test_multi_view_losses_two_processes_equal_one(key: str, multi_view_ranks: list[dict]) -> None:
    name, kwargs, num_views = MULTI_VIEW_CASES[key]
    local = [v.clone().requires_grad_(True) for v in multi_view_inputs(num_views)]
    loss = LOSSES[name](**kwargs)(local)
    loss.backward()
    ranks = [r[key] for r in multi_view_ranks]
    torch.testing.assert_close(torch.stack([r["loss"] for r in ranks]).mean(), loss.detach())
    for v in range(num_views):  # DDP averages gradients: each rank's local gradient is 2 x dL/dz of its rows
        torch.testing.assert_close(torch.cat([r["grads"][v] for r in ranks]) / 2, local[v].grad, rtol=1e-5, atol=1e-7)
    assert not torch.isclose(ranks[0]["loss"], ranks[1]["loss"])  # each rank scores its own images


@pytest.mark.distributed
@pytest.mark.parametrize("per_view_queues", [False, True], ids=["one_queue", "per_view_queues"])
def test_moco_queue_and_gradients_two_processes_equal_one(tmp_path: Path, per_view_queues: bool) -> None:
    from ssl_toolkit.heads import BatchInfo, MoCoV2Head, Views

    torch.manual_seed(0)
    b, f = 8, 12  # global batch 8 -> 4 per rank
    kwargs = {"in_dim": f, "hidden_dim": 16, "out_dim": 8, "queue_size": 40, "per_view_queues": per_view_queues}
    head = MoCoV2Head(**kwargs)
    head.queue_index[:3] = torch.tensor([1, 6, 20])  # older keys of samples 1 and 6 are in the queue
    feats = [torch.randn(b, f) for _ in range(2)]
    teacher = [torch.randn(b, f) for _ in range(2)]
    index = torch.arange(b)
    inputs = {"kwargs": kwargs, "state": head.state_dict(), "feats": feats, "teacher": teacher, "index": index}
    ranks = run_case("mocov2_head", inputs, tmp_path)

    local = [x.clone().requires_grad_(True) for x in feats]
    out = head(Views(local, teacher=teacher), BatchInfo(labels=index, index=index, step=0, epoch=0))
    out.loss.backward()
    torch.testing.assert_close(torch.stack([r["loss"] for r in ranks]).mean(), out.loss.detach())
    for v in range(2):  # DDP averages gradients: each rank's local gradient is 2 x dL/dz of its rows
        torch.testing.assert_close(torch.cat([r["grads"][v] for r in ranks]) / 2, local[v].grad)
    for r in ranks:  # every rank enqueued the keys of the global batch, in the 1-process order
        torch.testing.assert_close(r["queue"], head.queue, rtol=0, atol=0)
        assert torch.equal(r["queue_index"], head.queue_index) and int(r["queue_ptr"]) == (8 if per_view_queues else 16)
        if per_view_queues:
            torch.testing.assert_close(r["queue_view2"], head.queue_view2, rtol=0, atol=0)


@pytest.mark.distributed
def test_label_free_metrics_two_processes_equal_one(tmp_path: Path) -> None:
    import torch.nn.functional as F

    from ssl_toolkit.metrics import alignment, tolerance, uniformity
    from ssl_toolkit.metrics_contrastive import mann_whitney_count, positive_ranks, roc_auc, split_scores
    from ssl_toolkit.metrics_spectral import alpha_req, lidar

    g = torch.Generator().manual_seed(0)
    n, d = 12, 8  # 6 images per rank
    z1 = torch.randn(n, d, generator=g)
    z2 = z1 + 0.8 * torch.randn(n, d, generator=g)
    z2[3] = z2[7]  # an exact tie between two negatives, so the half counts are exercised
    labels = torch.randint(0, 3, (n,), generator=g)
    views = torch.randn(n, 1, d, generator=g) + 0.5 * torch.randn(n, 4, d, generator=g)
    inputs = {"z1": z1, "z2": z2, "labels": labels, "views": views, "num_classes": 3}
    ranks = run_case("label_free_metrics", inputs, tmp_path)

    scores = F.normalize(z1, dim=1) @ F.normalize(z2, dim=1).T
    pos, neg = split_scores(scores, torch.arange(n))
    expected = {
        "auc": roc_auc(pos, neg),
        "mean_rank": float(positive_ranks(scores, torch.arange(n)).mean()),
        "lidar": lidar(views),
        "alpha_req": alpha_req(z1, 0, 8),
        "tolerance": tolerance(z1, labels, 3),
        "alignment": alignment(z1, z2),
        "uniformity": uniformity(z1),
    }
    assert 0.5 < expected["auc"] < 1.0 and expected["mean_rank"] > 1.0  # not a degenerate input
    for r in ranks:
        assert int(r["twice_u"]) == int(mann_whitney_count(pos, neg))  # integer counts: exact
        assert r["auc"] == expected["auc"] and r["mean_rank"] == expected["mean_rank"]
        for key in ("lidar", "alpha_req", "tolerance", "alignment", "uniformity"):
            assert r[key] == pytest.approx(expected[key], rel=1e-9, abs=1e-12), key


@pytest.mark.distributed
def test_feature_transformation_head_two_processes_equal_one(tmp_path: Path) -> None:
    """Every process draws the same lambda, mu and permutation from the head's seeded generator, so
    the transformed loss, its gradients and the queue equal the 1-process step."""
    from ssl_toolkit.heads import BatchInfo, MoCoV2FTHead, Views

    torch.manual_seed(0)
    b, f = 8, 12
    kwargs = {"in_dim": f, "hidden_dim": 16, "out_dim": 8, "queue_size": 40, "seed": 7}
    head = MoCoV2FTHead(**kwargs)
    head.queue_index[:3] = torch.tensor([1, 6, 20])
    feats = [torch.randn(b, f) for _ in range(2)]
    teacher = [torch.randn(b, f) for _ in range(2)]
    index = torch.arange(b)
    inputs = {"name": "mocov2_ft", "kwargs": kwargs, "state": head.state_dict(), "feats": feats,
              "teacher": teacher, "index": index}  # fmt: skip
    ranks = run_case("mocov2_head", inputs, tmp_path)

    local = [x.clone().requires_grad_(True) for x in feats]
    out = head(Views(local, teacher=teacher), BatchInfo(labels=index, index=index, step=0, epoch=0))
    out.loss.backward()
    torch.testing.assert_close(torch.stack([r["loss"] for r in ranks]).mean(), out.loss.detach())
    for v in range(2):
        torch.testing.assert_close(torch.cat([r["grads"][v] for r in ranks]) / 2, local[v].grad)
    for r in ranks:
        torch.testing.assert_close(r["queue"], head.queue, rtol=0, atol=0)


def baseline_loss_cases() -> dict[str, tuple[str, dict, list]]:
    """Losses built by their heads (not in LOSSES): ``key: (class name, kwargs, args)``, global batch 12."""
    g = torch.Generator().manual_seed(7)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g)

    return {
        "barlow_twins": ("BarlowTwinsLoss", {"lambd": 0.1}, [rand(12, 6) * 2 + 1, rand(12, 6)]),
        "vicreg": ("VICRegLoss", {}, [rand(12, 6) * 0.5, rand(12, 6) * 2]),
        "dino": ("DINOLoss", {"out_dim": 10, "teacher_temp": 0.07},
                 [[rand(12, 10) for _ in range(4)], [rand(12, 10) for _ in range(2)], 0]),
        "nnclr": ("NNCLRLoss", {"temperature": 0.2}, [rand(12, 6), rand(12, 6)]),
        "nnclr_same_view": ("NNCLRLoss", {"temperature": 0.2, "same_view_negatives": True}, [rand(12, 6), rand(12, 6)]),
    }  # fmt: skip


@pytest.fixture(scope="module")
def baseline_loss_ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """Every case of baseline_loss_cases on 2 gloo ranks, in one launch."""
    return run_case("loss_calls", {"cases": baseline_loss_cases()}, tmp_path_factory.mktemp("baselines"))


@pytest.mark.distributed
@pytest.mark.parametrize("key", sorted(baseline_loss_cases()))
def test_baseline_losses_two_processes_equal_one(key: str, baseline_loss_ranks: list[dict]) -> None:
    """Loss, input gradients and buffers (DINO's centre, all-reduced) of 2 processes equal 1."""
    import ssl_toolkit.losses as losses

    name, kwargs, args = baseline_loss_cases()[key]
    args = [[v.requires_grad_(True) for v in a] if isinstance(a, list) else a for a in args]
    args = [a.requires_grad_(True) if isinstance(a, torch.Tensor) else a for a in args]
    loss_fn = getattr(losses, name)(**kwargs)
    loss = loss_fn(*args)
    loss.backward()
    inputs = [t for a in args for t in (a if isinstance(a, list) else [a] if isinstance(a, torch.Tensor) else [])]
    ranks = [r[key] for r in baseline_loss_ranks]
    torch.testing.assert_close(torch.stack([r["loss"] for r in ranks]).mean(), loss.detach())
    for i, x in enumerate(inputs):  # DDP averages gradients: each rank's local gradient is 2 x dL/dx of its rows
        rank_grads = [r["grads"][i] for r in ranks]
        if x.grad is None:  # the teacher's outputs and NNCLR's neighbours carry no gradient
            assert all(g is None for g in rank_grads), i
            continue
        torch.testing.assert_close(torch.cat(rank_grads) / 2, x.grad, rtol=1e-5, atol=1e-7)
    for buffer, value in loss_fn.named_buffers():
        for r in ranks:
            torch.testing.assert_close(r["buffers"][buffer], value, rtol=1e-6, atol=1e-7)
    if name == "DINOLoss":
        assert loss_fn.center.abs().sum() > 0  # the centre moved, on every rank alike
