"""What the serving API answers, without HTTP: ``Service`` (README "The serving API").

Per request it reads Redis once (``MGET`` of ``<p>:recs:<user>`` and ``<p>:vec:<user>``, the
worker's values, read through ``streamrec.keys``) and the in-memory ``ServingIndex``; nothing
else. A background thread keeps the rest fresh, each at most ``REFRESH_S`` late: the live model
(the ``<p>:model`` pointer, loaded memory-mapped and swapped whole when it moves), the catalog
(``streamrec.worker.catalog``'s follower of the items topic: the index is rebuilt when its
version bumps, with cold items' factors from the artifact's content map), and the operators'
``<p>:blocked`` set.

A user's list (``recommend``):

1. the stored list, filtered, when it holds ``n`` matching items (``source: "list"``);
2. else the user's stored vector, when it was folded under the live model: the filtered
   catalog scored against it, the user's history rows (``UserVec.seen``, what the worker
   excluded) and ``exclude`` left out (``"scored"``);
3. else, for a user whose vector says "popularity" or who has no list at all, the filtered
   popular ranking without their history (``"popular"``);
4. else (a list folded under another model, before the user's re-fold): the list's matching
   items, then popular ones (``"list+popular"``).

Errors are ``ApiError`` (status, message); the HTTP layer (``asgi``) turns them into JSON.
Imports ``index``, ``names``, the floor and, when present, the worker's catalog follower.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt
import orjson

from streamrec.app.web.index import CatalogItem, Filters, ServingIndex
from streamrec.app.web.names import synthetic_label
from streamrec.errors import ArtifactError
from streamrec.events import MAX_ID_LENGTH
from streamrec.keys import Keys, is_cluster, mget, parse_list, parse_vec, read_model_pointer
from streamrec.settings import Settings

if TYPE_CHECKING:
    import redis

    from streamrec.artifact import Model

log = logging.getLogger(__name__)

#: How late, at most, the service sees a new model, a catalog change or a blocked item.
REFRESH_S = 1.0
#: Wait between two attempts at loading the catalog topic (missing, or Kafka down).
CATALOG_RETRY_S = 5.0
#: Longest a request may ask for.
MAX_N = 200
_INF = float("inf")
_ID_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f]")


class ApiError(Exception):
    """An answer other than 200, with a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class CatalogView(Protocol):
    """What the service reads of the catalog (``streamrec.worker.catalog.Catalog``)."""

    @property
    def version(self) -> int: ...

    def items(self) -> Mapping[str, Any]: ...


@dataclass(frozen=True)
class Live:
    """One consistent snapshot: the model, its index over the catalog, the blocked rows."""

    model: Model
    index: ServingIndex
    blocked: frozenset[str]
    blocked_rows: npt.NDArray[np.int64]
    catalog: Mapping[str, Any]


def check_id(value: str, what: str) -> str:
    if not value or len(value) > MAX_ID_LENGTH or _ID_BAD_CHARS.search(value):
        raise ApiError(HTTPStatus.BAD_REQUEST, f"bad {what} id {value[:80]!r}")
    return value


def _cold_factors(
    model: Model, catalog: Mapping[str, Any], content: Any
) -> tuple[npt.NDArray[np.float32] | None, list[str]]:
    """Factors of the catalog's items the model lacks, from the artifact's content map."""
    known = set(model.item_ids)
    cold = [catalog[i] for i in catalog if i not in known]
    if content is None or not cold:
        return None, []
    try:
        factors = np.asarray(content.predict(cold), dtype=np.float32)
    except Exception:
        log.exception("serve: the content map of %s failed on %d new items", model.version,
                      len(cold))  # fmt: skip
        return None, []
    return factors, [c.item_id for c in cold]


