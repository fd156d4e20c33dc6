"""Diagnostics: the computation against plain formulas, fixed views that leave the training stream
alone, 1 process == 2 processes, the run files, resume, the callback switch, and ``ssl-toolkit diagnose``."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from distributed_worker import evaluate_diagnostics, tiny_module
from omegaconf import OmegaConf
from two_processes import run_case

from conftest import REPO, tiny_recipe
from ssl_toolkit.callbacks import Diagnostics
from ssl_toolkit.callbacks.eval_plan import request_loader
from ssl_toolkit.data import SyntheticData
from ssl_toolkit.diagnostics import BINS, QUANTILES, diagnose, diagnose_space, embed_pairs
from ssl_toolkit.embedding import EvalBatch
from ssl_toolkit.run.cli import main

DEMO = REPO / "recipes" / "fashion_mnist" / "simclr.yaml"
# 21 held-out images, 18 of them diagnosed in chunks of 4 (4, 4, 4, 4, 2): 5 chunks, so one of
# the 2 ranks gets a padding repeat that the gather must drop.
DATA = {"num_samples": 24, "num_val_samples": 21, "num_classes": 3, "batch_size": 4, "seed": 2}
KWARGS = {"num_images": 18, "seed": 5}


# --- the computation -------------------------------------------------------------------------
def test_diagnose_space_equals_plain_formulas_on_random_pairs() -> None:
    g = torch.Generator().manual_seed(0)
    n, d = 9, 5
    pairs = torch.randn(n, 2, d, generator=g)
    pairs[3, 1] = pairs[3, 0]  # a positive at exactly 1
    labels = torch.tensor([0, 1, 0, 2, 1, 0, -1, 2, 1])
    out = diagnose_space(pairs, labels)

    a = [F.normalize(pairs[i, 0].double(), dim=0) for i in range(n)]
    b = [F.normalize(pairs[i, 1].double(), dim=0) for i in range(n)]
    s = [[float(a[i] @ b[j]) for j in range(n)] for i in range(n)]
    pos = [s[i][i] for i in range(n)]
    neg = [s[i][j] for i in range(n) for j in range(n) if i != j]
    count = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p in pos for q in neg)
    assert out.auc == pytest.approx(count / (len(pos) * len(neg)), abs=1e-12)
    ranks = [1 + sum(s[i][j] > s[i][i] for j in range(n) if j != i) for i in range(n)]
    assert out.mean_rank == pytest.approx(sum(ranks) / n, abs=1e-9)
    assert out.pos_quantiles == pytest.approx(np.quantile(pos, QUANTILES).tolist(), abs=1e-6)
    assert out.neg_quantiles == pytest.approx(np.quantile(neg, QUANTILES).tolist(), abs=1e-6)
    counts, _ = np.histogram(np.clip(neg, -1, 1), bins=BINS, range=(-1, 1))
    assert out.neg_hist == pytest.approx((counts / counts.sum()).tolist(), abs=1e-12)
    assert sum(out.pos_hist) == pytest.approx(1.0) and len(out.pos_hist) == BINS
    align = sum(float((a[i] - b[i]).norm() ** 2) for i in range(n)) / n
    assert out.alignment == pytest.approx(align, rel=1e-5)

    def unif(x: list[torch.Tensor]) -> float:
        terms = [math.exp(-2 * float((x[i] - x[j]).norm() ** 2)) for i in range(n) for j in range(i + 1, n)]
        return math.log(sum(terms) / len(terms))

    assert out.uniformity == pytest.approx((unif(a) + unif(b)) / 2, rel=1e-5)

    def tol(x: list[torch.Tensor]) -> float:  # mean cosine over ordered same-class pairs i != j
        same = [float(x[i] @ x[j]) for i in range(n) for j in range(n)
                if i != j and labels[i] == labels[j] and labels[i] >= 0]  # fmt: skip
        return sum(same) / len(same)

    assert out.tolerance == pytest.approx((tol(a) + tol(b)) / 2, rel=1e-5)
    assert diagnose_space(pairs).tolerance is None


def test_diagnose_space_on_constructed_inputs() -> None:
    eye = torch.eye(6)  # orthonormal images, both views identical: separable, aligned, spread
    out = diagnose_space(torch.stack([eye, eye], dim=1))
    assert out.auc == 1.0 and out.mean_rank == 1.0 and out.alignment == pytest.approx(0.0, abs=1e-7)
    assert out.uniformity == pytest.approx(-4.0, rel=1e-6)  # every squared distance is 2: log e^-4
    assert out.pos_quantiles == pytest.approx([1.0] * 7) and out.neg_quantiles == pytest.approx([0.0] * 7)
    same = torch.ones(5, 2, 3)  # total collapse: positives and negatives identical
    collapsed = diagnose_space(same, torch.tensor([0, 0, 1, 1, 1]))
    assert collapsed.auc == 0.5 and collapsed.mean_rank == 3.0  # (N + 1) / 2: chance
    assert collapsed.uniformity == pytest.approx(0.0, abs=1e-7) and collapsed.tolerance == pytest.approx(1.0)


def test_amcl_heads_are_scored_one_by_one() -> None:
    g = torch.Generator().manual_seed(1)
    feats, proj = torch.randn(6, 2, 4, generator=g), torch.randn(6, 2, 3 * 5, generator=g)
    out = diagnose(feats, proj, None, parts=3)
    assert list(out) == ["proj", "feat", "proj_head0", "proj_head1", "proj_head2"]
    assert out["proj_head1"].auc == diagnose_space(proj[..., 5:10]).auc
    assert out["feat"].auc == diagnose_space(feats).auc


# --- fixed views -------------------------------------------------------------------------------
def test_views_are_fixed_per_chunk_and_leave_the_global_stream_alone() -> None:
    module = tiny_module().eval()
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(7)
    before = torch.get_rng_state()
    first = embed_pairs(module, images, torch.tensor([8, 9, 10, 11]), seed=3)
    assert torch.equal(torch.get_rng_state(), before)  # the training run's stream did not move
    again = embed_pairs(module, images, torch.tensor([8, 9, 10, 11]), seed=3)
    assert all(torch.equal(x, y) for x, y in zip(first, again))
    other = embed_pairs(module, images, torch.tensor([12, 13, 14, 15]), seed=3)  # another chunk: other views
    assert not torch.equal(first[0], other[0])
    assert not torch.equal(first[0][:, 0], first[0][:, 1])  # two different views of each image


def test_pairs_loader_yields_whole_chunks_of_the_seeded_rows() -> None:
    data = SyntheticData(**DATA)
    callback = Diagnostics(**KWARGS)
    request = callback.requests(data)["pairs"]
    assert len(request.rows) == 18 and request.split == "val" and (request.views, request.seed) == (2, 5)
    chunks = list(request_loader(request, data))
    assert [len(c.index) for c in chunks] == [4, 4, 4, 4, 2] and all(isinstance(c, EvalBatch) for c in chunks)
    assert torch.cat([c.index for c in chunks]).tolist() == list(request.rows)
    assert all((c.views, c.seed) == (2, 5) for c in chunks)  # validation_step embeds 2 views seeded by 5
    assert callback.requests(data)["pairs"] == request  # the same draw every time


# --- 1 process == 2 processes --------------------------------------------------------------------
@pytest.mark.distributed
def test_diagnostics_two_processes_equal_one_exactly(tmp_path: Path) -> None:
    module = tiny_module(seed=0)
    inputs = {"module": module.state_dict(), "data": DATA, "kwargs": KWARGS}
    ranks = run_case("diagnostics", inputs, tmp_path, timeout=600)  # a model forward: slow on a busy CPU
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same kernels as the 2 single-threaded ranks
    try:
        torch.manual_seed(123)
        one = evaluate_diagnostics(module, SyntheticData(**DATA), KWARGS)
    finally:
        torch.set_num_threads(threads)
    assert one["roles"] == ("training val x2",) and one["spaces"]["proj"]["num_images"] == 18
    assert {"val/diag_proj_auc", "val/diag_feat_auc", "val/diag_proj_tolerance"} <= one["metrics"].keys()
    for r in ranks:
        assert r["metrics"] == one["metrics"]  # identical numbers, not merely close
        assert r["spaces"] == one["spaces"]
        torch.manual_seed(123)
        assert torch.equal(r["rng"], torch.get_rng_state())  # no process's stream moved
    assert torch.equal(one["rng"], torch.get_rng_state())


# --- state -------------------------------------------------------------------------------------
def test_state_dict_round_trip_keeps_the_history() -> None:
    callback = Diagnostics(**KWARGS)
    space = diagnose_space(torch.randn(5, 2, 3)).as_dict()
    callback.history = [{"step": 2, "epoch": 0, "spaces": {"proj": space}}]
    state = torch.load(_saved(callback.state_dict()), weights_only=True)  # as a checkpoint is read
    fresh = Diagnostics(**KWARGS)
    fresh.load_state_dict(state)
    assert fresh.history == callback.history


def _saved(state: dict) -> object:
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


# --- fit, resume, switch, diagnose (CLI) -----------------------------------------------------------
def _recipe(tmp_path: Path, name: str, steps: int, diagnostics: object = True) -> Path:
    recipe = tiny_recipe(DEMO, tmp_path, steps=steps)
    recipe["trainer"].update(max_epochs=3, val_check_interval=2, num_sanity_val_steps=0)
    recipe["callbacks"] = {"checkpoint": {"every_n_train_steps": 2, "save_top_k": -1}, "diagnostics": diagnostics}
    if diagnostics is True:
        recipe["callbacks"]["diagnostics"] = {"num_images": 12, "seed": 1}
    recipe["out_dir"] = str(tmp_path / name)
    path = tmp_path / f"{name}.yaml"
    path.write_text(OmegaConf.to_yaml(recipe))
    return path


def _rows(run: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((run / "diagnostics" / "quantiles.csv").open()))


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted 4-step run with diagnostics after steps 2 and 4."""
    tmp = tmp_path_factory.mktemp("straight")
    assert main(["fit", str(_recipe(tmp, "run", steps=4))]) == 0
    return tmp / "run"


