"""`mobilenet-keras predict`: the top classes of image files with any of the three model formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mobilenet_keras.images import load_image
from mobilenet_keras.labels import parse_labels, read_labels
from mobilenet_keras.preprocessing import preprocess_input


def _labels_from_metadata(path: Path) -> list[str] | None:
    import zipfile

    try:  # TFLite metadata's associated files are packed as a zip appended to the flatbuffer
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                if name.endswith(".txt"):
                    return parse_labels(archive.read(name).decode("utf-8", errors="replace"))
    except zipfile.BadZipFile:
        return None
    return None


def _find_labels(model_path: Path, given: str | None) -> tuple[list[str] | None, str | None]:
    """(class names, where they come from): `given`, the file's metadata, the SavedModel's own copy, or a
    labels.txt beside the model or one folder up (a run folder's labels.txt for its tflite/ files)."""
    if given:
        return read_labels(given), given
    if model_path.suffix == ".tflite":
        found = _labels_from_metadata(model_path)
        if found:
            return found, f"{model_path}'s metadata"
    if model_path.is_dir():
        from mobilenet_keras.deploy.saved_model import LABELS_FILE

        if (model_path / LABELS_FILE).is_file():
            return read_labels(model_path / LABELS_FILE), str(model_path / LABELS_FILE)
    here = model_path if model_path.is_dir() else model_path.parent
    for folder in (here, here.parent):
        if (folder / "labels.txt").exists():
            return read_labels(folder / "labels.txt"), str(folder / "labels.txt")
    return None, None


def _image_size(model_path: Path, input_shape) -> tuple[int, int]:
    """The (height, width) a model of `input_shape` takes RGB images at, or a ValueError saying why predict
    can't feed it (before: TensorFlow's resize or Keras's layer call failed on the first image)."""
    shape = tuple(None if side is None else int(side) for side in input_shape[1:])
    if len(shape) != 3 or shape[2] != 3:
        raise ValueError(f"{model_path} takes inputs of shape {shape}, not RGB images (height, width, 3); predict "
                         "takes an image classifier of 3 channels.")
    if None in shape[:2]:
        raise ValueError(f"{model_path} takes images of shape {shape}; predict resizes each image to the model's "
                         "height and width: rebuild the model with input_shape=(height, width, 3) and its weights "
                         "(model.set_weights), or call it from Python.")
    return shape[0], shape[1]


def scores(model_path: Path, images: list[Path]) -> np.ndarray:
    """Class scores for image files, with each format's own input convention. Every format sees the same
    pixels: `load_image` here and the SavedModel's `serving_bytes` both decode and resize with
    `mobilenet_keras.images.decode_and_resize`, as training and calibration do."""
    if model_path.suffix == ".tflite":
        from tflite import TFLiteModel

        model = TFLiteModel(model_path)
        pixels = np.stack([load_image(p, _image_size(model_path, model.input_signature)) for p in images])
        if model.input_dtype == np.uint8:  # raw pixels, as on a phone
            return model.dequantize_output(model.predict_raw(pixels))
        return model.predict(preprocess_input(pixels))
    if model_path.suffix == ".keras":
        from mobilenet_keras.model import load_model_file

        model = load_model_file(model_path)
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise ValueError(f"{model_path} has {len(model.inputs)} input(s) and {len(model.outputs)} output(s); "
                             "predict takes single-input, single-output classifiers: call it from Python.")
        pixels = np.stack([load_image(p, _image_size(model_path, model.input_shape)) for p in images])
        return model.predict(preprocess_input(pixels), verbose=0)
    from mobilenet_keras.deploy.saved_model import is_saved_model, load_saved_model

    if model_path.is_dir() and is_saved_model(model_path):
        import tensorflow as tf

        loaded = load_saved_model(model_path)
        if "serving_bytes" not in loaded.signatures:
            raise ValueError(f"{model_path} is not a SavedModel written by mobilenet-keras export: it has no "
                             f"serving_bytes signature (it has {', '.join(sorted(loaded.signatures)) or 'none'}); "
                             "predict with the model.keras it came from, or export that again.")
        encoded = tf.constant([p.read_bytes() for p in images])
        return loaded.signatures["serving_bytes"](image_bytes=encoded)["probabilities"].numpy()
    raise ValueError(f"{model_path} is not a .tflite file, a .keras file or a SavedModel folder.")


def print_top_classes(model: str | Path, images: list[str | Path], labels: str | Path | None = None,
                      top: int = 5) -> int:
    """`mobilenet-keras predict`: print each image's `top` classes with their scores."""
    model_path = Path(model)
    if not isinstance(top, int) or top < 1:
        raise ValueError(f"top must be a positive number of classes; got {top!r}.")
    if not model_path.exists():
        raise ValueError(f"{model_path} does not exist.")
    if labels is not None and not Path(labels).is_file():
        problem = "is a folder" if Path(labels).is_dir() else "does not exist"
        raise ValueError(f"labels file {labels} {problem}; give a labels.txt with one class name per line.")
    images = [Path(p) for p in images]
    if model_path.suffix == ".tflite":
        from tflite import TFLiteModel

        TFLiteModel(model_path)  # a damaged file is named in a fraction of a second, before TensorFlow loads
    for image in images:
        load_image(image)  # names an unreadable file before any Keras model loads
    result = scores(model_path, images)
    if result.ndim != 2:
        raise ValueError(f"{model_path} gives an output of shape {result.shape[1:]} per image, not class scores (a "
                         "model without its classifier, include_top=False?); predict takes a classifier.")
    names, source = _find_labels(model_path, str(labels) if labels is not None else None)
    problem = None
    if names is not None and len(names) != result.shape[-1]:
        problem = f"has {len(names)} lines, but {model_path} has {result.shape[-1]} classes"
    elif names is not None and not all(name.strip() for name in names):
        # a blank line is a class without a name, or names shifted by a line: not a labels file of this model
        problem = f"has a blank line ({[name.strip() for name in names].index('') + 1}) among its class names"
    if problem:
        if labels is not None:  # names shifted by one line would be wrong answers, printed as right ones
            raise ValueError(f"{labels} {problem}; give its labels.txt, one class name per line in output order.")
        import warnings

        warnings.warn(f"{source} {problem}: printing class numbers (give --labels FILE).", stacklevel=2)
        names = None
    for image, row in zip(images, result):
        # a line break or another control character in a file's name would split or garble its block
        print(image if str(image).isprintable() else ascii(str(image)))
        for index in np.argsort(-row)[:top]:
            name = names[index] if names and index < len(names) else str(index)
            print(f"  {row[index]:.4f}  {name}")
    return 0
