"""Per-process and process-identical state under 2 DDP processes (torchrun, gloo, CPU), through
``ssl-toolkit fit``: SwAV's per-process queue comes back to its own process after ``resume=auto``;
MoCo's queue (identical on every process) is not among the buffers DDP broadcasts before each
forward, BatchNorm statistics still are, and the queues stay equal across processes. One launch
(tests/integration/ddp_process_state_worker.py runs the three fits)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from two_processes import torchrun

from conftest import REPO, tiny_recipe
from ssl_toolkit.heads import MoCoV2Head, SwAVHead
from ssl_toolkit.heads.local_queue import ProcessLocalQueue
from ssl_toolkit.process_state import (
    gather_per_process_state,
    identical_buffer_names,
    per_process_modules,
    select_own_state,
)

WORKER = Path(__file__).with_name("ddp_process_state_worker.py")


def _recipe(tmp_path: Path, name: str, head: dict) -> Path:
    # 64 images, 8 per process and step; no evaluation callbacks (fit writes last.ckpt anyway).
    recipe = tiny_recipe(REPO / "recipes" / "fashion_mnist" / f"{name}.yaml", tmp_path, steps=3)
    recipe["head"].update(head)
    recipe["data"]["batch_size"] = 8
    recipe["callbacks"] = {}
    recipe["trainer"].update(devices=2, strategy="ddp", enable_model_summary=False)
    recipe["out_dir"] = str(tmp_path / name)
    path = tmp_path / f"{name}.yaml"
    path.write_text(OmegaConf.to_yaml(recipe))
    return path


@pytest.fixture(scope="module")
def fits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("ddp_state")
    swav = _recipe(tmp, "swav", {"queue_length": 16, "queue_start_epoch": 0, "hidden_dim": 32, "out_dim": 16,
                                 "num_prototypes": 24})  # fmt: skip
    moco = _recipe(tmp, "mocov2", {"queue_size": 48, "hidden_dim": 32, "out_dim": 16})
    out = tmp / "out"
    out.mkdir()
    torchrun([str(WORKER), str(swav), str(moco), str(out)], cwd=tmp)
    return out


def _load(out: Path, fit: str, hook: str) -> list[dict]:
    return [torch.load(out / f"{fit}-{hook}-rank{r}.pt", weights_only=True) for r in range(2)]


@pytest.mark.distributed
def test_each_process_gets_its_own_swav_queue_back_after_resume(fits: Path) -> None:
    before, after = _load(fits, "swav", "end"), _load(fits, "swav_resumed", "start")
    assert [b["step"] for b in before] == [3, 3] and [a["step"] for a in after] == [3, 3]
    # The processes saw different images, so their queues differ (else the check below is void) ...
    assert before[0]["queue"]["filled"] == 16
    assert not torch.equal(before[0]["queue"]["rows"], before[1]["queue"]["rows"])
    for r in range(2):  # ... and each got its own back, not rank 0's
        assert after[r]["queue"]["filled"] == before[r]["queue"]["filled"]
        torch.testing.assert_close(after[r]["queue"]["rows"], before[r]["queue"]["rows"], rtol=0, atol=0)
    assert _load(fits, "swav_resumed", "end")[0]["step"] == 4


@pytest.mark.distributed
def test_moco_queue_is_not_broadcast_and_stays_equal_across_processes(fits: Path) -> None:
    start, end = _load(fits, "moco", "start"), _load(fits, "moco", "end")
    broadcast = start[0]["broadcast"]
    assert broadcast, "the DDP wrapper broadcasts no buffer at all"
    assert not [n for n in broadcast if n.startswith("head.queue")], broadcast
    assert any(n.startswith("backbone.") and n.endswith("running_mean") for n in broadcast)  # BatchNorm still
    assert any(n.startswith("teacher.") and n.endswith("running_var") for n in broadcast)
    assert int(end[0]["queue"]["queue_ptr"]) == 3 * 2 * 16 % 48  # 3 steps of 2 views x 16 gathered keys
    for key in ("queue", "queue_ptr"):
        torch.testing.assert_close(end[0]["queue"][key], end[1]["queue"][key], rtol=0, atol=0)
    assert not torch.equal(start[0]["queue"]["queue"], end[0]["queue"]["queue"])


# --- one process: the declarations and the checkpoint round trip -----------------------------
def test_declared_names_are_qualified_and_checked() -> None:
    model = torch.nn.ModuleDict({"head": MoCoV2Head(in_dim=8, hidden_dim=8, out_dim=4, queue_size=6)})
    assert identical_buffer_names(model) == ["head.queue", "head.queue_index", "head.queue_ptr"]
    swav = torch.nn.ModuleDict({"head": SwAVHead(in_dim=8, hidden_dim=8, out_dim=4, num_prototypes=5,
                                                 queue_length=4)})  # fmt: skip
    assert list(per_process_modules(swav)) == ["head.queue._extra_state"]

    class Wrong(torch.nn.Module):
        identical_buffers = ("missing",)

    with pytest.raises(ValueError, match=r"Wrong.identical_buffers: 'missing' is not one of its buffers"):
        identical_buffer_names(Wrong())


def test_one_process_saves_one_state_and_loads_it() -> None:
    queue = ProcessLocalQueue(1, 2, 3)
    model = torch.nn.ModuleDict({"q": queue})
    queue.push(torch.ones(1, 2, 3, dtype=torch.float64))
    saved = gather_per_process_state(model)
    assert list(saved) == ["q._extra_state"] and len(saved["q._extra_state"]) == 1
    assert saved["q._extra_state"][0]["filled"] == 2 and saved["q._extra_state"][0]["rows"].device.type == "cpu"
    other = {"rows": torch.ones(1, 2, 3), "filled": 2}
    state = {"q._extra_state": other}
    select_own_state(model, state, {"q._extra_state": [other]})  # one saved, one running: its own
    assert state["q._extra_state"] is other


@pytest.mark.parametrize(("me", "world", "saved"), [(1, 2, 1), (0, 1, 2)])
def test_another_process_count_never_hands_a_process_someone_elses_rows(
    me: int, world: int, saved: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ssl_toolkit.process_state as ps

    monkeypatch.setattr(ps, "rank", lambda: me)
    monkeypatch.setattr(ps, "world_size", lambda: world)
    model = torch.nn.ModuleDict({"q": ProcessLocalQueue(1, 2, 3)})
    fresh = model["q"].get_extra_state()
    states = [{"rows": torch.full((1, 2, 3), float(r)), "filled": 2} for r in range(saved)]
    state: dict = {"q._extra_state": states[0]}
    said = rf"holds q._extra_state of {saved} processes, this run has {world}"
    with pytest.warns(UserWarning, match=said) if me == 0 else contextlib.nullcontext():  # rank 0 says it
        select_own_state(model, state, {"q._extra_state": states})
    expected = states[me] if me < saved else fresh
    got = state["q._extra_state"]
    assert got["filled"] == expected["filled"] and torch.equal(got["rows"], expected["rows"])
