"""Damaged .tflite files (seeded bit flips, truncations, zeroed ranges) never crash the process: each loads
and runs, or is refused with a one-line ValueError; the command line says so with exit status 2.

The files are run in a subprocess: a segfault in the native interpreter must fail this test, not kill pytest.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import IMAGES

N_FILES = 600
KINDS = ("flip", "flip_structure", "truncate", "zero", "zero_structure")

WORKER = r"""
import sys
from pathlib import Path

import numpy as np

from tflite.runtime import TFLiteModel

for path in sorted(Path(sys.argv[1]).glob("*.tflite")):
    try:
        model = TFLiteModel(path)
        model.predict(np.zeros((2, *model.input_shape[1:]), np.float32))
        outcome = "ok"
    except ValueError as exc:
        outcome = "ValueError " + str(exc)
    except Exception as exc:  # anything else is a finding, reported as such
        outcome = f"OTHER {type(exc).__name__}: {exc}"
    print(path.name, outcome, flush=True)
print("finished", flush=True)
"""


def _structure_offsets(content: bytes) -> np.ndarray:
    """Byte offsets outside the weight buffers: the flatbuffer's tables, where damage matters most."""
    from ai_edge_litert import schema_py_generated as schema

    raw = np.frombuffer(content, np.uint8)
    base = raw.__array_interface__["data"][0]
    model = schema.Model.GetRootAsModel(content, 0)
    outside = np.ones(len(content), bool)
    for i in range(model.BuffersLength()):
        buffer = model.Buffers(i)
        if buffer.DataLength():
            start = buffer.DataAsNumpy().__array_interface__["data"][0] - base
            outside[start:start + buffer.DataLength()] = False
    return np.flatnonzero(outside)


def _damage(content: bytes, folder: Path, n: int, seed: int = 0) -> list[Path]:
    data = np.frombuffer(content, np.uint8)
    structure = _structure_offsets(content)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        damaged = data.copy()
        if kind.startswith("flip"):
            for _ in range(int(rng.integers(1, 9))):
                offset = structure[rng.integers(len(structure))] if kind == "flip_structure" \
                    else rng.integers(len(damaged))
                damaged[offset] ^= np.uint8(1 << int(rng.integers(8)))
        elif kind == "truncate":
            damaged = damaged[:int(rng.integers(0, len(damaged)))]
        else:
            offset = structure[rng.integers(len(structure))] if kind == "zero_structure" \
                else rng.integers(len(damaged))
            damaged[offset:offset + int(rng.integers(1, 257))] = 0
        path = folder / f"{i:04d}_{kind}.tflite"
        path.write_bytes(damaged.tobytes())
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def damaged(tmp_path_factory):
    import tflite
    from mobilenet_keras import MobileNetV1

    folder = tmp_path_factory.mktemp("damaged")
    model = MobileNetV1(alpha=0.25, input_shape=(32, 32, 3), classes=3, weights=None)
    source = tflite.convert(model, folder.parent / "intact.tflite", "float32")
    paths = _damage(source.read_bytes(), folder, N_FILES)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", WORKER, str(folder)], capture_output=True, text=True,
                            timeout=300, env=env, cwd=Path(__file__).resolve().parents[1])
    return paths, result


def test_damaged_files_never_crash_and_errors_are_one_line(damaged):
    paths, result = damaged
    assert result.returncode == 0, f"the interpreter process died ({result.returncode}): {result.stderr[-2000:]}"
    lines = result.stdout.splitlines()
    assert lines[-1] == "finished"
    outcomes = dict(line.split(" ", 1) for line in lines[:-1])
    # one line per file: a message with a line break would have made a line that names no file
    assert len(lines) - 1 == len(paths) and set(outcomes) == {p.name for p in paths}
    others = {name: outcome for name, outcome in outcomes.items() if outcome.startswith("OTHER")}
    assert not others, f"{len(others)} files raised something else than ValueError: {list(others.items())[:5]}"
    refused = {name: outcome for name, outcome in outcomes.items() if outcome.startswith("ValueError")}
    assert all(name in outcome for name, outcome in refused.items())  # the message names the file
    assert len(refused) >= N_FILES // 5 and len(refused) < N_FILES, f"{len(refused)} of {N_FILES} refused"
    assert all(outcomes[p.name].startswith("ValueError") for p in paths
               if "truncate" in p.name and p.stat().st_size < 1000)


def _cli(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "mobilenet_keras", *map(str, args)], capture_output=True,
                          text=True, timeout=120, env=env, cwd=Path(__file__).resolve().parents[1])


@pytest.mark.parametrize("command", ["predict", "bench"])
def test_the_command_line_refuses_damaged_files_with_exit_2_and_one_line(damaged, command):
    paths, result = damaged
    outcomes = dict(line.split(" ", 1) for line in result.stdout.splitlines()[:-1])
    refused = [p for p in paths if outcomes.get(p.name, "").startswith("ValueError")]
    image = IMAGES / "chelsea.png"
    if command == "predict" and not image.exists():
        pytest.skip(f"{image} is not there (../shared/data)")
    picks = [refused[i] for i in np.linspace(0, len(refused) - 1, 20).astype(int)]
    for path in picks:
        done = _cli(command, path, image) if command == "predict" else _cli(command, path, "--runs", "3")
        errors = [line for line in done.stderr.splitlines() if line.strip()]
        assert done.returncode == 2, f"{path.name}: exit {done.returncode}\n{done.stderr[-2000:]}"
        assert "Traceback" not in done.stderr
        assert len(errors) == 1 and errors[0].startswith(f"mobilenet-keras {command}: error:"), done.stderr
