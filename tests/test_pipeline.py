"""The main job end to end, through the CLI as a user runs it, and its handling of bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import in_process

PNG = b"\x89PNG\r\n\x1a\n"
FIGURES = ("top1_agreement", "top5_overlap", "mean_abs_diff", "max_abs_diff", "mean_cosine", "sqnr_db",
           "size_bytes", "size_ratio", "latency_ms", "float_accuracy", "tflite_accuracy", "passed")


def cli(*args, timeout=1200):
    return subprocess.run([sys.executable, "-m", "mobilenet_keras", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_pipeline_on_digits(digits_pipeline_run):
    out, result = digits_pipeline_run  # the default run, as the README gives it
    report = json.loads((out / "report.json").read_text())
    modes = [row["mode"] for row in report["files"]]
    assert modes == ["float32", "float16", "dynamic", "int8", "uint8"]
    for row in report["files"]:
        for figure in FIGURES:
            assert figure in row, figure
    for name in ("model.keras", "labels.txt", "history.csv", "run.json", "report.md", "saved_model/saved_model.pb",
                 "android/model.tflite"):
        assert (out / name).exists(), name
    for mode in modes:
        assert (out / "tflite" / f"model_{mode}.tflite").exists()
    for plot in report["plots"]:
        assert (out / plot).read_bytes()[:8] == PNG, plot
    assert len(report["worst_layers"]) == 5
    uint8 = next(row for row in report["files"] if row["mode"] == "uint8")
    assert report["android_verdict"] == {"verdict": uint8["verdict"], "verified_as": "model_uint8.tflite"}
    from mobilenet_keras.deploy.android import has_metadata, mediapipe_python

    if mediapipe_python() is not None:  # .ci/run provides one
        assert has_metadata(out / "android" / "model.tflite")
    assert result.returncode == {"PASS": 0, "FAIL": 1, "INCONCLUSIVE": 3}[report["verdict"]]
    assert report["passed"], report["failures"]
    assert "[" in result.stderr and "training" in result.stderr  # one progress line per stage
    assert "epoch 1/" in result.stderr  # --quiet: one line per epoch
    assert f"verdict: {report['verdict']}" in result.stderr
    for line in result.stderr.splitlines():  # TensorFlow's own log lines are hidden
        assert not line.startswith(("I0000", "W0000", "E0000")) and "fully_quantize" not in line, line


def _cifar_slice_folder(out, per_class: int):
    from tests.conftest import CIFAR, require

    for class_dir in sorted(p for p in require(CIFAR).iterdir() if p.is_dir()):
        (out / class_dir.name).mkdir(parents=True)
        for image in sorted(class_dir.iterdir())[:per_class]:
            (out / class_dir.name / image.name).symlink_to(image.resolve())
    return out


@pytest.mark.slow
def test_pipeline_on_real_images_with_the_imagenet_backbone(tmp_path):
    from tests.conftest import WEIGHTS_025, require

    folder = _cifar_slice_folder(tmp_path / "cifar", 100)
    out = tmp_path / "run"
    result = cli("pipeline", "--data", str(folder), "--weights", str(require(WEIGHTS_025)), "--epochs", "5",
                 "--image-size", "96",  # the data-driven default (128 px for 32 px images) costs CI minutes
                 "--learning-rate", "0.01", "--modes", "float32,int8,uint8,qat", "--qat-epochs", "1",
                 "--float-layers", "auto",  # the opt-in float prefix; the digits run above is fully integer
                 "--out", str(out), "--quiet")
    assert result.returncode in (0, 1), result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    rows = {Path(row["file"]).name: row for row in report["files"]}
    assert sorted(rows) == ["model_float32.tflite", "model_int8.tflite", "model_qat.tflite", "model_uint8.tflite"]
    for row in rows.values():
        for figure in FIGURES:
            assert figure in row, figure
    qat = rows["model_qat.tflite"]
    assert qat["reference"] == "QAT Keras model" and 0 <= qat["float_model_agreement"] <= 1
    assert qat["qat"] == {"epochs": 1, "learning_rate": 1e-5, "targets": "float-model"}  # default rate, targets
    report_md = (out / "report.md").read_text()
    assert (out / "qat" / "qat.weights.h5").exists() and "Quantization-aware" in report_md
    assert "QAT trained 1 epoch(s) at 1e-05 on the float model's probabilities" in report_md
    # the stage line says what QAT trains on before it starts
    assert "quantization-aware training (1 epoch at 1e-05 on the float model's probabilities)" in result.stderr
    for plot in report["plots"]:
        assert (out / plot).read_bytes()[:8] == PNG, plot
    # the Android file is where report.json says: android/model.tflite, or model.failed.tflite when its check failed
    android = "model.failed.tflite" if report["android_verdict"]["verdict"] == "FAIL" else "model.tflite"
    assert report["deployables"]["android"] == f"android/{android}"
    assert sorted(p.name for p in (out / "android").glob("*.tflite")) == [android]
    assert (out / "saved_model" / "saved_model.pb").exists()
    # The exit status and the message follow the verdicts, whatever they are.
    assert result.returncode == {"PASS": 0, "FAIL": 1, "INCONCLUSIVE": 3}[report["verdict"]]
    for failure in report["failures"]:
        assert f"FAIL {failure}" in result.stderr
    assert rows["model_float32.tflite"]["passed"]
    # Measured 91.0-95.0% int8 agreement with the float prefix on the 200 validation images on two
    # machines (float accuracy ~60%: a briefly trained model whose answers sit close together); the floor
    # leaves 6 points (3 standard errors) for another machine. The fully integer default file of this
    # run agreed on 83% (2026-11-29): test_tflite_convert holds the fully integer figures. The 97% int8
    # threshold is the verdict's, reported as FAIL when missed, and a row of benchmarks/RESULTS.md; a
    # broken conversion falls far below the floor.
    assert report["float_layers"] == "auto"
    assert not any("float op" in failure for failure in report["failures"])  # asked for, so allowed
    int8 = rows["model_int8.tflite"]
    assert int8["top1_agreement"] >= 0.85, int8
    assert rows["model_uint8.tflite"]["top1_agreement"] >= 0.85, rows["model_uint8.tflite"]


@pytest.mark.parametrize("args,words", [
    (["--data", "/no/such/folder"], "does not exist"),
    (["--modes", "float32,int4"], "unknown mode"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, args, words):
    out = tmp_path / "run"
    result = in_process(capsys, "pipeline", "--out", out, "--quiet", *args)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("mobilenet-keras")]
    assert len(lines) == 1 and words in lines[0], result.stderr[-2000:]
    assert not (out / "report.json").exists()


def test_a_folder_without_classes_and_an_output_that_is_a_file(tmp_path, capsys):
    flat = tmp_path / "flat"
    flat.mkdir()
    from PIL import Image

    Image.new("RGB", (40, 40)).save(flat / "a.png")
    result = in_process(capsys, "pipeline", "--data", flat, "--out", tmp_path / "run", "--quiet")
    assert result.returncode == 2 and "no class subfolders" in result.stderr
    assert not (tmp_path / "run" / "report.json").exists()
    taken = tmp_path / "taken"
    taken.write_text("a file")
    result = in_process(capsys, "pipeline", "--out", taken, "--quiet")
    assert result.returncode == 2 and "is a file" in result.stderr
    assert taken.read_text() == "a file"


def test_every_command_has_help(capsys):
    from mobilenet_keras.app.cli import build_parser

    for command in ("summary", "train", "pipeline", "qat", "predict", "bench", "export"):
        with pytest.raises(SystemExit) as exited:
            build_parser().parse_args([command, "--help"])
        assert exited.value.code == 0 and "examples:" in capsys.readouterr().out, command
    assert cli("--help", timeout=120).returncode == 0  # and the installed entry point answers


@pytest.mark.parametrize("epochs, rate, targets, message", [
    (0, 1e-5, "float-model", "at least 1 epoch"),
    (2, 0.0, "float-model", r"learning rate \(learning_rate\) must be in"),
    (2, 1e-5, "teacher", "QAT trains on one of float-model, labels"),
])
def test_qat_settings_are_checked_before_training(epochs, rate, targets, message):
    from mobilenet_keras.app.qat_stage import check_qat_settings

    with pytest.raises(ValueError, match=message):
        check_qat_settings(epochs, rate, targets)
    check_qat_settings(2, 1e-5, "labels")  # both targets are accepted
    # each caller's own names for the setting: the pipeline's flags, the qat command's, the Python keywords
    for flags, named in (("--qat-", "--qat-epochs"), ("--", "(--epochs)"), (None, "(epochs)")):
        with pytest.raises(ValueError) as info:
            check_qat_settings(0, 1e-5, flags=flags)
        assert named in str(info.value) and "/" not in str(info.value)
    with pytest.raises(ValueError, match=r"\(--qat-learning-rate\)"):
        check_qat_settings(2, 2.0, flags="--qat-")


def test_the_pipeline_checks_qat_options_it_was_given_even_without_a_qat_mode(tmp_path, capsys):
    # --qat-epochs -3 with --modes float32 ran to the end, the mistake unsaid
    from mobilenet_keras.app.cli import main

    for option in (["--qat-epochs", "-3"], ["--qat-learning-rate", "nan"]):
        assert main(["pipeline", "--modes", "float32", "--out", str(tmp_path / "run"), "--quiet", *option]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and ("QAT needs at least 1 epoch" in err[0] or "learning rate" in err[0]), err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_export_refuses_data_that_splits_otherwise_before_writing_anything(tmp_path, capsys):
    run = tmp_path / "run"
    assert in_process(capsys, "train", "--epochs", "1", "--out", run, "--quiet").returncode == 0
    record = json.loads((run / "run.json").read_text())
    record["data"]["validation_images"] -= 1  # as if the run had held out other images
    (run / "run.json").write_text(json.dumps(record))
    result = in_process(capsys, "export", run, "--saved-model", tmp_path / "serving", "--android",
                        tmp_path / "model.tflite", "--quiet")
    assert result.returncode == 2 and "now splits into" in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "serving").exists() and not (tmp_path / "model.tflite").exists()


def test_later_commands_reload_a_runs_data_as_it_trained():
    from mobilenet_keras.training.run_folder import data_settings

    run = {"config": {"batch_size": 16, "seed": 3},
           "data": {"image_size": 64, "validation_split": 0.1,
                    "augmentation": {"random_crop_sides": [0.7, 0.9], "horizontal_flip": False}}}
    assert data_settings(run) == {"image_size": 64, "batch_size": 16, "seed": 3, "validation_split": 0.1,
                                  "crop_scale": (0.7, 0.9), "flip": False}
    run["data"]["augmentation"] = None  # trained without augmentation
    assert data_settings(run) == {"image_size": 64, "batch_size": 16, "seed": 3, "validation_split": 0.1,
                                  "augment": False}
    del run["data"]["augmentation"], run["data"]["validation_split"]  # a run.json from before they were recorded
    assert data_settings(run) == {"image_size": 64, "batch_size": 16, "seed": 3, "validation_split": 0.2}
    run["data"].update(source="cifar/train", train_images=45000, validation_images=5000)  # counts: the split
    split = data_settings(run)["validation_split"]
    assert int(split * 50000) == 5000 and abs(split - 0.1) < 1e-4
    with pytest.raises(KeyError):
        data_settings({"config": {}, "data": {}})


def test_the_qat_command_loads_the_runs_data_with_its_settings(tmp_path, monkeypatch):
    from mobilenet_keras.app import qat_stage
    from mobilenet_keras.training import datasets

    run = {"config": {"batch_size": 16, "seed": 3},
           "data": {"source": str(tmp_path / "photos"), "image_size": 64, "validation_split": 0.1,
                    "augmentation": {"random_crop_sides": [0.9, 1.0], "horizontal_flip": True}}, "final": {}}
    (tmp_path / "model.keras").write_bytes(b"not read: the data is loaded first")
    (tmp_path / "run.json").write_text(json.dumps(run))
    (tmp_path / "photos").mkdir()  # there (a folder that is gone is refused before loading)
    asked = {}

    class Loaded(Exception):
        pass

    def load(source, **settings):
        asked.update(settings, source=source)
        raise Loaded

    monkeypatch.setattr(datasets, "load", load)
    with pytest.raises(Loaded):
        qat_stage.qat_run_folder(tmp_path, epochs=1, learning_rate=1e-5)
    assert asked == {"source": str(tmp_path / "photos"), "image_size": 64, "batch_size": 16, "seed": 3,
                     "validation_split": 0.1, "crop_scale": (0.9, 1.0), "flip": True}


def test_a_run_whose_data_splits_otherwise_is_refused(tmp_path):
    """QAT and export check their files on the run's validation images: reloaded data that splits into other
    counts (another split, images added or removed) would put training images among them."""
    from PIL import Image

    from mobilenet_keras.training import datasets
    from mobilenet_keras.training.run_folder import check_same_split

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(10):
            Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(tmp_path / name / f"{i}.png")
    images = datasets.image_folder(tmp_path, image_size=8, validation_split=0.2)
    check_same_split(images, {"data": {"train_images": 16, "validation_images": 4}}, tmp_path)
    check_same_split(images, {"data": {}}, tmp_path)  # a run.json without counts: nothing to compare
    with pytest.raises(ValueError, match="now splits into 16 training and 4 validation images; the run had 18 and 2"):
        check_same_split(images, {"data": {"train_images": 18, "validation_images": 2}}, tmp_path)
    # another folder with as many images: the class names tell it apart
    check_same_split(images, {"data": {"classes": ["a", "b"], "train_images": 16, "validation_images": 4}}, tmp_path)
    with pytest.raises(ValueError, match="holds the classes a, b, but the run was trained on cat, dog"):
        check_same_split(images, {"data": {"classes": ["cat", "dog"], "train_images": 16, "validation_images": 4}},
                         tmp_path)
    # other images under the same classes and counts (the helper's case: another photo set of the same shape)
    recorded = {"classes": ["a", "b"], "train_images": 16, "validation_images": 4, "fingerprint": images.fingerprint}
    check_same_split(datasets.image_folder(tmp_path, image_size=8, validation_split=0.2), {"data": recorded}, tmp_path)
    Image.new("RGB", (9, 9), (0, 0, 255)).save(tmp_path / "b" / "3.png")  # one photo replaced by another
    with pytest.raises(ValueError, match="holds other files than the run trained on"):
        check_same_split(datasets.image_folder(tmp_path, image_size=8, validation_split=0.2), {"data": recorded},
                         tmp_path)
    # the same files, split otherwise
    with pytest.raises(ValueError, match="holds other files than the run trained on"):
        check_same_split(datasets.image_folder(tmp_path, image_size=8, validation_split=0.2, seed=5),
                         {"data": {**recorded, "fingerprint": datasets.image_folder(
                             tmp_path, image_size=8, validation_split=0.2).fingerprint}}, tmp_path)


@pytest.mark.parametrize("argv", [["qat", "runs/x", "--targets", "teacher"],
                                  ["pipeline", "--modes", "qat", "--qat-targets", "soft"]])
def test_an_unknown_qat_target_is_a_usage_error(argv, capsys):
    from mobilenet_keras.app.cli import build_parser

    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(argv)
    assert exited.value.code == 2 and "(choose from 'float-model', 'labels')" in capsys.readouterr().err


@pytest.mark.slow
def test_the_qat_command_on_a_pipeline_run_updates_its_report_and_a_kill_changes_nothing(tmp_path, capsys,
                                                                                          digits_pipeline_run):
    import shutil
    import signal
    import time

    run = tmp_path / "run"
    shutil.copytree(digits_pipeline_run[0], run)
    before = json.loads((run / "report.json").read_text())
    report_bytes, plot_bytes = (run / "report.json").read_bytes(), (run / "size_vs_accuracy.png").read_bytes()
    # killed once its QAT model is trained, while it converts and checks: the run folder is as it was
    process = subprocess.Popen([sys.executable, "-m", "mobilenet_keras", "qat", str(run), "--epochs", "1", "--quiet"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    try:
        while not list(run.glob(".qat.*.staging/qat/qat.weights.h5")):
            if process.poll() is not None:
                pytest.fail(f"qat ended before its weights were staged: {process.stderr.read()[-3000:]}")
            assert time.time() < deadline
            time.sleep(0.02)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert (run / "report.json").read_bytes() == report_bytes and not (run / "qat").exists()
    assert not list((run / "tflite").glob("model_qat*"))
    assert len(list(run.glob(".qat.*.staging"))) == 1  # the killed run's, removed by the next one

    result = in_process(capsys, "qat", run, "--epochs", "1", "--quiet")  # the next run, in this process
    assert result.returncode in (0, 1, 3), result.stderr[-3000:]
    assert not list(run.glob(".qat.*.staging"))
    checks = json.loads((run / "qat" / "qat.json").read_text())["files"]
    assert [Path(row["file"]).name for row in checks] == ["model_qat.tflite", "model_qat_uint8.tflite"]
    for row in checks:
        assert row["reference"] == "QAT Keras model"
        assert row["qat"] == {"epochs": 1, "learning_rate": 1e-5, "targets": "float-model"}
        assert f"{row['file']}: {row['verdict']}" in result.stdout
    assert (run / "qat" / "qat.weights.h5").exists()
    report = json.loads((run / "report.json").read_text())
    assert report["files"][:len(before["files"])] == before["files"]  # the pipeline's rows as they were
    assert report["files"][len(before["files"]):] == checks  # the QAT files' rows, with their final paths
    assert all((run / row["file"]).parent == run / "tflite" and (run / row["file"]).exists() for row in checks)
    verdicts = [row["verdict"] for row in report["files"]]
    expected = "FAIL" if "FAIL" in verdicts else "INCONCLUSIVE" if "INCONCLUSIVE" in verdicts else "PASS"
    assert report["verdict"] == expected and report["passed"] == (expected == "PASS")
    assert result.returncode == {"PASS": 0, "FAIL": 1, "INCONCLUSIVE": 3}[
        next((v for v in ("FAIL", "INCONCLUSIVE") if v in {r["verdict"] for r in checks}), "PASS")]
    report_md = (run / "report.md").read_text()
    assert f"# mobilenet-keras run: {expected}" in report_md and "Written by `mobilenet-keras qat`" in report_md
    assert "`model_qat_uint8.tflite`" in report_md
    assert (run / "size_vs_accuracy.png").read_bytes() != plot_bytes  # redrawn with the QAT files
    assert "quantization-aware training (1 epoch at 1e-05" in result.stderr  # stage lines


def test_modes_given_twice_are_refused():
    from mobilenet_keras.app.pipeline import parse_modes

    with pytest.raises(ValueError, match="names float32 more than once"):
        parse_modes("float32,int8,float32")


def test_a_finished_training_of_other_settings_is_refused_before_the_data_is_read(tmp_path):
    from dataclasses import asdict

    from mobilenet_keras.app.pipeline import PipelineSettings, Stages, train_stage
    from mobilenet_keras.training.trainer import TrainConfig

    run = tmp_path / "run"
    run.mkdir()
    (run / "model.keras").write_bytes(b"a finished run's model")
    (run / "run.json").write_text(json.dumps({"config": asdict(TrainConfig(seed=1)), "data": {}, "final": {}}))
    # the data folder does not exist: reading it would fail with another message
    settings = PipelineSettings(data=str(tmp_path / "not-read"), out=run, config=TrainConfig(seed=7))
    with pytest.raises(ValueError, match="holds a finished run .*--force"):
        train_stage(settings, Stages())
    assert (run / "model.keras").read_bytes() == b"a finished run's model"
    # the same settings: the data decides, so it is read (and here it is missing)
    settings = PipelineSettings(data=str(tmp_path / "not-read"), out=run, config=TrainConfig(seed=1))
    with pytest.raises(ValueError, match="not-read"):
        train_stage(settings, Stages())


@pytest.mark.slow
def test_a_pipeline_killed_after_training_reuses_its_model(tmp_path, capsys, digits_pipeline_run):
    """... and, without uint8 in --modes, the export stage converts the Android file itself: it gets a row and a
    verdict of its own (with uint8 it is the verified model_uint8.tflite plus metadata)."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(digits_pipeline_run[0], run)
    for name in ("report.json", "report.md"):  # as a kill after the training stage leaves it
        (run / name).unlink()
    # and a SavedModel folder half deleted (as the export before the one-rename swap could leave it): the run's
    # own folder is written afresh, though `force` replaces only a whole SavedModel
    (run / "saved_model" / "saved_model.pb").unlink()
    model_bytes = (run / "model.keras").read_bytes()
    # a training of other settings is not trained over without --force (as train's --restart)
    other = in_process(capsys, "pipeline", "--out", run, "--modes", "float32", "--seed", "7", "--quiet")
    assert other.returncode == 2 and "holds a finished run" in other.stderr and "--force" in other.stderr, \
        other.stderr[-3000:]
    assert "] reading " not in other.stderr  # refused on its settings, before the data
    assert (run / "model.keras").read_bytes() == model_bytes
    result = in_process(capsys, "pipeline", "--out", run, "--modes", "float32,int8", "--quiet")
    assert result.returncode in (0, 1, 3), result.stderr[-3000:]
    assert "reusing the model trained in" in result.stderr and "epoch 1/" not in result.stderr
    assert (run / "model.keras").read_bytes() == model_bytes
    report = json.loads((run / "report.json").read_text())
    android = report["files"][-1]
    name = "model.failed.tflite" if android["failures"] else "model.tflite"  # a failed one is set aside
    # paths from the run folder; the last row is the Android file's
    assert [row["file"] for row in report["files"]] == ["tflite/model_float32.tflite", "tflite/model_int8.tflite",
                                                        f"android/{name}"]
    assert (run / "android" / name).is_file() and android["mode"] == "uint8"
    assert android["float_ops"] == 0 and 0 <= android["top1_agreement"] <= 1
    assert "verifying the Android file" in result.stderr and " android/model.tflite: top-1" in result.stderr
    assert f"| `android/{name}` | uint8 |" in (run / "report.md").read_text()  # named as the Android file
    assert result.returncode == {"PASS": 0, "FAIL": 1, "INCONCLUSIVE": 3}[report["verdict"]]
    assert not (run / "tflite" / "model_uint8.tflite").exists()  # the killed run's files went with it
    assert (run / "saved_model" / "saved_model.pb").is_file()


