"""Quantization-aware training: the tf_keras twin, the folded QAT model, its files, saving, and Keras 3 after it."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT


def _with_statistics(model, seed: int = 0):
    """Give every BatchNorm non-trivial statistics, so that a twin with a wrong fold or order would differ."""
    import keras

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.1, n), rng.normal(0, 0.1, n),
                               rng.uniform(0.5, 2.0, n)])
    return model


@pytest.mark.parametrize("arguments", [
    dict(input_shape=(64, 64, 3), alpha=0.25, classes=7),
    dict(input_shape=(96, 96, 3), alpha=0.5, include_top=False, pooling="avg"),
    dict(input_shape=(64, 64, 3), alpha=0.75, depth_multiplier=2, include_top=False, output_stride=16),
])
def test_twin_has_the_same_layers_and_outputs(arguments):
    from mobilenet_keras import MobileNetV1
    from mobilenet_keras.optimize.tf_keras_twin import tf_keras_twin

    model = _with_statistics(MobileNetV1(**arguments))
    twin = tf_keras_twin(model)
    assert [layer.name for layer in twin.layers[1:]] == [layer.name for layer in model.layers[1:]]
    assert [tuple(w.shape) for w in twin.weights] == [tuple(w.shape) for w in model.weights]
    x = np.random.default_rng(1).uniform(-1, 1, (4, *arguments["input_shape"])).astype("float32")
    assert np.abs(twin.predict(x, verbose=0) - model.predict(x, verbose=0)).max() < 1e-5


def test_weights_come_back_from_the_twin():
    from mobilenet_keras import MobileNetV1
    from mobilenet_keras.optimize.tf_keras_twin import tf_keras_twin
    from mobilenet_keras.weights import transfer_weights

    model = _with_statistics(MobileNetV1(input_shape=(64, 64, 3), alpha=0.25, classes=5))
    twin = tf_keras_twin(model)
    for weight in twin.get_layer("conv_pw_5").weights:  # as training would change them
        weight.assign(weight * 1.5)
    fresh = MobileNetV1(input_shape=(64, 64, 3), alpha=0.25, classes=5)
    transfer_weights(twin, fresh)
    x = np.random.default_rng(2).uniform(-1, 1, (3, 64, 64, 3)).astype("float32")
    assert np.abs(fresh.predict(x, verbose=0) - twin.predict(x, verbose=0)).max() < 1e-5


def test_twin_refuses_a_model_that_is_not_mobilenet():
    import keras

    from mobilenet_keras.optimize.tf_keras_twin import tf_keras_twin

    inputs = keras.Input((32, 32, 3))
    other = keras.Model(inputs, keras.layers.Conv2D(4, 3, name="conv1")(inputs))
    with pytest.raises(ValueError, match="not a MobileNet V1"):
        tf_keras_twin(other)


def test_twin_refuses_a_model_with_layers_the_table_does_not_build():
    """The twin is rebuilt from the block table: a Rescaling in front or a softmax after a logits model was left
    out without a word, and pruning trained on 0..255 pixels (the red team's run: 29% agreement after)."""
    import keras

    from mobilenet_keras import MobileNetV1
    from mobilenet_keras.optimize.tf_keras_twin import tf_keras_twin

    inputs = keras.Input((64, 64, 3))
    scaled = keras.layers.Rescaling(1 / 127.5, offset=-1, name="rescale")(inputs)
    with pytest.raises(ValueError, match=r"layers that MobileNetV1 does not build: rescale \(Rescaling\)"):
        tf_keras_twin(MobileNetV1(input_tensor=scaled, alpha=0.25, classes=3))
    logits = MobileNetV1(input_shape=(64, 64, 3), alpha=0.25, classes=3, classifier_activation=None)
    wrapped = keras.Model(logits.input, keras.layers.Activation("softmax", name="softmax_out")(logits.output))
    with pytest.raises(ValueError, match=r"softmax_out \(Activation\)"):
        tf_keras_twin(wrapped)
    assert tf_keras_twin(logits) is not None  # a logits model as MobileNetV1 builds it is fine


def test_pruning_and_clustering_name_bad_data_and_arguments_in_one_line():
    """Unbatched data, class numbers, labels of another class count and a model without a classifier failed
    pages deep inside tf_keras's traced training step; numpy integers were refused as cluster counts."""
    import tensorflow as tf

    from mobilenet_keras import MobileNetV1
    from mobilenet_keras.optimize import compress

    model = MobileNetV1(input_shape=(32, 32, 3), alpha=0.25, classes=3)
    images = np.zeros((8, 32, 32, 3), np.float32)
    one_hot = np.eye(3, dtype=np.float32)[np.arange(8) % 3]
    for data, words in (
            (tf.data.Dataset.from_tensor_slices((images, one_hot)), "unbatched? add .batch(32)"),
            (tf.data.Dataset.from_tensor_slices((images, np.arange(8) % 3)).batch(4), "class numbers? one-hot"),
            (tf.data.Dataset.from_tensor_slices((images, np.eye(5, dtype=np.float32)[np.arange(8) % 5])).batch(4),
             "one-hot labels [batch, 3]"),
            (tf.data.Dataset.from_tensor_slices(images).batch(4), "must give batches of (images"),
            # raw pixels were fine-tuned on as if in [-1, 1] (conv1_bn's moving mean went from 0.76 to 21)
            (tf.data.Dataset.from_tensor_slices((images.astype(np.uint8), one_hot)).batch(4),
             "gives uint8 images; the model takes floats in its input convention"),
            # finite and batched, but of a size tf.data can't tell: it was called neither
            (tf.data.Dataset.from_tensor_slices((images, one_hot)).batch(4).filter(lambda x, y: True),
             "assert_cardinality"),
            (tf.data.Dataset.from_tensor_slices((images, one_hot)).batch(4).repeat(), "repeats forever"),
            (tf.data.Dataset.from_tensor_slices((images, one_hot)).batch(4).take(0), "holds no batches"),
            ([(images, one_hot)], "got list")):
        with pytest.raises(ValueError, match=re.escape(words)):
            compress.prune(model, data, sparsity=0.5, verbose=0)
    backbone = MobileNetV1(input_shape=(32, 32, 3), alpha=0.25, include_top=False, pooling="avg")
    good = tf.data.Dataset.from_tensor_slices((images, one_hot)).batch(4)
    with pytest.raises(ValueError, match="fine-tunes a classifier"):
        compress.cluster(backbone, good, clusters=8, verbose=0)
    for value in ("0.5", None, True):
        with pytest.raises(ValueError, match="sparsity must be a number between 0 and 1"):
            compress.prune(model, good, sparsity=value, verbose=0)
    clustered = compress.cluster(model, good, clusters=np.int64(4), epochs=1, verbose=0)  # numpy ints are ints
    assert len(np.unique(clustered.get_layer("conv_pw_3").get_weights()[0])) <= 4


def test_a_logits_model_trains_on_a_loss_for_logits(monkeypatch):
    """`classifier_activation=None` gives logits; tf_keras's loss read them as probabilities (the red team saw a
    pruning run "converge" on a meaningless loss). Each fit traces its step once (the optimizer is built first)."""
    import tf_keras

    from mobilenet_keras import MobileNetV1
    from mobilenet_keras.optimize.qat import ends_in_softmax, fit_tf_keras
    from mobilenet_keras.optimize.tf_keras_twin import tf_keras_twin

    traces = []
    step = tf_keras.Model.train_step
    monkeypatch.setattr(tf_keras.Model, "train_step", lambda self, data: traces.append(1) or step(self, data))
    for activation, softmax in ((None, False), ("softmax", True)):
        traces.clear()
        twin = tf_keras_twin(MobileNetV1(input_shape=(32, 32, 3), alpha=0.25, classes=3,
                                         classifier_activation=activation))
        assert ends_in_softmax(twin) is softmax
        images = np.random.default_rng(0).uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32)
        labels = np.eye(3, dtype=np.float32)[[0, 1, 2, 0]]
        fit_tf_keras(twin, tf_keras_data(images, labels), None, 1, 1e-5, label_smoothing=0.0, verbose=0)
        assert len(traces) == 1
        assert twin.loss.get_config()["from_logits"] is not softmax
        expected = tf_keras.losses.CategoricalCrossentropy(from_logits=not softmax)(labels, twin(images)).numpy()
        assert abs(twin.evaluate(images, labels, verbose=0)[0] - expected) < 1e-4


