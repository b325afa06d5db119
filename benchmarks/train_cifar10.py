"""Transfer learning on CIFAR-10 through the package's own `train()`: accuracy, time, and images/s against a
naive Keras baseline, on the machine it runs on (its CPU flags are recorded).

Run by hand: `python benchmarks/train_cifar10.py` (the full version: alpha 0.25 from the ImageNet backbone,
the 50,000 CIFAR-10 training images split 45,000 / 5,000 as keras.utils.image_dataset_from_directory splits
them with validation_split=0.1 and seed 0; target >= 92% validation accuracy within 30 minutes on 2 cores).
A short version: `--train-images 5000 --fine-tune-epochs 2` (a seeded, class-balanced slice with a
validation set a ninth of its size). `--minutes M` stops after the last epoch that fits in M minutes.

In the same run it measures a naive baseline: keras.applications.MobileNet(alpha=0.25, weights=<the backbone
file>, include_top=False) + global pooling + a dense head, data from image_dataset_from_directory, a plain
fit of the whole network at the same image size and batch; its steady images/s (a timed stretch of steps
after a warm-up) against the package's (median of its fine-tuning epochs, with the stem and `--frozen-blocks`
blocks frozen: the recipe's speed, not a like-for-like step; benchmarks/training_step_speed.py compares
those). Writes its section of RESULTS.md and keeps the model (the path is printed) for the
quantization benchmarks.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._results import count, cpu_flags, number, run_quietly, write_section  # noqa: E402


def slice_folder(source: Path, train_images: int, where: Path) -> Path:
    """A folder of links holding `train_images / 0.9` images, equal per class (sorted file order), so that a
    0.1 validation split leaves about `train_images` for training."""
    classes = sorted(p for p in source.iterdir() if p.is_dir())
    per_class = int(round(train_images / 0.9 / len(classes)))
    for folder in classes:
        (where / folder.name).mkdir(parents=True, exist_ok=True)
        for path in sorted(folder.iterdir())[:per_class]:
            (where / folder.name / path.name).symlink_to(path.resolve())
    return where


def baseline_images_per_second(folder: Path, weights: str, size: int, batch: int, steps: int) -> float:
    """The naive recipe's steady training speed: `steps` steps timed after `steps // 4` warm-up steps."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    train = keras.utils.image_dataset_from_directory(folder, validation_split=0.1, subset="training", seed=0,
                                                     image_size=(size, size), batch_size=batch, label_mode="int")
    train = train.map(lambda x, y: (keras.applications.mobilenet.preprocess_input(x), y)).repeat()
    backbone = keras.applications.MobileNet(input_shape=(size, size, 3), alpha=0.25, include_top=False,
                                            weights=weights)
    model = keras.Sequential([backbone, keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)])
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(train, steps_per_epoch=max(steps // 4, 2), epochs=1, verbose=0)  # tracing and warm-up
    start = time.perf_counter()
    model.fit(train, steps_per_epoch=steps, epochs=1, verbose=0)
    del tf
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-images", type=count(10), default=45_000, help="45,000 (all of CIFAR-10's training "
                        "folder, 5,000 held out) or a smaller seeded slice")
    parser.add_argument("--image-size", type=count(32), default=160)
    parser.add_argument("--batch-size", type=count(1), default=64)
    parser.add_argument("--epochs", type=count(1), default=1, help="head epochs")
    parser.add_argument("--fine-tune-epochs", type=count(0), default=11)
    parser.add_argument("--learning-rate", type=number(0, above=True), default=1e-2,
                        help="head epochs' peak learning rate")
    parser.add_argument("--fine-tune-lr-factor", type=number(0, above=True), default=0.3,
                        help="fine-tuning's peak learning rate as a fraction of --learning-rate")
    parser.add_argument("--weight-decay", type=number(0), default=4e-5, help="AdamW's decoupled weight decay "
                        "(TrainConfig.weight_decay; pointwise and dense kernels only)")
    parser.add_argument("--frozen-blocks", type=count(0), default=2, help="fine-tuning keeps the stem and this many "
                        "blocks frozen (TrainConfig.frozen_blocks; 0: the whole network trains)")
    parser.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw",
                        help="TrainConfig.optimizer (sgd: Nesterov momentum 0.9)")
    parser.add_argument("--dropout", type=number(0, below=1), default=1e-3,
                        help="dropout before the classifier (TrainConfig.dropout, default 1e-3 as Keras's MobileNet)")
    parser.add_argument("--minutes", type=number(0), default=30.0,
                        help="stop after the last epoch that fits (0: no limit)")
    parser.add_argument("--baseline-steps", type=count(0), default=200, help="0 skips the baseline")
    parser.add_argument("--out", default=None, help="run folder (default: a new temporary folder, kept)")
    parser.add_argument("--no-results", action="store_true", help="don't write RESULTS.md")
    args = parser.parse_args()
    from mobilenet_keras.training.run_folder import RunFolder

    if args.out:  # train() refuses it too, but only after the data is read
        try:
            RunFolder(args.out).refuse_finished_run(None, "--out")
        except ValueError as exc:
            parser.error(str(exc))

    from mobilenet_keras.testing.reference_data import CIFAR, WEIGHTS_025, require

    require(CIFAR)
    weights = str(require(WEIGHTS_025))
    work = Path(tempfile.mkdtemp(prefix="train_cifar10_"))
    try:
        measure(args, weights, work)
    except BaseException:  # a failed or interrupted run's slice and half-trained model are of no use
        shutil.rmtree(work, ignore_errors=True)
        raise
    # the slice goes; a model trained here (no --out) stays for the quantization benchmark
    shutil.rmtree(work / "data", ignore_errors=True)
    if args.out:
        shutil.rmtree(work, ignore_errors=True)


def measure(args, weights: str, work: Path) -> None:
    """Train, time the naive baseline, write the section; `work` holds the slice and, without --out, the run."""
    import keras

    from mobilenet_keras.testing.reference_data import CIFAR
    from mobilenet_keras.training import datasets
    from mobilenet_keras.training.trainer import TrainConfig, train

    folder = CIFAR if args.train_images >= 45_000 else slice_folder(CIFAR, args.train_images, work / "data")
    out = Path(args.out) if args.out else work / "run"
    started = time.perf_counter()

    class Budget(keras.callbacks.Callback):
        """Stops training when the next epoch would end after the time budget."""

        def on_epoch_begin(self, epoch, logs=None):
            self.begun = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            if not args.minutes:
                return
            now = time.perf_counter()
            if now + (now - self.begun) > started + args.minutes * 60:
                print(f"stopping: the next epoch would pass {args.minutes} minutes", flush=True)
                self.model.stop_training = True

    class Progress(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            print(f"  epoch {epoch + 1}: val_accuracy {logs.get('val_accuracy', float('nan')):.4f} "
                  f"at {(time.perf_counter() - started) / 60:.1f} min", flush=True)

    loaded = datasets.image_folder(folder, image_size=args.image_size, batch_size=args.batch_size,
                                   validation_split=0.1, seed=0)
    load_seconds = time.perf_counter() - started
    print(f"data: {loaded.num_train} training, {loaded.num_validation} validation images, loaded in "
          f"{load_seconds:.0f} s", flush=True)
    config = TrainConfig(alpha=0.25, image_size=args.image_size, batch_size=args.batch_size, weights=weights,
                         epochs=args.epochs, fine_tune_epochs=args.fine_tune_epochs, learning_rate=args.learning_rate,
                         fine_tune_lr_factor=args.fine_tune_lr_factor, warmup_epochs=0.25 * args.epochs,
                         fine_tune_warmup_epochs=0.25, frozen_blocks=args.frozen_blocks,
                         weight_decay=args.weight_decay, optimizer=args.optimizer, dropout=args.dropout,
                         seed=0)
    train(loaded, out, config, verbose=0, callbacks=[Budget(), Progress()])
    wall = time.perf_counter() - started
    run = json.loads((out / "run.json").read_text())
    throughput = run["throughput"]
    rates = throughput["images_per_second"]
    fine = sorted(rates[args.epochs:]) or sorted(rates)
    package_rate = fine[len(fine) // 2]
    overall = loaded.num_train * len(rates) / sum(throughput["train_seconds"])
    accuracy = run["final"]["val_accuracy"]
    print(f"model: {out / 'model.keras'}")
    print(f"validation accuracy {accuracy:.4f} in {wall / 60:.1f} min; images/s fine-tuning {package_rate:.0f}, "
          f"overall {overall:.0f}", flush=True)

    baseline = None
    if args.baseline_steps:
        baseline = baseline_images_per_second(folder, weights, args.image_size, args.batch_size, args.baseline_steps)
        print(f"naive baseline {baseline:.0f} images/s; package / baseline {package_rate / baseline:.2f}x", flush=True)

    if args.no_results:
        return
    epochs = len(rates)
    planned = args.epochs + args.fine_tune_epochs
    budget_note = (f"stopped after {epochs} of {planned} epochs by the {args.minutes:g}-minute budget; "
                   if epochs < planned else f"all {planned} epochs within the {args.minutes:g}-minute budget; "
                   if args.minutes else "")
    optimizer_name = "SGD (Nesterov)" if args.optimizer == "sgd" else "AdamW"
    lines = [
        "| figure | value |", "|---|---|",
        f"| validation accuracy ({loaded.num_validation:,} held out) | {accuracy:.2%} (best epoch "
        f"{run['final']['best_val_accuracy']:.2%}) |",
        f"| wall time (data loading, training, saving) | {wall / 60:.1f} min |",
        f"| data loading (decode once, in memory) | {load_seconds:.0f} s |",
        f"| epochs (head + fine-tuning) | {epochs} ({min(args.epochs, epochs)} + {max(epochs - args.epochs, 0)}) |",
        f"| seconds per epoch (training + validation) | {', '.join(f'{s:.0f}' for s in throughput['epoch_seconds'])} |",
        f"| package images/s, fine-tuning (median epoch) | {package_rate:.0f} |",
        f"| package images/s, all epochs | {overall:.0f} |",
    ]
    if baseline is not None:
        lines.append(f"| naive baseline images/s (keras.applications + image_dataset_from_directory + fit) | "
                     f"{baseline:.0f} |")
        lines.append(f"| package / baseline (fine-tuning) | {package_rate / baseline:.2f}x |")
    body = "\n".join(lines) + (
        f"\n\n{loaded.num_train:,} training images, alpha 0.25 from the ImageNet backbone at {args.image_size} px, "
        f"batch {args.batch_size}; {args.epochs} head epoch(s) at {optimizer_name} {args.learning_rate:g}, then "
        f"{args.fine_tune_epochs} fine-tuning epochs at {args.learning_rate * args.fine_tune_lr_factor:g} with the "
        f"stem and the first "
        f"{args.frozen_blocks} blocks frozen "
        f"(cosine, a quarter epoch of warmup), weight decay {args.weight_decay:g}, label smoothing 0.1, "
        f"dropout {args.dropout:g}; "
        f"{budget_note}"
        f"images/s count training steps only. The package's figure is its recipe's: MobileNetV1's fused "
        f"BatchNormalization, and the stem + {args.frozen_blocks} blocks frozen while fine-tuning; the baseline "
        f"trains the whole network with Keras's BatchNormalization. benchmarks/training_step_speed.py separates "
        f"the two (whole network against whole network, and frozen blocks). CPU flags: {cpu_flags()}. "
        f"Command: `python benchmarks/train_cifar10.py --train-images {args.train_images} --image-size "
        f"{args.image_size} --batch-size {args.batch_size} --epochs {args.epochs} --fine-tune-epochs "
        f"{args.fine_tune_epochs} --learning-rate {args.learning_rate:g} --fine-tune-lr-factor "
        f"{args.fine_tune_lr_factor:g} --weight-decay {args.weight_decay:g} --frozen-blocks {args.frozen_blocks}"
        f"{' --optimizer sgd' if args.optimizer == 'sgd' else ''}"
        f"{' --dropout ' + format(args.dropout, 'g') if args.dropout != 1e-3 else ''}"
        f"{' --minutes ' + format(args.minutes, 'g') if args.minutes else ''}`. Model kept at {out / 'model.keras'}.\n")
    write_section("train_cifar10", "Transfer learning on CIFAR-10 in 30 minutes on 2 cores", body)


if __name__ == "__main__":
    run_quietly(main)
