"""Training datasets: the embedded digits, image folders, and bad folders with clear messages."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys

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


def _bomb_png(path, side=14000):
    """A valid 1-bit grayscale PNG of side x side pixels (about 25 KB): PIL refuses it as a
    decompression bomb at open, before decoding, so the test is quick."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    pixels = zlib.compress(row * side, 9)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", pixels) + chunk(b"IEND", b""))
    return path


def _one_line(exc_info) -> str:
    message = str(exc_info.value)
    assert "\n" not in message, message
    return message


def test_two_images_per_class_names_the_empty_validation_split(tmp_path):
    root = _folder(tmp_path / "d", {"a": 2, "b": 2})
    with pytest.raises(ValueError) as info:
        datasets.image_folder(root, image_size=32)
    message = _one_line(info)
    assert "validation split" in message and "is empty" in message and "at least 5 images" in message
    assert "No images found" not in message


def test_split_counts_match_keras():
    from mobilenet_keras.training.datasets import check_split

    assert check_split(10, 2, 0.2, "d") == (8, 2)
    assert check_split(5, 2, 0.2, "d") == (4, 1)


def test_a_decompression_bomb_is_named_in_one_line(tmp_path):
    root = _folder(tmp_path / "d", {"a": 3, "b": 3})
    _bomb_png(root / "a" / "huge.png")
    with pytest.raises(ValueError) as info:
        datasets.image_folder(root, image_size=32)
    message = _one_line(info)
    assert "huge.png" in message and "too large" in message


def test_a_tiff_named_png_is_named_even_in_a_nested_folder(tmp_path):
    root = _folder(tmp_path / "d", {"a": 3, "b": 3})
    (root / "b" / "deeper").mkdir()
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(root / "b" / "deeper" / "scan.png", format="TIFF")
    with pytest.raises(ValueError) as info:
        datasets.image_folder(root, image_size=32)
    message = _one_line(info)
    assert "scan.png" in message and "TIFF" in message and "JPEG, PNG, GIF, BMP and still WebP" in message


def test_a_16_bit_png_and_nested_images_are_read(tmp_path):
    root = _folder(tmp_path / "d", {"a": 4, "b": 4})
    (root / "a" / "more").mkdir()
    Image.fromarray((np.random.default_rng(1).random((20, 20)) * 65535).astype(np.uint16)).save(
        root / "a" / "more" / "deep16.png")
    loaded = datasets.image_folder(root, image_size=32, batch_size=4, validation_split=0.25, augment=False)
    assert loaded.num_train + loaded.num_validation == 9  # the nested file counts, as Keras reads it


@pytest.mark.parametrize("name,words", [(" a", "whitespace"), ("a ", "whitespace"), ("a\nb", "line break")])
def test_class_names_that_labels_txt_cant_hold(tmp_path, name, words):
    root = _folder(tmp_path / "d", {name: 3, "b": 3})
    with pytest.raises(ValueError) as info:
        datasets.image_folder(root, image_size=32)
    message = str(info.value)
    assert words in message and str(root) in message and "labels.txt" in message


