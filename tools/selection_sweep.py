"""Label-free model selection on a real sweep: which metric picks the checkpoint (and the hyper-parameters)?

    .venv/bin/python tools/selection_sweep.py           # ~25 min on 2 idle cores; writes docs/model_selection.md
    .venv/bin/python tools/selection_sweep.py --tiny    # the same pipeline at toy size; report under runs/

Trains (one at a time, as ``ssl-toolkit fit`` subprocesses) SimCLR and MoCo v2 on Fashion-MNIST over a
grid of contrastive temperature x LARS learning rate, a checkpoint after every epoch; scores every
checkpoint by every label-free metric of ``ssl_toolkit.eval.label_free.METRICS`` and, for the report
only, by k-NN and linear-probe top-1 (``ssl_toolkit.eval.selection.rank_checkpoints``); then writes a
markdown report with, per method and per metric, the Spearman correlation with each accuracy over all
checkpoints and the regret of the metric's choice (best top-1 minus that of the chosen checkpoint),
a PNG per method, and a combined metric (a rank vote of two metrics) chosen on one method and judged
on the other. Resumable: runs with all their epoch checkpoints are not trained again, scored runs
are read back from ``<run>/selection_scores.json``, so a second call only writes the report.
"""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ssl_toolkit.eval.label_free import METRICS
from ssl_toolkit.eval.selection import Row, judge, metric_report, rank_checkpoints, rank_vote
from ssl_toolkit.eval.selection_plot import plot_selection
from ssl_toolkit.run.arguments import OneLineParser
from ssl_toolkit.run_folder import run_folders

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Method:
    """A recipe and the recipe key of its contrastive temperature."""

    name: str
    recipe: str
    temperature_key: str


METHODS = (
    Method("simclr", "recipes/fashion_mnist/simclr.yaml", "head.loss.temperature"),
    Method("mocov2", "recipes/fashion_mnist/mocov2.yaml", "head.temperature"),
)


@dataclass(frozen=True)
class Size:
    """How big the sweep is: the grid, the training budget and the scoring subsets."""

    temperatures: tuple[float, ...]
    lrs: tuple[float, ...]
    epochs: int
    train_samples: int
    batch_size: int
    backbone: str
    val_samples: int  # held-out images scored by k-NN and the linear probe (labels: report only)
    num_samples: int  # unlabelled train images for RankMe / alpha-ReQ
    view_images: int  # images x views for LiDAR, ROC-AUC, alignment, uniformity
    views: int


FULL = Size((0.1, 0.2, 0.5), (0.1, 1.0), 3, 6000, 256, "resnet18", 2000, 2048, 512, 8)
TINY = Size((0.2, 0.5), (0.3,), 2, 512, 128, "resnet10t", 256, 256, 32, 4)


def run_name(method: Method, temperature: float, lr: float) -> str:
    return f"{method.name}/t{temperature}_lr{lr}"


def complete_run(out: Path, epochs: int) -> Path | None:
    """The newest folder of ``out`` (``out``, ``out_1``, ...) holding ``epochs`` epoch checkpoints."""
    for folder in reversed(run_folders(out)):
        if len(list((folder / "checkpoints").glob("epoch=*.ckpt"))) >= epochs:
            return folder
    return None


