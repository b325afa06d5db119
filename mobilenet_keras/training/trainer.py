"""Training and fine-tuning MobileNet V1 with `model.fit`, with the MobileNet authors' recipe.

The recipe (Howard et al. 2017; TF-slim's training script): momentum SGD or AdamW, cosine decay
after a linear warmup, label smoothing, and weight decay on convolution and dense kernels only,
never on depthwise kernels (they have few parameters and decay hurts them) nor on BatchNorm.
Training runs on the logits with a from-logits loss; the model that is saved ends in softmax.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mobilenet_keras import specs

STRATEGIES = ("default", "mirrored", "multiworker")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
OPTIMIZERS = ("sgd", "adamw")


@dataclass
class TrainConfig:
    """What a training run does; saved in `run.json` beside the model."""

    alpha: float = 0.25
    image_size: int = 96
    epochs: int = 5  # head epochs when fine-tuning from pretrained weights, all epochs otherwise
    fine_tune_epochs: int = 0  # phase 2: the network (less frozen_blocks) at learning_rate * fine_tune_lr_factor
    batch_size: int = 32
    optimizer: str = "adamw"
    learning_rate: float = 2e-3
    momentum: float = 0.9
    weight_decay: float = 4e-5
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    fine_tune_lr_factor: float = 0.1
    fine_tune_warmup_epochs: float = 0.0  # linear warmup at the start of phase 2 (a fresh optimizer)
    # Phase 2 keeps the stem and the first `frozen_blocks` depthwise-separable blocks at the weights phase
    # 1 left them (the pretrained ones with `weights`; 0: the whole network trains). Off in this plain
    # config; `transfer_defaults` (what the CLI uses with --weights on a folder) freezes 2: with the fused
    # BatchNormalization that trains 1.5x as many images/s as the whole network (benchmarks/RESULTS.md).
    frozen_blocks: int = 0
    dropout: float = 1e-3
    batchnorm_momentum: float = 0.9  # faster than Keras's 0.99, so statistics follow a short fine-tune
    weights: str | None = None  # None, "imagenet" or a path to a backbone file
    strategy: str = "default"
    precision: str = "float32"
    seed: int = 0

    def check(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}; got {self.optimizer!r}.")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}; got {self.strategy!r}.")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}; got {self.precision!r}.")
        _integer("epochs", self.epochs, 1, MAX_EPOCHS)
        _integer("fine_tune_epochs", self.fine_tune_epochs, 0, MAX_EPOCHS)
        _integer("batch_size", self.batch_size, 1, MAX_BATCH_SIZE)
        _integer("image_size", self.image_size, 32, 16384)
        _integer("seed", self.seed, 0, 2**32 - 1)
        _integer("frozen_blocks", self.frozen_blocks, 0, len(specs.BLOCKS))
        _number("alpha", self.alpha, low=1 / 32, high=16.0, what="a finite number > 0, from 0.03125 to 16")
        _number("learning_rate", self.learning_rate, low=0.0, high=10.0, low_open=True,
                what="a finite number > 0 and at most 10")
        _number("fine_tune_lr_factor", self.fine_tune_lr_factor, low=0.0, high=10.0, low_open=True,
                what="a finite number > 0 and at most 10")
        _number("momentum", self.momentum, low=0.0, high=1.0, high_open=True, what="a number in [0, 1)")
        _number("weight_decay", self.weight_decay, low=0.0, high=1.0, what="a finite number >= 0 and at most 1")
        _number("warmup_epochs", self.warmup_epochs, low=0.0, high=float(MAX_EPOCHS),
                what="a finite number >= 0")
        _number("fine_tune_warmup_epochs", self.fine_tune_warmup_epochs, low=0.0, high=float(MAX_EPOCHS),
                what="a finite number >= 0")
        _number("label_smoothing", self.label_smoothing, low=0.0, high=1.0, high_open=True,
                what="a number in [0, 1)")
        _number("dropout", self.dropout, low=0.0, high=1.0, high_open=True, what="a number in [0, 1)")
        _number("batchnorm_momentum", self.batchnorm_momentum, low=0.0, high=1.0, high_open=True,
                what="a number in [0, 1)")


MAX_EPOCHS = 100_000
MAX_BATCH_SIZE = 1 << 20


def _integer(name: str, value, low: int, high: int) -> None:
    import numbers

    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer from {low} to {high}; got {value!r}.")


def _number(name: str, value, *, low: float, high: float, what: str, low_open: bool = False,
            high_open: bool = False) -> None:
    import math
    import numbers

    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        raise ValueError(f"{name} must be {what}; got {value!r}.")


def frozen_layer_names(blocks: int) -> set[str]:
    """The layers that phase 2 keeps frozen for `TrainConfig.frozen_blocks` = `blocks`: none for 0, else
    the stem (conv1 and its BatchNorm) and blocks 1..`blocks` (their depthwise and pointwise convolutions
    and BatchNorms), by the public layer names of `mobilenet_keras.specs`."""
    if blocks <= 0:
        return set()
    convolutions = specs.convolution_names()[:1 + 2 * blocks]
    return set(convolutions) | {f"{name}_bn" for name in convolutions}


def decay_excluded(model) -> list:
    """Variables that get no weight decay: depthwise kernels, BatchNorm, and biases."""
    import keras

    excluded = []
    for layer in model.layers:
        if isinstance(layer, (keras.layers.DepthwiseConv2D, keras.layers.BatchNormalization)):
            excluded += list(layer.trainable_weights)
        else:
            excluded += [w for w in layer.trainable_weights if w.path.endswith("bias")]
    return excluded


def make_optimizer(config: TrainConfig, steps: int, model, learning_rate: float | None = None,
                   warmup_steps: int | None = None):
    """The optimizer with cosine decay after a linear warmup and selective weight decay. Phase 1
    (`learning_rate` None) warms up for `config.warmup_epochs`; phase 2 for `warmup_steps` (default none)."""
    import keras

    peak = config.learning_rate if learning_rate is None else learning_rate
    if warmup_steps is None:
        warmup_steps = int(config.warmup_epochs * steps / max(config.epochs, 1)) if learning_rate is None else 0
    warmup = min(int(warmup_steps), max(steps - 1, 0))
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else peak, decay_steps=max(steps - warmup, 1),
        warmup_target=peak if warmup else None, warmup_steps=warmup)
    if config.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(schedule, momentum=config.momentum, nesterov=True,
                                         weight_decay=config.weight_decay)
    else:
        optimizer = keras.optimizers.AdamW(schedule, weight_decay=config.weight_decay)
    optimizer.exclude_from_weight_decay(var_list=decay_excluded(model))
    return optimizer


def build_optimizer(model) -> None:
    """Make the compiled optimizer's variables now, for the variables that `model` trains.

    Keras (3 and tf_keras) without a distribution strategy makes them while it traces the first training step;
    TensorFlow then traces the step a second time, which takes as long as the first: about half the time of a
    short MobileNet fit.
    """
    optimizer = model.optimizer
    # tf_keras's optimizers keep the flag as `_built`
    if optimizer is not None and not getattr(optimizer, "built", getattr(optimizer, "_built", False)):
        optimizer.build(model.trainable_variables)


_STRATEGIES: dict = {}


def make_strategy(name: str):
    """The tf.distribute strategy `name`, made once per process (call it before any other TensorFlow
    work when it is `multiworker`: collective ops are set up when the runtime starts).

    `mirrored` replicates over every GPU, or, without a GPU, over every logical CPU device (configure
    several with `tf.config.set_logical_device_configuration` before TensorFlow starts; one CPU
    device gives one replica). `multiworker` reads TF_CONFIG.
    """
    import tensorflow as tf

    if name in _STRATEGIES:
        return _STRATEGIES[name]
    if name == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU")]
        devices = devices or [d.name for d in tf.config.list_logical_devices("CPU")]
        strategy = tf.distribute.MirroredStrategy(devices=devices)
    elif name == "multiworker":
        from mobilenet_keras.training.cluster import read_tf_config, wait_for_peers, worker_wait_s

        wait_for_peers(read_tf_config(), worker_wait_s())  # TensorFlow's own wait can't be ended
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        _patch_keras_multiworker_reduce()
    else:
        return tf.distribute.get_strategy()
    _STRATEGIES[name] = strategy
    return strategy


_strategy = make_strategy


def _patch_keras_multiworker_reduce() -> None:
    """Keras 3 (3.15) averages a step's logs over workers with `strategy.reduce("MEAN", v, axis=0)`, which
    fails for its scalar logs (loss, accuracy: "Invalid reduction dimension 0 for input with 0
    dimensions"); average them with axis=None instead. Other reductions (predict's concat) are Keras's."""
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original = tf_trainer.reduce_per_replica
    if getattr(original, "_mobilenet_keras", False):
        return

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            from keras.src import tree

            return tree.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return original(values, strategy, reduction)

    reduce_per_replica._mobilenet_keras = True
    tf_trainer.reduce_per_replica = reduce_per_replica


def is_chief(strategy) -> bool:
    """True unless `strategy` is a multi-worker one and this process is not its chief (the task of type
    "chief", or worker 0 when the cluster has no chief)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    if task_type is None:
        return True
    if task_type == "chief":
        return True
    has_chief = "chief" in (resolver.cluster_spec().as_dict() or {})
    return task_type == "worker" and not has_chief and int(resolver.task_id or 0) == 0


def build_classifier(config: TrainConfig, num_classes: int):
    """MobileNetV1 for `num_classes`, from `config.weights` (a backbone) when given, ending in softmax."""
    import warnings

    import keras

    from mobilenet_keras.model import MobileNetV1
    from mobilenet_keras.weights import transfer_weights

    with warnings.catch_warnings():
        # A backbone file has no head for these classes: a new one is what transfer learning wants.
        warnings.filterwarnings("ignore", message=".*holds no classifier weights.*")
        model = MobileNetV1(input_shape=(config.image_size, config.image_size, 3), alpha=config.alpha,
                            classes=num_classes, dropout=config.dropout, weights=None)
        if config.weights is not None:
            backbone = MobileNetV1(input_shape=(config.image_size, config.image_size, 3), alpha=config.alpha,
                                   include_top=False, weights=config.weights)
            transfer_weights(backbone, model)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = config.batchnorm_momentum
    return model


_WEIGHTS_CHECKED: set = set()


def check_weights_load(config: TrainConfig) -> None:
    """Load `config.weights` into a backbone of the run's width once, so that a missing, damaged or
    mismatched weights file is named before the data is read (minutes, for a large folder) and before a run
    folder is touched. A file checked already (same path, size and time, same width) is not loaded again."""
    if config.weights is None:
        return
    from mobilenet_keras.model import MobileNetV1

    try:
        stat = os.stat(config.weights)
        key = (os.path.realpath(config.weights), stat.st_size, stat.st_mtime_ns, config.alpha, config.image_size)
    except (OSError, TypeError, ValueError):
        key = None  # "imagenet", or a path the load below names
    if key is not None and key in _WEIGHTS_CHECKED:
        return
    MobileNetV1(input_shape=(config.image_size, config.image_size, 3), alpha=config.alpha, include_top=False,
                weights=config.weights)
    if key is not None:
        _WEIGHTS_CHECKED.add(key)


def _check_arguments(data, out_dir, config, verbose, callbacks, restart) -> None:
    """`train`'s arguments of the wrong kind, as one TypeError or ValueError naming the argument (before: an
    AttributeError from inside, or a run folder made and left)."""
    from mobilenet_keras.training.datasets import ImageData

    if not isinstance(data, ImageData):
        raise TypeError(f"data must be the ImageData of mobilenet_keras.training.datasets.load(...) (or image_folder, "
                        f"digits); got {type(data).__name__}.")
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig (or None for the defaults); got {type(config).__name__}.")
    if not isinstance(out_dir, (str, os.PathLike)):
        raise TypeError(f"out_dir must be a folder path; got {type(out_dir).__name__}.")
    if "\0" in os.fspath(out_dir) or not os.fspath(out_dir):
        raise ValueError(f"out_dir {os.fspath(out_dir)!r} is not a usable folder path (empty, or a NUL character).")
    if not isinstance(restart, (bool, np.bool_)):  # "no" would be true: a finished run discarded
        raise TypeError(f"restart must be True or False; got {restart!r}.")
    if verbose not in (0, 1, 2, "auto") or isinstance(verbose, bool):
        raise ValueError(f"verbose must be 0, 1, 2 or 'auto', as for Keras's fit; got {verbose!r}.")
    if callbacks is not None:
        import keras

        if not isinstance(callbacks, (list, tuple)) or not all(isinstance(c, keras.callbacks.Callback)
                                                               for c in callbacks):
            raise TypeError("callbacks must be a list of keras.callbacks.Callback (or None); got "
                            f"{type(callbacks).__name__}.")


def _build_from_spec(model, strategy, spec) -> None:
    """Under MultiWorkerMirroredStrategy, let `model` build its state from the dataset's element spec.

    Keras 3 (3.15) builds a model under a strategy from the first batch, averaged over replicas with
    `strategy.reduce`, which MultiWorkerMirroredStrategy refuses for per-replica batches in eager mode
    ("Attempt to convert a value (PerReplica ...) to a Tensor"); the shapes and dtypes are all it needs.
    """
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return

    def build(iterator=None, data_batch=None):
        with strategy.scope():
            model._symbolic_build(data_batch=spec if data_batch is None else data_batch)

    model._maybe_symbolic_build = build


def logits_view(model):
    """A model that shares every layer of `model` and stops before the softmax."""
    import keras

    return keras.Model(model.inputs, model.get_layer("predictions").input, name=f"{model.name}_logits")


def plot_history(history: dict, path: Path) -> Path:
    """Loss and accuracy curves (training and validation) as a PNG."""
    from mobilenet_keras.plotting import pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    for ax, key, title in ((axes[0], "loss", "loss"), (axes[1], "accuracy", "top-1 accuracy")):
        for prefix, style in (("", "-"), ("val_", "--")):
            if prefix + key in history:
                ax.plot(epochs, history[prefix + key], style, label=("validation " if prefix else "training ") + key)
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    return save_figure(fig, path)


HISTORY_FILE = "history.csv"


def write_history_csv(history: dict, path: Path) -> Path:
    """history.csv (epoch, then the metrics in name order, as Keras's CSVLogger), written atomically
    from the whole history, so it always matches the state a resumed run starts from."""
    from mobilenet_keras.files import write_bytes_atomic

    keys = sorted(history)
    rows = max((len(v) for v in history.values()), default=0)
    lines = [",".join(["epoch"] + keys)]
    for i in range(rows):
        lines.append(",".join([str(i)] + [repr(float(history[k][i])) if i < len(history[k]) else "" for k in keys]))
    return write_bytes_atomic(path, ("\n".join(lines) + "\n").encode())


def _backup_callback_class():
    """`AtomicBackupAndRestore`, made on first use so that importing this module needs no Keras."""
    global _BACKUP_CLASS
    if _BACKUP_CLASS is not None:
        return _BACKUP_CLASS
    import keras

    class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
        """BackupAndRestore that survives a kill at any moment and keeps the whole history.

        Keras's callback writes its .h5 in place: a SIGKILL while it writes leaves a torn file that
        every later run dies on. Here the weights and the metadata (epoch and the history of every
        finished epoch) are each written to a temporary file and renamed; a backup that can't be read
        at start (torn by an older version, or damaged) is set aside as *.torn with a one-line
        warning, and training starts again from the last good state.
        """

        def __init__(self, backup_dir, prior_history: dict | None = None, history_file: Path | None = None):
            # kept until the whole run is finished (train removes it after run.json): deleting it at the
            # end of phase 1 would lose the run if it were killed before phase1.json is written
            super().__init__(str(backup_dir), delete_checkpoint=False)
            self.prior_history = {k: list(v) for k, v in (prior_history or {}).items()}
            self.history: dict[str, list[float]] = {}
            self.history_file = history_file

        def whole_history(self) -> dict:
            """The earlier phase's history, then this phase's (restored epochs included)."""
            keys = list(self.prior_history) + [k for k in self.history if k not in self.prior_history]
            return {k: self.prior_history.get(k, []) + self.history.get(k, []) for k in keys}

        def on_train_begin(self, logs=None):
            folder = Path(self.backup_dir)
            for leftover in folder.glob(".*.tmp*") if folder.is_dir() else []:
                leftover.unlink(missing_ok=True)  # a write that was killed; the old file is intact
            problem = self._check_backup()
            if problem is None and Path(self._weights_path).exists():
                snapshot = [v.numpy() for v in self.model.weights]
                try:
                    super().on_train_begin(logs)
                    self.history = self._read_metadata().get("history", {})
                    return
                except Exception as exc:  # noqa: BLE001 - any failure to load means the backup is unusable
                    for variable, value in zip(self.model.weights, snapshot):
                        variable.assign(value)
                    self.model._initial_epoch = 0
                    problem = f"{exc.__class__.__name__}: {' '.join(str(exc).split())[:160]}"
            if problem is not None:
                self._set_aside(problem)
            self.history = {}

        def _read_metadata(self) -> dict:
            return json.loads(Path(self._training_metadata_path).read_text())

        def _check_backup(self) -> str | None:
            """Why the backup can't be used, or None (also None when there is no backup)."""
            weights, metadata = Path(self._weights_path), Path(self._training_metadata_path)
            if not weights.exists() and not metadata.exists():
                return None
            if not weights.exists():
                return f"{metadata.name} without {weights.name}"
            try:
                import h5py

                with h5py.File(weights, "r") as f:
                    def read(name, item):
                        if isinstance(item, h5py.Dataset):
                            item[()]
                    f.visititems(read)
            except Exception as exc:  # noqa: BLE001 - h5py raises OSError, KeyError, RuntimeError ...
                return f"{weights.name} is not a readable HDF5 file: {' '.join(str(exc).split())[:160]}"
            if metadata.exists():
                try:
                    meta = self._read_metadata()
                    if not isinstance(meta.get("epoch"), int):
                        return f"{metadata.name} has no epoch"
                except (OSError, ValueError, AttributeError) as exc:
                    return f"{metadata.name} is damaged: {exc}"
            return None

        def _set_aside(self, problem: str) -> None:
            import warnings

            moved = []
            for path in (Path(self._weights_path), Path(self._training_metadata_path)):
                if path.exists():
                    os.replace(path, path.with_name(path.name + ".torn"))
                    moved.append(path.name + ".torn")
            message = (f"the training backup in {self.backup_dir} can't be read ({problem}); set it aside as "
                       f"{', '.join(moved)} and starting this phase again from the last good state.")
            print(f"warning: {message}", file=sys.stderr, flush=True)
            warnings.warn(message, RuntimeWarning, stacklevel=2)

        def on_epoch_end(self, epoch, logs=None):
            for key, value in (logs or {}).items():
                self.history.setdefault(key, []).append(float(value))
            if self.history_file is not None:
                write_history_csv(self.whole_history(), self.history_file)
            super().on_epoch_end(epoch, logs)

        def _save_model(self):
            from mobilenet_keras.files import make_folder, write_bytes_atomic, write_weights

            make_folder(self.backup_dir)
            write_weights(self.model, self._weights_path)
            write_bytes_atomic(self._training_metadata_path, json.dumps(
                {"epoch": self._current_epoch, "batch": self._last_batch_seen, "history": self.history}).encode())

    class AtomicBestCheckpoint(keras.callbacks.Callback):
        """The weights of the best `val_accuracy` so far, written atomically. "So far" includes the
        epochs before a resume (the backup's history) and `threshold` (an earlier phase's best)."""

        def __init__(self, path: Path, backup: AtomicBackupAndRestore, threshold: float | None = None,
                     monitor: str = "val_accuracy"):
            super().__init__()
            self.path, self.backup, self.threshold, self.monitor = Path(path), backup, threshold, monitor
            self.best = None

        def on_epoch_end(self, epoch, logs=None):
            from mobilenet_keras.files import write_weights

            current = (logs or {}).get(self.monitor)
            if current is None or not np.isfinite(current):
                return
            # the backup appends this epoch after us: its history holds the epochs before this one
            earlier = [v for v in self.backup.history.get(self.monitor, []) if np.isfinite(v)]
            candidates = earlier + ([self.threshold] if self.threshold is not None else [])
            best = max(candidates) if candidates else None
            if best is None or current > best or not self.path.exists():
                write_weights(self.model, self.path)

    AtomicBackupAndRestore.BestCheckpoint = AtomicBestCheckpoint
    _BACKUP_CLASS = AtomicBackupAndRestore
    return _BACKUP_CLASS


_BACKUP_CLASS = None


def _throughput_callback(images_per_epoch: int):
    """A callback that times each epoch: training images per second (the fit steps, validation
    excluded) and the whole epoch's seconds, in `.log` (lists, one entry per epoch)."""
    import keras

    class Throughput(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.log = {"images_per_second": [], "train_seconds": [], "epoch_seconds": []}
            self.phase = "phase1"

        def on_epoch_begin(self, epoch, logs=None):
            self.start, self.train_end = time.perf_counter(), None

        def on_test_begin(self, logs=None):
            if getattr(self, "train_end", 0) is None:
                self.train_end = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            now = time.perf_counter()
            seconds = (self.train_end or now) - self.start
            self.log["images_per_second"].append(round(images_per_epoch / max(seconds, 1e-9), 1))
            self.log["train_seconds"].append(round(seconds, 2))
            self.log["epoch_seconds"].append(round(now - self.start, 2))

    return Throughput()


def epoch_batches(dataset, num_images: int, batch_size: int) -> int:
    """Batches in one pass over `dataset` (a batched tf.data.Dataset): its cardinality when tf.data knows it,
    else `num_images` / `batch_size` rounded up.

    Training fits `dataset.repeat()` for this many steps per epoch rather than the dataset itself: the
    batches are the same (each pass reshuffles), but Keras then keeps one iterator for a whole phase.
    Given a finite dataset, Keras 3 (3.15) starts a new iterator after each epoch's last step and
    another when the next epoch begins, discarding the first, whose tf.data threads (shuffle buffer,
    parallel map, prefetch) had been working during validation; freeing such iterators is also what
    stalled training (see `datasets.without_autotune_thread`).
    """
    cardinality = int(dataset.cardinality())
    if cardinality > 0:
        return cardinality
    return max(1, int(np.ceil(num_images / batch_size)))


def _callbacks(out: Path, phase: str, best_so_far: float | None = None, prior_history: dict | None = None):
    """The package's callbacks of one phase: best checkpoint (before the backup, so a kill between the
    two never leaves a history whose best epoch has no weights), backup, TensorBoard."""
    import keras

    backup_class = _backup_callback_class()
    backup = backup_class(out / "backup" / phase, prior_history=prior_history, history_file=out / HISTORY_FILE)
    best = backup_class.BestCheckpoint(out / "best.weights.h5", backup, threshold=best_so_far)
    return [best, backup, keras.callbacks.TensorBoard(log_dir=str(out / "logs" / phase), write_graph=False)]


def train(data, out_dir: str | os.PathLike, config: TrainConfig | None = None, verbose: int = 1,
          callbacks: list | None = None, restart: bool = False):
    """Train a classifier on `data` (`mobilenet_keras.training.datasets.ImageData`) and write a run folder.

    Writes `model.keras` (ending in softmax, best validation accuracy), `labels.txt`, `history.csv`,
    `training.png`, TensorBoard logs under `logs/`, and `run.json` (last). A run killed part-way
    (SIGKILL, Ctrl-C, a full disk) resumes from its last finished epoch when started again with the
    same `out_dir` and the same settings and data (others are refused; `restart=True` discards the
    unfinished run instead): backups and the best checkpoint are written atomically, a torn backup is set aside
    with a warning, and history.csv and the best metric cover every epoch of the run. A folder holding a
    finished run is refused unless `restart=True` (a new run there). A new run (no
    resume state) starts a fresh history.csv; any run first removes the old verdict (report.json,
    report.md) and the files made from the old model (see `run_folder.RunFolder.invalidate`).

    With `config.weights` set, phase 1 trains only the new head (the frozen backbone's BatchNorm runs
    in inference mode); phase 2, if `fine_tune_epochs` > 0, unfreezes everything but the stem and the
    first `config.frozen_blocks` blocks at a lower learning rate. `callbacks` (Keras callbacks) run in
    both phases after the package's own (backup, best checkpoint, backup and history.csv, TensorBoard).
    Returns the trained Keras model. A full disk is a one-line ValueError ("disk full writing ...").
    """
    from mobilenet_keras.files import disk_full_error, is_disk_full
    from mobilenet_keras.labels import check_class_names
    from mobilenet_keras.training.run_folder import RunFolder, check_outside_data

    config = config or TrainConfig()
    _check_arguments(data, out_dir, config, verbose, callbacks, restart)
    config.check()
    check_class_names(data.class_names, data.source)
    if data.image_size != config.image_size:
        raise ValueError(f"the data is loaded at {data.image_size} px but config.image_size is {config.image_size}: "
                         "load it with the model's size (image_size=...) or set config.image_size to match.")
    if data.batch_size is not None and data.batch_size != config.batch_size:  # run.json would record the other
        raise ValueError(f"the data is batched by {data.batch_size} but config.batch_size is {config.batch_size}: "
                         "load it with batch_size=config.batch_size, or set config.batch_size to match.")
    check_outside_data(out_dir, data.source)
    check_weights_load(config)  # before anything in the folder goes (restart=True removes a finished run's files)
    scratch = None
    if config.strategy == "multiworker" and not is_chief(make_strategy(config.strategy)):
        import tempfile

        # every worker runs the same steps (they take part in the same collective ops), but only the
        # chief's run folder is kept: the others write to a temporary folder, deleted at the end
        scratch = Path(tempfile.mkdtemp(prefix="mobilenet_keras_worker_"))
        out_dir = scratch / "run"
    folder = RunFolder(out_dir)
    out = folder.check_writable()
    try:
        with folder.claimed():
            return _train(data, folder, config, verbose, callbacks, restart)
    except ValueError:
        raise
    except Exception as exc:
        if is_disk_full(exc):  # Keras's and TensorFlow's own writes (TensorBoard, h5py) while training
            folder.remove_temp_files()
            raise disk_full_error(out, exc) from None
        raise
    finally:
        if scratch is not None:
            import shutil

            shutil.rmtree(scratch, ignore_errors=True)


def _train(data, folder, config: TrainConfig, verbose: int, callbacks: list | None, restart: bool = False):
    import keras

    from mobilenet_keras.files import atomic_path, follow_umask, write_bytes_atomic, write_weights

    out = folder.path
    if restart:
        folder.clear_resume_state()
    else:
        folder.refuse_finished_run("restart=True", "out_dir")
    folder.check_resume_settings({"config": asdict(config), "data": data_record(data)})  # before anything goes
    folder.invalidate()  # no verdict, and no file made from the old model, outlives it
    folder.remove_temp_files()  # left by a write that was killed
    if not folder.has_resume_state():  # a new run: nothing of an old run's history, weights or logs
        folder.clear_resume_state(keep_settings=True)
        (out / HISTORY_FILE).unlink(missing_ok=True)
        folder.remove_logs()
    keras.utils.set_random_seed(config.seed)
    if config.precision != "float32":
        keras.mixed_precision.set_global_policy(config.precision)
    started = time.time()
    try:
        strategy = make_strategy(config.strategy)
        throughput = _throughput_callback(data.num_train)
        steps_per_epoch = epoch_batches(data.train, data.num_train, config.batch_size)
        validation_steps = epoch_batches(data.validation, data.num_validation, config.batch_size)
        # One iterator per phase (see `epoch_batches`): the same batches in the same order as a pass per epoch.
        train_data, validation_data = data.train.repeat(), data.validation.repeat()
        with strategy.scope():
            model = build_classifier(config, len(data.class_names))
            logits = logits_view(model)
            loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=config.label_smoothing)
            transfer = config.weights is not None
            if transfer:
                for layer in model.layers:
                    layer.trainable = layer.name == "conv_preds"
            logits.compile(optimizer=make_optimizer(config, steps_per_epoch * config.epochs, logits), loss=loss,
                           metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])
            build_optimizer(logits)
        _build_from_spec(logits, strategy, data.train.element_spec)
        phase1 = out / "phase1.json"
        if phase1.exists():  # a resumed run whose first phase had finished
            merged = folder.read_json(phase1.name, "phase1.json")
            logits.load_weights(out / "phase1.weights.h5")
        else:
            own = _callbacks(out, "phase1")
            # shuffle=False: the dataset shuffles itself; Keras 3.15 warns when fit is asked to as well.
            logits.fit(train_data, validation_data=validation_data, epochs=config.epochs, shuffle=False,
                       steps_per_epoch=steps_per_epoch, validation_steps=validation_steps,
                       verbose=verbose, callbacks=own + [throughput] + list(callbacks or []))
            merged = own[1].whole_history()  # every epoch, those before a resume too
            if config.fine_tune_epochs:
                write_weights(logits, out / "phase1.weights.h5")
                write_bytes_atomic(phase1, json.dumps(merged).encode())
        if config.fine_tune_epochs:
            with strategy.scope():
                frozen = frozen_layer_names(config.frozen_blocks)
                for layer in model.layers:
                    layer.trainable = layer.name not in frozen
                logits.compile(optimizer=make_optimizer(config, steps_per_epoch * config.fine_tune_epochs, logits,
                                                        config.learning_rate * config.fine_tune_lr_factor,
                                                        int(config.fine_tune_warmup_epochs * steps_per_epoch)),
                               loss=loss, metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])
                build_optimizer(logits)
            earlier = [v for v in merged.get("val_accuracy", []) if np.isfinite(v)]
            own = _callbacks(out, "phase2", max(earlier) if earlier else None, prior_history=merged)
            logits.fit(train_data, validation_data=validation_data, epochs=config.fine_tune_epochs,
                       steps_per_epoch=steps_per_epoch, validation_steps=validation_steps,
                       shuffle=False, verbose=verbose, callbacks=own + [throughput] + list(callbacks or []))
            merged = own[1].whole_history()
        if (out / "best.weights.h5").exists():
            logits.load_weights(out / "best.weights.h5")
        for layer in model.layers:
            layer.trainable = True
    finally:
        if config.precision != "float32":
            keras.mixed_precision.set_global_policy("float32")

    # run.json says "a finished model is here": gone before model.keras is replaced, back (this run's) last
    (out / "run.json").unlink(missing_ok=True)
    with atomic_path(out / "model.keras") as tmp:
        model.save(tmp)
    folder.write_labels(data.class_names, data.source)
    write_history_csv(merged, out / HISTORY_FILE)
    plot_history(merged, out / "training.png")
    val_loss, val_accuracy = logits.evaluate(data.validation, verbose=0)
    finite = [v for v in merged.get("val_accuracy", []) if np.isfinite(v)]
    run = {
        "config": asdict(config),
        "data": data_record(data),
        "final": {"val_accuracy": float(val_accuracy), "val_loss": float(val_loss),
                  "best_val_accuracy": float(max(finite)) if finite else float(val_accuracy),
                  "epochs": len(merged.get("loss", []))},
        "seconds": round(time.time() - started, 1),
        # a resumed run's process times only the epochs it ran: the epochs before it are said, not timed
        "resumed_after_epochs": max(0, len(merged.get("loss", [])) - len(throughput.log["epoch_seconds"])),
        "throughput": {"batch_size": config.batch_size, "replicas": int(strategy.num_replicas_in_sync),
                       **throughput.log},
        "versions": _versions(),
    }
    if (out / "logs").is_dir():
        follow_umask(out / "logs")  # TensorBoard's folders and event files
    folder.write_run(run)  # last: a folder with run.json holds a finished model
    folder.clear_resume_state()  # backup/, best.weights.h5, phase1.*: the run is finished
    return model


