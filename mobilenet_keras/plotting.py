"""matplotlib for files only: the Agg backend and atomic PNG writes, shared by training and the report."""

from __future__ import annotations

import io
from pathlib import Path

from mobilenet_keras.files import write_bytes_atomic


def pyplot():
    """matplotlib's pyplot on the Agg backend (files only, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> Path:
    """Write `fig` as a PNG (temporary file, then rename) and close it."""
    plt = pyplot()
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return write_bytes_atomic(path, buffer.getvalue())
