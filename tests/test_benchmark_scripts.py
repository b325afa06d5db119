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
