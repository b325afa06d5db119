"""Image datasets for training: a folder of class subfolders, or the embedded `digits` set.

Every dataset yields `(images, one_hot_labels)` batches with images already in the model's input
convention ([-1, 1]).

The input pipeline: each file is decoded once, with TensorFlow's decoders (`mobilenet_keras.images.
decode_image`, the same decoder predict, calibration and the SavedModel use), in a parallel tf.data
pass. The decoded images are kept in memory at their own size when they fit (`memory_limit`),
otherwise in a tf.data cache file. Each epoch then shuffles, crops and resizes on the fly in parallel
`map` calls (random resized crop and, optionally, a horizontal flip for training; the plain
`images.resize_image` for validation) and prefetches: no Python runs per image, and the exported model
stays free of augmentation.

Bad files: a folder is checked before training. Files that are not readable images stop the run with
a message naming them (remove or convert them); grayscale, palette, 16-bit, CMYK and RGBA images are
converted to RGB as they are decoded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mobilenet_keras.images import IMAGE_SUFFIXES, decoder_reason, header_problem, decode_files, scan_folder
from mobilenet_keras.preprocessing import INPUT_OFFSET, INPUT_SCALE

DIGITS = "digits"


@dataclass
class ImageData:
    """Training and validation batches plus what a report needs about them."""

    train: object  # tf.data.Dataset of (float images in [-1, 1], one-hot labels), augmented
    validation: object
    train_plain: object  # the training batches without augmentation (calibration draws from these)
    class_names: list[str]
    image_size: int
    num_train: int
    num_validation: int
    source: str
    #: How the training batches are augmented (run.json records it): `augmentation(...)`; None: not at all.
    augmentation: dict | None = None
    #: The fraction held out for validation (run.json records it, so that later commands split the same way).
    validation_split: float | None = None
    #: `files_fingerprint` of the training and the validation files, in split order (None: the embedded digits).
    fingerprint: str | None = None
    #: The batch size the batches were made with (`train` checks it against its config's).
    batch_size: int | None = None

    def validation_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """All validation images and integer labels as numpy arrays (for verification and reports)."""
        return _arrays(self.validation)

    def calibration_arrays(self, count: int) -> np.ndarray:
        """Up to `count` training images, not augmented, for quantization calibration."""
        return _arrays(self.train_plain, count)[0]


def _arrays(dataset, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    images, labels, seen = [], [], 0
    for x, y in dataset:
        images.append(np.asarray(x))
        labels.append(np.argmax(np.asarray(y), axis=-1))
        seen += len(images[-1])
        if limit is not None and seen >= limit:
            break
    return np.concatenate(images)[:limit], np.concatenate(labels)[:limit]


#: Random resized crop: each side keeps 85% to 100% of the image (independently), anywhere inside it.
#: A mild zoom and shift: transfer learning runs few epochs, and on a 5,000-image CIFAR-10 slice (128 px,
#: 1 head + 2 fine-tuning epochs, 556 held out, one seed) 65-100% crops gave 68.9%, 85-100% 73.0%, flips
#: alone 73.7%: lighter is better in a short run, and 85% keeps some shift and zoom for longer ones.
CROP_SCALE = (0.85, 1.0)


def check_crop_scale(crop_scale) -> tuple[float, float]:
    """`crop_scale` as (low, high) floats, or a ValueError that says what a valid one is."""
    try:
        low, high = (float(v) for v in crop_scale)
    except (TypeError, ValueError):
        raise ValueError(f"crop_scale must be two numbers (low, high), the range of each crop side as a fraction "
                         f"of the image's; got {crop_scale!r}.") from None
    if not 0 < low <= high <= 1:
        raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1 (fractions of each image side); got "
                         f"({low:g}, {high:g}). The default is {CROP_SCALE}.")
    return low, high


def augmentation(augment: bool, flip: bool, crop_scale=CROP_SCALE) -> dict | None:
    """What `augment_image` does to the training batches, as run.json records it (None: no augmentation)."""
    if not augment:
        return None
    return {"random_crop_sides": list(check_crop_scale(crop_scale)), "horizontal_flip": bool(flip)}


def augment_image(image, image_size: int, flip: bool = True, crop_scale=CROP_SCALE, seed=None):
    """One training image (uint8 [h, w, 3], any size) to float32 pixels [image_size, image_size, 3]:
    a random crop (each side a fraction of the image's drawn from `crop_scale`, default 85-100%, anywhere
    in it), resized with the package's one resize (`images.resize_image`), and, for subjects without a
    handedness, a horizontal flip.

    `seed`: a [2] integer tensor from which every random draw for this image follows (TensorFlow's stateless
    random ops), so that an image's augmentation does not depend on which parallel call reaches it first;
    None draws from TensorFlow's global random state instead."""
    import tensorflow as tf

    from mobilenet_keras.images import resize_image

    low, high = check_crop_scale(crop_scale)
    seeds = None if seed is None else tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=4)

    def uniform(draw: int, shape, minval, maxval, dtype=tf.float32):
        if seeds is None:
            return tf.random.uniform(shape, minval, maxval, dtype=dtype)
        return tf.random.stateless_uniform(shape, seeds[draw], minval, maxval, dtype=dtype)

    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    scale = uniform(0, [2], low, high)
    crop_h = tf.maximum(tf.cast(tf.round(height * scale[0]), tf.int32), 1)
    crop_w = tf.maximum(tf.cast(tf.round(width * scale[1]), tf.int32), 1)
    top = uniform(1, [], 0, shape[0] - crop_h + 1, dtype=tf.int32)
    left = uniform(2, [], 0, shape[1] - crop_w + 1, dtype=tf.int32)
    crop = image[top:top + crop_h, left:left + crop_w]
    out = resize_image(crop, (image_size, image_size))
    if flip:
        if seeds is None:
            out = tf.image.random_flip_left_right(out)
        else:
            out = tf.image.stateless_random_flip_left_right(out, seeds[3])
    return out


