"""The nightly job's read stage alone (``read_window`` + the rows for the matrix), this tree
against a baseline tree, on the same topic in the same run.

    python bench/read_stage.py --scale 50000,10000,1000000 --base /work/main [--runs 3]

Publishes a generated log (``bench/retrain.py``'s ``publish_generated``: one Avro play event
per (user, item) pair, not timed) to a fresh topic, then runs ``--runs`` rounds of two child
processes, the baseline tree's code and this tree's (``PYTHONPATH``), alternating which goes
first; each reads the whole topic back with ``read_window`` and turns it into
``Interactions`` (``interactions_from_events`` on a list of ``Event`` where the tree has no
columns, ``interactions_from_columns`` where it has), and reports events/s and its own peak
RSS (``ru_maxrss``, a fresh process each time, so the figure is the read's alone on top of the
imports). Every run is printed, then one JSON line. Needs the real broker.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from _common import emit, machine_fields, machine_line

HERE = Path(__file__).resolve().parent


def child(topic: str) -> None:
    """Read ``topic`` with whichever ``streamrec`` is on the path; print one JSON line."""
    from streamrec.model import data as data_mod
    from streamrec.model.snapshot import read_window
    from streamrec.settings import load_settings

    s = load_settings(topic_events=topic)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    snap: Any = read_window(s, 0, timeout_s=1800)  # either tree's Snapshot
    t_read = time.perf_counter() - t
    if hasattr(snap, "columns"):
        rows = data_mod.interactions_from_columns(snap.columns, s.event_weights, s.half_life_ms)
        n = snap.decoded
    else:
        rows = data_mod.interactions_from_events(snap.events, s.event_weights, s.half_life_ms)
        n = len(snap.events)
    total = time.perf_counter() - t
    print(json.dumps({
        "events": n, "rows": len(rows), "read_s": round(t_read, 2), "stage_s": round(total, 2),
        "events_per_s": round(n / total), "rss_before_mb": round(before),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }))  # fmt: skip


def run_child(tree: Path, topic: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, str(HERE / "read_stage.py"), "--child", topic],
        env=env, capture_output=True, text=True, check=True, timeout=3600,
    )  # fmt: skip
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", default="50000,10000,1000000", help="USERS,ITEMS,INTERACTIONS")
    ap.add_argument("--base", type=Path, required=False, help="baseline tree (e.g. /work/main)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--topic", default=None, help="read this topic instead of publishing")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        child(args.child)
        return
    from retrain import publish_generated

    from streamrec.settings import load_settings

    topic = args.topic
    sent = None
    if topic is None:
        topic = f"bench-{uuid.uuid4().hex[:8]}.events"
        n_users, n_items, n_rows = (int(x) for x in args.scale.split(","))
        sent = publish_generated(load_settings(topic_events=topic), n_users, n_items, n_rows)
    print(machine_line())
    print(f"topic {topic}: {sent if sent is not None else '?'} events ({args.scale})")
    trees = {"this": HERE.parent}
    if args.base is not None:
        trees["base"] = args.base.resolve()
    results: dict[str, list[dict[str, Any]]] = {k: [] for k in trees}
    for run in range(args.runs):
        order = list(trees) if run % 2 == 0 else list(reversed(trees))
        for name in order:
            r = run_child(trees[name], topic)
            results[name].append(r)
            print(f"run {run + 1} {name}: {r}", flush=True)
    emit({**machine_fields(), "bench": "read_stage", "scale": args.scale, "topic": topic,
          "trees": {k: str(v) for k, v in trees.items()}, "runs": results})  # fmt: skip


if __name__ == "__main__":
    main()
