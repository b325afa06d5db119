"""A SavedModel for serving: named signatures for pixel arrays and for encoded image bytes."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

from mobilenet_keras.files import (exchange_folders, folder_mode, follow_umask, remember_mine, remove_abandoned,
                                   remove_abandoned_staging, write_bytes_atomic)
from mobilenet_keras.preprocessing import INPUT_OFFSET, INPUT_SCALE

#: The class names inside the SavedModel folder, one per line in output order (TF Serving's
#: `assets.extra` holds files for tools, not the graph).
LABELS_FILE = "assets.extra/labels.txt"


def is_saved_model(path: str | os.PathLike) -> bool:
    """A folder with a SavedModel's graph file in it."""
    return any(Path(path, name).is_file() for name in ("saved_model.pb", "saved_model.pbtxt"))


def load_saved_model(path: str | os.PathLike):
    """`tf.saved_model.load(path)`, or a one-line ValueError naming a damaged or incomplete SavedModel (TensorFlow
    raises a different error for each kind of damage, some of them advice that doesn't apply: "requires a tags=
    argument", "trying to load on a different device")."""
    import tensorflow as tf

    path = Path(path)
    remedy = "export it again (mobilenet-keras export RUN --saved-model FOLDER) or copy it whole"
    if not (path / "variables").is_dir():
        raise ValueError(f"{path} is an incomplete SavedModel: it has no variables/ folder; {remedy}.")
    from google.protobuf.message import DecodeError

    try:
        return tf.saved_model.load(str(path))
    except tf.errors.ResourceExhaustedError:  # out of memory: not the folder's fault
        raise
    except (IndexError, OSError, ValueError, DecodeError, tf.errors.OpError) as exc:  # each kind of damage its own
        reason = (" ".join(str(exc).split()) or type(exc).__name__)[:160]
        if "Op type not registered" in reason:
            raise ValueError(f"{path} holds ops this TensorFlow ({tf.__version__}) lacks ({reason}); load it with the "
                             "TensorFlow that wrote it, or export it again with this one.") from None
        raise ValueError(f"{path} is a damaged SavedModel ({type(exc).__name__}: {reason}); {remedy}.") from None


def check_saved_model_path(path: str | os.PathLike, force: bool = False) -> None:
    """Refuse, with what to do instead, a `path` the SavedModel can't take: a file, a link, a folder with
    something in it (with `force`: anything but an earlier SavedModel, or a folder holding the current one).
    `--force` must never delete a run folder, a data folder or the folder a user typed `.` for."""
    path = Path(path)
    if path.is_symlink():
        raise ValueError(f"{path} is a link; give the folder itself or a new folder (the SavedModel goes in a "
                         "folder of its own, not through a link).")
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path} is a file; give a folder path for the SavedModel (such as serving/mobilenet/1).")
    if path.parent.exists() and not path.parent.is_dir():
        raise ValueError(f"{path.parent} is a file; give a folder path for the SavedModel.")
    if not path.is_dir():
        return
    here, target = Path.cwd().resolve(), path.resolve()
    if target == here or target in here.parents:  # even empty: the rename would replace the shell's folder
        raise ValueError(f"{path} is or holds the current folder; give another folder, or run the export from "
                         "another folder.")
    if not any(path.iterdir()):
        return
    if not force:
        raise ValueError(f"{path} exists and is not empty; choose another folder (the next version number) or "
                         "replace it: --force on the command line, force=True from Python.")
    if not is_saved_model(path):
        raise ValueError(f"{path} is not a SavedModel (there is no saved_model.pb in it); --force replaces only an "
                         "earlier SavedModel: choose a new folder.")


