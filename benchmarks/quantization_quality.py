"""Where int8 loses accuracy, and what each step of the converter buys: one row per step.

Run by hand: `python benchmarks/quantization_quality.py` (about 15 minutes on 2 cores). Needs
../shared/data (the 0.25 ImageNet backbone and CIFAR-10). Two classifiers from the real backbone (a
frozen backbone with a trained head, and an end-to-end fine-tune), each converted to int8 with the
steps added one at a time, then verified on 500 held-out images that neither training nor calibration
saw. Results go to benchmarks/RESULTS.md.

After the converter's own steps come the mixed-precision rows, still all integer: int16 activations
(16x8: int16 activations, int8 weights) in the K convolutions that `tflite.layer_errors` (the
per-layer quantization debugger) ranks worst, K = 5 and 11, and int16 activations everywhere (the
converter's `int16x8` mode, every integer step with kernels rounded for 16-bit inputs). TFLite's
converter quantizes a whole file to int16x8 or none of
it, so the per-layer files come from ai-edge-quantizer (`pip install -e .[bench]`), which rewrites a
float .tflite file by per-op recipes: `int16_layers_file` below. Without that package those rows are
skipped with a note.

`python benchmarks/quantization_quality.py --model RUN/model.keras --data FOLDER` measures the same rows
on a trained model instead (the CIFAR-10 benchmark model that benchmarks/train_cifar10.py keeps), on
images of its run's validation split, and writes its own section.

`python benchmarks/quantization_quality.py --only-int16` runs only the int16 rows, with the plain int8
row (the latency reference) and the opt-in float-prefix row beside them, and writes its own section
(`quantization_int16_layers`) of RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks._results import count, run_quietly, write_section  # noqa: E402

OFF = dict(bias_correction=False, equalization=False, adaround=False, denylist=None)
PLAIN = "naive PTQ"
# The opt-in float prefix: the fully integer file of every step when it reaches 99% agreement on the
# calibration images or beats the float-prefix file's SQNR there, else that float-prefix file.
FLOAT_PREFIX = "float prefix, opt-in (denylist='auto': fully integer if >= 99% or a higher SQNR on calibration)"
# (row, conversion options, transform the model first with dead-channel absorption only)
VARIANTS = (
    (PLAIN, OFF, False),
    ("+ bias correction", {**OFF, "bias_correction": True}, False),
    ("+ dead channels", {**OFF, "bias_correction": True}, True),
    ("+ equalization", {**OFF, "bias_correction": True, "equalization": True}, False),
    # the default's options spelled out (the same file: test_integer_quantization), so that a fallback
    # to fewer steps could not hide under this row's name
    ("+ AdaRound (fully integer: the default)", {**OFF, "bias_correction": True, "equalization": True,
                                                 "adaround": True}, False),
    (FLOAT_PREFIX, dict(denylist="auto"), False),
)
# How many of the debugger's worst convolutions get int16 activations, one row each.
INT16_LAYER_COUNTS = (5, 11)
INT16_SECTION = "quantization_int16_layers"
TRAINED_SECTION = "quantization_quality_trained"
TRAINED_TITLE = "int8 quality on the CIFAR-10 benchmark model (train_cifar10.py's model.keras)"
INT16_TITLE = "int16 activations in the worst layers (mixed precision, all integer)"
HEADER = ["| classifier | float acc | variant | top-1 agreement | top-5 overlap | SQNR dB | int8 acc | "
          "drop (points) | float ops | int16 ops | latency vs plain int8 | convert s |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|"]


def worst_convolutions(model, calibration) -> list[str]:
    """The model's convolutions, worst first, as `tflite.layer_errors` ranks them in an int8 file
    (RMS error of each op's output over its quantization step); each layer once."""
    import keras

    import tflite

    convolutions = {layer.name for layer in model.layers
                    if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))}
    ranked = []
    for row in tflite.layer_errors(model, calibration):
        if row.layer in convolutions and row.layer not in ranked:
            ranked.append(row.layer)
    return ranked


def layers_regex(model, layers: list[str]) -> str:
    """ai-edge-quantizer's scope regex for the ops of `layers` (searched in each op's output tensor names).

    A convolution followed by a ReLU is named by its ReLU: "/conv_dw_1_relu" is not a prefix of
    "/conv_dw_10_relu". One without (the classifier's conv_preds) by its own scope, "/conv_preds_1/".
    """
    names = {layer.name for layer in model.layers}
    parts = [re.escape(name) + ("_relu" if f"{name}_relu" in names else r"(?:_\d+)?/") for name in layers]
    return "/(?:" + "|".join(parts) + ")"


