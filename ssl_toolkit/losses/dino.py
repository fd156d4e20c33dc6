"""DINO: self-distillation with a centred, sharpened momentum teacher (Caron et al., 2021)."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_toolkit.checks import check_int, check_positive
from ssl_toolkit.distributed import is_distributed, world_size


class DINOLoss(nn.Module):
    """DINO (Caron et al., ICCV 2021, arXiv 2104.14294, Eq. 1-3 and Algorithm 1).

    For teacher outputs t_1..t_T (the global crops) and student outputs s_1..s_V (global crops
    first, then local crops), all (N, K)::

        P_t(i) = softmax((t_i - c) / tau_t),  log P_s(v) = log_softmax(s_v / tau_s)
        L = mean over pairs (i, v), v != i, of  mean_b  -sum_k P_t(i)_bk log P_s(v)_bk   (Eq. 3)

    then the centre moves: c <- m c + (1 - m) mean(t) over every teacher row of every process
    (Eq. 4; one all-reduce of the batch centre, so all processes keep the same c). The teacher
    temperature rises linearly from ``warmup_teacher_temp`` to ``teacher_temp`` over the first
    ``warmup_teacher_temp_epochs`` epochs (``np.linspace`` over epochs, as main_dino.py), then
    stays. The same pairs, reduction and centre as the authors' ``DINOLoss`` and lightly 1.6.
    The loss is the mean over this process's rows; the teacher carries no gradient. fp32 under
    autocast.

    Args:
        out_dim: K, the number of prototypes (width of the head's last layer).
        teacher_temp: tau_t after the warm-up (DINO: 0.04 to 0.07).
        warmup_teacher_temp: tau_t at epoch 0.
        warmup_teacher_temp_epochs: epochs of the linear warm-up (0: none).
        student_temp: tau_s (DINO: 0.1).
        center_momentum: m (DINO: 0.9).

    Shapes:
        student: V >= 2 tensors (N, K); teacher: 1 <= T <= V tensors (N, K) of the first T views.
        Returns a scalar; ``center`` is a persistent (1, K) buffer.

    Raises:
        ValueError: bad arguments; at forward, fewer than 2 views or T > V.

    Example:
        >>> loss = DINOLoss(out_dim=32)
        >>> student = [torch.randn(4, 32) for _ in range(4)]
        >>> loss(student, [torch.randn(4, 32) for _ in range(2)], epoch=0).shape
        torch.Size([])
    """

    # The centre moves by the all-reduced batch centre: the same on every process, so DDP need not
    # broadcast it before each forward (ssl_toolkit.process_state).
    identical_buffers = ("center",)

    def __init__(
        self,
        out_dim: int,
        teacher_temp: float = 0.04,
        warmup_teacher_temp: float = 0.04,
        warmup_teacher_temp_epochs: int = 0,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
    ) -> None:
        super().__init__()
        check_int("out_dim", out_dim)
        check_int("warmup_teacher_temp_epochs", warmup_teacher_temp_epochs, minimum=0)
        for name, value in (
            ("teacher_temp", teacher_temp),
            ("warmup_teacher_temp", warmup_teacher_temp),
            ("student_temp", student_temp),
        ):
            check_positive(name, value)
        if not 0.0 <= center_momentum <= 1.0:
            raise ValueError(f"center_momentum: must be in [0, 1], got {center_momentum}")
        self.teacher_temp, self.warmup_teacher_temp = float(teacher_temp), float(warmup_teacher_temp)
        self.warmup_teacher_temp_epochs = int(warmup_teacher_temp_epochs)
        self.student_temp, self.center_momentum = float(student_temp), float(center_momentum)
        self.register_buffer("center", torch.zeros(1, out_dim))

    def teacher_temperature(self, epoch: int) -> float:
        """tau_t at ``epoch``: ``linspace(warmup_teacher_temp, teacher_temp, E)[epoch]`` while
        ``epoch < E = warmup_teacher_temp_epochs``, then ``teacher_temp``."""
        e = self.warmup_teacher_temp_epochs
        if epoch >= e:
            return self.teacher_temp
        if e == 1:
            return self.warmup_teacher_temp
        return self.warmup_teacher_temp + (self.teacher_temp - self.warmup_teacher_temp) * max(epoch, 0) / (e - 1)

    @torch.no_grad()
    def update_center(self, teacher: Tensor) -> None:
        """c <- m c + (1 - m) * mean of the (T, N, K) teacher outputs over every process."""
        batch_center = teacher.sum(dim=(0, 1)).unsqueeze(0)  # (1, K)
        count = teacher.shape[0] * teacher.shape[1] * world_size()
        if is_distributed():
            dist.all_reduce(batch_center)
        self.center.mul_(self.center_momentum).add_(batch_center / count, alpha=1.0 - self.center_momentum)

    def forward(self, student: list[Tensor], teacher: list[Tensor], epoch: int) -> Tensor:
        num_student, num_teacher = len(student), len(teacher)
        if num_student < 2 or not 1 <= num_teacher <= num_student:
            raise ValueError(
                f"DINOLoss needs >= 2 student views and 1..V teacher views, got {num_student}, {num_teacher}"
            )
        with torch.autocast(device_type=student[0].device.type, enabled=False):
            t = torch.stack(teacher).detach().float()  # (T, N, K)
            p_teacher = F.softmax((t - self.center) / self.teacher_temperature(epoch), dim=-1)
            log_p_student = F.log_softmax(torch.stack(student).float() / self.student_temp, dim=-1)  # (V, N, K)
            ce = -torch.einsum("tbk,vbk->tv", p_teacher, log_p_student) / t.shape[1]  # (T, V): mean over rows
            same = torch.eye(num_teacher, num_student, dtype=torch.bool, device=ce.device)
            loss = ce.masked_fill(same, 0.0).sum() / (num_teacher * num_student - num_teacher)
        self.update_center(t)
        return loss
