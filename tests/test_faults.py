"""Reliability: no false PASS, nothing lost on a kill or a full disk, one-line errors.

Most tests run `python -m mobilenet_keras train ...` in a subprocess, as a user does, and kill it
for real. The models are small (alpha 0.25, 32 px, the embedded digits) so the file stays under a
few minutes on two cores.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mobilenet_keras.labels import check_class_names
from mobilenet_keras.training.run_folder import RunFolder
from tests.conftest import in_process

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ["--data", "digits", "--alpha", "0.25", "--image-size", "32", "--batch-size", "64", "--quiet"]


def _env() -> dict:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}


def _cli(*args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mobilenet_keras", *map(str, args)], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=timeout)


def _assert_one_line_error(result, *words):
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr[-3000:]
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


def _history(out: Path) -> list[dict]:
    with open(out / "history.csv") as f:
        return list(csv.DictReader(f))


def _temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*.tmp*")]


# -- files follow the umask ------------------------------------------------------------------------


def test_written_files_and_folders_follow_the_umask(tmp_path):
    script = f"""
import os, stat
os.umask(0o022)
from mobilenet_keras.files import atomic_path, make_folder, write_bytes_atomic
root = {str(tmp_path)!r}
write_bytes_atomic(os.path.join(root, "a.json"), b"{{}}")
with atomic_path(os.path.join(root, "b.weights.h5")) as tmp:
    open(tmp, "wb").write(b"x")
make_folder(os.path.join(root, "sub", "deeper"))
os.umask(0o077)
write_bytes_atomic(os.path.join(root, "private.json"), b"{{}}")
mode = lambda name: oct(stat.S_IMODE(os.stat(os.path.join(root, name)).st_mode))
print(mode("a.json"), mode("b.weights.h5"), mode("sub"), mode("sub/deeper"), mode("private.json"))
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=_env(), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0o644", "0o644", "0o755", "0o755", "0o600"]


# -- the run folder ------------------------------------------------------------------------------


def _finished_pipeline_folder(out: Path) -> None:
    out.mkdir(parents=True)
    for name in ("model.keras", "labels.txt", "run.json", "training.png", "confusion_matrix.png",
                 "size_vs_accuracy.png", "scatter_float_vs_int8.png", "extra_plot.png", "my_notes.png"):
        (out / name).write_bytes(b"old")
    (out / "history.csv").write_text("epoch,accuracy,loss,val_accuracy,val_loss\n0,0.99,0.1,0.999,0.1\n"
                                     "1,0.99,0.1,0.999,0.1\n")
    for name in ("tflite/model_int8.tflite", "tflite/.model_uint8.tflite.tmp1234", "android/model.tflite",
                 "android/labels.txt", "saved_model/saved_model.pb", "saved_model/variables/variables.index",
                 "qat/qat.json", "qat/qat.weights.h5"):
        (out / name).parent.mkdir(exist_ok=True)
        (out / name).write_bytes(b"old")
    (out / "report.md").write_text("# PASS\n")
    (out / "report.json").write_text(json.dumps({"verdict": "PASS", "plots": ["training.png", "extra_plot.png"]}))


def test_invalidate_removes_the_verdict_first_and_files_made_from_the_old_model(tmp_path, monkeypatch):
    out = tmp_path / "run"
    _finished_pipeline_folder(out)
    folder = RunFolder(out)
    order = []
    real = RunFolder._remove

    def spy(self, names):
        order.extend(real(self, names))
        return order

    monkeypatch.setattr(RunFolder, "_remove", spy)
    folder.invalidate()
    assert order[:2] == ["report.json", "report.md"]
    left = sorted(p.name for p in out.iterdir())
    assert left == ["history.csv", "labels.txt", "model.keras", "my_notes.png", "run.json", "training.png"]
    folder.clear()
    assert sorted(p.name for p in out.iterdir()) == ["my_notes.png"]


