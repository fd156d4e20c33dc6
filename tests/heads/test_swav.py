"""SwAV: Sinkhorn codes, swapped prediction, prototypes (normalization, freeze), queue, 2 processes."""

from __future__ import annotations

import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F

from conftest import REPO, TINY_BACKBONE
from ssl_toolkit.augment import MultiCropAugment
from ssl_toolkit.backbone import build_backbone
from ssl_toolkit.data import SyntheticData
from ssl_toolkit.heads import BatchInfo, SwAVHead, Views
from ssl_toolkit.losses import SwAVLoss, sinkhorn
from ssl_toolkit.module import SSLModule
from ssl_toolkit.optim import LARSFactory
from ssl_toolkit.recipe.build import load_recipe


def reference_sinkhorn(scores: torch.Tensor, iterations: int = 3, epsilon: float = 0.05) -> torch.Tensor:
    """Independent Sinkhorn-Knopp: log domain, float64, one process (rows = all samples)."""
    log_q = scores.double().T / epsilon  # (K, B)
    k, b = log_q.shape
    log_q = log_q - log_q.logsumexp(dim=(0, 1))
    for _ in range(iterations):
        log_q = log_q - log_q.logsumexp(dim=1, keepdim=True) - math.log(k)
        log_q = log_q - log_q.logsumexp(dim=0, keepdim=True) - math.log(b)
    return (log_q + math.log(b)).exp().T.float()


def reference_swav_loss(scores: list, codes: list, temperature: float) -> torch.Tensor:
    """SwAV's loop, written out per sample: mean over code crops a of mean over v != a of CE."""
    total = 0.0
    for a, q in enumerate(codes):
        sub = 0.0
        for v, p in enumerate(scores):
            if v != a:
                ce = [-(q[i] * torch.log(torch.exp(p[i] / temperature) / torch.exp(p[i] / temperature).sum())).sum()
                      for i in range(p.shape[0])]  # fmt: skip
                sub = sub + torch.stack(ce).mean()
        total = total + sub / (len(scores) - 1)
    return total / len(codes)


