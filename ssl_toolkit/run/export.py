"""Export a trained backbone as a safetensors file that timm loads as pretrained weights."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ssl_toolkit.errors import CheckpointError
from ssl_toolkit.recipe.build import resolve_environment
from ssl_toolkit.recipe.checkpoint import (
    backbone_weights,
    check_finite,
    checkpoint_recipe,
    read_checkpoint,
    rebuild_backbone,
)
from ssl_toolkit.run_folder import check_writable


@dataclass
class ExportResult:
    """What ``export_backbone`` wrote: the file, the timm model name, and the tensor count."""

    path: Path
    model_name: str
    num_tensors: int
    small_image_stem: bool
    timm_kwargs: dict[str, Any]
    feature_dim: int


def export_backbone(checkpoint: str | Path, out: str | Path, force: bool = False) -> ExportResult:
    """Write the ``backbone.*`` weights of ``checkpoint`` to ``out`` (safetensors, prefix removed).

    The checkpoint is read with ``weights_only=True``. Before anything is written the weights are
    loaded strictly into the recipe's backbone (``build_backbone`` with the same arguments and
    the recipe's view sizes, ``pretrained=False``: nothing is downloaded), so a file that would not
    load is never produced. A standard-stem backbone then loads with
    ``timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=out, num_classes=0),
    **timm_kwargs)`` (``timm_kwargs``: e.g. ``img_size``/``dynamic_img_size`` of a ViT trained at
    32 px, ``model_kwargs``; empty for most CNNs); a ``small_image_stem`` one has a different first
    conv, so it loads into ``build_backbone(name, small_image_stem=True, ...)``
    (``safetensors.torch.load_file`` + ``load_state_dict``). The file's metadata names the model,
    the stem, ``timm_kwargs`` (JSON), the feature width and the source checkpoint.

    Raises:
        CheckpointError: unreadable checkpoint, non-finite or no backbone weights, weights that do
            not fit the recipe's backbone, or an ``out`` that may not be written (``check_out``).
        RecipeError: the recipe's backbone does not build here (e.g. a model this timm lacks).
    """
    checkpoint, out = Path(checkpoint), Path(out)
    check_out(out, checkpoint, force)
    ckpt = read_checkpoint(checkpoint)
    check_finite(ckpt, checkpoint)
    recipe = resolve_environment(checkpoint_recipe(ckpt, checkpoint), "the checkpoint")
    _, facts = rebuild_backbone(ckpt, recipe, checkpoint)  # refuses weights that would not load
    weights = {k: v.contiguous() for k, v in backbone_weights(ckpt, checkpoint).items()}
    name, small = recipe["backbone"]["name"], bool(recipe["backbone"].get("small_image_stem", False))
    metadata = {"model_name": name, "small_image_stem": str(small), "source": str(checkpoint.resolve()),
                "format": "pt", "step": str(int(ckpt.get("global_step", -1))),
                "timm_kwargs": json.dumps(facts.timm_kwargs), "feature_dim": str(facts.feature_dim)}  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{secrets.token_hex(8)}.tmp")  # never an existing file's name
    try:
        save_file({k: v.to(torch.float32) if v.is_floating_point() else v for k, v in weights.items()}, tmp, metadata)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)  # a failed write (disk full) leaves nothing behind
    return ExportResult(path=out, model_name=name, num_tensors=len(weights), small_image_stem=small,
                        timm_kwargs=dict(facts.timm_kwargs), feature_dim=facts.feature_dim)  # fmt: skip


def is_safetensors(path: Path) -> bool:
    """Whether ``path`` is a safetensors file (an earlier export), read from its header."""
    try:
        with safe_open(str(path), framework="pt"):
            return True
    except Exception:  # safetensors raises its own error types for any other file
        return False


def check_out(out: Path, checkpoint: Path, force: bool) -> None:
    """``out`` may be written: not a folder, not the checkpoint itself, not a ``.ckpt`` file, and
    when it exists (with ``force``) an earlier export; its folder is writable. ``force`` only ever
    replaces an earlier export: a training checkpoint or any other file is never overwritten.

    Raises:
        CheckpointError: naming ``--out`` and what is in the way.
    """
    if out.is_dir():
        example = out / f"{checkpoint.stem}.safetensors"
        raise CheckpointError(f"--out: {out} is a folder; give a file path, e.g. {example}")
    if out.suffix.lower() == ".ckpt" or (out.exists() and checkpoint.exists() and out.samefile(checkpoint)):
        raise CheckpointError(
            f"--out: {out} is a checkpoint path; export writes a .safetensors file, never over a checkpoint"
        )
    if out.exists() and not force:
        raise CheckpointError(f"--out: {out} exists; choose another path or pass --force")
    if out.exists() and not is_safetensors(out):
        raise CheckpointError(
            f"--out: {out} is not an earlier export (not a safetensors file); --force replaces only those"
        )
    check_writable(out.parent, "--out")
