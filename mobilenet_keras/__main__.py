"""`python -m mobilenet_keras ...` is the `mobilenet-keras` command."""

from mobilenet_keras.app.cli import run

run()
