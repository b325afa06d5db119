"""Bad arguments to the builder give a ValueError that says what is allowed."""

from __future__ import annotations

import numpy as np
import pytest

from mobilenet_keras import MobileNetV1


@pytest.mark.parametrize(
    "kwargs,words",
    [
        ({"alpha": 0}, "alpha must be a number > 0"),
        ({"alpha": -0.5}, "alpha must be a number > 0"),
        ({"depth_multiplier": 0}, "depth_multiplier must be an integer >= 1"),
        ({"input_shape": (31, 64, 3), "include_top": False}, "at least 32"),
        ({"pooling": "mean", "include_top": False}, "pooling must be one of"),
        ({"output_stride": 4}, "output_stride must be None, 8, 16 or 32"),
        ({"weights": "imagenet", "classes": 10}, "classes=1000"),
        ({"weights": "imagenet", "alpha": 0.3}, "alpha in [0.25, 0.5, 0.75, 1.0]"),
        ({"weights": "imagenet", "input_shape": (96, 96, 3)}, "square inputs of [128, 160, 192, 224]"),
        ({"weights": "imagenet", "depth_multiplier": 2}, "depth_multiplier=1"),
        ({"weights": "/no/such/file.h5"}, "is not a file"),
        ({"weights": ["model.h5"]}, "(a str or Path); got list"),
        ({"weights": b"model.h5"}, "(a str or Path); got bytes"),
        ({"input_shape": (64, 64)}, "(height, width, channels)"),
        ({"alpha": float("inf")}, "alpha must be a number > 0 and finite"),
        ({"alpha": float("nan")}, "alpha must be a number > 0 and finite"),
        ({"alpha": 1e9}, "to 16"),
        ({"alpha": 0.01}, "from 0.03125"),
        ({"alpha": True}, "alpha must be a number"),
        ({"input_shape": (64, 64, 0), "include_top": False}, "input channels must be an integer from 1"),
        ({"input_shape": (64.5, 64, 3), "include_top": False}, "must be integers"),
        ({"input_shape": ("64", 64, 3), "include_top": False}, "must be integers"),
        ({"input_shape": 64}, "(height, width, channels)"),
        ({"depth_multiplier": 1.5}, "depth_multiplier must be an integer"),
        ({"depth_multiplier": 10**6}, "<= 64"),
        ({"classes": 0}, "classes must be an integer from 1"),
        ({"classes": 2.5}, "classes must be an integer from 1"),
        ({"dropout": float("nan")}, "dropout must be a number in [0, 1)"),
        ({"dropout": 1.0}, "dropout must be a number in [0, 1)"),
        ({"include_top": "yes"}, "include_top must be True or False"),
        ({"classes": 1}, "classes=1 with a softmax gives 1.0 for every image"),
    ],
)
def test_bad_arguments(kwargs, words):
    with pytest.raises(ValueError) as info:
        MobileNetV1(**kwargs)
    assert words in str(info.value)


def test_channels_other_than_three_with_weights(weights_025):
    with pytest.raises(ValueError, match="3 input channels"):
        MobileNetV1(input_shape=(64, 64, 1), alpha=0.25, include_top=False, weights=weights_025)
    # without weights any channel count builds
    assert MobileNetV1(input_shape=(64, 64, 1), alpha=0.25, include_top=False).input.shape[-1] == 1


def test_weights_file_for_another_alpha_names_the_alpha_it_fits(weights_025):
    with pytest.raises(ValueError) as info:
        MobileNetV1(input_shape=(96, 96, 3), alpha=0.5, include_top=False, weights=weights_025)
    assert "alpha 0.25" in str(info.value) and "conv1" in str(info.value)


