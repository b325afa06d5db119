"""The integer path's model transforms (dead channels, equalization, grid rounding) on the real CIFAR
classifier: float outputs unchanged, the rounding's integers are the file's integers, and a
fully integer file holds no float tensor inside."""

from __future__ import annotations

import numpy as np
import pytest

import tflite
from mobilenet_keras import preprocess_input
from mobilenet_keras.folding import folded_weights
from mobilenet_keras.testing.cifar import SIZE, cifar_slice, classifier
from tflite.flatbuffer import float_tensors_inside, op_counts, operator_names, read_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model():
    return classifier()


@pytest.fixture(scope="module")
def calibration():
    return preprocess_input(cifar_slice(20, 400, SIZE)[0])


@pytest.fixture(scope="module")
def prepared(model, calibration):
    """(the classifier with dead channels absorbed and equalized, what `prepare` changed)."""
    from tflite.equalization import prepare

    return prepare(model, calibration)


@pytest.fixture(scope="module")
def rounded(prepared, calibration):
    """The prepared classifier with its kernels rounded by error for an int8 file."""
    from tflite.adaround import adaround

    return adaround(prepared[0], calibration)


def test_dead_channels_and_equalization_keep_the_float_outputs(model, calibration, prepared):
    prepared, info = prepared
    assert info.dead_count >= 10 and info.absorbed  # ImageNet's dead channels, some with a constant != 0
    assert info.equalized_count > 0
    before = model.predict(calibration, verbose=0)
    after = prepared.predict(calibration, verbose=0)
    assert np.abs(after - before).max() <= 1e-4
    # dead channels are gone from the folded kernels (nothing left to widen a weight scale)
    folded = folded_weights(prepared)
    for name, channels in info.dead.items():
        kernel = folded[name][0]
        kernel = kernel.reshape(kernel.shape[0] * kernel.shape[1], -1) if name.startswith("conv_dw_") \
            else kernel.reshape(-1, kernel.shape[-1])  # (taps, output channels in TFLite's order)
        assert np.all(kernel[:, channels] == 0), name


def _file_kernels(path) -> list[np.ndarray | None]:
    """The int8 kernels of a file's convolutions, in Keras's layout: (kh, kw, out) depthwise, (kh, kw, in, out);
    None for a kernel kept in float."""
    from tflite.flatbuffer import _type_names

    flat = read_model(path)
    graph = flat.subgraphs[0]
    kernels = []
    for op, name in zip(graph.operators, operator_names(flat)):
        if name not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            continue
        tensor = graph.tensors[op.inputs[1]]
        if _type_names()[tensor.type] != "INT8":
            kernels.append(None)
            continue
        values = np.frombuffer(bytes(flat.buffers[tensor.buffer].data), np.int8).reshape(tensor.shape)
        # (1, kh, kw, out) depthwise; (out, kh, kw, in) otherwise
        kernels.append(values[0] if name == "DEPTHWISE_CONV_2D" else values.transpose(1, 2, 3, 0))
    return kernels


def _grid_integers(rounded) -> dict[str, np.ndarray]:
    """Each folded kernel of a model on TFLite's grid, as the integers of that grid."""
    from tflite.adaround import grid_scale

    integers = {}
    for name, (kernel, _) in folded_weights(rounded).items():
        kernel = kernel.astype(np.float64)
        if name.startswith("conv_dw_"):
            kernel = kernel.reshape(kernel.shape[0], kernel.shape[1], -1)  # (kh, kw, out)
        integers[name] = np.round(kernel / grid_scale(kernel)).astype(np.int8)
    return integers


def test_rounded_kernels_are_the_files_integers(rounded, calibration, tmp_path):
    path = tflite.convert(rounded, tmp_path / "r.tflite", "int8", representative_data=calibration,
                          denylist=None, equalization=False, adaround=False, bias_correction=False)
    expected = _grid_integers(rounded)
    kernels = _file_kernels(path)
    assert len(kernels) == len(expected) + 1  # the backbone's, then the classifier's (conv_preds)
    for name, in_file in zip(expected, kernels):
        np.testing.assert_array_equal(in_file, expected[name], err_msg=name)


