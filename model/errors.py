"""Errors of the training side.

Tree::

    streamrec.errors.StreamrecError
    └── ModelError                 training could not produce a model
        └── DataError              an input file is missing or malformed (names file and line)
"""

from __future__ import annotations

from streamrec.errors import StreamrecError


class ModelError(StreamrecError):
    """Training failed."""


class DataError(ModelError):
    """Training data is missing or malformed."""
