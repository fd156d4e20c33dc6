"""Peer side-by-side: one SSL method built from lightly's modules and from ssl_toolkit, same budget.

    pip install -c constraints.txt -e '.[peers]'      # lightly; never a dependency of the library
    python benchmarks/peer_lightly.py                  # all seven methods x seeds 0 1 2
    python benchmarks/peer_lightly.py --methods simclr --seeds 0 --train-samples 2048   # quick look
    python benchmarks/peer_lightly.py --methods mocov2 --sides lightly_kornia_views     # swap the views

Besides the two sides of the table, ``--sides`` has swaps that locate a difference: lightly's model
and loop on the toolkit's views (``lightly_kornia_views``) or on torchvision's PIL crops coloured by
the toolkit (``lightly_pil_crops``), or on the toolkit's views rounded to 8-bit grey levels
(``lightly_kornia_views_8bit``), lightly's SwAV without its prototype bias
(``lightly_no_prototype_bias``), the toolkit's module in lightly's plain loop and data order
(``ssl_toolkit_plain_loop``), the toolkit's own defaults where they differ from lightly's model
(``ssl_toolkit_authors_defaults``) and the toolkit's old projector (``ssl_toolkit_no_bn``).

For every (seed, method) it trains the same ResNet-18 (timm, standard stem, 32 px) twice on the same
fixed subset of the Fashion-MNIST train split, at the same settings and for the same number of
steps, and runs ``lightly`` and ``ssl_toolkit`` alternately (their order flips with the seed), so a
burst of other work on a shared machine hits both alike:

* ``lightly``: lightly's projection head, loss, transform (PIL, in the DataLoader's workers), memory
  bank / prototypes / momentum helpers, trained by a plain PyTorch loop (lightly's examples);
* ``ssl_toolkit``: the toolkit's ``SSLModule`` built from a recipe (kornia augmentation in the
  training process) and trained by a Lightning ``Trainer``. Its model is lightly's: where the
  toolkit's default follows the authors' code and lightly does not, the recipe sets lightly's form
  (SimCLR: the output BatchNorm with a shift, ``last_norm: bn_affine``; SwAV: prototypes with a
  bias, ``prototype_bias: true``; DINO: no frozen last layer, ``freeze_last_layer_epochs: 0``).
  ``ssl_toolkit_authors_defaults`` keeps the toolkit's defaults.

Barlow Twins, VICReg and DINO see the same two 32 px views as the others (DINO: two global crops,
no local crops); their heads are narrower than the papers' (``Settings``), the same on both sides.

Both use the same SGD (same lr, momentum, weight decay; biases and norm parameters without decay),
no schedule, batch 256, one data-loading worker. Both backbones are then scored by the same
weighted k-NN (k = 200, T = 0.07, cosine; bank = the training subset, queries = a fixed 5000-image subset
of the test split, un-augmented images). Throughput = training views (and images) per second over all steps but the
first two (warm-up), data loading included.

Writes one JSON line per run to ``--out`` (default ``benchmarks/peer_lightly_{n}.jsonl``, ``{n}`` the
training budget: ``16k`` for 16384 images; ``benchmarks/peer_lightly.jsonl`` holds the earlier
2048-image runs) and prints the markdown table (mean and spread per method and side) that
BENCHMARKS.md shows.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import lightning.pytorch as pl
import timm
import torch
from torch import Tensor, nn

from ssl_toolkit.callbacks.throughput import Throughput
from ssl_toolkit.data.fashion_mnist import FashionMNISTData
from ssl_toolkit.heads import HEADS
from ssl_toolkit.metrics import knn_classify
from ssl_toolkit.optim import param_groups
from ssl_toolkit.recipe.build import build_parts, validate

METHODS = ("simclr", "mocov2", "swav", "byol", "barlow_twins", "vicreg", "dino")
MEAN, STD = 0.286, 0.353  # Fashion-MNIST pixel statistics (the shipped recipes')


@dataclass(frozen=True)
class Settings:
    """What both sides share."""

    root: str = "/usr/share/datasets/fashion-mnist"
    train_samples: int = 16384  # 64 steps of 256: the BENCHMARKS.md table
    val_samples: int = 5000  # k-NN queries: a fixed subset of the test split
    image_size: int = 32
    batch_size: int = 256
    epochs: int = 1
    num_workers: int = 1
    lr: float = 0.3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    hidden_dim: int = 512
    out_dim: int = 128
    temperature: float = 0.2  # SimCLR and MoCo v2
    queue_size: int = 4096  # MoCo v2
    swav_temperature: float = 0.1
    num_prototypes: int = 3000
    # Barlow Twins and VICReg: lightly's 3-Linear projector (BN + ReLU after the two hidden ones)
    # 512 -> 2048 -> 2048 -> 2048 (papers: 8192 wide), narrower so a step costs about a BYOL step.
    wide_hidden_dim: int = 2048
    wide_out_dim: int = 2048
    barlow_lambda: float = 0.0051  # the paper's (lightly's default 5e-3, ours 0.0051): set on both sides
    # Plain SGD at lr 0.3 (no LARS, no warm-up) diverges at the papers' loss scales (measured on 4
    # steps: Barlow's features reach a std of 1e11, VICReg's loss NaN at step 3), so both losses are
    # scaled by a constant, on both sides alike: Barlow x 1e-3 (our ``scale_loss``; lightly's loss
    # times it, as BYOL's below), VICReg's weights lambda, mu, nu / 25 (the paper's ratios 25:25:1).
    barlow_loss_scale: float = 1e-3
    vicreg_weights: tuple[float, float, float] = (1.0, 1.0, 0.04)
    # DINO: MLP 512 -> 512 -> 512 -> 256 (GELU, no BN), L2-normalize, weight-normalized 256 -> 4096
    # prototypes with g fixed at 1 (paper: 2048, 256, 65536); teacher t 0.04, student t 0.1, centre
    # momentum 0.9 (lightly's and our defaults); teacher EMA 0.99 -> 1 cosine as MoCo v2 and BYOL here.
    dino_hidden_dim: int = 512
    dino_bottleneck_dim: int = 256
    dino_out_dim: int = 4096
    dino_teacher_temp: float = 0.04
    dino_student_temp: float = 0.1
    skip_steps: int = 2  # warm-up steps left out of the throughput


@dataclass
class RunResult:
    method: str
    side: str
    seed: int
    knn_top1: float
    views_per_s: float
    images_per_s: float
    train_s: float
    steps: int


# RunResult's annotations -> the JSON values a line may hold there, and their name in an error
RUN_TYPES = {"str": (str, "string"), "int": (int, "integer"), "float": ((int, float), "number")}


def read_runs(path: Path) -> list[RunResult]:
    """The runs in a JSON-lines file of ``main``'s: one object with ``RunResult``'s keys a line,
    blank lines skipped. Raises ValueError naming the file, the line (from 1) and what is wrong."""
    try:
        text = path.read_text()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text (byte {e.start})") from None
    kinds = {f.name: RUN_TYPES[f.type] for f in fields(RunResult)}
    keys = ", ".join(kinds)
    runs = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not JSON ({e.msg}, column {e.colno})") from None
        if not isinstance(row, dict):
            raise ValueError(f"{where}: a JSON {type(row).__name__}, not an object with the keys {keys}")
        missing, unknown = [k for k in kinds if k not in row], sorted(set(row) - set(kinds))
        wrong = [f"{what} key(s) {', '.join(ks)}" for what, ks in [("missing", missing), ("unknown", unknown)] if ks]
        if wrong:
            raise ValueError(f"{where}: {'; '.join(wrong)} (a run has {keys})")
        for key, (kind, name) in kinds.items():
            if isinstance(row[key], bool) or not isinstance(row[key], kind):
                raise ValueError(f"{where}: {key} is {json.dumps(row[key])}, not a JSON {name}")
        if row["method"] not in METHODS:
            raise ValueError(f"{where}: method {row['method']!r} is not one of {', '.join(METHODS)}")
        runs.append(RunResult(**row))
    return runs


# --- shared: data and evaluation ------------------------------------------------------------------
def load_data(s: Settings) -> FashionMNISTData:
    data = FashionMNISTData(s.root, s.image_size, s.batch_size, s.num_workers, train_samples=s.train_samples,
                            val_samples=s.val_samples)  # fmt: skip
    data.setup("fit")
    return data


@torch.no_grad()
def embed(backbone: nn.Module, images: Tensor, chunk: int = 1024) -> Tensor:
    """uint8 (N, 1|3, S, S) -> backbone features (N, F), eval mode, normalized as in training."""
    backbone.eval()
    out = []
    for x in images.split(chunk):
        x = (x.expand(-1, 3, -1, -1).float() / 255 - MEAN) / STD
        out.append(backbone(x))
    return torch.cat(out)


def knn_top1(backbone: nn.Module, data: FashionMNISTData) -> float:
    """Weighted k-NN top-1 (k = 200, T = 0.07): bank = training subset, queries = test split."""
    train, test = data.train_set, data.val_set
    pred = knn_classify(embed(backbone, train.images), train.labels, embed(backbone, test.images), 200, 0.07)
    return (pred == test.labels).float().mean().item()


def sgd(model: nn.Module, s: Settings) -> torch.optim.SGD:
    return torch.optim.SGD(param_groups(model, s.weight_decay), lr=s.lr, momentum=s.momentum)


def new_backbone() -> nn.Module:
    return timm.create_model("resnet18", pretrained=False, num_classes=0)


# --- lightly --------------------------------------------------------------------------------------
class PILViews(torch.utils.data.Dataset):
    """The same uint8 images as PIL RGB, through a lightly transform (a list of view tensors)."""

    def __init__(self, images: Tensor, transform: object) -> None:
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> list[Tensor]:
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i, 0].numpy(), mode="L").convert("RGB"))


class PILCrops(torch.utils.data.Dataset):
    """Two torchvision ``RandomResizedCrop`` + flip crops of each image, on PIL, as uint8 (2, 1, S, S)
    (the crop half of lightly's transform, in the loader workers)."""

    def __init__(self, images: Tensor, s: Settings) -> None:
        import torchvision.transforms as T

        self.images = images
        self.crop = T.Compose([T.RandomResizedCrop(s.image_size, scale=(0.08, 1.0), antialias=True),
                               T.RandomHorizontalFlip(), T.PILToTensor()])  # fmt: skip

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> Tensor:
        from PIL import Image

        image = Image.fromarray(self.images[i, 0].numpy(), mode="L")
        return torch.stack([self.crop(image) for _ in range(2)])


class KorniaViews:
    """Batches of views from ssl_toolkit's kornia augmentation (the recipe's ``augment`` section,
    drawn in the training process), in place of lightly's PIL transform in the workers.

    ``pil_crops=True``: the crops (and flips) come from torchvision on PIL (``PILCrops``), only the
    colour jitter and normalization from ssl_toolkit's augmentation. ``eight_bit=True``: every
    finished view is rounded to 8-bit grey levels before normalization, as a PIL view ends."""

    def __init__(
        self, images: Tensor, s: Settings, seed: int, pil_crops: bool = False, eight_bit: bool = False
    ) -> None:
        from ssl_toolkit.augment import SimCLRAugment

        settings = {k: v for k, v in toolkit_recipe("simclr", s, seed)["augment"].items() if k != "name"}
        if pil_crops:  # a full-image crop (an exact copy) and no flip: only the colour half remains
            settings.update(num_views=1, crop_scale=[1.0, 1.0], crop_ratio=[1.0, 1.0], flip_p=0.0)
        self.augment, self.pil_crops, self.eight_bit = SimCLRAugment(**settings), pil_crops, eight_bit
        self.loader = torch.utils.data.DataLoader(
            PILCrops(images, s) if pil_crops else images, batch_size=s.batch_size, shuffle=True, drop_last=True,
            num_workers=s.num_workers if pil_crops else 0, generator=torch.Generator().manual_seed(seed),
        )  # fmt: skip

    def __len__(self) -> int:
        return len(self.loader)

    def views(self, batch: Tensor) -> list[Tensor]:
        if not self.pil_crops:
            views = self.augment(batch)
        else:
            crops = batch.transpose(0, 1).flatten(0, 1)  # (2 B, 1, S, S), view-major
            views = list(self.augment(crops)[0].chunk(2))
        if self.eight_bit:
            views = [((v * STD + MEAN) * 255).round().clamp(0, 255) / 255 for v in views]
            views = [(v - MEAN) / STD for v in views]
        return views

    def __iter__(self):  # noqa: ANN204
        return (self.views(batch) for batch in self.loader)


def lightly_run(
    method: str, data: FashionMNISTData, s: Settings, seed: int, prototype_bias: bool = True,
    views: str = "pil",
) -> tuple[nn.Module, dict]:  # fmt: skip
    """Train with lightly's modules; returns the backbone and the timing.

    ``prototype_bias=False`` removes the bias of lightly's ``SwaVPrototypes`` Linear (lightly 1.6
    builds it with ``nn.Linear(dim, K)``, bias on; the authors' SwAV prototypes have none).
    ``views="kornia"`` trains on ssl_toolkit's views (``KorniaViews``) instead of lightly's
    transform, ``views="pil_crops"`` on torchvision's PIL crops with ssl_toolkit's colour jitter:
    everything else is lightly's, so they isolate the augmentation and its two halves."""
    from lightly.loss import (
        BarlowTwinsLoss,
        DINOLoss,
        NegativeCosineSimilarity,
        NTXentLoss,
        SwaVLoss,
        VICRegLoss,
    )
    from lightly.models.modules import (
        BarlowTwinsProjectionHead,
        BYOLPredictionHead,
        BYOLProjectionHead,
        DINOProjectionHead,
        MoCoProjectionHead,
        SimCLRProjectionHead,
        SwaVProjectionHead,
        SwaVPrototypes,
    )
    from lightly.models.modules.heads import VICRegProjectionHead  # not re-exported by lightly 1.6
    from lightly.models.utils import update_momentum
    from lightly.transforms import SimCLRTransform, SwaVTransform
    from lightly.utils.scheduler import cosine_schedule

    torch.manual_seed(seed)
    normalize = {"mean": [MEAN] * 3, "std": [STD] * 3}
    jitter = {"cj_prob": 0.8, "cj_strength": 0.5, "random_gray_scale": 0.2, "gaussian_blur": 0.0}
    backbone = new_backbone()
    extra: dict[str, nn.Module] = {}
    if method == "swav":
        transform = SwaVTransform(crop_sizes=(s.image_size,), crop_counts=(2,), crop_min_scales=(0.08,),
                                  crop_max_scales=(1.0,), normalize=normalize, **jitter)  # fmt: skip
        head = SwaVProjectionHead(512, s.hidden_dim, s.out_dim)
        extra["prototypes"] = SwaVPrototypes(s.out_dim, s.num_prototypes)
        if not prototype_bias:
            extra["prototypes"].heads[0].bias = None  # scores = cosines, as the authors' SwAV
        criterion: nn.Module = SwaVLoss(temperature=s.swav_temperature)
    else:
        transform = SimCLRTransform(input_size=s.image_size, min_scale=0.08, normalize=normalize, **jitter)
        if method == "simclr":
            head = SimCLRProjectionHead(512, s.hidden_dim, s.out_dim)
            criterion = NTXentLoss(temperature=s.temperature)
        elif method == "byol":
            head = BYOLProjectionHead(512, s.hidden_dim, s.out_dim)
            extra["predictor"] = BYOLPredictionHead(s.out_dim, s.hidden_dim, s.out_dim)
            criterion = NegativeCosineSimilarity()
            extra["backbone_m"] = copy.deepcopy(backbone).requires_grad_(False)
            extra["head_m"] = copy.deepcopy(head).requires_grad_(False)
        elif method == "barlow_twins":
            head = BarlowTwinsProjectionHead(512, s.wide_hidden_dim, s.wide_out_dim)
            criterion = BarlowTwinsLoss(lambda_param=s.barlow_lambda, gather_distributed=False)
        elif method == "vicreg":
            head = VICRegProjectionHead(512, s.wide_hidden_dim, s.wide_out_dim, num_layers=3)
            lam, mu, nu = s.vicreg_weights
            criterion = VICRegLoss(lambda_param=lam, mu_param=mu, nu_param=nu)  # eps 1e-4 as ours
        elif method == "dino":
            dims = (512, s.dino_hidden_dim, s.dino_bottleneck_dim, s.dino_out_dim)
            head = DINOProjectionHead(*dims, batch_norm=False, freeze_last_layer=-1, norm_last_layer=True)
            criterion = DINOLoss(s.dino_out_dim, warmup_teacher_temp=s.dino_teacher_temp,
                                 teacher_temp=s.dino_teacher_temp, student_temp=s.dino_student_temp,
                                 center_momentum=0.9)  # fmt: skip
            extra["backbone_m"] = copy.deepcopy(backbone).requires_grad_(False)
            # The teacher head starts as a copy of the student's (the authors' and the toolkit's; lightly's
            # example builds a new one). Its old-style weight_norm cannot be deep-copied: load the state.
            extra["head_m"] = DINOProjectionHead(*dims, batch_norm=False, norm_last_layer=True)
            extra["head_m"].load_state_dict(head.state_dict())
            extra["head_m"].requires_grad_(False)
        else:
            head = MoCoProjectionHead(512, s.hidden_dim, s.out_dim)
            criterion = NTXentLoss(temperature=s.temperature, memory_bank_size=(s.queue_size, s.out_dim))
            extra["backbone_m"] = copy.deepcopy(backbone).requires_grad_(False)
            extra["head_m"] = copy.deepcopy(head).requires_grad_(False)
    model = nn.ModuleDict({"backbone": backbone, "head": head, **extra})
    trained = [m for k, m in extra.items() if k in ("prototypes", "predictor")]
    optimizer = sgd(nn.ModuleList([backbone, head, *trained]), s)
    loader: object = torch.utils.data.DataLoader(
        PILViews(data.train_set.images, transform), batch_size=s.batch_size, shuffle=True, drop_last=True,
        num_workers=s.num_workers, persistent_workers=s.num_workers > 0,
        generator=torch.Generator().manual_seed(seed),
    )  # fmt: skip
    if views != "pil":
        loader = KorniaViews(data.train_set.images, s, seed, pil_crops=views == "pil_crops",
                             eight_bit=views == "kornia_8bit")  # fmt: skip
    total = len(loader) * s.epochs
    model.train()
    step, images, start = 0, 0, None
    for epoch in range(s.epochs):
        for views in loader:
            if step == s.skip_steps:
                start = time.perf_counter()
            if method == "simclr":
                z0, z1 = head(backbone(torch.cat(views))).chunk(2)
                loss = criterion(z0, z1)
            elif method == "mocov2":  # symmetric, as ssl_toolkit's MoCoV2Head (both keys enqueued)
                m = cosine_schedule(step, total, 0.99, 1.0)
                update_momentum(backbone, extra["backbone_m"], m)
                update_momentum(head, extra["head_m"], m)
                x = torch.cat(views)
                q0, q1 = head(backbone(x)).chunk(2)
                with torch.no_grad():
                    k0, k1 = extra["head_m"](extra["backbone_m"](x)).chunk(2)
                loss = criterion(torch.cat([q0, q1]), torch.cat([k1, k0]))
            elif method == "byol":  # lightly's BYOL example, scaled to BYOLHead's sum of 2 - 2 cos
                m = cosine_schedule(step, total, 0.99, 1.0)
                update_momentum(backbone, extra["backbone_m"], m)
                update_momentum(head, extra["head_m"], m)
                x = torch.cat(views)
                p0, p1 = extra["predictor"](head(backbone(x))).chunk(2)
                with torch.no_grad():
                    z0, z1 = extra["head_m"](extra["backbone_m"](x)).chunk(2)
                loss = 4 + 2 * (criterion(p0, z1) + criterion(p1, z0))
            elif method in ("barlow_twins", "vicreg"):  # one backbone call, the projector per view (its
                f0, f1 = backbone(torch.cat(views)).chunk(2)  # BN statistics per view, as ViewPairsHead)
                loss = criterion(head(f0), head(f1))
                loss = loss * s.barlow_loss_scale if method == "barlow_twins" else loss
            elif method == "dino":  # lightly's DINO example, 2 global views, no local crops
                m = cosine_schedule(step, total, 0.99, 1.0)
                update_momentum(backbone, extra["backbone_m"], m)
                update_momentum(head, extra["head_m"], m)
                x = torch.cat(views)
                student = head(backbone(x)).chunk(2)
                with torch.no_grad():
                    teacher = extra["head_m"](extra["backbone_m"](x)).chunk(2)
                loss = criterion(list(teacher), list(student), epoch=epoch)
            else:
                extra["prototypes"].normalize()
                z = nn.functional.normalize(head(backbone(torch.cat(views))), dim=1)
                p = list(extra["prototypes"](z, step).chunk(2))
                loss = criterion(high_resolution_outputs=p, low_resolution_outputs=[])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if method == "dino":
                head.cancel_last_layer_gradients(current_epoch=epoch)  # freeze_last_layer=-1: never
            optimizer.step()
            if start is not None:
                images += views[0].shape[0]
            step += 1
    seconds = time.perf_counter() - start
    return backbone, {"images": images, "seconds": seconds, "steps": step}


# --- ssl_toolkit ----------------------------------------------------------------------------------
# Where lightly's model differs from the authors' code (the toolkit's defaults), the equal recipe
# takes lightly's form: SimCLR's output BN has a shift (the official code: scale only), SwAV's
# prototypes have a bias (the official code: none), DINO's last layer trains from the first step
# (lightly's DINOProjectionHead: freeze_last_layer=-1; the official code and ours: frozen for the
# first epoch, here the whole run). MoCo v2's and BYOL's heads are the same. Barlow Twins' and
# VICReg's are the same but for one inert parameter: lightly's last projector Linear has a bias
# (the authors' and ours: none); both losses are invariant to a per-dimension shift of z (Barlow
# standardizes each dimension over the batch, VICReg's terms are differences, variances and
# centred covariances), so the bias gets no gradient and changes no loss (tests/test_peer_lightly.py).
LIGHTLY_FORM = {
    "simclr": {"last_norm": "bn_affine"},
    "mocov2": {},
    "swav": {"prototype_bias": True},
    "byol": {},
    "barlow_twins": {},
    "vicreg": {},
    "dino": {"freeze_last_layer_epochs": 0},
}
# The same keys at the head constructors' defaults (the authors' forms).
AUTHORS_FORM = {
    method: {key: inspect.signature(HEADS[method]).parameters[key].default for key in keys}
    for method, keys in LIGHTLY_FORM.items()
}


def toolkit_recipe(method: str, s: Settings, seed: int, head_overrides: dict | None = None) -> dict:
    """The recipe equal to ``lightly_run``'s settings (same crops, jitter, widths, projector, loss,
    optimizer); ``head_overrides`` replace head keys (``AUTHORS_FORM``: the toolkit's defaults)."""
    augment = {"name": "simclr", "size": s.image_size, "crop_scale": [0.08, 1.0], "brightness": 0.4,
               "contrast": 0.4, "saturation": 0.4, "hue": 0.1, "jitter_p": 0.8, "grayscale_p": 0.2,
               "blur_p": 0.0, "mean": [MEAN] * 3, "std": [STD] * 3}  # fmt: skip
    heads = {
        "simclr": {"name": "simclr", "loss": {"name": "ntxent", "temperature": s.temperature}},
        "mocov2": {"name": "mocov2", "queue_size": s.queue_size, "temperature": s.temperature,
                   "base_momentum": 0.99, "final_momentum": 1.0},
        "swav": {"name": "swav", "num_prototypes": s.num_prototypes, "temperature": s.swav_temperature,
                 "epsilon": 0.05, "num_global": 2},
        "byol": {"name": "byol", "pred_hidden_dim": s.hidden_dim, "base_momentum": 0.99, "final_momentum": 1.0},
        # Barlow: lightly's loss (on-diagonal sum + lambda off-diagonal sum of C) times barlow_loss_scale
        "barlow_twins": {"name": "barlow_twins", "hidden_dim": s.wide_hidden_dim, "out_dim": s.wide_out_dim,
                         "num_layers": 3, "batch_norm": True, "lambd": s.barlow_lambda,
                         "scale_loss": s.barlow_loss_scale},
        "vicreg": {"name": "vicreg", "hidden_dim": s.wide_hidden_dim, "out_dim": s.wide_out_dim, "num_layers": 3,
                   "batch_norm": True, **dict(zip(("invariance_weight", "variance_weight", "covariance_weight"),
                                                  s.vicreg_weights))},
        "dino": {"name": "dino", "hidden_dim": s.dino_hidden_dim, "bottleneck_dim": s.dino_bottleneck_dim,
                 "out_dim": s.dino_out_dim, "num_layers": 3, "batch_norm": False, "norm_last_layer": True,
                 "teacher_temp": s.dino_teacher_temp, "warmup_teacher_temp": s.dino_teacher_temp,
                 "warmup_teacher_temp_epochs": 0, "student_temp": s.dino_student_temp, "center_momentum": 0.9,
                 "base_momentum": 0.99, "final_momentum": 1.0},
    }  # fmt: skip
    head = {"hidden_dim": s.hidden_dim, "out_dim": s.out_dim, **heads[method], **LIGHTLY_FORM[method],
            **(head_overrides or {})}  # fmt: skip
    return {
        "seed": seed,
        "out_dir": "runs/peer_lightly",
        "backbone": {"name": "resnet18", "pretrained": False, "small_image_stem": False},
        "head": head,
        "augment": augment,
        "data": {
            "name": "fashion_mnist",
            "root": s.root,
            "image_size": s.image_size,
            "batch_size": s.batch_size,
            "num_workers": s.num_workers,
            "train_samples": s.train_samples,
            "val_samples": s.val_samples,
        },  # fmt: skip
        "optimizer": {"name": "sgd", "lr": s.lr, "weight_decay": s.weight_decay, "momentum": s.momentum},
        "trainer": {"max_epochs": s.epochs, "accelerator": "cpu", "devices": 1, "precision": "32-true"},
    }


def toolkit_run(
    method: str, data: FashionMNISTData, s: Settings, seed: int, head_overrides: dict | None = None
) -> tuple[nn.Module, dict]:
    """Train ssl_toolkit's SSLModule from the equal recipe; returns the backbone and the timing."""
    recipe = toolkit_recipe(method, s, seed, head_overrides)
    validate(recipe)
    pl.seed_everything(seed, verbose=False)
    parts = build_parts(recipe)
    timer = Throughput(skip_steps=s.skip_steps)
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, max_epochs=s.epochs, precision="32-true", logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[timer], num_sanity_val_steps=0, limit_val_batches=0,
    )  # fmt: skip
    trainer.fit(parts.module, datamodule=parts.datamodule)
    return parts.module.backbone, {"images": timer.images, "seconds": timer.seconds, "steps": trainer.global_step}


