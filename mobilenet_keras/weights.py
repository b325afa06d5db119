"""Loading weight files into a built model, with errors that say which file fits which model."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import h5py
import numpy as np

# The classifier is the only layer that a backbone-only file may leave unfilled.
HEAD_LAYERS = ("conv_preds",)


def _legacy_h5_shapes(path: str) -> dict[str, list[tuple[int, ...]]]:
    """Weight shapes per layer name in a Keras 2 style `.h5` file (weights-only or whole model)."""
    with h5py.File(path, "r") as f:
        group = f
        if "layer_names" not in f.attrs and "model_weights" in f:
            group = f["model_weights"]
        if "layer_names" not in group.attrs:
            if "layers" in f:  # Keras 3's layout, which its loader picks by the name's ending
                stem = Path(path).name.removesuffix(".h5")
                raise ValueError(f"{path} is a Keras 3 weights file, which Keras reads by its name: name it "
                                 f"{stem}.weights.h5.")
            raise ValueError(f"{path} is an HDF5 file but not a Keras weights file (no layer_names).")
        shapes = {}
        for raw in group.attrs["layer_names"]:
            layer = raw.decode() if isinstance(raw, bytes) else str(raw)
            names = group[layer].attrs.get("weight_names", [])
            shapes[layer] = [tuple(group[layer][n.decode() if isinstance(n, bytes) else n].shape) for n in names]
        return shapes


def _width_of(shapes: dict[str, list[tuple[int, ...]]]) -> str:
    conv1 = shapes.get("conv1")
    if conv1:
        return f"alpha {conv1[0][-1] / 32:g} (conv1 has {conv1[0][-1]} filters)"
    return "another architecture"


def load_weights(model, path: str | os.PathLike) -> None:
    """Load a Keras `.h5` or `.weights.h5` file into `model`, matching layers by name.

    Raises a ValueError that names the file, the first layer that does not fit and the width
    the file was made for, instead of Keras's shape error from deep inside the loader.
    """
    path = os.fspath(path)
    if path.endswith(".weights.h5") and _is_keras2_file(path):
        raise ValueError(f"{path} is a Keras 2 weights file (layer_names, no layers/ group) named like a Keras 3 "
                         f"one, which Keras would read as the other: name it {path.removesuffix('.weights.h5')}.h5.")
    if path.endswith(".weights.h5") or path.endswith(".keras"):
        remedy = ("It was saved from a model with other settings; build the model with the same alpha, "
                  "depth_multiplier, include_top and classes.")
        saved = _layers_with_weights(path)
        present = sum(1 for layer in model.layers if layer.weights)
        if saved is not None and saved > present:  # Keras would skip the extra ones with a warning that reads
            # as if the backbone had not loaded (a file with the classifier, into a model without it)
            raise ValueError(f"{path} holds the weights of {saved} layers, this model ({model.name}) has {present}: "
                             f"the file's model had more (a classifier?). {remedy}")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                model.load_weights(path)
        except Exception as exc:  # Keras raises several types for a file of another shape
            # its message goes on for lines (the variable's values among them): the first says what differs;
            # the warnings it gave on the way ("Skipping nested container ...") are about the same mismatch
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".:")
            raise ValueError(f"{path} does not fit this model ({model.name}): {_first_difference(model, path) or first}"
                             f". {remedy}") from None
        for warning in caught:  # a load that worked keeps what Keras had to say
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
        _check_values(model, path)
        return

    try:
        file_shapes = _legacy_h5_shapes(path)
    except OSError as exc:
        raise ValueError(f"{path} is not a readable HDF5 weights file ({exc}).") from None
    except (KeyError, RuntimeError) as exc:  # h5py's errors for a damaged object inside a readable file
        raise ValueError(f"{path} is damaged ({str(exc).strip(chr(39))}); download or save it again.") from None

    missing = []
    for layer in model.layers:
        model_shapes = [tuple(w.shape) for w in layer.weights]
        if not model_shapes:
            continue
        if layer.name not in file_shapes:
            missing.append(layer.name)
            continue
        if file_shapes[layer.name] != model_shapes:
            held = file_shapes[layer.name]
            if file_shapes.get("conv1") and file_shapes["conv1"][0][-1] != model.get_layer("conv1").filters:
                remedy = (f"The file was made for {_width_of(file_shapes)}; build the model with that alpha, or use "
                          "a file made for this one.")
            elif layer.name == "conv_preds":
                remedy = (f"The file's classifier has {held[0][-1]} classes: build the model with classes="
                          f"{held[0][-1]}, or include_top=False to load its backbone alone.")
            elif layer.name == "conv1":
                remedy = (f"The file takes {held[0][2]}-channel images: build the model with input_shape=(H, W, "
                          f"{held[0][2]}), or use a file made for this one.")
            elif layer.name.startswith("conv_dw") and model_shapes[0][:-1] == held[0][:-1]:
                remedy = (f"The file's depthwise layers have depth_multiplier {held[0][-1]}: build the model with "
                          "that, or use a file made for this one.")
            else:  # conv1 alone can't tell some widths apart (alpha 0.25 and 0.26 both give it 8 filters)
                remedy = (f"The file was made for another width (alpha): its {layer.name!r} has {held[0][-1]} "
                          f"filters, this model's {model_shapes[0][-1]}. Build the model with the file's alpha, or "
                          "use a file made for this one.")
            raise ValueError(f"{path} does not fit this model: layer {layer.name!r} has weights of shapes "
                             f"{model_shapes} but the file holds {held}. {remedy}")
    backbone_missing = [n for n in missing if n not in HEAD_LAYERS]
    if backbone_missing:
        raise ValueError(
            f"{path} has no weights for layers {backbone_missing[:5]}{' ...' if len(backbone_missing) > 5 else ''}: "
            "it was not saved from a MobileNet V1 with these layer names."
        )
    if missing:
        warnings.warn(
            f"{path} holds no classifier weights; {missing} keep their random initialisation "
            "(train the head before use).",
            stacklevel=3,
        )
    model.load_weights(path, by_name=True)
    _check_values(model, path)


def _check_values(model, path: str) -> None:
    """Refuse weights no trained model holds: NaN or infinite values, or a negative BatchNorm variance. HDF5
    keeps no checksum of its data, so bytes damaged inside a weights file load without an error; in a block of
    random bytes about one float in 256 is NaN or infinite."""
    import keras

    for weight in model.weights:
        if not keras.backend.is_float_dtype(weight.dtype):  # bfloat16 too, which numpy doesn't call floating
            continue
        values = np.asarray(weight.numpy() if hasattr(weight, "numpy") else weight, dtype=np.float32)
        bad = "NaN or infinite values" if not np.isfinite(values).all() else (
            "a negative variance" if weight.path.endswith("moving_variance") and (values < 0).any() else None)
        if bad:
            raise ValueError(f"{path} gives {weight.path} {bad}: the file is damaged (or was saved from a training "
                             "that diverged); download or save it again.")


def unwrapped(layer):
    """The float layer inside tfmot's wrappers (quantize, prune), or `layer` itself."""
    while hasattr(layer, "layer") and not hasattr(layer, "layers"):
        layer = layer.layer
    return layer


