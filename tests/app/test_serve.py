"""The serving API (``streamrec serve``) over HTTP: uvicorn on an ephemeral port, real Redis,
a real model artifact (with a content map), lists and vectors written by the real publisher
and worker, the catalog from the real items topic.

Every answer is checked against a brute force over the same arrays: the filtered catalog
scored with the user's stored vector, their history left out."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamrec.als.content import fit_content_map
from streamrec.app.web.asgi import create_app
from streamrec.app.web.index import Filters, ServingIndex
from streamrec.app.web.server import WebServer
from streamrec.app.web.service import Service
from streamrec.artifact import Model, load_model, write_model
from streamrec.catalog import Item
from streamrec.connect import ensure_topics, redis_client
from streamrec.events import new_event
from streamrec.keys import Keys, parse_vec
from streamrec.model.publish import publish
from streamrec.producer.producer import EventProducer
from streamrec.settings import Settings
from streamrec.worker.catalog import Catalog
from tests.conftest import wait_for

Call = Callable[..., tuple[int, Any]]
GENRES = ("ambient", "blues", "classical", "country", "electronic", "folk")


def _get(base: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data,
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=15) as res:
            status, text, ctype = res.status, res.read(), res.headers["Content-Type"]
    except urllib.error.HTTPError as exc:
        status, text, ctype = exc.code, exc.read(), exc.headers["Content-Type"]
    return status, json.loads(text) if "json" in (ctype or "") else text.decode()


def _record(item_id: str, row: int, features: dict[str, float] | None = None) -> Item:
    """A catalog record for a model item: category from its genre (and 'live' for every
    fifth), a year from its row, every seventh unavailable."""
    genre = GENRES[int(item_id[1:3]) % len(GENRES)]
    cats = (genre, "live") if row % 5 == 0 else (genre,)
    year = None if row % 11 == 0 else 1980 + row % 40
    return Item(item_id, f"Song {row}", cats, year, row % 7 != 3,
                features or {}, 1_700_000_000_000)  # fmt: skip


@pytest.fixture(scope="module")
def content_model(small_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small model with a content map learned from features that carry its factors."""
    model = load_model(small_model)
    feats = _features(model)
    items = [_record(i, r, feats[r]) for r, i in enumerate(model.item_ids)]
    cmap = fit_content_map(items, model.item_factors, regularization=0.1)
    out = tmp_path_factory.mktemp("models") / "with-content"
    return write_model(out, model.item_ids, np.array(model.item_factors),
                       np.array(model.item_popularity), model.params,
                       extra={"version": model.version + "-c"}, content=cmap)  # fmt: skip


def _features(model: Model) -> list[dict[str, float]]:
    f = np.asarray(model.item_factors, dtype=np.float64)
    return [{f"f{j}": float(v) for j, v in enumerate(row[:8])} for row in f]


def _catalog(model: Model) -> Catalog:
    cat = Catalog()
    feats = _features(model)
    cat.apply({i: _record(i, r, feats[r]) for r, i in enumerate(model.item_ids)})
    return cat


@pytest.fixture()
def api(stack: Callable[..., Settings]) -> Iterator[Callable[..., tuple[Settings, Call, Service]]]:
    started: list[WebServer] = []

    def start(
        model_dir: Path, catalog: Catalog | None = None, follow_catalog: bool = False, **kw: Any
    ) -> tuple[Settings, Call, Service]:
        s = stack(**kw)
        publish(load_model(model_dir), s, redis_client(s), histories=HISTORIES(model_dir))
        service = Service(s, catalog=catalog, follow_catalog=follow_catalog)
        server = WebServer(0).start(create_app(service), [service.close])
        started.append(server)
        return s, (lambda path, body=None: _get(server.url, path, body)), service

    yield start
    for server in started:
        server.close()


def HISTORIES(model_dir: Path) -> dict[str, dict[str, float]]:
    ids = load_model(model_dir).item_ids
    return {
        "ann": {ids[i]: 3.0 for i in (1, 2, 3, 40, 41)},
        "bob": {ids[i]: 1.0 for i in range(60, 90, 3)},
        "dis": {ids[5]: -2.0},  # only a dislike: the popularity ranking
    }


