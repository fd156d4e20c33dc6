"""Image files as they come: find them (symlinks followed, each folder and file once), check them
before training, decode any mode to upright RGB."""

from __future__ import annotations

import os
import stat
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageOps

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")  # matched case-insensitively
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")
JPEG_END, PNG_END = b"\xff\xd9", b"IEND\xaeB`\x82"


def shown(path: str) -> str:
    """``path`` as it can be printed: bytes that are not UTF-8 (kept by Python as surrogates) as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def check_folder_args(root: str, image_size: int, resize_size: int | None, max_bad_fraction: float) -> None:
    """The checks every data module over image files on disk shares (image_folder, file_list).

    Raises:
        ValueError: ``max_bad_fraction`` outside [0, 1) or ``resize_size`` below ``image_size``.
        FileNotFoundError: ``root`` is missing or not a folder (one line naming it).
    """
    if not 0 <= max_bad_fraction < 1:
        raise ValueError(f"max_bad_fraction: must be in [0, 1), got {max_bad_fraction!r}")
    if resize_size is not None and resize_size < image_size:
        raise ValueError(f"resize_size: {resize_size} is smaller than image_size {image_size}")
    if not os.path.isdir(root):
        what = "is not a folder" if os.path.exists(root) else "does not exist"
        raise FileNotFoundError(f"root: {shown(root)} {what}")


def path_array(paths: list[str]) -> np.ndarray:
    """Paths as a numpy bytes array (``os.fsencode``: any name the OS allows, non-UTF-8 included).

    A numpy array rather than a list of Python strings: forked loader workers read it without
    touching refcounts, so they do not copy the whole list page by page. Read back with
    ``os.fsdecode(array[i])``.
    """
    return np.array([os.fsencode(p) for p in paths], dtype=np.bytes_)


@dataclass
class FileCheck:
    """What ``find_images`` (or a file list) found in one split.

    Attributes:
        samples: ``(path, label)`` of the usable images (label -1 when unlabelled).
        bad: ``(path, reason)`` of image files that are missing or cannot be decoded (skipped).
        ignored: files without an image extension (skipped; hidden files are not listed).
        modes: how many usable images are in each non-RGB mode (converted on load).
        walked_once: directories and files reached a second time through a symbolic link (a loop,
            or two links to one place), skipped: each real folder is walked once, each real file is
            one sample.
        loose: image files directly in a split of class folders (they have no class; skipped).
        empty_classes: class folders without a usable image (still counted as classes).
    """

    samples: list[tuple[str, int]] = field(default_factory=list)
    bad: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    modes: Counter = field(default_factory=Counter)
    walked_once: list[str] = field(default_factory=list)
    loose: list[str] = field(default_factory=list)
    empty_classes: list[str] = field(default_factory=list)


def check_file(path: str) -> tuple[str | None, str]:
    """``(mode, "")`` for a decodable image file, ``(None, reason)`` for a bad or missing one.

    Cheap: the header is parsed and, for JPEG and PNG, the end marker is looked up; the image is
    decoded only when the marker is missing (truncated file, or trailing bytes after it).
    """
    try:
        if os.path.getsize(path) == 0:
            return None, "empty file"
    except FileNotFoundError:
        return None, "missing"
    except OSError as e:
        return None, f"cannot read ({e.strerror or type(e).__name__})"
    try:
        with Image.open(path) as img:
            mode, fmt = img.mode, img.format
            with open(path, "rb") as f:
                f.seek(-8, os.SEEK_END)
                tail = f.read()
            complete = (fmt == "JPEG" and tail.endswith(JPEG_END)) or (fmt == "PNG" and tail == PNG_END)
            if not complete:
                img.load()  # the full decode raises on truncated or corrupt data
    except Image.DecompressionBombError:
        return None, "too many pixels"
    except Exception as e:  # UnidentifiedImageError, OSError, SyntaxError...: skip, keep the reason
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        return None, "not an image" if "cannot identify image file" in first else f"corrupt ({first[:80]})"
    return mode, ""


def add_checked(out: FileCheck, path: str, label: int) -> None:
    """Check one image file (``check_file``) and record it in ``out`` as a sample or a bad file."""
    mode, reason = check_file(path)
    if mode is None:
        out.bad.append((path, reason))
        return
    out.samples.append((path, label))
    if mode != "RGB":
        out.modes[mode] += 1


def _key(path: str) -> tuple[int, int] | None:
    """``(st_dev, st_ino)`` of what ``path`` points to (symlinks followed); None if it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def walk_files(top: str, seen: set[tuple[int, int]], out: FileCheck) -> list[str]:
    """Every non-hidden file under ``top``, recursively, symlinks followed, in a fixed order
    (depth first; in each folder the real entries by name, then the links by name).

    A directory or file whose ``(st_dev, st_ino)`` is already in ``seen`` (reached before, through a
    link or a loop) is not walked or listed again but recorded in ``out.walked_once``; everything
    walked is added to ``seen``. A broken link is recorded in ``out.bad``.

    Args:
        top: a directory (``str``: non-UTF-8 names come back as surrogate-escaped ``str``).
        seen: keys already walked (e.g. the class folders, so a link into one is not followed).
        out: where skipped entries are recorded.
    """
    files: list[str] = []
    stack = [top]
    while stack:
        folder = stack.pop()
        try:
            # real entries before links, so a link to a file of the same folder is the one skipped
            entries = sorted(os.scandir(folder), key=lambda e: (e.is_symlink(), e.name))
        except OSError as e:
            out.bad.append((folder, f"cannot list ({e.strerror or type(e).__name__})"))
            continue
        subdirs = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                st = entry.stat()  # follows symlinks
            except OSError:
                out.bad.append((entry.path, "broken link"))
                continue
            key = (st.st_dev, st.st_ino)
            if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
                continue  # sockets, fifos, devices
            if key in seen:
                out.walked_once.append(entry.path)
                continue
            seen.add(key)
            (subdirs if stat.S_ISDIR(st.st_mode) else files).append(entry.path)
        stack.extend(reversed(subdirs))  # depth first, in sorted order
    return files


