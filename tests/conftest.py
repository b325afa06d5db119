"""Shared fixtures: where the reference data lives, and small helpers to read it."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest

from mobilenet_keras.testing.reference_data import (  # noqa: F401 - re-exported for the tests
    CIFAR, DATA, IMAGES, LABELS, ROOT, TFLITE_REFERENCE, WEIGHTS_025, require)


# Some tests press Ctrl-C on a child process (SIGINT) and check that it stops. A shell without job control
# starts its background commands with SIGINT ignored, children inherit that through exec, and such a child
# never sees the signal: a suite run as `pytest ... &` from a script failed those tests for that reason
# alone. Each test process (pytest and every xdist worker) takes Python's own handler back; its children
# then start with the default.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def in_process(capsys, *args) -> subprocess.CompletedProcess:
    """`mobilenet-keras ARGS` in the test's own process: its exit status, stdout and stderr as a subprocess run
    gives them, without another import of TensorFlow (about 9 s of CPU on the 2-core AMD EPYC, 2026-12-08).
    For what is not about a process of its own: refusals, and runs that nobody kills or signals."""
    from mobilenet_keras.app.cli import main

    capsys.readouterr()
    status = main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return subprocess.CompletedProcess([str(arg) for arg in args], status, captured.out, captured.err)


def _shared_folder(tmp_path_factory) -> Path:
    """The session's temporary folder, shared by all pytest-xdist workers (each has its own inside it)."""
    import os

    shared = tmp_path_factory.getbasetemp()
    return shared.parent if os.environ.get("PYTEST_XDIST_WORKER") else shared


@pytest.fixture(scope="session", autouse=True)
def cifar_made_once(tmp_path_factory):
    """The CIFAR classifiers and their converted files (`mobilenet_keras.testing.cifar`) are made once per
    session: by the first worker that asks, read by the others."""
    from mobilenet_keras.testing import cifar

    cifar.share_across_processes(_shared_folder(tmp_path_factory) / "cifar")


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


@pytest.fixture(scope="session")
def digits_pipeline_run(tmp_path_factory):
    """`mobilenet-keras pipeline --out RUN --quiet`, the default run as the README gives it, run once per
    session: (RUN, the finished process). Read-only for its users (copy what you change).

    Under pytest-xdist (the README's `pytest -n 2`) each worker has its own session: the first worker to
    ask runs the pipeline under a lock in the folder the workers share, the others wait and read its result.
    """
    import fcntl
    import json
    import subprocess
    import sys

    shared = _shared_folder(tmp_path_factory)
    out, record = shared / "digits_pipeline" / "run", shared / "digits_pipeline.json"
    with open(shared / "digits_pipeline.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not record.exists():
            out.parent.mkdir(exist_ok=True)
            done = subprocess.run([sys.executable, "-m", "mobilenet_keras", "pipeline", "--out", str(out), "--quiet"],
                                  capture_output=True, text=True, timeout=1200)
            record.write_text(json.dumps({"args": done.args, "returncode": done.returncode, "stdout": done.stdout,
                                          "stderr": done.stderr}))
    return out, subprocess.CompletedProcess(**json.loads(record.read_text()))
