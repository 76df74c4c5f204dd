"""Redis memory per user: the worker's history state and list of each user, as it writes them.

    python bench/state_memory.py [--users 2000] [--lengths 10,50,200,500] [--events-per-item 2]

Needs Redis (``streamrec infra up``, or ``--redis URL``); writes under its own prefix and
deletes it at the end (and between history lengths). For each history length L, ``--users``
synthetic users each play L distinct items (Zipf-like over a catalogue of ``--items`` ids
shaped like the generated dataset's, ``g03-track-0117``) ``--events-per-item`` times, with
random event ids: the events go through ``UserState.apply`` with the settings' rules (decay,
dedup window, ``history_max``), so each state is what the worker would hold, and its list is
``ListEncoder.recs`` of ``top_n`` items. Both are written by ``streamrec.sink.Sink.write``, the
worker's own writer (SET with the state and list TTLs), 1000 users per round trip.

Reports, per L: ``INFO memory`` ``used_memory`` after minus before, divided by the users
(everything a user costs Redis: both keys, their values, the key space's and the expiry
table's entries, allocator rounding), and ``MEMORY USAGE`` and the value's length of sample
state and list keys. The baseline is the values' own bytes: what the user's data would take
with no Redis overhead at all. Ends with one JSON line.

Run it against a Redis no one else writes to at the same time: ``used_memory`` is the whole
server's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from typing import Any

import numpy as np
import redis
from _common import delete_redis_prefix, emit, machine_fields, machine_line, run_id

from streamrec.als.history import Rules, UserState
from streamrec.connect import redis_client
from streamrec.errors import InfraError
from streamrec.events import Event
from streamrec.keys import Keys, ListEncoder
from streamrec.settings import load_settings
from streamrec.sink import Sink

CHUNK = 1000
MIB = 1024 * 1024


def catalogue(n: int, genres: int = 12) -> list[str]:
    """Item ids as the generated dataset names them (``model/data.py: synthetic``)."""
    return [f"g{i % genres:02d}-track-{i:04d}" for i in range(n)]


def user_state(
    rng: np.random.Generator, items: list[str], p: np.ndarray, length: int, per_item: int,
    rules: Rules, start_ms: int,
) -> UserState:  # fmt: skip
    """A state of ``length`` items built by the worker's own ``apply`` from random events."""
    state = UserState()
    chosen = rng.choice(len(items), size=length, replace=False, p=p)
    order = np.repeat(chosen, per_item)
    rng.shuffle(order)
    gaps = rng.integers(1_000, 3_600_000, size=len(order)).cumsum()
    types = ("play", "play", "play", "like", "skip", "click")
    for row, ts in zip(order.tolist(), gaps.tolist(), strict=True):
        kind = types[int(rng.integers(len(types)))]
        ev = Event(event_id=str(uuid.uuid4()), user_id="u", item_id=items[row], type=kind,
                   timestamp=start_ms + ts, value=60.0)  # fmt: skip
        state.apply(ev, rules)
    return state


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def measure(
    client: redis.Redis, sink: Sink, keys: Keys, encoder: ListEncoder, args: argparse.Namespace,
    length: int, rules: Rules, top_n: int, items: list[str], p: np.ndarray,
) -> dict[str, Any]:  # fmt: skip
    rng = np.random.default_rng(args.seed + length)
    users = [f"user-{length:03d}-{u:07d}" for u in range(args.users)]
    states = [user_state(rng, items, p, length, args.events_per_item, rules, 1_700_000_000_000)
              for _ in users]  # fmt: skip
    state_values = [s.encode() for s in states]
    rows = np.stack([rng.choice(len(items), size=top_n, replace=False) for _ in users])
    scores = -np.sort(-rng.random((len(users), top_n)).astype(np.float32), axis=1)
    list_values = encoder.recs(users, rows.astype(np.int64), scores, "20261201T000000Z-bench",
                               int(time.time() * 1000))  # fmt: skip

    before = used_memory(client)
    for lo in range(0, len(users), CHUNK):
        hi = lo + CHUNK
        sink.write(lists=list(zip(users[lo:hi], list_values[lo:hi], strict=True)),
                   states=[(keys.user(u, "bench", 0), v)
                           for u, v in zip(users[lo:hi], state_values[lo:hi], strict=True)],
                   transaction=False)  # fmt: skip
    after = used_memory(client)

    sample = users[:: max(1, len(users) // args.samples)][: args.samples]
    pipe = client.pipeline(transaction=False)
    for u in sample:
        pipe.memory_usage(keys.user(u, "bench", 0), samples=0)
        pipe.memory_usage(keys.recs(u), samples=0)
    usage = pipe.execute()
    kept = [len(s.items) for s in states]
    seen = [len(s.seen) // 8 for s in states]
    return {
        "history_items": int(statistics.median(kept)),
        "seen_ids": int(statistics.median(seen)),
        "bytes_per_user": round((after - before) / len(users)),
        "state_value_bytes": int(statistics.median(len(v) for v in state_values)),
        "state_memory_usage": int(statistics.median(usage[0::2])),
        "list_value_bytes": int(statistics.median(len(v) for v in list_values)),
        "list_memory_usage": int(statistics.median(usage[1::2])),
        "values_per_user": round(
            (sum(map(len, state_values)) + sum(map(len, list_values))) / len(users)
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=2000, help="users per history length")
    ap.add_argument("--lengths", default="10,50,200,500", help="history lengths (items)")
    ap.add_argument("--events-per-item", type=int, default=2)
    ap.add_argument("--items", type=int, default=20_000, help="catalogue size")
    ap.add_argument("--samples", type=int, default=50, help="keys read by MEMORY USAGE")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    lengths = [int(x) for x in args.lengths.split(",")]

    prefix = run_id("state")
    settings = load_settings(redis_url=args.redis, redis_prefix=prefix)
    try:
        client = redis_client(settings)
    except InfraError as exc:
        print(f"skipped: {exc}")
        sys.exit(3)
    rules = Rules(settings.event_weights, settings.half_life_ms, settings.history_max,
                  settings.dedup_window)  # fmt: skip
    if max(lengths) > settings.history_max:
        print(f"note: lengths above history_max={settings.history_max} are trimmed by apply")
    info = client.info()
    print(machine_line())
    print(f"redis {info.get('redis_version')} at {args.redis} ({info.get('mem_allocator')}, "
          f"maxmemory-policy {info.get('maxmemory_policy')}, appendonly "
          f"{'yes' if info.get('aof_enabled') else 'no'}, "
          f"{info.get('connected_clients')} clients connected)")  # fmt: skip
    print(f"settings: users={args.users} lengths={lengths} events/item={args.events_per_item} "
          f"items={args.items} top_n={settings.top_n} dedup_window={settings.dedup_window} "
          f"history_max={settings.history_max} ttl: state {settings.history_ttl_s}s, list "
          f"{settings.recs_ttl_s}s prefix={prefix}")  # fmt: skip

    items = catalogue(args.items)
    ranks = np.random.default_rng(args.seed).permutation(args.items) + 1
    p = 1.0 / ranks**0.9
    p /= p.sum()
    keys = Keys(prefix)
    encoder = ListEncoder(items)
    sink = Sink(client, keys, settings.recs_ttl_s, settings.history_ttl_s)
    results: dict[int, dict[str, Any]] = {}
    try:
        for length in lengths:
            t = time.perf_counter()
            results[length] = measure(client, sink, keys, encoder, args, length, rules,
                                      settings.top_n, items, p)  # fmt: skip
            delete_redis_prefix(client, prefix)
            r = results[length]
            print(
                f"history {length:>4} items ({r['seen_ids']} event ids kept): "
                f"{r['bytes_per_user']:>7,} B/user in Redis "
                f"(values alone {r['values_per_user']:,} B); "
                f"state {r['state_value_bytes']:,} B -> MEMORY USAGE {r['state_memory_usage']:,}; "
                f"list {r['list_value_bytes']:,} B -> {r['list_memory_usage']:,} "
                f"({time.perf_counter() - t:.1f} s)"
            )
    finally:
        sink.close()
        left = delete_redis_prefix(client, prefix)
        if left:
            print(f"cleanup: deleted {left} keys left under {prefix}")
        client.close()
    for length, r in results.items():
        gib = r["bytes_per_user"] * 1_000_000 / 1024**3
        print(f"  1M users at {length} items: {gib:.2f} GiB")
    emit({
        "bench": "state_memory", **machine_fields(),
        "redis_version": info.get("redis_version"), "users": args.users,
        "events_per_item": args.events_per_item, "items": args.items, "top_n": settings.top_n,
        "dedup_window": settings.dedup_window,
        "per_length": {str(k): v for k, v in results.items()},
    })  # fmt: skip


if __name__ == "__main__":
    main()
