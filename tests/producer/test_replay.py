"""Replay: file formats, event-time order and pacing, the CLI's report and errors."""

from __future__ import annotations

import gzip
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest

from streamrec.app.cli import main
from streamrec.errors import EventError, InputError
from streamrec.events import Event
from streamrec.producer.replay import Report, read_rows, replay
from streamrec.settings import Settings
from tests.conftest import consume_events, shared_file


class FakeProducer:
    """Records what it is given and when; delivers everything."""

    topic = "fake"

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.at: list[float] = []
        self.sent = self.delivered = 0

    def send(self, event: Event) -> None:
        self.events.append(event)
        self.at.append(time.monotonic())
        self.sent += 1
        self.delivered += 1

    def flush(self, timeout_s: float = 30.0) -> None:
        pass


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_movielens_ratings_become_rating_events_in_time_order(tmp_path: Path) -> None:
    f = _write(
        tmp_path / "ratings.csv",
        "userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n1,1029,3.0,1260759179\n"
        "2,10,4.0,835355493\n2,17,5.0,835355681\n",
    )
    rows = read_rows(f)
    assert rows.kind == "movielens" and len(rows) == 4
    assert rows.timestamps == [835355493000, 835355681000, 1260759144000, 1260759179000]
    assert rows.users == ["2", "2", "1", "1"]
    assert rows.items == ["10", "17", "31", "1029"]
    assert set(rows.types) == {"rating"}
    assert rows.values == [4.0, 5.0, 2.5, 3.0]


def test_generic_csv(tmp_path: Path) -> None:
    f = tmp_path / "e.csv.gz"
    with gzip.open(f, "wt", encoding="utf-8") as out:
        out.write(
            "user_id,item_id,type,value,timestamp\n"
            "u1,i1,like,,1700000000500\n"
            "u2,i2,,30,1700000000000\n"
            "u1,i3,skip,2,2023-11-14T22:13:21Z\n"
        )
    rows = read_rows(f)
    assert rows.kind == "generic"
    assert rows.timestamps == [1700000000000, 1700000000500, 1700000001000]
    assert rows.types == ["play", "like", "skip"]
    assert rows.values == [30.0, None, 2.0]
    assert read_rows(f, limit=1).users == ["u2"]  # the earliest event, not the first row

    seconds = _write(tmp_path / "s.csv", "user_id,item_id,timestamp\nu,b,20\nu,a,10\n")
    assert read_rows(seconds).timestamps == [10_000, 20_000]
    plain = _write(tmp_path / "p.csv", "user_id,item_id\nu,b\nu,a\n")
    rows = read_rows(plain)
    assert rows.timestamps is None and rows.items == ["b", "a"]  # file order


@pytest.mark.parametrize(
    ("text", "error", "fragment"),
    [
        ("user,item\nu,i\n", EventError, "header must be"),
        ("user_id,item_id\n", EventError, "no rows"),
        ("user_id,item_id,type\nu,i,play\nu,i,teleport\n", EventError, ":3: bad row"),
        ("user_id,item_id,timestamp\nu,i,\n", EventError, "missing timestamp"),
        ("user_id,item_id,timestamp\nu,i,yesterday\n", EventError, "not a number"),
        ("userId,movieId,rating,timestamp\n1,2,lots,3\n", EventError, ":2: bad row"),
        ("user_id,item_id\n,i\n", EventError, "empty user id"),
    ],
)
def test_bad_files_name_file_and_line(
    tmp_path: Path, text: str, error: type[Exception], fragment: str
) -> None:
    with pytest.raises(error, match=fragment):
        read_rows(_write(tmp_path / "bad.csv", text))


def test_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_rows(tmp_path / "nope.csv")


def test_the_real_movielens_file_when_present() -> None:
    rows = read_rows(shared_file("ml-latest-small", "ratings.csv.gz"))
    assert rows.kind == "movielens" and len(rows) == 100_836
    assert rows.timestamps is not None and rows.timestamps == sorted(rows.timestamps)


