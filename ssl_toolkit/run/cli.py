"""``ssl-toolkit`` command line: ``fit`` a recipe, ``bench`` its speed, list ``recipes``;
``probe``, ``linear``, ``knn``, ``select`` and ``diagnose`` evaluate checkpoints offline; ``export`` writes a
backbone for timm; ``views`` writes a recipe's training views."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from ssl_toolkit.run.arguments import OneLineParser

RECIPES_DIR = Path(__file__).resolve().parents[2] / "recipes"
DATA_HELP = "data overrides, e.g. data.root=/moved/data data.num_workers=4 data.val_samples=1000"


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="ssl-toolkit", description="Self-supervised pretraining with timm backbones.")
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
    p_fit.add_argument(
        "--store-env",
        action="store_true",
        help="write values taken from the environment (${oc.env:NAME}) in clear into recipe.yaml and the "
        "checkpoints (default: the ${oc.env:NAME} expression is written, never the value)",
    )
    p_bench = sub.add_parser(
        "bench",
        help="where the time of a training step goes; images/s of backbone, step and loader",
        description="Time on the current device each part of the real training step (copy, augmentation, backbone "
        "forward, head, backward, optimizer, hooks, loop) inside trainer.fit, and the data loader; print the table "
        "(median, IQR, share), images/s, the overhead (step - backbone fwd - bwd) / (backbone fwd + bwd) of the "
        "same steps and a JSON line. docs/benchmarking.md explains the numbers.",
    )
    p_bench.add_argument("recipe", help="path to a recipe YAML (see `ssl-toolkit recipes`)")
    p_bench.add_argument("overrides", nargs="*", metavar="key=value", help="dot-list overrides")
    p_bench.add_argument("--steps", type=int, default=10, help="timed steps, at least 5 (default: %(default)s)")
    p_bench.add_argument("--warmup", type=int, default=3, help="untimed steps first (default: %(default)s)")
    p_bench.add_argument("--loader-only", action="store_true", help="measure (c), the data loader, only")
    p_bench.add_argument("--json", metavar="FILE", help="append the result as one JSON line to FILE")
    p_bench.add_argument("--markdown", metavar="FILE", help="append the breakdown as a Markdown table to FILE")
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
    expand_user_paths(args)

    if args.command == "recipes":
        for path in sorted(Path(args.dir).resolve().rglob("*.yaml")):
            try:  # a path `ssl-toolkit fit` accepts from here
                print(path.relative_to(Path.cwd()))
            except ValueError:
                print(path)
        return 0
    from ssl_toolkit.errors import Preempted, TrainingStopped, UserError  # after parsing: --help stays instant

    commands = {
        "fit": _fit,
        "bench": _bench,
        "export": _export,
        "probe": _evaluate,
        "knn": _evaluate,
        "linear": _linear,
        "select": _select,
        "diagnose": _diagnose,
        "views": _views,
    }
    try:
        return commands[args.command](args, argv)
    except UserError as e:  # bad recipe, argument, checkpoint or data: one line, exit 2
        print(f"ssl-toolkit: error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2
    except OSError as e:  # any writer on a full disk / quota / read-only file system: one line, exit 2
        from ssl_toolkit.errors import WRITE_ERRNOS

        if e.errno not in WRITE_ERRNOS:
            raise
        where = e.filename or "a file"
        print(f"ssl-toolkit: error: {where}: {e.strerror}; free space (or pick another place), then run again",
              file=sys.stderr)  # fmt: skip
        return 2
    except TrainingStopped as e:  # NaN/Inf loss: one line naming the step and the last good checkpoint
        print(f"ssl-toolkit: error: {e}", file=sys.stderr)
        return 1
    except Preempted as e:  # SIGTERM/SIGUSR1/SIGHUP/Ctrl-C: checkpoint saved; 128 + signal so schedulers requeue
        from lightning.fabric.utilities.rank_zero import rank_zero_only

        if rank_zero_only.rank == 0:
            try:
                print(f"ssl-toolkit: {e}", file=sys.stderr)
            except OSError:  # SIGHUP: the terminal is gone; the checkpoint is saved all the same
                pass
        return e.exit_code


def expand_user_paths(args: argparse.Namespace) -> None:
    """Expand a leading ``~`` in every path argument once, here (a quoted ``--out '~/x'`` or
    ``--out=~/x`` reaches us unexpanded), as ``load_recipe`` does for the recipe's paths."""
    import os

    for name in ("recipe", "checkpoint", "out", "dir"):  # getattr with a default: each command has some
        if isinstance(getattr(args, name, None), str):
            setattr(args, name, os.path.expanduser(getattr(args, name)))
    if isinstance(getattr(args, "items", None), list):
        args.items = [i if i.startswith("data.") else os.path.expanduser(i) for i in args.items]


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
    p_knn.add_argument("--k", type=_ints, default=[200], help="neighbours; a list (10,20,50) sweeps (default: 200)")
    p_knn.add_argument("--temperature", type=_floats, default=[0.07],
                       help="vote weight exp(cos/T); a list (0.02,0.07) sweeps (default: 0.07)")  # fmt: skip
    p_linear = sub.add_parser(
        "linear",
        help="solo-learn's offline linear evaluation (augmented views, SGD, lr steps)",
        description="Train a linear classifier on the frozen backbone with random-resized-crop + flip views of the "
        "train split, score center crops of the val split after every epoch (solo-learn main_linear.py; "
        "docs/protocols.md). The state is saved every epoch to <run>/eval/linear-<checkpoint>.state.pt and "
        "a rerun continues from it; the result goes to a new <run>/eval/linear-<checkpoint>.json.",
    )
    p_linear.add_argument("checkpoint", help="a .ckpt file written by `ssl-toolkit fit`")
    p_linear.add_argument("--lr", type=float, required=True, help="SGD lr (solo-learn: SimCLR 1, MoCo 3, SwAV 0.15)")
    p_linear.add_argument("--epochs", type=int, default=100, help="(default: %(default)s)")
    p_linear.add_argument("--batch-size", type=int, default=256, help="(default: %(default)s)")
    p_linear.add_argument("--weight-decay", type=float, default=0.0, help="(default: %(default)s)")
    p_linear.add_argument("--milestones", type=int, nargs="*", default=[60, 80], help="lr x 0.1 after these epochs")
    p_linear.add_argument("--seed", type=int, default=0, help="classifier init, batch order, crops (default: 0)")
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
    for p in (p_probe, p_knn, p_sel, p_diag, p_linear):
        p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    for p in (p_probe, p_knn, p_linear):
        p.add_argument("overrides", nargs="*", default=[], metavar="data.KEY=VALUE", help=DATA_HELP)
    return {"probe": p_probe, "knn": p_knn, "select": p_sel, "diagnose": p_diag, "linear": p_linear}


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def _data_overrides(items: list[str]) -> dict[str, Any] | None:
    """``data.KEY=VALUE`` items -> ``{KEY: value}`` with YAML typing (``1`` int, ``null`` None...)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from ssl_toolkit.errors import ArgumentError, RecipeError

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
    from ssl_toolkit.run_folder import run_dir_of

    ckpt = Path(args.checkpoint)
    out = Path(args.out) if args.out else run_dir_of(ckpt) / "export" / f"{ckpt.stem}.safetensors"
    result = export_backbone(ckpt, out, force=args.force)
    print(f"written: {result.path} ({result.num_tensors} tensors of {result.model_name}, "
          f"{result.feature_dim} features)")  # fmt: skip
    extra = "".join(f", {k}={v!r}" for k, v in result.timm_kwargs.items())
    if result.small_image_stem:
        print(f"load: build_backbone({result.model_name!r}, small_image_stem=True, <the recipe's other backbone "
              "keys>)[0].load_state_dict(safetensors.torch.load_file(PATH))")  # fmt: skip
    else:
        print(f"load: timm.create_model({result.model_name!r}, pretrained=True, "
              f"pretrained_cfg_overlay=dict(file={str(result.path)!r}, num_classes=0){extra})")  # fmt: skip
    return 0


def _evaluate(args: argparse.Namespace, argv: list[str] | None) -> int:
    """``probe`` / ``knn``: embed both splits once, score, print, write a new ``<run>/eval/*.json``."""
    from dataclasses import asdict

    import torch

    from ssl_toolkit.errors import ArgumentError
    from ssl_toolkit.eval.probe import embed_labelled, knn_probe, labelled, linear_probe
    from ssl_toolkit.recipe.checkpoint import load_checkpoint
    from ssl_toolkit.run_folder import check_writable, run_dir_of, write_new_json

    for name in ("epochs", "k", "temperature"):  # fail before the (slow) embedding
        values = getattr(args, name, [1])  # getattr with a default: knn has k/temperature, linear epochs
        if min(values if isinstance(values, list) else [values]) <= 0:
            raise ArgumentError(f"--{name}: must be positive, got {values}")
    overrides = _data_overrides(args.overrides)
    check_device(args.device)
    ckpt = Path(args.checkpoint)
    check_writable(run_dir_of(ckpt) / "eval", "eval folder")  # before the (slow) embedding, not after
    loaded = load_checkpoint(args.checkpoint, overrides)
    loaded.module.to(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    train, val = embed_labelled(loaded.module, loaded.datamodule)
    classes = labelled(loaded.datamodule).num_classes
    if args.command == "probe":
        settings = {"method": args.method, "epochs": args.epochs, "lr": args.lr, "weight_decay": args.weight_decay}
        result = linear_probe(train, val, classes, args.method, args.epochs, args.lr, args.weight_decay)
    else:
        ks, temperatures = args.k, args.temperature
        settings = {
            "k": ks if len(ks) > 1 else ks[0],
            "temperature": temperatures if len(temperatures) > 1 else temperatures[0],
        }
        bank = int((train.labels >= 0).sum())
        if max(ks) > bank:
            print(f"note: --k {max(ks)} is larger than the bank ({bank} labelled train images); all {bank} vote")
        sweep = [(k, t, knn_probe(train, val, classes, k, t)) for k in ks for t in temperatures]
        if len(sweep) > 1:  # solo-learn main_knn.py: every (k, T) on the whole train split; the best is reported
            for k, t, r in sweep:
                print(f"k {k:4d}  T {t:<6g} val top-1 {r.top1:.4f}  top-5 {r.top5:.4f}")
            settings["sweep"] = [{"k": k, "temperature": t, **asdict(r)} for k, t, r in sweep]
            best = max(sweep, key=lambda row: row[2].top1)
            settings["best"] = {"k": best[0], "temperature": best[1]}
        result = max((r for _, _, r in sweep), key=lambda r: r.top1)
    record = {"checkpoint": str(ckpt.resolve()), "epoch": loaded.epoch, "step": loaded.step,
              args.command: settings, "data_overrides": overrides, "num_train": len(train.labels),
              "num_val": len(val.labels), **asdict(result), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}  # fmt: skip
    print(f"{args.command} {ckpt} (epoch {loaded.epoch}, step {loaded.step}, {len(val.labels)} val images)")
    train_top1 = "" if result.train_top1 is None else f"  (train top-1 {result.train_top1:.4f})"
    print(f"val top-1 {result.top1:.4f}  top-5 {result.top5:.4f}{train_top1}", flush=True)  # before the write
    path = write_new_json(run_dir_of(ckpt) / "eval" / f"{args.command}-{ckpt.stem}.json", record)
    print(f"written: {path}")
    return 0


def _linear(args: argparse.Namespace, argv: list[str] | None) -> int:
    """``linear``: solo-learn's offline linear evaluation (``ssl_toolkit.eval.linear_eval``)."""
    from ssl_toolkit.eval.linear_eval import LinearEvalSettings, evaluate_checkpoint

    settings = LinearEvalSettings(lr=args.lr, epochs=args.epochs, batch_size=args.batch_size,
                                  weight_decay=args.weight_decay, milestones=tuple(args.milestones),
                                  seed=args.seed)  # fmt: skip
    record, path = evaluate_checkpoint(args.checkpoint, settings, _data_overrides(args.overrides), args.device)
    print(f"val top-1 {record['top1']:.4f}  top-5 {record['top5']:.4f}\nwritten: {path}")
    return 0


def _select(args: argparse.Namespace, argv: list[str] | None) -> int:
    """``select``: rank checkpoints by label-free metrics, print the table and each metric's choice,
    write the choice of the first metric (never over a file)."""
    from ssl_toolkit.errors import ArgumentError
    from ssl_toolkit.eval.label_free import METRICS
    from ssl_toolkit.eval.selection import format_report, format_table, metric_report, rank_checkpoints

    overrides = _data_overrides([i for i in args.items if "=" in i])
    runs = [Path(i) for i in args.items if "=" not in i]
    if not runs:
        raise ArgumentError("select: give at least one RUN_DIR")
    unique = list({r.resolve(): r for r in reversed(runs)}.values())[::-1]  # first spelling of each folder kept
    if len(unique) < len(runs):
        print(f"note: {len(runs) - len(unique)} run folder(s) given more than once; each is ranked once")
        runs = unique
    out = Path(args.out) if args.out else selection_path(runs)
    check_selection_out(out, args.force)
    check_device(args.device)
    skipped: list[tuple[Path, str]] = []
    rows = rank_checkpoints(runs, args.num_samples, args.seed, args.with_labels, overrides, args.device,
                            args.metric, args.view_images, args.views, skipped=skipped)  # fmt: skip
    for path, why in skipped:  # never passed over silently
        print(f"ssl-toolkit: select: skipped {path} ({why})", file=sys.stderr)
    report = metric_report(rows)
    print(format_table(rows, args.with_labels) + "\n\n" + format_report(report))
    used = rows[0].num_samples
    if used is not None and used < args.num_samples:
        print(f"note: --num-samples {args.num_samples} is more than the {used} train images; all {used} were used")
    first = METRICS[args.metric[0]]
    criterion = f"{args.metric[0]} ({first.description}; {first.better} is better)"
    record = {"selected": rows[0].as_dict(), "criterion": criterion, "metrics": report,
              "num_samples": used, "num_samples_asked": args.num_samples, "seed": args.seed,
              "with_labels": args.with_labels, "data_overrides": overrides,
              "skipped": [{"checkpoint": str(p), "reason": why} for p, why in skipped],
              "table": [r.as_dict() for r in rows]}  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nselected: {rows[0].checkpoint}\nwritten:  {out}")
    if args.with_labels:  # metric vs accuracy, next to the JSON; an earlier plot is never replaced
        from ssl_toolkit.eval.selection_plot import plot_selection
        from ssl_toolkit.run_folder import numbered_paths

        png = next(p for p in numbered_paths(out.with_suffix(".png")) if not p.exists())
        print(f"plot:     {plot_selection(rows, png, title=f'{len(rows)} checkpoints of {len(runs)} run(s)')}")
    return 0


def _diagnose(args: argparse.Namespace, argv: list[str] | None) -> int:
    """``diagnose``: the diagnostics of every checkpoint, printed and written to a new folder."""
    import torch

    from ssl_toolkit.diagnostics import MAX_IMAGES
    from ssl_toolkit.errors import ArgumentError
    from ssl_toolkit.eval.diagnose import CheckpointDiagnostics, default_out, diagnose_module, labels_for, write_report
    from ssl_toolkit.recipe.checkpoint import check_checkpoint_path, load_checkpoint
    from ssl_toolkit.run_folder import check_writable

    # Checkpoint names hold '=' too (epoch=3-step=120.ckpt): overrides are the data.KEY=VALUE items.
    is_override = [i.startswith("data.") and "=" in i and not Path(i).exists() for i in args.items]
    overrides = _data_overrides([i for i, o in zip(args.items, is_override) if o])
    checkpoints = [Path(i) for i, o in zip(args.items, is_override) if not o]
    if not checkpoints:
        raise ArgumentError("diagnose: give at least one checkpoint")
    unique = list({c.resolve(): c for c in reversed(checkpoints)}.values())[::-1]
    if len(unique) < len(checkpoints):
        print(f"note: {len(checkpoints) - len(unique)} checkpoint(s) given more than once; each is diagnosed once")
        checkpoints = unique
    for ckpt in checkpoints:  # every path checked before the (slow) embedding
        check_checkpoint_path(ckpt)
    if not 2 <= args.num_images <= MAX_IMAGES:
        raise ArgumentError(f"--num-images: must be 2 to {MAX_IMAGES}, got {args.num_images}")
    if args.seed < 0:
        raise ArgumentError(f"--seed: must be >= 0, got {args.seed}")
    out = Path(args.out) if args.out else default_out(checkpoints)
    if out.exists():
        raise ArgumentError(f"--out: {out} exists; diagnose never writes into an existing folder")
    check_writable(out.parent, "--out")
    check_device(args.device)
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


def check_selection_out(out: Path, force: bool) -> None:
    """``select --out``: a file path in a writable folder; an existing file only with ``--force`` and
    only an earlier selection (a JSON object with ``selected``): a checkpoint or any other file is
    never replaced."""
    from ssl_toolkit.errors import ArgumentError
    from ssl_toolkit.run_folder import check_writable

    if out.is_dir():
        raise ArgumentError(f"--out: {out} is a folder; give a file path, e.g. {out / 'selection.json'}")
    if out.exists() and not force:
        raise ArgumentError(f"--out: {out} exists; pass --force to overwrite it")
    if out.exists():
        try:  # a .ckpt or any other non-JSON file is never read whole, nor replaced
            earlier = json.loads(out.read_text()) if out.suffix.lower() == ".json" else None
        except (ValueError, UnicodeDecodeError):
            earlier = None
        if not (isinstance(earlier, dict) and "selected" in earlier):
            raise ArgumentError(f"--out: {out} is not an earlier selection; --force replaces only those")
    check_writable(out.parent, "--out")


def check_device(device: str | None) -> None:
    """``--device``: a torch device name that exists on this machine (None: the default).

    Raises:
        ArgumentError: an unknown name, or a CUDA device that is not there.
    """
    import torch

    from ssl_toolkit.errors import ArgumentError

    if device is None:
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ArgumentError(f"--device: {device!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from None
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        have = f"{torch.cuda.device_count()} CUDA device(s)" if torch.cuda.is_available() else "no CUDA device"
        raise ArgumentError(f"--device: {device} is not available (this machine has {have}); use --device cpu")
    if dev.type not in ("cpu", "cuda", "mps") or (dev.type == "mps" and not torch.backends.mps.is_available()):
        raise ArgumentError(f"--device: {device} is not available here; use --device cpu")


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
        from ssl_toolkit.run.fit import fit_file

        command = ["ssl-toolkit", "fit", args.recipe, *args.overrides] if argv is None else argv
        result = fit_file(
            args.recipe, args.overrides, argv=command, note=note, verbose=args.verbose, store_env=args.store_env
        )
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    if rank_zero_only.rank != 0:  # a multi-process run: rank 0 prints the one summary
        return 0
    print(f"\nrun folder:       {result.run_dir}")
    print(f"checkpoint:       {result.checkpoint or '(none written)'}")
    print(f"resolved recipe:  {result.run_dir / 'recipe.yaml'}  (git commit in run.json)")
    wandb_dir = result.run_dir / "wandb"
    logs = [str(p) for p in result.logs] + ([str(wandb_dir)] if wandb_dir.exists() else [])
    why = ": trainer.fast_dev_run turns logging and checkpoints off" if result.fast_dev_run else ""
    print(f"logs:             {', '.join(logs) if logs else f'(none written{why})'}")
    if result.final_loss == result.final_loss:  # not NaN: a loss was logged
        print(f"final train/loss: {result.final_loss:.4f} after {result.steps} steps")
    else:
        print(f"final train/loss: (none logged) after {result.steps} steps")
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
    from ssl_toolkit.recipe.build import load_recipe
    from ssl_toolkit.run.views import write_views

    written = write_views(load_recipe(args.recipe, args.overrides), args.images, Path(args.out), args.force)
    print(f"written: {written.overview}\n         {len(written.files)} views in {written.overview.parent / 'views'}")
    for i, name in enumerate(written.names or ()):  # which file each row (image<i>_view*.png) shows
        print(f"image{i:03d}: {name}")
    return 0


def _bench(args: argparse.Namespace, argv: list[str] | None) -> int:
    from ssl_toolkit.recipe.build import load_recipe
    from ssl_toolkit.run.bench import bench, check_outputs, format_result, write_outputs

    recipe = load_recipe(args.recipe, args.overrides)
    outputs = check_outputs(args.json, args.markdown)
    result = bench(recipe, steps=args.steps, warmup=args.warmup, loader_only=args.loader_only)
    print(format_result(result))
    write_outputs(result, outputs, " ".join([args.recipe, *args.overrides]))
    return 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
