"""TensorFlow's native log lines kept off the user's stderr while this package works.

TensorFlow's and LiteRT's C++ code writes to fd 2 directly, whatever Python's `sys.stderr` is, and
TF_CPP_MIN_LOG_LEVEL does not reach every line (absl's pre-init notice, LiteRT's delegate notice). The
package's own calls that make TensorFlow talk (building a model, converting, checking, exporting, training)
run inside `quiet_tensorflow()`, which passes every other line through. The lines are shown when asked for:
MOBILENET_KERAS_VERBOSE=1, or TF_CPP_MIN_LOG_LEVEL set before the package's first call (TensorFlow's own
switch: its level then applies as TensorFlow applies it), or `show_tensorflow_logs()`.

Imports nothing from TensorFlow, so that the command line sets this up before TensorFlow loads.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import sys
import threading
from typing import Callable, TypeVar

# What TensorFlow's native code writes to fd 2 on its own: absl log lines (I0000 00:00:17.. 5569 port.cc:153] ...),
# TF's older format, absl's pre-init notice, the CPU-feature note's second line, the MLIR quantizer's
# settings line, LiteRT's delegate notice and CUDA probing on a machine without a GPU.
# F (fatal) lines are not chatter: they say why TensorFlow is about to abort the process, and pass.
NATIVE_CHATTER = re.compile(
    r"(?:[IWE]\d{4} \d\d:\d\d:[\d.]+\s+\d+ \S+:\d+\]"
    r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWE] "
    r"|Improper call to JPEG library in state \d+"  # libjpeg's, on a truncated file the pre-check then names
    r"|Input file read error$"  # libjpeg's too, on a truncated JPEG that the error line then names
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|To enable the following instructions: "
    r"|fully_quantize: "
    r"|INFO: Created TensorFlow Lite \w+ delegate"
    r"|.*\bcuInit\b)")
_CHATTER_START = re.compile(r"(?:[IWE]\d|\d{4}-|WARNING: All|To enable|fully_q|INFO: |Improper|Input file)")


class NativeStderrFilter:
    """While active, fd 2 goes through a pipe whose reader drops `NATIVE_CHATTER` lines and passes the rest
    on to the real stderr: TensorFlow's C++ code writes to fd 2 directly, whatever Python's sys.stderr is,
    and TF_CPP_MIN_LOG_LEVEL does not reach everything (absl's pre-init lines, the converter's).
    """

    def __init__(self):
        self._saved = None
        self._thread = None

    def __enter__(self):
        _flush_stderr()
        self._saved = os.dup(2)
        try:
            read, write = os.pipe()
        except OSError:
            os.close(self._saved)
            raise
        os.dup2(write, 2)
        os.close(write)
        self._thread = threading.Thread(target=self._pump, args=(read,), name="stderr-filter", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        _flush_stderr()
        os.dup2(self._saved, 2)  # closes the pipe's last writer (unless a child still holds it)
        self._thread.join(timeout=5)
        os.close(self._saved)
        return False

    def _write(self, data: bytes) -> None:
        while data:
            try:
                data = data[os.write(self._saved, data):]
            except OSError:
                return

    def _pump(self, read: int) -> None:
        pending = b""
        try:
            while True:
                chunk = os.read(read, 65536)
                if not chunk:
                    break
                pending += chunk
                kept, pending = self.filter_complete(pending)
                if pending and not _CHATTER_START.match(pending.lstrip(b"\r").decode("utf-8", "replace")):
                    kept, pending = kept + pending, b""  # a progress line ending in \r: show it now
                self._write(kept)
        finally:
            if pending and not NATIVE_CHATTER.match(pending.decode("utf-8", "replace")):
                self._write(pending)
            os.close(read)

    @staticmethod
    def filter_complete(data: bytes) -> tuple[bytes, bytes]:
        """(the complete lines of `data` that are not chatter, the incomplete rest)."""
        kept, start = [], 0
        for match in re.finditer(rb"[^\r\n]*(?:\r\n|\n|\r)", data):
            line = match.group()
            if not NATIVE_CHATTER.match(line.decode("utf-8", "replace")):
                kept.append(line)
            start = match.end()
        return b"".join(kept), data[start:]


def _flush_stderr() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


_lock = threading.Lock()
_depth = 0
_filter: NativeStderrFilter | None = None
_shown: bool | None = None  # decided at the first quiet call, from the environment, unless set


def show_tensorflow_logs(show: bool = True) -> None:
    """Let TensorFlow's native log lines through (`show=True`) or keep them out, from now on (for the block
    alone: `tensorflow_logs`)."""
    global _shown
    _shown = show


def tensorflow_logs_shown() -> bool:
    """Whether TensorFlow's log lines reach stderr: asked for by MOBILENET_KERAS_VERBOSE=1, by TF_CPP_MIN_LOG_LEVEL
    set before the first quiet call, or by `show_tensorflow_logs`."""
    global _shown
    if _shown is None:
        _shown = os.environ.get("MOBILENET_KERAS_VERBOSE", "") == "1" or "TF_CPP_MIN_LOG_LEVEL" in os.environ
    return _shown


@contextlib.contextmanager
def quiet_tensorflow():
    """TensorFlow's native log lines filtered out of fd 2 while the block runs (nested blocks, and blocks in
    several threads, share one filter); nothing changes when they are shown (`tensorflow_logs_shown`)."""
    global _depth, _filter
    if tensorflow_logs_shown():
        yield
        return
    # Read by TensorFlow when it loads: its later lines (the converter's, CUDA's probing) are never written.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with _lock:
        if _depth == 0:
            try:
                _filter = NativeStderrFilter().__enter__()
            except OSError:  # no file descriptor or thread to spare: the lines show, the work goes on
                _filter = None
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _filter is not None:
                _filter.__exit__(None, None, None)
                _filter = None


@contextlib.contextmanager
def tensorflow_logs(show: bool):
    """TensorFlow's native log lines shown (`show`) or kept out for the block, whatever the environment says;
    the earlier choice is put back after (the command line's --verbose)."""
    global _shown
    before, _shown = _shown, show
    try:
        with quiet_tensorflow():
            yield
    finally:
        _shown = before


F = TypeVar("F", bound=Callable)


def quiet(function: F) -> F:
    """`function` run inside `quiet_tensorflow()`."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with quiet_tensorflow():
            return function(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
