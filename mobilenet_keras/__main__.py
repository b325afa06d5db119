"""`python -m mobilenet_keras ...` is the `mobilenet-keras` command."""

import sys

from mobilenet_keras.app.cli import main

sys.exit(main())
