"""Feature width and cost of timm backbone families at one resolution (a table of BENCHMARKS.md).

    .venv/bin/python tools/backbone_table.py [--size 32] [--batch 32] [--steps 3]

For each family: ``build_backbone`` at ``--size`` px (so ``feature_dim`` is what the toolkit uses),
then one SimCLR-like step of the backbone alone, forward + backward of two views of ``--batch``
random images concatenated (one call, as ``SSLModule`` does), in one thread. It prints the median
over ``--steps`` timed steps (one untimed first) of the wall time and of the process CPU time per
step, in ms. On a shared machine the CPU time is the steadier number: other processes lengthen the
wall time but not the CPU time this process uses.
"""

from __future__ import annotations

import statistics
import time
import warnings

import torch

from ssl_toolkit.backbone import build_backbone
from ssl_toolkit.run.arguments import OneLineParser

# (label, timm name, model_kwargs, small_image_stem)
FAMILIES = [
    ("ResNet-18", "resnet18", {}, False),
    ("ResNet-18, small-image stem", "resnet18", {}, True),
    ("ResNet-18-D", "resnet18d", {}, False),
    ("ConvNeXt-Atto", "convnext_atto", {}, False),
    ("EfficientNet-B0", "efficientnet_b0", {}, False),
    ("MobileNetV3-Small 0.5", "mobilenetv3_small_050", {}, False),
    ("RegNetX-200MF", "regnetx_002", {}, False),
    ("ViT-Tiny/16", "vit_tiny_patch16_224", {}, False),
    ("ViT-Tiny/8", "vit_tiny_patch16_224", {"patch_size": 8}, False),
    ("DeiT-Tiny/16", "deit_tiny_patch16_224", {}, False),
    ("Swin-Tiny", "swin_tiny_patch4_window7_224", {}, False),
    ("MobileViTv2-0.5", "mobilevitv2_050", {}, False),
    ("LeViT-128S", "levit_128s", {}, False),
    ("EfficientViT-B0", "efficientvit_b0", {}, False),
]


def measure(name: str, kwargs: dict, stem: bool, size: int, batch: int, steps: int) -> dict:
    model, facts = build_backbone(name, small_image_stem=stem, model_kwargs=kwargs, input_sizes={"size": size})
    model.train()
    x = torch.randn(2 * batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    walls, cpus = [], []
    for i in range(steps + 1):
        wall, cpu = time.perf_counter(), time.process_time()
        model(x).sum().backward()
        model.zero_grad(set_to_none=True)
        if i > 0:  # the first step is warm-up
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    return {"feature_dim": facts.feature_dim, "num_features": model.num_features, "params_m": params,
            "wall_ms": 1e3 * statistics.median(walls), "cpu_ms": 1e3 * statistics.median(cpus),
            "timm_kwargs": facts.timm_kwargs}  # fmt: skip


def main() -> None:
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32, help="image side in px (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=32, help="images per view (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps (default: %(default)s)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    print(f"{args.size} px, 2 views x {args.batch} images, forward + backward, 1 thread, median of {args.steps}")
    print("| family | timm name | num_features | feature_dim | params | CPU ms / step | wall ms / step |")
    print("|---|---|---|---|---|---|---|")
    for label, name, kwargs, stem in FAMILIES:
        r = measure(name, kwargs, stem, args.size, args.batch, args.steps)
        extra = f" {kwargs}" if kwargs else ""
        print(f"| {label} | `{name}`{extra} | {r['num_features']} | {r['feature_dim']} | {r['params_m']:.1f}M | "
              f"{r['cpu_ms']:.0f} | {r['wall_ms']:.0f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