def transfer_weights(source, target) -> None:
    """Copy every weighted layer of `source` into the layer of the same name in `target`.

    Works across models of different heads (a backbone into a classifier) and across Keras 3 and
    tf_keras models, as long as each named layer has weights of the same shapes. `source` may be
    wrapped by tfmot's `quantize_model`: its quantizer ranges are not float weights and stay behind,
    so trained QAT weights come back into a Keras 3 model this way.

    Raises:
        ValueError: a layer of `source` has no counterpart in `target`, or its weights' shapes differ.
    """
    target_layers = {unwrapped(layer).name: unwrapped(layer) for layer in target.layers}
    for layer in source.layers:
        inner = unwrapped(layer)
        if not inner.weights or type(inner).__name__ == "QuantizeLayer":
            continue
        counterpart = target_layers.get(inner.name)
        if counterpart is None:
            raise ValueError(f"layer {inner.name!r} of {source.name} has no counterpart in {target.name}.")
        values = [np.asarray(v) for v in inner.get_weights()]
        expected = [tuple(w.shape) for w in counterpart.get_weights()]
        if [v.shape for v in values] != expected:
            raise ValueError(f"layer {inner.name!r}: shapes {[v.shape for v in values]} in {source.name} but "
                             f"{expected} in {target.name}.")
        counterpart.set_weights(values)


def _snake_case(name: str) -> str:
    """A layer class's name as Keras 3 names its group in a weights file (Keras's own rule: `DepthwiseConv2D`
    -> `depthwise_conv2d`, `ReLU` -> `re_lu`)."""
    import re

    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def _first_difference(model, path: str) -> str | None:
    """"layer L has weights of shapes A but the file holds B" for the first layer of `model` whose weights
    differ from a Keras 3 `.weights.h5` or `.keras` file's, or None when that can't be told. The file names
    its groups by layer class and order (`conv2d`, `conv2d_1`, ...), not by the layers' own names."""
    try:
        with _keras3_weights(path) as f:
            groups = f["layers"]
            seen: dict[str, int] = {}
            for layer in model.layers:
                base = _snake_case(type(layer).__name__)
                count = seen.get(base, 0)
                seen[base] = count + 1
                if not layer.weights:
                    continue
                key = base if count == 0 else f"{base}_{count}"
                expected = [tuple(w.shape) for w in layer.weights]
                if key not in groups or "vars" not in groups[key]:
                    return f"the file has no weights for layer {layer.name!r}"
                variables = groups[key]["vars"]
                held = [tuple(variables[str(i)].shape) for i in range(len(variables))]
                if held != expected:
                    return f"layer {layer.name!r} has weights of shapes {expected} but the file holds {held}"
    except Exception:  # noqa: BLE001 - another layout: Keras's own message stands
        return None
    return None


def _is_keras2_file(path: str) -> bool:
    try:
        with h5py.File(path, "r") as f:
            return "layers" not in f and ("layer_names" in f.attrs or "model_weights" in f)
    except Exception:  # noqa: BLE001 - not HDF5: Keras's loader says why
        return False


def _keras3_weights(path: str) -> h5py.File:
    """A Keras 3 `.weights.h5` file, or the one inside a `.keras` archive, opened for reading."""
    if not path.endswith(".keras"):
        return h5py.File(path, "r")
    import io
    import zipfile

    with zipfile.ZipFile(path) as archive:
        return h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r")


def _layers_with_weights(path: str) -> int | None:
    """How many layers a Keras 3 `.weights.h5` or `.keras` file holds weights for (a group per layer under
    `layers/`, named by class, not by the layer's name); None when the file can't be read that way (Keras then
    says why)."""
    try:
        with _keras3_weights(path) as f:
            return sum(1 for group in f.get("layers", {}).values() if _holds_weights(group))
    except Exception:  # noqa: BLE001 - not this format: leave the judgement to Keras's loader
        return None


def _holds_weights(group) -> bool:
    """Whether any dataset lies under `group` (h5py's visit stops at the first non-None answer)."""
    return group.visititems(lambda _, item: True if isinstance(item, h5py.Dataset) else None) is not None
