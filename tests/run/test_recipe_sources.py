"""Each ImageNet-100 recipe equals the configuration behind the number it cites, key by key.

``recipes/imagenet100/sources/<recipe>.csv`` lists, for every setting its source sets, the recipe
key, its value, the source (file at commit, option) and a status: ``equal`` (the recipe must hold
the source's value), ``adapted: why`` (the recipe holds ``value`` on purpose) or, with key ``-``,
``absent: why`` (the source has something the toolkit does not build).
"""

from __future__ import annotations

import copy
import csv
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import REPO
from ssl_toolkit.recipe.build import load_recipe

RECIPES = REPO / "recipes" / "imagenet100"
TABLES = RECIPES / "sources"
# Recipes that cite a published number: every key their source sets is equal or adapted with a reason.
REPRODUCTIONS = ["simclr", "mocov2", "swav", "swav_2crop"]
BASELINES = ["byol", "barlow_twins", "vicreg", "dino", "mocov3", "nnclr", "simsiam"]  # solo-learn README, issue 28


def read_table(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and list(rows[0]) == ["key", "value", "source", "status"], path
    return rows


def lookup(recipe: dict[str, Any], key: str) -> Any:
    node: Any = recipe
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(key)
        node = node[part]
    return node


def same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def problems(recipe: dict[str, Any], rows: list[dict[str, str]]) -> list[str]:
    """One line per table row the recipe does not satisfy (empty: the recipe equals its table)."""
    found = []
    for row in rows:
        key, status = row["key"], row["status"]
        if not row["source"].strip():
            found.append(f"{key}: no source")
        if key == "-":
            if not status.startswith("absent: ") or len(status) < 20:
                found.append(f"row '{row['source'][:40]}': key '-' needs 'absent: <why>'")
            continue
        if status != "equal" and not (status.startswith("adapted: ") and len(status) > 20):
            found.append(f"{key}: status must be 'equal' or 'adapted: <why>', got {status!r}")
        try:
            value = lookup(recipe, key)
        except KeyError:
            found.append(f"{key}: not set in the recipe")
            continue
        if not same(value, yaml.safe_load(row["value"])):
            found.append(f"{key}: recipe has {value!r}, table ({status.split(':')[0]}) says {row['value']}")
    return found


def test_every_imagenet100_recipe_has_a_source_table() -> None:
    recipes = {p.stem for p in RECIPES.glob("*.yaml")}
    tables = {p.stem for p in TABLES.glob("*.csv")}
    assert recipes == tables


@pytest.mark.parametrize("name", sorted(p.stem for p in RECIPES.glob("*.yaml")))
def test_recipe_equals_its_source_table(name: str) -> None:
    recipe = load_recipe(RECIPES / f"{name}.yaml")
    rows = read_table(TABLES / f"{name}.csv")
    assert problems(recipe, rows) == []
    keys = [r["key"] for r in rows if r["key"] != "-"]
    assert len(keys) == len(set(keys)), "a key listed twice"


def changed(value: Any) -> Any:
    """A different value of the same kind."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value * 2 + 1
    if isinstance(value, list):
        return [changed(v) for v in value]
    return f"{value}_changed"


@pytest.mark.parametrize("name", REPRODUCTIONS + BASELINES)
def test_changing_any_equal_key_breaks_the_check(name: str) -> None:
    recipe = load_recipe(RECIPES / f"{name}.yaml")
    rows = read_table(TABLES / f"{name}.csv")
    equal = [r["key"] for r in rows if r["status"] == "equal"]
    assert len(equal) >= 30  # the reproduction recipes pin every key their source sets
    for key in equal:
        mutated = copy.deepcopy(recipe)
        *path, last = key.split(".")
        node = lookup(mutated, ".".join(path)) if path else mutated
        node[last] = changed(node[last])
        assert [p for p in problems(mutated, rows) if p.startswith(f"{key}: recipe has")], key
        del node[last]
        assert f"{key}: not set in the recipe" in problems(mutated, rows), key


@pytest.mark.parametrize("name", REPRODUCTIONS + BASELINES)
def test_reproduction_recipes_use_the_online_protocol_of_their_source(name: str) -> None:
    recipe = load_recipe(RECIPES / f"{name}.yaml")
    protocol = recipe["callbacks"]["linear_probe"]["protocol"]
    assert protocol == ("separate" if name == "swav" else "solo_learn")
