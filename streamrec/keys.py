"""The Redis contract front-ends read: key layout and JSON values. Contract version 1.

Public keys (``<p>`` is the configured prefix, default ``streamrec``; ids are used verbatim)::

    <p>:recs:<user_id>   STRING, JSON, with a TTL
        {"user_id": str, "items": [{"item_id": str, "score": float}, ...],
         "model_version": str, "updated_at_ms": int}
        items are best first; none of them is an item the user already interacted with.
    <p>:popular          STRING, JSON: the same shape without "user_id"
    <p>:similar:<item_id>  STRING, JSON: {"item_id": str, "items": [...], "model_version": str,
                         "updated_at_ms": int}: items most like this one (cosine of factors)
    <p>:model            STRING, JSON: the live model
        {"version": str, "created_at_ms": int, "n_items": int, "factors": int,
         "params": {...}, "path": str, "contract_version": 1}

Operator keys::

    <p>:blocked          SET of item ids kept out of every list (takes effect within seconds)

Internal keys (may change without notice; do not read them from front-ends). Everything the
worker's exactly-once transaction touches is hash-tagged by Kafka partition (``{<topic>:<n>}``),
so one partition's histories, applied offset and marker share a Redis Cluster slot and commit
in one WATCH/MULTI/EXEC; on a single Redis the tag is just part of the name. State format 2
(format 1, before Redis Cluster, had ``<p>:user:<user_id>``, ``<p>:applied:<topic>:<n>`` and
``<p>:origin:<topic>:<n>``; a worker of format 2 finds none of its keys and rebuilds them from
the events topic: README "Running on Redis Cluster")::

    <p>:{<topic>:<n>}:user:<user_id>  STRING, binary: the user's history (a version byte, then
                                   packed arrays: streamrec/als/history.py), written by the
                                   worker of partition n; readers find it with
                                   ``read_histories`` (below) and read it through that module:
                                   UserState.decode (the publisher's fold-ins) or
                                   parse_history (items most recent first: the demo page)
    <p>:home:<user_id>             STRING ``<topic>:<n>``: where the user's history lives; a
                                   derived value the worker writes with each list
    <p>:{<topic>:<n>}:applied      last Kafka offset of partition n whose effect is in Redis
    <p>:{<topic>:<n>}:origin       STRING, JSON: which pass over the partition built its state
                                   in Redis (streamrec/worker/rebuild.py, ``Origin``)
        {"format": int, "pass": str, "from": int | null, "since_ms": int, "complete": bool}
        format: the layout of the internal keys (a worker finding another rebuilds);
        from: the first offset the pass read (null: a state kept from before markers);
        complete: false while a rebuild after a loss of Redis is under way.
        Absent, with no applied offset, while the group has committed offsets: Redis lost the
        partition's state, and the worker rebuilds it from the events topic.
    <p>:retrain:last               STRING, JSON: how the last nightly retrain ended (ops: the
                                   worker's /metrics exports it as streamrec_retrain_* gauges)
        {"outcome": "promoted" | "kept" | "failed", "version": str | null,
         "live_version": str | null, "reason": str, "started_at_ms": int,
         "finished_at_ms": int, "duration_s": float,
         "last_completed_at_ms": int | null, "metrics": {model: {metric: float}},
         "timings": {step: float}}
        last_completed_at_ms: the end of the last run that promoted or kept (a failed run
        carries the previous one's forward); metrics: the evaluation (null when it failed).

Each key is written and read in one place::

    key                    written by                              read by
    <p>:recs:<user_id>     ListEncoder.recs (worker, publisher)    parse_list
    <p>:popular            popular_value (publisher)               parse_list
    <p>:similar:<item_id>  ListEncoder.similar (publisher)         parse_list
    <p>:model              model_value (publisher)                 parse_model_pointer,
                                                                   read_model_pointer
    <p>:blocked            operators (SADD / SREM)                 connect.blocked_items
    <p>:{..}:user:<id>     als.history.UserState.encode            UserState.decode,
                           (via streamrec.sink.Sink.write)         als.history.parse_history
    <p>:home:<user_id>     streamrec.sink.Sink.write               read_histories
    <p>:{..}:applied       streamrec.sink.Sink.write               parse_applied
                           (deleted by worker.rebuild when a rebuild begins)
    <p>:{..}:origin        worker.rebuild.Origin.to_json           worker.rebuild.Origin.parse
                           (StateGuard: at assignment, when a      (StateGuard; the rebuild
                           rebuild begins and ends)                bench and fault tests)
    <p>:retrain:last       model.retrain.record_outcome            worker.metrics.RetrainCollector

Rules for changing this module: adding a field to a JSON value is compatible; renaming or
removing a field, changing a type or a key's meaning is a breaking change and needs
CONTRACT_VERSION + 1, a new key prefix segment, and a note in the README's changelog.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, overload

import orjson

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

# numpy is imported inside the writers below, never at import time: the readers
# (parse_list, parse_model_pointer, ...) serve streamrec.client, which front-ends use
# without the ALS dependencies (tests/streamrec/test_client.py checks it).

CONTRACT_VERSION = 1

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names under one prefix."""

    prefix: str = "streamrec"

    def recs(self, user_id: str) -> str:
        return f"{self.prefix}:recs:{user_id}"

    @property
    def popular(self) -> str:
        return f"{self.prefix}:popular"

    @property
    def model(self) -> str:
        return f"{self.prefix}:model"

    def similar(self, item_id: str) -> str:
        return f"{self.prefix}:similar:{item_id}"

    @property
    def blocked(self) -> str:
        return f"{self.prefix}:blocked"

    @staticmethod
    def tag(topic: str, partition: int) -> str:
        """The hash tag of a partition's internal keys: ``{<topic>:<partition>}``. Kafka topic
        names hold no braces, and the prefix none (``Settings``), so it is each key's first."""
        return f"{{{topic}:{partition}}}"

    def user(self, user_id: str, topic: str, partition: int) -> str:
        """The history of ``user_id``, kept by the worker of ``topic[partition]``."""
        return f"{self.prefix}:{{{topic}:{partition}}}:user:{user_id}"

    def users(self, topic: str, partition: int) -> str:
        """What every history key of ``topic[partition]`` starts with (+ user_id)."""
        return f"{self.prefix}:{{{topic}:{partition}}}:user:"

    def home(self, user_id: str) -> str:
        """Where the history of ``user_id`` lives: ``<topic>:<partition>`` (``parse_home``)."""
        return f"{self.prefix}:home:{user_id}"

    def applied(self, topic: str, partition: int) -> str:
        return f"{self.prefix}:{{{topic}:{partition}}}:applied"

    def origin(self, topic: str, partition: int) -> str:
        return f"{self.prefix}:{{{topic}:{partition}}}:origin"

    @property
    def retrain_last(self) -> str:
        """Internal (ops): the last nightly retrain's outcome record."""
        return f"{self.prefix}:retrain:last"

    def parse_user(self, key: str) -> tuple[str, int, str] | None:
        """(topic, partition, user_id) of a history key, None for any other key."""
        head = f"{self.prefix}:{{"
        if not key.startswith(head):
            return None
        tag, sep, rest = key[len(head) :].partition("}:user:")
        topic, _, part = tag.rpartition(":")
        if not sep or not topic or not part.isdigit():
            return None
        return topic, int(part), rest


