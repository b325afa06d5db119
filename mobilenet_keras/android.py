"""The Android file: batch 1, raw uint8 RGB in, uint8 scores out, labels and normalization in its metadata."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from mobilenet_keras.atomic import write_bytes_atomic
from mobilenet_keras.preprocessing import INPUT_OFFSET, INPUT_SCALE

# MediaPipe's metadata describes normalization as (pixel - mean) / std.
NORM_MEAN = -INPUT_OFFSET / INPUT_SCALE  # 127.5
NORM_STD = 1.0 / INPUT_SCALE  # 127.5


def has_metadata_writer() -> bool:
    """Whether MediaPipe's metadata writers can be imported here.

    mediapipe 1.2.3's wheel ships the writers without their compiled `_pywrap_metadata_version`
    module (and pins absl-py~=2.3 against tensorflow-model-optimization's ~=1.2), so on the pinned
    environment this is False and the labels go beside the file instead.
    """
    if importlib.util.find_spec("mediapipe") is None:
        return False
    try:
        from mediapipe.tasks.python.metadata.metadata_writers import image_classifier  # noqa: F401
    except ImportError:
        return False
    return True


def add_metadata(model_bytes: bytes, labels: list[str], name: str, version: str) -> bytes:
    """TFLite metadata written by MediaPipe's image-classifier writer: name, description, version,
    input normalization and image properties, and the labels as the output's TENSOR_AXIS_LABELS file."""
    from mediapipe.tasks.python.metadata.metadata_writers import image_classifier, metadata_writer

    writer = image_classifier.MetadataWriter.create(
        bytearray(model_bytes), input_norm_mean=[NORM_MEAN], input_norm_std=[NORM_STD],
        labels=metadata_writer.Labels().add(list(labels)))
    writer._model_name = name  # noqa: SLF001 - the writer has no public setter for these two
    content, _ = writer.populate()
    return bytes(content)


def android_file(model, path: str | os.PathLike, calibration, labels: list[str], version: str = "1",
                 uint8_file: str | os.PathLike | None = None) -> Path:
    """Convert `model` to the uint8 file Android apps load, with metadata when MediaPipe is installed.

    Without MediaPipe (the optional `android` extra) the file has no metadata and the labels are
    written beside it as `labels.txt`. `uint8_file` reuses a file already converted in mode uint8.
    """
    import tempfile

    import tflite

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if uint8_file is not None:
        content = Path(uint8_file).read_bytes()
    else:
        with tempfile.TemporaryDirectory() as tmp:
            plain = tflite.convert(model, Path(tmp) / "model.tflite", "uint8", representative_data=calibration)
            content = plain.read_bytes()
    if has_metadata_writer():
        content = add_metadata(content, labels, name=model.name, version=version)
    else:
        write_bytes_atomic(path.with_name("labels.txt"), ("\n".join(labels) + "\n").encode())
    return write_bytes_atomic(path, content)
