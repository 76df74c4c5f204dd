"""The feedback score: how an event or a dataset row becomes a confidence value.

One implementation, used by the trainer (dataset weights) and the worker (events), so a user
folded in from the stream is scored exactly as the same history would be in training.

Two steps:

1. ``event_weight(type, value)``: each event adds a signed weight to the user's running total
   for that item (history). Negative totals mean "disliked".
2. ``confidence(total)``: the total becomes the confidence implicit's ALS sees, before
   ``alpha``: ``log1p`` (default; play counts are heavy-tailed) or ``linear``. The sign is
   kept: implicit treats a negative confidence as a disliked item (no preference, extra weight).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
import numpy.typing as npt

Transform = Literal["log", "linear"]
TRANSFORMS: tuple[Transform, ...] = ("log", "linear")

#: Weight each event type adds to its item's total, before any value is taken into account.
DEFAULT_WEIGHTS: Mapping[str, float] = {
    "play": 1.0,
    "click": 0.5,
    "view": 0.25,
    "like": 2.0,
    "purchase": 3.0,
    "rating": 1.0,  # scaled by the centred rating, see event_weight
    "skip": -0.5,
    "dislike": -2.0,
}
#: Ratings are centred here: a 5 adds +2.5, a 1 adds -1.5 (5-star scale, as MovieLens).
RATING_CENTRE = 2.5


def event_weight(
    type: str, value: float | None = None, weights: Mapping[str, float] = DEFAULT_WEIGHTS
) -> float:
    """Signed weight one event adds to its item's total for the user."""
    base = weights.get(type, 0.0)
    if type == "rating":
        return base * ((value if value is not None else RATING_CENTRE) - RATING_CENTRE)
    return base


def confidence(
    totals: npt.NDArray[np.floating], transform: Transform = "log"
) -> npt.NDArray[np.float32]:
    """Confidence per item from per-item totals (any shape), sign kept, float32."""
    t = np.asarray(totals, dtype=np.float32)
    if transform == "log":
        return (np.sign(t) * np.log1p(np.abs(t))).astype(np.float32, copy=False)
    if transform == "linear":
        return t
    raise ValueError(f"unknown transform {transform!r}; expected one of {TRANSFORMS}")
