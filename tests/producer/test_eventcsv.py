"""The event CSV: one reader for ``produce --csv`` and ``replay``, so both send the same events.

The commands run for real through ``streamrec.app.cli.main`` with the Kafka producer (and, for
replay, the topic check and signal handlers) replaced by fakes: pure, no services.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

import streamrec.app.signals
import streamrec.connect
import streamrec.producer.producer
from streamrec.app.cli import main
from streamrec.errors import EventError
from streamrec.events import Event
from streamrec.producer.eventcsv import events, read

T = 1_700_000_000_000  # 2023-11-14T22:13:20Z

# Rows the two commands' parsers read differently before they were one: produce --csv took
# every number for milliseconds (1700000000 -> 1970-01-20) and refused ISO 8601 and
# fractional numbers; replay also read the padded, capitalised header and stripped the cells.
DISAGREED = (
    " User_ID , Item_ID ,Type,Value,Timestamp\n"
    "u1,a,play,30,1700000003\n"
    " u2 ,b, like ,,1700000001000\n"
    "u1,c,rating,4.5,2023-11-14T22:13:22Z\n"
    "u2,d,,,1700000000.25\n"
)
EXPECTED = [  # (user, item, type, value, timestamp) in file order
    ("u1", "a", "play", 30.0, T + 3000),
    ("u2", "b", "like", None, T + 1000),
    ("u1", "c", "rating", 4.5, T + 2000),
    ("u2", "d", "play", None, T + 250),
]


class FakeProducer:
    """Stands in for ``EventProducer`` in the commands: records events, delivers them all."""

    topic = "fake-topic"
    last: FakeProducer | None = None

    def __init__(self, settings: object, fmt: str = "avro") -> None:
        self.events: list[Event] = []
        self.sent = self.delivered = 0
        FakeProducer.last = self

    def __enter__(self) -> FakeProducer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        pass

    def send(self, event: Event) -> None:
        self.events.append(event)
        self.sent += 1
        self.delivered += 1

    def flush(self, timeout_s: float = 30.0) -> None:
        pass


@pytest.fixture()
def sent(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``sent(*argv)``: run the CLI with the fakes; (exit code, events it sent)."""
    monkeypatch.setattr(streamrec.producer.producer, "EventProducer", FakeProducer)
    monkeypatch.setattr(streamrec.connect, "ensure_topics", lambda settings: None)
    monkeypatch.setattr(streamrec.app.signals, "install_stop_handlers", lambda stop: None)

    def run(*argv: str) -> tuple[int, list[Event]]:
        FakeProducer.last = None
        code = main(list(argv))
        return code, FakeProducer.last.events if FakeProducer.last is not None else []

    return run


def _rows(got: list[Event]) -> list[tuple[str, str, str, float | None, int]]:
    return [(e.user_id, e.item_id, e.type, e.value, e.timestamp) for e in got]


def _write(path: Path, text: str) -> Path:
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_produce_and_replay_send_the_same_events(tmp_path: Path, sent: Any) -> None:
    f = _write(tmp_path / "e.csv", DISAGREED)
    code, produced = sent("produce", "--csv", str(f))
    assert code == 0 and _rows(produced) == EXPECTED  # file order
    code, replayed = sent("replay", str(f), "--speed", "max")
    assert code == 0 and _rows(replayed) == sorted(EXPECTED, key=lambda r: r[4])  # time order


def test_limit_is_the_first_rows_for_produce_and_the_earliest_events_for_replay(
    tmp_path: Path, sent: Any
) -> None:
    f = _write(tmp_path / "e.csv", DISAGREED)
    assert _rows(sent("produce", "--csv", str(f), "--limit", "2")[1]) == EXPECTED[:2]
    assert _rows(sent("replay", str(f), "--limit", "2")[1]) == [EXPECTED[3], EXPECTED[1]]