def test_invalidate_keeps_files_the_package_did_not_write_and_names_them(tmp_path):
    # --force or a new training removes what was made from the old model; a user's files in android/ (where
    # `export --android` writes files of the user's naming) are not the package's to delete (the folder went
    # whole). tflite/, qat/ and saved_model/ are the package's alone: exports refuse to write there.
    out = tmp_path / "run"
    _finished_pipeline_folder(out)
    (out / "android" / "release-notes.txt").write_text("mine")
    (out / "android" / "my_backup_model.tflite").write_bytes(b"an app's earlier file")
    (out / "android" / ".model.tflite.123.staging.tflite").write_bytes(b"a killed export's")
    with pytest.warns(UserWarning) as caught:
        removed = RunFolder(out).invalidate()
    assert sorted(p.name for p in (out / "android").iterdir()) == ["my_backup_model.tflite", "release-notes.txt"]
    assert not (out / "tflite").exists() and not (out / "qat").exists() and not (out / "saved_model").exists()
    assert "android/model.tflite" in removed and "tflite" in removed
    texts = [str(w.message) for w in caught]
    assert any("release-notes.txt" in t and "my_backup_model.tflite" in t and str(out / "android") in t
               for t in texts), texts


@contextlib.contextmanager
def _read_only(folder: Path):
    """`folder` unwritable, for root too (an immutable folder); skips where that can't be made."""
    if os.geteuid() == 0:
        made = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True)
        if made.returncode != 0:
            pytest.skip(f"chattr +i is not allowed here ({made.stderr.strip()}), and root ignores mode bits")
    else:
        folder.chmod(0o555)
    try:
        yield folder
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(folder)], check=False)
        folder.chmod(0o755)


def test_qat_refuses_a_run_folder_it_could_not_write_before_any_work(tmp_path):
    from mobilenet_keras.app.qat_stage import qat_run_folder

    with pytest.raises(ValueError, match="run folder .*nowhere does not exist"):
        qat_run_folder(tmp_path / "nowhere", epochs=1, learning_rate=1e-5)
    run = tmp_path / "run"
    (run / "tflite").mkdir(parents=True)
    (run / "model.keras").write_bytes(b"not read: the check comes first")
    (run / "run.json").write_text("{}")
    # it trained for minutes and then failed to move its files in, leaving no report (a red team's find)
    with _read_only(run / "tflite"), pytest.raises(ValueError) as info:
        qat_run_folder(run, epochs=1, learning_rate=1e-5)
    assert f"{run / 'tflite'} is not writable" in str(info.value) and "\n" not in str(info.value)


def test_qat_and_export_name_a_model_keras_of_another_size_than_run_json(tmp_path, capsys):
    # qat blamed the representative images' shape ("pass a folder and let the converter resize")
    from mobilenet_keras import MobileNetV1

    run = tmp_path / "run"
    trained = in_process(capsys, "train", *TRAIN, "--epochs", "1", "--out", run)  # run.json as train writes it
    assert trained.returncode == 0, trained.stderr[-3000:]
    MobileNetV1(input_shape=(48, 48, 3), alpha=0.25, classes=10).save(run / "model.keras")
    for command in (("qat", run, "--epochs", "1"), ("export", run, "--android", tmp_path / "a" / "model.tflite"),
                    ("export", run, "--saved-model", tmp_path / "served"),
                    ("export", run, "--onnx", tmp_path / "m.onnx")):
        _assert_one_line_error(in_process(capsys, *command, "--quiet"), "says the run trained at 32 px",
                               "takes 48x48", "don't belong together")
    assert not (tmp_path / "served").exists() and not (tmp_path / "m.onnx").exists()