def train(out: Path, method: Method, temperature: float, lr: float, size: Size) -> Path:
    """Train one configuration unless a finished run exists; a run cut short is resumed (``resume=auto``)."""
    done = complete_run(out, size.epochs)
    if done is not None:
        return done
    cli = str(Path(sys.executable).with_name("ssl-toolkit"))
    cmd = [
        cli, "fit", str(REPO / method.recipe), f"out_dir={out}", "resume=auto",
        f"{method.temperature_key}={temperature}", f"optimizer.lr={lr}",
        f"backbone.name={size.backbone}", f"data.train_samples={size.train_samples}",
        f"data.batch_size={size.batch_size}", f"trainer.max_epochs={size.epochs}", "trainer.max_steps=-1",
        # No evaluation while training: every checkpoint is scored afterwards, on the same images.
        "callbacks.knn=null", "callbacks.linear_probe=null", "callbacks.rankme=null",
        "callbacks.rankme_checkpoint=null", "callbacks.checkpoint={every_n_epochs: 1, save_top_k: -1}",
        "logger.wandb=false", "trainer.enable_progress_bar=false",
    ]  # fmt: skip
    print("+", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    done = complete_run(out, size.epochs)
    if done is None:
        raise SystemExit(f"selection_sweep: {out} has fewer than {size.epochs} epoch checkpoints after training")
    return done


def score(run: Path, size: Size) -> list[Row]:
    """Every checkpoint of ``run`` scored by every metric and both accuracies; cached in the run folder."""
    settings = {"metrics": list(METRICS), "val_samples": size.val_samples, "num_samples": size.num_samples,
                "view_images": size.view_images, "views": size.views, "seed": 0}  # fmt: skip
    cache = run / "selection_scores.json"
    if cache.is_file():
        record = json.loads(cache.read_text())
        if record["settings"] == settings:
            return [Row.from_dict(r) for r in record["rows"]]
    rows = rank_checkpoints(
        [run], size.num_samples, seed=0, with_labels=True, device="cpu", metrics=list(METRICS),
        data_overrides={"num_workers": 0, "val_samples": size.val_samples},
        num_view_images=size.view_images, num_views=size.views,
    )  # fmt: skip
    rows.sort(key=lambda r: r.step)
    cache.write_text(json.dumps({"settings": settings, "rows": [r.as_dict() for r in rows]}, indent=2) + "\n")
    return rows


def label(row: Row) -> str:
    """``t0.2_lr1.0 epoch 2``: the configuration and the (0-based) epoch of a checkpoint."""
    return f"{row.run.name} epoch {row.epoch}"


def points(value: float) -> str:
    return f"{100 * value:.2f}"


def metric_table(rows: list[Row]) -> list[str]:
    """Markdown rows: per metric, Spearman with k-NN / linear, regret k-NN / linear, and its choice."""
    lines = [
        "| metric | better | Spearman k-NN | Spearman linear | regret k-NN (points) | regret linear (points) "
        "| choice |",
        "|---|---|---|---|---|---|---|",
    ]
    by_path = {str(r.checkpoint): r for r in rows}
    for e in metric_report(rows):
        lines.append(
            f"| `{e['metric']}` | {e['better']} | {e['spearman_knn']:+.2f} | {e['spearman_linear']:+.2f} | "
            f"{points(e['regret_knn'])} | {points(e['regret_linear'])} | {label(by_path[e['selected']])} |"
        )
    return lines


def mean_regret(entry: dict) -> float:
    return (entry["regret_knn"] + entry["regret_linear"]) / 2


def mean_spearman(entry: dict) -> float:
    values = [entry["spearman_knn"], entry["spearman_linear"]]
    return sum(0.0 if math.isnan(v) else v for v in values) / 2


def design_vote(rows: list[Row]) -> tuple[str, str]:
    """The pair of metrics whose rank vote has the lowest mean regret (k-NN, linear) on ``rows``;
    ties go to the higher mean Spearman, then to the first pair in ``METRICS`` order."""
    pairs = list(itertools.combinations(METRICS, 2))
    return min(pairs, key=lambda p: (mean_regret(j := judge(rows, rank_vote(rows, list(p)))), -mean_spearman(j)))


def best_single(rows: list[Row]) -> str:
    """The single metric with the lowest mean regret on ``rows`` (ties: higher mean Spearman)."""
    return min(metric_report(rows), key=lambda e: (mean_regret(e), -mean_spearman(e)))["metric"]


def holdout_section(by_method: dict[str, list[Row]]) -> tuple[list[str], list[dict]]:
    """Design the vote (and pick the best single metric) on one method; judge both on the other."""
    lines = [
        "| designed on | vote of | judged on | Spearman k-NN | Spearman linear | regret k-NN | regret linear |"
        " best single metric on the design part -> its regret k-NN / linear on the held-out part |",
        "|---|---|---|---|---|---|---|---|",
    ]
    results = []
    for design, held in itertools.permutations(by_method, 2):
        pair = design_vote(by_method[design])
        single = best_single(by_method[design])
        on_design = judge(by_method[design], rank_vote(by_method[design], list(pair)))
        on_held = judge(by_method[held], rank_vote(by_method[held], list(pair)))
        single_held = next(e for e in metric_report(by_method[held]) if e["metric"] == single)
        for part, j in ((design, on_design), (held, on_held)):
            lines.append(
                f"| {design} | `{pair[0]}` + `{pair[1]}` | {part}{' (design)' if part == design else ' (held out)'} | "
                f"{j['spearman_knn']:+.2f} | {j['spearman_linear']:+.2f} | {points(j['regret_knn'])} | "
                f"{points(j['regret_linear'])} | "
                + (
                    f"`{single}` -> {points(single_held['regret_knn'])} / {points(single_held['regret_linear'])} |"
                    if part == held
                    else "|"
                )  # fmt: skip
            )
        results.append({"design": design, "held_out": held, "pair": pair, "held": on_held, "single": single,
                        "single_held": single_held})  # fmt: skip
    return lines, results


def failure_reading(method: str, rows: list[Row]) -> list[str]:
    """One plain sentence per metric, from the numbers: how it ranks and where its choice goes wrong."""
    by_path = {str(r.checkpoint): r for r in rows}
    oracle = {kind: max(rows, key=lambda r: getattr(r, f"{kind}_top1")) for kind in ("knn", "linear")}
    lines = []
    for e in metric_report(rows):
        chosen = by_path[e["selected"]]
        rho = min(e["spearman_knn"], e["spearman_linear"])
        if math.isnan(rho):
            how = "is constant or undefined on these checkpoints"
        elif max(e["spearman_knn"], e["spearman_linear"]) < 0:
            how = "ranks checkpoints *against* accuracy (negative Spearman): it fails outright here"
        elif rho < 0.3:
            how = "barely follows accuracy (Spearman below 0.3 for at least one probe)"
        elif max(e["regret_knn"], e["regret_linear"]) > 0.01:
            how = "orders checkpoints roughly as accuracy does but misses the top by more than 1 point"
        else:
            how = "follows accuracy and picks a checkpoint within 1 point of the best"
        lines.append(
            f"- `{e['metric']}` on {method} {how}: it picks {label(chosen)} (k-NN {points(chosen.knn_top1)}, "
            f"linear {points(chosen.linear_top1)}); the best are {label(oracle['knn'])} for k-NN "
            f"({points(oracle['knn'].knn_top1)}) and {label(oracle['linear'])} for linear "
            f"({points(oracle['linear'].linear_top1)})."
        )
    return lines


def readme_snippet(by_method: dict[str, list[Row]], holdout: list[dict]) -> str:
    """The numbers for the selection section of docs/evaluation.md (between its ``<!-- sweep numbers -->`` marks)."""
    lines = ["| method | best single metric (mean regret k-NN / linear, points) | RankMe's regret | vote held out |",
             "|---|---|---|---|"]  # fmt: skip
    for method, rows in by_method.items():
        report = {e["metric"]: e for e in metric_report(rows)}
        best = best_single(rows)
        vote = next(h for h in holdout if h["held_out"] == method)
        lines.append(
            f"| {method} | `{best}`: {points(report[best]['regret_knn'])} / {points(report[best]['regret_linear'])}"
            f" | {points(report['rankme']['regret_knn'])} / {points(report['rankme']['regret_linear'])} | "
            f"`{vote['pair'][0]}` + `{vote['pair'][1]}` (designed on {vote['design']}): "
            f"{points(vote['held']['regret_knn'])} / {points(vote['held']['regret_linear'])} |"
        )
    return "\n".join(lines)


def write_report(path: Path, size: Size, by_method: dict[str, list[Row]], seconds: float, command: str) -> str:
    """Write the markdown report (and one PNG per method beside it); return the docs/evaluation.md snippet."""
    sections = []
    for method, rows in by_method.items():
        png = path.with_name(f"{path.stem}_{method}.png")
        plot_selection(rows, png, title=f"{method}: {len(rows)} checkpoints (every configuration x epoch)")
        final = [r for r in rows if r.epoch == max(x.epoch for x in rows)]
        final_lines = ["| metric | regret k-NN (points) | regret linear (points) |", "|---|---|---|"] + [
            f"| `{e['metric']}` | {points(e['regret_knn'])} | {points(e['regret_linear'])} |"
            for e in metric_report(final)
        ]
        scores = ["| checkpoint | " + " | ".join(METRICS) + " | k-NN | linear |",
                  "|---|" + "---|" * (len(METRICS) + 2)]  # fmt: skip
        for r in sorted(rows, key=lambda r: (r.run.name, r.epoch)):
            values = " | ".join(f"{r.scores[m]:.3g}" for m in METRICS)
            scores.append(f"| {label(r)} | {values} | {points(r.knn_top1)} | {points(r.linear_top1)} |")
        sections.append(
            f"## {method}\n\n![metric vs accuracy]({png.name})\n\nAll {len(rows)} checkpoints "
            "(checkpoint and hyper-parameter choice at once):\n\n" + "\n".join(metric_table(rows))
            + f"\n\nFinal-epoch checkpoints only ({len(final)}: the hyper-parameter choice):\n\n"
            + "\n".join(final_lines) + "\n\nWhat each metric does here:\n\n" + "\n".join(failure_reading(method, rows))
            + "\n\n<details><summary>every checkpoint's scores</summary>\n\n" + "\n".join(scores) + "\n\n</details>"
        )  # fmt: skip
    holdout_lines, holdout = holdout_section(by_method)
    grid = f"temperature {list(size.temperatures)} x LARS lr {list(size.lrs)}"
    text = REPORT.format(
        command=command, grid=grid, size=size, steps=math.ceil(size.train_samples / size.batch_size),
        sections="\n\n".join(sections), holdout="\n".join(holdout_lines), minutes=seconds / 60,
        metrics="\n".join(f"- `{name}`: {m.description}; {m.better} is better." for name, m in METRICS.items()),
    )  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + EARLIER)
    return readme_snippet(by_method, holdout)


