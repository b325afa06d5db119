"""The `mobilenet-keras` command.

This module imports no TensorFlow or Keras: `--help` and `--version` answer at once, and the logging
of TensorFlow, absl and Keras is set up (`quiet_runtime`) before a command imports them.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import sys
import threading
import traceback
import warnings

from mobilenet_keras import __version__
from mobilenet_keras.app.qat_stage import QAT_TARGETS

# Exit statuses, the same for every command (shown in `mobilenet-keras --help`).
EXIT_PASS = 0
EXIT_FAIL = 1
EXIT_USAGE = 2
EXIT_INCONCLUSIVE = 3
EXIT_INTERNAL = 4
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports a command the signal ended
EXIT_BROKEN_PIPE = 141  # what a shell reports for a command that SIGPIPE ended (`... | head`)


class UsageError(Exception):
    """A mistake in what the user asked for: printed as one line, exit status 2."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C's KeyboardInterrupt would be: the same clean-up on the way out (temporary
    files, scratch folders, the stderr filter), then exit status 143."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated()


@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM raises `Terminated` while the block runs (in the main thread; elsewhere it is left as it is).

    A signal's exception raised while a finalizer (`__del__`, TensorFlow frees functions so) runs is printed
    and dropped by Python: the command went on to its end. Such a Terminated or KeyboardInterrupt is sent
    again as its signal, so that it lands in the command's own code.
    """
    import signal

    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread: signals can't be handled here
        yield
        return
    hook = sys.unraisablehook

    def resend_interrupts(unraisable) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            # from another thread, a moment later: the handler then runs in the main thread's own code, not
            # here (an exception in this hook is dropped too) nor in the finalizer that is still running
            number = signal.SIGTERM if isinstance(unraisable.exc_value, Terminated) else signal.SIGINT
            threading.Timer(0.05, os.kill, (os.getpid(), number)).start()
        else:
            hook(unraisable)

    sys.unraisablehook = resend_interrupts
    try:
        yield
    finally:
        sys.unraisablehook = hook
        signal.signal(signal.SIGTERM, previous)


EPILOG_MAIN = """exit status (every command):
  0    done; every file checked passed its verdict
  1    a file failed its verdict (FAIL)
  2    usage or input error: a bad option, a missing or unreadable file or folder, a read-only destination
  3    inconclusive verdict: too few images to judge a file
  4    internal error (an unexpected exception): rerun with --debug for the traceback
  130  interrupted (Ctrl-C)
  141  its output was closed early (e.g. piped into head)
  143  terminated (SIGTERM: kill, timeout, docker stop, systemd), after cleaning up as for Ctrl-C

--quiet, --verbose and --debug go before or after the command. Without a terminal (a log file),
Keras prints one line per epoch instead of a progress bar.
"""

# --- quiet TensorFlow --------------------------------------------------------------------------------

# Python packages whose UserWarnings are about their own internals, not about what the user did.
QUIET_PACKAGES = ("tensorflow", "keras", "tf_keras", "tensorflow_model_optimization", "absl", "google.protobuf",
                  "tf2onnx", "h5py")


@contextlib.contextmanager
def quiet_runtime(verbose: bool = False):
    """TensorFlow, absl, Keras and tfmot quiet for one command, set before they are imported.

    Without `verbose`: TF_CPP_MIN_LOG_LEVEL=3 (unless set), the `tensorflow` and `absl` Python loggers at
    ERROR, UserWarnings raised inside those packages ignored, and TensorFlow's native log lines filtered
    out of fd 2 (`mobilenet_keras.quiet`), whatever the environment asks. The loggers' levels and the warning
    filters are put back after.
    """
    from mobilenet_keras.quiet import tensorflow_logs

    if verbose:
        with tensorflow_logs(show=True):
            yield
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # read by TensorFlow as it loads, for this process alone
    loggers = [logging.getLogger(name) for name in ("tensorflow", "absl", "h5py")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            for package in QUIET_PACKAGES:
                warnings.filterwarnings("ignore", category=UserWarning, module=re.escape(package) + r"(\.|$)")
                warnings.filterwarnings("ignore", category=DeprecationWarning, module=re.escape(package) + r"(\.|$)")
            with tensorflow_logs(show=False):
                yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def keras_verbose(args: argparse.Namespace) -> int:
    """Keras's `verbose` for fit: 0 with --quiet, the progress bar on a terminal, one line per epoch in a log."""
    if args.quiet:
        return 0
    return 1 if _is_tty(sys.stdout) else 2


def _is_tty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def epoch_callbacks(args: argparse.Namespace) -> list:
    """A callback that says when fine-tuning starts or a run resumes, and with --quiet prints one line per
    epoch (Keras's own output is off)."""
    from mobilenet_keras.app.pipeline import epoch_lines

    return [epoch_lines(each_epoch=args.quiet)]


# --- commands ----------------------------------------------------------------------------------------

EPILOG_SUMMARY = """examples:
  mobilenet-keras summary                       # 1.0/224 with the ImageNet top
  mobilenet-keras summary --alpha 0.25 --image-size 128 --no-top --quiet
"""


def _cmd_summary(args: argparse.Namespace) -> int:
    from mobilenet_keras import MobileNetV1, count_complexity

    try:
        model = MobileNetV1(input_shape=(args.image_size, args.image_size, 3), alpha=args.alpha,
                            include_top=not args.no_top, classes=args.classes, weights=args.weights)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not args.quiet:
        model.summary()
    print(f"{model.name}: {count_complexity(model)}")
    return 0