def data_record(data) -> dict:
    """What run.json (and a resume's check) records of the data a run trained on."""
    return {"source": data.source, "classes": data.class_names, "train_images": data.num_train,
            "validation_images": data.num_validation, "validation_split": data.validation_split,
            "image_size": data.image_size, "augmentation": data.augmentation, "fingerprint": data.fingerprint}


def _versions() -> dict:
    from importlib.metadata import version

    found = {"python": platform.python_version()}
    for name in ("tensorflow", "keras", "numpy", "ai-edge-litert"):
        try:
            found[name] = version(name)
        except Exception:  # noqa: BLE001 - report what is installed
            pass
    return found


def describe_data(data_source) -> tuple[int, int] | None:
    """(number of images, median shorter side in pixels of up to 64 sampled files) of a folder of class
    subfolders; (1797, 8) for the embedded digits; None when the folder can't be read."""
    from mobilenet_keras.images import scan_folder
    from mobilenet_keras.training import datasets

    if str(data_source) == datasets.DIGITS:
        return 1797, 8
    try:
        found = scan_folder(data_source)
    except (ValueError, OSError):
        return None
    from PIL import Image

    rng = np.random.default_rng(0)
    picks = rng.choice(len(found.paths), size=min(64, len(found.paths)), replace=False)
    sides = []
    for i in picks:
        try:
            with Image.open(found.paths[i]) as img:  # the header only
                sides.append(min(img.size))
        except Exception:  # noqa: BLE001 - the data check names bad files later
            continue
    return len(found.paths), int(np.median(sides)) if sides else 0


