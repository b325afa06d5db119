"""Training-step speed of MobileNet V1 on this machine's CPU: the package's fused BatchNormalization
against keras.applications.MobileNet (Keras 3's own BatchNormalization), and what XLA, frozen early blocks
and mixed bfloat16 do to images/s, side by side in one process.

Run by hand: `python benchmarks/training_step_speed.py` (6-10 minutes on 2 cores). Alpha 0.25,
random weights, synthetic images already in memory (so only the model's step is timed), AdamW, batch
64. Each variant is built fresh, warmed up for `--warmup` steps, then timed over `--steps` steps; the
variants take turns for `--rounds` rounds and each one's median is reported, as a ratio to
keras.applications.MobileNet (the same layers, with keras.layers.BatchNormalization) in float32 without
XLA: what a plain `model.fit` of Keras's own MobileNet does on a CPU. Frozen blocks are what
`TrainConfig.frozen_blocks` freezes in the fine-tuning phase. CPU flags are read from /proc/cpuinfo.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._results import count, cpu_flags, run_quietly, write_section  # noqa: E402

# (row, model, XLA, frozen blocks, Keras precision policy)
VARIANTS = (
    ("keras.applications.MobileNet, float32 (Keras's BatchNormalization)", "keras", False, 0, "float32"),
    ("MobileNetV1, float32 (fused BatchNormalization: the package's default)", "ours", False, 0, "float32"),
    ("MobileNetV1, XLA (jit_compile=True)", "ours", True, 0, "float32"),
    ("MobileNetV1, stem + 2 blocks frozen", "ours", False, 2, "float32"),
    ("MobileNetV1, mixed_bfloat16 (BatchNormalization falls back to Keras's)", "ours", False, 0,
     "mixed_bfloat16"),
)


def images_per_second(variant, size: int, batch: int, warmup: int, steps: int) -> float:
    import keras
    import numpy as np
    import tensorflow as tf

    from mobilenet_keras import MobileNetV1
    from mobilenet_keras.training.trainer import frozen_layer_names

    _, which, xla, frozen_blocks, precision = variant
    keras.mixed_precision.set_global_policy(precision)
    try:
        keras.utils.set_random_seed(0)
        build = keras.applications.MobileNet if which == "keras" else MobileNetV1
        model = build(input_shape=(size, size, 3), alpha=0.25, classes=10, weights=None)
        frozen = frozen_layer_names(frozen_blocks)
        for layer in model.layers:
            layer.trainable = layer.name not in frozen
        model.compile(keras.optimizers.AdamW(1e-3), "categorical_crossentropy", jit_compile=xla)
        rng = np.random.default_rng(0)
        x = rng.uniform(-1, 1, (batch * 4, size, size, 3)).astype("float32")
        y = np.eye(10, dtype="float32")[np.arange(batch * 4) % 10]
        data = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).repeat().prefetch(4)
        model.fit(data, steps_per_epoch=warmup, epochs=1, verbose=0)
        start = time.perf_counter()
        model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
        return steps * batch / (time.perf_counter() - start)
    finally:
        keras.mixed_precision.set_global_policy("float32")
        keras.backend.clear_session()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=count(32), default=128)
    parser.add_argument("--batch-size", type=count(1), default=64)
    parser.add_argument("--warmup", type=count(1), default=6)
    parser.add_argument("--steps", type=count(1), default=20)
    parser.add_argument("--rounds", type=count(1), default=3)
    parser.add_argument("--no-results", action="store_true", help="don't write RESULTS.md")
    args = parser.parse_args()
    import warnings

    warnings.simplefilter("ignore")
    rates = {variant[0]: [] for variant in VARIANTS}
    for _ in range(args.rounds):
        for variant in VARIANTS:
            rate = images_per_second(variant, args.image_size, args.batch_size, args.warmup, args.steps)
            rates[variant[0]].append(rate)
            print(f"{variant[0]}: {rate:.0f} images/s", flush=True)
    base = statistics.median(rates[VARIANTS[0][0]])
    lines = ["| variant | images/s (median) | vs keras.applications |", "|---|---|---|"]
    for name, values in rates.items():
        median = statistics.median(values)
        lines.append(f"| {name} | {median:.0f} | {median / base:.2f}x |")
    print("\n".join(lines))
    if args.no_results:
        return
    body = "\n".join(lines) + (
        f"\n\nAlpha 0.25, {args.image_size} px, batch {args.batch_size}, AdamW, synthetic images in memory; "
        f"{args.steps} timed steps after {args.warmup} warm-up steps, {args.rounds} rounds taking turns. "
        f"CPU flags: {cpu_flags()}. Ratios are within this run; absolute images/s drift on shared machines.\n")
    write_section("training_step_speed", "Training-step speed: fused BatchNormalization, XLA, frozen blocks, "
                  "bfloat16", body, command=" ".join(["python benchmarks/training_step_speed.py", *sys.argv[1:]]))


if __name__ == "__main__":
    run_quietly(main)