def export_saved_model(model, path: str | os.PathLike, labels: list[str] | None = None, top_k: int = 5,
                       force: bool = False) -> Path:
    """Write a SavedModel with two signatures, through Keras 3's `ExportArchive`.

    - `serving_default`: `images`, float32 [batch, H, W, 3] with pixel values 0..255 (scaled to
      `INPUT_RANGE`, [-1, 1], inside the graph).
    - `serving_bytes`: `image_bytes`, a batch of encoded JPEG, PNG, BMP, GIF or still WebP strings, decoded and
      resized to H x W inside the graph by `mobilenet_keras.images.decode_and_resize` (the decoder and
      resize that training, calibration, verify and predict use, so a photo gets the same pixels and
      probabilities here as from model.keras and the float .tflite), then scaled: what TF Serving's
      REST API receives as `{"b64": ...}` instances.

    Both return `probabilities` [batch, classes], `top_k_indices` and `top_k_scores` [batch, k] (k is
    `top_k`, or the number of classes when fewer), and `top_k_labels` (strings) when `labels` are given;
    the labels are then also written to `LABELS_FILE` in the folder (what `predict` reads).

    The folder is written beside `path` under a temporary name and renamed; missing parent folders
    are created (TF Serving's `serving/mobilenet/1`); an existing non-empty folder is refused unless
    `force=True`, which replaces an earlier SavedModel (and nothing else: see `check_saved_model_path`)
    by swapping the two folders' names in one step where the file system can (Linux), so that a server
    watching the folder, or a kill, finds one whole version or the other.
    """
    import keras
    import tensorflow as tf

    from mobilenet_keras.images import decode_and_resize

    from tflite.representative import check_single_image_input

    check_single_image_input(model, "export_saved_model")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k is how many classes each answer lists (1 or more); got {top_k!r}.")
    labels = _label_list(labels)
    check_saved_model_path(path, force)
    # Resolved as the checks resolved it ("x/.." through a linked x), and "." and ".." get a name to stage beside.
    shown, path = Path(path), Path(os.path.realpath(path))
    height, width, channels = model.input_shape[1:]
    if height is None or width is None:
        raise ValueError("the model takes images of any size; build it with a fixed input_shape to export.")
    if channels != 3:
        raise ValueError(f"the model takes {channels} channels; serving_bytes decodes RGB images (3 channels).")
    classes = model.output_shape[-1]
    _check_probabilities(model)
    if labels is not None and len(labels) != classes:
        raise ValueError(f"{len(labels)} labels for a model with {classes} classes.")
    k = min(top_k, classes)
    label_table = tf.constant(list(labels)) if labels is not None else None

    archive = keras.export.ExportArchive()
    archive.track(model)

    def predict(images):
        # An empty batch (a client's empty request) is answered with empty outputs: TensorFlow's CPU
        # convolution passes a batch of 0 through with its input's shape, and the next layer fails on it.
        def run():
            return tf.cast(model(images * INPUT_SCALE + INPUT_OFFSET, training=False), tf.float32)

        probabilities = tf.cond(tf.shape(images)[0] > 0, run, lambda: tf.zeros([0, classes], tf.float32))
        top = tf.math.top_k(probabilities, k=k)
        outputs = {"probabilities": probabilities, "top_k_indices": top.indices, "top_k_scores": top.values}
        if label_table is not None:
            outputs["top_k_labels"] = tf.gather(label_table, top.indices)
        return outputs

    @tf.function(input_signature=[tf.TensorSpec([None, height, width, channels], tf.float32, name="images")])
    def serving_default(images):
        # Checked when called, not only when traced: a loaded signature lets an image of another size or
        # rank through to the convolutions, and a rank-3 batch aborts the process inside oneDNN.
        return predict(tf.ensure_shape(images, [None, height, width, channels]))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
    def serving_bytes(image_bytes):
        def decode(encoded):
            return decode_and_resize(encoded, (height, width))

        images = tf.map_fn(decode, image_bytes, fn_output_signature=tf.TensorSpec([height, width, channels],
                                                                                  tf.float32))
        return predict(images)

    archive.add_endpoint("serving_default", serving_default)
    archive.add_endpoint("serving_bytes", serving_bytes)
    try:  # TF Serving's layout (serving/mobilenet/1) usually starts with missing folders
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"can't create the folder {path.parent} ({exc.strerror or exc}).") from None
    remove_abandoned_staging(path)
    if is_saved_model(path):  # a version is in place: what a killed swap set aside is an old one
        remove_abandoned(path.parent, f".{path.name}.", r"\.[0-9a-f]{8}\.replaced")
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".staging", dir=path.parent))
    staging.chmod(folder_mode())  # mkdtemp makes 0700; TF Serving may run as another user
    try:
        archive.write_out(str(staging), verbose=False)
        if labels is not None:  # beside the graph's own table, for tools (and `predict`) that read a file
            extra = staging / LABELS_FILE
            extra.parent.mkdir(mode=folder_mode(), exist_ok=True)
            write_bytes_atomic(extra, "".join(f"{name}\n" for name in labels).encode())
        follow_umask(staging)  # TensorFlow's own folders (variables/, assets/) and files
        _take_place(staging, path, shown, force)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return shown


