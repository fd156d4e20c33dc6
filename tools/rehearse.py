"""Run shipped recipes as shipped on this CPU: train 2 steps, evaluate, save, resume, evaluate again.

    python tools/rehearse.py [RECIPE ...] [--full] [--out DIR] [--data DIR] [--table FILE]

Each recipe runs through ``ssl-toolkit fit`` twice, in its own precision, strategy, SyncBN,
``module`` switches and callbacks. Only these keys are overridden (the table lists them):

- ``trainer.accelerator=cpu`` (and ``trainer.devices`` stays: a recipe that asks for 2 devices runs
  as 2 gloo processes that Lightning starts itself, as on a 2-GPU machine). A recipe that asks for
  more devices than ``--max-devices`` (default 2) runs with that many processes, and the table says
  so (``2 of 8``): 8 gloo processes of a ViT-S with their loader workers do not fit in 24 GiB of
  memory (the kernel's OOM killer ended one in the resume), and on 2 cores they test nothing 2 do not;
- the data: ``data.root`` points at a generated folder of ImageNet-like JPEGs (``train/<class>/``,
  ``val/<class>/``; made once under ``--data``) for recipes that read image folders, and
  ``data.num_workers=1``; without ``--full`` also ``data.batch_size=8`` (per process; a multiple of
  ``data.classes_per_batch`` where the recipe sets one) and a 16-class folder. The folder holds at
  least 3 global batches of training images, so every epoch has its 2 steps on every process;
- the run length: 2 training batches per epoch (``trainer.limit_train_batches=2``), one epoch
  (``trainer.max_epochs=1``, ``max_steps=-1``), an evaluation at its end (``trainer.check_val_every_n_epoch=1``,
  ``trainer.limit_val_batches=2``: a few batches per evaluation loader) and the periodic checkpoints
  every epoch (``callbacks.checkpoint.every_n_epochs=1``, the same for ``rankme_checkpoint``);
- the resume: ``resume=auto trainer.max_epochs=2``: 2 more steps and another evaluation;
- ``--accelerator gpu --devices 1`` (``tools/gpu_check.sh``): the same on one GPU (a ``ddp`` recipe
  then runs with ``trainer.strategy=auto``).

The recipe's own sanity check (``num_sanity_val_steps``), k-NN bank and RankMe sizes, diagnostics
and precision are kept. With ``--full`` the per-process batch is the recipe's and the folder has 100
classes (``--full`` is the full-size dress rehearsal: the recipe's image size and batch, on the CPU).

Per recipe the table says whether it trained (2 steps), evaluated (every ``val/`` metric its callbacks
log is finite), saved (``last.ckpt``), resumed (4 steps, evaluated again), with the wall time of both
runs, the peak resident memory of the largest process and the checkpoint size. Exit status 1 when
any row is not green. Logs of every run stay under ``--out`` (``<recipe>.fit.log``, ``<recipe>.resume.log``).
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from ssl_toolkit.run.arguments import OneLineParser

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

SMALL_BATCH = 8  # per process; hard-negative losses need a global batch above their top-k
SMALL_CLASSES = 16  # enough for a label-balanced sampler's classes per batch (Hydra: 16)
# Runs the command given after it and prints its (and its children's) peak resident memory in KiB.
_MEASURE = (
    "import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
    "print('maxrss_kib', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(rc)"
)


@dataclass
class Row:
    """One recipe's rehearsal."""

    recipe: str
    precision: str
    devices: int
    recipe_devices: int
    batch: int
    image_size: int
    trained: bool = False
    evaluated: bool = False
    saved: bool = False
    resumed: bool = False
    seconds: float = 0.0
    peak_rss_mb: float = 0.0
    checkpoint_mb: float = 0.0
    metrics: list[str] = field(default_factory=list)
    problem: str = ""

    @property
    def green(self) -> bool:
        return self.trained and self.evaluated and self.saved and self.resumed