def test_weights_files_of_a_close_width_or_the_other_keras_format_say_what_to_do(weights_025, tmp_path):
    import shutil

    # alpha 0.26 gives conv1 the 8 filters of 0.25: the message blamed depth_multiplier
    with pytest.raises(ValueError, match=r"made for another width \(alpha\): its 'conv_pw_2' has 32 filters, this "
                                         r"model's 33"):
        MobileNetV1(input_shape=(64, 64, 3), alpha=0.26, include_top=False, weights=weights_025)
    # Keras 2's file named like Keras 3's: Keras's loader failed and the message suggested another alpha
    keras2 = tmp_path / "backbone.weights.h5"
    shutil.copy(weights_025, keras2)
    with pytest.raises(ValueError, match=r"is a Keras 2 weights file .* name it .*backbone\.h5"):
        MobileNetV1(input_shape=(64, 64, 3), alpha=0.25, include_top=False, weights=keras2)
    # Keras 3's file named .h5: "not a Keras weights file"
    keras3 = tmp_path / "mine.h5"
    MobileNetV1(input_shape=(64, 64, 3), alpha=0.25, include_top=False).save_weights(tmp_path / "mine.weights.h5")
    (tmp_path / "mine.weights.h5").rename(keras3)
    with pytest.raises(ValueError, match=r"is a Keras 3 weights file.*name it mine\.weights\.h5"):
        MobileNetV1(input_shape=(64, 64, 3), alpha=0.25, include_top=False, weights=keras3)


def test_backbone_file_into_a_model_with_a_head_warns_and_loads_the_backbone(weights_025):
    with pytest.warns(UserWarning, match="conv_preds"):
        model = MobileNetV1(input_shape=(96, 96, 3), alpha=0.25, classes=10, weights=weights_025)
    reference = MobileNetV1(input_shape=(96, 96, 3), alpha=0.25, include_top=False, weights=weights_025)
    for layer in reference.layers[1:]:
        for a, b in zip(layer.get_weights(), model.get_layer(layer.name).get_weights()):
            assert (a == b).all()


def test_a_file_that_is_not_hdf5(tmp_path):
    bad = tmp_path / "w.h5"
    bad.write_bytes(b"not an hdf5 file at all")
    with pytest.raises(ValueError, match="not a readable HDF5"):
        MobileNetV1(input_shape=(64, 64, 3), alpha=0.25, include_top=False, weights=bad)


def test_imagenet_without_network_says_where_to_put_the_file(tmp_path, monkeypatch):
    import keras

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: [Errno -2] Name or service not known")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(ValueError) as info:
        MobileNetV1(input_shape=(128, 128, 3), alpha=0.25, weights="imagenet")
    message = str(info.value)
    assert "could not download Keras's ImageNet weights" in message and "Name or service not known" in message
    assert "$KERAS_HOME/models" in message and "\n" not in message


def test_numpy_integers_are_accepted():
    import numpy as np

    model = MobileNetV1(input_shape=(np.int64(32), 32, 3), alpha=np.float32(0.25), classes=np.int32(3))
    assert model.output.shape[-1] == 3


def test_a_damaged_or_lambda_keras_file_is_named_in_one_line(tmp_path):
    import keras

    from mobilenet_keras.model import load_model_file

    (tmp_path / "garbage.keras").write_bytes(b"not a zip archive")
    with pytest.raises(ValueError, match=r"garbage.keras is damaged .*save or train the model again"):
        load_model_file(tmp_path / "garbage.keras")
    with pytest.raises(ValueError, match="does not exist"):
        load_model_file(tmp_path / "missing.keras")
    inputs = keras.Input((32, 32, 3))
    small = MobileNetV1(input_shape=(32, 32, 3), alpha=0.25, classes=3, weights=None)
    keras.Model(inputs, small(keras.layers.Lambda(lambda x: x * 1.0)(inputs))).save(tmp_path / "lambda.keras")
    with pytest.raises(ValueError, match="holds a Lambda layer"):
        load_model_file(tmp_path / "lambda.keras")
    small.save(tmp_path / "fine.keras")
    assert load_model_file(tmp_path / "fine.keras").count_params() == small.count_params()
    # a sound zip directory over damaged weights (a bad CRC): Keras's BadZipFile was an "internal error"
    import zipfile

    content = bytearray((tmp_path / "fine.keras").read_bytes())
    with zipfile.ZipFile(tmp_path / "fine.keras") as archive:
        member = archive.getinfo("model.weights.h5")
    start = member.header_offset + 30 + len(member.filename) + len(member.extra)  # its data, after its header
    middle = start + member.compress_size // 2
    content[middle:middle + 64] = bytes(64) if any(content[middle:middle + 64]) else b"\xff" * 64
    (tmp_path / "bad_crc.keras").write_bytes(bytes(content))
    with pytest.raises(ValueError, match=r"bad_crc.keras is damaged .*save or train the model again"):
        load_model_file(tmp_path / "bad_crc.keras")
    small.save_weights(tmp_path / "model.weights.h5")  # a sound file of another format is not "damaged"
    with pytest.raises(ValueError, match="is an HDF5 file .* not a .keras archive"):
        load_model_file(tmp_path / "model.weights.h5")
    import tflite

    tflite.convert(small, tmp_path / "converted.tflite", "float32")
    (tmp_path / "converted.tflite").rename(tmp_path / "converted.keras")  # a .tflite file under the wrong name
    with pytest.raises(ValueError, match="converted.keras is a TFLite file, not a .keras archive: name it .tflite"):
        load_model_file(tmp_path / "converted.keras")


