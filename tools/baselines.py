"""Reference rows for the results table: k-NN top-1 and RankMe of raw pixels and of a random-init backbone.

    .venv/bin/python tools/baselines.py recipes/fashion_mnist/simclr.yaml

Same protocol as the ``KNNProbe`` / ``RankMe`` callbacks at the end of a run: cosine k-NN (k=200,
T=0.07) with the whole labelled train split as the bank and the held-out split as queries; RankMe
on a random subset of up to 25,600 train images (raw pixels: the flattened, normalized images).
"""

from __future__ import annotations

import sys

import torch

from ssl_toolkit.data.subset import fixed_subset
from ssl_toolkit.embedding import embed_split
from ssl_toolkit.errors import UserError
from ssl_toolkit.metrics import knn_classify, rankme
from ssl_toolkit.recipe.build import build_parts, load_recipe
from ssl_toolkit.run.arguments import OneLineParser


def scores(
    train_feats: torch.Tensor, train_labels: torch.Tensor, val_feats: torch.Tensor, val_labels: torch.Tensor
) -> tuple[float, float]:
    subset = fixed_subset(train_feats.shape[0], 25600, seed=0)
    top1 = float((knn_classify(train_feats, train_labels, val_feats) == val_labels).float().mean())
    return top1, rankme(train_feats[subset])


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipe", help="a recipe YAML (its data and backbone are used)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dot-list overrides, e.g. data.root=...")
    args = parser.parse_args(argv)
    try:
        recipe = load_recipe(args.recipe, ["data.num_workers=0", *args.overrides])
    except UserError as e:
        print(f"baselines.py: error: {e}", file=sys.stderr)
        return 2
    torch.manual_seed(int(recipe.get("seed", 0)))
    parts = build_parts(recipe)
    dm, module = parts.datamodule, parts.module.eval()
    train, val = embed_split(module, dm.train_eval_dataloader()), embed_split(module, dm.heldout_dataloader())
    top1, rank = scores(train.feats, train.labels, val.feats, val.labels)
    print(f"random-init {recipe['backbone']['name']}: k-NN top-1 {top1:.4f}, RankMe {rank:.1f}")

    def pixels(loader):
        x, y = zip(*[(module.augment.eval_view(images).flatten(1), labels) for images, labels, _ in loader])
        return torch.cat(x), torch.cat(y)

    (tx, ty), (vx, vy) = pixels(dm.train_eval_dataloader()), pixels(dm.heldout_dataloader())
    top1, rank = scores(tx, ty, vx, vy)
    print(f"raw pixels: k-NN top-1 {top1:.4f}, RankMe {rank:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