def _label_list(labels) -> list[str] | None:
    """`labels` as a list of class names: a labels.txt path is read (its characters were taken as ten names)."""
    if labels is None:
        return None
    from mobilenet_keras.labels import LABELS_REMEDY, check_class_names, read_labels

    if isinstance(labels, (str, os.PathLike)):
        # a name with a line break would shift every name after it in assets.extra/labels.txt
        return check_class_names(read_labels(labels), labels, remedy=LABELS_REMEDY)
    labels = list(labels)
    if not all(isinstance(name, str) for name in labels):
        raise TypeError("labels are class names (strings) in output order, or the path of a labels.txt.")
    return check_class_names(labels, remedy=LABELS_REMEDY)


def _check_probabilities(model) -> None:
    """Refuse a model whose output is not one probability per class: the signatures call it `probabilities`
    and rank it, and a model ending in logits or features gave both without a word."""
    import numpy as np

    shape = model.output_shape[0] if isinstance(model.output_shape, list) else model.output_shape
    if len(shape) != 2:
        raise ValueError(f"the model gives outputs of shape {tuple(shape[1:])} per image, not class probabilities; "
                         "export a classifier (include_top=True, or a Dense layer with softmax at the end).")
    height, width, channels = model.input_shape[1:]
    probe = np.random.default_rng(0).uniform(-1, 1, (2, height, width, channels)).astype(np.float32)
    out = np.asarray(model(probe, training=False), dtype=np.float64)
    if _ends_in_sigmoid(model):  # one probability per class on its own (binary or multi-label)
        if np.all((out >= 0) & (out <= 1)):
            return
    elif np.all(out >= 0) and np.allclose(out.sum(axis=1), 1.0, atol=1e-2):
        return
    raise ValueError("the model's outputs are not probabilities (not a softmax's, summing to 1, nor a sigmoid's: "
                     "logits?); build it with classifier_activation='softmax' (or 'sigmoid'), or end it with "
                     "keras.layers.Softmax().")


def _ends_in_sigmoid(model) -> bool:
    activation = getattr(model.layers[-1], "activation", None)
    return getattr(activation, "__name__", str(activation)) == "sigmoid"


def _take_place(staging: Path, path: Path, shown: Path, force: bool) -> None:
    """Put the written folder at `path`; an earlier SavedModel there (`force`) ends up at the staging name,
    removed afterwards (or by the next export, after a kill)."""
    filled = f"{shown} was filled while the SavedModel was written (another export?); nothing there was replaced. " \
             "Choose another folder, or --force to replace a SavedModel there."
    if not force and path.is_dir() and any(path.iterdir()):
        raise ValueError(filled)
    check_saved_model_path(path, force)  # again: the folder may have changed while the SavedModel was written
    if path.is_dir() and any(path.iterdir()):
        if not exchange_folders(staging, path):
            # No atomic swap here (another system or file system): the old version is moved aside first, so a
            # kill between the two renames leaves it whole beside the folder (.NAME.PID.XXXXXXXX.replaced; the
            # next export removes it once a version is in place), never deleted with no new one there.
            aside = path.parent / f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.replaced"
            remember_mine(aside)
            os.rename(path, aside)
            os.rename(staging, path)
            staging = aside
        shutil.rmtree(staging, ignore_errors=True)
        return
    try:  # onto nothing or an empty folder; refused by the system if something took the place meanwhile
        os.rename(staging, path)
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
            raise ValueError(filled) from None
        raise
