"""The Android file: metadata written by MediaPipe's writer, read back by MediaPipe Tasks' ImageClassifier
(the C++ classifier Android apps use), which must answer as LiteRT does on every image."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from mobilenet_keras.testing.cifar import SIZE, cifar_slice, classifier, converted


def _mediapipe_or_skip() -> str:
    from mobilenet_keras.deploy.android import mediapipe_python

    python = mediapipe_python()
    if python is None:
        pytest.skip("no Python with mediapipe (python3 -m venv .venv-mediapipe && "
                    ".venv-mediapipe/bin/pip install mediapipe==1.2.3; .ci/run does it)")
    return python


@pytest.fixture(scope="module")
def android(tmp_path_factory):
    from mobilenet_keras.deploy.android import android_file

    _mediapipe_or_skip()
    folder = tmp_path_factory.mktemp("android")
    _, _, class_names = cifar_slice(1, 0, SIZE)
    path = android_file(classifier(), folder / "model.tflite", None, list(class_names), version="3",
                        uint8_file=converted("uint8"))
    return path, list(class_names)


@pytest.mark.slow
def test_the_file_carries_metadata_with_labels_and_normalization(android):
    import io
    import zipfile

    from mobilenet_keras.deploy.android import has_metadata

    path, class_names = android
    assert has_metadata(path)
    packed = zipfile.ZipFile(io.BytesIO(path.read_bytes()))  # associated files ride at the end as a zip
    assert packed.read("labels.txt").decode().split() == class_names
    assert (path.parent / "labels.txt").read_text().split() == class_names
    assert not has_metadata(converted("uint8"))


@pytest.mark.slow
def test_mediapipe_image_classifier_answers_as_litert(android, tmp_path):
    from PIL import Image

    from mobilenet_keras.deploy.android import run_mediapipe_tools
    from tflite import TFLiteModel

    path, class_names = android
    images, _, _ = cifar_slice(3, 300, SIZE)  # 30 real images at the model's size: no resizing on either side
    files = []
    for i, image in enumerate(images):
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(image).save(files[-1])
    results = [json.loads(line) for line in run_mediapipe_tools("classify", str(path), *map(str, files)).splitlines()]
    litert = TFLiteModel(path).predict_raw(images)
    assert len(results) == len(images)
    for result, scores in zip(results, litert):
        best = result["top"][0]
        assert best["index"] == int(np.argmax(scores)) or np.isclose(
            scores[best["index"]], scores.max()), (result, scores)  # equal scores: either index is the top
        assert best["label"] == class_names[best["index"]]  # names read from the embedded metadata


@pytest.mark.slow
def test_the_android_file_is_checked_against_the_float_model(android):
    import tflite
    from mobilenet_keras import preprocess_input

    from tflite.flatbuffer import float_tensors_inside, read_model

    path, _ = android
    assert float_tensors_inside(read_model(path)) == []  # fully integer: the default, as NPUs need
    held_out, labels, _ = cifar_slice(50, 200, SIZE)
    report = tflite.verify(classifier(), path, preprocess_input(held_out), labels=labels, latency_runs=0)
    assert report.mode == "uint8" and report.float_ops == 0
    assert report.accuracy_drop <= 0.03 and report.sqnr_db >= 13, report.to_markdown()
    # The default uint8 file of this briefly trained classifier: the floor of test_tflite_convert's fully
    # integer files (3 standard errors under the figure measured). The uint8 target (97%) is a row of
    # benchmarks/RESULTS.md ("int8 quality"); the digits pipeline's Android file passes it (test_pipeline).
    assert report.top1_agreement >= 0.87, report.to_markdown()


def test_a_wrong_mediapipe_python_is_named(monkeypatch, tmp_path):
    from mobilenet_keras.deploy.android import mediapipe_python

    monkeypatch.setenv("MOBILENET_KERAS_MEDIAPIPE_PYTHON", str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="MOBILENET_KERAS_MEDIAPIPE_PYTHON"):
        mediapipe_python()


def test_a_mediapipe_python_behind_a_wrapper_script_runs(monkeypatch, tmp_path):
    # a wrapper that does not exec (setting a library path, a conda shim) is the script's parent, not the package's
    # process: the script took that for its parent's death and stopped, without a word
    from PIL import Image

    from mobilenet_keras.deploy.android import run_mediapipe_tools
    from tests.conftest import TFLITE_REFERENCE, require

    python = _mediapipe_or_skip()
    model = require(TFLITE_REFERENCE / "mobilenet_v1_0.25_128_quant.tflite")
    wrapper = tmp_path / "bin" / "python"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\nexport SOMETHING=1\n"{python}" "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("MOBILENET_KERAS_MEDIAPIPE_PYTHON", str(wrapper))
    Image.new("RGB", (128, 128), (120, 80, 40)).save(tmp_path / "x.png")
    lines = run_mediapipe_tools("classify", str(model), str(tmp_path / "x.png")).splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["top"], lines


# --- where MediaPipe's Python comes from -----------------------------------------------------------------

FAKE_VENV_PYTHON = """#!/bin/sh
# Stands in for `python3 -m venv DIR`: DIR/bin/python answers `-m pip install ...` with success.
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
  mkdir -p "$3/bin" && printf '#!/bin/sh\\nexit 0\\n' > "$3/bin/python" && chmod +x "$3/bin/python" && exit 0
