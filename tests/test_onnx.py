"""ONNX export through tf2onnx, checked with onnxruntime against the Keras model."""

from __future__ import annotations

from pathlib import Path

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


def test_a_killed_onnx_export_leaves_nothing_beside_the_file_and_the_next_one_cleans_up(tmp_path, monkeypatch):
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
    # the next export in this process (no other import of TensorFlow), with the same temporary folder
    import tempfile

    import keras

    from mobilenet_keras.deploy.onnx_file import export_onnx

    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    export_onnx(keras.models.load_model(tmp_path / "small.keras"), elsewhere)
    assert [p.name for p in elsewhere.parent.iterdir()] == ["m.onnx"]
    assert not [p for p in scratch.iterdir() if p.name.startswith("mobilenet-keras.")]


def test_onnx_outputs_arguments_and_files_verify_cannot_check(tmp_path):
    """A feature extractor's dict of outputs crashed inside tf2onnx; a file of batch 1 could not be verified
    (onnxruntime: "Got: 32 Expected: 1"), nor did a file of another size say so; opset 5 wrote a file onnxruntime
    can't run and batch_size=0 one that takes no images; a logits model's output was called probabilities."""
    pytest.importorskip("tf2onnx", reason="the onnx extra is not installed")
    import onnxruntime as ort

    from mobilenet_keras import MobileNetV1, feature_extractor
    from mobilenet_keras.deploy.onnx_file import export_onnx, verify_onnx

    def outputs(path):
        return [o.name for o in ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_outputs()]

    images = np.random.default_rng(0).uniform(-1, 1, (40, 32, 32, 3)).astype(np.float32)
    backbone = MobileNetV1(input_shape=(32, 32, 3), alpha=0.25, include_top=False, weights=None)
    features = feature_extractor(backbone)
    path = export_onnx(features, tmp_path / "features.onnx")
    assert sorted(outputs(path)) == sorted(features.output)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = dict(zip(outputs(path), session.run(None, {"images": images[:4]})))
    want = features.predict(images[:4], verbose=0)
    assert all(np.abs(got[key] - want[key]).max() < 1e-4 for key in want)
    logits = MobileNetV1(input_shape=(32, 32, 3), alpha=0.25, classes=3, classifier_activation=None)
    assert outputs(export_onnx(logits, tmp_path / "logits.onnx")) == ["logits"]
    model = MobileNetV1(input_shape=(32, 32, 3), alpha=0.25, classes=3)
    one = export_onnx(model, tmp_path / "one.onnx", batch_size=1)
    report = verify_onnx(model, one, images, runs=2)  # 40 images, one at a time; the last batch is not padded out
    assert report.samples == 40 and report.max_abs_diff < 1e-4 and not report.failures, report.to_markdown()
    eight = export_onnx(model, tmp_path / "eight.onnx", batch_size=8)
    assert verify_onnx(model, eight, images[:37], runs=0).samples == 37  # 4 batches of 8 and one of 5, padded
    few = verify_onnx(model, eight, images[:3], runs=2)  # fewer images than the batch, timed too (exit 4 before)
    assert few.samples == 3 and few.latency_ms > 0
    # read as tflite.verify reads images: each distinct image once, one filed under two classes left out (before:
    # every copy counted, for each of its classes)
    answers = model.predict(images, verbose=0).argmax(1)
    with pytest.warns(UserWarning, match=r"10 image\(s\) appear under two classes"):
        twice = verify_onnx(model, one, np.concatenate([images, images[:10], images[10:20]]),
                            labels=np.concatenate([answers, (answers[:10] + 1) % 3, answers[10:20]]), runs=0)
    assert twice.samples == 30 and twice.float_accuracy == 1.0, twice.to_markdown()
    larger = MobileNetV1(input_shape=(48, 48, 3), alpha=0.25, classes=3)
    with pytest.raises(ValueError, match=r"one.onnx takes images of shape \(32, 32, 3\), the model \(48, 48, 3\)"):
        verify_onnx(larger, one, np.zeros((4, 48, 48, 3), np.float32))
    with pytest.raises(ValueError, match="verify_onnx checks a classifier"):
        verify_onnx(backbone, tmp_path / "features.onnx", images)
    for kwargs, words in ((dict(opset=5), "opset must be an integer from 13 to 18"), (dict(opset=99), "opset"),
                          (dict(batch_size=0), "batch_size must be None"), (dict(batch_size=-1), "batch_size")):
        with pytest.raises(ValueError, match=words):
            export_onnx(model, tmp_path / "bad.onnx", **kwargs)
    (tmp_path / "a_file").write_text("")
    with pytest.raises(ValueError, match="a_file is a file"):  # FileExistsError before
        export_onnx(model, tmp_path / "a_file" / "deeper" / "m.onnx")
    if Path("/proc/self").is_dir():  # root may write anywhere os.access looks, but not here
        with pytest.raises(ValueError, match="output folder /proc is not writable"):
            export_onnx(model, "/proc/m.onnx")
    assert not (tmp_path / "bad.onnx").exists()