def test_the_int16x8_file_holds_the_rounding_chosen_for_16_bit_activations(model, calibration, prepared, rounded,
                                                                          tmp_path):
    """An int16x8 file gets every integer step too, with each kernel rounded for the int16 inputs it will
    read (not int8 ones): its int8 kernels are exactly those integers."""
    from tflite.adaround import adaround

    for_16 = _grid_integers(adaround(prepared[0], calibration, activation_bits=16))
    for_8 = _grid_integers(rounded)
    assert any(np.any(for_16[n] != for_8[n]) for n in for_16)  # the two roundings differ: the test can tell them apart
    path = tflite.convert(model, tmp_path / "i16.tflite", "int16x8", representative_data=calibration)
    kernels = _file_kernels(path)
    assert len(kernels) == len(for_16) + 1
    for name, in_file in zip(for_16, kernels):
        np.testing.assert_array_equal(in_file, for_16[name], err_msg=name)
    assert float_tensors_inside(read_model(path)) == [] and op_counts(read_model(path))["float"] == 0


def test_int16x8_takes_its_input_range_from_calibration_and_has_no_float_prefix(model, calibration, tmp_path):
    """An int16x8 file quantizes its float input over the calibration images' range, so images outside
    [-1, 1] are no reason for the int8 files' clipping warning; and "auto" (a float prefix, an integer
    mode's option) leaves the int16x8 file as the default makes it, every step included."""
    import warnings

    wide = np.clip(calibration[:40] * 1.2, -1.2, 1.2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        default = tflite.convert(model, tmp_path / "d.tflite", "int16x8", representative_data=wide)
    assert not [w for w in caught if "input range" in str(w.message)], [str(w.message) for w in caught]
    auto = tflite.convert(model, tmp_path / "a.tflite", "int16x8", representative_data=wide, denylist="auto")
    assert auto.read_bytes() == default.read_bytes()


def test_the_dynamic_file_holds_the_rounding_chosen_for_float_activations(model, calibration, tmp_path):
    """With calibration images, a dynamic-range file's int8 kernels are rounded by error for the float
    activations between its hybrid kernels; the kernels the converter keeps in float (under 1,024
    weights) are left as they are."""
    from tflite.adaround import adaround
    from tflite.converter import DYNAMIC_MIN_ELEMENTS

    small = [n for n, (kernel, _) in folded_weights(model).items() if kernel.size < DYNAMIC_MIN_ELEMENTS]
    assert 0 < len(small) < 27
    chosen = _grid_integers(adaround(model, calibration, activation_bits=None, skip=small))
    path = tflite.convert(model, tmp_path / "d.tflite", "dynamic", representative_data=calibration)
    kernels = _file_kernels(path)[:len(chosen)]
    nearest = tflite.convert(model, tmp_path / "n.tflite", "dynamic", representative_data=calibration,
                             adaround=False)
    folded = folded_weights(model)
    differs = 0
    for (name, expected), in_file, plain in zip(chosen.items(), kernels, _file_kernels(nearest)):
        if name in small:
            assert in_file is None, name
            continue
        # ImageNet's dead channels (not absorbed here: no equalization in a dynamic-range file) fold to
        # weights ~1e-13, which the converter quantizes to 0 whatever their rounding
        magnitude = np.abs(folded[name][0]).reshape(-1, expected.shape[-1]).max(axis=0)
        live = magnitude > 1e-6 * magnitude.max()
        np.testing.assert_array_equal(in_file[..., live], expected[..., live], err_msg=name)
        assert np.all(in_file[..., ~live] == 0), name
        differs += int(np.any(plain != in_file))
    assert differs > 0  # rounding to nearest gives other integers: the test can tell them apart


def test_rounding_keeps_each_layer_output_on_the_inputs_the_file_gives_it(prepared, calibration, tmp_path):
    """adaround rounds each convolution on the input the int8 file gives it (earlier layers rounded, ReLU6
    outputs on the int8 grid of their calibrated range) against the float layer on float inputs: the error
    it reports for a depthwise and a pointwise layer is that output's measured error, and bias correction
    leaves no mean error, upstream error included."""
    import keras

    from mobilenet_keras import specs
    from tflite.adaround import DEFAULT_IMAGES, adaround

    prepared = prepared[0]
    info = {}
    rounded = adaround(prepared, calibration, info=info)
    assert list(info) == specs.convolution_names()

    def output(of, layer, images):
        return np.asarray(keras.Model(of.inputs, of.get_layer(layer).output).predict(images, verbose=0), np.float64)

    # the file's own grid for conv1's output is the one adaround assumed (the float model's calibrated maximum)
    path = tflite.convert(rounded, tmp_path / "r.tflite", "int8", representative_data=calibration,
                          equalization=False, adaround=False, bias_correction=False)
    graph = read_model(path).subgraphs[0]
    conv1_out = next(graph.tensors[op.outputs[0]] for op, name in zip(graph.operators, operator_names(read_model(path)))
                     if name == "CONV_2D")
    steps = {n: output(prepared, f"{n}_relu", calibration).max() / 255 for n in ("conv1", "conv_dw_1")}
    assert conv1_out.quantization.scale[0] == pytest.approx(steps["conv1"], rel=0.02)

    images = calibration[:DEFAULT_IMAGES]
    reached = output(rounded, "conv1_relu", images)
    for n, producer in (("conv_dw_1", "conv1"), ("conv_pw_1", "conv_dw_1")):
        reached = np.clip(np.round(reached / steps[producer]), 0, 255) * steps[producer]  # the file's int8 input
        got = np.asarray(rounded.get_layer(f"{n}_bn")(rounded.get_layer(n)(reached.astype("float32")),
                                                      training=False), np.float64)
        expected = output(prepared, f"{n}_bn", images)
        error = (got - expected).reshape(-1, expected.shape[-1])
        assert np.abs(error.mean(axis=0)).max() <= 1e-4 * np.abs(expected).max(), n
        measured = ((error - error.mean(axis=0)) ** 2).mean(axis=0).sum()
        assert measured == pytest.approx(info[n][1], rel=1e-3), n
        reached = np.asarray(rounded.get_layer(f"{n}_relu")(got.astype("float32")), np.float64)


def test_a_backbone_with_layers_of_its_own_falls_back_to_bias_correction(tmp_path):
    """Rounding by error walks MobileNetV1's backbone layer by layer; a model with a layer of its own
    inserted there is converted with nearest rounding and bias correction, with a warning."""
    import keras

    from mobilenet_keras import MobileNetV1

    keras.utils.set_random_seed(0)
    plain = MobileNetV1(input_shape=(96, 96, 3), alpha=0.25, classes=10, weights=None)
    x = inputs = keras.Input((96, 96, 3))
    for layer in plain.layers[1:]:
        x = layer.__class__.from_config(layer.get_config())(x)
        if layer.name == "conv_pw_1_relu":
            x = keras.layers.Identity(name="extra")(x)
    odd = keras.Model(inputs, x)
    for layer in plain.layers[1:]:
        odd.get_layer(layer.name).set_weights(layer.get_weights())
    images = np.random.default_rng(0).uniform(-1, 1, (16, 96, 96, 3)).astype("float32")
    with pytest.warns(UserWarning, match="rounding by error skipped .conv_pad_2 does not read conv_pw_1_relu"):
        path = tflite.convert(odd, tmp_path / "odd.tflite", "int8", representative_data=images)
    nearest = tflite.convert(odd, tmp_path / "nearest.tflite", "int8", representative_data=images, adaround=False)
    assert path.read_bytes() == nearest.read_bytes()


@pytest.mark.parametrize("mode", ["int8", "uint8", "int8_float_io"])
def test_default_integer_files_hold_no_float_tensor(model, calibration, tmp_path, mode):
    path = tflite.convert(model, tmp_path / f"{mode}.tflite", mode, representative_data=calibration)
    flat = read_model(path)
    assert float_tensors_inside(flat) == []
    assert op_counts(flat) == {"float": 0, "int16": 0}


def test_auto_keeps_the_fully_integer_file_of_every_step_when_it_reaches_the_target(model, calibration, tmp_path):
    # This briefly trained classifier's fully integer file agrees on 90.5% of its calibration images: an 85%
    # target keeps it; 99% (the default) goes on to the float-prefix search (the files of test_tflite_convert).
    auto = tflite.convert(model, tmp_path / "auto.tflite", "int8", representative_data=calibration,
                          denylist="auto", target_agreement=0.85)
    assert op_counts(read_model(auto)) == {"float": 0, "int16": 0}
    default = tflite.convert(model, tmp_path / "default.tflite", "int8", representative_data=calibration)
    explicit = tflite.convert(model, tmp_path / "explicit.tflite", "int8", representative_data=calibration,
                              denylist=None, equalization=True, adaround=True)
    # the default file is that same fully integer file of every step
    assert auto.read_bytes() == explicit.read_bytes() == default.read_bytes()


def test_op_counts_see_the_float_layers_of_a_denylist(model, calibration, tmp_path):
    path = tflite.convert(model, tmp_path / "d.tflite", "int8", representative_data=calibration[:40],
                          denylist=["conv1"], adaround=False)
    counts = op_counts(read_model(path))
    assert counts["float"] >= 2 and counts["int16"] == 0  # the float conv1 and the QUANTIZE after it
    images = calibration[:40]
    report = tflite.verify(model, path, images, latency_runs=0, min_samples=10, allow_float_ops=True)
    assert report.float_ops == counts["float"] and "float / int16 ops" in report.to_markdown()
    assert report.to_dict()["float_ops"] == counts["float"]
    assert not any("float op" in failure for failure in report.failures)
    strict = tflite.verify(model, path, images, latency_runs=0, min_samples=10)  # the default: not allowed
    assert any("float op" in failure for failure in strict.failures)


def test_a_default_file_litert_cannot_run_is_made_again_without_the_extra_steps(tmp_path, monkeypatch):
    """A random-weight MobileNet's late activations are ~1e-9: equalizing them by 6/1e-9 gave a file that
    XNNPACK refuses to prepare. Such channels are left unscaled now; with that guard off (a real refusal),
    the converter warns and makes the file without the steps it had by default, which runs."""
    import warnings

    import keras

    import tflite.equalization as equalization
    from mobilenet_keras import MobileNetV1

    keras.utils.set_random_seed(0)
    model = MobileNetV1(input_shape=(96, 96, 3), alpha=0.25, classes=10, weights=None)
    images = np.random.default_rng(0).uniform(-1, 1, (32, 96, 96, 3)).astype("float32")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no fallback needed with the guard on
        warnings.filterwarnings("ignore", message="calibrating on 32 distinct")  # few on purpose (speed)
        guarded = tflite.convert(model, tmp_path / "guarded.tflite", "int8", representative_data=images)
    tflite.TFLiteModel(guarded).predict(images[:2])

    monkeypatch.setattr(equalization, "MIN_EQUALIZED_MAXIMUM", 1e-30)  # as before the guard: any maximum > 0
    unguarded = tflite.convert(model, tmp_path / "unguarded.tflite", "int8", representative_data=images,
                               denylist=None, equalization=True, adaround=False)
    with pytest.raises(ValueError, match="could not be loaded"):
        tflite.TFLiteModel(unguarded).predict(images[:2])  # the refusal is real
    with pytest.warns(UserWarning, match="made with equalization and rounding by error; making it without"):
        fallback = tflite.convert(model, tmp_path / "fallback.tflite", "int8", representative_data=images)
    plain = tflite.convert(model, tmp_path / "plain.tflite", "int8", representative_data=images,
                           equalization=False, adaround=False)
    assert fallback.read_bytes() == plain.read_bytes()
    tflite.TFLiteModel(fallback).predict(images[:2])