class Service:
    """The serving API's answers from Redis, the live model and the catalog.

    Args:
        settings: the process's settings (Redis, prefix, model path or pointer).
        client: a Redis client (default: ``streamrec.connect.redis_client``).
        catalog: the catalog to filter by (default: follow ``settings.topic_items`` when the
            worker's catalog follower is installed; None: model items only, no categories).
        names: extra display names (item id -> name), below the catalog's.
        follow: run the background refresher (tests of one snapshot pass False and call
            ``refresh``).
    """

    def __init__(
        self,
        settings: Settings,
        client: redis.Redis | None = None,
        catalog: CatalogView | None = None,
        names: Mapping[str, str] | None = None,
        follow: bool = True,
        follow_catalog: bool = True,
    ) -> None:
        from streamrec.connect import redis_client

        self.settings = settings
        self.keys = Keys(settings.redis_prefix)
        self.redis = client if client is not None else redis_client(settings, timeout_s=2.0)
        self.extra_names = dict(names or {})
        self._cluster = is_cluster(self.redis)
        self._local = threading.local()
        self._follower: Any = None
        self._stop = threading.Event()
        if catalog is None and follow_catalog:
            catalog, self._follower = _follow_catalog(settings, self._stop)
        self.catalog = catalog
        self._live: Live | None = None
        self._pointer: bytes | None = None
        self._catalog_version: int | None = None
        self._model: Model | None = None
        self._content: Any = None
        self._blocked: frozenset[str] = frozenset()
        self.redis_ok = False
        self.last_error = "starting"
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.on_swap: list[Callable[[Live], None]] = []
        try:
            self.refresh()
        except Exception as exc:  # the refresher keeps trying; /readyz says why meanwhile
            log.warning("serve: first refresh failed: %s", exc)
        if follow:
            self._thread = threading.Thread(target=self._loop, name="serve-refresh", daemon=True)
            self._thread.start()

    # --- the background refresh --------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.wait(REFRESH_S):
            try:
                self.refresh()
            except Exception as exc:
                self.redis_ok = False
                self.last_error = f"refresh failed: {exc}"
                log.warning("serve: refresh failed (retrying in %g s): %s", REFRESH_S, exc)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._follower is not None:
            try:
                self._follower.close()
            except Exception as exc:
                log.warning("serve: closing the catalog follower: %s", exc)

    def refresh(self) -> None:
        """Follow the model pointer, the catalog and ``<p>:blocked``; rebuild the index when
        the model or the catalog changed. Called every ``REFRESH_S`` by the refresher."""
        from streamrec.connect import blocked_items

        with self._lock:
            try:
                blocked = frozenset(blocked_items(self.redis, self.keys))
                model = self._follow_model()
                self.redis_ok = True
            except Exception as exc:
                self.redis_ok = False
                self.last_error = f"Redis: {exc}"
                raise
            if model is None:
                self.last_error = "no model published yet (streamrec train ... --publish)"
                return
            catalog = self.catalog
            cversion = catalog.version if catalog is not None else 0
            live = self._live
            rebuild = live is None or live.model is not model or cversion != self._catalog_version
            if rebuild:
                items: Mapping[str, Any] = dict(catalog.items()) if catalog is not None else {}
                started = time.monotonic()
                cold, cold_ids = _cold_factors(model, items, self._content)
                index = ServingIndex(model.version, model.item_ids, model.item_factors,
                                     model.item_popularity, items, cold, cold_ids,
                                     catalog_version=cversion)  # fmt: skip
                self._catalog_version = cversion
                log.info("serve: index of model %s + catalog v%d: %d items (%d cold, %d with "
                         "content factors) in %.2f s", model.version, cversion, index.size,
                         index.size - index.n_model, len(cold_ids),
                         time.monotonic() - started)  # fmt: skip
            else:
                assert live is not None
                if blocked == live.blocked:
                    return
                index, items = live.index, live.catalog
            live = Live(model, index, blocked, index.rows(blocked), items)
            self._live = live
            self._blocked = blocked
            self.last_error = ""
        for hook in self.on_swap:
            hook(live)

    def _follow_model(self) -> Model | None:
        from streamrec.artifact import load_model

        if self.settings.model_path is not None:
            if self._model is None:
                self._model = load_model(self.settings.model_path)
                self._content = _content_map(self._model)
            return self._model
        pointer = read_model_pointer(self.redis, self.keys)
        if pointer is None or pointer.raw == self._pointer:
            return self._model
        try:
            model = load_model(pointer.path)
            content = _content_map(model)
        except ArtifactError as exc:
            log.error("serve: cannot load the model %s points at (keeping %s): %s",
                      self.keys.model, self._model.version if self._model else "none",
                      exc)  # fmt: skip
            self._pointer = pointer.raw
            return self._model
        log.info("serve: serving model %s (%s)", model.version, pointer.path)
        self._model, self._content, self._pointer = model, content, pointer.raw
        return model

    # --- state ---------------------------------------------------------------------------------

    def live(self) -> Live:
        live = self._live
        if live is None:
            raise ApiError(HTTPStatus.SERVICE_UNAVAILABLE, self.last_error or "not ready")
        return live

    def ready(self) -> tuple[bool, str]:
        """Whether requests can be answered, and why not."""
        if self._live is None:
            return False, self.last_error or "no model loaded yet"
        if not self.redis_ok:
            return False, self.last_error or "Redis is not answering"
        follower = self._follower
        if follower is not None and not follower.loaded:
            return False, "reading the catalog topic to its end"
        return True, "ok"

    def _mget(self, names: list[str]) -> list[Any]:
        """MGET ``names``: on a single Redis over this thread's own connection, taken from
        the client's pool once (the pool's checkout cost ~0.1 ms a request); on a cluster
        through ``streamrec.keys.mget``. A failed call drops the connection."""
        if self._cluster:
            return mget(self.redis, names)
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self.redis.connection_pool.get_connection()
        try:
            conn.send_command("MGET", *names)
            reply = conn.read_response()
        except BaseException:
            self._local.conn = None
            conn.disconnect()
            self.redis.connection_pool.release(conn)
            raise
        if isinstance(reply, Exception):
            raise reply
        return list(reply)

    def name(self, item_id: str, live: Live | None = None) -> str | None:
        if live is not None:
            got = live.index.names.get(item_id)
            if got:
                return got
        return self.extra_names.get(item_id) or synthetic_label(item_id)

    # --- answers -------------------------------------------------------------------------------

    def _entries(
        self,
        live: Live,
        rows: npt.NDArray[np.int64],
        scores: npt.NDArray[np.floating],
    ) -> list[dict[str, Any]]:
        ids = live.index.ids[rows].tolist()
        n_model = live.index.n_model
        out = []
        for item, row, score in zip(ids, rows.tolist(), scores.tolist(), strict=True):
            # 6 significant digits, all a float32 score carries (as streamrec.keys.round_scores)
            e: dict[str, Any] = {"item_id": item,
                                 "score": float(f"{score:.6g}") if score > -_INF else None,
                                 "name": self.name(item, live)}  # fmt: skip
            if row >= n_model:
                e["why"] = "content"
            out.append(e)
        return out

    def _stored(
        self,
        live: Live,
        items: Sequence[Any],
        f: Filters,
        exclude: frozenset[str],
        limit: int = MAX_N,
    ) -> list[dict[str, Any]]:
        """The first ``limit`` items of a stored list that match ``f``, in order, named."""
        index = live.index
        get = index.row_of.get
        try:
            ids = [str(i["item_id"]) for i in items]
        except (KeyError, TypeError):  # a malformed entry: the others still count
            ids = [str(i.get("item_id")) if isinstance(i, dict) else "" for i in items]
        rows = np.fromiter((get(i, -1) for i in ids), dtype=np.int64, count=len(ids))
        ok = index.match_mask(rows, f).tolist()
        out: list[dict[str, Any]] = []
        for item, keep, entry in zip(ids, ok, items, strict=True):
            if len(out) >= limit:
                break
            if keep and item not in exclude and item not in live.blocked:
                e = {"item_id": item, "score": entry.get("score"), "name": self.name(item, live)}
                if "why" in entry:
                    e["why"] = entry["why"]
                out.append(e)
        return out

    def _with_cold(
        self,
        live: Live,
        picked: list[dict[str, Any]],
        stored: Mapping[str, Any],
        vector: npt.NDArray[np.float32],
        f: Filters,
        exclude: frozenset[str],
    ) -> list[dict[str, Any]]:
        """``picked`` (a stored list's matching items, best first) with the index's cold
        items that beat the stored list's last score merged in, by score. The list is the
        exact top of the model's items, so a cold item scoring below its last entry cannot
        be placed in it and is left to the scored path."""
        index = live.index
        items = stored["items"]
        if stored.get("model_version") != index.model_version or not items:
            return picked
        floor = items[-1].get("score") if isinstance(items[-1], dict) else None
        if not isinstance(floor, int | float):
            return picked
        rows = index.cold_rows[index.match_mask(index.cold_rows, f)]
        if not len(rows):
            return picked
        scores = index.cold[rows - index.n_model] @ vector
        have = {e["item_id"] for e in picked} | exclude | live.blocked
        listed = {str(i.get("item_id")) for i in items if isinstance(i, dict)}
        extra = [e for e in self._entries(live, rows, scores)
                 if e["score"] is not None and e["score"] > floor
                 and e["item_id"] not in have and e["item_id"] not in listed]  # fmt: skip
        if not extra:
            return picked
        return sorted([*picked, *extra], key=lambda e: -float(e["score"] or 0.0))

    def recommend(
        self, user_id: str, f: Filters, n: int = 20, exclude: Sequence[str] = ()
    ) -> dict[str, Any]:
        """``user_id``'s list under ``f`` (see the module for where it comes from)."""
        user_id = check_id(user_id, "user")
        live = self.live()
        index = live.index
        raw_list, raw_vec = self._mget([self.keys.recs(user_id), self.keys.vec(user_id)])
        excluded = frozenset(exclude)
        vec = None
        if raw_vec is not None:
            try:
                vec = parse_vec(raw_vec)
            except ValueError as exc:
                log.error("serve: ignoring malformed %s: %s", self.keys.vec(user_id), exc)
        usable = vec is not None and vec.model_version == index.model_version
        stored: dict[str, Any] | None = None
        picked: list[dict[str, Any]] = []
        if raw_list is not None:
            try:
                stored = parse_list(raw_list)
            except (ValueError, TypeError):
                log.error("serve: ignoring malformed %s", self.keys.recs(user_id))
        if stored is not None:
            picked = self._stored(live, stored["items"], f, excluded, n)
            if usable and vec is not None and vec.vector is not None and len(index.cold_rows):
                # New catalog items the list was written without (before the user's next
                # event): scored with the same vector, they take their place in it.
                picked = self._with_cold(live, picked, stored, vec.vector, f, excluded)
            if len(picked) >= n:
                return _answer(user_id, picked[:n], "list", stored, f)
        drop = [live.blocked_rows, index.rows(excluded)] if excluded else [live.blocked_rows]
        if usable:
            assert vec is not None
            drop.append(vec.seen.astype(np.int64))
            rows = np.concatenate(drop)
            if vec.vector is not None:
                top, scores = index.score(vec.vector, f, n, rows)
                return _answer(user_id, self._entries(live, top, scores), "scored",
                               {"model_version": index.model_version}, f)  # fmt: skip
            top, scores = index.popular(f, n, rows)
            return _answer(user_id, self._entries(live, top, scores), "popular",
                           {"model_version": index.model_version}, f)  # fmt: skip
        if stored is None:
            top, scores = index.popular(f, n, np.concatenate(drop))
            return _answer(user_id, self._entries(live, top, scores), "popular",
                           {"model_version": index.model_version}, f)  # fmt: skip
        drop.append(index.rows(e["item_id"] for e in picked))
        top, scores = index.popular(f, n - len(picked), np.concatenate(drop))
        items = picked + self._entries(live, top, scores)
        return _answer(user_id, items, "list+popular", stored, f)

    def popular(self, f: Filters, n: int = 20, exclude: Sequence[str] = ()) -> dict[str, Any]:
        """The popular ranking (the artifact's item popularity) under ``f``."""
        live = self.live()
        index = live.index
        drop = np.concatenate([live.blocked_rows, index.rows(exclude)])
        top, scores = index.popular(f, n, drop)
        return _answer(None, self._entries(live, top, scores), "popular",
                       {"model_version": index.model_version}, f)  # fmt: skip

    def similar(
        self, item_id: str, f: Filters, n: int = 20, exclude: Sequence[str] = ()
    ) -> dict[str, Any]:
        """The items most like ``item_id`` (cosine of factors) under ``f``: the stored
        ``<p>:similar:<item>`` when it holds ``n`` matches, else computed."""
        item_id = check_id(item_id, "item")
        live = self.live()
        index = live.index
        row = index.row_of.get(item_id)
        if row is None:
            raise ApiError(HTTPStatus.NOT_FOUND, f"unknown item {item_id!r}")
        excluded = frozenset([*exclude, item_id])
        raw = self.redis.get(self.keys.similar(item_id))
        if raw is not None:
            try:
                stored = parse_list(raw)
            except (ValueError, TypeError):
                log.error("serve: ignoring malformed %s", self.keys.similar(item_id))
            else:
                picked = self._stored(live, stored["items"], f, excluded, n)
                if len(picked) >= n:
                    out = _answer(None, picked[:n], "list", stored, f)
                    return {"item_id": item_id, **out}
        query = index.factor(row)
        if query is None:
            why = f"item {item_id!r} has no factors yet (no content map covers it)"
            raise ApiError(HTTPStatus.NOT_FOUND, why)
        drop = np.concatenate([live.blocked_rows, index.rows(excluded)])
        top, scores = index.score(query, f, n, drop, cosine=True)
        out = _answer(None, self._entries(live, top, scores), "scored",
                      {"model_version": index.model_version}, f)  # fmt: skip
        return {"item_id": item_id, **out}

    def item(self, item_id: str) -> dict[str, Any]:
        """The catalog's record of ``item_id`` (or what the model knows of it); 404 if none."""
        item_id = check_id(item_id, "item")
        live = self.live()
        index = live.index
        row = index.row_of.get(item_id)
        if row is None:
            raise ApiError(HTTPStatus.NOT_FOUND, f"unknown item {item_id!r}")
        rec = live.catalog.get(item_id)
        out: dict[str, Any] = {
            "item_id": item_id,
            "name": self.name(item_id, live),
            "categories": list(rec.categories) if rec is not None else [],
            "year": rec.year if rec is not None else None,
            "available": bool(rec.available) if rec is not None else True,
            "features": dict(rec.features) if rec is not None else {},
            "updated_at_ms": rec.updated_at_ms if rec is not None else None,
            "in_model": row < index.n_model,
            "has_factors": bool(index.has_factors[row]),
            "in_catalog": rec is not None,
            "model_version": index.model_version,
        }
        return out

    def categories(self) -> dict[str, Any]:
        """Every category of the catalog with how many items it has, the range of the
        catalog's years and the content map's features (for pickers, sliders, forms)."""
        live = self.live()
        years = live.index.year[np.isfinite(live.index.year)]
        content = self._content
        return {
            "categories": {c: len(r) for c, r in sorted(live.index.categories.items())},
            "years": [int(years.min()), int(years.max())] if len(years) else None,
            "features": list(getattr(content, "feature_names", ())),
        }