def transfer_defaults(num_images: int, native: int) -> dict:
    """The transfer-learning recipe for a dataset of `num_images` images whose shorter side is `native` px.

    - image size: a pretrained ImageNet backbone sees objects at about 100-200 px, so small images are
      enlarged 4x (CIFAR's 32 px -> 128 px), never below 128 px, and larger photos are read at 160 px
      (a good accuracy per second on a CPU for alpha 0.25 .. 1);
    - phase 1: the new head alone, 1 epoch for 5,000+ images (the frozen features make it converge
      quickly), 3 below that, at AdamW 0.01 (a fresh linear layer on fixed features takes a large step)
      with a quarter epoch of warmup;
    - phase 2: the network at a tenth of that (0.001, AdamW + cosine, a quarter epoch of warmup for the
      fresh optimizer) for about 400,000 images seen (9 epochs of 45,000), from 3 to 15 epochs, with the
      stem and the first 2 blocks kept frozen: their generic edge and colour filters need no change, and a
      step then skips their BatchNorm statistics and gradients (1.5x the images/s of the whole network in
      benchmarks/training_step_speed.py on a Xeon without AMX, 1.06x on one with it; the 90.3% CIFAR-10
      run of benchmarks/train_cifar10.py froze them too).
    """
    image_size = int(min(160, max(128, 32 * round(4 * max(native, 1) / 32))))
    return dict(image_size=image_size, epochs=1 if num_images >= 5000 else 3, learning_rate=1e-2,
                fine_tune_epochs=int(np.clip(round(400_000 / max(num_images, 1)), 3, 15)),
                warmup_epochs=0.25, fine_tune_warmup_epochs=0.25, frozen_blocks=2)


