"""Big catalogues: top-N by inner product at 200k and 1M items, against brute force, same run.

    python bench/bigcatalog.py [--items 200000,1000000] [--sources trained,random]
        [--queries 2000] [--candidates] [--e2e]

One core: OpenMP and BLAS are pinned to one thread, and so is every library's own setting.
For each catalogue size and factor source it prints, against the exact brute force
(``streamrec.als.topn.top_n``, 64 users per product as the worker's ``Scorer`` runs it):

* lists: ``streamrec.als.ann.NormIndex`` (what the worker uses above
  ``STREAMREC_ANN_MIN_ITEMS``): users/s, recall@50 of the final lists (history excluded)
  against brute force, build time, stored size, the memory it adds;
* similar items: ``IvfIndex`` over unit rows (what the publisher uses): items/s, recall@20
  against exact cosine, build time (on every core, as the nightly job builds it), size;
* ``--candidates``: the libraries side by side on raw top-50 (no exclusions): faiss HNSW (inner
  product, and L2 over augmented rows), hnswlib (ip), usearch (ip), faiss IVF-Flat (augmented),
  with their build time, size and a sweep of their search knob;
* ``--e2e``: ``bench/e2e.py``'s throughput phase (its own topics, a real worker process) with a
  trained model of 20k items and one of the largest size: events/s and the worker's peak RSS.

Factors: ``trained`` are fitted by ``implicit`` at the project's settings (``Params()``: 64
factors, 15 iterations) on a generated log (genres, Zipf item popularity, ~30 plays per user;
``--users`` users), cached under ``--cache``; the query users are trained users, their training
items excluded. ``random``: Gaussian factors, the hard case (norms do not spread). Ends with one
JSON line.
"""

from __future__ import annotations

# ruff: noqa: E402 (the thread pins must precede numpy and faiss)
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy and faiss load: one core

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from _common import MIB, emit, machine_fields, machine_line, peak_rss_bytes, rss_bytes
from threadpoolctl import threadpool_limits

from streamrec.als.ann import IvfIndex, NormIndex, rerank
from streamrec.als.similar import neighbours, unit_rows
from streamrec.als.topn import top_n
from streamrec.feedback import confidence
from streamrec.settings import load_settings

N = 50
SIMILAR_N = 20
BATCH = 64  # the worker's score slice (Scorer.score_rows), for brute force
#: Users per ``NormIndex.top_n`` call: the worker passes it a whole batch's users at once.
INDEX_BATCH = 256


def generated(
    n_users: int, n_items: int, seed: int = 7, genres: int = 50, mean_len: float = 30.0
) -> sp.csr_matrix:
    """A listening log as a (users x items) confidence CSR, as ``model.data.synthetic`` draws it
    (genres, Zipf-like popularity, 1-3 liked genres per user, 15 % from the global charts,
    heavy-tailed play counts, log confidence), vectorised for millions of rows."""
    rng = np.random.default_rng(seed)
    genre = rng.integers(0, genres, size=n_items)
    pop = (1.0 / np.arange(1, n_items + 1) ** 0.9)[rng.permutation(n_items)]
    order = np.argsort(genre, kind="stable")
    bounds = np.searchsorted(genre[order], np.arange(genres + 1))
    cdfs = [np.cumsum(pop[order[bounds[g] : bounds[g + 1]]]) for g in range(genres)]
    glob = np.cumsum(pop)
    lens = np.clip(rng.lognormal(np.log(mean_len) - 0.245, 0.7, n_users).astype(np.int64), 5, 300)
    owner = np.repeat(np.arange(n_users), lens)
    nnz = len(owner)
    likes = rng.integers(0, genres, size=(n_users, 3))
    n_likes = rng.integers(1, 4, size=n_users)
    pick = likes[owner, (rng.random(nnz) * n_likes[owner]).astype(np.int64)]
    u = rng.random(nnz)
    items = np.empty(nnz, np.int64)
    charts = rng.random(nnz) < 0.15
    at = np.flatnonzero(charts)
    items[at] = np.minimum(np.searchsorted(glob, u[at] * glob[-1]), n_items - 1)
    rest = np.flatnonzero(~charts)
    for g in range(genres):
        sel = rest[pick[rest] == g]
        c = cdfs[g]
        items[sel] = order[bounds[g] + np.minimum(np.searchsorted(c, u[sel] * c[-1]), len(c) - 1)]
    plays = np.ceil(rng.pareto(1.5, size=nnz) * 3) + 1
    m = sp.csr_matrix((plays, (owner, items)), shape=(n_users, n_items))
    m.sum_duplicates()
    m.data = confidence(m.data, "log")
    return m.astype(np.float32)