def test_decoded_images_that_dont_fit_in_memory_go_to_a_cache_file(tmp_path):
    root = _folder(tmp_path / "d", {"a": 6, "b": 6})
    in_memory = datasets.image_folder(root, image_size=32, validation_split=0.25, augment=False)
    on_disk = datasets.image_folder(root, image_size=32, validation_split=0.25, augment=False, memory_limit=0,
                                    cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(in_memory.validation_arrays()[0], on_disk.validation_arrays()[0])
    assert any((tmp_path / "cache").iterdir())  # the tf.data cache files
    x, _ = next(iter(on_disk.train))
    assert tuple(x.shape[1:]) == (32, 32, 3)


def test_a_folder_larger_than_the_memory_budget_is_checked_without_being_held_whole(tmp_path):
    # 80 flat 4,000 x 3,000 PNGs: 3.5 MB on disk, 2.9 GB decoded. With a 50 MB budget they go to the cache
    # file; the check before it decoded them all into one list first (peak 3.5 GB), now it lets each go.
    # One encoded image per class, written 40 times: encoding took 31 of the test's 57 s, and the decoder
    # sees the same bytes either way (peak 775 MiB both ways, AMD EPYC 2026-12-08).
    for name in "ab":
        (tmp_path / "d" / name).mkdir(parents=True)
        flat = io.BytesIO()
        Image.new("RGB", (4000, 3000), (0, 100, 200 if name == "a" else 50)).save(flat, format="PNG")
        for i in range(40):
            (tmp_path / "d" / name / f"{i}.png").write_bytes(flat.getvalue())
    decoded_mib = 80 * 4000 * 3000 * 3 // (1 << 20)
    script = ("import sys, warnings; warnings.simplefilter('ignore')\n"
              "from mobilenet_keras.training import datasets\n"
              "data = datasets.image_folder(sys.argv[1], image_size=32, memory_limit=50 << 20,\n"
              "                             cache_dir=sys.argv[2])\n"
              "assert data.num_train + data.num_validation == 80\n"
              # VmHWM: this process's peak (ru_maxrss starts from pytest's own, carried across fork and exec)
              "print(int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) // 1024)")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "d"), str(tmp_path / "cache")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    peak_mib = int(done.stdout.split()[-1])
    assert peak_mib < decoded_mib / 2, (peak_mib, decoded_mib)  # TensorFlow itself, a few images in flight


def test_calibration_does_not_read_through_the_training_cache_file(tmp_path, capfd):
    # Reading a few images through a cache file that is not complete makes tf.data throw the part it wrote
    # away (and log that it did): calibration decodes its images itself, and gets the training images unaugmented.
    root = _folder(tmp_path / "d", {"a": 8, "b": 8})
    on_disk = datasets.image_folder(root, image_size=32, batch_size=2, validation_split=0.25, memory_limit=0,
                                    cache_dir=tmp_path / "cache")
    # the plain batches' graph reads no cache (the training batches' does): holds whatever the log level
    assert b"CacheDataset" in on_disk.train._as_serialized_graph().numpy()
    assert b"CacheDataset" not in on_disk.train_plain._as_serialized_graph().numpy()
    capfd.readouterr()
    calibration = on_disk.calibration_arrays(3)
    assert "did not fully read the dataset being cached" not in capfd.readouterr().err
    in_memory = datasets.image_folder(root, image_size=32, batch_size=2, validation_split=0.25)
    train_images = {image.tobytes() for image in in_memory.calibration_arrays(12)}
    assert calibration.shape == (3, 32, 32, 3) and all(image.tobytes() in train_images for image in calibration)


def test_images_of_different_sizes_are_kept_at_their_own_size(tmp_path):
    root = _folder(tmp_path / "d", {"a": 4}, size=(40, 30))
    _folder(root, {"b": 4}, size=(25, 50))
    loaded = datasets.image_folder(root, image_size=32, batch_size=8, validation_split=0.25)
    x, y = next(iter(loaded.train))
    assert tuple(x.shape[1:]) == (32, 32, 3) and float(np.min(x)) >= -1.0 and float(np.max(x)) <= 1.0


def test_crop_scale_sets_the_training_crops_and_is_recorded(tmp_path):
    from mobilenet_keras.images import resize_image

    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    # whole-image "crops" without a flip: exactly the plain resize
    whole = datasets.augment_image(image, 24, flip=False, crop_scale=(1.0, 1.0))
    np.testing.assert_array_equal(np.asarray(whole), np.asarray(resize_image(image, (24, 24))))
    # the default crops differ from it (a random crop of 85-100% of each side, almost never the whole image)
    cropped = [np.asarray(datasets.augment_image(image, 24, flip=False)) for _ in range(5)]
    assert any(np.abs(c - np.asarray(whole)).max() > 0 for c in cropped)

    root = _folder(tmp_path / "d", {"a": 6, "b": 6})
    loaded = datasets.image_folder(root, image_size=24, batch_size=4, validation_split=0.25, crop_scale=(0.7, 0.9))
    assert loaded.augmentation == {"random_crop_sides": [0.7, 0.9], "horizontal_flip": True}
    assert datasets.image_folder(root, image_size=24, augment=False, validation_split=0.25).augmentation is None


