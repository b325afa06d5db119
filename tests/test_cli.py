from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mobilenet_keras.app.cli import main


def test_summary_prints_multiply_adds(capsys):
    assert main(["summary", "--alpha", "0.25", "--image-size", "128", "--quiet"]) == 0
    assert "13.6M multiply-adds, 0.48M parameters" in capsys.readouterr().out


def test_user_error_is_one_line_and_status_2(capsys):
    assert main(["summary", "--alpha", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "alpha must be a number > 0" in err[0]


def test_help_on_the_console_script():
    result = subprocess.run([sys.executable, "-m", "mobilenet_keras", "summary", "--help"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "examples:" in result.stdout


def test_predict_with_a_tflite_file_and_labels(capsys):
    from tests.conftest import IMAGES, LABELS, TFLITE_REFERENCE, require

    model = require(TFLITE_REFERENCE / "mobilenet_v1_0.75_192_quant.tflite")
    labels = require(LABELS / "imagenet_labels_1001.txt")
    assert main(["predict", str(model), str(require(IMAGES / "coffee.png")), "--labels", str(labels)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].endswith("coffee.png") and "espresso" in lines[1]
    assert len(lines) == 6


def test_bench_prints_a_table(capsys):
    from tests.conftest import TFLITE_REFERENCE, require

    model = require(TFLITE_REFERENCE / "mobilenet_v1_0.25_128_quant.tflite")
    assert main(["bench", str(model), "--runs", "5"]) == 0
    out = capsys.readouterr().out
    assert "uint8" in out and "ms" in out.splitlines()[0]  # a latency column, whatever its name


def test_bench_refuses_a_fifo_and_thread_counts_past_the_cap(tmp_path, capsys):
    import os

    os.mkfifo(tmp_path / "pipe.tflite")  # reading it waited for a writer forever
    assert main(["bench", str(tmp_path / "pipe.tflite")]) == 2
    assert "not a regular file" in capsys.readouterr().err
    from tests.conftest import TFLITE_REFERENCE, require

    model = require(TFLITE_REFERENCE / "mobilenet_v1_0.25_128_quant.tflite")
    assert main(["bench", str(model), "--threads", "100000"]) == 2  # it was a segfault in LiteRT's thread pool
    assert "--threads from 1 to 256" in capsys.readouterr().err


def test_a_reader_that_closes_the_pipe_early_is_not_an_internal_error():
    import subprocess
    import sys

    from tests.conftest import TFLITE_REFERENCE, require

    model = require(TFLITE_REFERENCE / "mobilenet_v1_0.25_128_quant.tflite")
    bench = subprocess.Popen([sys.executable, "-m", "mobilenet_keras", "bench", str(model), "--runs", "3"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    bench.stdout.close()  # as `| head -0` would
    err = bench.stderr.read().decode()
    bench.stderr.close()
    assert bench.wait(timeout=300) == 141 and "Error" not in err, err[-1000:]


def test_predict_names_a_bad_image(tmp_path, capsys):
    from tests.conftest import TFLITE_REFERENCE, require

    bad = tmp_path / "x.jpg"
    bad.write_bytes(b"nope")
    model = require(TFLITE_REFERENCE / "mobilenet_v1_0.25_128_quant.tflite")
    assert main(["predict", str(model), str(bad)]) == 2
    assert "x.jpg is not a readable image" in capsys.readouterr().err
    fifo = tmp_path / "camera.jpg"
    os.mkfifo(fifo)  # its open waited for a writer forever
    assert main(["predict", str(model), str(fifo)]) == 2
    assert "camera.jpg is not a regular file (a FIFO" in capsys.readouterr().err


def test_load_image_refuses_a_fifo_and_a_folder_without_opening_them(tmp_path):
    from mobilenet_keras.images import load_image

    fifo = tmp_path / "camera.jpg"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a regular file"):
        load_image(fifo, (32, 32))
    with pytest.raises(ValueError, match=r"is a folder; give image files \(such as .*\*\.jpg\)"):
        load_image(tmp_path, (32, 32))
    with pytest.raises(ValueError, match="can't be read"):
        load_image(tmp_path / "missing.jpg", (32, 32))


def test_predict_refuses_labels_of_another_class_count(tmp_path, capsys):
    # 1,000 names for Google's 1,001-class file would shift every answer by one, printed as right
    from tests.conftest import IMAGES, LABELS, TFLITE_REFERENCE, require

    model = require(TFLITE_REFERENCE / "mobilenet_v1_0.75_192_quant.tflite")
    short = tmp_path / "labels.txt"
    short.write_text("\n".join(require(LABELS / "imagenet_labels_1001.txt").read_text().splitlines()[1:]) + "\n")
    assert main(["predict", str(model), str(require(IMAGES / "coffee.png")), "--labels", str(short)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has 1000 lines, but" in err[0] and "has 1001 classes" in err[0], err


def test_predict_on_a_run_folders_tflite_file_finds_the_runs_labels(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    import tflite
    from mobilenet_keras import MobileNetV1

    run = tmp_path / "run"
    (run / "tflite").mkdir(parents=True)
    model = MobileNetV1(input_shape=(32, 32, 3), alpha=0.25, classes=3, weights=None)
    tflite.convert(model, run / "tflite" / "model_float32.tflite", "float32")
    (run / "labels.txt").write_text("cat\ndog\nfox\n")
    photo = tmp_path / "p.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(photo)
    assert main(["predict", str(run / "tflite" / "model_float32.tflite"), str(photo), "--top", "3"]) == 0
    names = sorted(line.split()[-1] for line in capsys.readouterr().out.strip().splitlines()[1:])
    assert names == ["cat", "dog", "fox"]
    assert main(["predict", str(run / "tflite" / "model_float32.tflite"), str(photo), "--top", "0"]) == 2
    assert "top must be a positive number" in capsys.readouterr().err


def test_predict_refuses_models_that_do_not_give_class_scores_per_image(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from mobilenet_keras import MobileNetV1

    image = tmp_path / "x.png"
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(image)
    MobileNetV1(alpha=0.25, input_shape=(32, 32, 3), include_top=False, weights=None).save(tmp_path / "notop.keras")
    assert main(["predict", str(tmp_path / "notop.keras"), str(image)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not class scores" in err[0], err
    MobileNetV1(alpha=0.25, input_shape=(None, None, 3), classes=3, weights=None).save(tmp_path / "any.keras")
    assert main(["predict", str(tmp_path / "any.keras"), str(image)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "takes images of shape (None, None, 3)" in err[0] and "input_shape=" in err[0], err
    assert main(["predict", str(tmp_path / "any.keras"), str(image), "--labels", str(tmp_path)]) == 2
    assert f"labels file {tmp_path} is a folder" in capsys.readouterr().err


def test_predict_refuses_models_that_do_not_take_one_rgb_image_or_give_one_output(tmp_path, capsys):
    # before: a two-output .keras model was an internal error (exit 4), a 1-channel .keras model Keras's multi-line
    # layer error with terminal colour codes, a .tflite of 1-D inputs TensorFlow's "'size' must be a 1-D Tensor"
    import keras
    import numpy as np
    from PIL import Image

    from mobilenet_keras import MobileNetV1

    image = tmp_path / "x.png"
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(image)
    backbone = MobileNetV1(alpha=0.25, input_shape=(32, 32, 3), classes=3, weights=None)
    keras.Model(backbone.inputs, [backbone.output, backbone.output]).save(tmp_path / "two.keras")
    MobileNetV1(alpha=0.25, input_shape=(32, 32, 1), classes=3, weights=None).save(tmp_path / "gray.keras")
    vector = keras.Sequential([keras.Input((10,)), keras.layers.Dense(3, activation="softmax")])
    vector.save(tmp_path / "vector.keras")
    import tensorflow as tf  # tflite.convert takes image models only: TensorFlow's own converter writes this one

    function = tf.function(lambda x: vector(x), input_signature=[tf.TensorSpec((1, 10), tf.float32)])
    (tmp_path / "vector.tflite").write_bytes(tf.lite.TFLiteConverter.from_concrete_functions(
        [function.get_concrete_function()], vector).convert())
    pooled = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(4, 1),
                               keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3, activation="softmax")])
    function = tf.function(lambda x: pooled(x), input_signature=[tf.TensorSpec((1, None, None, 3), tf.float32)])
    (tmp_path / "any_size.tflite").write_bytes(tf.lite.TFLiteConverter.from_concrete_functions(
        [function.get_concrete_function()], pooled).convert())  # LiteRT shows its sides as 1: it was fed 1x1 images
    for name, words in (("two.keras", "has 1 input(s) and 2 output(s)"),
                        ("any_size.tflite", "takes images of shape (None, None, 3); predict resizes"),
                        ("gray.keras", "takes inputs of shape (32, 32, 1), not RGB images"),
                        ("vector.keras", "takes inputs of shape (10,), not RGB images"),
                        ("vector.tflite", "takes inputs of shape (10,), not RGB images")):
        assert main(["predict", str(tmp_path / name), str(image)]) == 2, name
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0] and "\x1b" not in err[0], (name, err)


def test_predict_refuses_a_labels_file_with_a_blank_name(tmp_path, capsys):
    # a JSON class index given as --labels: its first line blank, the rest one line, as many "names" as classes
    import numpy as np
    from PIL import Image

    from mobilenet_keras import MobileNetV1

    image = tmp_path / "x.png"
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(image)
    MobileNetV1(alpha=0.25, input_shape=(32, 32, 3), classes=2, weights=None).save(tmp_path / "m.keras")
    (tmp_path / "index.json").write_text(' \n{"0": ["n01", "cat"], "1": ["n02", "dog"]}\n')
    assert main(["predict", str(tmp_path / "m.keras"), str(image), "--labels", str(tmp_path / "index.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has a blank line (1) among its class names" in err[0], err
    (tmp_path / "labels.txt").write_text("\ncat\n")  # found beside the model: class numbers, with a warning
    assert main(["predict", str(tmp_path / "m.keras"), str(image)]) == 0
    out, err = capsys.readouterr()
    assert "has a blank line (1) among its class names: printing class numbers" in err, err
    assert sorted(line.split()[-1] for line in out.splitlines()[-2:]) == ["0", "1"]
    odd = tmp_path / "two\nlines\x1b.png"  # one block of lines per image, whatever the file's name holds
    odd.write_bytes(image.read_bytes())
    (tmp_path / "labels.txt").unlink()
    assert main(["predict", str(tmp_path / "m.keras"), str(odd), str(image), "--top", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and lines[0] == ascii(str(odd)) and lines[2] == str(image), lines


def test_an_output_path_that_ends_in_a_slash_names_a_folder(tmp_path):
    import pytest

    from mobilenet_keras.files import check_output_path, write_bytes_atomic

    with pytest.raises(ValueError, match="names a folder; give a file name"):
        write_bytes_atomic(f"{tmp_path}/new/", b"x")
    with pytest.raises(ValueError, match="names a folder"):
        check_output_path(f"{tmp_path}/model.tflite/")
    assert not list(tmp_path.iterdir())
