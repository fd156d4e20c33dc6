"""The Python API: load a trained backbone or a whole run from a checkpoint, and start a run.

The top of the package, above ``run/`` (it uses the same loaders and the same ``fit`` as the
``ssl-toolkit`` command line); nothing in the package imports it except ``ssl_toolkit/__init__.py``,
which exports these names lazily. Bad input raises ``UserError`` (``ssl_toolkit.UserError``) with a
one-line message naming the file or key, as the command line prints it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ssl_toolkit.augment import AUGMENTS
from ssl_toolkit.errors import CheckpointError, RecipeError
from ssl_toolkit.recipe.build import backbone_kwargs, build_augment, build_module
from ssl_toolkit.recipe.checkpoint import (
    LoadedCheckpoint,
    checkpoint_recipe,
    load_checkpoint,
    read_checkpoint,
    rebuild_backbone,
)
from ssl_toolkit.run.fit import FitResult, fit_file


@dataclass(frozen=True)
class Backbone:
    """A trained backbone from a checkpoint, ready to embed images (see ``load_backbone``).

    Attributes:
        model: the timm model (``timm.create_model(name, num_classes=0, **timm_kwargs)``, plus the
            small-image stem if the recipe had it) with the trained weights, in eval mode:
            float images (B, 3, S, S), normalized as ``preprocess`` does -> features (B, F).
        feature_dim: F, the width of the features ``model`` returns.
        name: the timm model name.
        image_size: S, the side in px of the training views (``augment.size``).
        preprocess: uint8 images (B, 1 or 3, H, W) -> float (B, 3, S, S): resized to S x S and
            normalized with the recipe's mean/std, on the images' device (what the k-NN and probe
            evaluations feed the backbone).
        timm_kwargs: the keywords besides the name given to ``timm.create_model`` (e.g. the
            ``img_size`` of a ViT trained at 32 px); empty for most CNNs.
        small_image_stem: the ResNet stem was replaced by one 3x3 stride-1 conv (not a plain timm model).
        step: optimizer steps at which the checkpoint was saved.
        recipe: the resolved recipe the run was trained with.

    Example:
        >>> import torch
        >>> from ssl_toolkit import Backbone, fit, load_backbone
        >>> backbone = load_backbone(fit("recipes/tiny/simclr.yaml").checkpoint)
        evaluation 1 at step 2 (epoch 0): ... val/rankme ...
        >>> isinstance(backbone, Backbone), backbone.name, backbone.image_size, backbone.feature_dim
        (True, 'test_resnet', 32, 96)
        >>> images = torch.randint(0, 256, (4, 3, 48, 40), dtype=torch.uint8)  # any size: resized to 32 px
        >>> backbone.embed(images).shape
        torch.Size([4, 96])
    """

    model: nn.Module = field(repr=False)
    feature_dim: int
    name: str
    image_size: int
    preprocess: Callable[[Tensor], Tensor] = field(repr=False)
    timm_kwargs: dict[str, Any] = field(default_factory=dict)
    small_image_stem: bool = False
    step: int = -1
    recipe: dict[str, Any] = field(default_factory=dict, repr=False)

    def embed(self, images: Tensor) -> Tensor:
        """Features (B, F) of uint8 images (B, 1 or 3, H, W): ``model(preprocess(images))`` on the
        model's device, without gradient (see the class example)."""
        device = next(self.model.parameters()).device
        with torch.no_grad():
            return self.model(self.preprocess(images.to(device)))


