"""End to end: events into the real Kafka broker -> ``streamrec worker`` -> lists in real Redis.

    python bench/e2e.py [--events 200000] [--rate 10000] [--duration 20] [--items 20000]

Needs the local services (``streamrec infra up``); uses its own topics, consumer group and Redis
prefix, and deletes them at the end. Starts ``streamrec worker`` as its own process with a
random-factor model of ``--items`` items, then measures:

  (a) throughput: ``--events`` events (Zipf users and items, key = user) are produced as fast as
      the producer goes (its rate is the baseline), then the worker is started and the time it
      takes to drain them is measured from its committed offsets -> sustained events/s;
  (b) latency: events at a paced ``--rate`` for ``--duration`` s; every ``--probe-every``-th
      event belongs to a brand-new user ``probe-<n>`` and the time from send to the moment
      ``<prefix>:recs:probe-<n>`` can be read from Redis is taken -> p50/p99 event->Redis.

Also reports the worker's peak RSS (VmHWM) and CPU use. ``--profile FILE`` runs the worker under
cProfile and prints its top functions. Ends with one JSON line of the figures.
Targets (issue): 20k events/s on 2 cores; p99 <= 250 ms at 10k events/s.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from _common import (
    MIB,
    EventTemplate,
    connect_or_skip,
    cpu_seconds,
    delete_redis_prefix,
    delete_topics,
    emit,
    machine_busy,
    machine_fields,
    machine_line,
    peak_rss_bytes,
    rss_bytes,
    run_id,
    run_names,
    thread_cpu,
    thread_cpu_delta,
    worker_env,
)
from confluent_kafka import Consumer, ConsumerGroupState, TopicPartition
from confluent_kafka.admin import AdminClient

from streamrec.artifact import write_model
from streamrec.events import encode_avro, new_event
from streamrec.keys import Keys, parse_applied
from streamrec.producer.producer import EventProducer
from streamrec.settings import Settings, load_settings

TARGET_EVENTS_PER_S = 20_000
TARGET_P99_MS = 250.0


def zipf_choice(rng: np.random.Generator, n: int, s: float, size: int) -> np.ndarray:
    """``size`` draws from ranks 0..n-1 with P(r) ~ 1/(r+1)^s, ranks shuffled."""
    p = 1.0 / np.arange(1, n + 1) ** s
    p /= p.sum()
    return rng.permutation(n)[rng.choice(n, size=size, p=p)]


def make_model(out: Path, items: int, factors: int, seed: int) -> tuple[list[str], np.ndarray]:
    """A model directory with random factors (training would not change the timings)."""
    rng = np.random.default_rng(seed)
    y = (rng.standard_normal((items, factors)) * 0.1).astype(np.float32)
    ids = [f"item-{i:06d}" for i in range(items)]
    pop = (1000.0 / np.arange(1, items + 1) ** 0.8).astype(np.float32)
    params = {
        "factors": factors,
        "regularization": 1.0,
        "alpha": 4.0,
        "iterations": 0,
        "transform": "log",
        "seed": seed,
    }
    write_model(out, ids, y, pop, params)
    return ids, pop


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Offsets:
    """How far the workers got (the applied offsets they keep in Redis) vs the end of the
    topic, and the group's state (no group join)."""

    def __init__(self, settings: Settings, client: Any) -> None:
        self._redis = client
        self._keys = Keys(settings.redis_prefix)
        self._consumer = Consumer(
            {
                **settings.kafka_common(),
                "group.id": settings.consumer_group,
                "enable.auto.commit": False,
            }
        )
        meta = self._consumer.list_topics(settings.topic_events, timeout=10)
        parts = sorted(meta.topics[settings.topic_events].partitions)
        self._tps = [TopicPartition(settings.topic_events, p) for p in parts]
        self._admin = AdminClient(settings.kafka_common())
        self._group = settings.consumer_group

    def members_assigned(self) -> int:
        """Members of the worker group holding partitions, once the group is stable (else 0)."""
        try:
            desc = self._admin.describe_consumer_groups([self._group])[self._group].result(5)
        except Exception:
            return 0
        if desc.state != ConsumerGroupState.STABLE:
            return 0
        return sum(1 for m in desc.members if m.assignment and m.assignment.topic_partitions)

    def end(self) -> int:
        return sum(self._consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in self._tps)

    def applied(self) -> int:
        """Events whose effect is in Redis: the sum of each partition's applied offset + 1
        (what the worker's Kafka commits follow, at most ``commit_interval_s`` later)."""
        raw = self._redis.mget([self._keys.applied(tp.topic, tp.partition) for tp in self._tps])
        return sum(parse_applied(v, missing=-1) + 1 for v in raw)

    def close(self) -> None:
        self._consumer.close()


