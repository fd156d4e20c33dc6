"""DINO head: student and momentum-teacher projection heads + the DINO loss. Method page: docs/methods/dino.md."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from ssl_toolkit.checks import check_int
from ssl_toolkit.ema import cosine_momentum, ema_update
from ssl_toolkit.heads.base import BatchInfo, HeadOutput, SSLHead, Views, embedding_spread
from ssl_toolkit.losses.dino import DINOLoss


class DINOProjection(nn.Module):
    """The DINO projection head (facebookresearch/dino ``vision_transformer.py`` ``DINOHead``).

    ``num_layers`` Linear layers (GELU, optional BatchNorm, between them) down to a bottleneck,
    L2-normalization, then a weight-normalized Linear without bias to K prototypes whose norm g is
    fixed at 1 when ``norm_last_layer``. Linear weights are truncated-normal (std 0.02), biases 0.

    Shapes:
        (B, F) -> (B, K) logits; ``bottleneck`` gives the (B, bottleneck_dim) unit vectors.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        bottleneck_dim: int,
        out_dim: int,
        num_layers: int,
        batch_norm: bool,
        norm_last_layer: bool,
    ) -> None:
        super().__init__()
        for name, value in (
            ("hidden_dim", hidden_dim),
            ("bottleneck_dim", bottleneck_dim),
            ("out_dim", out_dim),
            ("num_layers", num_layers),
        ):
            check_int(name, value)
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(num_layers - 1):
            layers += [nn.Linear(dim, hidden_dim)] + ([nn.BatchNorm1d(hidden_dim)] if batch_norm else []) + [nn.GELU()]
            dim = hidden_dim
        layers.append(nn.Linear(dim, bottleneck_dim))
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        magnitude = self.last_layer.parametrizations.weight.original0
        with torch.no_grad():
            magnitude.fill_(1.0)
        magnitude.requires_grad_(not norm_last_layer)

    def bottleneck(self, feats: Tensor) -> Tensor:
        return F.normalize(self.mlp(feats), dim=-1)

    def forward(self, feats: Tensor) -> Tensor:
        return self.last_layer(self.bottleneck(feats))


class DINOHead(SSLHead):
    """DINO (Caron et al., ICCV 2021, arXiv 2104.14294): self-distillation without labels.

    The student projection g_s (``DINOProjection``) scores every crop, the teacher g_t (an EMA copy
    of g_s on the EMA backbone that ``SSLModule`` keeps, ``uses_teacher``) scores the global crops
    (the views at the first view's resolution), and ``DINOLoss`` matches the centred, sharpened
    teacher distribution from every other crop (Eq. 3; centre all-reduced across processes,
    teacher temperature warm-up, student temperature 0.1). The teacher's momentum follows the
    cosine schedule from ``base_momentum`` to ``final_momentum`` (paper: 0.996 -> 1) for the
    backbone and g_t alike. The last layer's gradient is dropped while the epoch is below
    ``freeze_last_layer_epochs`` (paper: 1), as ``main_dino.py`` ``cancel_gradients_last_layer``.

    Args:
        in_dim: backbone feature width F (filled in by the recipe builder).
        hidden_dim, bottleneck_dim, num_layers, batch_norm: the MLP (paper: 2048, 256, 3, no BN).
        out_dim: K prototypes (paper: 65536).
        norm_last_layer: fix the last layer's weight norm at 1 (paper: yes).
        teacher_temp, warmup_teacher_temp, warmup_teacher_temp_epochs, student_temp,
            center_momentum: see ``DINOLoss``.
        base_momentum, final_momentum: teacher momentum at the first and the last step, in [0, 1].
        freeze_last_layer_epochs: epochs without updates of the last layer (>= 0).

    Raises:
        ValueError: a bad argument (naming the keyword); at forward, fewer than 2 views or no
            teacher features.

    Shapes:
        views.feats: V >= 2 tensors (B, F), global crops first; views.teacher: T >= 1 global crops.
        ``embed``: (B, bottleneck_dim) unit vectors. Logs ``z_std`` and ``teacher_temp``.
    """

    uses_teacher = True

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        out_dim: int = 65536,
        num_layers: int = 3,
        batch_norm: bool = False,
        norm_last_layer: bool = True,
        teacher_temp: float = 0.04,
        warmup_teacher_temp: float = 0.04,
        warmup_teacher_temp_epochs: int = 0,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        base_momentum: float = 0.996,
        final_momentum: float = 1.0,
        freeze_last_layer_epochs: int = 1,
    ) -> None:
        super().__init__()
        check_int("freeze_last_layer_epochs", freeze_last_layer_epochs, minimum=0)
        for name, m in (("base_momentum", base_momentum), ("final_momentum", final_momentum)):
            if not 0.0 <= m <= 1.0:
                raise ValueError(f"{name}: must be in [0, 1], got {m}")
        self.projection = DINOProjection(
            in_dim, hidden_dim, bottleneck_dim, out_dim, num_layers, batch_norm, norm_last_layer
        )
        self.teacher_projection = copy.deepcopy(self.projection).requires_grad_(False)
        self.loss = DINOLoss(
            out_dim, teacher_temp, warmup_teacher_temp, warmup_teacher_temp_epochs, student_temp, center_momentum
        )
        self.base_momentum, self.final_momentum = base_momentum, final_momentum
        self.freeze_last_layer_epochs = freeze_last_layer_epochs
        self.epoch = 0  # the epoch of the last forward, read by after_backward

    def embed(self, feats: Tensor) -> Tensor:
        """(B, F) -> (B, bottleneck_dim): the student's L2-normalized bottleneck (before the prototypes)."""
        return self.projection.bottleneck(feats)

    def teacher_momentum(self, step: int, total_steps: int) -> float:
        return cosine_momentum(self.base_momentum, self.final_momentum, step, total_steps)

    def after_backward(self, step: int) -> None:
        if self.epoch < self.freeze_last_layer_epochs:
            for param in self.projection.last_layer.parameters():
                param.grad = None

    def after_step(self, step: int, total_steps: int) -> None:
        ema_update(self.teacher_projection, self.projection, self.teacher_momentum(step, total_steps))

    def forward(self, views: Views, batch: BatchInfo) -> HeadOutput:
        if len(views.feats) < 2 or not views.teacher:
            raise ValueError("DINOHead needs at least 2 views and the momentum backbone's features of the global views")
        self.epoch = batch.epoch
        student = self.projection(torch.cat(views.feats)).chunk(len(views.feats))
        with torch.no_grad():
            teacher = self.teacher_projection(torch.cat(views.teacher)).chunk(len(views.teacher))
        loss = self.loss(list(student), list(teacher), batch.epoch)
        temp = self.loss.teacher_temperature(batch.epoch)
        logs = {"z_std": embedding_spread(student[0]), "teacher_temp": loss.detach().new_zeros(()) + temp}
        return HeadOutput(loss=loss, logs=logs)
