"""Worker memory vs the item factors' size, and sharing of memory-mapped factors.

    python bench/memory.py [--items 20000,200000] [--factors 64] [--users 1000]

For each catalogue size a random-factor model is written, then a fresh process (as a worker does)
imports the worker, loads the model (factors memory-mapped), builds ``streamrec.als.scorer.Scorer``
and runs one ``recommend`` for ``--users`` users (the users one poll of ``batch_max`` events can
touch). It reports RSS after each step, the peak (VmHWM), anonymous vs file-backed RSS, and whether
RSS <= factors + 250 MB (the issue's target), for the steady state and the peak. For the largest
size a second process loads the same model at the same time and both report PSS and shared pages of
the factor file (``/proc/<pid>/smaps``): the page cache holds one copy for both. Ends with one JSON
line of the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import (
    MIB,
    emit,
    machine_fields,
    machine_line,
    proc_status,
    smaps_for_file,
    smaps_rollup,
)

TARGET_OVERHEAD_MB = 250
READY = "READY "


def make_model(out: Path, items: int, factors: int, seed: int) -> Path:
    from streamrec.artifact import write_model

    rng = np.random.default_rng(seed)
    y = (rng.standard_normal((items, factors)) * 0.1).astype(np.float32)
    pop = (1000.0 / np.arange(1, items + 1) ** 0.8).astype(np.float32)
    params = {"factors": factors, "regularization": 1.0, "alpha": 4.0, "iterations": 0,
              "transform": "log", "seed": seed}  # fmt: skip
    write_model(out, [f"item-{i:07d}" for i in range(items)], y, pop, params)
    return out


def child(model_dir: Path, users: int, seed: int, wait_s: float) -> None:
    """One worker-like process: report RSS step by step, then wait for the parent's word."""
    steps: dict[str, dict[str, int]] = {}

    def mark(name: str) -> None:
        st = proc_status()
        steps[name] = {k: st.get(k, 0) for k in ("VmRSS", "VmHWM", "RssAnon", "RssFile")}

    mark("start")
    with contextlib.suppress(Exception):  # mid-rewrite: the scorer alone still tells the story
        import streamrec.worker.loop  # noqa: F401  (what the worker process imports)
    from streamrec.als.scorer import Scorer
    from streamrec.artifact import load_model

    mark("imports")
    model = load_model(model_dir)
    mark("load_model")
    scorer = Scorer.create(model)
    mark("scorer")
    rng = np.random.default_rng(seed)
    pop = np.asarray(model.item_popularity, dtype=np.float64)
    pop /= pop.sum()
    histories: dict[str, dict[str, float]] = {}
    for u in range(users):
        n = int(np.clip(rng.lognormal(3.4, 0.8), 1, 500))
        chosen = rng.choice(model.n_items, size=n, replace=False, p=pop)
        histories[f"user-{u}"] = {model.item_ids[i]: float(rng.integers(1, 20)) for i in chosen}
    mark("histories")
    t = time.perf_counter()
    result = scorer.with_(n=50, history_max=500).recommend(histories)
    seconds = time.perf_counter() - t
    lists = result[0]
    mark("recommend")
    out = {
        "steps": steps,
        "recommend_s": seconds,
        "lists": len(lists),
        "factors_bytes": int(np.asarray(model.item_factors).nbytes),
    }
    print(READY + json.dumps(out), flush=True)
    select.select([sys.stdin], [], [], wait_s)  # the parent reads /proc, then says go


