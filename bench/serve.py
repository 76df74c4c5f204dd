"""The serving API on one core: requests/s and p50/p99 latency, with and without filters.

    python bench/serve.py [--items 20000 200000] [--users 1000] [--seconds 8] [--runs 3]
                          [--concurrency 4] [--rate 1000]

Needs Kafka and Redis (``streamrec infra up``). Per catalogue size: a random model (k=64,
float32, written as an artifact), a catalog of every item (one of 20 categories, a year from
1950 to 2025, 95% available) published to its own compacted items topic, and ``--users``
users whose lists and vectors are written by the worker's own code (``Scorer`` + ``Sink``).
Then ``streamrec serve`` runs as its own process with one uvicorn worker, pinned to CPU 0
(``taskset``) where the machine has two or more; the load generator (asyncio, keep-alive
HTTP/1.1, ``--concurrency`` connections) is pinned to CPU 1. Kafka and Redis share the cores.

Variants, each ``--runs`` times, alternating (one run of each, then the next round):

- ``livez``: the framework's floor (no Redis, no scoring): the baseline of this run;
- ``stored``: ``/v1/recommend/<user>?n=20``: served from the stored list (one MGET);
- ``category``: ``...&category=<c>``: one category of 20 (1/20 of the items): the stored
  top-50 holds ~2-3 matches, so the filtered catalog is scored with the user's vector;
- ``category+year``: ``...&category=<c>&year_min=1990&year_max=2010``;
- ``no-vector``: an unknown user with a category: the filtered popular list.

Closed loop: throughput at ``--concurrency`` connections, latency of every request, and the
requests per CPU-second of the server process (its utime + stime over the run): the capacity
of one core, which the machine's other load inflates less than throughput or latency. Then,
for ``category``, an open loop at ``--rate`` requests/s (latency at the goal's rate).
Goal (issue 13): p99 < 20 ms and >= 1,000 requests/s per core at 20k items with a category
filter. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import (
    cpu_seconds,
    delete_redis_prefix,
    delete_topics,
    emit,
    machine_fields,
    machine_line,
)
from _common import run_id as make_run_id

from streamrec.als.scorer import Scorer
from streamrec.artifact import load_model, write_model
from streamrec.catalog import Item, encode_item
from streamrec.connect import ensure_topics, redis_client
from streamrec.errors import InfraError
from streamrec.keys import Keys
from streamrec.settings import load_settings
from streamrec.sink import Sink

CATEGORIES = 20
K = 64
GOAL_RPS = 1000
GOAL_P99_MS = 20.0


def build(items: int, users: int, work: Path, seed: int) -> tuple[Path, list[Item], dict]:
    """A random model, its catalog and the users' histories."""
    rng = np.random.default_rng(seed)
    ids = [f"item-{i:07d}" for i in range(items)]
    factors = (rng.standard_normal((items, K)) * 0.1).astype(np.float32)
    popularity = rng.pareto(1.2, items).astype(np.float32)
    params = {"factors": K, "regularization": 0.1, "alpha": 10.0, "iterations": 1,
              "transform": "log", "seed": seed}  # fmt: skip
    path = write_model(work / f"model-{items}", ids, factors, popularity, params,
                       extra={"version": f"bench-{items}"})  # fmt: skip
    cats = rng.integers(0, CATEGORIES, items)
    years = rng.integers(1950, 2026, items)
    avail = rng.random(items) < 0.95
    catalog = [Item(ids[i], f"Item {i}", (f"c{cats[i]:02d}",), int(years[i]), bool(avail[i]),
                    {}, 1_700_000_000_000) for i in range(items)]  # fmt: skip
    histories = {
        f"user-{u:05d}": {ids[int(i)]: float(rng.integers(1, 5))
                          for i in rng.integers(0, items, int(rng.integers(5, 40)))}
        for u in range(users)
    }  # fmt: skip
    return path, catalog, histories


def write_users(settings: Any, model_dir: Path, histories: dict) -> None:
    """Lists and vectors as the worker writes them (its Scorer and Sink)."""
    model = load_model(model_dir)
    scorer = Scorer.create(model, n=settings.top_n)
    client = redis_client(settings)
    sink = Sink(client, Keys(settings.redis_prefix), settings.recs_ttl_s, settings.history_ttl_s)
    users = list(histories)
    for lo in range(0, len(users), 256):
        part = {u: histories[u] for u in users[lo : lo + 256]}
        scored = scorer.score(part)
        sink.write(scorer.values(scored, int(time.time() * 1000)), transaction=False,
                   vecs=scorer.vecs(scored))  # fmt: skip
    sink.close()


