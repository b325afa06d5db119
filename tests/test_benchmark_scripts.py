"""Every benchmark script (run by hand, so nothing else would notice it break) answers --help; the pure
numerical helpers they share are checked here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = sorted(p for p in (Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py")
                    if not p.name.startswith("_"))


def test_there_are_benchmark_scripts():
    assert len(BENCHMARKS) >= 7


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.stem)
def test_benchmark_script_answers_help(script, tmp_path):
    result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage:") and script.name in result.stdout


def test_qat_benchmark_refuses_model_options_without_a_model(tmp_path):
    """--qat-steps and the like measure a trained model (--model), --qat-epochs and the like the classifier the
    script trains without one: each was silently ignored in the other case."""
    script = next(p for p in BENCHMARKS if p.stem == "qat_cifar10")
    result = subprocess.run([sys.executable, str(script), "--qat-steps", "3", "--qat-distill"], capture_output=True,
                            text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2 and "--qat-steps, --qat-distill only apply with --model" in result.stderr
    result = subprocess.run([sys.executable, str(script), "--model", "m.keras", "--data", "d", "--qat-epochs", "3"],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2 and "--qat-epochs only applies without --model" in result.stderr


@pytest.mark.parametrize("script, args, words", [
    ("training_step_speed", ["--steps", "0"], "argument --steps: 0 is less than 1"),  # fit() ran forever
    ("training_step_speed", ["--rounds", "0"], "argument --rounds: 0 is less than 1"),
    ("qat_cifar10", ["--held-out", "0"], "argument --held-out: 0 is less than 1"),
    ("qat_cifar10", ["--qat-learning-rate", "-1"], "argument --qat-learning-rate: -1 is not a number > 0"),
    ("train_cifar10", ["--minutes", "-1"], "argument --minutes: -1 is not a number >= 0"),
    ("train_cifar10", ["--batch-size", "0"], "argument --batch-size: 0 is less than 1"),
    ("train_defaults", ["--slices", "abc"], "argument --slices: 'abc' is not a whole number"),
    ("quantization_quality", ["--held-out", "0"], "argument --held-out: 0 is less than 1"),
])
def test_benchmark_scripts_refuse_bad_values_in_one_line(script, args, words, tmp_path):
    path = next(p for p in BENCHMARKS if p.stem == script)
    result = subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path)
    assert result.returncode == 2 and words in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_train_cifar10_refuses_a_finished_run_folder(tmp_path):
    # it trained over one in place (its tflite/, report and all went), where `train` refuses without --restart
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.keras").write_bytes(b"a finished run's model")
    (run / "run.json").write_text("{}")
    path = next(p for p in BENCHMARKS if p.stem == "train_cifar10")
    result = subprocess.run([sys.executable, str(path), "--out", str(run)], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert result.returncode == 2 and "holds a finished run" in result.stderr, result.stderr
    assert (run / "model.keras").read_bytes() == b"a finished run's model"


def test_train_cifar10_interrupted_leaves_no_work_folder(tmp_path):
    """Its work folder in $TMPDIR (a CIFAR slice, the half-trained run) stayed after a failure or a Ctrl-C."""
    import os
    import signal
    import time

    from mobilenet_keras.testing.reference_data import CIFAR, WEIGHTS_025

    if not (CIFAR.is_dir() and WEIGHTS_025.is_file()):
        pytest.skip(f"{CIFAR} or {WEIGHTS_025} is not there (../shared/data)")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    path = next(p for p in BENCHMARKS if p.stem == "train_cifar10")
    args = ["--train-images", "300", "--image-size", "32", "--batch-size", "16", "--epochs", "1",
            "--fine-tune-epochs", "0", "--baseline-steps", "0", "--no-results", "--out", str(tmp_path / "run")]
    victim = subprocess.Popen([sys.executable, str(path), *args], cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(scratch)})
    deadline = time.time() + 240
    while victim.poll() is None and time.time() < deadline and not list(scratch.glob("train_cifar10_*/data/*")):
        time.sleep(0.05)
    if victim.poll() is not None:
        pytest.fail(f"it ended before its slice was made: {victim.communicate()[1][-2000:]}")
    time.sleep(1)  # into the data loading or training
    victim.send_signal(signal.SIGINT)
    victim.communicate(timeout=120)
    assert victim.returncode != 0
    assert not list(scratch.glob("train_cifar10_*")), list(scratch.rglob("*"))[:5]


def test_the_mse_range_search_clips_a_lone_outlier_and_keeps_a_full_range():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.quantization_quality import mse_optimal_clip

    rng = np.random.default_rng(0)
    spread = rng.uniform(0, 6, 100_000)  # every step of [0, 6] used: clipping only adds error
    assert mse_optimal_clip(spread) == (1.0, 1.0)
    # one value in 2 million at 6x the rest: its clipping error costs less than a 6x coarser grid for all
    bulk = np.concatenate([rng.uniform(0, 1, 2_000_000), [6.0]])
    fraction, gain = mse_optimal_clip(bulk)
    assert fraction < 0.5 and gain < 0.5
    # one in 100,000 costs more clipped that far: the search stops near the maximum
    assert mse_optimal_clip(bulk[-100_001:])[0] > 0.8