EPILOG_TRAIN = """examples:
  mobilenet-keras train --data digits --epochs 3 --out runs/digits
  mobilenet-keras train --data photos/ --weights imagenet --epochs 5 --fine-tune-epochs 5 --out runs/photos
  mobilenet-keras train --data photos/ --weights mobilenet_2_5_224_tf_no_top.h5 --alpha 0.25 --out runs/p

photos/ holds one folder per class (photos/cat/*.jpg, photos/dog/*.jpg). A run killed part-way
resumes from its last finished epoch when the same command is run again (other settings or data are
refused: --restart starts afresh).
"""


def train_config(args: argparse.Namespace):
    """The TrainConfig that the training options of `train` and `pipeline` ask for."""
    if args.weights not in (None, "imagenet") and not os.path.isfile(args.weights):
        # here, before TensorFlow starts (seconds): the model builder would say it after
        raise ValueError(f"--weights {args.weights} is not a file; give 'imagenet' or the path to a Keras .h5 "
                         "backbone file.")
    from mobilenet_keras.training.trainer import default_config, make_strategy

    if args.strategy == "multiworker":
        make_strategy(args.strategy)  # before any other TensorFlow work: collective ops start with the runtime
    if args.weights is None and args.frozen_blocks:
        warnings.warn("--frozen-blocks applies to fine-tuning pretrained --weights; without them it has no effect "
                      "(nothing is frozen).", stacklevel=2)
    if args.weights is None and args.fine_tune_epochs:
        warnings.warn("--fine-tune-epochs without --weights: a second phase at a tenth of the learning rate on the "
                      "model trained from scratch (nothing was frozen before it).", stacklevel=2)
    if args.strategy == "mirrored" and make_strategy("mirrored").num_replicas_in_sync == 1:
        warnings.warn("--strategy mirrored found one device (no GPU, one logical CPU device): it trains as 1 "
                      "replica, as the default strategy does.", stacklevel=2)
    return default_config(args.data, weights=args.weights, image_size=args.image_size, epochs=args.epochs,
                          learning_rate=args.learning_rate, alpha=args.alpha,
                          fine_tune_epochs=args.fine_tune_epochs, frozen_blocks=args.frozen_blocks,
                          batch_size=args.batch_size,
                          optimizer=args.optimizer, strategy=args.strategy, precision=args.precision,
                          seed=args.seed)


def _cmd_train(args: argparse.Namespace) -> int:
    from mobilenet_keras.files import walked_path
    from mobilenet_keras.training import datasets
    from mobilenet_keras.training.run_folder import check_outside_data, held_run_folder
    from mobilenet_keras.training.trainer import check_weights_load, train

    try:
        out = walked_path(args.out)  # every file of the run under one path, never through a missing "new/.."
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {out} is a file; give a folder for the run.")
        from mobilenet_keras.training.run_folder import RunFolder

        if not args.restart:  # before the data is read; train() checks again, holding the folder
            RunFolder(out).refuse_finished_run("--restart", "--out")
        config = train_config(args)
        check_destination(out / "run.json", "--out")
        check_outside_data(out, args.data)  # before the data is read; train() checks again
        check_weights_load(config)
        with held_run_folder(out, config.strategy):  # refused at once when another process writes it
            loaded = datasets.load(args.data, image_size=config.image_size, batch_size=config.batch_size,
                                   seed=config.seed, **data_options(args))
            print(f"data: {loaded.source}: {loaded.num_train} training and {loaded.num_validation} validation "
                  f"images, {len(loaded.class_names)} classes", file=sys.stderr)
            train(loaded, out, config, verbose=keras_verbose(args), callbacks=epoch_callbacks(args),
                  restart=args.restart)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print(f"wrote {out / 'model.keras'}", file=sys.stderr)
    return 0


EPILOG_PIPELINE = """examples:
  mobilenet-keras pipeline                                   # digits, about 4 minutes on 2 cores
  mobilenet-keras pipeline --data photos/ --weights imagenet --epochs 3 --fine-tune-epochs 3 --out runs/photos
  mobilenet-keras pipeline --modes float32,int8,uint8 --quiet
  mobilenet-keras pipeline --modes float32,int8,uint8,qat,qat_uint8   # adds quantization-aware training
  mobilenet-keras pipeline --float-layers auto       # int8 files may keep their first layers in float

The integer files (int8, uint8, the Android file) are fully integer unless --float-layers says
otherwise. Writes RUN_DIR/report.md and report.json (written last: a folder without report.json is not a
finished run), the TFLite files in RUN_DIR/tflite/, RUN_DIR/saved_model/, RUN_DIR/android/model.tflite,
and the plots. Exit status 0 when every file passes, 1 when a file fails verification, 3 when a
verdict is inconclusive (too few validation images), 2 for a usage error.
"""

EPILOG_PREDICT = """examples:
  mobilenet-keras predict runs/latest/android/model.tflite cat.jpg dog.png
  mobilenet-keras predict runs/latest/model.keras --labels runs/latest/labels.txt cat.jpg
  mobilenet-keras predict runs/latest/saved_model cat.jpg
"""

EPILOG_BENCH = """examples:
  mobilenet-keras bench runs/latest/tflite/*.tflite
  mobilenet-keras bench model_int8.tflite --threads 4 --runs 100
"""

EPILOG_EXPORT = """examples:
  mobilenet-keras export runs/latest --saved-model serving/mobilenet/1     # parent folders are created
  mobilenet-keras export runs/latest --android app/src/main/assets/model.tflite
  mobilenet-keras export runs/latest --android model.tflite --calibration photos/
  mobilenet-keras export runs/latest --onnx model.onnx
  mobilenet-keras export runs/latest --android model.tflite --float-layers auto   # CPU/GPU delegates only

--android calibrates on the run's own training data (run.json's source) unless --calibration is
given, then checks the written file against the run's validation images: exit status 0 PASS,
1 FAIL, 3 INCONCLUSIVE. A file that fails is not written to FILE.tflite (what is there stays); it is
kept as FILE.failed.tflite. When the run's data is gone (or no longer matches the run), the
--calibration folder gives both: up to 200 images calibrate and up to 1,000 others (never the same)
check the file.
"""


