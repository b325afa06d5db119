"""Shared fixtures: where the reference data lives, and small helpers to read it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MOBILENET_KERAS_DATA", ROOT.parent / "shared" / "data"))

WEIGHTS_025 = DATA / "weights" / "mobilenet_2_5_224_tf_no_top.h5"
IMAGES = DATA / "images"
CIFAR = DATA / "cifar10" / "train"
TFLITE_REFERENCE = DATA / "tflite-reference"
LABELS = DATA / "labels"


def require(path: Path) -> Path:
    """Skip the calling test, saying what is missing, when a piece of reference data is absent."""
    if not path.exists():
        pytest.skip(f"reference data {path} is absent (see ../shared/data/README.md)")
    return path


@pytest.fixture(scope="session")
def weights_025() -> Path:
    return require(WEIGHTS_025)


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    """The real photos as uint8 RGB arrays of their own sizes."""
    from PIL import Image

    folder = require(IMAGES)
    out = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in {".png", ".jpg", ".jpeg", ".bmp"}:
            out[path.name] = np.asarray(Image.open(path).convert("RGB"))
    return out


def resize_batch(images, size: int) -> np.ndarray:
    """Resize uint8 RGB images to size x size and stack them as float32 0..255."""
    from PIL import Image

    return np.stack([
        np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR), dtype=np.float32) for img in images
    ])
