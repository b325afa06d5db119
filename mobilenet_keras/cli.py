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


def _cmd_train(args: argparse.Namespace) -> int:
    from mobilenet_keras.train import main_train

    try:
        return main_train(args)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


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
    return parser


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Training options, shared by `train` and `pipeline`."""
    parser.add_argument("--data", default="digits", help="a folder with one subfolder per class, or 'digits' "
                        "(scikit-learn's embedded handwritten digits; the default)")
    parser.add_argument("--alpha", type=float, default=0.25, help="width multiplier (default 0.25)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="input height and width (default 64 for digits, 96 otherwise)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs (of the new head when fine-tuning; default 5)")
    parser.add_argument("--fine-tune-epochs", type=int, default=0,
                        help="then unfreeze the backbone for this many epochs at a tenth of the learning rate")
    parser.add_argument("--batch-size", type=int, default=32, help="images per step (default 32)")
    parser.add_argument("--optimizer", choices=("sgd", "adamw"), default="adamw", help="default adamw")
    parser.add_argument("--learning-rate", type=float, default=2e-3, help="peak learning rate (default 0.002)")
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
