"""The one timestamp rule (``streamrec.events.epoch_ms``) and every reader that applies it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from streamrec.events import SECONDS_BELOW, decode, epoch_ms, epoch_ms_array
from streamrec.model.data import load_csv, load_parquet
from streamrec.model.errors import DataError
from streamrec.producer.eventcsv import read
from streamrec.producer.replay import read_rows

T = 1_700_000_000_000  # 2023-11-14T22:13:20Z


@pytest.mark.parametrize(
    ("value", "ms"),
    [
        ("1700000000", T),  # seconds
        ("1700000000000", T),  # milliseconds
        (" 1700000000 ", T),
        ("1700000000.5", T + 500),  # fractional seconds keep their milliseconds
        ("1700000000000.6", T + 1),  # rounded, not truncated
        (1_700_000_000, T),
        (1_700_000_000.25, T + 250),
        (1_700_000_000_000, T),
        ("0", 0),
        (str(SECONDS_BELOW - 1), (SECONDS_BELOW - 1) * 1000),  # the largest seconds value
        (str(SECONDS_BELOW), SECONDS_BELOW),  # the smallest milliseconds value
        ("2023-11-14T22:13:20Z", T),
        ("2023-11-14T22:13:20.250Z", T + 250),
        ("2023-11-14T22:13:20.0006Z", T + 1),
        ("2023-11-14T23:13:20+01:00", T),
        ("2023-11-14T22:13:20", T),  # no offset: UTC
        ("2023-11-14 22:13:20", T),
        ("1972-01-01T00:00:00Z", 63_072_000_000),  # ISO below 1e11 ms is not taken for seconds
    ],
)
def test_epoch_ms(value: str | float, ms: int) -> None:
    assert epoch_ms(value) == ms


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("yesterday", "'yesterday' is not a number or ISO 8601"),
        ("", "not a number or ISO 8601"),
        ("-1", "'-1' is negative"),
        ("1969-12-31T23:59:59Z", "is negative"),
        ("nan", "'nan' is not finite"),
        ("inf", "not finite"),
        (float("nan"), "not finite"),
    ],
)
def test_epoch_ms_refuses(value: str | float, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        epoch_ms(value)


def test_the_unit_is_decided_per_value_not_per_file() -> None:
    # One seconds value next to millisecond ones stays seconds (a whole-file rule made it
    # 1970-01-20).
    assert [epoch_ms(v) for v in ("1700000000", "1700000000500")] == [T, T + 500]
    assert epoch_ms_array([1_700_000_000, 1_700_000_000_500]).tolist() == [T, T + 500]


def test_the_column_form_is_the_same_rule() -> None:
    values = [0, 1, 1_700_000_000, 1_700_000_000.5, 1_700_000_000_000, 1_700_000_000_000.6]
    values += [SECONDS_BELOW - 1, SECONDS_BELOW, 99_999_999_999.999]
    got = epoch_ms_array(np.asarray(values))
    assert got.dtype == np.int64
    assert got.tolist() == [epoch_ms(v) for v in values]
    with pytest.raises(ValueError, match="negative"):
        epoch_ms_array([1.0, -2.0])
    with pytest.raises(ValueError, match="not finite"):
        epoch_ms_array([1.0, float("nan")])


@pytest.fixture()
def far_from_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local time zone set to UTC-5 (restored afterwards)."""
    monkeypatch.setenv("TZ", "EST+05")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("far_from_utc")
def test_iso_without_offset_is_utc_whatever_the_local_zone() -> None:
    assert time.timezone == 5 * 3600  # the fixture took effect
    assert epoch_ms("2023-11-14T22:13:20") == T
    raw = json.dumps(
        {
            "event_id": "e",
            "user_id": "u",
            "item_id": "i",
            "type": "play",
            "timestamp": "2023-11-14T22:13:20",
        }
    ).encode()
    assert decode(raw).timestamp == T


def test_json_numbers_stay_milliseconds() -> None:
    # The wire is not a file: a JSON number is epoch ms however small.
    raw = b'{"event_id":"e","user_id":"u","item_id":"i","type":"play","timestamp":1700000000}'
    assert decode(raw).timestamp == 1_700_000_000


MIXED = (
    "user_id,item_id,timestamp\n"
    "u1,a,1700000000\n"  # seconds
    "u1,b,1700000000500\n"  # milliseconds
    "u2,c,2023-11-14T22:13:21Z\n"  # ISO 8601
    "u2,d,1700000001.25\n"  # fractional seconds
)
MIXED_MS = [T, T + 500, T + 1000, T + 1250]


def test_every_file_reader_reads_a_mixed_file_alike(tmp_path: Path) -> None:
    f = tmp_path / "mixed.csv"
    f.write_text(MIXED, encoding="utf-8")
    assert read(f).timestamps == MIXED_MS  # produce --csv
    assert read_rows(f).timestamps == MIXED_MS  # replay (already in time order)
    data = load_csv(f)  # train / evaluate / retrain --csv
    assert data.timestamps is not None and data.timestamps.tolist() == MIXED_MS


def test_load_csv_names_the_line_of_a_bad_timestamp(tmp_path: Path) -> None:
    f = tmp_path / "bad.csv"
    f.write_text("user_id,item_id,timestamp\nu,a,1700000000\nu,b,-5\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.csv:3: bad row .*negative"):
        load_csv(f)


def test_parquet_uses_the_same_rule(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow", reason="pyarrow is optional and not installed")
    import pyarrow.parquet as pq

    numbers = tmp_path / "numbers.parquet"
    stamps = [1_700_000_000, 1_700_000_000_500, 1_700_000_001.25]
    pq.write_table(
        pa.table({"user_id": ["u"] * 3, "item_id": ["a", "b", "c"], "timestamp": stamps}), numbers
    )
    got = load_parquet(numbers).timestamps
    assert got is not None and got.tolist() == [T, T + 500, T + 1250]

    text = tmp_path / "text.parquet"
    iso = ["1700000000", "2023-11-14T22:13:20.500Z"]
    pq.write_table(pa.table({"user_id": ["u"] * 2, "item_id": ["a", "b"], "timestamp": iso}), text)
    got = load_parquet(text).timestamps
    assert got is not None and got.tolist() == [T, T + 500]

    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"user_id": ["u"], "item_id": ["a"], "timestamp": [-1]}), bad)
    with pytest.raises(DataError, match="bad timestamp"):
        load_parquet(bad)