def trained(n_items: int, n_users: int, queries: int, cache: Path) -> dict[str, Any]:
    """Item factors, query users' factors and their histories (CSR), fitted or from cache."""
    path = cache / f"trained-{n_items}-{n_users}.npz"
    if not path.exists():
        from streamrec.model.data import Matrix
        from streamrec.model.params import Params
        from streamrec.model.train import fit

        m = generated(n_users, n_items)
        t = time.perf_counter()
        with threadpool_limits(None):
            als = fit(
                Matrix(m, tuple(map(str, range(n_users))), tuple(map(str, range(n_items)))),
                Params(),
            )
        fit_s = time.perf_counter() - t
        q = m[:queries]
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(
            path,
            items=als.item_factors,
            users=als.user_factors[:queries],
            indptr=q.indptr,
            indices=q.indices,
            nnz=m.nnz,
            fit_s=fit_s,
        )
    z = np.load(path, allow_pickle=False)
    return {
        "items": np.ascontiguousarray(z["items"], dtype=np.float32),
        "users": np.ascontiguousarray(z["users"][:queries], dtype=np.float32),
        "indptr": z["indptr"][: queries + 1].astype(np.int64),
        "indices": z["indices"][: z["indptr"][queries]].astype(np.int64),
        "what": f"implicit ALS (Params()), {n_users} users, {int(z['nnz'])} entries, "
        f"fit {float(z['fit_s']):.0f} s",
    }


def random_factors(n_items: int, queries: int, seed: int = 1) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    hist = [np.unique(rng.integers(0, n_items, 30)) for _ in range(queries)]
    return {
        "items": (rng.standard_normal((n_items, 64)) / 8).astype(np.float32),
        "users": (rng.standard_normal((queries, 64)) / 8).astype(np.float32),
        "indptr": np.concatenate([[0], np.cumsum([len(h) for h in hist])]).astype(np.int64),
        "indices": np.concatenate(hist).astype(np.int64),
        "what": "Gaussian N(0, 1/64) factors, 30 random history items per user",
    }


def slices(b: int, size: int) -> list[tuple[int, int]]:
    return [(lo, min(b, lo + size)) for lo in range(0, b, size)]


def ranked(
    fn: Any, users: np.ndarray, ptr: np.ndarray, idx: np.ndarray, batch: int = BATCH
) -> np.ndarray:
    """``fn(u, n, ptr, idx)`` over ``batch``-user slices -> (B, N) items."""
    out = []
    for lo, hi in slices(len(users), batch):
        p = ptr[lo : hi + 1]
        out.append(fn(users[lo:hi], N, p - p[0], idx[p[0] : p[-1]])[0])
    return np.vstack(out)


def recall(got: np.ndarray, want: np.ndarray) -> float:
    hits = [
        len(set(g[g >= 0].tolist()) & set(w[w >= 0].tolist()))
        for g, w in zip(got, want, strict=True)
    ]
    return float(np.sum(hits) / max(1, int((want >= 0).sum())))


def timed(fn: Any, repeat: int) -> tuple[Any, list[float]]:
    runs, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        runs.append(time.perf_counter() - t)
    return out, runs


