"""Reading the project's input files: one opener for plain and gzip-compressed text."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import TextIO


def open_text(path: Path, encoding: str = "utf-8", errors: str = "strict") -> TextIO:
    """``path`` opened for reading text, decompressed when its name ends in ``.gz``; newlines
    are left to the csv module (``newline=""``)."""
    path = Path(path)
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding=encoding, errors=errors, newline="")
    return path.open("r", encoding=encoding, errors=errors, newline="")