def tf_keras_data(images, labels):
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)


def test_folded_twin_computes_the_same_function():
    from mobilenet_keras import MobileNetV1
    from mobilenet_keras.optimize.qat import folded_twin

    model = _with_statistics(MobileNetV1(input_shape=(64, 64, 3), alpha=0.25, classes=10,
                                         classifier_activation=None))
    folded = folded_twin(model)
    assert not any("_bn" in layer.name for layer in folded.layers)
    x = np.random.default_rng(3).uniform(-1, 1, (4, 64, 64, 3)).astype("float32")
    expected = model.predict(x, verbose=0)
    assert np.abs(folded.predict(x, verbose=0) - expected).max() < 1e-4 * np.abs(expected).max()


def test_importing_the_package_does_not_import_tfmot():
    code = ("import os, sys, mobilenet_keras, tflite, mobilenet_keras.optimize.qat, "
            "mobilenet_keras.optimize.tf_keras_twin; "
            "assert 'tensorflow_model_optimization' not in sys.modules, 'tfmot imported'; "
            "assert 'TF_USE_LEGACY_KERAS' not in os.environ; print('ok')")
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]


def test_convert_qat_refuses_a_plain_model(tmp_path):
    import tflite
    from mobilenet_keras import MobileNetV1

    model = MobileNetV1(input_shape=(32, 32, 3), alpha=0.25, classes=3)
    with pytest.raises(ValueError, match="quantization-aware"):
        tflite.convert(model, tmp_path / "x.tflite", "qat_uint8")
    assert not list(tmp_path.iterdir())


