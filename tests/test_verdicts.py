"""Verdicts as statistics (counts, 95% intervals, INCONCLUSIVE below MIN_VERDICT_IMAGES) and bounded reads
of endless data, on small random-weight MobileNets converted to float32 (seconds, no reference data)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import tflite
from tflite.verify import MIN_VERDICT_IMAGES, judge_outputs, verify, wilson_interval

SIZE = 32


def _model(classes: int, seed: int = 0):
    import keras

    from mobilenet_keras import MobileNetV1

    keras.utils.set_random_seed(seed)
    model = MobileNetV1(alpha=0.25, input_shape=(SIZE, SIZE, 3), classes=classes, weights=None)
    # Random weights with BatchNorm's initial statistics make the activations vanish (every output
    # 1/classes, every argmax a tie): set each BatchNorm's statistics from data, in order, as training would.
    images = _images(64, seed=seed + 100)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            seen = keras.Model(model.inputs, layer.input).predict(images, verbose=0)
            gamma, beta, _, _ = layer.get_weights()
            layer.set_weights([gamma, beta, seen.mean(axis=(0, 1, 2)), seen.var(axis=(0, 1, 2)) + 1e-3])
    head = model.get_layer("conv_preds")
    kernel, bias = head.get_weights()
    head.set_weights([kernel * 10, bias])  # spread the scores: a clear top-1 per image
    return model


@pytest.fixture(scope="module")
def model3():
    return _model(3)


@pytest.fixture(scope="module")
def file3(model3, tmp_path_factory):
    return tflite.convert(model3, tmp_path_factory.mktemp("v") / "m3.tflite", "float32")


@pytest.fixture(scope="module")
def file10(tmp_path_factory):
    return tflite.convert(_model(10), tmp_path_factory.mktemp("v") / "m10.tflite", "float32")


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (n, SIZE, SIZE, 3)).astype(np.float32)


# --- statistics -------------------------------------------------------------------------------------

def test_wilson_interval_known_values():
    low, high = wilson_interval(10, 10)
    assert high == pytest.approx(1.0) and low == pytest.approx(0.7225, abs=1e-4)
    low, high = wilson_interval(0, 10)
    assert low == pytest.approx(0.0) and high == pytest.approx(0.2775, abs=1e-4)
    low, high = wilson_interval(198, 200)
    assert low < 0.99 < high and high < 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_few_images_give_inconclusive_never_pass(model3, file3):
    report = verify(model3, file3, _images(20), labels=np.zeros(20, int), latency_runs=0)
    assert not report.failures
    assert report.verdict == "INCONCLUSIVE" and not report.passed
    assert str(MIN_VERDICT_IMAGES - 20) in report.verdict_reason
    row = report.to_dict()
    assert row["verdict"] == "INCONCLUSIVE" and row["passed"] is False
    assert row["disagreements"] == 0 and len(row["top1_agreement_interval"]) == 2
    assert row["tflite_accuracy_interval"] is not None
    text = report.to_markdown()
    assert "INCONCLUSIVE" in text and "0 of 20 disagree" in text and "95% interval" in text


def test_enough_images_give_pass_with_interval(model3, file3):
    report = verify(model3, file3, _images(MIN_VERDICT_IMAGES), latency_runs=0)
    assert report.verdict == "PASS" and report.passed, report.to_markdown()
    low, high = report.top1_agreement_interval
    assert report.disagreements == round((1 - report.top1_agreement) * report.samples)
    assert low < report.top1_agreement <= high
    assert "PASS" in report.to_markdown()


def test_a_wrong_file_fails_even_on_few_images(model3, file3):
    import keras

    # the model with its classes permuted (no class in place): not the model the file came from
    other = keras.Model(model3.inputs, keras.layers.Lambda(lambda x: keras.ops.take(x, [1, 2, 0], axis=1))(
        model3.output))
    report = verify(other, file3, _images(30), latency_runs=0)
    assert report.failures and report.verdict == "FAIL" and not report.passed
    assert "FAIL" in report.to_markdown()


def test_judge_outputs_is_the_one_judge():
    rng = np.random.default_rng(0)
    expected = rng.random((300, 4)).astype(np.float32)
    report = judge_outputs(expected, expected + 1e-7, file="x.onnx", mode="onnx",
                           thresholds=tflite.get_mode("float32").thresholds, size_bytes=100, float32_size_bytes=100,
                           labels=expected.argmax(1))
    assert report.verdict == "PASS" and report.float_accuracy == 1.0
    flipped = expected.copy()
    flipped[:10] = flipped[:10, ::-1]
    report = judge_outputs(expected, flipped, file="x.tflite", mode="float32", size_bytes=100, float32_size_bytes=100)
    assert report.verdict == "FAIL" and report.disagreements >= 1
    with pytest.raises(ValueError, match="4 classes .* gives 3"):
        judge_outputs(expected, expected[:, :3], file="x.tflite", mode="float32", size_bytes=1, float32_size_bytes=1)


# --- what verify refuses ----------------------------------------------------------------------------

def test_unknown_mode_and_threshold_name_the_allowed_ones(model3, file3):
    with pytest.raises(ValueError, match="unknown mode 'float-32'.*float32.*int8"):
        verify(model3, file3, _images(4), mode="float-32", latency_runs=0)
    with pytest.raises(ValueError, match="min_top1_agreemnt.*min_top1_agreement.*max_accuracy_drop"):
        verify(model3, file3, _images(4), thresholds={"min_top1_agreemnt": 0.9}, latency_runs=0)


def test_a_model_with_two_outputs_is_refused(model3, file3):
    import keras

    two = keras.Model(model3.inputs, [model3.output, model3.output])
    with pytest.raises(ValueError, match="verify needs a model with one output"):
        verify(two, file3, _images(4), latency_runs=0)


def test_class_counts_must_match(model3, file10):
    with pytest.raises(ValueError, match="3 classes .* gives 10"):
        verify(model3, file10, _images(4), latency_runs=0)


# --- bounded reads ----------------------------------------------------------------------------------

def _endless():
    rng = np.random.default_rng(0)
    while True:
        yield rng.uniform(-1, 1, (8, SIZE, SIZE, 3)).astype(np.float32)


def test_collect_stops_on_endless_sources():
    import tensorflow as tf

    from tflite.representative import collect

    assert collect(_endless(), (SIZE, SIZE, 3), limit=20).shape[0] == 20
    dataset = tf.data.Dataset.from_tensor_slices((_images(10), np.arange(10))).batch(4).repeat()
    labels: list = []
    assert collect(dataset, (SIZE, SIZE, 3), limit=25, labels_out=labels).shape[0] == 25
    assert labels == list(range(10)) * 2 + [0, 1, 2, 3, 4]
    with pytest.warns(UserWarning, match="first 30 images"):
        assert collect(_endless(), (SIZE, SIZE, 3), cap=30).shape[0] == 30


def test_verify_reads_an_endless_generator_up_to_max_samples(model3, file3):
    report = verify(model3, file3, _endless(), max_samples=MIN_VERDICT_IMAGES, latency_runs=0)
    assert report.samples == MIN_VERDICT_IMAGES and report.verdict == "PASS"


def test_verify_caps_an_endless_dataset_without_max_samples(model3, file3, monkeypatch):
    import tensorflow as tf

    import sys

    verify_module = sys.modules["tflite.verify"]  # (tflite.verify the attribute is the function)

    monkeypatch.setattr(verify_module, "DEFAULT_MAX_SAMPLES", 64)  # the documented cap, made small for speed
    dataset = tf.data.Dataset.from_tensor_slices(_images(16)).batch(8).repeat()
    with pytest.warns(UserWarning, match="first 64 images"):
        report = verify(model3, file3, dataset, latency_runs=0)
    assert report.samples == 64 and report.verdict == "INCONCLUSIVE"


def test_convert_reads_only_the_calibration_images_of_an_endless_generator(model3, tmp_path):
    path = tflite.convert(model3, tmp_path / "d.tflite", "dynamic", representative_data=_endless(),
                          num_calibration=16)
    assert tflite.TFLiteModel(path).mode == "dynamic"


def test_a_list_of_two_images_is_two_images(model3, file3):
    img = _images(1)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = verify(model3, file3, [[img, img]], latency_runs=0)
    assert report.samples == 2 and report.float_accuracy is None  # no labels invented from pixels
    # a real (images, labels) pair still gives labels
    report = verify(model3, file3, [(_images(6), np.zeros(6, int))], latency_runs=0)
    assert report.samples == 6 and report.float_accuracy is not None


# --- the pipeline report ----------------------------------------------------------------------------

def _summary(rows, verdict="PASS"):
    run = {"data": {"source": "digits", "train_images": 1, "validation_images": 20, "classes": ["a"],
                    "image_size": 32},
           "config": {"alpha": 0.25, "weights": None}, "final": {"val_accuracy": 0.9}}
    return {"verdict": verdict, "run": run, "files": rows, "plots": [], "deployables": {}}


def test_report_md_renders_verdicts_and_intervals(model3, file3):
    from mobilenet_keras.app import report as report_md

    few = verify(model3, file3, _images(20), labels=np.zeros(20, int), latency_runs=0).to_dict()
    text = report_md.markdown(_summary([few]))
    assert text.startswith("# mobilenet-keras run: INCONCLUSIVE")
    assert "INCONCLUSIVE: only 20 images" in text and "0 of 20 disagree; 95%" in text
    failed = dict(few, failures=["top-1 agreement 50% < 99%"], passed=False, verdict="FAIL")
    text = report_md.markdown(_summary([few, failed], verdict="FAIL"))
    assert text.startswith("# mobilenet-keras run: FAIL") and "| FAIL: top-1 agreement" in text


def test_report_md_marks_the_android_file_with_the_verdict_of_the_file_it_copies(model3, file3):
    from mobilenet_keras.app import report as report_md

    row = verify(model3, file3, _images(20), labels=np.zeros(20, int), latency_runs=0).to_dict()
    uint8 = dict(row, file="run/tflite/model_uint8.tflite", mode="uint8", failures=["top-1 agreement 50% < 97%"],
                 passed=False, verdict="FAIL")
    summary = dict(_summary([uint8], verdict="FAIL"), deployables={"android": "android/model.tflite"})
    assert "- `android`: android/model.tflite (FAIL, as model_uint8.tflite above: do not ship it)" in \
        report_md.markdown(summary)
    assert report_md.android_verdict(summary) == {"verdict": "FAIL", "verified_as": "model_uint8.tflite"}
    own = dict(row, file="run/android/model.tflite", mode="uint8", verdict="PASS", failures=[], passed=True)
    summary = dict(_summary([own]), deployables={"android": "android/model.tflite"})
    assert "- `android`: android/model.tflite (PASS)" in report_md.markdown(summary)

