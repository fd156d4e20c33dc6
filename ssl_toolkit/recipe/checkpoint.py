"""Rebuild a trained model from a checkpoint file alone, for the offline tools (probe, knn, select).

Every checkpoint carries ``checkpoint["recipe"]`` (the resolved recipe, plain types) next to its
``state_dict``; older ones fall back to the ``recipe.yaml`` of the run folder above ``checkpoints/``.
Files are always read with ``torch.load(weights_only=True)``: loading never runs pickled code.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ssl_toolkit.backbone import BackboneFacts, build_backbone
from ssl_toolkit.data import DATAMODULES
from ssl_toolkit.data.base import ImageDataModule
from ssl_toolkit.errors import CheckpointError, RecipeError
from ssl_toolkit.module import SSLModule
from ssl_toolkit.recipe.build import (
    backbone_kwargs,
    build_parts,
    check_call,
    expand_paths,
    load_recipe,
    resolve_environment,
)

BACKBONE_PREFIX = "backbone."


@dataclass
class LoadedCheckpoint:
    """A trained model rebuilt from its checkpoint.

    Attributes:
        module: the SSLModule with the checkpoint's weights, on the CPU, in eval mode.
        datamodule: the recipe's DataModule (after ``data_overrides``), already set up.
        recipe: the resolved recipe the module was built from (``data_overrides`` applied).
        epoch: training epoch at which the checkpoint was saved.
        step: optimizer steps (``global_step``) at which the checkpoint was saved.
    """

    module: SSLModule
    datamodule: ImageDataModule
    recipe: dict[str, Any]
    epoch: int
    step: int


def read_checkpoint(path: str | Path, mmap: bool = False) -> dict[str, Any]:
    """Read a checkpoint file as a dict with ``weights_only=True`` (never unpickles code).

    Args:
        path: a ``.ckpt`` file written by ``ssl-toolkit fit``.
        mmap: map tensors from the file instead of reading them (cheap metadata peeks).

    Raises:
        CheckpointError: the file is missing, unreadable, or not a Lightning checkpoint.
    """
    path = Path(path)
    check_checkpoint_path(path)
    if path.suffix == ".safetensors":  # an exported backbone given where a checkpoint belongs
        raise CheckpointError(
            f"checkpoint: {path} is a safetensors file (an exported backbone: timm.create_model loads it), "
            "not a checkpoint written by ssl-toolkit fit"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # pickle, zip and weights_only errors alike: report, don't trace
        if mmap:  # only zip-format files map; let the plain read decide about the others
            return read_checkpoint(path, mmap=False)
        reason = unreadable_reason(path, e)
        raise CheckpointError(f"checkpoint: {path} {_sentence(reason)}", reason=reason) from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise CheckpointError(f"checkpoint: {path} has no state_dict; not a checkpoint written by ssl-toolkit fit")
    return ckpt


def unreadable_reason(path: Path, error: Exception) -> str:
    """Why ``torch.load(path, weights_only=True)`` raised ``error``: ``empty file``, ``truncated
    (...)``, ``not loadable (holds objects that torch.load(weights_only=True) refuses: NAME)`` (pickled
    code or classes; never unpickled), ``not loadable (corrupt zip archive)`` or ``not a checkpoint
    (not a PyTorch file)``."""
    if path.stat().st_size == 0:
        return "empty file"
    with path.open("rb") as f:
        head = f.read(4)
    zipped = head == b"PK\x03\x04"  # torch.save's zip format
    if not zipped and not head.startswith(b"\x80"):  # neither a zip nor a (legacy) pickle stream
        return "not a checkpoint (not a PyTorch file)"
    refused = re.search(r"(?:Unsupported global: |unsupported )GLOBAL ([\w.]+)", str(error))
    if refused or "Weights only load failed" in str(error):
        what = refused.group(1) if refused else "an object it does not allow"
        return f"not loadable (holds objects that torch.load(weights_only=True) refuses: {what})"
    if zipped and not zipfile.is_zipfile(path):
        return "truncated (the zip archive has no end; a write cut short?)"
    return "not loadable (corrupt zip archive)" if zipped else "not a checkpoint (not a PyTorch file)"


def _sentence(reason: str) -> str:
    """A short reason of ``unreadable_reason`` as the rest of a sentence about the file."""
    if "holds objects" in reason:  # the README's words: "holds objects that ... refuses (NAME)"
        return reason.removeprefix("not loadable (").replace(" refuses: ", " refuses (")
    if reason.startswith("not a checkpoint"):
        return "is not a PyTorch checkpoint file"
    return f"is {'an ' if reason == 'empty file' else ''}{reason}"


# The sections a checkpoint's recipe needs to rebuild the model and its data.
NEEDED_SECTIONS = ("backbone", "head", "augment", "data", "optimizer")


def check_finite(ckpt: dict[str, Any], path: str | Path) -> None:
    """Every floating-point weight of the checkpoint is finite.

    Raises:
        CheckpointError: naming the file, how many tensors hold NaN/Inf and the first of them.
    """
    bad = [k for k, v in ckpt["state_dict"].items()
           if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]  # fmt: skip
    if bad:
        raise CheckpointError(
            f"checkpoint: {path} has non-finite weights (NaN/Inf in {len(bad)} tensor(s), e.g. {bad[0]}); "
            "use an earlier checkpoint of the run"
        )


def checkpoint_recipe(ckpt: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """The recipe a checkpoint was trained with: its own copy, else the run folder's ``recipe.yaml``.

    Raises:
        CheckpointError: there is neither, or the recipe lacks a section the model needs.
    """
    path = Path(path)
    if isinstance(ckpt.get("recipe"), dict):
        missing = [k for k in NEEDED_SECTIONS if not isinstance(ckpt["recipe"].get(k), dict)]
        if missing:
            raise CheckpointError(
                f"checkpoint: {path} carries an incomplete recipe (no {', '.join(missing)} section); "
                "it was not written by ssl-toolkit fit, or was edited"
            )
        return ckpt["recipe"]
    fallback = path.parent.parent / "recipe.yaml"
    if path.parent.name == "checkpoints" and fallback.is_file():
        return load_recipe(fallback)
    raise CheckpointError(f"checkpoint: {path} carries no recipe and there is no {fallback}")


def apply_data_overrides(recipe: dict[str, Any], data_overrides: dict[str, Any] | None) -> dict[str, Any]:
    """A copy of ``recipe`` with ``data_overrides`` merged into its ``data`` section, type-checked.

    Args:
        recipe: a resolved recipe.
        data_overrides: DataModule keywords, e.g. ``{"root": "/new/place", "train_samples": 1000}``.

    Raises:
        RecipeError: an unknown key or a wrong type, named as ``data.<key>``.
    """
    recipe = resolve_environment({**recipe, "data": {**recipe["data"], **(data_overrides or {})}}, "the checkpoint")
    expand_paths(recipe)
    data = recipe["data"]
    name = data.get("name")
    if name not in DATAMODULES:
        raise RecipeError(f"data.name: unknown {name!r} (known: {', '.join(DATAMODULES)})")
    check_call("data", DATAMODULES[name], {k: v for k, v in data.items() if k != "name"})
    return {**recipe, "data": data}


def check_checkpoint_path(path: Path) -> None:
    """One line for a checkpoint path that is not a file: missing, or a folder (with its checkpoints).

    Raises:
        CheckpointError: ``path`` is not a file.
    """
    if path.is_dir():
        inside = sorted(p.name for p in (path / "checkpoints").glob("*.ckpt")) or sorted(
            p.name for p in path.glob("*.ckpt")
        )
        hint = f" (it holds {', '.join(inside[:4])}{', ...' if len(inside) > 4 else ''})" if inside else ""
        raise CheckpointError(f"checkpoint: {path} is a folder, not a checkpoint file{hint}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint: {path} does not exist")


def load_checkpoint(
    path: str | Path,
    data_overrides: dict[str, Any] | None = None,
    reuse: LoadedCheckpoint | None = None,
) -> LoadedCheckpoint:
    """Rebuild module and data from a checkpoint and load its weights strictly.

    The backbone is built with ``pretrained=False`` whatever the recipe says (its weights come from
    the checkpoint), so loading works without network access.

    Args:
        path: a ``.ckpt`` file.
        data_overrides: merged into ``recipe["data"]`` before building (the data moved, fewer
            workers, ``train_samples``/``val_samples`` slices).
        reuse: a checkpoint loaded before; when its recipe equals this one's (e.g. two checkpoints
            of one run) its module and datamodule are reused and only the weights are loaded,
            which skips setting the data up again. ``reuse`` is changed in place.

    Raises:
        CheckpointError: unreadable file, no recipe, or weights that do not fit the recipe.
        RecipeError: a recipe or override that does not build.
    """
    ckpt = read_checkpoint(path)
    recipe = apply_data_overrides(checkpoint_recipe(ckpt, path), data_overrides)
    check_finite(ckpt, path)
    if reuse is not None and reuse.recipe == recipe:
        module, datamodule = reuse.module, reuse.datamodule
    else:  # pretrained=False: the checkpoint holds the weights, so nothing is downloaded
        parts = build_parts({**recipe, "backbone": {**recipe["backbone"], "pretrained": False}})
        module, datamodule = parts.module, parts.datamodule
    try:
        module.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:300]
        raise CheckpointError(f"checkpoint: {path} does not match its recipe ({detail})") from None
    module.eval()
    return LoadedCheckpoint(module, datamodule, recipe, int(ckpt.get("epoch", -1)), int(ckpt.get("global_step", -1)))


def backbone_weights(ckpt: dict[str, Any], path: str | Path) -> dict[str, torch.Tensor]:
    """The ``backbone.*`` entries of a checkpoint's ``state_dict``, prefix removed (the trained
    backbone; a head's EMA teacher is ``teacher.*`` and not included).

    Raises:
        CheckpointError: the checkpoint has no ``backbone.*`` weights.
    """
    n = len(BACKBONE_PREFIX)
    weights = {k[n:]: v for k, v in ckpt["state_dict"].items() if k.startswith(BACKBONE_PREFIX)}
    if not weights:
        raise CheckpointError(f"checkpoint: {path} has no backbone.* weights")
    return weights


def rebuild_backbone(ckpt: dict[str, Any], recipe: dict[str, Any], path: str | Path) -> tuple[nn.Module, BackboneFacts]:
    """The recipe's backbone (``build_backbone`` with the recipe's keys and view sizes,
    ``pretrained=False``: nothing is downloaded) with the checkpoint's ``backbone.*`` weights loaded
    strictly, in eval mode, and its ``BackboneFacts``. Needs neither the data nor the head.

    Args:
        ckpt: a checkpoint dict from ``read_checkpoint``.
        recipe: its recipe (``checkpoint_recipe``).
        path: the checkpoint file, named in errors.

    Raises:
        CheckpointError: no backbone weights, or weights that do not fit the recipe's backbone.
        RecipeError: the recipe's backbone does not build (e.g. a model this timm does not have).
    """
    weights = backbone_weights(ckpt, path)
    spec = backbone_kwargs(recipe, pretrained=False)
    try:
        model, facts = build_backbone(**spec)
    except ValueError as e:  # build_backbone's "<keyword>: ..." line, named as the recipe key
        raise RecipeError(f"backbone.{str(e).splitlines()[0]}") from None
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:300]
        raise CheckpointError(f"checkpoint: {path} backbone does not fit {spec['name']!r} ({detail})") from None
    return model.eval(), facts