# --- On the real classifier (0.25 ImageNet backbone fine-tuned on a CIFAR-10 slice) ----------------


@pytest.fixture(scope="module")
def qat_run(tmp_path_factory):
    """The CIFAR classifier, its PTQ int8 file, and a short QAT with its int8 files."""
    import tensorflow as tf

    import tflite
    from mobilenet_keras import preprocess_input
    from mobilenet_keras.optimize import qat
    from mobilenet_keras.testing.cifar import SIZE, cifar_slice, classifier, converted

    model = classifier()
    folder = tmp_path_factory.mktemp("qat")
    train_images, train_labels, _ = cifar_slice(200, 0, SIZE)
    held_out, labels, _ = cifar_slice(50, 200, SIZE)
    calibration = cifar_slice(20, 400, SIZE)[0]
    train = tf.data.Dataset.from_tensor_slices(
        (preprocess_input(train_images), np.eye(10, dtype="float32")[train_labels])).shuffle(2000, seed=0).batch(32)
    ptq = converted("int8")
    tf.keras.utils.set_random_seed(0)
    qat_model = qat.quantize(model, calibration)
    qat.fine_tune(qat_model, train, epochs=qat.DEFAULT_EPOCHS, verbose=0)
    files = {mode: tflite.convert(qat_model, folder / f"{mode}.tflite", mode) for mode in ("qat", "qat_uint8")}
    return {"model": model, "qat_model": qat_model, "ptq": ptq, "files": files, "folder": folder,
            "held_out": preprocess_input(held_out), "labels": labels}


