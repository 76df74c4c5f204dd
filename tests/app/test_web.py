"""The demo page's JSON API against the real Kafka broker, Redis and a worker thread."""

from __future__ import annotations

import gzip
import json
import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamrec.app.web.api import LiveModel
from streamrec.app.web.names import load_names, synthetic_label
from streamrec.app.web.server import WebServer, serve
from streamrec.artifact import load_model
from streamrec.connect import redis_client
from streamrec.errors import ConfigError, InputError
from streamrec.keys import Keys
from streamrec.model.publish import publish
from streamrec.settings import Settings
from tests.conftest import wait_for

Call = Callable[..., tuple[int, Any]]


def _caller(base: str) -> Call:
    def call(
        path: str,
        body: Any = None,
        raw: bytes | None = None,
        ctype: str = "application/json",
        host: str | None = None,
    ) -> tuple[int, Any]:
        data = raw if raw is not None else None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": ctype, **({"Host": host} if host else {})}
        req = urllib.request.Request(base + path, data=data, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=15) as res:
                status, text, ctype = res.status, res.read(), res.headers["Content-Type"]
        except urllib.error.HTTPError as exc:
            status, text, ctype = exc.code, exc.read(), exc.headers["Content-Type"]
        if ctype.startswith("application/json"):
            return status, json.loads(text)
        return status, text.decode()

    return call


@pytest.fixture()
def served(stack: Callable[..., Settings]) -> Iterator[Callable[[Settings], Call]]:
    servers: list[WebServer] = []

    def start(settings: Settings) -> Call:
        server = serve(settings, port=0)
        servers.append(server)
        return _caller(server.url)

    yield start
    for s in servers:
        s.close()


@pytest.fixture()
def live(
    stack: Callable[..., Settings], small_model: Path, served: Callable[[Settings], Call]
) -> tuple[Settings, Call]:
    """A published model under a fresh prefix, and the API serving it."""
    s = stack()
    publish(load_model(small_model), s, redis_client(s))
    return s, served(s)


@pytest.mark.integration
def test_events_from_the_page_reach_the_users_list(
    live: tuple[Settings, Call], run_worker: Callable[..., Any], small_model: Path
) -> None:
    s, call = live
    model = load_model(small_model)
    run_worker(s)
    status, pop = call("/api/popular?n=5")
    assert status == 200 and len(pop["items"]) == 5
    assert pop["model_version"] == model.version
    assert all(i["name"] == synthetic_label(i["item_id"]) for i in pop["items"])

    status, body = call("/api/recs/carol")
    assert status == 404 and "no list yet" in body["error"]

    played = [i["item_id"] for i in pop["items"][:3]]
    for item in played:
        status, ack = call("/api/events", {"user_id": "carol", "item_id": item, "type": "play"})
        assert status == 202, ack
        assert ack["delivered"] and ack["item_id"] == item and ack["topic"] == s.topic_events

    def fresh() -> Any:
        status, v = call("/api/recs/carol?n=10")
        return status == 200 and not set(played) & {i["item_id"] for i in v["items"]} and v

    value = wait_for(fresh, timeout_s=10)
    assert len(value["items"]) == 10
    assert value["model_version"] == model.version
    assert value["updated_at_ms"] <= value["server_time_ms"]
    assert {h["item_id"] for h in value["history"]} == set(played)
    for item in value["items"]:
        assert item["name"] == synthetic_label(item["item_id"])
        assert item["because"]["item_id"] in played  # "because you played X"
    assert "carol" in call("/api/users")[1]["users"]


@pytest.mark.integration
def test_similar_reads_redis_first_then_computes(
    live: tuple[Settings, Call], small_model: Path
) -> None:
    s, call = live
    model = load_model(small_model)
    client, item = redis_client(s), model.item_ids[7]
    key = f"{Keys(s.redis_prefix).prefix}:similar:{item}"
    stored: dict[str, Any] = {
        "items": [{"item_id": "g00-track-0001", "score": 0.5}],
        "model_version": "v-x",
    }
    client.set(key, json.dumps({**stored, "updated_at_ms": 1}))
    status, body = call(f"/api/similar/{item}")
    assert status == 200 and body["source"] == "redis"
    assert body["items"] == [{**stored["items"][0], "name": "Track 1 · Ambient"}]

    client.delete(key)
    status, body = call(f"/api/similar/{item}?n=5")
    assert status == 200 and body["source"] == "computed"
    got = [i["item_id"] for i in body["items"]]
    y = np.asarray(model.item_factors, dtype=np.float64)
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    cos = y @ y[7]
    cos[7] = -np.inf
    assert got == [model.item_ids[i] for i in np.argsort(-cos)[:5]]
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True)

    status, body = call("/api/similar/no-such-item")
    assert status == 404 and "unknown item" in body["error"]


