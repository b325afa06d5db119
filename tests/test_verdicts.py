"""Verdicts as statistics (counts, 95% intervals, INCONCLUSIVE below MIN_VERDICT_IMAGES) and bounded reads
of endless data, on small random-weight MobileNets converted to float32 (seconds, no reference data)."""

from __future__ import annotations

import json
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


def _outputs_with_disagreements(samples: int, disagree: int, classes: int = 4):
    rng = np.random.default_rng(1)
    expected = np.eye(classes, dtype=np.float32)[rng.integers(0, classes, samples)] + 0.01
    got = expected.copy()
    got[:disagree] = np.roll(got[:disagree], 1, axis=1)  # another top-1, the rest unchanged
    return expected, got


def test_one_disagreement_in_few_images_is_inconclusive_not_fail():
    # 1 of 18 disagree is 94.4% < 97%, but the 95% interval (74% to 99%) still reaches 97%: the images can't
    # tell this file from one that agrees on 98%. A FAIL needs the interval wholly below the threshold.
    expected, got = _outputs_with_disagreements(18, 1)
    kwargs = dict(file="m.tflite", mode="int8", size_bytes=10, float32_size_bytes=40,
                  thresholds={"min_top5_overlap": 0.0, "min_sqnr_db": -1000.0})
    report = judge_outputs(expected, got, **kwargs)
    assert report.top1_agreement < 0.97 and report.top1_agreement_interval[1] >= 0.97
    assert report.verdict == "INCONCLUSIVE" and not report.failures and len(report.unsettled) == 1
    assert "1 of 18 disagree" in report.verdict_reason and "reaches 97%" in report.verdict_reason
    assert "a verdict needs at least 200" in report.verdict_reason
    assert report.to_dict()["unsettled"] == report.unsettled
    # 5 of 18 disagree: the interval (12% to 50% disagreeing) excludes 97% agreement, so it fails
    report = judge_outputs(*_outputs_with_disagreements(18, 5), **kwargs)
    assert report.verdict == "FAIL" and "5 of 18 disagree" in report.failures[0] and not report.unsettled
    # the same 1-in-18 rate on enough images is measured well enough: FAIL
    report = judge_outputs(*_outputs_with_disagreements(360, 20), **kwargs)
    assert report.verdict == "FAIL" and not report.unsettled


def test_an_accuracy_drop_on_few_images_fails_only_outside_its_interval():
    expected, got = _outputs_with_disagreements(18, 1)
    kwargs = dict(file="m.tflite", mode="int8", size_bytes=10, float32_size_bytes=40,
                  thresholds={"min_top1_agreement": 0.0, "min_top5_overlap": 0.0, "min_sqnr_db": -1000.0})
    report = judge_outputs(expected, got, labels=expected.argmax(1), **kwargs)  # float 100%, file 94.4%
    assert report.accuracy_drop > 0.02 and report.verdict == "INCONCLUSIVE" and "accuracy drop" in report.unsettled[0]
    report = judge_outputs(*_outputs_with_disagreements(18, 9), labels=expected.argmax(1), **kwargs)
    assert report.verdict == "FAIL" and "accuracy drop" in report.failures[0]
    # the two accuracies come from the same images: only those where one model is right and the other wrong
    # carry the difference. Float right on 100 of 199, 17 of them lost by the file: 8.5 points +- 3.9, a FAIL,
    # though the file's own accuracy interval (41.5% +- 6.8, unpaired) reaches the float model's 50.3% - 2
    expected, got = _outputs_with_disagreements(199, 17)
    labels = expected.argmax(1)
    labels[100:] = (labels[100:] + 2) % 4  # both models wrong on these
    report = judge_outputs(expected, got, labels=labels, **kwargs)
    assert (report.float_only_right, report.file_only_right) == (17, 0)
    assert report.tflite_accuracy_interval[1] >= report.float_accuracy - 0.02  # what the first rule looked at
    assert report.verdict == "FAIL" and "accuracy drop 8.54 points" in report.failures[0]


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


