"""Backbones: any timm model by name, returning pooled features of a width decided here once."""

from __future__ import annotations

import contextlib
import difflib
import logging
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import timm
import torch
from timm.models import get_pretrained_cfg
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

HUB_PREFIXES = ("hf-hub:", "hf_hub:")


@dataclass(frozen=True)
class BackboneFacts:
    """What :func:`build_backbone` decided about the model it returns, kept beside the model (on
    ``SSLModule.backbone_facts``) instead of as attributes stuck on it.

    Attributes:
        feature_dim: F, the width of the pooled features (B, F) the model returns, measured by a
            forward pass (for some timm families ``head_hidden_size``, not ``num_features``).
        timm_kwargs: the keywords besides ``name``/``pretrained``/``num_classes`` the model was
            created with (``timm.create_model(name, num_classes=0, **timm_kwargs)`` rebuilds it).
        recomputes_forward: gradient checkpointing is on (the backward pass runs layers again).
    """

    feature_dim: int
    timm_kwargs: dict[str, Any] = field(default_factory=dict)
    recomputes_forward: bool = False

    @classmethod
    def of(cls, backbone: nn.Module) -> BackboneFacts:
        """Facts of a backbone not built by :func:`build_backbone` (a user's own module): its width is
        timm's ``head_hidden_size`` or ``num_features``.

        Raises:
            ValueError: the module has neither attribute.
        """
        for attr in ("head_hidden_size", "num_features"):
            # getattr with a default: a foreign module declares at most one of them (or none).
            width = getattr(backbone, attr, None)
            if isinstance(width, int):
                return cls(feature_dim=width)
        raise ValueError(
            f"backbone: {type(backbone).__name__} has no head_hidden_size/num_features attribute; "
            "pass backbone_facts=BackboneFacts(feature_dim=F)"
        )