@pytest.mark.integration
def test_bad_requests_get_a_message_never_a_trace(
    live: tuple[Settings, Call], monkeypatch: pytest.MonkeyPatch
) -> None:
    _s, call = live
    item = call("/api/popular?n=1")[1]["items"][0]["item_id"]
    bad_posts: list[tuple[bytes, str]] = [
        (b"{nope", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (json.dumps({"user_id": "u"}).encode(), "item_id"),
        (json.dumps({"user_id": "u", "item_id": item, "type": "teleport"}).encode(), "teleport"),
        (json.dumps({"user_id": "u", "item_id": item, "value": "loud"}).encode(), "value"),
        (json.dumps({"user_id": "u", "item_id": item, "mood": "x"}).encode(), "mood"),
        (json.dumps({"user_id": "", "item_id": item}).encode(), "user_id"),
    ]
    for raw, fragment in bad_posts:
        status, body = call("/api/events", raw=raw)
        assert status == 400 and fragment in body["error"], (raw, body)
    assert call("/api/recs/" + "x" * 600)[0] == 404
    assert call("/api/recs/%0a")[0] == 404
    status, body = call("/api/popular?n=zero")
    assert status == 400 and body["error"].startswith("n: ") and "integer" in body["error"]
    status, body = call("/api/nothing-here")
    assert status == 404 and "no such endpoint" in body["error"]
    assert call("/api/popular", raw=b"{}")[0] == 405
    status, body = call("/api/events", raw=b"{}", ctype="text/plain")
    assert status == 415 and "application/json" in body["error"]
    status, body = call("/api/popular", host="evil.example:80")
    assert status == 403 and "Host" in body["error"]
    assert call("/static/../web.py")[0] == 404

    status, page = call("/")
    assert status == 200 and "/static/app.js" in page
    assert call("/static/app.js")[0] == 200

    def boom(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("secret internals")

    monkeypatch.setattr("streamrec.app.web.api.DemoApp.popular", boom)
    status, body = call("/api/popular")
    assert status == 500 and body == {"error": "internal error (see the server log)"}


@pytest.mark.integration
def test_before_any_model_is_published(
    stack: Callable[..., Settings], served: Callable[[Settings], Call]
) -> None:
    call = served(stack())
    status, body = call("/api/popular")
    assert status == 503 and "no model published" in body["error"]
    assert call("/api/model")[0] == 503
    assert call("/api/similar/anything")[0] == 503
    assert call("/api/users") == (200, {"users": []})


def test_busy_port_is_a_config_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        with pytest.raises(ConfigError, match="pass --port"):
            WebServer(sock.getsockname()[1])


def test_names(tmp_path: Path) -> None:
    assert synthetic_label("g03-track-0117") == "Track 117 · Country"
    assert synthetic_label("g42-track-0001") == "Track 1 · Genre 42"
    assert synthetic_label("user-0001") is None
    (tmp_path / "n.json").write_text('{"1": "One", "2": "Two"}')
    assert load_names(tmp_path / "n.json") == {"1": "One", "2": "Two"}
    (tmp_path / "movies.csv").write_text(
        'movieId,title,genres\n1,Toy Story (1995),Animation\n2,"Heat, the (1995)",Crime\n'
    )
    assert load_names(tmp_path / "movies.csv") == {"1": "Toy Story (1995)", "2": "Heat, the (1995)"}
    with gzip.open(tmp_path / "artists.dat.gz", "wt") as f:
        f.write("id\tname\turl\tpictureURL\n1\tMALICE MIZER\thttp://x\thttp://y\n")
    assert load_names(tmp_path / "artists.dat.gz") == {"1": "MALICE MIZER"}
    with pytest.raises(InputError, match="no such names file"):
        load_names(tmp_path / "missing.csv")
    (tmp_path / "bad.json").write_text("[1]")
    with pytest.raises(InputError, match="not a names file"):
        load_names(tmp_path / "bad.json")


def test_because_picks_the_closest_history_item(small_model: Path) -> None:
    live = LiveModel.of(load_model(small_model))
    items = list(live.model.item_ids[:20])
    history = list(live.model.item_ids[20:23])
    got = live.closest(items, ["unknown-item", *history])
    assert set(got) == set(items)
    for item, (because, sim) in got.items():
        row = live.unit[live.index[item]]
        sims = [float(live.unit[live.index[h]] @ row) for h in history]
        assert because == history[int(np.argmax(sims))]
        assert sim == pytest.approx(max(sims), rel=1e-5)
    assert live.closest(items, []) == {}
    similar = live.similar(items[0], 5)
    assert len(similar) == 5 and items[0] not in dict(similar)
