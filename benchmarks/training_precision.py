"""Does mixed bfloat16 speed up training on the machine it runs on? float32 against mixed_bfloat16, side by side.

Run by hand: `python benchmarks/training_precision.py [--epochs 4]`. Trains the same seeded model on the
embedded digits at 96 px under each policy and reports seconds per epoch (after the first, which
includes tracing) and validation accuracy. Results go to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import json
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._results import count, cpu_flags, run_quietly, write_section  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=count(1), default=4)
    parser.add_argument("--image-size", type=count(32), default=96)
    args = parser.parse_args()

    import keras

    from mobilenet_keras.training import datasets
    from mobilenet_keras.training.trainer import TrainConfig, train

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self.start)

    rows = []
    for precision in ("float32", "mixed_bfloat16"):
        timer = EpochTimer()
        timer.times = []
        images = datasets.digits(image_size=args.image_size, batch_size=32)
        with tempfile.TemporaryDirectory() as out:
            train(images, out, TrainConfig(alpha=0.25, image_size=args.image_size, epochs=args.epochs,
                                           learning_rate=2e-2, precision=precision), verbose=0, callbacks=[timer])
            final = json.loads(Path(out, "run.json").read_text())["final"]["val_accuracy"]
        steady = sum(timer.times[1:]) / max(len(timer.times) - 1, 1)
        rows.append((precision, steady, final))
        print(precision, steady, final, flush=True)
    base = rows[0][1]
    lines = ["| policy | s/epoch (after the first) | speed vs float32 | val accuracy |", "|---|---|---|---|"]
    lines += [f"| {p} | {s:.2f} | {base / s:.2f}x | {a:.1%} |" for p, s, a in rows]
    body = "\n".join(lines) + (f"\n\nDigits, alpha 0.25 at {args.image_size} px, batch 32, {args.epochs} epochs from "
                               f"random init. CPU flags: {cpu_flags()}.\n")
    write_section("training_precision", "Training under mixed bfloat16 against float32 (CPU flags below)", body)


if __name__ == "__main__":
    run_quietly(main)