def _check_regex_selects(float_path: Path, regex: str, model, layers: list[str]) -> None:
    """Fails unless `regex` selects, in the float file, exactly one op for each layer of `layers` and
    nothing else."""
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as fb

    from tflite.names import keras_layers_in

    names = {layer.name for layer in model.layers}
    graph = fb.read_model(str(float_path)).subgraphs[0]
    matched = []
    for op in graph.operators:
        scope = fb.get_op_scope(op, graph.tensors)
        if re.search(regex, scope):
            owners = [name for name in keras_layers_in(scope, names) if name in layers]
            assert len(owners) == 1, f"{regex!r} selects an op of {owners or 'no requested layer'}: {scope[:120]}"
            matched.append(owners[0])
    assert sorted(matched) == sorted(layers), f"{regex!r} selects the ops of {matched}, not of {layers}"


def bias_corrected_float_file(model, calibration, path: Path):
    """`model` with the converter's bias correction folded in (what its int8 modes quantize), and its
    float32 file: ai-edge-quantizer starts from a float file and has no such step (the files lose about
    9 points of agreement without it)."""
    import tflite
    from tflite.bias_correction import bias_corrected

    corrected = bias_corrected(model, calibration)
    return corrected, tflite.convert(corrected, path, "float32")


def int16_layers_file(float_path: Path, calibration, output_path: Path, int16_regex: str | None) -> Path:
    """Quantize a float .tflite file with ai-edge-quantizer: int8 activations and per-channel int8
    weights everywhere, int16 activations (16x8) in the ops `int16_regex` selects (a later rule wins),
    float input and output (like `int8_float_io`), static calibration with the plain min/max of every
    tensor over `calibration` (float images in the model's convention).

    `Quantizer.calibrate` keeps a moving average of each image's min/max, which clips rare large
    values (the logits): the Calibrator is called directly with a min/max update instead.
    """
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import calibrator, qtyping, quantizer, recipe_manager
    from ai_edge_quantizer.utils import qsv_utils

    every, channelwise = qtyping.TFLOperationName.ALL_SUPPORTED, qtyping.QuantGranularity.CHANNELWISE
    qt = quantizer.Quantizer(str(float_path))
    qt.add_static_config(".*", every, activation_num_bits=8, weight_num_bits=8, weight_granularity=channelwise)
    if int16_regex:
        qt.add_static_config(int16_regex, every, activation_num_bits=16, weight_num_bits=8,
                             weight_granularity=channelwise)
    for boundary in (qtyping.TFLOperationName.INPUT, qtyping.TFLOperationName.OUTPUT):
        qt.update_quantization_recipe(".*", boundary, algorithm_key=quantizer.AlgorithmName.NO_QUANTIZE)
    (signature, signature_io), = Interpreter(model_path=str(float_path)).get_signature_list().items()
    (input_name,) = signature_io["inputs"]
    data = {signature: [{input_name: image[None]} for image in calibration]}
    recipes = recipe_manager.RecipeManager()
    recipes.load_quantization_recipe(qt.get_quantization_recipe())
    cal = calibrator.Calibrator(float_path.read_bytes(), num_threads=1, qsv_update_func=qsv_utils.min_max_update)
    # its progress bar and size summary are its own chatter, not the benchmark's rows
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        cal.calibrate(data, recipes)
        output_path.unlink(missing_ok=True)  # the previous model's file: the quantizer warns on overwriting
        qt.quantize(cal.get_model_qsvs()).export_model(str(output_path))
    return output_path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only-int16", action="store_true",
                        help="only the int16 rows (with the plain int8 and float-prefix rows beside them); "
                             f"writes the {INT16_SECTION} section of RESULTS.md")
    parser.add_argument("--model", type=Path,
                        help="a trained .keras model to measure instead of the two test classifiers, e.g. the "
                             "model.keras that benchmarks/train_cifar10.py keeps; needs --data. Writes the "
                             f"{TRAINED_SECTION} section of RESULTS.md")
    parser.add_argument("--data", type=Path,
                        help="the image folder (one subfolder per class) --model was trained on; the run.json "
                             "beside the model gives its validation split and seed: held-out images come from the "
                             "validation split, calibration images from the training split")
    parser.add_argument("--held-out", type=count(1), default=2000,
                        help="how many validation images to verify on with --model (default 2000, spread over the "
                             "split)")
    args = parser.parse_args(argv)
    if (args.model is None) != (args.data is None):
        parser.error("--model and --data go together")
    warnings.simplefilter("ignore")
    if args.model is not None:
        model, held_out, labels, calibration, described = trained_model_and_images(args.model, args.data,
                                                                                     args.held_out)
        lines, notes, range_notes = measure([("CIFAR-10 benchmark model", model)], held_out, labels, calibration,
                                            False)
        body = "\n".join(lines) + (
            f"\n\nModel: {described}. Agreement and SQNR compare each file with the float Keras model. Steps are "
            "cumulative up to the float prefix; the int16 rows start again from bias correction.\n\n"
            + "".join(f"{note}\n\n" for note in range_notes) + int16_text(notes))
        write_section(TRAINED_SECTION, TRAINED_TITLE, body,
                      command=f"python benchmarks/quantization_quality.py --model {args.model} --data {args.data} "
                              f"--held-out {args.held_out}")
        return

    from mobilenet_keras import preprocess_input
    from mobilenet_keras.testing.cifar import SIZE, cifar_slice, classifier, fine_tuned_classifier

    held_out, labels, _ = cifar_slice(50, 200, SIZE)
    held_out = preprocess_input(held_out)
    calibration = cifar_slice(20, 400, SIZE)[0]
    models = (("frozen backbone + head", classifier()), ("fine-tuned end to end", fine_tuned_classifier()))
    lines, notes, range_notes = measure(models, held_out, labels, calibration, args.only_int16)
    if args.only_int16:
        write_section(INT16_SECTION, INT16_TITLE, int16_section_body("\n".join(lines), notes),
                      command="python benchmarks/quantization_quality.py --only-int16")
        return
    body = "\n".join(lines) + (
        "\n\nHeld-out set: 500 CIFAR-10 training images (50 per class) that neither training nor calibration "
        "(200 images) saw, at 96 px. Agreement and SQNR compare the file with the float Keras model. "
        "Steps are cumulative up to the float prefix; the int16 rows start again from bias correction. "
        "float16 shows how sensitive each classifier is to any perturbation at all.\n\n"
        + "".join(f"{note}\n\n" for note in range_notes) + int16_text(notes))
    write_section("quantization_quality", "int8 quality: what each converter step buys", body)