def find_images(split: str, classes: list[str] | None, exclude: tuple[str, ...] = ()) -> FileCheck:
    """List and check every image file of one split.

    Args:
        split: the split's folder.
        classes: class folder names (label = position in the list): ``split/<class>/**`` is read;
            a class folder missing here is skipped (a class without val images). None: every image
            under ``split`` (nested or flat), label -1.
        exclude: folders not to enter (e.g. the val split when the train split is the root).

    Returns:
        The checked files, in a reproducible order (sample indices depend on it only).
    """
    out = FileCheck()
    seen = {k for k in map(_key, (split, *exclude)) if k is not None}
    folders: list[tuple[str, int]] = []
    if classes is not None:
        for label, name in enumerate(classes):
            key = _key(os.path.join(split, name))
            if key is not None and key not in seen:  # owned by its class: a link into it is skipped
                seen.add(key)
                folders.append((os.path.join(split, name), label))
        for entry in sorted(os.scandir(split), key=lambda e: e.name):
            if entry.is_file() and not entry.name.startswith(".") and entry.name.lower().endswith(EXTENSIONS):
                out.loose.append(entry.path)
    else:
        folders.append((split, -1))
    for folder, label in folders:
        before = len(out.samples)
        for path in walk_files(folder, seen, out):
            if os.path.basename(path).lower().endswith(EXTENSIONS):
                add_checked(out, path, label)
            else:
                out.ignored.append(path)
        if classes is not None and len(out.samples) == before:
            out.empty_classes.append(classes[label])
    return out


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB.

    16-bit (and 32-bit integer) grey is scaled from 0..65535 (x / 257, rounded); float grey from
    0..1 when its maximum is at most 1, else clipped to 0..255; transparent images are composed on
    white (their hidden colour is arbitrary); CMYK, palette, L, 1, YCbCr... use PIL's conversion.
    """
    if img.mode == "RGB":
        return img
    if img.mode in _SIXTEEN_BIT or img.mode == "F":
        a = np.asarray(img, dtype=np.float64)
        scale = 1 / 257 if img.mode != "F" else (255.0 if a.size and a.max() <= 1 else 1.0)
        grey = np.clip(np.rint(a * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if "A" in img.getbands() or "transparency" in img.info:
        rgba = img.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return img.convert("RGB")


def decode_resized(source: str | os.PathLike | object, image_size: int, resize_size: int) -> Image.Image:
    """Decode an image, turn it upright and center-crop-resize it in one resampling step.

    The EXIF orientation tag (phone photos: 3, 6, 8...) is applied with
    ``PIL.ImageOps.exif_transpose``, also on the reduced-scale JPEG decode. Then the equivalent of
    "shorter side -> ``resize_size``, then center crop ``image_size``": the crop box is mapped back
    to the decoded image and resampled once (antialiased bilinear). JPEGs are decoded at the
    smallest 1/2^k scale still >= ``resize_size`` (libjpeg DCT scaling), far cheaper than a full
    decode; on this CPU it beat ``torchvision.io.decode_jpeg`` + a tensor resize by 2-3x.

    Args:
        source: a path, or a binary file object (a shard member).
        image_size: side of the output.
        resize_size: shorter side before the crop (>= image_size).

    Returns:
        an RGB image of ``image_size`` x ``image_size``.
    """
    with Image.open(source) as img:
        img.draft("RGB", (resize_size, resize_size))  # JPEG only; other formats ignore it
        img.load()
        ImageOps.exif_transpose(img, in_place=True)  # no-op without an orientation tag
        img = to_rgb(img)
        img.load()
    w, h = img.size
    side = min(w, h) * image_size / resize_size  # the crop, in decoded pixels
    box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
    return img.resize((image_size, image_size), Image.Resampling.BILINEAR, box=box, reducing_gap=None)
