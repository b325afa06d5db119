"""Reading image files and folders into RGB arrays, with errors that name the file."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


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
            files = sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
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
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(f"{path} is not a readable image ({exc.__class__.__name__}: {exc}).") from None


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