def publish_catalog(settings: Any, catalog: list[Item]) -> None:
    from confluent_kafka import Producer

    p = Producer({**settings.kafka_common(), "linger.ms": 20, "compression.type": "lz4",
                  "queue.buffering.max.messages": 500_000})  # fmt: skip
    for item in catalog:
        while True:
            try:
                p.produce(settings.topic_items, key=item.item_id.encode(), value=encode_item(item))
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    if p.flush(120):
        raise InfraError("the catalog was not delivered within 120 s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(env: dict[str, str], port: int, pin: str | None, log: Path) -> Any:
    cmd = [sys.executable, "-m", "streamrec", "serve", "--workers", "1",
           "--bind", f"127.0.0.1:{port}"]  # fmt: skip
    if pin is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", pin, *cmd]
    out = log.open("ab")
    proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamrec serve exited with {proc.returncode}; see {log}")
        try:
            status, _ = asyncio.run(one(port, "/readyz"))
            if status == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"streamrec serve not ready within 180 s; see {log}")


async def one(port: int, path: str) -> tuple[int, bytes]:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        w.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        return await _response(r)
    finally:
        w.close()


async def _response(r: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await r.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    body = await r.readexactly(length) if length else b""
    return status, body


async def load(
    port: int, paths: list[str], seconds: float, conc: int, rate: float | None
) -> tuple[list[float], int, float]:
    """Latencies (s) of every request, errors, elapsed: ``conc`` keep-alive connections in a
    closed loop, or (``rate``) requests started at that pace, each on a free connection."""
    lat: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds
    pool: asyncio.Queue = asyncio.Queue()
    for _ in range(conc):
        pool.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    counter = 0

    async def request(due: float) -> None:
        nonlocal errors, counter
        r, w = await pool.get()
        path = paths[counter % len(paths)]
        counter += 1
        try:
            w.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            status, _ = await _response(r)
            lat.append(time.perf_counter() - due)
            if status != 200:
                errors += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            errors += 1  # the server closed the connection (e.g. its keep-alive timeout)
            w.close()
            r, w = await asyncio.open_connection("127.0.0.1", port)
        finally:
            pool.put_nowait((r, w))

    started = time.perf_counter()
    if rate is None:

        async def loop() -> None:
            while time.perf_counter() < stop:
                await request(time.perf_counter())

        await asyncio.gather(*(loop() for _ in range(conc)))
    else:
        tasks = []
        n = 0
        while True:
            due = started + n / rate
            if due >= stop:
                break
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(request(due)))  # latency from when it was due
            n += 1
        # A server slower than the rate leaves a queue: what is not answered within another
        # ``seconds`` is cancelled and counted as errors (the run stays bounded).
        _done, late = await asyncio.wait(tasks, timeout=seconds)
        for t in late:
            t.cancel()
        errors += len(late)
    elapsed = time.perf_counter() - started
    while not pool.empty():
        _, w = pool.get_nowait()
        w.close()
    return lat, errors, elapsed


def pin_self(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > cpu:
        os.sched_setaffinity(0, {cpu})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, nargs="+", default=[20_000, 200_000])
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=8.0, help="per run")
    ap.add_argument("--runs", type=int, default=3, help="runs of every variant")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--rate", type=float, default=GOAL_RPS, help="open-loop rate; 0 = skip")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    # SIGTERM as an exception: the server process, the keys and the topic are still cleaned up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    base = load_settings()
    rid = make_run_id("serve")
    work = Path(tempfile.mkdtemp(prefix=f"{rid}-"))
    pinned = (os.cpu_count() or 1) >= 2
    print(machine_line())
    print(f"settings: items={args.items} users={args.users} k={K} categories={CATEGORIES} "
          f"seconds={args.seconds} runs={args.runs} concurrency={args.concurrency} "
          f"rate={args.rate} server pinned to CPU 0 and load to CPU 1: {pinned}")  # fmt: skip
    results: dict[str, Any] = {}
    try:
        for items in args.items:
            tag = f"{rid}-{items}"
            settings = base.model_copy(update={"redis_prefix": tag,
                                               "topic_items": f"{tag}.items"})  # fmt: skip
            try:
                ensure_topics(settings, {settings.topic_items: 1})
            except InfraError as exc:
                print(f"skipped: {exc}")
                sys.exit(3)
            t0 = time.monotonic()
            model_dir, catalog, histories = build(items, args.users, work, args.seed)
            write_users(settings, model_dir, histories)
            publish_catalog(settings, catalog)
            print(f"{items} items: model, {len(catalog)} catalog records and {len(histories)} "
                  f"users' lists + vectors in {time.monotonic() - t0:.1f} s")  # fmt: skip
            port = free_port()
            env = {**os.environ, "STREAMREC_REDIS_PREFIX": tag,
                   "STREAMREC_TOPIC_ITEMS": settings.topic_items,
                   "STREAMREC_MODEL_PATH": str(model_dir),
                   "STREAMREC_CREATE_TOPICS": "false", "STREAMREC_LOG_FORMAT": "text",
                   "OPENBLAS_NUM_THREADS": "1"}  # fmt: skip
            server = start_server(env, port, "0" if pinned else None, work / "serve.log")
            if pinned:
                pin_self(1)
            try:
                results[str(items)] = measure(port, list(histories), args, server.pid)
            finally:
                server.terminate()
                try:
                    server.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    server.kill()
                if pinned and hasattr(os, "sched_setaffinity"):
                    os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
                delete_redis_prefix(redis_client(settings), tag)
                delete_topics(settings.kafka_bootstrap, [settings.topic_items])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    small = results.get("20000", {}).get("category", {})
    met = bool(small) and small["rps_median"] >= GOAL_RPS and small["p99_ms_median"] < GOAL_P99_MS
    print(f"goal at 20k items with a category filter (>= {GOAL_RPS} req/s, p99 < "
          f"{GOAL_P99_MS:g} ms): {'met' if met else 'not met'}")  # fmt: skip
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    emit({"bench": "serve", **machine_fields(), "users": args.users, "k": K,
          "load_end": [round(x, 2) for x in os.getloadavg()],
          "concurrency": args.concurrency, "pinned": pinned, "results": results,
          "goal_met": met})  # fmt: skip