def _expected_scored(
    service: Service, user: str, f: Filters, n: int, exclude: tuple[str, ...] = ()
) -> list[str]:
    """Brute force: every matching row, scored with the user's stored vector, history and
    ``exclude`` and blocked rows left out, best first."""
    live = service.live()
    index = live.index
    vec = parse_vec(service.redis.get(service.keys.vec(user)))
    assert vec.vector is not None
    rows = [r for r in range(index.size) if _matches(index, r, f)]
    drop = set(vec.seen.tolist()) | {index.row_of[e] for e in exclude if e in index.row_of}
    rows = [r for r in rows if r not in drop and index.has_factors[r]]
    scores = []
    for r in rows:
        fac = index.factors[r] if r < index.n_model else index.cold[r - index.n_model]
        scores.append(float(np.dot(fac, vec.vector)))
    order = sorted(range(len(rows)), key=lambda j: (-scores[j], rows[j]))[:n]
    return [str(index.ids[rows[j]]) for j in order]


def _matches(index: ServingIndex, row: int, f: Filters) -> bool:
    if f.available_only and not index.available[row]:
        return False
    year = index.year[row]
    if f.year_min is not None and not year >= f.year_min:
        return False
    if f.year_max is not None and not year <= f.year_max:
        return False
    if f.categories:
        return any(row in set(index.categories.get(c, np.zeros(0)).tolist())
                   for c in f.categories)  # fmt: skip
    return True


def _query(f: Filters, n: int, exclude: tuple[str, ...] = ()) -> str:
    parts = [f"n={n}", *(f"category={c}" for c in f.categories)]
    if f.year_min is not None:
        parts.append(f"year_min={f.year_min}")
    if f.year_max is not None:
        parts.append(f"year_max={f.year_max}")
    parts.append(f"available_only={'true' if f.available_only else 'false'}")
    parts += [f"exclude={e}" for e in exclude]
    return "?" + "&".join(parts)


FILTERS = [
    Filters(("blues",)),
    Filters(("blues", "folk")),
    Filters(("live",), 1990, 2005),
    Filters((), 2010, None),
    Filters((), None, 1985, available_only=False),
    Filters(("classical",), available_only=False),
    Filters(("no-such-genre",)),
]


@pytest.mark.integration
def test_every_filter_returns_only_matching_items_and_n_when_n_match(
    api: Callable[..., tuple[Settings, Call, Service]], small_model: Path
) -> None:
    model = load_model(small_model)
    catalog = _catalog(model)
    _s, call, service = api(small_model, catalog)
    index = service.live().index
    for f in FILTERS:
        for n in (5, 30, 120):
            for user in ("ann", "bob"):
                status, body = call(
                    f"/v1/recommend/{user}" + _query(f, n, ("x", model.item_ids[7]))
                )
                assert status == 200, body
                got = [i["item_id"] for i in body["items"]]
                want = _expected_scored(service, user, f, n, ("x", model.item_ids[7]))
                assert len(got) == len(want) == min(n, len(want)), (f, n, user)
                for item in got:
                    assert _matches(index, index.row_of[item], f), (f, item)
                seen = set(HISTORIES(small_model)[user]) | {model.item_ids[7]}
                assert not seen & set(got)
                if body["source"] == "scored":
                    assert got == want, (f, n, user)
                else:  # the stored list held n matches: the same items, in its order
                    assert body["source"] == "list"
                    assert got == want[: len(got)], (f, n, user)
    # narrow enough that the stored top-50 cannot hold 30 matches: scored on request
    status, body = call("/v1/recommend/ann?n=30&category=blues")
    assert body["source"] == "scored" and len(body["items"]) == 30
    # no filter but availability, 5 items: straight from the stored list
    status, body = call("/v1/recommend/ann?n=5&available_only=false")
    assert body["source"] == "list" and body["model_version"] == model.version


