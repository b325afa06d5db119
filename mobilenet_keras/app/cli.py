"""The `mobilenet-keras` command."""

from __future__ import annotations

import argparse
import sys
import traceback


class UsageError(Exception):
    """A mistake in what the user asked for: printed as one line, exit status 2."""


EPILOG_SUMMARY = """examples:
  mobilenet-keras summary                       # 1.0/224 with the ImageNet top
  mobilenet-keras summary --alpha 0.25 --image-size 128 --no-top
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
resumes from its last finished epoch when the same command is run again.
"""


def train_config(args: argparse.Namespace):
    """The TrainConfig that the training options of `train` and `pipeline` ask for."""
    from mobilenet_keras.training.trainer import default_config

    return default_config(args.data, weights=args.weights, image_size=args.image_size, epochs=args.epochs,
                          learning_rate=args.learning_rate, alpha=args.alpha,
                          fine_tune_epochs=args.fine_tune_epochs, batch_size=args.batch_size,
                          optimizer=args.optimizer, strategy=args.strategy, precision=args.precision,
                          seed=args.seed)


def _cmd_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mobilenet_keras.training import datasets
    from mobilenet_keras.training.trainer import train

    try:
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {out} is a file; give a folder for the run.")
        config = train_config(args)
        loaded = datasets.load(args.data, image_size=config.image_size, batch_size=config.batch_size,
                               seed=config.seed)
        print(f"data: {loaded.source}: {loaded.num_train} training and {loaded.num_validation} validation images, "
              f"{len(loaded.class_names)} classes", file=sys.stderr)
        train(loaded, out, config, verbose=0 if args.quiet else 1)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print(f"wrote {out / 'model.keras'}", file=sys.stderr)
    return 0


EPILOG_PIPELINE = """examples:
  mobilenet-keras pipeline                                   # digits, about 4 minutes on 2 cores
  mobilenet-keras pipeline --data photos/ --weights imagenet --epochs 3 --fine-tune-epochs 3 --out runs/photos
  mobilenet-keras pipeline --modes float32,int8,uint8 --quiet
  mobilenet-keras pipeline --modes float32,int8,uint8,qat,qat_uint8   # adds quantization-aware training

Writes RUN_DIR/report.md and report.json (written last: a folder without report.json is not a
finished run), the TFLite files in RUN_DIR/tflite/, RUN_DIR/saved_model/, RUN_DIR/android/model.tflite,
and the plots. Exit status 1 when a file fails verification, 2 for a usage error.
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
  mobilenet-keras export runs/latest --saved-model serving/mobilenet/1
  mobilenet-keras export runs/latest --android app/src/main/assets/model.tflite --calibration photos/
  mobilenet-keras export runs/latest --onnx model.onnx
"""


EPILOG_QAT = """examples:
  mobilenet-keras qat runs/latest                         # 2 epochs at 1e-5, files in runs/latest/tflite/
  mobilenet-keras qat runs/photos --epochs 3 --learning-rate 3e-5

Reads the run's model.keras and run.json (the data is read again from the same source), trains the
quantization-aware model, and writes runs/latest/qat/qat.weights.h5, tflite/model_qat.tflite (int8
input and output) and tflite/model_qat_uint8.tflite (raw pixels in), each checked against the float
model and against the QAT Keras model. Exit status 1 when a file fails verification.
"""


