"""One rank of a 2-process gloo run on the CPU, started by ``two_processes.run_case`` (tests/two_processes.py).

    python tests/distributed_worker.py RANK WORLD INIT_FILE WORK_DIR CASE

Reads ``WORK_DIR/inputs.pt`` (the global batch), runs CASE on this rank's slice, and writes
``WORK_DIR/rank{RANK}.pt`` with the loss and the gradients of the local inputs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

if TYPE_CHECKING:  # the callback cases import Lightning lazily, so the loss cases start fast
    from ssl_toolkit.data import ImageDataModule
    from ssl_toolkit.module import SSLModule


def tiny_module(seed: int = 0) -> SSLModule:
    """A seconds-fast SSLModule (timm ``test_resnet`` + small SimCLR head, 32 px), also used by
    tests/callbacks; the seed fixes the init."""
    from conftest import TINY_BACKBONE
    from ssl_toolkit.augment import SimCLRAugment
    from ssl_toolkit.backbone import build_backbone
    from ssl_toolkit.heads import SimCLRHead
    from ssl_toolkit.module import SSLModule
    from ssl_toolkit.optim import LARSFactory

    torch.manual_seed(seed)
    backbone = build_backbone(TINY_BACKBONE)[0]
    head = SimCLRHead(in_dim=backbone.num_features, hidden_dim=32, out_dim=16, batch_norm=True)
    return SSLModule(backbone, head, SimCLRAugment(size=32), LARSFactory(lr=0.3))


def run_validation(module: SSLModule, data: ImageDataModule, callbacks: list) -> dict:
    """One evaluation as Lightning's validation loop runs it (plan -> loaders -> validation_step ->
    on_validation_batch_end -> compute), each process on its DistributedSampler shard."""
    from types import SimpleNamespace

    from torch.utils.data import DataLoader, DistributedSampler

    from ssl_toolkit.distributed import is_distributed

    trainer = SimpleNamespace(callbacks=callbacks, datamodule=data)
    for cb in callbacks:
        cb.make_plan(trainer)
    module.eval()
    with torch.inference_mode():  # as in Lightning's loop
        for idx, loader in enumerate(data.val_dataloader()):
            if is_distributed():  # what Lightning's use_distributed_sampler does
                sampler = DistributedSampler(loader.dataset, shuffle=False)
                loader = DataLoader(
                    loader.dataset, batch_size=loader.batch_size, sampler=sampler, generator=loader.generator
                )
            for batch_idx, batch in enumerate(loader):
                out = module.validation_step(batch, batch_idx, idx)
                for cb in callbacks:
                    cb.on_validation_batch_end(trainer, module, out, batch, batch_idx, idx)
        metrics = {}
        for cb in callbacks:
            metrics.update(cb.compute(module, data))
    for cb in callbacks:
        cb.store.clear()
    return metrics


def evaluate_callbacks(module: SSLModule, data: ImageDataModule, inputs: dict) -> dict:
    """KNNProbe, RankMe and LinearProbe evaluation on ``data`` (run the same in 1 and 2 processes).

    RankMe reads its rows from the k-NN bank (the whole train split) and, alone, from a loader of
    its own (``subset/`` keys). The probe first takes two SGD steps on this process's slice of
    ``inputs["feats"]`` / ``inputs["labels"]`` (the global batch).
    """
    from ssl_toolkit.callbacks import KNNProbe, LinearProbe, RankMe
    from ssl_toolkit.distributed import rank, world_size

    knn, rankme, probe = KNNProbe(k=10), RankMe(num_samples=21, seed=3), LinearProbe(lr=0.5)
    n = inputs["feats"].shape[0] // world_size()
    rows = slice(rank() * n, (rank() + 1) * n)
    probe.build(inputs["feats"].shape[1], data.num_classes)
    losses = [probe.fit_batch(inputs["feats"][rows], inputs["labels"][rows]) for _ in range(2)]
    out = run_validation(module, data, [knn, rankme, probe])
    out["roles"] = knn.plan.layout()
    alone_cb = RankMe(num_samples=21, seed=3, alpha_req=True)
    alone = run_validation(module, data, [alone_cb])
    out["subset_roles"] = alone_cb.plan.layout()
    out.update({f"subset/{k}": v for k, v in alone.items()})
    out["probe_weight"] = probe.classifier.weight.detach().clone()
    out["probe_loss"] = float(losses[0])
    return out


def eval_callbacks(inputs: dict, rank: int, world: int) -> dict:
    from ssl_toolkit.data import SyntheticData

    module = tiny_module()
    module.load_state_dict(inputs["module"])
    return evaluate_callbacks(module, SyntheticData(**inputs["data"]), inputs)


def multi_view_losses(inputs: dict, rank: int, world: int) -> dict:
    """For each ``key: (name, kwargs, views)`` of ``inputs["cases"]``: LOSSES[name](**kwargs) (a
    MultiViewLoss) on this rank's rows of every view; the loss and the local views' gradients."""
    from ssl_toolkit.losses import LOSSES

    out = {}
    for key, (name, kwargs, global_views) in inputs["cases"].items():
        n = global_views[0].shape[0] // world
        views = [v[rank * n : (rank + 1) * n].clone().requires_grad_(True) for v in global_views]
        loss = LOSSES[name](**kwargs)(views)
        loss.backward()
        out[key] = {"loss": loss.detach(), "grads": [v.grad for v in views]}
    return out


def gather_int64(inputs: dict, rank: int, world: int) -> dict:
    """gather_split of this rank's rows (strided, as a DistributedSampler deals them)."""
    from ssl_toolkit.embedding import EmbeddedSplit, gather_split

    mine = slice(rank, None, world)
    local = EmbeddedSplit(inputs["feats"][mine], None, inputs["labels"][mine], inputs["index"][mine])
    out = gather_split(local)
    return {"feats": out.feats, "labels": out.labels, "index": out.index}