def test_wrong_types_are_named_not_attribute_errors(model3, file3, tmp_path):
    # each of these ended in an AttributeError or a pathlib TypeError from deep inside
    cases = [
        (lambda: tflite.convert(None, tmp_path / "a.tflite", "float32"), "takes a Keras model .*got NoneType"),
        (lambda: tflite.convert(str(tmp_path / "m.keras"), tmp_path / "a.tflite", "float32"),
         "not a path .*keras.models.load_model"),
        (lambda: tflite.convert(model3, None, "float32"), "output path must be a file path .*got NoneType"),
        (lambda: verify(model3, None, _images(4), latency_runs=0), "file's path .*got NoneType"),
        (lambda: verify(model3, file3, None, latency_runs=0), "the images are None"),
        (lambda: verify(None, file3, _images(4), latency_runs=0), "verify takes a Keras model"),
    ]
    for call, words in cases:
        with pytest.raises(TypeError, match=words):
            call()
    import keras

    unbuilt = keras.Sequential([keras.layers.Conv2D(3, 3), keras.layers.GlobalAveragePooling2D()])
    with pytest.raises(ValueError, match="has none yet: start it with keras.Input"):
        tflite.convert(unbuilt, tmp_path / "a.tflite", "float32")
    for bad in (2.0, 0, True, "0.99"):
        with pytest.raises(ValueError, match="target_agreement is a fraction"):
            tflite.convert(model3, tmp_path / "a.tflite", "float32", target_agreement=bad)
    with pytest.raises(ValueError, match=r"pass a folder of images \(read and resized for you\)"):
        verify(model3, file3, np.zeros((4, SIZE + 1, SIZE, 3), np.float32), latency_runs=0)
    assert list(tmp_path.iterdir()) == []


def test_a_model_with_two_outputs_is_refused(model3, file3):
    import keras

    two = keras.Model(model3.inputs, [model3.output, model3.output])
    with pytest.raises(ValueError, match="verify needs a model with one output"):
        verify(two, file3, _images(4), latency_runs=0)


def test_class_counts_must_match(model3, file10):
    with pytest.raises(ValueError, match="3 classes .* gives 10"):
        verify(model3, file10, _images(4), latency_runs=0)


def test_repeated_images_are_judged_once(model3, file3):
    # 40 images shown six times are 40 images of evidence: INCONCLUSIVE, not a PASS on 240
    images = _images(40)
    with pytest.warns(UserWarning, match="200 of the 240 images repeat others; judged on the 40 distinct"):
        report = verify(model3, file3, np.tile(images, (6, 1, 1, 1)), labels=np.tile(np.arange(40) % 3, 6),
                        latency_runs=0)
    assert report.samples == 40 and report.verdict == "INCONCLUSIVE"
    once = verify(model3, file3, images, labels=np.arange(40) % 3, latency_runs=0)
    assert report.float_accuracy == once.float_accuracy and report.top1_agreement == once.top1_agreement


def test_an_image_filed_under_two_classes_is_left_out_not_counted_for_its_first_class(model3, file3):
    # before: the first copy was kept, with its label; a model answering one class for every image scored 100%
    # on a folder whose other class's images were also copied into the first class's folder
    images = _images(40)
    answers = model3.predict(images, verbose=0).argmax(1)
    wrong = (answers + 1) % 3
    doubled = np.concatenate([images, images[:20]])
    labels = np.concatenate([answers, wrong[:20]])  # the first 20 filed again under a class the model doesn't give
    with pytest.warns(UserWarning, match=r"20 image\(s\) appear under two classes or more in labels"):
        report = verify(model3, file3, doubled, labels=labels, latency_runs=0)
    assert report.samples == 20 and report.float_accuracy == 1.0
    reverse = np.concatenate([wrong, answers[:20]])  # the wrong class first: still left out, not counted wrong
    with pytest.warns(UserWarning, match="judged on the 20 distinct ones of one class each"):
        assert verify(model3, file3, doubled, labels=reverse, latency_runs=0).float_accuracy == 0.0
    with pytest.raises(ValueError, match="every image appears under two classes"):
        verify(model3, file3, np.concatenate([images, images]), labels=np.concatenate([answers, wrong]),
               latency_runs=0)
    # labels are read as class numbers before copies are compared: one-hot rows, 0.0 and -0.0 are one class
    same = np.concatenate([answers, answers[:20]]).astype(float)
    same[40:][same[40:] == 0] = -0.0
    assert verify(model3, file3, doubled, labels=same, latency_runs=0).samples == 40
    one_hot = np.eye(3)[np.concatenate([answers, answers[:20]])]
    assert verify(model3, file3, doubled, labels=one_hot, latency_runs=0).samples == 40
    with pytest.raises(ValueError, match="labels must be class numbers; could not read them"):
        verify(model3, file3, images[:3], labels=[[0], [1, 2], [0]], latency_runs=0)