@pytest.mark.integration
def test_popular_similar_and_users_without_a_vector(
    api: Callable[..., tuple[Settings, Call, Service]], small_model: Path
) -> None:
    model = load_model(small_model)
    catalog = _catalog(model)
    _s, call, service = api(small_model, catalog)
    index = service.live().index
    pop_order = np.argsort(-np.asarray(model.item_popularity), kind="stable").tolist()
    for f in FILTERS:
        status, body = call("/v1/popular" + _query(f, 25))
        want = [model.item_ids[r] for r in pop_order if _matches(index, r, f)][:25]
        assert status == 200 and [i["item_id"] for i in body["items"]] == want, f
        # a user nobody has heard of gets the same filtered popular list
        status, body = call("/v1/recommend/nobody-at-all" + _query(f, 25))
        assert body["source"] == "popular" and [i["item_id"] for i in body["items"]] == want
        # a user whose history is one dislike: popular, without that item
        status, body = call("/v1/recommend/dis" + _query(f, 25))
        disliked = model.item_ids[5]
        assert body["source"] == "popular"
        assert [i["item_id"] for i in body["items"]] == [i for i in
                [model.item_ids[r] for r in pop_order if _matches(index, r, f)]
                if i != disliked][:25]  # fmt: skip
    # similar: cosine of factors over the filtered catalog, the item itself left out
    item = model.item_ids[10]
    unit = model.item_factors / np.linalg.norm(model.item_factors, axis=1, keepdims=True)
    for f in FILTERS[:4]:
        status, body = call(f"/v1/similar/{item}" + _query(f, 15))
        assert status == 200, body
        rows = [r for r in range(model.n_items) if r != 10 and _matches(index, r, f)]
        sims = unit[rows] @ unit[10]
        want = [model.item_ids[rows[j]] for j in np.argsort(-sims, kind="stable")[:15]]
        got = [i["item_id"] for i in body["items"]]
        assert len(got) == len(want) and set(got) == set(want), f
        assert body["item_id"] == item
    status, body = call(f"/v1/items/{item}")
    assert status == 200 and body["name"] == "Song 10" and body["in_model"] is True
    assert body["categories"] == list(catalog.get(item).categories)  # type: ignore[union-attr]


