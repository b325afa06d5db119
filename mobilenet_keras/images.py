"""Reading image files and folders into RGB arrays, with errors that name the file."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
#: The formats TensorFlow's decoder (tf.io.decode_image, behind keras.utils.image_dataset_from_directory)
#: reads, by their first bytes; PIL reads many more (TIFF, WebP, ...), so PIL opening a file is not enough.
TF_FORMATS = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
              (b"BM", "BMP"))
#: First bytes of formats people rename to .jpg/.png by mistake, to say what the file really is.
OTHER_FORMATS = ((b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"RIFF", "WebP (or another RIFF file)"),
                 (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"), (b"8BPS", "Photoshop"), (b"%PDF", "PDF"),
                 (b"\x00\x00\x01\x00", "ICO"), (b"<svg", "SVG"), (b"<?xml", "XML/SVG"))


@dataclass
class ImageFolder:
    """The image files of a folder: one class per subfolder, or a flat folder of unlabelled images."""

    paths: list[Path]
    labels: list[int] | None  # None for a flat folder
    class_names: list[str]


def scan_folder(folder: str | os.PathLike) -> ImageFolder:
    """List the images of `folder` (class subfolders, sorted by name, or a flat folder of images)."""
    root = Path(folder)
    if not root.exists():
        raise ValueError(f"image folder {root} does not exist.")
    if not root.is_dir():
        raise ValueError(f"{root} is a file, not a folder of images.")
    subfolders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if subfolders:
        paths, labels, names = [], [], []
        for label, sub in enumerate(subfolders):
            files = _images_below(sub)
            names.append(sub.name)
            paths += files
            labels += [label] * len(files)
        if not paths:
            raise ValueError(f"{root} has class folders ({', '.join(names[:5])}) but no images "
                             f"({', '.join(IMAGE_SUFFIXES)}) in them.")
        return ImageFolder(paths, labels, names)
    paths = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ValueError(f"{root} holds no images ({', '.join(IMAGE_SUFFIXES)}) and no class folders.")
    return ImageFolder(paths, None, [])


def _images_below(folder: Path) -> list[Path]:
    """Every image file under `folder`, nested folders too, in the order Keras's
    image_dataset_from_directory lists them (it walks class folders recursively, following links)."""
    found = []
    for here, _, files in sorted(os.walk(folder, followlinks=True), key=lambda entry: entry[0]):
        found += [Path(here) / name for name in sorted(files) if Path(name).suffix.lower() in IMAGE_SUFFIXES]
    return found


def tensorflow_format_problem(path: str | os.PathLike) -> str | None:
    """Why TensorFlow's image decoder can't read `path` judging by its first bytes, or None when it is
    a JPEG, PNG, GIF or BMP."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as exc:
        return f"can't be opened ({exc.strerror or exc})"
    if not head:
        return "is empty (0 bytes)"
    if any(head.startswith(magic) for magic, _ in TF_FORMATS):
        return None
    what = next((name for magic, name in OTHER_FORMATS if head.startswith(magic)), None)
    suffix = Path(path).suffix or "(no suffix)"
    if what:
        return f"is a {what} file named {suffix}; TensorFlow reads only JPEG, PNG, GIF and BMP"
    return "is not a JPEG, PNG, GIF or BMP file (the only formats TensorFlow reads)"


def load_image(path: str | os.PathLike, size: tuple[int, int] | None = None) -> np.ndarray:
    """Read one image as uint8 RGB (grayscale, palette and RGBA are converted), resized to (height, width).

    Raises a ValueError naming the file when it is not a readable image.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            if size is not None and img.size != (size[1], size[0]):
                img = img.resize((size[1], size[0]), Image.BILINEAR)
            return np.asarray(img, dtype=np.uint8)
    except Image.DecompressionBombError as exc:
        raise ValueError(f"{path} is too large to read safely ({' '.join(str(exc).split())}); shrink it or remove "
                         "it.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        reason = " ".join(str(exc).split())
        raise ValueError(f"{path} is not a readable image ({exc.__class__.__name__}: {reason}).") from None


def load_images(paths, size: tuple[int, int]) -> tuple[np.ndarray, list[Path]]:
    """Read many images resized to `size`; unreadable ones are skipped and returned in the second item."""
    arrays, bad = [], []
    for path in paths:
        try:
            arrays.append(load_image(path, size))
        except ValueError:
            bad.append(Path(path))
    if not arrays:
        return np.zeros((0, *size, 3), np.uint8), bad
    return np.stack(arrays), bad