def test_bias_correction_copies_a_model_with_a_lambda_layer():
    """Copying a model for bias correction must not trip Keras's safe mode on a Lambda already in memory."""
    import keras

    from tflite.bias_correction import bias_corrected

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Lambda(lambda t: t * 1.0, name="scale")(inputs)
    x = keras.layers.Conv2D(4, 3, name="extra_conv")(x)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    calibration = np.random.default_rng(0).uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32)
    corrected = bias_corrected(model, calibration)
    assert corrected.get_layer("scale") is model.get_layer("scale")  # shared, not deserialized
    assert corrected.get_layer("extra_conv") is not model.get_layer("extra_conv")


def test_bias_correction_from_measured_input_means_is_the_same_correction():
    """A float-prefix search measures the convolutions' input means once and corrects every prefix from them."""
    import keras

    from tflite.bias_correction import bias_corrected, convolution_input_means

    keras.utils.set_random_seed(1)
    model = MobileNetV1(input_shape=(32, 32, 3), alpha=0.25, classes=10, weights=None)
    calibration = np.random.default_rng(1).uniform(-1, 1, (8, 32, 32, 3)).astype(np.float32)
    means = convolution_input_means(model, calibration)
    assert "conv1" in means and "conv_pw_13" in means
    for skip in ((), ("conv1", "conv_dw_1")):
        measured = bias_corrected(model, calibration, skip=skip)
        given = bias_corrected(model, calibration, skip=skip, input_means=means)
        for a, b in zip(measured.get_weights(), given.get_weights()):
            np.testing.assert_array_equal(a, b)
        # and the correction did something: a skipped layer's BatchNorm keeps its beta, a corrected one moves
        moved = [not np.array_equal(given.get_layer(f"{name}_bn").get_weights()[1],
                                    model.get_layer(f"{name}_bn").get_weights()[1]) for name in ("conv1", "conv_pw_2")]
        assert moved == [not skip, True], (skip, moved)


@pytest.fixture(scope="module")
def head_and_backbone_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    head = MobileNetV1(input_shape=(32, 32, 3), alpha=0.25, classes=10, weights=None)
    backbone = MobileNetV1(input_shape=(32, 32, 3), alpha=0.25, include_top=False, weights=None)
    for name, model in (("head", head), ("backbone", backbone)):
        model.save_weights(folder / f"{name}.weights.h5")
        model.save(folder / f"{name}.keras")  # a whole model's file, as `weights=` also takes
    return folder