@pytest.mark.slow
def test_distillation_trains_on_the_float_models_answers_not_the_labels(qat_run):
    """With `teacher=`, fine_tune's targets are the float model's probabilities: given labels that are all
    wrong (every image labelled class 0), QAT with the teacher keeps the float model's answers, while QAT on
    those labels at the same rate learns the wrong class."""
    import tensorflow as tf

    from mobilenet_keras import preprocess_input
    from mobilenet_keras.optimize import qat
    from mobilenet_keras.testing.cifar import SIZE, cifar_slice

    model = qat_run["model"]
    images = cifar_slice(20, 0, SIZE)[0]
    calibration = cifar_slice(20, 400, SIZE)[0]
    wrong = np.zeros((len(images), 10), "float32")
    wrong[:, 0] = 1
    train = tf.data.Dataset.from_tensor_slices((preprocess_input(images), wrong)).batch(32)
    expected = model.predict(qat_run["held_out"], verbose=0).argmax(1)
    agreement = {}
    for name, teacher in (("labels", None), ("teacher", model)):
        tf.keras.utils.set_random_seed(0)
        qat_model = qat.quantize(model, calibration)
        # validated on one batch: only the history's names are read from it (the agreement is measured below)
        history = qat.fine_tune(qat_model, train, train.take(1), epochs=3, learning_rate=1e-4, verbose=0,
                                teacher=teacher)
        agreement[name] = float((qat_model.predict(qat_run["held_out"], verbose=0).argmax(1) == expected).mean())
        # on the teacher, training and validation both score agreement with it (not accuracy on the labels)
        names = ("agreement", "val_agreement") if teacher is not None else ("accuracy", "val_accuracy")
        assert set(names) <= set(history) and not {"accuracy", "agreement"} - set(names) & set(history), history
    assert agreement["labels"] < 0.5, agreement
    assert agreement["teacher"] >= 0.85, agreement
    with pytest.raises(ValueError, match="tf.data.Dataset"):
        qat.fine_tune(qat_model, (qat_run["held_out"], wrong[:1]), teacher=model)
    sparse = tf.data.Dataset.from_tensor_slices((preprocess_input(images), np.zeros(len(images), "int64"))).batch(32)
    with pytest.raises(ValueError, match="one-hot float labels of 10 classes"):
        qat.fine_tune(qat_model, sparse, teacher=model)
    import keras

    logits = keras.Model(model.inputs, model.get_layer("conv_preds").output)
    with pytest.raises(ValueError, match="ends in softmax"):
        qat.fine_tune(qat_model, train, teacher=logits)
    with pytest.raises(ValueError, match="leave label_smoothing out"):
        qat.fine_tune(qat_model, train, teacher=model, label_smoothing=0.1)


@pytest.mark.slow
def test_twin_of_the_real_classifier_is_exact(qat_run):
    from mobilenet_keras.optimize.tf_keras_twin import tf_keras_twin

    x = qat_run["held_out"][:64]
    twin = tf_keras_twin(qat_run["model"])
    assert np.abs(twin.predict(x, verbose=0) - qat_run["model"].predict(x, verbose=0)).max() < 1e-5


