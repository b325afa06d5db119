"""The `mobilenet-keras` command and its jobs: the CLI (argparse's only user but MediaPipe's script), the pipeline, the
QAT stage, prediction and the report."""