def measure(port: int, users: list[str], args: argparse.Namespace, pid: int) -> dict[str, Any]:
    rng = np.random.default_rng(args.seed + 7)
    picks = [users[int(i)] for i in rng.integers(0, len(users), 5000)]
    cats = [f"c{int(c):02d}" for c in rng.integers(0, CATEGORIES, 5000)]
    variants = {
        "livez": ["/livez"],
        "stored": [f"/v1/recommend/{u}?n=20" for u in picks],
        "category": [f"/v1/recommend/{u}?n=20&category={c}" for u, c in zip(picks, cats,
                                                                          strict=True)],
        "category+year": [f"/v1/recommend/{u}?n=20&category={c}&year_min=1990&year_max=2010"
                          for u, c in zip(picks, cats, strict=True)],
        "no-vector": [f"/v1/recommend/nobody-{i}?n=20&category={c}"
                      for i, c in enumerate(cats)],
    }  # fmt: skip
    # warm-up: every filter's candidate rows built once, connections open
    asyncio.run(load(port, variants["category+year"][:400], 1.0, args.concurrency, None))
    runs: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    for r in range(args.runs):
        for name, paths in variants.items():
            cpu0 = cpu_seconds(pid)
            lat, errors, elapsed = asyncio.run(load(port, paths, args.seconds,
                                                    args.concurrency, None))  # fmt: skip
            cpu = cpu_seconds(pid) - cpu0
            a = np.asarray(lat) * 1000
            one_run = {"rps": len(lat) / elapsed, "p50_ms": float(np.percentile(a, 50)),
                       "p99_ms": float(np.percentile(a, 99)), "errors": errors,
                       "per_cpu_s": len(lat) / cpu if cpu > 0 else 0.0}  # fmt: skip
            runs[name].append(one_run)
            print(f"  run {r + 1} {name:<14} {one_run['rps']:>8,.0f} req/s  "
                  f"p50 {one_run['p50_ms']:6.2f} ms  p99 {one_run['p99_ms']:6.2f} ms  "
                  f"{one_run['per_cpu_s']:>7,.0f} req/CPU-s  errors {errors}")  # fmt: skip
    out: dict[str, Any] = {}
    for name, rs in runs.items():
        out[name] = {
            "rps": [round(x["rps"]) for x in rs],
            "p50_ms": [round(x["p50_ms"], 2) for x in rs],
            "p99_ms": [round(x["p99_ms"], 2) for x in rs],
            "per_cpu_s": [round(x["per_cpu_s"]) for x in rs],
            "errors": sum(int(x["errors"]) for x in rs),
            "rps_median": round(float(np.median([x["rps"] for x in rs]))),
            "p99_ms_median": round(float(np.median([x["p99_ms"] for x in rs])), 2),
        }
    if args.rate:
        paced = []
        for _ in range(args.runs):
            conc = max(8, args.concurrency)
            lat, errors, elapsed = asyncio.run(
                load(port, variants["category"], args.seconds, conc, args.rate)
            )
            a = np.asarray(lat) * 1000
            paced.append({"rps": len(lat) / elapsed, "p50_ms": float(np.percentile(a, 50)),
                          "p99_ms": float(np.percentile(a, 99)), "errors": errors})  # fmt: skip
            last = paced[-1]
            print(f"  paced {args.rate:g}/s category: {last['rps']:,.0f} req/s  "
                  f"p50 {last['p50_ms']:.2f} ms  p99 {last['p99_ms']:.2f} ms")  # fmt: skip
        out["category_paced"] = {
            "rate": args.rate,
            "p50_ms": [round(x["p50_ms"], 2) for x in paced],
            "p99_ms": [round(x["p99_ms"], 2) for x in paced],
            "errors": sum(int(x["errors"]) for x in paced),
        }
    return out


if __name__ == "__main__":
    main()
