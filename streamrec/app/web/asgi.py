"""The serving API over HTTP: a FastAPI app (README "The serving API (for front-ends)").

::

    GET  /v1/recommend/{user_id}  ?n=20&category=..&category=..&year_min=&year_max=
                                  &available_only=true&exclude=..   a user's list
    GET  /v1/similar/{item_id}    same filters                      items like this one
    GET  /v1/popular              same filters                      the popular ranking
    GET  /v1/items/{item_id}                                        the catalog's record
    GET  /v1/categories                                             categories and sizes
    POST /v1/items                {name, categories, year, available, features, item_id?}:
                                  published to the catalog topic (202 once acknowledged)
    GET  /livez  /readyz          liveness (always 200) and readiness (503 + reason)
    GET  /docs  /openapi.json     the OpenAPI description

With ``demo`` (``streamrec demo``, the tests) it also serves the demo page (``/``,
``/static/*``) and its ``/api/*`` endpoints (``api.DemoApp``), answering only requests whose
Host is loopback (a page elsewhere must not drive it: DNS rebinding).

Every error is JSON ``{"error": "..."}`` with its status: 400 for a bad parameter (FastAPI's
validation included, not its 422), 404 unknown user-facing ids, 503 while not ready or Redis
is down, 500 for anything else, logged with its trace and never sent.

The read endpoints run on the event loop (``async def``) although they call Redis
synchronously: one MGET of ~0.1 ms, and the work is CPU-bound, so threads add no throughput,
while the threadpool hop cost 100-200 us of CPU a request (a third of a filtered request:
measured in-process, same run). The price: while Redis hangs, a worker process waits out the
client's 2 s socket timeout per request. ``POST /v1/items`` (a Kafka acknowledgement, up to
10 s) and the demo's endpoints stay on the threadpool.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import redis
from fastapi import Body, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, Field
from starlette.datastructures import QueryParams
from starlette.exceptions import HTTPException as StarletteHTTPException

from streamrec.app.web.service import MAX_N, ApiError, Filters, Service, check_id, dumps
from streamrec.catalog import Item
from streamrec.errors import CatalogError

if TYPE_CHECKING:
    from streamrec.app.web.api import DemoApp

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
STATIC_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]"}
MAX_BODY = 16 * 1024
DELIVERY_TIMEOUT_S = 10.0


class ItemOut(BaseModel):
    item_id: str
    score: float | None = Field(description="compares within one answer; null: no factors")
    name: str | None = None
    why: str | None = Field(None, description='"content": a new item, factors from content')


class ListOut(BaseModel):
    user_id: str | None = None
    items: list[ItemOut]
    source: str = Field(description="list | scored | popular | list+popular")
    model_version: str | None
    updated_at_ms: int | None = None
    filters: dict[str, Any]


class NewItem(BaseModel):
    """An item to publish to the catalog topic."""

    item_id: str | None = Field(None, description="default: a new id, new-<random>")
    name: str = Field(min_length=1, max_length=512)
    categories: list[str] = Field(default_factory=list, max_length=64)
    year: int | None = Field(None, ge=0, le=9999)
    available: bool = True
    features: dict[str, float] = Field(default_factory=dict, max_length=256)


def _json(obj: Any, status: int = 200) -> Response:
    return Response(dumps(obj), status_code=status, media_type="application/json")


def _error(status: int, message: str) -> Response:
    return _json({"error": message}, status)


def _filters(
    category: list[str], year_min: int | None, year_max: int | None, available_only: bool
) -> Filters:
    if year_min is not None and year_max is not None and year_min > year_max:
        raise ApiError(HTTPStatus.BAD_REQUEST, f"year_min {year_min} > year_max {year_max}")
    cats = tuple(dict.fromkeys(c for c in category if c))
    return Filters(cats, year_min, year_max, available_only)


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _int_param(q: QueryParams, name: str, low: int, high: int) -> int | None:
    raw = q.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(HTTPStatus.BAD_REQUEST,
                       f"{name}: expected an integer, got {raw[:40]!r}") from None  # fmt: skip
    if not low <= value <= high:
        raise ApiError(HTTPStatus.BAD_REQUEST, f"{name}: must be from {low} to {high}")
    return value


def list_params(request: Request) -> tuple[int, Filters, list[str]]:
    """(n, filters, exclude) of a list request's query (``LIST_PARAMETERS``).

    Read by hand, not by FastAPI's per-parameter validation: that cost ~200 us of CPU a
    request here, a third of a filtered request (measured in-process); the OpenAPI document
    describes them all the same (``openapi_extra``)."""
    q = request.query_params
    n = _int_param(q, "n", 1, MAX_N)
    year_min = _int_param(q, "year_min", -(10**6), 10**6)
    year_max = _int_param(q, "year_max", -(10**6), 10**6)
    raw = q.get("available_only")
    available = True
    if raw is not None:
        if raw.lower() in _TRUE:
            available = True
        elif raw.lower() in _FALSE:
            available = False
        else:
            raise ApiError(HTTPStatus.BAD_REQUEST,
                           f"available_only: expected true or false, got {raw[:40]!r}")  # fmt: skip
    f = _filters(q.getlist("category"), year_min, year_max, available)
    return 20 if n is None else n, f, q.getlist("exclude")


def _param(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}  # fmt: skip


#: The list endpoints' query parameters, for the OpenAPI document.
LIST_PARAMETERS = [
    _param("n", {"type": "integer", "minimum": 1, "maximum": MAX_N, "default": 20},
           f"items wanted (1..{MAX_N})"),
    _param("category", {"type": "array", "items": {"type": "string"}},
           "repeatable: items of any of these categories"),
    _param("year_min", {"type": "integer"}, "release year at least (items with a year)"),
    _param("year_max", {"type": "integer"}, "release year at most"),
    _param("available_only", {"type": "boolean", "default": True},
           "leave out items the catalog marks unavailable"),
    _param("exclude", {"type": "array", "items": {"type": "string"}},
           "repeatable: item ids to leave out"),
]  # fmt: skip

N = Annotated[int, Query(ge=1, le=MAX_N, description=f"items wanted (1..{MAX_N})")]
Category = Annotated[list[str], Query(description="repeatable: items of any of these categories")]
YearMin = Annotated[int | None, Query(description="release year at least (items with a year)")]
YearMax = Annotated[int | None, Query(description="release year at most")]


def create_app(
    service: Service,
    demo: DemoApp | None = None,
    cors_origins: list[str] | None = None,
    publisher: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> FastAPI:
    """The app over ``service`` (and the demo page over ``demo``). ``publisher`` publishes a
    new item to the catalog topic (default: ``ItemPublisher`` on the service's settings)."""
    app = FastAPI(
        title="streamrec serving API",
        version="1",
        description="Recommendations with filters, similar items, popular items and the "
        "catalog (README: The serving API).",
    )
    app.state.service = service
    publish = publisher or ItemPublisher(service)

    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type"],
        )

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> Response:
        return _error(exc.status, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> Response:
        parts = []
        for e in exc.errors()[:5]:
            where = ".".join(str(x) for x in e.get("loc", ()) if x not in ("query", "path"))
            parts.append(f"{where}: {e.get('msg')}" if where else str(e.get("msg")))
        return _error(HTTPStatus.BAD_REQUEST, "; ".join(parts) or "bad request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == HTTPStatus.NOT_FOUND:
            return _error(exc.status_code, f"no such endpoint: {request.url.path}")
        if exc.status_code == HTTPStatus.METHOD_NOT_ALLOWED:
            return _error(exc.status_code, f"{request.method} is not allowed on {request.url.path}")
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(redis.RedisError)
    async def _redis(request: Request, exc: redis.RedisError) -> Response:
        log.error("serve: Redis error on %s %s: %s", request.method, request.url.path, exc)
        return _error(HTTPStatus.SERVICE_UNAVAILABLE, "Redis is not answering")

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> Response:
        log.error("serve: %s %s failed", request.method, request.url.path, exc_info=exc)
        return _error(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error (see the server log)")

    @app.get("/livez", include_in_schema=False)
    async def livez() -> Response:
        return _json({"ok": True})

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        ok, why = service.ready()
        return _json({"ready": ok, "reason": why}, 200 if ok else 503)

    lists: dict[int | str, dict[str, Any]] = {
        200: {"model": ListOut},
        400: {"description": '{"error": "..."}: a bad parameter'},
    }

    params = {"parameters": LIST_PARAMETERS}

    @app.get("/v1/recommend/{user_id}", responses=lists, response_class=Response,
             openapi_extra=params)  # fmt: skip
    async def recommend(user_id: str, request: Request) -> Response:
        """A user's list under the filters; a user with no list gets the popular one."""
        n, f, exclude = list_params(request)
        return _json(service.recommend(user_id, f, n, exclude))

    @app.get("/v1/similar/{item_id}", responses=lists, response_class=Response,
             openapi_extra=params)  # fmt: skip
    async def similar(item_id: str, request: Request) -> Response:
        """The items most like ``item_id`` (cosine of factors) under the filters."""
        n, f, exclude = list_params(request)
        return _json(service.similar(item_id, f, n, exclude))

    @app.get("/v1/popular", responses=lists, response_class=Response, openapi_extra=params)
    async def popular(request: Request) -> Response:
        """The popular ranking under the filters."""
        n, f, exclude = list_params(request)
        return _json(service.popular(f, n, exclude))

    @app.get("/v1/items/{item_id}", response_class=Response)
    async def item(item_id: str) -> Response:
        """The catalog's record of an item (404 for one neither catalog nor model knows)."""
        return _json(service.item(item_id))

    @app.get("/v1/categories", response_class=Response)
    async def categories() -> Response:
        """The catalog's categories (with their sizes), its years' range and the features
        the content map reads (what a form for new items asks for)."""
        return _json(service.categories())

    @app.post("/v1/items", status_code=202, response_class=Response)
    def new_item(body: Annotated[NewItem, Body()]) -> Response:
        """Publish an item to the catalog topic; 202 once Kafka acknowledged it. Services
        following the catalog (workers, this API) see it within seconds."""
        return _json(publish(body.model_dump()), 202)

    if demo is not None:
        _demo_routes(app, demo)
    return app


def _demo_routes(app: FastAPI, demo: DemoApp) -> None:
    """The demo page and its ``/api/*`` endpoints (``api.DemoApp``), loopback Hosts only."""

    @app.middleware("http")
    async def _loopback_only(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        host = request.headers.get("host", "")
        name = host.rpartition(":")[0] if host.rpartition(":")[2].isdigit() else host
        if name not in LOCAL_HOSTS:
            return _error(HTTPStatus.FORBIDDEN, f"unexpected Host header {name!r}")
        return await call_next(request)

    def page(name: str) -> Response:
        if name not in STATIC_FILES:
            return Response(b"not found\n", 404, media_type="text/plain; charset=utf-8")
        return FileResponse(STATIC / name, media_type=STATIC_FILES[name],
                            headers={"Cache-Control": "no-store"})  # fmt: skip

    @app.get("/", include_in_schema=False)
    def index() -> Response:
        return page("index.html")

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        return page(name)

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(b"", 204)

    @app.get("/api/health", include_in_schema=False)
    def health() -> Response:
        return _json({"ok": True})

    @app.get("/api/model", include_in_schema=False)
    def model() -> Response:
        return _json(demo.model_info())

    @app.get("/api/popular", include_in_schema=False)
    def popular(
        n: N = 20,
        category: Category = [],  # noqa: B006
        year_min: YearMin = None,
        year_max: YearMax = None,
    ) -> Response:
        f = _filters(category, year_min, year_max, True)
        return _json(demo.popular(n, f))

    @app.get("/api/users", include_in_schema=False)
    def users(limit: Annotated[int, Query(ge=1, le=MAX_N)] = 30) -> Response:
        return _json(demo.users(limit))

    @app.get("/api/recs/{user_id}", include_in_schema=False)
    def recs(
        user_id: str,
        n: N = 20,
        session: str = "",
        category: Category = [],  # noqa: B006
        year_min: YearMin = None,
        year_max: YearMax = None,
    ) -> Response:
        items = [s for s in session.split(",") if s][:50]
        f = _filters(category, year_min, year_max, True)
        return _json(demo.recs(user_id, n, items, f))

    @app.get("/api/similar/{item_id}", include_in_schema=False)
    def similar(item_id: str, n: N = 10) -> Response:
        return _json(demo.similar(item_id, n))

    @app.post("/api/events", include_in_schema=False)
    async def events(request: Request) -> Response:
        # JSON only: other sites' forms cannot post here without a CORS preflight.
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise ApiError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send the event as application/json")
        raw = await request.body()
        if not raw:
            raise ApiError(HTTPStatus.BAD_REQUEST, "expected a JSON body")
        if len(raw) > MAX_BODY:
            raise ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {MAX_BODY} bytes")
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, ValueError):
            raise ApiError(HTTPStatus.BAD_REQUEST, "body is not valid JSON") from None
        from starlette.concurrency import run_in_threadpool

        return _json(await run_in_threadpool(demo.post_event, body), 202)


class ItemPublisher:
    """Publishes new items to the catalog topic (``streamrec.producer.catalog``'s producer,
    key = item_id), one at a time, acknowledged before the answer; the producer is made on
    first use (a service that is never sent an item never connects to Kafka)."""

    def __init__(self, service: Service) -> None:
        self.settings = service.settings
        self._producer: Any = None
        self._lock = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> dict[str, Any]:
        from streamrec.errors import InfraError

        item_id = body.get("item_id") or f"new-{uuid.uuid4().hex[:10]}"
        check_id(item_id, "item")
        now = int(time.time() * 1000)
        item = Item(
            item_id=item_id,
            name=body["name"],
            categories=tuple(dict.fromkeys(c for c in body.get("categories", ()) if c)),
            year=body.get("year"),
            available=bool(body.get("available", True)),
            features={str(k): float(v) for k, v in (body.get("features") or {}).items()},
            updated_at_ms=now,
        )
        with self._lock:  # one at a time: the flush then tells about this record alone
            try:
                producer = self._connect()
                producer.send(item)
                producer.flush(DELIVERY_TIMEOUT_S)
            except CatalogError as exc:
                raise ApiError(HTTPStatus.BAD_REQUEST, str(exc)) from None
            except InfraError as exc:
                self._producer = None  # a fresh connection next time
                raise ApiError(HTTPStatus.SERVICE_UNAVAILABLE, str(exc)) from None
        log.info("serve: published item %r to %s", item_id, self.settings.topic_items)
        return {"item_id": item_id, "topic": self.settings.topic_items, "updated_at_ms": now,
                "delivered": True}  # fmt: skip

    def _connect(self) -> Any:
        if self._producer is None:
            from streamrec.connect import ensure_topics
            from streamrec.producer.catalog import CatalogProducer

            ensure_topics(self.settings)  # the items topic among them (compacted)
            self._producer = CatalogProducer(self.settings, "avro", **{"linger.ms": 0})
        return self._producer
