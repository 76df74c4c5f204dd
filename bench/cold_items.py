"""What cold catalog items cost the worker's scoring: fold-in + top-N of a batch of users with
0 (the baseline, same run) and C cold items scored beside the model's own, and the cost of
mapping C items from their content.

    python bench/cold_items.py [--items 20000] [--factors 64] [--users 1000]
                               [--cold 0,100,1000,10000] [--runs 5]

One BLAS thread (as one worker core). Each case is run ``--runs`` times after a warm-up; every
run's users/s is printed and the median reported. Ends with one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import emit, machine_fields, machine_line
from threadpoolctl import threadpool_limits

from streamrec.als.content import fit_content_map
from streamrec.als.scorer import ColdItems, Scorer
from streamrec.artifact import load_model, write_model
from streamrec.catalog import Item


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--factors", type=int, default=64)
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--cold", default="0,100,1000,10000")
    ap.add_argument("--features", type=int, default=12)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    print(machine_line())
    print(f"settings: items={args.items} factors={args.factors} users={args.users} "
          f"cold={args.cold} features={args.features} runs={args.runs} top_n=50, "
          "1 BLAS thread")  # fmt: skip
    ids = [f"i{j}" for j in range(args.items)]
    y = (rng.normal(0, 0.1, (args.items, args.factors))).astype(np.float32)
    pop = rng.random(args.items).astype(np.float32)
    params = {"regularization": 0.1, "alpha": 2.0, "transform": "log", "factors": args.factors}
    lengths = np.clip(rng.lognormal(3.4, 0.8, args.users), 1, 500).astype(int)
    histories = {f"u{u}": {ids[j]: 2.0 for j in rng.choice(args.items, n, replace=False)}
                 for u, n in enumerate(lengths)}  # fmt: skip
    figures: dict[str, object] = {"bench": "cold_items", **machine_fields(), **vars(args)}
    with tempfile.TemporaryDirectory() as tmp, threadpool_limits(1):
        write_model(Path(tmp) / "m", ids, y, pop, params)
        base = Scorer.create(load_model(Path(tmp) / "m"))
        # A content map fitted on the trained items' made-up features (the cost does not
        # depend on how good it is).
        x = rng.normal(0, 1, (args.items, args.features))
        known = [Item(i, "", ("a",) if j % 2 else ("b",), None, True,
                      {f"f{c}": float(x[j, c]) for c in range(args.features)}, 1)
                 for j, i in enumerate(ids)]  # fmt: skip
        cmap = fit_content_map(known, y, 1.0)
        cases: dict[int, Scorer] = {}
        for c in (int(v) for v in args.cold.split(",")):
            new = [Item(f"new{j}", "", ("a",), None, True,
                        {f"f{k}": float(v) for k, v in enumerate(rng.normal(0, 1, args.features))},
                        1) for j in range(c)]  # fmt: skip
            t = time.perf_counter()
            cold = (ColdItems.create(base.encoder, [i.item_id for i in new], cmap.predict(new))
                    if c else None)  # fmt: skip
            figures[f"map_ms_cold_{c}"] = round((time.perf_counter() - t) * 1000, 2)
            cases[c] = base.with_(cold=cold)
            cases[c].score(histories)  # warm-up
        # Interleaved (one run of every case, then the next): load drifts hit all alike.
        rates: dict[int, list[float]] = {c: [] for c in cases}
        for _ in range(args.runs):
            for c, sc in cases.items():
                t = time.perf_counter()
                sc.score(histories)
                rates[c].append(args.users / (time.perf_counter() - t))
        for c, got in rates.items():
            med = statistics.median(got)
            runs = ", ".join(f"{r:,.0f}" for r in got)
            print(f"cold={c:>6}: users/s median {med:,.0f} (runs: {runs}); mapping {c} "
                  f"items {figures[f'map_ms_cold_{c}']} ms")  # fmt: skip
            figures[f"users_per_s_cold_{c}"] = round(med)
    emit(figures)


if __name__ == "__main__":
    main()
