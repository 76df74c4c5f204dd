"""The worker's ``Scorer`` over many users at once, for the publisher and the evaluation.

Histories come as rows of a totals CSR (users x items) instead of the worker's dicts, and
chunks of users are scored on ``THREADS`` threads (numpy's products and solves run outside the
GIL), each thread with its own copy of the score buffer; results come back in order.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from streamrec.als.scorer import Scored, Scorer

#: Threads scoring chunks of users (both cores of the reference machine).
THREADS = 2
T = TypeVar("T")


def score_csr(
    sc: Scorer,
    m: sp.csr_matrix,
    part_rows: Sequence[int] | npt.NDArray[np.int64],
    user_ids: Sequence[str],
    column_rows: npt.NDArray[np.int64],
) -> Scored:
    """``sc.score`` (with ``sc``'s ``n``, ``history_max`` and ``blocked``) for rows
    ``part_rows`` of the totals matrix ``m`` (n_users, n_cols) float, whose column ``c`` is
    model row ``column_rows[c]`` ((n_cols,) int64; -1: unknown to the model); the histories in
    CSR order, as ``Scorer.score`` reads a dict built from the same row."""
    sub = m[np.asarray(part_rows, dtype=np.int64)]
    users = [user_ids[r] for r in np.asarray(part_rows).tolist()]
    return sc.score_flat(users, np.diff(sub.indptr).astype(np.int64), column_rows[sub.indices],
                         sub.data.astype(np.float64))  # fmt: skip


def ordered(
    pool: ThreadPoolExecutor, fn: Callable[[Any], T], args: Iterable[Any], ahead: int
) -> Iterator[T]:
    """``map(fn, args)`` on ``pool``, in order, at most ``ahead`` results computed ahead."""
    pending: deque[Future[T]] = deque()
    for arg in args:
        pending.append(pool.submit(fn, arg))
        if len(pending) > ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def scored_in_order(
    scorer: Scorer,
    fn: Callable[[Scorer, Any], T],
    args: Iterable[Any],
    threads: int = THREADS,
) -> Iterator[T]:
    """``fn(scorer, arg)`` for every arg, on ``threads`` threads, in order. Each thread gets
    a copy of ``scorer`` sharing the model and its knobs but with its own score buffer; BLAS
    runs one thread per caller so the threads do not oversubscribe the cores."""
    local = threading.local()

    def run(arg: Any) -> T:
        own = getattr(local, "scorer", None)
        if own is None:
            own = local.scorer = replace(scorer, buffers={})
        return fn(own, arg)

    with ThreadPoolExecutor(threads) as pool, threadpool_limits(1, "blas"):
        yield from ordered(pool, run, args, 2 * threads)
