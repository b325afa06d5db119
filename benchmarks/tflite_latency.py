"""Latency of Keras and of each TFLite mode at batch 1 with 2 threads, beside Google's quantized files.

Run by hand: `python benchmarks/tflite_latency.py [--runs 50]`. Weights are random (latency does
not depend on them) except that calibration uses real CIFAR-10 images when ../shared/data exists.
Results go to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks._results import count, run_quietly, write_section  # noqa: E402

DATA = Path(os.environ.get("MOBILENET_KERAS_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
CONFIGS = ((1.0, 224), (0.75, 192), (0.5, 160), (0.25, 128))
MODES = ("float32", "float16", "dynamic", "int8", "uint8")


def keras_latency(model, runs: int) -> float:
    import tensorflow as tf

    call = tf.function(lambda x: model(x, training=False))
    x = tf.zeros((1, *model.input_shape[1:]))
    for _ in range(5):
        call(x)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call(x).numpy()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=count(1), default=50, help="timed runs per file (median reported)")
    args = parser.parse_args()

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import tflite
    from mobilenet_keras import MobileNetV1, count_complexity
    from tflite.verify import measure_latency

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for alpha, size in CONFIGS:
            model = MobileNetV1(input_shape=(size, size, 3), alpha=alpha)
            macs = count_complexity(model).multiply_adds
            cifar = DATA / "cifar10" / "train"
            calibration = cifar if cifar.exists() else np.random.default_rng(0).uniform(
                -1, 1, (50, size, size, 3)).astype("float32")
            row = {"model": f"{alpha}/{size}", "macs": macs, "keras": keras_latency(model, args.runs)}
            for mode in MODES:
                print(f"{alpha}/{size} {mode}", file=sys.stderr, flush=True)
                path = tflite.convert(model, Path(tmp, f"{alpha}_{size}_{mode}.tflite"), mode,
                                      representative_data=calibration, num_calibration=50, denylist=None,
                                      equalization=False, adaround=False)  # latency: the same graph either way
                row[mode] = (measure_latency(path, runs=args.runs, threads=2), path.stat().st_size)
            google = DATA / "tflite-reference" / f"mobilenet_v1_{alpha}_{size}_quant.tflite"
            if google.exists():
                row["google"] = (measure_latency(google, runs=args.runs, threads=2), google.stat().st_size)
            rows.append(row)

    header = "| model | MMACs | Keras ms | " + " | ".join(f"{m} ms (MB)" for m in MODES) + \
        " | Google uint8 ms (MB) | int8 MACs/ms vs Google |"
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for row in rows:
        cells = [row["model"], f"{row['macs'] / 1e6:.0f}", f"{row['keras']:.2f}"]
        cells += [f"{row[m][0]:.2f} ({row[m][1] / 1e6:.2f})" for m in MODES]
        if "google" in row:
            cells.append(f"{row['google'][0]:.2f} ({row['google'][1] / 1e6:.2f})")
            # Same architecture and size, so MACs per ms compare as the inverse latency ratio.
            cells.append(f"{row['google'][0] / row['int8'][0]:.2f}x")
        else:
            cells += ["n/a", "n/a"]
        lines.append("| " + " | ".join(cells) + " |")
    notes = ("\nMedian of the runs at batch 1, 2 threads (LiteRT with XNNPACK; Keras as a tf.function). "
             "int8 and uint8 files here are fully integer (denylist=None), as Google's are. "
             "MMACs/ms = multiply-adds per millisecond; the last column is (Google ms / our int8 ms).\n")
    table = "\n".join(lines) + "\n" + notes
    print(table)
    write_section("tflite_latency", "TFLite latency by mode", table)


if __name__ == "__main__":
    run_quietly(main)