def test_pacing_follows_event_time_scaled_by_speed(tmp_path: Path) -> None:
    f = _write(
        tmp_path / "e.csv",
        "user_id,item_id,timestamp\nu,a,1700000001000\nu,b,1700000002000\n"
        "u,c,1700000002000\nu,d,1700000004000\n",
    )
    rows = read_rows(f)
    fake = FakeProducer()
    lines: list[str] = []
    report = replay(cast(Any, fake), rows, speed=10.0, echo=lines.append, progress_every=2)
    assert [e.item_id for e in fake.events] == ["a", "b", "c", "d"]
    assert [e.timestamp - 1700000000000 for e in fake.events] == [1000, 2000, 2000, 4000]
    offsets = [t - fake.at[0] for t in fake.at]
    for got, want in zip(offsets, [0.0, 0.1, 0.1, 0.3], strict=True):
        assert got >= want - 0.01
    assert offsets[-1] < 3.0  # not real time
    assert report == Report(4, 4, 0, report.elapsed_s)
    assert len(lines) == 2 and lines[0].startswith("2/4 sent (50%)")
    assert "events/s" in report.line() and "failed 0" in report.line()


def test_max_speed_gap_cap_and_stop(tmp_path: Path) -> None:
    f = _write(tmp_path / "e.csv", "user_id,item_id,timestamp\nu,a,0\nu,b,3600000\nu,c,7200000\n")
    rows = read_rows(f)
    fake = FakeProducer()
    replay(cast(Any, fake), rows, speed=None)
    assert fake.sent == 3 and fake.at[-1] - fake.at[0] < 1.0
    fake = FakeProducer()
    replay(cast(Any, fake), rows, speed=1.0, max_gap_s=0.05)  # an hour's gap becomes 50 ms
    assert fake.sent == 3 and 0.09 <= fake.at[-1] - fake.at[0] < 1.0
    stop = threading.Event()
    stop.set()
    fake = FakeProducer()
    assert replay(cast(Any, fake), rows, speed=1.0, stop=stop).sent == 0


@pytest.mark.parametrize("command", ["replay", "loadgen"])
def test_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0 and "usage: streamrec " + command in capsys.readouterr().out


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamrec", *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["replay", "missing.csv"], 4, "no such file"),  # a missing input: exit 4 everywhere
        (["replay", "x.csv", "--speed", "fast"], 2, "not a speed"),
        (["replay", "x.csv", "--speed", "0x"], 2, "must be > 0"),
        (["replay"], 2, "PATH"),
    ],
)
def test_cli_errors_are_one_line(args: list[str], code: int, fragment: str) -> None:
    proc = _run(*args)
    assert proc.returncode == code
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], proc.stderr


def test_cli_bad_row_exits_4(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = _write(tmp_path / "e.csv", "user_id,item_id,type\nu,i,teleport\n")
    assert main(["replay", str(f)]) == 4
    assert "e.csv:2: bad row" in capsys.readouterr().err


@pytest.mark.integration
def test_cli_replays_into_kafka_keeping_timestamps(
    stack: Callable[..., Settings],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    s = stack()
    monkeypatch.setenv("STREAMREC_TOPIC_EVENTS", s.topic_events)
    monkeypatch.setenv("STREAMREC_TOPIC_EVENTS_PARTITIONS", "3")
    f = _write(
        tmp_path / "ratings.csv",
        "userId,movieId,rating,timestamp\n"
        + "".join(
            f"{u},{m},{1 + m % 5},{1_000_000 + 10 * m + u}\n" for u in (1, 2) for m in range(6)
        ),
    )
    assert main(["replay", str(f), "--speed", "max", "--format", "json"]) == 0
    out = capsys.readouterr().out
    assert "replaying 12 movielens events" in out
    assert "sent 12, delivered 12, failed 0" in out

    pairs = consume_events(s, 12, timeout_s=20)
    assert len(pairs) == 12
    assert all(key == event.user_id.encode() for key, event in pairs)
    got = [event for _, event in pairs]
    for user in ("1", "2"):
        mine = [e for e in got if e.user_id == user]
        assert [e.timestamp for e in mine] == sorted(e.timestamp for e in mine)  # per-user order
        assert {e.timestamp for e in mine} == {
            (1_000_000 + 10 * m + int(user)) * 1000 for m in range(6)
        }
        assert all(e.type == "rating" and e.value == 1 + int(e.item_id) % 5 for e in mine)
