"""Top-N kernels: score every item for a batch of users and keep the best N, five ways.

    python bench/topn_kernels.py [--batch 256] [--items 20000] [--factors 64] [--n 50]

Same user and item vectors for each, one BLAS thread (threadpoolctl; faiss with one OpenMP
thread), no exclusions (the pure score-and-select step):

  * worker: ``streamrec.als.topn.top_n`` as it is in this checkout (and, when it takes ``out=``,
    with a reused score buffer as the scorer passes it);
  * numpy, preallocated: ``np.matmul(U, Y.T, out=buf)`` into one reused buffer, then
    ``argpartition`` of every row and a sort of the N (the original worker's selection);
  * numpy, chunked: the batch in chunks of ``--chunk`` users through one small reused buffer
    (scores and ``argpartition``'s index array stay in cache);
  * numpy, threshold: the same buffer, then ``np.partition`` (values only) for each row's N-th
    score and ``buf >= threshold`` to find the N (rows with ties at the threshold fall back to
    ``argpartition``);
  * faiss: ``IndexFlatIP`` exact inner-product search (when faiss-cpu is installed).

Kernels take turns batch by batch (so drift on a shared machine hits all alike). Checks that
every variant returns the worker's lists (exactly, or the same up to ties: equal scores at the
positions that differ) and reports users/s (median batch) and minor page faults per batch.
Ends with one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import inspect
import resource
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
from _common import emit, machine_fields, machine_line
from threadpoolctl import threadpool_limits

from streamrec.als.topn import top_n

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
Kernel = Callable[[F32], tuple[I64, F32]]


def sort_part(scores: F32, part: I64) -> tuple[I64, F32]:
    """Order each row's selected ``part`` best first (stable, as ``top_n``)."""
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(vals, order, axis=1)


def numpy_prealloc(y: F32, batch: int, n: int) -> Kernel:
    buf = np.empty((batch, y.shape[0]), dtype=np.float32)
    yt = y.T
    n_items = y.shape[0]

    def run(u: F32) -> tuple[I64, F32]:
        out = buf[: len(u)]
        np.matmul(u, yt, out=out)
        part = np.argpartition(out, n_items - n, axis=1)[:, n_items - n :]
        return sort_part(out, part)

    return run


def numpy_chunked(y: F32, chunk: int, n: int) -> Kernel:
    buf = np.empty((chunk, y.shape[0]), dtype=np.float32)
    yt = y.T
    n_items = y.shape[0]

    def run(u: F32) -> tuple[I64, F32]:
        items, scores = [], []
        for lo in range(0, len(u), chunk):
            out = buf[: len(u[lo : lo + chunk])]
            np.matmul(u[lo : lo + chunk], yt, out=out)
            part = np.argpartition(out, n_items - n, axis=1)[:, n_items - n :]
            i, s = sort_part(out, part)
            items.append(i)
            scores.append(s)
        return np.vstack(items), np.vstack(scores)

    return run


def numpy_threshold(y: F32, batch: int, n: int) -> Kernel:
    buf = np.empty((batch, y.shape[0]), dtype=np.float32)
    yt = y.T
    n_items = y.shape[0]

    def run(u: F32) -> tuple[I64, F32]:
        out = buf[: len(u)]
        np.matmul(u, yt, out=out)
        thr = np.partition(out, n_items - n, axis=1)[:, n_items - n]
        rows, cols = np.nonzero(out >= thr[:, None])
        counts = np.bincount(rows, minlength=len(u))
        if (counts == n).all():
            part = cols.reshape(len(u), n)
        else:  # ties at the threshold: those rows the slow way
            part = np.empty((len(u), n), dtype=np.int64)
            starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
            for r in range(len(u)):
                c = cols[starts[r] : starts[r] + counts[r]]
                if counts[r] == n:
                    part[r] = c
                else:
                    part[r] = np.argpartition(out[r], n_items - n)[n_items - n :]
        return sort_part(out, part.astype(np.int64))

    return run


def faiss_kernel(y: F32, n: int) -> Kernel | None:
    try:
        import faiss
    except ImportError:
        return None
    faiss.omp_set_num_threads(1)
    index = faiss.IndexFlatIP(y.shape[1])
    index.add(np.ascontiguousarray(y))

    def run(u: F32) -> tuple[I64, F32]:
        d, i = index.search(np.ascontiguousarray(u), n)
        return i.astype(np.int64), d

    return run