@pytest.mark.parametrize("file,kwargs,words", [
    ("head", dict(include_top=False), "holds the weights of 55 layers, this model (mobilenet_0.25_32) has 54"),
    ("head", dict(classes=5), "layer 'conv_preds' has weights of shapes [(1, 1, 256, 5), (5,)] but the file holds "
                              "[(1, 1, 256, 10), (10,)]"),
    ("backbone", dict(classes=10), "the file has no weights for layer 'conv_preds'"),
    ("head", dict(classes=10, alpha=0.5), "layer 'conv1' has weights of shapes [(3, 3, 3, 16)] but the file holds "
                                          "[(3, 3, 3, 8)]"),
    ("head", dict(classes=10, depth_multiplier=2), "layer 'conv_dw_1' has weights of shapes [(3, 3, 8, 2)] but"),
])
@pytest.mark.parametrize("suffix", [".weights.h5", ".keras"])
# nothing on the side: Keras's own warnings on the way are about the same mismatch
@pytest.mark.filterwarnings("error::UserWarning")
def test_a_weights_file_of_other_settings_is_one_line_naming_what_differs(head_and_backbone_files, file, kwargs, words,
                                                                          suffix):
    # Keras would load a file with a classifier into a model without one, skipping the head with a warning that
    # reads as if nothing had loaded (a .keras file: silently); and its shape errors run over many lines, the
    # variable's values among them
    with pytest.raises(ValueError) as info:
        MobileNetV1(input_shape=(32, 32, 3), weights=str(head_and_backbone_files / f"{file}{suffix}"),
                    **{"alpha": 0.25, **kwargs})
    message = str(info.value)
    assert words in message and "\n" not in message and "include_top and classes" in message, message


@pytest.mark.parametrize("suffix", [".weights.h5", ".keras"])
def test_a_weights_file_of_the_same_settings_loads(head_and_backbone_files, suffix):
    import keras

    path = head_and_backbone_files / f"backbone{suffix}"
    model = MobileNetV1(input_shape=(32, 32, 3), alpha=0.25, include_top=False, weights=str(path))
    assert model.output_shape == (None, 1, 1, 256)
    saved = keras.saving.load_model(path) if suffix == ".keras" else None
    if saved is not None:
        assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), saved.get_weights()))


DAMAGED_H5_WORKER = r"""
import sys, warnings
from mobilenet_keras import MobileNetV1

warnings.simplefilter("ignore")
for path in sys.argv[1:]:
    try:
        MobileNetV1(input_shape=(64, 64, 3), alpha=0.25, include_top=False, weights=path)
        outcome = "ok"
    except ValueError as exc:
        outcome = "ValueError " + str(exc).replace(chr(10), " ")
    except Exception as exc:  # anything else is a finding
        outcome = f"OTHER {type(exc).__name__}: {exc}"
    print(path, outcome, flush=True)
"""


