"""ONNX export through tf2onnx, checked with onnxruntime against the Keras model."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import resize_batch


def test_onnx_file_gives_the_keras_answers_on_real_photos(weights_025, photos, tmp_path):
    pytest.importorskip("tf2onnx", reason="the onnx extra is not installed")
    import onnxruntime as ort

    from mobilenet_keras import MobileNetV1, preprocess_input
    from mobilenet_keras.deploy.onnx_file import export_onnx, verify_onnx

    model = MobileNetV1(input_shape=(128, 128, 3), alpha=0.25, include_top=False, pooling="avg",
                        weights=str(weights_025))
    path = export_onnx(model, tmp_path / "model.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert [o.name for o in session.get_outputs()] == ["features"]  # a backbone; a classifier's is "probabilities"
    images = preprocess_input(resize_batch(list(photos.values()), 128))
    got = session.run(None, {"images": images})[0]
    assert np.abs(got - model.predict(images, verbose=0)).max() < 1e-4
    # Five photos are figures, not a verdict (MIN_VERDICT_IMAGES): INCONCLUSIVE, with nothing failing.
    report = verify_onnx(model, path, images, runs=3)
    assert report.verdict == "INCONCLUSIVE" and not report.failures, report.to_markdown()
    assert report.mode == "onnx" and report.sqnr_db > 60 and report.latency_p90_ms >= report.latency_ms
    # 200 real CIFAR-10 images (resized to 128 px) are enough for a verdict.
    from mobilenet_keras.testing.cifar import cifar_slice

    report = verify_onnx(model, path, cifar_slice(20, 400, 128)[0], runs=0)
    assert report.samples == 200 and report.verdict == "PASS" and report.sqnr_db > 60, report.to_markdown()
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # no temporary files left


def test_onnx_export_refuses_an_any_size_model(tmp_path):
    pytest.importorskip("tf2onnx", reason="the onnx extra is not installed")
    from mobilenet_keras import MobileNetV1
    from mobilenet_keras.deploy.onnx_file import export_onnx

    with pytest.raises(ValueError, match="fixed size"):
        export_onnx(MobileNetV1(alpha=0.25, include_top=False), tmp_path / "x.onnx")
    assert not list(tmp_path.iterdir())


def test_a_killed_onnx_export_leaves_nothing_beside_the_file_and_the_next_one_cleans_up(tmp_path):
    """Its intermediate SavedModel went to a `tmpXXXXXXXX` folder beside the .onnx file, where a kill left it
    (a whole SavedModel each time); it goes to a scratch folder of the package's, removed by the next export.
    Missing parent folders are created, as for the SavedModel and the Android file."""
    pytest.importorskip("tf2onnx", reason="the onnx extra is not installed")
    import os
    import signal
    import subprocess
    import sys
    import time

    from mobilenet_keras import MobileNetV1

    MobileNetV1(input_shape=(32, 32, 3), alpha=0.25, classes=3, weights=None).save(tmp_path / "small.keras")
    scratch, target = tmp_path / "tmp", tmp_path / "out" / "m.onnx"
    scratch.mkdir()
    target.parent.mkdir()
    script = ("import keras, sys\n"
              "from mobilenet_keras.deploy.onnx_file import export_onnx\n"
              f"export_onnx(keras.models.load_model({str(tmp_path / 'small.keras')!r}), sys.argv[1])\n")
    environment = {**os.environ, "TMPDIR": str(scratch)}
    victim = subprocess.Popen([sys.executable, "-c", script, str(target)], env=environment)
    deadline, left = time.time() + 300, []
    while not left and victim.poll() is None and time.time() < deadline:
        left = list(tmp_path.rglob("saved_model.pb"))  # the intermediate SavedModel, wherever it goes
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    if not left:
        pytest.skip("the export finished before its scratch SavedModel could be seen; nothing to kill")
    assert not target.exists() and not [p for p in target.parent.iterdir() if p.is_dir()]
    elsewhere = tmp_path / "new" / "onnx" / "m.onnx"  # in folders that don't exist yet
    done = subprocess.run([sys.executable, "-c", script, str(elsewhere)], env=environment, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [p.name for p in elsewhere.parent.iterdir()] == ["m.onnx"]
    assert not [p for p in scratch.iterdir() if p.name.startswith("mobilenet-keras.")]
