"""Writer schemas of the Confluent Schema Registry framing (``00`` + 4-byte schema id), fetched
with ``confluent_kafka.schema_registry`` from ``Settings.schema_registry_url``.

``event_decoder(settings)`` is the decoder every reader of events builds (the worker, the
nightly job's reader): the package's schema versions plus ``event_schemas_dir``, and, when a
registry URL is set, ``RegistrySchemas`` for the framed values. A schema id is looked up once
(ids never change in a registry) and kept, so the registry is asked once per new writer
version, not per event.

Failures: an id the registry does not have, or a schema that is not Avro, is the event's
fault (``EventError``: the message is dead-lettered with the reason); a registry that does not
answer (connection refused, a timeout, a 5xx) is ``InfraError`` (the worker waits it out and
redoes the batch); one that refuses the credentials (401/403) is ``AuthError`` (exit 7).
"""

from __future__ import annotations

import logging
import threading
from typing import Any
from urllib.parse import urlsplit

from streamrec.errors import AuthError, ConfigError, EventError, InfraError
from streamrec.events import EventDecoder, SchemaSet
from streamrec.settings import Settings

log = logging.getLogger(__name__)

REGISTRY_TIMEOUT_S = 5.0  # one lookup; the worker's backoff spaces the retries


class RegistrySchemas:
    """``schema id -> writer schema text`` from a Confluent-compatible registry (cached)."""

    def __init__(self, settings: Settings) -> None:
        url = settings.schema_registry_url
        if not url:
            raise ConfigError("schema_registry_url is not set")
        try:
            from confluent_kafka.schema_registry import SchemaRegistryClient
        except ImportError as exc:  # the extra is not installed
            raise ConfigError(
                f"schema_registry_url is set but confluent_kafka.schema_registry cannot be "
                f"imported ({exc}); pip install 'confluent-kafka[schemaregistry]'"
            ) from None
        conf: dict[str, Any] = {"url": url, "timeout": REGISTRY_TIMEOUT_S, "max.retries": 0}
        if settings.schema_registry_username:
            password = settings.schema_registry_password
            secret = password.get_secret_value() if password else ""
            conf["basic.auth.user.info"] = f"{settings.schema_registry_username}:{secret}"
        if settings.schema_registry_ca_file is not None:
            if not settings.schema_registry_ca_file.is_file():
                raise ConfigError(
                    f"schema_registry_ca_file={settings.schema_registry_ca_file}: no such file"
                )
            conf["ssl.ca.location"] = str(settings.schema_registry_ca_file)
        parts = urlsplit(url)  # what errors name: never a password written into the URL
        self.url = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
        self._client = SchemaRegistryClient(conf)
        self._lock = threading.Lock()
        self._texts: dict[int, str] = {}

    def __call__(self, schema_id: int) -> str:
        with self._lock:
            known = self._texts.get(schema_id)
        if known is not None:
            return known
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        try:
            schema = self._client.get_schema(schema_id)
        except SchemaRegistryError as exc:
            status = exc.http_status_code
            if status == 404:
                raise EventError(
                    f"schema id {schema_id} is not in the registry at {self.url}"
                ) from None
            if status in (401, 403):
                raise AuthError(
                    f"schema registry at {self.url} refused the credentials (HTTP {status}); "
                    "check schema_registry_username and schema_registry_password"
                ) from None
            raise InfraError(
                f"schema registry at {self.url} failed (HTTP {status}: {exc.error_message})"
            ) from None
        except Exception as exc:  # httpx's connection errors, timeouts, TLS failures
            raise InfraError(
                f"schema registry at {self.url} does not answer ({type(exc).__name__}: {exc})"
            ) from None
        kind = (schema.schema_type or "AVRO").upper()
        if kind != "AVRO":
            raise EventError(f"schema id {schema_id} is a {kind} schema, not Avro")
        text = schema.schema_str or ""
        with self._lock:
            self._texts[schema_id] = text
        log.info("schema id %d fetched from the registry at %s", schema_id, self.url)
        return text


def event_decoder(settings: Settings) -> EventDecoder:
    """The decoder of a process that reads events: its limits, the package's schema versions
    plus ``event_schemas_dir``, and the registry when ``schema_registry_url`` is set.
    ``ConfigError`` for a schema directory that cannot be read."""
    extra = [settings.event_schemas_dir] if settings.event_schemas_dir else []
    try:
        schemas = SchemaSet.load(extra)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"event schemas: {exc}") from None
    registry = RegistrySchemas(settings) if settings.schema_registry_url else None
    return EventDecoder(settings.event_limits, schemas, registry)