def test_a_damaged_weights_file_is_a_one_line_value_error(weights_025, tmp_path):
    """Bytes overwritten inside the real 0.25 file escaped as h5py's KeyError ("bad object header version
    number"); HDF5 holds no checksums, so damage inside the weight data itself loads. In a subprocess: a crash
    in h5py must fail this test, not end pytest."""
    import subprocess
    import sys

    content = weights_025.read_bytes()
    rng = np.random.default_rng(0)
    paths = []
    for i in range(16):
        damaged = bytearray(content)
        if i % 4 == 3:
            damaged = damaged[:int(rng.integers(1, len(content)))]
        else:
            start = int(rng.integers(0, len(content) - 20_000))
            damaged[start:start + 20_000] = rng.integers(0, 256, 20_000, dtype=np.uint8).tobytes()
        path = tmp_path / f"{i:02d}.h5"
        path.write_bytes(bytes(damaged))
        paths.append(str(path))
    damaged = bytearray(content)  # the helper's case: 20 kB overwritten in the middle
    damaged[len(content) // 2:len(content) // 2 + 20_000] = b"\xff" * 20_000
    (tmp_path / "middle.h5").write_bytes(bytes(damaged))
    paths.append(str(tmp_path / "middle.h5"))
    result = subprocess.run([sys.executable, "-c", DAMAGED_H5_WORKER, *paths], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    outcomes = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert sorted(outcomes) == sorted(paths), result.stdout
    assert not [o for o in outcomes.values() if o.startswith("OTHER")], outcomes
    assert any(o.startswith("ValueError") for o in outcomes.values()), outcomes


def _data_offset(path, name_end: str) -> tuple[int, int]:
    """(offset, size) in the file of the first dataset whose name ends in `name_end`, as HDF5 laid it out."""
    import h5py

    found = []

    def visit(name, item):
        if not found and isinstance(item, h5py.Dataset) and name.endswith(name_end):
            found.append((item.id.get_offset(), item.id.get_storage_size()))

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    assert found and found[0][0] is not None, name_end
    return found[0]


@pytest.mark.parametrize("filler", ["random", "ff"])
@pytest.mark.parametrize("fmt", [".h5", ".weights.h5"])
def test_weights_whose_data_bytes_are_damaged_are_refused(weights_025, tmp_path, filler, fmt):
    # HDF5 keeps no checksum: bytes damaged inside a kernel's data loaded into a model that answered nonsense
    import shutil

    if fmt == ".h5":
        source = tmp_path / "source.h5"
        shutil.copy(weights_025, source)
        where = "conv_pw_5/kernel:0"
    else:
        source = tmp_path / "source.weights.h5"
        MobileNetV1(input_shape=(64, 64, 3), alpha=0.25, include_top=False, weights=str(weights_025)).save_weights(
            source)
        where = "layers/conv2d_5/vars/0"  # Keras 3 names by class: conv1 is conv2d, conv_pw_5 conv2d_5
    offset, size = _data_offset(source, where)
    damaged = bytearray(source.read_bytes())
    rng = np.random.default_rng(1)
    length = min(4096, size)
    damaged[offset:offset + length] = (rng.integers(0, 256, length, dtype=np.uint8).tobytes() if filler == "random"
                                       else b"\xff" * length)
    path = tmp_path / f"damaged{fmt}"
    path.write_bytes(bytes(damaged))
    with pytest.raises(ValueError, match=r"gives conv_pw_5/kernel NaN or infinite values: the file is damaged"):
        MobileNetV1(input_shape=(64, 64, 3), alpha=0.25, include_top=False, weights=str(path))
    MobileNetV1(input_shape=(64, 64, 3), alpha=0.25, include_top=False, weights=str(source))  # the sound file loads


def test_an_input_tensor_is_checked_and_named_as_its_shape():
    """An input_tensor skipped the size checks (16 px reached Keras's "output size would be zero or negative")
    and a 64 px model was named mobilenet_0.25_224."""
    import keras

    with pytest.raises(ValueError, match="at least 32"):
        MobileNetV1(input_tensor=keras.Input((16, 16, 3)), alpha=0.25, include_top=False)
    with pytest.raises(ValueError, match=r"differs from input_tensor's shape \(64, 64, 3\)"):
        MobileNetV1(input_tensor=keras.Input((64, 64, 3)), input_shape=(96, 96, 3), alpha=0.25)
    model = MobileNetV1(input_tensor=keras.Input((64, 64, 3)), alpha=0.25, classes=3)
    assert model.name == "mobilenet_0.25_64" and model.input_shape == (None, 64, 64, 3)
    import numpy as np

    import tf_keras

    from mobilenet_keras.model import build_network

    for data in (np.zeros((1, 64, 64, 3), np.float32), "x"):  # an array printed itself in a 97-line error
        with pytest.raises(ValueError, match=r"input_tensor must be a Keras tensor \(keras.Input"):
            MobileNetV1(input_tensor=data, alpha=0.25, include_top=False)
        with pytest.raises(ValueError, match=r"input_tensor must be a Keras tensor"):  # tf_keras raises its own
            build_network(tf_keras, input_tensor=data, alpha=0.25, include_top=False)
    from mobilenet_keras.features import feature_extractor

    for wrong in (None, "model.keras"):
        with pytest.raises(TypeError, match="feature_extractor takes a Keras model"):
            feature_extractor(wrong)
    assert MobileNetV1(input_shape=(32, 32, 3), alpha=0.25, classes=1, classifier_activation="sigmoid",
                       include_top=np.True_).output_shape == (None, 1)
    scaled = keras.layers.Rescaling(1 / 127.5, offset=-1)(keras.Input((None, None, 3)))
    assert MobileNetV1(input_tensor=scaled, alpha=0.25, include_top=False).output_shape == (None, None, None, 256)
