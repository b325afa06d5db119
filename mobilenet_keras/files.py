"""Writing outputs so that a failure never leaves a half-written file where the user looks.

Every file is written to a temporary file in the same folder and renamed into place, so a kill, a
crash or a full disk leaves either the old file or the new one. Written files and folders follow the
umask like any other program's (0644 and 0755 under umask 022), not mkstemp's private 0600. A full
disk is a one-line ValueError ("disk full writing X") and the temporary file is removed.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import re
import sys
import tempfile
import threading
from pathlib import Path

_UMASK_LOCK = threading.Lock()
#: errno values that mean "no room": the disk, or the user's quota, is full.
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux: /proc/self/status),
    else by setting and restoring it under a lock."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        old = os.umask(0o022)
        os.umask(old)
    return old


def file_mode() -> int:
    """The mode a new file gets from open(): 0666 less the umask."""
    return 0o666 & ~current_umask()


def folder_mode() -> int:
    """The mode a new folder gets from mkdir: 0777 less the umask."""
    return 0o777 & ~current_umask()


def check_room(path: str | os.PathLike, needed_bytes: int) -> None:
    """A one-line "disk full" ValueError when the folder of `path` has less free space than `needed_bytes`.
    For writers that fail badly on a full disk: h5py, out of room in the middle of a file, can crash the
    interpreter (a segmentation fault) instead of raising."""
    import shutil

    try:
        free = shutil.disk_usage(Path(path).parent).free
    except OSError:
        return
    if free < needed_bytes:
        raise disk_full_error(path)


def weights_room(model) -> int:
    """Bytes to leave free for an HDF5 file of `model`'s weights (Keras 3 saves its optimizer's variables
    with them: Adam's two slots per weight): their size, with room for HDF5's own."""
    import numpy as np

    optimizer = getattr(model, "optimizer", None)
    variables = list(model.weights) + list(getattr(optimizer, "variables", None) or [])
    total = sum(int(np.prod(w.shape)) * np.dtype(str(getattr(w.dtype, "name", w.dtype))).itemsize
                for w in variables)
    return int(total * 1.25) + (1 << 20)


def follow_umask(tree: str | os.PathLike) -> None:
    """Give the folders and files under `tree` (itself included) the modes the umask gives new ones: TensorFlow
    makes its own folders 0755 and files 0644 whatever the umask (umask 002 asks for 0775 and 0664)."""
    folders, files = folder_mode(), file_mode()
    for here, _, names in os.walk(tree):
        targets = [(here, folders)] + [(os.path.join(here, name), files) for name in names]
        for path, mode in targets:
            try:
                if not os.path.islink(path):
                    os.chmod(path, mode)
            except OSError:  # another user's file (a run resumed by someone else): left as it is
                pass


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc` (OSError, h5py's OSError without errno, TensorFlow's errors) means the disk is full."""
    if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
        return True
    text = str(exc)
    return ("No space left on device" in text or "Disk quota exceeded" in text or "errno = 28" in text
            or "errno=28" in text)


def disk_full_error(path, exc: BaseException | None = None) -> ValueError:
    return ValueError(f"disk full writing {path}; free some space (or choose another folder) and run again.")


