"""What converting from a concrete function saves over a SavedModel written and read back per file.

`tflite.convert` hands TFLite's converter a concrete function of the model's call
(`tflite.converter.model_converter`). Until session 28 every file went through `model.export` to a scratch
SavedModel and `TFLiteConverter.from_saved_model`. This runs both routes side by side in one process, each
mode's own recipe on top (`tflite.converter.RECIPES`: calibration for int8 and int16x8), and checks that
the two files give the same outputs.

Run by hand: `python benchmarks/conversion_path.py` (3-6 minutes on 2 cores). Alpha 0.25 with Keras's ImageNet
backbone weights from ../shared/data and a seeded 10-class head (a random-weight MobileNet's int8 file can't
be prepared by LiteRT), synthetic calibration images; the steps that come before the converter (dead channels,
equalization, rounding by error) are the same on both routes and are not run. One conversion of each route
comes first and is not counted (the first in a process pays for imports and kernel set-up); then the routes
take turns for `--rounds` rounds per mode and each one's median is reported. CPU flags are read from
/proc/cpuinfo.
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

from benchmarks._results import count, cpu_flags, run_quietly, write_section  # noqa: E402

MODES = ("float32", "dynamic", "float16", "int8", "int16x8")


def saved_model_converter(model, folder: str, batch_size: int = 1):
    """The route before: the model written to a SavedModel, and the converter reading it back."""
    import tensorflow as tf

    signature = [tf.TensorSpec((batch_size, *model.input_shape[1:]), tf.float32, name="images")]
    model.export(folder, format="tf_saved_model", verbose=False, input_signature=signature)
    converter = tf.lite.TFLiteConverter.from_saved_model(folder)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=count(32), default=96)
    parser.add_argument("--rounds", type=count(1), default=3)
    parser.add_argument("--calibration", type=count(1), default=200, help="calibration images (default 200)")
    parser.add_argument("--no-results", action="store_true", help="don't write RESULTS.md")
    args = parser.parse_args()

    import contextlib
    import io
    import warnings

    import keras
    import numpy as np
    import tensorflow as tf

    from mobilenet_keras import MobileNetV1
    from mobilenet_keras.quiet import quiet_tensorflow
    from mobilenet_keras.testing.reference_data import WEIGHTS_025, require
    from tflite.converter import (MOBILENET_INPUT_RANGE, RECIPES, converter_notes_dropped, model_converter,
                                  with_serving_signature)
    from tflite.modes import get_mode
    from tflite.runtime import TFLiteModel

    keras.utils.set_random_seed(0)
    size = args.image_size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the backbone file has no head: a head of its own is the point
        model = MobileNetV1(input_shape=(size, size, 3), alpha=0.25, classes=10, weights=str(require(WEIGHTS_025)))
    calibration = np.random.default_rng(0).uniform(-1, 1, (args.calibration, size, size, 3)).astype("float32")
    layer_names = {layer.name for layer in model.layers}

    def convert(mode: str, route: str, folder: str) -> tuple[float, bytes]:
        spec = get_mode(mode)
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()), quiet_tensorflow(), converter_notes_dropped():
            if route == "saved_model":
                converter = saved_model_converter(model, os.path.join(folder, f"{mode}_{time.monotonic_ns()}"))
            else:
                converter = model_converter(model)
            flatbuffer = RECIPES[spec.recipe](converter, tf, spec, calibration, MOBILENET_INPUT_RANGE, [],
                                              layer_names, False)
            if route == "concrete_function":
                flatbuffer = with_serving_signature(flatbuffer)  # part of the route: the file carries a signature
        return time.perf_counter() - start, flatbuffer

    def outputs(flatbuffer: bytes, folder: str) -> np.ndarray:
        path = Path(folder, f"check_{time.monotonic_ns()}.tflite")
        path.write_bytes(flatbuffer)
        return TFLiteModel(path).predict(calibration[:20])

    routes = {"concrete_function": "concrete function (now)", "saved_model": "SavedModel per file (before)"}
    seconds = {(mode, route): [] for mode in MODES for route in routes}
    differences = {}
    with tempfile.TemporaryDirectory() as folder:
        for route in routes:
            convert("float32", route, folder)  # the first conversion in the process, not counted
        for mode in MODES:
            files = {}
            for _ in range(args.rounds):
                for route in routes:
                    took, files[route] = convert(mode, route, folder)
                    seconds[mode, route].append(took)
            differences[mode] = float(np.abs(outputs(files["concrete_function"], folder)
                                             - outputs(files["saved_model"], folder)).max())
            print(f"{mode}: " + ", ".join(f"{routes[r]} {statistics.median(seconds[mode, r]):.1f} s"
                                          for r in routes) + f", outputs differ by {differences[mode]:g}",
                  flush=True)

    lines = ["| mode | concrete function (now), s | SavedModel per file (before), s | before / now | "
             "largest output difference |", "|---|---|---|---|---|"]
    for mode in MODES:
        now, before = (statistics.median(seconds[mode, route]) for route in routes)
        lines.append(f"| {mode} | {now:.1f} | {before:.1f} | {before / now:.1f}x | {differences[mode]:g} |")
    print("\n".join(lines))
    if args.no_results:
        return
    body = "\n".join(lines) + (
        f"\n\nThe converter's part of one file (the route to TFLite's converter and the mode's recipe, "
        f"{args.calibration} calibration images for int8 and int16x8): alpha 0.25, the ImageNet backbone with a "
        f"seeded head, {size} px, "
        f"medians of {args.rounds} rounds taking turns in one process after one uncounted conversion per route. "
        f"The largest difference between the two routes' outputs on 20 images is in the last column. "
        f"CPU flags: {cpu_flags()}. Ratios are within this run; absolute seconds drift on shared machines.\n")
    write_section("conversion_path", "Converting from a concrete function instead of a SavedModel per file",
                  body, command=" ".join(["python benchmarks/conversion_path.py", *sys.argv[1:]]))


if __name__ == "__main__":
    run_quietly(main)