def test_labels_must_be_class_numbers_of_the_model(model3, file3):
    images = _images(12)
    with pytest.raises(ValueError, match="class numbers 0 to 2 .* from 55 to 55"):
        verify(model3, file3, images, labels=np.full(12, 55), latency_runs=0)
    with pytest.raises(ValueError, match="class numbers 0 to 2 .*Map class names"):
        verify(model3, file3, images, labels=["cat"] * 12, latency_runs=0)
    with pytest.raises(ValueError, match="class numbers 0 to 2"):
        verify(model3, file3, images, labels=np.full(12, -1), latency_runs=0)
    numbers = np.arange(12) % 3
    one_hot = verify(model3, file3, images, labels=np.eye(3)[numbers], latency_runs=0)
    plain = verify(model3, file3, images, labels=numbers, latency_runs=0)
    assert one_hot.float_accuracy == plain.float_accuracy and one_hot.tflite_accuracy == plain.tflite_accuracy
    with pytest.raises(ValueError, match="11 labels for 12 images"):
        verify(model3, file3, images, labels=numbers[:11], latency_runs=0)


def test_labels_given_with_max_samples_are_cut_with_the_images(model3, file3):
    images, numbers = _images(12), np.arange(12) % 3
    cut = verify(model3, file3, images, labels=numbers, max_samples=9, latency_runs=0)
    first = verify(model3, file3, images[:9], labels=numbers[:9], latency_runs=0)
    assert cut.samples == 9 and cut.float_accuracy == first.float_accuracy  # it was "12 labels for 9 images"


def _class_folders(root, names, per_class=4):
    from PIL import Image

    rng = np.random.default_rng(0)
    for name in names:
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def test_a_folders_labels_are_the_models_classes_by_name_or_refused(model3, file3, tmp_path, monkeypatch):
    # one class folder of a 3-class model: its images were all label 0, whatever the folder's name
    lone = _class_folders(tmp_path / "lone", ["dog"])
    with pytest.raises(ValueError, match="1 class folder.*dog.*model has 3 classes.*class_names="):
        verify(model3, file3, lone, latency_runs=0)
    by_name = verify(model3, file3, lone, class_names=["cat", "bird", "dog"], latency_runs=0)
    predicted = model3.predict(tflite.representative.collect(lone, (SIZE, SIZE, 3)), verbose=0).argmax(1)
    assert by_name.float_accuracy == np.mean(predicted == 2)
    with pytest.raises(ValueError, match="class folder.*dog.*not among the model's classes"):
        verify(model3, file3, lone, class_names=["cat", "bird", "fish"], latency_runs=0)
    with pytest.raises(ValueError, match="2 class names for a model with 3 classes"):
        verify(model3, file3, lone, class_names=["cat", "dog"], latency_runs=0)
    # where it can't apply, class_names is refused, not ignored
    with pytest.raises(ValueError, match="not a folder: give labels= as the model's class numbers"):
        verify(model3, file3, _images(4), class_names=["cat", "bird", "dog"], latency_runs=0)
    with pytest.raises(ValueError, match="with labels= given, the labels are the classes"):
        verify(model3, file3, lone, labels=[2] * 4, class_names=["cat", "bird", "dog"], latency_runs=0)
    # the folder is listed once (a folder of 100,000 images was listed twice)
    import mobilenet_keras.images

    scans = []
    real = mobilenet_keras.images.scan_folder

    def counted(*args, **kwargs):
        scans.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(mobilenet_keras.images, "scan_folder", counted)
    monkeypatch.setattr(tflite.representative, "scan_folder", counted)
    verify(model3, file3, lone, class_names=["cat", "bird", "dog"], latency_runs=0)
    assert len(scans) == 1, scans