def toolkit_plain_loop_run(method: str, data: FashionMNISTData, s: Settings, seed: int) -> tuple[nn.Module, dict]:
    """ssl_toolkit's module (augmentation, backbone, head, momentum update) stepped by lightly's
    plain loop instead of a Lightning ``Trainer``, on lightly's data order: isolates the trainer."""
    recipe = toolkit_recipe(method, s, seed)
    validate(recipe)
    pl.seed_everything(seed, verbose=False)
    module = build_parts(recipe).module.train()
    optimizer = sgd(module, s)  # requires_grad=False parts (momentum copies) are left out
    images = data.train_set.images
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(images, torch.arange(images.shape[0])), batch_size=s.batch_size,
        shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(seed),
    )  # fmt: skip
    total = len(loader) * s.epochs
    step, seen, start = 0, 0, None
    for epoch in range(s.epochs):
        for batch, index in loader:
            if step == s.skip_steps:
                start = time.perf_counter()
            out, _ = module.step_loss(module.augment(batch), torch.zeros_like(index), index, step, epoch)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            module.after_backward(step)
            optimizer.step()
            module.after_optimizer_step(step, total)
            if start is not None:
                seen += batch.shape[0]
            step += 1
    return module.backbone, {"images": seen, "seconds": time.perf_counter() - start, "steps": step}