fi
exit 1
"""


def _script(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.fixture
def no_mediapipe(monkeypatch, tmp_path):
    """No $MOBILENET_KERAS_MEDIAPIPE_PYTHON, no source-checkout venv, an empty per-user home."""
    from mobilenet_keras.deploy import android

    monkeypatch.delenv("MOBILENET_KERAS_MEDIAPIPE_PYTHON", raising=False)
    monkeypatch.setenv("MOBILENET_KERAS_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(android, "SOURCE_VENV", tmp_path / "checkout" / ".venv-mediapipe")
    monkeypatch.setattr(android, "_warned", False)
    return android


def test_lookup_order_env_then_checkout_then_user_cache(no_mediapipe, monkeypatch, tmp_path):
    android = no_mediapipe
    assert android.mediapipe_python() is None
    user = _script(android.user_venv() / "bin" / "python", "#!/bin/sh\n")
    assert android.user_venv() == tmp_path / "home" / "venv-mediapipe"
    assert android.mediapipe_python() == str(user)
    checkout = _script(android.SOURCE_VENV / "bin" / "python", "#!/bin/sh\n")
    assert android.mediapipe_python() == str(checkout)
    named = _script(tmp_path / "named" / "python", "#!/bin/sh\n")
    monkeypatch.setenv("MOBILENET_KERAS_MEDIAPIPE_PYTHON", str(named))
    assert android.mediapipe_python() == str(named)


def test_the_default_home_is_per_user(monkeypatch, tmp_path):
    from mobilenet_keras.deploy import android

    monkeypatch.delenv("MOBILENET_KERAS_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert android.user_venv() == tmp_path / "cache" / "mobilenet-keras" / "venv-mediapipe"


def test_creates_the_user_environment_on_first_need(no_mediapipe, monkeypatch, tmp_path):
    android = no_mediapipe
    monkeypatch.setattr(android, "venv_python", str(_script(tmp_path / "fake" / "python3", FAKE_VENV_PYTHON)))
    messages = []
    found = android.ensure_mediapipe_python(progress=messages.append)
    assert found == str(android.user_venv() / "bin" / "python")
    assert messages == [f"creating MediaPipe's environment in {android.user_venv()} (once, ~30 s)"]
    assert android.ensure_mediapipe_python(progress=messages.append) == found and len(messages) == 1
    assert [p.name for p in android.user_venv().parent.iterdir()] == ["venv-mediapipe"]  # no staging left


def test_a_creation_killed_midway_leaves_no_environment_and_the_next_one_removes_its_files(no_mediapipe, monkeypatch,
                                                                                        tmp_path):
    home = tmp_path / "home"
    hanging = _script(tmp_path / "hang" / "python3",
                      f'#!/bin/sh\nmkdir -p "$3/lib"\ntouch {tmp_path}/started\nsleep 300\n')
    script = ("import sys\nfrom mobilenet_keras.deploy import android\nandroid.venv_python = sys.argv[1]\n"
              "android.SOURCE_VENV = android.Path(sys.argv[2])\nandroid.ensure_mediapipe_python()\n")
    env = {**os.environ, "MOBILENET_KERAS_HOME": str(home)}
    env.pop("MOBILENET_KERAS_MEDIAPIPE_PYTHON", None)
    child = subprocess.Popen([sys.executable, "-c", script, str(hanging), str(tmp_path / "none")], env=env,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 120
        while not (tmp_path / "started").exists() and time.time() < deadline:
            time.sleep(0.1)
        child.send_signal(signal.SIGKILL)  # the command, while its `python -m venv` runs
        child.wait()
    finally:
        os.killpg(child.pid, signal.SIGKILL)  # and the orphaned stand-in
    left = list(home.iterdir())
    assert len(left) == 1 and ".staging" in left[0].name and (left[0] / "lib").is_dir(), left
    assert not (home / "venv-mediapipe").exists()  # never a half-made environment under the real name
    android = no_mediapipe
    monkeypatch.setattr(android, "venv_python", str(_script(tmp_path / "fake" / "python3", FAKE_VENV_PYTHON)))
    assert android.ensure_mediapipe_python(progress=lambda text: None) == str(android.user_venv() / "bin" / "python")
    assert [p.name for p in home.iterdir()] == ["venv-mediapipe"]


def test_a_planted_venv_in_the_current_folder_is_never_run(no_mediapipe, monkeypatch, tmp_path):
    """Without network (pip fails) the file is written without metadata, with one warning; the
    `.venv-mediapipe/bin/python` planted in the current folder is not executed."""
    from tests.conftest import TFLITE_REFERENCE, require

    android = no_mediapipe
    marker = tmp_path / "planted-ran"
    work = tmp_path / "work"
    _script(work / ".venv-mediapipe" / "bin" / "python", f"#!/bin/sh\ntouch {marker}\nexit 0\n")
    monkeypatch.chdir(work)
    monkeypatch.setattr(android, "venv_python", str(_script(tmp_path / "fake" / "python3", "#!/bin/sh\nexit 1\n")))
    uint8 = require(TFLITE_REFERENCE / "mobilenet_v1_0.25_128_quant.tflite")

    class Model:
        name = "m"

    with pytest.warns(UserWarning, match="no metadata"):
        path = android.android_file(Model(), work / "out" / "model.tflite", None, ["a", "b"], uint8_file=uint8)
    assert path.read_bytes() == uint8.read_bytes() and not marker.exists()
    assert (android.user_venv().parent / "venv-mediapipe.failed").is_file()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per process; a failure is not retried at once
        android.android_file(Model(), work / "out" / "model.tflite", None, ["a", "b"], uint8_file=uint8)
    assert not marker.exists()


def test_labels_an_app_could_not_load_are_refused_before_converting(tmp_path):
    # MediaPipe's metadata dropped the blank name, and its ImageClassifier then refused the file (2 labels for
    # 3 classes); a repeated name gave an app two classes it can't tell apart
    from mobilenet_keras import MobileNetV1
    from mobilenet_keras.deploy.android import android_file

    model = MobileNetV1(input_shape=(32, 32, 3), alpha=0.25, classes=3, weights=None)
    for labels, problem in ((["cat", " ", "dog"], "starts or ends with whitespace"), (["cat", "", "dog"], "empty"),
                            (["cat", "cat", "dog"], "not unique")):
        with pytest.raises(ValueError, match=problem):
            android_file(model, tmp_path / "app" / "model.tflite", None, labels)
    assert not (tmp_path / "app").exists()



def _live_processes_naming(text: str) -> list[int]:
    """Processes, zombies left out, whose command line holds `text`."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                command = f.read().decode(errors="replace")
            with open(f"/proc/{entry}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if text in command and "mediapipe_metadata.py" in command and state != "Z":
            found.append(int(entry))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the child's watch on its parent is Linux's prctl")
def test_mediapipe_child_ends_when_the_package_process_is_killed(tmp_path):
    """kill -9 of the process running MediaPipe's script ends the script too (before: it went on classifying, and
    writing into a scratch folder that the next run sweeps away)."""
    from PIL import Image

    from tests.conftest import TFLITE_REFERENCE, require

    _mediapipe_or_skip()
    model = require(TFLITE_REFERENCE / "mobilenet_v1_0.25_128_quant.tflite")
    rng = np.random.default_rng(0)
    tag = f"k{os.getpid()}-{time.monotonic_ns()}"  # in the script's command line: this test's, no other's
    Image.fromarray(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)).save(tmp_path / f"{tag}.png")
    files = [f"{tag}.png"] * 20000  # ~25 s of MediaPipe's classifier: it is still running when the kill comes
    code = ("import sys; from mobilenet_keras.deploy.android import run_mediapipe_tools; "
            "run_mediapipe_tools('classify', *sys.argv[1:])")
    parent = subprocess.Popen([sys.executable, "-c", code, str(model), *files], cwd=tmp_path)  # short names
    try:
        deadline = time.monotonic() + 120
        while not _live_processes_naming(tag) and parent.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2.0)  # well inside its run: mediapipe imported, classifying
        children = _live_processes_naming(tag)
        assert children and parent.poll() is None, "MediaPipe's script was not running when the kill was due"
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        while _live_processes_naming(tag) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _live_processes_naming(tag), "MediaPipe's script outlived the killed process"
    finally:
        parent.kill()
        for pid in _live_processes_naming(tag):
            os.kill(pid, signal.SIGKILL)
