"""Errors of the training side.

Tree::

    streamrec.errors.StreamrecError
    └── ModelError                 training could not produce a model
        └── DataError              an input file is missing or malformed (names file and line);
                                   also a streamrec.errors.InputError (exit 4, like every
                                   command's missing input)
"""

from __future__ import annotations

from streamrec.errors import InputError, StreamrecError


class ModelError(StreamrecError):
    """Training failed."""


class DataError(ModelError, InputError):
    """Training data is missing or malformed."""
