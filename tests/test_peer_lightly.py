"""benchmarks/peer_lightly.py: the toolkit side's recipes stay valid and equal to the lightly side's
settings; the table's arithmetic. (The runs themselves need lightly: ``pip install -e '.[peers]'``.)"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
from torch import nn

from benchmarks.peer_lightly import (
    AUTHORS_FORM,
    LIGHTLY_FORM,
    MEAN,
    METHODS,
    STD,
    KorniaViews,
    RunResult,
    Settings,
    table,
    toolkit_recipe,
)
from ssl_toolkit.heads import HEADS
from ssl_toolkit.heads.base import BatchInfo, Views
from ssl_toolkit.recipe.build import validate


@pytest.mark.parametrize("method", METHODS)
def test_toolkit_recipe_is_valid_and_uses_the_shared_settings(method: str) -> None:
    s = Settings()
    recipe = toolkit_recipe(method, s, seed=3)
    validate(recipe)
    assert recipe["seed"] == 3 and recipe["head"]["name"] == method
    widths = {"barlow_twins": (s.wide_hidden_dim, s.wide_out_dim), "vicreg": (s.wide_hidden_dim, s.wide_out_dim),
              "dino": (s.dino_hidden_dim, s.dino_out_dim)}  # fmt: skip
    assert (recipe["head"]["hidden_dim"], recipe["head"]["out_dim"]) == widths.get(method, (s.hidden_dim, s.out_dim))
    assert recipe["optimizer"] == {"name": "sgd", "lr": s.lr, "weight_decay": s.weight_decay, "momentum": s.momentum}
    assert "scheduler" not in recipe and recipe["data"]["train_samples"] == s.train_samples
    a = recipe["augment"]
    assert (a["crop_scale"], a["brightness"], a["hue"], a["jitter_p"], a["grayscale_p"], a["blur_p"]) == (
        [0.08, 1.0], 0.4, 0.1, 0.8, 0.2, 0.0)  # lightly: cj_strength 0.5 x (0.8, 0.8, 0.8, 0.2), no blur  # fmt: skip


def test_equal_recipe_builds_lightlys_heads_and_the_authors_side_keeps_our_defaults() -> None:
    """The ``ssl_toolkit`` side trains lightly 1.6's model: SimCLR's projector ends in an affine
    BatchNorm1d (``SimCLRProjectionHead``), SwAV's prototypes have a bias (``SwaVPrototypes``).
    ``ssl_toolkit_authors_defaults`` overrides exactly those keys back to the constructors' defaults."""
    s = Settings()
    heads = {m: toolkit_recipe(m, s, 0)["head"] for m in METHODS}
    simclr = HEADS["simclr"](
        in_dim=512, hidden_dim=s.hidden_dim, out_dim=s.out_dim, last_norm=heads["simclr"]["last_norm"]
    )
    layers = list(simclr.projector)
    assert [type(m) for m in layers] == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear, nn.BatchNorm1d]
    assert layers[0].bias is None and layers[3].bias is None and layers[4].bias is not None  # scale and shift
    assert (
        HEADS["swav"](in_dim=512, out_dim=s.out_dim, prototype_bias=heads["swav"]["prototype_bias"]).prototypes.bias
        is not None
    )
    for method, overrides in AUTHORS_FORM.items():
        assert overrides.keys() == LIGHTLY_FORM[method].keys()
        defaults = inspect.signature(HEADS[method]).parameters
        assert all(defaults[k].default == v for k, v in overrides.items()), method
        assert toolkit_recipe(method, s, 0, overrides)["head"] == {**heads[method], **overrides}


def test_old_projector_override_reaches_the_recipe() -> None:
    head = toolkit_recipe("simclr", Settings(), 0, {"batch_norm": False, "last_norm": "none"})["head"]
    assert head["batch_norm"] is False and head["last_norm"] == "none"


def test_table_means_spread_and_ratios() -> None:
    rows = [RunResult("simclr", "lightly", s, k, v, v / 2, 1.0, 8) for s, k, v in [(0, 0.50, 100), (1, 0.52, 110)]]
    rows += [RunResult("simclr", "ssl_toolkit", s, k, v, v / 2, 1.0, 8) for s, k, v in [(0, 0.53, 150), (1, 0.51, 160)]]
    out = table(rows).splitlines()
    assert out[2].startswith("| simclr | lightly | 0.5100 ± 0.0141 | 0: 0.5000, 1: 0.5200 | 105 (52) |")
    assert out[3].endswith("| 155 (78) | +1.0 pt | 1.48x |")


