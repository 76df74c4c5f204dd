"""Redis list writes: JSON strings (SET EX) vs sorted sets (ZADD + EXPIRE), same data, same run.

    python bench/redis_writes.py [--lists 100000] [--n 50] [--batch 1000]

Needs Redis (``streamrec infra up``); writes under its own prefix and deletes it at the end.
Each list is ``--n`` (item_id, score) pairs for one user. Compares, pipelined ``--batch`` lists
per round trip (no transaction unless said):

  * encoding only: stdlib ``json`` exactly as the contract's value (scores rounded to 6
    significant digits per item, as ``streamrec.keys``) vs orjson with the rounding done by
    numpy (when orjson is installed; both decode to the same object);
  * writing pre-encoded values: SET EX; SET EX inside MULTI/EXEC (the worker's transaction);
    SET EX sent as hand-packed RESP (the floor of client overhead); sorted sets
    (DEL + ZADD n members + EXPIRE, so a write replaces the old list as SET does);
  * encode + SET EX together, as a worker does, for each encoder (and orjson + hand-packed).

Reports lists/s for each (best of ``--repeat``), Redis's own CPU per list and its memory per
list. Ends with one JSON line of the figures.
Target (issue): >= 100k JSON lists/s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import redis
from _common import cpu_seconds, delete_redis_prefix, emit, machine_fields, machine_line, run_id

from streamrec.connect import redis_client
from streamrec.errors import InfraError
from streamrec.keys import Keys, ListEncoder, vec_values
from streamrec.settings import load_settings
from streamrec.sink import Sink

TARGET_LISTS_PER_S = 100_000


def make_lists(
    count: int, n: int, items: int, seed: int
) -> tuple[list[str], list[list[str]], np.ndarray]:
    """``count`` users, each with ``n`` item ids and float32 scores (best first), as the scorer
    hands them over: ids per user and one (count, n) score array."""
    rng = np.random.default_rng(seed)
    ids = [f"item-{i:06d}" for i in range(items)]
    users = [f"user-{u:07d}" for u in range(count)]
    # Distinct items per list: a random start plus strictly increasing offsets below ``items``.
    steps = rng.integers(1, max(2, items // n), size=(count, n))
    picks = rng.integers(0, items, size=(count, 1)) + np.cumsum(steps, axis=1) - steps[:, :1]
    picks %= items
    scores = -np.sort(-rng.random((count, n)).astype(np.float32) * 2.0, axis=1)
    return users, [[ids[i] for i in row] for row in picks], scores


def encode_json(
    users: list[str], items: list[list[str]], scores: np.ndarray, version: str, now_ms: int
) -> list[bytes]:
    """The contract's values, as ``streamrec.keys.recs_value`` builds them (stdlib json, each
    score rounded to 6 significant digits with ``f"{s:.6g}"``)."""
    out = []
    for user, ids, row in zip(users, items, scores, strict=True):
        out.append(json.dumps(
            {
                "user_id": user,
                "items": [{"item_id": i, "score": float(f"{float(s):.6g}")}
                          for i, s in zip(ids, row, strict=True)],
                "model_version": version,
                "updated_at_ms": now_ms,
            },
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode())  # fmt: skip
    return out


def round6(scores: np.ndarray) -> np.ndarray:
    """Scores rounded to 6 significant digits, vectorised (the same floats as ``f'{s:.6g}'``)."""
    s = np.asarray(scores, dtype=np.float64)
    mag = np.floor(np.log10(np.where(s == 0, 1.0, np.abs(s))))
    exp = (5 - mag).astype(np.int64)
    up = exp >= 0
    # m / 10**e is correctly rounded, so the float printed is the 6-digit decimal itself.
    scale = 10.0 ** np.abs(exp)
    return np.where(up, np.round(s * scale) / scale, np.round(s / scale) * scale)


Encoder = Callable[[list[str], list[list[str]], np.ndarray, str, int], list[bytes]]


def make_encode_orjson() -> Encoder | None:
    try:
        import orjson
    except ImportError:
        return None
    dumps = orjson.dumps

    def encode_orjson(
        users: list[str], items: list[list[str]], scores: np.ndarray, version: str, now_ms: int
    ) -> list[bytes]:
        rounded = round6(scores).tolist()  # one vectorised pass for the whole batch
        return [
            dumps({"user_id": user,
                   "items": [{"item_id": i, "score": s} for i, s in zip(ids, row, strict=True)],
                   "model_version": version, "updated_at_ms": now_ms})
            for user, ids, row in zip(users, items, rounded, strict=True)
        ]  # fmt: skip

    return encode_orjson


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lists", type=int, default=100_000)
    ap.add_argument("--n", type=int, default=50, help="items per list")
    ap.add_argument("--items", type=int, default=20_000, help="catalogue the items come from")
    ap.add_argument("--batch", type=int, default=1000, help="lists per pipeline round trip")
    ap.add_argument("--ttl", type=int, default=7 * 24 * 3600)
    ap.add_argument("--repeat", type=int, default=3, help="runs per variant; the best counts")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    prefix = run_id("redis")
    settings = load_settings(redis_url=args.redis, redis_prefix=prefix)
    try:
        client = redis_client(settings)
    except InfraError as exc:
        print(f"skipped: {exc}")
        sys.exit(3)
    info = client.info("server")
    encode_orjson = make_encode_orjson()
    print(machine_line())
    print(f"redis {info.get('redis_version')} at {args.redis} (same machine); redis-py "
          f"{redis.__version__}; orjson "
          f"{'yes' if encode_orjson else 'no (skipped: pip install orjson)'}")  # fmt: skip
    print(f"settings: lists={args.lists} n={args.n} batch={args.batch} ttl={args.ttl}s "
          f"prefix={prefix}")  # fmt: skip

    users, items, scores = make_lists(args.lists, args.n, args.items, args.seed)
    version, now_ms = "20261124T000000Z-bench000", int(time.time() * 1000)
    L, b = args.lists, args.batch
    res: dict[str, float] = {}
    mem: dict[str, float] = {}
    server_us: dict[str, float] = {}
    redis_pid = int(info.get("process_id") or 0)  # a local server's CPU time can be read
    local = redis_pid > 0 and os.path.exists(f"/proc/{redis_pid}/stat")

    def rate(name: str, seconds: float) -> None:
        res[name] = L / seconds
        print(f"{name:<34}: {L / seconds:>12,.0f} lists/s")

    def write(name: str, tag: str, fn: Callable[[], None], memory: bool = False) -> None:
        """Best of ``--repeat`` runs of ``fn`` (which writes ``<prefix>:<tag>:*``); the keys
        are deleted after each run, so every run starts from the same state."""
        best, cpu_best = float("inf"), 0.0
        for r in range(args.repeat):
            cpu0 = cpu_seconds(redis_pid) if local else 0.0
            seconds = timed(fn)[0]
            cpu = cpu_seconds(redis_pid) - cpu0 if local else 0.0
            if seconds < best:
                best, cpu_best = seconds, cpu
            if memory and r == 0:
                sample_memory(name, tag)
            delete_redis_prefix(client, f"{prefix}:{tag}")
        note = ""
        if local:
            server_us[name] = cpu_best / L * 1e6
            note = f"   (redis-server CPU {server_us[name]:.1f} us/list)"
        res[name] = L / best
        print(f"{name:<34}: {L / best:>12,.0f} lists/s{note}")

    def best_of(fn: Callable[[], Any]) -> tuple[float, Any]:
        runs = [timed(fn) for _ in range(args.repeat)]
        return min(r[0] for r in runs), runs[0][1]

    def batches(enc: Encoder) -> list[bytes]:
        out: list[bytes] = []
        for lo in range(0, L, b):
            out += enc(users[lo : lo + b], items[lo : lo + b], scores[lo : lo + b], version,
                       now_ms)  # fmt: skip
        return out

    def sample_memory(name: str, tag: str) -> None:
        pipe = client.pipeline(transaction=False)
        for u in users[:: max(1, L // 200)]:
            pipe.memory_usage(f"{prefix}:{tag}:{u}", samples=0)
        got = [v for v in pipe.execute() if v is not None]
        mem[name] = float(np.mean(got)) if got else float("nan")

    same = None
    try:
        # --- encoding only ------------------------------------------------------------------
        s, encoded = best_of(lambda: batches(encode_json))
        rate("encode json (stdlib, as keys.py)", s)
        if encode_orjson is not None:
            enc = encode_orjson
            s, fast = best_of(lambda: batches(enc))
            rate("encode orjson + numpy rounding", s)
            same = all(json.loads(x) == json.loads(y) for x, y in zip(encoded, fast, strict=True))
            print(f"orjson values decode to the same objects: {same}")
        print(f"value size: {np.mean([len(v) for v in encoded]):.0f} bytes")

        # --- writing pre-encoded values -----------------------------------------------------
        def set_ex(tag: str, values: list[bytes], transaction: bool) -> None:
            for lo in range(0, L, b):
                pipe = client.pipeline(transaction=transaction)
                for u, v in zip(users[lo : lo + b], values[lo : lo + b], strict=True):
                    pipe.set(f"{prefix}:{tag}:{u}", v, ex=args.ttl)
                pipe.execute()

        # An untimed round first, so that no variant pays for Redis growing its memory.
        set_ex("warm", encoded, False)
        delete_redis_prefix(client, f"{prefix}:warm")

        write("SET EX (pipeline)", "json", lambda: set_ex("json", encoded, False), memory=True)
        write("SET EX (MULTI/EXEC)", "tx", lambda: set_ex("tx", encoded, True))

        ttl = str(args.ttl).encode()

        def set_raw(tag: str = "raw", enc: Encoder | None = None) -> None:
            conn = client.connection_pool.get_connection()
            try:
                for lo in range(0, L, b):
                    us = users[lo : lo + b]
                    values = (encoded[lo : lo + b] if enc is None
                              else enc(us, items[lo : lo + b], scores[lo : lo + b], version,
                                       now_ms))  # fmt: skip
                    parts = []
                    for u, v in zip(us, values, strict=True):
                        k = f"{prefix}:{tag}:{u}".encode()
                        parts.append(b"*5\r\n$3\r\nSET\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n"
                                     b"$2\r\nEX\r\n$%d\r\n%b\r\n"
                                     % (len(k), k, len(v), v, len(ttl), ttl))  # fmt: skip
                    conn.send_packed_command([b"".join(parts)])
                    for _ in range(len(parts)):
                        conn.read_response()
            finally:
                client.connection_pool.release(conn)

        raw = None

        def set_raw_checked() -> None:
            nonlocal raw
            set_raw()
            raw = client.get(f"{prefix}:raw:{users[0]}")

        write("SET EX (hand-packed RESP)", "raw", set_raw_checked)
        if raw is None or json.loads(raw) != json.loads(encoded[0]):
            raise RuntimeError("the hand-packed SET did not store the value")

        def zadd() -> None:
            for lo in range(0, L, b):
                pipe = client.pipeline(transaction=False)
                for u, ids, row in zip(users[lo : lo + b], items[lo : lo + b],
                                       scores[lo : lo + b].tolist(), strict=True):  # fmt: skip
                    key = f"{prefix}:z:{u}"
                    pipe.delete(key)
                    pipe.zadd(key, dict(zip(ids, row, strict=True)))
                    pipe.expire(key, args.ttl)
                pipe.execute()

        got: list[str] = []

        def zadd_checked() -> None:
            zadd()
            members = client.zrevrange(f"{prefix}:z:{users[0]}", 0, -1)
            got[:] = [m.decode() if isinstance(m, bytes) else str(m) for m in members]

        write("sorted set DEL+ZADD+EXPIRE", "z", zadd_checked, memory=True)
        if got != items[0]:
            raise RuntimeError("the sorted set does not hold the list written")
        print(f"Redis memory per list: JSON string {mem['SET EX (pipeline)']:.0f} B, sorted set "
              f"{mem['sorted set DEL+ZADD+EXPIRE']:.0f} B")  # fmt: skip

        # --- encode + write, as a worker does -----------------------------------------------
        def encode_set(enc: Encoder, tag: str) -> None:
            for lo in range(0, L, b):
                us = users[lo : lo + b]
                values = enc(us, items[lo : lo + b], scores[lo : lo + b], version, now_ms)
                pipe = client.pipeline(transaction=False)
                for u, v in zip(us, values, strict=True):
                    pipe.set(f"{prefix}:{tag}:{u}", v, ex=args.ttl)
                pipe.execute()

        write("json encode + SET EX", "e1", lambda: encode_set(encode_json, "e1"))
        if encode_orjson is not None:
            enc2 = encode_orjson
            write("orjson encode + SET EX", "e2", lambda: encode_set(enc2, "e2"))
            write("orjson encode + hand-packed SET EX", "e3", lambda: set_raw("e3", enc2))

        # --- the worker's own path: batch ListEncoder + its sink's MULTI/EXEC ---------------
        catalogue = sorted({i for row in items for i in row})
        index = {item: n for n, item in enumerate(catalogue)}
        rows = np.array([[index[i] for i in row] for row in items], dtype=np.int64)
        encoder = ListEncoder(catalogue)

        def encode_all() -> list[bytes]:
            out: list[bytes] = []
            for lo in range(0, L, b):
                out += encoder.recs(users[lo : lo + b], rows[lo : lo + b], scores[lo : lo + b],
                                    version, now_ms)  # fmt: skip
            return out

        s, mine = best_of(encode_all)
        rate("encode ListEncoder (the worker's)", s)
        same_worker = all(
            json.loads(x) == json.loads(y) for x, y in zip(encoded, mine, strict=True)
        )
        print(f"ListEncoder values decode to the same objects: {same_worker}")
        sink = Sink(client, Keys(f"{prefix}:w"), args.ttl, args.ttl)

        def worker_path() -> None:
            for lo in range(0, L, b):
                us = users[lo : lo + b]
                values = encoder.recs(us, rows[lo : lo + b], scores[lo : lo + b], version, now_ms)
                sink.watch_read([f"{prefix}:w:applied"])
                if not sink.write(list(zip(us, values, strict=True)),
                                  applied=[(f"{prefix}:w:applied", lo)]):  # fmt: skip
                    raise RuntimeError("the sink's transaction was refused")

        write("worker: ListEncoder + sink MULTI/EXEC", "w", worker_path)

        # The same with each user's vector beside the list (<p>:vec:<user>, k=64 floats and a
        # 30-item history's rows), as the worker writes it for the serving API's filters.
        rng = np.random.default_rng(args.seed + 1)
        vectors = rng.standard_normal((L, 64)).astype(np.float32)
        seen_ptr = np.arange(0, 30 * (L + 1), 30, dtype=np.int64)
        seen_idx = rng.integers(0, args.items, size=30 * L).astype(np.int64)
        warm = np.ones(L, dtype=bool)
        vsink = Sink(client, Keys(f"{prefix}:wv"), args.ttl, args.ttl)

        def worker_vec_path() -> None:
            for lo in range(0, L, b):
                us = users[lo : lo + b]
                hi = min(lo + b, L)
                values = encoder.recs(us, rows[lo : lo + b], scores[lo : lo + b], version, now_ms)
                ptr = seen_ptr[lo : hi + 1]
                vecs = vec_values(us, version, vectors[lo:hi], warm[lo:hi], ptr - ptr[0],
                                  seen_idx[ptr[0] : ptr[-1]])  # fmt: skip
                vsink.watch_read([f"{prefix}:wv:applied"])
                if not vsink.write(list(zip(us, values, strict=True)), vecs=vecs,
                                   applied=[(f"{prefix}:wv:applied", lo)]):  # fmt: skip
                    raise RuntimeError("the sink's transaction was refused")

        write("worker + vectors (<p>:vec)", "wv", worker_vec_path)
        vsink.close()
        sink.close()
    finally:
        delete_redis_prefix(client, prefix)
        print(f"cleanup: every key under {prefix}: deleted")

    def r(name: str) -> int | None:
        return round(res[name]) if name in res else None

    best_write = max(res["SET EX (pipeline)"], res["SET EX (MULTI/EXEC)"])
    best_both = max(res["json encode + SET EX"], res.get("orjson encode + SET EX", 0.0))
    best_any = max(best_both, res.get("orjson encode + hand-packed SET EX", 0.0))
    worker = res.get("worker: ListEncoder + sink MULTI/EXEC", 0.0)

    def met(x: float) -> str:
        return f"{'met' if x >= TARGET_LISTS_PER_S else 'missed'} ({x:,.0f}/s)"

    raw_note = met(best_any) if encode_orjson is not None else "skipped (no orjson)"
    print(f"target {TARGET_LISTS_PER_S:,} JSON lists/s: writes alone {met(best_write)}; "
          f"encode + write {met(best_both)}; orjson + raw RESP {raw_note}; the worker's "
          f"path {met(worker)}")  # fmt: skip
    emit({
        "bench": "redis_writes", **machine_fields(), "lists": L, "n": args.n, "batch": b,
        "redis_version": info.get("redis_version"),
        "encode_json_per_s": r("encode json (stdlib, as keys.py)"),
        "encode_orjson_per_s": r("encode orjson + numpy rounding"),
        "orjson_same_objects": same,
        "set_ex_per_s": r("SET EX (pipeline)"),
        "set_ex_multi_per_s": r("SET EX (MULTI/EXEC)"),
        "set_ex_raw_resp_per_s": r("SET EX (hand-packed RESP)"),
        "zset_per_s": r("sorted set DEL+ZADD+EXPIRE"),
        "json_vs_zset": round(res["SET EX (pipeline)"] / res["sorted set DEL+ZADD+EXPIRE"], 2),
        "json_encode_set_per_s": r("json encode + SET EX"),
        "orjson_encode_set_per_s": r("orjson encode + SET EX"),
        "orjson_encode_raw_set_per_s": r("orjson encode + hand-packed SET EX"),
        "encode_list_encoder_per_s": r("encode ListEncoder (the worker's)"),
        "worker_encode_and_write_per_s": r("worker: ListEncoder + sink MULTI/EXEC"),
        "worker_with_vectors_per_s": r("worker + vectors (<p>:vec)"),
        "bytes_per_list_json": round(mem["SET EX (pipeline)"]),
        "bytes_per_list_zset": round(mem["sorted set DEL+ZADD+EXPIRE"]),
        "redis_server_us_per_list": {k: round(v, 2) for k, v in server_us.items()},
        "target_met_write": best_write >= TARGET_LISTS_PER_S,
        "target_met_encode_and_write": best_both >= TARGET_LISTS_PER_S,
        "target_met_encode_and_raw_write": best_any >= TARGET_LISTS_PER_S
        if encode_orjson is not None else None,
        "target_met_worker_path": worker >= TARGET_LISTS_PER_S,
    })  # fmt: skip


if __name__ == "__main__":
    main()