class Workers:
    """``count`` ``streamrec worker`` processes (one consumer group) with the run's settings in
    their environment; each logs to ``<dir>/worker-<n>.log``."""

    def __init__(
        self,
        env: dict[str, str],
        extra: dict[str, str],
        log_dir: Path,
        profile: Path | None,
        count: int,
    ) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        for n in range(count):
            cmd = [sys.executable]
            if profile is not None:
                out = profile if count == 1 else profile.with_name(f"{profile.name}.{n + 1}")
                cmd += ["-m", "cProfile", "-o", str(out)]
            cmd += ["-m", "streamrec", "worker"]
            self.logs.append(log_dir / f"worker-{n + 1}.log")
            # The metrics endpoint (if this version has one) on a free port of its own, so
            # workers beside this one (tests, a demo, each other) do not collide with it.
            own = {**env, "STREAMREC_METRICS_BIND": f"127.0.0.1:{free_port()}", **extra}
            with self.logs[-1].open("wb") as log:
                self.procs.append(
                    subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=own)
                )

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def check(self) -> None:
        for proc, log in zip(self.procs, self.logs, strict=True):
            if proc.poll() is not None:
                tail = log.read_text(errors="replace").splitlines()[-15:]
                raise RuntimeError(f"worker exited with {proc.returncode}:\n" + "\n".join(tail))

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids)

    def threads(self) -> dict[int, tuple[str, float]]:
        out: dict[int, tuple[str, float]] = {}
        for pid in self.pids:
            out.update(thread_cpu(pid))
        return out

    def stop(self, timeout_s: float = 60.0) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, log in zip(self.procs, self.logs, strict=True):
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            if proc.returncode not in (0, None):
                print(f"worker exited {proc.returncode}; log: {log}")


def encode_all(users: list[str], items: list[str]) -> list[tuple[bytes, bytes]]:
    """(key, value) of one play event per (user, item) pair, as ``EventProducer`` sends it."""
    return [(u.encode(), encode_avro(new_event(u, i, "play", value=120.0)))
            for u, i in zip(users, items, strict=True)]  # fmt: skip


def produce_all(settings: Settings, messages: list[tuple[bytes, bytes]]) -> float:
    """Send pre-encoded messages as fast as possible (so the producer takes little of the
    machine while the workers consume); returns seconds."""
    started = time.perf_counter()
    with EventProducer(settings) as producer:
        for key, value in messages:
            while True:
                try:
                    producer.send_raw(key, value)
                    break
                except BufferError:
                    producer.flush()
    return time.perf_counter() - started


def wait_group(offsets: Offsets, workers: int, timeout_s: float = 60.0) -> None:
    """Until every worker holds partitions in a stable group (bounded)."""
    deadline = time.monotonic() + timeout_s
    while offsets.members_assigned() < workers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the worker group did not settle in {timeout_s:.0f} s")
        time.sleep(0.2)


