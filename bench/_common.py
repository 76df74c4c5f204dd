"""Helpers shared by the benchmarks: machine description, the closing JSON line, RSS readings,
unique names for a run, cleanup of what a run left in Redis and Kafka, and a cheap encoder of
benchmark events (``EventTemplate``).

Benchmarks import it as ``from _common import ...``: ``python bench/X.py`` puts ``bench/`` first
on ``sys.path``.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from streamrec.events import encode_avro, new_event

MIB = 1024 * 1024


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or what ``platform`` knows)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def mem_total_gib() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / MIB
    except OSError:
        pass
    return float("nan")


def blas_info() -> list[str]:
    """BLAS libraries numpy (and anything else loaded) uses, with their thread counts."""
    from threadpoolctl import threadpool_info

    return [
        f"{i['internal_api']} {i.get('version')} ({i['num_threads']} thr)"
        for i in threadpool_info()
        if i["user_api"] == "blas"
    ]


def load_average() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def machine_line() -> str:
    """One line: CPU, cores, memory, load, Python, numpy, BLAS."""
    import numpy as np

    return (
        f"machine: {cpu_model()}, {os.cpu_count()} cores, {mem_total_gib():.1f} GiB, "
        f"load {load_average()}; Python {platform.python_version()}; numpy {np.__version__}; "
        f"BLAS {blas_info()}; code {code_revision()}"
    )


def code_revision() -> str:
    """The commit measured (``git rev-parse --short HEAD``), ``+dirty`` when the code the
    benchmarks run (streamrec, worker, producer, model) differs from it."""
    import subprocess

    repo = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            [
                "git",
                "-C",
                str(repo),
                "status",
                "--porcelain",
                "--",
                "streamrec",
                "worker",
                "producer",
                "model",
            ],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (rev or "unknown") + ("+dirty" if dirty else "")  # fmt: skip


def machine_fields() -> dict[str, Any]:
    """The machine and the code revision, for the JSON line."""
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "mem_gib": round(mem_total_gib(), 1),
            "rev": code_revision()}  # fmt: skip


def emit(figures: dict[str, Any]) -> None:
    """Print the benchmark's closing line: one JSON object, nothing after it."""
    sys.stdout.flush()
    print(json.dumps(figures), flush=True)


def proc_status(pid: int | str = "self") -> dict[str, int]:
    """The ``kB`` fields of /proc/<pid>/status (VmRSS, VmHWM, RssAnon, RssFile, ...), in bytes."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, rest = line.partition(":")
            parts = rest.split()
            if len(parts) == 2 and parts[1] == "kB":
                out[name] = int(parts[0]) * 1024
    return out


def rss_bytes(pid: int | str = "self") -> int:
    return proc_status(pid).get("VmRSS", 0)


def peak_rss_bytes(pid: int | str = "self") -> int:
    """VmHWM: the highest RSS the process has had."""
    return proc_status(pid).get("VmHWM", 0)


def smaps_rollup(pid: int | str = "self") -> dict[str, int]:
    """/proc/<pid>/smaps_rollup (Rss, Pss, Shared_Clean, Private_Dirty, ...), in bytes."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1]) * 1024
    return out


def smaps_for_file(pid: int | str, path: Path) -> dict[str, int]:
    """Summed /proc/<pid>/smaps fields (Rss, Pss, Shared_Clean, ...) of mappings of ``path``."""
    target = str(Path(path).resolve())
    out: dict[str, int] = {}
    inside = False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if not parts:
                continue
            if "-" in parts[0] and len(parts) >= 5 and not parts[0].endswith(":"):
                inside = len(parts) >= 6 and parts[5] == target
                continue
            if inside and len(parts) == 3 and parts[2] == "kB":
                key = parts[0].rstrip(":")
                out[key] = out.get(key, 0) + int(parts[1]) * 1024
    return out


def cpu_seconds(pid: int | str = "self") -> float:
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """Per thread of ``pid``: (name, utime + stime seconds); the main thread is named "main"."""
    out: dict[int, tuple[str, float]] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                raw = f.read()
        except OSError:
            continue
        name = "main" if int(tid) == pid else raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw.rpartition(")")[2].split()
        out[int(tid)] = (name, (int(fields[11]) + int(fields[12])) / tick)
    return out


