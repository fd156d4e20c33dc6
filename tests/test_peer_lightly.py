"""benchmarks/peer_lightly.py: the toolkit side's recipes stay valid and equal to the lightly side's
settings; the table's arithmetic. (The runs themselves need lightly: ``pip install -e '.[peers]'``.)"""

from __future__ import annotations

import pytest

from benchmarks.peer_lightly import METHODS, RunResult, Settings, table, toolkit_recipe
from ssl_toolkit.run.recipe import validate


@pytest.mark.parametrize("method", METHODS)
def test_toolkit_recipe_is_valid_and_uses_the_shared_settings(method: str) -> None:
    s = Settings()
    recipe = toolkit_recipe(method, s, seed=3)
    validate(recipe)
    assert recipe["seed"] == 3 and recipe["head"]["name"] == method
    assert (recipe["head"]["hidden_dim"], recipe["head"]["out_dim"]) == (s.hidden_dim, s.out_dim)
    assert recipe["optimizer"] == {"name": "sgd", "lr": s.lr, "weight_decay": s.weight_decay, "momentum": s.momentum}
    assert "scheduler" not in recipe and recipe["data"]["train_samples"] == s.train_samples
    a = recipe["augment"]
    assert (a["crop_scale"], a["brightness"], a["hue"], a["jitter_p"], a["grayscale_p"], a["blur_p"]) == (
        [0.08, 1.0], 0.4, 0.1, 0.8, 0.2, 0.0)  # lightly: cj_strength 0.5 x (0.8, 0.8, 0.8, 0.2), no blur  # fmt: skip


def test_old_projector_override_reaches_the_recipe() -> None:
    head = toolkit_recipe("simclr", Settings(), 0, {"batch_norm": False, "last_norm": "none"})["head"]
    assert head["batch_norm"] is False and head["last_norm"] == "none"


def test_table_means_spread_and_ratios() -> None:
    rows = [RunResult("simclr", "lightly", s, k, v, v / 2, 1.0, 8) for s, k, v in [(0, 0.50, 100), (1, 0.52, 110)]]
    rows += [RunResult("simclr", "ssl_toolkit", s, k, v, v / 2, 1.0, 8) for s, k, v in [(0, 0.53, 150), (1, 0.51, 160)]]
    out = table(rows).splitlines()
    assert out[2].startswith("| simclr | lightly | 0.5100 ± 0.0141 | 0: 0.5000, 1: 0.5200 | 105 (52) |")
    assert out[3].endswith("| 155 (78) | +1.0 pt | 1.48x |")
