"""Writing outputs so that a failure never leaves a half-written file where the user looks."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def check_output_path(path: str | os.PathLike) -> Path:
    """Resolve `path` and check that a file can be written there, with a message that says how to fix it."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"output path {path} is a folder; give a file name such as {path / 'model.tflite'}.")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ValueError(f"output folder {folder} does not exist; create it first.")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"output folder {folder} is not writable.")
    return path


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to a temporary file beside `path`, then rename it into place."""
    path = check_output_path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path