def test_an_images_augmentation_follows_from_its_seed():
    import tensorflow as tf

    image = np.random.default_rng(2).integers(0, 256, (30, 40, 3), dtype=np.uint8)

    def augmented(seed):
        return np.asarray(datasets.augment_image(image, 24, crop_scale=(0.5, 1.0), seed=tf.constant(seed, tf.int64)))

    # the same seed, the same crop and flip, whatever else ran in between; other seeds, other crops
    first = augmented([7, 1])
    np.asarray(datasets.augment_image(image, 24))  # a draw from the global random state in between
    np.testing.assert_array_equal(augmented([7, 1]), first)
    assert sum(np.abs(augmented([7, k]) - first).max() > 0 for k in range(2, 7)) >= 4


def test_training_batches_are_the_same_for_the_same_seed(tmp_path):
    """Crops and flips follow the loader's seed: two loads give the same batches, epoch after epoch (each epoch
    new ones), another seed other ones. The folder holds one image many times, so that neither the split nor
    the shuffle can make two batches differ: only the augmentation can."""
    import keras

    image = Image.fromarray(np.random.default_rng(3).integers(0, 256, (30, 40, 3), dtype=np.uint8))
    for name in ("a", "b"):
        (tmp_path / "d" / name).mkdir(parents=True)
        for i in range(12):
            image.save(tmp_path / "d" / name / f"{i}.png")

    def two_epochs(seed):
        loaded = datasets.image_folder(tmp_path / "d", image_size=24, batch_size=6, validation_split=0.25, seed=seed)
        repeated = iter(loaded.train.repeat())
        return [np.asarray(next(repeated)[0]) for _ in range(2 * 3)]  # 18 training images: 3 batches an epoch

    keras.utils.set_random_seed(11)  # TensorFlow's global seed as the loader is built: set it for a repeat in-process
    first = two_epochs(1)
    keras.utils.set_random_seed(11)
    again = two_epochs(1)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert np.abs(first[0] - first[3]).max() > 0  # the second epoch's crops are not the first's
    keras.utils.set_random_seed(11)
    other = two_epochs(2)
    assert all(np.abs(a - c).max() > 0 for a, c in zip(first, other))


@pytest.mark.parametrize("crop_scale, words", [((0.0, 1.0), "0 < low <= high <= 1"), ((0.9, 0.8), "(0.9, 0.8)"),
                                                ((0.5, 1.5), "0 < low <= high <= 1"), (0.5, "two numbers")])
def test_a_bad_crop_scale_is_named(tmp_path, crop_scale, words):
    root = _folder(tmp_path / "d", {"a": 4, "b": 4})
    with pytest.raises(ValueError, match="crop_scale") as error:
        datasets.image_folder(root, crop_scale=crop_scale)
    assert words in str(error.value)


def test_the_cli_takes_a_crop_scale_and_names_a_bad_one(capsys):
    from mobilenet_keras.app.cli import build_parser, data_options

    args = build_parser().parse_args(["train", "--crop-scale", "0.7,1"])
    assert data_options(args) == {"crop_scale": (0.7, 1.0)}
    assert data_options(build_parser().parse_args(["train"])) == {}
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(["pipeline", "--crop-scale", "0.7"])
    assert stop.value.code == 2 and "LOW,HIGH" in capsys.readouterr().err


def test_a_load_never_reads_the_cache_files_of_another(tmp_path):
    # tf.data reads a complete cache file in place of the images: a second load given the same cache_dir
    # (other images, same names and counts) must get its own images, not the first load's
    first = _folder(tmp_path / "first", {"a": 6, "b": 6})
    second = tmp_path / "second"
    shutil.copytree(first, second)
    for png in second.rglob("*.png"):
        Image.fromarray(255 - np.asarray(Image.open(png))).save(png)
    on_disk = dict(image_size=32, validation_split=0.25, augment=False, memory_limit=0, cache_dir=tmp_path / "cache")
    datasets.image_folder(first, **on_disk).validation_arrays()  # read to the end: its cache file is complete
    read = datasets.image_folder(second, **on_disk).validation_arrays()[0]
    expected = datasets.image_folder(second, image_size=32, validation_split=0.25, augment=False).validation_arrays()[0]
    np.testing.assert_array_equal(read, expected)