def augmentation_seed(seed: int) -> int:
    """The seed of the per-image augmentation stream: another stream than the shuffle's (which `seed` starts),
    still a function of `seed` alone."""
    return (seed * 0x9E3779B1 + 0x7F4A7C15) % (2**31 - 1)


def _pipeline(source, image_size: int, batch_size: int, num_classes: int, *, train: bool, augment: bool,
              flip: bool, seed: int, count: int, crop_scale=CROP_SCALE):
    """Batches from a dataset of (uint8 image at its own size, label): shuffled (training), augmented or
    plainly resized in parallel, batched, scaled to the model's range, one-hot, prefetched."""
    import tensorflow as tf

    from mobilenet_keras.images import resize_image

    autotune = tf.data.AUTOTUNE
    if train:  # `count` is the shuffle buffer: every image in memory, a window of a cache file
        source = source.shuffle(count, seed=seed, reshuffle_each_iteration=True)
    if train and augment:
        # Each image's draws follow from a seed of its own, taken in order from a stream that `seed` starts (and
        # seeds anew each epoch): the same seed gives the same augmentations, whatever order the parallel calls
        # run in. (Draws from the global random state depended on that order, and were not seeded at all when
        # the dataset was built before `keras.utils.set_random_seed`.) Like the shuffle, the stream also follows
        # TensorFlow's global seed as it is when the dataset is built (unset in a fresh process).
        seeds = tf.data.Dataset.random(seed=augmentation_seed(seed), rerandomize_each_iteration=True).batch(2)
        source = tf.data.Dataset.zip(source, seeds)

        def per_image(pair, image_seed):
            image, label = pair
            return augment_image(image, image_size, flip, crop_scale, seed=image_seed), label
    else:
        def per_image(image, label):
            return resize_image(image, (image_size, image_size)), label
    # deterministic: batches keep the shuffled order (out of order, a run's batches depended on thread timing)
    dataset = source.map(per_image, num_parallel_calls=autotune, deterministic=True).batch(batch_size)

    def prepare(images, labels):
        return images * INPUT_SCALE + INPUT_OFFSET, tf.one_hot(tf.cast(labels, tf.int32), num_classes)

    dataset = dataset.map(prepare, num_parallel_calls=autotune).prefetch(autotune)
    return without_autotune_thread(dataset)


