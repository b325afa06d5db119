"""ONNX export through tf2onnx, checked against the float model with onnxruntime (the optional `onnx` extra).

    path = export_onnx(model, "model.onnx")                 # input "images" [batch, H, W, 3] in [-1, 1]
    report = verify_onnx(model, path, validation_images)    # the same figures and verdict as tflite.verify

The model goes through a SavedModel export (`model.export`), so ONNX sees the graph TensorFlow serves; the
output is `probabilities` for a classifier (`logits` for a linear one),
`features` for a backbone, one output per feature map for `feature_extractor`'s models.
"""

from __future__ import annotations

import os
from pathlib import Path

from mobilenet_keras.files import atomic_path, check_file_name, make_folder, scratch_folder

OPSET = 17
# tf2onnx 1.17 writes opsets up to 18; below 13 its MobileNet graph has ops onnxruntime has no kernel for (Clip(1))
OPSETS = range(13, 19)


def require_onnx():
    """tf2onnx, or a ValueError that says how to install the onnx extra (checked before any export is written)."""
    try:
        import onnxruntime  # noqa: F401
        import tf2onnx
    except ImportError:
        raise ValueError("ONNX export needs the onnx extra: pip install 'mobilenet-keras[onnx]' "
                         "(tf2onnx and onnxruntime).") from None
    return tf2onnx


def export_onnx(model, path: str | os.PathLike, opset: int = OPSET, batch_size: int | None = None) -> Path:
    """Write `model` as an ONNX file (a temporary file, renamed) and return its path.

    Args:
        model: a Keras 3 model with a fixed input size.
        path: the `.onnx` file to write (missing parent folders are created).
        opset: the ONNX opset, 13 to 18 (17 by default).
        batch_size: a fixed batch (1 or more), or None for a dynamic one.

    The output is `probabilities` for a classifier (`logits` when its last activation is linear:
    `classifier_activation=None`), `features` for a backbone, and one output per feature map for a model
    with a dict of outputs (`feature_extractor`'s `stride_4` ...).
    """
    import numbers

    import tensorflow as tf

    tf2onnx = require_onnx()
    if isinstance(opset, bool) or not isinstance(opset, numbers.Integral) or int(opset) not in OPSETS:
        raise ValueError(f"opset must be an integer from {OPSETS[0]} to {OPSETS[-1]} (tf2onnx 1.17's range that "
                         f"onnxruntime runs); got {opset!r}.")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral)
                                   or batch_size < 1):
        raise ValueError(f"batch_size must be None (any batch) or a whole number from 1; got {batch_size!r}.")
    path = check_file_name(path, "model.onnx")
    make_folder(path.parent)  # as for the SavedModel and the Android file
    input_shape = tuple(model.input_shape[1:])
    if any(side is None for side in input_shape):
        raise ValueError(f"the model takes images of any size {input_shape}; ONNX export needs a fixed size.")
    output = _output_name(model)
    spec = tf.TensorSpec((batch_size, *input_shape), tf.float32, name="images")
    # The intermediate SavedModel goes to a scratch folder that the next export removes if a kill left it.
    with scratch_folder() as tmp, atomic_path(path) as partial:
        model.export(os.path.join(tmp, "saved_model"), format="tf_saved_model", verbose=False, input_signature=[spec])
        served = tf.saved_model.load(os.path.join(tmp, "saved_model"))

        def function(images):
            outputs = served.serve(images)  # a dict already for a model of named outputs (feature maps)
            return outputs if isinstance(outputs, dict) else {output: outputs}

        tf2onnx.convert.from_function(tf.function(function), input_signature=(spec,), opset=int(opset),
                                      output_path=str(partial))
    return path


def _output_name(model) -> str:
    """`probabilities` after a softmax or sigmoid, `logits` after a linear classifier, else `features`."""
    import keras

    try:
        last = model.get_layer("predictions")
    except ValueError:
        return "features"
    activation = getattr(last, "activation", None)
    return "logits" if activation is keras.activations.linear else "probabilities"


def verify_onnx(float_model, path: str | os.PathLike, data, labels=None, runs: int = 30,
                max_samples: int | None = None):
    """Run the float model and the ONNX file (onnxruntime, CPU) on the same images and judge the file.

    Returns a `tflite.VerificationReport` with mode `onnx` (float32's thresholds), judged by the same
    `tflite.verify.judge_outputs` as a .tflite file (verdict PASS, FAIL or INCONCLUSIVE under
    `MIN_VERDICT_IMAGES`); the latency is onnxruntime's per image at batch 1 (at the file's batch for a
    file of a fixed batch), measured by `tflite.latency`.
    """
    import numpy as np
    import onnxruntime as ort

    from tflite.latency import NOT_MEASURED, measure
    from tflite.modes import FLOAT32_THRESHOLDS
    from tflite.batched import predict
    from tflite.verify import check_model_outputs, float32_size_estimate, judge_outputs, judged_images

    require_onnx()
    classes = check_model_outputs(float_model)
    if len(float_model.output_shape) != 2:
        raise ValueError(f"verify_onnx checks a classifier (one score per class); this model gives outputs of shape "
                         f"{tuple(float_model.output_shape[1:])} per image. Compare a backbone's features yourself "
                         "(onnxruntime's InferenceSession.run against model.predict).")
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} does not exist or is not a file.")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name, batch = _checked_input(session, float_model, path)
    images, labels = judged_images(float_model, data, labels, max_samples, classes=classes, stacklevel=3)
    expected = predict(float_model, images)  # batches of one shape, as verify runs the model
    step = batch or 32
    chunks = []
    for start in range(0, len(images), step):
        chunk = images[start:start + step]
        short = step - len(chunk) if batch else 0  # a file of a fixed batch takes exactly that many images
        padded = np.concatenate([chunk, np.repeat(chunk[-1:], short, axis=0)]) if short else chunk
        chunks.append(session.run(None, {name: padded})[0][:len(chunk)])
    got = np.concatenate(chunks)
    one = images[:1]
    if batch:  # a file of a fixed batch runs only that many images at a time: timed per batch, told per image
        one = np.concatenate([one] * batch)
    latency = measure(lambda: session.run(None, {name: one}), runs, per=len(one)) if runs else NOT_MEASURED
    return judge_outputs(expected, got, file=path, mode="onnx", size_bytes=path.stat().st_size,
                         float32_size_bytes=float32_size_estimate(float_model), labels=labels,
                         thresholds=FLOAT32_THRESHOLDS, latency=latency)


def _checked_input(session, float_model, path: Path) -> tuple[str, int | None]:
    """The ONNX file's input name and its fixed batch (None: any); a ValueError when it takes other images than
    the model (onnxruntime's own message names an index, not the file or the model)."""
    file_input = session.get_inputs()[0]
    batch, *image = file_input.shape
    wanted = tuple(float_model.input_shape[1:])
    if len(image) != len(wanted) or any(isinstance(a, int) and a != b for a, b in zip(image, wanted)):
        raise ValueError(f"{path} takes images of shape {tuple(image)}, the model {wanted}: it was exported from "
                         "another model, or at another size.")
    return file_input.name, batch if isinstance(batch, int) and batch > 0 else None