def default_config(data_source: str, *, weights: str | None = None, image_size: int | None = None,
                   epochs: int | None = None, learning_rate: float | None = None,
                   fine_tune_epochs: int | None = None, **settings) -> TrainConfig:
    """A checked TrainConfig whose unset values (None) follow the data and the weights.

    From random weights MobileNet needs more epochs and a larger step than a pretrained backbone:
    30 epochs at 0.02 from scratch, 32 px for the embedded digits (their native 8 px upsampled) and
    96 px otherwise. With `weights` on a folder, `transfer_defaults` picks the image size from the
    images' native size and the epochs from their number (head, then fine-tuning of the whole
    network); fine-tuning is on by default unless `epochs` is given (then it is what is asked:
    `fine_tune_epochs`, default 0). With `weights` on the digits: 5 head epochs at 0.002, 32 px.
    `settings` are other TrainConfig fields (alpha, batch_size, ...); a value given always wins.
    """
    from mobilenet_keras.training import datasets

    chosen = {}
    if weights is not None and str(data_source) != datasets.DIGITS:
        described = describe_data(data_source)
        if described is not None:
            chosen = transfer_defaults(*described)
            if epochs is not None and fine_tune_epochs is None:
                chosen["fine_tune_epochs"] = 0
    scratch = weights is None
    if not chosen:
        chosen = dict(image_size=32 if str(data_source) == datasets.DIGITS else 96, epochs=30 if scratch else 5,
                      learning_rate=2e-2 if scratch else 2e-3, fine_tune_epochs=0)
    given = dict(image_size=image_size, epochs=epochs, learning_rate=learning_rate, fine_tune_epochs=fine_tune_epochs)
    chosen.update({key: value for key, value in given.items() if value is not None})
    chosen.update({key: value for key, value in settings.items() if value is not None})
    config = TrainConfig(weights=weights, **chosen)
    config.check()
    return config