def test_fit_logs_writes_csv_and_png(straight: Path) -> None:
    rows = _rows(straight)
    assert [(r["step"], r["space"]) for r in rows] == [("2", "proj"), ("2", "feat"), ("4", "proj"), ("4", "feat")]
    assert {"auc", "mean_rank", "alignment", "uniformity", "tolerance", "pos_q01", "neg_q99"} <= rows[0].keys()
    assert all(r["num_images"] == "12" for r in rows)
    png = straight / "diagnostics" / "scores.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    logged = [r for r in csv.DictReader((straight / "csv" / "metrics.csv").open()) if r.get("val/diag_proj_auc")]
    assert [float(r["val/diag_proj_auc"]) for r in logged] == pytest.approx(
        [float(rows[0]["auc"]), float(rows[2]["auc"])]
    )
    saved = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]
    (state,) = [v for k, v in saved.items() if k.startswith("Diagnostics")]
    assert [h["step"] for h in state["history"]] == [2, 4]


def test_training_is_bit_identical_with_diagnostics_on_or_off(straight: Path, tmp_path: Path) -> None:
    assert main(["fit", str(_recipe(tmp_path, "off", steps=4, diagnostics=None))]) == 0
    assert not (tmp_path / "off" / "diagnostics").exists()
    header = (tmp_path / "off" / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "val/diag" not in header
    on = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    off = torch.load(tmp_path / "off" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert on.keys() == off.keys() and all(torch.equal(on[k], off[k]) for k in on)


def test_resume_appends_to_the_csv_and_keeps_the_history(tmp_path: Path) -> None:
    assert main(["fit", str(_recipe(tmp_path, "run", steps=2))]) == 0
    assert main(["fit", str(_recipe(tmp_path, "run", steps=4)), "resume=auto"]) == 0
    run = tmp_path / "run"
    assert not (tmp_path / "run_1").exists()
    assert [r["step"] for r in _rows(run)] == ["2", "2", "4", "4"]  # appended, not overwritten
    saved = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]
    (state,) = [v for k, v in saved.items() if k.startswith("Diagnostics")]
    assert [h["step"] for h in state["history"]] == [2, 4]  # the PNG is redrawn from all of it


def test_numbers_after_a_resume_equal_the_uninterrupted_run(straight: Path, tmp_path: Path) -> None:
    # The straight run's folder as a run stopped after step 2 would have left it, resumed to step 4.
    run = tmp_path / "stopped"
    shutil.copytree(straight, run, ignore=shutil.ignore_patterns("diagnose*"))
    for name in ("last.ckpt", "epoch=0-step=4.ckpt"):
        (run / "checkpoints" / name).unlink()
    rows = _rows(run)
    with (run / "diagnostics" / "quantiles.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(r for r in rows if r["step"] == "2")
    assert main(["fit", str(_recipe(tmp_path, "again", steps=4)), f"resume={run}"]) == 0  # from step 2
    assert _rows(run) == _rows(straight)  # step 4: the same numbers, bit for bit


def test_diagnose_cli_reproduces_the_logged_numbers_and_writes_one_png(straight: Path, capsys) -> None:
    ckpts = sorted((straight / "checkpoints").glob("epoch=*.ckpt"))
    assert len(ckpts) == 2
    assert main(["diagnose", *map(str, ckpts), "--num-images", "12", "--seed", "1"]) == 0
    out = straight / "diagnose"
    assert sorted(p.name for p in out.iterdir()) == ["diagnose.csv", "diagnose.json", "diagnose.png"]
    record = json.loads((out / "diagnose.json").read_text())
    assert [c["step"] for c in record["checkpoints"]] == [2, 4]
    online = {(r["step"], r["space"]): r for r in _rows(straight)}
    for c in record["checkpoints"]:  # offline = what the run logged at that step
        for space in ("proj", "feat"):
            assert c["spaces"][space]["auc"] == pytest.approx(float(online[(str(c["step"]), space)]["auc"]), abs=1e-9)
            assert c["spaces"][space]["neg_quantiles"][3] == pytest.approx(
                float(online[(str(c["step"]), space)]["neg_q50"]), abs=1e-6
            )
    assert (out / "diagnose.png").read_bytes()[:4] == b"\x89PNG"
    assert "written:" in capsys.readouterr().out
    assert main(["diagnose", str(ckpts[0]), "--num-images", "12"]) == 0  # never over the first folder
    assert (straight / "diagnose_1" / "diagnose.png").is_file()


@pytest.mark.distributed
def test_two_process_fit_logs_what_one_process_diagnose_computes(tmp_path: Path) -> None:
    # Lightning's own DDP (gloo, 2 CPU processes): its DistributedSampler deals whole chunks of the
    # pairs loader; the values logged by the 2-process run equal `diagnose` of its checkpoint in 1.
    recipe = tiny_recipe(DEMO, tmp_path, steps=2)
    recipe["data"].update(num_val_samples=21, batch_size=8)  # 18 pairs in chunks of 8: 8, 8, 2 (padded)
    recipe["trainer"].update(devices=2, strategy="ddp", val_check_interval=2, num_sanity_val_steps=0,
                             enable_model_summary=False)  # fmt: skip
    recipe["callbacks"] = {"checkpoint": {"every_n_train_steps": 2}, "diagnostics": {"num_images": 18, "seed": 1}}
    path = tmp_path / "ddp.yaml"
    path.write_text(OmegaConf.to_yaml(recipe))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "ssl_toolkit.run.cli", "fit", str(path)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["diagnose", str(run / "checkpoints" / "last.ckpt"), "--num-images", "18", "--seed", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    offline = json.loads((run / "diagnose" / "diagnose.json").read_text())["checkpoints"][0]
    online = {r["space"]: r for r in _rows(run)}
    assert offline["step"] == 2 and set(online) == {"proj", "feat"}
    for space, row in online.items():
        assert row["step"] == "2" and row["num_images"] == "18"
        assert repr(offline["spaces"][space]["auc"]) == row["auc"]  # identical, not close
        assert repr(offline["spaces"][space]["uniformity"]) == row["uniformity"]
        assert repr(offline["spaces"][space]["neg_quantiles"][0]) == row["neg_q01"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["/no/such.ckpt"], "checkpoint: /no/such.ckpt does not exist"),
        (["{run}"], "is a folder, not a checkpoint file (it holds "),
        (["{ckpt}", "--num-images", "1"], "--num-images: must be 2 to 4096"),
        (["{ckpt}", "--out", "{run}"], "exists; diagnose never writes into an existing folder"),
    ],
)
def test_diagnose_bad_input_is_one_line_exit_2(args: list[str], message: str, straight: Path, capsys) -> None:
    ckpt = straight / "checkpoints" / "last.ckpt"
    argv = [a.format(ckpt=ckpt, run=straight) for a in args]
    assert main(["diagnose", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ssl-toolkit: error:") and message in err and "\n" not in err
