"""The QAT stage shared by `mobilenet-keras qat RUN_DIR` and `mobilenet-keras pipeline --modes ...,qat`:
quantize the trained model, fine-tune it (by default on the float model's answers: distillation; or on the labels),
save its weights, convert, and check each file twice
(against the float model, as every file is, and against the QAT Keras model it was converted from)."""

from __future__ import annotations

import math
import shutil
import sys
from pathlib import Path

QAT_MODES = ("qat", "qat_uint8")
# What QAT trains on, and its words in report.md: the float model's probabilities for each training image
# (distillation, the default) or the dataset's labels (`qat.fine_tune` without a teacher).
QAT_TARGET_WORDS = {"float-model": "the float model's probabilities", "labels": "the labels"}
QAT_TARGETS = tuple(QAT_TARGET_WORDS)


def check_qat_settings(epochs: int, learning_rate: float, targets: str = QAT_TARGETS[0], *,
                       flags: str | None = None) -> None:
    """Refuse QAT settings that can't be right, before any training starts. The message names each setting as
    the caller took it: the command-line flags that start with `flags` ("--" for `qat`, "--qat-" for `pipeline`),
    or the keyword arguments when None."""
    def name(setting: str) -> str:
        return setting if flags is None else flags + setting.replace("_", "-")

    if targets not in QAT_TARGETS:
        raise ValueError(f"QAT trains on one of {', '.join(QAT_TARGETS)} ({name('targets')}); got {targets!r}.")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"QAT needs at least 1 epoch ({name('epochs')}); got {epochs!r}.")
    if isinstance(learning_rate, bool) or not (isinstance(learning_rate, (int, float)) and 0 < learning_rate < 1):
        raise ValueError(f"the QAT learning rate ({name('learning_rate')}) must be in (0, 1), typically 1e-5; got "
                         f"{learning_rate!r}.")


