"""Errors of the worker.

Tree::

    streamrec.errors.StreamrecError
    ├── streamrec.errors.EventError     a message that can't be decoded: dead-lettered, never raised
    │                                   out of the loop
    ├── streamrec.errors.ArtifactError  a bad model: refused and logged, the old one keeps serving
    └── streamrec.errors.InfraError     Kafka or Redis failed
        └── WorkerError                 the loop cannot go on without losing data (a dead letter
                                        not delivered, a commit refused): stops the process loudly
"""

from __future__ import annotations

from streamrec.errors import InfraError


class WorkerError(InfraError):
    """The worker must stop rather than lose or double-apply events."""
