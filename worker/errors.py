"""Errors of the worker.

Tree::

    streamrec.errors.StreamrecError
    ├── streamrec.errors.EventError     a message that can't be decoded: dead-lettered, never raised
    │                                   out of the loop
    ├── streamrec.errors.ArtifactError  a bad model: refused and logged, the old one keeps serving
    └── streamrec.errors.InfraError     Kafka or Redis failed
        └── WorkerError                 the loop cannot go on without losing data (a dead letter
            │                           refused, a commit refused): stops the process loudly
            └── DependencyDown          Kafka or Redis does not answer (yet): the loop waits it
                                        out and redoes the step (``retry.py``); it does not
                                        stop the worker
"""

from __future__ import annotations

from streamrec.errors import InfraError


class WorkerError(InfraError):
    """The worker must stop rather than lose or double-apply events."""


class DependencyDown(WorkerError):
    """``dependency`` ("redis" or "kafka") did not answer; trying again later may work."""

    def __init__(self, dependency: str, message: str) -> None:
        super().__init__(message)
        self.dependency = dependency
