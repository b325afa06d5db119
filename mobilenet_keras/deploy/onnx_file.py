"""ONNX export through tf2onnx, checked against the float model with onnxruntime (the optional `onnx` extra).

    path = export_onnx(model, "model.onnx")                 # input "images" [batch, H, W, 3] in [-1, 1]
    report = verify_onnx(model, path, validation_images)    # the same figures and verdict as tflite.verify

The model goes through the same SavedModel export as the TFLite converter (`model.export`), so ONNX sees
the graph TensorFlow serves; the output is `probabilities` for a classifier, `features` for a backbone.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from mobilenet_keras.files import check_output_path

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
        path: the `.onnx` file to write.
        opset: the ONNX opset (17 by default; onnxruntime 1.32 runs up to 23).
        batch_size: a fixed batch, or None for a dynamic one.
    """
    import tensorflow as tf

    tf2onnx = _require()
    path = check_output_path(path)
    input_shape = tuple(model.input_shape[1:])
    if any(side is None for side in input_shape):
        raise ValueError(f"the model takes images of any size {input_shape}; ONNX export needs a fixed size.")
    spec = tf.TensorSpec((batch_size, *input_shape), tf.float32, name="images")
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        model.export(os.path.join(tmp, "saved_model"), format="tf_saved_model", verbose=False, input_signature=[spec])
        served = tf.saved_model.load(os.path.join(tmp, "saved_model"))
        output = "probabilities" if any(layer.name == "predictions" for layer in model.layers) else "features"
        function = tf.function(lambda images: {output: served.serve(images)})
        partial = Path(tmp) / "model.onnx"
        tf2onnx.convert.from_function(function, input_signature=(spec,), opset=opset, output_path=str(partial))
        os.replace(partial, path)
    return path


def verify_onnx(float_model, path: str | os.PathLike, data, labels=None, runs: int = 30):
    """Run the float model and the ONNX file (onnxruntime, CPU) on the same images and judge the file.

    Returns a `tflite.VerificationReport` with mode `onnx` (float32's thresholds), as `tflite.verify`
    does for a .tflite file; `latency_ms` is onnxruntime's median at batch 1.
    """
    import numpy as np
    import onnxruntime as ort

    from tflite.representative import collect
    from tflite.modes import FLOAT32_THRESHOLDS
    from tflite.verify import VerificationReport, compare, float32_size_estimate, judge

    _require()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    found: list = []
    images = collect(data, tuple(float_model.input_shape[1:]), labels_out=found)
    labels = found if labels is None and len(found) == len(images) else labels
    expected = np.asarray(float_model.predict(images, batch_size=32, verbose=0), np.float32)
    got = np.concatenate([session.run(None, {name: images[i:i + 32]})[0] for i in range(0, len(images), 32)])
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, {name: images[:1]})
        times.append(time.perf_counter() - start)
    limits = FLOAT32_THRESHOLDS
    size = Path(path).stat().st_size
    report = VerificationReport(file=str(path), mode="onnx", samples=len(images), size_bytes=size,
                                float32_size_bytes=float32_size_estimate(float_model),
                                size_ratio=size / float32_size_estimate(float_model),
                                latency_ms=1000 * float(np.median(times)) if times else float("nan"),
                                thresholds=limits, **compare(expected, got))
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        report.float_accuracy = float(np.mean(expected.argmax(1) == labels))
        report.tflite_accuracy = float(np.mean(got.argmax(1) == labels))
    report.failures = judge(report, limits)
    return report
