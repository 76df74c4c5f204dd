"""Schema versions for the tests of schema evolution: the package's v1 changed as producers
would change it (a v2 that adds an optional field, and versions that break the rules)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import fastavro

from streamrec.events import SINGLE_OBJECT_MAGIC, avro_fingerprint, schema_text

OPTIONAL_FIELD = {"name": "session_id", "type": ["null", "string"], "default": None}


def v1() -> dict[str, Any]:
    raw: dict[str, Any] = json.loads(schema_text())
    return raw


def v2() -> dict[str, Any]:
    """v1 plus an optional field with a default: not a breaking change."""
    raw = v1()
    raw["fields"].append(dict(OPTIONAL_FIELD))
    return raw


def changed(drop: str | None = None, **types: Any) -> dict[str, Any]:
    """v1 without field ``drop`` and with the given fields' types replaced."""
    raw = v1()
    raw["fields"] = [
        {**f, "type": types.get(f["name"], f["type"])} for f in raw["fields"] if f["name"] != drop
    ]
    return raw


def write_version(directory: Path, version: int, schema: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"interaction-v{version}.avsc"
    path.write_text(json.dumps(schema))
    return path


def datum(schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(schema), record)
    return buf.getvalue()


def single_object(schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    return SINGLE_OBJECT_MAGIC + avro_fingerprint(schema) + datum(schema, record)


def confluent(schema_id: int, schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    return b"\x00" + schema_id.to_bytes(4, "big") + datum(schema, record)


def record(**more: Any) -> dict[str, Any]:
    return {
        "event_id": "e1",
        "user_id": "u1",
        "item_id": "i1",
        "type": "play",
        "value": 3.5,
        "timestamp": 1_700_000_000_000,
        "context": {"device": "tv"},
        **more,
    }
