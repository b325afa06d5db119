"""tf.distribute: an epoch under MirroredStrategy over two logical CPU devices, and MultiWorkerMirroredStrategy
with two worker processes on 127.0.0.1 where only the chief writes the run folder.

Each run is a fresh subprocess (logical devices and collective ops are set when TensorFlow starts), on the
embedded digits at 32 px with alpha 0.25, under a timeout."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 300

MIRRORED = r"""
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from mobilenet_keras.training import datasets
from mobilenet_keras.training.trainer import TrainConfig, make_strategy, train
strategy = make_strategy("mirrored")
data = datasets.digits(image_size=32, batch_size=64)
train(data, sys.argv[1], TrainConfig(alpha=0.25, image_size=32, epochs=1, batch_size=64, strategy="mirrored"),
      verbose=0)
print("REPLICAS", strategy.num_replicas_in_sync, json.dumps(sorted(strategy.extended.worker_devices)))
"""

WORKER = r"""
import sys
from mobilenet_keras.training.trainer import TrainConfig, make_strategy, train
strategy = make_strategy("multiworker")  # first: collective ops are configured when TensorFlow starts
from mobilenet_keras.training import datasets
data = datasets.digits(image_size=32, batch_size=64)
train(data, sys.argv[1], TrainConfig(alpha=0.25, image_size=32, epochs=1, batch_size=64, strategy="multiworker"),
      verbose=0)
print("REPLICAS", strategy.num_replicas_in_sync)
"""


def _env(**extra) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="")
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def test_an_epoch_under_mirrored_strategy_over_two_logical_cpus(tmp_path):
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, "-c", MIRRORED, str(out)], capture_output=True, text=True,
                            timeout=TIMEOUT, env=_env(), cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("REPLICAS"))
    _, replicas, devices = line.split(" ", 2)
    assert int(replicas) == 2 and len(json.loads(devices)) == 2 and all("CPU" in d for d in json.loads(devices))
    run = json.loads((out / "run.json").read_text())
    assert run["throughput"]["replicas"] == 2 and run["final"]["epochs"] == 1
    assert len(run["throughput"]["images_per_second"]) == 1 and run["throughput"]["images_per_second"][0] > 0
    assert (out / "model.keras").exists()


@pytest.mark.slow  # about 70 s on 2 busy cores
def test_two_workers_train_together_and_only_the_chief_writes(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    out = tmp_path / "run"
    temps = [tmp_path / f"tmp{i}" for i in range(2)]
    workers = []
    for index, temp in enumerate(temps):
        temp.mkdir()
        config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        workers.append(subprocess.Popen([sys.executable, "-c", WORKER, str(out)], stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, cwd=ROOT,
                                        env=_env(TF_CONFIG=config, TMPDIR=str(temp))))
    results = []
    try:
        for worker in workers:
            stdout, stderr = worker.communicate(timeout=TIMEOUT)
            results.append((worker.returncode, stdout, stderr))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    for returncode, stdout, stderr in results:
        assert returncode == 0, stderr[-3000:]
        assert "REPLICAS 2" in stdout
    run = json.loads((out / "run.json").read_text())  # the chief's
    assert run["config"]["strategy"] == "multiworker" and run["throughput"]["replicas"] == 2
    assert (out / "model.keras").exists()
    # the other worker wrote into a temporary folder of its own and deleted it
    leftovers = [p for p in temps[1].iterdir() if p.name.startswith("mobilenet_keras_worker_")]
    assert not leftovers, leftovers


def test_mirrored_uses_every_logical_cpu():
    """Without a GPU, `--strategy mirrored` replicates over every logical CPU device (here the one there is)."""
    code = ("from mobilenet_keras.training.trainer import make_strategy; "
            "s = make_strategy('mirrored'); print('REPLICAS', s.num_replicas_in_sync, "
            "len(__import__('tensorflow').config.list_logical_devices('CPU')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT,
                            env=_env(), cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    _, replicas, cpus = next(line for line in result.stdout.splitlines() if line.startswith("REPLICAS")).split()
    assert replicas == cpus
