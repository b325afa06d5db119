"""`mobilenet-keras pipeline`: data -> trained model -> every TFLite flavour checked -> deployable files -> report."""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mobilenet_keras.files import read_json
from mobilenet_keras.training.run_folder import RunFolder, check_outside_data, comparable_settings, held_run_folder
from tflite.representative import CALIBRATION_IMAGES

# Exit status per verdict (the CLI's: 0 pass, 1 a file failed, 3 inconclusive).
VERDICT_EXIT = {"PASS": 0, "FAIL": 1, "INCONCLUSIVE": 3}


def file_line(row: dict, name: str | None = None) -> str:
    """One line per verified file for the terminal: verdict, agreement, SQNR and what computes in float or
    int16 inside. `name`: how to name the file (default: as the run folder's reports do)."""
    from mobilenet_keras.app.report import op_counts_cell, row_verdict, shown_name

    return (f"{row_verdict(row)} {name or shown_name(row)}: top-1 agreement {row['top1_agreement']:.2%}, "
            f"SQNR {row['sqnr_db']:.1f} dB, float / int16 ops {op_counts_cell(row)}")


class Stages:
    """One progress line per stage, with the elapsed time."""

    def __init__(self):
        self.start = time.time()

    def __call__(self, message: str) -> None:
        print(f"[{time.time() - self.start:7.1f}s] {message}", file=sys.stderr, flush=True)


def epoch_lines(each_epoch: bool = True):
    """A Keras callback printing to stderr a line when fine-tuning starts (the second fit of a run) or a run
    resumes part-way, and with `each_epoch` one line per epoch: the progress of a run whose bar is off
    (--quiet). Both fits of a run get the same instance."""
    import keras

    class EpochLines(keras.callbacks.Callback):
        fits = 0
        first_epoch = None

        def on_train_begin(self, logs=None):
            self.fits += 1
            self.first_epoch = None
            if self.fits == 2:
                print(f"fine-tuning: {self.params.get('epochs', '?')} epoch(s) with the backbone unfrozen",
                      file=sys.stderr, flush=True)

        def on_epoch_begin(self, epoch, logs=None):
            if self.first_epoch is None:
                self.first_epoch = epoch
                if epoch > 0:
                    print(f"resuming at epoch {epoch + 1}/{self.params.get('epochs', '?')} (the last finished epoch "
                          "of the run killed part-way was kept)", file=sys.stderr, flush=True)

        def on_epoch_end(self, epoch, logs=None):
            if not each_epoch:
                return
            shown = ("loss", "accuracy", "agreement", "val_loss", "val_accuracy", "val_agreement")
            figures = "  ".join(f"{name} {value:.4f}" for name, value in (logs or {}).items() if name in shown)
            print(f"epoch {epoch + 1}/{self.params.get('epochs', '?')}  {figures}", file=sys.stderr, flush=True)

    return EpochLines()


def parse_modes(text: str) -> list[str]:
    from tflite.modes import MODES

    modes = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise ValueError(f"unknown mode(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(MODES)}.")
    twice = sorted({m for m in modes if modes.count(m) > 1})
    if twice:
        raise ValueError(f"--modes names {', '.join(twice)} more than once; give each mode once.")
    return modes


FLOAT_LAYERS_HINT = ("a fully integer file missed its agreement threshold: `--float-layers auto` keeps the "
                     "fewest leading layers in float that reach 99% on the calibration images, or the best of "
                     "up to 9 (for CPU and GPU delegates; such a file does not run on integer-only accelerators)")


def float_layers_hint(rows: list[dict], float_layers) -> str | None:
    """The hint line about `--float-layers auto` when a fully integer file (no float layers asked for) missed
    its agreement threshold; None otherwise."""
    import tflite

    missed = any(tflite.get_mode(row["mode"]).integer
                 and any(failure.startswith("top-1 agreement") for failure in row.get("failures") or [])
                 for row in rows)
    return f"hint: {FLOAT_LAYERS_HINT}" if missed and float_layers is None else None


def parse_float_layers(text: str | None):
    """`--float-layers`: None for 'none' (fully integer, the default), 'auto', or a list of layer names."""
    from tflite.converter import AUTO

    text = (text or "none").strip()
    if text.lower() == "none":
        return None
    if text.lower() == AUTO:
        return AUTO
    from mobilenet_keras import specs

    names = [name.strip() for name in text.split(",") if name.strip()]
    known = specs.convolution_names() + ["conv_preds"]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise ValueError(f"--float-layers takes 'none', 'auto' or comma-separated convolution names "
                         f"({known[0]}, {known[1]}, ..., {known[-1]}); got {text!r}.")
    return names