def check_file_name(path: str | os.PathLike, example: str = "model.tflite") -> Path:
    """`path` as a Path, refused when it names a folder (an existing one, or one ending in a slash)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"the output path must be a file path (str or pathlib.Path); got {type(path).__name__}.")
    if str(path).endswith(("/", os.sep)):  # Path() drops the slash: "out/new/" would become a file "new"
        raise ValueError(f"output path {path} names a folder; give a file name such as {Path(path) / example}.")
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"output path {path} is a folder; give a file name such as {path / example}.")
    return walked_path(path)


def check_output_path(path: str | os.PathLike, example: str | None = None) -> Path:
    """Resolve `path` and check that a file can be written there, with a message that says how to fix it
    (`example`: a file name to suggest; by default `model` with `path`'s suffix, or model.tflite)."""
    path = check_file_name(path, example or f"model{Path(str(path).rstrip('/' + os.sep)).suffix or '.tflite'}")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ValueError(f"output folder {folder} does not exist; create it first.")
    try:
        probe_writable(folder)
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full_error(path, exc) from None
        raise ValueError(f"output folder {folder} is not writable ({exc.strerror or exc}).") from None
    return path


def probe_writable(folder: str | os.PathLike) -> None:
    """Create and remove a file in `folder`, or raise its OSError: os.access says yes to root on a read-only
    mount or in /proc."""
    import socket

    # named by host and process, as owned_temp_folder's folders: a probe that a kill left is removed next time
    prefix = f".write-check.{socket.gethostname()}."
    remove_abandoned(folder, prefix, rf"\.{RANDOM_PART}\.tmp")
    fd, probe = tempfile.mkstemp(prefix=f"{prefix}{os.getpid()}.", suffix=".tmp", dir=folder)
    os.close(fd)
    with contextlib.suppress(FileNotFoundError):  # removed as abandoned by a twin (same host name, same pid)
        os.unlink(probe)


def _format_suffix(path: Path) -> str:
    """The end of `path`'s name that Keras picks the format by (`.weights.h5`, `.keras`, ...)."""
    return ".weights.h5" if path.name.endswith(".weights.h5") else path.suffix


def _temp_file(path: Path, keep_suffix: bool) -> tuple[int, str]:
    """mkstemp beside `path` under a name that says whose it is (`.NAME.PID.XXXXXXXX.tmp...`, ending in
    `path`'s format suffix when `keep_suffix`), after removing the ones that killed writers of `path` left."""
    suffix = _format_suffix(path)
    remove_abandoned(path.parent, f".{path.name}.", rf"\.{RANDOM_PART}\.tmp({re.escape(suffix)})?")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp" + (suffix if keep_suffix else ""),
                               dir=path.parent)
    remember_mine(tmp)
    return fd, tmp


def _temp_name(path: Path) -> Path:
    """A fresh name beside `path` that keeps its suffix (Keras picks the format by the suffix)."""
    fd, tmp = _temp_file(path, keep_suffix=True)
    os.close(fd)
    return Path(tmp)


def _close_hdf5(path: Path) -> None:
    """Close HDF5 files still open on `path` after a failed write (Keras leaves its h5py file open when
    a write fails; h5py would flush it again at exit, print a traceback and crash the interpreter)."""
    h5py = sys.modules.get("h5py")
    if h5py is None:
        return
    import gc

    gc.collect()
    target = os.path.abspath(path)
    try:
        ids = h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE)
    except Exception:  # noqa: BLE001 - best effort
        return
    for fid in ids:
        try:
            name = fid.name.decode() if isinstance(fid.name, bytes) else str(fid.name)
            if os.path.abspath(name) != target:
                continue
        except Exception:  # noqa: BLE001
            continue
        for _ in range(2):  # the first close may fail flushing to a full disk; the second drops it
            try:
                h5py.File(fid).close()
                break
            except Exception:  # noqa: BLE001
                pass


def _remove_quietly(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            import shutil

            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    except OSError:
        pass


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside `path` for a writer that wants a file name (Keras's save,
    h5py, matplotlib); on success it gets the umask's mode and is renamed onto `path`, on any failure
    it is removed. A full disk becomes a ValueError naming `path`."""
    path = check_output_path(path)
    try:
        tmp = _temp_name(path)
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full_error(path, exc) from None
        raise
    try:
        yield tmp
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException as exc:
        _close_hdf5(tmp)
        _remove_quietly(tmp)
        if isinstance(exc, Exception) and is_disk_full(exc):
            raise disk_full_error(path, exc) from None
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to a temporary file beside `path`, then rename it into place (mode 0666 & ~umask)."""
    path = check_output_path(path)
    tmp = None
    try:
        fd, tmp = _temp_file(path, keep_suffix=False)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), file_mode())
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and is_disk_full(exc):
            raise disk_full_error(path, exc) from None
        raise
    return path


