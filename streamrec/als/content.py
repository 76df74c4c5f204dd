"""New items from their content: a ridge map from content features to ALS item factors.

Pure numpy, arrays in and out. An item's content is its numeric ``features`` (audio features,
a release year, ...) and its ``categories`` (genres, tags): ``ContentMap.encode`` turns items
into rows of standardized features (``(x - mean) / scale``, a missing feature = the mean, so 0)
followed by a 0/1 column per category of the vocabulary. ``fit_content_map`` learns, on the
items a model knows, the ridge regression of their factors on those rows in closed form:

    W = (XᵀX + λ·D)⁻¹ XᵀY,   X = [rows, 1],   D = diag(1, ..., 1, 0)   (the bias is free)

so an item that arrives without factors gets ``predict = [rows, 1] @ W``, factors the fold-in
and top-N treat like any other item's. ``content_vectors`` are the same rows scaled to unit
length, for cosine similarity over content (``streamrec.als.similar``'s blend).

``ContentMap`` and ``HasContent`` live in ``streamrec.artifact`` (the stored format is defined
in the contracts' layer, which may not import this one) and are re-exported here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt

from streamrec.artifact import (
    YEAR_FEATURE,
    ContentMap,
    HasContent,
    item_features,
    predict_encoded,
)

__all__ = [
    "YEAR_FEATURE",
    "ContentMap",
    "HasContent",
    "content_vectors",
    "fit_content_map",
    "item_features",
    "match_norms",
    "predict_encoded",
    "vocabulary",
]

F32 = npt.NDArray[np.float32]


def vocabulary(
    items: Iterable[HasContent], min_category_count: int = 1
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(feature names, categories), each sorted: every feature some item has, and every
    category at least ``min_category_count`` items carry (rarer ones would get a weight
    from one or two items, noise more than content)."""
    names: set[str] = set()
    counts: dict[str, int] = {}
    for item in items:
        names.update(item_features(item))
        for c in set(item.categories):
            counts[c] = counts.get(c, 0) + 1
    cats = sorted(c for c, n in counts.items() if n >= min_category_count)
    return tuple(sorted(names)), tuple(cats)


def _standardization(items: Sequence[HasContent], names: Sequence[str]) -> tuple[F32, F32]:
    """(mean, scale), each (f,) float32, over the items that have each feature (finite
    values only); a feature no item has a finite value of gets mean 0; scale 1 where the
    deviation is 0 (a constant feature then encodes as 0 everywhere)."""
    col = {n: j for j, n in enumerate(names)}
    total = np.zeros(len(names))
    square = np.zeros(len(names))
    count = np.zeros(len(names))
    for item in items:
        for name, value in item_features(item).items():
            j = col.get(name)
            v = float(value)
            if j is not None and np.isfinite(v):
                total[j] += v
                square[j] += v * v
                count[j] += 1
    seen = np.maximum(count, 1)
    mean = total / seen
    var = np.maximum(square / seen - mean**2, 0.0)
    std = np.sqrt(var)
    # A deviation far below the mean's own rounding is a constant feature, not a signal.
    std[std <= 1e-6 * np.maximum(np.abs(mean), 1.0)] = 1.0
    return mean.astype(np.float32), std.astype(np.float32)


def fit_content_map(
    items: Sequence[HasContent],
    factors: npt.ArrayLike,
    regularization: float = 1.0,
    *,
    min_category_count: int = 1,
) -> ContentMap:
    """The ridge map from ``items``' content to their ``factors`` ((n, k) float32, row i
    the factors of ``items[i]``), with penalty ``regularization`` (λ >= 0) on every weight
    but the bias: ``W = (XᵀX + λD)⁻¹XᵀY`` solved in float64, stored float32 ((f + c + 1, k)).
    With λ = 0 and a rank-deficient X the least-squares solution of least norm is taken.

    Raises ValueError when the shapes disagree, there are no items, or λ < 0."""
    y = np.asarray(factors, dtype=np.float64)
    if y.ndim != 2 or y.shape[0] != len(items):
        raise ValueError(f"{len(items)} items but factors of shape {y.shape}")
    if not len(items):
        raise ValueError("no items to fit the content map on")
    if not (regularization >= 0 and np.isfinite(regularization)):
        raise ValueError(f"regularization must be >= 0, got {regularization}")
    if not np.isfinite(y).all():
        raise ValueError("factors hold NaN or infinity")
    names, cats = vocabulary(items, min_category_count)
    mean, scale = _standardization(items, names)
    k = y.shape[1]
    blank = np.zeros((len(names) + len(cats) + 1, k), dtype=np.float32)  # encode needs no W
    rows = ContentMap(names, cats, mean, scale, blank).encode(items)
    x = np.hstack([rows.astype(np.float64), np.ones((len(items), 1))])
    d = x.shape[1]
    if regularization > 0:
        gram = x.T @ x
        gram[np.arange(d - 1), np.arange(d - 1)] += regularization
        w = np.linalg.solve(gram, x.T @ y)
    else:
        w = np.linalg.lstsq(x, y, rcond=None)[0]
    return ContentMap(names, cats, mean, scale, np.ascontiguousarray(w, dtype=np.float32))


def content_vectors(cmap: ContentMap, items: Sequence[HasContent]) -> F32:
    """(m, f + c) float32: ``cmap.encode(items)`` rows scaled to unit length (a row of zeros,
    an item with no known content, stays zeros: cosine 0 with everything), so that a matrix
    product of two sets of them is their cosine similarity over standardized content."""
    x = cmap.encode(items)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def match_norms(mapped: npt.ArrayLike, reference: npt.ArrayLike) -> F32:
    """(m, k) float32: ``mapped`` factors rescaled to the mean row norm of ``reference``
    ((n, k), the model's trained item factors); a zero row stays zero.

    A ridge prediction is shrunk towards the mean item (on the data in ``../shared/data`` the
    mapped factors' norms are 0.26-0.5 of the trained ones'), so in a list scored against every
    known item a mapped item rarely takes a top slot. Rescaling keeps each mapped item's
    direction (its ranking among new items is unchanged) and lets it compete on length; the
    README's "New items from their content" measures both ways."""
    m = np.asarray(mapped, dtype=np.float32)
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    target = np.float32(np.linalg.norm(np.asarray(reference, np.float32), axis=1).mean())
    return np.divide(m * target, norms, out=np.zeros_like(m), where=norms > 0)