def check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder for the run.")
    if out.exists() and (out / "report.json").exists() and not force:
        raise ValueError(f"{out} already holds a finished run; choose another --out or pass --force.")


@dataclass
class PipelineSettings:
    """What `mobilenet-keras pipeline` does; the CLI fills it from its options."""

    data: str
    out: Path
    config: object  # mobilenet_keras.training.trainer.TrainConfig
    modes: list[str] = field(default_factory=lambda: ["float32", "float16", "dynamic", "int8", "uint8"])
    qat_epochs: int = 2
    qat_learning_rate: float = 1e-5
    qat_targets: str = "float-model"  # or "labels" (mobilenet_keras.app.qat_stage.QAT_TARGETS)
    force: bool = False
    # Layers the integer files keep in float (`tflite.convert`'s denylist): None (fully integer), "auto" or
    # names. Given, their verification accepts the float ops it asked for.
    float_layers: object = None
    # Keras's verbose for training: 1 progress bar, 2 one line per epoch (a log file), 0 none (--quiet).
    # True and False read as 1 and 0. Conversion and verification show progress only with 1.
    verbose: int = 1
    # More Keras callbacks for training (e.g. `epoch_lines()` with verbose=0).
    callbacks: list = field(default_factory=list)
    # More `datasets.load` options (e.g. {"crop_scale": (0.7, 1.0)}).
    data_options: dict = field(default_factory=dict)

    @property
    def progress(self) -> bool:
        """\\r progress lines (calibration, verification): only on a terminal with the progress bar."""
        return int(self.verbose) == 1


def train_stage(settings: PipelineSettings, stage: Stages):
    """Read the data and train; returns (model, ImageData)."""
    from mobilenet_keras.training import datasets
    from mobilenet_keras.training.trainer import train

    config = settings.config
    if not _same_config(settings.out, config):
        _refuse_finished_run(settings.out)  # before minutes of reading the data: the settings already differ
    stage(f"reading {settings.data}")
    images = datasets.load(settings.data, image_size=config.image_size, batch_size=config.batch_size,
                           seed=config.seed, **settings.data_options)
    trained = _finished_training(settings.out, config, images)
    if trained is not None:
        stage(f"reusing the model trained in {settings.out} with these settings and data (a finished training "
              "run, or a pipeline killed after training; --force trains again)")
        return trained, images
    _refuse_finished_run(settings.out)  # a finished training of other data: not trained over unless asked
    stage(f"training on {images.num_train} images, validating on {images.num_validation} "
          f"({len(images.class_names)} classes)")
    model = train(images, settings.out, config, verbose=int(settings.verbose), callbacks=list(settings.callbacks))
    return model, images


def _refuse_finished_run(out: Path) -> None:
    """A finished training of other settings or data is not trained over unless asked (--force cleared it)."""
    RunFolder(out).refuse_finished_run("--force (force=True)", "--out", why="its settings or data differ from "
                                       "these (or its run.json can't be read)")


def _same_config(out: Path, config) -> bool:
    """Whether the folder's run.json (if any) was trained with this config; the data is compared later."""
    if not (out / "run.json").exists():
        return True
    return _recorded_with(out, config)


def _recorded_with(out: Path, config, images=None) -> bool:
    """Whether the folder's run.json records this config (and, given `images`, this data); False when it is
    missing or can't be read."""
    from dataclasses import asdict

    from mobilenet_keras.training.trainer import data_record

    try:
        run = RunFolder(out).read_run()
    except ValueError:
        return False
    keys = ("config",) if images is None else ("config", "data")
    now = {"config": asdict(config), "data": data_record(images) if images is not None else None}
    recorded = comparable_settings({key: run.get(key) for key in keys})
    return recorded == comparable_settings({key: now[key] for key in keys})


def _finished_training(out: Path, config, images):
    """The model of a finished training in `out` with exactly this config and data (a pipeline killed after
    its training stage, run again), or None."""
    from mobilenet_keras.model import load_model_file

    folder = RunFolder(out)
    if not folder.has_model() or not _recorded_with(out, config, images):
        return None
    folder.invalidate()  # what the killed run made from the model: made again
    return load_model_file(out / "model.keras")


