"""Class-name files (`labels.txt`): one name per line, in the model's output order."""

from __future__ import annotations

import os
from pathlib import Path

# What to do about a labels.txt (or a list of names) that `check_class_names` refuses.
LABELS_REMEDY = "give one distinct class name per line, in output order"


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


def check_class_names(names, source: str | os.PathLike | None = None,
                      remedy: str = "rename that class folder") -> list[str]:
    """Refuse class names that labels.txt can't hold one per line, or that an app can't tell apart (empty,
    repeated, padded with whitespace: MediaPipe's metadata drops blank lines, and its label count then
    differs from the model's classes); returns them as a list.

    `source` (the data folder, when the names are its subfolders, or the labels file) is named in the message,
    `remedy` says what to do.
    """
    names = list(names)
    where = f" in {source}" if source is not None else ""
    for name in names:
        problem = None
        if not isinstance(name, str):
            problem = f"it is a {type(name).__name__}, not text"
        elif not name:
            problem = "it is empty"
        elif "\n" in name or "\r" in name or any(ch in name for ch in "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"):
            problem = "it holds a line break"
        elif name != name.strip():
            problem = "it starts or ends with whitespace"
        if problem:
            raise ValueError(f"class name {name!r}{where} can't be written one per line in labels.txt ({problem}); "
                             f"{remedy}.")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"class names{where} are not unique ({', '.join(map(repr, duplicates))}); {remedy}.")
    return names
