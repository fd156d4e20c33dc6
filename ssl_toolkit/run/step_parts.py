"""Where the time of each training step goes, measured inside the real ``trainer.fit``: ``StepParts``.

A Lightning ``Profiler`` (Lightning calls ``start``/``stop`` around every loop stage and hook) plus
forward hooks on the module's ``augment``, ``backbone``, ``teacher`` and ``head``, a gradient hook on
each backbone output and a step post-hook on each optimizer. Each one reads a clock: on a CUDA
device a CUDA event recorded on the current stream (no host sync during the step; the events are
read after training), on the CPU ``time.perf_counter`` (CPU work is synchronous, so the clock read
after an op sees it done). Every part is timed by its own pair of readings, so the parts need not
add up to the step: the rest (Lightning's loop between the parts) is reported as ``loop``.

A step runs from the start of one batch fetch to the start of the next. The parts of one step:

========================  ====================================================================
``fetch``                 ``next()`` on the train loader (Lightning's prefetching fetcher)
``h2d``                   ``transfer_batch_to_device``: the host-to-device copy
``augment``               ``augment(images)`` in ``on_after_batch_transfer``
``backbone_fwd``          every backbone call of the step (one per resolution group)
``teacher_fwd``           the EMA teacher's calls (no gradient), for heads with a teacher
``head_fwd``              the head: projector, loss, queues (``head(views, info)``)
``log``                   the rest of ``training_step``: ``self.log`` of the loss and head logs
``head_bwd``              ``loss.backward()`` until the gradient reaches the backbone outputs
``backbone_bwd``          ``loss.backward()`` from there to its end (backbone and its weights)
``hooks``                 ``on_after_backward`` and what follows ``optimizer.step()`` inside
                          ``optimizer_step`` (``after_optimizer_step``: EMA update, head's
                          ``after_step``)
``optimizer``             ``zero_grad``, gradient clipping, ``optimizer.step()`` itself, the lr
                          scheduler's step
``loop``                  the step minus all of the above (Lightning's loop, callback hooks,
                          progress and logger bookkeeping)
========================  ====================================================================

The step time covers the whole period, evaluation included if one runs inside it, so use it on
runs without evaluation (``ssl-toolkit bench``). One process, automatic optimization.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch.profilers import Profiler
from torch import Tensor, nn

if TYPE_CHECKING:
    from ssl_toolkit.module import SSLModule

PARTS: dict[str, str] = {
    "fetch": "fetch batch",
    "h2d": "host-to-device copy",
    "augment": "augmentation",
    "backbone_fwd": "backbone forward",
    "teacher_fwd": "teacher forward",
    "head_fwd": "head + loss forward",
    "log": "logging (rest of training_step)",
    "head_bwd": "head + loss backward",
    "backbone_bwd": "backbone backward",
    "hooks": "hooks (after_backward, EMA, after_step)",
    "optimizer": "optimizer (zero_grad, step, lr schedule)",
    "loop": "Lightning loop (not in a part above)",
}
"""Part key -> table label, in the order of the step."""

Mark = float | torch.cuda.Event


class StepParts(Profiler):
    """Times the parts of every training step of one ``trainer.fit`` (``Trainer(profiler=...)``).

    Args:
        module: the ``SSLModule`` being trained; forward hooks are put on its ``augment``,
            ``backbone``, ``teacher`` (if any) and ``head`` until ``teardown``.
        device: where the module runs: CUDA events there, ``time.perf_counter`` on the CPU.

    After training, ``durations()`` gives one dict per completed step: each key of ``PARTS`` and
    ``step``, in seconds; ``view_shapes`` the (H, W) of each view ``augment`` made last.
    """

    def __init__(self, module: SSLModule, device: torch.device) -> None:
        super().__init__()
        self.cuda = device.type == "cuda"
        self.module = module
        self.view_shapes: list[tuple[int, int]] = []
        self._steps: list[dict[str, Any]] = []  # one per step begun: step-start mark + part intervals
        self._open: dict[str, Mark] = {}  # action/part -> start mark
        self._in_training_step = False
        self._hooked_optimizers: set[int] = set()
        self._handles: list[Any] = []
        for name, part in (("augment", "augment"), ("backbone", "backbone_fwd"), ("teacher", "teacher_fwd"),
                           ("head", "head_fwd")):  # fmt: skip
            net = getattr(module, name)  # SSLModule declares all four; teacher is None without one
            if isinstance(net, nn.Module):  # a compiled backbone runs its hooks eagerly (graph breaks)
                self._handles.append(net.register_forward_pre_hook(torch.compiler.disable(self._pre_hook(part))))
                self._handles.append(net.register_forward_hook(torch.compiler.disable(self._post_hook(part))))

    # --- clock --------------------------------------------------------------------------------
    def _mark(self) -> Mark:
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def _seconds(self, start: Mark, stop: Mark) -> float:
        if isinstance(start, float):
            return float(stop) - start  # type: ignore[arg-type]
        return start.elapsed_time(stop) / 1000.0  # type: ignore[arg-type]

    def _add(self, part: str, start: Mark, stop: Mark) -> None:
        if self._steps:
            self._steps[-1].setdefault(part, []).append((start, stop))

    # --- Lightning's actions ------------------------------------------------------------------
    @staticmethod
    def _hook(action: str) -> str:
        """'[Strategy]SingleDeviceStrategy.training_step' -> 'Strategy.training_step'."""
        kind, _, rest = action.partition("]")
        return f"{kind.lstrip('[')}.{rest.rpartition('.')[2]}"

    def start(self, action_name: str) -> None:
        hook = self._hook(action_name)
        if hook == "Strategy.training_step":
            self._in_training_step = True
        elif hook == "LightningModule.optimizer_step":
            self._hook_optimizers()
        elif hook == "LightningModule.on_after_backward":
            self._end_backward()
        if hook in _TIMED or hook == "LightningModule.on_before_optimizer_step":
            self._open[hook] = self._mark()
        if hook == _FETCH:  # a new step begins
            self._steps.append({"start": self._open[hook]})

    def stop(self, action_name: str) -> None:
        hook = self._hook(action_name)
        if hook == "Strategy.training_step":
            self._in_training_step = False
        if hook == "LightningModule.on_before_backward":  # loss.backward() comes next
            self._open["backward"] = self._mark()
        elif hook == "LightningModule.optimizer_step":
            self._end_optimizer_step()
        elif hook in _TIMED and hook in self._open:
            self._add(_TIMED[hook], self._open.pop(hook), self._mark())

    def _end_backward(self) -> None:
        """``loss.backward()`` ended: split it where the gradient reached the backbone outputs."""
        if "backward" not in self._open:
            return
        stop, start = self._mark(), self._open.pop("backward")
        grad = self._open.pop("backbone_grad", None)
        self._add("head_bwd", start, grad if grad is not None else stop)
        if grad is not None:
            self._add("backbone_bwd", grad, stop)

    def _end_optimizer_step(self) -> None:
        """``optimizer_step`` ended: the optimizer's own work, then ``after_optimizer_step``."""
        stop, done = self._mark(), self._open.pop("optimizer_done", None)
        start = self._open.pop("optimizer_math", None)
        if start is not None and done is not None:
            self._add("optimizer", start, done)
            self._add("hooks", done, stop)

    def _hook_optimizers(self) -> None:
        trainer = self.module._trainer  # LightningModule declares it: None until attached
        for optimizer in trainer.optimizers if trainer is not None else []:
            if id(optimizer) not in self._hooked_optimizers:
                self._hooked_optimizers.add(id(optimizer))
                self._handles.append(optimizer.register_step_post_hook(self._optimizer_done))

    def _optimizer_done(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._open["optimizer_done"] = self._mark()
        # optimizer.step() ran the closure (training_step, backward) first: its own work starts
        # at on_before_optimizer_step, which the closure calls last.
        self._open["optimizer_math"] = self._open.pop("LightningModule.on_before_optimizer_step", None)

    # --- module hooks -------------------------------------------------------------------------
    def _pre_hook(self, part: str) -> Any:
        def hook(net: nn.Module, args: Any) -> None:
            if part == "augment" or self._in_training_step:
                self._open[part] = self._mark()

        return hook

    def _post_hook(self, part: str) -> Any:
        def hook(net: nn.Module, args: Any, output: Any) -> None:
            start = self._open.pop(part, None)
            if start is None:
                return
            self._add(part, start, self._mark())
            if part == "augment":
                self.view_shapes = [tuple(v.shape[-2:]) for v in output]
            elif part == "backbone_fwd" and isinstance(output, Tensor) and output.requires_grad:
                output.register_hook(self._backbone_grad)

        return hook

    def _backbone_grad(self, grad: Tensor) -> None:
        """The first gradient to reach a backbone output ends the head's backward."""
        if "backbone_grad" not in self._open and "backward" in self._open:
            self._open["backbone_grad"] = self._mark()

    # --- results ------------------------------------------------------------------------------
    def durations(self) -> list[dict[str, float]]:
        """Seconds per part and ``step`` for every step followed by the start of another."""
        if self.cuda:
            torch.cuda.synchronize()
        out = []
        for step, following in zip(self._steps, self._steps[1:]):
            parts = {k: sum(self._seconds(a, b) for a, b in step.get(k, [])) for k in PARTS if k not in ("log", "loop")}
            inside = sum(self._seconds(a, b) for a, b in step.get("training_step", []))
            parts["log"] = max(inside - parts["backbone_fwd"] - parts["teacher_fwd"] - parts["head_fwd"], 0.0)
            total = self._seconds(step["start"], following["start"])
            parts["loop"] = total - sum(parts.values())
            parts["step"] = total
            out.append({k: parts[k] for k in (*PARTS, "step")})
        return out

    def teardown(self, stage: str | None) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        super().teardown(stage)


# Lightning's actions (``_hook`` form) timed by their own start and stop -> part.
_FETCH = "_TrainingEpochLoop.train_dataloader_next"
_TIMED: dict[str, str] = {
    _FETCH: "fetch",
    "LightningModule.transfer_batch_to_device": "h2d",
    "Strategy.training_step": "training_step",
    "LightningModule.optimizer_zero_grad": "optimizer",
    "LightningModule.on_after_backward": "hooks",
    "LightningModule.lr_scheduler_step": "optimizer",
}
