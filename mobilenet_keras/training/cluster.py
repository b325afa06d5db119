"""TF_CONFIG for multi-worker training: read and checked before TensorFlow sees it, and a wait for the other
workers that says whom it waits for, ends, and can be interrupted (TensorFlow's own does none of these)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys

EXAMPLE = ('TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", '
           '"index": 0}}\' (index 1 on host2)')
#: Seconds to wait for the other workers to answer, unless $MOBILENET_KERAS_WORKER_WAIT says otherwise.
WORKER_WAIT_ENV = "MOBILENET_KERAS_WORKER_WAIT"
DEFAULT_WORKER_WAIT_S = 600
_ROLES = ("chief", "worker")


def read_tf_config(environ=None) -> dict:
    """TF_CONFIG as a dict, checked: a cluster of "host:port" addresses by role (worker, and chief if any) and
    this process's task in it. A ValueError names what is wrong, with an example."""
    text = (os.environ if environ is None else environ).get("TF_CONFIG")

    def wrong(problem: str) -> ValueError:
        return ValueError(f"--strategy multiworker: TF_CONFIG {problem}; set it on every worker, e.g. {EXAMPLE}.")

    if not text or not text.strip():
        raise wrong("is not set")
    try:
        config = json.loads(text)
    except ValueError as exc:
        raise wrong(f"is not JSON ({exc})") from None
    if not isinstance(config, dict) or not isinstance(config.get("cluster"), dict) or not config["cluster"]:
        raise wrong('has no "cluster" (a JSON object of addresses by role)')
    cluster = config["cluster"]
    unknown = [role for role in cluster if role not in _ROLES + ("evaluator", "ps")]
    if unknown or "ps" in cluster:
        raise wrong(f"has cluster roles {', '.join(unknown or ['ps'])}; multi-worker training takes \"worker\" "
                    "(and \"chief\")")
    for role in _ROLES:
        addresses = cluster.get(role, [])
        if not isinstance(addresses, list) or not all(isinstance(a, str) and _port(a) for a in addresses):
            raise wrong(f'has cluster "{role}": {json.dumps(addresses)}; give a list of "host:port" strings')
    if not any(cluster.get(role) for role in _ROLES):
        raise wrong('lists no "worker" addresses')
    task = config.get("task")
    if not isinstance(task, dict) or "type" not in task or "index" not in task:
        raise wrong('has no "task": {"type": "worker", "index": N} saying which of the cluster this process is')
    kind, index = task["type"], task["index"]
    if not isinstance(kind, str) or kind not in cluster or kind not in _ROLES:
        roles = ", ".join(role for role in cluster if role in _ROLES)
        raise wrong(f"has task type {json.dumps(kind)}; give one of the cluster's training roles ({roles})")
    if isinstance(index, str) and index.strip().isdigit():
        index = task["index"] = int(index)  # TensorFlow's resolver takes "1" too
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(cluster[kind]):
        raise wrong(f'has task index {json.dumps(index)}; the cluster lists {len(cluster[kind])} {kind}(s), '
                    f"indexed from 0")
    return config


def _port(address: str) -> int | None:
    host, _, port = address.rpartition(":")
    return int(port) if host and port.isdigit() and 0 < int(port) < 65536 else None


def peers(config: dict) -> list[str]:
    """The addresses of the cluster's other workers (and chief)."""
    me = config["cluster"][config["task"]["type"]][config["task"]["index"]]
    every = [address for role in _ROLES for address in config["cluster"].get(role, [])]
    return [address for address in every if address != me]


def _resolves(address: str) -> bool:
    try:
        socket.getaddrinfo(address.rpartition(":")[0].strip("[]"), _port(address))
    except OSError:
        return False
    return True


def _answers(address: str) -> bool:
    """Whether something listens at `address`; False too while its name does not resolve (on Kubernetes a
    worker's name exists once its pod does)."""
    host = address.rpartition(":")[0].strip("[]")
    try:
        with socket.create_connection((host, _port(address)), timeout=1):
            return True
    except OSError:
        return False


def worker_wait_s() -> float:
    text = os.environ.get(WORKER_WAIT_ENV)
    try:
        seconds = float(text) if text else DEFAULT_WORKER_WAIT_S
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise ValueError(f"${WORKER_WAIT_ENV}={text} is not a number of seconds above 0.")
    return seconds


def wait_for_peers(config: dict, wait_s: float, say=None) -> None:
    """Return once every other worker of `config` answers on its port, or raise a ValueError naming those that
    did not within `wait_s` seconds; Ctrl-C interrupts it.

    TensorFlow's own wait (in MultiWorkerMirroredStrategy's constructor) says nothing, has no end, and holds
    the interpreter, so that Ctrl-C can't reach it (and its SIGTERM handler swallows the signal). This process
    listens on its own port meanwhile, so that the others see it waiting too, and lets it go just before
    TensorFlow's server takes it."""
    import time

    say = say or (lambda text: print(text, file=sys.stderr, flush=True))
    me = config["cluster"][config["task"]["type"]][config["task"]["index"]]
    others = peers(config)
    if not others:
        return
    try:  # on IPv4 and IPv6 where the machine has both, as TensorFlow's server listens
        both = socket.has_dualstack_ipv6()
        listener = socket.create_server(("", _port(me)), family=socket.AF_INET6 if both else socket.AF_INET,
                                        dualstack_ipv6=both, backlog=16)
    except OSError as exc:
        raise ValueError(f"--strategy multiworker: this worker's port {_port(me)} ({me} in TF_CONFIG) can't be "
                         f"opened ({exc.strerror or exc}); is another process using it?") from None
    listener.settimeout(0)
    try:
        start, said, waiting = time.monotonic(), False, list(others)
        while waiting:
            with contextlib.suppress(OSError):
                while True:  # let the others' knocks in and out
                    listener.accept()[0].close()
            waiting = [address for address in waiting if not _answers(address)]
            if not waiting:
                return
            if not said and time.monotonic() - start > 3:
                said = True
                say(f"waiting for the other workers of TF_CONFIG ({', '.join(waiting)}) to start, up to "
                    f"{wait_s:g} s (${WORKER_WAIT_ENV})")
            if time.monotonic() - start > wait_s:
                named = [address + ("" if _resolves(address) else " (its host name does not resolve)")
                         for address in waiting]
                raise ValueError(f"--strategy multiworker: {', '.join(named)} (TF_CONFIG) did not answer in "
                                 f"{wait_s:g} s; start the same command there with its own task index, or fix the "
                                 "address.")
            time.sleep(0.5)
    finally:
        listener.close()
