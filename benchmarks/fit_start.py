"""What building the optimizer before `fit` saves: the time of a short MobileNet fit, most of which is
TensorFlow tracing the training step, with the optimizer built first (what `train`, QAT, pruning and
clustering do, `mobilenet_keras.training.trainer.build_optimizer`) and without (Keras's own order: the
optimizer's variables are made while the first step is traced, and TensorFlow then traces it again).

Run by hand: `python benchmarks/fit_start.py` (2-4 minutes on 2 cores). Alpha 0.25, random weights,
synthetic images in memory, AdamW, batch 64, `--steps` steps of one epoch, as `train` compiles it
(the package's `logits_view`). Each fit runs in a fresh process (nothing traced before it); the two
variants take turns for `--rounds` rounds and each one's median is reported with the traces counted.
CPU flags are read from /proc/cpuinfo.
"""

from __future__ import annotations

import argparse
import os
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._results import count, cpu_flags, run_quietly, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import json, sys, time, warnings
warnings.simplefilter("ignore")
import keras, numpy as np, tensorflow as tf
from mobilenet_keras.training.trainer import (TrainConfig, build_classifier, build_optimizer, logits_view,
                                              make_optimizer)
size, steps, built = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "built"
config = TrainConfig(alpha=0.25, image_size=size, batch_size=64, epochs=1)
rng = np.random.default_rng(0)
x = rng.uniform(-1, 1, (256, size, size, 3)).astype("float32")
y = np.eye(10, dtype="float32")[np.arange(256) % 10]
data = tf.data.Dataset.from_tensor_slices((x, y)).batch(64).repeat()
keras.utils.set_random_seed(0)
logits = logits_view(build_classifier(config, 10))
logits.compile(optimizer=make_optimizer(config, steps, logits),
               loss=keras.losses.CategoricalCrossentropy(from_logits=True))
traces = [0]
step = keras.Model.train_step
keras.Model.train_step = lambda self, batch: traces.__setitem__(0, traces[0] + 1) or step(self, batch)
start = time.perf_counter()
if built:
    build_optimizer(logits)
logits.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
print(json.dumps({"seconds": time.perf_counter() - start, "traces": traces[0]}))
"""


def one_fit(size: int, steps: int, built: bool) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, str(size), str(steps), "built" if built else "plain"],
                          capture_output=True, text=True, cwd=ROOT, timeout=900,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)})
    if done.returncode != 0:
        raise SystemExit(f"the fit failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=count(32), default=32)
    parser.add_argument("--steps", type=count(1), default=16)
    parser.add_argument("--rounds", type=count(1), default=3)
    parser.add_argument("--no-results", action="store_true", help="don't write RESULTS.md")
    args = parser.parse_args()
    runs = {"optimizer built before fit (the package)": [], "built while the first step is traced (Keras's order)": []}
    for _ in range(args.rounds):
        for name, built in zip(runs, (True, False)):
            runs[name].append(one_fit(args.image_size, args.steps, built))
            print(f"{name}: {runs[name][-1]['seconds']:.1f} s, {runs[name][-1]['traces']} trace(s)", flush=True)
    first = statistics.median(r["seconds"] for r in next(iter(runs.values())))
    lines = ["| variant | fit seconds (median) | traces of the step | vs the package |", "|---|---|---|---|"]
    for name, values in runs.items():
        median = statistics.median(r["seconds"] for r in values)
        traces = sorted({r["traces"] for r in values})
        lines.append(f"| {name} | {median:.1f} | {', '.join(map(str, traces))} | {median / first:.2f}x |")
    print("\n".join(lines))
    if args.no_results:
        return
    body = "\n".join(lines) + (
        f"\n\nAlpha 0.25, {args.image_size} px, batch 64, AdamW as `train` compiles it, {args.steps} steps of one "
        f"epoch, synthetic images in memory, each fit in a fresh process (TensorFlow's import not counted); "
        f"{args.rounds} rounds taking turns. CPU flags: {cpu_flags()}. Ratios are within this run; absolute "
        "seconds drift on shared machines.\n")
    write_section("fit_start", "Starting a fit: the optimizer built before the first step is traced", body,
                  command=" ".join(["python benchmarks/fit_start.py", *sys.argv[1:]]))


if __name__ == "__main__":
    run_quietly(main)