def make_folder(root: Path, classes: int, train_per_class: int, val_per_class: int) -> Path:
    """``root/train/<class>/*.jpg`` and ``root/val/<class>/*.jpg``: 500 x 375 ImageNet-like JPEGs
    (``tools/fake_photos.py``), made once (a ``.complete`` marker says the folder is whole).

    Each file is a function of its (split, class, number) alone and is only ever added, atomically
    (written aside, then renamed): a second rehearsal that asks for more images, or fewer, never
    rewrites a file that a running one may be reading."""
    import numpy as np
    from fake_photos import fake_photo

    marker = root / ".complete"
    wanted = f"{classes} {train_per_class} {val_per_class}\n"
    if marker.is_file() and marker.read_text() == wanted:
        return root
    for s, (split, count) in enumerate((("train", train_per_class), ("val", val_per_class))):
        for c in range(classes):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                path = folder / f"img_{i:04d}.jpg"
                if path.is_file():
                    continue
                tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                fake_photo(np.random.default_rng([s, c, i]), 500, 375).save(tmp, format="JPEG", quality=90)
                os.replace(tmp, path)
    marker.write_text(wanted)
    return root


def processes(recipe: dict, devices: int | None, max_devices: int) -> int:
    """How many processes the rehearsal runs: ``devices`` when given, else the recipe's
    ``trainer.devices`` capped at ``max_devices``."""
    if devices is not None:
        return devices
    asked = (recipe.get("trainer") or {}).get("devices", 1)
    return min(int(asked) if isinstance(asked, int) else 1, max_devices)


def train_per_class(recipes: list[dict], classes: int, full: bool, procs: list[int]) -> int:
    """Training images per class so that every recipe's epoch holds 3 global batches (2 steps are
    run; a label-balanced sampler may drop part of the last one)."""
    need = max((3 * p * batch_of(r, full, p) for r, p in zip(recipes, procs, strict=True)), default=0)
    return max(6, math.ceil(need / classes))


def batch_of(recipe: dict, full: bool, procs: int = 1) -> int:
    """The rehearsal's per-process batch: the recipe's with ``--full``, else ``small_batch``."""
    return int(recipe["data"].get("batch_size", SMALL_BATCH)) if full else small_batch(recipe, procs)


def overrides(
    recipe: dict, data_root: Path | None, full: bool, accelerator: str = "cpu", devices: int | None = None
) -> list[str]:
    """The key=value overrides that turn a shipped recipe into a 2-step rehearsal on ``accelerator``
    (``devices``: a device count instead of the recipe's, e.g. 1 on a one-GPU machine)."""
    out = [
        f"trainer.accelerator={accelerator}",
        "trainer.max_epochs=1",
        "trainer.max_steps=-1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=2",
        "trainer.check_val_every_n_epoch=1",
        "logger.wandb=false",
        "logger.csv=true",
    ]
    if "val_check_interval" in recipe.get("trainer", {}):
        out.append("trainer.val_check_interval=1.0")
    callbacks = recipe.get("callbacks") or {}
    for name in ("checkpoint", "rankme_checkpoint"):
        spec = callbacks.get(name)
        if isinstance(spec, dict):
            out.append(f"callbacks.{name}.every_n_epochs=1")
            if "every_n_train_steps" in spec:
                out.append(f"callbacks.{name}.every_n_train_steps=null")
    data = recipe["data"]
    if data.get("name") in ("image_folder", "file_list") and data_root is not None:
        out.append(f"data.root={data_root}")
    if "num_workers" in data:
        out.append("data.num_workers=1")
    if not full:
        procs = devices if devices is not None else processes(recipe, None, max_devices=1 << 30)  # recipe's count
        out.append(f"data.batch_size={small_batch(recipe, procs)}")
    if devices is not None:
        out.append(f"trainer.devices={devices}")
        if devices == 1 and recipe.get("trainer", {}).get("strategy") == "ddp":
            out.append("trainer.strategy=auto")
    return out


def small_batch(recipe: dict, procs: int = 1) -> int:
    """The per-process batch of a small rehearsal: ``SMALL_BATCH``, or more where the recipe's loss
    needs a larger global batch (a ``top_k*`` count of hard negatives: more than k images over the
    ``procs`` processes), rounded up to a multiple of ``data.classes_per_batch`` (a label-balanced
    batch holds whole classes)."""
    need = max([SMALL_BATCH, *(math.ceil((k + 1) / procs) for k in _top_ks(recipe.get("head") or {}))])
    per = recipe["data"].get("classes_per_batch")
    return need if not per else per * max(1, math.ceil(need / per))


def _top_ks(node: object) -> list[int]:
    """Every integer under a ``top_k*`` key of a recipe section (nested mappings included)."""
    if not isinstance(node, dict):
        return []
    found = [v for k, v in node.items() if str(k).startswith("top_k") and isinstance(v, int)]
    return found + [k for v in node.values() for k in _top_ks(v)]