# The loss and head cases of the contract tables live in tests/contracts/ (one launch per table).
CASES = {"eval_callbacks": eval_callbacks, "multi_view_losses": multi_view_losses, "gather_int64": gather_int64}


def amcl(inputs: dict, rank: int, world: int) -> dict:
    """AMCLLoss on this rank's rows of every head's projections; temperature nets from a state dict."""
    from ssl_toolkit.losses.amcl import AMCLLoss, PairTemperature

    tau_min, tau_max, tau_init = inputs["tau"]
    temps = []
    for state in inputs["temperatures"]:
        temps.append(PairTemperature(inputs["dim"], inputs["hidden_dim"], tau_min, tau_max, tau_init))
        temps[-1].load_state_dict(state)
    n = inputs["z_a"][0].shape[0] // world
    rows = slice(rank * n, (rank + 1) * n)
    z_a = [z[rows].clone().requires_grad_(True) for z in inputs["z_a"]]
    z_b = [z[rows].clone().requires_grad_(True) for z in inputs["z_b"]]
    loss, _ = AMCLLoss(inputs["reg_weight"])(z_a, z_b, temps)
    loss.backward()
    grads = {"grad_a": [z.grad for z in z_a], "grad_b": [z.grad for z in z_b]}
    return {"loss": loss.detach(), **grads, "grad_params": [p.grad for t in temps for p in t.parameters()]}


CASES["amcl"] = amcl


def balanced_sampler(inputs: dict, rank: int, world: int) -> dict:
    """ClassBalancedBatchSampler with rank and world read from torch.distributed (not passed)."""
    from ssl_toolkit.data.balanced_sampler import ClassBalancedBatchSampler

    sampler = ClassBalancedBatchSampler(inputs["labels"], inputs["p"], inputs["k"], seed=inputs["seed"])
    return {"len": len(sampler), "batches": list(sampler)}


def hydra(inputs: dict, rank: int, world: int) -> dict:
    """HydraLoss on this rank's rows of the projections, gates and labels."""
    from ssl_toolkit.losses.hydra import HydraLoss

    n = inputs["z_a"].shape[0] // world
    rows = slice(rank * n, (rank + 1) * n)
    z_a, z_b, gate = (inputs[k][rows].clone().requires_grad_(True) for k in ("z_a", "z_b", "gate"))
    loss_fn = HydraLoss(temperature=inputs["temperature"])
    loss = loss_fn(z_a, z_b, gate, inputs["y1"][rows], inputs["y2"][rows])
    loss.backward()
    grads = {"grad_a": z_a.grad, "grad_b": z_b.grad, "grad_gate": gate.grad, "grad_scale": loss_fn.log_scale.grad}
    return {"loss": loss.detach(), **grads}


CASES["balanced_sampler"] = balanced_sampler
CASES["hydra"] = hydra