def convert_and_verify_stage(model, images, settings: PipelineSettings, stage: Stages) -> list[dict]:
    """Convert every post-training mode, verify each file against the float model, then the QAT modes."""
    import tflite

    validation, labels = images.validation_arrays()
    calibration = images.calibration_arrays(CALIBRATION_IMAGES)
    files_dir = settings.out / "tflite"
    files_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    float32_size = None
    qat_modes = [m for m in settings.modes if tflite.get_mode(m).takes_qat_model]
    for mode in (m for m in settings.modes if m not in qat_modes):
        stage(f"converting {mode}")
        integer = tflite.get_mode(mode).integer
        path = tflite.convert(model, files_dir / f"model_{mode}.tflite", mode, representative_data=calibration,
                              denylist=settings.float_layers if integer else None, verbose=settings.progress)
        if mode == "float32":
            float32_size = path.stat().st_size
        stage(f"verifying {mode} on {len(validation)} images")
        report = tflite.verify(model, path, validation, labels=labels, float32_size=float32_size,
                               allow_float_ops=settings.float_layers is not None, verbose=settings.progress)
        rows.append({**report.to_dict(), "reference": "float model"})
        stage(file_line(rows[-1]))
    if qat_modes:
        from mobilenet_keras.app.qat_stage import QAT_TARGET_WORDS, qat_files

        epochs = f"{settings.qat_epochs} epoch{'s' if settings.qat_epochs > 1 else ''}"
        stage(f"quantization-aware training ({epochs} at {settings.qat_learning_rate:g} on "
              f"{QAT_TARGET_WORDS.get(settings.qat_targets, settings.qat_targets)}), then {', '.join(qat_modes)}")
        qat_rows = qat_files(model, images, settings.out, epochs=settings.qat_epochs,
                             learning_rate=settings.qat_learning_rate, modes=qat_modes, float32_size=float32_size,
                             verbose=settings.progress, targets=settings.qat_targets)
        for row in qat_rows:
            stage(file_line(row))
        rows += qat_rows
    return rows


def export_stage(model, images, settings: PipelineSettings, stage: Stages) -> dict[str, str]:
    """The SavedModel and the Android file; returns their paths relative to the run folder."""
    from mobilenet_keras.deploy.android import android_file
    from mobilenet_keras.deploy.saved_model import export_saved_model, is_saved_model

    out = settings.out
    stage("exporting the SavedModel and the Android file")
    target = out / "saved_model"
    if target.is_dir() and not target.is_symlink() and any(target.iterdir()) and not is_saved_model(target):
        # The run folder's own, damaged (no saved_model.pb): `force` replaces only a SavedModel, so it goes first.
        shutil.rmtree(target)
    saved = export_saved_model(model, target, labels=images.class_names, force=True)
    uint8_file = out / "tflite" / "model_uint8.tflite" if "uint8" in settings.modes else None
    android = android_file(model, out / "android" / "model.tflite", images.calibration_arrays(CALIBRATION_IMAGES),
                           images.class_names, uint8_file=uint8_file, denylist=settings.float_layers)
    return {"saved_model": str(saved.relative_to(out)), "android": str(android.relative_to(out)),
            "keras": "model.keras", "labels": "labels.txt"}


def android_check_stage(model, images, rows: list[dict], deployables: dict[str, str], settings: PipelineSettings,
                        stage: Stages) -> list[dict]:
    """The Android file's row, verified as every other file is, when the export stage converted it; [] when it is
    the verified uint8 file with metadata added (`--modes` has uint8)."""
    import tflite

    if "uint8" in settings.modes:
        return []
    validation, labels = images.validation_arrays()
    float32_size = next((r["size_bytes"] for r in rows if r["mode"] == "float32"), None)
    stage(f"verifying the Android file on {len(validation)} images")
    report = tflite.verify(model, settings.out / deployables["android"], validation, labels=labels,
                           float32_size=float32_size, allow_float_ops=settings.float_layers is not None,
                           verbose=settings.progress)
    row = {**report.to_dict(), "reference": "float model"}
    stage(file_line(row))
    return [row]


def set_aside_failed_android_file(rows: list[dict], deployables: dict[str, str], out: Path) -> None:
    """An Android file that FAILed its check (its own row's verdict, or the uint8 file's it copies) is renamed
    `android/model.failed.tflite`, as `export --android` keeps one: no file named model.tflite that failed."""
    from mobilenet_keras.app import report

    checked = report.android_verdict({"files": rows, "deployables": deployables})
    if checked is None or checked["verdict"] != "FAIL":
        return
    path = out / deployables["android"]
    failed = path.with_name(f"{path.stem}.failed{path.suffix}")
    os.replace(path, failed)
    deployables["android"] = str(failed.relative_to(out))
    for row in rows:
        if Path(row["file"]) == path:
            row["file"] = str(failed)