def _answer(
    user_id: str | None,
    items: list[dict[str, Any]],
    source: str,
    meta: Mapping[str, Any],
    f: Filters,
) -> dict[str, Any]:
    out: dict[str, Any] = {} if user_id is None else {"user_id": user_id}
    out.update(
        items=items,
        source=source,
        model_version=meta.get("model_version"),
        updated_at_ms=meta.get("updated_at_ms"),
        filters=f.as_json(),
    )
    return out


def dumps(obj: Any) -> bytes:
    """JSON bytes of an answer (orjson: numpy scalars allowed, non-finite floats as null)."""
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)


def _content_map(model: Model) -> Any:
    """The artifact's content map (``streamrec.artifact.load_content_map``), None without."""
    from streamrec import artifact

    load = getattr(artifact, "load_content_map", None)
    if load is None:
        return None
    try:
        return load(model.path)
    except ArtifactError as exc:
        log.error("serve: the content map of %s is unreadable (cold items get none): %s",
                  model.version, exc)  # fmt: skip
        return None


def _follow_catalog(settings: Settings, stop: threading.Event) -> tuple[CatalogView, Any]:
    """The catalog of ``settings.topic_items`` and its follower, loading on a thread of its
    own: the service answers (model items only) and ``/readyz`` says 503 until the topic has
    been read to its end; a missing topic or a broker down is retried every few seconds."""
    from streamrec.worker.catalog import CatalogFollower

    follower = CatalogFollower(settings)

    def load() -> None:
        while not stop.is_set():
            try:
                follower.follow()
                return
            except Exception as exc:
                log.warning("serve: the catalog %s is not loaded yet (retrying in %g s): %s",
                            settings.topic_items, CATALOG_RETRY_S, exc)  # fmt: skip
                stop.wait(CATALOG_RETRY_S)

    threading.Thread(target=load, name="catalog-load", daemon=True).start()
    return follower.catalog, follower


__all__ = ["MAX_N", "ApiError", "CatalogItem", "Filters", "Live", "Service", "dumps"]
