"""Contract 3's record: the schema file, both encodings, versions and every bound."""

from __future__ import annotations

import io
import json
import struct

import fastavro
import pytest

from streamrec import catalog
from streamrec.catalog import (
    Item,
    decode_item,
    encode_item,
    encode_item_json,
    item_from_json,
    schema_fingerprint,
    schema_text,
)
from streamrec.errors import CatalogError, EventError
from streamrec.events import avro_fingerprint

ITEM = Item(
    item_id="track-7",
    name="So What",
    categories=("jazz", "modal"),
    year=1959,
    available=True,
    features={"tempo": 136.5, "energy": 0.31},
    updated_at_ms=1_700_000_000_123,
)


def test_schema_file_is_the_record_the_contract_names() -> None:
    raw = json.loads(schema_text())
    assert raw["type"] == "record" and f"{raw['namespace']}.{raw['name']}" == "streamrec.Item"
    assert [f["name"] for f in raw["fields"]] == list(catalog.FIELDS)
    assert schema_fingerprint() == avro_fingerprint(raw)


def test_avro_round_trip_and_single_object_header() -> None:
    value = encode_item(ITEM)
    assert value[:2] == b"\xc3\x01" and value[2:10] == schema_fingerprint()
    assert decode_item(value) == ITEM
    # The datum is plain Avro binary of the schema: any Avro library reads it.
    parsed = fastavro.parse_schema(json.loads(schema_text()))
    rec = fastavro.schemaless_reader(io.BytesIO(value[10:]), parsed, None)
    assert isinstance(rec, dict)
    assert rec["item_id"] == "track-7" and rec["features"] == {"tempo": 136.5, "energy": 0.31}


def test_json_form_round_trip_and_defaults() -> None:
    assert decode_item(encode_item_json(ITEM)) == ITEM
    minimal = decode_item(b'{"item_id": "x", "updated_at": "2024-01-02T03:04:05Z"}')
    assert minimal == Item("x", "", (), None, True, {}, 1_704_164_645_000)
    # Integers are numbers too; a form passes the time now for a missing updated_at.
    got = item_from_json({"item_id": "y", "features": {"a": 1}}, default_updated_at_ms=5)
    assert got.features == {"a": 1.0} and got.updated_at_ms == 5


def test_an_older_writer_version_is_resolved_into_the_reader(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A v0 without `year` and `available`: read with their defaults (Avro resolution).
    raw = json.loads(schema_text())
    raw["fields"] = [f for f in raw["fields"] if f["name"] not in ("year", "available")]
    writer = fastavro.parse_schema(catalog._plain_timestamp(raw))
    fp = avro_fingerprint(raw)
    versions = dict(catalog.schema_versions())
    versions[fp] = catalog._Version(0, fp, writer)
    monkeypatch.setattr(catalog, "schema_versions", lambda: versions)
    buf = io.BytesIO()
    buf.write(b"\xc3\x01" + fp)
    fastavro.schemaless_writer(buf, writer, {"item_id": "old", "name": "n", "categories": [],
                                             "features": {}, "updated_at": 9})  # fmt: skip
    assert decode_item(buf.getvalue()) == Item("old", "n", (), None, True, {}, 9)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"", "empty record"),
        (b"hello", "neither Avro"),
        (b"\xc3\x01\x00", "truncated Avro header"),
        (b"\xc3\x01" + b"\x01" * 8 + b"\x00", "unknown item schema fingerprint"),
        (b"{not json", "invalid JSON"),
        (b'{"item_id": "a", "updated_at": 1, "colour": "red"}', "unknown field(s): colour"),
        (b'{"name": "a", "updated_at": 1}', "missing field 'item_id'"),
        (b'{"item_id": "a"}', "missing field 'updated_at'"),
        (b'{"item_id": "", "updated_at": 1}', "item_id must be a non-empty string"),
        (b'{"item_id": "a", "updated_at": 1, "year": 1999.5}', "year 1999.5 must be"),
        (b'{"item_id": "a", "updated_at": 1, "year": 12000}', "year 12000 must be"),
        (b'{"item_id": "a", "updated_at": 1, "available": "yes"}', "available must be"),
        (b'{"item_id": "a", "updated_at": 1, "categories": "jazz"}', "categories must be a list"),
        (b'{"item_id": "a", "updated_at": 1, "categories": [""]}', "non-empty string"),
        (b'{"item_id": "a", "updated_at": 1, "features": {"x": "1"}}', "feature 'x' must be"),
        (b'{"item_id": "a", "updated_at": 1, "features": {"x": 1e999}}', "finite number"),
        (b'{"item_id": "a", "updated_at": -1}', "updated_at must be"),
        (b'{"item_id": "a", "updated_at": "yesterday"}', "not ISO 8601"),
        (b'{"item_id": "\\ud800", "updated_at": 1}', "lone surrogate"),
        (b"[" * 60_000, "neither Avro"),
        (b"{" * 60_000, "invalid JSON"),
        (b"{" * 70_000, "over the limit of 65536"),
    ],
)
def test_bad_records_raise_catalog_error_with_reason_and_raw_bytes(
    value: bytes, reason: str
) -> None:
    with pytest.raises(CatalogError) as info:
        decode_item(value)
    assert reason in info.value.reason
    assert info.value.raw == value
    assert isinstance(info.value, EventError)  # dead-lettered as events are
    assert "\n" not in info.value.reason


def test_bounds() -> None:
    def bad(**change: object) -> str:
        fields = {**ITEM.to_json(), **change}
        with pytest.raises(CatalogError) as info:
            decode_item(json.dumps(fields).encode())
        return info.value.reason

    assert "longer than 512" in bad(item_id="x" * 513)
    assert "longer than 1024" in bad(name="n" * 1025)
    assert "65 categories" in bad(categories=[f"c{i}" for i in range(65)])
    assert "257 features" in bad(features={f"f{i}": 1.0 for i in range(257)})
    assert "over the limit" in bad(name="n" * 70_000)


def test_corrupt_avro_never_raises_anything_else() -> None:
    value = encode_item(ITEM)
    for cut in range(10, len(value)):
        with pytest.raises(CatalogError):
            decode_item(value[:cut])
    with pytest.raises(CatalogError, match="bytes after it"):
        decode_item(value + b"\x00")
    # A negative array length, a huge string length: corrupt, said so.
    head = value[:10]
    with pytest.raises(CatalogError, match="corrupt Avro datum"):
        decode_item(head + b"\x0e" + b"track-7" + b"\x02" + struct.pack("<B", 0x7F) * 9)


def test_encode_validates() -> None:
    with pytest.raises(CatalogError, match="feature 'x' must be a finite number"):
        encode_item(Item("a", "", (), None, True, {"x": float("nan")}, 1))
