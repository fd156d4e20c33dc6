"""``ssl-toolkit bench``: the parts of the real training step, the throughputs, the JSON line and files;
the parts add up to the step, land where they belong, and the step rate is the rate ``fit`` reports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import REPO, tiny_recipe
from ssl_toolkit.run.cli import main
from ssl_toolkit.run.step_parts import PARTS

KEYS = ("backbone_img_s", "step_img_s", "loader_img_s", "overhead_ratio")


@pytest.fixture
def recipe(tmp_path: Path) -> str:
    """The demo recipe with the tiny backbone and 64 synthetic 32 px images, as a YAML file."""
    path = tmp_path / "tiny.yaml"
    OmegaConf.save(tiny_recipe(REPO / "recipes" / "fashion_mnist" / "simclr.yaml", tmp_path), path)
    return str(path)


def _json_line(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_bench_prints_positive_throughputs_and_json(recipe: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", recipe, "--steps", "5", "--warmup", "1"]) == 0
    out = capsys.readouterr().out
    result = _json_line(out)
    for key in KEYS:
        assert result[key] > 0, key
    # the overhead is per step, from the backbone time inside that step: never below 0
    overhead = result["overhead"]
    assert 0 <= overhead["q1"] <= overhead["median"] <= overhead["q3"]
    assert result["overhead_ratio"] == pytest.approx(1 + overhead["median"])
    assert result["backbone_img_s"] > result["step_img_s"]
    assert result["batch_size"] == 16 and result["views"] == "2x32px" and result["steps"] == 5
    assert result["views_per_image"] == 2
    assert result["step_views_s"] == pytest.approx(2 * result["step_img_s"])
    assert set(result["parts_ms"]) == {*PARTS, "step"} and set(result["shares"]) == set(PARTS)
    assert result["parts_ms"]["teacher_fwd"]["median"] == 0  # SimCLR has no teacher
    for label in PARTS.values():
        assert f"| {label} |" in out
    assert "(a) backbone" in out and "(b) training step" in out and "(c) data loader" in out


def test_loader_only(recipe: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", recipe, "--loader-only", "--steps", "2", "--warmup", "1"]) == 0
    out = capsys.readouterr().out
    result = _json_line(out)
    assert result["loader_img_s"] > 0 and result["step_img_s"] is None and result["backbone_img_s"] is None
    assert "(c) data loader" in out and "(a) backbone" not in out and result["loader_workers"] == 0


@pytest.mark.parametrize("steps", ["0", "4"])
def test_bench_refuses_fewer_than_5_timed_steps(recipe: str, steps: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", recipe, "--steps", steps]) == 2
    captured = capsys.readouterr()
    assert "steps >= 5" in captured.err and len(captured.err.strip().splitlines()) == 1
    assert captured.out == ""  # refused before anything ran


def test_json_and_markdown_files_are_appended(recipe: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    json_file, md_file = tmp_path / "bench.jsonl", tmp_path / "bench.md"
    md_file.write_text("# kept\n")
    for _ in range(2):
        args = ["bench", recipe, "--steps", "5", "--warmup", "0", "--json", str(json_file), "--markdown", str(md_file)]
        assert main(args) == 0
    rows = [json.loads(line) for line in json_file.read_text().splitlines()]
    assert len(rows) == 2 and all(r["command"] == recipe and r["overhead"]["median"] >= 0 for r in rows)
    assert rows[-1]["step_img_s"] == pytest.approx(_json_line(capsys.readouterr().out)["step_img_s"])
    text = md_file.read_text()
    assert text.startswith("# kept\n") and text.count("| part | median ms | IQR ms | share |") == 2
    assert text.count("| **step** |") == 2 and "**overhead" in text


def test_bad_output_folder_is_refused_before_work(recipe: str, tmp_path: Path, capsys) -> None:
    assert main(["bench", recipe, "--json", str(tmp_path / "missing" / "x.jsonl")]) == 2
    captured = capsys.readouterr()
    assert "--json: folder" in captured.err and captured.out == ""


def test_tools_bench_wrapper_help() -> None:
    out = subprocess.run([sys.executable, str(REPO / "tools" / "bench.py"), "--help"],
                         capture_output=True, text=True, check=True, cwd=REPO).stdout  # fmt: skip
    assert "--steps" in out and "overhead" in out


# --- speed switches ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "switch", ["module.channels_last=true", "trainer.precision=bf16-mixed", "backbone.grad_checkpointing=true"]
)
def test_speed_switch_builds_and_trains(recipe: str, switch: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", recipe, switch, "--steps", "5", "--warmup", "0"]) == 0
    result = _json_line(capsys.readouterr().out)
    assert all(result[key] > 0 for key in KEYS)
    if "precision" in switch:
        assert result["precision"] == "bf16-mixed"


def test_module_section_sets_switches_and_rejects_unknown_keys(recipe: str) -> None:
    from ssl_toolkit.errors import RecipeError
    from ssl_toolkit.recipe.build import build_parts, load_recipe

    parts = build_parts(load_recipe(recipe, ["module.channels_last=true", "module.compile_backbone=true"]))
    module = parts.module
    assert module.channels_last
    # nn.Module.compile() in place: compiled call, parameter names (checkpoints) unchanged.
    assert module.backbone._compiled_call_impl is not None
    assert all(not k.startswith("backbone._orig_mod") for k in module.state_dict())
    with pytest.raises(RecipeError, match=r"module\.fast: unknown key"):
        load_recipe(recipe, ["module.fast=true"])
    with pytest.raises(RecipeError, match=r"module\.head: unknown key"):
        load_recipe(recipe, ["module.head=1"])


def test_grad_checkpointing_gives_the_same_gradients() -> None:
    import torch

    from conftest import TINY_BACKBONE
    from ssl_toolkit.backbone import build_backbone

    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = build_backbone(TINY_BACKBONE, grad_checkpointing=checkpointing)[0]
        assert model.grad_checkpointing == checkpointing
        model(x).square().sum().backward()
        grads.append([p.grad for p in model.parameters()])
    for plain, checkpointed in zip(*grads):
        torch.testing.assert_close(checkpointed, plain)