def thread_cpu_delta(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
) -> dict[str, float]:
    """CPU seconds spent between two ``thread_cpu`` readings, summed per thread name."""
    out: dict[str, float] = {}
    for tid, (name, sec) in after.items():
        d = sec - before.get(tid, (name, 0.0))[1]
        out[name] = out.get(name, 0.0) + d
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs from /proc/stat; diff two readings for a utilisation."""
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    total = sum(vals[:8])
    return float(total - idle), float(total)


def run_id(name: str) -> str:
    """A name no other run uses: ``bench-<name>-<time>-<random>`` (no ':' or spaces)."""
    return f"bench-{name}-{time.strftime('%H%M%S')}-{uuid.uuid4().hex[:6]}"


def run_names(rid: str, work: Path, kafka: str, redis: str) -> dict[str, str]:
    """The settings one run owns (its topics, group, key prefix and model folder under
    ``work``) and the services it talks to, by settings field name."""
    return {
        "topic_events": f"{rid}.events",
        "topic_dlq": f"{rid}.dlq",
        "topic_models": f"{rid}.models",
        "topic_items": f"{rid}.items",
        "consumer_group": rid,
        "redis_prefix": rid,
        "model_path": str(work / "model"),
        "kafka_bootstrap": kafka,
        "redis_url": redis,
    }


def worker_env(names: dict[str, str]) -> dict[str, str]:
    """This process's environment plus ``names`` as ``STREAMREC_*`` variables: what a worker
    process started by the benchmark reads its settings from."""
    return {**os.environ, **{f"STREAMREC_{k.upper()}": v for k, v in names.items()}}


def connect_or_skip(settings: Any, work: Path) -> Any:
    """A Redis client for ``settings`` with its topics created; without the services, one
    ``skipped:`` line, ``work`` removed and exit 3 (a benchmark that cannot run measures
    nothing)."""
    import shutil

    from streamrec.connect import ensure_topics, redis_client
    from streamrec.errors import InfraError

    try:
        client = redis_client(settings)
        ensure_topics(settings)
    except InfraError as exc:
        print(f"skipped: {exc}")
        shutil.rmtree(work, ignore_errors=True)
        sys.exit(3)
    return client


def delete_redis_prefix(client: Any, prefix: str, max_rounds: int = 100_000) -> int:
    """UNLINK every key under ``<prefix>:``; returns how many. Bounded by ``max_rounds`` scans."""
    deleted = 0
    cursor = 0
    for _ in range(max_rounds):
        cursor, keys = client.scan(cursor=cursor, match=f"{prefix}:*", count=5000)
        if keys:
            deleted += int(client.unlink(*keys))
        if cursor == 0:
            break
    return deleted


def delete_topics(bootstrap: str, topics: Iterable[str], group: str | None = None) -> None:
    """Delete ``topics`` (and the consumer ``group``) on the broker; errors are printed only."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    names = list(topics)
    if group is not None:
        try:
            for fut in admin.delete_consumer_groups([group], request_timeout=15).values():
                fut.result(timeout=15)
        except Exception as exc:  # cleanup must not hide the figures
            print(f"cleanup: consumer group {group}: {exc}")
    if names:
        for topic, fut in admin.delete_topics(names, operation_timeout=15).items():
            try:
                fut.result(timeout=15)
            except Exception as exc:
                print(f"cleanup: topic {topic}: {exc}")


class EventTemplate:
    """``encode_avro`` of a play event (value 120) with a 32-character event id, a 12-character
    user id and an 11-character item id, as byte slices around those three fields."""

    def __init__(self) -> None:
        self._ms = -1
        self._parts: tuple[bytes, bytes, bytes, bytes] = (b"", b"", b"", b"")

    def value(
        self, event_id: bytes, user_id: bytes, item_id: bytes, ms: int | None = None
    ) -> bytes:
        now = int(time.time() * 1000) if ms is None else ms
        if now != self._ms:
            self._ms, self._parts = now, self._split(now)
        a, b, c, d = self._parts
        return b"".join((a, event_id, b, user_id, c, item_id, d))

    @staticmethod
    def _split(ms: int) -> tuple[bytes, bytes, bytes, bytes]:
        e, u, i = "E" * 32, "U" * 12, "I" * 11
        raw = encode_avro(new_event(u, i, "play", value=120.0, timestamp=ms, event_id=e))
        at_e, at_u, at_i = raw.index(e.encode()), raw.index(u.encode()), raw.index(i.encode())
        if not at_e < at_u < at_i:
            raise RuntimeError("event_id, user_id, item_id are not in this order in the schema")
        return (raw[:at_e], raw[at_e + 32 : at_u], raw[at_u + 12 : at_i], raw[at_i + 11 :])
