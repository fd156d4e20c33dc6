"""Find host syncs in the training step: run it under torch.cuda.set_sync_debug_mode("error").

    python tools/sync_check.py RECIPE [RECIPE ...] [--steps 3] [-- key=value ...]

For each recipe (with the overrides after ``--``, applied to every recipe), the training step a
plain loop runs (``docs/adding_a_head.md``: augmentation on the device, ``step_loss``, backward,
``after_backward``, optimizer step, ``after_optimizer_step``) runs once to warm up, then ``--steps``
times with CUDA's sync debug mode at "error": the first operation that waits for the GPU (a
``.item()``, a boolean-mask index, a blocking copy) raises, and this script prints where, in one
line per recipe (exit status 1). The batches are copied to the device before the checked steps.
On a machine without CUDA the same steps run with no check (a dry run of the script itself).
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

from ssl_toolkit.run.arguments import OneLineParser


def check(path: str, overrides: list[str], steps: int) -> str | None:
    """Run ``steps`` checked training steps of the recipe; None when no sync happened, else where."""
    import torch

    from ssl_toolkit.recipe.build import build_parts, load_recipe

    recipe = load_recipe(path, overrides)
    parts = build_parts(recipe)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    module = parts.module.to(device).train()
    batches = []
    for batch in parts.datamodule.train_dataloader():
        batches.append(tuple(t.to(device) for t in batch))
        if len(batches) == steps + 1:
            break
    optimizer = module.build_optimizer(global_batch_size=parts.datamodule.batch_size)
    dtype = torch.bfloat16 if "bf16" in str(recipe.get("trainer", {}).get("precision", "")) else None
    cuda = device.type == "cuda"
    for step, (images, labels, index, *whole) in enumerate(batches):  # whole: image sizes (file sources)
        if cuda and step == 1:
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
        try:
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                views = module.augment(images, sizes=whole[0]) if whole else module.augment(images)
                out, _ = module.step_loss(views, labels, index, step, epoch=0)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            module.after_backward(step)
            optimizer.step()
            module.after_optimizer_step(step, len(batches))
        except RuntimeError as error:
            if not cuda or "synchronizing" not in str(error):
                raise
            frames = [f for f in traceback.extract_tb(error.__traceback__) if "ssl_toolkit" in f.filename]
            where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "outside ssl_toolkit"
            return f"step {step}: {str(error).splitlines()[0]} at {where}"
        finally:
            if cuda:
                torch.cuda.set_sync_debug_mode("default")
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ours, overrides = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = OneLineParser(prog="tools/sync_check.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("recipes", nargs="+", help="recipe files")
    parser.add_argument("--steps", type=int, default=3, help="checked steps after one warm-up step (default 3)")
    args = parser.parse_args(ours)
    if args.steps < 1:
        parser.exit(2, f"tools/sync_check.py: error: --steps {args.steps}: must be at least 1\n")
    for p in args.recipes:
        if not Path(p).is_file():
            parser.exit(2, f"tools/sync_check.py: error: {p}: no such recipe file\n")
    import torch

    from ssl_toolkit.errors import UserError

    found = 0
    for p in args.recipes:
        try:
            where = check(p, overrides, args.steps)
        except UserError as error:
            parser.exit(2, f"tools/sync_check.py: error: {p}: {error}\n")
        mode = "no host sync" if torch.cuda.is_available() else "ran (no CUDA: not checked)"
        print(f"{p}: {mode if where is None else 'HOST SYNC ' + where}", flush=True)
        found += where is not None
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