def test_qat_files_that_cant_move_in_leave_the_old_verdicts(tmp_path):
    import numpy as np

    from mobilenet_keras.app import report
    from mobilenet_keras.app.qat_stage import _take_place
    from tflite.verify import judge_outputs

    run, staging = tmp_path / "run", tmp_path / "run" / ".qat.1.staging"
    for name in ("qat", "tflite", ".qat.1.staging/qat", ".qat.1.staging/tflite"):
        (run / name).mkdir(parents=True)
    (staging / "qat" / "qat.weights.h5").write_bytes(b"new")
    (staging / "tflite" / "model_qat.tflite").write_bytes(b"new")
    (run / "qat" / "qat.json").write_text('{"files": []}')
    outputs = np.eye(3, dtype=np.float32)[np.arange(300) % 3]
    row = judge_outputs(outputs, outputs, file=run / "tflite" / "model_float32.tflite", mode="float32",
                        size_bytes=10, float32_size_bytes=10).to_dict()
    summary = {"verdict": "PASS", "files": [row], "plots": [], "deployables": {},
               "run": {"data": {"source": "digits", "train_images": 1, "validation_images": 300, "classes": ["a"],
                                "image_size": 32}, "config": {"alpha": 0.25, "weights": None},
                       "final": {"val_accuracy": 0.9}}}
    report.write(summary, run)
    before = {name: (run / name).read_bytes() for name in ("report.json", "report.md", "qat/qat.json")}
    rows = [dict(row, file=str(staging / "tflite" / "model_qat.tflite"))]
    with _read_only(run / "qat"), pytest.raises(ValueError, match="the run folder is as it was"):
        _take_place(run, staging, rows, model=None)
    assert {name: (run / name).read_bytes() for name in before} == before
    # qat.json set aside, then the first file can't move: it comes back, byte for byte, with the report
    (staging / "qat" / "qat.weights.h5").unlink()
    with _read_only(run / "tflite"), pytest.raises(ValueError, match="the run folder is as it was"):
        _take_place(run, staging, rows, model=None)
    assert {name: (run / name).read_bytes() for name in before} == before


def test_run_json_damaged_or_missing_is_one_line(tmp_path):
    folder = RunFolder(tmp_path)
    with pytest.raises(ValueError, match="has no run.json"):
        folder.read_run()
    (tmp_path / "run.json").write_text('{"config": {')
    with pytest.raises(ValueError, match=r"run.json is damaged \(.*\); train again"):
        folder.read_run()
    (tmp_path / "run.json").write_text('{"config": {}}')
    with pytest.raises(ValueError, match=r"damaged \(missing data, final\)"):
        folder.read_run()
    folder.write_run({"config": {}, "data": {}, "final": {}})
    assert folder.read_run()["final"] == {}
    assert not folder.has_model()


@pytest.mark.parametrize("name", ["", " cat", "cat ", "two\nlines", "car\riage", "tab\t"])
def test_labels_refuses_names_it_cant_write_one_per_line(tmp_path, name):
    with pytest.raises(ValueError) as info:
        RunFolder(tmp_path).write_labels(["dog", name], source="photos/")
    assert "photos/" in str(info.value) and "labels.txt" in str(info.value)
    assert not (tmp_path / "labels.txt").exists()


def test_labels_round_trip(tmp_path):
    folder = RunFolder(tmp_path)
    assert folder.labels() is None
    folder.write_labels(["chat noir", "dog", "été"])
    assert folder.labels() == ["chat noir", "dog", "été"]
    assert check_class_names(("a", "b")) == ["a", "b"]
    with pytest.raises(ValueError, match="not unique"):
        check_class_names(["a", "a"])


def test_check_writable_refuses_a_file_and_an_unwritable_folder(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is not a folder"):
        RunFolder(tmp_path / "file").check_writable()
    locked = tmp_path / "locked"
    locked.mkdir()
    with _read_only(locked), pytest.raises(ValueError) as info:
        RunFolder(locked).check_writable()
    assert "is not writable" in str(info.value) and "\n" not in str(info.value)
    assert RunFolder(tmp_path / "new" / "run").check_writable().is_dir()
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    with pytest.raises(ValueError, match=r"dangling is a link to .*gone, which does not exist"):
        RunFolder(tmp_path / "dangling").check_writable()


def test_a_path_through_a_missing_folder_and_dotdot_leaves_no_empty_folder(tmp_path):
    from mobilenet_keras.files import check_file_name, make_folder, walked_path

    # mkdir -p on "new/../x" made "new", which nothing then used
    run = RunFolder(tmp_path / "new" / ".." / "run")
    assert run.check_writable() == tmp_path / "run"
    target = check_file_name(tmp_path / "a b" / ".." / "app" / "model.tflite")
    make_folder(target.parent)
    assert target == tmp_path / "app" / "model.tflite" and sorted(os.listdir(tmp_path)) == ["app", "run"]
    # a linked folder is walked as the system walks it: ".." is the link target's parent
    (tmp_path / "deep" / "inner").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "deep" / "inner")
    assert walked_path(tmp_path / "link" / ".." / "m.tflite") == tmp_path / "deep" / "m.tflite"
    # the file's own name stays a name (a link there is replaced, not followed); a plain path is untouched
    assert walked_path(tmp_path / "x" / ".." / "link") == tmp_path / "link"
    assert walked_path("runs/latest") == Path("runs/latest")
    # train and pipeline hold their folder by the same path: a run that fails at once takes away the folder it
    # made (before, the clean-up listed "gone/../held" and raised FileNotFoundError over the real error)
    from mobilenet_keras.training.run_folder import held_run_folder

    with pytest.raises(RuntimeError, match="the work failed"):
        with held_run_folder(tmp_path / "gone" / ".." / "held") as folder:
            assert folder.path == tmp_path / "held" and folder.path.is_dir()
            raise RuntimeError("the work failed")
    assert not (tmp_path / "held").exists() and not (tmp_path / "gone").exists()


