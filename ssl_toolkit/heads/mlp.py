"""Projector MLP builder shared by the heads, with the options the field's code names.

Each head's defaults follow its authors' code (see ``docs/methods/<method>.md``, section Projector):

==========  ==========  ==========  =========  ============================================
method      num_layers  batch_norm  last_norm  authors' file
==========  ==========  ==========  =========  ============================================
SimCLR v1   2           yes         ``bn``     google-research/simclr ``model_util.py`` (first commit)
SimCLR v2   3           yes         ``bn``     google-research/simclr ``tf2/model.py`` ProjectionHead
MoCo v2     2           no          ``none``   facebookresearch/moco ``moco/builder.py`` (``--mlp``)
SwAV        2           yes         ``none``   facebookresearch/swav ``src/resnet50.py``
AMCL        2           no          ``none``   LeiWangR/cl ``src/amcl_components/multi_head_projector.py``
Hydra       2           yes         ``ln``     erow/FastSSL ``layers/operation.py`` build_head (bias=False)
==========  ==========  ==========  =========  ============================================
"""

from __future__ import annotations

from torch import nn

from ssl_toolkit.checks import check_int

LAST_NORMS = ("none", "bn", "bn_affine", "bn_noaffine", "ln")


class ScaleBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d with a learned per-feature scale and no shift: (B, D) -> (B, D).

    TensorFlow's ``BatchNormalization(center=False, scale=True)``, which the official SimCLR code
    puts on the projector's output layer (``LinearLayer(use_bias=False, use_bn=True)``).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum, affine=True)
        self.bias = None  # unregisters the shift: F.batch_norm takes bias=None

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        nn.init.ones_(self.weight)


def _last_norm(kind: str, dim: int) -> nn.Module | None:
    if kind == "bn":
        return ScaleBatchNorm1d(dim)
    if kind == "bn_affine":
        return nn.BatchNorm1d(dim)
    if kind == "bn_noaffine":
        return nn.BatchNorm1d(dim, affine=False)
    if kind == "ln":
        return nn.LayerNorm(dim)
    return None


def build_mlp(
    in_dim: int,
    hidden_dim: int,
    out_dim: int,
    num_layers: int = 2,
    batch_norm: bool = False,
    last_norm: str = "none",
    bias: bool = True,
) -> nn.Sequential:
    """Projector: ``num_layers - 1`` blocks Linear -> [BN] -> ReLU, then Linear -> [last norm].

    (B, in_dim) -> (B, out_dim).

    Args:
        in_dim: input width F.
        hidden_dim: width of the hidden layers.
        out_dim: output width D.
        num_layers: Linear layers (SimCLR v1, MoCo v2, SwAV: 2; SimCLR v2: 3).
        batch_norm: BatchNorm1d after every hidden Linear ("hidden BN").
        last_norm: norm after the output Linear: ``none``; ``bn`` (BatchNorm, learned scale, no
            shift: the official SimCLR code); ``bn_affine`` (scale and shift: lightly's
            SimCLRProjectionHead); ``bn_noaffine`` (neither: MoCo v3, vitookit's ``last_norm='bn'``);
            ``ln`` (LayerNorm: Hydra's code).
        bias: bias on the Linear layers that no BatchNorm follows (the output Linear unless
            ``last_norm`` is a BN; every hidden Linear without ``batch_norm``). A Linear followed by
            a BatchNorm never has a bias: BN subtracts the batch mean, so it would have no effect
            (SimCLR's code drops it too; SwAV's and Hydra's keep it, an unused parameter).

    Raises:
        ValueError: a width or ``num_layers`` below 1, or an unknown ``last_norm``.
    """
    check_int("num_layers", num_layers)
    check_int("hidden_dim", hidden_dim if num_layers > 1 else 1)
    check_int("out_dim", out_dim)
    if last_norm not in LAST_NORMS:
        raise ValueError(f"last_norm: {last_norm!r} is not one of {', '.join(LAST_NORMS)}")
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(num_layers - 1):
        layers.append(nn.Linear(dim, hidden_dim, bias=bias and not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm1d(hidden_dim))
        layers.append(nn.ReLU(inplace=True))
        dim = hidden_dim
    norm = _last_norm(last_norm, out_dim)
    output_bn = last_norm.startswith("bn")
    layers.append(nn.Linear(dim, out_dim, bias=bias and not output_bn))
    if norm is not None:
        layers.append(norm)
    return nn.Sequential(*layers)