def test_table_compares_a_side_with_lightly_on_the_seeds_both_ran() -> None:
    rows = [RunResult("swav", "lightly", s, k, v, v / 2, 1.0, 8) for s, k, v in [(0, 0.50, 100), (1, 0.52, 110)]]
    rows.append(RunResult("swav", "ssl_toolkit", 1, 0.51, 160, 80, 1.0, 8))  # seed 1 only
    out = table(rows).splitlines()
    assert out[3].startswith("| swav | ssl_toolkit | 0.5100 ± - | 1: 0.5100 |")
    assert out[3].endswith("| 160 (80) | -1.0 pt (1 seeds) | 1.45x |")  # against lightly's seed 1 alone


def test_table_never_pools_or_pairs_runs_of_different_budgets() -> None:
    """The same seeds at 8 and at 64 steps: two rows per side, each compared with lightly's runs of
    its own budget, and a steps column (absent when every run has one budget: the tests above)."""
    rows = [RunResult("simclr", "lightly", s, 0.50, 100, 50, 1.0, 8) for s in (0, 1)]
    rows += [RunResult("simclr", "ssl_toolkit", s, 0.53, 150, 75, 1.0, 8) for s in (0, 1)]
    rows += [RunResult("simclr", "lightly", s, 0.70, 400, 200, 1.0, 64) for s in (0, 1)]
    rows += [RunResult("simclr", "ssl_toolkit", 0, 0.69, 600, 300, 1.0, 64)]
    out = table(rows).splitlines()
    assert out[0].startswith("| method | built from | steps | k-NN top-1, mean ± std |") and len(out) == 6
    assert out[2].startswith("| simclr | lightly | 8 | 0.5000 ± 0.0000 | 0: 0.5000, 1: 0.5000 | 100 (50) |")
    assert out[3].startswith("| simclr | ssl_toolkit | 8 | 0.5300 ± 0.0000 | 0: 0.5300, 1: 0.5300 |")
    assert out[3].endswith("| 150 (75) | +3.0 pt | 1.50x |")
    assert out[4].startswith("| simclr | lightly | 64 | 0.7000 ± 0.0000 | 0: 0.7000, 1: 0.7000 | 400 (200) |")
    assert out[5].endswith("| 64 | 0.6900 ± - | 0: 0.6900 | 600 (300) | -1.0 pt (1 seeds) | 1.50x |")


@pytest.mark.parametrize(("pil_crops", "eight_bit"), [(False, False), (True, False), (False, True)])
def test_kornia_views_give_two_normalized_views_per_batch(pil_crops: bool, eight_bit: bool) -> None:
    images = torch.randint(0, 256, (6, 1, 32, 32), dtype=torch.uint8)
    views = KorniaViews(images, Settings(batch_size=4, num_workers=0), seed=0, pil_crops=pil_crops, eight_bit=eight_bit)
    batches = list(views)
    assert len(views) == len(batches) == 1  # drop_last: 6 images, batch 4
    assert [tuple(v.shape) for v in batches[0]] == [(4, 3, 32, 32)] * 2
    assert batches[0][0].dtype == torch.float32 and not torch.equal(batches[0][0], batches[0][1])
    levels = (batches[0][0] * STD + MEAN) * 255  # grey levels before normalization
    off_grid = (levels - levels.round()).abs().max().item()
    assert (off_grid < 1e-3) if eight_bit else (off_grid > 0.01)


