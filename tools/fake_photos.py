"""Write photo-like JPEGs (smooth colour fields + fine texture), e.g. to measure loader speed.

    python tools/fake_photos.py OUT_DIR [--count 512] [--width 500] [--height 375] [--seed 0]

ImageNet-typical size by default (500 x 375, quality 90: about 60-100 kB per file, close to
ImageNet's average); pure noise would be far larger and slower to decode than real photos.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from ssl_toolkit.errors import UserError
from ssl_toolkit.run.arguments import OneLineParser
from ssl_toolkit.run_folder import check_writable


def fake_photo(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A smooth random colour field (8 x 6 control points, bicubic) plus mild pixel noise."""
    coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    field = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), dtype=np.float32)
    noise = rng.normal(0, 12, (height, width, 1)).astype(np.float32)
    return Image.fromarray(np.clip(field + noise, 0, 255).astype(np.uint8))


def main() -> None:
    parser = OneLineParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--count", type=int, default=512)
    parser.add_argument("--width", type=int, default=500)
    parser.add_argument("--height", type=int, default=375)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out_dir = os.path.expanduser(args.out_dir)
    if args.count < 1 or args.width < 1 or args.height < 1:
        parser.error("--count, --width, --height: must be positive")
    try:
        check_writable(Path(args.out_dir), "out_dir")
    except UserError as e:
        parser.exit(2, f"fake_photos.py: error: {e}\n")
    os.makedirs(args.out_dir, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    for i in range(args.count):
        fake_photo(rng, args.width, args.height).save(os.path.join(args.out_dir, f"photo_{i:05d}.jpg"), quality=90)


if __name__ == "__main__":
    main()
