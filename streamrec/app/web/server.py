"""Running the serving API (``asgi.create_app``) on uvicorn.

- ``WebServer``: the app on a socket bound in the constructor (a busy port fails at once,
  before anything slow), served by uvicorn from a thread: ``streamrec demo`` and the tests.
- ``serve``: the demo's whole web side (``Service`` + ``DemoApp`` + the page) on loopback.
- ``run``: ``streamrec serve``, uvicorn in the foreground with ``settings.serve_workers``
  processes on ``settings.serve_bind`` (each worker process builds its own app from the
  environment's settings: ``app_from_env``).

Imports ``asgi``, ``api`` and ``service``; nothing imports it but the application above.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping
from typing import Any

from streamrec.app.web.api import DemoApp
from streamrec.app.web.asgi import create_app
from streamrec.app.web.service import Service
from streamrec.errors import ConfigError
from streamrec.settings import Settings, load_settings

log = logging.getLogger(__name__)

START_TIMEOUT_S = 10.0


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); "
            "is another demo or service running? pass --port"
        ) from None
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


class WebServer:
    """An ASGI app on ``http://host:port``, served by uvicorn from a thread."""

    def __init__(self, port: int = 8000, host: str = "127.0.0.1") -> None:
        self._sock = _bind(host, port)
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._closers: list[Callable[[], None]] = []

    @property
    def url(self) -> str:
        host, port = self._sock.getsockname()[:2]
        return f"http://{host!s}:{port}"

    def start(self, app: Any, closers: list[Callable[[], None]] | None = None) -> WebServer:
        """Serve ``app``; ``closers`` run at ``close`` (the service, the demo's producer)."""
        import uvicorn

        self._closers = list(closers or [])
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=2)  # fmt: skip
        server = uvicorn.Server(config)
        self._server = server

        def run() -> None:
            # uvicorn installs no signal handlers off the main thread: stopped by should_exit.
            asyncio.run(server.serve(sockets=[self._sock]))

        self._thread = threading.Thread(target=run, name="web", daemon=True)
        self._thread.start()
        ready = threading.Event()
        for _ in range(int(START_TIMEOUT_S / 0.02)):
            if server.started or not self._thread.is_alive():
                ready.set()
                break
            ready.wait(0.02)
        if not server.started:
            raise ConfigError(f"the web server did not start within {START_TIMEOUT_S:g} s")
        return self

    def close(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self._sock.close()
        for close in self._closers:
            try:
                close()
            except Exception as exc:
                log.warning("web: closing: %s", exc)
        self._closers = []

    def __enter__(self) -> WebServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def demo_app(
    settings: Settings,
    names: Mapping[str, str] | None = None,
    on_event: Callable[[str], None] | None = None,
) -> tuple[Any, list[Callable[[], None]]]:
    """The serving API with the demo page and its endpoints; and what closes them."""
    service = Service(settings, names=names)
    try:
        demo = DemoApp(settings, names=names, on_event=on_event, service=service)
    except BaseException:
        service.close()
        raise
    app = create_app(service, demo, cors_origins=settings.serve_cors_origins)
    return app, [demo.close, service.close]


def serve(
    settings: Settings,
    port: int = 8000,
    names: Mapping[str, str] | None = None,
    on_event: Callable[[str], None] | None = None,
) -> WebServer:
    """Bind loopback ``port``, build the demo's app (Redis, Kafka producer, the service) and
    serve; ``close()`` stops it."""
    server = WebServer(port)
    try:
        app, closers = demo_app(settings, names, on_event)
        return server.start(app, closers)
    except BaseException:
        server.close()
        raise


def app_from_env() -> Any:
    """The serving API of this process's settings (uvicorn's factory in each worker)."""
    settings = load_settings()
    service = Service(settings)
    return create_app(service, cors_origins=settings.serve_cors_origins)


def run(settings: Settings) -> int:
    """``streamrec serve``: uvicorn in the foreground until SIGTERM/SIGINT."""
    import uvicorn

    if not settings.serve_bind:
        raise ConfigError("serve_bind (STREAMREC_SERVE_BIND) is empty: give host:port")
    host, _, port = settings.serve_bind.rpartition(":")
    host = host.strip("[]")
    sock = _bind(host, int(port))  # a busy port: one line, exit 2, before any worker starts
    log.info("serve: http://%s:%s (%d worker%s), docs at /docs", host, port,
             settings.serve_workers, "s" if settings.serve_workers > 1 else "")  # fmt: skip
    if settings.serve_workers == 1:
        app = create_app(Service(settings), cors_origins=settings.serve_cors_origins)
        server = uvicorn.Server(uvicorn.Config(app, access_log=False, lifespan="off"))
        server.run(sockets=[sock])
        return 0
    # Several processes: each builds its own app from the environment (uvicorn's factory).
    os.environ["STREAMREC_SERVE_BIND"] = settings.serve_bind
    config = uvicorn.Config("streamrec.app.web.server:app_from_env", factory=True,
                            workers=settings.serve_workers, access_log=False,
                            lifespan="off")  # fmt: skip
    from uvicorn.supervisors import Multiprocess

    Multiprocess(config, sockets=[sock]).run()
    return 0