# -- a full disk ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _small_tmpfs(folder: Path, size: str):
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"can't mount a tmpfs here ({mounted.stderr.strip() or mounted.returncode})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_full_disk_while_writing_a_file_is_one_line_and_leaves_no_half_file(tmp_path):
    from mobilenet_keras.files import atomic_path, write_bytes_atomic

    with _small_tmpfs(tmp_path / "small", "64k") as small:
        with pytest.raises(ValueError) as info:
            write_bytes_atomic(small / "big.bin", b"x" * 200_000)
        assert str(info.value).startswith(f"disk full writing {small / 'big.bin'}")
        with pytest.raises(ValueError, match="disk full writing .*model.keras"):
            with atomic_path(small / "model.keras") as tmp:
                tmp.write_bytes(b"x" * 200_000)
        assert list(small.iterdir()) == []


def test_a_full_disk_during_training_is_one_line(tmp_path):
    with _small_tmpfs(tmp_path / "small", "2m") as small:
        result = _cli("train", *TRAIN, "--epochs", "2", "--out", small / "run")
        _assert_one_line_error(result, "disk full writing")
        assert _temp_files(small) == []


# -- errors a user makes, as the command shows them -------------------------------------------------


def test_cli_errors_are_one_line(tmp_path):
    from PIL import Image

    data = tmp_path / "tiny"
    for name in ("a", "b"):
        (data / name).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (40, 40), (i * 100, 0, 0)).save(data / name / f"{i}.png")
    result = _cli("train", "--data", data, "--epochs", "1", "--out", tmp_path / "run")
    line = _assert_one_line_error(result, "validation split", "is empty", "at least 5 images")
    assert "No images found" not in line
    result = _cli("train", *TRAIN, "--learning-rate", "nan", "--out", tmp_path / "run")
    _assert_one_line_error(result, "learning_rate must be a finite number > 0", "nan")
    result = _cli("train", *TRAIN, "--alpha", "inf", "--out", tmp_path / "run")
    _assert_one_line_error(result, "alpha must be a finite number > 0")
    assert not (tmp_path / "run").exists()


# -- kills -----------------------------------------------------------------------------------------


