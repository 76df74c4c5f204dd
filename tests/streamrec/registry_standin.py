"""A stand-in for a Confluent-compatible Schema Registry, on loopback, for the framing tests.

No real registry can run on this machine (README, "Schema versions and the registry
framing", says why), so the tests point the real ``confluent_kafka.schema_registry`` client,
and the real ``AvroSerializer`` that writes the ``00`` + schema id framing, at this: the
subset of the Confluent REST API those clients use (register a schema under a subject, look a
schema up by id), with HTTP basic auth, and a switch that makes it answer 503 (an outage).
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Registry:
    """What the stand-in holds, and how it behaves."""

    user: str = "sr-user"
    password: str = "sr-secret"
    schemas: dict[int, str] = field(default_factory=dict)  # id -> schema text
    subjects: dict[str, list[int]] = field(default_factory=dict)
    lookups: list[int] = field(default_factory=list)  # ids asked for, in order
    down: bool = False
    url: str = ""

    def register(self, subject: str, text: str) -> int:
        same = [i for i, known in self.schemas.items() if json.loads(known) == json.loads(text)]
        sid = same[0] if same else len(self.schemas) + 1
        self.schemas[sid] = text
        versions = self.subjects.setdefault(subject, [])
        if sid not in versions:
            versions.append(sid)
        return sid


def _handler(reg: Registry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _send(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _allowed(self) -> bool:
            if reg.down:
                self._send(503, {"error_code": 50301, "message": "unavailable"})
                return False
            want = base64.b64encode(f"{reg.user}:{reg.password}".encode()).decode()
            if self.headers.get("Authorization") != f"Basic {want}":
                self._send(401, {"error_code": 40101, "message": "Unauthorized"})
                return False
            return True

        def do_GET(self) -> None:
            if not self._allowed():
                return
            parts = urlsplit(self.path).path.strip("/").split("/")
            if parts[:2] == ["schemas", "ids"] and len(parts) == 3 and parts[2].isdigit():
                sid = int(parts[2])
                reg.lookups.append(sid)
                if sid in reg.schemas:
                    self._send(200, {"schema": reg.schemas[sid]})
                else:
                    self._send(404, {"error_code": 40403, "message": "Schema not found"})
                return
            self._send(404, {"error_code": 404, "message": f"not in the stand-in: {self.path}"})

        def do_POST(self) -> None:
            if not self._allowed():
                return
            parts = urlsplit(self.path).path.strip("/").split("/")
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            if len(parts) == 3 and parts[0] == "subjects" and parts[2] == "versions":
                sid = reg.register(parts[1], body["schema"])
                self._send(200, {"id": sid})
                return
            if len(parts) == 2 and parts[0] == "subjects":  # lookup of a registered schema
                for sid in reg.subjects.get(parts[1], []):
                    if json.loads(reg.schemas[sid]) == json.loads(body["schema"]):
                        version = reg.subjects[parts[1]].index(sid) + 1
                        self._send(200, {"subject": parts[1], "id": sid, "version": version,
                                         "schema": reg.schemas[sid]})  # fmt: skip
                        return
                self._send(404, {"error_code": 40403, "message": "Schema not found"})
                return
            self._send(404, {"error_code": 404, "message": f"not in the stand-in: {self.path}"})

    return Handler


@contextmanager
def standin_registry() -> Iterator[Registry]:
    """A running stand-in on a free loopback port (``Registry.url``), stopped at the end."""
    reg = Registry()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(reg))
    reg.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="registry", daemon=True)
    thread.start()
    try:
        yield reg
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
