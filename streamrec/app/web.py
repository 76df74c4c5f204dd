"""The demo page's HTTP server: static files and a small JSON API over the Redis contract.

Routes (all JSON but ``/`` and ``/static/*``; errors are ``{"error": "..."}``, never a trace)::

    GET  /                       the page (streamrec/static/index.html; plain JS, no build)
    GET  /api/model              the live model: version, items, factors
    GET  /api/popular?n=20       <p>:popular, items with display names
    GET  /api/recs/<user>?n=20&session=a,b
                                 <p>:recs:<user> with names and, per item, "because": the
                                 user's history item (the page's session items, then the
                                 worker's history) whose factor is closest (cosine); 404 if
                                 the user has no list yet
    GET  /api/similar/<item>?n=10
                                 <p>:similar:<item> when the trainer wrote it, else computed
                                 from the live model's item factors (cosine); 404 if unknown
    GET  /api/users?limit=30     some users that have a list (SCAN, bounded)
    POST /api/events             {"user_id", "item_id", "type", "value"?}: validated with
                                 streamrec.events.new_event, published to Kafka, 202 once the
                                 broker acknowledged it; 400 with the reason if invalid

The server is stdlib ``ThreadingHTTPServer`` bound to loopback. It reads settings, talks to
Redis with ``streamrec.connect.redis_client`` and publishes with ``EventProducer``.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np
import numpy.typing as npt
import redis

from streamrec.als.similar import closest, neighbours, unit_rows
from streamrec.errors import ArtifactError, ConfigError, EventError, InfraError
from streamrec.events import MAX_ID_LENGTH, new_event
from streamrec.files import open_text
from streamrec.keys import Keys, read_model_pointer
from streamrec.settings import Settings

if TYPE_CHECKING:
    from streamrec.artifact import Model
    from streamrec.producer.producer import EventProducer

log = logging.getLogger(__name__)

STATIC_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
MAX_BODY = 16 * 1024
MAX_N = 200
POINTER_CHECK_S = 1.0
DELIVERY_TIMEOUT_S = 10.0
NAMES_FILE = "item_names.json"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]"}
USERS_SCAN_S = 0.3  # most time one /api/users may spend scanning Redis

# The generated dataset's ids (model/data.py: synthetic) look like g03-track-0117.
SYNTHETIC_ID = re.compile(r"^g(\d{2})-track-(\d{4})$")
GENRES = (
    "Ambient",
    "Blues",
    "Classical",
    "Country",
    "Electronic",
    "Folk",
    "Hip-hop",
    "Jazz",
    "Metal",
    "Pop",
    "Reggae",
    "Rock",
)
_ID_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f]")


class ApiError(Exception):
    """An answer other than 200, with a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# --- display names ---------------------------------------------------------------------------


def synthetic_label(item_id: str) -> str | None:
    """``g03-track-0117`` -> ``Track 117 · Country``; None for other ids."""
    m = SYNTHETIC_ID.match(item_id)
    if m is None:
        return None
    g = int(m.group(1))
    genre = GENRES[g] if g < len(GENRES) else f"Genre {g}"
    return f"Track {int(m.group(2))} · {genre}"


