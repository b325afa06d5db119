"""The QAT stage shared by `mobilenet-keras qat RUN_DIR` and `mobilenet-keras pipeline --modes ...,qat`:
quantize the trained model, fine-tune it, save its weights, convert, and check each file twice
(against the float model, as every file is, and against the QAT Keras model it was converted from)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

QAT_MODES = ("qat", "qat_uint8")
CALIBRATION_IMAGES = 200


def qat_files(model, images, out: Path, *, epochs: int, learning_rate: float, modes=QAT_MODES,
              float32_size: int | None = None, verbose: bool = True) -> list[dict]:
    """Run QAT on `model` with `images` (`mobilenet_keras.data.ImageData`) and write into the run folder `out`.

    Writes `out/qat/qat.weights.h5` (reload with `mobilenet_keras.qat.load`), `out/qat/history.json`
    and `out/tflite/model_{mode}.tflite` for each of `modes`. Returns one row per file, as
    `VerificationReport.to_dict()` against the QAT Keras model, with the accuracy drop judged from the
    float model and `float_model_agreement`, `qat_keras_accuracy` added.
    """
    import tflite
    from mobilenet_keras import qat
    from mobilenet_keras.atomic import write_bytes_atomic

    unknown = [m for m in modes if m not in QAT_MODES]
    if unknown:
        raise ValueError(f"QAT writes modes {', '.join(QAT_MODES)}; not {', '.join(unknown)}.")
    calibration = images.calibration_arrays(CALIBRATION_IMAGES)
    validation, labels = images.validation_arrays()
    qat_model = qat.quantize(model, calibration)
    history = qat.fine_tune(qat_model, images.train, images.validation, epochs=epochs,
                            learning_rate=learning_rate, verbose=1 if verbose else 0)
    for folder in ("qat", "tflite"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    qat.save_weights(qat_model, out / "qat" / "qat.weights.h5")
    write_bytes_atomic(out / "qat" / "history.json", json.dumps(history, indent=2).encode())

    rows = []
    for mode in modes:
        path = tflite.convert(qat_model, out / "tflite" / f"model_{mode}.tflite", mode)
        rows.append(_judge(model, qat_model, path, mode, validation, labels, float32_size, verbose))
    return rows


def _judge(model, qat_model, path: Path, mode: str, validation, labels, float32_size, verbose: bool) -> dict:
    """A QAT file's row: figures against the QAT Keras model it was converted from (its reference, as the
    float model is for a PTQ file), accuracy against the float model the user started from."""
    import tflite

    against_qat = tflite.verify(qat_model, path, validation, labels=labels, mode=mode, float32_size=float32_size,
                                verbose=verbose)
    against_float = tflite.verify(model, path, validation, labels=labels, mode=mode, latency_runs=0)
    row = against_qat.to_dict()
    drop = against_float.float_accuracy - against_float.tflite_accuracy
    row.update(reference="QAT Keras model", qat_keras_agreement=against_qat.top1_agreement,
               qat_keras_accuracy=against_qat.float_accuracy, float_accuracy=against_float.float_accuracy,
               float_model_agreement=against_float.top1_agreement, accuracy_drop=drop)
    limit = against_qat.thresholds.max_accuracy_drop
    row["failures"] = [f for f in against_qat.failures if not f.startswith("accuracy drop")]
    if drop > limit:
        row["failures"].append(f"accuracy drop from the float model {drop * 100:.2f} points > {limit * 100:.1f}")
    row["passed"] = not row["failures"]
    if verbose:
        print(f"  {path.name}: agrees with the QAT Keras model on {against_qat.top1_agreement:.1%}, with the float "
              f"model on {against_float.top1_agreement:.1%}; accuracy {against_float.tflite_accuracy:.1%} (float "
              f"{against_float.float_accuracy:.1%}, QAT Keras {against_qat.float_accuracy:.1%})", file=sys.stderr)
    return row


def main_qat(args) -> int:
    """`mobilenet-keras qat RUN_DIR`: QAT files for a finished training run."""
    import keras

    from mobilenet_keras import data as datasets

    run_dir = Path(args.run_dir)
    if not (run_dir / "model.keras").is_file() or not (run_dir / "run.json").is_file():
        raise ValueError(f"{run_dir} has no model.keras and run.json; give a run folder written by train or pipeline.")
    run = json.loads((run_dir / "run.json").read_text())
    source = args.data or run["data"]["source"]
    images = datasets.load(source, image_size=run["data"]["image_size"], batch_size=run["config"]["batch_size"],
                           seed=run["config"]["seed"])
    model = keras.models.load_model(run_dir / "model.keras")
    rows = qat_files(model, images, run_dir, epochs=args.epochs, learning_rate=args.learning_rate,
                     verbose=not args.quiet)
    failed = [f"{Path(r['file']).name}: {failure}" for r in rows for failure in r["failures"]]
    from mobilenet_keras.atomic import write_bytes_atomic

    write_bytes_atomic(run_dir / "qat" / "qat.json", json.dumps({"files": rows}, indent=2).encode())
    for row in rows:
        print(f"{row['file']}: {'PASS' if not row['failures'] else 'FAIL ' + '; '.join(row['failures'])}")
    return 1 if failed else 0