#: How `write_json_atomic` writes the floats JSON has no number for, as strings that JavaScript's Number() and
#: Python's float() read back (Python's json writes them bare, which JSON.parse, jq and most readers refuse).
NONFINITE = {"Infinity": math.inf, "-Infinity": -math.inf, "NaN": math.nan}


def write_json_atomic(path: str | os.PathLike, data) -> Path:
    """`data` as strict JSON (`write_bytes_atomic`): NaN and infinities as the strings of `NONFINITE`; numpy
    numbers as numbers. `read_json` gives the floats back."""
    import json

    return write_bytes_atomic(path, json.dumps(_plain(data), indent=2, allow_nan=False).encode())


def read_json(path: str | os.PathLike):
    """A file `write_json_atomic` wrote, with its non-finite figures as floats again."""
    import json

    return _restored(json.loads(Path(path).read_text()))


def _restored(value):
    # figures are the values of keys; strings in lists are names (a class may be called "NaN") and stay
    if isinstance(value, dict):
        return {key: NONFINITE.get(item, item) if isinstance(item, str) else _restored(item)
                for key, item in value.items()}
    if isinstance(value, list):
        return [item if isinstance(item, str) else _restored(item) for item in value]
    return value


def _plain(value):
    import numpy as np

    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        if math.isfinite(value):
            return float(value)
        return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    return value


def walked_path(path: str | os.PathLike) -> Path:
    """`path` with its folder resolved as the system walks it, where it holds '..': `mkdir -p` on 'new/../x'
    creates 'new', which the written file then never uses (left behind, empty). The file's own name is kept,
    so that a link there is replaced, not followed."""
    path = Path(path)
    if ".." not in path.parts:
        return path
    return Path(os.path.realpath(path.parent)) / path.name


def make_folder(path: str | os.PathLike) -> Path:
    """mkdir -p with the umask's mode (0755 under umask 022); a full disk is a one-line ValueError."""
    path = Path(path)
    try:
        path.mkdir(mode=0o777, parents=True, exist_ok=True)
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full_error(path, exc) from None
        if isinstance(exc, (FileExistsError, NotADirectoryError)):  # a file where a folder of the path should be
            blocking = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), path)
            raise ValueError(f"can't create the folder {path}: {blocking} is a file.") from None
        raise ValueError(f"can't create the folder {path} ({exc.strerror or exc}).") from None
    return path


_RENAME_EXCHANGE = 2  # renameat2's flag (Linux 3.15+): swap two names in one step


def exchange_folders(first: str | os.PathLike, second: str | os.PathLike) -> bool:
    """Swap two existing folders' names in one step (Linux's renameat2 RENAME_EXCHANGE), so that a kill leaves
    each name holding one whole folder; False where the system or file system can't, with nothing changed."""
    import ctypes

    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2  # the C library the interpreter runs on
    except (OSError, AttributeError):  # a C library without it (glibc before 2.28, some musl builds)
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    renameat2.restype = ctypes.c_int
    at_cwd = -100
    if renameat2(at_cwd, os.fsencode(first), at_cwd, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    # not in this kernel, not on this file system, or refused by a sandbox's system-call filter
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EPERM):
        return False
    raise OSError(code, os.strerror(code), str(second))


def staging_path(path: str | os.PathLike) -> Path:
    """A hidden name beside `path` for something written and checked before it takes `path`'s place; it names
    this process, so that `remove_abandoned_staging` knows a killed writer's leftovers."""
    path = Path(path)
    staged = path.parent / f".{path.name}.{os.getpid()}.staging{path.suffix}"
    remember_mine(staged)
    return staged


def remove_abandoned_staging(path: str | os.PathLike) -> None:
    """Remove the staging files and folders that a killed writer left beside `path` (their process is gone)."""
    path = Path(path)
    # staging_path's files (.NAME.PID.staging.SUFFIX) and mkdtemp's folders (.NAME.PID.XXXXXXXX.staging)
    remove_abandoned(path.parent, f".{path.name}.", rf"(\.{RANDOM_PART}\.staging|\.staging{re.escape(path.suffix)})")


