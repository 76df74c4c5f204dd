"""What the demo page's JSON API answers, without HTTP: the live model and ``DemoApp``.

``DemoApp`` reads the public Redis contract (``streamrec.keys``): ``<p>:recs:<user>``,
``<p>:popular``, ``<p>:similar:<item>`` and the ``<p>:model`` pointer; a user's history comes
from where ``<p>:home:<user>`` says (``streamrec.keys.read_histories``) through
``streamrec.als.history.parse_history`` (the worker's internal value: this module never reads
its layout). Events from the page are validated with
``streamrec.events.new_event`` and published with ``EventProducer``. An answer other than 200 is
an ``ApiError`` (status and message); ``server.py`` turns it into HTTP.

Imports ``names``, the floor, ``streamrec.als`` and ``streamrec.producer``; never ``server``
(tests call ``DemoApp`` directly).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import redis

from streamrec.als.history import parse_history
from streamrec.als.similar import closest, neighbours, unit_rows
from streamrec.app.web.names import names_for_model, synthetic_label
from streamrec.app.web.service import ApiError, Filters, Service
from streamrec.errors import ArtifactError, EventError, InfraError
from streamrec.events import MAX_ID_LENGTH, new_event
from streamrec.keys import Keys, read_histories, read_model_pointer
from streamrec.settings import Settings

if TYPE_CHECKING:
    from streamrec.artifact import Model
    from streamrec.producer.producer import EventProducer

log = logging.getLogger(__name__)

POINTER_CHECK_S = 1.0
DELIVERY_TIMEOUT_S = 10.0
USERS_SCAN_S = 0.3  # most time one /api/users may spend scanning Redis
_ID_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f]")


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
            names=names_for_model(model),
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


class DemoApp:
    """What the API answers, read from Redis per the documented contract."""

    def __init__(
        self,
        settings: Settings,
        client: redis.Redis | None = None,
        producer: EventProducer | None = None,
        names: Mapping[str, str] | None = None,
        on_event: Callable[[str], None] | None = None,
        service: Service | None = None,
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
        # The serving API's answers (filters, scored lists) when the page runs on it.
        self.service = service
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
        return [{**i, "name": i.get("name") or self.name(str(i.get("item_id")), live)}
                for i in items]  # fmt: skip

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

    def popular(self, n: int = 20, filters: Filters | None = None) -> dict[str, Any]:
        if self.service is not None and filters is not None and filters.narrows:
            return self.service.popular(filters, n)
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

    def recs(
        self,
        user_id: str,
        n: int = 20,
        session: Sequence[str] = (),
        filters: Filters | None = None,
    ) -> dict[str, Any]:
        """The user's list (through the serving API when there is one: ``filters``), each item
        with "because"; 404 while the user has no list yet."""
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
        if self.service is not None:
            served = self.service.recommend(user_id, filters or Filters(), n)
            items = served["items"]
            value = {**value, "source": served["source"], "filters": served["filters"]}
        because = (
            live.closest([str(i.get("item_id")) for i in items], [*session, *positive])
            if live is not None
            else {}
        )
        out = []
        for i in self._named(items, live):
            b = None if i.get("why") == "content" else because.get(i["item_id"])
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
        """The worker's history of the user, most recent first:
        [{"item_id", "total", "last_ms"}]; [] (logged) when it is unreadable."""
        raw = read_histories(self.redis, self.keys, [user_id]).get(user_id)
        if raw is None:
            return []
        try:
            return [asdict(entry) for entry in parse_history(raw)]
        except ValueError:
            log.warning("web: unreadable history for %r", user_id)
            return []

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
