"""Rebuild after a loss of Redis: events/s re-read, and the time until every list is back.

    python bench/rebuild.py [--events 2000000] [--users 100000] [--items 20000]

Needs the local services (``streamrec infra up``); uses its own topics, consumer group and
Redis prefix and deletes them at the end (the shared Redis is never flushed or restarted: the
loss is the deletion of this run's keys). Steps:

  1. produce ``--events`` play events (Zipf users and items, key = user, event times spread
     over ``--days``), encoded and sent in chunks;
  2. baseline: one ``streamrec worker`` applies them from a first start (a list per touched
     user per batch), timed from its first applied batch to the last: plain reprocessing.
     It is stopped with SIGTERM (the group commits everything); a digest of every history
     and list is kept;
  3. the loss: every key of the run's prefix is deleted;
  4. rebuild: a new worker in the same group finds committed offsets and no state and
     rebuilds (``worker/rebuild.py``). Timed from its start to the first rebuild marker, to
     every history back (the applied offsets at the end) and to every list back (every
     marker complete); every history and list is compared with the baseline's;
  5. the changelog alternative (``--changelog-sample`` events, 0 = skip): the bytes a
     compacted changelog of user state would carry (each touched user's state per batch, as
     Kafka Streams logs a store) per event, and the CPU of producing them to a compacted topic
     (this process, and the broker when it is the local one: its CPU includes whatever else
     it did meanwhile).

Ends with one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from _common import (
    connect_or_skip,
    cpu_seconds,
    delete_redis_prefix,
    delete_topics,
    emit,
    machine_fields,
    machine_line,
    run_id,
    run_names,
    worker_env,
)
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from e2e import Workers, make_model, zipf_choice

from streamrec.als.history import Rules, UserState
from streamrec.errors import InfraError
from streamrec.events import encode_avro, new_event
from streamrec.keys import Keys, parse_applied
from streamrec.producer.producer import EventProducer
from streamrec.settings import Settings, load_settings
from streamrec.worker.rebuild import Origin

DAY_MS = 86_400_000
CHUNK = 100_000


def event_at(users: np.ndarray, items: list[str], k: int, start_ms: int, step_ms: float) -> Any:
    return new_event(
        f"user-{users[k]:07d}",
        items[k],
        "play",
        value=120.0,
        timestamp=int(start_ms + k * step_ms),
        event_id=f"e-{k}",
    )


def produce(settings: Settings, users: np.ndarray, items: list[str], step_ms: float) -> float:
    """Every event, encoded and sent a chunk at a time; returns seconds."""
    started = time.perf_counter()
    start_ms = int(time.time() * 1000) - int(step_ms * len(users))
    with EventProducer(settings) as producer:
        for lo in range(0, len(users), CHUNK):
            chunk = [
                event_at(users, items, k, start_ms, step_ms)
                for k in range(lo, min(lo + CHUNK, len(users)))
            ]
            for e in chunk:
                while True:
                    try:
                        producer.send_raw(e.user_id.encode(), encode_avro(e))
                        break
                    except BufferError:
                        producer.flush()
    return time.perf_counter() - started


class State:
    """Applied offsets, rebuild markers and every history and list under the run's prefix."""

    def __init__(self, settings: Settings, client: Any) -> None:
        self._redis = client
        self._keys = Keys(settings.redis_prefix)
        self._prefix = settings.redis_prefix
        self._parts = [(settings.topic_events, p) for p in range(settings.topic_events_partitions)]

    def applied(self) -> int:
        raw = self._redis.mget([self._keys.applied(*p) for p in self._parts])
        return sum(parse_applied(v, missing=-1) + 1 for v in raw)

    def markers(self) -> list[Origin | None]:
        raw = self._redis.mget([self._keys.origin(*p) for p in self._parts])
        return [None if v is None else Origin.parse(v) for v in raw]

    def digests(self) -> dict[str, tuple[bytes, bytes, np.ndarray]]:
        """user -> (digest of the history as stored, digest of the list's items, its scores)."""
        names = [k.decode() for k in self._redis.scan_iter(
            match=f"{self._prefix}:{{*}}:user:*", count=5000)]  # fmt: skip
        where = {n: self._keys.parse_user(n) for n in names}
        keyed = {w[2]: n for n, w in where.items() if w is not None}
        users = list(keyed)
        out: dict[str, tuple[bytes, bytes, np.ndarray]] = {}
        for lo in range(0, len(users), 2000):
            chunk = users[lo : lo + 2000]
            states = self._redis.mget([keyed[u] for u in chunk])
            lists = self._redis.mget([self._keys.recs(u) for u in chunk])
            for u, st, li in zip(chunk, states, lists, strict=True):
                items = orjson.loads(li)["items"] if li is not None else []
                ids = "\x00".join(i["item_id"] for i in items).encode()
                out[u] = (
                    hashlib.blake2b(st or b"", digest_size=16).digest(),
                    hashlib.blake2b(ids, digest_size=16).digest(),
                    np.array([i["score"] for i in items], dtype=np.float64),
                )
        return out