def test_verify_judges_the_bytes_it_ran_even_if_the_file_changes(model3, file3, tmp_path):
    import shutil

    from tflite.runtime import TFLiteModel

    with pytest.warns(UserWarning, match="calibrating on 16"):
        int8 = tflite.convert(model3, tmp_path / "m.tflite", "int8", representative_data=_images(16))
    loaded = TFLiteModel(int8)
    shutil.copy(file3, int8)  # replaced by the float32 file after loading
    report = verify(model3, loaded, _images(8), latency_runs=2)
    assert report.mode == "int8" and report.float_ops == 0 and report.size_bytes == loaded.size_bytes
    assert report.latency_ms > 0


def test_report_json_is_strict_json_with_null_for_figures_that_are_not_numbers(tmp_path):
    import json

    expected = np.random.default_rng(0).random((12, 4)).astype(np.float32)
    report = judge_outputs(expected, expected.copy(), file="x.tflite", mode="float32", size_bytes=100,
                           float32_size_bytes=100)  # an exact match: SQNR inf; latency not measured: NaN
    assert report.sqnr_db == float("inf")
    text = report.to_json(tmp_path / "r.json").read_text()

    def refuse(constant):
        raise AssertionError(f"{constant} is not JSON")  # what JSON.parse and jq say about NaN and Infinity

    written = json.loads(text, parse_constant=refuse)
    assert written["sqnr_db"] == "Infinity" and written["latency_ms"] == "NaN" and written["samples"] == 12
    from mobilenet_keras.files import read_json

    assert read_json(tmp_path / "r.json")["sqnr_db"] == float("inf")  # read back as the figure it was
    assert "| latency (per image at the file's batch, 2 threads) | not measured |" in report.to_markdown()


def test_thresholds_and_min_samples_are_checked(model3, file3):
    with pytest.raises(ValueError, match="min_top1_agreement is a fraction from 0 to 1 .* got 93"):
        verify(model3, file3, _images(4), thresholds={"min_top1_agreement": 93}, latency_runs=0)
    with pytest.raises(ValueError, match="min_samples must be a number of images"):
        verify(model3, file3, _images(4), min_samples=-5, latency_runs=0)
    report = verify(model3, file3, _images(4), thresholds={"max_accuracy_drop": float("inf")}, min_samples=0,
                    latency_runs=0)
    assert report.verdict == "PASS"  # min_samples 0: no minimum


@pytest.mark.parametrize("kwargs,words", [
    ({"latency_runs": -1}, "latency_runs must be an integer of at least 0"),
    ({"latency_runs": 2.5}, "latency_runs must be an integer"),
    ({"max_samples": 0}, "max_samples must be an integer of at least 1"),
    ({"float32_size": 0}, "float32_size must be an integer of at least 1"),
    ({"float32_size": -5}, "float32_size must be an integer"),
])
def test_verify_arguments_are_checked_before_any_image_is_run(model3, file3, kwargs, words, monkeypatch):
    import sys

    verify_module = sys.modules["tflite.verify"]  # the module (`tflite.verify` is also the function)

    def no_inference(*args, **kwargs):
        raise AssertionError("ran the model before checking the arguments")

    monkeypatch.setattr(verify_module, "predict", no_inference)
    with pytest.raises(ValueError, match=words):
        verify(model3, file3, _images(4), **kwargs)