def load_backbone(checkpoint: str | Path, device: str | torch.device = "cpu") -> Backbone:
    """The trained backbone of a checkpoint written by ``ssl-toolkit fit`` (or ``fit``), as a timm
    model with its weights, in eval mode; neither the data nor the head is needed.

    The checkpoint is read with ``torch.load(weights_only=True)`` (no pickled code runs); the
    model is rebuilt from the recipe stored in the checkpoint, ``pretrained=False`` (nothing is
    downloaded), and the ``backbone.*`` weights are loaded strictly: the same weights that
    ``ssl-toolkit export`` writes (a head's EMA teacher is not it; ``load_run`` gives the whole module).
    The model's ``pretrained_cfg`` says how it was trained: input size, mean and std (timm's
    defaults for the architecture would be wrong), so timm's
    ``create_transform(**resolve_model_data_config(model))`` prepares PIL images as in training
    (resize and center crop; ``preprocess``, for uint8 tensors, resizes without cropping).

    Args:
        checkpoint: a ``.ckpt`` file, wherever it lies now.
        device: where ``model`` (and ``preprocess``) go, e.g. ``"cuda"``.

    Returns:
        ``Backbone``: ``model``, ``feature_dim``, ``preprocess``, ``embed(images)``, ...

    Raises:
        UserError: one line naming the file: it is missing or a folder (``CheckpointError``), not a
            checkpoint, has no backbone weights or weights that do not fit its recipe; or its
            recipe's backbone does not build here (``RecipeError``).

    Example:
        >>> import torch
        >>> from ssl_toolkit import fit, load_backbone
        >>> run = fit("recipes/tiny/simclr.yaml")
        evaluation 1 at step 2 (epoch 0): ... val/rankme ...
        >>> backbone = load_backbone(run.checkpoint)
        >>> backbone.name, backbone.feature_dim, backbone.model.training
        ('test_resnet', 96, False)
        >>> images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
        >>> backbone.model(backbone.preprocess(images)).shape
        torch.Size([4, 96])
    """
    ckpt = read_checkpoint(checkpoint)
    recipe = checkpoint_recipe(ckpt, checkpoint)
    model, facts = rebuild_backbone(ckpt, recipe, checkpoint)
    model = model.to(device)
    augment = build_augment(recipe).to(device).eval()
    size = int(backbone_kwargs(recipe)["input_sizes"]["augment.size"])
    model.pretrained_cfg = model.default_cfg = {**model.pretrained_cfg, **training_data_config(recipe, size)}
    return Backbone(
        model=model,
        feature_dim=facts.feature_dim,
        name=str(recipe["backbone"]["name"]),
        image_size=size,
        preprocess=augment.eval_view,
        timm_kwargs=dict(facts.timm_kwargs),
        small_image_stem=bool(recipe["backbone"].get("small_image_stem", False)),
        step=int(ckpt.get("global_step", -1)),
        recipe=recipe,
    )


def training_data_config(recipe: dict[str, Any], size: int) -> dict[str, Any]:
    """timm's data-config keys (``timm.data.resolve_model_data_config``) for the evaluation view of
    ``recipe``: ``size`` px square, bilinear, no crop margin, the augmentation's mean and std."""
    augment = recipe["augment"]
    defaults = {k: p.default for k, p in inspect.signature(AUGMENTS[augment["name"]]).parameters.items()}
    mean, std = augment.get("mean", defaults.get("mean")), augment.get("std", defaults.get("std"))
    config: dict[str, Any] = {"input_size": (3, size, size), "interpolation": "bilinear", "crop_pct": 1.0,
                              "crop_mode": "center"}  # fmt: skip
    if mean is not None and std is not None:
        config.update(mean=tuple(float(v) for v in mean), std=tuple(float(v) for v in std))
    return config


def load_run(
    checkpoint: str | Path,
    data_root: str | Path | None = None,
    *,
    with_data: bool = False,
    device: str | torch.device = "cpu",
) -> LoadedCheckpoint:
    """The whole trained module of a checkpoint (backbone, head with its projector, queues or
    prototypes, EMA teacher), and the run's data when wanted.

    Without data only the checkpoint is read (the images may be gone). With data the recipe's
    DataModule is built and set up (at ``data_root`` if given), as ``ssl-toolkit knn``/``probe`` do.

    Args:
        checkpoint: a ``.ckpt`` file.
        data_root: where the training data lies now (``data.root`` replaced); implies ``with_data``.
        with_data: build the DataModule at the recipe's own ``data.root``.
        device: where the module goes.

    Returns:
        ``LoadedCheckpoint`` with ``module`` (the ``SSLModule``, eval mode; ``module.embed(uint8
        images)`` -> (B, F), ``module.backbone``, ``module.head``), ``datamodule`` (None without
        data), ``recipe``, ``epoch`` and ``step``.

    Raises:
        UserError: one line naming the file or key: the checkpoint is missing or unreadable or does
            not fit its recipe (``CheckpointError``); the data is not where the recipe or
            ``data_root`` says (``RecipeError`` naming ``data.root``); without data, a head that
            needs the data's number of classes (Hydra).

    Example:
        >>> import torch
        >>> from ssl_toolkit import fit, load_run
        >>> run = load_run(fit("recipes/tiny/simclr.yaml").checkpoint)
        evaluation 1 at step 2 (epoch 0): ... val/rankme ...
        >>> type(run.module.head).__name__, run.datamodule, run.step
        ('SimCLRHead', None, 2)
        >>> run.module.embed(torch.zeros(2, 3, 32, 32, dtype=torch.uint8)).shape
        torch.Size([2, 96])
    """
    if data_root is not None or with_data:
        overrides = None if data_root is None else {"root": str(data_root)}
        loaded = load_checkpoint(checkpoint, overrides)
        loaded.module.to(device)
        return loaded
    ckpt = read_checkpoint(checkpoint)
    recipe = checkpoint_recipe(ckpt, checkpoint)
    # pretrained=False: the checkpoint holds the weights, so nothing is downloaded
    module = build_module({**recipe, "backbone": {**recipe["backbone"], "pretrained": False}})
    try:
        module.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:300]
        raise CheckpointError(f"checkpoint: {checkpoint} does not match its recipe ({detail})") from None
    module.to(device).eval()
    return LoadedCheckpoint(module, None, recipe, int(ckpt.get("epoch", -1)), int(ckpt.get("global_step", -1)))


