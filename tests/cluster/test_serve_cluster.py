"""The serving API (``streamrec serve``) on a Redis Cluster answers exactly as on one Redis:
the same published model and histories, written once to each, the same requests over HTTP.

A user's list and vector live under different hash slots on the cluster (``recs:`` and
``vec:`` keys), so this is where a multi-key read that a single Redis allows would fail."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from streamrec.app.web.asgi import create_app
from streamrec.app.web.server import WebServer
from streamrec.app.web.service import Service
from streamrec.artifact import load_model
from streamrec.connect import redis_client
from streamrec.model.publish import publish
from streamrec.settings import Settings
from tests.app.test_serve import HISTORIES, _catalog, _get

pytestmark = pytest.mark.integration


@pytest.fixture()
def served() -> Iterator[Callable[[Settings, Path], Callable[[str], tuple[int, Any]]]]:
    started: list[WebServer] = []

    def start(s: Settings, model_dir: Path) -> Callable[[str], tuple[int, Any]]:
        client = redis_client(s)
        publish(load_model(model_dir), s, client, histories=HISTORIES(model_dir))
        service = Service(s, catalog=_catalog(load_model(model_dir)))
        server = WebServer(0).start(create_app(service), [service.close])
        started.append(server)
        return lambda path: _get(server.url, path)

    yield start
    for server in started:
        server.close()


def test_the_serving_api_answers_on_the_cluster_as_on_one_redis(
    stack: Callable[..., Settings],
    cluster_stack: Callable[..., Settings],
    served: Callable[[Settings, Path], Callable[[str], tuple[int, Any]]],
    small_model: Path,
) -> None:
    one = served(stack(), small_model)
    many = served(cluster_stack(), small_model)
    item = load_model(small_model).item_ids[3]
    paths = [
        "/v1/recommend/ann?n=10",
        "/v1/recommend/bob?n=30&category=blues",  # short in the stored list: scored
        "/v1/recommend/ann?n=5&year_min=1990&year_max=2005",
        "/v1/recommend/nobody?n=10",  # no history: the popular list
        "/v1/popular?n=10&category=folk",
        f"/v1/similar/{item}?n=10",
        f"/v1/items/{item}",
    ]
    for path in paths:
        s1, b1 = one(path)
        s2, b2 = many(path)
        assert s1 == s2 == 200, (path, b1, b2)
        for body in (b1, b2):
            if isinstance(body, dict):
                body.pop("updated_at_ms", None)
        assert b1 == b2, path
    _status, body = many("/v1/recommend/bob?n=30&category=blues")
    assert body["source"] == "scored" and len(body["items"]) == 30