def toolkit_authors_defaults_run(method: str, data: FashionMNISTData, s: Settings, seed: int) -> tuple[nn.Module, dict]:
    """ssl_toolkit with its own defaults (the authors' projector and prototypes), not lightly's form."""
    return toolkit_run(method, data, s, seed, AUTHORS_FORM[method])


def toolkit_no_bn_run(method: str, data: FashionMNISTData, s: Settings, seed: int) -> tuple[nn.Module, dict]:
    """ssl_toolkit with the projector it had before following the authors' code (no BN at all)."""
    return toolkit_run(method, data, s, seed, {"batch_norm": False, "last_norm": "none"})


def lightly_no_prototype_bias_run(
    method: str, data: FashionMNISTData, s: Settings, seed: int
) -> tuple[nn.Module, dict]:
    """lightly with bias-free SwAV prototypes (the authors' SwAV; no other method changes)."""
    return lightly_run(method, data, s, seed, prototype_bias=False)


def lightly_kornia_views_run(method: str, data: FashionMNISTData, s: Settings, seed: int) -> tuple[nn.Module, dict]:
    """lightly's model, loss and loop on ssl_toolkit's kornia views (the augmentation swapped only)."""
    return lightly_run(method, data, s, seed, views="kornia")


def lightly_kornia_views_8bit_run(
    method: str, data: FashionMNISTData, s: Settings, seed: int
) -> tuple[nn.Module, dict]:
    """lightly's model, loss and loop on ssl_toolkit's views rounded to 8-bit grey levels at the end."""
    return lightly_run(method, data, s, seed, views="kornia_8bit")


