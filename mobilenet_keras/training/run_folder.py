"""A run folder: what `train` and `pipeline` write there, and the checks on it, in one place.

A finished training run holds `model.keras`, `labels.txt`, `history.csv`, `training.png`, `logs/`
and `run.json` (written last). A finished pipeline run adds files made from that model (`tflite/`,
`android/`, `saved_model/`, `qat/`, plots) and `report.md`/`report.json` (written last: a folder
with `report.json` holds a verdict). While training, `backup/`, `best.weights.h5` and `phase1.*`
are the resume state.

    folder = RunFolder("runs/latest")
    folder.check_writable()
    folder.invalidate()          # before training again: no verdict about a model that is gone
    ...
    folder.write_labels(names)
    folder.write_run(run)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import warnings
from pathlib import Path

from mobilenet_keras.files import probe_writable, walked_path, write_bytes_atomic, write_json_atomic
from mobilenet_keras.labels import check_class_names, read_labels

try:
    import fcntl
except ImportError:  # not on Windows: no lock there
    fcntl = None

#: The files of a finished pipeline's verdict; removed first, so no verdict outlives its model.
REPORT_FILES = ("report.json", "report.md")
#: Folders of files made from a trained model by `pipeline`, `qat` and `export`.
DERIVED_FOLDERS = ("tflite", "android", "saved_model", "qat")
#: The package's alone: written whole by pipeline, qat and export (which refuses to write anything else there).
WHOLLY_DERIVED = ("tflite", "saved_model", "qat")
#: What the package writes in android/, where `export --android` may also put files of the user's choosing:
#: removed with the model they were made from; anything else there stays (a warning names it).
ANDROID_FILES = ("model.tflite", "model.failed.tflite", "labels.txt")
#: Leftovers of writes that were killed (mobilenet_keras.files: temporary, staging and set-aside names).
_LEFTOVERS = (".*.tmp*", ".*.staging*", ".*.replaced")
#: Plots made from a trained model (`training.png` is made by `train` and is not one of them).
DERIVED_PLOTS = ("confusion_matrix.png", "scatter_float_vs_int8.png", "size_vs_accuracy.png")
#: Resume state of an unfinished `train`.
RESUME_FILES = ("phase1.json", "phase1.weights.h5")
RESUME_FOLDERS = ("backup",)
BEST_WEIGHTS = "best.weights.h5"
#: The settings and data an unfinished run trains with: a resume must be the same command.
RESUME_SETTINGS = "resume.json"
#: What a finished `train` writes.
TRAIN_FILES = ("model.keras", "labels.txt", "history.csv", "training.png", "run.json")
TRAIN_FOLDERS = ("logs",)
#: The lock file of a run folder that a process is writing (`RunFolder.claimed`).
LOCK_FILE = ".mobilenet-keras.lock"
_CLAIMS: set[str] = set()


def comparable_settings(settings: dict) -> dict:
    """A run's {"config": ..., "data": ...} as a resume or a reuse compares them: JSON's types (tuples as
    lists), a weights file by its absolute path (typed relative from elsewhere, it is the same file), and
    without the distribution strategy (the same training on other devices)."""
    settings = json.loads(json.dumps(settings, default=str))
    config = settings.get("config")
    if isinstance(config, dict):
        config.pop("strategy", None)
        weights = config.get("weights")
        if isinstance(weights, str) and weights != "imagenet" and os.path.exists(weights):
            config["weights"] = os.path.realpath(weights)
    return settings


_WARNED: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, stacklevel=4)


#: Keys every run.json has.
RUN_KEYS = ("config", "data", "final")


class RunFolder:
    """The run folder at `path` (created by `check_writable`)."""

    def __init__(self, path: str | os.PathLike):
        self.path = walked_path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # -- checks -------------------------------------------------------------------------------------

    def check_writable(self, *subfolders: str) -> Path:
        """Create the folder if needed and check a file can be written there, and in each of `subfolders` that
        exists (one-line ValueError): before hours of work whose files would have nowhere to go."""
        path = self.path
        if path.is_symlink() and not path.exists():  # mkdir's "File exists" said nothing of the link
            raise ValueError(f"run folder {path} is a link to {os.readlink(path)}, which does not exist; remove the "
                             "link or create what it points to.")
        if path.exists() and not path.is_dir():
            raise ValueError(f"run folder {path} is not a folder (a file is there); give a folder.")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"run folder {path} can't be created ({exc.strerror or exc}).") from None
        for folder in [path] + [path / name for name in subfolders if (path / name).is_dir()]:
            try:  # os.access says yes to root even on a read-only mount or an immutable folder: try it
                probe_writable(folder)
            except OSError as exc:
                raise ValueError(f"{'run folder ' if folder == path else ''}{folder} is not writable "
                                 f"({exc.strerror or exc}); make it writable or copy the run elsewhere.") from None
        return path

    @contextlib.contextmanager
    def claimed(self):
        """Hold the folder for this process while it writes there (train, pipeline, qat): another process that
        asks is refused at once (a one-line ValueError naming it), instead of two runs writing one folder's
        backups and weights in turns. The lock is the kernel's (flock): a killed holder lets it go. Nested
        claims in one process (a pipeline's training) share the first."""
        key = os.path.realpath(self.path)
        if key in _CLAIMS or fcntl is None:
            yield
            return
        lock = self.path / LOCK_FILE
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except PermissionError:  # another user's lock file (a group-shared folder): flock works read-only too
            fd = os.open(lock, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            whose = f" (pid {holder})" if holder else ""
            raise ValueError(f"run folder {self.path} is in use by another process{whose}: let it finish (or stop "
                             "it), or give another folder.") from None
        except OSError as exc:  # a file system without flock (some network and cluster mounts): no lock there
            os.close(fd)
            _warn_once(f"run folder {self.path} can't be locked ({exc.strerror or exc}): nothing stops two "
                       "processes writing it at once.")
            yield
            return
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        except OSError:
            pass  # read-only, or no room: the pid is only for the message
        _CLAIMS.add(key)
        try:
            yield
        finally:
            _CLAIMS.discard(key)
            os.close(fd)  # releases the lock

    # -- labels.txt -----------------------------------------------------------------------------------

    def write_labels(self, names, source: str | os.PathLike | None = None) -> Path:
        """labels.txt, one class name per line; refuses names that can't be written so."""
        names = check_class_names(names, source)
        return write_bytes_atomic(self.path / "labels.txt", ("\n".join(names) + "\n").encode())

    def labels(self) -> list[str] | None:
        """The class names in labels.txt, or None when there is none."""
        file = self.path / "labels.txt"
        if not file.is_file():
            return None
        return read_labels(file)

    # -- run.json -------------------------------------------------------------------------------------

    def write_run(self, run: dict) -> Path:
        return write_json_atomic(self.path / "run.json", run)

    def read_run(self) -> dict:
        """run.json as a dict; a one-line ValueError when it is missing or damaged."""
        file = self.path / "run.json"
        if not file.is_file():
            raise ValueError(f"{self.path} has no run.json; give a run folder written by train or pipeline.")
        run = _json_object(file, str(file), "train again")
        missing = [key for key in RUN_KEYS if key not in run]
        if missing:
            raise ValueError(f"{file} is damaged (missing {', '.join(missing)}); train again.")
        return run

    # -- state ----------------------------------------------------------------------------------------

    def has_model(self) -> bool:
        """A finished training run: model.keras and run.json (written last) are both there."""
        return (self.path / "model.keras").is_file() and (self.path / "run.json").is_file()

    def refuse_finished_run(self, how: str | None, where: str, why: str = "") -> None:
        """A one-line ValueError when the folder holds a finished training run and no unfinished one: trained
        again in place, a kill midway would leave the old model and record beside the new run's state.
        `how` is the caller's way to train over it anyway (`--restart`, `restart=True`; None: none), `where`
        its name for the folder (`--out`), `why` what else to say."""
        if self.has_model() and not self.has_resume_state():
            instead = (f"{how} trains a new one in its place (the old one's files go), or give another {where}"
                       if how else f"give another {where}, or remove it first")
            raise ValueError(f"{self.path} holds a finished run (model.keras, run.json){'; ' + why if why else ''}; "
                             f"{instead}.")

    def has_report(self) -> bool:
        return (self.path / "report.json").is_file()

    def has_resume_state(self) -> bool:
        """An unfinished `train` left something to resume from (a backup or a finished first phase)."""
        if any((self.path / name).is_file() for name in RESUME_FILES):
            return True
        return any(f.is_file() for name in RESUME_FOLDERS for f in (self.path / name).rglob("*")
                   if not f.name.endswith(".torn"))

    # -- removing -------------------------------------------------------------------------------------

    def invalidate(self) -> list[str]:
        """Remove the verdict (report.md/report.json, first) and the files made from the old model.

        Call before the model changes, so a folder never holds a PASS about a model that is gone.
        Returns the names removed.
        """
        plots = set(DERIVED_PLOTS)
        try:  # plots the report listed, in case there were more than this version knows
            listed = json.loads((self.path / "report.json").read_text()).get("plots", [])
            plots |= {p for p in listed if isinstance(p, str) and p.endswith(".png") and "/" not in p
                      and "\\" not in p and p != "training.png" and not p.startswith(".")}
        except (OSError, ValueError, AttributeError):
            pass
        removed = self._remove(list(REPORT_FILES))
        for folder in DERIVED_FOLDERS:
            removed += self._remove_derived(folder)
        return removed + self._remove(sorted(plots))

    def _remove_derived(self, folder: str) -> list[str]:
        """`folder` whole (WHOLLY_DERIVED), or the package's files in android/ and the folder once nothing
        else is left."""
        where = self.path / folder
        if folder in WHOLLY_DERIVED or where.is_symlink() or not where.is_dir():
            return self._remove([folder])
        try:
            ours = {entry.name for pattern in ANDROID_FILES + _LEFTOVERS for entry in where.glob(pattern)}
            removed = self._remove([f"{folder}/{name}" for name in sorted(ours)])
            kept = sorted(entry.name for entry in where.iterdir())
        except OSError as exc:
            raise ValueError(f"can't clear {where} ({exc.strerror or exc}); remove it by hand.") from None
        if not kept:
            with contextlib.suppress(OSError):  # a file written there meanwhile stays, with its folder
                where.rmdir()
                return removed + [folder]
            kept = sorted(entry.name for entry in where.iterdir())
        shown = ", ".join(kept[:5]) + (f" and {len(kept) - 5} more" if len(kept) > 5 else "")
        warnings.warn(f"kept {len(kept)} file(s) in {where} that the package did not write ({shown}); if they were "
                      "made from the old model, remove them.", stacklevel=3)
        return removed

    def clear(self) -> list[str]:
        """Remove every file the package manages here (for --force): a fresh run, history.csv too."""
        removed = self.invalidate()
        names = (list(TRAIN_FILES) + list(TRAIN_FOLDERS) + list(RESUME_FILES) + list(RESUME_FOLDERS)
                 + [BEST_WEIGHTS, RESUME_SETTINGS])
        removed += self._remove(names)
        self.remove_temp_files()
        return removed

    def own_file(self, path: str | os.PathLike) -> str | None:
        """What `path` is when it is one of the files this run folder keeps (its model, records, report, plots,
        resume state, or anything in tflite/, qat/, saved_model/, backup/ or logs/), else None: an export
        must not write over them. android/ is left to the exports (the Android file's own place)."""
        here, path = Path(os.path.realpath(self.path)), Path(os.path.realpath(path))
        if path.parent == here and path.name in (TRAIN_FILES + REPORT_FILES + DERIVED_PLOTS + RESUME_FILES
                                                  + (BEST_WEIGHTS, RESUME_SETTINGS, LOCK_FILE)):
            return f"the run's {path.name}"
        for folder in ("tflite", "qat", "saved_model") + RESUME_FOLDERS + TRAIN_FOLDERS:
            if path.is_relative_to(here / folder):
                return f"the run's {folder}/ folder"
        return None

    def remove_logs(self) -> None:
        """TensorBoard's event files of an earlier run (a new run's would show beside them as one)."""
        self._remove(list(TRAIN_FOLDERS))

    def remove_temp_files(self) -> None:
        """Temporary files of writes that were killed (`.NAME.XXXX.tmp...`, see mobilenet_keras.files)."""
        if not self.path.is_dir():
            return
        for leftover in self.path.glob(".*.tmp*"):
            if leftover.is_file():
                leftover.unlink(missing_ok=True)

    def read_json(self, path: str | os.PathLike, what: str) -> dict:
        """A JSON file of the run (resume state), or a one-line ValueError when it is damaged."""
        file = self.path / path
        return _json_object(file, f"{file} ({what})", "remove it and train again")

    def clear_resume_state(self, keep_settings: bool = False) -> None:
        """Remove the resume state (after a run finished, or to start fresh; a new run keeps the settings it
        has just recorded)."""
        self._remove(list(RESUME_FILES) + list(RESUME_FOLDERS) + [BEST_WEIGHTS]
                     + ([] if keep_settings else [RESUME_SETTINGS]))

    def check_resume_settings(self, settings: dict) -> None:
        """Record `settings` (the run's config and data) for a new run, or, for a resumed one, refuse
        settings other than those it started with: its epochs so far came from those."""
        file = self.path / RESUME_SETTINGS
        settings = comparable_settings(settings)
        if not self.has_resume_state() or not file.exists():  # a new run (or state from before this file)
            write_bytes_atomic(file, json.dumps(settings, indent=2).encode())
            return
        before = comparable_settings(self.read_json(RESUME_SETTINGS, "the unfinished run's settings"))
        # A key the unfinished run's file lacks was recorded by a later version of the package: not a change.
        changed = [f"{part} {key}: {before.get(part, {}).get(key)!r} then, {value!r} now"
                   for part in settings for key, value in settings[part].items()
                   if key in before.get(part, {}) and before[part][key] != value]
        if changed:
            shown = "; ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
            raise ValueError(f"{self.path} holds an unfinished run with other settings ({shown}): run its own "
                             "command again to resume it, or discard it and start afresh (train --restart, "
                             "pipeline --force, train(..., restart=True)).")

    def _remove(self, names) -> list[str]:
        removed = []
        for name in names:
            target = self.path / name
            try:
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                elif target.exists() or target.is_symlink():
                    target.unlink()
                else:
                    continue
            except OSError as exc:
                raise ValueError(f"can't remove {target} ({exc.strerror or exc}); remove it by hand.") from None
            removed.append(name)
        return removed


def data_settings(run: dict) -> dict:
    """`datasets.load` settings that give back the batches a run trained on, from its run.json: image size,
    batch size, seed, validation split (for runs that did not record it: the one their image counts imply, or
    0.2, the command's) and augmentation (crop range and flip; none at all when it had none). KeyError when
    run.json lacks the image size."""
    from mobilenet_keras.training.datasets import DIGITS

    data, config = run.get("data") or {}, run.get("config") or {}
    split = data.get("validation_split")
    if split is None:  # a run.json from before it was recorded: the split its image counts imply, else 0.2
        train, validation = data.get("train_images"), data.get("validation_images")
        folder = data.get("source") not in (None, DIGITS)  # a folder cuts int(split * images) for validation
        split = (validation + 0.5) / (train + validation) if folder and train and validation else 0.2
    settings = {"image_size": int(data.get("image_size") or config["image_size"]),
                "batch_size": int(config.get("batch_size", 32)), "seed": int(config.get("seed", 0)),
                "validation_split": float(split)}
    augmentation = data.get("augmentation", {})  # runs written before it was recorded: the loader's defaults
    if augmentation is None:
        settings["augment"] = False
    elif augmentation:
        settings["crop_scale"] = tuple(float(v) for v in augmentation["random_crop_sides"])
        settings["flip"] = bool(augmentation["horizontal_flip"])
    return settings


@contextlib.contextmanager
def held_run_folder(out: str | os.PathLike, strategy: str = "default"):
    """The run folder `out`, created if needed (`RunFolder.check_writable`) and held by this process
    (`RunFolder.claimed`); a folder this created goes again when the work fails before writing anything
    there. Not held for a multi-worker run: its workers share `out`, and training gives all but the chief
    scratch folders of their own. Yields the `RunFolder`."""
    folder = RunFolder(out)
    out = folder.path  # as the folder resolves it ("new/../run"): the check below reads the folder made
    created = not out.exists()
    folder.check_writable()
    if strategy == "multiworker":
        yield folder
        return
    try:
        with folder.claimed():
            yield folder
    except BaseException:
        if created and {p.name for p in out.iterdir()} <= {LOCK_FILE}:
            shutil.rmtree(out, ignore_errors=True)
        raise


def check_outside_data(out: str | os.PathLike, source: str | os.PathLike | None) -> None:
    """Refuse a run folder at or inside the image folder it trains on (`source`; the embedded "digits" has
    none): its PNG plots and a SavedModel's files would be read as images of a class the next time the folder
    is loaded, or stop that load."""
    from mobilenet_keras.training.datasets import DIGITS

    if source is None or str(source) == DIGITS:
        return
    data, here = Path(os.path.realpath(source)), Path(os.path.realpath(out))
    if here == data or data in here.parents:
        raise ValueError(f"run folder {out} is inside the data folder {source}: the run's plots would be read as "
                         "images the next time the data is loaded; give a run folder outside it.")


def check_model_matches_run(model, image_size: int, run_dir: str | os.PathLike) -> None:
    """A one-line ValueError when a run's model.keras takes another image size than its run.json's data."""
    height, width = tuple(model.input_shape[1:3])
    if (height, width) != (image_size, image_size):
        raise ValueError(f"{Path(run_dir) / 'run.json'} says the run trained at {image_size} px, but its model.keras "
                         f"takes {height}x{width}: the run folder's files don't belong together; train again.")


def data_is_gone(source) -> bool:
    """Whether a run's recorded data source (a folder, or the embedded digits) is no longer there."""
    from mobilenet_keras.training.datasets import DIGITS

    return str(source) != DIGITS and not Path(source).is_dir()


def check_same_split(images, run: dict, source) -> None:
    """ValueError unless `images` (reloaded for a finished run) hold the run's classes and split into as many
    training and validation images as the run had: otherwise files would be checked on images the model may
    have trained on, or on another data set."""
    data = run.get("data") or {}
    classes = data.get("classes")
    if classes is not None and not isinstance(classes, list):
        raise ValueError(f"run.json's data.classes is {type(classes).__name__}, not a list of class names: it is "
                         "damaged; train again.")
    if classes is not None and list(classes) != list(images.class_names):
        raise ValueError(f"{source} holds the classes {', '.join(images.class_names)}, but the run was trained on "
                         f"{', '.join(map(str, classes))} (run.json): it is not the run's data; pass the images the "
                         "run was trained on.")
    then = (data.get("train_images"), data.get("validation_images"))
    now = (images.num_train, images.num_validation)
    if None not in then and tuple(then) != now:
        raise ValueError(f"{source} now splits into {now[0]} training and {now[1]} validation images; the run had "
                         f"{then[0]} and {then[1]} (its data changed since, or run.json predates the recorded "
                         "validation split): pass the images the run was trained on, or train again.")
    recorded = data.get("fingerprint")  # absent from runs before it was recorded
    if recorded and getattr(images, "fingerprint", None) and recorded != images.fingerprint:
        raise ValueError(f"{source} holds other files than the run trained on (file names or sizes changed since, "
                         "with the same classes and counts): its held-out images may be ones the model trained on; "
                         "pass the images the run was trained on, or train again.")


def _json_object(file: Path, label: str, remedy: str) -> dict:
    """The JSON object in `file`, or a one-line ValueError "<label> is damaged (why); <remedy>."."""
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{label} is damaged ({exc}); {remedy}.") from None
    if not isinstance(value, dict):
        raise ValueError(f"{label} is damaged (not a JSON object); {remedy}.")
    return value