def qat_files(model, images, out: Path, *, epochs: int, learning_rate: float, modes=QAT_MODES,
              float32_size: int | None = None, verbose: bool = True, targets: str = QAT_TARGETS[0]) -> list[dict]:
    """Run QAT on `model` with `images` (`mobilenet_keras.training.datasets.ImageData`) and write into the
    run folder `out`. `targets`: "float-model" trains on the float model's probabilities (distillation),
    "labels" on the dataset's labels.

    Writes `out/qat/qat.weights.h5` (reload with `mobilenet_keras.optimize.qat.load`), `out/qat/history.json`
    and `out/tflite/model_{mode}.tflite` for each of `modes`. Returns one row per file, as
    `VerificationReport.to_dict()` against the QAT Keras model, with the accuracy drop judged from the
    float model and `float_model_agreement`, `qat_keras_accuracy` added.
    """
    import tflite
    from mobilenet_keras.optimize import qat
    from mobilenet_keras.files import write_json_atomic
    from tflite.representative import CALIBRATION_IMAGES  # not at the top: the CLI imports this module for --help

    check_qat_settings(epochs, learning_rate, targets)
    unknown = [m for m in modes if m not in QAT_MODES]
    if unknown:
        raise ValueError(f"QAT writes modes {', '.join(QAT_MODES)}; not {', '.join(unknown)}.")
    calibration = images.calibration_arrays(CALIBRATION_IMAGES)
    validation, labels = images.validation_arrays()
    qat_model = qat.quantize(model, calibration)
    # by default on the float model's answers, not the labels: what the file is verified against (benchmarks/RESULTS.md,
    # CIFAR-10 benchmark model: agreement 98.2% -> 98.7% after 300 steps at 1e-5, 97.4% -> 98.6% after 1,400
    # at 3e-5; one run each)
    history = qat.fine_tune(qat_model, images.train, images.validation, epochs=epochs,
                            learning_rate=learning_rate, verbose=1 if verbose else 0,
                            teacher=model if targets == "float-model" else None)
    for folder in ("qat", "tflite"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    qat.save_weights(qat_model, out / "qat" / "qat.weights.h5")
    write_json_atomic(out / "qat" / "history.json", history)
    settings = {"epochs": epochs, "learning_rate": learning_rate, "targets": targets}

    rows = []
    for mode in modes:
        path = tflite.convert(qat_model, out / "tflite" / f"model_{mode}.tflite", mode)
        row = _judge(model, qat_model, path, mode, validation, labels, float32_size, verbose)
        rows.append({**row, "qat": settings})
    return rows


def _judge(model, qat_model, path: Path, mode: str, validation, labels, float32_size, verbose: bool) -> dict:
    """A QAT file's row: figures against the QAT Keras model it was converted from (its reference, as the
    float model is for a PTQ file), accuracy against the float model the user started from."""
    import tflite

    # Accuracy is judged from the float model the user started from, below; not from the QAT model.
    against_qat = tflite.verify(qat_model, path, validation, labels=labels, mode=mode, float32_size=float32_size,
                                thresholds={"max_accuracy_drop": math.inf}, verbose=verbose)
    against_float = tflite.verify(model, path, validation, labels=labels, mode=mode, latency_runs=0)
    row = against_qat.to_dict()
    drop = against_float.float_accuracy - against_float.tflite_accuracy
    row.update(reference="QAT Keras model", qat_keras_agreement=against_qat.top1_agreement,
               qat_keras_accuracy=against_qat.float_accuracy, float_accuracy=against_float.float_accuracy,
               float_model_agreement=against_float.top1_agreement, accuracy_drop=drop)
    # float_accuracy is the float model's from here on, and so its interval
    row["float_accuracy_interval"] = against_float.to_dict()["float_accuracy_interval"]
    limit = tflite.get_mode(mode).thresholds.max_accuracy_drop
    row["thresholds"]["max_accuracy_drop"] = limit

    # the drop as verify judged it against the float model (the mode's limit, its rule for few images)
    def from_float(items: list[str]) -> list[str]:
        return [item.replace("accuracy drop", "accuracy drop from the float model", 1) for item in items
                if item.startswith("accuracy drop")]

    row["failures"] = list(against_qat.failures) + from_float(against_float.failures)
    unsettled = from_float(against_float.unsettled)
    if unsettled:
        row["unsettled"] = unsettled + row["unsettled"]
        row["verdict_reason"] = "; ".join(unsettled + [against_qat.verdict_reason])
    row["verdict"] = "FAIL" if row["failures"] else against_qat.verdict
    if row["failures"]:
        row["verdict_reason"] = "; ".join(row["failures"])
    row["passed"] = row["verdict"] == "PASS"
    if verbose:
        print(f"  {path.name}: agrees with the QAT Keras model on {against_qat.top1_agreement:.1%}, with the float "
              f"model on {against_float.top1_agreement:.1%}; accuracy {against_float.tflite_accuracy:.1%} (float "
              f"{against_float.float_accuracy:.1%}, QAT Keras {against_qat.float_accuracy:.1%})", file=sys.stderr)
    return row


def qat_run_folder(run_dir: str | Path, *, epochs: int, learning_rate: float, data: str | None = None,
                   verbose: bool = True, targets: str = QAT_TARGETS[0]) -> int:
    """`mobilenet-keras qat RUN_DIR`: QAT files for a finished training run; 0 when every file passes, 1 when
    one fails, 3 when none fails but a verdict is inconclusive (too few validation images).

    The data is read again from run.json's source, or from `data` when given.
    """
    from mobilenet_keras.training.run_folder import RunFolder

    check_qat_settings(epochs, learning_rate, targets, flags="--")
    run_dir = Path(run_dir)
    folder = RunFolder(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"run folder {run_dir} {'is not a folder' if run_dir.exists() else 'does not exist'}; give "
                         "a run folder written by train or pipeline.")
    if not folder.has_model():
        raise ValueError(f"{run_dir} has no model.keras and run.json; give a run folder written by train or pipeline.")
    folder.check_writable("qat", "tflite")  # before training: the files it makes move in there at the end
    with folder.claimed():
        return _qat_run(folder, epochs, learning_rate, data, verbose, targets)


def _qat_run(folder, epochs: int, learning_rate: float, data: str | None, verbose: bool, targets: str) -> int:
    from mobilenet_keras.training import datasets
    from mobilenet_keras.training.run_folder import (check_model_matches_run, check_same_split, data_is_gone,
                                                     data_settings)

    run_dir = folder.path
    run = folder.read_run()
    try:
        source = data or run["data"]["source"]
        settings = data_settings(run)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{run_dir / 'run.json'} is damaged ({type(exc).__name__}: {exc}); train the run "
                         "again.") from None
    if data is None and data_is_gone(source):
        raise ValueError(f"the run's training data {source} is gone (run.json); pass --data DIR with the images it "
                         "was trained on (data= from Python).")
    from mobilenet_keras.app.pipeline import Stages
    from mobilenet_keras.files import remove_abandoned_staging, staging_path
    from mobilenet_keras.model import load_model_file

    stage = Stages()
    stage(f"reading {source}")
    images = datasets.load(source, **settings)
    check_same_split(images, run, source)
    model = load_model_file(run_dir / "model.keras")
    check_model_matches_run(model, images.image_size, run_dir)
    stage(f"quantization-aware training ({epochs} epoch{'s' if epochs > 1 else ''} at {learning_rate:g} on "
          f"{QAT_TARGET_WORDS[targets]}, {images.num_train} images), then {', '.join(QAT_MODES)}")
    # Trained, converted and checked in a staging folder: until the end the run folder keeps the old QAT files
    # with the verdicts about them (a kill leaves them as they were).
    remove_abandoned_staging(run_dir / "qat")
    staging = staging_path(run_dir / "qat")
    try:
        staging.mkdir(mode=0o777)
        rows = qat_files(model, images, staging, epochs=epochs, learning_rate=learning_rate, verbose=verbose,
                         targets=targets, float32_size=_float32_size(run_dir))
        _take_place(run_dir, staging, rows, model)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for row in rows:
        stage(f"{row['verdict']} {Path(row['file']).name}: agrees with the QAT Keras model on "
              f"{row['qat_keras_agreement']:.2%}, with the float model on {row['float_model_agreement']:.2%}")
    for row in rows:
        detail = "; ".join(row["failures"]) or row.get("verdict_reason") or ""
        print(f"{row['file']}: {row['verdict']}{' ' + detail if row['verdict'] != 'PASS' else ''}")
    verdicts = {row["verdict"] for row in rows}
    return 1 if "FAIL" in verdicts else 3 if "INCONCLUSIVE" in verdicts else 0