def report_stage(model, images, rows: list[dict], deployables: dict[str, str], settings: PipelineSettings,
                 stage: Stages) -> tuple[str, list[str], list[str]]:
    """Per-layer errors, plots, report.md and report.json (written last); returns (the overall verdict,
    the failures, the inconclusive files)."""
    import tflite
    from mobilenet_keras.app import report

    out = settings.out
    validation, labels = images.validation_arrays()
    worst = []
    if any(tflite.get_mode(m).integer and not tflite.get_mode(m).takes_qat_model for m in settings.modes):
        stage("per-layer int8 errors")
        calibration = images.calibration_arrays(CALIBRATION_IMAGES)
        worst = [vars(row) for row in tflite.layer_errors(model, calibration, num_calibration=100, num_debug=20)[:5]]

    stage("plots and report")
    plots = ["training.png"]
    float_probs = model.predict(validation, verbose=0)
    subject = report.plot_subject(model.name, images.source, len(validation))
    float_accuracy = float(np.mean(float_probs.argmax(1) == np.asarray(labels).reshape(-1)))
    report.confusion_matrix(labels, float_probs.argmax(1), images.class_names, out / "confusion_matrix.png",
                            subject=subject)
    plots.append("confusion_matrix.png")
    integer = next((r for r in rows if tflite.get_mode(r["mode"]).integer
                    and not tflite.get_mode(r["mode"]).takes_qat_model), None)
    if integer is not None:
        file_probs = tflite.TFLiteModel(integer["file"]).predict(validation)
        report.probability_scatter(float_probs, file_probs, integer["mode"], out / "scatter_float_vs_int8.png",
                                   subject=subject)
        plots.append("scatter_float_vs_int8.png")
    report.size_accuracy(rows, out / "size_vs_accuracy.png", subject=subject, float_accuracy=float_accuracy)
    plots.append("size_vs_accuracy.png")

    summary = {
        **report.judged(rows),
        "run": read_json(out / "run.json"),
        "files": rows,
        "worst_layers": worst,
        "plots": plots,
        "deployables": deployables,
        "float_layers": settings.float_layers,  # --float-layers: None (fully integer), "auto" or names
        "seconds": round(time.time() - stage.start, 1),
    }
    summary["android_verdict"] = report.android_verdict(summary)  # {"verdict", "verified_as"} or None
    report.write(summary, out)
    stage(f"wrote {out / 'report.md'}")
    return summary["verdict"], summary["failures"], summary["inconclusive"]


def run_pipeline(settings: PipelineSettings) -> int:
    """Every stage in order; returns 0 when every file passes verification, 1 when one fails, 3 when none
    fails but a verdict is inconclusive (too few validation images)."""
    import tflite
    from mobilenet_keras.app.qat_stage import check_qat_settings

    for mode in settings.modes:
        tflite.get_mode(mode)
    check_out(settings.out, settings.force)
    check_outside_data(settings.out, settings.data)
    # checked whether or not a QAT mode is asked for: --qat-epochs -3 without one is a mistake all the same
    check_qat_settings(settings.qat_epochs, settings.qat_learning_rate, settings.qat_targets, flags="--qat-")
    with held_run_folder(settings.out, settings.config.strategy) as folder:
        check_out(settings.out, settings.force)  # again, held: another run may have finished meanwhile
        return _run_stages(settings, folder)


def _run_stages(settings: PipelineSettings, folder: RunFolder) -> int:
    from mobilenet_keras.training.trainer import check_weights_load

    check_weights_load(settings.config)
    if settings.force:
        folder.clear()  # nothing of the old run may sit beside the new report
    stage = Stages()
    model, images = train_stage(settings, stage)
    rows = convert_and_verify_stage(model, images, settings, stage)
    deployables = export_stage(model, images, settings, stage)
    rows += android_check_stage(model, images, rows, deployables, settings, stage)
    set_aside_failed_android_file(rows, deployables, settings.out)
    verdict, failures, inconclusive = report_stage(model, images, rows, deployables, settings, stage)
    for failure in failures:
        print(f"FAIL {failure}", file=sys.stderr)
    for line in inconclusive:
        print(f"INCONCLUSIVE {line}", file=sys.stderr)
    hint = float_layers_hint(rows, settings.float_layers)
    if hint:
        print(hint, file=sys.stderr)
    print(f"verdict: {verdict} ({len(rows)} files)", file=sys.stderr)
    return VERDICT_EXIT[verdict]
