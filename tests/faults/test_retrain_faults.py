"""The nightly job SIGKILLed at each point of its run, then run again.

Each test publishes a live model V1 (a version under the models dir, every user's list, the
pointer), puts events on the topic, runs ``python -m streamrec retrain`` as a process and
SIGKILLs it at one point, found from the lines the job prints: during the final fit, during
the bulk publish of the lists, and between the pointer and the announcement. Then the pointer
must name a loadable model, every user must still have a list that parses and names a model on
disk, no half-written directory may be taken for a model, and the next retrain must promote.

For the kill between the pointer and the announcement, the announcement has to be held back:
the fault tests' own broker (``own``) is frozen with SIGSTOP once the events are read (the job
needs Kafka again only to announce), so the job moves the pointer and then waits for the
broker; it is killed there and the broker thawed. The other tests run on the session's
services with a fresh ``stack``.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from streamrec.artifact import Model, load_model
from streamrec.connect import ensure_topics, redis_client
from streamrec.events import new_event
from streamrec.infra import read_pid
from streamrec.infra.kafka import KafkaPaths
from streamrec.keys import Keys, parse_list, read_model_pointer
from streamrec.model.data import build_matrix, load_csv
from streamrec.model.params import Params
from streamrec.model.publish import publish
from streamrec.model.retrain import RetrainConfig, retrain
from streamrec.model.store import versions, write_version
from streamrec.model.train import train
from streamrec.producer.producer import EventProducer
from streamrec.settings import Settings
from streamrec.worker.loop import Worker
from tests.conftest import log_end, wait_for
from tests.faults.conftest import OwnServices

pytestmark = pytest.mark.integration

#: Enough users that publishing their lists takes most of a second: the kill "during the
#: publish" lands with nine tenths of it still to go.
USERS = 40_000
ITEMS = 300
PER_USER = 6  # a 20% holdout keeps one item per user
FAST = Params(factors=16, iterations=6, regularization=1.0, alpha=4.0)
FLAGS = ["--factors", "16", "--iterations", "6", "--regularization", "1", "--alpha", "4",
         "--tolerance", "1", "--min-lift", "0"]  # fmt: skip
LINE_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Data:
    csv: Path
    histories: dict[str, dict[str, float]]
    v1: Path  # a model fitted on it, copied into each test's models dir as the live one

    @property
    def users(self) -> list[str]:
        return list(self.histories)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Data:
    """USERS users, each playing PER_USER items of one of 12 genres (a predictable holdout)."""
    rng = np.random.default_rng(0)
    ids = [f"g{i % 12:02d}-track-{i:04d}" for i in range(ITEMS)]
    genre = [[i for i in range(ITEMS) if i % 12 == g] for g in range(12)]
    root = tmp_path_factory.mktemp("retrain-faults")
    csv = root / "plays.csv"
    histories: dict[str, dict[str, float]] = {}
    with csv.open("w") as f:
        f.write("user_id,item_id,weight\n")
        for u in range(USERS):
            user = f"user-{u:06d}"
            picks = rng.choice(genre[u % 12], size=PER_USER, replace=False)
            weights = rng.integers(1, 6, size=PER_USER)
            histories[user] = {ids[i]: float(w) for i, w in zip(picks, weights, strict=True)}
            f.writelines(f"{user},{ids[i]},{w}\n" for i, w in zip(picks, weights, strict=True))
    v1 = train(build_matrix(load_csv(csv)), FAST, root / "v1")
    return Data(csv, histories, v1.path)


def _live(s: Settings, root: Path, data: Data) -> Model:
    """V1 as a version under ``root``, published: every user's list, popular, the pointer."""
    version = json.loads((data.v1 / "manifest.json").read_text())["version"]
    shutil.copytree(data.v1, root / version)
    model = load_model(root / version)
    publish(model, s, redis_client(s), histories=data.histories, similar_n=20)
    return model


def _live_with_events(s: Settings, data: Data, tmp_path: Path) -> tuple[Path, Model, int]:
    """The start of every kill test: events on the topic, V1 live under ``tmp_path/models``;
    returns that folder, V1 and how many events were sent."""
    sent = _events(s, data)
    root = tmp_path / "models"
    return root, _live(s, root, data), sent


def _events(s: Settings, data: Data, n: int = 120) -> int:
    """``n`` plays of known users on the events topic (what the job reads besides the CSV)."""
    ensure_topics(s)
    users = data.users
    with EventProducer(s) as p:
        for k in range(n):
            user = users[k % 40]
            p.send(new_event(user, next(iter(data.histories[user])), "play", value=60.0))
    return n


