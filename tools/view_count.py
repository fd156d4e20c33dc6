"""View-count experiment on Fashion-MNIST: 2 vs 4 views with pairwise NT-Xent, MV-InfoNCE, MV-DHEL.

    .venv/bin/python tools/view_count.py [--steps 80] [--runs-dir runs/view_count] [--out docs]

Every run is the demo recipe (recipes/fashion_mnist/simclr.yaml: ResNet-18 at 32 px, batch 256,
LARS lr 0.3, t 0.2) with ``head.loss.name`` and ``augment.num_views`` changed, cut to a number of
steps with ``trainer.limit_train_batches`` (one epoch, so the cosine schedule and the end-of-epoch
evaluation run as usual: k-NN on the 60,000-image bank, online linear probe, RankMe). Two budgets:

* fixed steps: every configuration trains ``--steps`` steps;
* fixed compute: 4-view runs train ``--steps / 2`` steps, so every run pushes the same number of
  images through the backbone, about the same wall-clock time (the measured times are reported).

Pairwise NT-Xent averages the loss over the V(V-1)/2 view pairs; MV-InfoNCE and MV-DHEL are one
term per image over all views. Runs are sequential; each prints the CLI's summary, parsed here.
Writes ``<out>/view_count.json``, ``<out>/view_count.png`` and ``<out>/view_count.md``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ssl_toolkit.run.arguments import OneLineParser

RECIPE = "recipes/fashion_mnist/simclr.yaml"
LOSSES = {"ntxent": "pairwise NT-Xent", "mv_infonce": "MV-InfoNCE", "mv_dhel": "MV-DHEL"}
KEYS = {"val/knn_top1": "knn", "val/linear_top1": "linear", "val/rankme": "rankme"}


def run(loss: str, views: int, steps: int, runs_dir: Path) -> dict:
    """One ``ssl-toolkit fit`` of the demo recipe; returns the parsed summary."""
    name = f"{loss}_v{views}_s{steps}"
    overrides = [
        f"head.loss.name={loss}",
        "head.loss.temperature=0.2",
        f"augment.num_views={views}",
        f"trainer.limit_train_batches={steps}",
        f"out_dir={runs_dir / name}",
        "logger.wandb=false",
    ]
    cli = Path(sys.executable).with_name("ssl-toolkit")
    print(f"== {name}", flush=True)
    proc = subprocess.run([str(cli), "fit", RECIPE, *overrides], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"view_count: {name} failed:\n{proc.stderr[-2000:]}")
    out = {"loss": loss, "views": views, "steps": steps, **parse_summary(proc.stdout)}
    print(json.dumps(out), flush=True)
    return out


def parse_summary(stdout: str) -> dict:
    """k-NN, linear, RankMe, final loss and wall time from the summary ``ssl-toolkit fit`` prints."""
    out = {}
    for line in stdout.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in KEYS:
            out[KEYS[key.strip()]] = float(value)
        if key.startswith("final train/loss"):
            out["train_loss"] = float(value.split()[0])
        if key.startswith("wall time"):
            out["seconds"] = float(re.findall(r"[\d.]+", value)[0])
    return out


def table(rows: list[dict], budget: str) -> list[str]:
    lines = [
        "| loss | views | steps | k-NN top-1 | online linear top-1 | RankMe | final train/loss | wall time (`fit`) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {LOSSES[r['loss']]} | {r['views']} | {r['steps']} | {r['knn']:.4f} | {r['linear']:.4f} | "
                     f"{r['rankme']:.1f} | {r['train_loss']:.3f} | {r['seconds']:.0f} s |")  # fmt: skip
    return [f"**{budget}**", "", *lines, ""]


def plot(fixed_steps: list[dict], fixed_compute: list[dict], path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    for ax, rows, title in ((axes[0], fixed_steps, "fixed steps"), (axes[1], fixed_compute, "fixed compute")):
        for i, views in enumerate((2, 4)):
            vals = [next(r["knn"] for r in rows if r["loss"] == loss and r["views"] == views) for loss in LOSSES]
            ax.bar([x + 0.38 * i for x in range(len(LOSSES))], vals, width=0.38, label=f"{views} views")
        ax.set_xticks([x + 0.19 for x in range(len(LOSSES))], list(LOSSES.values()))
        ax.set_title(title)
    axes[0].set_ylabel("k-NN top-1 (Fashion-MNIST test)")
    lo = min(r["knn"] for r in fixed_steps + fixed_compute)
    axes[0].set_ylim(max(0.0, lo - 0.05), None)
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = OneLineParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=80, help="steps of the fixed-step budget (even)")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/view_count"))
    parser.add_argument("--out", type=Path, default=Path("docs"))
    args = parser.parse_args()
    if args.steps < 2 or args.steps % 2:
        parser.error("--steps: must be an even number >= 2")
    results = [run(loss, views, args.steps, args.runs_dir) for views in (2, 4) for loss in LOSSES]
    results += [run(loss, 4, args.steps // 2, args.runs_dir) for loss in LOSSES]
    fixed_steps = [r for r in results if r["steps"] == args.steps]
    fixed_compute = [r for r in results if r["views"] == 2 or r["steps"] == args.steps // 2]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "view_count.json").write_text(json.dumps(results, indent=1) + "\n")
    plot(fixed_steps, fixed_compute, args.out / "view_count.png")
    text = ["# View count: 2 vs 4 views, pairwise NT-Xent vs MV-InfoNCE vs MV-DHEL (Fashion-MNIST)", "",
            f"Generated by `python tools/view_count.py --steps {args.steps}` (see its docstring for the protocol).", "",
            *table(fixed_steps, f"Fixed steps ({args.steps} steps of 256 images)"),
            *table(fixed_compute, f"Fixed compute (4 views get {args.steps // 2} steps)"),
            "![k-NN top-1 by loss and view count](view_count.png)", ""]  # fmt: skip
    (args.out / "view_count.md").write_text("\n".join(text))
    print("\n".join(text))


if __name__ == "__main__":
    main()
