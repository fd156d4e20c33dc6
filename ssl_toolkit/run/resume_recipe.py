"""What a resume's recipe may change against the recipe its checkpoint carries.

A resume continues the run's data: the same images, in the same order, in batches of the same size,
so the loader position and the evaluation callbacks' stored subsets (row indices) stay valid.
A recipe that changes one of ``DATA_FIXED`` is refused before anything is written, and so is one
that would let a checkpoint callback delete checkpoints the run kept (a lower ``save_top_k``: the
resumed callback prunes the files it restored to its new limit). Every other difference is said in
one line (``differences``), so a key the user forgot to repeat shows. Another kind of optimizer or
scheduler is refused too (``check_same_kinds``): its state cannot carry over.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ssl_toolkit.errors import RecipeError

# data keys that choose the images, their order or their batches (the loader position counts batches)
DATA_FIXED = (
    "name", "num_samples", "num_val_samples", "train_samples", "val_samples", "num_classes", "seed",
    "classes_per_batch", "batch_size",
)  # fmt: skip
# differences a resume is for (a longer run, another folder) or says itself (ResumeChanges)
_UNSET = object()  # a key the recipe does not have (None: set to null)
EXPECTED = ("out_dir", "resume", "trainer.max_epochs", "trainer.max_steps", "optimizer.", "scheduler.")


def check_resumable(saved_recipe: Any, recipe: dict[str, Any], checkpoint: Path) -> None:
    """``check_same_kinds``, ``check_same_data`` and ``check_keeps_checkpoints`` against the recipe the
    checkpoint carries (``saved_recipe``; an old checkpoint without one: Lightning's restore decides).

    Raises:
        RecipeError: from the first check that fails.
    """
    if not isinstance(saved_recipe, dict):
        return
    check_same_kinds(saved_recipe, recipe, checkpoint)
    check_same_data(saved_recipe, recipe, checkpoint)
    check_keeps_checkpoints(saved_recipe, recipe, checkpoint)


def check_same_kinds(saved_recipe: dict[str, Any], recipe: dict[str, Any], checkpoint: Path) -> None:
    """The recipe's optimizer and scheduler are the checkpoint's kinds (their values may differ).

    Raises:
        RecipeError: ``optimizer.name`` or ``scheduler`` differs (its state cannot carry over).
    """
    old_opt, new_opt = (saved_recipe.get("optimizer") or {}).get("name"), recipe["optimizer"].get("name")
    if old_opt != new_opt:
        raise RecipeError(
            f"optimizer.name: {checkpoint} was trained with {old_opt!r}; a resume cannot switch to {new_opt!r} "
            "(its state does not carry over); start a new run (resume=none) from the exported weights instead"
        )
    old_s, new_s = [(r.get("scheduler") or {}).get("name") for r in (saved_recipe, recipe)]
    if old_s != new_s:
        raise RecipeError(
            f"scheduler: {checkpoint} was trained with scheduler {old_s!r}; a resume cannot change it to {new_s!r}; "
            "change its values (e.g. scheduler.min_factor) instead, or start a new run (resume=none)"
        )


def check_same_data(saved_recipe: dict[str, Any], recipe: dict[str, Any], checkpoint: Path) -> None:
    """The recipe's ``data`` keys of ``DATA_FIXED`` equal the checkpoint's recipe's.

    Raises:
        RecipeError: naming the first differing ``data.<key>``, both values and the way out.
    """
    saved, now = saved_recipe.get("data") or {}, recipe.get("data") or {}
    for key in DATA_FIXED:
        if saved.get(key) != now.get(key):
            raise RecipeError(
                f"data.{key}: {checkpoint} was trained with {_show(saved.get(key))}, this recipe has "
                f"{_show(now.get(key))}; a resume continues the same data (set data.{key}={_show(saved.get(key))}), "
                "or start a new run (resume=none)"
            )


def check_keeps_checkpoints(saved_recipe: dict[str, Any], recipe: dict[str, Any], checkpoint: Path) -> None:
    """No checkpoint callback of the recipe keeps fewer files than the checkpoint's recipe did.

    Raises:
        RecipeError: naming ``callbacks.<name>.save_top_k`` and the value the run kept.
    """
    saved, now = saved_recipe.get("callbacks") or {}, recipe.get("callbacks") or {}
    for name, spec in saved.items():
        new = now.get(name)
        if not isinstance(spec, dict) or not isinstance(new, dict) or "save_top_k" not in spec:
            continue
        kept, keeps = spec["save_top_k"], new.get("save_top_k")
        if kept != keeps and (kept == -1 or (keeps is not None and keeps != -1 and keeps < kept)):
            raise RecipeError(
                f"callbacks.{name}.save_top_k: {checkpoint} was written by a run that kept "
                f"{'every checkpoint' if kept == -1 else kept} (save_top_k={kept}); with {_show(keeps)} the resume "
                f"would delete checkpoints it has; set callbacks.{name}.save_top_k={kept}"
            )


def differences(saved_recipe: Any, recipe: dict[str, Any], shown: int = 6) -> str | None:
    """``key (checkpoint's -> this recipe's), ...`` of the dotted keys that differ, but for
    ``EXPECTED``; None when there are none (or the checkpoint carries no recipe)."""
    if not isinstance(saved_recipe, dict):
        return None
    old, new = _flat(saved_recipe), _flat(recipe)
    keys = [k for k in sorted(set(old) | set(new)) if old.get(k, _UNSET) != new.get(k, _UNSET) and not _expected(k)]
    if not keys:
        return None
    said = ", ".join(f"{k} ({_show(old.get(k, _UNSET))} -> {_show(new.get(k, _UNSET))})" for k in keys[:shown])
    return said + (f" and {len(keys) - shown} more" if len(keys) > shown else "")


def _expected(key: str) -> bool:
    return any(key == e or (e.endswith(".") and key.startswith(e)) for e in EXPECTED)


def _flat(node: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in node.items():
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _show(value: Any) -> str:
    return "unset" if value is _UNSET else "null" if value is None else str(value)