def drain(workers: Workers, offsets: Offsets, total: int, timeout_s: float) -> dict[str, Any]:
    """Watch the applied offsets until ``total`` is reached (or ``timeout_s``).

    The clock starts once every worker holds partitions in a stable group and a first applied
    batch is seen (start-up and rebalances are not throughput); events applied before that do
    not count."""
    started = time.perf_counter()
    first: tuple[float, int, float, tuple[float, float]] | None = None
    threads0: dict[int, tuple[str, float]] = {}
    done, now = 0, started
    while now - started < timeout_s:
        workers.check()
        done = offsets.applied()
        now = time.perf_counter()
        if first is None and done > 0 and offsets.members_assigned() >= len(workers.pids):
            first = (now, done, workers.cpu_seconds(), machine_busy())
            threads0 = workers.threads()
        if done >= total:
            break
        time.sleep(0.1)
    if first is None:
        raise RuntimeError(f"the worker committed nothing within {timeout_s:.0f}s")
    t0, done0, cpu0, (busy0, all0) = first
    busy1, all1 = machine_busy()
    wall = max(now - t0, 1e-9)
    cpu = workers.cpu_seconds() - cpu0
    per_thread = thread_cpu_delta(threads0, workers.threads())
    return {
        "threads": {k: round(v / wall, 3) for k, v in per_thread.items() if v / wall >= 0.005},
        "drained": done >= total,
        "events_measured": done - done0,
        "seconds": wall,
        "startup_s": t0 - started,
        "events_per_s": (done - done0) / wall,
        "worker_cpu_share": cpu / wall,
        "events_per_worker_cpu_s": (done - done0) / cpu if cpu > 0 else None,
        "machine_busy": (busy1 - busy0) / max(all1 - all0, 1.0),
    }


class ProbeWatcher(threading.Thread):
    """Polls Redis for the recs keys of probe users; records when each first appears."""

    def __init__(self, client: Any, prefix: str, interval_s: float = 0.005) -> None:
        super().__init__(daemon=True)
        self._interval = interval_s
        self._redis = client
        self._prefix = prefix
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[float, int]] = {}  # user -> (monotonic, wall ms) sent
        # user -> (latency ms, stamp ms, monotonic sent)
        self.seen: dict[str, tuple[float, float, float]] = {}
        self.halt = threading.Event()

    def sent(self, user: str, mono: float, wall_ms: int) -> None:
        with self._lock:
            self._pending[user] = (mono, wall_ms)

    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def run(self) -> None:
        import json

        while not self.halt.is_set():
            with self._lock:
                users = list(self._pending)
            if not users:
                time.sleep(self._interval)
                continue
            pipe = self._redis.pipeline(transaction=False)
            for u in users:
                pipe.get(f"{self._prefix}:recs:{u}")
            values = pipe.execute()
            now = time.monotonic()
            with self._lock:
                for u, v in zip(users, values, strict=True):
                    if v is not None:
                        mono, wall_ms = self._pending.pop(u)
                        stamped = float(json.loads(v)["updated_at_ms"]) - wall_ms
                        self.seen[u] = ((now - mono) * 1000.0, stamped, mono)
            time.sleep(self._interval)


