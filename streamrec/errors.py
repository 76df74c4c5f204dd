"""Errors shared by every streamrec process.

Tree::

    StreamrecError                 base of everything raised on purpose
    ├── ConfigError                a bad setting or CLI argument (one line, exit 2)
    ├── EventError                 an event that can't be decoded or is invalid
    │   │                          (keeps the raw bytes; the worker dead-letters it)
    │   └── CatalogError           a catalog record (contract 3) that can't be decoded or
    │                              is invalid (the same: raw bytes kept, dead-lettered)
    ├── ArtifactError              a model directory that is missing, corrupt or inconsistent
    │                              (refused before it replaces a good model)
    ├── InputError                 an input file (data, events, names) missing or unreadable
    ├── InfraError                 Kafka or Redis missing, unreachable or not ready in time
    │   │                          (stops the process loudly)
    │   └── AuthError              a service refused the credentials or the TLS handshake
    │                              (one line, exit 7: retrying won't help)
    └── TopicsError                a topic streamrec needs is missing, or the events topic is
                                   under-replicated (the worker refuses to start, exit 6)

Each is one exit status of ``streamrec.exits`` (``status_of``).
"""

from __future__ import annotations


class StreamrecError(Exception):
    """Base class of streamrec's own errors."""


class ConfigError(StreamrecError):
    """A setting or argument is invalid."""


class EventError(StreamrecError):
    """An event could not be decoded or failed validation.

    ``raw`` keeps the original bytes so nothing is lost on the way to the dead-letter topic.
    """

    def __init__(self, reason: str, raw: bytes | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.raw = raw


class CatalogError(EventError):
    """A catalog record (``streamrec.catalog``) could not be decoded or failed validation;
    ``raw`` keeps the original bytes, as for events."""


class ArtifactError(StreamrecError):
    """A model artifact failed verification."""


class InputError(StreamrecError):
    """An input file (a data set, an event CSV, a names file) is missing or malformed."""


class InfraError(StreamrecError):
    """A service streamrec depends on is not available."""


class AuthError(InfraError):
    """A service refused streamrec's credentials or TLS handshake (a wrong Redis password, a
    Kafka login refused, a certificate it does not trust): a setting to fix, not an outage to
    wait out."""


class TopicsError(StreamrecError):
    """A topic is missing or under-replicated; the one-line message says what to run."""
