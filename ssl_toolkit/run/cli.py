"""``ssl-toolkit`` command line: ``fit`` a recipe, ``bench`` its speed, list ``recipes``;
``probe``, ``knn``, ``select`` and ``diagnose`` evaluate checkpoints offline; ``export`` writes a backbone for timm;
``views`` writes a recipe's training views."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

RECIPES_DIR = Path(__file__).resolve().parents[2] / "recipes"
DATA_HELP = "data overrides, e.g. data.root=/moved/data data.num_workers=4 data.val_samples=1000"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ssl-toolkit", description="Self-supervised pretraining with timm backbones.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_fit = sub.add_parser(
        "fit",
        help="train from a recipe",
        description="Train from a recipe YAML; "
        "override any key with key=value (e.g. data.batch_size=32 trainer.max_steps=3). "
        "resume=auto continues the newest run of out_dir from its newest checkpoint "
        "(resume=PATH: a checkpoint or run folder).",
    )
    p_fit.add_argument("recipe", help="path to a recipe YAML (see `ssl-toolkit recipes`)")
    p_fit.add_argument("overrides", nargs="*", metavar="key=value", help="dot-list overrides")
    p_fit.add_argument(
        "--verbose",
        action="store_true",
        help="show every third-party message (Lightning tips, deprecation warnings, wandb's console output)",
    )
    p_bench = sub.add_parser(
        "bench",
        help="images/s of backbone, training step and loader",
        description="Measure on the current device (a) the bare backbone forward+backward on the recipe's views, "
        "(b) the full training step, (c) the data loader; print images/s, the overhead (b)/(a) and a JSON line.",
    )
    p_bench.add_argument("recipe", help="path to a recipe YAML (see `ssl-toolkit recipes`)")
    p_bench.add_argument("overrides", nargs="*", metavar="key=value", help="dot-list overrides")
    p_bench.add_argument("--steps", type=int, default=10, help="timed iterations (default: %(default)s)")
    p_bench.add_argument("--warmup", type=int, default=3, help="untimed iterations first (default: %(default)s)")
    p_bench.add_argument("--loader-only", action="store_true", help="measure (c), the data loader, only")
    p_views = sub.add_parser(
        "views",
        help="write a recipe's training views of a few images as PNG files",
        description="Load the first N training images of a recipe's data and augment them exactly as training "
        "does; write DIR/views.png (one row per image: the original, then its views) and every view as "
        "DIR/views/image<i>_view<v>.png (8-bit RGB, before normalization). A non-empty DIR needs --force.",
    )
    p_views.add_argument("recipe", help="path to a recipe YAML (see `ssl-toolkit recipes`)")
    p_views.add_argument("overrides", nargs="*", metavar="key=value", help="dot-list overrides, e.g. data.root=PHOTOS")
    p_views.add_argument("--images", type=int, default=8, help="images, one row each (default: %(default)s)")
    p_views.add_argument("--out", required=True, help="folder to write (new or empty; else --force)")
    p_views.add_argument("--force", action="store_true", help="write into a non-empty --out, replacing its views")
    p_list = sub.add_parser("recipes", help="list the shipped recipes", description="List the shipped recipes.")
    p_list.add_argument("--dir", default=str(RECIPES_DIR), help="recipes folder (default: %(default)s)")
    p_export = sub.add_parser(
        "export",
        help="backbone weights as safetensors for timm",
        description="Write a checkpoint's backbone weights as safetensors that "
        "timm.create_model(NAME, pretrained=True, pretrained_cfg_overlay=dict(file=PATH, num_classes=0)) loads. "
        "The checkpoint is read with weights_only=True; an existing file is never overwritten without --force.",
    )
    p_export.add_argument("checkpoint", help="a .ckpt file written by `ssl-toolkit fit`")
    p_export.add_argument("--out", default=None, help="file to write (default: <run>/export/<checkpoint>.safetensors)")
    p_export.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    evaluators = _add_eval_parsers(sub)
    evaluators["views"] = p_views  # its key=value positionals may come after the options too
    words = sys.argv[1:] if argv is None else list(argv)
    if words and words[0] in evaluators:  # options may come after the data.KEY=VALUE positionals
        args = evaluators[words[0]].parse_intermixed_args(words[1:], argparse.Namespace(command=words[0]))
    else:
        args = parser.parse_args(argv)

    if args.command == "recipes":
        for path in sorted(Path(args.dir).rglob("*.yaml")):
            print(path.relative_to(args.dir))
        return 0
    from ssl_toolkit.run.errors import Preempted, TrainingStopped, UserError  # after parsing: --help stays instant

    commands = {
        "fit": _fit,
        "bench": _bench,
        "export": _export,
        "probe": _evaluate,
        "knn": _evaluate,
        "select": _select,
        "diagnose": _diagnose,
        "views": _views,
    }
    try:
        return commands[args.command](args, argv)
    except UserError as e:  # bad recipe, argument, checkpoint or data: one line, exit 2
        print(f"ssl-toolkit: error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2
    except TrainingStopped as e:  # NaN/Inf loss: one line naming the step and the last good checkpoint
        print(f"ssl-toolkit: error: {e}", file=sys.stderr)
        return 1
    except Preempted as e:  # SIGTERM/SIGUSR1/Ctrl-C: checkpoint saved; 128 + signal so schedulers requeue
        from lightning.fabric.utilities.rank_zero import rank_zero_only

        if rank_zero_only.rank == 0:
            print(f"ssl-toolkit: {e}", file=sys.stderr)
        return e.exit_code


def _add_eval_parsers(sub: Any) -> dict[str, argparse.ArgumentParser]:
    p_probe = sub.add_parser(
        "probe",
        help="linear probe of a checkpoint's frozen backbone",
        description="Embed the train and val splits once, train a linear classifier on the cached features, "
        "print val top-1/top-5 and write <run>/eval/probe-<checkpoint>.json (never overwritten).",
    )
    p_probe.add_argument("checkpoint", help="a .ckpt file written by `ssl-toolkit fit`")
    p_probe.add_argument("--method", choices=["lbfgs", "sgd"], default="lbfgs", help="optimizer (default: lbfgs)")
    p_probe.add_argument("--epochs", type=int, default=100, help="L-BFGS iterations or SGD epochs (default: 100)")
    p_probe.add_argument("--lr", type=float, default=None, help="step size (default: 1.0 lbfgs, 0.1 sgd)")
    p_probe.add_argument("--weight-decay", type=float, default=1e-4, help="L2 on the weights (default: 1e-4)")
    p_knn = sub.add_parser(
        "knn",
        help="weighted k-NN accuracy of a checkpoint",
        description="Cosine k-NN (train split as bank, val split as queries); print top-1/top-5 and write "
        "<run>/eval/knn-<checkpoint>.json (never overwritten).",
    )
    p_knn.add_argument("checkpoint", help="a .ckpt file written by `ssl-toolkit fit`")
    p_knn.add_argument("--k", type=int, default=200, help="neighbours (default: 200)")
    p_knn.add_argument("--temperature", type=float, default=0.07, help="vote weight exp(cos/T) (default: 0.07)")
    p_sel = sub.add_parser(
        "select",
        help="pick a checkpoint without labels (RankMe, LiDAR, alpha-ReQ, ROC-AUC, ...)",
        description="Rank every checkpoint of one or more runs of the same method by label-free metrics (default "
        "RankMe, Garrido et al., ICML 2023) on one random subset of unlabelled train images; print the table and "
        "each metric's choice, and write the choice of the first metric.",
    )
    p_sel.add_argument("--num-samples", type=int, default=25600, help="images in the subset (default: 25600)")
    p_sel.add_argument("--seed", type=int, default=0, help="seed of the subset (default: 0)")
    p_sel.add_argument(
        "--metric",
        nargs="+",
        default=["rankme"],
        metavar="NAME",
        help="one or more of rankme, rankme_proj, lidar, lidar_proj, alpha_req, alpha_req_proj, auc, "
        "alignment, uniformity; the first decides (default: rankme)",
    )
    p_sel.add_argument("--view-images", type=int, default=1000, help="images for the view metrics (default: 1000)")
    p_sel.add_argument("--views", type=int, default=8, help="augmented views per image (default: 8)")
    p_sel.add_argument(
        "--with-labels",
        action="store_true",
        help="also compute k-NN and linear top-1 (reads labels), each metric's Spearman and regret, and a PNG "
        "of every metric against both accuracies next to --out (selection.png; never overwritten: selection_1.png)",
    )
    p_sel.add_argument(
        "--out",
        default=None,
        help="JSON to write (default: selection.json in the run folder, or in the runs' common parent folder)",
    )
    p_sel.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p_sel.add_argument("items", nargs="+", metavar="RUN_DIR|data.KEY=VALUE", help="run folders; " + DATA_HELP)
    p_diag = sub.add_parser(
        "diagnose",
        help="score distributions, ROC-AUC, alignment/uniformity of checkpoints",
        description="For each checkpoint: two seeded augmented views of the same fixed held-out images (as the "
        "diagnostics callback draws them), positive/negative cosine quantiles and histograms, pooled ROC-AUC, mean "
        "positive rank, alignment, uniformity and (with labels) tolerance of the projector embeddings and backbone "
        "features. Writes diagnose.json, diagnose.csv and one diagnose.png comparing the checkpoints into a new "
        "folder (default: <run of the first checkpoint>/diagnose, then diagnose_1, ...).",
    )
    p_diag.add_argument("--out", default=None, help="folder to create (must not exist; default: see above)")
    p_diag.add_argument("--num-images", type=int, default=1024, help="image pairs, 2 to 4096 (default: 1024)")
    p_diag.add_argument("--seed", type=int, default=0, help="seed of the images and views (default: 0)")
    p_diag.add_argument("items", nargs="+", metavar="CKPT|data.KEY=VALUE", help="checkpoints; " + DATA_HELP)
    for p in (p_probe, p_knn, p_sel, p_diag):
        p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    for p in (p_probe, p_knn):
        p.add_argument("overrides", nargs="*", default=[], metavar="data.KEY=VALUE", help=DATA_HELP)
    return {"probe": p_probe, "knn": p_knn, "select": p_sel, "diagnose": p_diag}


def _data_overrides(items: list[str]) -> dict[str, Any] | None:
    """``data.KEY=VALUE`` items -> ``{KEY: value}`` with YAML typing (``1`` int, ``null`` None...)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from ssl_toolkit.run.errors import ArgumentError, RecipeError

    for item in items:
        if not item.startswith("data.") or "=" not in item or item.startswith("data.="):
            raise ArgumentError(f"override {item!r}: expected data.KEY=VALUE")
    try:
        data = OmegaConf.to_container(OmegaConf.from_dotlist(items)).get("data")
    except OmegaConfBaseException as e:
        raise RecipeError(f"override: {str(e).splitlines()[0]}") from None
    return data or None