def home_value(topic: str, partition: int) -> bytes:
    """The ``<p>:home:<user_id>`` value."""
    return f"{topic}:{partition}".encode()


def parse_home(raw: bytes | str) -> tuple[str, int]:
    """(topic, partition) of a ``<p>:home:<user_id>`` value; ValueError if malformed."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    topic, _, part = text.rpartition(":")
    if not topic or not part.isdigit():
        raise ValueError(f"not a streamrec home value: {text[:80]!r}")
    return topic, int(part)


def read_histories(
    client: Any, keys: Keys, users: Sequence[str], chunk: int = 1000
) -> dict[str, bytes]:
    """The stored history value of each of ``users`` that has one (user -> raw value), found
    through ``<p>:home:<user_id>``: two reads per chunk of users, on a single Redis or a
    Redis Cluster (``mget``). Decode with ``streamrec.als.history``."""
    out: dict[str, bytes] = {}
    for lo in range(0, len(users), chunk):
        part = list(users[lo : lo + chunk])
        where: list[tuple[str, str]] = []
        for user, raw in zip(part, mget(client, [keys.home(u) for u in part]), strict=True):
            if raw is None:
                continue
            try:
                topic, p = parse_home(raw)
            except ValueError:
                log.error("ignoring malformed %s: %r", keys.home(user), raw[:80])
                continue
            where.append((user, keys.user(user, topic, p)))
        values = mget(client, [k for _, k in where])
        out.update((u, bytes(v)) for (u, _), v in zip(where, values, strict=True) if v is not None)
    return out


def is_cluster(client: object) -> bool:
    """Whether ``client`` is redis-py's Redis Cluster client."""
    from redis.cluster import RedisCluster

    return isinstance(client, RedisCluster)