def build_backbone(
    name: str,
    pretrained: bool = False,
    small_image_stem: bool = False,
    drop_path_rate: float = 0.0,
    grad_checkpointing: bool = False,
    model_kwargs: dict[str, Any] | None = None,
    input_sizes: Mapping[str, int] | None = None,
    sincos_pos_embed: bool = False,
    freeze_patch_embed: bool = False,
) -> tuple[nn.Module, BackboneFacts]:
    """``timm.create_model(name, num_classes=0)``: images (B, 3, H, W) -> pooled features (B, F),
    and the :class:`BackboneFacts` decided while building it.

    F is decided here, once, by one forward pass without gradient of a zero image in eval mode at
    every size of ``input_sizes`` (batch 1, so no running statistic and no random number changes):
    it is what the model returns, which for some families (MobileNetV3, EfficientViT, GhostNet,
    HGNetV2: a conv head after the pooling) is timm's ``head_hidden_size``, not ``num_features``.
    The result is ``facts.feature_dim``; the keywords given to ``timm.create_model`` (besides
    ``name``, ``pretrained``, ``num_classes``) are ``facts.timm_kwargs``, and
    ``facts.recomputes_forward`` says whether gradient checkpointing is on. The model itself gets
    no attribute: its ``state_dict`` is timm's.

    Models that timm builds for one input size (``pretrained_cfg["fixed_input_size"]``: ViT, DeiT,
    Swin, EVA, CoAtNet, MaxViT, LeViT, ...) are created with ``img_size`` = the first (global) size,
    and with ``dynamic_img_size=True`` when views come at several sizes (multi-crop), where timm
    offers it (ViT family, Swin): position embeddings are then interpolated for the other sizes.

    Args:
        name: any timm model name (``timm.list_models()``), optionally with a pretrained tag
            (``resnet50.a1_in1k``), or ``hf-hub:org/model`` (needs network access).
        pretrained: load timm's pretrained weights (needs network access or a filled hub cache).
        small_image_stem: for 32 px data: replace a ResNet-style stem by one 3x3 stride-1 conv and
            drop the max-pool (the CIFAR stem of SimCLR and solo-learn), so a 32 px image keeps
            32x32 resolution into the first stage instead of 8x8.
        drop_path_rate: stochastic depth, for models that support it (0 = off).
        grad_checkpointing: recompute activations in the backward pass (timm's
            ``set_grad_checkpointing``): less memory for large batches on small GPUs, ~30% slower.
            The recomputation would update BatchNorm running statistics a second time;
            ``SSLModule`` keeps them at their value after the forward pass (``BatchNormStats``).
        model_kwargs: extra keywords for ``timm.create_model`` that shape the model, e.g.
            ``{patch_size: 4}`` for a ViT at 32 px or ``{depth: 6}``; pretrained weights must fit.
        input_sizes: image sides in px the model must run at, keyed by where they come from (the
            recipe builder passes ``{"augment.size": 224, "augment.local_size": 96}``); the first
            is the global size. None: the model's default input size.
        sincos_pos_embed: ViTs: a fixed (not learned) 2-D sin-cos position embedding, zero at the
            class token, as MoCo v3's ``vits.py`` (Chen, Xie and He, ICCV 2021, arXiv 2104.02057,
            Sec. 4.2 and ``build_2d_sincos_position_embedding``).
        freeze_patch_embed: ViTs: MoCo v3's random patch projection (Sec. 4.2, ``stop_grad_conv1``):
            the patch projection is initialized as in ``vits.py`` (Xavier-uniform weight, zero bias)
            and never trained. Both are training stabilisers for ViTs; MoCo v3's ViT-S has 12 heads
            (timm's ``vit_small_*``: 6), i.e. ``model_kwargs: {num_heads: 12}``.

    Raises:
        ValueError: one line starting with the keyword at fault (``name: ...``, ``pretrained: ...``,
            ``small_image_stem: ...``, ``grad_checkpointing: ...``, ``model_kwargs: ...``,
            ``sincos_pos_embed: ...``, ``freeze_patch_embed: ...``): an unknown model or pretrained tag,
            a ViT option on a model without patch embedding, a hub that cannot be reached, or a model
            that cannot run at one of ``input_sizes`` (with sizes that would work).

    Example:
        >>> model, facts = build_backbone("mobilenetv3_small_050", input_sizes={"augment.size": 32})
        >>> facts.feature_dim, model.num_features
        (1024, 288)
    """
    is_hub = name.startswith(HUB_PREFIXES)
    if not is_hub and not timm.is_model(name):
        close = difflib.get_close_matches(name.split(".")[0], timm.list_models(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else " (see timm.list_models())"
        raise ValueError(f"name: unknown timm model {name!r}{hint}")
    sizes = {str(k): int(v) for k, v in (input_sizes or {}).items()}
    for key, side in sizes.items():
        if side < 1:
            raise ValueError(f"name: {key}={side} px is not an image size")
    kwargs: dict[str, Any] = dict(model_kwargs or {})
    if drop_path_rate > 0:
        kwargs["drop_path_rate"] = drop_path_rate
    cfg = None if is_hub else _pretrained_cfg(name)
    added: list[str] = []  # size keywords chosen here (dropped again if the family does not take them)
    # getattr with a default: a hub model has no cfg (None), and older timm configs lack the field.
    if getattr(cfg, "fixed_input_size", False) and sizes:
        if "img_size" not in kwargs:
            kwargs["img_size"] = next(iter(sizes.values()))
            added.append("img_size")
        if len(set(sizes.values())) > 1 and "dynamic_img_size" not in kwargs:
            kwargs["dynamic_img_size"] = True
            added.append("dynamic_img_size")
    model, kwargs = _create(name, pretrained, kwargs, added)
    if small_image_stem:
        _use_small_image_stem(model, name)
    if sincos_pos_embed:
        _use_sincos_pos_embed(model, name)
    if freeze_patch_embed:
        _freeze_patch_embed(model, name)
    if grad_checkpointing:
        try:
            model.set_grad_checkpointing(True)
        except (AssertionError, NotImplementedError, AttributeError):
            raise ValueError(f"grad_checkpointing: timm's {name!r} does not support it") from None
    if not sizes:
        sizes = {"input size": int(model.pretrained_cfg.get("input_size", (3, 224, 224))[-1])}
    width = _check_sizes(model, name, sizes, kwargs)
    return model, BackboneFacts(feature_dim=width, timm_kwargs=kwargs, recomputes_forward=bool(grad_checkpointing))


class BatchNormStats:
    """The running statistics of every BatchNorm layer of a module, saved and put back.

    With gradient checkpointing the backward pass runs checkpointed segments forward again, in
    training mode, and every BatchNorm layer there updates its running mean/var and
    ``num_batches_tracked`` a second time. Normalization itself uses the batch statistics in
    training mode, so outputs and gradients are unchanged; only the running statistics drift.
    Saving them after the forward pass and restoring them after the backward pass leaves exactly
    one update per step, as without checkpointing. Layers are looked up at each :meth:`save`
    (``.to(device)`` and SyncBatchNorm conversion replace buffers and modules).
    """

    def __init__(self) -> None:
        self.saved: list[tuple[Tensor, Tensor]] = []

    def save(self, module: nn.Module) -> None:
        """Copy the running statistics of every ``_BatchNorm`` layer of ``module``."""
        self.saved = [
            (buf, buf.detach().clone())
            for m in module.modules()
            if isinstance(m, _BatchNorm) and m.track_running_stats
            for buf in (m.running_mean, m.running_var, m.num_batches_tracked)
            if buf is not None
        ]

    def restore(self) -> None:
        """Write the saved values back into the same buffers (a no-op if nothing was saved)."""
        with torch.no_grad():
            for buf, value in self.saved:
                buf.copy_(value)
        self.saved = []


# --- helpers ------------------------------------------------------------------------------------
def _create(name: str, pretrained: bool, kwargs: dict[str, Any], added: list[str]) -> tuple[nn.Module, dict[str, Any]]:
    """``timm.create_model`` with timm's errors turned into one line naming the recipe key.

    Size keywords in ``added`` that this model family does not take are dropped and the model is
    created again; the size check then says what the model cannot do. Returns the model and the
    keywords it was created with."""
    try:
        with _quiet_hub():
            return timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs), kwargs
    except TypeError as e:
        for key in added:
            if f"'{key}'" in str(e):
                rest = [k for k in added if k != key]
                return _create(name, pretrained, {k: v for k, v in kwargs.items() if k != key}, rest)
        bad = next((k for k in kwargs if f"'{k}'" in str(e)), None)
        key = "drop_path_rate" if bad == "drop_path_rate" else f"model_kwargs.{bad}" if bad else "model_kwargs"
        raise ValueError(f"{key}: timm's {name!r} does not take it ({_first_line(e)})") from None
    except Exception as e:  # hub/network errors (OSError, huggingface_hub errors) and anything else
        raise _network_or(name, pretrained, e) from None


@contextlib.contextmanager
def _quiet_hub() -> Iterator[None]:
    """No per-retry hub warnings: a failure becomes one error line instead."""
    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _pretrained_cfg(name: str) -> Any:
    """timm's pretrained config of a registry name; a tag timm does not have is refused here."""
    try:
        return get_pretrained_cfg(name, allow_unregistered=True)
    except RuntimeError as e:
        if "Invalid pretrained tag" not in str(e):
            raise
        base, _, tag = name.partition(".")
        tags = [t.partition(".")[2] for t in timm.list_pretrained(f"{base}.*")]
        known = f"tags: {', '.join(tags)}" if tags else "it has no pretrained weights"
        raise ValueError(f"name: {base!r} has no pretrained tag {tag!r} ({known})") from None


def _network_or(name: str, pretrained: bool, e: BaseException) -> ValueError:
    text = _first_line(e)
    if name.startswith(HUB_PREFIXES):
        return ValueError(f"name: cannot fetch {name!r} from the Hugging Face hub ({type(e).__name__}: no network, "
                          "or no such repository); offline, use a timm registry name (timm.list_models())")  # fmt: skip
    if pretrained:
        return ValueError(f"pretrained: cannot load the pretrained weights of {name!r} ({type(e).__name__}: {text}); "
                          "set backbone.pretrained=false or make the model hub reachable")  # fmt: skip
    return ValueError(f"name: timm cannot create {name!r} ({text})")


def _first_line(e: BaseException) -> str:
    lines = [line for line in str(e).splitlines() if line.strip()]
    return lines[0].strip()[:200] if lines else type(e).__name__


def _patch_size(model: nn.Module) -> int | None:
    # getattr with defaults here and below: which layers a timm model has depends on its family
    # (ViTs have patch_embed/pos_embed, ResNets conv1/bn1/maxpool, most CNNs feature_info).
    patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    if isinstance(patch, (tuple, list)):
        patch = patch[0]
    return int(patch) if isinstance(patch, int) else None


def _runs(model: nn.Module, side: int) -> Tensor | None:
    """Pooled features of one zero image of ``side`` px (eval mode, no gradient), None on failure."""
    try:
        with torch.no_grad():
            return model(torch.zeros(1, 3, side, side))
    except Exception:  # any failure means "cannot run at this size"
        return None


def _check_sizes(model: nn.Module, name: str, sizes: dict[str, int], kwargs: dict[str, Any]) -> int:
    """Run the model once at every requested size; the width of its output, or a one-line refusal."""
    patch = _patch_size(model)
    padded = bool(kwargs.get("dynamic_img_pad"))
    step = patch or int((getattr(model, "feature_info", None) or [{}])[-1].get("reduction", 32))  # family-dependent
    was_training = model.training
    model.eval()
    try:
        width = None
        fixed_side = kwargs.get("img_size") if not kwargs.get("dynamic_img_size") else None
        for key, side in sizes.items():
            if patch and side % patch and not padded:
                ok = ", ".join(f"{c} px" for c in (side // patch * patch, side // patch * patch + patch) if c > 0)
                raise ValueError(f"name: {name!r} cannot run at {key}={side} px: its patch size {patch} does "
                                 f"not divide it (sizes that work: {ok})")  # fmt: skip
            if fixed_side is not None and side != fixed_side:
                raise ValueError(f"name: {name!r} runs at one input size only ({fixed_side} px; timm offers no "
                                 f"dynamic_img_size for it), but {key}={side} px: give every view the same size "
                                 "(e.g. augment.num_local=0) or pick a model without a fixed size")  # fmt: skip
            out = _runs(model, side)
            if out is None or out.ndim != 2:
                ok = _nearby(model, side, step, fixed_side)
                raise ValueError(f"name: {name!r} cannot run at {key}={side} px (sizes that work: {ok})")
            if width is not None and out.shape[1] != width:
                raise ValueError(f"name: {name!r} returns {out.shape[1]} features at {side} px but {width} "
                                 f"at {next(iter(sizes.values()))} px")  # fmt: skip
            width = int(out.shape[1])
    finally:
        model.train(was_training)
    assert width is not None
    return width


def _nearby(model: nn.Module, side: int, step: int, fixed_side: int | None) -> str:
    """Up to two multiples of ``step`` near ``side`` at which the model runs (fixed-size models:
    their one size)."""
    if fixed_side is not None:
        return f"{fixed_side} only"
    below = side // step * step
    candidates = [c for c in (below, below + step, below + 2 * step, below + 3 * step) if c > 0 and c != side]
    ok = [c for c in candidates if (out := _runs(model, c)) is not None and out.ndim == 2][:2]
    return ", ".join(f"{c} px" for c in ok) if ok else f"none near {side} px"


def _use_small_image_stem(model: nn.Module, name: str) -> None:
    conv1 = getattr(model, "conv1", None)  # ResNet-style families only (see _patch_size)
    maxpool = getattr(model, "maxpool", None)
    bn1 = getattr(model, "bn1", None)
    if conv1 is None or maxpool is None or not isinstance(bn1, nn.BatchNorm2d):
        raise ValueError(f"small_image_stem: supported for ResNet-style timm models (conv1/bn1/maxpool), not {name!r}")
    # A deep stem (resnet*d, resnet10t) is a Sequential; its width out is bn1's width.
    model.conv1 = nn.Conv2d(3, bn1.num_features, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()


def sincos_2d_embedding(grid_h: int, grid_w: int, dim: int, temperature: float = 10000.0) -> Tensor:
    """MoCo v3's fixed 2-D sin-cos position embedding of a (grid_h, grid_w) patch grid: (h w, dim).

    facebookresearch/moco-v3 ``vits.py`` ``build_2d_sincos_position_embedding``: dim / 4 frequencies
    1 / temperature^(k / (dim / 4)); [sin, cos] of the first grid coordinate, then of the second.

    Raises:
        ValueError: ``dim`` not divisible by 4.
    """
    if dim % 4:
        raise ValueError(f"sincos_pos_embed: the embedding width must be divisible by 4, got {dim}")
    grid_w, grid_h = torch.meshgrid(
        torch.arange(grid_w, dtype=torch.float32), torch.arange(grid_h, dtype=torch.float32), indexing="ij"
    )
    pos_dim = dim // 4
    omega = 1.0 / temperature ** (torch.arange(pos_dim, dtype=torch.float32) / pos_dim)
    out_w = grid_w.flatten()[:, None] * omega[None, :]
    out_h = grid_h.flatten()[:, None] * omega[None, :]
    return torch.cat([torch.sin(out_w), torch.cos(out_w), torch.sin(out_h), torch.cos(out_h)], dim=1)


def _patch_grid(model: nn.Module, key: str, name: str) -> tuple[int, int]:
    grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)  # ViT-style families only
    if grid is None or not isinstance(getattr(model.patch_embed, "proj", None), nn.Conv2d):
        raise ValueError(f"{key}: supported for ViT-style timm models (patch_embed.proj), not {name!r}")
    return int(grid[0]), int(grid[1])


def _use_sincos_pos_embed(model: nn.Module, name: str) -> None:
    h, w = _patch_grid(model, "sincos_pos_embed", name)
    pos = getattr(model, "pos_embed", None)  # some ViT-style families have no learned one
    if not isinstance(pos, nn.Parameter) or pos.shape[1] < h * w:
        raise ValueError(f"sincos_pos_embed: {name!r} has no learned position embedding to replace")
    prefix = pos.shape[1] - h * w  # class (and register) tokens that have a position: zeros, as vits.py
    table = torch.cat([torch.zeros(prefix, pos.shape[2]), sincos_2d_embedding(h, w, pos.shape[2])])
    model.pos_embed = nn.Parameter(table[None].to(pos.dtype), requires_grad=False)


def _freeze_patch_embed(model: nn.Module, name: str) -> None:
    _patch_grid(model, "freeze_patch_embed", name)
    proj = model.patch_embed.proj
    fan = proj.in_channels * proj.kernel_size[0] * proj.kernel_size[1] + proj.out_channels
    with torch.no_grad():
        nn.init.uniform_(proj.weight, -math.sqrt(6.0 / fan), math.sqrt(6.0 / fan))
        if proj.bias is not None:
            nn.init.zeros_(proj.bias)
    proj.requires_grad_(False)
