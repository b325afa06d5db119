"""Input scaling and ImageNet label decoding, in Keras's conventions."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from mobilenet_keras import pretrained

# Keras's "tf" mode: pixels 0..255 map onto [-1, 1]. Every converter and exporter in this
# package reads these numbers, so the quantized input parameters stay in step.
INPUT_SCALE = 1.0 / 127.5
INPUT_OFFSET = -1.0
# The model's input range, (low, high) = where pixels 0 and 255 land: (-1.0, 1.0). The one constant
# for "the input convention" wherever a range is needed (TFLite input quantization, QAT ranges).
INPUT_RANGE = (INPUT_OFFSET, INPUT_OFFSET + 255.0 * INPUT_SCALE)

_DATA_FORMATS = (None, "channels_last", "channels_first")


def preprocess_input(x: Any, data_format: str | None = None, mode: str = "tf", **kwargs: Any) -> Any:
    """Scale RGB pixels from 0..255 to [-1, 1] (`INPUT_RANGE`), the range MobileNet V1 was trained on.

    The same call as `keras.applications.mobilenet.preprocess_input(x, data_format=None)`, so the two
    are interchangeable. The scaling is one per-pixel operation, so `data_format` ("channels_last",
    "channels_first" or None) is checked and otherwise changes nothing; `mode` may only be "tf" (the
    convention MobileNet's weights were trained with); other keyword arguments are refused.

    Takes a numpy array, a list or a number (returns float32 numpy) or a backend tensor (returns a
    float32 tensor). What can't be 0..255 pixels is refused: text (a file name), None, complex or bool
    values, and uint16 pixels of a 16-bit image (scale them to 0..255 first).
    """
    if kwargs:
        raise TypeError(f"preprocess_input() got unexpected keyword argument(s) {', '.join(sorted(kwargs))}; "
                        "it takes x, data_format and mode, as keras.applications.mobilenet.preprocess_input does.")
    if data_format not in _DATA_FORMATS:
        raise ValueError(f"data_format must be 'channels_last', 'channels_first' or None; got {data_format!r}.")
    if mode != "tf":
        raise ValueError(f"MobileNet V1 takes mode 'tf' (pixels scaled to [-1, 1]); got mode={mode!r}. "
                         "'caffe' and 'torch' are other networks' conventions.")
    dtype = getattr(x, "dtype", None)
    if isinstance(x, (np.ndarray, np.generic, list, tuple, int, float)) or dtype is None:
        # anything numpy reads as an array: a PIL image, an array.array, a memoryview
        pixels = np.asarray(x)
        _check_pixel_type(pixels.dtype.name, pixels.dtype.kind)
        return pixels.astype(np.float32) * np.float32(INPUT_SCALE) + np.float32(INPUT_OFFSET)
    from keras import backend, ops

    name = backend.standardize_dtype(dtype)
    _check_pixel_type(name, "f" if "float" in name else "i" if "int" in name else "O")
    return ops.cast(x, "float32") * INPUT_SCALE + INPUT_OFFSET


def _check_pixel_type(name: str, kind: str) -> None:
    """Refuse what can't be 0..255 pixels: text, objects, complex numbers, and 16-bit images (0..65535)
    that would land far outside [-1, 1] without an error."""
    if kind not in "uif":
        raise TypeError(f"preprocess_input() takes RGB pixels 0..255 as numbers (an array, a tensor, an image); got "
                        f"{'text' if kind in 'US' else 'dtype ' + name}. Decode image files first "
                        "(mobilenet_keras.images.load_image) and pass the array.")
    if name == "uint16":
        raise ValueError("preprocess_input() got uint16 pixels (a 16-bit image, 0..65535), not 0..255: scale "
                         "them first (x / 257), or decode the file with mobilenet_keras.images.load_image, which "
                         "gives 8-bit pixels.")


def _read_class_index(class_index: str | os.PathLike | dict | None) -> dict[str, list[str]]:
    if isinstance(class_index, dict):
        return _checked_index(class_index, "(a dict)")
    if class_index is None:
        from keras.utils import get_file

        try:
            class_index = get_file("imagenet_class_index.json", pretrained.CLASS_INDEX_URL,
                                   cache_subdir="models", file_hash="c2c37ea517e94d9795004a39431a14cb")
        except Exception as exc:  # noqa: BLE001 - Keras raises a bare Exception for a failed download
            raise ValueError(f"could not download Keras's ImageNet class index ({_first_line(exc)}); pass "
                             "class_index= a local imagenet_class_index.json (or a dict), or put the file in "
                             "$KERAS_HOME/models.") from None
    try:
        with open(class_index, encoding="utf-8") as f:
            return _checked_index(json.load(f), class_index)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"class_index {class_index} is not a class index JSON ({_first_line(exc)}); give Keras's "
                         "imagenet_class_index.json ({\"0\": [\"n01440764\", \"tench\"], ...}) or its dict. A "
                         "labels.txt holds names only: read it with mobilenet_keras.labels.read_labels.") from None


def _checked_index(index, where) -> dict[str, list[str]]:
    """`index` as decode_predictions reads it: 1,000 entries keyed "0" to "999" (int keys taken too)."""
    if not isinstance(index, dict):
        raise ValueError(f"class_index {where} is a {type(index).__name__}, not a dict of 1,000 classes.")
    index = {str(key): value for key, value in index.items()}
    missing = [str(i) for i in range(1000) if str(i) not in index]
    if missing:
        raise ValueError(f"class_index {where} has {len(index)} entries, not ImageNet's 1,000 (no key "
                         f"{missing[0]!r}); give Keras's imagenet_class_index.json or its dict.")
    return index


def decode_predictions(preds: Any, top: int = 5,
                       class_index: str | os.PathLike | dict | None = None) -> list[list[tuple[str, str, float]]]:
    """Turn ImageNet scores into `(wordnet_id, name, score)` tuples, best first, one list per image.

    Args:
        preds: scores of shape `(batch, 1000)`, or `(batch, 1001)` with TF-slim's background class
            first (as in Google's TFLite classifiers; the background column is dropped).
        top: how many classes to return per image.
        class_index: a path to (or the dict of) a class index JSON in Keras's format
            `{"0": ["n01440764", "tench"], ...}`. `None` reads Keras's own file, downloaded once into
            `~/.keras/models` as `keras.applications` does.
    """
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
        raise ValueError(f"top is how many classes to return per image (1 or more); got {top!r}.")
    preds = np.asarray(preds)
    if preds.ndim != 2 or preds.shape[1] not in (1000, 1001):
        raise ValueError(
            f"decode_predictions expects scores of shape (batch, 1000) or (batch, 1001); got {preds.shape}."
        )
    if preds.shape[1] == 1001:
        preds = preds[:, 1:]
    index = _read_class_index(class_index)
    results = []
    for row in preds:
        best = np.argsort(row)[::-1][:top]
        results.append([(*index[str(i)], float(row[i])) for i in best])
    return results


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]

