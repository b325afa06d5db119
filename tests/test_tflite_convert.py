"""Every conversion mode on a real classifier (the 0.25 ImageNet backbone with a CIFAR-10 head),
each file checked against the float model; mutations that must fail; bad input."""

from __future__ import annotations

import numpy as np
import pytest

import tflite
from mobilenet_keras import preprocess_input
from tflite import TFLiteModel, verify
from tflite.flatbuffer import float_layers, float_tensors_inside, operator_names, read_model
from mobilenet_keras.testing.cifar import SIZE, cifar_slice, classifier, converted

pytestmark = pytest.mark.slow

ALL_MODES = ("float32", "dynamic", "float16", "int8", "uint8", "int8_float_io", "int16x8")


@pytest.fixture(scope="module")
def model():
    return classifier()


@pytest.fixture(scope="module")
def calibration():
    return cifar_slice(20, 400, SIZE)[0]  # raw uint8 pixels: the converter scales them


@pytest.fixture(scope="module")
def held_out():
    images, labels, _ = cifar_slice(50, 200, SIZE)
    return preprocess_input(images), labels


@pytest.fixture(scope="module")
def files(model):
    return {mode: converted(mode) for mode in ALL_MODES}


@pytest.fixture(scope="module")
def reports(model, files, held_out):
    images, labels = held_out
    return {mode: verify(model, path, images, labels=labels, latency_runs=5) for mode, path in files.items()}


INTEGER_MODES = ("int8", "uint8", "int8_float_io")


@pytest.fixture(scope="module")
def prefix_files(model):
    """The opt-in float prefix (`denylist="auto"`) of each integer mode."""
    return {mode: converted(mode, denylist="auto") for mode in INTEGER_MODES}


@pytest.fixture(scope="module")
def prefix_reports(model, prefix_files, held_out):
    images, labels = held_out
    return {mode: verify(model, path, images, labels=labels, latency_runs=0, allow_float_ops=True)
            for mode, path in prefix_files.items()}


def test_float32_passes_the_documented_thresholds(reports):
    report = reports["float32"]
    assert report.samples == 500
    assert report.passed, report.failures
    assert report.top1_agreement >= 0.99 and report.sqnr_db > 60


# What the converter holds on this briefly trained classifier (500 held-out images). float16 passes
# its documented thresholds. The other modes are checked against floors 2 points under the lowest
# agreement measured on two machines (Intel with AVX-512 and AMD without: with the float prefix, int8
# 94.8-96.4%, uint8 96.0%, int8_float_io 96.4-97%+); a wrong fold, range or input scale gives under 80%.
# int16x8 and dynamic round their kernels by error, for 16-bit and for float activations: 98.0% / 28.0 dB
# and 97.4% / 26.5 dB (Intel Xeon with AVX-512, 2026-12-04; with nearest rounding and bias correction
# before, 94.8-95.2% and 94.8-96.2%, about 21 and 24 dB); floors about 3 standard errors under them.
# The documented 99% / 97% are targets these files miss by a few images: benchmarks/RESULTS.md
# ("int8 quality") holds those figures, and the verdict reports them as FAIL.
HELD_AGREEMENT = {"dynamic": 0.95, "int16x8": 0.96}
HELD_SQNR_DB = {"dynamic": 23, "int16x8": 25}
PREFIX_AGREEMENT = {"int8": 0.92, "uint8": 0.94, "int8_float_io": 0.94}
# The default integer files are fully integer (every step: dead channels, equalization, rounding by error,
# bias correction). On this classifier they agreed on 93.0% (int8, uint8) and 93.4% (int8_float_io),
# with SQNR 19.4-19.5 dB and 0.6-1.0 points of accuracy lost (Intel Xeon with AVX-512, 2026-11-29; 91.2%
# and 15.4 dB before the rounding took the file's int8 inputs into account); the floors leave about 3
# standard errors of 500 images (4 points). The 97% threshold is missed and the verdict says FAIL; the
# float prefix (below) agrees on 96-97%.
FULLY_INTEGER_AGREEMENT = {"int8": 0.89, "uint8": 0.89, "int8_float_io": 0.89}
FULLY_INTEGER_SQNR_DB = 16


