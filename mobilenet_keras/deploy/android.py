"""The Android file: batch 1, raw uint8 RGB in, uint8 scores out, labels and normalization in its metadata."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

from mobilenet_keras.files import owned_temp_folder, scratch_folder, walked_path, write_bytes_atomic
from mobilenet_keras.preprocessing import INPUT_OFFSET, INPUT_SCALE

# MediaPipe's metadata describes normalization as (pixel - mean) / std.
NORM_MEAN = -INPUT_OFFSET / INPUT_SCALE  # 127.5
NORM_STD = 1.0 / INPUT_SCALE  # 127.5


MEDIAPIPE_PYTHON_ENV = "MOBILENET_KERAS_MEDIAPIPE_PYTHON"
HOME_ENV = "MOBILENET_KERAS_HOME"
MEDIAPIPE_REQUIREMENT = "mediapipe==1.2.3"
_TOOLS = Path(__file__).with_name("mediapipe_metadata.py")
# After a failed creation (no registry, no wheel), don't try again for this long: each try can take a minute.
RETRY_AFTER_S = 24 * 3600
# The interpreter whose `-m venv` makes MediaPipe's environment (tests point this at a stand-in).
venv_python = sys.executable
# `.venv-mediapipe` in this package's source checkout (a developer's; .ci/run makes it).
SOURCE_VENV = Path(__file__).resolve().parents[2] / ".venv-mediapipe"
_warned = False


def home() -> Path:
    """The per-user folder of this package's own files: $MOBILENET_KERAS_HOME, else
    $XDG_CACHE_HOME/mobilenet-keras (~/.cache/mobilenet-keras)."""
    named = os.environ.get(HOME_ENV)
    if named:
        return Path(named).expanduser().absolute()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser().absolute() / "mobilenet-keras"


def user_venv() -> Path:
    """Where MediaPipe's environment is created on first need: `home() / "venv-mediapipe"`."""
    return home() / "venv-mediapipe"


def _venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def mediapipe_python() -> str | None:
    """The interpreter that has mediapipe, for `mediapipe_metadata.py`; None when there is none yet.

    mediapipe 1.2.3 cannot share this environment (it pins absl-py~=2.3 against
    tensorflow-model-optimization's ~=1.2), so it lives in its own virtual environment, looked for in
    this order: $MOBILENET_KERAS_MEDIAPIPE_PYTHON; `.venv-mediapipe/` in this package's source
    checkout; the per-user one (`user_venv()`, made by `ensure_mediapipe_python`). Never one in the
    current folder: a file planted there would be executed.
    """
    named = os.environ.get(MEDIAPIPE_PYTHON_ENV)
    if named:
        if not Path(named).is_file():
            raise ValueError(f"${MEDIAPIPE_PYTHON_ENV}={named} is not a file; point it at a Python with mediapipe.")
        return named
    for venv in (SOURCE_VENV, user_venv()):
        candidate = _venv_python(venv)
        if candidate.is_file():
            return str(candidate)
    return None


def ensure_mediapipe_python(progress=None) -> str | None:
    """`mediapipe_python()`, creating the per-user environment first when there is none
    (`python -m venv` + `pip install mediapipe==1.2.3`, about 30 s, once).

    Returns None, after one warning per process, when it can't be created (no network, no wheel for
    this platform); a failure is remembered for a day (`RETRY_AFTER_S`; delete the `.failed` file
    beside the environment to retry at once). `progress` takes the one-line message (default: stderr).
    """
    found = mediapipe_python()
    if found is not None:
        return found
    venv = user_venv()
    failed = venv.with_name(venv.name + ".failed")
    try:
        if failed.is_file() and time.time() - failed.stat().st_mtime < RETRY_AFTER_S:
            _warn_once(f"MediaPipe's environment could not be created earlier ({failed.read_text().strip()}); "
                       f"delete {failed} to try again")
            return None
    except OSError:
        pass
    message = f"creating MediaPipe's environment in {venv} (once, ~30 s)"
    (progress or (lambda text: print(text, file=sys.stderr, flush=True)))(message)
    try:
        venv.parent.mkdir(parents=True, exist_ok=True)
        # named by host and process: the next creation removes what a killed one left (hundreds of MB of pip's)
        staging = owned_temp_folder(venv.parent, f".{venv.name}.staging")
    except OSError as exc:
        _warn_once(f"can't create {venv.parent} ({exc.strerror or exc})")
        return None
    try:
        _run([venv_python, "-m", "venv", str(staging)], "python -m venv")
        _run([str(_venv_python(staging)), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
              "--retries", "1", "--timeout", "20", MEDIAPIPE_REQUIREMENT], f"pip install {MEDIAPIPE_REQUIREMENT}")
        os.replace(staging, venv)  # the environment appears whole or not at all
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        with contextlib.suppress(OSError):
            failed.write_text(str(exc) + "\n")
        _warn_once(str(exc))
        return None
    failed.unlink(missing_ok=True)
    return mediapipe_python()


