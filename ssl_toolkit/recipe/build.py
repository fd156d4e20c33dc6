"""Recipes: YAML + ``key=value`` overrides -> validated plain dict -> objects.

The only module that touches omegaconf. Inside ``backbone``/``head``/``augment``/``data``/
``optimizer``/``scheduler``, ``name`` picks the class from its family's literal dict and every
other key is a constructor keyword of the same spelling; ``trainer`` keys are Lightning ``Trainer``
keywords; ``module`` keys are ``SSLModule`` switches (``channels_last``, ``compile_backbone``).
Every problem is raised as ``RecipeError("<section>.<key>: ...")`` before any training.
"""

from __future__ import annotations

import inspect
import os
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ssl_toolkit.augment import AUGMENTS
from ssl_toolkit.backbone import build_backbone
from ssl_toolkit.callbacks import CALLBACKS
from ssl_toolkit.callbacks.finite_loss import FiniteLoss
from ssl_toolkit.data import DATAMODULES
from ssl_toolkit.data.base import ImageDataModule
from ssl_toolkit.errors import RecipeError
from ssl_toolkit.heads import HEADS
from ssl_toolkit.losses import LOSSES
from ssl_toolkit.module import SSLModule
from ssl_toolkit.optim import OPTIMIZERS, SCHEDULERS
from ssl_toolkit.recipe.loggers import build_loggers
from ssl_toolkit.recipe.monitors import check_monitors
from ssl_toolkit.recipe.typecheck import matches, non_finite, type_name
from ssl_toolkit.sync_batchnorm import SyncBatchNormPlugin

SECTIONS = ("seed", "out_dir", "backbone", "head", "augment", "data", "optimizer", "scheduler",
            "trainer", "callbacks", "logger", "resume", "module")  # fmt: skip
FAMILIES: dict[str, Mapping[str, Callable[..., Any]]] = {
    "head": HEADS, "augment": AUGMENTS, "data": DATAMODULES, "optimizer": OPTIMIZERS,
    "scheduler": SCHEDULERS,
}  # fmt: skip
# Worked out by the builder, never written in a recipe.
DERIVED = {"head": {"in_dim", "num_classes"}, "backbone": {"input_sizes"}}
NESTED = {"loss": LOSSES}  # a constructor keyword whose value is itself {name: ..., ...}
# SSLModule keywords the builder passes (built from their own sections, or build_backbone's facts).
MODULE_PARTS = {"backbone", "head", "augment", "optimizer", "scheduler", "backbone_facts"}
MANAGED_TRAINER_KEYS = {"logger", "callbacks", "default_root_dir", "enable_checkpointing"}
# A monitored metric -> the callback that logs it (a checkpoint monitoring it needs that callback on).
METRIC_SOURCES = {"val/knn_": "knn", "val/linear_": "linear_probe", "val/rankme": "rankme"}
ALWAYS_ON = {"checkpoint"}  # fit, resume and the summary need last.ckpt
_NO_DEFAULT = object()


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Read ``path``, apply dot-list ``overrides`` (``head.loss.temperature=0.1``), validate."""
    path = Path(path)
    if path.is_dir():
        raise RecipeError(f"recipe: {path} is a folder, not a recipe file (its recipes: `ssl-toolkit recipes`)")
    if not path.is_file():
        raise RecipeError(f"recipe: {path} does not exist")
    try:
        cfg = OmegaConf.load(path)
    except Exception as e:  # yaml.YAMLError and friends: report, don't trace
        raise RecipeError(f"recipe: {path} is not valid YAML ({str(e).splitlines()[0]})") from None
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise RecipeError(f"override {item!r}: expected key=value")
    try:
        merged = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
        recipe = OmegaConf.to_container(merged, resolve=True)
    except OmegaConfBaseException as e:
        raise RecipeError(f"recipe: {str(e).splitlines()[0]}") from None
    if not isinstance(recipe, dict):
        raise RecipeError(f"recipe: {path} must be a mapping of sections")
    expand_paths(recipe)
    validate(recipe)
    return recipe  # type: ignore[return-value]


# Recipe values that are paths on this machine: ``~`` is expanded here, once, for every writer and reader.
PATH_KEYS = (("out_dir",), ("resume",), *(("data", k) for k in ("root", "train_list", "val_list", "train_dir",
             "val_dir", "eval_root", "train_shards", "val_shards")))  # fmt: skip


def expand_paths(recipe: dict[str, Any]) -> None:
    """Expand a leading ``~`` of the recipe's path values in place (``out_dir='~/x'`` is ``$HOME/x``
    for the run folder, the checkpoints and the logs alike, never a folder named ``~``)."""
    for keys in PATH_KEYS:
        parent = recipe
        for key in keys[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        value = parent.get(keys[-1]) if isinstance(parent, dict) else None
        if isinstance(value, str) and value.startswith("~"):
            parent[keys[-1]] = os.path.expanduser(value)


def _env_expression(key: str, default: Any = _NO_DEFAULT) -> str:
    """Stands in for omegaconf's ``oc.env`` resolver: the expression itself instead of the value."""
    return "${oc.env:" + key + ("" if default is _NO_DEFAULT else f",{default}") + "}"