def paced(
    settings: Settings,
    client: Any,
    users: list[str],
    items: list[str],
    probe_item: str,
    rate: float,
    duration_s: float,
    probe_every: int,
    grace_s: float,
    tag: str,
    probe_poll_s: float = 0.005,
) -> dict[str, Any]:
    """Send at ``rate`` for ``duration_s``; probes are new users ``probe-<tag>-<n>``."""
    watcher = ProbeWatcher(client, settings.redis_prefix, probe_poll_s)
    watcher.start()
    sent = probes = 0
    n_total = int(rate * duration_s)
    template = EventTemplate()
    keys = [u.encode() for u in users]
    item_bytes = [i.encode() for i in items]
    fixed = {len(k) for k in keys} == {12} and {len(i) for i in item_bytes} == {11}
    with EventProducer(settings) as producer:
        # The producer's own start (metadata, idempotent producer id) is not the worker's
        # latency: one delivered event before the clock starts.
        producer.send(new_event(f"warm-{tag}", probe_item, "play", value=120.0))
        producer.flush()
        started = time.monotonic()
        cpu0 = cpu_seconds("self")
        while sent < n_total and time.monotonic() - started < duration_s + 5:
            due = min(n_total, int(rate * (time.monotonic() - started)) + 1)
            while sent < due:
                if sent % probe_every == 0:
                    user = f"probe-{tag}-{probes}"
                    event = new_event(user, probe_item, "play", value=120.0)
                    watcher.sent(user, time.monotonic(), event.timestamp)
                    producer.send(event)
                    probes += 1
                else:
                    # Encoded from a template (fixed-width ids): the load generator shares
                    # the machine's two cores with the workers, Redis and the broker, and
                    # encoding each event in Python cost it a third of a core at 10k/s.
                    j = sent % len(users)
                    if fixed:
                        value = template.value(uuid.uuid4().hex.encode(), keys[j], item_bytes[j])
                        producer.send_raw(keys[j], value)
                    else:
                        producer.send(new_event(users[j], items[j], "play", value=120.0))
                sent += 1
            time.sleep(0.001)
        send_s = time.monotonic() - started
    own_cpu = (cpu_seconds("self") - cpu0) / send_s
    deadline = time.monotonic() + grace_s
    while watcher.pending() and time.monotonic() < deadline:
        time.sleep(0.01)
    watcher.halt.set()
    watcher.join(timeout=5)
    lat = np.array([v[0] for v in watcher.seen.values()])
    stamped = np.array([v[1] for v in watcher.seen.values()])
    missing = probes - len(lat)
    # The tail by when the probe was sent: a warm-up transient and a steady queue look alike
    # in one p99, and not at all alike here.
    windows: list[float] = []
    sent_at = np.array([v[2] - started for v in watcher.seen.values()])
    for lo in np.arange(0.0, send_s, 5.0):
        inside = lat[(sent_at >= lo) & (sent_at < lo + 5.0)]
        windows.append(round(float(np.percentile(inside, 99)), 1) if len(inside) else float("nan"))

    def pct(a: np.ndarray, q: float) -> float | None:
        # A probe never seen counts as slower than every seen one.
        if len(a) == 0 or missing > len(a) * (100 - q) / q:
            return None
        full = np.concatenate([a, np.full(missing, np.inf)])
        return round(float(np.percentile(full, q)), 1)

    return {
        "sent": sent,
        "send_rate": sent / send_s,
        "load_generator_cpu_share": own_cpu,
        "probes": probes,
        "probes_missing": missing,
        "p50_ms": pct(lat, 50),
        "p99_ms": pct(lat, 99),
        "max_ms": round(float(lat.max()), 1) if len(lat) and not missing else None,
        "stamped_p50_ms": pct(stamped, 50),
        "stamped_p99_ms": pct(stamped, 99),
        "p99_ms_by_5s": windows,
    }