def _take_place(run_dir: Path, staging: Path, rows: list[dict], model) -> None:
    """Move the staged QAT files into the run folder, and the verdicts with them: qat.json, and the rows of a
    pipeline report (report.md, report.json) that judged the QAT files these replace or that judge the run.
    The old verdicts go first, the new ones are written last: a kill in between leaves none, never a stale one."""
    import os

    from mobilenet_keras.app import report
    from mobilenet_keras.files import write_bytes_atomic, write_json_atomic

    summary = report.read_summary(run_dir)  # None for a damaged report: removed below, not rewritten
    # The old verdicts' bytes, to put back as they were if no file can move in.
    old_report = [(run_dir / name, (run_dir / name).read_bytes()) for name in ("report.md", "report.json")
                  if (run_dir / name).is_file()]
    checks, aside = run_dir / "qat" / "qat.json", staging / "qat.json.old"
    report.withdraw(run_dir)
    moved = 0
    try:
        if checks.is_file():  # renamed aside, not deleted: it goes with the staging folder once the files are in
            os.replace(checks, aside)
        for folder in ("qat", "tflite"):
            (run_dir / folder).mkdir(mode=0o777, exist_ok=True)
            for staged in sorted((staging / folder).iterdir()):
                os.replace(staged, run_dir / folder / staged.name)
                moved += 1
    except OSError as exc:
        problem = f"can't move the QAT files into {run_dir} ({exc.strerror or exc})"
        if moved:
            raise ValueError(f"{problem}; {moved} of them moved, so its report and qat.json were removed: run qat "
                             "again.") from None
        try:  # nothing changed: the old verdicts are true again (report.json last, as ever)
            if aside.is_file():
                os.replace(aside, checks)
            for path, content in old_report:
                write_bytes_atomic(path, content)
        except OSError as again:
            raise ValueError(f"{problem}, and its old report could not be put back ({again.strerror or again}): "
                             "run qat again where it can write.") from None
        raise ValueError(f"{problem}; the run folder is as it was.") from None
    for row in rows:
        row["file"] = str(run_dir / "tflite" / Path(row["file"]).name)
    write_json_atomic(run_dir / "qat" / "qat.json", {"files": report.files_in(rows, run_dir)})
    if summary is not None:
        report.replace_rows(summary, rows, run_dir, model)


def _float32_size(run_dir: Path) -> int | None:
    """The size of the run's float32 file, which the other rows of its report compare with (None: estimated)."""
    path = run_dir / "tflite" / "model_float32.tflite"
    return path.stat().st_size if path.is_file() else None
