"""Where int8 loses accuracy, and what each step of the converter buys: one row per step.

Run by hand: `python benchmarks/quantization_quality.py` (about 15 minutes on 2 cores). Needs
../shared/data (the 0.25 ImageNet backbone and CIFAR-10). Two classifiers from the real backbone (a
frozen backbone with a trained head, and an end-to-end fine-tune), each converted to int8 with the
steps added one at a time, then verified on 500 held-out images that neither training nor calibration
saw. Results go to benchmarks/RESULTS.md.
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

OFF = dict(bias_correction=False, equalization=False, adaround=False, denylist=None)
# (row, conversion options, transform the model first with dead-channel absorption only)
VARIANTS = (
    ("naive PTQ", OFF, False),
    ("+ bias correction", {**OFF, "bias_correction": True}, False),
    ("+ dead channels", {**OFF, "bias_correction": True}, True),
    ("+ equalization", {**OFF, "bias_correction": True, "equalization": True}, False),
    ("+ AdaRound (fully integer)", {**OFF, "bias_correction": True, "equalization": True, "adaround": True}, False),
    ("+ float prefix (default, denylist='auto')", dict(), False),
)


def main() -> None:
    warnings.simplefilter("ignore")
    import keras

    import tflite
    from mobilenet_keras import preprocess_input
    from mobilenet_keras.testing.cifar import SIZE, cifar_slice, classifier, fine_tuned_classifier
    from tflite.equalization import absorb_dead_channels
    from tflite.flatbuffer import op_counts, read_model
    from tflite.latency import tflite_latency

    held_out, labels, _ = cifar_slice(50, 200, SIZE)
    held_out = preprocess_input(held_out)
    calibration = cifar_slice(20, 400, SIZE)[0]
    lines = ["| classifier | float acc | variant | top-1 agreement | top-5 overlap | SQNR dB | int8 acc | "
             "drop (points) | float ops | int16 ops | latency vs plain int8 | convert s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    models = (("frozen backbone + head", classifier()), ("fine-tuned end to end", fine_tuned_classifier()))
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in models:
            plain_latency = None
            dead_free = absorb_dead_channels(model)
            rows = [(v, o, d, "int8") for v, o, d in VARIANTS] + [("float16 (reference)", {}, False, "float16")]
            for variant, options, dead, mode in rows:
                start = time.time()
                source = dead_free if dead else model
                data = calibration if mode == "int8" else None
                path = tflite.convert(source, Path(tmp, f"{mode}.tflite"), mode, representative_data=data, **options)
                seconds = time.time() - start
                report = tflite.verify(model, path, held_out, labels=labels, latency_runs=0)
                latency = tflite_latency(path, 20).median_ms
                plain_latency = plain_latency or latency
                counts = op_counts(read_model(path))
                lines.append(
                    f"| {name} | {report.float_accuracy:.1%} | {variant} | {report.top1_agreement:.1%} "
                    f"| {report.top5_overlap:.1%} | {report.sqnr_db:.1f} | {report.tflite_accuracy:.1%} | "
                    f"{report.accuracy_drop * 100:+.1f} | {counts['float']} | {counts['int16']} | "
                    f"{latency / plain_latency:.2f}x | {seconds:.0f} |")
                print(lines[-1], flush=True)
            keras.backend.clear_session()
    body = "\n".join(lines) + (
        "\n\nHeld-out set: 500 CIFAR-10 training images (50 per class) that neither training nor calibration "
        "(200 images) saw, at 96 px. Agreement and SQNR compare the file with the float Keras model. "
        "Steps are cumulative. Not in the table: MSE-chosen activation ranges (on these models the "
        "MSE-optimal maximum of every ReLU6 output is its calibrated 6.0, so the file does not change) and "
        "int16 activations for the worst layers (TFLite's converter quantizes a whole file to int16x8 or "
        "none of it). float16 shows how sensitive each classifier is to any perturbation at all.\n")
    write_section("quantization_quality", "int8 quality: what each converter step buys", body)


if __name__ == "__main__":
    main()
