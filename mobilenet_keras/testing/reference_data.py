"""Where the reference data of `../shared/data` lives (override with $MOBILENET_KERAS_DATA)."""

from __future__ import annotations

import os
import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("MOBILENET_KERAS_DATA", ROOT.parent / "shared" / "data"))

WEIGHTS_025 = DATA / "weights" / "mobilenet_2_5_224_tf_no_top.h5"
IMAGES = DATA / "images"
CIFAR = DATA / "cifar10" / "train"
TFLITE_REFERENCE = DATA / "tflite-reference"
LABELS = DATA / "labels"


class ReferenceDataMissing(unittest.SkipTest):
    """A piece of reference data is absent: pytest reports the test as skipped, with the reason."""


def require(path: Path) -> Path:
    """`path`, or ReferenceDataMissing (a skip under pytest) saying what is missing."""
    if not path.exists():
        raise ReferenceDataMissing(f"reference data {path} is absent (see ../shared/data/README.md)")
    return path