def _check_agreement(report, floor):
    assert report.top1_agreement >= floor, report.to_markdown()
    # the verdict follows the documented thresholds, whatever the figure
    missed = report.top1_agreement < report.thresholds.min_top1_agreement
    assert missed == any(failure.startswith("top-1 agreement") for failure in report.failures)
    assert report.passed == (not report.failures)


def test_float16_passes_the_documented_thresholds(reports):
    assert reports["float16"].passed, reports["float16"].to_markdown()


@pytest.mark.parametrize("mode", sorted(HELD_AGREEMENT))
def test_agreement_on_the_cifar_classifier(reports, mode):
    _check_agreement(reports[mode], HELD_AGREEMENT[mode])
    assert reports[mode].sqnr_db >= HELD_SQNR_DB[mode], reports[mode].to_markdown()


@pytest.mark.parametrize("mode", INTEGER_MODES)
def test_fully_integer_agreement_on_the_cifar_classifier(reports, files, mode):
    report = reports[mode]
    assert report.float_ops == 0 and report.int16_ops == 0 and float_tensors_inside(read_model(files[mode])) == []
    _check_agreement(report, FULLY_INTEGER_AGREEMENT[mode])
    assert report.accuracy_drop <= 0.03 and report.sqnr_db >= FULLY_INTEGER_SQNR_DB, report.to_markdown()


@pytest.mark.parametrize("mode", INTEGER_MODES)
def test_float_prefix_agreement_on_the_cifar_classifier(prefix_reports, reports, mode):
    report = prefix_reports[mode]
    assert report.float_ops > 0, "this classifier's auto file keeps a float prefix"
    _check_agreement(report, PREFIX_AGREEMENT[mode])
    assert report.accuracy_drop <= 0.02, report.to_markdown()
    assert report.top5_overlap >= 0.97 and report.sqnr_db >= 15
    # what the float layers buy on this classifier: a higher SQNR than the fully integer file's
    assert report.sqnr_db > reports[mode].sqnr_db


def test_verify_fails_float_ops_in_an_integer_file_unless_allowed(model, prefix_files, held_out):
    images, labels = held_out
    strict = verify(model, prefix_files["int8"], images[:200], labels=labels[:200], latency_runs=0)
    assert not strict.passed and any("float op(s) inside an integer file" in f for f in strict.failures)
    allowed = verify(model, prefix_files["int8"], images[:200], labels=labels[:200], latency_runs=0,
                     allow_float_ops=True)
    assert not any("float op" in f for f in allowed.failures)


def test_a_second_integer_file_of_the_same_model_skips_the_prefixes_known_to_miss(tmp_path, monkeypatch):
    import keras

    import tflite.converter as converter
    from mobilenet_keras import MobileNetV1

    keras.utils.set_random_seed(0)
    small = MobileNetV1(input_shape=(32, 32, 3), alpha=0.25, classes=10, weights=None)
    images = np.random.default_rng(0).integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    monkeypatch.setattr(converter, "_PREFIX_FOUND", {})
    monkeypatch.setattr(converter, "_FULLY_INTEGER_WON", {})
    monkeypatch.setattr(converter, "_PREFIX_STEPS", (0, 1))  # a shorter search: the same logic, fewer files
    conversions = []
    original = converter._convert_bytes
    monkeypatch.setattr(converter, "_convert_bytes", lambda *a, **k: conversions.append(1) or original(*a, **k))
    # every file misses the target (its measured agreement capped below it; a random model's files may agree
    # on all 40 images): the fully integer file of every step, then every prefix length, the best by SQNR kept
    measured = converter._agreement
    monkeypatch.setattr(converter, "_agreement", lambda *a: {**measured(*a), "top1_agreement": 0.5})
    options = dict(representative_data=images, denylist="auto", target_agreement=0.99, bias_correction=False)
    first = tflite.convert(small, tmp_path / "a.tflite", "int8", **options)
    assert len(conversions) == 3
    conversions.clear()
    again = tflite.convert(small, tmp_path / "b.tflite", "uint8", **options)
    assert len(conversions) == 1  # int8 and uint8 share an interior: the choice and the search are remembered
    assert float_layers(read_model(again)) == float_layers(read_model(first))
    # what the answer is remembered by: other images, other weights or a float input are other searches
    key = converter._prefix_key
    calibration = images.astype(np.float32) / 127.5 - 1
    base = key(small, calibration, False, 1)
    assert base == key(small, calibration.copy(), False, 1)
    assert base != key(small, calibration[::-1], False, 1) and base != key(small, calibration, True, 1)
    other = MobileNetV1(input_shape=(32, 32, 3), alpha=0.25, classes=10, weights=None)
    assert base != key(other, calibration, False, 1)


