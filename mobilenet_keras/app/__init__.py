"""The `mobilenet-keras` command and its jobs: the CLI (the only argparse user), the pipeline, the
QAT stage, prediction and the report."""