def lightly_pil_crops_run(method: str, data: FashionMNISTData, s: Settings, seed: int) -> tuple[nn.Module, dict]:
    """lightly's model, loss and loop on torchvision's PIL crops coloured by ssl_toolkit's jitter."""
    return lightly_run(method, data, s, seed, views="pil_crops")


SIDES = {
    "lightly": lightly_run,
    "lightly_no_prototype_bias": lightly_no_prototype_bias_run,
    "lightly_kornia_views": lightly_kornia_views_run,
    "lightly_pil_crops": lightly_pil_crops_run,
    "lightly_kornia_views_8bit": lightly_kornia_views_8bit_run,
    "ssl_toolkit": toolkit_run,
    "ssl_toolkit_authors_defaults": toolkit_authors_defaults_run,
    "ssl_toolkit_no_bn": toolkit_no_bn_run,
    "ssl_toolkit_plain_loop": toolkit_plain_loop_run,
}
DEFAULT_SIDES = ("lightly", "ssl_toolkit")


# --- driver ---------------------------------------------------------------------------------------
def budget_label(train_samples: int) -> str:
    """The ``{n}`` of ``--out``: a multiple of 1024 in k (16384 -> ``16k``), any other count as is."""
    return f"{train_samples // 1024}k" if train_samples % 1024 == 0 else str(train_samples)