def _run(command: list[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        lines = [line for line in (result.stderr + result.stdout).strip().splitlines() if line.strip()]
        raise ValueError(f"{what} failed: {lines[-1] if lines else f'exit status {result.returncode}'}")


def _warn_once(reason: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(f"no Python with mediapipe ({reason}), so the Android file has no metadata (labels.txt is "
                      "beside it); see the README's 'Ship it to Android'.", stacklevel=3)


def run_mediapipe_tools(*args: str, timeout: int = 300) -> str:
    """Run `mediapipe_metadata.py` with the mediapipe interpreter; its stdout, or a ValueError with its last
    error line."""
    python = mediapipe_python()
    if python is None:
        raise ValueError(f"no Python with mediapipe found: python3 -m venv {user_venv()} && "
                         f"{user_venv()}/bin/pip install {MEDIAPIPE_REQUIREMENT} "
                         f"(or set ${MEDIAPIPE_PYTHON_ENV}).")
    from mobilenet_keras.deploy.mediapipe_metadata import PARENT_PID_ENV

    result = subprocess.run([python, str(_TOOLS), *args], capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, PARENT_PID_ENV: str(os.getpid())})
    if result.returncode != 0:
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        raise ValueError(f"{_TOOLS.name} {args[0]} failed: {lines[-1] if lines else 'no message'}")
    return result.stdout


def has_metadata(path: str | os.PathLike) -> bool:
    """Whether a .tflite file carries TFLite metadata (a `TFLITE_METADATA` entry)."""
    from tflite.flatbuffer import read_model

    return any(entry.name == b"TFLITE_METADATA" for entry in (read_model(path).metadata or []))


def add_metadata(model_bytes: bytes, labels: list[str], name: str, version: str) -> bytes:
    """TFLite metadata written by MediaPipe's image-classifier writer (in the mediapipe environment): name,
    description, version, input normalization and image properties, and the labels as the output's
    TENSOR_AXIS_LABELS file."""
    with scratch_folder() as tmp:
        plain, out, labels_file = Path(tmp) / "plain.tflite", Path(tmp) / "out.tflite", Path(tmp) / "labels.txt"
        plain.write_bytes(model_bytes)
        labels_file.write_text("\n".join(labels) + "\n", encoding="utf-8")
        run_mediapipe_tools("write", str(plain), str(out), "--labels", str(labels_file), "--name", name,
                            "--version", version, "--mean", str(NORM_MEAN), "--std", str(NORM_STD))
        return out.read_bytes()


def android_file(model, path: str | os.PathLike, calibration, labels: list[str], version: str = "1",
                 uint8_file: str | os.PathLike | None = None, denylist=None, labels_file: bool = True) -> Path:
    """Convert `model` to the uint8 file Android apps load, with MediaPipe metadata (labels, normalization).

    The labels are also written beside the file as `labels.txt` (for apps that use the LiteRT
    Interpreter directly; `labels_file=False` leaves that to the caller, e.g. until the file is checked: see
    `write_labels_beside`). MediaPipe's own environment is created on first need
    (`ensure_mediapipe_python`); when it can't be, the file has no metadata and a warning says so.
    `uint8_file` reuses a file already converted in mode uint8.
    The file is fully integer unless `denylist` (`tflite.convert`'s: layer names or "auto") keeps layers in float.
    """
    import tflite
    from mobilenet_keras.labels import LABELS_REMEDY, check_class_names

    # MediaPipe's metadata drops a blank name, and its label count then differs from the classes: no app loads it
    labels = check_class_names(labels, remedy=LABELS_REMEDY)
    path = walked_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if uint8_file is not None:
        content = Path(uint8_file).read_bytes()
    else:
        with scratch_folder() as tmp:
            plain = tflite.convert(model, Path(tmp) / "model.tflite", "uint8", representative_data=calibration,
                                   denylist=denylist)
            content = plain.read_bytes()
    if ensure_mediapipe_python() is not None:
        content = add_metadata(content, labels, name=model.name, version=version)
    if labels_file:
        write_labels_beside(path, labels)
    return write_bytes_atomic(path, content)


def write_labels_beside(path: str | os.PathLike, labels: list[str]) -> Path:
    """`labels.txt` beside the Android file `path`: one class name per line, in output order."""
    return write_bytes_atomic(Path(path).with_name("labels.txt"), ("\n".join(labels) + "\n").encode())