@pytest.mark.parametrize("full, prefix_sqnr, kept", [
    ({"top1_agreement": 0.99, "sqnr_db": 10.0}, 30.0, b"full"),     # reaches the target
    ({"top1_agreement": 0.97, "sqnr_db": 22.1}, 21.8, b"full"),     # misses, but the higher SQNR
    ({"top1_agreement": 0.97, "sqnr_db": 15.1}, 23.2, b"prefix"),   # misses, and the lower SQNR
    (None, 5.0, b"prefix"),                                         # the interpreter can't run it
])
def test_auto_chooses_between_the_fully_integer_file_and_the_float_prefix(monkeypatch, full, prefix_sqnr, kept):
    import tflite.converter as converter

    def agreement(expected, flatbuffer, calibration):
        if full is None:
            raise RuntimeError("delegate refused")
        return full

    monkeypatch.setattr(converter, "_agreement", agreement)
    monkeypatch.setattr(converter, "_FULLY_INTEGER_WON", {})
    calls = []

    def every_step():
        calls.append("full")
        return b"full"

    def prefix():
        calls.append("prefix")
        return b"prefix", prefix_sqnr

    choose = converter._fully_integer_or_prefix
    assert choose(every_step, prefix, None, None, 0.99, False, "key") == kept
    calls.clear()
    assert choose(every_step, prefix, None, None, 0.99, False, "key") == kept  # remembered: one conversion
    assert calls == [kept.decode()]


def test_the_converter_beats_naive_ptq_and_verify_catches_naive_ptq(model, calibration, held_out, reports,
                                                                   prefix_reports, tmp_path):
    images, labels = held_out
    naive = tflite.convert(model, tmp_path / "naive.tflite", "int8", representative_data=calibration,
                           bias_correction=False, equalization=False, adaround=False)
    naive_report = verify(model, naive, images, labels=labels, latency_runs=0)
    assert not naive_report.passed  # the verifier catches plain PTQ of this model
    # Measured (benchmarks/RESULTS.md, same 500 images): naive 80.6% / 9.5 dB, the fully integer default
    # 93.0% / 19.5 dB, the float prefix 96.0% / 23.3 dB.
    ours = reports["int8"]
    assert ours.top1_agreement >= naive_report.top1_agreement + 0.08
    assert ours.sqnr_db >= naive_report.sqnr_db + 7
    assert prefix_reports["int8"].sqnr_db >= naive_report.sqnr_db + 5


@pytest.mark.parametrize("mode", ALL_MODES)
def test_files_hold_builtin_ops_only_and_a_static_batch_of_one(files, mode):
    model = TFLiteModel(files[mode])
    assert model.input_shape == (1, SIZE, SIZE, 3)
    assert model.mode == mode
    ops = operator_names(read_model(files[mode]))
    assert not [op for op in ops if op == "FLEX" or op.startswith("CUSTOM")], ops
    # XNNPACK's fast path needs the reshape before the softmax to have a constant shape at batch 1.
    flat = read_model(files[mode])
    graph = flat.subgraphs[0]
    for op, name in zip(graph.operators, ops):
        if name == "RESHAPE" and len(op.inputs) > 1:
            shape_tensor = graph.tensors[op.inputs[1]]
            assert flat.buffers[shape_tensor.buffer].data is not None, "the reshape's shape is computed at run time"


