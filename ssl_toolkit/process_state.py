"""Module state under DDP: buffers identical on every process, and state each process keeps its own.

DDP (``broadcast_buffers=True``, Lightning's default) copies every registered buffer from rank 0
to all processes before each forward. That is what BatchNorm running statistics need, and a waste
for a buffer that every process computes identically (MoCo's key queue: keys gathered from every
process, 65,536 x 256 floats = 64 MiB per step). A checkpoint is written by rank 0, so state that
differs per process (SwAV's per-process queue) would come back as rank 0's on every process.

Modules declare either kind; ``SSLModule`` applies both, knowing no method names:

* ``identical_buffers: tuple[str, ...]`` (class attribute): names of the module's own buffers that
  are the same on every process by construction. DDP leaves them out of its broadcasts
  (``DistributedDataParallel._set_params_and_buffers_to_ignore_for_model``, torch's interface
  for this; other buffers, BatchNorm's included, are still broadcast).
* ``per_process_state = True`` (class attribute): the module's extra state
  (``get_extra_state``/``set_extra_state``, key ``<name>._extra_state``) is its process's own. Every
  process's copy is gathered into the checkpoint (``checkpoint[PER_PROCESS_KEY][key][rank]``) and,
  on resume, each process loads its own.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ssl_toolkit.distributed import is_distributed, rank, world_size

PER_PROCESS_KEY = "per_process_state"


def identical_buffer_names(model: nn.Module) -> list[str]:
    """Qualified names (as in ``model.named_buffers()``) of the buffers that submodules declare
    identical on every process (``identical_buffers``).

    Raises:
        ValueError: a declared name that is not a buffer of its module.
    """
    names = []
    for prefix, module in model.named_modules():
        own = dict(module.named_buffers(recurse=False))
        for name in getattr(module, "identical_buffers", ()):  # opt-in marker on any nn.Module
            if name not in own:
                raise ValueError(f"{type(module).__name__}.identical_buffers: {name!r} is not one of its buffers")
            names.append(f"{prefix}.{name}" if prefix else name)
    return names


def exclude_identical_buffers_from_ddp(model: nn.Module) -> list[str]:
    """Tell DDP not to broadcast the buffers declared identical on every process; call before
    ``model`` is wrapped in ``DistributedDataParallel``. Returns their qualified names."""
    names = identical_buffer_names(model)
    if names:
        from torch.nn.parallel import DistributedDataParallel

        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, names)
    return names


def per_process_modules(model: nn.Module) -> dict[str, nn.Module]:
    """State-dict key (``<name>._extra_state``) -> submodule, for every submodule declaring
    ``per_process_state``."""
    return {
        f"{prefix}._extra_state" if prefix else "_extra_state": module
        for prefix, module in model.named_modules()
        if getattr(module, "per_process_state", False)  # opt-in marker on any nn.Module
    }


def gather_per_process_state(model: nn.Module) -> dict[str, list[Any]]:
    """Every process's extra state of each per-process submodule: key -> [state of rank 0, 1, ...].

    A collective under torch.distributed: every process calls it at the same point (Lightning
    assembles a checkpoint on every process). One process: one entry per key.
    """
    modules = per_process_modules(model)
    if not modules:
        return {}
    # On the CPU: a pickled CUDA tensor would be unpickled onto the sender's device index.
    mine = {key: _to_cpu(module.get_extra_state()) for key, module in modules.items()}
    if not is_distributed():
        return {key: [state] for key, state in mine.items()}
    everyone: list[Any] = [None] * world_size()
    dist.all_gather_object(everyone, mine)
    return {key: [states[key] for states in everyone] for key in mine}


def _to_cpu(state: Any) -> Any:
    """``state`` with every tensor (also inside dicts, lists and tuples) copied to the CPU."""
    if isinstance(state, torch.Tensor):
        return state.detach().cpu()
    if isinstance(state, dict):
        return {k: _to_cpu(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_to_cpu(v) for v in state)
    return state


def select_own_state(model: nn.Module, state_dict: dict[str, Any], saved: dict[str, list[Any]]) -> None:
    """Put this process's saved extra states into ``state_dict`` (a checkpoint's, in place) before
    it is loaded into ``model``.

    With as many saved processes as running ones, process r gets rank r's state. With another
    number (a warning says so), process r < saved gets rank r's and the others keep their current
    (fresh) state: never another process's copy, whose rows would then sit in two processes.
    """
    modules = per_process_modules(model)
    me, world = rank(), world_size()
    for key, states in saved.items():
        if key not in modules or key not in state_dict:
            continue  # the state-dict loading itself reports keys that do not fit
        if len(states) != world and me == 0:
            warnings.warn(
                f"resume: the checkpoint holds {key} of {len(states)} processes, this run has {world}; process r < "
                f"{min(len(states), world)} gets rank r's, any other keeps its fresh state",
                stacklevel=2,
            )
        state_dict[key] = states[me] if me < len(states) else modules[key].get_extra_state()