REPORT = """# Label-free model selection: which metric picks the checkpoint? (Fashion-MNIST, SimCLR and MoCo v2)

Reproduce (trains what is missing, one run at a time, then scores every checkpoint; a second call
reads the cached scores and only rewrites this page):

```bash
{command}
```

## Setup

- Methods, evaluated separately (a metric's values only compare runs of one method):
  `recipes/fashion_mnist/simclr.yaml` (NT-Xent) and `recipes/fashion_mnist/mocov2.yaml` (momentum
  encoder, queue of 4,096 keys), backbone `{size.backbone}` (standard stem) at 32 px, batch
  {size.batch_size}, the recipes' augmentation and LARS optimizer with a warm-up/cosine schedule.
- Sweep: {grid} (the temperature of the contrastive loss and the base learning rate), each run
  {size.epochs} epochs of the first {size.train_samples} images of a fixed permutation of the train
  split ({steps} steps per epoch), a checkpoint after every epoch. No evaluation while training.
- Every checkpoint is scored by every label-free metric (`ssl-toolkit select --metric ...`; no label
  is read): RankMe and alpha-ReQ on the same {size.num_samples} random unlabelled train images;
  the view metrics on {size.views} augmented views (the training augmentation, seeded) of the first
  {size.view_images} of them.
- For the report only, labels: **k-NN top-1** (k=200, T=0.07, cosine; bank = the
  {size.train_samples} training images, queries = {size.val_samples} test images of a fixed
  permutation) and **linear top-1** (L-BFGS logistic regression, 100 iterations, on frozen
  standardized backbone features of the same bank, scored on the same test images).
- **Spearman**: rank correlation, over all checkpoints of a method, between the metric's "better"
  direction and the accuracy. **Regret**: the best accuracy over those checkpoints (the oracle,
  which reads labels) minus the accuracy of the checkpoint the metric selects, in points of top-1.

Metrics:

{metrics}

How each can fail by construction (what to look for in the tables below):

- RankMe counts how many directions carry variance, not whether they separate classes: a run that
  spreads its features widely but keeps the classes mixed scores high (in the earlier measurement at
  the end of this page, temperature 1.0 had the highest RankMe and 0.5 the best accuracy).
- alpha-ReQ is ranked by its distance to 1, an assumption (the paper reports a good *interval*
  whose bounds depend on the model and data); when every checkpoint lies on one side of 1 it
  becomes "flattest spectrum wins", close to RankMe's ranking.
- LiDAR and the ROC-AUC judge the surrogate task itself (telling the training augmentations of one
  image from the others), on few images and views here ({size.view_images} x {size.views}; the
  LiDAR paper uses 1000 x 50): a model that solves the augmentation task well is not always the one
  whose features separate classes, and the AUC saturates near 1 once training has started.
- Alignment is minimised by collapse (every view mapped to one point gives 0) and uniformity by
  spreading points regardless of views; each alone rewards one half of the contrastive objective.

{sections}

## A combined metric, judged on data it was not designed on

Candidates: the rank vote of every pair of metrics (each checkpoint's mean rank under the two
metrics; `ssl_toolkit.eval.selection.rank_vote`). The pair is chosen on one method's checkpoints
(lowest mean regret over k-NN and linear, ties to the higher Spearman) and then judged on the other
method's checkpoints, which played no part in choosing it. The last column is the fair baseline:
the best *single* metric on the design method, judged on the held-out method.

{holdout}

This call of the script took {minutes:.1f} minutes on this machine (training and scoring included
only for the runs that were missing; the 2 cores may have been shared with other jobs).
"""


