"""The command line as a user meets it: fast --help, quiet runs, global options anywhere, exit codes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mobilenet_keras.app import cli
from mobilenet_keras.quiet import NativeStderrFilter

ROOT = Path(__file__).resolve().parents[1]
TF_LOG_STARTS = ("I0000", "W0000", "E0000", "WARNING: All log messages before absl", "WARNING:absl:")


def _unasked_env() -> dict:
    """This process's environment without a request for TensorFlow's lines (an in-process CLI call of another
    test sets TF_CPP_MIN_LOG_LEVEL here, for TensorFlow)."""
    return {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "MOBILENET_KERAS_VERBOSE")}


def run_cli(*args, timeout=600, cwd=None):
    return subprocess.run([sys.executable, "-m", "mobilenet_keras", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd or ROOT, env=_unasked_env())


def assert_no_tensorflow_logs(stderr: str) -> None:
    for line in stderr.splitlines():
        assert not line.startswith(TF_LOG_STARTS), line
        assert "cuInit" not in line and "fully_quantize" not in line, line


def test_help_imports_no_tensorflow():
    # What makes --help answer at once is that it loads no framework; a wall-clock limit here would
    # measure the machine's load instead.
    code = ("import sys\n"
            "from mobilenet_keras.app.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('LOADED', sorted(m for m in ('tensorflow', 'keras', 'tf_keras') if m in sys.modules), "
            "file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "exit status" in result.stdout and "inconclusive" in result.stdout
    assert "LOADED []" in result.stderr


def test_version():
    from mobilenet_keras import __version__

    result = run_cli("--version", timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == f"mobilenet-keras {__version__}"


def test_global_options_go_before_or_after_the_command(capsys):
    assert cli.main(["summary", "--alpha", "-1", "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("mobilenet-keras summary: error:")
    assert cli.main(["--debug", "summary", "--alpha", "-1"]) == 2
    assert "Traceback" in capsys.readouterr().err
    args = cli.build_parser().parse_args(["--quiet", "--verbose", "summary"])
    assert args.quiet and args.verbose and not args.debug
    args = cli.build_parser().parse_args(["summary", "--quiet"])
    assert args.quiet and not args.verbose


def test_a_quiet_run_shows_no_tensorflow_log_lines():
    result = run_cli("summary", "--alpha", "0.25", "--image-size", "32", "--no-top", "--quiet", timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines() == ["mobilenet_0.25_32: 0.8M multiply-adds, 0.22M parameters"]
    assert_no_tensorflow_logs(result.stderr)
    assert result.stderr.strip() == "", result.stderr


def test_the_native_stderr_filter_drops_tensorflow_lines_only(capfd):
    with NativeStderrFilter():
        os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
                    b"I0000 00:00:1795877891.156010    5569 port.cc:153] oneDNN custom operations are on.\n")
        os.write(2, b"our own line\nE0000 00:00:1795877895.044769    5569 cuda_platform.cc:52] failed call to "
                    b"cuInit: INTERNAL\nfully_quantize: 0, inference_type: 6, input_inference_type: UINT8\n")
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n\r  calibrating 3/9")
    assert capfd.readouterr().err == "our own line\n\r  calibrating 3/9"


def test_a_child_that_outlives_the_filter_writes_to_stderr_not_into_a_reused_descriptor(tmp_path, capfd):
    # the pump wrote to the descriptor that __exit__ closed: a file opened next got that number, and the
    # child's line went into the file
    with NativeStderrFilter():
        child = subprocess.Popen(["sh", "-c", "sleep 6; echo child says hi >&2"])  # past any wait for the pump
    with open(tmp_path / "model.bin", "wb") as f:  # likely the number the filter's descriptor had
        child.wait(timeout=30)
        time.sleep(0.2)
        f.write(b"weights")
    assert (tmp_path / "model.bin").read_bytes() == b"weights"
    assert "child says hi" in capfd.readouterr().err


def test_the_native_stderr_filter_lets_the_reason_for_an_abort_through(capfd):
    # an F line is the one TensorFlow writes before aborting the process: it was dropped with the chatter,
    # leaving a stack trace without its reason
    fatal = (b"F0000 00:00:1796604849.598742    5939 env.cc:84] Check failed: ret == 0 (11 vs. 0) Thread "
             b"tf_data_iterator_resource creation via pthread_create() failed.\n")
    with NativeStderrFilter():
        os.write(2, b"Improper call to JPEG library in state 201\nInput file read error\n" + fatal)
        os.write(2, b"Input file read error: a line of someone else's stays\n")
    assert capfd.readouterr().err == fatal.decode() + "Input file read error: a line of someone else's stays\n"


def test_an_unexpected_exception_is_one_line_and_status_4(monkeypatch, capsys):
    def broken(args):
        raise RuntimeError("something\nunexpected")

    monkeypatch.setattr(cli, "_cmd_summary", broken)
    assert cli.main(["summary"]) == 4
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["mobilenet-keras summary: internal error: RuntimeError: something unexpected "
                     "(rerun with --debug for the traceback)"]


def test_ctrl_c_is_one_line_and_status_130(monkeypatch, capsys, tmp_path):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_cmd_summary", interrupted)
    assert cli.main(["summary"]) == 130
    assert capsys.readouterr().err.strip().splitlines() == ["mobilenet-keras summary: interrupted"]
    # a run says what running it again does, as its run folder holds it
    monkeypatch.setattr(cli, "_cmd_train", interrupted)
    monkeypatch.setattr(cli, "_cmd_pipeline", interrupted)
    run = tmp_path / "run"
    assert cli.main(["train", "--out", str(run)]) == 130
    assert capsys.readouterr().err.strip().splitlines() == [
        "mobilenet-keras train: interrupted (no epoch had finished: the same command starts from the beginning)"]
    (run / "backup").mkdir(parents=True)
    (run / "backup" / "training_metadata.json").write_text("{}")
    assert cli.main(["train", "--out", str(run)]) == 130
    assert capsys.readouterr().err.strip().splitlines() == [
        "mobilenet-keras train: interrupted (run the same command again to resume from the last finished epoch)"]
    shutil.rmtree(run / "backup")
    for name in ("model.keras", "run.json"):  # training had finished; the pipeline was converting
        (run / name).write_bytes(b"")
    assert cli.main(["pipeline", "--out", str(run)]) == 130
    assert capsys.readouterr().err.strip().splitlines() == [
        "mobilenet-keras pipeline: interrupted (run the same command again to go on from the trained model)"]


def test_keras_prints_one_line_per_epoch_without_a_terminal(monkeypatch):
    args = cli.build_parser().parse_args(["train"])
    monkeypatch.setattr(sys, "stdout", open(os.devnull, "w"))
    assert cli.keras_verbose(args) == 2
    assert cli.keras_verbose(cli.build_parser().parse_args(["train", "--quiet"])) == 0


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A run folder with model.keras and labels.txt (no training): enough for --saved-model."""
    import keras

    from mobilenet_keras import MobileNetV1

    folder = tmp_path_factory.mktemp("run")
    keras.utils.set_random_seed(0)
    MobileNetV1(input_shape=(32, 32, 3), alpha=0.25, classes=3).save(folder / "model.keras")
    (folder / "labels.txt").write_text("a\nb\nc\n")
    return folder