def _backbone_int8_kernels(path) -> list[np.ndarray]:
    """The int8 kernels of a file's convolutions in graph order, the classifier (the last) left out."""
    from tflite.flatbuffer import operator_names, read_model

    flat = read_model(path)
    graph = flat.subgraphs[0]
    kernels = [np.frombuffer(bytes(flat.buffers[graph.tensors[op.inputs[1]].buffer].data), np.int8)
               for op, name in zip(graph.operators, operator_names(flat)) if name in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    return kernels[:-1]


@pytest.mark.slow
def test_qat_starts_from_the_weights_of_the_fully_integer_file(qat_run, tmp_path):
    """Dead channels absorbed, ReLU6 outputs equalized, each kernel rounded by error on the int8 grid with
    bias correction: the kernels QAT starts from are the folded kernels of the model the converter's fully
    integer file quantizes, and before training the QAT file holds that file's integers."""
    import tflite
    from mobilenet_keras.folding import folded_weights
    from mobilenet_keras.optimize import qat
    from mobilenet_keras.testing.cifar import SIZE, cifar_slice
    from tflite.adaround import adaround
    from tflite.bias_correction import bias_corrected
    from tflite.equalization import prepare
    from tflite.representative import collect

    model, calibration = qat_run["model"], cifar_slice(20, 400, SIZE)[0]
    images = collect(calibration, tuple(model.input_shape[1:]), limit=qat.CALIBRATION_IMAGES)
    prepared, info = prepare(model, images)
    assert info.dead_count > 0 and info.equalized_count > 0
    expected = folded_weights(adaround(prepared, images))
    # tfmot's wrapper holds the inner layer's kernel ("conv1/kernel:0") beside its quantizer variables
    untrained = qat.quantize(model, calibration)
    started = {layer.layer.name: [w.numpy() for w in layer.weights if w.name.startswith(f"{layer.layer.name}/")]
               for layer in untrained.layers if hasattr(layer, "layer")}
    for name, (kernel, bias) in expected.items():
        (got_kernel,) = [w for w in started[name] if w.shape == kernel.shape]
        (got_bias,) = [w for w in started[name] if w.shape == bias.shape]
        assert np.allclose(got_kernel, kernel, atol=1e-6) and np.allclose(got_bias, bias, atol=1e-5), name
    nearest = folded_weights(bias_corrected(prepared, images))
    assert any(not np.allclose(nearest[name][0], kernel, atol=1e-6) for name, (kernel, _) in expected.items())

    file_before_training = tflite.convert(untrained, tmp_path / "qat0.tflite", "qat")
    ptq = _backbone_int8_kernels(qat_run["ptq"])  # the default int8 file: fully integer, every step
    got = _backbone_int8_kernels(file_before_training)
    assert len(got) == len(ptq) == 27
    steps = np.concatenate([np.abs(a.astype(np.int32) - b) for a, b in zip(got, ptq)])
    # Measured: 1 weight of 207,600 one step apart (conv_pw_13). Starting from nearest rounding instead
    # (rounding=False), 27,652 differ by up to 2 steps; with the former 1e-3 range floor, a whole channel
    # of conv1 differed by up to 21 steps.
    assert steps.max() <= 1 and np.mean(steps > 0) <= 1e-4, (steps.max(), int(np.sum(steps > 0)))


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["qat", "qat_uint8"])
def test_qat_file_agrees_with_the_qat_keras_model(qat_run, mode):
    import tflite

    from tflite.flatbuffer import float_tensors_inside, read_model

    report = tflite.verify(qat_run["qat_model"], qat_run["files"][mode], qat_run["held_out"],
                           labels=qat_run["labels"], latency_runs=0)
    assert tflite.TFLiteModel(qat_run["files"][mode]).input_dtype == (np.uint8 if mode == "qat_uint8" else np.int8)
    assert float_tensors_inside(read_model(qat_run["files"][mode])) == [] and report.float_ops == 0
    # Gate: the file computes what QAT trained (a wrong fold, range or input scale gives < 80%).
    # Measured >= 97% (the int8 threshold); the floor leaves 2 points for another machine's arithmetic.
    assert report.top1_agreement >= 0.95 and report.sqnr_db >= 15, report.to_markdown()


