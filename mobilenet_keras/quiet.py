"""TensorFlow's native log lines kept off the user's stderr while this package works.

TensorFlow's and LiteRT's C++ code writes to fd 2 directly, whatever Python's `sys.stderr` is, and
TF_CPP_MIN_LOG_LEVEL does not reach every line (absl's pre-init notice, LiteRT's delegate notice). Where
TensorFlow talks while the package works, the lines are filtered by `quiet_tensorflow()`, which passes every
other line through: as TensorFlow loads (an import hook, `install_import_filter`: the package imports it
inside many functions), while the converter runs and while LiteRT loads a file. The command line filters
for the whole command. The lines are shown when asked for: MOBILENET_KERAS_VERBOSE=1, or TF_CPP_MIN_LOG_LEVEL
set before the package is imported (TensorFlow's own switch: its level then applies as TensorFlow applies
it), or `show_tensorflow_logs()`.

Imports nothing from TensorFlow, so that the command line sets this up before TensorFlow loads.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading

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
        flush_streams()
        self._saved = os.dup(2)
        try:
            # the pump writes to a descriptor of its own, closed when it ends: a child process that outlives
            # the block (it holds the pipe) keeps its lines going to the real stderr, never into a reused fd
            out = os.dup(self._saved)
            read, write = os.pipe()
        except BaseException:
            os.close(self._saved)
            raise
        try:
            os.dup2(write, 2)
            os.close(write)
            self._thread = threading.Thread(target=self._pump, args=(read, out), name="stderr-filter", daemon=True)
            self._thread.start()
        except BaseException:  # Ctrl-C or SIGTERM right here: stderr must not stay on a pipe no one reads
            os.dup2(self._saved, 2)
            for fd in (read, out, self._saved):
                with contextlib.suppress(OSError):
                    os.close(fd)
            raise
        _follow_faulthandler(self._saved)
        return self

    def __exit__(self, *exc):
        flush_streams()
        os.dup2(self._saved, 2)  # closes the pipe's last writer (unless a child still holds it)
        _follow_faulthandler(2)
        os.close(self._saved)
        self._thread.join(timeout=2)  # its last lines out before the caller's next ones
        return False

    @staticmethod
    def _write(out: int, data: bytes) -> None:
        while data:
            try:
                data = data[os.write(out, data):]
            except OSError:
                return

    def _pump(self, read: int, out: int) -> None:
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
                self._write(out, kept)
        finally:
            if pending and not NATIVE_CHATTER.match(pending.decode("utf-8", "replace")):
                self._write(out, pending)
            os.close(read)
            os.close(out)

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


def _follow_faulthandler(fd: int) -> None:
    """Point faulthandler, when on, at `fd`: a crash's traceback written into the filter's pipe dies with the
    process before the filter passes it on."""
    import faulthandler

    if faulthandler.is_enabled():
        with contextlib.suppress(Exception):
            faulthandler.enable(file=fd, all_threads=True)


def flush_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


_lock = threading.Lock()
_depth = 0
_filter: NativeStderrFilter | None = None
_shown: bool | None = None  # set by show_tensorflow_logs or tensorflow_logs; None: as the environment asks
# Read once, as this module loads: the command line sets TF_CPP_MIN_LOG_LEVEL itself later, for TensorFlow.
_ASKED = os.environ.get("MOBILENET_KERAS_VERBOSE", "") == "1" or "TF_CPP_MIN_LOG_LEVEL" in os.environ


def show_tensorflow_logs(show: bool = True) -> None:
    """Let TensorFlow's native log lines through (`show=True`) or keep them out, from now on (for a block
    alone: `tensorflow_logs`)."""
    global _shown
    _shown = show


def tensorflow_logs_shown() -> bool:
    """Whether TensorFlow's log lines reach stderr: asked for by MOBILENET_KERAS_VERBOSE=1 or by TF_CPP_MIN_LOG_LEVEL
    set before the package was imported, or by `show_tensorflow_logs`."""
    return _ASKED if _shown is None else _shown


@contextlib.contextmanager
def quiet_tensorflow():
    """TensorFlow's native log lines filtered out of fd 2 while the block runs (nested blocks, and blocks in
    several threads, share one filter); nothing changes when they are shown (`tensorflow_logs_shown`)."""
    global _depth, _filter
    if tensorflow_logs_shown():
        yield
        return
    with _lock:
        _depth += 1
        if _depth == 1:
            try:
                _filter = NativeStderrFilter().__enter__()
            except OSError:  # no file descriptor or thread to spare: the lines show, the work goes on
                _filter = None
            except BaseException:
                _depth -= 1
                raise
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _filter is not None:
                _filter.__exit__(None, None, None)
                _filter = None


class _QuietLoader:
    """TensorFlow's own loader, run inside `quiet_tensorflow()`, then CUDA's probing for a GPU (an E line on a
    machine without one, otherwise written at the first op) while the filter is on."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        with quiet_tensorflow():
            self._loader.exec_module(module)
            with contextlib.suppress(Exception):
                module.config.list_physical_devices()

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _QuietTensorFlowImport:
    """A meta-path finder for the first `import tensorflow` after the package loads, wherever it happens (the
    package imports TensorFlow inside many functions): TensorFlow's start-up lines (absl's pre-init notice,
    oneDNN, CUDA drivers, CPU features), which TF_CPP_MIN_LOG_LEVEL does not reach, are filtered."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        uninstall_import_filter()  # once; and the lookup below must not come back here
        if tensorflow_logs_shown():
            return None
        import importlib.util

        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _QuietLoader(spec.loader)
        return spec


_finder = _QuietTensorFlowImport()


def install_import_filter() -> None:
    """Filter TensorFlow's start-up lines when it is imported after this (see `_QuietTensorFlowImport`)."""
    if "tensorflow" not in sys.modules and _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)


def uninstall_import_filter() -> None:
    with contextlib.suppress(ValueError):
        sys.meta_path.remove(_finder)


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