def recipe_to_store(
    path: str | Path, overrides: Sequence[str], recipe: dict[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    """The recipe as written to ``recipe.yaml``, ``resume-N.json`` and every checkpoint: ``recipe``
    (``load_recipe(path, overrides)``) with each value taken from the environment (``${oc.env:NAME}``,
    also through another key or inside a string) kept as its expression, never its value (an API
    token in ``logger.run_name`` is not written in clear). Offline tools resolve the expressions
    again when they read a checkpoint (``resolve_environment``).

    Returns:
        the recipe to store and the dotted keys whose values came from the environment.
    """
    from omegaconf.resolvers import oc

    cfg = OmegaConf.merge(OmegaConf.load(Path(path)), OmegaConf.from_dotlist(list(overrides)))
    OmegaConf.register_new_resolver("oc.env", _env_expression, replace=True)
    try:
        marked = OmegaConf.to_container(cfg, resolve=True)
    finally:
        OmegaConf.register_new_resolver("oc.env", oc.env, replace=True)
    keys: list[str] = []

    def merge(value: Any, mark: Any, key: str) -> Any:
        if isinstance(value, dict) and isinstance(mark, dict):
            return {k: merge(v, mark.get(k, v), f"{key}.{k}" if key else str(k)) for k, v in value.items()}
        if isinstance(value, list) and isinstance(mark, list) and len(value) == len(mark):
            return [merge(v, m, f"{key}.{i}") for i, (v, m) in enumerate(zip(value, mark))]
        if isinstance(mark, str) and "${oc.env:" in mark and mark != value:
            keys.append(key)
            return mark
        return value

    return merge(recipe, marked, ""), keys


# The sections that rebuild a model and its data (an offline tool needs no logger, out_dir, ...).
MODEL_SECTIONS = ("backbone", "head", "augment", "data", "optimizer", "scheduler", "module")


def resolve_environment(recipe: dict[str, Any], where: str) -> dict[str, Any]:
    """A stored recipe with the ``${oc.env:NAME}`` expressions of its ``MODEL_SECTIONS`` resolved
    from the current environment (the other sections are left as stored).

    Raises:
        RecipeError: an expression names a variable that is not set (names the key and ``where``).
    """

    def resolve(value: Any, key: str) -> Any:
        if isinstance(value, dict):
            return {k: resolve(v, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(v, f"{key}.{i}") for i, v in enumerate(value)]
        if isinstance(value, str) and "${oc.env:" in value:
            try:
                return OmegaConf.to_container(OmegaConf.create({"v": value}), resolve=True)["v"]
            except OmegaConfBaseException as e:
                raise RecipeError(f"{key}: {where} stores {value} ({str(e).splitlines()[0]})") from None
        return value

    return {k: resolve(v, k) if k in MODEL_SECTIONS else v for k, v in recipe.items()}


def validate(recipe: dict[str, Any]) -> None:
    """Check section names, class names, keys and value types against the constructors."""
    for key in recipe:
        if key not in SECTIONS:
            raise RecipeError(f"{key}: unknown section (known: {', '.join(SECTIONS)})")
    for key in ("backbone", "head", "augment", "data", "optimizer"):
        if key not in recipe:
            raise RecipeError(f"{key}: missing section")
    if not matches(recipe.get("seed", 0), int):
        raise RecipeError(f"seed: expected int, got {recipe['seed']!r}")
    if not 0 <= recipe.get("seed", 0) < 2**32:
        raise RecipeError(f"seed: must be in [0, 2**32), got {recipe['seed']}")
    if not isinstance(recipe.get("out_dir", "runs/run"), str):
        raise RecipeError(f"out_dir: expected a path string, got {recipe['out_dir']!r}")
    if not isinstance(recipe.get("resume", "none"), str) or not recipe.get("resume", "none"):
        raise RecipeError(f"resume: expected auto, none or a checkpoint path, got {recipe['resume']!r}")
    check_call("backbone", build_backbone, _section(recipe, "backbone"))
    for section, family in FAMILIES.items():
        if recipe.get(section) is not None or section != "scheduler":
            check_call(section, _pick(section, family, _section(recipe, section)), _kwargs(recipe[section]))
    trainer = _section(recipe, "trainer", required=False)
    for key in MANAGED_TRAINER_KEYS & trainer.keys():
        raise RecipeError(f"trainer.{key}: set by ssl-toolkit (use the logger/callbacks sections or out_dir)")
    check_call("trainer", pl.Trainer, trainer)
    check_trainer_counts(trainer)
    if str(trainer.get("precision")) in ("64", "64-true", "double"):  # views and heads are float32
        raise RecipeError(
            f"trainer.precision: {trainer['precision']} is not supported (augmentation and heads compute in "
            "float32); use 32-true, 16-mixed or bf16-mixed"
        )
    check_call("module", SSLModule, _section(recipe, "module", required=False), derived=MODULE_PARTS)
    callbacks = enabled_callbacks(recipe)
    for name, kwargs in callbacks.items():
        check_call(f"callbacks.{name}", CALLBACKS[name], kwargs, derived={"dirpath"})
    for name, kwargs in callbacks.items():
        monitor = kwargs.get("monitor")
        needs = next((cb for prefix, cb in METRIC_SOURCES.items() if str(monitor).startswith(prefix)), None)
        if issubclass(CALLBACKS[name], ModelCheckpoint) and needs is not None and needs not in callbacks:
            raise RecipeError(
                f"callbacks.{name}: monitors {monitor} but callbacks.{needs} is off; "
                f"turn this one off too (callbacks.{name}=null)"
            )
    check_call("logger", build_loggers, _section(recipe, "logger", required=False), derived={"run_dir"})
    check_monitors(callbacks, {name: issubclass(CALLBACKS[name], ModelCheckpoint) for name in callbacks})


def check_trainer_counts(trainer: Mapping[str, Any]) -> None:
    """Counts Lightning accepts but that train nothing (``max_steps=0``, ``max_epochs=0``,
    ``limit_train_batches=0``, ``max_time=00:00:00:00``) or divide by zero later (``val_check_interval=0``,
    ``check_val_every_n_epoch=0``).

    Raises:
        RecipeError: naming the key and what to give instead.
    """
    for key in ("max_steps", "max_epochs"):
        value = trainer.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and (value == 0 or value < -1):
            raise RecipeError(f"trainer.{key}: {value} trains nothing; give a positive number, or -1 for no limit")
    max_time = trainer.get("max_time")
    parts = max_time.values() if isinstance(max_time, dict) else str(max_time).split(":") if max_time else ["1"]
    if all(str(v).strip().isdigit() and int(str(v).strip()) == 0 for v in parts):  # "00:00:00:00", {"hours": 0}
        raise RecipeError(f"trainer.max_time: {max_time} trains nothing; give a positive time (DD:HH:MM:SS), or null")
    if trainer.get("limit_train_batches") in (0, 0.0) and trainer.get("limit_train_batches") is not False:
        raise RecipeError("trainer.limit_train_batches: 0 trains nothing; give a positive number or fraction")
    for key in ("val_check_interval", "check_val_every_n_epoch"):
        value = trainer.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0:
            raise RecipeError(f"trainer.{key}: must be positive, got {value}")


def check_call(
    section: str, fn: Callable[..., Any], kwargs: Mapping[str, Any], derived: set[str] | None = None
) -> None:
    """Raise RecipeError unless ``fn(**kwargs)`` fits fn's signature and annotations."""
    target = fn.__init__ if inspect.isclass(fn) else fn
    params = inspect.signature(target).parameters
    try:
        hints = typing.get_type_hints(target)
    except Exception:  # unresolvable forward references in a dependency: fall back to no types
        hints = {}
    skip = (derived or set()) | DERIVED.get(section, set()) | {"self"}
    known = [p for p in params if p not in skip]
    for key, value in kwargs.items():
        if key not in known:
            raise RecipeError(f"{section}.{key}: unknown key (known: {', '.join(known)})")
        if key in NESTED and isinstance(value, dict):
            nested = NESTED[key]
            check_call(f"{section}.{key}", _pick(f"{section}.{key}", nested, value), _kwargs(value))
        elif non_finite(value) is not None:  # before the type: "expected float, got float nan" misleads
            raise RecipeError(f"{section}.{key}: must be a finite number, got {non_finite(value)}")
        elif key in hints and not matches(value, hints[key]):
            raise RecipeError(
                f"{section}.{key}: expected {type_name(hints[key])}, got {type(value).__name__} {value!r}"
            )
    for key, p in params.items():
        if key not in skip and p.default is inspect.Parameter.empty and key not in kwargs:
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise RecipeError(f"{section}.{key}: required")


@dataclass
class Parts:
    """Everything ``fit`` needs, built from a validated recipe."""

    module: SSLModule
    datamodule: ImageDataModule


def build_parts(recipe: dict[str, Any]) -> Parts:
    """Construct data, backbone, head, augmentation, optimizer factory and module (constructors
    validate values; their ``arg: ...`` errors come back as ``section.arg: ...``). The optimizer
    itself is built when training starts (``SSLModule.build_optimizer``)."""
    datamodule = _construct("data", DATAMODULES, recipe["data"])
    # Load (or list) the data now so an empty split or a too-large batch fails before training.
    _guard("data", lambda: datamodule.setup("fit"))
    if datamodule.num_train_samples < datamodule.batch_size:
        raise RecipeError(
            f"data.batch_size: {datamodule.batch_size} is larger than the "
            f"{datamodule.num_train_samples} training images"
        )
    per_batch = datamodule.classes_per_batch
    if per_batch is not None and per_batch > datamodule.num_classes:
        raise RecipeError(
            f"data.classes_per_batch: {per_batch} classes per batch, but the data has {datamodule.num_classes} classes"
        )
    return Parts(module=build_module(recipe, datamodule), datamodule=datamodule)


def build_module(recipe: dict[str, Any], datamodule: pl.LightningDataModule | None = None) -> SSLModule:
    """The recipe's ``SSLModule`` (augmentation, backbone, head, optimizer and schedule factories).

    Args:
        recipe: a validated recipe.
        datamodule: the recipe's DataModule, set up; a head that needs labels is checked against
            it, and a head with a ``num_classes`` keyword gets its number of classes. None: the
            module alone (a checkpoint's module rebuilt without its data).

    Raises:
        RecipeError: a part that does not build, a labels-needing head on unlabelled data, or a
            ``num_classes`` head without ``datamodule``.
    """
    # The augmentation first: its own checks name augment.* keys before the backbone uses its sizes.
    augment = build_augment(recipe)
    backbone, facts = _guard("backbone", lambda: build_backbone(**backbone_kwargs(recipe)))
    head_cfg = _kwargs(recipe["head"])
    if isinstance(head_cfg.get("loss"), dict):
        head_cfg["loss"] = _construct("head.loss", LOSSES, head_cfg["loss"])
    head_cls = _pick("head", HEADS, recipe["head"])
    num_classes = None
    if datamodule is not None:
        if head_cls.uses_labels and not _guard("data", lambda: datamodule.has_labels):
            name, data = recipe["head"]["name"], recipe["data"]["name"]
            raise RecipeError(f"head.name: {name!r} needs class labels, but data {data!r} has none")
        probe = (recipe.get("callbacks") or {}).get("linear_probe") or {}
        if probe.get("protocol") == "solo_learn" and not _guard("data", lambda: datamodule.has_labels):
            raise RecipeError(
                "callbacks.linear_probe.protocol: solo_learn trains on the training batches' labels, but data "
                f"{recipe['data']['name']!r} has none (use protocol: separate with data.eval_root)"
            )
        num_classes = datamodule.num_classes
    if "num_classes" in inspect.signature(head_cls).parameters:
        if num_classes is None:
            raise RecipeError(
                f"head.name: {recipe['head']['name']!r} needs the data's number of classes (load the data)"
            )
        head_cfg["num_classes"] = num_classes
    head = _guard("head", lambda: head_cls(in_dim=facts.feature_dim, **head_cfg))
    optimizer = _construct("optimizer", OPTIMIZERS, recipe["optimizer"])
    sched = recipe.get("scheduler")
    scheduler = _construct("scheduler", SCHEDULERS, sched) if sched is not None else None
    module_cfg = _section(recipe, "module", required=False)
    return SSLModule(backbone, head, augment, optimizer, scheduler, **module_cfg, backbone_facts=facts)


def build_augment(recipe: dict[str, Any]) -> Any:
    """The recipe's augmentation module (``augment`` section); its ``eval_view`` is the evaluation
    preprocessing (resize to ``augment.size`` + normalize).

    Raises:
        RecipeError: the section does not build (named ``augment.<key>``).
    """
    return _construct("augment", AUGMENTS, recipe["augment"])


def construct(section: str, spec: dict[str, Any]) -> Any:
    """The object of one family section of a validated recipe (``data``, ``augment``, ...: ``name``
    picks the class, every other key is its keyword); a constructor's error comes back as
    ``RecipeError("<section>.<key>: ...")``."""
    return _construct(section, FAMILIES[section], spec)


def backbone_kwargs(recipe: Mapping[str, Any], pretrained: bool | None = None) -> dict[str, Any]:
    """``build_backbone`` keywords: the ``backbone`` section plus the view sizes the augmentation
    produces (its ``view_sizes``: ``augment.size``, and ``augment.local_size`` when there are local
    crops), so that fixed-size models are built for them and sizes they cannot run at are refused here.

    ``pretrained`` replaces the recipe's flag (the offline tools pass False: the checkpoint holds
    the weights, nothing is downloaded).

    Raises:
        RecipeError: the ``augment`` section does not build (named ``augment.<key>``).
    """
    spec = dict(recipe["backbone"])
    if pretrained is not None:
        spec["pretrained"] = pretrained
    sizes = {f"augment.{key}": side for key, side in build_augment(recipe).view_sizes.items()}  # declared
    return {**spec, "input_sizes": sizes}


def enabled_callbacks(recipe: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The ``callbacks`` section without the ones turned off: name -> constructor keywords.

    ``callbacks.NAME: null`` or ``false`` turns NAME off (``callbacks.knn=null`` on the command
    line); ``{}`` or ``true`` keeps it on with its defaults.

    Raises:
        RecipeError: an unknown name, a value that is not a mapping / null / bool, or
            ``checkpoint`` turned off.
    """
    out: dict[str, dict[str, Any]] = {}
    for name, kwargs in _section(recipe, "callbacks", required=False).items():
        _pick(f"callbacks.{name}", CALLBACKS, {"name": name})
        if kwargs is None or kwargs is False:
            if name in ALWAYS_ON:
                raise RecipeError(f"callbacks.{name}: cannot be turned off (resume and the summary need last.ckpt)")
            continue
        if kwargs is True:
            kwargs = {}
        if not isinstance(kwargs, dict):
            raise RecipeError(
                f"callbacks.{name}: expected a mapping of keywords, or null/false to turn it off, got {kwargs!r}"
            )
        out[name] = kwargs
    return out


def build_callbacks(recipe: dict[str, Any], run_dir: Path) -> list[pl.Callback]:
    """The recipe's callbacks that are on; ``checkpoint`` (always present) writes to ``run_dir/checkpoints``."""
    specs = enabled_callbacks(recipe)
    # ``checkpoint`` (it writes last.ckpt) last: Lightning runs checkpoint callbacks in list order,
    # so last.ckpt then holds the other trackers' (best RankMe...) state of the same step.
    specs["checkpoint"] = specs.pop("checkpoint", None) or {}
    out = []
    for name, kwargs in specs.items():
        kwargs = dict(kwargs)
        if name == "checkpoint":
            kwargs = {"save_last": True, **kwargs}
        if issubclass(CALLBACKS[name], ModelCheckpoint):
            kwargs["dirpath"] = str(run_dir / "checkpoints")
        out.append(_guard(f"callbacks.{name}", lambda cls=CALLBACKS[name], kw=kwargs: cls(**kw)))
    return out


def build_trainer(recipe: dict[str, Any], run_dir: Path, extra_callbacks: Sequence[pl.Callback] = ()) -> pl.Trainer:
    loggers = build_loggers(run_dir=run_dir, **_section(recipe, "logger", required=False))
    callbacks = build_callbacks(recipe, run_dir) + list(extra_callbacks)
    # The finite check first: its epoch-end and validation-start checks run before any evaluation
    # callback embeds data with weights a non-finite step has broken (RankMe's SVD would raise).
    callbacks.sort(key=lambda cb: not isinstance(cb, FiniteLoss))
    kwargs = dict(_section(recipe, "trainer", required=False))
    if kwargs.get("sync_batchnorm"):  # torch's SyncBatchNorm is GPU-only; ours also runs on CPU (gloo)
        kwargs["plugins"] = [*(kwargs.get("plugins") or []), SyncBatchNormPlugin()]
    return _guard("trainer", lambda: pl.Trainer(
        default_root_dir=str(run_dir), logger=loggers or False, callbacks=callbacks, **kwargs))  # fmt: skip


# --- helpers ------------------------------------------------------------------------------
def _section(recipe: Mapping[str, Any], key: str, required: bool = True) -> dict[str, Any]:
    value = recipe.get(key)
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise RecipeError(f"{key}: expected a mapping, got {value!r}")
    return value


def _kwargs(spec: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if k != "name"}


def _pick(section: str, family: Mapping[str, Callable[..., Any]], spec: Any) -> Callable[..., Any]:
    if not isinstance(spec, dict):
        raise RecipeError(f"{section}: expected a mapping with a 'name', got {spec!r}")
    name = spec.get("name")
    if name not in family:
        raise RecipeError(f"{section}.name: unknown {name!r} (known: {', '.join(family)})")
    return family[name]


def _construct(section: str, family: Mapping[str, Callable[..., Any]], spec: dict[str, Any]) -> Any:
    cls = _pick(section, family, spec)
    return _guard(section, lambda: cls(**_kwargs(spec)))


def _guard(section: str, make: Callable[[], Any]) -> Any:
    # Constructors raise "arg: problem"; prefix the section so the message names the recipe key.
    try:
        return make()
    except (ValueError, FileNotFoundError, NotADirectoryError, TypeError, ImportError, MisconfigurationException) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise RecipeError(f"{section}.{msg}" if ":" in msg.split(" ")[0] else f"{section}: {msg}") from None
