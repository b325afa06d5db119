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
    return parser


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