def lists(d: dict[str, Any], repeat: int) -> dict[str, Any]:
    y, u, ptr, idx = d["items"], d["users"], d["indptr"], d["indices"]
    buf = np.empty((BATCH, len(y)), np.float32)

    def exact_fn(q: Any, n: int, p: Any, i: Any) -> Any:
        return top_n(q, y, n, p, i, out=buf)

    # Brute force is slow at 1M: a quarter of the users, enough for the rate and the truth.
    sub = max(BATCH, len(u) // 4)
    truth, exact_runs = timed(lambda: ranked(exact_fn, u[:sub], ptr[: sub + 1], idx), repeat)
    gc.collect()
    before = rss_bytes()
    t = time.perf_counter()
    index = NormIndex.build(y)
    build_s = time.perf_counter() - t
    added = rss_bytes() - before
    got, runs = timed(lambda: ranked(index.top_n, u, ptr, idx, INDEX_BATCH), repeat)
    calls = max(1, index.stats.searched)
    with tempfile.TemporaryDirectory() as tmp:
        index.save(Path(tmp) / "order.npy")
        size = (Path(tmp) / "order.npy").stat().st_size
    return {
        "exact_users_per_s": [round(sub / r) for r in exact_runs],
        "users_per_s": [round(len(u) / r) for r in runs],
        "recall@50": round(recall(got[:sub], truth), 4),
        "build_s": round(build_s, 2),
        "index_mb": round(size / MIB, 1),
        "index_rss_mb": round(added / MIB, 1),
        # Of the users searched: the share handed to brute force, rows the scan scored each.
        "to_brute": round(getattr(index.stats, "exact", 0) / calls, 3),
        "rows_per_user": round(getattr(index.stats, "scanned", 0) / calls),
    }


def similar(d: dict[str, Any], nprobe: int, overfetch: int, queries: int) -> dict[str, Any]:
    y = d["items"]
    unit = unit_rows(y)
    # Queries are items the model learned: a row of zeros (an item no training user touched,
    # 12 % of the generated 1M catalogue) has cosine 0 with every item, so its "exact top 20"
    # is an arbitrary tie and no index can recall it (it was the whole shortfall, 0.855).
    learned = np.flatnonzero(np.any(y != 0, axis=1))
    rows = np.random.default_rng(2).choice(learned, queries, replace=False).astype(np.int64)
    want = np.vstack(
        [neighbours(unit, rows[lo:hi], SIMILAR_N)[0] for lo, hi in slices(len(rows), BATCH)]
    )
    t = time.perf_counter()
    index = IvfIndex.build(unit, nprobe=nprobe)  # every core, as the publisher builds it
    build_s = time.perf_counter() - t
    out: dict[str, Any] = {
        "build_s": round(build_s, 1),
        "nlist": index.info["nlist"],
        "zero_rows": len(y) - len(learned),
        "curve": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        index.save(Path(tmp) / "ivf")
        out["index_mb"] = round((Path(tmp) / "ivf").stat().st_size / MIB, 1)
    for probe in sorted({max(1, nprobe // 4), max(1, nprobe // 2), nprobe, 2 * nprobe}):
        index.index.nprobe = probe
        t = time.perf_counter()
        got, shorts = [], 0
        for lo, hi in slices(len(rows), 1024):
            ptr = np.arange(hi - lo + 1, dtype=np.int64)
            items, _, short = rerank(
                index, unit, unit[rows[lo:hi]], SIMILAR_N, overfetch, ptr, rows[lo:hi]
            )
            got.append(items)
            shorts += int(short.sum())
        dt = time.perf_counter() - t
        out["curve"].append(
            {
                "nprobe": probe,
                "items_per_s": round(len(rows) / dt),
                "recall@20": round(recall(np.vstack(got), want), 4),
                "short": shorts,
            }
        )
    return out


def candidates(d: dict[str, Any], build_threads: int) -> list[dict[str, Any]]:
    """The libraries side by side on raw top-50 (no exclusions), one search thread."""
    import faiss
    import hnswlib
    from usearch.index import Index as UIndex

    from streamrec.als.ann import augment

    y, u = d["items"], d["users"][:1000]
    truth = np.vstack([top_n(u[lo:hi], y, N)[0] for lo, hi in slices(len(u), BATCH)])
    x, _ = augment(y)
    qx = np.hstack([u, np.zeros((len(u), 1), np.float32)])
    results = []

    def report(name: str, cfg: str, build_s: float, size: int, curve: list[Any]) -> None:
        row = {
            "library": name,
            "config": cfg,
            "build_s": round(build_s, 1),
            "index_mb": round(size / MIB, 1),
            "curve": curve,
        }
        print(
            f"  {name} {cfg}: build {build_s:.1f} s ({build_threads} threads), "
            f"{size / MIB:.0f} MiB; "
            + ", ".join(
                f"{c['knob']}={c['value']}: {c['users_per_s']}/s recall {c['recall@50']:.3f}"
                for c in curve
            )
        )
        sys.stdout.flush()
        results.append(row)

    def size_of(save: Any) -> int:
        with tempfile.TemporaryDirectory() as tmp:
            save(os.path.join(tmp, "x"))
            return os.path.getsize(os.path.join(tmp, "x"))

    def sweep(knob: str, values: list[int], set_: Any, search: Any) -> list[dict[str, Any]]:
        curve = []
        for v in values:
            set_(v)
            t = time.perf_counter()
            got = search()
            curve.append(
                {
                    "knob": knob,
                    "value": v,
                    "users_per_s": round(len(u) / (time.perf_counter() - t)),
                    "recall@50": round(recall(got.astype(np.int64), truth), 4),
                }
            )
        return curve

    efs = [50, 100, 200, 400]
    for metric in ("ip", "l2-augmented"):
        faiss.omp_set_num_threads(build_threads)
        t = time.perf_counter()
        if metric == "ip":
            h = faiss.IndexHNSWFlat(64, 32, faiss.METRIC_INNER_PRODUCT)
            data, q = y, u
        else:
            h = faiss.IndexHNSWFlat(65, 32)
            data, q = x, qx
        h.hnsw.efConstruction = 100
        h.add(data)
        b = time.perf_counter() - t
        faiss.omp_set_num_threads(1)
        curve = sweep(
            "efSearch",
            efs,
            lambda v, h=h: setattr(h.hnsw, "efSearch", v),
            lambda h=h, q=q: h.search(q, N)[1],
        )
        report(
            "faiss HNSW",
            f"M=32 efConstruction=100 {metric}",
            b,
            size_of(lambda p, h=h: faiss.write_index(h, p)),
            curve,
        )
    t = time.perf_counter()
    hl = hnswlib.Index(space="ip", dim=64)
    hl.init_index(len(y), M=16, ef_construction=100, random_seed=0)
    hl.set_num_threads(build_threads)
    hl.add_items(y)
    b = time.perf_counter() - t
    hl.set_num_threads(1)
    curve = sweep(
        "ef", efs, lambda v: hl.set_ef(max(v, N)), lambda: hl.knn_query(u, k=N, num_threads=1)[0]
    )
    report("hnswlib", "M=16 ef_construction=100 ip", b, size_of(hl.save_index), curve)
    t = time.perf_counter()
    us = UIndex(ndim=64, metric="ip", dtype="f32", connectivity=16, expansion_add=100)
    us.add(np.arange(len(y)), y, threads=build_threads)
    b = time.perf_counter() - t
    curve = sweep(
        "expansion_search",
        efs,
        lambda v: setattr(us, "expansion_search", v),
        lambda: us.search(u, N, threads=1).keys,
    )
    report("usearch", "connectivity=16 expansion_add=100 ip f32", b, size_of(us.save), curve)
    t = time.perf_counter()
    ivf = IvfIndex.build(y, threads=build_threads)
    b = time.perf_counter() - t
    curve = sweep(
        "nprobe", [16, 64, 256], lambda v: setattr(ivf.index, "nprobe", v), lambda: ivf.search(u, N)
    )
    report("faiss IVF-Flat", f"nlist={ivf.info['nlist']} l2-augmented", b, size_of(ivf.save), curve)
    return results


def e2e_run(d: dict[str, Any], n_items: int, events: int) -> dict[str, Any]:
    """``bench/e2e.py``'s throughput phase with a model of these trained factors."""
    import e2e

    from streamrec.als.ann import build_for
    from streamrec.artifact import write_model

    def make_model(out: Path, items: int, factors: int, seed: int) -> tuple[list[str], Any]:
        y = d["items"]
        ids = [f"item-{i:07d}" for i in range(len(y))]
        pop = np.asarray(np.linalg.norm(y, axis=1), dtype=np.float32)
        params = {
            "factors": 64,
            "regularization": 0.5,
            "alpha": 4.0,
            "iterations": 15,
            "transform": "log",
            "seed": 0,
        }
        index = build_for(y, load_settings()) if len(y) >= load_settings().ann_min_items else None
        write_model(out, ids, y, pop, params, index=index)
        # Events name items by popularity as the trained model sees it (the longest rows).
        order = np.argsort(-pop, kind="stable")
        return [ids[i] for i in order], pop[order]

    vars(e2e)["make_model"] = make_model  # its main() calls it by name
    captured: list[dict[str, Any]] = []
    vars(e2e)["emit"] = captured.append
    argv = sys.argv
    sys.argv = ["e2e.py", "--items", str(n_items), "--events", str(events), "--skip-latency"]
    try:
        e2e.main()
    finally:
        sys.argv = argv
    return captured[-1] if captured else {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", default="200000,1000000")
    ap.add_argument("--sources", default="trained,random")
    ap.add_argument("--users", type=int, default=300_000, help="trained: users in the log")
    ap.add_argument("--queries", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--similar-queries", type=int, default=2000)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "streamrec-bigcat")
    ap.add_argument("--candidates", action="store_true", help="the libraries side by side")
    ap.add_argument("--build-threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--e2e", action="store_true", help="worker end to end, 20k vs the largest")
    ap.add_argument("--e2e-events", type=int, default=100_000)
    ap.add_argument("--e2e-only", action="store_true", help="only the end-to-end runs")
    ap.add_argument("--skip-similar", action="store_true", help="no similar-items figures")
    args = ap.parse_args()
    s = load_settings()
    sizes = [int(x) for x in args.items.split(",")]
    print(machine_line())
    print(
        f"settings: N={N} k=64 batch={BATCH} (index {INDEX_BATCH}) queries={args.queries} "
        f"repeat={args.repeat} "
        f"similar N={SIMILAR_N} nprobe={s.ann_nprobe} overfetch={s.ann_overfetch} "
        f"search threads 1 (OMP/BLAS/library), build threads {args.build_threads}"
    )
    figures: dict[str, Any] = {**machine_fields(), "bench": "bigcatalog", "results": []}
    for n_items in [] if args.e2e_only else sizes:
        for source in args.sources.split(","):
            d = (
                trained(n_items, args.users, args.queries, args.cache)
                if source == "trained"
                else random_factors(n_items, args.queries)
            )
            print(f"\n{n_items} items, {source} factors: {d['what']}")
            with threadpool_limits(1):
                row: dict[str, Any] = {"items": n_items, "source": source, "data": d["what"]}
                row["lists"] = lt = lists(d, args.repeat)
                print(
                    f"  lists, brute force: {lt['exact_users_per_s']} users/s; norm index: "
                    f"{lt['users_per_s']} users/s, recall@50 {lt['recall@50']}, built in "
                    f"{lt['build_s']} s, stored {lt['index_mb']} MiB, +{lt['index_rss_mb']} MiB "
                    f"RSS; {lt['to_brute']} of users to brute force, "
                    f"{lt['rows_per_user']} rows scanned per user"
                )
            if not args.skip_similar:
                row["similar"] = sm = similar(
                    d, s.ann_nprobe, s.ann_overfetch, args.similar_queries
                )
                print(
                    f"  similar items, IVF over unit rows (nlist {sm['nlist']}, built in "
                    f"{sm['build_s']} s on {os.cpu_count()} threads, {sm['index_mb']} MiB; "
                    f"queries from the {n_items - sm['zero_rows']} learned items, "
                    f"{sm['zero_rows']} zero rows apart): "
                    + ", ".join(
                        f"nprobe {c['nprobe']}: {c['items_per_s']} items/s recall@20 "
                        f"{c['recall@20']} short {c['short']}"
                        for c in sm["curve"]
                    )
                )
            if args.candidates:
                print("  candidates, raw top-50 (no exclusions), 1 search thread:")
                row["candidates"] = candidates(d, args.build_threads)
            print(
                f"  process RSS now {rss_bytes() / MIB:.0f} MiB, "
                f"peak {peak_rss_bytes() / MIB:.0f} MiB"
            )
            sys.stdout.flush()
            figures["results"].append(row)
            del d
            gc.collect()
    if args.e2e or args.e2e_only:
        small = trained(20_000, 20_000, args.queries, args.cache)
        big = trained(sizes[-1], args.users, args.queries, args.cache)
        figures["e2e"] = {}
        for n_items, d in ((20_000, small), (sizes[-1], big)):
            print(f"\nend to end with a trained model of {n_items} items:")
            figures["e2e"][str(n_items)] = e2e_run(d, n_items, args.e2e_events)
    emit(figures)


if __name__ == "__main__":
    main()