def logged_metrics(run_dir: Path) -> dict[str, float]:
    """The last finite value of every ``val/`` column in the run's CSV logs (all parts)."""
    values: dict[str, float] = {}
    for path in sorted(run_dir.glob("csv/**/metrics.csv")):
        with path.open() as f:
            for line in csv.DictReader(f):
                for key, value in line.items():
                    if key and key.startswith("val/") and value not in ("", None):
                        values[key] = float(value)
    return values


def run_fit(args: list[str], log: Path) -> tuple[int, float, float]:
    """``ssl-toolkit fit ARGS`` with its output in ``log``: (exit status, seconds, peak RSS MiB)."""
    cli = Path(sys.executable).with_name("ssl-toolkit")
    command = [sys.executable, "-c", _MEASURE, str(cli), "fit", *args]
    start = time.monotonic()
    with log.open("w") as out:
        rc = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=_env()).returncode
    seconds = time.monotonic() - start
    rss = 0.0
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("maxrss_kib "):
            rss = int(line.split()[1]) / 1024
    return rc, seconds, rss


def _env() -> dict[str, str]:
    # The toolkit of this checkout, whatever copy the virtual environment has installed (an editable
    # install of another worktree would otherwise run that worktree's code).
    path = os.pathsep.join(x for x in (str(REPO), os.environ.get("PYTHONPATH", "")) if x)
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONPATH": path}
    env.pop("SSL_TOOLKIT_RUN_DIR", None)
    return env


def last_line(log: Path) -> str:
    """The last error-looking line of a log (what the table shows for a red row)."""
    lines = [x for x in log.read_text(errors="replace").splitlines() if x.strip() and not x.startswith("maxrss_kib")]
    errors = [x for x in lines if "error" in x.lower() or "Error" in x]
    return (errors or lines or ["(no output)"])[-1].strip()[:200]


def rehearse(
    path: Path,
    out: Path,
    data_root: Path | None,
    full: bool,
    accelerator: str = "cpu",
    devices: int | None = None,
    max_devices: int = 2,
) -> Row:
    """Fit, evaluate, save, resume and evaluate one recipe; the result as a table row."""
    recipe = yaml.safe_load(path.read_text())
    trainer = dict(recipe.get("trainer") or {})
    asked = int(trainer.get("devices", 1) or 1)
    procs = processes(recipe, devices, max_devices)
    if procs != asked:
        devices = procs
    name = f"{path.parent.name}/{path.stem}"
    batch = batch_of(recipe, full, procs)
    size = int((recipe.get("augment") or {}).get("size", recipe["data"].get("image_size", 0)))
    row = Row(name, str(trainer.get("precision", "32-true")), procs, asked, batch, size)
    run_dir = out / "runs" / path.parent.name / path.stem
    if run_dir.exists():
        row.problem = f"{run_dir} exists (pick another --out)"
        return row
    common = [str(path), *overrides(recipe, data_root, full, accelerator, devices), f"out_dir={run_dir}"]
    rc, seconds, rss = run_fit(common, out / f"{path.parent.name}_{path.stem}.fit.log")
    row.seconds, row.peak_rss_mb = seconds, rss
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    metrics = logged_metrics(run_dir)
    row.trained = rc == 0 and _steps(ckpt) == 2
    row.saved = ckpt.is_file()
    row.evaluated = bool(metrics) and all(math.isfinite(v) for v in metrics.values())
    row.metrics = sorted(metrics)
    if rc != 0:
        row.problem = "fit: " + last_line(out / f"{path.parent.name}_{path.stem}.fit.log")
        return row
    row.checkpoint_mb = ckpt.stat().st_size / 2**20 if row.saved else 0.0
    log = out / f"{path.parent.name}_{path.stem}.resume.log"
    rc, seconds, rss = run_fit([*common, "resume=auto", "trainer.max_epochs=2"], log)
    row.seconds += seconds
    row.peak_rss_mb = max(row.peak_rss_mb, rss)
    after = logged_metrics(run_dir)
    row.resumed = rc == 0 and _steps(ckpt) == 4 and (run_dir / "resume-1.json").is_file() and bool(after)
    if rc != 0:
        row.problem = "resume: " + last_line(log)
    return row