def test_a_mode_unlike_the_files_is_warned_about_and_a_bad_input_range_named_before_calibrating(model3, file3):
    with pytest.warns(UserWarning, match="mode 'int8' given, but m3.tflite looks like a float32 file"):
        verify(model3, file3, _images(4), mode="int8", latency_runs=0)

    def never_read():
        raise AssertionError("read the calibration images before checking input_range")
        yield

    with pytest.raises(ValueError, match=r"input_range must be two numbers \(low, high\); got \(-1, 0, 1\)"):
        tflite.convert(model3, "unused.tflite", "int8", representative_data=never_read(), input_range=(-1, 0, 1))


def test_a_model_with_two_inputs_is_refused_by_convert_and_verify(model3, file3, tmp_path):
    import keras

    other = keras.Input((4,))
    two = keras.Model([model3.input, other], model3.output)
    for call in (lambda: tflite.convert(two, tmp_path / "two.tflite", "int8", representative_data=_images(4)),
                 lambda: verify(two, file3, _images(4), latency_runs=0)):
        with pytest.raises(ValueError, match="one image input; this one has 2"):
            call()
    assert not list(tmp_path.iterdir())


def test_representative_data_of_the_wrong_kind_is_named(model3, tmp_path):
    import tensorflow as tf
    from PIL import Image

    from tflite.representative import collect

    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(np.zeros((SIZE, SIZE, 3), np.uint8)).save(paths[-1])
    for names in (paths, [str(p) for p in paths]):
        with pytest.raises(ValueError, match="got file names, not images; pass the folder"):
            collect(names, (SIZE, SIZE, 3))
    records = tf.data.Dataset.from_tensor_slices({"image": _images(4), "label": np.arange(4)})
    with pytest.raises(ValueError, match=r"got a dict \(image, label\), not images"):
        collect(records, (SIZE, SIZE, 3))
    mixed = [np.zeros((SIZE, SIZE, 3), np.float32), np.zeros((SIZE + 8, SIZE, 3), np.float32)]
    with pytest.raises(ValueError, match="images of different sizes"):
        collect(mixed, (SIZE, SIZE, 3))


def test_images_scaled_to_0_1_and_few_distinct_images_are_warned_about(model3, file3, tmp_path):
    unit = (_images(60) + 1) / 2  # pixels / 255 instead of preprocess_input
    with pytest.warns(UserWarning, match=r"lie in \[0, 1\].*preprocess_input"):
        tflite.convert(model3, tmp_path / "a.tflite", "int8", representative_data=unit)
    with pytest.warns(UserWarning, match=r"lie in \[0, 1\]"):
        verify(model3, file3, unit, latency_runs=0)
    with pytest.warns(UserWarning, match="reach .* but the model takes pixels on \\[-1, 1\\]"):
        verify(model3, file3, unit * 255, latency_runs=0)
    with pytest.warns(UserWarning, match=r"calibrating on 1 distinct image\(s\) \(20 with repeats\)"):
        tflite.convert(model3, tmp_path / "b.tflite", "int8", representative_data=np.repeat(_images(1), 20, axis=0))
    with warnings.catch_warnings():  # enough distinct images in the model's range: silent
        warnings.simplefilter("error")
        tflite.convert(model3, tmp_path / "c.tflite", "int8", representative_data=_images(60))


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
    with pytest.warns(UserWarning) as seen:
        report = verify(model3, file3, dataset, latency_runs=0)
    messages = " ".join(str(w.message) for w in seen)
    assert "first 64 images" in messages and "48 of the 64 images repeat others" in messages
    assert report.samples == 16 and report.verdict == "INCONCLUSIVE"  # its 16 images, once each


def test_convert_reads_only_the_calibration_images_of_an_endless_generator(model3, tmp_path):
    path = tflite.convert(model3, tmp_path / "d.tflite", "dynamic", representative_data=_endless(),
                          num_calibration=16)
    assert tflite.TFLiteModel(path).mode == "dynamic"


