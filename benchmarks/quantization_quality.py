"""Where int8 loses accuracy, and what each fix in the converter buys: the before and after.

Run by hand: `python benchmarks/quantization_quality.py`. Needs ../shared/data (the 0.25 ImageNet
backbone and CIFAR-10). Two classifiers from the real backbone: a frozen backbone with a trained
head, and an end-to-end fine-tune; each converted to int8 naively (plain TFLite PTQ), with bias
correction, and with bias correction plus the automatic float prefix (the default), then verified on
500 held-out images. Results go to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._results import write_section  # noqa: E402

VARIANTS = (
    ("naive PTQ", dict(bias_correction=False, denylist=None)),
    ("+ bias correction", dict(bias_correction=True, denylist=None)),
    ("+ float prefix (default)", dict(bias_correction=True, denylist="auto")),
)


def main() -> None:
    warnings.simplefilter("ignore")
    import keras

    import tflite
    from mobilenet_keras import preprocess_input
    from mobilenet_keras.testing.cifar import SIZE, cifar_slice, classifier, fine_tuned_classifier

    held_out, labels, _ = cifar_slice(50, 200, SIZE)
    held_out = preprocess_input(held_out)
    lines = ["| classifier | float acc | variant | calibration images | top-1 agreement | top-5 overlap | SQNR dB | "
             "int8 acc | drop (points) | float layers | convert s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    models = (("frozen backbone + head", classifier()), ("fine-tuned end to end", fine_tuned_classifier()))
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in models:
            for variant, options in VARIANTS:
                for count in ((50, 200, 500) if variant == "+ bias correction" else (200,)):
                    calibration = cifar_slice(count // 10, 400, SIZE)[0]
                    start = time.time()
                    path = tflite.convert(model, Path(tmp, "m.tflite"), "int8", representative_data=calibration,
                                          num_calibration=count, **options)
                    seconds = time.time() - start
                    report = tflite.verify(model, path, held_out, labels=labels, latency_runs=0)
                    floats = len(tflite.flatbuffer.float_layers(tflite.flatbuffer.read_model(path)))
                    lines.append(
                        f"| {name} | {report.float_accuracy:.1%} | {variant} | {count} | {report.top1_agreement:.1%} "
                        f"| {report.top5_overlap:.1%} | {report.sqnr_db:.1f} | {report.tflite_accuracy:.1%} | "
                        f"{report.accuracy_drop * 100:.1f} | {floats} | {seconds:.0f} |")
                    print(lines[-1], flush=True)
            for mode in ("float16", "dynamic"):
                path = tflite.convert(model, Path(tmp, "m.tflite"), mode)
                report = tflite.verify(model, path, held_out, labels=labels, latency_runs=0)
                lines.append(f"| {name} | {report.float_accuracy:.1%} | {mode} (reference) | - | "
                             f"{report.top1_agreement:.1%} | {report.top5_overlap:.1%} | {report.sqnr_db:.1f} | "
                             f"{report.tflite_accuracy:.1%} | {report.accuracy_drop * 100:.1f} | - | - |")
                print(lines[-1], flush=True)
            keras.backend.clear_session()
    body = "\n".join(lines) + (
        "\n\nHeld-out set: 500 CIFAR-10 training images (50 per class) that neither training nor calibration "
        "saw, at 96 px. Agreement and SQNR compare the file with the float Keras model; the float16 and "
        "dynamic rows show how sensitive each classifier is to any perturbation at all.\n")
    write_section("quantization_quality", "int8 quality: naive PTQ against this converter", body)


if __name__ == "__main__":
    main()
