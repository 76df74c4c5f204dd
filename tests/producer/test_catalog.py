"""The catalog CSV reader (pure) and `streamrec catalog load/remove` against the real broker."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import pytest

from streamrec.app.cli import main
from streamrec.catalog import Item, decode_item
from streamrec.connect import read_ranges
from streamrec.errors import InputError
from streamrec.exits import Exit
from streamrec.producer.catalog import Columns, read_catalog_csv
from streamrec.settings import Settings
from tests.conftest import export_settings, log_end

MOVIES = """movieId,title,genres
1,Toy Story (1995),Adventure|Animation|Children
2,Jumanji (1995),Adventure|Children|Fantasy
3,Heat (1995),Action;Crime
"""

SONGS = """artist,song,duration_ms,explicit,year,popularity,energy,tempo,genre,available
Britney Spears,Oops!...I Did It Again,211160,False,2000,77,0.834,95.053,pop,true
blink-182,All The Small Things,167066,False,1999,79,0.897,148.726,rock; pop,false
Faith Hill,Breathe,250546,False,1999,66,0.496,,country,1
"""


def test_movielens_columns_are_found_by_their_usual_names(tmp_path: Path) -> None:
    path = tmp_path / "movies.csv"
    path.write_text(MOVIES)
    items = read_catalog_csv(path, updated_at_ms=7)
    assert items[0] == Item("1", "Toy Story (1995)", ("Adventure", "Animation", "Children"),
                            None, True, {}, 7)  # fmt: skip
    assert items[2].categories == ("Action", "Crime")


def test_mapping_by_flags_and_numeric_columns_as_features(tmp_path: Path) -> None:
    path = tmp_path / "songs.csv.gz"
    path.write_bytes(gzip.compress(SONGS.encode()))
    items = read_catalog_csv(path, Columns(id="song", name="song", categories="genre"), 1)
    first = items[0]
    assert first.item_id == first.name == "Oops!...I Did It Again"
    assert first.year == 2000 and first.available
    # every other all-numeric column, not `explicit` (True/False) nor the artist
    assert first.features == {"duration_ms": 211160.0, "popularity": 77.0, "energy": 0.834,
                              "tempo": 95.053}  # fmt: skip
    assert items[1].categories == ("rock", "pop") and not items[1].available
    assert "tempo" not in items[2].features  # an empty cell: a missing feature
    chosen = read_catalog_csv(path, Columns(id="song", features=("energy", "tempo")), 1)
    assert chosen[0].features == {"energy": 0.834, "tempo": 95.053}


@pytest.mark.parametrize(
    ("text", "columns", "message"),
    [
        ("name,x\na,1\n", Columns(), "no id column (looked for item_id, id, movieId"),
        ("id,x\na,1\n", Columns(name="title"), "no column 'title' for the name"),
        ("id,year\na,1999\nb,199x\n", Columns(), ":3: year '199x' is not a year"),
        ("id,available\na,maybe\n", Columns(), ":2: available 'maybe' is not true or false"),
        ("id,x\na,1\na,2\n", Columns(), ":3: item_id 'a' again (first on line 2)"),
        ("id,x\n,1\n", Columns(), ":2: empty id"),
        ("id,x\na,1,2\n", Columns(), ":2: 3 fields, the header has 2"),
        ("id,x,y\na,1,q\n", Columns(features=("x", "y")), ":2: feature y 'q' is not a number"),
        ("id,x\na,1\n", Columns(features=("z",)), "no column 'z' for --features"),
        ("", Columns(), "empty file"),
    ],
)
def test_a_bad_file_or_row_is_one_line(
    tmp_path: Path, text: str, columns: Columns, message: str
) -> None:
    path = tmp_path / "c.csv"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        read_catalog_csv(path, columns)
    assert message in str(info.value) and "\n" not in str(info.value)


def _use(monkeypatch: pytest.MonkeyPatch, s: Settings) -> None:
    export_settings(monkeypatch, s, "topic_events", "topic_dlq", "topic_models", "topic_items",
                    "kafka_bootstrap")  # fmt: skip


@pytest.mark.integration
def test_catalog_load_delivers_every_row_and_remove_sends_tombstones(
    stack: Callable[..., Settings],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    s = stack()
    _use(monkeypatch, s)
    path = tmp_path / "movies.csv"
    path.write_text(MOVIES)
    assert main(["catalog", "load", str(path)]) == 0
    assert "done: sent 3, delivered 3, failed 0 -> " + s.topic_items in capsys.readouterr().out
    assert main(["catalog", "load", str(path), "--format", "json"]) == 0
    assert main(["catalog", "remove", "2"]) == 0
    end = log_end(s, s.topic_items)
    assert end == 7
    msgs = list(read_ranges(s, s.topic_items, {0: (0, end)}, "g-read", 30))
    assert [m.key() for m in msgs] == [b"1", b"2", b"3", b"1", b"2", b"3", b"2"]
    assert msgs[-1].value() is None
    got = [decode_item(m.value()) for m in msgs[:6]]
    assert [i.item_id for i in got] == ["1", "2", "3"] * 2
    assert got[0].categories == ("Adventure", "Animation", "Children")
    assert (msgs[0].value() or b"")[:2] == b"\xc3\x01" and (msgs[3].value() or b"")[:1] == b"{"
    # A bad row: one line, exit 4, and nothing sent.
    bad = tmp_path / "bad.csv"
    bad.write_text("id,year\na,1999\nb,later\n")
    assert main(["catalog", "load", str(bad)]) == Exit.DATA
    assert capsys.readouterr().err.strip() == (f"streamrec: {bad}:3: year 'later' is not a year")
    assert log_end(s, s.topic_items) == 7