def test_a_list_of_two_images_is_two_images(model3, file3):
    first, second = _images(2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = verify(model3, file3, [[first, second]], latency_runs=0)
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


def test_report_md_renders_again_from_report_json(tmp_path):
    # `qat RUN_DIR` and `export --android` render report.md again from report.json, where an infinite SQNR, a
    # file's -inf (it gave NaN) and an untimed latency are strings
    from mobilenet_keras.app import report as report_md

    expected = np.random.default_rng(0).random((200, 3)).astype(np.float32)
    run = tmp_path / "run"
    run.mkdir()
    exact = judge_outputs(expected, expected.copy(), file=run / "tflite" / "m.tflite", mode="float32",
                          size_bytes=100, float32_size_bytes=100).to_dict()
    broken = judge_outputs(expected, np.full_like(expected, np.nan), file=run / "android" / "b.tflite",
                           mode="float32", size_bytes=100, float32_size_bytes=100).to_dict()
    report_md.write(_summary([exact, broken], verdict="FAIL"), run)
    first = (run / "report.md").read_text()
    again = report_md.markdown(report_md.read_summary(run))
    assert again == first and "| inf dB |" in again and "| -inf dB |" in again and "| not measured |" in again
    # the run folder's files are named from it, so a run folder moved elsewhere still names its own files
    rows = json.loads((run / "report.json").read_text())["files"]
    assert [row["file"] for row in rows] == ["tflite/m.tflite", "android/b.tflite"]
    run.rename(tmp_path / "moved")
    files = [row["file"] for row in report_md.read_summary(tmp_path / "moved")["files"]]
    assert files == [str(tmp_path / "moved" / "tflite" / "m.tflite"), str(tmp_path / "moved" / "android" / "b.tflite")]
    # a report.json from before (no mark) kept paths as typed, relative to the folder the command ran in
    older = json.loads((tmp_path / "moved" / "report.json").read_text())
    older.pop("file_paths")
    older["files"][0]["file"] = "runs/a/tflite/m.tflite"
    (tmp_path / "moved" / "report.json").write_text(json.dumps(older))
    assert report_md.read_summary(tmp_path / "moved")["files"][0]["file"] == "runs/a/tflite/m.tflite"


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



def test_a_custom_layer_that_cannot_be_copied_is_named(tmp_path):
    import keras

    class Scale(keras.layers.Layer):  # no get_config for its argument: Keras can't rebuild it from its config
        def __init__(self, factor):
            super().__init__()
            self.factor = factor

        def call(self, x):
            return x * self.factor

    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(4, 3)(inputs)
    x = Scale(2.0)(x)
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    with pytest.raises(ValueError, match="can't copy layer 'scale' \\(Scale\\).*bias_correction=False"):
        tflite.convert(model, tmp_path / "a.tflite", "int8", representative_data=_images(60))
    assert not list(tmp_path.iterdir())
    path = tflite.convert(model, tmp_path / "b.tflite", "int8", representative_data=_images(60), bias_correction=False)
    assert tflite.TFLiteModel(path).mode == "int8"


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_a_mixed_precision_model_converts_through_a_float32_copy(policy, tmp_path):
    # "Could not translate MLIR to FlatBuffer" (float16 / bfloat16 compute), exit 4 from pipeline and export
    import keras

    from mobilenet_keras import MobileNetV1

    keras.config.set_dtype_policy(policy)
    try:
        model = MobileNetV1(alpha=0.25, input_shape=(SIZE, SIZE, 3), classes=3, weights=None)
    finally:
        keras.config.set_dtype_policy("float32")
    assert model.get_layer("conv1").dtype_policy.name == policy
    images = _images(12)
    for mode in ("float32", "int8"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # few calibration images: not what this test is about
            path = tflite.convert(model, tmp_path / f"{mode}.tflite", mode, representative_data=images)
        got = tflite.TFLiteModel(path).predict(images)
        assert got.shape == (12, 3) and np.isfinite(got).all()
    assert model.get_layer("conv1").dtype_policy.name == policy  # the model itself is left as it was
    np.testing.assert_allclose(tflite.TFLiteModel(tmp_path / "float32.tflite").predict(images),
                               model.predict(images, verbose=0), atol=0.02)  # the mixed model's own rounding
