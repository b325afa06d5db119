"""ONNX export through tf2onnx, checked against the float model with onnxruntime (the optional `onnx` extra).

    path = export_onnx(model, "model.onnx")                 # input "images" [batch, H, W, 3] in [-1, 1]
    report = verify_onnx(model, path, validation_images)    # the same figures and verdict as tflite.verify

The model goes through the same SavedModel export as the TFLite converter (`model.export`), so ONNX sees
the graph TensorFlow serves; the output is `probabilities` for a classifier, `features` for a backbone.
"""

from __future__ import annotations

import os
from pathlib import Path

from mobilenet_keras.files import atomic_path, check_file_name, make_folder, scratch_folder

OPSET = 17


def _require():
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
        opset: the ONNX opset (17 by default; onnxruntime 1.32 runs up to 23).
        batch_size: a fixed batch, or None for a dynamic one.
    """
    import tensorflow as tf

    tf2onnx = _require()
    path = check_file_name(path, "model.onnx")
    make_folder(path.parent)  # as for the SavedModel and the Android file
    input_shape = tuple(model.input_shape[1:])
    if any(side is None for side in input_shape):
        raise ValueError(f"the model takes images of any size {input_shape}; ONNX export needs a fixed size.")
    spec = tf.TensorSpec((batch_size, *input_shape), tf.float32, name="images")
    # The intermediate SavedModel goes to a scratch folder that the next export removes if a kill left it.
    with scratch_folder() as tmp, atomic_path(path) as partial:
        model.export(os.path.join(tmp, "saved_model"), format="tf_saved_model", verbose=False, input_signature=[spec])
        served = tf.saved_model.load(os.path.join(tmp, "saved_model"))
        output = "probabilities" if any(layer.name == "predictions" for layer in model.layers) else "features"
        function = tf.function(lambda images: {output: served.serve(images)})
        tf2onnx.convert.from_function(function, input_signature=(spec,), opset=opset, output_path=str(partial))
    return path


def verify_onnx(float_model, path: str | os.PathLike, data, labels=None, runs: int = 30,
                max_samples: int | None = None):
    """Run the float model and the ONNX file (onnxruntime, CPU) on the same images and judge the file.

    Returns a `tflite.VerificationReport` with mode `onnx` (float32's thresholds), judged by the same
    `tflite.verify.judge_outputs` as a .tflite file (verdict PASS, FAIL or INCONCLUSIVE under
    `MIN_VERDICT_IMAGES`); the latency is onnxruntime's at batch 1, measured by `tflite.latency`.
    """
    import numpy as np
    import onnxruntime as ort

    from tflite.latency import NOT_MEASURED, measure
    from tflite.modes import FLOAT32_THRESHOLDS
    from tflite.representative import collect
    from tflite.verify import DEFAULT_MAX_SAMPLES, check_model_outputs, float32_size_estimate, judge_outputs

    _require()
    check_model_outputs(float_model)
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} does not exist or is not a file.")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    found: list = []
    images = collect(data, tuple(float_model.input_shape[1:]), limit=max_samples, labels_out=found,
                     cap=DEFAULT_MAX_SAMPLES)
    labels = found if labels is None and len(found) == len(images) else labels
    expected = np.asarray(float_model.predict(images, batch_size=32, verbose=0), np.float32)
    got = np.concatenate([session.run(None, {name: images[i:i + 32]})[0] for i in range(0, len(images), 32)])
    one = images[:1]
    latency = measure(lambda: session.run(None, {name: one}), runs) if runs else NOT_MEASURED
    return judge_outputs(expected, got, file=path, mode="onnx", size_bytes=path.stat().st_size,
                         float32_size_bytes=float32_size_estimate(float_model), labels=labels,
                         thresholds=FLOAT32_THRESHOLDS, latency=latency)