def load_names(path: Path) -> dict[str, str]:
    """Item id -> display name from a names file.

    Accepted: a JSON object ``{item_id: name}``; or a CSV/TSV (``.gz`` allowed) with a header
    whose first column is the id and whose name is the column called ``name``/``title`` (else
    the second one), e.g. MovieLens ``movies.csv`` or HetRec Last.fm ``artists.dat``.
    Raises ConfigError if the file is missing or unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such names file")
    try:
        if path.suffix == ".json":
            obj = json.loads(path.read_text("utf-8"))
            if not isinstance(obj, dict):
                raise ValueError("expected a JSON object {item_id: name}")
            return {str(k): str(v) for k, v in obj.items()}
        with open_text(path, errors="replace") as f:
            first = f.readline()
            delim = "\t" if "\t" in first else ","
            header = [h.strip().lower() for h in next(csv.reader([first], delimiter=delim))]
            if len(header) < 2:
                raise ValueError("expected at least two columns: id and name")
            col = next((header.index(n) for n in ("name", "title", "item_name") if n in header), 1)
            names: dict[str, str] = {}
            for row in csv.reader(f, delimiter=delim):
                if len(row) > col and row[0].strip():
                    names[row[0].strip()] = row[col].strip()
            return names
    except (OSError, UnicodeDecodeError, ValueError, csv.Error) as exc:
        raise ConfigError(f"{path}: not a names file ({exc})") from None


def _names_for_model(model: Model) -> dict[str, str]:
    """Names that come with a model: ``item_names.json`` in its directory, or the Last.fm
    ``artists.dat[.gz]`` beside the data it was trained on."""
    own = model.path / NAMES_FILE
    try:
        if own.is_file():
            return load_names(own)
        source = str(model.manifest.get("source", ""))
        if source.startswith("lastfm-2k:"):
            data_dir = Path(source.partition(":")[2])
            for name in ("artists.dat", "artists.dat.gz"):
                if (data_dir / name).is_file():
                    return load_names(data_dir / name)
    except ConfigError as exc:
        log.warning("no item names: %s", exc)
    return {}


# --- the live model --------------------------------------------------------------------------


@dataclass(frozen=True)
class LiveModel:
    """The serving model with what the page needs: id -> row, unit-length factors, names."""

    model: Model
    index: Mapping[str, int]
    unit: npt.NDArray[np.float32]
    names: Mapping[str, str]

    @classmethod
    def of(cls, model: Model) -> LiveModel:
        unit = unit_rows(model.item_factors)
        return cls(
            model=model,
            index={item: n for n, item in enumerate(model.item_ids)},
            unit=unit,
            names=_names_for_model(model),
        )

    @property
    def version(self) -> str:
        return self.model.version

    def similar(self, item_id: str, n: int) -> list[tuple[str, float]]:
        """The ``n`` items closest to ``item_id`` by cosine of their factors (not itself)."""
        rows = np.array([self.index[item_id]], dtype=np.int64)
        if n <= 0:
            return []
        items, sims = neighbours(self.unit, rows, n)
        return [
            (self.model.item_ids[i], float(s))
            for i, s in zip(items[0].tolist(), sims[0].tolist(), strict=True)
            if i >= 0
        ]

    def closest(self, items: Sequence[str], history: Sequence[str]) -> dict[str, tuple[str, float]]:
        """For each of ``items``, the ``history`` item whose factor has the highest cosine."""
        hist = [h for h in dict.fromkeys(history) if h in self.index]
        known = [i for i in items if i in self.index]
        if not hist or not known:
            return {}
        best, sims = closest(
            self.unit,
            np.array([self.index[i] for i in known], dtype=np.int64),
            np.array([self.index[h] for h in hist], dtype=np.int64),
        )
        return {
            i: (hist[b], float(s))
            for i, b, s in zip(known, best.tolist(), sims.tolist(), strict=True)
        }


# --- the application (no HTTP here: tests call it directly too) ------------------------------


class DemoApp:
    """What the API answers, read from Redis per the documented contract."""

    def __init__(
        self,
        settings: Settings,
        client: redis.Redis | None = None,
        producer: EventProducer | None = None,
        names: Mapping[str, str] | None = None,
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        from streamrec.connect import ensure_topics, redis_client

        self.settings = settings
        self.keys = Keys(settings.redis_prefix)
        self.redis = client if client is not None else redis_client(settings)
        self._own_producer = producer is None
        if producer is None:
            from streamrec.producer.producer import EventProducer

            ensure_topics(settings, {settings.topic_events: settings.topic_events_partitions})
            # linger 0: one event at a time, acknowledged before the page hears back.
            producer = EventProducer(settings, "avro", **{"linger.ms": 0})
        self.producer = producer
        self.extra_names = dict(names or {})
        self.on_event = on_event
        self._send_lock = threading.Lock()
        self._page_users: list[str] = []  # users this page sent events for, latest last
        self._model_lock = threading.Lock()
        self._live: LiveModel | None = None
        self._pointer: bytes | None = None
        self._checked = 0.0

    def close(self) -> None:
        if self._own_producer:
            try:
                self.producer.flush(5.0)
            except InfraError as exc:
                log.warning("closing the producer: %s", exc)

    # names and model ------------------------------------------------------------------------

    def name(self, item_id: str, live: LiveModel | None = None) -> str:
        if item_id in self.extra_names:
            return self.extra_names[item_id]
        if live is not None and item_id in live.names:
            return live.names[item_id]
        return synthetic_label(item_id) or item_id

    def live_model(self) -> LiveModel | None:
        """The model the worker serves (``settings.model_path``, else the ``<p>:model``
        pointer), loaded once per version; the pointer is re-read at most every second."""
        with self._model_lock:
            now = time.monotonic()
            if self._live is not None and now - self._checked < POINTER_CHECK_S:
                return self._live
            self._checked = now
            from streamrec.artifact import load_model

            if self.settings.model_path is not None:
                if self._live is None:
                    self._live = LiveModel.of(load_model(self.settings.model_path))
                return self._live
            pointer = read_model_pointer(self.redis, self.keys)
            if pointer is None or pointer.raw == self._pointer:
                return self._live
            try:
                self._live = LiveModel.of(load_model(pointer.path))
                log.info("web: serving model %s (%s)", self._live.version, pointer.path)
            except ArtifactError as exc:
                log.error("web: cannot load the model %s points at: %s", self.keys.model, exc)
            self._pointer = pointer.raw
            return self._live

    def _named(
        self, items: Iterable[Mapping[str, Any]], live: LiveModel | None
    ) -> list[dict[str, Any]]:
        return [{**i, "name": self.name(str(i.get("item_id")), live)} for i in items]

    def _get_json(self, key: str) -> dict[str, Any] | None:
        raw = self.redis.get(key)
        if raw is None:
            return None
        try:
            obj = json.loads(raw)
        except ValueError:
            log.error("web: %s is not JSON: %r", key, raw[:200])
            raise ApiError(HTTPStatus.INTERNAL_SERVER_ERROR, f"{key} is malformed") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("items"), list):
            raise ApiError(HTTPStatus.INTERNAL_SERVER_ERROR, f"{key} is malformed")
        return obj

    # endpoints ------------------------------------------------------------------------------

    def model_info(self) -> dict[str, Any]:
        live = self.live_model()
        if live is None:
            raise ApiError(
                HTTPStatus.SERVICE_UNAVAILABLE,
                "no model published yet (streamrec train ... --publish)",
            )
        return {
            "version": live.version,
            "n_items": live.model.n_items,
            "factors": live.model.factors,
            "source": live.model.manifest.get("source"),
            "has_names": bool(live.names or self.extra_names)
            or any(synthetic_label(i) for i in live.model.item_ids[:1]),
        }

    def popular(self, n: int = 20) -> dict[str, Any]:
        live = self.live_model()
        value = self._get_json(self.keys.popular)
        if value is None:
            if live is None:
                raise ApiError(
                    HTTPStatus.SERVICE_UNAVAILABLE,
                    "no popular list yet: no model published (streamrec train ... --publish)",
                )
            value = {
                "items": [{"item_id": i, "score": s} for i, s in live.model.popular(n)],
                "model_version": live.version,
                "updated_at_ms": int(live.model.manifest.get("created_at_ms", 0)),
            }
        return {**value, "items": self._named(value["items"][:n], live)}

    def recs(self, user_id: str, n: int = 20, session: Sequence[str] = ()) -> dict[str, Any]:
        user_id = _check_id(user_id, "user")
        value = self._get_json(self.keys.recs(user_id))
        if value is None:
            raise ApiError(
                HTTPStatus.NOT_FOUND,
                f"no list yet for user {user_id!r}: it appears after the user's first event "
                "(show /api/popular meanwhile)",
            )
        live = self.live_model()
        history = self._history(user_id)
        positive = [h["item_id"] for h in history if h["total"] > 0]
        items = value["items"][:n]
        because = (
            live.closest([str(i.get("item_id")) for i in items], [*session, *positive])
            if live is not None
            else {}
        )
        out = []
        for i in self._named(items, live):
            b = because.get(i["item_id"])
            i["because"] = (
                {"item_id": b[0], "name": self.name(b[0], live), "similarity": round(b[1], 4)}
                if b is not None
                else None
            )
            out.append(i)
        return {
            **value,
            "items": out,
            "history": self._named(history[:20], live),
            "server_time_ms": int(time.time() * 1000),
        }

    def _history(self, user_id: str) -> list[dict[str, Any]]:
        """The worker's history of the user (internal key; the demo page may peek), most recent
        first: [{"item_id", "total", "last_ms"}]."""
        raw = self.redis.get(self.keys.user(user_id))
        if raw is None:
            return []
        try:
            items = json.loads(raw)["items"]
            rows: list[dict[str, Any]] = [
                {"item_id": str(i), "total": float(v[0]), "last_ms": int(v[1])}
                for i, v in items.items()
            ]
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            log.warning("web: unreadable history for %r", user_id)
            return []
        rows.sort(key=lambda r: (-r["last_ms"], r["item_id"]))
        return rows

    def similar(self, item_id: str, n: int = 10) -> dict[str, Any]:
        item_id = _check_id(item_id, "item")
        live = self.live_model()
        stored = self._get_json(self.keys.similar(item_id))
        if stored is not None:
            return {
                **stored,
                "item_id": item_id,
                "name": self.name(item_id, live),
                "items": self._named(stored["items"][:n], live),
                "source": "redis",
            }
        if live is None:
            raise ApiError(
                HTTPStatus.SERVICE_UNAVAILABLE,
                "no model published yet (streamrec train ... --publish)",
            )
        if item_id not in live.index:
            raise ApiError(HTTPStatus.NOT_FOUND, f"unknown item {item_id!r} (not in the model)")
        items = [{"item_id": i, "score": round(s, 6)} for i, s in live.similar(item_id, n)]
        return {
            "item_id": item_id,
            "name": self.name(item_id, live),
            "items": self._named(items, live),
            "model_version": live.version,
            "source": "computed",
        }

    def users(self, limit: int = 30) -> dict[str, Any]:
        """Up to ``limit`` users that have a list: those this page sent events for (latest
        first), then others found by a SCAN bounded in time (it never blocks Redis)."""
        with self._send_lock:
            mine = list(reversed(self._page_users))
        found: list[str] = [u for u in mine if self.redis.exists(self.keys.recs(u))][:limit]
        start = f"{self.keys.prefix}:recs:"
        others: set[str] = set()
        deadline = time.monotonic() + USERS_SCAN_S
        cursor = 0
        while len(found) + len(others) < limit:
            cursor, keys = self.redis.scan(
                cursor=cursor, match=f"{_glob_escape(start)}*", count=1000
            )
            for k in keys:
                text = k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k)
                others.add(text[len(start) :])
            if cursor == 0 or time.monotonic() > deadline:
                break
        found += sorted(others - set(found))
        return {"users": found[:limit]}

    def post_event(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError(HTTPStatus.BAD_REQUEST, "expected a JSON object")
        unknown = set(body) - {"user_id", "item_id", "type", "value"}
        if unknown:
            raise ApiError(
                HTTPStatus.BAD_REQUEST, f"unknown field(s): {', '.join(sorted(unknown))}"
            )
        value = body.get("value")
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ApiError(HTTPStatus.BAD_REQUEST, "value must be a number or null")
            value = float(value)
        for field in ("user_id", "item_id"):
            if not isinstance(body.get(field), str):
                raise ApiError(HTTPStatus.BAD_REQUEST, f"{field} must be a non-empty string")
        try:
            event = new_event(
                body["user_id"],
                body["item_id"],
                str(body.get("type", "click")),
                value,
                context={"source": "demo-page"},
            )
        except EventError as exc:
            raise ApiError(HTTPStatus.BAD_REQUEST, exc.reason) from None
        p = self.producer
        with self._send_lock:  # one at a time: the counters then tell about this event alone
            delivered = p.delivered
            p.send(event)
            try:
                p.flush(DELIVERY_TIMEOUT_S)
            except InfraError as exc:
                log.warning("web: %s", exc)
            ok = p.delivered > delivered
            if ok:
                if event.user_id in self._page_users:
                    self._page_users.remove(event.user_id)
                self._page_users.append(event.user_id)
                del self._page_users[:-100]
        if not ok:
            raise ApiError(
                HTTPStatus.SERVICE_UNAVAILABLE,
                f"Kafka did not acknowledge the event within {DELIVERY_TIMEOUT_S:g} s",
            )
        if self.on_event is not None:
            self.on_event(
                f"page: {event.user_id} {event.type} {self.name(event.item_id, self._live)}"
            )
        return {
            "event_id": event.event_id,
            "user_id": event.user_id,
            "item_id": event.item_id,
            "type": event.type,
            "timestamp": event.timestamp,
            "topic": p.topic,
            "delivered": True,
        }


def _check_id(value: str, what: str) -> str:
    if not value or len(value) > MAX_ID_LENGTH or _ID_BAD_CHARS.search(value):
        raise ApiError(HTTPStatus.NOT_FOUND, f"bad {what} id {value[:80]!r}")
    return value


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def _int_param(query: Mapping[str, list[str]], name: str, default: int) -> int:
    raw = query.get(name, [str(default)])[-1]
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(HTTPStatus.BAD_REQUEST, f"{name} must be an integer, got {raw!r}") from None
    if not 1 <= value <= MAX_N:
        raise ApiError(HTTPStatus.BAD_REQUEST, f"{name} must be between 1 and {MAX_N}")
    return value


# --- HTTP ------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the page polls
    server_version = "streamrec-demo"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("web: %s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        try:
            self._route(method)
        except ApiError as exc:
            self._json(exc.status, {"error": exc.message})
        except redis.RedisError as exc:
            log.error("web: Redis error on %s %s: %s", method, self.path, exc)
            self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "Redis is not answering"})
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception:
            log.exception("web: %s %s failed", method, self.path)
            self._json(
                HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error (see the server log)"}
            )

    def _route(self, method: str) -> None:
        app = self.server.app
        parts = urlsplit(self.path)
        path, query = parts.path, parse_qs(parts.query)
        # Loopback only: a page from elsewhere must not drive this server (DNS rebinding).
        host = (self.headers.get("Host") or "").rpartition(":")[0] or self.headers.get("Host")
        if host not in LOCAL_HOSTS:
            raise ApiError(HTTPStatus.FORBIDDEN, f"unexpected Host header {host!r}")
        if method == "POST":
            if path != "/api/events":
                raise ApiError(HTTPStatus.METHOD_NOT_ALLOWED, f"POST is not allowed on {path}")
            # JSON only: other sites' forms cannot post here without a CORS preflight.
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if ctype != "application/json":
                raise ApiError(
                    HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send the event as application/json"
                )
            self._json(HTTPStatus.ACCEPTED, app.post_event(self._body()))
            return
        if path in ("/", "/index.html"):
            self._static("index.html")
        elif path.startswith("/static/"):
            self._static(path[len("/static/") :])
        elif path == "/favicon.ico":
            self._send(HTTPStatus.NO_CONTENT, b"", "text/plain")
        elif path == "/api/health":
            self._json(HTTPStatus.OK, {"ok": True})
        elif path == "/api/model":
            self._json(HTTPStatus.OK, app.model_info())
        elif path == "/api/popular":
            self._json(HTTPStatus.OK, app.popular(_int_param(query, "n", 20)))
        elif path == "/api/users":
            self._json(HTTPStatus.OK, app.users(_int_param(query, "limit", 30)))
        elif path.startswith("/api/recs/"):
            session = [s for s in ",".join(query.get("session", [])).split(",") if s][:50]
            user = unquote(path[len("/api/recs/") :])
            self._json(HTTPStatus.OK, app.recs(user, _int_param(query, "n", 20), session))
        elif path.startswith("/api/similar/"):
            item = unquote(path[len("/api/similar/") :])
            self._json(HTTPStatus.OK, app.similar(item, _int_param(query, "n", 10)))
        elif path.startswith("/api/"):
            raise ApiError(HTTPStatus.NOT_FOUND, f"no such endpoint: {path}")
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")

    def _body(self) -> Any:
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            raise ApiError(HTTPStatus.BAD_REQUEST, "bad Content-Length") from None
        if length <= 0:
            raise ApiError(HTTPStatus.BAD_REQUEST, "expected a JSON body")
        if length > MAX_BODY:
            self.close_connection = True
            raise ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {MAX_BODY} bytes")
        raw = self.rfile.read(length)
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, ValueError):
            raise ApiError(HTTPStatus.BAD_REQUEST, "body is not valid JSON") from None

    def _static(self, name: str) -> None:
        if name not in STATIC_FILES:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")
            return
        data = resources.files("streamrec.app").joinpath("static", name).read_bytes()
        self._send(HTTPStatus.OK, data, STATIC_FILES[name])

    def _json(self, status: int, obj: Any) -> None:
        body = json.dumps(obj, ensure_ascii=False, allow_nan=False, default=_jsonable).encode()
        self._send(status, body, "application/json; charset=utf-8")

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.floating | float):
        return None if not math.isfinite(float(obj)) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    app: DemoApp


class WebServer:
    """The demo page and API on ``http://host:port`` (loopback), served from a thread.

    Binding happens in the constructor (so a busy port fails at once, before anything slow);
    ``start(app)`` begins serving.
    """

    def __init__(self, port: int = 8000, host: str = "127.0.0.1") -> None:
        try:
            self._server = _Server((host, port), _Handler, bind_and_activate=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {host}:{port} ({exc.strerror or exc}); "
                "is another demo running? pass --port"
            ) from None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self, app: DemoApp) -> WebServer:
        self._server.app = app
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="web",
            daemon=True,
        )
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()
        app = getattr(self._server, "app", None)
        if app is not None:
            app.close()

    def __enter__(self) -> WebServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(
    settings: Settings,
    port: int = 8000,
    names: Mapping[str, str] | None = None,
    on_event: Callable[[str], None] | None = None,
) -> WebServer:
    """Bind, build the app (Redis + Kafka producer) and serve; ``close()`` stops it."""
    server = WebServer(port)
    try:
        return server.start(DemoApp(settings, names=names, on_event=on_event))
    except BaseException:
        server.close()
        raise
