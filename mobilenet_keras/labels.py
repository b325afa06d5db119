"""Class-name files (`labels.txt`): one name per line, in the model's output order."""

from __future__ import annotations

import os
from pathlib import Path


def parse_labels(text: str) -> list[str]:
    """The class names in a labels file's text. A byte-order mark (Windows editors write one) and blank lines
    at the end (an editor's extra newline) are not names; a blank line between names is, so that a count
    check still catches a file whose names are shifted."""
    names = text.removeprefix("\ufeff").splitlines()
    while names and not names[-1].strip():
        names.pop()
    return names


def read_labels(path: str | os.PathLike) -> list[str]:
    """`parse_labels` of the UTF-8 file at `path`; a file that can't be read is a ValueError naming it."""
    try:
        return parse_labels(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} can't be read as a labels file ({exc}); give one class name per line, UTF-8.") \
            from None