def without_autotune_thread(dataset):
    """`dataset` with tf.data's autotuning (and so its optimisation thread) turned off.

    Freeing an iterator waits for that thread, and in TensorFlow 2.21 it could sleep out its
    optimisation period (doubling up to a minute) first: a CIFAR-10 fine-tune on 2 cores sat with no
    CPU in use for up to a minute at some epoch boundaries, when iterators that Keras had discarded were
    freed (a gdb backtrace showed the main thread in RootDataset's iterator destructor, waiting for the
    thread in Model::OptimizeLoop). Without autotuning the pipeline kept its speed (about 2,600 images/s
    at 160 px on 2 cores either way), far above what a training step takes.
    """
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


#: Shuffle window (images) over a tf.data cache file, whose decoded images don't fit in memory; the file
#: itself holds them in the split's already shuffled order.
FILE_SHUFFLE_BUFFER = 2048


def _finish(train, validation, counts, image_size, batch_size, augment, flip, num_classes, seed,
            in_memory: bool = True, crop_scale=CROP_SCALE, plain=None):
    """(augmented training batches, validation batches, plain training batches) from the decoded sets.

    `plain`: the training images for the plain batches when they are not `train` (an uncached decode of
    the files beside a cache file: calibration reads a few hundred, and a partly read cache is thrown away)."""
    common = dict(image_size=image_size, batch_size=batch_size, num_classes=num_classes, flip=flip, seed=seed)
    buffer = counts[0] if in_memory else min(counts[0], FILE_SHUFFLE_BUFFER)
    # calibration draws from the plain batches: a fixed mixed order, not the sorted class order (the files'
    # order is already the split's shuffled one)
    if plain is None:
        plain = train.shuffle(buffer, seed=seed, reshuffle_each_iteration=False) if in_memory else train
    return (_pipeline(train, train=True, augment=augment, count=buffer, crop_scale=crop_scale, **common),
            _pipeline(validation, train=False, augment=False, count=counts[1], **common),
            _pipeline(plain, train=False, augment=False, count=buffer, **common))


def _in_memory(images: list, labels) -> object:
    """A dataset of (uint8 image, label) over decoded images: one array when they share a size, else
    ragged rows reshaped on the fly."""
    import tensorflow as tf

    labels = np.asarray(labels, np.int32)
    if len({image.shape for image in images}) <= 1:
        stacked = np.stack(images) if images else np.zeros((0, 1, 1, 3), np.uint8)
        return tf.data.Dataset.from_tensor_slices((stacked, labels))
    shapes = np.array([image.shape for image in images], np.int32)
    flat = tf.RaggedTensor.from_row_lengths(np.concatenate([image.reshape(-1) for image in images]),
                                            [image.size for image in images])
    dataset = tf.data.Dataset.from_tensor_slices((flat, shapes, labels))
    return dataset.map(lambda pixels, shape, label: (tf.reshape(pixels, shape), label))