def _env(s: Settings, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")}
    for name in ("kafka_bootstrap", "redis_url", "redis_prefix", "topic_events", "topic_dlq",
                 "topic_models", "topic_items", "consumer_group"):  # fmt: skip
        env[f"STREAMREC_{name.upper()}"] = str(getattr(s, name))
    return {**env, "STREAMREC_HOME": str(home), "STREAMREC_METRICS_BIND": ""}


class Retrain:
    """``python -m streamrec retrain`` as a process, its output (stdout and stderr, unbuffered)
    read line by line as it comes."""

    def __init__(self, s: Settings, data: Data, root: Path, *extra: str) -> None:
        cmd = [sys.executable, "-u", "-m", "streamrec", "retrain", "--csv", str(data.csv),
               "--models-dir", str(root), "--keep", "1", *FLAGS, *extra]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd,
            env=_env(s, root.parent / "home"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        self.output: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            self._lines.put(line)
        self._lines.put(None)

    def wait_for(self, pattern: str, timeout_s: float = LINE_TIMEOUT_S) -> re.Match[str]:
        """The first line from now on matching ``pattern``; fails the test when the job exits
        or ``timeout_s`` passes first."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no line matching {pattern!r} in {timeout_s} s:\n{self.tail()}")
            if line is None:
                pytest.fail(f"retrain exited ({self.proc.wait()}) before a line matching "
                            f"{pattern!r}:\n{self.tail()}")  # fmt: skip
            found = re.search(pattern, line)
            if found:
                return found

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        assert self.proc.wait(timeout=30) == -signal.SIGKILL, self.tail()

    def tail(self) -> str:
        return "".join(self.output[-30:])


@dataclass(frozen=True)
class Serving:
    pointer: str
    lists: Counter[str]  # model_version -> users whose list names it
    popular: str
    on_disk: list[str]  # the version directories, oldest first
    leftovers: list[str]  # other names under the models dir (a writer's temporary dirs)


def _serving(s: Settings, root: Path, data: Data) -> Serving:
    """What readers see now, checked: the pointer names a model that loads, every version
    directory is a whole verified model, and every user's list parses and names one of them."""
    client, keys = redis_client(s), Keys(s.redis_prefix)
    pointer = read_model_pointer(client, keys)
    assert pointer is not None, "the pointer is gone"
    load_model(pointer.path)  # a whole, verified model, or ArtifactError
    on_disk = [d.name for d in versions(root)]
    for name in on_disk:
        load_model(root / name)
    lists: Counter[str] = Counter()
    users = data.users
    for lo in range(0, len(users), 5000):
        for user, raw in zip(users[lo : lo + 5000],
                             client.mget([keys.recs(u) for u in users[lo : lo + 5000]]),
                             strict=True):  # fmt: skip
            assert raw is not None, f"{user} lost its list"
            value = parse_list(raw)
            assert value["user_id"] == user and value["items"], raw[:200]
            lists[value["model_version"]] += 1
    popular = parse_list(client.get(keys.popular) or b"")["model_version"]
    client.close()
    assert pointer.version in on_disk, (pointer.version, on_disk)
    assert set(lists) | {popular} <= set(on_disk), (lists, popular, on_disk)
    leftovers = sorted(d.name for d in root.iterdir() if d.name not in on_disk)
    return Serving(pointer.version, lists, popular, on_disk, leftovers)


def _next_run_promotes(s: Settings, root: Path, data: Data) -> Serving:
    """A retrain after the fault: it promotes, and every list, popular and the pointer name
    the new model; nothing a killed run left stays behind."""
    client = redis_client(s)
    cfg = RetrainConfig(models_dir=root, base=load_csv(data.csv), base_name="csv", params=FAST,
                        keep=2, tolerance=1.0, min_lift=0.0)  # fmt: skip
    result = retrain(s, cfg, client, echo=lambda _line: None)
    client.close()
    assert result.promoted, result.reason
    after = _serving(s, root, data)
    assert after.pointer == after.popular == result.version
    assert after.lists == {result.version: USERS}
    assert after.leftovers == [], "a killed writer's directory was not swept"
    assert len(after.on_disk) == 2 and after.on_disk[-1] == result.version
    return after


def test_killed_during_the_final_fit(
    stack: Callable[..., Settings], data: Data, tmp_path: Path
) -> None:
    s = stack()
    root, v1, _sent = _live_with_events(s, data, tmp_path)

    run = Retrain(s, data, root, "--final-iterations", "300")  # seconds of fitting
    run.wait_for(r"^fitting the final model")
    run.kill()

    now = _serving(s, root, data)
    assert (now.pointer, now.popular) == (v1.version, v1.version)
    assert now.lists == {v1.version: USERS}
    assert now.on_disk == [v1.version] and now.leftovers == []  # killed before writing
    _next_run_promotes(s, root, data)


def test_killed_during_the_bulk_publish(
    stack: Callable[..., Settings], data: Data, tmp_path: Path
) -> None:
    s = stack()
    root, v1, _sent = _live_with_events(s, data, tmp_path)

    run = Retrain(s, data, root)
    written = run.wait_for(r"publish (\S+): (\d+) of (\d+) lists written")
    run.kill()
    v2, done = written.group(1), int(written.group(2))

    now = _serving(s, root, data)
    assert now.pointer == v1.version, "the pointer moved before every list was written"
    assert now.popular == v1.version
    # Some lists are V2's already, the others still V1's: both models are whole on disk.
    assert now.lists[v2] >= done and set(now.lists) == {v1.version, v2}, (
        f"killed too late to be mid-publish: {now.lists}"
    )
    assert now.on_disk == [v1.version, v2] and now.leftovers == []
    after = _next_run_promotes(s, root, data)
    assert v1.version not in after.on_disk  # pruned: keep 2 counts the never-live V2


@contextmanager
def _frozen(pid: int) -> Iterator[None]:
    """The process stopped (SIGSTOP: it accepts connections but answers nothing) until the
    block ends, then resumed."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def test_killed_between_the_pointer_and_the_announcement(
    own: OwnServices,
    data: Data,
    tmp_path: Path,
    run_worker: Callable[[Settings], Worker],
) -> None:
    s = own.stack()
    root, v1, sent = _live_with_events(s, data, tmp_path)
    worker = run_worker(s)  # follows the pointer; has applied every event before the job runs
    wait_for(lambda: worker.stats.decoded >= sent, 60)
    announced = log_end(s, s.topic_models)
    broker = read_pid(KafkaPaths.of(own.settings).pid_file)
    assert broker is not None, "the fault tests' broker has no pid file"

    run = Retrain(s, data, root)
    try:
        run.wait_for(r"^fitting the final model")  # the events are read: Kafka is idle now
        with _frozen(broker):
            moved = run.wait_for(r"pointer \S+ moved to ([^\s;]+)")
            run.kill()
    finally:
        if run.proc.poll() is None:
            run.kill()
    v2 = moved.group(1)

    now = _serving(s, root, data)
    assert now.pointer == now.popular == v2
    assert now.lists == {v2: USERS}, "the pointer moved before every list was written"
    assert log_end(s, s.topic_models) == announced, "announced after all"
    assert now.on_disk == [v1.version, v2], "pruned (keep 1) although killed before"
    # No announcement: the running worker finds the new model by polling the pointer.
    wait_for(lambda: worker.scorer.version == v2, 15)

    after = _next_run_promotes(s, root, data)
    wait_for(lambda: worker.scorer.version == after.pointer, 15)
    client = redis_client(s)
    keys = list(client.scan_iter(match=f"{s.redis_prefix}:*", count=5000))
    for lo in range(0, len(keys), 5000):  # the own Redis is kept for the session: free it
        client.unlink(*keys[lo : lo + 5000])
    client.close()


def test_a_model_writer_killed_halfway_is_never_a_model_and_the_next_write_sweeps_it(
    tmp_path: Path,
) -> None:
    root = tmp_path / "models"
    # 100k items x 32 factors: 12.8 MB to save, hash, fsync and hash again, a few hundred ms.
    writer = (
        "import sys; import numpy as np; from pathlib import Path\n"
        "from streamrec.model.store import write_version\n"
        "n = 100_000; rng = np.random.default_rng(0)\n"
        "write_version(Path(sys.argv[1]), [f'item-{k}' for k in range(n)],\n"
        "              rng.random((n, 32), dtype=np.float32), np.ones(n, np.float32),\n"
        "              {'regularization': 1.0, 'alpha': 1.0, 'transform': 'log'})\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", writer, str(root)])
    try:
        wait_for(lambda: root.is_dir() and any(root.iterdir()), 60, interval_s=0.001)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the writer finished before the kill"
    left = [d.name for d in root.iterdir()]
    assert left and all(name.startswith(".") for name in left), left  # never a version name
    assert versions(root) == []

    rng = np.random.default_rng(1)
    model = write_version(root, ["a", "b", "c"], rng.random((3, 4), dtype=np.float32),
                          np.ones(3, np.float32), dict(regularization=1.0, alpha=1.0,
                                                       transform="log"))  # fmt: skip
    assert [d.name for d in root.iterdir()] == [model.version]
