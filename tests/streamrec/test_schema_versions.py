"""Schema evolution (README "Schema versions and the registry framing"): every known version,
by its fingerprint or its registry id, read into the reader schema by Avro's resolution rules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from streamrec.errors import EventError, InfraError
from streamrec.events import (
    SCHEMA_VERSION,
    Event,
    EventDecoder,
    SchemaSet,
    avro_fingerprint,
    decode,
    encode_avro,
    known_schemas,
    new_event,
)
from tests.streamrec.evolution import (
    changed,
    confluent,
    record,
    single_object,
    v1,
    v2,
    write_version,
)

EXPECTED = Event(
    event_id="e1",
    user_id="u1",
    item_id="i1",
    type="play",
    value=3.5,
    timestamp=1_700_000_000_000,
    context={"device": "tv"},
)


def _decoder(tmp_path: Path, **versions: dict[str, Any]) -> EventDecoder:
    for name, schema in versions.items():
        write_version(tmp_path / "schemas", int(name.lstrip("v")), schema)
    return EventDecoder(schemas=SchemaSet.load([tmp_path / "schemas"]))


def test_the_package_folder_is_versioned_and_the_newest_is_the_reader() -> None:
    schemas = known_schemas()
    assert schemas.reader.version == SCHEMA_VERSION
    assert schemas.reader.fingerprint == avro_fingerprint(v1())
    folder = Path(__file__).resolve().parents[2] / "streamrec" / "schema"
    files = sorted(folder.glob("interaction-v*.avsc"))
    assert len(schemas.by_fingerprint) == len(files) >= 1
    # every version the project ships is read into the reader by the resolution rules
    for path in files:
        schema = json.loads(path.read_text())
        rec = record()
        assert single_object(schema, rec)[:2] == b"\xc3\x01"
        assert decode(single_object(schema, rec)) == EXPECTED


def test_an_added_optional_field_is_not_a_breaking_change(tmp_path: Path) -> None:
    raw = single_object(v2(), record(session_id="s-9"))
    # a reader that does not know v2 dead-letters it, naming what it knows
    with pytest.raises(EventError, match=r"unknown schema fingerprint .* knows v1"):
        decode(raw)
    # told of v2 (event_schemas_dir), it reads it: the field it lacks is skipped
    decoder = _decoder(tmp_path, v2=v2())
    assert decoder(raw) == EXPECTED
    assert decoder(single_object(v2(), record(session_id=None))) == EXPECTED
    assert decoder(encode_avro(EXPECTED)) == EXPECTED  # v1 still, of course


def test_a_field_the_writer_lacks_takes_the_readers_default(tmp_path: Path) -> None:
    # an older writer without ``context``: as if v1 had added it with its default null
    older = changed(drop="context")
    rec = record()
    del rec["context"]
    got = _decoder(tmp_path, v0=older)(single_object(older, rec))
    assert got.context is None and got.user_id == "u1"


def test_numbers_are_promoted(tmp_path: Path) -> None:
    writer = changed(timestamp="int", value=["null", "float"])
    got = _decoder(tmp_path, v0=writer)(single_object(writer, record(timestamp=1234, value=0.5)))
    assert (got.timestamp, got.value) == (1234, 0.5)
    assert isinstance(got.value, float)


def test_breaking_changes_are_dead_lettered_with_the_reason(tmp_path: Path) -> None:
    # a required field dropped without a default: no resolution
    no_item = changed(drop="item_id")
    rec = record()
    del rec["item_id"]
    decoder = _decoder(tmp_path, v7=no_item)
    with pytest.raises(EventError, match="cannot be read as the reader schema"):
        decoder(single_object(no_item, rec))
    # an enum symbol the reader lacks: only the events that use it fail
    share = changed(type={"type": "enum", "name": "InteractionType", "symbols": ["play", "share"]})
    decoder = _decoder(tmp_path / "b", v8=share)
    assert decoder(single_object(share, record())).type == "play"
    with pytest.raises(EventError, match="cannot be read as the reader schema"):
        decoder(single_object(share, record(type="share")))


def test_schema_files_that_cannot_be_versions_are_refused(tmp_path: Path) -> None:
    write_version(tmp_path / "a", 1, v2())  # a different schema under v1's number
    with pytest.raises(ValueError, match="two different schemas are version 1"):
        SchemaSet.load([tmp_path / "a"])
    other = {"type": "record", "name": "Other", "fields": []}
    write_version(tmp_path / "b", 3, other)
    with pytest.raises(ValueError, match=r"not the record streamrec\.Interaction"):
        SchemaSet.load([tmp_path / "b"])
    with pytest.raises(ValueError, match="no such directory"):
        SchemaSet.load([tmp_path / "missing"])
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "notes.txt").write_text("not a schema")  # other files are ignored
    assert len(SchemaSet.load([tmp_path / "c"]).by_fingerprint) == 1


def test_json_may_carry_a_field_of_a_known_newer_version(tmp_path: Path) -> None:
    doc = {**record(), "session_id": "s-1"}
    with pytest.raises(EventError, match="unknown field"):
        decode(json.dumps(doc).encode())
    assert _decoder(tmp_path, v2=v2())(json.dumps(doc).encode()) == EXPECTED


class FakeLookup:
    """A registry lookup over a dict (the integration test uses a registry over HTTP)."""

    def __init__(self, schemas: dict[int, str]) -> None:
        self.schemas = schemas
        self.calls: list[int] = []
        self.down = False

    def __call__(self, schema_id: int) -> str:
        self.calls.append(schema_id)
        if self.down:
            raise InfraError("schema registry at http://r does not answer")
        if schema_id not in self.schemas:
            raise EventError(f"schema id {schema_id} is not in the registry at http://r")
        return self.schemas[schema_id]


def test_confluent_framing_resolves_the_registrys_writer_schema() -> None:
    lookup = FakeLookup({1: json.dumps(v1()), 2: json.dumps(v2()), 3: '"string"', 4: "{nope"})
    decoder = EventDecoder(registry=lookup)
    assert decoder(confluent(1, v1(), record())) == EXPECTED
    for _ in range(3):
        assert decoder(confluent(2, v2(), record(session_id="x"))) == EXPECTED
    assert lookup.calls == [1, 2]  # each id looked up once
    with pytest.raises(EventError, match="schema id 9 is not in the registry"):
        decoder(confluent(9, v1(), record()))
    with pytest.raises(EventError, match="schema id 3 is not the record"):
        decoder(b"\x00\x00\x00\x00\x03\x02ab")
    with pytest.raises(EventError, match="schema id 4 is not an Avro schema"):
        decoder(b"\x00\x00\x00\x00\x04\x02ab")
    lookup.down = True  # an outage is no event's fault: it propagates, nothing is dead-lettered
    with pytest.raises(InfraError, match="does not answer"):
        decoder(confluent(5, v1(), record()))
    assert decoder(confluent(2, v2(), record())) == EXPECTED  # cached ids need no registry


def test_the_bounds_hold_on_every_path() -> None:
    big = record(context={f"k{i}": "v" for i in range(40)})
    decoder = EventDecoder(registry=FakeLookup({1: json.dumps(v1())}))
    with pytest.raises(EventError, match="context has 40 entries"):
        decoder(confluent(1, v1(), big))
    with pytest.raises(EventError, match="over the limit"):
        decoder(b"\x00" + b"\x01" * 70_000)
    with pytest.raises(EventError, match="bytes after it"):
        decoder(confluent(1, v1(), record()) + b"\x00")
    assert new_event("u", "i").type == "play"