@pytest.mark.slow
def test_qat_input_quantizer_holds_the_files_integers_for_every_pixel_value(qat_run):
    """Pixels 0..255 in MobileNet's [-1, 1] fall half-way between int8 steps: after training, the QAT
    model's input FakeQuant and the file's input quantization must still pick the same step for each of
    them, a step of its own (a range whose zero point is a .5 gave every white pixel one step more in
    training than in the file; tfmot's own input quantizer widens its range during training)."""
    import tflite
    from mobilenet_keras import preprocess_input

    pixels = preprocess_input(np.arange(256, dtype="float32").reshape(1, 16, 16, 1))
    quantize_layer = next(layer for layer in qat_run["qat_model"].layers if hasattr(layer, "quantizer_vars"))
    trained = quantize_layer(pixels, training=False).numpy().ravel()
    file = tflite.TFLiteModel(qat_run["files"]["qat"])
    scale, zero_point = file.input_quantization
    assert abs(scale - 2 / 255) < 1e-7 and zero_point == -1, file.input_quantization
    integers = file.quantize_input(pixels).astype("int32").ravel()
    np.testing.assert_array_equal(integers, np.arange(256) - 128)  # every pixel value a step of its own
    np.testing.assert_allclose(trained, (integers - zero_point) * scale, atol=scale * 1e-3)


