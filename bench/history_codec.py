"""The worker's per-batch history work on warm state: this tree's binary state vs a base
revision's (JSON), same states, same events, same run.

    python bench/history_codec.py --base /tmp/rc-base [--users 1000] [--lengths 10 100 500]

``--base`` is a checkout of the revision to compare with (``git worktree add /tmp/rc-base
<rev>``); its ``streamrec/als/history.py`` is loaded from there. For each history length L,
``--users`` users with L items each are stored in each format; one batch is then, per user, what
the worker does (``worker/isolate.py``): decode the stored value, apply one event, flatten
every state for the solve, encode the new value. CPU time of this thread (``time.thread_time``,
so other processes on the machine count less), median of ``--repeat`` batches, in µs per user
(= per event here), and the stored value's size. Ends with one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from _common import emit, machine_fields, machine_line

from streamrec.als import history
from streamrec.events import Event
from streamrec.feedback import DEFAULT_WEIGHTS

DAY = 86_400_000


def _load(base: Path) -> ModuleType:
    path = base / "streamrec" / "als" / "history.py"
    spec = importlib.util.spec_from_file_location("base_history", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["base_history"] = mod
    spec.loader.exec_module(mod)
    return mod


def _batch(mod: Any, raws: list[bytes], events: list[Event], rules: Any, enc: str) -> float:
    """CPU seconds of one batch: decode, apply, flatten, encode."""
    t0 = time.thread_time()
    decode = getattr(mod.UserState, "decode", None) or mod.UserState.from_json
    states = [decode(r) for r in raws]
    for s, e in zip(states, events, strict=True):
        s.apply(e, rules)
    mod.flatten(states, rules.half_life_ms)
    out = [getattr(s, enc)() for s in states]
    assert len(out) == len(states)
    return time.thread_time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", type=Path, required=True, help="checkout of the base revision")
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--lengths", type=int, nargs="+", default=[10, 100, 500])
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    base = _load(args.base)
    print(machine_line())
    figures: dict[str, Any] = {"bench": "history_codec", **machine_fields(),
                               "base": str(args.base), "users": args.users}  # fmt: skip
    for length in args.lengths:
        rules_new = history.Rules(DEFAULT_WEIGHTS, 60 * DAY, 500, 256)
        rules_base = base.Rules(DEFAULT_WEIGHTS, 60 * DAY, 500, 256)
        t0 = 1_700_000_000_000
        built = []
        for u in range(args.users):
            s = history.UserState()
            for k in range(max(length, 256)):  # a full dedup window, as on warm state
                s.apply(Event(f"e{u}-{k}", f"u{u}", f"item-{(u * 7 + k) % length}", "play",
                              t0 + k * 60_000, 30.0), rules_new)  # fmt: skip
            built.append(s)
        new_raw = [s.encode() for s in built]
        base_raw = [base.UserState(items=s.items, seen=s.seen).to_json() for s in built]
        events = [Event(f"x{u}", f"u{u}", f"item-{u % length}", "play", t0 + 10**9, 30.0)
                  for u in range(args.users)]  # fmt: skip
        times: dict[str, list[float]] = {"base": [], "new": []}
        for _ in range(args.repeat):  # interleaved, so drifts in machine load hit both
            times["base"].append(_batch(base, base_raw, events, rules_base, "to_json"))
            times["new"].append(_batch(history, new_raw, events, rules_new, "encode"))
        us = {k: statistics.median(v) / args.users * 1e6 for k, v in times.items()}
        size = {"base": sum(map(len, base_raw)) / args.users,
                "new": sum(map(len, new_raw)) / args.users}  # fmt: skip
        print(
            f"history of {length:>3} items: base {us['base']:7.1f} us/event, "
            f"{size['base']:7.0f} B; new {us['new']:7.1f} us/event, {size['new']:7.0f} B "
            f"({us['base'] / us['new']:.2f}x less CPU, {size['base'] / size['new']:.2f}x smaller)"
        )
        figures[f"L{length}"] = {"base_us": round(us["base"], 2), "new_us": round(us["new"], 2),
                                 "base_bytes": round(size["base"]),
                                 "new_bytes": round(size["new"])}  # fmt: skip
    emit(figures)


if __name__ == "__main__":
    main()