def test_io_types_of_each_mode(files):
    expected = {"float32": "float32", "dynamic": "float32", "float16": "float32", "int8": "int8",
                "uint8": "uint8", "int8_float_io": "float32", "int16x8": "float32"}
    for mode, dtype in expected.items():
        model = TFLiteModel(files[mode])
        assert model.input_dtype == np.dtype(dtype) and model.output_dtype == np.dtype(dtype), mode


def test_raw_pixels_through_the_uint8_file_match_the_float_model(model, prefix_files):
    images, _, _ = cifar_slice(20, 300, SIZE)  # raw uint8, as an Android app has them
    uint8_file = TFLiteModel(prefix_files["uint8"])  # the file of the highest agreement: the input is what's checked
    scale, zero_point = uint8_file.input_quantization
    # The input quantization maps raw pixels onto the model's [-1, 1] within one step.
    assert abs((0 - zero_point) * scale - -1.0) <= scale and abs((255 - zero_point) * scale - 1.0) <= scale
    raw = uint8_file.dequantize_output(uint8_file.predict_raw(images))
    expected = model.predict(preprocess_input(images), verbose=0)
    assert np.mean(raw.argmax(1) == expected.argmax(1)) >= 0.97


def test_dynamic_batch(model, calibration, tmp_path):
    path = tflite.convert(model, tmp_path / "dyn.tflite", "float32", batch_size=None)
    file = TFLiteModel(path)
    images = preprocess_input(calibration[:7])
    np.testing.assert_allclose(file.predict(images), model.predict(images, verbose=0), atol=1e-4)


def test_every_file_has_the_serving_signature_and_it_runs_the_graph(files, held_out):
    # Apps call LiteRT's signature runner by name; the converter writes the signature a SavedModel's
    # conversion has (files are made from a concrete function, which has none of its own).
    from ai_edge_litert.interpreter import Interpreter

    for mode, path in files.items():
        interpreter = Interpreter(model_path=str(path))
        assert interpreter.get_signature_list() == {"serving_default": {"inputs": ["images"],
                                                                        "outputs": ["output_0"]}}, mode
        interpreter.allocate_tensors()
        given, = interpreter.get_input_details()
        images = TFLiteModel(path).quantize_input(held_out[0][:1])  # the file's input dtype
        interpreter.set_tensor(given["index"], images)
        interpreter.invoke()
        by_index = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
        by_signature = interpreter.get_signature_runner("serving_default")(images=images)["output_0"]
        np.testing.assert_array_equal(by_signature, by_index, err_msg=mode)


def test_a_feature_extractors_file_names_its_outputs_by_stride(tmp_path):
    # A dict of outputs: the signature names each map by its key (as a SavedModel's conversion did), and the
    # name leads to that map, though the file holds them in sorted key order (stride_16 before stride_4).
    from ai_edge_litert.interpreter import Interpreter

    from mobilenet_keras import MobileNetV1
    from mobilenet_keras.features import feature_extractor

    extractor = feature_extractor(MobileNetV1(input_shape=(64, 64, 3), alpha=0.25, include_top=False, weights=None))
    path = tflite.convert(extractor, tmp_path / "features.tflite", "float32")
    names = ["stride_16", "stride_32", "stride_4", "stride_8"]
    assert Interpreter(model_path=str(path)).get_signature_list() == {
        "serving_default": {"inputs": ["images"], "outputs": names}}
    images = np.random.default_rng(0).uniform(-1, 1, (1, 64, 64, 3)).astype(np.float32)
    by_name = Interpreter(model_path=str(path)).get_signature_runner("serving_default")(images=images)
    expected = extractor.predict(images, verbose=0)
    for name in names:
        assert by_name[name].shape == expected[name].shape, name
        np.testing.assert_allclose(by_name[name], expected[name], atol=1e-4, err_msg=name)


def test_larger_batches_than_the_file_takes(model, files, held_out):
    images = held_out[0][:5]
    float_file = TFLiteModel(files["float32"])
    np.testing.assert_allclose(float_file.predict(images), model.predict(images, verbose=0), atol=1e-4)