EPILOG_QAT = """examples:
  mobilenet-keras qat runs/latest                         # 2 epochs at 1e-5, files in runs/latest/tflite/
  mobilenet-keras qat runs/photos --epochs 3 --learning-rate 3e-5
  mobilenet-keras qat runs/photos --targets labels        # train on the labels instead

Reads the run's model.keras and run.json (the data is read again from the same source), trains the
quantization-aware model on the float model's answers (its probabilities for each training image, not the
labels: what the files are checked against; --targets labels trains on the labels) with the run's
augmentation, and writes RUN_DIR/qat/qat.weights.h5, qat/qat.json (the checks), tflite/model_qat.tflite
(int8 input and output) and tflite/model_qat_uint8.tflite (raw pixels in), each checked against the float
model and against the QAT Keras model. Exit status 1 when a file fails verification.
"""


def _cmd_qat(args: argparse.Namespace) -> int:
    from mobilenet_keras.app.qat_stage import qat_run_folder

    try:
        return qat_run_folder(args.run_dir, epochs=args.epochs, learning_rate=args.learning_rate, data=args.data,
                              verbose=not args.quiet, targets=args.targets)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _cmd_pipeline(args: argparse.Namespace) -> int:
    from mobilenet_keras.app.pipeline import PipelineSettings, parse_float_layers, parse_modes, run_pipeline
    from mobilenet_keras.files import walked_path

    try:
        settings = PipelineSettings(data=args.data, out=walked_path(args.out), config=train_config(args),
                                    modes=parse_modes(args.modes), qat_epochs=args.qat_epochs,
                                    qat_learning_rate=args.qat_learning_rate, qat_targets=args.qat_targets,
                                    force=args.force,
                                    verbose=keras_verbose(args), callbacks=epoch_callbacks(args),
                                    float_layers=parse_float_layers(args.float_layers),
                                    data_options=data_options(args))
        return run_pipeline(settings)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _cmd_predict(args: argparse.Namespace) -> int:
    from mobilenet_keras.app.predict import print_top_classes

    try:
        return print_top_classes(args.model, args.images, labels=args.labels, top=args.top)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _cmd_bench(args: argparse.Namespace) -> int:
    from tflite.latency import MAX_THREADS, tflite_latencies
    from tflite.runtime import TFLiteModel

    if args.runs < 1 or not 1 <= args.threads <= MAX_THREADS:
        raise UsageError(f"--runs must be at least 1 and --threads from 1 to {MAX_THREADS}.")
    try:
        models = [TFLiteModel(path) for path in args.files]
        latencies = tflite_latencies(models, args.runs, args.threads)  # the bytes read above, timed
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    rows = [(path, model.mode, model.input_shape[0], model.size_bytes, latency)
            for path, model, latency in zip(args.files, models, latencies)]
    width = max(len(str(r[0])) for r in rows)
    print(f"{'file':<{width}}  {'mode':<14} {'batch':>5} {'size KiB':>9} {'median ms':>10} {'p90 ms':>9}")
    for path, mode, batch, size, latency in rows:
        print(f"{str(path):<{width}}  {mode:<14} {batch:>5} {size / 1024:>9.0f} {latency.median_ms:>10.3f} "
              f"{latency.p90_ms:>9.3f}")
    threads = f"{args.threads} thread{'s' * (args.threads != 1)}"
    print(f"(milliseconds per image, at each file's batch size, {threads}: {args.runs} timed runs per file, taken "
          "in turns across the files, after at least 1 s and 20 runs of warm-up each)")
    return 0


def check_destination(path, what: str) -> None:
    """A file or folder can be written at `path` (missing parent folders can be created); else UsageError."""
    from pathlib import Path

    from mobilenet_keras.files import probe_writable

    path = Path(path)
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise UsageError(f"{what} {path}: {folder} is a file, not a folder.")
    try:
        probe_writable(folder)
    except OSError as exc:
        raise UsageError(f"{what} {path}: folder {folder} is not writable ({exc.strerror or exc}).") from None


RUN_DATA_HINT = "pass --calibration DIR with typical images"


def run_data(run: dict, run_dir) -> tuple[str, dict]:
    """(the run's data source, the `datasets.load` settings it was trained with) from run.json."""
    from mobilenet_keras.training.run_folder import data_is_gone, data_settings

    config, data = run.get("config", {}), run.get("data", {})
    source = data.get("source") or config.get("data")
    if not source:
        raise UsageError(f"{run_dir}/run.json does not say what data the run trained on; {RUN_DATA_HINT}.")
    if data_is_gone(source):
        raise UsageError(f"the run's training data {source} is gone (run.json); {RUN_DATA_HINT}.")
    try:
        return str(source), data_settings(run)
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"{run_dir}/run.json is damaged ({type(exc).__name__}: {exc}); {RUN_DATA_HINT}.") from None