def print_profile(path: Path, top: int) -> None:
    import pstats

    print(f"--- worker profile ({path}), top {top} by cumulative time ---")
    stats = pstats.Stats(str(path), stream=sys.stdout)
    stats.sort_stats("cumulative").print_stats(top)
    print(f"--- top {top} by own time ---")
    stats.sort_stats("tottime").print_stats(top)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200_000, help="throughput phase events")
    ap.add_argument("--rate", type=float, default=TARGET_EVENTS_PER_S / 2, help="latency phase")
    ap.add_argument("--duration", type=float, default=20.0, help="latency phase seconds")
    ap.add_argument("--probe-every", type=int, default=100, help="1 probe per this many events")
    ap.add_argument("--workers", type=int, default=1, help="worker processes (one group)")
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--factors", type=int, default=64)
    ap.add_argument("--users", type=int, default=100_000, help="user pool the events draw from")
    ap.add_argument("--user-zipf", type=float, default=0.8)
    ap.add_argument("--item-zipf", type=float, default=0.8)
    ap.add_argument("--drain-timeout", type=float, default=120.0)
    ap.add_argument("--grace", type=float, default=10.0, help="wait for late probes (s)")
    ap.add_argument(
        "--probe-poll-ms",
        type=float,
        default=5.0,
        help="how often the probe watcher reads Redis (a latency is late by half of it on "
        "average; every 1 ms cost the machine the worker's headroom)",
    )
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--kafka", default="127.0.0.1:9092")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--profile", type=Path, help="run the worker under cProfile, write here")
    ap.add_argument("--profile-top", type=int, default=30)
    ap.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the worker (e.g. OPENBLAS_NUM_THREADS=1); repeatable",
    )
    ap.add_argument("--keep", action="store_true", help="keep topics, keys and files")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    rid = run_id("e2e")
    work = Path(tempfile.mkdtemp(prefix=f"{rid}-"))
    names = run_names(rid, work, args.kafka, args.redis)
    settings = load_settings(**names)
    env = worker_env(names)
    extra: dict[str, str] = {}
    for item in args.worker_env:
        name, sep, value = item.partition("=")
        if not sep or not name:
            ap.error(f"--worker-env wants NAME=VALUE, got {item!r}")
        extra[name] = value
    print(machine_line())
    print(
        f"settings: workers={args.workers} events={args.events} rate={args.rate:g}/s "
        f"duration={args.duration:g}s "
        f"items={args.items} k={args.factors} users={args.users} zipf(user)={args.user_zipf} "
        f"zipf(item)={args.item_zipf} probe 1/{args.probe_every} batch_max="
        f"{settings.batch_max} poll_timeout={settings.poll_timeout_s}s "
        f"partitions={settings.topic_events_partitions} run={rid}"
        + (f" worker env {' '.join(args.worker_env)}" if args.worker_env else "")
    )

    client = connect_or_skip(settings, work)

    figures: dict[str, Any] = {
        "bench": "e2e",
        **machine_fields(),
        "items": args.items,
        "factors": args.factors,
        "events": args.events,
        "rate": args.rate,
        "duration_s": args.duration,
    }
    workers: Workers | None = None
    offsets: Offsets | None = None
    try:
        item_ids, pop = make_model(work / "model", args.items, args.factors, args.seed)
        rng = np.random.default_rng(args.seed)
        n_draw = max(args.events, int(args.rate * args.duration))
        u_idx = zipf_choice(rng, args.users, args.user_zipf, n_draw)
        i_idx = zipf_choice(rng, args.items, args.item_zipf, n_draw)
        users = [f"user-{u:07d}" for u in u_idx]
        items = [item_ids[i] for i in i_idx]
        offsets = Offsets(settings, client)

        if not args.skip_throughput:
            messages = encode_all(users[: args.events], items[: args.events])
            # The group forms first (a worker joining a group that is already consuming is a
            # rebalance, not throughput); the pre-encoded events are then produced while the
            # workers consume them, the producer's CPU included.
            workers = Workers(env, extra, work, args.profile, args.workers)
            wait_group(offsets, args.workers)
            produce_s = produce_all(settings, messages)
            total = offsets.end()
            distinct = len(set(users[: args.events]))
            print(
                f"produced {total} events in {produce_s:.1f}s "
                f"({args.events / produce_s:,.0f}/s), {distinct} distinct users"
            )
            d = drain(workers, offsets, total, args.drain_timeout)
            print(
                f"worker drained {d['events_measured']} events in {d['seconds']:.1f}s: "
                f"{d['events_per_s']:,.0f} events/s (startup {d['startup_s']:.1f}s; worker "
                f"CPU {d['worker_cpu_share']:.0%} of a core, machine busy "
                f"{d['machine_busy']:.0%}; {d['events_per_worker_cpu_s'] or 0:,.0f} events "
                f"per worker CPU-second)" + ("" if d["drained"] else " NOT DRAINED")
            )
            shares = ", ".join(f"{k} {v:.0%}" for k, v in d["threads"].items())
            print(f"worker CPU by thread (share of a core): {shares}")
            figures.update(
                {
                    "producer_events_per_s": round(args.events / produce_s),
                    "distinct_users": distinct,
                    "worker_events_per_s": round(d["events_per_s"]),
                    "drained": d["drained"],
                    "worker_startup_s": round(d["startup_s"], 2),
                    "worker_threads_cpu_share": d["threads"],
                    "worker_cpu_share": round(d["worker_cpu_share"], 3),
                    "events_per_worker_cpu_s": round(d["events_per_worker_cpu_s"] or 0),
                    "machine_busy": round(d["machine_busy"], 3),
                    "worker_vs_producer": round(d["events_per_s"] * produce_s / args.events, 3),
                    "throughput_target_met": d["events_per_s"] >= TARGET_EVENTS_PER_S,
                }
            )

        if not args.skip_latency:
            if workers is None:
                workers = Workers(env, extra, work, args.profile, args.workers)
                # Wait for the worker to join the group: one warm-up probe, bounded.
                warm = paced(settings, client, users, items, item_ids[0], 10, 1.0, 1, 30, "w")
                if warm["probes_missing"]:
                    raise RuntimeError("the worker did not answer a warm-up probe in 30 s")
            wait_group(offsets, args.workers)  # a rebalance is not latency
            before = offsets.end()
            lp = paced(
                settings,
                client,
                users,
                items,
                item_ids[int(np.argmax(pop))],
                args.rate,
                args.duration,
                args.probe_every,
                args.grace,
                "p",
                args.probe_poll_ms / 1000,
            )
            workers.check()
            lag = offsets.end() - offsets.applied()

            def ms(v: float | None) -> str:
                return f"{v:.0f} ms" if v is not None else f"> {args.grace:g} s (unseen)"

            print(
                f"paced {lp['sent']} events at {lp['send_rate']:,.0f}/s: event->Redis p50 "
                f"{ms(lp['p50_ms'])}, p99 {ms(lp['p99_ms'])}, max {ms(lp['max_ms'])} over "
                f"{lp['probes']} probes ({lp['probes_missing']} not seen {args.grace:g} s "
                f"after the last send); worker-stamped p50 {ms(lp['stamped_p50_ms'])}, p99 "
                f"{ms(lp['stamped_p99_ms'])}; lag then {lag} of {offsets.end() - before} "
                f"events; this load generator used {lp['load_generator_cpu_share']:.0%} of a core"
            )
            print("p99 by 5 s of sending: " + ", ".join(f"{v:.0f}" for v in lp["p99_ms_by_5s"])
                  + " ms")  # fmt: skip
            p99 = lp["p99_ms"]
            figures.update(
                {
                    "paced_send_rate": round(lp["send_rate"]),
                    "load_generator_cpu_share": round(lp["load_generator_cpu_share"], 3),
                    "probes": lp["probes"],
                    "probes_missing": lp["probes_missing"],
                    "latency_p50_ms": lp["p50_ms"],
                    "latency_p99_ms": p99,
                    "latency_max_ms": lp["max_ms"],
                    "stamped_p50_ms": lp["stamped_p50_ms"],
                    "stamped_p99_ms": lp["stamped_p99_ms"],
                    "latency_p99_ms_by_5s": lp["p99_ms_by_5s"],
                    "lag_after": lag,
                    "latency_target_met": p99 is not None and p99 <= TARGET_P99_MS,
                }
            )

        if workers is not None:
            workers.check()
            figures["worker_rss_mib"] = [round(rss_bytes(p) / MIB, 1) for p in workers.pids]
            figures["worker_peak_rss_mib"] = [
                round(peak_rss_bytes(p) / MIB, 1) for p in workers.pids
            ]
            print(
                f"worker RSS {figures['worker_rss_mib']} MiB, peak (VmHWM) "
                f"{figures['worker_peak_rss_mib']} MiB"
            )
    finally:
        if workers is not None:
            workers.stop()
        if offsets is not None:
            offsets.close()
        if not args.keep:
            gone = delete_redis_prefix(client, rid)
            delete_topics(
                args.kafka,
                [
                    names["topic_events"],
                    names["topic_dlq"],
                    names["topic_models"],
                    names["topic_items"],
                ],
                group=rid,
            )
            print(f"cleanup: {gone} Redis keys, 4 topics and group {rid} deleted")
    if args.profile is not None:
        first = (
            args.profile if args.workers == 1 else args.profile.with_name(args.profile.name + ".1")
        )
        if first.exists():
            print_profile(first, args.profile_top)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    emit(figures)


if __name__ == "__main__":
    main()
