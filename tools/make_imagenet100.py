"""Build an ImageNet-100 folder (symlinks to class folders) from a full ImageNet tree.

Usage: python tools/make_imagenet100.py --imagenet /data/imagenet --out /data/imagenet100 [--classes FILE]
"""

from __future__ import annotations

from ssl_toolkit.data.imagenet100 import make_imagenet100
from ssl_toolkit.run.arguments import OneLineParser


def main(argv: list[str] | None = None) -> None:
    """Parse arguments and build the symlink tree."""
    parser = OneLineParser(description=__doc__.splitlines()[0])
    parser.add_argument("--imagenet", required=True, help="ImageNet root with train/<wnid>/ and val/<wnid>/")
    parser.add_argument("--out", required=True, help="output root; gets train/<wnid> and val/<wnid> symlinks")
    parser.add_argument("--classes", default=None, help="class list, one wnid per line (default: ImageNet-100)")
    args = parser.parse_args(argv)
    try:
        created = make_imagenet100(args.imagenet, args.out, args.classes)
    except (OSError, ValueError) as error:
        parser.exit(2, f"make_imagenet100.py: error: {str(error).splitlines()[0]}\n")
    print(f"{args.out}: created {created} symlinks (train/ and val/ complete)")


if __name__ == "__main__":
    main()