def _cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mobilenet_keras.app.pipeline import Stages
    from mobilenet_keras.training.run_folder import RunFolder

    run_dir = Path(args.run_dir)
    if not (run_dir / "model.keras").is_file():
        raise UsageError(f"{run_dir} has no model.keras; give a run folder written by train or pipeline.")
    if not args.saved_model and not args.android and not args.onnx:
        raise UsageError("say what to export: --saved-model DIR, --android FILE.tflite and/or --onnx FILE.onnx.")
    from mobilenet_keras.app.pipeline import parse_float_layers

    try:
        float_layers = parse_float_layers(args.float_layers)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if float_layers is not None and not args.android:
        raise UsageError("--float-layers applies to the Android file: add --android FILE.tflite.")
    from mobilenet_keras.deploy.saved_model import check_saved_model_path
    from mobilenet_keras.files import check_file_name

    # Before anything is read or written: a refusal at the end would leave the other exports behind.
    outputs = [(what, path, example) for what, path, example in (
        ("--saved-model", args.saved_model, Path("serving") / "mobilenet" / "1"),
        ("--android", args.android, run_dir / "android" / "model.tflite"),
        ("--onnx", args.onnx, run_dir / "model.onnx")) if path]
    for what, path, elsewhere in outputs:
        own = RunFolder(run_dir).own_file(path)
        if what == "--android" and Path(os.path.realpath(path)).parent == Path(os.path.realpath(run_dir)):
            own = "the run's labels.txt (written beside the Android file)"
        if own is not None:  # e.g. --android RUN/tflite/model_int8.tflite: the report would judge another file
            raise UsageError(f"{what} {path} would write over {own} (what the run made, and its report judges); "
                             f"write elsewhere (e.g. {elsewhere}).")
        try:
            if what == "--saved-model":
                check_saved_model_path(path, args.force)
            else:
                check_file_name(path, elsewhere.name)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        check_destination(path, what)
        labels_beside = Path(path).with_name("labels.txt")
        if what == "--android" and labels_beside.is_dir():
            # found only after the Android file had replaced the app's, which then sat beside no labels
            raise UsageError(f"--android {path}: {labels_beside}, where its labels go, is a folder; remove it or "
                             "write elsewhere.")
    _check_outputs_apart(outputs)
    if args.onnx:  # the extra missing was found after the SavedModel had been written
        from mobilenet_keras.deploy.onnx_file import require_onnx

        try:
            require_onnx()
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    folder = RunFolder(run_dir)
    stage = Stages()
    try:
        labels = folder.labels()
        # the model and its labels first, the run's data after (minutes): each checked before anything is written
        stage(f"loading {run_dir / 'model.keras'}")
        from mobilenet_keras.model import load_model_file

        model = load_model_file(run_dir / "model.keras")
        classes = model.output_shape[-1]
        from mobilenet_keras.training.run_folder import check_model_matches_run

        trained_at = _recorded_image_size(folder)
        if trained_at is not None:  # a ValueError, as the others in this block: one line, exit 2
            check_model_matches_run(model, trained_at, run_dir)
        if labels is None:
            import warnings

            warnings.warn(f"{run_dir} has no labels.txt: the exports give class numbers, not names (add one "
                          "class name per line, in output order, to export with names).", stacklevel=2)
        elif len(labels) != classes:
            raise UsageError(f"{run_dir / 'labels.txt'} has {len(labels)} names for a model with {classes} classes; "
                             "give it one class name per line, in output order.")
        else:
            from mobilenet_keras.labels import LABELS_REMEDY, check_class_names

            check_class_names(labels, run_dir / "labels.txt", remedy=LABELS_REMEDY)
        images = None  # the run's data: calibration and verification of the Android file
        if args.android and (args.calibration is None or (run_dir / "run.json").is_file()):
            try:  # read and checked before anything is written: a refusal leaves no export behind
                run = folder.read_run()
                source, load_settings = run_data(run, run_dir)
                from mobilenet_keras.training import datasets
                from mobilenet_keras.training.run_folder import check_same_split

                stage(f"reading the run's data ({source})")
                images = datasets.load(source, **load_settings)
                check_same_split(images, run, source)
            except (UsageError, ValueError) as exc:
                if args.calibration is None and isinstance(exc, UsageError):
                    raise
                if args.calibration is None:
                    raise UsageError(f"{str(exc).rstrip('.')}; or {RUN_DATA_HINT} for the Android file.") from None
                images = None  # the run's data can't serve: the --calibration folder gives both sets
                reason = str(exc).removesuffix(f"; {RUN_DATA_HINT}.")
                stage(f"not using the run's data ({reason}): the Android file is calibrated and verified on "
                      f"{args.calibration}")
        if images is not None:
            check_model_matches_run(model, images.image_size, run_dir)
        # Read before anything is written: an unreadable calibration folder leaves no export behind.
        android_images = _android_images(args, model, images, labels, stage) if args.android else None
        if args.saved_model:
            from mobilenet_keras.deploy.saved_model import export_saved_model

            stage(f"writing the SavedModel {args.saved_model}")
            print(export_saved_model(model, args.saved_model, labels=labels, force=args.force))
        if args.onnx:
            from mobilenet_keras.deploy.onnx_file import export_onnx

            stage(f"writing the ONNX file {args.onnx}")
            print(export_onnx(model, args.onnx))
        if not args.android:
            return EXIT_PASS
        return _export_android(args, model, labels, android_images, stage, float_layers)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _check_outputs_apart(outputs: list[tuple]) -> None:
    """UsageError when two of export's outputs (the Android file's labels.txt among them) would take one path,
    or one would lie inside a file another writes: the second write would fail, or replace the first, at the end
    (an ONNX file inside the SavedModel's folder is fine: the SavedModel is written first)."""
    from pathlib import Path

    places = []  # (what, where, whether it is a file)
    for what, path, _ in outputs:
        places.append((what, Path(os.path.realpath(path)), what != "--saved-model"))
        if what == "--android":
            places.append(("the labels.txt beside --android", Path(os.path.realpath(path)).with_name("labels.txt"),
                           True))
    for what, place, _ in places:
        for other, other_place, is_file in places:
            if other is what:
                continue
            if place == other_place:
                raise UsageError(f"{what} and {other} would both be written at {place}; give each its own place.")
            if is_file and place.is_relative_to(other_place):
                raise UsageError(f"{what} {place} would lie inside {other} {other_place}, a file; give each its "
                                 "own place.")


