"""The demo page's HTTP server: static files and the JSON API of ``api.DemoApp``.

Routes (all JSON but ``/`` and ``/static/*``; errors are ``{"error": "..."}``, never a trace)::

    GET  /                       the page (static/index.html beside this module; plain JS, no
                                 build)
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

The server is stdlib ``ThreadingHTTPServer`` bound to loopback. This module owns HTTP only:
routing, query parameters, bodies, headers, the Host check; what an endpoint answers is
``api.DemoApp``'s (Redis through ``streamrec.connect.redis_client``, Kafka through
``EventProducer``). Imports ``api`` and the floor.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Callable, Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np
import redis

from streamrec.app.web.api import ApiError, DemoApp
from streamrec.errors import ConfigError
from streamrec.settings import Settings

log = logging.getLogger(__name__)

STATIC_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
MAX_BODY = 16 * 1024
MAX_N = 200
LOCAL_HOSTS = {"127.0.0.1", "localhost", "[::1]"}


def _int_param(query: Mapping[str, list[str]], name: str, default: int) -> int:
    raw = query.get(name, [str(default)])[-1]
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(HTTPStatus.BAD_REQUEST, f"{name} must be an integer, got {raw!r}") from None
    if not 1 <= value <= MAX_N:
        raise ApiError(HTTPStatus.BAD_REQUEST, f"{name} must be between 1 and {MAX_N}")
    return value


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
        data = resources.files("streamrec.app.web").joinpath("static", name).read_bytes()
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