def _cmd_qat(args: argparse.Namespace) -> int:
    from mobilenet_keras.app.qat_stage import qat_run_folder

    try:
        return qat_run_folder(args.run_dir, epochs=args.epochs, learning_rate=args.learning_rate, data=args.data,
                              verbose=not args.quiet)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _cmd_pipeline(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mobilenet_keras.app.pipeline import PipelineSettings, parse_modes, run_pipeline

    try:
        settings = PipelineSettings(data=args.data, out=Path(args.out), config=train_config(args),
                                    modes=parse_modes(args.modes), qat_epochs=args.qat_epochs,
                                    qat_learning_rate=args.qat_learning_rate, force=args.force,
                                    verbose=not args.quiet)
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
    from tflite.runtime import TFLiteModel
    from tflite.verify import measure_latency

    rows = []
    try:
        for path in args.files:
            model = TFLiteModel(path)
            rows.append((path, model.mode, model.size_bytes, measure_latency(model, args.runs, args.threads)))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    width = max(len(str(r[0])) for r in rows)
    print(f"{'file':<{width}}  {'mode':<14} {'size KiB':>9} {'ms/image':>9}")
    for path, mode, size, ms in rows:
        print(f"{str(path):<{width}}  {mode:<14} {size / 1024:>9.0f} {ms:>9.3f}")
    print(f"(median of {args.runs} runs at batch 1, {args.threads} threads)")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    import keras

    run_dir = Path(args.run_dir)
    if not (run_dir / "model.keras").exists():
        raise UsageError(f"{run_dir} has no model.keras; give a run folder written by train or pipeline.")
    if not args.saved_model and not args.android and not args.onnx:
        raise UsageError("say what to export: --saved-model DIR, --android FILE.tflite and/or --onnx FILE.onnx.")
    model = keras.models.load_model(run_dir / "model.keras")
    labels = (run_dir / "labels.txt").read_text().splitlines() if (run_dir / "labels.txt").exists() else None
    try:
        if args.saved_model:
            from mobilenet_keras.deploy.saved_model import export_saved_model

            print(export_saved_model(model, args.saved_model, labels=labels, force=args.force))
        if args.onnx:
            from mobilenet_keras.deploy.onnx_file import export_onnx

            print(export_onnx(model, args.onnx))
        if args.android:
            from mobilenet_keras.training import datasets
            from mobilenet_keras.deploy.android import android_file

            if args.calibration is None:
                raise ValueError("--android needs --calibration DIR (typical images, e.g. the training folder).")
            from tflite.representative import collect

            calibration = collect(args.calibration, tuple(model.input_shape[1:]), limit=200) \
                if args.calibration != datasets.DIGITS else \
                datasets.digits(image_size=model.input_shape[1], augment=False).calibration_arrays(200)
            print(android_file(model, args.android, calibration, labels or [str(i) for i in
                                                                            range(model.output_shape[-1])]))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mobilenet-keras",
        description="MobileNet V1 for Keras 3: build, train, convert to TFLite and check every file.",
    )
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    summary = sub.add_parser("summary", help="build a model and print its layers, parameters and multiply-adds",
                             description="Build MobileNet V1 and print its summary, parameters and multiply-adds.",
                             epilog=EPILOG_SUMMARY, formatter_class=argparse.RawDescriptionHelpFormatter)
    summary.add_argument("--alpha", type=float, default=1.0, help="width multiplier (default 1.0)")
    summary.add_argument("--image-size", type=int, default=224, help="input height and width (default 224)")
    summary.add_argument("--classes", type=int, default=1000, help="classes of the top (default 1000)")
    summary.add_argument("--no-top", action="store_true", help="leave out the classifier")
    summary.add_argument("--weights", default=None, help="'imagenet' or a path to a Keras .h5 file")
    summary.add_argument("--quiet", action="store_true", help="print only the one-line figures")
    summary.set_defaults(func=_cmd_summary)

    train = sub.add_parser("train", help="train or fine-tune a classifier on an image folder (model.fit)",
                           description="Train MobileNet V1 with model.fit and write a run folder: model.keras, "
                                       "labels.txt, history.csv, training.png, logs/, run.json.",
                           epilog=EPILOG_TRAIN, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_arguments(train)
    train.set_defaults(func=_cmd_train)

    pipeline = sub.add_parser("pipeline", help="train, convert every mode, verify each file, export, report",
                              description="The main job: from an image folder (or the embedded digits) to a "
                                          "trained model, every TFLite flavour checked against the float model, "
                                          "a SavedModel, an Android file and a report.",
                              epilog=EPILOG_PIPELINE, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_train_arguments(pipeline)
    pipeline.add_argument("--modes", default="float32,float16,dynamic,int8,uint8",
                          help="comma-separated TFLite modes (default float32,float16,dynamic,int8,uint8)")
    pipeline.add_argument("--qat-epochs", type=int, default=2, help="QAT epochs when --modes has qat (default 2)")
    pipeline.add_argument("--qat-learning-rate", type=float, default=1e-5,
                          help="QAT learning rate when --modes has qat (default 1e-5)")
    pipeline.add_argument("--force", action="store_true", help="overwrite a finished run in --out")
    pipeline.set_defaults(func=_cmd_pipeline)

    qat_parser = sub.add_parser("qat", help="quantization-aware training of a trained run, then int8 files",
                                description="Quantization-aware training with tensorflow-model-optimization on a "
                                            "tf_keras twin of the run's model, then int8 and uint8 TFLite files.",
                                epilog=EPILOG_QAT, formatter_class=argparse.RawDescriptionHelpFormatter)
    qat_parser.add_argument("run_dir", help="a run folder written by train or pipeline")
    qat_parser.add_argument("--epochs", type=int, default=2, help="QAT epochs (default 2)")
    qat_parser.add_argument("--learning-rate", type=float, default=1e-5, help="Adam learning rate (default 1e-5)")
    qat_parser.add_argument("--data", default=None, help="read the data from here instead of run.json's source")
    qat_parser.add_argument("--quiet", action="store_true", help="no progress bar (for CI logs)")
    qat_parser.set_defaults(func=_cmd_qat)

    predict = sub.add_parser("predict", help="top 5 classes of images with a .tflite, .keras or SavedModel",
                             description="Classify images and print the top 5 with labels.",
                             epilog=EPILOG_PREDICT, formatter_class=argparse.RawDescriptionHelpFormatter)
    predict.add_argument("model", help="a .tflite file, a .keras file or a SavedModel folder")
    predict.add_argument("images", nargs="+", help="image files")
    predict.add_argument("--labels", default=None,
                         help="labels.txt (default: the file's metadata, or labels.txt beside the model)")
    predict.add_argument("--top", type=int, default=5, help="how many classes to print (default 5)")
    predict.set_defaults(func=_cmd_predict)

    bench = sub.add_parser("bench", help="latency table of .tflite files",
                           description="Median latency per image of each .tflite file at batch 1.",
                           epilog=EPILOG_BENCH, formatter_class=argparse.RawDescriptionHelpFormatter)
    bench.add_argument("files", nargs="+", help=".tflite files")
    bench.add_argument("--threads", type=int, default=2, help="interpreter threads (default 2)")
    bench.add_argument("--runs", type=int, default=50, help="timed runs per file (default 50)")
    bench.set_defaults(func=_cmd_bench)

    export = sub.add_parser("export", help="SavedModel for serving and/or the Android .tflite from a run folder",
                            description="Export a trained run folder for TF Serving and for Android.",
                            epilog=EPILOG_EXPORT, formatter_class=argparse.RawDescriptionHelpFormatter)
    export.add_argument("run_dir", help="a run folder with model.keras (and labels.txt)")
    export.add_argument("--saved-model", default=None, help="SavedModel folder to write")
    export.add_argument("--android", default=None, help="Android .tflite file to write (uint8, with metadata)")
    export.add_argument("--onnx", default=None, help="ONNX file to write (needs the onnx extra)")
    export.add_argument("--calibration", default=None, help="folder of typical images (or 'digits') for --android")
    export.add_argument("--force", action="store_true", help="overwrite a non-empty SavedModel folder")
    export.set_defaults(func=_cmd_export)
    return parser


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Training options, shared by `train` and `pipeline`."""
    parser.add_argument("--data", default="digits", help="a folder with one subfolder per class, or 'digits' "
                        "(scikit-learn's embedded handwritten digits; the default)")
    parser.add_argument("--alpha", type=float, default=0.25, help="width multiplier (default 0.25)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="input height and width (default 32 for digits, 96 otherwise)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="epochs (of the new head when fine-tuning); default 30 from scratch, 5 with --weights")
    parser.add_argument("--fine-tune-epochs", type=int, default=0,
                        help="then unfreeze the backbone for this many epochs at a tenth of the learning rate")
    parser.add_argument("--batch-size", type=int, default=32, help="images per step (default 32)")
    parser.add_argument("--optimizer", choices=("sgd", "adamw"), default="adamw", help="default adamw")
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="peak learning rate; default 0.02 from scratch, 0.002 with --weights")
    parser.add_argument("--weights", default=None,
                        help="'imagenet' or a path to a Keras backbone .h5 file: fine-tune instead of training "
                             "from scratch")
    parser.add_argument("--strategy", choices=("default", "mirrored", "multiworker"), default="default",
                        help="tf.distribute strategy (multiworker reads TF_CONFIG)")
    parser.add_argument("--precision", choices=("float32", "mixed_bfloat16", "mixed_float16"), default="float32",
                        help="Keras mixed-precision policy (default float32)")
    parser.add_argument("--seed", type=int, default=0, help="random seed for the split, augmentation and weights")
    parser.add_argument("--out", default="runs/latest", help="run folder to write (default runs/latest)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar (for CI logs)")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except UsageError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"mobilenet-keras {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
