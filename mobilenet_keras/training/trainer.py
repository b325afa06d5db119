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

STRATEGIES = ("default", "mirrored", "multiworker")
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
OPTIMIZERS = ("sgd", "adamw")


@dataclass
class TrainConfig:
    """What a training run does; saved in `run.json` beside the model."""

    alpha: float = 0.25
    image_size: int = 96
    epochs: int = 5  # head epochs when fine-tuning from pretrained weights, all epochs otherwise
    fine_tune_epochs: int = 0  # phase 2: whole network at learning_rate * fine_tune_lr_factor
    batch_size: int = 32
    optimizer: str = "adamw"
    learning_rate: float = 2e-3
    momentum: float = 0.9
    weight_decay: float = 4e-5
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    fine_tune_lr_factor: float = 0.1
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
        if self.epochs < 1 or self.fine_tune_epochs < 0:
            raise ValueError("epochs must be at least 1 and fine_tune_epochs at least 0.")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1; got {self.batch_size}.")


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


def make_optimizer(config: TrainConfig, steps: int, model, learning_rate: float | None = None):
    """The optimizer with cosine decay after a linear warmup and selective weight decay."""
    import keras

    peak = config.learning_rate if learning_rate is None else learning_rate
    warmup = int(config.warmup_epochs * steps / max(config.epochs, 1)) if learning_rate is None else 0
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


def _strategy(name: str):
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("--strategy multiworker needs TF_CONFIG set on every worker (see the README).")
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


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


def _callbacks(out: Path, phase: str, best_so_far: float | None = None):
    import keras

    return [
        keras.callbacks.BackupAndRestore(str(out / "backup" / phase), delete_checkpoint=True),
        keras.callbacks.ModelCheckpoint(str(out / "best.weights.h5"), monitor="val_accuracy", mode="max",
                                        save_best_only=True, save_weights_only=True, verbose=0,
                                        initial_value_threshold=best_so_far),
        keras.callbacks.CSVLogger(str(out / "history.csv"), append=True),
        keras.callbacks.TensorBoard(log_dir=str(out / "logs" / phase), write_graph=False),
    ]


def _remove_empty_folders(folder: Path) -> None:
    if not folder.is_dir():
        return
    for child in folder.iterdir():
        _remove_empty_folders(child)
    if not any(folder.iterdir()):
        folder.rmdir()


