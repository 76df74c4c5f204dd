"""The retrain benchmark's fast publisher writes exactly ``encode_avro``'s bytes."""

from __future__ import annotations

import sys
from pathlib import Path

from streamrec.events import decode, encode_avro, new_event

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from _common import EventTemplate


def test_bench_template_is_encode_avro() -> None:
    template = EventTemplate()
    for n, (u, i, ms) in enumerate([(0, 0, 1), (1234567, 99999, 1_764_000_000_123), (7, 42, 2)]):
        eid, user, item = b"%032x" % (n * 977), b"user-%07d" % u, b"item-%06d" % i
        got = template.value(eid, user, item, ms=ms)
        want = encode_avro(
            new_event(
                user.decode(),
                item.decode(),
                "play",
                value=120.0,
                timestamp=ms,
                event_id=eid.decode(),
            )
        )
        assert got == want
        e = decode(got)
        assert (e.event_id, e.user_id, e.item_id, e.timestamp) == (
            eid.decode(),
            user.decode(),
            item.decode(),
            ms,
        )