@pytest.mark.parametrize("uint8_row", [True, False])
def test_an_android_file_that_failed_is_set_aside_as_export_does(tmp_path, uint8_row):
    # the pipeline left a failed Android file at android/model.tflite ("do not ship it" in report.md only);
    # `export --android` keeps such a file as model.failed.tflite
    from mobilenet_keras.app import report
    from mobilenet_keras.app.pipeline import set_aside_failed_android_file

    (tmp_path / "android").mkdir()
    (tmp_path / "android" / "model.tflite").write_bytes(b"converted")
    deployables = {"android": "android/model.tflite", "keras": "model.keras"}
    failed_row = {"mode": "uint8", "failures": ["top-1 agreement 90.00% < 97%"],
                  "file": str(tmp_path / ("tflite/model_uint8.tflite" if uint8_row else "android/model.tflite"))}
    rows = [{"mode": "float32", "passed": True, "file": str(tmp_path / "tflite" / "model_float32.tflite")}, failed_row]
    set_aside_failed_android_file(rows, deployables, tmp_path)
    assert sorted(p.name for p in (tmp_path / "android").iterdir()) == ["model.failed.tflite"]
    assert deployables["android"] == "android/model.failed.tflite"
    summary = {"files": rows, "deployables": deployables}
    assert report.android_verdict(summary)["verdict"] == "FAIL"  # the report still judges the file, where it is
    passed = {"android": "android/model.tflite"}
    (tmp_path / "android" / "model.tflite").write_bytes(b"converted")
    set_aside_failed_android_file([dict(failed_row, failures=[], passed=True)], passed, tmp_path)
    assert (tmp_path / "android" / "model.tflite").is_file() and passed["android"] == "android/model.tflite"
