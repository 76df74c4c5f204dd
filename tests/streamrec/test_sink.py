"""The sink's hand-packed transaction against the real Redis: all or nothing, WATCH honoured."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest

from streamrec.connect import redis_client
from streamrec.keys import Keys, home_value, read_histories, recs_value
from streamrec.settings import Settings
from streamrec.sink import Sink, pack_set


def test_pack_set_is_the_resp_redis_py_sends() -> None:
    from redis.connection import Connection

    conn = Connection()
    assert pack_set(b"k", b"v\r\n1") == b"".join(conn.pack_command("SET", b"k", b"v\r\n1"))
    assert pack_set(b"k", b"v", b"60") == b"".join(conn.pack_command("SET", "k", "v", "EX", 60))


@pytest.mark.integration
def test_write_sets_every_key_with_its_ttl(stack: Callable[..., Settings]) -> None:
    s = stack()
    client, keys = redis_client(s), Keys(s.redis_prefix)
    sink = Sink(client, keys, list_ttl_s=100, state_ttl_s=200)
    applied = keys.applied("t", 0)
    user = keys.user("ü 1", "t", 0)
    assert sink.watch_read([applied, user]) == [None, None]
    value = recs_value("ü 1", [("a", 0.5)], "v1", 1)
    home = home_value("t", 0)
    assert sink.write(
        [("ü 1", value)], [(user, b'{"v":1}')], [(applied, 41)], homes=[("ü 1", home)]
    )
    assert client.get(keys.recs("ü 1")) == value
    assert client.get(user) == b'{"v":1}'
    assert client.get(applied) == b"41"
    assert client.get(keys.home("ü 1")) == home
    assert read_histories(client, keys, ["ü 1", "nobody"]) == {"ü 1": b'{"v":1}'}
    assert 0 < client.ttl(keys.recs("ü 1")) <= 100 < client.ttl(user) <= 200
    assert 100 < client.ttl(keys.home("ü 1")) <= 200
    assert client.ttl(applied) == -1  # offsets never expire
    sink.close()


@pytest.mark.integration
def test_a_watched_key_changed_by_another_client_fails_the_write(
    stack: Callable[..., Settings],
) -> None:
    s = stack()
    client, keys = redis_client(s), Keys(s.redis_prefix)
    sink = Sink(client, keys, 100, 100)
    applied = keys.applied("t", 0)
    client.set(applied, 5)
    assert sink.watch_read([applied]) == [b"5"]
    client.set(applied, 9)  # a zombie, or a second owner of the partition
    assert not sink.write([("u", b"{}")], applied=[(applied, 6)])
    assert client.get(applied) == b"9" and client.get(keys.recs("u")) is None
    # The next attempt reads the new state and goes through.
    assert sink.watch_read([applied]) == [b"9"]
    assert sink.write([("u", b"{}")], applied=[(applied, 10)])
    assert client.get(applied) == b"10" and client.get(keys.recs("u")) == b"{}"
    sink.close()


@pytest.mark.integration
def test_plain_writes_and_reset_after_an_error(stack: Callable[..., Settings]) -> None:
    s = stack()
    client, keys = redis_client(s), Keys(s.redis_prefix)
    sink = Sink(client, keys, 100, 100)
    lists = [(f"u{i}", orjson.dumps({"i": i})) for i in range(500)]
    assert sink.write(lists, transaction=False)
    assert client.mget([keys.recs(u) for u, _ in lists]) == [v for _, v in lists]
    sink.watch_read([keys.user("u0", "t", 1)])
    sink.reset()  # drops the WATCH with the connection: a change no longer fails the write
    client.set(keys.user("u0", "t", 1), b"x")
    sink.watch_read([keys.applied("t", 1)])
    assert sink.write([("u0", b"[]")])
    sink.close()
