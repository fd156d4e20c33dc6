"""``ssl-toolkit`` command line: ``fit`` a recipe, list ``recipes``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ssl-toolkit", description="Self-supervised pretraining with timm backbones.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_fit = sub.add_parser(
        "fit",
        help="train from a recipe",
        description="Train from a recipe YAML; "
        "override any key with key=value (e.g. data.batch_size=32 trainer.max_steps=3).",
    )
    p_fit.add_argument("recipe", help="path to a recipe YAML (see `ssl-toolkit recipes`)")
    p_fit.add_argument("overrides", nargs="*", metavar="key=value", help="dot-list overrides")
    p_list = sub.add_parser("recipes", help="list the shipped recipes", description="List the shipped recipes.")
    p_list.add_argument("--dir", default=str(RECIPES_DIR), help="recipes folder (default: %(default)s)")
    args = parser.parse_args(argv)

    if args.command == "recipes":
        for path in sorted(Path(args.dir).rglob("*.yaml")):
            print(path.relative_to(args.dir))
        return 0
    return _fit(args.recipe, args.overrides, argv)


def _fit(recipe_path: str, overrides: list[str], argv: list[str] | None) -> int:
    # Heavy imports after argument parsing so `--help` is instant.
    from ssl_toolkit.recipe import RecipeError, load_recipe
    from ssl_toolkit.run import fit

    try:
        recipe = load_recipe(recipe_path, overrides)
        result = fit(recipe, argv=["ssl-toolkit", "fit", recipe_path, *overrides] if argv is None else argv)
    except RecipeError as e:
        print(f"ssl-toolkit: error: {e}", file=sys.stderr)
        return 2
    print(f"\nrun folder:       {result.run_dir}")
    print(f"checkpoint:       {result.checkpoint or '(none written)'}")
    print(f"resolved recipe:  {result.run_dir / 'recipe.yaml'}  (git commit in run.json)")
    print(
        f"logs:             {result.run_dir / 'csv' / 'metrics.csv'}"
        + (f", {result.run_dir / 'wandb'}" if (result.run_dir / "wandb").exists() else "")
    )
    print(f"final train/loss: {result.final_loss:.4f} after {result.steps} steps")
    print(f"wall time:        {result.seconds:.1f} s, training throughput {result.images_per_sec:.1f} images/s")
    return 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