def test_denylisted_layers_stay_float(model, calibration, tmp_path):
    path = tflite.convert(model, tmp_path / "selective.tflite", "int8", representative_data=calibration,
                          denylist=["conv_pw_13", "conv_dw_2"])
    names = " ".join(float_layers(read_model(path)))
    assert "conv_pw_13" in names and "conv_dw_2" in names
    assert "conv_pw_12/" not in names.replace("_1/", "/")
    with pytest.raises(ValueError, match="does not have"):
        tflite.convert(model, tmp_path / "x.tflite", "int8", representative_data=calibration, denylist=["nope"])


def test_layer_errors_rank_layers_worst_first(model, calibration):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = tflite.layer_errors(model, calibration, num_calibration=40, num_debug=10)
    # TensorFlow's notice about the interpreter its debugger uses is not the caller's business
    assert not [w for w in caught if "tf.lite.Interpreter is deprecated" in str(w.message)]
    names = {layer.name for layer in model.layers}
    assert len(rows) >= 27
    assert all(row.layer in names for row in rows[:5])
    errors = [row.rmse_over_scale for row in rows]
    assert errors == sorted(errors, reverse=True) and errors[0] > 0


# --- mutations: a file that is not the model must fail --------------------------------------------

def _mutated(model, change):
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    change(copy)
    return copy


def test_a_file_with_one_kernel_zeroed_fails(model, held_out, tmp_path):
    def zero(m):
        layer = m.get_layer("conv_pw_7")
        layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])

    path = tflite.convert(_mutated(model, zero), tmp_path / "zeroed.tflite", "float32")
    report = verify(model, path, held_out[0], labels=held_out[1], latency_runs=0)
    assert not report.passed and any("agreement" in f for f in report.failures)


def test_a_file_with_shuffled_weights_fails(model, held_out, calibration, tmp_path):
    rng = np.random.default_rng(0)

    def shuffle(m):
        for name in ("conv_dw_5", "conv_pw_9"):
            layer = m.get_layer(name)
            layer.set_weights([rng.permutation(w.reshape(-1)).reshape(w.shape) for w in layer.get_weights()])

    path = tflite.convert(_mutated(model, shuffle), tmp_path / "shuffled.tflite", "int8",
                          representative_data=calibration, denylist=None)
    assert not verify(model, path, held_out[0], labels=held_out[1], latency_runs=0).passed


def test_a_float_model_fed_with_the_wrong_preprocessing_fails(model, files, held_out):
    import keras

    # The float model sees 0..255 pixels (preprocessing forgotten) while the file gets [-1, 1].
    inputs = keras.Input(model.input_shape[1:])
    wrong = keras.Model(inputs, model(keras.layers.Rescaling(127.5, offset=127.5)(inputs)))
    report = verify(wrong, files["float32"], held_out[0], labels=held_out[1], latency_runs=0)
    assert not report.passed


# --- bad input --------------------------------------------------------------------------------------

def test_bad_input_gives_clear_errors_and_no_file(model, calibration, tmp_path):
    target = tmp_path / "out.tflite"
    cases = [
        (dict(mode="int4"), "unknown mode 'int4'"),
        (dict(mode="int8"), "needs representative_data"),
        (dict(mode="int8", representative_data=np.zeros((0, SIZE, SIZE, 3), np.float32)), "empty"),
        (dict(mode="int8", representative_data=np.full((4, SIZE, SIZE, 3), np.nan, np.float32)), "NaN"),
        (dict(mode="int8", representative_data=np.zeros((4, 32, 32, 3), np.float32)), "shape"),
        (dict(mode="int8", representative_data=tmp_path / "no_such_folder"), "does not exist"),
    ]
    for kwargs, words in cases:
        with pytest.raises(ValueError, match=words):
            tflite.convert(model, target, **kwargs)
        assert not target.exists()
    with pytest.raises(ValueError, match="does not exist"):
        tflite.convert(model, tmp_path / "missing" / "m.tflite", "float32")
    with pytest.raises(ValueError, match="is a folder"):
        tflite.convert(model, tmp_path, "float32")
    assert [p.name for p in tmp_path.iterdir()] == []  # no temporary files left behind
    # a TFLite file under another format's name would replace that file (the model it was made from)
    keras_file = tmp_path / "model.keras"
    keras_file.write_bytes(b"the user's model")
    for name, words in (("model.keras", "a Keras model file's name.*name it model.tflite"),
                        ("best.weights.h5", "Keras weights.*best.tflite"), ("m.ONNX", "ONNX.*m.tflite")):
        with pytest.raises(ValueError, match=words):
            tflite.convert(model, tmp_path / name, "float32")
    assert keras_file.read_bytes() == b"the user's model" and [p.name for p in tmp_path.iterdir()] == ["model.keras"]
    assert tflite.convert(model, tmp_path / "model.lite", "float32").stat().st_size > 0  # other names are free