def _train_until(out: Path, marker: Path, epochs: int, timeout: float = 240, more: tuple = (), cwd: Path = ROOT):
    """Start `train` and SIGKILL it as soon as `marker` exists; returns what was seen before."""
    process = subprocess.Popen([sys.executable, "-m", "mobilenet_keras", "train", *TRAIN, "--epochs", str(epochs),
                                *map(str, more), "--out", str(out)], cwd=cwd, env=_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    marker = cwd / marker
    deadline = time.time() + timeout
    report_gone_first = None
    try:
        out = cwd / out
        while not marker.exists():
            if report_gone_first is None and not (out / "report.json").exists() and (out / "logs").exists():
                report_gone_first = not (out / "report.md").exists() and not (out / "tflite").exists()
            assert process.poll() is None, f"train ended before {marker.name} appeared: {process.stderr.read()}"
            assert time.time() < deadline, f"no {marker} after {timeout} s"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    return report_gone_first


@pytest.mark.slow
def test_killed_runs_resume_and_a_torn_backup_is_set_aside(tmp_path, capsys):
    # a folder that holds a finished pipeline run (a PASS) and an old history, trained again (--restart: a
    # finished run is not retrained without it), killed, then resumed by the same command without --restart
    out = tmp_path / "run"
    _finished_pipeline_folder(out)
    backup = out / "backup" / "phase1"
    gone = _train_until(out, backup / "training_metadata.json", epochs=3, more=("--restart",))
    # the verdict and the files made from the old model went before training wrote anything
    assert gone is not False
    for name in ("report.json", "report.md", "tflite", "android", "saved_model", "qat", "confusion_matrix.png"):
        assert not (out / name).exists(), name
    assert (backup / "latest.weights.h5").is_file()
    killed_at = json.loads((backup / "training_metadata.json").read_text())["epoch"]
    assert killed_at >= 1
    saved = (backup / "latest.weights.h5").read_bytes()

    result = in_process(capsys, "train", *TRAIN, "--epochs", "3", "--out", out)  # the killed one's command
    assert result.returncode == 0, result.stderr[-3000:]
    history = _history(out)
    assert [row["epoch"] for row in history] == ["0", "1", "2"]  # the old run's rows are gone, none twice
    assert all(float(row["val_accuracy"]) < 0.999 for row in history)
    run = json.loads((out / "run.json").read_text())
    assert run["final"]["best_val_accuracy"] == pytest.approx(max(float(r["val_accuracy"]) for r in history))
    assert run["final"]["epochs"] == 3
    # seconds and images/s are this process's: the epochs before the kill are counted apart
    assert run["resumed_after_epochs"] >= 1 and \
        run["resumed_after_epochs"] + len(run["throughput"]["epoch_seconds"]) == 3, run
    assert not (out / "backup").exists() and not (out / "best.weights.h5").exists()
    assert _temp_files(out) == []

    # a backup torn by a kill in the middle of Keras's own write: the next run warns and finishes
    torn = tmp_path / "torn"
    (torn / "backup" / "phase1").mkdir(parents=True)
    (torn / "backup" / "phase1" / "latest.weights.h5").write_bytes(saved[: len(saved) // 3])
    (torn / "backup" / "phase1" / "training_metadata.json").write_text(json.dumps({"epoch": 1, "batch": 0}))
    result = in_process(capsys, "train", *TRAIN, "--epochs", "2", "--out", torn)
    assert result.returncode == 0, result.stderr[-3000:]
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "can't be read" in warnings[0] and ".torn" in warnings[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert [row["epoch"] for row in _history(torn)] == ["0", "1"]  # started again from the last good state
    assert (torn / "run.json").is_file()


def _killed_while_holding(script: str, marker: Path, tmp_path: Path) -> None:
    """Run `script` (it writes `marker` once it holds its temporary file or folder, then waits) and SIGKILL it."""
    process = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, env=_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    try:
        while not marker.exists():
            assert process.poll() is None, process.stderr.read()[-3000:]
            assert time.time() < deadline, f"no {marker} after 240 s"
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()


def test_a_write_killed_halfway_leaves_a_temporary_file_that_the_next_write_removes(tmp_path):
    target, marker = tmp_path / "model.keras", tmp_path / "holding"
    target.write_bytes(b"old")
    _killed_while_holding(f"""
import time
from pathlib import Path
from mobilenet_keras.files import atomic_path
with atomic_path({str(target)!r}) as tmp:
    Path(tmp).write_bytes(b"half of the n")
    Path({str(marker)!r}).touch()
    time.sleep(600)
""", marker, tmp_path)
    assert target.read_bytes() == b"old" and len(_temp_files(tmp_path)) == 1  # the old file; the dead write's temp
    from mobilenet_keras.files import write_bytes_atomic

    held = tmp_path / ".model.keras.1.x"  # not a temporary file of this scheme: left alone
    held.write_bytes(b"")
    # nor those of a file whose name goes on with digits (model.keras.4000001 written by a live process 1)
    others = [tmp_path / ".model.keras.4000001.1.abcdefgh.tmp.4000001", tmp_path / ".model.keras.4000002.notes.tmpl"]
    for other in others:
        other.write_bytes(b"")
    write_bytes_atomic(target, b"new")
    assert target.read_bytes() == b"new" and held.exists() and all(other.exists() for other in others)
    assert sorted(_temp_files(tmp_path)) == sorted(others)


def test_a_write_check_killed_midway_leaves_a_probe_that_the_next_check_removes(tmp_path):
    import socket

    folder, marker = tmp_path / "out", tmp_path / "holding"
    folder.mkdir()
    # the microseconds between the probe's creation and its removal, held open until the kill
    _killed_while_holding(f"""
import tempfile, time
from pathlib import Path
from mobilenet_keras.files import probe_writable
mkstemp = tempfile.mkstemp
def mkstemp_and_hold(*args, **kwargs):
    made = mkstemp(*args, **kwargs)
    Path({str(marker)!r}).touch()
    time.sleep(600)
tempfile.mkstemp = mkstemp_and_hold
probe_writable({str(folder)!r})
""", marker, tmp_path)
    left = list(folder.iterdir())
    assert len(left) == 1 and left[0].name.startswith(".write-check."), left  # what the kill left
    other_host = folder / ".write-check.another-host.1.abcdefgh.tmp"  # its process ids mean nothing here
    other_host.write_bytes(b"")
    from mobilenet_keras.training.run_folder import RunFolder

    RunFolder(folder).check_writable()
    assert list(folder.iterdir()) == [other_host], (socket.gethostname(), list(folder.iterdir()))


def test_a_data_cache_folder_left_by_a_kill_goes_at_the_next_load(tmp_path):
    from PIL import Image
    import numpy as np

    root = tmp_path / "data"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(np.full((20, 20, 3), 40 * i, np.uint8)).save(root / name / f"{i}.png")
    cache, marker = tmp_path / "cache", tmp_path / "holding"
    load = (f"from mobilenet_keras.training import datasets\n"
            f"loaded = datasets.image_folder({str(root)!r}, image_size=16, validation_split=0.25, memory_limit=0, "
            f"cache_dir={str(cache)!r})\nloaded.validation_arrays()\n")
    _killed_while_holding(load + f"import time\nopen({str(marker)!r}, 'w').close()\ntime.sleep(600)\n",
                          marker, tmp_path)
    left = list(cache.iterdir())
    assert len(left) == 1 and any(left[0].iterdir())  # the killed load's cache folder, with its files
    done = subprocess.run([sys.executable, "-c", load + "import os\nprint(sorted(os.listdir("
                           f"{str(cache)!r})))\n"], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert left[0].name not in done.stdout and done.stdout.count("data-cache") == 1  # only its own, while it ran
    assert list(cache.iterdir()) == []  # and that one went when it ended


@pytest.mark.slow
def test_a_resume_is_the_same_command_or_a_restart_and_a_relative_out_resumes_after_phase_one(tmp_path, capsys,
                                                                                              monkeypatch):
    # The runs that are killed are processes of their own; the runs after them go in this process (the same
    # command's code, without another import of TensorFlow for each).
    # killed between the phases, the run folder given relative to where train runs (the default runs/latest is)
    out = Path("runs") / "ft"
    _train_until(out, out / "phase1.json", 1, more=("--fine-tune-epochs", "2"), cwd=tmp_path)
    with monkeypatch.context() as here:
        here.chdir(tmp_path)
        again = in_process(capsys, "train", *TRAIN, "--epochs", "1", "--fine-tune-epochs", "2", "--out", out)
    assert again.returncode == 0, again.stderr[-3000:]
    assert [row["epoch"] for row in _history(tmp_path / out)] == ["0", "1", "2"]

    # killed with its backup written: other settings are refused (its epochs came from the first), --restart
    # starts afresh, and the finished run's record went first (no run.json beside a model being replaced)
    run = tmp_path / "run"
    _train_until(run, run / "backup" / "phase1" / "training_metadata.json", 3)
    assert not (run / "run.json").exists()
    refused = in_process(capsys, "train", *TRAIN, "--epochs", "4", "--out", run)
    _assert_one_line_error(refused, "holds an unfinished run with other settings", "epochs: 3 then, 4 now",
                           "--restart")
    restarted = in_process(capsys, "train", *TRAIN, "--epochs", "2", "--restart", "--out", run)
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    # a finished run is not trained again in place by the same command (a kill midway left the old model and
    # record beside the new run's state); --restart does it
    again = in_process(capsys, "train", *TRAIN, "--epochs", "2", "--out", run)
    _assert_one_line_error(again, "holds a finished run", "--restart")
    restarted = in_process(capsys, "train", *TRAIN, "--epochs", "2", "--restart", "--out", run)
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    assert "Epoch 1/" in restarted.stderr or "epoch 1/" in restarted.stderr
    assert [row["epoch"] for row in _history(run)] == ["0", "1"]
    assert json.loads((run / "run.json").read_text())["config"]["epochs"] == 2
    assert not (run / "resume.json").exists()  # the resume state goes with the finished run


@pytest.mark.slow
def test_a_full_disk_inside_tensorflow_is_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    assert in_process(capsys, "train", *TRAIN, "--epochs", "1", "--out", run).returncode == 0
    with _small_tmpfs(tmp_path / "small", "256k") as small:
        result = _cli("export", run, "--saved-model", small / "serving" / "1")
        _assert_one_line_error(result, "disk full")
        assert not [p for p in small.rglob("*") if p.is_file()]


def test_a_run_folder_in_use_is_refused_to_a_second_process(tmp_path):
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "mobilenet_keras", "train", *TRAIN, "--epochs", "30",
                              "--out", str(out)], cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while not (out / "logs").exists():  # training has begun
            assert first.poll() is None, first.stderr.read()[-3000:]
            assert time.time() < deadline
            time.sleep(0.05)
        second = _cli("train", *TRAIN, "--epochs", "1", "--out", out)
        _assert_one_line_error(second, f"run folder {out} is in use by another process (pid {first.pid})")
        qat = _cli("qat", out)  # not finished yet: named as such, before any lock is asked for
        assert qat.returncode == 2
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # a killed holder lets go: the next claim takes the folder
    from mobilenet_keras.training.run_folder import RunFolder

    with RunFolder(out).claimed():
        with RunFolder(out).claimed():  # nested in one process: shared
            pass


def test_a_conversion_killed_midway_leaves_a_scratch_folder_that_the_next_one_removes(tmp_path):
    import tempfile

    marker = tmp_path / "holding"
    _killed_while_holding(f"""
import time
from pathlib import Path
from mobilenet_keras.files import scratch_folder
with scratch_folder() as tmp:
    (tmp / "saved_model").mkdir()
    Path({str(marker)!r}).write_text(str(tmp))
    time.sleep(600)
""", marker, tmp_path)
    left = Path(marker.read_text())
    assert left.is_dir() and left.parent == Path(tempfile.gettempdir())  # what the kill left
    from mobilenet_keras.files import scratch_folder

    with scratch_folder() as mine:
        assert not left.exists() and mine.is_dir()
    assert not mine.exists()


def test_tensorflows_temporary_files_of_a_killed_command_go_at_the_next_one(tmp_path):
    # AutoGraph writes a .py file into $TMPDIR for each function it converts and removes them at a clean exit
    # only: every killed run left dozens (thousands had piled up in /tmp on a test machine)
    temp, out = tmp_path / "tmp", tmp_path / "run"
    temp.mkdir()
    env = {**_env(), "TMPDIR": str(temp)}
    victim = subprocess.Popen([sys.executable, "-m", "mobilenet_keras", "train", *TRAIN, "--epochs", "50", "--out",
                               str(out)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
    deadline = time.time() + 240
    try:
        while not list(temp.rglob("__autograph_generated_file*")) and time.time() < deadline:
            assert victim.poll() is None, victim.stderr.read()[-3000:]
            time.sleep(0.05)
        assert list(temp.rglob("__autograph_generated_file*")), "no AutoGraph file in 240 s"
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    left = list(temp.iterdir())
    assert len(left) == 1 and left[0].name.startswith("mobilenet-keras.") and left[0].name.endswith(".tmp"), left
    assert not list(temp.glob("__autograph_generated_file*"))  # all of them inside the package's folder
    done = subprocess.run([sys.executable, "-m", "mobilenet_keras", "summary", "--alpha", "0.25", "--quiet"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert list(temp.iterdir()) == []  # the killed command's folder went, and the summary's own after it
