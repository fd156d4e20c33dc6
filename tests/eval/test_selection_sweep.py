"""Judging a selection (judge, rank_vote) against plain computations, the selection plot, and
tools/selection_sweep.py's report and resumability on made-up scores (no training)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from conftest import REPO
from ssl_toolkit.eval.label_free import METRICS
from ssl_toolkit.eval.selection import Row, judge, metric_report, rank_vote
from ssl_toolkit.eval.selection_plot import plot_selection

sys.path.insert(0, str(REPO / "tools"))
import selection_sweep as sweep  # noqa: E402


def make_rows(run: str, knn: list[float], linear: list[float], scores: dict[str, list[float]]) -> list[Row]:
    """Rows of one run folder ``run``, one per epoch, with the given accuracies and metric values."""
    return [
        Row(
            Path(run),
            Path(f"{run}/checkpoints/epoch={i}.ckpt"),
            i,
            10 * (i + 1),
            0.0,
            0.0,
            knn[i],
            {m: v[i] for m, v in scores.items()},
            linear[i],
        )  # fmt: skip
        for i in range(len(knn))
    ]


def test_judge_regret_and_spearman_by_hand() -> None:
    rows = make_rows("r", knn=[0.5, 0.7, 0.6, 0.8], linear=[0.6, 0.9, 0.7, 0.75], scores={})
    goodness = [1.0, 4.0, 2.0, 3.0]  # picks row 1
    got = judge(rows, goodness)
    assert got["selected"] == "r/checkpoints/epoch=1.ckpt"
    assert got["regret_knn"] == pytest.approx(0.8 - 0.7) and got["regret_linear"] == pytest.approx(0.0)
    # Spearman without ties: 1 - 6 sum d^2 / (n (n^2 - 1)); ranks of goodness 1 4 2 3, of k-NN 1 3 2 4,
    # of linear 1 4 2 3.
    assert got["spearman_knn"] == pytest.approx(1 - 6 * (0 + 1 + 0 + 1) / (4 * 15))
    assert got["spearman_linear"] == pytest.approx(1.0)
    no_labels = judge([Row(Path("r"), Path("c"), 0, 1, 0.0, 0.0)] * 2, [1.0, 2.0])
    assert set(no_labels) == {"selected"}
    with pytest.raises(ValueError, match="one goodness value per row"):
        judge(rows, [1.0])


def test_rank_vote_averages_each_metrics_ranks_in_its_better_direction() -> None:
    # rankme: higher is better; alignment: lower; alpha_req: near 1; lidar has a NaN (ranks worst).
    scores = {
        "rankme": [10.0, 30.0, 20.0],
        "alignment": [0.1, 0.9, 0.5],
        "alpha_req": [1.05, 2.0, 0.5],
        "lidar": [float("nan"), 3.0, 2.0],
    }
    rows = make_rows("r", [0.1, 0.2, 0.3], [0.1, 0.2, 0.3], scores)
    assert rank_vote(rows, ["rankme"]) == [1.0, 3.0, 2.0]
    assert rank_vote(rows, ["rankme", "alignment"]) == [(1 + 3) / 2, (3 + 1) / 2, (2 + 2) / 2]
    assert rank_vote(rows, ["alpha_req"]) == [3.0, 1.0, 2.0]  # |1.05-1| < |0.5-1| < |2-1|
    assert rank_vote(rows, ["lidar"]) == [1.0, 3.0, 2.0]
    tied = make_rows("t", [0.1] * 3, [0.1] * 3, {"rankme": [5.0, 5.0, 1.0]})
    assert rank_vote(tied, ["rankme"]) == [2.5, 2.5, 1.0]
    with pytest.raises(ValueError):
        rank_vote(rows, [])


def fake_method(name: str, seed: int) -> list[Row]:
    """Six runs x two epochs of made-up scores for every metric; accuracy rises with rankme."""
    rows = []
    for c in range(6):
        for e in range(2):
            v = (c * 7 + e * 3 + seed) % 11
            rows += make_rows(f"{name}/t{c}_lr{e}", [0.5 + 0.02 * v], [0.6 + 0.01 * ((v * 5) % 11)],
                              {m: [float(v + i * ((c + e) % 3))] for i, m in enumerate(METRICS)})  # fmt: skip
    for i, r in enumerate(rows):
        rows[i] = Row(r.run, r.checkpoint.with_name(f"epoch={i % 2}-{i}.ckpt"), i % 2, i, 0.0, 0.0,
                      r.knn_top1, r.scores, r.linear_top1)  # fmt: skip
    return rows


def test_report_holds_every_metric_per_method_the_holdout_vote_and_the_pngs(tmp_path: Path) -> None:
    by_method = {"simclr": fake_method("simclr", 0), "mocov2": fake_method("mocov2", 4)}
    report = tmp_path / "docs" / "model_selection.md"
    snippet = sweep.write_report(report, sweep.TINY, by_method, 61.0, "python tools/selection_sweep.py --tiny")
    text = report.read_text()
    for method, rows in by_method.items():
        assert f"## {method}" in text and (tmp_path / "docs" / f"model_selection_{method}.png").is_file()
        for e in metric_report(rows):  # the table row of every metric carries its numbers
            row = (f"| `{e['metric']}` | {e['better']} | {e['spearman_knn']:+.2f} | {e['spearman_linear']:+.2f} | "
                   f"{100 * e['regret_knn']:.2f} | {100 * e['regret_linear']:.2f} |")  # fmt: skip
            assert row in text
            assert f"- `{e['metric']}` on {method} " in text
    # The vote designed on simclr is judged on mocov2 with the pair chosen on simclr only.
    pair = sweep.design_vote(by_method["simclr"])
    held = judge(by_method["mocov2"], rank_vote(by_method["mocov2"], list(pair)))
    line = f"| simclr | `{pair[0]}` + `{pair[1]}` | mocov2 (held out) | {held['spearman_knn']:+.2f} |"
    assert line in text and "python tools/selection_sweep.py --tiny" in text and "1.0 minutes" in text
    assert "Earlier measurement: RankMe alone" in text
    assert snippet.count("\n") == 3 and "| simclr |" in snippet and "| mocov2 |" in snippet


def test_design_vote_minimises_the_mean_regret_on_the_design_rows() -> None:
    rows = fake_method("simclr", 2)
    pair = sweep.design_vote(rows)
    chosen = judge(rows, rank_vote(rows, list(pair)))
    for a in METRICS:
        for b in METRICS:
            if a < b:
                other = judge(rows, rank_vote(rows, [a, b]))
                assert sweep.mean_regret(chosen) <= sweep.mean_regret(other) + 1e-12


def test_a_finished_run_is_not_trained_again_and_cached_scores_are_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "simclr" / "t0.2_lr0.3"
    (out / "checkpoints").mkdir(parents=True)
    for e in range(sweep.TINY.epochs):
        (out / "checkpoints" / f"epoch={e}-step={e + 1}.ckpt").write_bytes(b"")
    monkeypatch.setattr(sweep.subprocess, "run", lambda *a, **k: pytest.fail("trained again"))
    assert sweep.train(out, sweep.METHODS[0], 0.2, 0.3, sweep.TINY) == out
    rows = make_rows(str(out), [0.5, 0.6], [0.7, 0.8], {m: [1.0, 2.0] for m in METRICS})
    settings = {"metrics": list(METRICS), "val_samples": 256, "num_samples": 256, "view_images": 32, "views": 4,
                "seed": 0}  # fmt: skip
    (out / "selection_scores.json").write_text(json.dumps({"settings": settings, "rows": [r.as_dict() for r in rows]}))
    monkeypatch.setattr(sweep, "rank_checkpoints", lambda *a, **k: pytest.fail("scored again"))
    assert sweep.score(out, sweep.TINY) == rows
    # Other scoring settings: the cache does not apply, the run is scored again.
    monkeypatch.setattr(sweep, "rank_checkpoints", lambda *a, **k: rows[::-1])
    assert sweep.score(out, sweep.FULL) == rows  # sorted by step, and cached with the new settings
    assert json.loads((out / "selection_scores.json").read_text())["settings"]["num_samples"] == 2048


def test_plot_refuses_rows_without_accuracies(tmp_path: Path) -> None:
    rows = make_rows("r", [0.5, 0.6], [0.7, 0.8], {"rankme": [1.0, math.nan]})
    assert plot_selection(rows, tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"  # a NaN is left out
    rows[0].linear_top1 = None
    with pytest.raises(ValueError, match="with-labels"):
        plot_selection(rows, tmp_path / "b.png")
