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
    assert run["resumed_after_epochs"] == 0
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


@pytest.mark.parametrize("config,words", [
    (None, "TF_CONFIG is not set"),
    ("not json", "TF_CONFIG is not JSON"),
    ("{}", 'TF_CONFIG has no "cluster"'),
    ('{"task": {"type": "worker", "index": 0}}', 'has no "cluster"'),  # it trained alone, as 1 replica
    ('{"cluster": {"worker": ["localhost:1"]}}', 'has no "task"'),
    ('{"cluster": {"worker": "localhost:1"}, "task": {"type": "worker", "index": 0}}', 'list of "host:port"'),
    ('{"cluster": {"worker": ["localhost"]}, "task": {"type": "worker", "index": 0}}', 'list of "host:port"'),
    ('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 5}}', "task index 5"),
    ('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "chief", "index": 0}}', 'task type "chief"'),
    ('{"cluster": {"ps": ["localhost:1"], "worker": ["localhost:2"]}, "task": {"type": "worker", "index": 0}}',
     "cluster roles ps"),
    ('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": ["worker"], "index": 0}}', 'task type ["worker"]'),
])
def test_tf_config_is_checked_and_named_before_tensorflow_reads_it(config, words):
    from mobilenet_keras.training.cluster import read_tf_config

    with pytest.raises(ValueError, match="TF_CONFIG") as info:
        read_tf_config({} if config is None else {"TF_CONFIG": config})
    assert words in str(info.value) and '"task": {"type": "worker", "index": 0}' in str(info.value)


def _waiting_worker(tmp_path, wait_s: int):
    """Worker 0 of two, the other never started: TensorFlow waited for it forever, deaf to Ctrl-C."""
    ports = _free_ports(2)
    config = json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                         "task": {"type": "worker", "index": 0}})
    return subprocess.Popen([sys.executable, "-m", "mobilenet_keras", "train", "--quiet", "--data", "digits",
                             "--image-size", "32", "--epochs", "1", "--strategy", "multiworker", "--out",
                             str(tmp_path / "run")],
                            env=_env(TF_CONFIG=config, MOBILENET_KERAS_WORKER_WAIT=str(wait_s)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), ports[1]


def test_a_worker_that_never_starts_is_named_after_the_wait(tmp_path):
    worker, missing = _waiting_worker(tmp_path, 8)
    _, err = worker.communicate(timeout=TIMEOUT)
    assert worker.returncode == 2, err[-2000:]
    assert f"waiting for the other workers of TF_CONFIG (127.0.0.1:{missing})" in err
    assert f"127.0.0.1:{missing} (TF_CONFIG) did not answer in 8 s" in err
    assert not (tmp_path / "run").exists()


# SIGTERM: cleaned up, then ended by the signal again (-15 here, 143 in a shell), as a service manager expects
@pytest.mark.parametrize("signal_name,status,words", [("SIGINT", 130, "interrupted"),
                                                       ("SIGTERM", -15, "terminated (SIGTERM)")])
def test_ctrl_c_or_sigterm_ends_the_wait_for_the_other_workers(tmp_path, signal_name, status, words):
    # SIGTERM (kill, timeout, docker stop) ended the process with 143 and no word, skipping the clean-up
    import signal
    import time

    worker, _ = _waiting_worker(tmp_path, 300)
    deadline = time.time() + 120
    line = ""
    while "waiting for the other workers" not in line and time.time() < deadline:
        line = worker.stderr.readline()
    worker.send_signal(getattr(signal, signal_name))
    _, err = worker.communicate(timeout=60)
    # no epoch had finished (it never got past the wait): it says so, not that a rerun resumes
    assert worker.returncode == status and f"train: {words} (no epoch had finished: the same command starts" in err, \
        (worker.returncode, line, err[-2000:])


def test_what_tensorflow_takes_in_tf_config_is_taken(monkeypatch):
    from mobilenet_keras.training.cluster import peers, read_tf_config, worker_wait_s

    config = read_tf_config({"TF_CONFIG": json.dumps({
        "cluster": {"chief": ["[::1]:2000"], "worker": ["host-a:2001", "host-b:2002"]},
        "task": {"type": "worker", "index": "1"}})})  # an index as a string, as TensorFlow's resolver reads it
    assert config["task"]["index"] == 1 and peers(config) == ["[::1]:2000", "host-a:2001"]
    for bad in ("nan", "-5", "soon"):
        monkeypatch.setenv("MOBILENET_KERAS_WORKER_WAIT", bad)
        with pytest.raises(ValueError, match="is not a number of seconds above 0"):
            worker_wait_s()


def test_a_peer_whose_name_does_not_resolve_yet_is_waited_for_then_named():
    # on Kubernetes a worker's name resolves once its pod exists: not a reason to stop at once
    import time

    from mobilenet_keras.training.cluster import wait_for_peers

    mine = _free_ports(1)[0]
    config = {"cluster": {"worker": [f"127.0.0.1:{mine}", "worker-1.not-yet.invalid:2222"]},
              "task": {"type": "worker", "index": 0}}
    start = time.monotonic()
    with pytest.raises(ValueError, match=r"worker-1.not-yet.invalid:2222 \(its host name does not resolve\)"):
        wait_for_peers(config, 2, say=lambda text: None)
    assert time.monotonic() - start >= 2