def compare(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
    """How many users have the same history and the same list (ids and scores equal)."""
    same_state = same_list = 0
    for user, (state, ids, scores) in before.items():
        got = after.get(user)
        if got is None:
            continue
        same_state += got[0] == state
        same_list += got[1] == ids and np.array_equal(got[2], scores)
    return {
        "users_before": len(before),
        "users_after": len(after),
        "identical_histories": same_state,
        "identical_lists": same_list,
    }


def wait_applied(workers: Workers, state: State, total: int, timeout_s: float) -> float:
    """Seconds from the first applied batch until ``total`` events are applied."""
    deadline = time.monotonic() + timeout_s
    first: float | None = None
    while time.monotonic() < deadline:
        workers.check()
        done = state.applied()
        now = time.perf_counter()
        if first is None and done > 0:
            first = now
        if done >= total:
            return now - (first or now)
        time.sleep(0.1)
    raise RuntimeError(f"the worker did not apply {total} events in {timeout_s:.0f} s")


def wait_rebuilt(
    workers: Workers, state: State, total: int, timeout_s: float, started_ms: float
) -> dict[str, float]:
    """Seconds from ``started_ms`` (the worker's start, epoch ms) until: the rebuild began (the
    markers' own time), every history was back (applied offsets at the end), every list was
    back (every marker complete)."""
    deadline = time.monotonic() + timeout_s
    histories = None
    while time.monotonic() < deadline:
        workers.check()
        marks = state.markers()
        now = time.time() - started_ms / 1000
        if histories is None and state.applied() >= total:
            histories = now
        if all(m is not None and m.complete for m in marks):
            began = min(m.since_ms for m in marks if m is not None) / 1000 - started_ms / 1000
            return {
                "began": began,
                "histories": now if histories is None else histories,
                "lists": now,
            }
        time.sleep(0.05)
    raise RuntimeError(f"the rebuild did not end in {timeout_s:.0f} s")


def committed(settings: Settings) -> int:
    c = Consumer({**settings.kafka_common(), "group.id": settings.consumer_group})
    try:
        parts = [
            TopicPartition(settings.topic_events, p)
            for p in range(settings.topic_events_partitions)
        ]
        return sum(max(0, tp.offset) for tp in c.committed(parts, timeout=10))
    finally:
        c.close()


def changelog(
    settings: Settings, users: np.ndarray, items: list[str], step_ms: float, sample: int, topic: str
) -> dict[str, Any]:
    """What a compacted changelog of user state would cost the hot path: each batch's touched
    states, as the worker writes them to Redis, produced to a compacted topic."""
    rules = Rules(
        settings.event_weights, settings.half_life_ms, settings.history_max, settings.dedup_window
    )
    states: dict[str, UserState] = {}
    records: list[tuple[bytes, bytes]] = []
    event_bytes = 0
    for lo in range(0, sample, settings.batch_max):
        touched: dict[str, None] = {}
        for k in range(lo, min(lo + settings.batch_max, sample)):
            e = event_at(users, items, k, 0, step_ms)
            event_bytes += len(encode_avro(e))
            if states.setdefault(e.user_id, UserState()).apply(e, rules):
                touched[e.user_id] = None
        records += [(u.encode(), states[u].encode()) for u in touched]
    volume = sum(len(k) + len(v) for k, v in records)
    admin = AdminClient(settings.kafka_common())
    spec = NewTopic(
        topic, settings.topic_events_partitions, 1, config={"cleanup.policy": "compact"}
    )
    admin.create_topics([spec])[topic].result(30)
    broker = broker_pid(settings)
    broker0 = cpu_seconds(broker) if broker else None
    cpu0, wall0 = time.process_time(), time.perf_counter()
    producer = Producer({**settings.kafka_common(), "enable.idempotence": True, "linger.ms": 5})
    for key, value in records:
        while True:
            try:
                producer.produce(topic, value=value, key=key)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(120) != 0:
        raise RuntimeError("the changelog records were not all delivered")
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    broker_cpu = cpu_seconds(broker) - broker0 if broker and broker0 is not None else None
    return {
        "changelog_sample_events": sample,
        "event_bytes": round(event_bytes / sample, 1),
        "changelog_records_per_event": round(len(records) / sample, 3),
        "changelog_bytes_per_event": round(volume / sample, 1),
        "changelog_producer_cpu_us_per_event": round(cpu / sample * 1e6, 1),
        "changelog_broker_cpu_us_per_event": (
            round(broker_cpu / sample * 1e6, 1) if broker_cpu is not None else None
        ),
        "changelog_produce_s": round(wall, 2),
    }


def broker_pid(settings: Settings) -> int | None:
    """The local broker's pid when ``streamrec infra`` started it on this machine."""
    try:
        from streamrec.infra import read_pid
        from streamrec.infra.kafka import KafkaPaths

        pid = read_pid(KafkaPaths.of(settings).pid_file)
        return pid if pid is not None and Path(f"/proc/{pid}").exists() else None
    except (InfraError, OSError):
        return None


def rebuild_lines(log: Path) -> list[str]:
    """The worker's log lines that say what the rebuild did, per partition."""
    pattern = re.compile(r"rebuilding it from|re-read \d+ messages|rebuilt:")
    return [line for line in log.read_text(errors="replace").splitlines() if pattern.search(line)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=2_000_000)
    ap.add_argument("--users", type=int, default=100_000, help="user pool the events draw from")
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--factors", type=int, default=64)
    ap.add_argument("--user-zipf", type=float, default=0.8)
    ap.add_argument("--item-zipf", type=float, default=0.8)
    ap.add_argument("--days", type=float, default=30.0, help="event times span this much")
    ap.add_argument("--changelog-sample", type=int, default=200_000, help="events; 0 = skip")
    ap.add_argument("--timeout", type=float, default=1800.0, help="per phase, seconds")
    ap.add_argument("--kafka", default="127.0.0.1:9092")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--keep", action="store_true", help="keep topics, keys and files")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    rid = run_id("rebuild")
    work = Path(tempfile.mkdtemp(prefix=f"{rid}-"))
    names = run_names(rid, work, args.kafka, args.redis)
    settings = load_settings(**names)
    env = worker_env(names)
    print(machine_line())
    print(
        f"settings: events={args.events} users={args.users} items={args.items} "
        f"k={args.factors} zipf(user)={args.user_zipf} zipf(item)={args.item_zipf} "
        f"days={args.days:g} partitions={settings.topic_events_partitions} "
        f"batch_max={settings.batch_max} history_max={settings.history_max} "
        f"changelog_sample={args.changelog_sample} run={rid}"
    )
    client = connect_or_skip(settings, work)

    figures: dict[str, Any] = {
        "bench": "rebuild",
        **machine_fields(),
        "events": args.events,
        "users_pool": args.users,
        "items": args.items,
        "factors": args.factors,
        "partitions": settings.topic_events_partitions,
        "batch_max": settings.batch_max,
    }
    workers: Workers | None = None
    topics = [
        names["topic_events"],
        names["topic_dlq"],
        names["topic_models"],
        names["topic_items"],
    ]
    try:
        item_ids, _pop = make_model(work / "model", args.items, args.factors, args.seed)
        rng = np.random.default_rng(args.seed)
        users = zipf_choice(rng, args.users, args.user_zipf, args.events)
        items = [item_ids[i] for i in zipf_choice(rng, args.items, args.item_zipf, args.events)]
        step_ms = args.days * DAY_MS / args.events
        produce_s = produce(settings, users, items, step_ms)
        distinct = len(np.unique(users))
        print(f"produced {args.events} events in {produce_s:.1f}s, {distinct} distinct users")
        state = State(settings, client)

        workers = Workers(env, {}, work, None, 1)
        base_s = wait_applied(workers, state, args.events, args.timeout)
        workers.stop()  # SIGTERM: the group commits everything
        workers = None
        if committed(settings) != args.events:
            raise RuntimeError("the baseline worker did not commit every event")
        before = state.digests()
        print(
            f"baseline (a first start: lists per batch): {args.events} events in "
            f"{base_s:.1f}s, {args.events / base_s:,.0f} events/s; {len(before)} users"
        )

        gone = delete_redis_prefix(client, rid)
        print(f"the loss: {gone} keys of the run deleted (committed offsets kept)")
        started_ms = time.time() * 1000
        workers = Workers(env, {}, work, None, 1)
        log = workers.logs[0]
        t = wait_rebuilt(workers, state, args.events, args.timeout, started_ms)
        cpu = workers.cpu_seconds()
        after = state.digests()
        same = compare(before, after)
        workers.stop()
        workers = None
        lines = rebuild_lines(log)
        for line in lines:
            print(f"  worker: {line}")
        if not any("rebuilding it from" in line for line in lines):
            raise RuntimeError(f"the worker did not rebuild; see {log}")
        replay_s = t["histories"] - t["began"]
        lists_s = t["lists"] - t["histories"]
        print(
            f"rebuild: started {t['began']:.1f}s after the worker; every history back after "
            f"{replay_s:.1f}s more ({args.events / replay_s:,.0f} events/s, "
            f"{base_s / replay_s:.2f}x the baseline), every list "
            f"after {lists_s:.1f}s more (partitions write theirs as each one's histories are "
            f"back; {len(after)} lists): "
            f"{t['lists']:.1f}s from the worker's start; worker CPU {cpu:.1f}s in all; "
            f"{same['identical_histories']}/{same['users_before']} histories and "
            f"{same['identical_lists']}/{same['users_before']} lists as before the loss"
        )
        figures.update(
            {
                "distinct_users": distinct,
                "produce_s": round(produce_s, 1),
                "baseline_s": round(base_s, 2),
                "baseline_events_per_s": round(args.events / base_s),
                "rebuild_startup_s": round(t["began"], 2),
                "replay_s": round(replay_s, 2),
                "replay_events_per_s": round(args.events / replay_s),
                "replay_vs_baseline": round(base_s / replay_s, 2),
                "lists_s": round(lists_s, 2),
                "lists": len(after),
                "every_list_back_s": round(t["lists"], 2),
                "rebuild_worker_cpu_s": round(cpu, 2),  # from its start, model load included
                **same,
            }
        )
        if args.changelog_sample > 0:
            sample = min(args.changelog_sample, args.events)
            topics.append(f"{rid}.changelog")
            c = changelog(settings, users, items, step_ms, sample, topics[-1])
            print(
                f"changelog alternative over the first {sample} events: "
                f"{c['changelog_records_per_event']} state records and "
                f"{c['changelog_bytes_per_event']:,.0f} bytes per event (the event itself: "
                f"{c['event_bytes']:.0f}); producing them cost "
                f"{c['changelog_producer_cpu_us_per_event']} us of client CPU per event"
                + (
                    f", the broker {c['changelog_broker_cpu_us_per_event']} us"
                    if c["changelog_broker_cpu_us_per_event"] is not None
                    else ""
                )
            )
            figures.update(c)
    finally:
        if workers is not None:
            workers.stop()
        if not args.keep:
            gone = delete_redis_prefix(client, rid)
            delete_topics(args.kafka, topics, group=rid)
            print(f"cleanup: {gone} Redis keys, {len(topics)} topics and group {rid} deleted")
            shutil.rmtree(work, ignore_errors=True)
    emit(figures)


if __name__ == "__main__":
    main()
