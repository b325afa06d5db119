"""What `mobilenet-keras train --data FOLDER --weights BACKBONE` gives with nothing else set, on CIFAR-10
slices of several sizes: the recipe the package chose, validation accuracy, accuracy on images outside
every slice, and wall time.

Run by hand: `python benchmarks/train_defaults.py [--slices 2000,10000,45000]`. Needs ../shared/data (the
0.25 ImageNet backbone and CIFAR-10's training folder). Each slice holds the first N/10 images of each
class (sorted file order); the command splits it as it splits any folder (validation_split 0.2, seed 0).
Held out: the last 200 images of each class (2,000), which no slice reaches. Each run is the CLI in a
child process, as a user runs it. Results go to the train_defaults section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._results import counts, run_quietly, write_section  # noqa: E402

HELD_OUT_PER_CLASS = 200
REPO = Path(__file__).resolve().parents[1]


def images_per_class(source: Path) -> int:
    """The fewest images any class folder of `source` holds."""
    return min(sum(1 for p in folder.iterdir() if p.is_file()) for folder in source.iterdir() if folder.is_dir())


def class_slice(source: Path, per_class: int, start: int, where: Path) -> Path:
    """A folder of links to images start .. start + per_class of each class (sorted file order)."""
    for folder in sorted(p for p in source.iterdir() if p.is_dir()):
        (where / folder.name).mkdir(parents=True, exist_ok=True)
        for path in sorted(folder.iterdir())[start:start + per_class]:
            (where / folder.name / path.name).symlink_to(path.resolve())
    return where


def held_out_accuracy(model_path: Path, folder: Path) -> float:
    import keras
    import numpy as np

    import mobilenet_keras  # noqa: F401 - registers the package's layers for loading
    from mobilenet_keras import preprocess_input
    from mobilenet_keras.images import load_images, scan_folder

    model = keras.saving.load_model(model_path, compile=False)
    scanned = scan_folder(folder)
    images, bad = load_images(scanned.paths, tuple(model.input_shape[1:3]))
    if bad:
        raise SystemExit(f"can't decode {len(bad)} held-out images, e.g. {bad[0]}")
    predicted = model.predict(preprocess_input(images.astype("float32")), batch_size=100, verbose=0).argmax(1)
    return float((predicted == np.asarray(scanned.labels)).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=counts(10), default="2000,10000,45000",
                        help="slice sizes in images, comma separated "
                        "(each at least 10; at most 10 x (images per class - 200))")
    args = parser.parse_args()
    sizes = args.slices

    import shutil

    from mobilenet_keras.testing.reference_data import CIFAR, WEIGHTS_025, require

    require(CIFAR)
    weights = str(require(WEIGHTS_025))
    per_class = images_per_class(CIFAR)
    limit = (per_class - HELD_OUT_PER_CLASS) * 10
    if any(not 10 <= n <= limit for n in sizes):
        parser.error(f"slice sizes must be between 10 and {limit:,} ({CIFAR} holds {per_class} images per class, "
                     f"{HELD_OUT_PER_CLASS} of each held out)")
    work = Path(tempfile.mkdtemp(prefix="train_defaults_"))
    try:
        _run(args, sizes, weights, per_class, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(args, sizes: list[int], weights: str, per_class: int, work: Path) -> None:
    from mobilenet_keras.testing.reference_data import CIFAR

    held_out = class_slice(CIFAR, HELD_OUT_PER_CLASS, per_class - HELD_OUT_PER_CLASS, work / "held_out")
    # the child imports this checkout's package even where it is not installed
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    rows = []
    for size in sizes:
        data = class_slice(CIFAR, size // 10, 0, work / f"slice_{size}")
        out = work / f"run_{size}"
        command = [sys.executable, "-m", "mobilenet_keras", "train", "--data", str(data), "--weights", weights,
                   "--out", str(out), "--quiet"]
        started = time.perf_counter()
        subprocess.run(command, check=True, cwd=work, env=env)
        wall = time.perf_counter() - started
        run = json.loads((out / "run.json").read_text())
        config, final, counts = run["config"], run["final"], run["data"]
        accuracy = held_out_accuracy(out / "model.keras", held_out)
        rows.append(f"| {size:,} | {counts['train_images']:,} / {counts['validation_images']:,} "
                    f"| {config['image_size']} px, {config['epochs']} head + {config['fine_tune_epochs']} fine-tuning "
                    f"epochs, lr {config['learning_rate']:g}, {config['frozen_blocks']} blocks frozen "
                    f"| {final['best_val_accuracy']:.1%} | {accuracy:.1%} | {wall / 60:.1f} min |")
        print(rows[-1], flush=True)
        # written after every slice: a long run stopped part-way keeps the rows it finished
        write_section("train_defaults", "Transfer-learning defaults on CIFAR-10 slices", _body(rows),
                      command=f"python benchmarks/train_defaults.py --slices {','.join(map(str, sizes))}")


def _body(rows: list[str]) -> str:
    return "\n".join([
        "| CIFAR-10 images | train / validation | recipe the package chose | best validation accuracy "
        f"| accuracy on {HELD_OUT_PER_CLASS * 10:,} held-out images | wall time |",
        "|---|---|---|---|---|---|", *rows]) + (
        f"\n\nEach row is `mobilenet-keras train --data SLICE --weights <0.25 backbone .h5> --quiet` and nothing "
        f"else, alpha 0.25, batch 32 (the command's defaults), one seed; a slice holds the first N/10 images of each "
        f"class. Held out: the last {HELD_OUT_PER_CLASS} images of each class of CIFAR-10's training folder, in no "
        "slice.\n")


if __name__ == "__main__":
    run_quietly(main)