def mocov2_head(inputs: dict, rank: int, world: int) -> dict:
    """MoCoV2Head (symmetric; or ``inputs["name"]`` from HEADS) on this rank's rows: loss, feature
    gradients, and the queue after the enqueue of the keys gathered from both ranks."""
    from ssl_toolkit.heads import HEADS, BatchInfo, Views

    head = HEADS[inputs.get("name", "mocov2")](**inputs["kwargs"])
    head.load_state_dict(inputs["state"])
    n = inputs["index"].shape[0] // world
    rows = slice(rank * n, (rank + 1) * n)
    feats = [f[rows].clone().requires_grad_(True) for f in inputs["feats"]]
    teacher = [f[rows] for f in inputs["teacher"]]
    index = inputs["index"][rows]
    info = BatchInfo(labels=torch.zeros_like(index), index=index, step=0, epoch=0)
    out = head(Views(feats, teacher=teacher), info)
    out.loss.backward()
    return {"loss": out.loss.detach(), "grads": [f.grad for f in feats], "queue": head.queue,
            "queue_index": head.queue_index, "queue_ptr": head.queue_ptr,
            "queue_view2": getattr(head, "queue_view2", None)}  # fmt: skip


CASES["mocov2_head"] = mocov2_head


def solo_probe(inputs: dict, rank: int, world: int) -> dict:
    """LinearProbe(protocol="solo_learn") on this rank's rows: its loss, then the gradients after
    ``on_before_optimizer_step`` averaged them over the processes."""
    from ssl_toolkit.callbacks import LinearProbe

    probe = LinearProbe(protocol="solo_learn")
    probe.build(inputs["feats"][0].shape[1], inputs["num_classes"])
    n = inputs["labels"].shape[0] // world
    rows = slice(rank * n, (rank + 1) * n)
    loss = probe.feature_loss([f[rows] for f in inputs["feats"]], inputs["labels"][rows])
    loss.backward()
    probe.on_before_optimizer_step(None, None, None)  # type: ignore[arg-type]
    return {"loss": loss.detach(), "grads": [p.grad.clone() for p in probe.classifier.parameters()]}


CASES["solo_probe"] = solo_probe


def swav_head(inputs: dict, rank: int, world: int) -> dict:
    """SwAVHead on this rank's rows with this rank's queue (``inputs["states"][rank]``): the codes
    of the global crops (before the step's enqueue), the loss, and the gradients."""
    from ssl_toolkit.heads import BatchInfo, SwAVHead, Views

    head = SwAVHead(**inputs["kwargs"])
    head.load_state_dict(inputs["states"][rank])
    n = inputs["feats"][0].shape[0] // world
    rows = slice(rank * n, (rank + 1) * n)
    feats = [f[rows].clone().requires_grad_(True) for f in inputs["feats"]]
    with torch.no_grad():
        codes = [head.assign(head.scores(head.embed(feats[a])), a) for a in range(head.num_global)]
    info = BatchInfo(labels=torch.zeros(n), index=torch.arange(n), step=0, epoch=0)
    out = head(Views(feats), info)
    out.loss.backward()
    return {"codes": codes, "loss": out.loss.detach(), "grads": [f.grad for f in feats],
            "grad_prototypes": head.prototypes.weight.grad}  # fmt: skip


CASES["swav_head"] = swav_head


def swav_ddp_queue(inputs: dict, rank: int, world: int) -> dict:
    """SwAVHead wrapped in DDP (as Lightning does) for two steps on this rank's rows; the queue after."""
    from ssl_toolkit.heads import BatchInfo, SwAVHead, Views

    head = SwAVHead(**inputs["kwargs"])
    head.load_state_dict(inputs["state"])
    ddp = torch.nn.parallel.DistributedDataParallel(head)  # broadcast_buffers=True, the default
    for step, feats in enumerate(inputs["steps"]):
        n = feats[0].shape[0] // world
        local = [f[rank * n : (rank + 1) * n] for f in feats]
        ddp(Views(local), BatchInfo(labels=torch.zeros(n), index=torch.arange(n), step=step, epoch=0)).loss.backward()
    return {"queue": head.queue.rows()}


CASES["swav_ddp_queue"] = swav_ddp_queue


def sync_batchnorm(inputs: dict, rank: int, world: int) -> dict:
    """AllReduceBatchNorm (train mode) on this rank's rows; loss = sum(w * y)."""
    from ssl_toolkit.sync_batchnorm import AllReduceBatchNorm

    n = inputs["x"].shape[0] // world
    rows = slice(rank * n, (rank + 1) * n)
    bn = AllReduceBatchNorm(3, momentum=0.3)
    bn.load_state_dict(inputs["state"])
    x = inputs["x"][rows].clone().requires_grad_(True)
    y = bn(x)
    (inputs["w"][rows] * y).sum().backward()
    return {"y": y.detach(), "grad_x": x.grad, "grad_weight": bn.weight.grad, "grad_bias": bn.bias.grad,
            "running_mean": bn.running_mean, "running_var": bn.running_var}  # fmt: skip


CASES["sync_batchnorm"] = sync_batchnorm


