"""The builder against keras.applications.MobileNet: names, shapes, counts, weights, outputs."""

from __future__ import annotations

import numpy as np
import pytest
import keras

from mobilenet_keras import MobileNetV1, complexity, feature_extractor, preprocess_input
from mobilenet_keras import specs
from tests.conftest import resize_batch

ALPHAS = (0.25, 0.5, 0.75, 1.0)


def _contract_names(model):
    # keras.applications leaves the input and pooling layers to Keras's auto-naming (with counters).
    return [layer.name for layer in model.layers
            if not layer.name.startswith(("input_layer", "global_average_pooling2d"))]


@pytest.mark.parametrize("alpha", ALPHAS)
def test_same_layers_shapes_and_counts_as_keras_applications(alpha):
    ours = MobileNetV1(alpha=alpha)
    ref = keras.applications.MobileNet(alpha=alpha, weights=None)
    assert ours.count_params() == ref.count_params()
    assert _contract_names(ours) == _contract_names(ref)
    assert [tuple(w.shape) for w in ours.weights] == [tuple(w.shape) for w in ref.weights]
    # weights move both ways
    rng = np.random.default_rng(0)
    values = [rng.normal(size=w.shape).astype("float32") for w in ref.get_weights()]
    ours.set_weights(values)
    ref.set_weights(ours.get_weights())
    for a, b in zip(ref.get_weights(), values):
        np.testing.assert_array_equal(a, b)


def test_parameter_count_of_the_paper_model():
    assert MobileNetV1().count_params() == 4_253_864


def test_spec_table_is_table_1_of_the_paper():
    assert len(specs.BLOCKS) == 13
    assert [b.stride for b in specs.BLOCKS].count(2) == 4
    assert specs.BLOCKS[-1].filters == 1024
    names = {layer.name for layer in MobileNetV1(alpha=0.25, input_shape=(64, 64, 3)).layers}
    for b in specs.BLOCKS:
        for suffix in ("", "_bn", "_relu"):
            assert f"conv_dw_{b.block_id}{suffix}" in names and f"conv_pw_{b.block_id}{suffix}" in names
        assert (f"conv_pad_{b.block_id}" in names) == (b.stride == 2)


def _paper_multiply_adds(alpha: float, size: int, classes: int = 1000) -> int:
    """Section 3.2 of the paper: D_K*D_K*M*D_F*D_F + M*N*D_F*D_F per block, plus the stem and the FC."""
    side = size // 2
    channels = int(32 * alpha)
    total = side * side * 3 * 3 * 3 * channels
    for block in specs.BLOCKS:
        side = side // block.stride
        out = int(block.filters * alpha)
        total += 9 * channels * side * side + channels * out * side * side
        channels = out
    return total + channels * classes


@pytest.mark.parametrize(
    "alpha,size,published_millions",
    [(1.0, 224, 569), (0.25, 128, 14), (0.5, 160, 77), (0.75, 192, None)],
)
def test_multiply_adds_match_the_paper(alpha, size, published_millions):
    counted = complexity(alpha, size)
    assert counted.multiply_adds == _paper_multiply_adds(alpha, size)
    if published_millions is not None:
        assert round(counted.multiply_adds / 1e6) == published_millions
    if alpha == 1.0:
        assert round(counted.trainable_parameters / 1e6, 1) == 4.2


def test_multiply_adds_at_0_75_192_follow_the_paper_width_table():
    # TF-slim's table says 233M here, which no layer count reproduces; the paper's own
    # 0.75/224 figure (325M) scaled by (192/224)^2 gives the count this package reports.
    counted = complexity(0.75, 192).multiply_adds / 1e6
    assert abs(counted - 325 * (96 / 112) ** 2) < 1.5


def test_multiply_adds_of_wrapped_models_and_other_layers():
    """A backbone inside a Sequential counted 0 (only top-level layers were read), as did a SeparableConv2D; a
    Dense on (batch, positions, features) counted one position; grouped convolutions counted every group whole."""
    from mobilenet_keras import count_complexity

    backbone = MobileNetV1(input_shape=(64, 64, 3), alpha=0.25, include_top=False, pooling="avg")
    alone = count_complexity(backbone).multiply_adds
    assert alone > 3_000_000
    wrapped = keras.Sequential([keras.Input((64, 64, 3)), backbone, keras.layers.Dense(10)])
    assert count_complexity(wrapped).multiply_adds == alone + 256 * 10
    cases = [(keras.layers.SeparableConv2D(32, 3, padding="same"), (8, 8, 16), 64 * 16 * 9 + 64 * 16 * 32),
             (keras.layers.Dense(10), (4, 8), 4 * 8 * 10),
             (keras.layers.Conv2D(32, 3, padding="same", groups=4), (8, 8, 16), 64 * 32 * 9 * 4)]
    for layer, shape, expected in cases:
        inputs = keras.Input(shape)
        assert count_complexity(keras.Model(inputs, layer(inputs))).multiply_adds == expected, layer
    inputs = keras.Input((10,))  # a layer with a kernel it can't count is named, not counted as 0
    with pytest.raises(ValueError, match="'einsum_dense' \\(EinsumDense\\) has a kernel"):
        count_complexity(keras.Model(inputs, keras.layers.EinsumDense("ab,bc->ac", output_shape=4)(inputs)))