def test_bad_arguments_give_one_line_and_exit_2(tmp_path, capsys) -> None:  # noqa: ANN001
    from benchmarks.peer_lightly import main  # these checks come before the one for lightly: no lightly needed

    assert main(["--table-only", "--out", str(tmp_path / "missing.jsonl")]) == 2
    assert (
        capsys.readouterr().err.strip()
        == f"--out: {tmp_path / 'missing.jsonl'} is not a file of runs (one JSON line per run)"
    )
    assert main(["--train-samples", "100"]) == 2
    assert capsys.readouterr().err.strip() == (
        "--train-samples: 100 gives 0 step(s) of 256, none after the 2 warm-up steps; use at least 768"
    )
    assert main(["--out", str(tmp_path / "no_such_folder" / "runs.jsonl")]) == 2  # before any run
    assert capsys.readouterr().err.strip() == (
        f"--out: {tmp_path / 'no_such_folder'} is not an existing folder; "
        "give a file of runs (one JSON line per run, appended to)"
    )
    assert main(["--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"--out: {tmp_path} is a folder; give a file of runs (one JSON line per run, appended to)"
    )


def test_help_shows_every_default(capsys) -> None:  # noqa: ANN001
    from benchmarks.peer_lightly import main

    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines at the terminal's width
    for default in ["['simclr', 'mocov2', 'swav', 'byol', 'barlow_twins', 'vicreg', 'dino']", "[0, 1, 2]",
                    "['lightly', 'ssl_toolkit']", "16384", "5000", "/usr/share/datasets/fashion-mnist",
                    "benchmarks/peer_lightly_{n}.jsonl", "False"]:  # fmt: skip
        assert f"(default: {default})" in text


def test_default_out_follows_the_training_budget(tmp_path, monkeypatch, capsys) -> None:  # noqa: ANN001
    from benchmarks.peer_lightly import main

    monkeypatch.chdir(tmp_path)  # the default --out is relative: nothing named here exists
    for argv, name in [([], "peer_lightly_16k.jsonl"), (["--train-samples", "2048"], "peer_lightly_2k.jsonl"),
                       (["--train-samples", "5000"], "peer_lightly_5000.jsonl")]:  # fmt: skip
        assert main(["--table-only", *argv]) == 2
        assert capsys.readouterr().err.strip() == (
            f"--out: {Path('benchmarks', name)} is not a file of runs (one JSON line per run)"
        )
    (tmp_path / "runs_2k.jsonl").mkdir()  # {n} in a given --out too; checked before any run
    assert main(["--train-samples", "2048", "--out", str(tmp_path / "runs_{n}.jsonl")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"--out: {tmp_path / 'runs_2k.jsonl'} is a folder; give a file of runs (one JSON line per run, appended to)"
    )


GOOD_LINE = (
    '{"method": "simclr", "side": "lightly", "seed": 0, "knn_top1": 0.5, "views_per_s": 30.0, '
    '"images_per_s": 15.0, "train_s": 100.0, "steps": 8}'
)
KEYS = "method, side, seed, knn_top1, views_per_s, images_per_s, train_s, steps"


@pytest.mark.parametrize(
    ("second_line", "problem"),
    [
        ('{"method": "simclr", "side": ', "not JSON (Expecting value, column 30)"),
        ("[1, 2]", f"a JSON list, not an object with the keys {KEYS}"),
        (GOOD_LINE.replace('"seed": 0, ', ""), f"missing key(s) seed (a run has {KEYS})"),
        (GOOD_LINE.replace('"seed"', '"sead"'), f"missing key(s) seed; unknown key(s) sead (a run has {KEYS})"),
        (GOOD_LINE.replace("}", ', "epochs": 1}'), f"unknown key(s) epochs (a run has {KEYS})"),
        (GOOD_LINE.replace('"seed": 0', '"seed": "0"'), 'seed is "0", not a JSON integer'),
        (GOOD_LINE.replace('"knn_top1": 0.5', '"knn_top1": null'), "knn_top1 is null, not a JSON number"),
        (GOOD_LINE.replace('"simclr"', '"simsiam"'), f"method 'simsiam' is not one of {', '.join(METHODS)}"),
    ],
)
def test_table_only_names_the_file_and_line_of_a_bad_run(tmp_path, capsys, second_line: str, problem: str) -> None:  # noqa: ANN001
    from benchmarks.peer_lightly import main

    runs = tmp_path / "runs.jsonl"
    runs.write_text(f"{GOOD_LINE}\n\n{second_line}\n")  # the blank line is skipped but counted
    assert main(["--table-only", "--out", str(runs)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == f"--out: {runs} line 3: {problem}\n"


def test_table_only_on_a_file_without_runs_says_so(tmp_path, capsys) -> None:  # noqa: ANN001
    from benchmarks.peer_lightly import main

    for name, text in [("empty.jsonl", ""), ("blank.jsonl", "\n  \n")]:
        runs = tmp_path / name
        runs.write_text(text)
        assert main(["--table-only", "--out", str(runs)]) == 2
        assert capsys.readouterr().err == f"--out: no runs in {runs}\n"
    runs = tmp_path / "binary.jsonl"
    runs.write_bytes(b"\x80\x00")
    assert main(["--table-only", "--out", str(runs)]) == 2
    assert capsys.readouterr().err == f"--out: {runs} is not UTF-8 text (byte 0)\n"
    runs.write_text(GOOD_LINE + "\n")  # and a good file prints its table
    assert main(["--table-only", "--out", str(runs)]) == 0
    assert capsys.readouterr().out.splitlines()[2].startswith("| simclr | lightly | 0.5000 ± - | 0: 0.5000 | 30 (15) |")


def test_byol_recipe_builds_lightlys_byol_heads() -> None:
    """The toolkit side's BYOL projector and predictor have the layers of lightly 1.6's
    ``BYOLProjectionHead`` / ``BYOLPredictionHead`` at the shared widths (weights load both ways)."""
    from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead

    s = Settings()
    kwargs = {k: v for k, v in toolkit_recipe("byol", s, 0)["head"].items() if k != "name"}
    head = HEADS["byol"](in_dim=512, **kwargs)
    projector, predictor = (
        BYOLProjectionHead(512, s.hidden_dim, s.out_dim),
        BYOLPredictionHead(s.out_dim, s.hidden_dim, s.out_dim),
    )
    projector.layers.load_state_dict(head.projector.state_dict(), strict=True)
    predictor.layers.load_state_dict(head.predictor.state_dict(), strict=True)
    assert (head.base_momentum, head.final_momentum) == (0.99, 1.0)  # lightly side: cosine_schedule(0.99, 1.0)


def _two_views(seed: int) -> tuple[list[torch.Tensor], BatchInfo]:
    g = torch.Generator().manual_seed(seed)
    feats = [torch.randn(32, 512, generator=g) for _ in range(2)]
    info = BatchInfo(labels=torch.zeros(32, dtype=torch.long), index=torch.arange(32), step=0, epoch=0)
    return feats, info


def _toolkit_head(method: str) -> nn.Module:
    kwargs = {k: v for k, v in toolkit_recipe(method, Settings(), 0)["head"].items() if k != "name"}
    return HEADS[method](in_dim=512, **kwargs)


@pytest.mark.parametrize("method", ["barlow_twins", "vicreg"])
def test_barlow_twins_and_vicreg_recipes_equal_lightlys_model_loss_and_gradients(method: str) -> None:
    """Same projector weights (lightly's copied into ours) and the same two views of features give
    the same loss and the same gradients (projector weights and input features) on both sides.
    lightly's projector has one extra parameter, the bias of its last Linear: the loss does not
    change with it and it gets no gradient (both losses ignore a per-dimension shift of z)."""
    from lightly.loss import BarlowTwinsLoss, VICRegLoss
    from lightly.models.modules import BarlowTwinsProjectionHead
    from lightly.models.modules.heads import VICRegProjectionHead

    s = Settings()
    if method == "barlow_twins":
        theirs: nn.Module = BarlowTwinsProjectionHead(512, s.wide_hidden_dim, s.wide_out_dim)
        criterion: nn.Module = BarlowTwinsLoss(lambda_param=s.barlow_lambda, gather_distributed=False)
    else:
        theirs = VICRegProjectionHead(512, s.wide_hidden_dim, s.wide_out_dim, num_layers=3)
        lam, mu, nu = s.vicreg_weights
        criterion = VICRegLoss(lambda_param=lam, mu_param=mu, nu_param=nu)
    ours = _toolkit_head(method)
    projector = ours.projector if method == "barlow_twins" else ours.expander
    last = f"{len(theirs.layers) - 1}.bias"
    missing, unexpected = projector.load_state_dict(theirs.layers.state_dict(), strict=False)
    assert (missing, unexpected) == ([], [last])  # every other tensor has its twin, same shape
    assert sum(p.numel() for p in theirs.parameters()) - sum(p.numel() for p in ours.parameters()) == s.wide_out_dim
    with torch.no_grad():
        theirs.layers[-1].bias.normal_()  # an arbitrary shift: it must not matter
    feats, info = _two_views(0)
    f_ours = [f.clone().requires_grad_() for f in feats]
    f_theirs = [f.clone().requires_grad_() for f in feats]
    loss_ours = ours(Views(f_ours), info).loss
    loss_theirs = criterion(theirs(f_theirs[0]), theirs(f_theirs[1]))
    loss_theirs = loss_theirs * s.barlow_loss_scale if method == "barlow_twins" else loss_theirs  # as lightly_run
    loss_ours.backward()
    loss_theirs.backward()
    torch.testing.assert_close(loss_ours, loss_theirs, rtol=1e-5, atol=1e-5)
    grads_theirs = dict(theirs.layers.named_parameters())
    for name, p in projector.named_parameters():  # fp32 sums in other orders: tolerance 1e-4 of the largest
        theirs_grad = grads_theirs[name].grad
        torch.testing.assert_close(p.grad, theirs_grad, rtol=1e-4, atol=1e-4 * theirs_grad.abs().max().item())
    for a, b in zip(f_ours, f_theirs):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-4 * b.grad.abs().max().item())
    assert grads_theirs[last].grad.abs().max() < 1e-5 * theirs.layers[0].weight.grad.abs().max()
    # In training both sides' backbone runs on the concatenated views, the projector per view.


def _copy_dino_projection(theirs: nn.Module, ours: nn.Module) -> None:
    """lightly's ``DINOProjectionHead`` weights into ours: the same MLP indices; lightly's old-style
    ``weight_norm`` (``weight_g``, ``weight_v``) into the parametrization (``original0``, ``original1``)."""
    state = {"mlp." + k.removeprefix("layers."): v for k, v in theirs.state_dict().items() if k.startswith("layers.")}
    state["last_layer.parametrizations.weight.original0"] = theirs.last_layer.weight_g
    state["last_layer.parametrizations.weight.original1"] = theirs.last_layer.weight_v
    ours.load_state_dict(state, strict=True)


def test_dino_recipe_equals_lightlys_model_loss_gradients_and_centre() -> None:
    """Student and teacher heads with lightly's weights copied, the same student and teacher
    features of two global views: the same loss, gradients and updated centre, two steps running;
    the same trainable parameters (weight norm g fixed at 1, the last layer not frozen)."""
    import warnings

    from lightly.loss import DINOLoss
    from lightly.models.modules import DINOProjectionHead

    s = Settings()
    with warnings.catch_warnings():  # lightly 1.6 builds the last layer with the deprecated nn.utils.weight_norm
        warnings.simplefilter("ignore")
        theirs = DINOProjectionHead(512, s.dino_hidden_dim, s.dino_bottleneck_dim, s.dino_out_dim,
                                    batch_norm=False, freeze_last_layer=-1, norm_last_layer=True)  # fmt: skip
        theirs_teacher = DINOProjectionHead(512, s.dino_hidden_dim, s.dino_bottleneck_dim, s.dino_out_dim)
    criterion = DINOLoss(s.dino_out_dim, warmup_teacher_temp=s.dino_teacher_temp, teacher_temp=s.dino_teacher_temp,
                         student_temp=s.dino_student_temp, center_momentum=0.9)  # fmt: skip
    ours = _toolkit_head("dino")
    _copy_dino_projection(theirs, ours.projection)
    _copy_dino_projection(theirs_teacher, ours.teacher_projection)
    trainable_ours = [p.shape for p in ours.projection.parameters() if p.requires_grad]
    assert trainable_ours == [p.shape for p in theirs.parameters() if p.requires_grad]
    assert not any(p.requires_grad for p in ours.teacher_projection.parameters())
    assert ours.freeze_last_layer_epochs == 0 and theirs.freeze_last_layer == -1
    assert (ours.base_momentum, ours.final_momentum) == (0.99, 1.0)  # lightly side: cosine_schedule(0.99, 1.0)
    for seed in (0, 1):  # the second step runs on the moved centre
        feats, info = _two_views(seed)
        teacher_feats, _ = _two_views(seed + 10)
        f_ours = [f.clone().requires_grad_() for f in feats]
        f_theirs = torch.cat(feats).requires_grad_()
        ours.zero_grad()
        theirs.zero_grad()
        loss_ours = ours(Views(f_ours, teacher=teacher_feats), info).loss
        with torch.no_grad():
            teacher = theirs_teacher(torch.cat(teacher_feats)).chunk(2)
        loss_theirs = criterion(list(teacher), list(theirs(f_theirs).chunk(2)), epoch=0)
        loss_ours.backward()
        loss_theirs.backward()
        ours.after_backward(0)
        theirs.cancel_last_layer_gradients(current_epoch=0)
        torch.testing.assert_close(loss_ours, loss_theirs, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ours.loss.center, criterion.center.view(1, -1), rtol=1e-5, atol=1e-7)
        grads_theirs = [p.grad for p in theirs.parameters() if p.requires_grad]
        grads_ours = [p.grad for p in ours.projection.parameters() if p.requires_grad]
        assert len(grads_ours) == len(grads_theirs) and all(g is not None for g in grads_ours)
        for a, b in zip(grads_ours, grads_theirs):  # the same order: mlp layers, then the last layer's v
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-8)
        torch.testing.assert_close(torch.cat([f.grad for f in f_ours]), f_theirs.grad, rtol=1e-4, atol=1e-9)