def sync_batchnorm_bf16(inputs: dict, rank: int, world: int) -> dict:
    """AllReduceBatchNorm (train mode, float32 weights) on this rank's bf16 rows, as under autocast."""
    from ssl_toolkit.sync_batchnorm import AllReduceBatchNorm

    n = inputs["x"].shape[0] // world
    bn = AllReduceBatchNorm(3, momentum=0.3)
    bn.load_state_dict(inputs["state"])
    y = bn(inputs["x"][rank * n : (rank + 1) * n].to(torch.bfloat16))
    return {"y": y.detach(), "running_mean": bn.running_mean, "running_var": bn.running_var}


CASES["sync_batchnorm_bf16"] = sync_batchnorm_bf16


def label_free_metrics(inputs: dict, rank: int, world: int) -> dict:
    """Every metric by its documented distributed route on this rank's rows (all-reduced statistics,
    or gathered inputs); each rank returns the global values."""
    import torch.nn.functional as F

    from ssl_toolkit.distributed import all_reduce_sum, gather_no_grad
    from ssl_toolkit.metrics import (
        ToleranceStatistics,
        alignment,
        tolerance_from_statistics,
        tolerance_statistics,
        uniformity,
    )
    from ssl_toolkit.metrics_contrastive import auc_from_count, mann_whitney_count, positive_ranks, split_scores
    from ssl_toolkit.metrics_spectral import (
        CovarianceStatistics,
        LidarStatistics,
        alpha_req_from_statistics,
        covariance_statistics,
        lidar_from_statistics,
        lidar_statistics,
    )

    n = inputs["z1"].shape[0] // world
    rows = slice(rank * n, (rank + 1) * n)
    z1, z2, labels, views = inputs["z1"][rows], inputs["z2"][rows], inputs["labels"][rows], inputs["views"][rows]
    scores = F.normalize(z1, dim=1) @ F.normalize(gather_no_grad(z2), dim=1).T  # (n, N)
    positive = torch.arange(n) + rank * n
    pos, neg = split_scores(scores, positive)
    ranks = positive_ranks(scores, positive)
    twice_u, n_neg, rank_sum = all_reduce_sum(
        [mann_whitney_count(gather_no_grad(pos), neg), torch.tensor(neg.numel()), ranks.sum()]
    )
    lid = LidarStatistics(*all_reduce_sum(lidar_statistics(views)))
    cov = CovarianceStatistics(*all_reduce_sum(covariance_statistics(z1)))
    tol = ToleranceStatistics(*all_reduce_sum(tolerance_statistics(z1, labels, inputs["num_classes"])))
    z1_all, z2_all = gather_no_grad(z1), gather_no_grad(z2)
    return {
        "twice_u": twice_u,
        "auc": auc_from_count(twice_u, world * n, int(n_neg)),
        "mean_rank": float(rank_sum) / (world * n),
        "lidar": lidar_from_statistics(lid),
        "alpha_req": alpha_req_from_statistics(cov, 0, 8),
        "tolerance": tolerance_from_statistics(tol),
        "alignment": alignment(z1_all, z2_all),
        "uniformity": uniformity(z1_all),
    }


CASES["label_free_metrics"] = label_free_metrics


def sync_scale_batchnorm(inputs: dict, rank: int, world: int) -> dict:
    """The projector's scale-only BN (SimCLR's output BN) swapped to AllReduceBatchNorm, (N, D) rows."""
    from ssl_toolkit.heads.mlp import ScaleBatchNorm1d
    from ssl_toolkit.sync_batchnorm import AllReduceBatchNorm, swap_batchnorm

    n = inputs["x"].shape[0] // world
    rows = slice(rank * n, (rank + 1) * n)
    bn = ScaleBatchNorm1d(inputs["x"].shape[1])
    bn.load_state_dict(inputs["state"])
    bn = swap_batchnorm(bn, ScaleBatchNorm1d, AllReduceBatchNorm)
    x = inputs["x"][rows].clone().requires_grad_(True)
    y = bn(x)
    (inputs["w"][rows] * y).sum().backward()
    return {"y": y.detach(), "grad_x": x.grad, "grad_weight": bn.weight.grad, "bias": bn.bias,
            "kind": type(bn).__name__}  # fmt: skip


CASES["sync_scale_batchnorm"] = sync_scale_batchnorm


