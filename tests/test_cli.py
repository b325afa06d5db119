from __future__ import annotations

import subprocess
import sys

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


def test_predict_names_a_bad_image(tmp_path, capsys):
    from tests.conftest import TFLITE_REFERENCE, require

    bad = tmp_path / "x.jpg"
    bad.write_bytes(b"nope")
    model = require(TFLITE_REFERENCE / "mobilenet_v1_0.25_128_quant.tflite")
    assert main(["predict", str(model), str(bad)]) == 2
    assert "x.jpg is not a readable image" in capsys.readouterr().err