EARLIER = """

## Earlier measurement: RankMe alone, 6 SimCLR temperatures (2026-11-28)

Kept from the page this one replaces (`tools/rankme_experiment.py`, the code of that day: SimCLR
projector without BatchNorm on its output). SimCLR, ResNet-18 standard stem at 32 px, batch 256,
LARS lr 0.3 per 256, the first 12,800 images of a fixed permutation of the train split, 3 epochs
(150 steps), one run per NT-Xent temperature (0.02, 0.05, 0.1, 0.2, 0.5, 1.0), a checkpoint after
every epoch. RankMe on the backbone features of the 12,800 unlabelled training images; k-NN (k=200,
T=0.07) with the 12,800 images as the bank and the 10,000 test images as queries; linear top-1 by
L-BFGS on the frozen standardized features, scored on the 10,000 test images.

| run | epoch | RankMe (backbone) | RankMe (projector) | k-NN top-1 | linear top-1 |
|---|---|---|---|---|---|
| temperature_0.02 | 0 | 47.0 | 1.1 | 0.6774 | 0.7869 |
| temperature_0.02 | 1 | 37.6 | 1.1 | 0.6749 | 0.7791 |
| temperature_0.02 | 2 | 36.9 | 1.1 | 0.6661 | 0.7778 |
| temperature_0.05 | 0 | 50.2 | 1.1 | 0.6336 | 0.7742 |
| temperature_0.05 | 1 | 43.7 | 1.2 | 0.6481 | 0.7719 |
| temperature_0.05 | 2 | 44.3 | 1.3 | 0.6590 | 0.7777 |
| temperature_0.1 | 0 | 45.8 | 1.5 | 0.6336 | 0.7748 |
| temperature_0.1 | 1 | 58.5 | 1.9 | 0.6372 | 0.7786 |
| temperature_0.1 | 2 | 63.1 | 1.9 | 0.6759 | 0.7861 |
| temperature_0.2 | 0 | 54.0 | 2.4 | 0.6298 | 0.7817 |
| temperature_0.2 | 1 | 53.1 | 2.7 | 0.6520 | 0.7886 |
| temperature_0.2 | 2 | 61.9 | 3.3 | 0.6708 | 0.7913 |
| temperature_0.5 | 0 | 62.8 | 6.3 | 0.6963 | 0.7901 |
| temperature_0.5 | 1 | 91.2 | 8.4 | 0.7389 | 0.8205 |
| temperature_0.5 | 2 | 95.7 | 9.1 | 0.7435 | 0.8196 |
| temperature_1.0 | 0 | 90.5 | 7.5 | 0.6976 | 0.7967 |
| temperature_1.0 | 1 | 100.4 | 7.4 | 0.7117 | 0.8050 |
| temperature_1.0 **(RankMe choice)** | 2 | 104.5 | 8.0 | 0.7176 | 0.8063 |
| random init (reference only) | - | 6.1 | - | 0.2552 | 0.2566 |

- Checkpoints compared: 18 (6 runs x epochs).
- Spearman(RankMe, k-NN top-1) over all checkpoints: **0.672**; Spearman(RankMe, linear top-1): **0.841**.
- Over the final checkpoints only (hyper-parameter selection): Spearman(RankMe, k-NN) 0.886,
  Spearman(RankMe, linear) 0.829.
- RankMe selects temperature_1.0 epoch 2: k-NN 0.7176, linear 0.8063.
- Oracle (needs labels): best k-NN temperature_0.5 epoch 2 0.7435; best linear temperature_0.5 epoch 1 0.8205.
- Accuracy lost by selecting without labels: k-NN 0.0259, linear 0.0142.

Reading (written by hand for those numbers):

- Across temperatures, RankMe orders the runs as accuracy does at the extremes: the two runs that
  barely train (temperature 0.02 and 0.05, final loss 6.22 and 6.11 against ln(511) = 6.24 at the
  start) end with the lowest RankMe (36.9 and 44.3) and the lowest accuracy, and RankMe falls
  during the 0.02 run, a label-free sign that it is not learning.
- It does not pick the best run: temperature 1.0 has the highest RankMe (104.5) but temperature
  0.5 the best accuracy (k-NN 0.7435, linear 0.8205). Selecting by RankMe cost 2.6 points of k-NN
  top-1 and 1.4 points of linear top-1 here, against an oracle that reads labels.
- Within each of the four runs that learn, RankMe is highest at the last epoch (one dip: temperature
  0.2 at epoch 1), and k-NN accuracy rises every epoch; "the highest-RankMe checkpoint of a run"
  is its last checkpoint for all four.
- The projector's RankMe is small (1.1 to 9.1) and mostly grows with the temperature.
- This is one short budget (150 steps) on one data set with 18 checkpoints; it says RankMe is a
  useful label-free signal here (Spearman 0.84 with linear accuracy), not that it is exact.
"""