def run_split(model_path: Path) -> tuple[dict, float, int]:
    """(run.json beside `model_path`, its validation fraction, its seed): how its run split the folder."""
    import json

    path = model_path.with_name("run.json")
    if not path.is_file():
        raise SystemExit(f"{path} is missing: --model takes the model.keras of a run folder (mobilenet-keras train "
                         "or benchmarks/train_cifar10.py), whose run.json says how the data was split.")
    from mobilenet_keras.training.run_folder import data_settings

    run = json.loads(path.read_text())
    settings = data_settings(run)  # the split run.json records, or the one its image counts imply
    return run, settings["validation_split"], settings["seed"]


def trained_model_and_images(model_path: Path, folder: Path, count: int):
    """(model, held-out float images, their labels, 200 uint8 calibration images, a sentence about them).

    Held out: `count` images of the run's validation split, which training never fitted (the run kept
    its best epoch by validation accuracy, which is all the split decided); calibration: 200 images of
    its training split. Both through the package's own decode and resize."""
    import keras

    import mobilenet_keras  # noqa: F401 - registers the package's layers for loading
    from mobilenet_keras import preprocess_input
    from mobilenet_keras.images import load_images, scan_folder
    from mobilenet_keras.training.datasets import keras_split
    from tflite.representative import CALIBRATION_IMAGES

    run, split, seed = run_split(model_path)
    scanned = scan_folder(folder)
    if list(scanned.class_names) != list(run["data"]["classes"]):
        raise SystemExit(f"{folder}'s classes {scanned.class_names} are not the model's {run['data']['classes']}")
    (train_paths, _), (val_paths, val_labels) = keras_split(scanned.paths, scanned.labels, split, seed)
    model = keras.saving.load_model(model_path, compile=False)
    size = tuple(model.input_shape[1:3])
    pick = np.linspace(0, len(val_paths) - 1, min(count, len(val_paths))).round().astype(int)
    held_out, bad = load_images([val_paths[i] for i in pick], size)
    if bad:
        raise SystemExit(f"can't decode {len(bad)} held-out images, e.g. {bad[0]}")
    labels = np.asarray([val_labels[i] for i in pick])
    every = max(len(train_paths) // CALIBRATION_IMAGES, 1)
    calibration, _ = load_images(train_paths[::every][:CALIBRATION_IMAGES], size)
    described = (f"{model_path} (alpha {run['config']['alpha']}, {size[0]} px, {run['final']['best_val_accuracy']:.2%} "
                 f"best validation accuracy in its run); held out: {len(labels)} images spread over the run's "
                 f"{len(val_paths)} validation images (split {split:g}, seed {seed}), which training never fitted; "
                 f"calibration: {len(calibration)} images of its training split")
    return model, preprocess_input(held_out.astype(np.float32)), labels, calibration, described


def measure(models, held_out, labels, calibration, only_int16: bool) -> tuple[list[str], list[str], list[str]]:
    """The table's rows for each (name, model), the notes on the int16 rows, and what MSE ranges would do
    (`mse_range_note`) for each model."""
    import keras

    import tflite
    from tflite.equalization import absorb_dead_channels
    from tflite.flatbuffer import op_counts, read_model
    from tflite.latency import tflite_latency
    from tflite.representative import CALIBRATION_IMAGES, collect

    try:
        import ai_edge_quantizer  # noqa: F401
        quantizer_note = None
    except ImportError:
        quantizer_note = ("ai-edge-quantizer is not installed (pip install -e .[bench]): "
                          "the rows with int16 activations in the worst layers are skipped.")
        print(quantizer_note, flush=True)

    lines = list(HEADER)
    notes, range_notes = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in models:
            plain_latency = None

            def row(variant: str, path: Path, seconds: float) -> None:
                nonlocal plain_latency
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

            dead_free = None if only_int16 else absorb_dead_channels(model)
            if not only_int16:
                range_notes.append(mse_range_note(name, model, calibration))
                print(range_notes[-1], flush=True)
            rows = [(v, o, d, "int8") for v, o, d in VARIANTS if not only_int16 or v in (PLAIN, FLOAT_PREFIX)]
            if not only_int16:
                rows.append(("float16 (reference)", {}, False, "float16"))
            for variant, options, dead, mode in rows:
                start = time.time()
                source = dead_free if dead else model
                data = calibration if mode == "int8" else None
                path = tflite.convert(source, Path(tmp, f"{mode}.tflite"), mode, representative_data=data, **options)
                row(variant, path, time.time() - start)

            if quantizer_note is None:
                images = collect(calibration, tuple(model.input_shape[1:]), limit=CALIBRATION_IMAGES)
                start = time.time()
                corrected, float_path = bias_corrected_float_file(model, images, Path(tmp, "float32_bc.tflite"))
                float_seconds = time.time() - start
                start = time.time()
                ranked = worst_convolutions(corrected, images)  # in the model the quantizer gets
                debug_seconds = time.time() - start
                print(f"{name}: convolutions worst first ({debug_seconds:.0f} s): {', '.join(ranked)}", flush=True)
                for count in INT16_LAYER_COUNTS:
                    layers = ranked[:count]
                    regex = layers_regex(model, layers)
                    _check_regex_selects(float_path, regex, model, layers)
                    start = time.time()
                    path = int16_layers_file(float_path, images, Path(tmp, f"int16_{count}.tflite"), regex)
                    row(f"+ int16 activations in the {count} worst layers (ai-edge-quantizer)", path,
                        float_seconds + time.time() - start)
                notes.append(f"{name}: the debugger's ranking (its run took {debug_seconds:.0f} s), worst first: "
                             f"{', '.join(ranked[:max(INT16_LAYER_COUNTS)])}, ...")
            start = time.time()
            path = tflite.convert(model, Path(tmp, "int16x8.tflite"), "int16x8", representative_data=calibration)
            row("int16x8: int16 activations everywhere, every integer step (kernels rounded for 16-bit inputs)", path,
                time.time() - start)
            keras.backend.clear_session()
    if quantizer_note:
        notes.insert(0, quantizer_note)
    return lines, notes, range_notes


def mse_optimal_clip(values: np.ndarray, levels: int = 256) -> tuple[float, float]:
    """(c / max, MSE at c / MSE at max) for the clip c, searched from 0.2 to 1.0 times the maximum of
    non-negative `values` in steps of 0.01, whose grid of `levels` steps on [0, c] gives the least mean
    squared error."""
    values = np.asarray(values, np.float64).ravel()
    top = float(values.max())
    fractions = np.linspace(0.2, 1.0, 81)
    errors = []
    for clip in top * fractions:
        step = clip / (levels - 1)
        errors.append(np.mean((np.clip(np.round(values / step), 0, levels - 1) * step - values) ** 2))
    best = int(np.argmin(errors))
    return float(fractions[best]), float(errors[best] / errors[-1]) if errors[-1] > 0 else 1.0


def mse_range_note(name: str, model, calibration, images: int = 64, levels: int = 256) -> str:
    """Step 3 of the int8 issue, measured rather than assumed: for each ReLU6 output of the model as the
    converter prepares it (dead channels absorbed, equalized), the clip c that minimizes the mean squared
    error of an int8 grid on [0, c] (TFLite's grid for a range starting at 0), searched from 0.2 to 1.0
    times the calibrated maximum, on the first `images` calibration images."""
    import keras

    from mobilenet_keras import preprocess_input
    from tflite.equalization import RELU6, prepare

    x = preprocess_input(np.asarray(calibration[:images], np.float32))
    prepared, _ = prepare(model, x)
    relus = [layer.name for layer in prepared.layers if isinstance(layer, keras.layers.ReLU)]
    outputs = keras.Model(prepared.input, [prepared.get_layer(n).output for n in relus]).predict(x, verbose=0)
    rng = np.random.default_rng(0)
    lower, at_max, clipped = [], [], 0
    for relu, values in zip(relus, outputs):
        values = values.ravel().astype(np.float64)
        if values.size > 1_000_000:
            values = rng.choice(values, 1_000_000, replace=False)
        top = values.max()
        if top <= 0:
            continue
        at_max.append(float(np.mean(values >= top * (1 - 1e-6))))
        clipped += top >= RELU6 * (1 - 1e-6)
        fraction, gain = mse_optimal_clip(values, levels)
        if fraction < 1.0:
            lower.append(f"{relu} ({fraction:.2f} x its maximum, MSE x{gain:.2f})")
    summary = (f"{name}: MSE-chosen activation ranges, measured on {len(x)} calibration images after dead channels "
               f"and equalization: {len(lower)} of its {len(at_max)} ReLU6 outputs have an MSE-optimal int8 range "
               "below the calibrated maximum")
    if not lower:
        return (summary + f" ({clipped} of them reach ReLU6's clip at 6, and each has {min(at_max):.2%} or more "
                "of its values at its maximum): "
                "MSE ranges would leave the file as it is, so the table has no row for them and the converter "
                "keeps its min/max ranges.")
    return summary + ": " + ", ".join(lower) + ". The converter keeps its min/max ranges (not applied)."


def int16_text(notes: list[str]) -> str:
    """What the int16 rows are, and why the package does not make such files by default; then `notes`."""
    return (
        "int16 rows: 16x8 (int16 activations, int8 weights), still all integer. The per-layer files come "
        "from ai-edge-quantizer, starting from the float file with the converter's bias correction folded in: "
        "int8 everywhere, int16 activations in the K convolutions that `tflite.layer_errors` ranks worst in "
        "the bias-corrected model (each op's own output error in units of its int8 step), float input and "
        "output, min/max ranges over the same 200 calibration images. Their convert s counts the bias "
        "correction, the float file, calibration and quantization, not the debugger's run. int16 ops counts "
        "every op with an int16 activation, the QUANTIZE ops that requantize between int8 and int16 "
        "included. int16x8 is the converter's own mode with every integer step (dead channels, equalization, "
        "kernels rounded by error for 16-bit inputs with their bias correction). Compare the int16 rows "
        "with the `+ bias correction` rows of the full table (the same start, int8 everywhere).\n\n"
        "XNNPACK, TFLite's CPU delegate, has no int16 kernels: every int16 op runs on TFLite's reference "
        "kernels and every int8/int16 boundary splits the delegated graph, which the latency column shows. "
        "Latency is the median of 20 runs at 2 threads; on shared machines the ratios are rough.\n\n"
        + "\n".join(f"- {note}" for note in notes) + "\n")


def int16_section_body(table: str, notes: list[str]) -> str:
    """The `--only-int16` section of RESULTS.md under its table."""
    return table + (
        "\n\nThe int16 rows of `python benchmarks/quantization_quality.py`, run alone with `--only-int16`; "
        "plain int8 (naive PTQ, the latency reference) and the opt-in float prefix beside them. Held-out "
        "set: 500 CIFAR-10 training images (50 per class) that neither training nor calibration (200 images) "
        "saw, at 96 px. Agreement and SQNR compare the file with the float Keras model.\n\n" + int16_text(notes))


if __name__ == "__main__":
    run_quietly(main)