def process_streams(inputs: dict, rank: int, world: int) -> dict:
    """What ``fit`` does on each process: model seed, then ``RNGState.setup`` re-seeds per rank; then
    the draws of a step (SimCLR crops/jitter, MoCHi mixtures, Hydra partners) before and after a
    checkpoint's gathered states are restored on this rank."""
    from types import SimpleNamespace

    from ssl_toolkit.augment import SimCLRAugment
    from ssl_toolkit.callbacks.rng_state import RNGState
    from ssl_toolkit.heads.hydra import HydraHead
    from ssl_toolkit.losses.mochi import MoCHiLoss

    torch.manual_seed(inputs["seed"])  # seed_everything(seed) on every rank
    torch.randn(100)  # the model's initialization draws
    callback = RNGState(seed=inputs["seed"])
    trainer = SimpleNamespace(global_rank=rank, world_size=world)
    callback.setup(trainer, None, "fit")
    aug = SimCLRAugment(16, crop_scale=(0.2, 1.0), blur_p=0.0)
    mochi = MoCHiLoss(0.2, num_hard=4, num_mixed=3, num_query_mixed=2)
    hydra = HydraHead(in_dim=8, num_classes=4, hidden_dim=8, out_dim=4, label_dim=4, gate_hidden_dim=4)

    def draw() -> dict:
        return {"views": aug(inputs["images"]),
                "mixed": mochi.synthetic_negatives(inputs["q"], inputs["queue"]),
                "partners": hydra.partner_classes(inputs["labels"])}  # fmt: skip

    saved = callback.state_dict()  # gathered from both ranks, as a checkpoint holds it
    first = draw()
    callback.load_state_dict(saved)
    callback.on_train_start(trainer, None)
    return {"first": first, "replayed": draw(), "saved_ranks": len(saved["ranks"])}


CASES["process_streams"] = process_streams


def evaluate_diagnostics(module: SSLModule, data: ImageDataModule, kwargs: dict) -> dict:
    """One evaluation of the Diagnostics callback (run the same in 1 and 2 processes): its logged
    metrics, every space's full diagnostics, the roles, and the global CPU RNG state afterwards."""
    from ssl_toolkit.callbacks import Diagnostics

    callback = Diagnostics(**kwargs)
    metrics = run_validation(module, data, [callback])
    return {"metrics": metrics, "spaces": {k: d.as_dict() for k, d in callback.last.items()},
            "roles": callback.plan.layout(), "rng": torch.get_rng_state()}  # fmt: skip


def diagnostics(inputs: dict, rank: int, world: int) -> dict:
    from ssl_toolkit.data import SyntheticData

    module = tiny_module()
    module.load_state_dict(inputs["module"])
    torch.manual_seed(123)  # the "training stream": evaluating must leave it where it was
    return evaluate_diagnostics(module, SyntheticData(**inputs["data"]), inputs["kwargs"])


CASES["diagnostics"] = diagnostics


def loss_calls(inputs: dict, rank: int, world: int) -> dict:
    """For each ``key: (class name, kwargs, args)`` of ``inputs["cases"]``: the loss class of
    ``ssl_toolkit.losses`` on this rank's rows of every (B, D) tensor of ``args`` (lists of views
    are sliced view by view; other values passed as they are); the loss, the gradients of the local
    tensors in the order of ``args`` (None where no gradient reaches, e.g. a stop-gradient target),
    and the loss's buffers after the call (DINO's centre)."""
    import ssl_toolkit.losses as losses

    def local(x: object) -> object:
        if isinstance(x, torch.Tensor):
            n = x.shape[0] // world
            return x[rank * n : (rank + 1) * n].clone().requires_grad_(True)
        return [local(v) for v in x] if isinstance(x, list) else x

    def leaves(x: object) -> list[torch.Tensor]:
        return [x] if isinstance(x, torch.Tensor) else [t for v in x for t in leaves(v)] if isinstance(x, list) else []

    out = {}
    for key, (name, kwargs, args) in inputs["cases"].items():
        loss_fn = getattr(losses, name)(**kwargs)
        args = [local(a) for a in args]
        loss = loss_fn(*args)
        loss.backward()
        grads = [t.grad for a in args for t in leaves(a)]
        out[key] = {"loss": loss.detach(), "grads": grads, "buffers": dict(loss_fn.named_buffers())}
    return out


CASES["loss_calls"] = loss_calls


def main() -> None:
    rank, world, init_file, work, case = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], Path(sys.argv[4]), sys.argv[5]
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        out = CASES[case](torch.load(work / "inputs.pt"), rank, world)
        torch.save(out, work / f"rank{rank}.pt")
        dist.barrier()  # both ranks have written their results
    except BaseException:
        dist.destroy_process_group()
        raise
    # Skip interpreter teardown: gloo's threads can abort the exit ('terminate called without an active
    # exception', status -6) after the results are safely written.
    sys.stdout.flush(), sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
