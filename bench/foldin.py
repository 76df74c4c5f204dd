"""Fold-in + top-N throughput: streamrec's batched solve vs implicit, same data, same run.

    python bench/foldin.py [--items 20000] [--factors 64] [--n 50] [--users 2000] [--batch 256]

Compares, with one BLAS thread each:
  * streamrec: ``FoldIn.solve`` + ``top_n`` over batches of ``--batch`` users (as the worker);
  * implicit one by one: ``recommend(u, row, N, recalculate_user=True)`` per user;
  * implicit batched: ``recommend(users, rows, N, recalculate_user=True)`` per batch.
Reports users/s for each, how many lists are identical to implicit's and their mean overlap.
Ends with one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
from _common import emit, machine_fields, machine_line
from implicit.cpu.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits

from streamrec.als.foldin import FoldIn
from streamrec.als.scorer import SCORE_ROWS
from streamrec.als.topn import top_n


def _histories(users: int, items: int, rng: np.random.Generator) -> sp.csr_matrix:
    # Zipf-ish item popularity, log-normal history lengths (median ~30): a realistic batch.
    pop = 1.0 / np.arange(1, items + 1) ** 0.8
    pop /= pop.sum()
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    for u in range(users):
        n = int(np.clip(rng.lognormal(3.4, 0.8), 1, 500))
        chosen = rng.choice(items, size=n, replace=False, p=pop)
        rows.extend([u] * n)
        cols.extend(chosen)
        vals.extend(np.log1p(rng.integers(1, 40, size=n)))
    return sp.csr_matrix((np.asarray(vals, np.float32), (rows, cols)), shape=(users, items))


def _best(fn: Callable[[], np.ndarray], repeat: int) -> tuple[np.ndarray, float]:
    """The result and the best wall time of ``repeat`` runs (after one warm-up)."""
    result = fn()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return result, best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--factors", type=int, default=64)
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--users", type=int, default=2_000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--regularization", type=float, default=1.0)
    ap.add_argument("--alpha", type=float, default=4.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per method; best is kept")
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    y = (rng.standard_normal((args.items, args.factors)) * 0.1).astype(np.float32)
    hist = _histories(args.users, args.items, rng)
    users = np.arange(args.users)

    with threadpool_limits(1, "blas"):
        als = AlternatingLeastSquares(
            factors=args.factors,
            regularization=args.regularization,
            alpha=args.alpha,
            num_threads=1,
        )
        als.item_factors = y
        als.user_factors = np.zeros((1, args.factors), np.float32)
        print(machine_line())
        print(
            f"settings: items={args.items} k={args.factors} N={args.n} users={args.users} "
            f"batch={args.batch} nnz/user={hist.nnz / args.users:.1f} λ={args.regularization} "
            f"alpha={args.alpha}"
        )

        fi = FoldIn.create(y, args.regularization)
        # As the worker's scorer: products over slices of SCORE_ROWS users, one reused buffer.
        scratch = np.empty((SCORE_ROWS, args.items), dtype=np.float32)
        batches = [hist[lo : lo + args.batch] for lo in range(0, args.users, args.batch)]

        def streamrec() -> np.ndarray:
            out = []
            for part in batches:
                ptr = part.indptr.astype(np.int64)
                idx = part.indices.astype(np.int64)
                vec = fi.solve(ptr, idx, (args.alpha * part.data).astype(np.float32))
                for lo in range(0, len(vec), SCORE_ROWS):
                    p = ptr[lo : lo + SCORE_ROWS + 1]
                    out.append(top_n(vec[lo : lo + SCORE_ROWS], y, args.n, p - p[0],
                                     idx[p[0] : p[-1]], out=scratch)[0])  # fmt: skip
            return np.vstack(out)

        def one_by_one() -> np.ndarray:
            return np.vstack(
                [als.recommend(int(u), hist[u], N=args.n, recalculate_user=True)[0] for u in users]
            )

        def implicit_batched() -> np.ndarray:
            return np.vstack(
                [
                    als.recommend(
                        users[lo : lo + args.batch], part, N=args.n, recalculate_user=True
                    )[0]
                    for lo, part in zip(range(0, args.users, args.batch), batches, strict=True)
                ]
            )

        mine, ours_s = _best(streamrec, args.repeat)
        one, one_s = _best(one_by_one, args.repeat)
        batched, batched_s = _best(implicit_batched, args.repeat)

    identical = float(np.mean([np.array_equal(a, b) for a, b in zip(mine, one, strict=True)]))
    overlap = float(
        np.mean([len(set(a) & set(b)) / args.n for a, b in zip(mine, one, strict=True)])
    )
    same_batched = float(np.mean([np.array_equal(a, b) for a, b in zip(one, batched, strict=True)]))
    figures = {
        "bench": "foldin",
        "items": args.items,
        "factors": args.factors,
        "n": args.n,
        "users": args.users,
        "batch": args.batch,
        "repeat": args.repeat,
        "streamrec_users_per_s": round(args.users / ours_s, 1),
        "implicit_one_by_one_users_per_s": round(args.users / one_s, 1),
        "implicit_batched_users_per_s": round(args.users / batched_s, 1),
        "speedup_vs_one_by_one": round(one_s / ours_s, 2),
        "speedup_vs_batched": round(batched_s / ours_s, 2),
        "identical_lists": identical,
        "mean_overlap": round(overlap, 4),
        "implicit_batched_identical_to_one_by_one": same_batched,
    }
    figures.update(machine_fields())
    print(f"streamrec batched : {figures['streamrec_users_per_s']:>10.1f} users/s")
    print(f"implicit 1-by-1   : {figures['implicit_one_by_one_users_per_s']:>10.1f} users/s")
    print(f"implicit batched  : {figures['implicit_batched_users_per_s']:>10.1f} users/s")
    print(f"identical lists {identical:.1%}, mean overlap {overlap:.1%}")
    emit(figures)


if __name__ == "__main__":
    main()