def train(data, out_dir: str | os.PathLike, config: TrainConfig | None = None, verbose: int = 1,
          callbacks: list | None = None):
    """Train a classifier on `data` (`mobilenet_keras.training.datasets.ImageData`) and write a run folder.

    Writes `model.keras` (ending in softmax, best validation accuracy), `labels.txt`, `history.csv`,
    `training.png`, TensorBoard logs under `logs/`, and `run.json`. A run killed part-way resumes
    from its last finished epoch when started again with the same `out_dir` (BackupAndRestore).

    With `config.weights` set, phase 1 trains only the new head (the frozen backbone's BatchNorm runs
    in inference mode); phase 2, if `fine_tune_epochs` > 0, unfreezes everything at a lower learning
    rate. `callbacks` (Keras callbacks) run in both phases after the package's own (backup, best
    checkpoint, CSV log, TensorBoard). Returns the trained Keras model.
    """
    import keras

    from mobilenet_keras.files import write_bytes_atomic
    from mobilenet_keras.training.run_folder import RunFolder, check_class_names

    config = config or TrainConfig()
    config.check()
    check_class_names(data.class_names, data.source)
    folder = RunFolder(out_dir)
    out = folder.check_writable()
    folder.invalidate()  # no verdict or file made from the old model outlives it
    if not folder.has_resume_state():  # a new run: its history does not mix with an old run's
        (out / "history.csv").unlink(missing_ok=True)
    keras.utils.set_random_seed(config.seed)
    if config.precision != "float32":
        keras.mixed_precision.set_global_policy(config.precision)
    started = time.time()
    try:
        strategy = _strategy(config.strategy)
        steps_per_epoch = max(1, int(np.ceil(data.num_train / config.batch_size)))
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
        phase1 = out / "phase1.json"
        if phase1.exists():  # a resumed run whose first phase had finished
            merged = json.loads(phase1.read_text())
            logits.load_weights(out / "phase1.weights.h5")
        else:
            history = logits.fit(data.train, validation_data=data.validation, epochs=config.epochs,
                                 verbose=verbose, callbacks=_callbacks(out, "phase1") + list(callbacks or []))
            merged = {k: [float(x) for x in v] for k, v in history.history.items()}
            if config.fine_tune_epochs:
                logits.save_weights(out / "phase1.weights.h5")
                write_bytes_atomic(phase1, json.dumps(merged).encode())
        if config.fine_tune_epochs:
            with strategy.scope():
                for layer in model.layers:
                    layer.trainable = True
                logits.compile(optimizer=make_optimizer(config, steps_per_epoch * config.fine_tune_epochs, logits,
                                                        config.learning_rate * config.fine_tune_lr_factor),
                               loss=loss, metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])
            history = logits.fit(data.train, validation_data=data.validation, epochs=config.fine_tune_epochs,
                                 verbose=verbose,
                                 callbacks=_callbacks(out, "phase2", max(merged.get("val_accuracy", [0.0])))
                                 + list(callbacks or []))
            for key, values in history.history.items():
                merged.setdefault(key, []).extend(values)
        if (out / "best.weights.h5").exists():
            logits.load_weights(out / "best.weights.h5")
        for leftover in ("phase1.json", "phase1.weights.h5"):
            (out / leftover).unlink(missing_ok=True)
        _remove_empty_folders(out / "backup")  # BackupAndRestore deletes its files, not its folders
        for layer in model.layers:
            layer.trainable = True
    finally:
        if config.precision != "float32":
            keras.mixed_precision.set_global_policy("float32")

    model.save(out / "model.keras.tmp.keras")
    os.replace(out / "model.keras.tmp.keras", out / "model.keras")
    folder.write_labels(data.class_names, data.source)
    plot_history(merged, out / "training.png")
    val_loss, val_accuracy = logits.evaluate(data.validation, verbose=0)
    run = {
        "config": asdict(config),
        "data": {"source": data.source, "classes": data.class_names, "train_images": data.num_train,
                 "validation_images": data.num_validation, "image_size": data.image_size},
        "final": {"val_accuracy": float(val_accuracy), "val_loss": float(val_loss),
                  "best_val_accuracy": float(max(merged.get("val_accuracy", [val_accuracy])))},
        "seconds": round(time.time() - started, 1),
        "versions": _versions(),
    }
    folder.write_run(run)
    return model


def _versions() -> dict:
    from importlib.metadata import version

    found = {"python": platform.python_version()}
    for name in ("tensorflow", "keras", "numpy", "ai-edge-litert"):
        try:
            found[name] = version(name)
        except Exception:  # noqa: BLE001 - report what is installed
            pass
    return found


def default_config(data_source: str, *, weights: str | None = None, image_size: int | None = None,
                   epochs: int | None = None, learning_rate: float | None = None, **settings) -> TrainConfig:
    """A checked TrainConfig whose unset values (None) follow the data and the weights.

    From random weights MobileNet needs more epochs and a larger step than a pretrained backbone:
    30 epochs at 0.02 from scratch, 5 head epochs at 0.002 with `weights`. Images are 32 px for the
    embedded digits (their native 8 px upsampled) and 96 px otherwise. `settings` are other
    TrainConfig fields (alpha, batch_size, ...).
    """
    from mobilenet_keras.training import datasets

    scratch = weights is None
    config = TrainConfig(
        image_size=image_size if image_size is not None else (32 if data_source == datasets.DIGITS else 96),
        epochs=epochs if epochs is not None else (30 if scratch else 5),
        learning_rate=learning_rate if learning_rate is not None else (2e-2 if scratch else 2e-3),
        weights=weights, **settings)
    config.check()
    return config
