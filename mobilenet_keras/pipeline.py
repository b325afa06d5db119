"""`mobilenet-keras pipeline`: data -> trained model -> every TFLite flavour checked -> deployable files -> report."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

DEFAULT_MODES = ("float32", "float16", "dynamic", "int8", "uint8")
CALIBRATION_IMAGES = 200


class Stages:
    """One progress line per stage, with the elapsed time."""

    def __init__(self):
        self.start = time.time()

    def __call__(self, message: str) -> None:
        print(f"[{time.time() - self.start:7.1f}s] {message}", file=sys.stderr, flush=True)


def parse_modes(text: str) -> list[str]:
    from tflite.modes import MODES

    modes = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        raise ValueError(f"unknown mode(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(MODES)}.")
    return modes


def check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder for the run.")
    if out.exists() and (out / "report.json").exists() and not force:
        raise ValueError(f"{out} already holds a finished run; choose another --out or pass --force.")


def run(args) -> int:
    """Run every stage; returns 0 when every file passes verification, 1 otherwise."""
    import tflite
    from mobilenet_keras import data as datasets
    from mobilenet_keras import report
    from mobilenet_keras.export import export_saved_model
    from mobilenet_keras.train import config_from_args, train

    modes = parse_modes(args.modes)
    out = Path(args.out)
    check_out(out, args.force)
    config = config_from_args(args)
    stage = Stages()
    stage(f"reading {args.data}")
    images = datasets.load(args.data, image_size=args.image_size, batch_size=args.batch_size, seed=args.seed)
    stage(f"training on {images.num_train} images, validating on {images.num_validation} "
          f"({len(images.class_names)} classes)")
    (out / "report.json").unlink(missing_ok=True)
    model = train(images, out, config, verbose=0 if args.quiet else 1)
    validation, labels = images.validation_arrays()
    calibration = images.calibration_arrays(CALIBRATION_IMAGES)

    files_dir = out / "tflite"
    files_dir.mkdir(parents=True, exist_ok=True)
    reports = []
    float32_size = None
    qat_modes = [m for m in modes if m.startswith("qat")]
    for mode in (m for m in modes if m not in qat_modes):
        stage(f"converting {mode}")
        path = tflite.convert(model, files_dir / f"model_{mode}.tflite", mode, representative_data=calibration,
                              verbose=not args.quiet)
        if mode == "float32":
            float32_size = path.stat().st_size
        stage(f"verifying {mode} on {len(validation)} images")
        reports.append(tflite.verify(model, path, validation, labels=labels, float32_size=float32_size,
                                     verbose=not args.quiet))

    qat_rows = []
    if qat_modes:
        from mobilenet_keras.qat_run import qat_files

        stage(f"quantization-aware training ({args.qat_epochs} epochs), then {', '.join(qat_modes)}")
        qat_rows = qat_files(model, images, out, epochs=args.qat_epochs, learning_rate=args.qat_learning_rate,
                             modes=qat_modes, float32_size=float32_size, verbose=not args.quiet)

    worst = []
    if any(m in ("int8", "uint8", "int8_float_io") for m in modes):
        stage("per-layer int8 errors")
        worst = [vars(row) for row in tflite.layer_errors(model, calibration, num_calibration=100, num_debug=20)[:5]]

    stage("exporting the SavedModel and the Android file")
    saved = export_saved_model(model, out / "saved_model", labels=images.class_names, force=True)
    from mobilenet_keras.android import android_file

    uint8_file = files_dir / "model_uint8.tflite" if "uint8" in modes else None
    android = android_file(model, out / "android" / "model.tflite", calibration, images.class_names,
                           uint8_file=uint8_file)

    stage("plots and report")
    plots = ["training.png"]
    float_probs = model.predict(validation, verbose=0)
    report.confusion_matrix(labels, float_probs.argmax(1), images.class_names, out / "confusion_matrix.png")
    plots.append("confusion_matrix.png")
    integer = next((r for r in reports if r.mode in ("int8", "uint8", "int8_float_io")), None)
    if integer is not None:
        file_probs = tflite.TFLiteModel(integer.file).predict(validation)
        report.probability_scatter(float_probs, file_probs, integer.mode, out / "scatter_float_vs_int8.png")
        plots.append("scatter_float_vs_int8.png")
    rows = [{**r.to_dict(), "reference": "float model"} for r in reports] + qat_rows
    report.size_accuracy(rows, out / "size_vs_accuracy.png")
    plots.append("size_vs_accuracy.png")

    failures = [f"{Path(r['file']).name}: {failure}" for r in rows for failure in r["failures"]]
    summary = {
        "verdict": "PASS" if not failures else "FAIL",
        "passed": not failures,
        "failures": failures,
        "run": json.loads((out / "run.json").read_text()),
        "files": rows,
        "worst_layers": worst,
        "plots": plots,
        "deployables": {"saved_model": str(saved.relative_to(out)), "android": str(android.relative_to(out)),
                        "keras": "model.keras", "labels": "labels.txt"},
        "seconds": round(time.time() - stage.start, 1),
    }
    report.write(summary, out)
    stage(f"wrote {out / 'report.md'}")
    for failure in failures:
        print(f"FAIL {failure}", file=sys.stderr)
    return 0 if not failures else 1
