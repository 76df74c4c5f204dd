"""The serving API's filter index: the live model's items and the catalog's, as arrays a
request filters and scores without a Python loop over items.

Pure (numpy only, no Redis, no HTTP). Rows ``0 .. n_model-1`` are the model's items in its
order, so a row of ``<p>:vec:<user>``'s history (``UserVec.seen``) is a row here; rows from
``n_model`` on are catalog items the model lacks ("cold" items), with factors from the
artifact's content map when it has one (else they rank after every scored item).

What a catalog record says (``Item``: categories, year, available) is per row; an item of the
model with no catalog record has no category and no year and counts as available (the model
knows it and nothing says otherwise). ``Filters``: any of ``categories`` (an item matches if
it has at least one), a year range (items without a year never match one), ``available_only``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

#: Filters whose candidate rows are kept per index (front-ends reuse a handful).
CACHED_FILTERS = 64
#: Above this share of the model's rows, one product with every factor beats a gather.
FULL_PRODUCT_SHARE = 0.25
#: Bytes of per-filter blocks kept (gathered factors, popularity orders): 64 MiB.
BLOCK_BUDGET = 64 << 20


class CatalogItem(Protocol):
    """What the index reads of a catalog record (``streamrec.catalog.Item``)."""

    @property
    def item_id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def categories(self) -> tuple[str, ...]: ...
    @property
    def year(self) -> int | None: ...
    @property
    def available(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class Filters:
    """One request's filters (the API's query parameters)."""

    categories: tuple[str, ...] = ()
    year_min: int | None = None
    year_max: int | None = None
    available_only: bool = True

    @property
    def narrows(self) -> bool:
        """Whether anything but availability is asked for."""
        return bool(self.categories) or self.year_min is not None or self.year_max is not None

    def as_json(self) -> dict[str, object]:
        return {
            "category": list(self.categories),
            "year_min": self.year_min,
            "year_max": self.year_max,
            "available_only": self.available_only,
        }


class ServingIndex:
    """The model's and the catalog's items as rows, built once per (model, catalog version).

    Args:
        model_version: the version the model rows belong to.
        item_ids: (n_model,) the model's item ids, in row order.
        factors: (n_model, k) float32 item factors (memory-mapped: never copied whole).
        popularity: (n_model,) float32 the artifact's item popularity.
        catalog: item_id -> record, for every catalog item (model's or not).
        cold_factors: (c, k) float32 factors of ``cold_ids`` (from the content map), or None.
        cold_ids: the catalog items the model lacks that ``cold_factors`` has rows for.
    """

    def __init__(
        self,
        model_version: str,
        item_ids: Sequence[str],
        factors: npt.NDArray[np.float32],
        popularity: npt.NDArray[np.float32],
        catalog: Mapping[str, CatalogItem],
        cold_factors: npt.NDArray[np.float32] | None = None,
        cold_ids: Sequence[str] = (),
        catalog_version: int = 0,
    ) -> None:
        self.model_version = model_version
        self.catalog_version = catalog_version
        self.n_model = n = len(item_ids)
        # A plain ndarray view of the memory map: np.memmap's own __getitem__ costs ~0.1 ms
        # a request in Python; the view shares the same pages.
        self.factors = np.asarray(factors)
        row_of = {item: r for r, item in enumerate(item_ids)}
        extra = [i for i in catalog if i not in row_of]
        ids = [*item_ids, *extra]
        row_of.update((item, n + j) for j, item in enumerate(extra))
        self.ids: npt.NDArray[np.object_] = np.asarray(ids, dtype=np.object_)
        self.row_of = row_of
        total = len(ids)
        k = factors.shape[1] if factors.ndim == 2 else 0
        # Cold rows: factors from the content map where it gave some, else none (-inf scores).
        self.cold = np.zeros((len(extra), k), dtype=np.float32)
        self.has_factors = np.zeros(total, dtype=bool)
        self.has_factors[:n] = True
        if cold_factors is not None and len(cold_ids):
            at = {item: j for j, item in enumerate(extra)}
            for item, vec in zip(cold_ids, cold_factors, strict=True):
                j = at.get(item)
                if j is not None:
                    self.cold[j] = vec
                    self.has_factors[n + j] = True
        #: (c,) rows of the cold items with factors (the ones a vector can score)
        self.cold_rows = (np.flatnonzero(self.has_factors[n:]) + n).astype(np.int64)
        norms = np.empty(total, dtype=np.float32)
        norms[:n] = np.linalg.norm(factors, axis=1) if n else 0
        norms[n:] = np.linalg.norm(self.cold, axis=1) if len(extra) else 0
        self.norms = np.where(norms > 0, norms, 1.0).astype(np.float32)
        # Popularity: the artifact's for model rows, 0 for cold ones (ranked after, in id order).
        self.popularity = np.zeros(total, dtype=np.float32)
        self.popularity[:n] = popularity
        order = np.argsort(-self.popularity, kind="stable")
        self.pop_rank = np.empty(total, dtype=np.int64)
        self.pop_rank[order] = np.arange(total)
        self.available = np.ones(total, dtype=bool)
        self.year = np.full(total, np.nan, dtype=np.float64)
        self.names: dict[str, str] = {}
        by_category: dict[str, list[int]] = {}
        for item, rec in catalog.items():
            r = row_of[item]
            self.available[r] = bool(rec.available)
            if rec.year is not None:
                self.year[r] = float(rec.year)
            if rec.name:
                self.names[item] = rec.name
            for c in rec.categories:
                by_category.setdefault(c, []).append(r)
        self.categories = {c: np.unique(np.asarray(rs, dtype=np.int64))
                           for c, rs in by_category.items()}  # fmt: skip
        self._all = np.arange(total, dtype=np.int64)
        self._cache: OrderedDict[Filters, tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]]
        self._cache = OrderedDict()
        self._blocks: OrderedDict[tuple[Filters, str], npt.NDArray[Any]] = OrderedDict()
        self._block_bytes = 0
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return len(self.ids)

    def rows(self, item_ids: Iterable[str]) -> npt.NDArray[np.int64]:
        """(m,) rows of the ids this index knows (others left out)."""
        get = self.row_of.get
        return np.fromiter((r for r in map(get, item_ids) if r is not None), dtype=np.int64)

    def matching(self, f: Filters) -> npt.NDArray[np.int64]:
        """(m,) int64 sorted rows of every item that matches ``f`` (kept for reuse)."""
        return self._matching(f)[0]

    def _matching(self, f: Filters) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
        """``matching`` and the same as a (size,) bool mask, built once per filter."""
        with self._lock:
            hit = self._cache.get(f)
            if hit is not None:
                self._cache.move_to_end(f)
                return hit
        if f.categories:
            parts = [self.categories.get(c) for c in f.categories]
            found = [p for p in parts if p is not None]
            rows = (np.unique(np.concatenate(found)) if len(found) > 1
                    else found[0] if found else self._all[:0])  # fmt: skip
        else:
            rows = self._all
        keep = np.ones(len(rows), dtype=bool)
        if f.available_only:
            keep &= self.available[rows]
        if f.year_min is not None:
            keep &= self.year[rows] >= f.year_min  # NaN (no year) compares False
        if f.year_max is not None:
            keep &= self.year[rows] <= f.year_max
        out = rows if keep.all() else rows[keep]
        out.setflags(write=False)
        mask = np.zeros(self.size, dtype=bool)
        mask[out] = True
        mask.setflags(write=False)
        with self._lock:
            self._cache[f] = (out, mask)
            while len(self._cache) > CACHED_FILTERS:
                self._cache.popitem(last=False)
        return out, mask

    def match_mask(self, rows: npt.NDArray[np.int64], f: Filters) -> npt.NDArray[np.bool_]:
        """(m,) bool: whether each of ``rows`` (-1: an item this index does not know, which
        matches only filters that narrow nothing) matches ``f``."""
        mask = self._matching(f)[1]
        known = rows >= 0
        ok = mask[np.where(known, rows, 0)] & known
        if not f.narrows:
            ok |= ~known
        return ok

    def _keep(
        self, rows: npt.NDArray[np.int64], exclude: npt.NDArray[np.int64] | None
    ) -> npt.NDArray[np.bool_] | None:
        """(len(rows),) bool: the ``rows`` not in ``exclude``; None when none is."""
        if exclude is None or not len(exclude):
            return None
        ex = exclude[(exclude >= 0) & (exclude < self.size)]
        drop = np.zeros(self.size, dtype=bool)
        drop[ex] = True
        keep = ~drop[rows]
        return None if keep.all() else keep

    def _kept(
        self, f: Filters, what: str, make: Callable[[], npt.NDArray[Any]]
    ) -> npt.NDArray[Any]:
        """``make()``, kept per (filter, what) within ``BLOCK_BUDGET`` bytes (oldest dropped)."""
        key = (f, what)
        with self._lock:
            hit = self._blocks.get(key)
            if hit is not None:
                self._blocks.move_to_end(key)
                return hit
        value = make()
        value.setflags(write=False)
        with self._lock:
            self._blocks[key] = value
            self._block_bytes += value.nbytes
            while self._block_bytes > BLOCK_BUDGET and len(self._blocks) > 1:
                _, old = self._blocks.popitem(last=False)
                self._block_bytes -= old.nbytes
        return value

    def score(
        self,
        query: npt.NDArray[np.float32],
        f: Filters,
        n: int,
        exclude: npt.NDArray[np.int64] | None = None,
        cosine: bool = False,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """The ``n`` best rows matching ``f`` for ``query`` ((k,) float32), best first.

        Scores are dot products (``cosine``: divided by the rows' and the query's norms). Rows
        without factors (cold items the content map did not cover) follow every scored row
        with score -inf; ``exclude`` rows never come back. Returns (rows, scores), each (m,),
        m = min(n, matching rows).

        A filter matching under ``FULL_PRODUCT_SHARE`` of the model's rows has its rows'
        factors gathered once into a contiguous block (kept within ``BLOCK_BUDGET``): one
        product with it, not a gather of scattered rows per request (12x less time at 200k
        items, one category of 20)."""
        rows, _ = self._matching(f)
        if not len(rows) or n <= 0:
            return rows[:0], np.zeros(0, dtype=np.float32)
        q = np.asarray(query, dtype=np.float32)
        split = int(np.searchsorted(rows, self.n_model))
        if split > FULL_PRODUCT_SHARE * self.n_model:
            model = (self.factors @ q)[rows[:split]]
        elif split:
            block = self._kept(
                f, "factors", lambda: np.ascontiguousarray(self.factors[rows[:split]])
            )
            model = block @ q
        else:
            model = np.zeros(0, dtype=np.float32)
        if split == len(rows):
            scores = model
        else:
            cold = rows[split:]
            part = self.cold[cold - self.n_model] @ q
            scores = np.concatenate([model, np.where(self.has_factors[cold], part, -np.inf)])
        keep = self._keep(rows, exclude)
        if keep is not None:
            rows, scores = rows[keep], scores[keep]
            if not len(rows):
                return rows, np.zeros(0, dtype=np.float32)
        if cosine:
            qn = float(np.linalg.norm(q)) or 1.0
            scores = np.where(np.isfinite(scores), scores / (self.norms[rows] * qn), scores)
        top = np.argpartition(-scores, n - 1)[:n] if len(rows) > n else np.arange(len(rows))
        # best first; ties (and the -inf tail) by row, so answers are repeatable
        order = top[np.lexsort((rows[top], -scores[top]))]
        return rows[order], scores[order].astype(np.float32)

    def popular(
        self, f: Filters, n: int, exclude: npt.NDArray[np.int64] | None = None
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """The ``n`` most popular rows matching ``f`` (``exclude`` left out) and their
        popularity (0 for cold items, which come after the model's, in catalog order). The
        filter's rows in popularity order are kept: a request reads the first n + |exclude|."""
        rows, _ = self._matching(f)
        if not len(rows) or n <= 0:
            return rows[:0], np.zeros(0, dtype=np.float32)
        by_rank = lambda: rows[np.argsort(self.pop_rank[rows], kind="stable")]  # noqa: E731
        order = self._kept(f, "popular", by_rank)
        ex = 0 if exclude is None else len(exclude)
        head = order[: n + ex]
        keep = self._keep(head, exclude)
        if keep is not None:
            head = head[keep]
        head = head[:n]
        return head, self.popularity[head]

    def factor(self, row: int) -> npt.NDArray[np.float32] | None:
        """(k,) float32 factor of ``row``, None for a cold row without one."""
        if row < self.n_model:
            return np.asarray(self.factors[row], dtype=np.float32)
        return self.cold[row - self.n_model] if self.has_factors[row] else None
