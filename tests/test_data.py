"""Training datasets: the embedded digits, image folders, and bad folders with clear messages."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mobilenet_keras.training import datasets


def _folder(root, classes: dict[str, int], size=(40, 30), mode="RGB"):
    rng = np.random.default_rng(0)
    for name, count in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).convert(mode).save(root / name / f"{i}.png")
    return root


def test_digits_is_real_and_scaled():
    loaded = datasets.digits(image_size=32, batch_size=64, augment=False)
    assert loaded.class_names == [str(d) for d in range(10)]
    assert loaded.num_train + loaded.num_validation == 1797
    x, y = next(iter(loaded.train))
    assert tuple(x.shape[1:]) == (32, 32, 3) and tuple(y.shape[1:]) == (10,)
    assert float(np.min(x)) >= -1.0 and float(np.max(x)) <= 1.0 and float(np.max(x)) > 0.5
    images, labels = loaded.validation_arrays()
    assert len(images) == loaded.num_validation and set(labels) == set(range(10))


def test_image_folder_with_grayscale_and_rgba(tmp_path):
    root = _folder(tmp_path / "d", {"a": 6}, mode="L")
    _folder(root, {"b": 6}, mode="RGBA")
    loaded = datasets.image_folder(root, image_size=32, batch_size=4, validation_split=0.25)
    assert loaded.class_names == ["a", "b"]
    x, y = next(iter(loaded.train))
    assert tuple(x.shape[1:]) == (32, 32, 3)
    assert loaded.num_train + loaded.num_validation == 12


def test_same_seed_same_split(tmp_path):
    root = _folder(tmp_path / "d", {"a": 10, "b": 10})
    first = datasets.image_folder(root, image_size=32, augment=False, cache=False).validation_arrays()
    second = datasets.image_folder(root, image_size=32, augment=False, cache=False).validation_arrays()
    np.testing.assert_array_equal(np.sort(first[0].reshape(len(first[0]), -1).sum(1)),
                                  np.sort(second[0].reshape(len(second[0]), -1).sum(1)))


@pytest.mark.parametrize("setup,words", [
    (lambda root: root.mkdir(), "no images"),
    (lambda root: _folder(root, {"only": 5}), "only one class"),
    (lambda root: (_folder(root, {"a": 3}), (root / "b").mkdir()), "hold no images"),
])
def test_bad_folders(tmp_path, setup, words):
    root = tmp_path / "d"
    setup(root)
    with pytest.raises(ValueError, match=words):
        datasets.image_folder(root, image_size=32)


def test_a_corrupt_file_is_named(tmp_path):
    root = _folder(tmp_path / "d", {"a": 3, "b": 3})
    (root / "b" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    with pytest.raises(ValueError, match="broken.jpg"):
        datasets.image_folder(root, image_size=32)


def test_missing_folder_points_at_digits(tmp_path):
    with pytest.raises(ValueError, match="does not exist.*digits"):
        datasets.load(tmp_path / "nope")
