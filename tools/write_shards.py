"""Write WebDataset tar shards from an image folder or a file list, for ``data.name: webdataset``.

    python tools/write_shards.py FOLDER OUT_DIR [--labels auto|folders|none] [--shard-size 1000]
    python tools/write_shards.py ROOT OUT_DIR --list train.csv [--val-list val.csv] [--labels auto|column|none]

Files are listed and checked exactly as ``image_folder`` / ``file_list`` read them (bad files are
skipped and named); each image's bytes are stored unchanged. Writes ``OUT_DIR/train-000000.tar``...
(and ``val-*.tar`` when there is a held-out split) and prints the recipe lines that read them.
For exactly-once epochs, make the number of train shards a multiple of processes x loader workers.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ssl_toolkit.data import FileListData, ImageFolderData
from ssl_toolkit.data.shard_writer import write_shards
from ssl_toolkit.errors import UserError
from ssl_toolkit.run.arguments import OneLineParser
from ssl_toolkit.run_folder import check_writable


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="image folder (image_folder layouts), or the root of --list's paths")
    parser.add_argument("out_dir", help="folder to write the shards into (created; existing shards refused)")
    parser.add_argument("--list", default=None, help="train file list (file_list format) instead of a folder")
    parser.add_argument("--val-list", default=None, help="held-out file list (with --list)")
    parser.add_argument("--labels", default="auto", help="as data.labels of image_folder / file_list")
    parser.add_argument("--shard-size", type=int, default=1000, help="samples per shard (default: %(default)s)")
    parser.add_argument("--max-bad-fraction", type=float, default=0.01, help="as data.max_bad_fraction")
    args = parser.parse_args(argv)
    for name in ("source", "out_dir", "list", "val_list"):  # a quoted ~ too, as ssl-toolkit does
        if getattr(args, name) is not None:
            setattr(args, name, os.path.expanduser(getattr(args, name)))
    try:
        check_writable(Path(args.out_dir), "out_dir")  # before the (slow) listing and checking of the images
        if args.list is not None:
            data = FileListData(args.source, args.list, args.val_list, labels=args.labels, num_workers=0,
                                max_bad_fraction=args.max_bad_fraction)  # fmt: skip
        else:
            data = ImageFolderData(args.source, labels=args.labels, num_workers=0,
                                   max_bad_fraction=args.max_bad_fraction)  # fmt: skip
        data.setup()
        if os.path.isdir(args.out_dir) and any(n.endswith(".tar") for n in os.listdir(args.out_dir)):
            raise ValueError(f"out_dir: {args.out_dir} already holds shards; pick an empty folder")
        os.makedirs(args.out_dir, exist_ok=True)
        lines = ["data:", "  name: webdataset"]
        splits = [("train", data.train_set)] + ([("val", data.val_set)] if data.val_set is not None else [])
        for split, dataset in splits:
            paths = [os.fsdecode(p) for p in dataset.paths]
            shards = write_shards(list(zip(paths, dataset.labels.tolist(), strict=True)),
                                  os.path.join(args.out_dir, f"{split}-%06d.tar"), args.shard_size)  # fmt: skip
            print(f"{split}: {sum(n for _, n in shards)} samples in {len(shards)} shards")
            last = len(shards) - 1
            lines.append(f"  {split}_shards: {os.path.join(args.out_dir, split)}-{{000000..{last:06d}}}.tar")
    except (ValueError, FileNotFoundError, UserError) as e:
        print(f"write_shards: error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    print("recipe:\n" + "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