@pytest.mark.parametrize(
    ("name", "text"),
    [
        (
            "ratings.csv.gz",
            "userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n2,10,4,835355493\n",
        ),
        ("plain.csv", "user_id,item_id,value\nu,a,1\nu,b,\n"),  # no timestamps: sent now
    ],
)
def test_same_events_for_movielens_gzip_and_untimed_files(
    tmp_path: Path, sent: Any, name: str, text: str
) -> None:
    f = _write(tmp_path / name, text)
    _, produced = sent("produce", "--csv", str(f))
    _, replayed = sent("replay", str(f))
    assert len(produced) == 2

    def key(e: Event) -> tuple[str, str, str, float | None]:
        return e.user_id, e.item_id, e.type, e.value

    assert sorted(map(key, produced)) == sorted(map(key, replayed))
    if "timestamp" in text:
        assert sorted(_rows(produced)) == sorted(_rows(replayed))


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("user_id,item_id,type\nu,i,play\nu,i,teleport\n", r"e\.csv:3: bad row .*teleport"),
        ("user_id,item_id,timestamp\nu,i,1700000000\nu,i,\n", r"e\.csv:3: bad row .*missing"),
        ("user_id,item_id,timestamp\nu,i,soon\n", r"e\.csv:2: bad row .*not a number"),
        ("item_id,user_id\ni,u\n", r"e\.csv: header must be"),
        ("user_id,item_id\n", r"e\.csv: no rows"),
    ],
)
def test_both_commands_refuse_a_bad_file_alike(
    tmp_path: Path, sent: Any, capsys: pytest.CaptureFixture[str], text: str, fragment: str
) -> None:
    f = _write(tmp_path / "e.csv", text)
    for argv in (["produce", "--csv", str(f)], ["replay", str(f)]):
        code, got = sent(*argv)
        assert code == 4 and got == [], argv
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1, err
        assert re.search(fragment, err), (argv, err)


def test_read_keeps_file_order_unless_by_time(tmp_path: Path) -> None:
    f = _write(tmp_path / "e.csv", DISAGREED)
    assert read(f).timestamps == [T + 3000, T + 1000, T + 2000, T + 250]
    assert read(f, by_time=True).timestamps == [T + 250, T + 1000, T + 2000, T + 3000]
    assert read(f, 1).items == ["a"]
    assert read(f, 1, by_time=True).items == ["d"]
    assert _rows(list(events(read(f)))) == EXPECTED


def test_file_order_limit_stops_reading(tmp_path: Path) -> None:
    # produce --csv --limit N reads N rows: a bad row after them is never reached, as before.
    f = _write(tmp_path / "e.csv", "user_id,item_id,timestamp\nu,a,1700000000\nu,b,never\n")
    assert read(f, 1).items == ["a"]
    with pytest.raises(EventError, match=":3: bad row"):
        read(f, 1, by_time=True)  # the earliest event needs every row


def test_movielens_files_without_a_header(tmp_path: Path) -> None:
    """``u.data`` (tabs) and ``ratings.dat`` (``::``), plain or gzip: rating events, by time."""
    (tmp_path / "u.data").write_text("196\t242\t3\t881250949\n186\t302\t3\t891717742\n\n"
                                     "22\t377\t1\t878887116\n")  # fmt: skip
    rows = read(tmp_path / "u.data", by_time=True)
    assert rows.kind == "movielens" and set(rows.types) == {"rating"}
    assert rows.users == ["22", "196", "186"] and rows.items == ["377", "242", "302"]
    assert rows.values == [1.0, 3.0, 3.0]
    assert rows.timestamps == [878887116000, 881250949000, 891717742000]
    assert read(tmp_path / "u.data", limit=1).users == ["196"]  # file order: the first row
    assert read(tmp_path / "u.data", limit=1, by_time=True).users == ["22"]  # the earliest
    with gzip.open(tmp_path / "ratings.dat.gz", "wt") as f:
        f.write("1::1193::5::978300760\n1::661::3::978302109\n")
    rows = read(tmp_path / "ratings.dat.gz", by_time=True)
    assert rows.items == ["1193", "661"] and rows.values == [5.0, 3.0]
    (tmp_path / "ratings.dat").write_text("1::1193::5::978300760\n1::661\n")
    with pytest.raises(EventError, match=r"ratings.dat:2: bad row"):
        read(tmp_path / "ratings.dat")