def test_cache_files_are_removed_when_the_process_ends(tmp_path):
    root = _folder(tmp_path / "d", {"a": 6, "b": 6})
    cache = tmp_path / "cache"
    script = ("import sys\nfrom mobilenet_keras.training import datasets\n"
              "loaded = datasets.image_folder(sys.argv[1], image_size=32, validation_split=0.25, memory_limit=0, "
              "cache_dir=sys.argv[2])\nloaded.validation_arrays()\nnext(iter(loaded.train))\n"
              "print(sum(1 for f in __import__('pathlib').Path(sys.argv[2]).rglob('*') if f.is_file()))\n")
    done = subprocess.run([sys.executable, "-c", script, str(root), str(cache)], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.split()[-1]) > 0  # the cache files were there while it ran
    assert list(cache.iterdir()) == []


def test_every_bad_file_is_named_in_one_message(tmp_path):
    # a header the decoder refuses and a JPEG cut short (found only by decoding): both in the one error
    root = _folder(tmp_path / "d", {"a": 4, "b": 4})
    (root / "a" / "empty.jpg").write_bytes(b"")
    (root / "a" / "text.png").write_text("not a picture")
    good = root / "b" / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(good)
    (root / "b" / "cut.jpg").write_bytes(good.read_bytes()[:300])
    with pytest.raises(ValueError) as info:
        datasets.image_folder(root, image_size=32)
    message = _one_line(info)
    assert "3 file(s) are not images" in message
    assert all(name in message for name in ("empty.jpg", "text.png", "cut.jpg")), message
    assert "function_node" not in message


def test_links_that_loop_and_fifos_are_not_read_as_images(tmp_path):
    import os

    root = _folder(tmp_path / "d", {"a": 3, "b": 3})
    (root / "a" / "loop").symlink_to(root / "a")  # back to itself
    (root / "b" / "up").symlink_to(root)  # up to the data folder: the other class, and this one again
    os.mkfifo(root / "a" / "pipe.jpg")  # a reader would block on it
    with pytest.warns(UserWarning, match="not regular files .*pipe.jpg"):
        found = datasets.scan_folder(root)
    assert sorted(p.name for p in found.paths) == sorted(["0.png", "1.png", "2.png"] * 2)
    assert found.labels == [0, 0, 0, 1, 1, 1]


def test_images_left_out_are_named_in_a_warning(tmp_path):
    root = _folder(tmp_path / "d", {"a": 3, "b": 3})
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "a" / "new.tiff")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "stray.png")  # beside the class folders
    with pytest.warns(UserWarning) as seen:
        found = datasets.scan_folder(root)
    messages = " ".join(str(w.message) for w in seen)
    assert "new.tiff" in messages and "TensorFlow's decoder can't read" in messages
    assert "stray.png" in messages and "belong to no class" in messages
    assert len(found.paths) == 6


@pytest.mark.parametrize("split", ["0.2", None, 0, 1, float("nan"), True])
def test_a_bad_validation_split_is_named(tmp_path, split):
    root = _folder(tmp_path / "d", {"a": 3, "b": 3})
    for source in (root, "digits"):
        with pytest.raises(ValueError, match="validation_split must be a number between 0 and 1"):
            datasets.load(str(source), image_size=32, validation_split=split)


def test_the_cli_takes_a_validation_split(tmp_path, capsys):
    from mobilenet_keras.app.cli import build_parser, data_options

    assert data_options(build_parser().parse_args(["train", "--validation-split", "0.5"])) == {"validation_split": 0.5}
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--validation-split", "1.5"])
    assert "--validation-split: must be a fraction between 0 and 1" in capsys.readouterr().err
    root = _folder(tmp_path / "d", {"a": 2, "b": 2})  # the error that tells to raise the fraction: now it can be
    with pytest.raises(ValueError, match="or a larger validation fraction"):
        datasets.load(str(root), image_size=32)
    assert datasets.load(str(root), image_size=32, validation_split=0.5).num_validation == 2
