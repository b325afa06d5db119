"""The Android file: batch 1, raw uint8 RGB in, uint8 scores out, labels and normalization in its metadata."""

from __future__ import annotations

import os
import subprocess
import tempfile
import warnings
from pathlib import Path

from mobilenet_keras.files import write_bytes_atomic
from mobilenet_keras.preprocessing import INPUT_OFFSET, INPUT_SCALE

# MediaPipe's metadata describes normalization as (pixel - mean) / std.
NORM_MEAN = -INPUT_OFFSET / INPUT_SCALE  # 127.5
NORM_STD = 1.0 / INPUT_SCALE  # 127.5


MEDIAPIPE_PYTHON_ENV = "MOBILENET_KERAS_MEDIAPIPE_PYTHON"
_TOOLS = Path(__file__).with_name("mediapipe_metadata.py")


def mediapipe_python() -> str | None:
    """The interpreter that has mediapipe, for `mediapipe_metadata.py`; None when there is none.

    mediapipe 1.2.3 cannot share this environment (it pins absl-py~=2.3 against
    tensorflow-model-optimization's ~=1.2), so it lives in its own virtual environment: the one named by
    $MOBILENET_KERAS_MEDIAPIPE_PYTHON, else `.venv-mediapipe/bin/python` in this package's source
    checkout. Never one in the current folder: a file planted there would be executed.
    """
    named = os.environ.get(MEDIAPIPE_PYTHON_ENV)
    if named:
        if not Path(named).is_file():
            raise ValueError(f"${MEDIAPIPE_PYTHON_ENV}={named} is not a file; point it at a Python with mediapipe.")
        return named
    candidate = Path(__file__).resolve().parents[2] / ".venv-mediapipe" / "bin" / "python"
    return str(candidate) if candidate.is_file() else None


def run_mediapipe_tools(*args: str, timeout: int = 300) -> str:
    """Run `mediapipe_metadata.py` with the mediapipe interpreter; its stdout, or a ValueError with its last error line."""
    python = mediapipe_python()
    if python is None:
        raise ValueError("no Python with mediapipe found: python3 -m venv .venv-mediapipe && "
                         ".venv-mediapipe/bin/pip install mediapipe==1.2.3 (or set $MOBILENET_KERAS_MEDIAPIPE_PYTHON).")
    result = subprocess.run([python, str(_TOOLS), *args], capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        raise ValueError(f"mediapipe_tools {args[0]} failed: {lines[-1] if lines else 'no message'}")
    return result.stdout


def has_metadata(path: str | os.PathLike) -> bool:
    """Whether a .tflite file carries TFLite metadata (a `TFLITE_METADATA` entry)."""
    from tflite.flatbuffer import read_model

    return any(entry.name == b"TFLITE_METADATA" for entry in (read_model(path).metadata or []))


def add_metadata(model_bytes: bytes, labels: list[str], name: str, version: str) -> bytes:
    """TFLite metadata written by MediaPipe's image-classifier writer (in the mediapipe environment): name,
    description, version, input normalization and image properties, and the labels as the output's
    TENSOR_AXIS_LABELS file."""
    with tempfile.TemporaryDirectory() as tmp:
        plain, out, labels_file = Path(tmp) / "plain.tflite", Path(tmp) / "out.tflite", Path(tmp) / "labels.txt"
        plain.write_bytes(model_bytes)
        labels_file.write_text("\n".join(labels) + "\n", encoding="utf-8")
        run_mediapipe_tools("write", str(plain), str(out), "--labels", str(labels_file), "--name", name,
                            "--version", version, "--mean", str(NORM_MEAN), "--std", str(NORM_STD))
        return out.read_bytes()


def android_file(model, path: str | os.PathLike, calibration, labels: list[str], version: str = "1",
                 uint8_file: str | os.PathLike | None = None) -> Path:
    """Convert `model` to the uint8 file Android apps load, with metadata when a mediapipe Python exists.

    The labels are also written beside the file as `labels.txt` (for apps that use the LiteRT
    Interpreter directly). Without a mediapipe Python (see `mediapipe_python`) the file has no metadata
    and a warning says how to get it. `uint8_file` reuses a file already converted in mode uint8.
    """
    import tflite

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if uint8_file is not None:
        content = Path(uint8_file).read_bytes()
    else:
        with tempfile.TemporaryDirectory() as tmp:
            plain = tflite.convert(model, Path(tmp) / "model.tflite", "uint8", representative_data=calibration)
            content = plain.read_bytes()
    if mediapipe_python() is not None:
        content = add_metadata(content, labels, name=model.name, version=version)
    else:
        warnings.warn("no Python with mediapipe found, so the Android file has no metadata (labels.txt is beside "
                      "it); see the README's 'Ship it to Android'.", stacklevel=2)
    write_bytes_atomic(path.with_name("labels.txt"), ("\n".join(labels) + "\n").encode())
    return write_bytes_atomic(path, content)