def run_one(method: str, side: str, data: FashionMNISTData, s: Settings, seed: int) -> RunResult:
    backbone, t = SIDES[side](method, data, s, seed)
    images_per_s = t["images"] / t["seconds"]
    return RunResult(method, side, seed, knn_top1(backbone, data), 2 * images_per_s, images_per_s, t["seconds"],
                     t["steps"])  # fmt: skip


def table(results: list[RunResult]) -> str:
    """Markdown: per method and side, k-NN mean ± sample std and per-seed values, views/s mean, and
    each other side against lightly on the seeds both ran (paired: mean k-NN difference in points,
    throughput ratio of the means). Runs of different budgets (``steps``) are never pooled or
    paired: the rows are per method, steps and side, a side is compared with lightly's runs of the
    same steps, and a ``steps`` column shows the budget when the runs hold more than one."""
    budgets = sorted({r.steps for r in results})
    by_steps = len(budgets) > 1
    columns = ["method", "built from", *["steps"] * by_steps, "k-NN top-1, mean ± std", "per seed",
               "training views/s (images/s)", "k-NN − lightly, same seeds", "throughput / lightly"]  # fmt: skip
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for method in METHODS:
        for steps in budgets:
            runs = [r for r in results if r.method == method and r.steps == steps]
            lightly = {r.seed: r for r in runs if r.side == "lightly"}
            for side in [*SIDES, *sorted({r.side for r in runs} - set(SIDES))]:  # then archived labels
                rows = sorted((r for r in runs if r.side == side), key=lambda r: r.seed)
                if not rows:
                    continue
                knn = [r.knn_top1 for r in rows]
                spread = f"{statistics.stdev(knn):.4f}" if len(knn) > 1 else "-"
                rate = statistics.mean(r.views_per_s for r in rows)
                per_seed = ", ".join(f"{r.seed}: {r.knn_top1:.4f}" for r in rows)
                versus = ["", ""]
                paired = [(r, lightly[r.seed]) for r in rows if r.seed in lightly]
                if side != "lightly" and paired:
                    diff = statistics.mean(r.knn_top1 - ref.knn_top1 for r, ref in paired)
                    ratio = statistics.mean(r.views_per_s for r, _ in paired) / statistics.mean(
                        ref.views_per_s for _, ref in paired
                    )
                    seeds = "" if len(paired) == len(lightly) else f" ({len(paired)} seeds)"
                    versus = [f"{100 * diff:+.1f} pt{seeds}", f"{ratio:.2f}x"]
                cells = [method, side, *[str(steps)] * by_steps, f"{statistics.mean(knn):.4f} ± {spread}", per_seed,
                         f"{rate:.0f} ({rate / 2:.0f})", *versus]  # fmt: skip
                lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )  # the formatter shows an argument's default only where it has a help string: every one has
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS, help="methods to train")
    parser.add_argument(
        "--seeds", nargs="+", type=int, default=[0, 1, 2], help="seeds; each trains every method on every side"
    )
    parser.add_argument(
        "--sides",
        nargs="+",
        default=list(DEFAULT_SIDES),
        choices=list(SIDES),
        help="ssl_toolkit_authors_defaults: the toolkit's own projector and prototypes (the authors'), "
        "not lightly's form; ssl_toolkit_no_bn: the toolkit with a projector without BN (the old SimCLR default); "
        "lightly_no_prototype_bias: lightly's SwAV with bias-free prototypes (the authors'); "
        "lightly_kornia_views: lightly's model and loop on ssl_toolkit's kornia views; "
        "lightly_pil_crops: the same on torchvision's PIL crops with ssl_toolkit's colour jitter; "
        "lightly_kornia_views_8bit: lightly on ssl_toolkit's views rounded to 8 bits; "
        "ssl_toolkit_plain_loop: ssl_toolkit's module stepped by lightly's plain loop, no Trainer",
    )
    parser.add_argument(
        "--train-samples",
        type=int,
        default=Settings.train_samples,
        help=f"training images, a fixed subset of the train split: one epoch of {Settings.batch_size}-image steps",
    )
    parser.add_argument(
        "--val-samples", type=int, default=Settings.val_samples, help="k-NN queries, a fixed subset of the test split"
    )
    parser.add_argument("--root", default=Settings.root, help="Fashion-MNIST folder")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("benchmarks/peer_lightly_{n}.jsonl"),
        help="JSON-lines file the runs are appended to (--table-only: read from); {n} becomes the --train-samples, "
        "in k for a multiple of 1024 (16384: 16k), so runs of different budgets go to different files. "
        "benchmarks/peer_lightly.jsonl holds the earlier 2048-image, 8-step runs",
    )
    parser.add_argument("--table-only", action="store_true", help="print the table of the runs in --out")
    args = parser.parse_args(argv)
    args.out = Path(str(args.out).replace("{n}", budget_label(args.train_samples)))
    if args.table_only:
        if not args.out.is_file():
            print(f"--out: {args.out} is not a file of runs (one JSON line per run)", file=sys.stderr)
            return 2
        try:
            runs = read_runs(args.out)
        except ValueError as e:
            print(f"--out: {e}", file=sys.stderr)
            return 2
        if not runs:
            print(f"--out: no runs in {args.out}", file=sys.stderr)
            return 2
        print(table(runs))
        return 0
    s = Settings(root=args.root, train_samples=args.train_samples, val_samples=args.val_samples)
    if s.train_samples // s.batch_size * s.epochs <= s.skip_steps:
        steps, least = s.train_samples // s.batch_size * s.epochs, (s.skip_steps + 1) * s.batch_size
        print(f"--train-samples: {s.train_samples} gives {steps} step(s) of {s.batch_size}, none after the "
              f"{s.skip_steps} warm-up steps; use at least {least}", file=sys.stderr)  # fmt: skip
        return 2
    if not args.out.parent.is_dir() or args.out.is_dir():  # before the first (minutes-long) run, not after it
        what = f"{args.out} is a folder" if args.out.is_dir() else f"{args.out.parent} is not an existing folder"
        print(f"--out: {what}; give a file of runs (one JSON line per run, appended to)", file=sys.stderr)
        return 2
    try:
        import lightly  # noqa: F401
    except ImportError:
        print("lightly is not installed: pip install -c constraints.txt -e '.[peers]'", file=sys.stderr)
        return 2
    data = load_data(s)
    print(f"settings: {asdict(s)}; torch threads {torch.get_num_threads()}", flush=True)
    results = []
    for seed in args.seeds:
        for method in args.methods:
            order = args.sides if seed % 2 == 0 else args.sides[::-1]
            for side in order:
                r = run_one(method, side, data, s, seed)
                results.append(r)
                print(json.dumps(asdict(r)), flush=True)
                with args.out.open("a") as f:
                    f.write(json.dumps(asdict(r)) + "\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