def test_a_failed_conversion_leaves_nothing(model, tmp_path, monkeypatch):
    import tflite.converter as converter

    def broken(*args, **kwargs):
        raise RuntimeError("converter crashed")

    monkeypatch.setattr(converter, "_convert_bytes", broken)
    with pytest.raises(RuntimeError):
        tflite.convert(model, tmp_path / "m.tflite", "float32")
    assert list(tmp_path.iterdir()) == []


# --- the input range of integer files (input_range=None) -------------------------------------------

def _small_mobilenet():
    import keras

    from mobilenet_keras import MobileNetV1

    keras.utils.set_random_seed(0)
    return MobileNetV1(alpha=0.25, input_shape=(32, 32, 3), classes=3, weights=None)


def test_a_mobilenet_keeps_its_preprocessing_range_and_raw_pixels_warn(tmp_path):
    import warnings

    from tflite.converter import MOBILENET_INPUT_RANGE

    assert MOBILENET_INPUT_RANGE == (-1.0, 1.0)
    mobilenet = _small_mobilenet()
    calibration = np.random.default_rng(0).uniform(-0.9, 0.8, (16, 32, 32, 3)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # images inside [-1, 1]: no warning
        warnings.filterwarnings("ignore", message="calibrating on 16 distinct")  # few on purpose (speed)
        path = tflite.convert(mobilenet, tmp_path / "m.tflite", "uint8", representative_data=calibration,
                              bias_correction=False, equalization=False, adaround=False)
    scale, zero_point = TFLiteModel(path).input_quantization
    # [-1, 1] as before (0..255 within one step), not the [-0.9, 0.8] the images reach
    assert scale == pytest.approx(2 / 255, rel=1e-3) and zero_point == 127  # the README says so
    with pytest.warns(UserWarning, match=r"reach \[255, 255\], outside the input range \[-1, 1\]"):
        tflite.convert(mobilenet, tmp_path / "w.tflite", "int8", representative_data=calibration * 0 + 255,
                       bias_correction=False, equalization=False, adaround=False)


def test_a_model_that_takes_0_255_pixels_is_not_clipped(tmp_path):
    import keras

    mobilenet = _small_mobilenet()
    inputs = keras.Input((32, 32, 3))
    pixels_model = keras.Model(inputs, mobilenet(keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)))
    rng = np.random.default_rng(1)
    calibration = rng.uniform(0, 255, (16, 32, 32, 3)).astype(np.float32)
    path = tflite.convert(pixels_model, tmp_path / "p.tflite", "uint8", representative_data=calibration,
                          denylist=None, bias_correction=False)
    file = TFLiteModel(path)
    scale, zero_point = file.input_quantization
    assert abs(zero_point * -scale) <= scale and abs((255 - zero_point) * scale - 255) <= 2 * scale  # 0..255
    images = rng.uniform(0, 255, (8, 32, 32, 3)).astype(np.float32)
    got, expected = file.predict(images), pixels_model.predict(images, verbose=0)
    assert np.abs(got - expected).max() < 0.1 * max(np.abs(expected).max(), 1e-6) + 0.05
    with pytest.raises(ValueError, match="input_range must"):
        tflite.convert(pixels_model, tmp_path / "x.tflite", "int8", representative_data=calibration,
                       input_range=(1.0, 255.0))