def _from_files(paths, labels, cache_file: str | None) -> object:
    """A dataset of (uint8 image, label) decoding the files, cached in `cache_file` (after the first epoch)."""
    import tensorflow as tf

    from mobilenet_keras.images import decode_image

    dataset = tf.data.Dataset.from_tensor_slices(([str(p) for p in paths], np.asarray(labels, np.int32)))
    dataset = dataset.map(lambda path, label: (decode_image(tf.io.read_file(path)), label),
                          num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.cache(cache_file) if cache_file is not None else dataset


def _cache_folder(cache_dir: str | os.PathLike | None) -> Path:
    """A new folder for one load's tf.data cache files (under `cache_dir`, default the temporary folder),
    removed when the process exits. A new one each time: tf.data reads a complete cache file in place of
    the images, so files left by another load (other data, other settings) would be read as this one's.
    Folders that killed processes left there go first (they can hold a whole dataset)."""
    import atexit
    import shutil
    import tempfile

    from mobilenet_keras.files import owned_temp_folder

    parent = Path(tempfile.gettempdir() if cache_dir is None else cache_dir)
    parent.mkdir(parents=True, exist_ok=True)
    where = owned_temp_folder(parent, ".data-cache")
    atexit.register(shutil.rmtree, where, ignore_errors=True)
    return where


def memory_budget() -> int:
    """Bytes of decoded images kept in memory: a quarter of the machine's memory, at most 8 GiB."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 4 << 30
    return int(min(total // 4, 8 << 30))


def _header_problems(paths) -> tuple[list[str], str | None]:
    """The files whose first bytes TensorFlow's decoder can't read, and the reason for the first."""
    bad, first_reason = [], None
    for path in paths:
        problem = header_problem(path)
        if problem is not None:
            bad.append(str(path))
            first_reason = first_reason or problem
    return bad, first_reason


def _bad_files_error(bad: list, first_reason: str) -> ValueError:
    listed = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
    return ValueError(f"{len(bad)} file(s) are not images TensorFlow can read: {listed} (the first {first_reason}). "
                      "Remove or convert them, then rerun.")


def _decode_reason(path) -> str:
    from mobilenet_keras.images import decode_image

    try:
        decode_image(Path(path).read_bytes())
    except Exception as exc:  # noqa: BLE001 - the reason is what the decoder said
        return decoder_reason(exc)
    return "can't be decoded"


def keras_split(paths: list, labels: list, validation_split: float, seed: int):
    """(training paths, labels), (validation paths, labels): the split keras.utils.image_dataset_from_directory
    makes with this seed (both lists shuffled with numpy's RandomState(seed), the last fraction held out)."""
    paths, labels = list(paths), list(labels)
    np.random.RandomState(seed).shuffle(paths)
    np.random.RandomState(seed).shuffle(labels)
    num_validation = int(validation_split * len(paths))
    cut = len(paths) - num_validation
    return (paths[:cut], labels[:cut]), (paths[cut:], labels[cut:])


def files_fingerprint(root: str | os.PathLike, *groups) -> str:
    """A digest of each file's path (relative to `root`) and size, group by group, in order: what run.json
    records so that a later command knows whether a data folder still holds the run's images, split the same
    way (counts and class names alone pass another set of images of the same shape)."""
    import hashlib

    digest = hashlib.sha256()
    for number, paths in enumerate(groups):
        digest.update(f"group {number}\n".encode())
        for path in paths:
            name = Path(os.path.relpath(path, root)).as_posix()  # the same on Windows and POSIX
            digest.update(f"{name}\t{os.stat(path).st_size}\n".encode("utf-8", "replace"))
    return digest.hexdigest()[:32]


def check_validation_split(validation_split) -> None:
    """A ValueError unless `validation_split` is a number strictly between 0 and 1."""
    if isinstance(validation_split, bool) or not isinstance(validation_split, (int, float, np.integer, np.floating)) \
            or not 0 < validation_split < 1:
        raise ValueError(f"validation_split must be a number between 0 and 1 (e.g. 0.2); got {validation_split!r}.")


def check_split(num_images: int, num_classes: int, validation_split: float, source) -> tuple[int, int]:
    """(training, validation) image counts, or a ValueError that says how many images the split needs."""
    import math

    num_validation = int(num_images * validation_split)  # as keras.utils.image_dataset_from_directory
    num_train = num_images - num_validation
    if num_validation < 1:
        need = math.ceil(1 / validation_split - 1e-9)
        raise ValueError(f"the validation split of {source} is empty: {num_images} images x validation fraction "
                         f"{validation_split:g} = {validation_split * num_images:.2f}, rounded down to 0. Need at "
                         f"least {need} images in all (about {math.ceil(need / max(num_classes, 1))} per class for "
                         f"{num_classes} classes), or a larger validation fraction (--validation-split).")
    return num_train, num_validation


def image_folder(path: str | os.PathLike, image_size: int = 96, batch_size: int = 32,
                 validation_split: float = 0.2, seed: int = 0, augment: bool = True, flip: bool = True,
                 check_files: bool = True, cache: bool = True, cache_dir: str | os.PathLike | None = None,
                 memory_limit: int | None = None, crop_scale: tuple[float, float] = CROP_SCALE) -> ImageData:
    """Batches from a folder with one subfolder per class (jpg, png, bmp, gif).

    Args:
        path: the folder.
        image_size: images are resized to image_size x image_size.
        batch_size: images per batch.
        validation_split: fraction held out for validation, drawn with `seed` (the same split every
            run with the same seed, and the same as keras.utils.image_dataset_from_directory's).
        augment: random resized crop (and flip) on the training batches.
        flip: include the horizontal flip (turn off for text, digits, or other handed subjects).
        crop_scale: (low, high): each side of a training crop is a fraction of the image's side drawn
            from this range (default 0.85-1.0; 0.7-1.0 cost 1.3 points on the CIFAR-10 benchmark).
        check_files: check every file first, so a bad file is named before training starts.
        cache: decode each file once and keep it (in memory when the decoded images fit in
            `memory_limit` bytes, default `memory_budget()`, otherwise in tf.data cache files in a new
            folder under `cache_dir`, default the system's temporary folder, removed when the process
            exits); False decodes the files every epoch.
    """
    check_crop_scale(crop_scale)
    folder = scan_folder(path)
    if folder.labels is None:
        raise ValueError(f"{path} has no class subfolders: put the images of each class in a folder of its own "
                         "(e.g. data/cat/*.jpg, data/dog/*.jpg).")
    counts = np.bincount(folder.labels, minlength=len(folder.class_names))
    empty = [name for name, count in zip(folder.class_names, counts) if not count]
    if empty:
        raise ValueError(f"class folder(s) {', '.join(empty)} in {path} hold no images ({', '.join(IMAGE_SUFFIXES)}).")
    present = [name for name, count in zip(folder.class_names, counts) if count]
    if len(present) < 2:
        raise ValueError(f"{path} has images in only one class ({', '.join(present)}); a classifier needs two or more.")
    check_validation_split(validation_split)
    from mobilenet_keras.labels import check_class_names

    check_class_names(folder.class_names, path)
    num_train, num_validation = check_split(len(folder.paths), len(folder.class_names), validation_split, path)
    if check_files:
        bad, first_reason = _header_problems(folder.paths)
        if bad:  # the rest are decoded too, so that one message names every file to fix, not a round of them
            named = set(bad)
            rest = [p for p in folder.paths if str(p) not in named]
            bad += [str(rest[i]) for i in decode_files(rest, keep_bytes=0)[1]]
            raise _bad_files_error(bad, first_reason)
    (train_paths, train_labels), (val_paths, val_labels) = keras_split(folder.paths, folder.labels,
                                                                       validation_split, seed)
    memory_limit = memory_budget() if memory_limit is None else memory_limit
    decoded = None
    if cache or check_files:
        # past the budget the images are let go as they come (checked, not kept): a folder larger than memory
        # goes to the cache file without first being held whole
        decoded, bad = decode_files(train_paths + val_paths, keep_bytes=memory_limit if cache else 0)
        if bad:
            names = [str((train_paths + val_paths)[i]) for i in bad]
            if check_files:
                raise _bad_files_error(names, _decode_reason(names[0]))
            import warnings

            warnings.warn(f"skipped {len(bad)} image(s) TensorFlow can't decode: {', '.join(names[:5])}", stacklevel=2)
            keep = sorted(set(range(len(train_paths) + len(val_paths))) - set(bad))
            everything = [(train_paths + val_paths)[i] for i in keep]
            kept_labels = [(train_labels + val_labels)[i] for i in keep]
            split = sum(1 for i in keep if i < len(train_paths))
            train_paths, val_paths = everything[:split], everything[split:]
            train_labels, val_labels = kept_labels[:split], kept_labels[split:]
            num_train, num_validation = len(train_paths), len(val_paths)
        if not cache:
            decoded = None  # checked; now decoded again per epoch (cache=False), or into a cache file (None)
    plain = None
    if decoded is not None:
        train = _in_memory(decoded[:num_train], train_labels)
        validation = _in_memory(decoded[num_train:], val_labels)
    else:
        cache_files = (None, None)
        if cache:
            where = _cache_folder(cache_dir)
            cache_files = (str(where / "train"), str(where / "validation"))
        train = _from_files(train_paths, train_labels, cache_files[0])
        validation = _from_files(val_paths, val_labels, cache_files[1])
        plain = _from_files(train_paths, train_labels, None) if cache else None
    train, validation, plain = _finish(train, validation, (num_train, num_validation), image_size, batch_size,
                                       augment, flip, len(folder.class_names), seed, in_memory=decoded is not None,
                                       crop_scale=crop_scale, plain=plain)
    # absolute: run.json records it, and `export` and `qat` read it again from wherever they are started
    return ImageData(train, validation, plain, list(folder.class_names), image_size,
                     num_train, num_validation, str(Path(path).resolve()), augmentation(augment, flip, crop_scale),
                     validation_split, files_fingerprint(path, train_paths, val_paths), batch_size)


def digits(image_size: int = 64, batch_size: int = 32, validation_split: float = 0.2, seed: int = 0,
           augment: bool = True, crop_scale: tuple[float, float] = CROP_SCALE) -> ImageData:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes), upscaled to
    image_size and repeated over RGB: a real dataset that needs no download. No flip (digits are handed)."""
    import tensorflow as tf
    from sklearn.datasets import load_digits

    check_crop_scale(crop_scale)
    check_validation_split(validation_split)
    bunch = load_digits()
    images = (bunch.images / 16.0 * 255.0).astype(np.float32)[..., None]
    images = tf.image.resize(np.repeat(images, 3, axis=-1), (image_size, image_size), method="bilinear")
    images = np.clip(np.asarray(images), 0, 255).astype(np.uint8)
    labels = bunch.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(labels))
    cut = int(len(labels) * (1 - validation_split))
    train_idx, val_idx = order[:cut], order[cut:]
    train = tf.data.Dataset.from_tensor_slices((images[train_idx], labels[train_idx]))
    validation = tf.data.Dataset.from_tensor_slices((images[val_idx], labels[val_idx]))
    train, validation, plain = _finish(train, validation, (len(train_idx), len(val_idx)), image_size, batch_size,
                                       augment, False, 10, seed, crop_scale=crop_scale)
    return ImageData(train, validation, plain, [str(d) for d in range(10)], image_size, len(train_idx), len(val_idx),
                     DIGITS, augmentation(augment, False, crop_scale), validation_split, batch_size=batch_size)


def load(source: str | os.PathLike, **kwargs) -> ImageData:
    """`digits` for the embedded set, otherwise a folder of class subfolders."""
    if str(source) == DIGITS:
        for folder_only in ("flip", "check_files", "cache", "cache_dir", "memory_limit"):
            kwargs.pop(folder_only, None)
        return digits(**kwargs)
    if not Path(source).exists():
        raise ValueError(f"data folder {source} does not exist (or use the embedded set: '{DIGITS}').")
    return image_folder(source, **kwargs)