def _recorded_image_size(folder: RunFolder) -> int | None:
    """The image size run.json says the run trained at; None without a readable run.json (a SavedModel or
    ONNX export needs only model.keras, so a folder without one still exports)."""
    if not (folder.path / "run.json").is_file():
        return None
    try:
        size = (folder.read_run().get("config") or {}).get("image_size")
    except (ValueError, AttributeError):
        return None
    return size if isinstance(size, int) and not isinstance(size, bool) else None


def _android_images(args, model, images, labels, stage) -> tuple:
    """(calibration images, verification images, their true classes or None, where they come from).

    The run's own data when it is there: calibration from its training images (or `--calibration`),
    verification on its validation images. When it is gone, `--calibration` gives both: the file is
    calibrated on part of those images and verified on the rest, never on the images it was calibrated
    on (a file checked on its own calibration set looks better than it is)."""
    import numpy as np

    from mobilenet_keras.app.pipeline import CALIBRATION_IMAGES
    from mobilenet_keras.training import datasets
    from tflite.verify import MIN_VERDICT_IMAGES

    if args.calibration == datasets.DIGITS:
        digits = datasets.digits(image_size=model.input_shape[1], augment=False)
        calibration = digits.calibration_arrays(CALIBRATION_IMAGES)
        stage(f"calibrating on {len(calibration)} of the digits' training images")
        if images is None:  # the run's classes need not be the digits': agreement with the float model only
            return calibration, digits.validation_arrays()[0], None, "digits validation images"
        return calibration, *images.validation_arrays(), "validation images"
    if images is not None and args.calibration is None:
        calibration = images.calibration_arrays(CALIBRATION_IMAGES)
        stage(f"calibrating on {len(calibration)} of the run's training images")
        return calibration, *images.validation_arrays(), "validation images"
    from tflite.representative import collect

    # Without the run's data, read enough for a verdict beside the calibration images.
    classes: list = []
    folder = collect(args.calibration, tuple(model.input_shape[1:]),
                     limit=CALIBRATION_IMAGES + (MIN_VERDICT_IMAGES * 5 if images is None else 0), labels_out=classes)
    if images is not None:
        stage(f"calibrating on {len(folder)} images from {args.calibration}")
        return folder, *images.validation_arrays(), "validation images"
    # As many left for the check as a verdict needs, where the folder allows it with at least 50 to calibrate on
    # (a file calibrated on 50 images is the one 200 give: tflite.representative); evenly spaced, so both parts
    # cover every class whether the folder came back in class order or not.
    used = min(CALIBRATION_IMAGES, max(min(50, len(folder) // 2), len(folder) - MIN_VERDICT_IMAGES, 1))
    picked = np.zeros(len(folder), bool)
    picked[np.linspace(0, len(folder) - 1, used).round().astype(int)] = True
    left = len(folder) - used
    stage(f"calibrating on {used} image{'s' * (used != 1)} from {args.calibration}; "
          f"{f'the other {left} verify' if left else 'none is left to verify'} the file (the run's own data is "
          "not there)")
    # Class folders named as the run's classes give accuracy too; otherwise agreement with the float model alone.
    from mobilenet_keras.images import scan_folder

    same_classes = bool(classes) and labels is not None and scan_folder(args.calibration).class_names == list(labels)
    truth = np.asarray(classes)[~picked] if same_classes else None
    return folder[picked], folder[~picked], truth, f"images from {args.calibration} not used for calibration"


def _export_android(args, model, labels, android_images: tuple, stage, float_layers) -> int:
    """Convert, verify, and only then put the file at `args.android`: a file that fails its check never
    replaces what is there (an app's assets may hold a good one); it is kept beside it as NAME.failed.tflite.

    `android_images`: what `_android_images` returned."""
    from pathlib import Path

    import tflite
    from mobilenet_keras.app.pipeline import VERDICT_EXIT, file_line, float_layers_hint
    from mobilenet_keras.app.report import row_verdict
    from mobilenet_keras.deploy.android import android_file, write_labels_beside
    from mobilenet_keras.files import remove_abandoned_staging, staging_path, walked_path

    from mobilenet_keras.app import report

    calibration, validation, truth, where = android_images
    target = walked_path(args.android)
    names = labels or [str(i) for i in range(model.output_shape[-1])]
    run_dir = Path(args.run_dir)
    failed = target.with_name(f"{target.stem}.failed{target.suffix}")
    summary = report.read_summary(run_dir)  # a pipeline's report: its verdict on the Android file follows it
    android = ((summary or {}).get("deployables") or {}).get("android")
    # the run's Android file, or the failed one the pipeline set aside (what a user exports again in its place)
    if not isinstance(android, str) or os.path.realpath(run_dir / android) not in (
            os.path.realpath(target), os.path.realpath(failed)):
        summary = None
    stage(f"converting the Android file (uint8) {target}")
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned_staging(target)
    staged = staging_path(target)
    row, verdict = None, "INCONCLUSIVE"
    try:
        android_file(model, staged, calibration, names, denylist=float_layers, labels_file=False)
        if len(validation):
            stage(f"verifying {target.name} on {len(validation)} {where}")
            row = tflite.verify(model, staged, validation, labels=truth, mode="uint8", latency_runs=0,
                                allow_float_ops=float_layers is not None).to_dict()
            verdict = row_verdict(row)
        # a figure measured below its threshold on too few images to call it a FAIL still doesn't replace an
        # app's file: it is set aside as a failed one is
        kept = failed if verdict == "FAIL" or (row or {}).get("unsettled") else target
        # the report changes when its Android file does: a new one at its place, or the set-aside failed one
        # replaced (a failed attempt beside a good file leaves the good file and its verdict)
        if summary is not None and kept != target and os.path.realpath(kept) != os.path.realpath(run_dir / android):
            summary = None
        if summary is not None:
            report.withdraw(run_dir)  # first: a kill from here on leaves no verdict, never one on the old file
        os.replace(staged, kept)
        if kept == target:  # its labels beside it; an earlier attempt's failed file is not about this one
            write_labels_beside(target, names)
            failed.unlink(missing_ok=True)
    finally:
        staged.unlink(missing_ok=True)
    print(kept)
    if row is None:
        from tflite.verify import MIN_VERDICT_IMAGES

        if summary is not None:  # the report's verdict was on the file replaced, and there is none on this one
            summary["deployables"].pop("android")
            summary["files"] = [r for r in summary["files"] if report.shown_name(r) != android]
            report.replace_rows(summary, [], run_dir, model, by="export --android")

        print(f"INCONCLUSIVE {target.name}: not verified ({args.calibration} has one image, used for calibration; "
              f"a verdict needs {MIN_VERDICT_IMAGES} more)", file=sys.stderr)
        return EXIT_INCONCLUSIVE
    row["file"] = str(kept)
    if summary is not None:
        stage("judging the run again in report.md with the new Android file")
        now = str(Path(android).parent / kept.name)  # android/model.tflite, or model.failed.tflite
        summary["deployables"]["android"] = now
        # the set-aside file's row goes when the file does (kept here, it is replaced below)
        summary["files"] = [r for r in summary["files"] if report.shown_name(r) != android or android == now]
        report.replace_rows(summary, [{**row, "file": str(run_dir / now), "reference": "float model"}], run_dir,
                            model, by="export --android")
    reason = row.get("verdict_reason") or "; ".join(row.get("failures") or [])
    print(file_line(row, name=str(kept)) + (f" ({reason})" if reason else ""), file=sys.stderr)  # the path typed
    if kept == failed:
        why = ("failed its check" if verdict == "FAIL" else f"measured below a threshold on {row['samples']} images, "
               "too few to judge (check it on more)")
        print(f"{target} was not written{' (the file there is unchanged)' if target.exists() else ''}: the "
              f"converted file {why} and is kept as {kept.name} for a look.", file=sys.stderr)
    hint = float_layers_hint([row], float_layers)
    if hint:
        print(hint, file=sys.stderr)
    return VERDICT_EXIT[verdict]


def _global_options(suppress: bool) -> argparse.ArgumentParser:
    """--quiet, --verbose and --debug, for the main parser and (with SUPPRESS defaults, so a value given
    before the command is kept) for every subcommand: accepted on either side of the command."""
    default = argparse.SUPPRESS if suppress else False
    options = argparse.ArgumentParser(add_help=False)
    group = options.add_argument_group("global options")
    group.add_argument("--quiet", action="store_true", default=default,
                       help="one line per stage and per epoch, no progress bar")
    group.add_argument("--verbose", action="store_true", default=default, help="show TensorFlow's own log lines")
    group.add_argument("--debug", action="store_true", default=default, help="show the full traceback on errors")
    return options


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mobilenet-keras",
        description="MobileNet V1 for Keras 3: build, train, convert to TFLite and check every file.",
        epilog=EPILOG_MAIN, formatter_class=argparse.RawDescriptionHelpFormatter, parents=[_global_options(False)],
    )
    parser.add_argument("--version", action="version", version=f"mobilenet-keras {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    common = [_global_options(True)]

    def command(name: str, **kwargs) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=common, formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)

    summary = command("summary", help="build a model and print its layers, parameters and multiply-adds",
                      description="Build MobileNet V1 and print its summary, parameters and multiply-adds "
                                  "(--quiet: only the one-line figures).", epilog=EPILOG_SUMMARY)
    summary.add_argument("--alpha", type=float, default=1.0, help="width multiplier (default 1.0)")
    summary.add_argument("--image-size", type=int, default=224, help="input height and width (default 224)")
    summary.add_argument("--classes", type=int, default=1000, help="classes of the top (default 1000)")
    summary.add_argument("--no-top", action="store_true", help="leave out the classifier")
    summary.add_argument("--weights", default=None, help="'imagenet' or a path to a Keras .h5 file")
    summary.set_defaults(func=_cmd_summary)

    train = command("train", help="train or fine-tune a classifier on an image folder (model.fit)",
                    description="Train MobileNet V1 with model.fit and write a run folder: model.keras, "
                                "labels.txt, history.csv, training.png, logs/, run.json.", epilog=EPILOG_TRAIN)
    add_train_arguments(train)
    train.add_argument("--restart", action="store_true",
                       help="discard an unfinished run in --out (killed part-way) and start afresh; without it, "
                            "the same command resumes it and other settings are refused")
    train.set_defaults(func=_cmd_train)

    pipeline = command("pipeline", help="train, convert every mode, verify each file, export, report",
                       description="The main job: from an image folder (or the embedded digits) to a "
                                   "trained model, every TFLite flavour checked against the float model, "
                                   "a SavedModel, an Android file and a report.", epilog=EPILOG_PIPELINE)
    add_train_arguments(pipeline)
    pipeline.add_argument("--modes", default="float32,float16,dynamic,int8,uint8",
                          help="comma-separated TFLite modes (default float32,float16,dynamic,int8,uint8)")
    pipeline.add_argument("--qat-epochs", type=int, default=2, help="QAT epochs when --modes has qat (default 2)")
    pipeline.add_argument("--qat-learning-rate", type=float, default=1e-5,
                          help="QAT learning rate when --modes has qat (default 1e-5)")
    pipeline.add_argument("--qat-targets", choices=QAT_TARGETS, default=QAT_TARGETS[0], help=QAT_TARGETS_HELP)
    pipeline.add_argument("--float-layers", default="none", metavar="none|auto|LAYERS", help=FLOAT_LAYERS_HELP)
    pipeline.add_argument("--force", action="store_true", help="overwrite a finished run in --out")
    pipeline.set_defaults(func=_cmd_pipeline)

    qat_parser = command("qat", help="quantization-aware training of a trained run, then int8 files",
                         description="Quantization-aware training with tensorflow-model-optimization on a "
                                     "tf_keras twin of the run's model, then int8 and uint8 TFLite files.",
                         epilog=EPILOG_QAT)
    qat_parser.add_argument("run_dir", help="a run folder written by train or pipeline")
    qat_parser.add_argument("--epochs", type=int, default=2, help="QAT epochs (default 2)")
    qat_parser.add_argument("--learning-rate", type=float, default=1e-5, help="Adam learning rate (default 1e-5)")
    qat_parser.add_argument("--targets", choices=QAT_TARGETS, default=QAT_TARGETS[0], help=QAT_TARGETS_HELP)
    qat_parser.add_argument("--data", default=None, help="read the data from here instead of run.json's source")
    qat_parser.set_defaults(func=_cmd_qat)

    predict = command("predict", help="top 5 classes of images with a .tflite, .keras or SavedModel",
                      description="Classify images and print the top 5 with labels.", epilog=EPILOG_PREDICT)
    predict.add_argument("model", help="a .tflite file, a .keras file or a SavedModel folder")
    predict.add_argument("images", nargs="+", help="image files")
    predict.add_argument("--labels", default=None,
                         help="labels.txt (default: the file's metadata, a SavedModel's assets.extra/labels.txt, "
                              "or labels.txt beside the model or one folder up)")
    predict.add_argument("--top", type=int, default=5, help="how many classes to print (default 5)")
    predict.set_defaults(func=_cmd_predict)

    bench = command("bench", help="latency table of .tflite files",
                    description="Median latency per image of each .tflite file, run at the file's own batch size.",
                    epilog=EPILOG_BENCH)
    bench.add_argument("files", nargs="+", help=".tflite files")
    bench.add_argument("--threads", type=int, default=2, help="interpreter threads (default 2)")
    bench.add_argument("--runs", type=int, default=50, help="timed runs per file (default 50)")
    bench.set_defaults(func=_cmd_bench)

    export = command("export", help="SavedModel for serving and/or the Android .tflite from a run folder",
                     description="Export a trained run folder for TF Serving and for Android.", epilog=EPILOG_EXPORT)
    export.add_argument("run_dir", help="a run folder with model.keras (and labels.txt, run.json)")
    export.add_argument("--saved-model", default=None,
                        help="SavedModel folder to write (missing parent folders are created)")
    export.add_argument("--android", default=None,
                        help="Android .tflite file (uint8, with metadata): converted, verified, and put here only "
                             "if it did not fail (else kept as NAME.failed.tflite)")
    export.add_argument("--onnx", default=None, help="ONNX file to write (needs the onnx extra)")
    export.add_argument("--calibration", default=None,
                        help="folder of typical images (or 'digits') to calibrate --android on (default: the run's "
                             "training data); when the run's data is gone, it gives the check's images too")
    export.add_argument("--float-layers", default="none", metavar="none|auto|LAYERS",
                        help="for --android: " + FLOAT_LAYERS_HELP)
    export.add_argument("--force", action="store_true", help="overwrite a non-empty SavedModel folder")
    export.set_defaults(func=_cmd_export)
    return parser


QAT_TARGETS_HELP = ("what QAT trains on: 'float-model' (the default: the float model's probabilities for each "
                    "training image, what the files are checked against) or 'labels' (the dataset's labels)")

FLOAT_LAYERS_HELP = ("layers the integer files keep in float: 'none' (the default: fully integer, as NPUs and the "
                     "Edge TPU need), 'auto' (the fully integer file if it reaches 99%% agreement on the "
                     "calibration images, else the fewest leading layers in float that do, or the best of up "
                     "to 9; CPU and GPU delegates only) or comma-separated layer names")


def parse_crop_scale(text: str) -> tuple[float, float]:
    """'LOW,HIGH' (fractions of an image side) for --crop-scale; argparse turns a ValueError into a usage error."""
    from mobilenet_keras.training.datasets import check_crop_scale

    parts = text.split(",")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"give two fractions LOW,HIGH, e.g. 0.85,1.0; got {text!r}")
    try:
        return check_crop_scale(parts)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def data_options(args: argparse.Namespace) -> dict:
    """`datasets.load` options from the training arguments that are about the data, not the model."""
    options = {} if args.crop_scale is None else {"crop_scale": args.crop_scale}
    if args.validation_split is not None:
        options["validation_split"] = args.validation_split
    return options


def parse_fraction(text: str) -> float:
    """--validation-split's fraction, checked as `datasets.load` checks it, for argparse."""
    from mobilenet_keras.training.datasets import check_validation_split

    try:
        value = float(text)
        check_validation_split(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a fraction between 0 and 1 (e.g. 0.2); got {text!r}") from None
    return value


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Training options, shared by `train` and `pipeline`."""
    parser.add_argument("--data", default="digits", help="a folder with one subfolder per class, or 'digits' "
                        "(scikit-learn's embedded handwritten digits; the default)")
    parser.add_argument("--alpha", type=float, default=0.25, help="width multiplier (default 0.25)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="input height and width (default 32 for digits, 96 otherwise; with --weights on a "
                             "folder: from the images' size, e.g. 128 for 32 px images, 160 for photos)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs (of the new head when fine-tuning); default 30 from scratch; with --weights 5 "
                             "on digits, 1 (5,000+ images) or 3 on a folder")
    parser.add_argument("--fine-tune-epochs", type=int, default=None,
                        help="then unfreeze the backbone (less --frozen-blocks) for this many epochs at a tenth "
                             "of the learning rate (default: with --weights on a folder and no --epochs, about "
                             "400,000 images' worth, 3 to 15 epochs; otherwise 0)")
    parser.add_argument("--frozen-blocks", type=int, default=None,
                        help="fine-tuning keeps the stem and this many of the 13 blocks at their pretrained weights "
                             "(default: 2 with --weights on a folder, else 0; 0 trains the whole network)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per step (default 32)")
    parser.add_argument("--optimizer", choices=("sgd", "adamw"), default="adamw", help="default adamw")
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="peak learning rate; default 0.02 from scratch, 0.01 with --weights on a folder "
                             "(0.002 on digits)")
    parser.add_argument("--weights", default=None,
                        help="'imagenet' or a path to a Keras backbone .h5 file: fine-tune instead of training "
                             "from scratch")
    parser.add_argument("--strategy", choices=("default", "mirrored", "multiworker"), default="default",
                        help="tf.distribute strategy (multiworker reads TF_CONFIG)")
    parser.add_argument("--precision", choices=("float32", "mixed_bfloat16", "mixed_float16"), default="float32",
                        help="Keras mixed-precision policy (default float32)")
    parser.add_argument("--crop-scale", type=parse_crop_scale, default=None, metavar="LOW,HIGH",
                        help="augmentation: each side of a training crop is a fraction of the image's drawn from "
                             "LOW..HIGH (default 0.85,1.0; 1,1 turns crops off)")
    parser.add_argument("--validation-split", type=parse_fraction, default=None, metavar="FRACTION",
                        help="the fraction of the images held out for validation, drawn with --seed (default 0.2)")
    parser.add_argument("--seed", type=int, default=0, help="random seed for the split, augmentation and weights")
    parser.add_argument("--out", default="runs/latest", help="run folder to write (default runs/latest)")


def _resume_hint(args: argparse.Namespace) -> str:
    """What running the interrupted `train` or `pipeline` again does, read from its run folder."""
    from mobilenet_keras.training.run_folder import RunFolder

    try:
        folder = RunFolder(args.out)
        if folder.has_resume_state():
            return " (run the same command again to resume from the last finished epoch)"
        if args.command == "pipeline" and folder.has_model():
            return " (run the same command again to go on from the trained model)"
    except OSError:  # an unreadable folder: say nothing rather than fail while reporting the interrupt
        return ""
    return " (no epoch had finished: the same command starts from the beginning)"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    where = f"mobilenet-keras {args.command}"
    with quiet_runtime(args.verbose), warnings.catch_warnings(), sigterm_as_interrupt():
        if not args.debug:  # one line in the command's own voice, not Python's file:line and source line
            warnings.showwarning = lambda message, *_, **__: print(f"{where}: warning: {_one_line(message)}",
                                                                   file=sys.stderr)
        try:
            from mobilenet_keras.files import process_temp_folder

            with process_temp_folder():
                status = args.func(args)
            sys.stdout.flush()  # here, where a closed pipe is caught below, not at exit
            return status
        except UsageError as exc:
            if args.debug:
                traceback.print_exc()
            print(f"{where}: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except KeyboardInterrupt as exc:
            resumes = _resume_hint(args) if args.command in ("train", "pipeline") else ""
            terminated = isinstance(exc, Terminated)
            print(f"{where}: {'terminated (SIGTERM)' if terminated else 'interrupted'}{resumes}", file=sys.stderr)
            return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
        except BrokenPipeError:  # `bench ... | head -2`: the reader has what it wanted
            # stdout points at nothing from here on, so that Python's flush at exit does not fail again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_BROKEN_PIPE
        except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as exc:
            if args.debug:
                traceback.print_exc()
            print(f"{where}: error: {_one_line(exc)}", file=sys.stderr)
            return EXIT_USAGE
        except Exception as exc:  # noqa: BLE001 - one line, not a traceback; --debug shows it
            if args.debug:
                traceback.print_exc()
            from mobilenet_keras.files import is_disk_full

            if is_disk_full(exc):  # a write deep inside TensorFlow or h5py (SaveV2, a checkpoint) found no room
                print(f"{where}: error: disk full ({_one_line(exc)[:160]}); free some space (or choose another "
                      "folder) and run again.", file=sys.stderr)
                return EXIT_USAGE
            hint = "" if args.debug else " (rerun with --debug for the traceback)"
            print(f"{where}: internal error: {type(exc).__name__}: {_one_line(exc)}{hint}", file=sys.stderr)
            return EXIT_INTERNAL


def run() -> None:
    """The `mobilenet-keras` program: `main`, then exit with its status. A command ended by SIGTERM ends by the
    signal again once it has cleaned up: a service manager reads that as a stop, and exit status 143 as a
    failure (systemd); a shell reports 143 either way."""
    status = main()
    if status == EXIT_TERMINATED:
        import signal

        from mobilenet_keras.quiet import flush_streams

        flush_streams()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
    sys.exit(status)


if __name__ == "__main__":
    run()