# Temporary files and folders this process made and may still be using: a leftover that names this
# process's id but is not one of them was left by a killed process whose id this one has now (a
# container's entry point gets the same small id every time).
_MINE: set[str] = set()


def owned_temp_folder(parent: str | os.PathLike, suffix: str) -> Path:
    """A new folder in `parent` named `mobilenet-keras.HOST.PID.XXXXXXXX{suffix}`, after removing the ones of
    that suffix that killed processes of this host left there (the host in the name: on storage that machines
    or containers share, other hosts' process ids mean nothing here)."""
    import socket

    prefix = f"mobilenet-keras.{socket.gethostname()}."
    remove_abandoned(parent, prefix, rf"\.{RANDOM_PART}{re.escape(suffix)}")
    where = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}.", suffix=suffix, dir=parent))
    remember_mine(where)
    return where


def write_weights(model, path: str | os.PathLike) -> Path:
    """`model.save_weights` to `path` (a `.weights.h5` or `.h5` file) through a temporary file, refused first
    when the folder lacks room: h5py out of room in the middle of a file can crash the interpreter."""
    check_room(path, weights_room(model))
    with atomic_path(path) as tmp:
        model.save_weights(str(tmp), overwrite=True)
    return Path(path)


@contextlib.contextmanager
def scratch_folder():
    """A new private folder in the system's temporary folder for one step's intermediate files (a SavedModel
    on its way to TFLite, a file MediaPipe rewrites), removed after the step. Named by host and process, so
    the next one removes what a killed process left (a SavedModel each)."""
    import shutil

    where = owned_temp_folder(tempfile.gettempdir(), ".scratch")
    try:
        yield where
    finally:
        shutil.rmtree(where, ignore_errors=True)
        _MINE.discard(os.path.abspath(where))


@contextlib.contextmanager
def process_temp_folder():
    """Point Python's temporary files (`tempfile`) at a folder of the package's for the block, removed after it,
    and by the next process when a kill left it: TensorFlow's AutoGraph writes a .py file for each function it
    converts and removes them only at a clean exit, so every killed run left dozens in /tmp."""
    import shutil

    before = tempfile.tempdir
    try:
        where = owned_temp_folder(tempfile.gettempdir(), ".tmp")
    except OSError:  # no room or no write access: the files go where they would have gone
        yield None
        return
    tempfile.tempdir = str(where)
    try:
        yield where
    finally:
        tempfile.tempdir = before
        shutil.rmtree(where, ignore_errors=True)
        _MINE.discard(os.path.abspath(where))


def remember_mine(path: str | os.PathLike) -> None:
    """Mark a temporary file or folder as this process's own, for `remove_abandoned` to leave alone."""
    _MINE.add(os.path.abspath(path))


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's process
        return False
    except OverflowError:  # an id no process can have
        return True
    return pid == os.getpid()


# mkstemp's and mkdtemp's random part: eight of these characters
RANDOM_PART = r"[a-z0-9_]{8}"


def remove_abandoned(folder: str | os.PathLike, prefix: str, rest: str) -> None:
    """Remove what killed processes left in `folder` under names `PREFIX + PID + REST` (REST a regular
    expression for the whole rest of the name: staging files, temporary files, cache folders), when process
    PID no longer runs on this machine and the name is not this process's own. Best effort: what cannot
    be removed stays."""
    import glob

    folder = Path(folder)
    pattern = re.compile(re.escape(prefix) + r"(\d+)" + rest)
    try:
        candidates = list(folder.glob(f"{glob.escape(prefix)}*"))
    except OSError:
        return
    for leftover in candidates:
        found = pattern.fullmatch(leftover.name)
        if (found is None or os.path.abspath(leftover) in _MINE
                or not _process_gone(int(found.group(1)))):
            continue
        _remove_quietly(leftover)