def _relu_tensors(interpreter) -> dict:
    """Keras layer name (`conv_pw_3_relu`) -> details of the int8 activation tensor a QAT file holds for it."""
    found = {}
    for detail in interpreter.get_tensor_details():
        first = detail["name"].split(";")[0].split("/")
        is_relu = len(first) > 1 and first[1].startswith("quant_") and first[1].endswith("_relu")
        if is_relu and len(detail["shape"]) == 4:
            found[first[1][len("quant_"):]] = detail
    return found


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*experimental_preserve_all_tensors")  # the point of this test
def test_each_layer_of_the_qat_file_computes_what_the_qat_model_computes(qat_run):
    """Layer by layer, from the file's own input to that layer: the QAT model's convolution, ReLU6 and
    output quantizer give the file's int8 values, up to one step where float and integer arithmetic
    round a tie differently. A wrong weight grid, bias or range is several steps off everywhere."""
    from ai_edge_litert.interpreter import Interpreter

    import tflite
    from mobilenet_keras import specs

    qat_model = qat_run["qat_model"]
    interpreter = Interpreter(model_path=str(qat_run["files"]["qat"]), experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    tensors = _relu_tensors(interpreter)
    names = specs.convolution_names()
    assert set(f"{name}_relu" for name in names) <= set(tensors)
    layer_names = {layer.name for layer in qat_model.layers}
    source = interpreter.get_input_details()[0]
    scale, zero_point = source["quantization"]
    file = tflite.TFLiteModel(qat_run["files"]["qat"])  # its input quantization, as verify feeds the file
    equal = {name: [] for name in names}
    for image in qat_run["held_out"][:4]:
        quantized = file.quantize_input(image[None])
        interpreter.set_tensor(source["index"], quantized)
        interpreter.invoke()
        previous = (quantized.astype("float32") - zero_point) * scale
        for name in names:
            x = previous
            pad = f"quant_{name.replace('_dw_', '_pad_')}"
            if name.startswith("conv_dw_") and pad in layer_names:
                x = qat_model.get_layer(pad)(x, training=False)
            x = qat_model.get_layer(f"quant_{name}")(x, training=False)
            expected = qat_model.get_layer(f"quant_{name}_relu")(x, training=False).numpy()
            detail = tensors[f"{name}_relu"]
            step, point = detail["quantization"]
            previous = (interpreter.get_tensor(detail["index"]).astype("float32") - point) * step
            steps = np.abs(previous - expected) / step
            assert steps.max() <= 1.0 + 1e-3, (name, float(steps.max()))
            equal[name].append(float(np.mean(steps < 0.5)))
    # measured 99.6-99.95% per layer on this classifier
    assert all(np.mean(fractions) >= 0.99 for fractions in equal.values()), equal


@pytest.mark.slow
def test_qat_file_is_not_less_accurate_than_ptq(qat_run):
    import tflite

    qat_report = tflite.verify(qat_run["model"], qat_run["files"]["qat"], qat_run["held_out"],
                               labels=qat_run["labels"], latency_runs=0)
    ptq_report = tflite.verify(qat_run["model"], qat_run["ptq"], qat_run["held_out"],
                               labels=qat_run["labels"], latency_runs=0)
    assert qat_report.tflite_accuracy >= ptq_report.tflite_accuracy - 0.01, (qat_report.to_markdown(),
                                                                             ptq_report.to_markdown())


@pytest.mark.slow
def test_qat_weights_save_and_reload(qat_run):
    from mobilenet_keras.optimize import qat

    path = qat.save_weights(qat_run["qat_model"], qat_run["folder"] / "qat.weights.h5")
    reloaded = qat.load(qat_run["model"], path)
    x = qat_run["held_out"][:32]
    assert np.array_equal(reloaded.predict(x, verbose=0), qat_run["qat_model"].predict(x, verbose=0))
    with pytest.raises(ValueError, match="does not exist"):
        qat.load(qat_run["model"], qat_run["folder"] / "missing.weights.h5")


@pytest.mark.slow
def test_float_weights_come_back_into_keras_3(qat_run):
    import keras

    from mobilenet_keras.optimize import qat

    model, x = qat_run["model"], qat_run["held_out"][:64]
    # Before training, the float weights that come back compute the original model.
    untrained = qat.float_model(qat.quantize(model), model)
    assert np.abs(untrained.predict(x, verbose=0) - model.predict(x, verbose=0)).max() < 1e-4
    back = qat.float_model(qat_run["qat_model"], model)
    assert isinstance(back, keras.Model)
    changed = np.abs(back.get_layer("conv_pw_7").get_weights()[0]
                     - qat_run["model"].get_layer("conv_pw_7").get_weights()[0]).max()
    assert changed > 0  # the QAT fine-tune's weights, not the original ones


@pytest.mark.slow
def test_keras_3_still_works_after_qat_in_the_same_process(qat_run, tmp_path):
    import keras

    import tflite
    from mobilenet_keras import MobileNetV1

    assert "tensorflow_model_optimization" in sys.modules
    assert os.environ.get("TF_USE_LEGACY_KERAS") in (None, "0", "false")
    model = MobileNetV1(input_shape=(32, 32, 3), alpha=0.25, classes=3)
    assert isinstance(model, keras.Model) and keras.__version__.startswith("3.")
    x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    path = tflite.convert(model, tmp_path / "after_qat.tflite", "float32")
    assert np.abs(tflite.TFLiteModel(path).predict(x) - model.predict(x, verbose=0)).max() < 1e-5


# --- Pruning and clustering through the same twin ---------------------------------------------------


@pytest.fixture(scope="module")
def compressed(qat_run):
    import tensorflow as tf

    import tflite
    from mobilenet_keras import preprocess_input
    from mobilenet_keras.optimize import compress
    from mobilenet_keras.testing.cifar import SIZE, cifar_slice

    images, labels, _ = cifar_slice(100, 0, SIZE)
    train = tf.data.Dataset.from_tensor_slices(
        (preprocess_input(images), np.eye(10, dtype="float32")[labels])).shuffle(1000, seed=0).batch(32)
    calibration = cifar_slice(20, 400, SIZE)[0]
    tf.keras.utils.set_random_seed(0)
    models = {"plain": qat_run["model"],
              "pruned": compress.prune(qat_run["model"], train, sparsity=0.5, epochs=2, verbose=0),
              "clustered": compress.cluster(qat_run["model"], train, clusters=16, epochs=2, verbose=0)}
    # One plain conversion each (bias correction only: equalization and rounding by error would split the
    # clusters): compression is what is measured.
    files = {name: tflite.convert(model, qat_run["folder"] / f"{name}_int8.tflite", "int8",
                                  representative_data=calibration, equalization=False, adaround=False)
             for name, model in models.items()}
    return models, files


@pytest.mark.slow
def test_pruning_zeroes_the_asked_fraction(compressed):
    from mobilenet_keras.optimize import compress

    assert 0.45 <= compress.sparsity(compressed[0]["pruned"]) <= 0.55


@pytest.mark.slow
def test_clustering_leaves_few_distinct_values(compressed):
    kernel = compressed[0]["clustered"].get_layer("conv_pw_9").get_weights()[0]
    assert len(np.unique(kernel)) <= 16


HELD_AFTER_COMPRESSION = {"pruned": 0.91, "clustered": 0.88}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pruned", "clustered"])
def test_compressed_files_are_smaller_after_gzip_and_pass_verify(qat_run, compressed, name):
    import tflite
    from mobilenet_keras.optimize import compress

    models, files = compressed
    assert compress.gzip_size(files[name]) < compress.gzip_size(files["plain"])  # the same conversion, uncompressed
    report = tflite.verify(models[name], files[name], qat_run["held_out"], labels=qat_run["labels"], latency_runs=0)
    assert report.accuracy_drop <= 0.02 and report.sqnr_db >= 15, report.to_markdown()
    # Measured: pruned 93.4-96.6%, clustered 90.0-92.0% agreement on two machines (fully integer files,
    # 2 epochs of pruning / clustering); the floors sit 2 points under. The 97% int8 threshold is missed:
    # benchmarks/RESULTS.md ("QAT, pruning and clustering") holds the figures.
    assert report.top1_agreement >= HELD_AFTER_COMPRESSION[name], report.to_markdown()


def test_compression_arguments_are_checked():
    from mobilenet_keras.optimize import compress

    with pytest.raises(ValueError, match="sparsity"):
        compress.prune(None, None, sparsity=1.5)
    with pytest.raises(ValueError, match="clusters"):
        compress.cluster(None, None, clusters=1)


def test_the_checks_leave_fit_what_they_cannot_tell_and_accept_what_fit_takes():
    """Data whose shapes tf.data can't tell (a py_function), sample weights and integer one-hot labels are what
    tf_keras's fit takes: not refused. A model computing in bfloat16 has a twin (its outputs differ by
    bfloat16's rounding, not by a missing layer); a sigmoid output is named, not trained as logits."""
    import keras
    import tensorflow as tf

    from mobilenet_keras import MobileNetV1
    from mobilenet_keras.optimize.batches import check_batches
    from mobilenet_keras.optimize.qat import ends_in_softmax, folded_twin
    from mobilenet_keras.optimize.tf_keras_twin import tf_keras_twin

    images = np.zeros((8, 32, 32, 3), np.float32)
    labels = np.eye(3, dtype=np.int32)[np.arange(8) % 3]
    unknown = tf.data.Dataset.from_tensors(0).map(
        lambda _: tf.py_function(lambda: (images, labels.astype(np.float32)), [], (tf.float32, tf.float32)))
    assert unknown.element_spec[0].shape.rank is None
    for data in (unknown, tf.data.Dataset.from_tensor_slices((images, labels, np.ones(8))).batch(4)):
        check_batches(data, (32, 32, 3), 3, "prune")
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        mixed = MobileNetV1(input_shape=(32, 32, 3), alpha=0.25, classes=3)
    finally:
        keras.config.set_dtype_policy(policy)
    assert tf_keras_twin(mixed) is not None
    with pytest.raises(ValueError, match="ends in sigmoid"):
        ends_in_softmax(MobileNetV1(input_shape=(32, 32, 3), alpha=0.25, classes=3, classifier_activation="sigmoid"))
    inputs = keras.Input((32, 32, 3))  # QAT's folded twin is checked too
    scaled = keras.layers.Rescaling(1 / 127.5, offset=-1, name="rescale")(inputs)
    with pytest.raises(ValueError, match=r"rescale \(Rescaling\)"):
        folded_twin(MobileNetV1(input_tensor=scaled, alpha=0.25, classes=3))