def _export(args: argparse.Namespace, argv: list[str] | None) -> int:
    """``export``: the checkpoint's backbone as safetensors; print how to load it."""
    from ssl_toolkit.run.export import export_backbone
    from ssl_toolkit.run.run_folder import run_dir_of

    ckpt = Path(args.checkpoint)
    out = Path(args.out) if args.out else run_dir_of(ckpt) / "export" / f"{ckpt.stem}.safetensors"
    result = export_backbone(ckpt, out, force=args.force)
    print(f"written: {result.path} ({result.num_tensors} tensors of {result.model_name}, "
          f"{result.feature_dim} features)")  # fmt: skip
    extra = "".join(f", {k}={v!r}" for k, v in result.timm_kwargs.items())
    if result.small_image_stem:
        print(f"load: build_backbone({result.model_name!r}, small_image_stem=True, <the recipe's other backbone "
              "keys>).load_state_dict(safetensors.torch.load_file(PATH))")  # fmt: skip
    else:
        print(f"load: timm.create_model({result.model_name!r}, pretrained=True, "
              f"pretrained_cfg_overlay=dict(file={str(result.path)!r}, num_classes=0){extra})")  # fmt: skip
    return 0


def _evaluate(args: argparse.Namespace, argv: list[str] | None) -> int:
    """``probe`` / ``knn``: embed both splits once, score, print, write a new ``<run>/eval/*.json``."""
    from dataclasses import asdict

    import torch

    from ssl_toolkit.eval.probe import embed_labelled, knn_probe, labelled, linear_probe
    from ssl_toolkit.run.checkpoint import load_checkpoint
    from ssl_toolkit.run.errors import ArgumentError
    from ssl_toolkit.run.run_folder import run_dir_of, write_new_json

    for name in ("epochs", "k", "temperature"):  # fail before the (slow) embedding
        if getattr(args, name, 1) <= 0:
            raise ArgumentError(f"--{name}: must be positive, got {getattr(args, name)}")
    overrides = _data_overrides(args.overrides)
    loaded = load_checkpoint(args.checkpoint, overrides)
    loaded.module.to(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    train, val = embed_labelled(loaded.module, loaded.datamodule)
    classes = labelled(loaded.datamodule).num_classes
    if args.command == "probe":
        settings = {"method": args.method, "epochs": args.epochs, "lr": args.lr, "weight_decay": args.weight_decay}
        result = linear_probe(train, val, classes, args.method, args.epochs, args.lr, args.weight_decay)
    else:
        settings = {"k": args.k, "temperature": args.temperature}
        bank = int((train.labels >= 0).sum())
        if args.k > bank:
            print(f"note: --k {args.k} is larger than the bank ({bank} labelled train images); all {bank} vote")
        result = knn_probe(train, val, classes, args.k, args.temperature)
    ckpt = Path(args.checkpoint)
    record = {"checkpoint": str(ckpt.resolve()), "epoch": loaded.epoch, "step": loaded.step,
              args.command: settings, "data_overrides": overrides, "num_train": len(train.labels),
              "num_val": len(val.labels), **asdict(result), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}  # fmt: skip
    path = write_new_json(run_dir_of(ckpt) / "eval" / f"{args.command}-{ckpt.stem}.json", record)
    print(f"{args.command} {ckpt} (epoch {loaded.epoch}, step {loaded.step}, {len(val.labels)} val images)")
    train_top1 = "" if result.train_top1 is None else f"  (train top-1 {result.train_top1:.4f})"
    print(f"val top-1 {result.top1:.4f}  top-5 {result.top5:.4f}{train_top1}\nwritten: {path}")
    return 0


def _select(args: argparse.Namespace, argv: list[str] | None) -> int:
    """``select``: rank checkpoints by label-free metrics, print the table and each metric's choice,
    write the choice of the first metric (never over a file)."""
    from ssl_toolkit.eval.label_free import METRICS
    from ssl_toolkit.eval.selection import format_report, format_table, metric_report, rank_checkpoints
    from ssl_toolkit.run.errors import ArgumentError

    overrides = _data_overrides([i for i in args.items if "=" in i])
    runs = [Path(i) for i in args.items if "=" not in i]
    if not runs:
        raise ArgumentError("select: give at least one RUN_DIR")
    out = Path(args.out) if args.out else selection_path(runs)
    if out.exists() and not args.force:
        raise ArgumentError(f"--out: {out} exists; pass --force to overwrite it")
    rows = rank_checkpoints(runs, args.num_samples, args.seed, args.with_labels, overrides, args.device,
                            args.metric, args.view_images, args.views)  # fmt: skip
    report = metric_report(rows)
    print(format_table(rows, args.with_labels) + "\n\n" + format_report(report))
    first = METRICS[args.metric[0]]
    criterion = f"{args.metric[0]} ({first.description}; {first.better} is better)"
    record = {"selected": rows[0].as_dict(), "criterion": criterion, "metrics": report,
              "num_samples": args.num_samples, "seed": args.seed, "with_labels": args.with_labels,
              "data_overrides": overrides, "table": [r.as_dict() for r in rows]}  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nselected: {rows[0].checkpoint}\nwritten:  {out}")
    if args.with_labels:  # metric vs accuracy, next to the JSON; an earlier plot is never replaced
        from ssl_toolkit.eval.selection_plot import plot_selection
        from ssl_toolkit.run.run_folder import numbered_paths

        png = next(p for p in numbered_paths(out.with_suffix(".png")) if not p.exists())
        print(f"plot:     {plot_selection(rows, png, title=f'{len(rows)} checkpoints of {len(runs)} run(s)')}")
    return 0


def _diagnose(args: argparse.Namespace, argv: list[str] | None) -> int:
    """``diagnose``: the diagnostics of every checkpoint, printed and written to a new folder."""
    import torch

    from ssl_toolkit.diagnostics import MAX_IMAGES
    from ssl_toolkit.eval.diagnose import CheckpointDiagnostics, default_out, diagnose_module, labels_for, write_report
    from ssl_toolkit.run.checkpoint import check_checkpoint_path, load_checkpoint
    from ssl_toolkit.run.errors import ArgumentError

    # Checkpoint names hold '=' too (epoch=3-step=120.ckpt): overrides are the data.KEY=VALUE items.
    is_override = [i.startswith("data.") and "=" in i and not Path(i).exists() for i in args.items]
    overrides = _data_overrides([i for i, o in zip(args.items, is_override) if o])
    checkpoints = [Path(i) for i, o in zip(args.items, is_override) if not o]
    if not checkpoints:
        raise ArgumentError("diagnose: give at least one checkpoint")
    for ckpt in checkpoints:  # every path checked before the (slow) embedding
        check_checkpoint_path(ckpt)
    if not 2 <= args.num_images <= MAX_IMAGES:
        raise ArgumentError(f"--num-images: must be 2 to {MAX_IMAGES}, got {args.num_images}")
    if args.seed < 0:
        raise ArgumentError(f"--seed: must be >= 0, got {args.seed}")
    out = Path(args.out) if args.out else default_out(checkpoints)
    if out.exists():
        raise ArgumentError(f"--out: {out} exists; diagnose never writes into an existing folder")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    results, loaded = [], None
    for ckpt, label in zip(checkpoints, labels_for(checkpoints)):
        loaded = load_checkpoint(ckpt, overrides, reuse=loaded)
        loaded.module.to(device)
        spaces = diagnose_module(loaded.module, loaded.datamodule, args.num_images, args.seed)
        results.append(CheckpointDiagnostics(ckpt, label, loaded.step, loaded.epoch, spaces))
        proj, feat = spaces["proj"], spaces["feat"]
        print(f"{label} (step {loaded.step}): AUC proj {proj.auc:.4f} feat {feat.auc:.4f}  mean rank "
              f"{proj.mean_rank:.1f}/{proj.num_images}  alignment {proj.alignment:.4f}  "
              f"uniformity {proj.uniformity:.4f}" + ("" if proj.tolerance is None else
              f"  tolerance {proj.tolerance:.4f}"))  # fmt: skip
    paths = write_report(results, out, args.num_images, args.seed)
    print(f"written: {paths['png']}\n         {paths['json']}\n         {paths['csv']}")
    return 0


def selection_path(runs: list[Path]) -> Path:
    """Where ``select`` writes without ``--out``: ``selection.json`` in the one run folder, or in the
    deepest folder that holds every run (never the directory the user stands in)."""
    import os

    if len(runs) == 1:
        return runs[0] / "selection.json"
    return Path(os.path.commonpath([str(r.resolve()) for r in runs])) / "selection.json"


def _fit(args: argparse.Namespace, argv: list[str] | None) -> int:
    from ssl_toolkit.run.signal_note import SignalNote  # standard library only: in place before torch loads

    with SignalNote() as note:  # a stop signal from here on is noted; fit acts on it (run/signals.py)
        from ssl_toolkit.run.fit import fit
        from ssl_toolkit.run.quiet import quiet
        from ssl_toolkit.run.recipe import load_recipe

        command = ["ssl-toolkit", "fit", args.recipe, *args.overrides] if argv is None else argv
        recipe = load_recipe(args.recipe, args.overrides)
        with quiet(verbose=args.verbose):
            result = fit(recipe, argv=command, note=note)
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    if rank_zero_only.rank != 0:  # a multi-process run: rank 0 prints the one summary
        return 0
    print(f"\nrun folder:       {result.run_dir}")
    print(f"checkpoint:       {result.checkpoint or '(none written)'}")
    print(f"resolved recipe:  {result.run_dir / 'recipe.yaml'}  (git commit in run.json)")
    print(
        f"logs:             {result.run_dir / 'csv' / 'metrics.csv'}"
        + (f", {result.run_dir / 'wandb'}" if (result.run_dir / "wandb").exists() else "")
    )
    print(f"final train/loss: {result.final_loss:.4f} after {result.steps} steps")
    if "val/rankme" in result.best:  # the tracker's choice by score, not the newest file name
        print(f"best RankMe ckpt: {result.best['val/rankme']}  (chosen without labels)")
    from ssl_toolkit.callbacks.diagnostics_plot import is_detail

    for key, value in result.val_metrics.items():
        if not is_detail(key):  # the diagnostics' details are in <run>/diagnostics/quantiles.csv
            print(f"{key + ':':<17} {value:.4f}" if len(key) >= 17 else f"{key + ':':<18}{value:.4f}")
    for line in timing_lines(result):
        print(line)
    return 0


# What decides when Lightning's validation loop (the evaluation) runs, for a run where none ran.
NO_EVALUATION = (
    "it runs every trainer.val_check_interval training steps or else at the end of an epoch, in every "
    "trainer.check_val_every_n_epoch-th epoch, over trainer.limit_val_batches batches per loader (0 skips it); "
    "a run that trainer.max_steps stops inside an epoch never reaches that epoch's end"
)


def timing_lines(result: Any) -> list[str]:
    """The summary's time lines: training (throughput without evaluation) and evaluation apart."""
    lines = [f"wall time:        {result.seconds:.1f} s (trainer.fit, setup and checkpoints included)"]
    if result.images_per_sec is None:
        speed = f"throughput not measured: too few steps ({result.steps}; the first 2 are warm-up)"
    else:
        speed = f"{result.images_per_sec:.1f} images/s over {result.measured_steps} step(s) (evaluation excluded)"
    lines.append(f"training:         {result.train_seconds:.1f} s, {speed}")
    if result.eval_runs:
        sanity = f" + sanity check {result.sanity_seconds:.1f} s" if result.sanity_seconds else ""
        lines.append(f"evaluation:       {result.eval_seconds:.1f} s in {result.eval_runs} run(s){sanity}")
    else:
        lines.append(f"evaluation:       none ran ({NO_EVALUATION})")
    return lines


def _views(args: argparse.Namespace, argv: list[str] | None) -> int:
    from ssl_toolkit.run.recipe import load_recipe
    from ssl_toolkit.run.views import write_views

    written = write_views(load_recipe(args.recipe, args.overrides), args.images, Path(args.out), args.force)
    print(f"written: {written.overview}\n         {len(written.files)} views in {written.overview.parent / 'views'}")
    return 0


def _bench(args: argparse.Namespace, argv: list[str] | None) -> int:
    from ssl_toolkit.run.bench import bench, format_result
    from ssl_toolkit.run.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    print(format_result(bench(recipe, steps=args.steps, warmup=args.warmup, loader_only=args.loader_only)))
    return 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
