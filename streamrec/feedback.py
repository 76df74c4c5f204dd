"""The feedback score: how an event or a dataset row becomes a confidence value.

One implementation, used by the trainer (dataset weights) and the worker (events), so a user
folded in from the stream is scored exactly as the same history would be in training.

Three steps:

1. ``event_weight(type, value)``: each event adds a signed weight to the user's running total
   for that item (history). Play and view seconds are log-scaled, ratings centred, a quick skip
   counts against the item. Negative totals mean "disliked".
2. ``decay``: a total loses half its weight every ``half_life`` of event time, so a user's
   recent taste outweighs what they played months ago.
3. ``confidence(total)``: the total becomes the confidence implicit's ALS sees, before
   ``alpha``: ``log1p`` (default; play counts are heavy-tailed) or ``linear``. The sign is
   kept: implicit treats a negative confidence as a disliked item (no preference, extra weight).
"""

from __future__ import annotations

import math
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
#: Seconds of play (or view dwell) worth the type's base weight; more is log-scaled, e.g. a
#: 90 s play weighs 2, a 210 s play 3. At most VALUE_CAP times the base.
VALUE_REFERENCE_S: Mapping[str, float] = {"play": 30.0, "view": 10.0}
VALUE_CAP = 4.0
#: A skip after fewer seconds than this is "quick" and counts against the item; later is neutral.
QUICK_SKIP_S = 30.0


def event_weight(
    type: str, value: float | None = None, weights: Mapping[str, float] = DEFAULT_WEIGHTS
) -> float:
    """Signed weight one event adds to its item's total for the user.

    ``value`` is play/dwell seconds for play and view, the rating for rating, the seconds
    played before a skip; None means "not given" and takes the type's base weight.
    """
    base = weights.get(type, 0.0)
    if type == "rating":
        return base * ((value if value is not None else RATING_CENTRE) - RATING_CENTRE)
    if type == "skip":
        return base if value is None or value < QUICK_SKIP_S else 0.0
    ref = VALUE_REFERENCE_S.get(type)
    if ref is not None and value is not None:
        return base * min(VALUE_CAP, math.log1p(max(value, 0.0) / ref) / math.log(2.0))
    return base


def decay(total: float, elapsed_ms: float, half_life_ms: float | None) -> float:
    """``total`` after ``elapsed_ms`` of event time; no decay when ``half_life_ms`` is None."""
    if not half_life_ms or elapsed_ms <= 0:
        return total
    return total * 0.5 ** (elapsed_ms / half_life_ms)


def decay_to_latest(
    totals: npt.ArrayLike,
    times: npt.ArrayLike,
    owner: npt.NDArray[np.int64],
    owners: int,
    half_life_ms: float | None,
) -> npt.NDArray[np.float64]:
    """``decay`` for many entries at once: each total decayed from its time to the latest
    time among its owner's entries (how a user's history is decayed to their newest event).

    Args:
        totals, times: (n,) totals and their event times (epoch ms).
        owner: (n,) int64 owner of each entry, in ``[0, owners)``.
    Returns (n,) float64; the totals unchanged when ``half_life_ms`` is None or 0.
    """
    out = np.array(totals, dtype=np.float64)
    if not half_life_ms or not len(out):
        return out
    t = np.asarray(times, dtype=np.float64)
    latest = np.full(owners, -np.inf)
    np.maximum.at(latest, owner, t)
    elapsed = latest[owner] - t
    later = elapsed > 0
    out[later] *= 0.5 ** (elapsed[later] / half_life_ms)
    return out


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