def main() -> None:
    parser = OneLineParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="toy size (2 configs x 2 epochs x 512 images, resnet10t)")
    parser.add_argument("--out", type=Path, default=None, help="runs folder (default: runs/selection_sweep[_tiny])")
    parser.add_argument("--report", type=Path, default=None,
                        help="markdown to write (default: docs/model_selection.md; with --tiny, in --out)")  # fmt: skip
    args = parser.parse_args()
    size = TINY if args.tiny else FULL
    out = args.out or REPO / "runs" / ("selection_sweep_tiny" if args.tiny else "selection_sweep")
    report = args.report or (out / "model_selection.md" if args.tiny else REPO / "docs" / "model_selection.md")
    command = ".venv/bin/python tools/selection_sweep.py" + (" --tiny" if args.tiny else "")
    start = time.time()
    grid = list(itertools.product(METHODS, size.temperatures, size.lrs))
    by_method: dict[str, list[Row]] = {m.name: [] for m in METHODS}
    for i, (method, temperature, lr) in enumerate(grid, 1):
        name = run_name(method, temperature, lr)
        print(f"[{i}/{len(grid)}] {name}: training ({time.time() - start:.0f} s so far)", flush=True)
        run = train(out / name, method, temperature, lr, size)
        print(f"[{i}/{len(grid)}] {name}: scoring ({time.time() - start:.0f} s so far)", flush=True)
        rows = score(run, size)
        for r in rows:
            print(f"    epoch {r.epoch}: k-NN {points(r.knn_top1)} linear {points(r.linear_top1)} "
                  + " ".join(f"{m} {r.scores[m]:.3g}" for m in METRICS), flush=True)  # fmt: skip
        by_method[method.name] += rows
    snippet = write_report(report, size, by_method, time.time() - start, command)
    for method, rows in by_method.items():
        best = next(e for e in metric_report(rows) if e["metric"] == best_single(rows))
        print(f"{method}: lowest mean regret (k-NN, linear): {best['metric']} ({points(mean_regret(best))} points)")
    print(f"\nwritten: {report}\n\ndocs/evaluation.md snippet (between <!-- sweep numbers -->):\n\n{snippet}")
    print(f"\ntook {(time.time() - start) / 60:.1f} min")


if __name__ == "__main__":
    main()