def test_export_saved_model_creates_the_serving_layout(tiny_run, tmp_path):
    target = tmp_path / "serving" / "mobilenet" / "1"
    # an ONNX file inside the SavedModel's folder is two outputs apart (the folder is written first)
    result = run_cli("export", str(tiny_run), "--saved-model", str(target), "--onnx", str(target / "model.onnx"),
                     "--quiet", timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (target / "saved_model.pb").is_file() and (target / "model.onnx").is_file()
    assert_no_tensorflow_logs(result.stderr)


def test_export_to_a_read_only_place_is_one_line_and_status_2(tiny_run, capsys):
    assert cli.main(["export", str(tiny_run), "--saved-model", "/proc/mobilenet/1"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "not writable" in lines[0], lines


def test_export_android_without_calibration_needs_the_run_data(tiny_run, tmp_path, capsys):
    assert cli.main(["export", str(tiny_run), "--android", str(tmp_path / "m.tflite")]) == 2
    assert "has no run.json" in capsys.readouterr().err


def _photo_folder(root, per_class: int):
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def test_export_android_without_the_run_data_verifies_on_the_calibration_folder_images_it_did_not_use(
        tiny_run, tmp_path, capsys):
    # the run's data is not there (no run.json): the folder gives both sets, disjoint, and the verdict
    # follows from the images left (12 of 24: too few for one, so INCONCLUSIVE, never an unchecked PASS)
    folder = _photo_folder(tmp_path / "photos", per_class=8)
    target = tmp_path / "m.tflite"
    status = cli.main(["export", str(tiny_run), "--android", str(target), "--calibration", str(folder), "--quiet"])
    err = capsys.readouterr().err
    assert target.is_file(), err[-2000:]
    assert "calibrating on 12 images from" in err and "the other 12 verify the file" in err, err[-2000:]
    assert "verifying m.tflite on 12 images from" in err, err[-2000:]
    verdict = [line for line in err.splitlines() if line.startswith(("PASS ", "FAIL ", "INCONCLUSIVE "))]
    assert len(verdict) == 1 and verdict[0].startswith("INCONCLUSIVE "), err[-2000:]
    assert status == 3
    # class folders named as the run's classes give the true classes too (accuracy beside agreement)
    import argparse

    import keras

    model = keras.saving.load_model(tiny_run / "model.keras")
    args = argparse.Namespace(calibration=str(folder))
    calibration, validation, truth, _ = cli._android_images(args, model, None, ["a", "b", "c"], lambda line: None)
    assert sorted(np.bincount(truth)) == [4, 4, 4] and len(validation) == 12 and len(calibration) == 12
    assert cli._android_images(args, model, None, ["x", "y", "z"], lambda line: None)[2] is None


def test_export_android_with_a_one_image_calibration_folder_is_inconclusive(tiny_run, tmp_path, capsys):
    from PIL import Image

    folder = _photo_folder(tmp_path / "photos", per_class=0)
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(folder / "a" / "only.png")
    status = cli.main(["export", str(tiny_run), "--android", str(tmp_path / "m.tflite"), "--calibration",
                       str(folder), "--quiet"])
    err = capsys.readouterr().err
    assert status == 3 and "INCONCLUSIVE m.tflite: not verified" in err, err[-2000:]


def test_an_android_file_measured_below_a_threshold_on_few_images_never_replaces_the_one_in_place(
        tiny_run, tmp_path, capsys, monkeypatch):
    # on too few images to call it a FAIL (INCONCLUSIVE, exit 3), a file measured below a threshold is still
    # not written over an app's file: set aside as a failed one is
    import tflite
    from tflite.verify import judge_outputs

    real = tflite.verify

    def measured_below(model, path, images, **kwargs):
        checked = real(model, path, images, **kwargs)  # the real file's check, then 1 of its images flipped
        expected = np.eye(3, dtype=np.float32)[np.arange(len(images)) % 3]
        got = expected.copy()
        got[0] = np.roll(got[0], 1)
        judged = judge_outputs(expected, got, file=path, mode="uint8", size_bytes=checked.size_bytes,
                               float32_size_bytes=checked.float32_size_bytes,
                               thresholds={"min_sqnr_db": -1000.0, "min_top5_overlap": 0.0})
        assert judged.unsettled and not judged.failures  # 1 of 24: 95.8% < 97%, its interval reaches 97%
        return judged

    monkeypatch.setattr(tflite, "verify", measured_below)
    folder = _photo_folder(tmp_path / "photos", per_class=16)
    target = tmp_path / "assets" / "model.tflite"
    target.parent.mkdir()
    target.write_bytes(b"the good file")
    status = cli.main(["export", str(tiny_run), "--android", str(target), "--calibration", str(folder), "--quiet"])
    err = capsys.readouterr().err
    assert status == 3 and "measured below a threshold on" in err and "(the file there is unchanged)" in err, err
    assert target.read_bytes() == b"the good file" and (target.parent / "model.failed.tflite").is_file()


def test_a_failed_android_file_never_replaces_the_one_in_place(tmp_path, capsys):
    # A classifier whose three probabilities differ by less than the uint8 output's step (1/256): the file's
    # scores tie, its top-1 is class 0 for every image, the float model's is not, and the file fails.
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    logits = keras.layers.Dense(3, kernel_initializer=keras.initializers.RandomNormal(stddev=0.002))(pooled)
    run = tmp_path / "run"
    run.mkdir()
    keras.Model(inputs, keras.layers.Softmax()(logits)).save(run / "model.keras")
    (run / "labels.txt").write_text("a\nb\nc\n")
    folder = _photo_folder(tmp_path / "photos", per_class=16)
    target = tmp_path / "assets" / "model.tflite"
    target.parent.mkdir()
    target.write_bytes(b"the good file")
    (target.parent / "labels.txt").write_text("the good file's classes\n")
    status = cli.main(["export", str(run), "--android", str(target), "--calibration", str(folder), "--quiet"])
    err = capsys.readouterr().err
    assert status == 1 and f"FAIL {target.parent / 'model.failed.tflite'}: " in err, err[-2000:]
    assert target.read_bytes() == b"the good file" and "(the file there is unchanged)" in err
    assert (target.parent / "labels.txt").read_text() == "the good file's classes\n"  # its labels too
    assert (target.parent / "model.failed.tflite").is_file()
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".")]  # no staging file left
    # a later file that does not fail takes the place with its labels, and the earlier failed one goes
    inputs = keras.Input((32, 32, 3))
    logits = keras.layers.Dense(3, kernel_initializer="ones")(keras.layers.GlobalAveragePooling2D()(inputs))
    keras.Model(inputs, keras.layers.Softmax()(logits)).save(run / "model.keras")
    assert cli.main(["export", str(run), "--android", str(target), "--calibration", str(folder), "--quiet"]) != 1
    assert target.read_bytes() != b"the good file" and not (target.parent / "model.failed.tflite").exists()
    assert (target.parent / "labels.txt").read_text() == "a\nb\nc\n"


def test_export_android_falls_back_to_the_calibration_folder_when_the_run_data_is_another_set(
        tiny_run, tmp_path, capsys):
    # run.json names a folder that now holds other classes (same counts): without --calibration the
    # command refuses and says what to do; with it, the folder serves both sets and a stage line says why
    import json

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    other = _photo_folder(tmp_path / "other", per_class=8)
    for name in ("a", "b", "c"):
        (other / name).rename(other / f"x{name}")
    (run / "run.json").write_text(json.dumps({
        "config": {"image_size": 32, "batch_size": 8, "seed": 0},
        "data": {"source": str(other), "classes": ["a", "b", "c"], "train_images": 20, "validation_images": 4,
                 "validation_split": 0.2, "image_size": 32},
        "final": {"val_accuracy": 0.5, "val_loss": 1.0, "best_val_accuracy": 0.5, "epochs": 1}, "seconds": 1.0}))
    target = tmp_path / "m.tflite"
    assert cli.main(["export", str(run), "--android", str(target)]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "holds the classes xa, xb, xc, but the run was trained on a, b, c" in error, error
    assert "pass --calibration DIR with typical images for the Android file" in error and not target.exists()
    photos = _photo_folder(tmp_path / "photos", per_class=4)
    status = cli.main(["export", str(run), "--android", str(target), "--calibration", str(photos), "--quiet"])
    err = capsys.readouterr().err
    assert "not using the run's data" in err and "calibrating on 6 images from" in err, err[-2000:]
    assert status == 3 and target.is_file()


def test_qat_on_a_run_whose_data_is_gone_names_the_data_option(tiny_run, tmp_path, capsys):
    import json

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "run.json").write_text(json.dumps({
        "config": {"image_size": 32}, "data": {"source": str(tmp_path / "moved"), "classes": ["a", "b", "c"]},
        "final": {"val_accuracy": 0.5}}))
    assert cli.main(["qat", str(run)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "moved is gone (run.json); pass --data DIR" in error[0], error


def test_an_export_killed_while_checking_leaves_the_apps_file_and_the_next_one_cleans_up(tiny_run, tmp_path, capsys):
    """SIGKILL while the Android file is being verified (converted, not yet in place): the file at PATH is the old
    one, and the next export removes the abandoned staging file."""
    import signal
    import time

    folder = _photo_folder(tmp_path / "photos", per_class=8)
    target = tmp_path / "assets" / "model.tflite"
    target.parent.mkdir()
    target.write_bytes(b"the good file")
    (target.parent / "labels.txt").write_text("the good file's classes\n")
    argv = ["export", str(tiny_run), "--android", str(target), "--calibration", str(folder), "--quiet"]
    victim = subprocess.Popen([sys.executable, "-m", "mobilenet_keras", *argv], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, staged = time.time() + 240, []
    while not staged and victim.poll() is None and time.time() < deadline:
        staged = list(target.parent.glob(".model.tflite.*.staging.tflite"))
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    if not staged:
        pytest.skip("the export finished before its staging file could be seen; nothing to kill")
    assert staged[0].exists() and target.read_bytes() == b"the good file"
    assert (target.parent / "labels.txt").read_text() == "the good file's classes\n"
    assert cli.main(argv) == 3  # 12 images: INCONCLUSIVE, the file takes its place
    assert target.read_bytes() != b"the good file"
    assert not [p.name for p in target.parent.iterdir() if p.name.startswith(".")]


def test_export_with_an_empty_calibration_folder_writes_nothing(tiny_run, tmp_path, capsys):
    folder = _photo_folder(tmp_path / "photos", per_class=0)
    status = cli.main(["export", str(tiny_run), "--saved-model", str(tmp_path / "serving" / "1"),
                       "--android", str(tmp_path / "m.tflite"), "--calibration", str(folder)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and "photos" in lines[-1], lines
    assert not (tmp_path / "serving").exists() and not (tmp_path / "m.tflite").exists()


@pytest.mark.parametrize("value", ["conv_pw_99", ","])
def test_a_float_layers_value_that_names_no_convolution_is_one_line_and_status_2(tiny_run, tmp_path, capsys, value):
    assert cli.main(["export", str(tiny_run), "--android", str(tmp_path / "m.tflite"), "--float-layers", value]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--float-layers takes 'none', 'auto'" in lines[0], lines
    assert not (tmp_path / "m.tflite").exists()


def test_the_float_layers_hint_follows_an_integer_files_agreement_failure():
    from mobilenet_keras.app.pipeline import float_layers_hint

    missed = {"mode": "uint8", "failures": ["top-1 agreement 91.00% < 97% (18 of 200 disagree)"]}
    assert "--float-layers auto" in float_layers_hint([missed], None)
    assert float_layers_hint([missed], "auto") is None  # already asked for
    assert float_layers_hint([{**missed, "mode": "float16"}], None) is None  # not an integer file
    assert float_layers_hint([{"mode": "int8", "failures": ["SQNR 12.0 dB < 15 dB"]}], None) is None


def test_float_layers_values():
    from mobilenet_keras.app.pipeline import parse_float_layers

    assert parse_float_layers("none") is None and parse_float_layers(None) is None
    assert parse_float_layers("AUTO") == "auto"
    assert parse_float_layers("conv1, conv_dw_1") == ["conv1", "conv_dw_1"]


@pytest.mark.slow
def test_export_android_calibrates_on_and_verifies_against_the_run_data(digits_pipeline_run, tmp_path):

    # a trained run folder (the README's default run, trained once per session by the pipeline test's
    # fixture, which checks its --quiet training lines): its model, labels and run.json, nothing made from them
    finished, _ = digits_pipeline_run
    run = tmp_path / "run"
    run.mkdir()
    for name in ("model.keras", "labels.txt", "run.json"):
        shutil.copy(finished / name, run / name)
    target = tmp_path / "app" / "assets" / "model.tflite"
    result = run_cli("export", str(run), "--android", str(target), "--quiet", timeout=900)
    assert (target.parent / "labels.txt").is_file(), result.stderr[-2000:]
    assert_no_tensorflow_logs(result.stderr)
    verdict = [line for line in result.stderr.splitlines() if line.startswith(("PASS ", "FAIL ", "INCONCLUSIVE "))]
    assert len(verdict) == 1, result.stderr[-2000:]
    assert result.returncode == {"PASS": 0, "FAIL": 1, "INCONCLUSIVE": 3}[verdict[0].split()[0]]
    # only a file that did not fail takes the asked-for place; a failed one is set aside
    kept = target.with_name("model.failed.tflite") if result.returncode == 1 else target
    assert kept.is_file() and not (target if result.returncode == 1 else kept.with_name("model.failed.tflite")).exists()
    assert f" {kept}: top-1 agreement" in verdict[0], verdict  # the whole path, not app's short name
    assert [p.name for p in target.parent.iterdir() if p.name.startswith(".")] == []  # no staging file left
    assert "calibrating on 200 of the run's training images" in result.stderr
    from tflite.flatbuffer import float_tensors_inside, read_model

    assert float_tensors_inside(read_model(kept)) == []  # fully integer unless --float-layers says otherwise


@pytest.mark.slow
def test_export_android_over_the_runs_own_android_file_judges_the_run_again(digits_pipeline_run, tmp_path):
    """report.md said `android/model.tflite` PASSed as model_uint8.tflite after an export had replaced it with
    a file of float layers: now the new file's own row is the report's verdict on it."""
    import hashlib
    import json

    finished, _ = digits_pipeline_run
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    target = run / "android" / "model.tflite"
    before = json.loads((run / "report.json").read_text())
    assert before["android_verdict"]["verified_as"] == "model_uint8.tflite"
    assert cli.main(["export", str(run), "--android", str(target), "--float-layers", "conv1", "--quiet"]) in (0, 3)
    after = json.loads((run / "report.json").read_text())
    rows = [row for row in after["files"] if row["file"].endswith("android/model.tflite")]
    assert len(rows) == 1 and rows[0]["float_ops"] > 0 and rows[0]["size_bytes"] == target.stat().st_size
    assert after["android_verdict"]["verified_as"] == "android/model.tflite"
    assert [row["file"] for row in after["files"][:-1]] == [row["file"] for row in before["files"]]
    markdown = (run / "report.md").read_text()
    line = next(line for line in markdown.splitlines() if line.startswith("- `android`"))
    assert "as model_uint8.tflite" not in line and "written and checked by `mobilenet-keras export --android`" in line
    assert hashlib.sha256((run / "tflite" / "model_uint8.tflite").read_bytes()).hexdigest() == hashlib.sha256(
        (finished / "tflite" / "model_uint8.tflite").read_bytes()).hexdigest()
    # a pipeline whose Android file failed set it aside as model.failed.tflite; exported again to the Android
    # place, the report follows the new file (it kept judging the failed one, gone)
    summary = json.loads((run / "report.json").read_text())
    target.rename(target.with_name("model.failed.tflite"))
    summary["deployables"]["android"] = "android/model.failed.tflite"
    for row in summary["files"]:
        if row["file"].endswith("android/model.tflite"):
            row.update(file=str(target.with_name("model.failed.tflite")), failures=["top-1 agreement 90% < 97%"])
    (run / "report.json").write_text(json.dumps(summary))
    assert cli.main(["export", str(run), "--android", str(target), "--quiet"]) in (0, 3)
    after = json.loads((run / "report.json").read_text())
    assert after["deployables"]["android"] == "android/model.tflite" and target.is_file()
    assert not target.with_name("model.failed.tflite").exists()
    assert [row["file"].rsplit("/", 2)[-2:] for row in after["files"]].count(["android", "model.tflite"]) == 1
    assert not [row for row in after["files"] if "failed" in row["file"]] and after["android_verdict"]["verdict"] \
        in ("PASS", "INCONCLUSIVE")


def test_export_refuses_destinations_it_would_destroy_or_misname_before_loading(tiny_run, tmp_path, capsys,
                                                                                 monkeypatch):
    """`--saved-model RUN --force` replaced the run folder with the SavedModel, `--saved-model . --force`
    emptied the current folder; `--android out/` wrote a file named `out`, `--android FOLDER` failed after
    converting and verifying. Each is one line and status 2 now, with nothing touched."""

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = sorted(p.name for p in run.iterdir())
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    monkeypatch.chdir(work)
    (tmp_path / "existing" / "deeper" / "labels.txt").mkdir(parents=True)
    for args, problem in (
            (["--saved-model", str(run), "--force"], "is not a SavedModel"),
            (["--saved-model", ".", "--force"], "is or holds the current folder"),
            (["--saved-model", str(tmp_path), "--force"], "is or holds the current folder"),
            (["--saved-model", "notes.txt"], "is a file"),
            (["--android", "out/"], "names a folder"),
            (["--android", str(tmp_path / "existing")], "is a folder"),
            (["--onnx", "out/"], "out/model.onnx"),
            # the report would judge other files than the ones there (the int8 row, a uint8 file)
            (["--android", str(run / "tflite" / "model_int8.tflite")], "would write over the run's tflite/ folder"),
            (["--onnx", str(run / "model.keras")], "would write over the run's model.keras"),
            (["--onnx", str(run / "report.json")], "would write over the run's report.json"),
            (["--android", str(run / "model.tflite")], "would write over the run's labels.txt"),
            # a SavedModel too: pipeline --force and train --restart clear those folders
            (["--saved-model", str(run / "tflite" / "1")], "would write over the run's tflite/ folder"),
            (["--saved-model", str(run / "saved_model"), "--force"], "would write over the run's saved_model/ folder"),
            # the labels beside the Android file took its place (after a report on the model file)
            (["--android", str(tmp_path / "app" / "labels.txt")], "would both be written at"),
            # found at the end, after the SavedModel was written and the Android file converted
            (["--saved-model", str(tmp_path / "x"), "--android", str(tmp_path / "x")], "would both be written at"),
            (["--saved-model", str(tmp_path / "x" / "m.onnx" / "1"), "--onnx", str(tmp_path / "x" / "m.onnx")],
             "would lie inside --onnx"),
            # found after the new Android file had replaced the old one, which then sat beside no labels
            (["--android", str(tmp_path / "existing" / "deeper" / "model.tflite")], "where its labels go, is a "
                                                                                  "folder")):
        assert cli.main(["export", str(run), *args]) == 2, args
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and problem in lines[0] and "loading" not in lines[0], (args, lines)
    assert sorted(p.name for p in run.iterdir()) == before and (work / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in work.iterdir()) == ["notes.txt"]


def test_export_reads_labels_as_editors_write_them_and_says_when_there_are_none(tiny_run, tmp_path, capsys):

    from mobilenet_keras.deploy.saved_model import LABELS_FILE

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "labels.txt").write_bytes("\ufeffcat\ndog\nbird\n\n".encode())  # a BOM, and an editor's extra line
    assert cli.main(["export", str(run), "--saved-model", str(tmp_path / "named")]) == 0
    assert (tmp_path / "named" / LABELS_FILE).read_text().splitlines() == ["cat", "dog", "bird"]
    (run / "labels.txt").write_text("cat\n\ndog\nbird\n")  # a blank line between names shifts them: refused
    assert cli.main(["export", str(run), "--saved-model", str(tmp_path / "shifted")]) == 2
    assert f"{run / 'labels.txt'} has 4 names for a model with 3 classes" in capsys.readouterr().err
    # as many lines as classes, but one blank or repeated: MediaPipe's metadata dropped the blank one and no app
    # could load the Android file (its label count differed from the classes); train refuses such names
    for text, problem in (("cat\n  \nbird\n", "(it starts or ends with whitespace)"),
                          ("cat\ncat\nbird\n", "not unique ('cat')")):
        (run / "labels.txt").write_text(text)
        assert cli.main(["export", str(run), "--saved-model", str(tmp_path / "app" / "1")]) == 2
        err = capsys.readouterr().err
        assert problem in err and str(run / "labels.txt") in err and "one distinct class name per line" in err, err
        assert not (tmp_path / "app").exists()
    (run / "labels.txt").unlink()
    assert cli.main(["export", str(run), "--saved-model", str(tmp_path / "numbers")]) == 0
    assert "has no labels.txt: the exports give class numbers" in capsys.readouterr().err
    assert not (tmp_path / "numbers" / LABELS_FILE).exists()


def test_export_android_names_a_run_json_that_does_not_match_the_model(digits_pipeline_run, tmp_path, capsys):
    """It said "representative images have shape (64, 64, 3)..." without blaming run.json, after making the
    app's folder."""
    import json

    finished, _ = digits_pipeline_run
    run = tmp_path / "run"
    run.mkdir()
    for name in ("model.keras", "labels.txt", "run.json"):
        shutil.copy(finished / name, run / name)
    record = json.loads((run / "run.json").read_text())
    size = int(record["data"].get("image_size") or record["config"]["image_size"])
    record["data"]["image_size"] = record["config"]["image_size"] = size + 32
    (run / "run.json").write_text(json.dumps(record))
    target = tmp_path / "app" / "model.tflite"
    assert cli.main(["export", str(run), "--android", str(target)]) == 2
    err = capsys.readouterr().err
    assert f"run.json says the run trained at {size + 32} px, but its model.keras takes {size}x{size}" in err, err
    assert not target.parent.exists()


def test_quiet_training_says_when_fine_tuning_starts(tmp_path, capsys):
    # `epoch 1/1` twice, nothing between: the second phase was not said
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # --fine-tune-epochs without --weights is warned about: not this test's
        assert cli.main(["train", "--data", "digits", "--image-size", "32", "--epochs", "1", "--fine-tune-epochs",
                         "1", "--batch-size", "64", "--quiet", "--out", str(tmp_path / "run")]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith(("epoch", "fine-tuning"))]
    assert [line.split("  ")[0] for line in lines] == ["epoch 1/1", "fine-tuning: 1 epoch(s) with the backbone "
                                                      "unfrozen", "epoch 1/1"], lines


@pytest.mark.parametrize("command", ["train", "pipeline"])
def test_a_weights_file_that_is_not_there_is_named_before_tensorflow_starts(command, capsys, tmp_path):
    assert cli.main([command, "--weights", str(tmp_path / "nope.h5"), "--out", str(tmp_path / "run")]) == 2
    assert f"--weights {tmp_path / 'nope.h5'} is not a file" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_export_without_the_onnx_extra_writes_nothing(tiny_run, tmp_path, monkeypatch, capsys):
    # the SavedModel was written first, then --onnx failed for want of tf2onnx
    from mobilenet_keras.deploy import onnx_file

    def missing():
        raise ValueError("ONNX export needs the onnx extra: pip install 'mobilenet-keras[onnx]'.")

    monkeypatch.setattr(onnx_file, "require_onnx", missing)
    argv = ["export", str(tiny_run), "--saved-model", str(tmp_path / "sm"), "--onnx", str(tmp_path / "m.onnx")]
    assert cli.main(argv) == 2
    assert "needs the onnx extra" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


API_SCRIPT = """
import sys, warnings
import numpy as np
from mobilenet_keras.training import datasets
datasets.digits(image_size=32)  # TensorFlow imported by the data code first, not through Keras
from mobilenet_keras import MobileNetV1
import tflite

model = MobileNetV1(input_shape=(32, 32, 3), alpha=0.25, classes=3)
path = tflite.convert(model, sys.argv[1], "float32")
images = np.random.default_rng(0).uniform(-1, 1, (8, 32, 32, 3)).astype("float32")
warnings.simplefilter("always")
tflite.verify(model, path, np.concatenate([images, images]), latency_runs=1)  # warns: repeated images
tflite.TFLiteModel(path).predict(images[:1])
print("our line", file=sys.stderr)
if sys.argv[2:] == ["many"]:
    many = np.random.default_rng(1).uniform(-1, 1, (71, 32, 32, 3)).astype("float32")
    int8 = tflite.convert(model, sys.argv[1] + ".int8.tflite", "int8", representative_data=many[:50])
    for count in (37, 50, 71):  # batches of several lengths: Keras's predict function was traced again each time
        tflite.verify(model, int8, many[:count], latency_runs=0)
"""


@pytest.mark.parametrize("asked", [None, {"MOBILENET_KERAS_VERBOSE": "1"}, {"TF_CPP_MIN_LOG_LEVEL": "0"}])
def test_the_python_api_keeps_tensorflow_log_lines_off_stderr_unless_asked(tmp_path, asked):
    # before: importing, building, converting and checking from Python printed ~20 of TensorFlow's and LiteRT's
    # lines (absl's pre-init notice, oneDNN, CUDA probing as an E line, the converter's W lines naming a scratch
    # folder, "INFO: Created TensorFlow Lite XNNPACK delegate"); the command line filtered them, the API did not
    env = {**_unasked_env(), **(asked or {})}
    many = ["many"] if asked is None else []  # an int8 conversion and checks of three lengths, once
    result = subprocess.run([sys.executable, "-c", API_SCRIPT, str(tmp_path / "m.tflite"), *many], capture_output=True,
                            text=True, timeout=300, cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "our line" in result.stderr and "8 of the 16 images repeat others" in result.stderr, result.stderr
    # the package's warnings name the caller's line, not a frame of the package's
    assert "<string>:13: UserWarning: 8 of the 16 images repeat others" in result.stderr, result.stderr
    assert "retracing" not in result.stderr, result.stderr  # TensorFlow's Python warning, shown or not
    if asked is None:
        assert_no_tensorflow_logs(result.stderr)
        assert "XNNPACK" not in result.stderr and "INFO: " not in result.stderr, result.stderr
    else:  # asked for: TensorFlow's own lines, as TensorFlow prints them
        assert any(line.startswith(TF_LOG_STARTS) for line in result.stderr.splitlines()), result.stderr


FINALIZER_SCRIPT = """
import os, signal, sys, threading, time
from mobilenet_keras.app.cli import sigterm_as_interrupt

class Slow:
    def __del__(self):  # as TensorFlow's functions are freed: the signal lands while a finalizer runs
        threading.Timer(0.2, lambda: os.kill(os.getpid(), getattr(signal, sys.argv[1]))).start()
        time.sleep(1)

with sigterm_as_interrupt():
    try:
        item = Slow()
        del item
        time.sleep(3)
        print("went on")
    except KeyboardInterrupt as exc:
        print("stopped:", type(exc).__name__)
"""


@pytest.mark.parametrize("signal_name,stopped", [("SIGTERM", "Terminated"), ("SIGINT", "KeyboardInterrupt")])
def test_a_signal_that_lands_in_a_finalizer_still_stops_the_command(signal_name, stopped):
    # Python prints and drops an exception raised in __del__: a SIGTERM during an int8 conversion (TensorFlow
    # freeing a function) was lost, and the pipeline ran on to write its report
    result = subprocess.run([sys.executable, "-c", FINALIZER_SCRIPT, signal_name], capture_output=True, text=True,
                            timeout=60, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.stdout.strip() == f"stopped: {stopped}", (result.stdout, result.stderr[-2000:])
    assert "Exception ignored" not in result.stderr, result.stderr