def start_child(model_dir: Path, users: int, seed: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, "--child", str(model_dir), "--users", str(users),
         "--seed", str(seed)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip


def wait_ready(proc: subprocess.Popen[str], timeout_s: float) -> dict[str, Any]:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith(READY):
            return dict(json.loads(line[len(READY) :]))
        print(f"  child: {line.rstrip()}")
    proc.kill()
    raise RuntimeError(f"child {proc.pid} did not report within {timeout_s:.0f}s")


def release(proc: subprocess.Popen[str]) -> None:
    try:
        if proc.stdin is not None:
            proc.stdin.write("go\n")
            proc.stdin.close()
        proc.wait(timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        proc.kill()
        proc.wait(timeout=10)


def mb(x: float) -> float:
    return round(x / MIB, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", default="20000,200000", help="comma-separated catalogue sizes")
    ap.add_argument("--factors", type=int, default=64)
    ap.add_argument("--users", type=int, default=1000, help="users in the recommend() batch")
    ap.add_argument("--timeout", type=float, default=300.0, help="per child process (s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        child(args.child, args.users, args.seed, args.timeout)
        return

    sizes = [int(x) for x in args.items.split(",") if x.strip()]
    print(machine_line())
    print(f"settings: items={sizes} k={args.factors} users per recommend={args.users} "
          f"target RSS <= factors + {TARGET_OVERHEAD_MB} MB")  # fmt: skip
    figures: dict[str, Any] = {"bench": "memory", **machine_fields(), "factors": args.factors,
                               "users": args.users, "sizes": []}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        for n, items in enumerate(sizes):
            model_dir = make_model(Path(tmp) / f"model-{items}", items, args.factors, args.seed)
            factors_file = model_dir / "item_factors.npy"
            a = start_child(model_dir, args.users, args.seed)
            procs = [a]
            try:
                ra = wait_ready(a, args.timeout)
                share: dict[str, Any] | None = None
                if n == len(sizes) - 1:  # sharing: a second process on the same model
                    b = start_child(model_dir, args.users, args.seed + 1)
                    procs.append(b)
                    wait_ready(b, args.timeout)
                    share = {
                        "rollup": [smaps_rollup(p.pid) for p in procs],
                        "factors": [smaps_for_file(p.pid, factors_file) for p in procs],
                    }
            finally:
                for p in procs:
                    release(p)
            s = ra["steps"]
            fb = ra["factors_bytes"]
            rss, peak = s["recommend"]["VmRSS"], s["recommend"]["VmHWM"]
            budget = fb + TARGET_OVERHEAD_MB * 1e6
            scores_bytes = args.users * items * 4  # the batch's float32 score matrix
            print(f"\n{items} items x {args.factors}: factors {mb(fb)} MiB; recommend() for "
                  f"{ra['lists']} users took {ra['recommend_s']:.2f}s")  # fmt: skip
            for step, v in s.items():
                print(f"  after {step:<11} RSS {mb(v['VmRSS']):>8} MiB (anon {mb(v['RssAnon'])}, "
                      f"file {mb(v['RssFile'])}), peak {mb(v['VmHWM']):>8} MiB")  # fmt: skip
            print(f"  steady RSS {mb(rss)} MiB {'<=' if rss <= budget else '>'} factors + "
                  f"{TARGET_OVERHEAD_MB} MB = {mb(budget)} MiB; peak {mb(peak)} MiB "
                  f"{'<=' if peak <= budget else '>'} it (the score matrix of {args.users} users "
                  f"x {items} items alone is {mb(scores_bytes)} MiB)")  # fmt: skip
            entry: dict[str, Any] = {
                "items": items, "factors_mib": mb(fb),
                "rss_imports_mib": mb(s["imports"]["VmRSS"]),
                "rss_loaded_mib": mb(s["load_model"]["VmRSS"]),
                "rss_scorer_mib": mb(s["scorer"]["VmRSS"]),
                "rss_after_recommend_mib": mb(rss), "peak_rss_mib": mb(peak),
                "anon_after_recommend_mib": mb(s["recommend"]["RssAnon"]),
                "file_after_recommend_mib": mb(s["recommend"]["RssFile"]),
                "score_matrix_mib": mb(scores_bytes),
                "steady_within_target": rss <= budget, "peak_within_target": peak <= budget,
            }  # fmt: skip
            if share is not None:
                print(f"  two processes on the same model ({factors_file.name}, "
                      f"{mb(factors_file.stat().st_size)} MiB):")  # fmt: skip
                for i, (roll, fac) in enumerate(zip(share["rollup"], share["factors"],
                                                    strict=True)):  # fmt: skip
                    print(f"    process {i + 1}: RSS {mb(roll.get('Rss', 0))} MiB, PSS "
                          f"{mb(roll.get('Pss', 0))} MiB; factor file mapped: RSS "
                          f"{mb(fac.get('Rss', 0))} MiB, PSS {mb(fac.get('Pss', 0))} MiB, "
                          f"shared clean {mb(fac.get('Shared_Clean', 0))} MiB, private "
                          f"{mb(fac.get('Private_Clean', 0) + fac.get('Private_Dirty', 0))} "
                          f"MiB")  # fmt: skip
                fac0 = share["factors"][0]
                entry["sharing"] = {
                    "pss_mib": [mb(r.get("Pss", 0)) for r in share["rollup"]],
                    "rss_mib": [mb(r.get("Rss", 0)) for r in share["rollup"]],
                    "factors_rss_mib": mb(fac0.get("Rss", 0)),
                    "factors_pss_mib": mb(fac0.get("Pss", 0)),
                    "factors_shared_clean_mib": mb(fac0.get("Shared_Clean", 0)),
                }
                entry["factors_shared"] = fac0.get("Shared_Clean", 0) > 0.9 * fb
            figures["sizes"].append(entry)
    emit(figures)


if __name__ == "__main__":
    main()