@pytest.mark.parametrize("size", [224, 160, 128])
def test_real_imagenet_weights_give_keras_applications_outputs(weights_025, photos, size):
    x = preprocess_input(resize_batch(photos.values(), size))
    ours = MobileNetV1(input_shape=(size, size, 3), alpha=0.25, include_top=False, weights=weights_025)
    ref = keras.applications.MobileNet(input_shape=(size, size, 3), alpha=0.25, include_top=False,
                                       weights=str(weights_025))
    got, want = ours.predict(x, verbose=0), ref.predict(x, verbose=0)
    assert np.abs(want).max() > 0.1  # a real activation map, not zeros
    assert np.abs(got - want).max() < 1e-5


def test_any_size_non_square_and_unknown_size():
    model = MobileNetV1(input_shape=(96, 160, 3), alpha=0.25, include_top=False)
    assert model.output.shape[1:3] == (3, 5)
    flexible = MobileNetV1(alpha=0.25, include_top=False, pooling="avg")
    assert flexible.input.shape[1:] == (None, None, 3)
    out = flexible.predict(np.zeros((1, 64, 96, 3), "float32"), verbose=0)
    assert out.shape == (1, 256)


@pytest.mark.parametrize("output_stride", [16, 8])
def test_output_stride_dilates_and_keeps_imagenet_weights(weights_025, photos, output_stride):
    size = 128
    dense = MobileNetV1(input_shape=(size, size, 3), alpha=0.25, include_top=False, weights=weights_025,
                        output_stride=output_stride)
    assert dense.output.shape[1:3] == (size // output_stride, size // output_stride)
    assert max(dense.get_layer("conv_dw_13").dilation_rate) == 32 // output_stride
    # The dilated network computes the standard one's features at a denser sampling: at the
    # sampling points the standard network sees, the two must agree closely.
    x = preprocess_input(resize_batch(photos.values(), size))
    standard = MobileNetV1(input_shape=(size, size, 3), alpha=0.25, include_top=False, weights=weights_025)
    # Same kernels everywhere.
    for layer in standard.layers:
        if not layer.weights:
            continue
        for a, b in zip(layer.get_weights(), dense.get_layer(layer.name).get_weights()):
            np.testing.assert_array_equal(a, b)
    # Up to the first skipped stride the two networks are the same function.
    first_dilated = next(p for p in specs.plan_blocks(output_stride) if p.stride != p.spec.stride).spec.block_id
    cut = f"conv_pw_{first_dilated - 1}_relu"
    a = keras.Model(standard.input, standard.get_layer(cut).output).predict(x, verbose=0)
    b = keras.Model(dense.input, dense.get_layer(cut).output).predict(x, verbose=0)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_feature_extractor_levels():
    model = MobileNetV1(input_shape=(128, 96, 3), alpha=0.25, include_top=False)
    features = feature_extractor(model)
    maps = features.predict(np.zeros((1, 128, 96, 3), "float32"), verbose=0)
    assert sorted(maps, key=lambda k: int(k.split("_")[1])) == ["stride_4", "stride_8", "stride_16", "stride_32"]
    for key, value in maps.items():
        stride = int(key.split("_")[1])
        assert value.shape[1:3] == (128 // stride, 96 // stride)
    dilated = feature_extractor(MobileNetV1(input_shape=(128, 128, 3), alpha=0.25, include_top=False,
                                            output_stride=16))
    assert set(dilated.output) == {"stride_4", "stride_8", "stride_16"}
    assert tuple(dilated.output["stride_16"].shape[1:3]) == (8, 8)


def test_save_and_reload_in_safe_mode(tmp_path):
    model = MobileNetV1(input_shape=(64, 64, 3), alpha=0.25, classes=5)
    x = np.random.default_rng(1).uniform(-1, 1, (2, 64, 64, 3)).astype("float32")
    path = tmp_path / "m.keras"
    model.save(path)
    again = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(model.predict(x, verbose=0), again.predict(x, verbose=0))


def test_no_tf_ops_nor_lambda_layers():
    model = MobileNetV1(input_shape=(64, 64, 3), alpha=0.25)
    kinds = {type(layer).__name__ for layer in model.layers}
    assert kinds <= {"InputLayer", "Conv2D", "BatchNormalization", "ReLU", "ZeroPadding2D", "DepthwiseConv2D",
                     "GlobalAveragePooling2D", "Dropout", "Reshape", "Activation"}


def test_preprocess_input_range():
    x = np.array([0.0, 127.5, 255.0])
    np.testing.assert_allclose(preprocess_input(x), [-1.0, 0.0, 1.0])


def test_complexity_is_the_function_in_any_import_order():
    """`from mobilenet_keras import count_complexity, complexity` gave the submodule `complexity` (a package's
    attribute of a submodule's name is the submodule once it is imported): calling it failed."""
    import subprocess
    import sys

    code = ("from mobilenet_keras import count_complexity, complexity\n"
            "import mobilenet_keras\n"
            "print(callable(complexity), callable(mobilenet_keras.complexity),\n"
            "      complexity(alpha=0.25).multiply_adds > 0)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["True", "True", "True"], result.stdout