def compare(ref: I64, got: I64, u: F32, y: F32) -> tuple[float, float]:
    """(fraction identical, fraction identical up to ties) of ``got``'s lists vs ``ref``'s."""
    same = (ref == got).all(axis=1)
    tie_ok = same.copy()
    for r in np.flatnonzero(~same):
        a = y[ref[r]].astype(np.float64) @ u[r].astype(np.float64)
        b = y[got[r]].astype(np.float64) @ u[r].astype(np.float64)
        # Same scores position by position (float32 rounding of near-equal items aside).
        tie_ok[r] = bool(np.allclose(a, b, rtol=1e-5, atol=1e-6 * float(np.abs(a).max())))
    return float(same.mean()), float(tie_ok.mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256, help="users per call")
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--factors", type=int, default=64)
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--batches", type=int, default=40, help="timed batches per kernel")
    ap.add_argument("--chunk", type=int, default=64, help="users per chunk (chunked variant)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    y = (rng.standard_normal((args.items, args.factors)) * 0.1).astype(np.float32)
    users = [
        rng.standard_normal((args.batch, args.factors)).astype(np.float32)
        for _ in range(args.batches)
    ]
    fk = faiss_kernel(y, args.n)  # before threadpool_limits, so its BLAS is limited too

    kernels: dict[str, Kernel] = {"worker top_n": lambda u: top_n(u, y, args.n)}
    if "out" in inspect.signature(top_n).parameters:
        scratch = np.empty((args.batch, args.items), dtype=np.float32)
        top_n_any: Any = top_n  # ``out=`` is newer than the stable signature
        kernels["worker top_n, out=buffer"] = lambda u: top_n_any(u, y, args.n, out=scratch)
    kernels |= {
        "numpy prealloc + argpartition": numpy_prealloc(y, args.batch, args.n),
        f"numpy chunks of {args.chunk}": numpy_chunked(y, args.chunk, args.n),
        "numpy prealloc + threshold": numpy_threshold(y, args.batch, args.n),
    }
    if fk is not None:
        kernels["faiss IndexFlatIP"] = fk

    with threadpool_limits(1, "blas"):
        print(machine_line())
        faiss_note = "faiss " + (
            __import__("faiss").__version__ if fk is not None else "skipped: pip install faiss-cpu"
        )
        print(f"settings: batch={args.batch} items={args.items} k={args.factors} N={args.n} "
              f"batches={args.batches}; {faiss_note}")  # fmt: skip
        buf = np.empty((args.batch, args.items), dtype=np.float32)
        mm = []
        for u in users:
            t = time.perf_counter()
            np.matmul(u, y.T, out=buf)
            mm.append(time.perf_counter() - t)
        matmul_s = float(np.median(mm))
        for fn in kernels.values():
            fn(users[0])  # warm-up
        times: dict[str, list[float]] = {name: [] for name in kernels}
        faults: dict[str, list[int]] = {name: [] for name in kernels}
        out: dict[str, list[I64]] = {name: [] for name in kernels}
        names = list(kernels)
        for b, u in enumerate(users):
            for name in names[b % len(names) :] + names[: b % len(names)]:
                f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                t = time.perf_counter()
                items, _scores = kernels[name](u)
                times[name].append(time.perf_counter() - t)
                faults[name].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
                out[name].append(items)
        results = {
            name: (float(np.median(times[name])), np.vstack(out[name]),
                   float(np.median(faults[name])))
            for name in names
        }  # fmt: skip

    ref = results["worker top_n"][1]
    u_all = np.vstack(users)
    fig: dict[str, Any] = {}
    print(f"{'matmul only (prealloc)':<31}: {args.batch / matmul_s:>10,.0f} users/s")
    for name, (sec, items, flt) in results.items():
        same, ties = compare(ref, items, u_all, y)
        print(f"{name:<31}: {args.batch / sec:>10,.0f} users/s  ({sec * 1e3:6.2f} ms/batch, "
              f"{flt:>6.0f} page faults; identical {same:.1%}, up to ties {ties:.1%})")  # fmt: skip
        fig[name] = {"users_per_s": round(args.batch / sec), "identical": same, "up_to_ties": ties,
                     "faults": flt}  # fmt: skip
    fastest = max(fig, key=lambda k: fig[k]["users_per_s"])
    base = fig["worker top_n"]["users_per_s"]
    print(f"fastest: {fastest} ({fig[fastest]['users_per_s'] / base:.2f}x the worker's top_n)")
    keys = {
        "worker top_n": "worker_top_n",
        "worker top_n, out=buffer": "worker_top_n_out",
        "numpy prealloc + argpartition": "numpy_prealloc",
        f"numpy chunks of {args.chunk}": "numpy_chunked",
        "numpy prealloc + threshold": "numpy_threshold",
        "faiss IndexFlatIP": "faiss_flat_ip",
    }
    figures: dict[str, Any] = {
        "bench": "topn_kernels", **machine_fields(), "batch": args.batch, "items": args.items,
        "factors": args.factors, "n": args.n,
        "chunk": args.chunk, "matmul_only_users_per_s": round(args.batch / matmul_s),
    }  # fmt: skip
    for name, key in keys.items():
        f = fig.get(name)
        figures[f"{key}_users_per_s"] = f["users_per_s"] if f else None
        figures[f"{key}_identical"] = round(f["identical"], 4) if f else None
        figures[f"{key}_up_to_ties"] = round(f["up_to_ties"], 4) if f else None
        figures[f"{key}_page_faults"] = round(f["faults"]) if f else None
    figures["fastest"] = keys[fastest]
    figures["fastest_vs_worker"] = round(fig[fastest]["users_per_s"] / base, 2)
    emit(figures)


if __name__ == "__main__":
    main()
