"""State that survives the loss of Redis: where each partition resumes, how a lost state is
noticed, and the rebuild from the events topic.

Redis holds the worker's state (histories, applied offsets), but the events topic is the source
of truth: what Redis lost is read again from Kafka, as far back as the topic keeps events
(``topic_events_retention_s``). Kafka's committed offsets only say how far the group got; where
a partition resumes is decided by what its state in Redis reflects.

On assignment (``StateGuard.assigned``, from the consumer's rebalance callback), per partition:

- Redis holds its state (an applied offset A, an ``origin`` marker of a complete pass):
  resume at A + 1 when that is behind the group's committed offset (Redis came back from an
  older snapshot, or failed over to a replica that lagged); otherwise at the committed offset,
  skipping messages up to A as always (seeking forward would save at most a commit interval of
  re-reading, and the skip is what the exactly-once tests pin);
- Redis holds no applied offset but the group has committed offsets (Redis restarted empty,
  FLUSHALL), or the marker says a rebuild never finished or that the state is another
  ``STATE_FORMAT``: **rebuild**;
- neither holds anything: a first start, from the earliest offset (the marker is written now).

While it owns a partition, the worker checks every batch's applied offsets (``check``, on the
values the batch reads anyway) and, every ``CHECK_S``, those of idle partitions (``tick``): an
applied offset gone, or lower than this worker wrote, is a loss noticed while running; the
partition is rebuilt, or moved back to A + 1.

The marker ``<p>:{<topic>:<partition>}:origin`` (``Origin``, documented in ``streamrec.keys``)
says which pass over the partition built the state: written before a first start's first
batch, when a rebuild begins (``complete`` false, in one transaction with deleting the applied
offset, so the rebuild's progress is its own) and when the rebuild has written every list.

A rebuild reads the partition again from the earliest offset it still holds and applies it
with the loop's bookkeeping (WATCH the applied offset, the marker and the histories; MULTI the
histories and the applied offset; EXEC; a zombie's EXEC fails, and a pass that finds another
pass's marker stands aside; one user's failure stays that user's, ``worker/isolate.py``), but
writes no lists: lists already in Redis keep being served.
Histories in Redis that this pass has not written yet are ignored (a failed pass's). Once it
has applied the partition up to where the log ended when it began, the partition goes back to
the loop, and every user of the pass gets its list written again from the complete history,
a time-boxed chunk per loop turn; then the marker says ``complete``. A worker that stops or
dies before that leaves it false, and the next owner rebuilds again, from the start.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import orjson
import redis
from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from streamrec.als.history import Rules, UserState
from streamrec.als.scorer import Scorer
from streamrec.keys import Keys, home_value, mget, parse_applied
from streamrec.settings import Settings
from streamrec.worker.decode import Decoded
from streamrec.worker.errors import WorkerError
from streamrec.worker.isolate import (
    Failed,
    apply_events,
    flatten_apart,
    read_states,
    score_apart,
)
from streamrec.worker.metrics import Metrics
from streamrec.worker.seams import BatchSink, DeadLetterWriter, Positions
from streamrec.worker.source import Assigned, position

log = logging.getLogger(__name__)

#: The layout of the internal keys (histories, applied offsets, markers). A worker finding a
#: marker of another format rebuilds that partition (old lists are served meanwhile): bump it
#: with a change of the histories or applied offsets that old values cannot be read across.
#: 2: the keys hash-tagged by partition for Redis Cluster (``Keys.tag``); a format-1 state is
#: under other names, so a worker of format 2 finds nothing and rebuilds from the topic.
STATE_FORMAT = 2
#: How often the applied offsets of owned partitions are checked when no batch reads them.
CHECK_S = 10.0
#: Longest time per loop turn spent writing the lists of a finished rebuild.
LIST_BUDGET_S = 0.25
#: Users per transaction when writing those lists.
LIST_CHUNK = 500
#: How often a rebuild under way logs its progress.
REPORT_S = 10.0
#: Attempts at one replayed batch before giving up (as the loop's MAX_ATTEMPTS).
MAX_ATTEMPTS = 5

Part = tuple[str, int]


def _where(part: Part) -> str:
    return f"{part[0]}[{part[1]}]"


def _bytes(value: object) -> bytes | None:
    """A value read with redis-py (bytes, as the worker's clients return them) or None."""
    if value is None:
        return None
    return value.encode() if isinstance(value, str) else bytes(value)  # type: ignore[call-overload]


@dataclass(frozen=True, slots=True)
class Origin:
    """The ``<p>:{<topic>:<partition>}:origin`` value: the pass that built the state in Redis."""

    pass_id: str  # random, one per pass
    start: int | None  # the first offset the pass read; None: a state from before markers
    since_ms: int  # when the pass began
    complete: bool  # False while a rebuild is under way
    format: int = STATE_FORMAT

    @classmethod
    def begin(cls, start: int | None, complete: bool) -> Origin:
        return cls(uuid.uuid4().hex[:12], start, int(time.time() * 1000), complete)

    def to_json(self) -> bytes:
        return orjson.dumps({"format": self.format, "pass": self.pass_id, "from": self.start,
                             "since_ms": self.since_ms, "complete": self.complete})  # fmt: skip

    @classmethod
    def parse(cls, raw: bytes | str) -> Origin:
        """Raises ValueError when malformed."""
        try:
            obj = orjson.loads(raw)
            start = obj["from"]
            return cls(str(obj["pass"]), None if start is None else int(start),
                       int(obj["since_ms"]), bool(obj["complete"]), int(obj["format"]))  # fmt: skip
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not an origin marker: {exc!r}") from None


class StateLost(WorkerError):
    """Redis no longer holds what this worker applied to some partitions (``StateGuard.check``).

    ``found``: partition -> the applied offset Redis holds now (-1: none). Caught by the loop,
    which hands it to ``StateGuard.recover``; it stops the worker if it gets further.
    """

    def __init__(self, found: Mapping[Part, int]) -> None:
        super().__init__(
            "Redis lost the state of "
            + ", ".join(f"{_where(p)} (now @{o})" for p, o in found.items())
        )
        self.found = dict(found)


@dataclass(slots=True)
class _Rebuild:
    target: int  # the end of the log when the rebuild began: done once target - 1 is applied
    dlq_from: int  # messages below this offset were dead-lettered by an earlier pass
    messages: int  # how many there were to re-read then
    began: float = field(default_factory=time.monotonic)
    fresh: set[str] = field(default_factory=set)  # users whose history this pass has written
    done: int = -1  # the last offset this pass has applied
    replayed: int = 0
    pending: list[str] | None = None  # after the replay: users whose list is still to write
    listed: int = 0
    replayed_at: float = 0.0


@dataclass(slots=True)
class _Owned:
    committed: int | None  # the group's commit when the partition was assigned
    origin: bytes | None = None  # the marker this worker wrote or accepted, as stored
    rebuild: _Rebuild | None = None
    aside_since: float | None = None  # standing aside: another pass has taken the state over


class StateGuard:
    """Per owned partition: where it resumes, whether Redis still holds what was applied, and
    the rebuild when it does not (see the module docstring).

    Built by the worker; ``attach`` gives it the source's positions and the dead-letter writer
    once they exist. The loop calls ``replay`` on each decoded batch (the partitions being
    rebuilt take their messages), ``check`` on the applied offsets each batch reads, ``wrote``
    after each batch it stored, ``recover`` when ``check`` raised, and ``tick`` every turn.
    """

    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        keys: Keys,
        sink: BatchSink,
        rules: Rules,
        metrics: Metrics,
        scorer: Callable[[], Scorer],
    ) -> None:
        self._settings = settings
        self._redis = client
        self._keys = keys
        self._sink = sink
        self._rules = rules
        self._metrics = metrics
        self._scorer = scorer
        self._positions: Positions | None = None
        self._dead: DeadLetterWriter | None = None
        self._known: dict[Part, int] = {}  # last applied offset this worker knows is in Redis
        self._owned: dict[Part, _Owned] = {}
        self._special: set[Part] = set()  # rebuilding or standing aside: not the loop's
        self._listing: list[Part] = []  # replayed; lists still to write
        self._next_check = time.monotonic() + CHECK_S
        self._next_report = 0.0
        # A worker standing aside takes over once the group still gives it the partition
        # this long after: the other pass's worker is gone, or it would have been revoked.
        self._takeover_s = 2 * settings.session_timeout_ms / 1000
        retention = settings.topic_events_retention_s
        if 0 < retention < settings.history_ttl_s:
            log.warning(
                "topic_events_retention_s (%.1f days) is shorter than history_ttl_s (%.1f "
                "days): after a loss of Redis, histories can be rebuilt from that much only",
                retention / 86_400,
                settings.history_ttl_s / 86_400,
            )

    def attach(self, positions: Positions | None, dead: DeadLetterWriter) -> None:
        """The source (when it can move partitions: else a loss stops the worker) and the
        dead-letter writer."""
        self._positions = positions
        self._dead = dead

    def rebuilding(self, part: Part) -> bool:
        """Whether a rebuild of ``part`` is under way here (its lists are not written yet)."""
        own = self._owned.get(part)
        return own is not None and own.rebuild is not None

    @property
    def retention(self) -> str:
        seconds = self._settings.topic_events_retention_s
        return "forever" if seconds < 0 else f"{seconds / 86_400:g} days"

    # --- assignment ---------------------------------------------------------------------------

    def assigned(self, parts: Sequence[Assigned]) -> dict[Part, int]:
        """Where each newly assigned partition starts (``Source``'s ``on_assign``): partitions
        left out start at the group's committed offset."""
        if not parts:
            return {}
        keys = [self._keys.applied(a.topic, a.partition) for a in parts]
        keys += [self._keys.origin(a.topic, a.partition) for a in parts]
        raw = mget(self._redis, keys)
        n = len(parts)
        starts: dict[Part, int] = {}
        for a, applied, origin in zip(parts, raw[:n], raw[n:], strict=True):
            start = self._resume(a, parse_applied(applied), _bytes(origin))
            if start is not None:
                starts[(a.topic, a.partition)] = start
        return starts

    def _resume(self, a: Assigned, applied: int | None, raw: bytes | None) -> int | None:
        part = (a.topic, a.partition)
        where = _where(part)
        self._forget(part)
        own = self._owned[part] = _Owned(committed=a.committed)
        problem = None
        if raw is not None:
            try:
                origin = Origin.parse(raw)
                if origin.format != STATE_FORMAT:
                    problem = f"its state is format {origin.format}, this worker's {STATE_FORMAT}"
                elif not origin.complete:
                    age = time.time() - origin.since_ms / 1000
                    problem = (
                        f"a rebuild of it (pass {origin.pass_id}, {age:.0f} s ago) did not finish"
                    )
            except ValueError:
                problem = f"its origin marker is unreadable ({raw[:80]!r})"
        if problem is None and applied is None and a.committed is not None:
            problem = (
                f"Redis holds no applied offset for it, but the group committed "
                f"@{a.committed}: Redis lost its state (restarted empty? flushed?)"
            )
        if problem is not None:
            self._begin(part, problem, a.low, a.high, seek=False)
            return OFFSET_BEGINNING
        if raw is None:
            # A first start, or a state kept from before markers (it began at the log start).
            fresh = Origin.begin(a.low if applied is None else None, complete=True).to_json()
            key = self._keys.origin(*part)
            raw = fresh if self._redis.set(key, fresh, nx=True) else self._get(key)
            if applied is not None:
                log.info("%s: state from before origin markers, kept (applied up to @%d)",
                         where, applied)  # fmt: skip
        own.origin = raw
        if applied is None:
            return None  # nothing applied yet: from the commit, or the earliest offset
        self._known[part] = applied
        start = applied + 1
        if start < a.low:
            log.error("%s: events @%d..@%d were deleted by the topic's retention (%s) before "
                      "they were applied; they are lost", where, start, a.low - 1,
                      self.retention)  # fmt: skip
            return OFFSET_BEGINNING
        if a.committed is not None and start < a.committed:
            log.warning("%s: Redis reflects it up to @%d, the group committed @%d: resuming "
                        "at @%d (what Redis holds; restored from an older snapshot?)",
                        where, applied, a.committed, start)  # fmt: skip
            return start
        return None

    def revoked(self, parts: list[TopicPartition]) -> None:
        """Forget revoked partitions (``Source``'s ``on_revoke``); a rebuild under way is left
        to the next owner, who starts it again."""
        for tp in parts:
            part = (str(tp.topic), int(tp.partition))
            own = self._owned.get(part)
            if own is not None and own.rebuild is not None:
                log.warning("%s: revoked during its rebuild; its next owner rebuilds it again",
                            _where(part))  # fmt: skip
            self._forget(part)

    def _forget(self, part: Part) -> None:
        self._known.pop(part, None)
        self._owned.pop(part, None)
        self._special.discard(part)
        if part in self._listing:
            self._listing.remove(part)
        for gauge in (self._metrics.rebuild_messages, self._metrics.rebuild_lists):
            with contextlib.suppress(KeyError):
                gauge.remove(str(part[1]))

    # --- the rebuild ---------------------------------------------------------------------------

    def _begin(self, part: Part, reason: str, low: int, high: int, seek: bool) -> None:
        """Start rebuilding ``part``: marker (incomplete) and applied offset reset in one
        transaction, then (``seek``) read the partition again from its start."""
        own = self._owned[part]
        origin = Origin.begin(low, complete=False).to_json()
        pipe = self._redis.pipeline(transaction=True)
        pipe.set(self._keys.origin(*part), origin)
        pipe.delete(self._keys.applied(*part))
        pipe.execute()
        applied = self._known.pop(part, -1)
        own.origin = origin
        own.aside_since = None
        own.rebuild = _Rebuild(target=high, dlq_from=max(own.committed or 0, applied + 1),
                               messages=max(0, high - low))  # fmt: skip
        self._special.add(part)
        if part in self._listing:
            self._listing.remove(part)
        self._metrics.stats.rebuilds += 1
        log.warning("%s: %s; rebuilding it from the events topic: @%d..@%d (%d messages; the "
                    "topic keeps %s, older events cannot be restored), lists in Redis are "
                    "served meanwhile", _where(part), reason, low, high - 1,
                    own.rebuild.messages, self.retention)  # fmt: skip
        self._gauges(part, own.rebuild)
        if seek:
            assert self._positions is not None
            self._positions.seek({part: OFFSET_BEGINNING})
        if high <= low:
            self._replayed(part, own)

    def replay(self, decoded: list[Decoded]) -> list[Decoded]:
        """Apply the messages of partitions under rebuild (and drop those of partitions whose
        state another pass has taken over); returns the rest, for the loop."""
        if not self._special:
            return decoded
        rest: list[Decoded] = []
        mine: dict[Part, list[Decoded]] = {}
        for d in decoded:
            part = position(d.msg)[0]
            if part in self._special:
                mine.setdefault(part, []).append(d)
            else:
                rest.append(d)
        for part, items in mine.items():
            own = self._owned.get(part)
            if own is not None and own.rebuild is not None and own.aside_since is None:
                try:
                    self._replay(part, own, own.rebuild, items)
                except BaseException:
                    self._sink.reset()  # drop the connection and its WATCH
                    raise
        return rest

    def _replay(self, part: Part, own: _Owned, r: _Rebuild, items: list[Decoded]) -> None:
        """One batch of a rebuild: histories and progress in one transaction, no lists."""
        keys, st = self._keys, self._metrics.stats
        users = list(dict.fromkeys(d.event.user_id for d in items if d.event is not None))
        akey, okey = keys.applied(*part), keys.origin(*part)
        last = max(position(d.msg)[1] for d in items)
        for _attempt in range(MAX_ATTEMPTS):
            raw = self._sink.watch_read([akey, okey, *(keys.user(u, *part) for u in users)])
            if raw[1] != own.origin:
                self._sink.write(())  # UNWATCH
                self._taken(part, own, raw[1])
                return
            gone = [u for u, v in zip(users, raw[2:], strict=True) if v is None and u in r.fresh]
            if gone:  # a history this pass wrote (minutes ago, with its TTL) was deleted
                self._sink.write(())  # UNWATCH
                low, high = self._watermarks(part)
                self._begin(part, f"the history of {gone[0]!r}, rebuilt by this pass, is gone "
                            "from Redis", low, high, seek=True)  # fmt: skip
                return
            done = parse_applied(raw[0], missing=-1)
            fresh = [d for d in items if position(d.msg)[1] > done]
            failed = [(d.msg, d.reason or "") for d in fresh
                      if d.event is None and position(d.msg)[1] >= r.dlq_from]  # fmt: skip
            assert self._dead is not None  # set by ``attach``
            self._dead.send(failed)
            # As in the loop, a failure of one user (worker/isolate.py) leaves that user's
            # state as it was and the rest of the batch goes on.
            faulty: Failed = {}
            ours = [(u, v) for u, v in zip(users, raw[2:], strict=True) if u in r.fresh]
            states = read_states([u for u, _ in ours], [v for _, v in ours], faulty)
            for u in users:
                if u not in r.fresh:
                    states[u] = UserState()  # what is stored is no part of this pass
            decoded = [d.event for d in fresh if d.event is not None]
            events = len(decoded)
            live, duplicates = apply_events(decoded, states, self._rules, faulty)
            live = flatten_apart(live, states, self._rules.half_life_ms, faulty)[0]
            ok = self._sink.write(
                lists=(),
                states=[(keys.user(u, *part), states[u].encode()) for u in live],
                applied=[(akey, max(last, done))],
            )
            if ok:
                break
            log.warning("rebuild of %s raced with another writer; retrying", _where(part))
        else:
            raise WorkerError(f"could not apply a rebuild batch of {_where(part)} in "
                              f"{MAX_ATTEMPTS} attempts (another worker writing it?)")  # fmt: skip
        r.fresh.update(live)
        r.done = max(last, done)
        r.replayed += len(fresh)
        st.replayed += len(fresh)
        st.decoded += events
        st.duplicates += duplicates
        st.dead_lettered += len(failed)
        st.redelivered += len(items) - len(fresh)
        self._failed(faulty, "its history is not rebuilt by this batch")
        self._gauges(part, r)
        if r.done >= r.target - 1:
            self._replayed(part, own)

    def _replayed(self, part: Part, own: _Owned) -> None:
        """Every history of the partition is complete: back to the loop, lists to write."""
        r = own.rebuild
        assert r is not None
        r.pending = list(r.fresh)
        r.fresh = set()  # from now on the stored histories are this pass's
        r.replayed_at = time.monotonic()
        if r.done >= 0:
            self._known[part] = r.done
        self._special.discard(part)
        self._listing.append(part)
        took = r.replayed_at - r.began
        log.info("%s: re-read %d messages in %.1f s (beside the worker's other partitions); "
                 "every history is back, writing the lists of %d users", _where(part),
                 r.replayed, took, len(r.pending))  # fmt: skip
        self._gauges(part, r)

    def _list(self, part: Part, own: _Owned, r: _Rebuild, deadline: float) -> None:
        """Write the lists of the pass's users, a chunk per transaction, until ``deadline``."""
        assert r.pending is not None
        okey = self._keys.origin(*part)
        while r.pending and time.monotonic() < deadline:
            chunk = r.pending[-LIST_CHUNK:]
            raw = self._sink.watch_read([okey, *(self._keys.user(u, *part) for u in chunk)])
            if raw[0] != own.origin:
                self._sink.write(())  # UNWATCH
                self._taken(part, own, raw[0])
                return
            # (A history gone since was lost again, noticed soon, or expired.)
            stored = [(u, v) for u, v in zip(chunk, raw[1:], strict=True) if v is not None]
            faulty: Failed = {}
            states = read_states([u for u, _ in stored], [v for _, v in stored], faulty)
            lists: list[tuple[str, bytes]] = []
            vecs: list[tuple[str, bytes]] = []
            if states:
                users, counts, item_ids, totals = flatten_apart(
                    list(states), states, self._rules.half_life_ms, faulty
                )
                scorer = self._scorer()
                rows = scorer.rows_of(item_ids)
                scored = score_apart(scorer, users, counts, rows, totals, faulty)
                lists = scorer.values(scored, int(time.time() * 1000))
                vecs = scorer.vecs(scored)
            home = home_value(*part)
            if not self._sink.write(lists=lists, homes=[(u, home) for u, _ in lists], vecs=vecs):
                continue  # a history changed meanwhile: that chunk again
            del r.pending[-len(chunk) :]
            r.listed += len(lists)
            self._metrics.stats.relisted += len(lists)
            self._failed(faulty, "its list is not written again")
        self._gauges(part, r)
        if not r.pending:
            self._complete(part, own, r)

    def _complete(self, part: Part, own: _Owned, r: _Rebuild) -> None:
        assert own.origin is not None
        done = replace(Origin.parse(own.origin), complete=True).to_json()
        key = self._keys.origin(*part)
        with self._redis.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(key)
                if pipe.get(key) != own.origin:
                    pipe.reset()
                    self._taken(part, own, self._get(key))
                    return
                pipe.multi()
                pipe.set(key, done)
                pipe.execute()
            except redis.WatchError:
                self._taken(part, own, self._get(key))
                return
        own.origin, own.rebuild = done, None
        if part in self._listing:
            self._listing.remove(part)
        now = time.monotonic()
        log.info("%s: rebuilt: %d messages re-read in %.1f s, %d lists written in %.1f s; "
                    "%.1f s in all", _where(part), r.replayed, r.replayed_at - r.began,
                    r.listed, now - r.replayed_at, now - r.began)  # fmt: skip
        self._gauges(part, None)

    def _taken(self, part: Part, own: _Owned, found: bytes | None) -> None:
        """The marker is not the one this worker wrote: lost again, or another pass's."""
        if found is None:
            low, high = self._watermarks(part)
            self._begin(part, "its origin marker is gone again", low, high, seek=True)
            return
        log.warning("%s: another worker's pass (%r) has taken over its state; standing aside "
                    "(its messages are dropped here) until the partition is revoked",
                    _where(part), found[:80])  # fmt: skip
        own.aside_since = time.monotonic()
        self._special.add(part)
        self._known.pop(part, None)
        if part in self._listing:
            self._listing.remove(part)

    def _failed(self, faulty: Failed, what: str) -> None:
        """Count and log the users a rebuild step could not be applied to (as the loop does)."""
        if faulty:
            self._metrics.stats.users_failed += len(faulty)
            for user, reason in faulty.items():
                log.error("user %r: %s, kept as it was: %s", user, what, reason)

    def _get(self, key: str) -> bytes | None:
        return _bytes(self._redis.get(key))

    def _watermarks(self, part: Part) -> tuple[int, int]:
        if self._positions is None:
            raise WorkerError(f"Redis lost the state of {_where(part)} while the worker ran, and "
                              "its source cannot move partitions: restart the worker, it "
                              "rebuilds the state on start")  # fmt: skip
        return self._positions.watermarks(part)

    def _gauges(self, part: Part, r: _Rebuild | None) -> None:
        label = str(part[1])
        if r is None:
            self._metrics.rebuild_messages.labels(partition=label).set(0)
            self._metrics.rebuild_lists.labels(partition=label).set(0)
            return
        left = max(0, r.target - 1 - r.done) if r.pending is None else 0
        lists = len(r.pending) if r.pending is not None else len(r.fresh)
        self._metrics.rebuild_messages.labels(partition=label).set(left)
        self._metrics.rebuild_lists.labels(partition=label).set(lists)

    # --- while owned ---------------------------------------------------------------------------

    def check(self, applied: Mapping[Part, int]) -> None:
        """Raise ``StateLost`` when a batch reads applied offsets (-1: none) lower than this
        worker knows it stored."""
        known = self._known
        lost = {p: a for p, a in applied.items() if a < known.get(p, -1)}
        if lost:
            raise StateLost(lost)

    def wrote(self, last: Mapping[Part, int]) -> None:
        """A batch was stored: ``last`` is its highest offset per partition."""
        known = self._known
        for part, offset in last.items():
            if offset > known.get(part, -1):
                known[part] = offset

    def recover(self, lost: StateLost) -> None:
        """Act on ``StateLost``: rebuild each partition whose state is gone, move those Redis
        holds an older state of back to it. The batch's messages of these partitions are not
        applied (they come again)."""
        for part, found in lost.found.items():
            had = self._known.get(part, -1)
            own = self._owned.get(part)
            if own is None or self._positions is None:  # a source without the guard's hooks
                raise WorkerError(f"Redis lost the state of {_where(part)} while the worker "
                                  "ran (its applied offset is gone or went back), and its "
                                  "source cannot move partitions: restart the worker, it "
                                  "rebuilds the state on start")  # fmt: skip
            if found >= 0:
                log.warning("%s: Redis holds it applied up to @%d, this worker had stored up "
                            "to @%d: Redis lost writes (restored, failed over?); resuming at "
                            "@%d", _where(part), found, had, found + 1)  # fmt: skip
                self._known[part] = found
                self._positions.seek({part: found + 1})
                continue
            low, high = self._watermarks(part)
            current = self._get(self._keys.origin(*part))
            if current is not None and current != own.origin:
                self._taken(part, own, current)
                continue
            reason = f"its applied offset is gone from Redis (this worker had stored up to @{had})"
            self._begin(part, reason, low, high, seek=True)

    def tick(self) -> None:
        """Between batches: write lists of finished rebuilds (time-boxed), check idle
        partitions' applied offsets every ``CHECK_S``, log rebuild progress."""
        now = time.monotonic()
        if self._listing:
            part = self._listing[0]
            own = self._owned[part]
            assert own.rebuild is not None
            try:
                self._list(part, own, own.rebuild, now + LIST_BUDGET_S)
            except BaseException:
                self._sink.reset()
                raise
        if self._special and self._positions is not None:
            for part in [p for p in self._special if self.rebuilding(p)]:
                own = self._owned[part]
                r = own.rebuild
                assert r is not None
                # Read past the end it had when it began, with no message at its last offset
                # (a transaction marker takes one): replayed as well. r.done >= 0: a batch of
                # it came, so the position is the rebuild's, not the one before the seek.
                if (
                    own.aside_since is None
                    and r.done >= 0
                    and self._positions.position(part) >= r.target
                ):
                    self._replayed(part, own)
        if now >= self._next_check:
            self._next_check = now + CHECK_S
            self._check_owned(now)
        if (self._special or self._listing) and now >= self._next_report:
            self._next_report = now + REPORT_S
            for part, own in sorted(self._owned.items()):
                r = own.rebuild
                if r is not None:
                    left = max(0, r.target - 1 - r.done) if r.pending is None else 0
                    log.info("rebuild of %s: %d of %d messages re-read (%d left), %d lists to "
                             "write", _where(part), r.replayed, r.messages, left,
                             len(r.pending or ()))  # fmt: skip

    def _check_owned(self, now: float) -> None:
        for part, own in list(self._owned.items()):
            if own.aside_since is not None and now - own.aside_since > self._takeover_s:
                low, high = self._watermarks(part)
                self._begin(part, f"still assigned here {self._takeover_s:.0f} s after another "
                            "pass took its state over", low, high, seek=True)  # fmt: skip
        watched = [p for p in self._known if p not in self._special]
        if not watched:
            return
        raw = mget(self._redis, [self._keys.applied(*p) for p in watched])
        found = {p: parse_applied(v, missing=-1) for p, v in zip(watched, raw, strict=True)}
        lost = {p: a for p, a in found.items() if a < self._known[p]}
        if lost:
            self.recover(StateLost(lost))
