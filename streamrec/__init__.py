"""streamrec: shared contracts (event schema, Redis keys, model artifacts), settings and CLI."""

__version__ = "0.1.0"