@pytest.mark.integration
def test_bad_input_is_json_with_a_4xx_never_a_trace(
    api: Callable[..., tuple[Settings, Call, Service]],
    small_model: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _s, call, _service = api(small_model, _catalog(load_model(small_model)))
    for path, fragment in [
        ("/v1/recommend/ann?n=0", "n: "),
        ("/v1/recommend/ann?n=201", "n: "),
        ("/v1/recommend/ann?n=lots", "n: "),
        ("/v1/recommend/ann?year_min=2010&year_max=2000", "year_min 2010 > year_max 2000"),
        ("/v1/recommend/ann?year_min=soon", "year_min"),
        ("/v1/popular?available_only=maybe", "available_only"),
        ("/v1/recommend/%0a", "bad user id"),
    ]:
        status, body = call(path)
        assert status == 400 and fragment in body["error"], (path, body)
        assert "Traceback" not in json.dumps(body)
    assert call("/v1/items/no-such-item") == (404, {"error": "unknown item 'no-such-item'"})
    assert call("/v1/similar/no-such-item")[0] == 404
    status, body = call("/v1/nothing")
    assert status == 404 and "no such endpoint" in body["error"]
    status, body = call("/v1/items", {"name": ""})
    assert status == 400 and "name" in body["error"]

    def boom(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(Service, "popular", boom)
    status, body = call("/v1/popular")
    assert (status, body) == (500, {"error": "internal error (see the server log)"})
    assert call("/livez") == (200, {"ok": True})
    assert call("/readyz") == (200, {"ready": True, "reason": "ok"})
    status, page = call("/docs")
    assert status == 200 and "swagger" in page.lower()
    status, spec = call("/openapi.json")
    assert "/v1/recommend/{user_id}" in spec["paths"] and "/v1/similar/{item_id}" in spec["paths"]
    documented = {p["name"] for p in spec["paths"]["/v1/recommend/{user_id}"]["get"]["parameters"]}
    assert documented == {"user_id", "n", "category", "year_min", "year_max", "available_only",
                          "exclude"}  # fmt: skip


@pytest.mark.integration
def test_before_any_model_the_service_is_not_ready(stack: Callable[..., Settings]) -> None:
    s = stack()
    service = Service(s, follow_catalog=False)
    with WebServer(0).start(create_app(service), [service.close]) as server:
        status, body = _get(server.url, "/readyz")
        assert status == 503 and "no model published" in body["reason"]
        status, body = _get(server.url, "/v1/popular")
        assert status == 503 and "no model published" in body["error"]


@pytest.mark.integration
def test_a_workers_vector_serves_filters_and_the_service_follows_the_model(
    api: Callable[..., tuple[Settings, Call, Service]],
    run_worker: Callable[..., Any],
    small_model: Path,
    content_model: Path,
) -> None:
    model = load_model(small_model)
    s, call, service = api(small_model, _catalog(model))
    run_worker(s)
    played = [i for i in model.item_ids if i.startswith("g01-")][:4]  # blues
    with EventProducer(s) as p:
        for item in played:
            p.send(new_event("walt", item, "play", value=200.0))

    def scored() -> Any:
        raw = redis_client(s).get(Keys(s.redis_prefix).vec("walt"))
        if raw is None or len(parse_vec(raw).seen) < len(played):
            return None
        status, body = call("/v1/recommend/walt?n=40&category=blues")
        return status == 200 and body["source"] == "scored" and body

    body = wait_for(scored, timeout_s=15)
    got = [i["item_id"] for i in body["items"]]
    assert got == _expected_scored(service, "walt", Filters(("blues",)), 40)
    assert not set(played) & set(got)
    # a new model published: the service swaps to it within a few seconds
    publish(load_model(content_model), s, redis_client(s))
    wait_for(lambda: call("/v1/popular?n=1")[1]["model_version"] == model.version + "-c",
             timeout_s=10)  # fmt: skip


@pytest.mark.integration
def test_a_new_item_posted_is_followed_from_the_topic_and_served_from_its_content(
    api: Callable[..., tuple[Settings, Call, Service]], content_model: Path
) -> None:
    model = load_model(content_model)
    s, call, _service = api(content_model, None, follow_catalog=True)
    ensure_topics(s)
    wait_for(lambda: call("/readyz")[0] == 200, timeout_s=30)
    # features copied from an item "ann" likes: its mapped factors come out close to that one's
    like = model.item_ids[2]
    feats = _features(model)[2]
    status, body = call("/v1/items", {"name": "Brand new", "categories": ["blues", "new"],
                                      "year": 2026, "features": feats})  # fmt: skip
    assert status == 202 and body["delivered"], body
    new = body["item_id"]
    info = wait_for(lambda: (r := call(f"/v1/items/{new}"))[0] == 200 and r[1], timeout_s=10)
    assert info["in_model"] is False and info["has_factors"] is True
    assert info["categories"] == ["blues", "new"] and info["year"] == 2026
    status, body = call("/v1/recommend/ann?n=5&category=new")
    assert body["source"] == "scored"
    assert [(i["item_id"], i.get("why")) for i in body["items"]] == [(new, "content")]
    # no filter: ann's stored list (written before the item existed) has it merged in by its
    # score against her vector, where it beats the list's last entry
    status, body = call("/v1/recommend/ann?n=50&available_only=false")
    assert body["source"] == "list"
    merged = {i["item_id"]: i for i in body["items"]}
    assert merged[new]["why"] == "content"
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True)
    status, body = call(f"/v1/similar/{like}?n=3&category=new")
    assert [i["item_id"] for i in body["items"]] == [new]
    # unavailable: gone from every answer at once
    status, _ = call("/v1/items", {"item_id": new, "name": "Brand new", "categories": ["new"],
                                   "available": False, "features": feats})  # fmt: skip
    assert status == 202
    wait_for(lambda: call(f"/v1/items/{new}")[1]["available"] is False, timeout_s=10)
    assert call("/v1/recommend/ann?n=5&category=new")[1]["items"] == []
    assert len(call("/v1/recommend/ann?n=5&category=new&available_only=false")[1]["items"]) == 1
