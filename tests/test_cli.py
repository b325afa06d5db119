from __future__ import annotations

import subprocess
import sys

from mobilenet_keras.cli import main


def test_summary_prints_multiply_adds(capsys):
    assert main(["summary", "--alpha", "0.25", "--image-size", "128", "--quiet"]) == 0
    assert "13.6M multiply-adds, 0.48M parameters" in capsys.readouterr().out


def test_user_error_is_one_line_and_status_2(capsys):
    assert main(["summary", "--alpha", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "alpha must be a number > 0" in err[0]


def test_help_on_the_console_script():
    result = subprocess.run([sys.executable, "-m", "mobilenet_keras.cli", "summary", "--help"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "examples:" in result.stdout
