from __future__ import annotations

import numpy as np
import pytest

from mobilenet_keras import decode_predictions
from tests.conftest import LABELS, require


def test_decode_predictions_reads_a_class_index_file():
    index = require(LABELS / "imagenet_class_index.json")
    scores = np.zeros((2, 1000), "float32")
    scores[0, 285], scores[0, 281], scores[1, 967] = 0.7, 0.2, 0.9
    first, second = decode_predictions(scores, top=2, class_index=index)
    assert first[0][1] == "Egyptian_cat" and first[1][1] == "tabby"
    assert second[0][:2] == ("n07920052", "espresso") and abs(second[0][2] - 0.9) < 1e-6


def test_decode_predictions_drops_the_background_column_of_tf_slim_files():
    index = require(LABELS / "imagenet_class_index.json")
    scores = np.zeros((1, 1001), "float32")
    scores[0, 968] = 1.0  # espresso shifted by the background class
    assert decode_predictions(scores, top=1, class_index=index)[0][0][1] == "espresso"


def test_decode_predictions_rejects_other_shapes():
    with pytest.raises(ValueError, match=r"\(batch, 1000\)"):
        decode_predictions(np.zeros((1, 10)), class_index={})


def test_preprocess_input_takes_keras_applications_arguments():
    from keras.applications import mobilenet

    from mobilenet_keras import preprocess_input
    from mobilenet_keras.preprocessing import INPUT_OFFSET, INPUT_RANGE, INPUT_SCALE

    pixels = np.random.default_rng(0).uniform(0, 255, (2, 3, 4, 4)).astype("float32")
    for data_format in (None, "channels_last", "channels_first"):
        np.testing.assert_allclose(preprocess_input(pixels, data_format=data_format),
                                   mobilenet.preprocess_input(pixels.copy(), data_format=data_format), atol=1e-6)
    assert preprocess_input(pixels, mode="tf").dtype == np.float32
    assert INPUT_RANGE == (-1.0, 1.0) and INPUT_RANGE == (INPUT_OFFSET, INPUT_OFFSET + 255 * INPUT_SCALE)
    np.testing.assert_allclose(preprocess_input([0, 255]), INPUT_RANGE)
    with pytest.raises(ValueError, match="data_format"):
        preprocess_input(pixels, data_format="channels_middle")
    with pytest.raises(ValueError, match="mode 'tf'"):
        preprocess_input(pixels, mode="caffe")
    with pytest.raises(TypeError, match="unexpected keyword"):
        preprocess_input(pixels, scale=2)


def test_preprocess_input_refuses_what_is_not_8_bit_pixels():
    # Before: a file name or None failed inside TensorFlow's Cast ("Cast string to float is not supported"),
    # and a 16-bit image went through silently, 65535 -> 513 where the model expects [-1, 1].
    import tensorflow as tf

    from mobilenet_keras import preprocess_input

    for not_pixels in ("photo.jpg", b"\xff\xd8", None, {"image": 1}, np.array(["photo.jpg"]), np.array([1 + 2j]),
                       np.array([True]), tf.constant(["photo.jpg"])):
        with pytest.raises(TypeError, match="pixels"):
            preprocess_input(not_pixels)
    for sixteen_bit in (np.full((1, 2, 2, 3), 65535, np.uint16), tf.constant([[1, 2]], tf.uint16)):
        with pytest.raises(ValueError, match=r"uint16 pixels .*x / 257"):
            preprocess_input(sixteen_bit)
    np.testing.assert_allclose(preprocess_input(tf.constant([0, 255], tf.uint8)), [-1.0, 1.0])
    from PIL import Image  # a decoded image that numpy reads as an array

    np.testing.assert_allclose(preprocess_input(Image.new("RGB", (2, 2), (255, 0, 255))),
                               np.array([1.0, -1.0, 1.0]) * np.ones((2, 2, 3)))
    np.testing.assert_allclose(preprocess_input(np.array([0, 255], np.int64)), [-1.0, 1.0])


def test_decode_predictions_without_the_class_index_says_what_to_pass(tmp_path, monkeypatch):
    # offline and with nothing cached: Keras's download raises a bare Exception ("URL fetch failure")
    from mobilenet_keras import pretrained

    from keras.src.backend import config

    monkeypatch.setattr(config, "_KERAS_DIR", str(tmp_path))  # Keras reads $KERAS_HOME once, at import
    monkeypatch.setattr(pretrained, "CLASS_INDEX_URL", (tmp_path / "nowhere" / "index.json").as_uri())
    with pytest.raises(ValueError, match="class_index= a local imagenet_class_index.json"):
        decode_predictions(np.zeros((1, 1000)))


def test_decode_predictions_names_a_class_index_it_cant_use(tmp_path):
    # a labels.txt path was a raw JSONDecodeError, a dict with int keys a KeyError '285', top=-1 gave 999 rows
    labels = tmp_path / "labels.txt"
    labels.write_text("background\ntench\n")
    scores = np.zeros((1, 1000), "float32")
    cases = [
        (dict(class_index=labels), "is not a class index JSON .*read_labels"),
        (dict(class_index={str(i): ["n", "x"] for i in range(10)}), "has 10 entries, not ImageNet's 1,000"),
        (dict(class_index={}, top=-1), "top is how many classes"),
        (dict(class_index={}, top=2.5), "top is how many classes"),
    ]
    for kwargs, words in cases:
        with pytest.raises(ValueError, match=words):
            decode_predictions(scores, **kwargs)
    by_int = {i: [f"n{i}", f"class {i}"] for i in range(1000)}
    scores[0, 285] = 1.0
    assert decode_predictions(scores, top=1, class_index=by_int)[0][0][:2] == ("n285", "class 285")