def fit(recipe: str | Path, overrides: Sequence[str] = (), *, verbose: bool = False) -> FitResult:
    """Train from a recipe file: exactly what ``ssl-toolkit fit RECIPE [key=value ...]`` runs (the
    command line calls the same function), so the same recipe and overrides train the same run.

    The run folder is ``out_dir`` (or ``out_dir_1``, ... if it holds files: nothing is overwritten),
    with the resolved recipe, ``run.json`` (which records the equivalent ``ssl-toolkit fit ...``
    command), logs and checkpoints. ``resume=auto`` continues the newest run of ``out_dir``.
    While training, SIGTERM / SIGUSR1 / Ctrl-C (a notebook's interrupt) save ``last.ckpt`` and
    raise ``Preempted``; the handlers in place before are back when ``fit`` returns.

    Args:
        recipe: a recipe YAML (see ``ssl-toolkit recipes``), relative to the working directory.
        overrides: dot-list overrides, as on the command line: ``["trainer.max_epochs=5",
            "data.root=/data/photos", "callbacks.knn=null"]``.
        verbose: show every third-party message (Lightning tips, deprecation warnings).

    Returns:
        ``FitResult``: ``run_dir``, ``checkpoint`` (``last.ckpt``), ``final_loss`` (the last
        ``train/loss``), ``steps``, ``val_metrics`` (the last ``val/`` values), ``best`` (the best
        checkpoint of each monitored metric) and timings.

    Raises:
        UserError: one line naming the file or key, before anything is written: a missing recipe,
            a misspelled or unknown key, a wrong type, missing data (``RecipeError``).
        TrainingStopped: a non-finite loss (names the step and the last good checkpoint).
        Preempted: a stop signal; ``last.ckpt`` was saved and the message names the resume command.

    Example:
        >>> from ssl_toolkit import fit
        >>> result = fit("recipes/tiny/simclr.yaml", ["out_dir=runs/t01", "head.loss.temperature=0.1"])
        evaluation 1 at step 2 (epoch 0): ... val/rankme ...
        >>> result.run_dir, result.checkpoint, result.steps
        (PosixPath('runs/t01'), PosixPath('runs/t01/checkpoints/last.ckpt'), 2)
        >>> sorted(result.val_metrics)
        ['val/rankme', 'val/rankme_proj']
        >>> fit("recipes/tiny/simclr.yaml", ["head.loss.temprature=0.1"])
        Traceback (most recent call last):
        ssl_toolkit.errors.RecipeError: head.loss.temprature: unknown key (known: temperature)
    """
    if isinstance(overrides, (str, bytes)) or not all(isinstance(o, str) for o in overrides):
        raise RecipeError(f"overrides: expected a list of 'key=value' strings, got {overrides!r}")
    path = Path(recipe) if isinstance(recipe, (str, Path)) else None
    if path is None:
        raise RecipeError(f"recipe: expected the path of a recipe YAML, got {type(recipe).__name__}")
    command = ["ssl-toolkit", "fit", str(path), *overrides]  # run.json and the resume hint name it
    return fit_file(path, list(overrides), argv=command, verbose=verbose)