def mget(client: Any, names: Sequence[str]) -> list[Any]:
    """MGET on a single Redis; on a Redis Cluster, where one MGET must stay in one slot,
    redis-py's ``mget_nonatomic`` (one MGET per slot, in order). Values are not read at one
    instant either way across slots: use it only where that does not matter."""
    if not names:
        return []
    if is_cluster(client):
        return list(client.mget_nonatomic(list(names)))
    return list(client.mget(list(names)))


def round_scores(scores: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """Scores rounded to 6 significant digits (all a float32 score carries), any shape.

    Done once per batch by whoever makes lists, so every value is short JSON: the decimal
    the rounded float64 prints as is exactly those 6 digits.
    """
    import numpy as np

    x = np.asarray(scores, dtype=np.float64)
    a = np.abs(x)
    ok = np.isfinite(x) & (a > 0)
    mag = np.floor(np.log10(np.where(ok, a, 1.0)))
    scale = 10.0 ** (5 - mag)
    return np.where(ok, np.round(x * scale) / scale, x)


def _items(items: Iterable[tuple[str, float]]) -> list[dict[str, Any]]:
    return [{"item_id": i, "score": s} for i, s in items]


def recs_value(
    user_id: str, items: Iterable[tuple[str, float]], model_version: str, updated_at_ms: int
) -> bytes:
    """JSON for ``<p>:recs:<user_id>``; ``items`` are (item_id, score), best first, scores
    finite (``round_scores`` them first for short values)."""
    return _list_value({"user_id": user_id}, items, model_version, updated_at_ms)


class ListEncoder:
    """Encodes many list values at once, byte for byte what ``recs_value`` and ``similar_value``
    write, from arrays of item rows and scores.

    Built once per model: each item's JSON fragment (``},{"item_id":"<id>","score":``) is
    made here, so a batch is one numpy gather of fragments, one orjson call for every score
    and one ``bytes.join`` per list, instead of a dict per item (3x faster for the worker).
    """

    def __init__(self, item_ids: Sequence[str]) -> None:
        import numpy as np

        self._frags = np.array(
            [b'},{"item_id":' + orjson.dumps(i) + b',"score":' for i in item_ids], dtype=np.object_
        )

    def extended(self, item_ids: Sequence[str], why: str) -> ListEncoder:
        """This encoder with ``item_ids`` appended (rows ``len(self) + j``), their entries
        carrying ``"why": why`` (contract 2's optional explanation, e.g. ``"content"``)."""
        import numpy as np

        out = ListEncoder(())
        mark = b',"why":' + orjson.dumps(why)
        more = [b'},{"item_id":' + orjson.dumps(i) + mark + b',"score":' for i in item_ids]
        out._frags = np.concatenate([self._frags, np.array(more, dtype=np.object_)])
        return out

    def __len__(self) -> int:
        return len(self._frags)

    def items_json(
        self,
        heads: Sequence[bytes],
        items: npt.NDArray[np.int64],
        scores: npt.NDArray[np.floating],
        tail: bytes,
    ) -> list[bytes]:
        """``heads[b] + [row b's items as JSON] + tail`` for every row.

        Args:
            heads: (B,) what precedes the list's ``[``.
            items: (B, m) int64 item rows, best first; -1 pads the end of a short row.
            scores: (B, m) scores (rounded here with ``round_scores``).
            tail: what follows the list's ``]`` (the same for every row).
        """
        import numpy as np

        b, m = items.shape
        if b == 0:
            return []
        valid = items >= 0
        pieces = orjson.dumps(round_scores(np.where(valid, scores, 0.0)).ravel(),
                              option=orjson.OPT_SERIALIZE_NUMPY)[1:-1].split(b",")  # fmt: skip
        grid = np.empty((b, 2 * m + 2), dtype=np.object_)
        grid[:, 0] = [h + b"[" for h in heads]
        frags = self._frags[np.where(valid, items, 0)]
        frags[:, 0] = [f[2:] for f in frags[:, 0].tolist()]  # the first item has no "},"
        frags[~valid] = b""
        grid[:, 1:-1:2] = frags
        scored = np.array(pieces, dtype=np.object_).reshape(b, m)
        scored[~valid] = b""
        grid[:, 2:-1:2] = scored
        full, empty = b"}]" + tail, b"]" + tail
        grid[:, -1] = [full if v else empty for v in valid[:, 0].tolist()]
        return [b"".join(row) for row in grid.tolist()]

    def recs(
        self,
        users: Sequence[str],
        items: npt.NDArray[np.int64],
        scores: npt.NDArray[np.floating],
        model_version: str,
        updated_at_ms: int,
    ) -> list[bytes]:
        """``recs_value`` for every user: row b of ``items``/``scores`` is ``users[b]``'s list."""
        return self._keyed(b'{"user_id":', users, items, scores, model_version, updated_at_ms)

    def similar(
        self,
        item_ids: Sequence[str],
        items: npt.NDArray[np.int64],
        scores: npt.NDArray[np.floating],
        model_version: str,
        updated_at_ms: int,
    ) -> list[bytes]:
        """``similar_value`` for every item in ``item_ids`` (row b: that item's neighbours)."""
        return self._keyed(b'{"item_id":', item_ids, items, scores, model_version, updated_at_ms)

    def _keyed(
        self,
        field: bytes,
        ids: Sequence[str],
        items: npt.NDArray[np.int64],
        scores: npt.NDArray[np.floating],
        model_version: str,
        updated_at_ms: int,
    ) -> list[bytes]:
        heads = [field + orjson.dumps(i) + b',"items":' for i in ids]
        return self.items_json(heads, items, scores, _tail(model_version, updated_at_ms))


def _tail(model_version: str, updated_at_ms: int) -> bytes:
    return (b',"model_version":' + orjson.dumps(model_version)
            + b',"updated_at_ms":' + str(int(updated_at_ms)).encode() + b"}")  # fmt: skip


def similar_value(
    item_id: str, items: Iterable[tuple[str, float]], model_version: str, updated_at_ms: int
) -> bytes:
    """JSON for ``<p>:similar:<item_id>``."""
    return _list_value({"item_id": item_id}, items, model_version, updated_at_ms)


def popular_value(
    items: Iterable[tuple[str, float]], model_version: str, updated_at_ms: int
) -> bytes:
    """JSON for ``<p>:popular``."""
    return _list_value({}, items, model_version, updated_at_ms)


def _list_value(
    owner: Mapping[str, str],
    items: Iterable[tuple[str, float]],
    model_version: str,
    updated_at_ms: int,
) -> bytes:
    # orjson: 4-5x faster than json.dumps here.
    return orjson.dumps(
        {
            **owner,
            "items": _items(items),
            "model_version": model_version,
            "updated_at_ms": int(updated_at_ms),
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


def model_value(summary: Mapping[str, Any]) -> bytes:
    """JSON for ``<p>:model``."""
    return json.dumps(
        {**summary, "contract_version": CONTRACT_VERSION}, separators=(",", ":"), sort_keys=True
    ).encode()


def parse_list(raw: bytes | str) -> dict[str, Any]:
    """Parse a recs or popular value (for readers and tests); raises ValueError if malformed."""
    obj = json.loads(raw)
    if not isinstance(obj, dict) or not isinstance(obj.get("items"), list):
        raise ValueError("not a streamrec list value")
    return obj


@dataclass(frozen=True, slots=True)
class ModelPointer:
    """The ``<p>:model`` value: the live model's version and directory; ``raw`` is the value
    as stored (readers compare it to notice a new publication)."""

    version: str
    path: Path
    raw: bytes


def parse_model_pointer(raw: bytes | str) -> ModelPointer:
    """Parse a ``<p>:model`` value; raises ValueError if malformed."""
    data = raw.encode() if isinstance(raw, str) else bytes(raw)
    try:
        obj = json.loads(data)
        return ModelPointer(version=str(obj["version"]), path=Path(obj["path"]), raw=data)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a streamrec model pointer: {exc!r}") from None


class _Getter(Protocol):
    def get(self, name: str) -> Any: ...


def read_model_pointer(client: _Getter, keys: Keys) -> ModelPointer | None:
    """The live model's pointer, or None when nothing is published or the value is malformed
    (logged: a reader keeps what it serves rather than failing on a bad write)."""
    raw = client.get(keys.model)
    if raw is None:
        return None
    try:
        return parse_model_pointer(raw)
    except ValueError:
        log.error("ignoring malformed %s: %r", keys.model, raw[:200])
        return None


@overload
def parse_applied(raw: bytes | str | None) -> int | None: ...
@overload
def parse_applied(raw: bytes | str | None, missing: int) -> int: ...
def parse_applied(raw: bytes | str | None, missing: int | None = None) -> int | None:
    """Parse a ``<p>:applied:<topic>:<partition>`` value: the last applied offset, ``missing``
    when the key is absent (nothing of that partition applied yet)."""
    return missing if raw is None else int(raw)