def cosines(b: int, k: int, d: int = 128, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z, c = F.normalize(torch.randn(b, d, generator=g), dim=1), F.normalize(torch.randn(k, d, generator=g), dim=1)
    return z @ c.T


def info(b: int, epoch: int = 0) -> BatchInfo:
    return BatchInfo(labels=torch.zeros(b, dtype=torch.long), index=torch.arange(b), step=0, epoch=epoch)


# --- Sinkhorn ------------------------------------------------------------------------------
def test_sinkhorn_rows_sum_to_one_and_columns_to_b_over_k() -> None:
    b, k = 96, 24
    q = sinkhorn(cosines(b, k))
    assert q.dtype == torch.float32 and q.shape == (b, k) and (q >= 0).all()
    torch.testing.assert_close(q.sum(dim=1), torch.ones(b), rtol=0, atol=1e-5)
    # 3 iterations: close to equipartition; many iterations: converged to it.
    torch.testing.assert_close(q.sum(dim=0), torch.full((k,), b / k), rtol=0.02, atol=0)
    torch.testing.assert_close(
        sinkhorn(cosines(b, k), iterations=200).sum(dim=0), torch.full((k,), b / k), rtol=1e-4, atol=0
    )


# offset 5: exp((s + 5) / 0.05) overflows fp32 unless the scores are shifted first; codes ignore it.
@pytest.mark.parametrize("offset, iterations, epsilon", [(0, 3, 0.05), (0, 1, 0.1), (0, 5, 0.03), (5, 3, 0.05)])
def test_sinkhorn_matches_independent_log_domain_implementation(offset: float, iterations: int, epsilon: float) -> None:
    scores = cosines(50, 30, seed=1)
    q = sinkhorn(scores + offset, iterations=iterations, epsilon=epsilon)
    assert torch.isfinite(q).all()
    torch.testing.assert_close(q, reference_sinkhorn(scores, iterations, epsilon), rtol=1e-4, atol=1e-6)


def test_sinkhorn_analytic_separable_scores_give_uniform_codes() -> None:
    # scores a_i + b_k: exp factorizes into row and column scales, so one iteration equipartitions.
    g = torch.Generator().manual_seed(2)
    scores = 0.05 * (torch.randn(12, 1, generator=g) + torch.randn(1, 7, generator=g))
    torch.testing.assert_close(sinkhorn(scores, iterations=1), torch.full((12, 7), 1 / 7))
    # Half-precision scores still give fp32 codes.
    assert sinkhorn(scores.half()).dtype == torch.float32


# --- swapped prediction ---------------------------------------------------------------------
def test_swav_loss_matches_direct_computation() -> None:
    g = torch.Generator().manual_seed(3)
    scores = [torch.randn(6, 9, generator=g) * 0.5 for _ in range(5)]
    codes = [sinkhorn(scores[0]), sinkhorn(scores[1])]
    loss = SwAVLoss(temperature=0.1)(scores, codes)
    torch.testing.assert_close(loss, reference_swav_loss(scores, codes, 0.1), rtol=1e-5, atol=1e-6)


def test_swav_loss_analytic_value() -> None:
    # One-hot codes, every crop scores its own code's prototype c and the other K-1 zero:
    # loss = -log(e^{c/t} / (e^{c/t} + K - 1)).
    k, c, t = 7, 0.3, 0.1
    target = torch.tensor([0, 3, 6, 2])
    onehot = F.one_hot(target, k).float()
    loss = SwAVLoss(temperature=t)([c * onehot] * 4, [onehot, onehot])
    expected = -math.log(math.exp(c / t) / (math.exp(c / t) + k - 1))
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_head_loss_is_swapped_prediction_on_sinkhorn_codes_of_global_crops() -> None:
    torch.manual_seed(4)
    head = SwAVHead(in_dim=12, hidden_dim=16, out_dim=8, num_prototypes=10, num_global=2)
    feats = [torch.randn(6, 12) for _ in range(5)]
    out = head(Views(feats), info(6))
    z = F.normalize(head.projector(torch.cat(feats)), dim=1)
    p = list((z @ head.prototypes.weight.T).chunk(5))
    codes = [reference_sinkhorn(p[0].detach()), reference_sinkhorn(p[1].detach())]
    torch.testing.assert_close(out.loss, reference_swav_loss(p, codes, 0.1), rtol=1e-5, atol=1e-6)
    out.loss.backward()
    assert all(par.grad is not None for par in head.parameters())
    assert set(out.logs) == {"loss_over_lnK", "code_max", "code_entropy", "prototypes_used", "queue_used", "z_std"}
    assert out.logs["loss_over_lnK"].item() == pytest.approx(out.loss.item() / math.log(10))


def test_prototype_bias_adds_a_learned_offset_to_the_cosines() -> None:
    """``prototype_bias=True`` (lightly's ``SwaVPrototypes``): scores p = z Cᵀ + b, used for the codes
    and the prediction alike; the default has no bias (the authors' prototypes)."""
    assert SwAVHead(in_dim=12, hidden_dim=16, out_dim=8, num_prototypes=10).prototypes.bias is None
    torch.manual_seed(6)
    head = SwAVHead(in_dim=12, hidden_dim=16, out_dim=8, num_prototypes=10, prototype_bias=True)
    with torch.no_grad():
        head.prototypes.bias.copy_(torch.linspace(-0.5, 0.5, 10))
    feats = [torch.randn(6, 12) for _ in range(3)]
    out = head(Views(feats), info(6))
    z = F.normalize(head.projector(torch.cat(feats)), dim=1)
    p = list((z @ head.prototypes.weight.T + torch.linspace(-0.5, 0.5, 10)).chunk(3))
    codes = [reference_sinkhorn(p[0].detach()), reference_sinkhorn(p[1].detach())]
    torch.testing.assert_close(out.loss, reference_swav_loss(p, codes, 0.1), rtol=1e-5, atol=1e-6)
    out.loss.backward()
    assert head.prototypes.bias.grad is not None and head.prototypes.bias.grad.abs().sum() > 0
    head.freeze_prototypes_steps = 1
    head.after_backward(0)  # frozen: the offset stays put too, as lightly freezes the whole Linear
    assert head.prototypes.weight.grad is None and head.prototypes.bias.grad is None


def test_logs_flag_collapse() -> None:
    # All samples embedded alike: codes are uniform (entropy ln K), argmax hits one prototype, and
    # the loss cannot go below ln K (cross-entropy of a uniform target).
    torch.manual_seed(5)
    head = SwAVHead(in_dim=12, hidden_dim=16, out_dim=8, num_prototypes=10, batch_norm=False)
    same = torch.randn(1, 12).expand(6, 12)
    logs = head(Views([same, same, same]), info(6)).logs
    assert logs["prototypes_used"].item() == 1
    assert logs["code_max"].item() == pytest.approx(1 / 10, rel=1e-5)
    assert logs["code_entropy"].item() == pytest.approx(math.log(10), rel=1e-5)
    assert logs["loss_over_lnK"].item() >= 1.0 - 1e-6
    assert logs["z_std"].item() == pytest.approx(0.0, abs=1e-6)


# --- prototypes ------------------------------------------------------------------------------
def test_prototypes_unit_norm_after_every_step_and_frozen_first(tmp_path: Path) -> None:
    pl.seed_everything(0, verbose=False)
    backbone = build_backbone(TINY_BACKBONE)[0]
    head = SwAVHead(in_dim=backbone.num_features, hidden_dim=32, out_dim=16, num_prototypes=20,
                    freeze_prototypes_steps=2)  # fmt: skip
    augment = MultiCropAugment(size=32, local_size=16, num_local=2)
    module = SSLModule(backbone, head, augment, LARSFactory(lr=1.0, weight_decay=1e-4))
    seen = [head.prototypes.weight.detach().clone()]

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen.append(pl_module.head.prototypes.weight.detach().clone())

    trainer = pl.Trainer(max_steps=4, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[Record()],
                         default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(module, datamodule=SyntheticData(num_samples=64, num_val_samples=16, batch_size=16))
    assert len(seen) == 5
    for w in seen:
        torch.testing.assert_close(w.norm(dim=1), torch.ones(20), rtol=0, atol=1e-6)
    # Steps 0 and 1 are frozen (no decay, no momentum either); steps 2 and 3 move them.
    torch.testing.assert_close(seen[1], seen[0], rtol=0, atol=1e-7)
    torch.testing.assert_close(seen[2], seen[0], rtol=0, atol=1e-7)
    assert (seen[3] - seen[2]).abs().max() > 1e-4 and (seen[4] - seen[3]).abs().max() > 1e-4


def test_freeze_hook_drops_only_the_prototype_gradient_while_frozen() -> None:
    head = SwAVHead(in_dim=12, hidden_dim=16, out_dim=8, num_prototypes=10, freeze_prototypes_steps=3)
    for step, frozen in [(0, True), (2, True), (3, False)]:
        head.zero_grad(set_to_none=True)
        head(Views([torch.randn(4, 12) for _ in range(3)]), info(4)).loss.backward()
        head.after_backward(step)
        assert (head.prototypes.weight.grad is None) == frozen
        assert head.projector[0].weight.grad is not None


# --- queue -----------------------------------------------------------------------------------
def test_queue_starts_at_its_epoch_is_used_only_when_full_and_rescored() -> None:
    torch.manual_seed(6)
    head = SwAVHead(in_dim=12, hidden_dim=16, out_dim=8, num_prototypes=10, batch_norm=False,
                    queue_length=8, queue_start_epoch=1)  # fmt: skip
    batches = [[torch.randn(4, 12) for _ in range(3)] for _ in range(4)]
    assert head(Views(batches[0]), info(4, epoch=0)).logs["queue_used"].item() == 0
    assert head.queue.rows().abs().sum() == 0 and head.queue.filled == 0  # epoch 0: not filled
    assert head(Views(batches[1]), info(4, epoch=1)).logs["queue_used"].item() == 0  # 4 of 8 rows
    assert head.queue.filled == 4 and head.queue.rows()[:, 4:].abs().sum() == 0
    assert head(Views(batches[2]), info(4, epoch=1)).logs["queue_used"].item() == 0  # fills it
    # Newest first: the queue holds batch 2's then batch 1's normalized global embeddings.
    with torch.no_grad():
        z = [head.embed(torch.cat(b[:2])).chunk(2) for b in batches]
    torch.testing.assert_close(head.queue.rows()[0], torch.cat([z[2][0], z[1][0]]))
    torch.testing.assert_close(head.queue.rows()[1], torch.cat([z[2][1], z[1][1]]))
    # Full: codes come from Sinkhorn over [queue scored by the *current* prototypes; batch].
    with torch.no_grad():
        head.prototypes.weight.copy_(F.normalize(torch.randn(10, 8), dim=1))
        p = head.embed(batches[3][0]) @ head.prototypes.weight.T
        expected = reference_sinkhorn(torch.cat([head.queue.rows()[0] @ head.prototypes.weight.T, p]))[8:]
        torch.testing.assert_close(head.assign(p, 0), expected, rtol=1e-4, atol=1e-6)
    assert head(Views(batches[3]), info(4, epoch=1)).logs["queue_used"].item() == 1


def test_queue_survives_checkpoint_and_resume(tmp_path: Path) -> None:
    pl.seed_everything(1, verbose=False)

    def make() -> SSLModule:
        backbone = build_backbone(TINY_BACKBONE)[0]
        head = SwAVHead(in_dim=backbone.num_features, hidden_dim=32, out_dim=16, num_prototypes=20,
                        queue_length=32)  # fmt: skip
        return SSLModule(backbone, head, MultiCropAugment(size=32, num_local=0), LARSFactory(lr=0.3))

    def trainer(steps: int, callbacks=()) -> pl.Trainer:
        return pl.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                          enable_progress_bar=False, enable_model_summary=False, callbacks=list(callbacks),
                          default_root_dir=tmp_path, limit_val_batches=0)  # fmt: skip

    data = SyntheticData(num_samples=64, num_val_samples=16, batch_size=16)
    first, module = trainer(2), make()
    first.fit(module, datamodule=data)
    first.save_checkpoint(tmp_path / "queue.ckpt")
    saved = module.head.queue.rows().clone()
    assert module.head.queue.full and saved.abs().sum(dim=2).gt(0).all()

    restored: dict = {}

    class Capture(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            restored.update(queue=pl_module.head.queue.rows().clone(), full=pl_module.head.queue.full)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            restored["queue_used"] = trainer.callback_metrics["train/queue_used"].item()

    resumed = make()
    assert not resumed.head.queue.full and "head.queue._extra_state" in resumed.state_dict()
    trainer(3, [Capture()]).fit(resumed, datamodule=data, ckpt_path=tmp_path / "queue.ckpt")
    torch.testing.assert_close(restored["queue"], saved, rtol=0, atol=0)
    assert restored["full"] and restored["queue_used"] == 1.0


# --- 2 processes -----------------------------------------------------------------------------
@pytest.mark.distributed
def test_swav_run_with_a_queue_resumes_from_the_cli_and_refuses_another_queue(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``ssl-toolkit fit ... resume=auto`` of a SwAV run: its queue is module extra state (a dict, not
    a tensor), which the resume check must compare entry by entry; a queue of another length is
    refused in one line naming the checkpoint, before training."""
    from omegaconf import OmegaConf

    from conftest import tiny_recipe
    from ssl_toolkit.run.cli import main

    recipe = tiny_recipe(REPO / "recipes" / "fashion_mnist" / "swav.yaml", tmp_path, steps=2)
    recipe["head"].update(num_prototypes=12, queue_length=16, prototype_bias=True)
    recipe["augment"].update(local_size=16)
    path = tmp_path / "swav.yaml"
    path.write_text(OmegaConf.to_yaml(recipe))
    assert main(["fit", str(path)]) == 0
    assert main(["fit", str(path), "resume=auto", "trainer.max_steps=3"]) == 0
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 3 and last["state_dict"]["head.queue._extra_state"]["filled"] == 16
    capsys.readouterr()
    assert main(["fit", str(path), "resume=auto", "trainer.max_steps=4", "head.queue_length=8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ssl-toolkit: error: resume: ") and "does not fit" in err[0]
    assert "head.queue._extra_state" in err[0]


def test_two_processes_give_the_codes_loss_and_gradients_of_one(tmp_path: Path) -> None:
    from two_processes import run_case

    torch.manual_seed(7)
    n, m, kwargs = 8, 4, dict(in_dim=12, hidden_dim=16, out_dim=8, num_prototypes=10, batch_norm=False)
    one = SwAVHead(**kwargs, queue_length=2 * m)
    queue = F.normalize(torch.randn(2, 2 * m, 8), dim=2)  # (G, 2m, D): rank 0's rows, then rank 1's
    one.load_state_dict({**one.state_dict(), "queue._extra_state": {"rows": queue, "filled": 2 * m}})
    assert one.queue.full
    states = [{**one.state_dict(), "queue._extra_state": {"rows": queue[:, r * m : (r + 1) * m], "filled": m}}
              for r in range(2)]  # fmt: skip
    feats = [torch.randn(n, 12) for _ in range(4)]
    ranks = run_case("swav_head", {"kwargs": {**kwargs, "queue_length": m}, "states": states,
                                        "feats": feats}, tmp_path)  # fmt: skip

    x = [f.clone().requires_grad_(True) for f in feats]
    with torch.no_grad():
        codes = [one.assign(one.scores(one.embed(x[a])), a) for a in range(2)]
    loss = one(Views(x), info(n)).loss
    loss.backward()
    # One Sinkhorn over [queue_0; queue_1; batch] equals per-rank [queue_r; batch_r] with all-reduced sums.
    for a in range(2):
        torch.testing.assert_close(torch.cat([r["codes"][a] for r in ranks]), codes[a], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(torch.stack([r["loss"] for r in ranks]).mean(), loss.detach())
    for v in range(4):
        torch.testing.assert_close(torch.cat([r["grads"][v] for r in ranks]) / 2, x[v].grad, rtol=1e-4, atol=1e-7)
    grad_w = torch.stack([r["grad_prototypes"] for r in ranks]).mean(0)  # what DDP's average gives
    torch.testing.assert_close(grad_w, one.prototypes.weight.grad, rtol=1e-4, atol=1e-7)
    # Per-process equipartition alone would differ: rank 0 by itself gives other codes.
    alone = sinkhorn(torch.cat([queue[0, :m] @ one.prototypes.weight.T,
                                one.scores(one.embed(feats[0][: n // 2]))]))[m:]  # fmt: skip
    assert not torch.allclose(alone, ranks[0]["codes"][0], atol=1e-4)


@pytest.mark.distributed
def test_queue_stays_per_process_under_ddp(tmp_path: Path) -> None:
    # DDP broadcasts registered buffers from rank 0 before every forward; the queue must not be one.
    from two_processes import run_case

    torch.manual_seed(8)
    kwargs = dict(in_dim=12, hidden_dim=16, out_dim=8, num_prototypes=10, batch_norm=False, queue_length=8)
    head = SwAVHead(**kwargs)
    steps = [[torch.randn(8, 12) for _ in range(3)] for _ in range(2)]  # global batch 8 -> 4 per rank
    ranks = run_case("swav_ddp_queue", {"kwargs": kwargs, "state": head.state_dict(), "steps": steps}, tmp_path)
    with torch.no_grad():
        for r, out in enumerate(ranks):
            rows = slice(4 * r, 4 * (r + 1))
            z = [[head.embed(step[a][rows]) for a in range(2)] for step in steps]
            expected = torch.stack([torch.cat([z[1][a], z[0][a]]) for a in range(2)])  # newest first
            torch.testing.assert_close(out["queue"], expected)


# --- recipes ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["imagenet100/swav.yaml", "imagenet100/swav_2crop.yaml", "fashion_mnist/swav.yaml"])
def test_swav_recipes_assign_codes_to_the_global_crops(name: str) -> None:
    r = load_recipe(REPO / "recipes" / name)
    assert r["head"]["name"] == "swav" and r["augment"]["name"] == "multicrop"
    assert r["head"]["num_global"] == r["augment"]["num_global"] == 2
    assert r["head"].get("epsilon", 0.05) == 0.05 and r["head"].get("temperature", 0.1) == 0.1


def test_restoring_a_queue_of_another_size_names_the_queue() -> None:
    small = SwAVHead(in_dim=12, hidden_dim=16, out_dim=8, num_prototypes=10, queue_length=4)
    large = SwAVHead(in_dim=12, hidden_dim=16, out_dim=8, num_prototypes=10, queue_length=8)
    with pytest.raises(ValueError, match="queue: checkpoint rows have shape"):
        large.load_state_dict(small.state_dict())