def _steps(ckpt: Path) -> int | None:
    """The checkpoint's ``global_step`` (None when it cannot be read)."""
    if not ckpt.is_file():
        return None
    import torch

    try:
        return int(torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"])
    except Exception:  # a broken checkpoint is a red row, not a crash of the rehearsal
        return None


def table(rows: list[Row], full: bool) -> str:
    """The rows as a Markdown table."""
    ok = {True: "yes", False: "**no**"}
    lines = [
        "| recipe | precision | processes | batch/process | px | trains | evaluates | saves | resumes "
        "| wall s (both runs) | peak RSS MiB | ckpt MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.recipe} | {r.precision} | {_procs(r)} | {r.batch} | {r.image_size} | {ok[r.trained]} "
            f"| {ok[r.evaluated]} | {ok[r.saved]} | {ok[r.resumed]} | {r.seconds:.0f} | {r.peak_rss_mb:.0f} "
            f"| {r.checkpoint_mb:.0f} |"
        )
    red = [r for r in rows if not r.green]
    lines.append("")
    lines.append(f"{len(rows) - len(red)} of {len(rows)} green ({'full size' if full else 'small batch'}).")
    lines += [f"- {r.recipe}: {r.problem}" for r in red]
    return "\n".join(lines)


def _procs(row: Row) -> str:
    """The processes column: ``2``, or ``2 of 8`` when the recipe asks for more."""
    return str(row.devices) if row.devices == row.recipe_devices else f"{row.devices} of {row.recipe_devices}"


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(
        prog="tools/rehearse.py",
        description=__doc__.split("\n\n")[0],
        epilog="Default: every recipe under recipes/ (fashion_mnist, imagenet100, own_images, tiny).",
    )
    parser.add_argument("recipes", nargs="*", help="recipe files (default: recipes/*/*.yaml)")
    parser.add_argument("--full", action="store_true", help="the recipe's per-process batch and a 100-class folder")
    parser.add_argument("--out", default="rehearsal", help="new folder for runs, logs and the table")
    parser.add_argument("--data", default=None, help="image folder to generate or reuse (default: OUT/data)")
    parser.add_argument("--table", default=None, help="also write the Markdown table to this file")
    parser.add_argument("--accelerator", default="cpu", help="trainer.accelerator (default cpu; gpu on a GPU)")
    parser.add_argument("--devices", type=int, default=None, help="trainer.devices instead of the recipe's")
    parser.add_argument("--max-devices", type=int, default=2, help="at most this many processes per recipe (default 2)")
    parser.add_argument("--jobs", type=int, default=1, help="recipes rehearsed at once (default 1: timings alone)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.exit(2, f"tools/rehearse.py: error: --jobs {args.jobs}: must be at least 1\n")
    if args.devices is not None and args.devices < 1:
        parser.exit(2, f"tools/rehearse.py: error: --devices {args.devices}: must be at least 1\n")
    if args.max_devices < 1:
        parser.exit(2, f"tools/rehearse.py: error: --max-devices {args.max_devices}: must be at least 1\n")
    paths = [Path(p) for p in args.recipes] or sorted(REPO.glob("recipes/*/*.yaml"))
    for p in paths:
        if not p.is_file():
            parser.exit(2, f"tools/rehearse.py: error: {p}: no such recipe file\n")
    out = Path(args.out).expanduser()
    if out.exists() and any((out / "runs").glob("*")):
        parser.exit(2, f"tools/rehearse.py: error: --out {out} already holds runs; pass a new folder\n")
    out.mkdir(parents=True, exist_ok=True)
    data = Path(args.data).expanduser() if args.data else out / "data"
    print(f"data: {data} (generating JPEGs if needed)", flush=True)
    classes = 100 if args.full else SMALL_CLASSES
    recipes = [yaml.safe_load(p.read_text()) for p in paths]
    procs = [processes(r, args.devices, args.max_devices) for r in recipes]
    make_folder(data, classes, train_per_class(recipes, classes, args.full, procs), 2)

    def one(p: Path) -> Row:
        row = rehearse(
            p.resolve(), out.resolve(), data.resolve(), args.full, args.accelerator, args.devices, args.max_devices
        )
        state = "green" if row.green else f"RED ({row.problem})"
        print(f"{row.recipe}: {state}, {row.seconds:.0f} s, {row.peak_rss_mb:.0f} MiB", flush=True)
        with (out / "rehearsal.jsonl").open("a") as f:
            f.write(json.dumps({**asdict(row), "green": row.green}) + "\n")
        return row

    with ThreadPoolExecutor(args.jobs) as pool:  # each job is a subprocess: threads only wait
        rows = list(pool.map(one, paths))
    text = table(rows, args.full)
    print("\n" + text)
    if args.table:
        Path(args.table).write_text(text + "\n")
    return 0 if all(r.green for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
