"""Errors of the producer side.

Tree::

    streamrec.errors.StreamrecError
    ├── streamrec.errors.EventError   an invalid event, refused before it is sent
    └── streamrec.errors.InfraError
        └── DeliveryError             the broker did not acknowledge every event
"""

from __future__ import annotations

from streamrec.errors import InfraError


class DeliveryError(InfraError):
    """Some events were not delivered."""
