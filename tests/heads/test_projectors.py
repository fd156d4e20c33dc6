"""Every head's default projector has the layer structure its authors' code has (documented in
docs/methods/<method>.md, section Projector): module types, widths, biases, norms, in order."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ssl_toolkit.heads import AMCLHead, HydraHead, MoCHiHead, MoCoV2FTHead, MoCoV2Head, SimCLRHead, SwAVHead
from ssl_toolkit.heads.mlp import ScaleBatchNorm1d, build_mlp
from ssl_toolkit.losses.dcl import DCLLoss

F, H, D = 24, 40, 8  # input, hidden, output widths: small, distinct


def describe(projector: nn.Module) -> list[tuple]:
    """(type, widths, has bias / affine parts) per layer, in order."""
    rows: list[tuple] = []
    for m in projector:
        if isinstance(m, nn.Linear):
            rows.append(("Linear", m.in_features, m.out_features, m.bias is not None))
        elif isinstance(m, nn.BatchNorm1d):
            rows.append((type(m).__name__, m.num_features, m.weight is not None, m.bias is not None))
        elif isinstance(m, nn.LayerNorm):
            rows.append(("LayerNorm", m.normalized_shape[0], m.weight is not None, m.bias is not None))
        elif isinstance(m, nn.ReLU):
            rows.append(("ReLU",))
        else:
            raise AssertionError(f"unexpected layer {m!r}")
    return rows


# The documented defaults, written out by hand from the authors' files.
SIMCLR_V1 = [  # google-research/simclr model_util.py projection_head (first commit): BN everywhere
    ("Linear", F, H, False), ("BatchNorm1d", H, True, True), ("ReLU",),
    ("Linear", H, D, False), ("ScaleBatchNorm1d", D, True, False),
]  # fmt: skip
SIMCLR_V2 = [  # tf2/model.py ProjectionHead, num_proj_layers=3
    ("Linear", F, H, False), ("BatchNorm1d", H, True, True), ("ReLU",),
    ("Linear", H, H, False), ("BatchNorm1d", H, True, True), ("ReLU",),
    ("Linear", H, D, False), ("ScaleBatchNorm1d", D, True, False),
]  # fmt: skip
MOCO_V2 = [("Linear", F, H, True), ("ReLU",), ("Linear", H, D, True)]  # moco/builder.py --mlp
SWAV = [  # swav src/resnet50.py (its hidden bias before BN is dropped: BN cancels it)
    ("Linear", F, H, False), ("BatchNorm1d", H, True, True), ("ReLU",), ("Linear", H, D, True),
]  # fmt: skip
AMCL = [("Linear", F, H, True), ("ReLU",), ("Linear", H, D, True)]  # multi_head_projector.py
HYDRA = [  # FastSSL layers/operation.py build_head(2, ..., last_norm='ln'): output Linear bias=False
    ("Linear", F, H, False), ("BatchNorm1d", H, True, True), ("ReLU",),
    ("Linear", H, D, False), ("LayerNorm", D, True, True),
]  # fmt: skip

CASES = {
    "simclr_v1": (lambda: [SimCLRHead(F, hidden_dim=H, out_dim=D).projector], SIMCLR_V1),
    "simclr_v2": (lambda: [SimCLRHead(F, hidden_dim=H, out_dim=D, num_layers=3).projector], SIMCLR_V2),
    "dcl": (lambda: [SimCLRHead(F, hidden_dim=H, out_dim=D, loss=DCLLoss(0.1)).projector], SIMCLR_V1),
    "mocov2": (lambda: [MoCoV2Head(F, hidden_dim=H, out_dim=D, queue_size=16).projector], MOCO_V2),
    "mochi": (lambda: [MoCHiHead(F, hidden_dim=H, out_dim=D, queue_size=16).projector], MOCO_V2),
    "mocov2_ft": (lambda: [MoCoV2FTHead(F, hidden_dim=H, out_dim=D, queue_size=16).projector], MOCO_V2),
    "swav": (lambda: [SwAVHead(F, hidden_dim=H, out_dim=D, num_prototypes=10).projector], SWAV),
    "amcl": (lambda: list(AMCLHead(F, num_heads=2, hidden_dim=H, out_dim=D).projectors), AMCL),
    "hydra": (lambda: [HydraHead(F, num_classes=3, hidden_dim=H, out_dim=D).projector], HYDRA),
}


@pytest.mark.parametrize("method", list(CASES))
def test_default_projector_is_the_authors(method: str) -> None:
    make, expected = CASES[method]
    for projector in make():
        assert describe(projector) == expected


def test_amcl_default_hidden_width_is_the_codes_512() -> None:
    assert AMCLHead(512).projectors[0][0].out_features == 512


def test_scale_batchnorm_has_a_scale_and_no_shift() -> None:
    torch.manual_seed(0)
    bn = ScaleBatchNorm1d(4)
    assert [n for n, _ in bn.named_parameters()] == ["weight"]
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    x = torch.randn(16, 4) * 3 + 5
    expected = (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + bn.eps) * bn.weight
    torch.testing.assert_close(bn(x), expected)
    bn.reset_parameters()  # no shift to reset: must not fail
    assert torch.equal(bn.weight.detach(), torch.ones(4))


@pytest.mark.parametrize(
    ("last_norm", "kind", "affine"),
    [("bn", "ScaleBatchNorm1d", (True, False)), ("bn_affine", "BatchNorm1d", (True, True)),
     ("bn_noaffine", "BatchNorm1d", (False, False)), ("ln", "LayerNorm", (True, True))],
)  # fmt: skip
def test_last_norm_options(last_norm: str, kind: str, affine: tuple[bool, bool]) -> None:
    rows = describe(build_mlp(F, H, D, last_norm=last_norm))
    assert rows[-1] == (kind, D, *affine)
    assert rows[-2] == ("Linear", H, D, last_norm == "ln")  # no bias before a BN


def test_bias_false_drops_every_linear_bias() -> None:
    assert [r[3] for r in describe(build_mlp(F, H, D, num_layers=3, bias=False)) if r[0] == "Linear"] == [False] * 3


def test_unknown_last_norm_names_the_key() -> None:
    with pytest.raises(ValueError, match="^last_norm: 'batchnorm' is not one of"):
        build_mlp(F, H, D, last_norm="batchnorm")


def test_recipe_keys_reach_the_projector() -> None:
    from ssl_toolkit.errors import RecipeError
    from ssl_toolkit.heads import HEADS
    from ssl_toolkit.recipe.build import _construct

    head = _construct("head", HEADS, {"name": "simclr", "in_dim": F, "hidden_dim": H, "out_dim": D,
                                      "last_norm": "bn_affine", "batch_norm": False})  # fmt: skip
    assert describe(head.projector) == [("Linear", F, H, True), ("ReLU",), ("Linear", H, D, False),
                                        ("BatchNorm1d", D, True, True)]  # fmt: skip
    with pytest.raises(RecipeError, match="^head.last_norm: 'x' is not one of"):
        _construct("head", HEADS, {"name": "simclr", "in_dim": F, "last_norm": "x"})
