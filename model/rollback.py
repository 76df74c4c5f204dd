"""The model store seen by an operator: which versions it holds, and putting an older one back.

``list_versions`` reads the versioned directories under a models root (``model/store.py``) with
each one's manifest: its size, parameters and the holdout metrics the nightly job measured,
and which one the ``<p>:model`` pointer names. ``rollback`` makes a stored version live the
way a new model goes live: it is loaded and verified (checksums, shapes, dtypes:
``artifact.load_model``), then ``model.publish.publish`` writes every user's list under it
from their live history in Redis, ``<p>:popular`` and the similar items, moves the pointer
and announces the version on ``settings.topic_models``; workers swap to it and re-fold the
users whose events came after its Kafka snapshot, as on any swap (``worker/models.py``,
``worker/loop.py``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from streamrec.artifact import Model, load_model, read_manifest
from streamrec.errors import ArtifactError
from streamrec.keys import Keys, ModelPointer, read_model_pointer
from streamrec.model.publish import live_histories, publish
from streamrec.model.store import versions
from streamrec.settings import Settings

log = logging.getLogger(__name__)

#: The metrics ``model list`` shows, from the manifest's ``metrics.als`` (the retrain's holdout).
SHOWN_METRICS = ("ndcg@10", "precision@10", "recall@10", "coverage@10")


@dataclass(frozen=True)
class Version:
    """One stored model: its manifest's figures and whether the pointer names it."""

    version: str
    path: Path
    created_at_ms: int
    n_items: int
    factors: int
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    live: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "path": str(self.path),
            "created_at_ms": self.created_at_ms,
            "n_items": self.n_items,
            "factors": self.factors,
            "params": self.params,
            "metrics": self.metrics,
            "live": self.live,
        }


def _version(path: Path, live: ModelPointer | None) -> Version:
    m = read_manifest(path)
    metrics = m.get("metrics") or {}
    als = metrics.get("als") if isinstance(metrics, dict) else None
    shape = (m.get("files") or {}).get("item_factors.npy", {}).get("shape") or [0, 0]
    return Version(
        version=str(m["version"]),
        path=path,
        created_at_ms=int(m["created_at_ms"]),
        n_items=int(m.get("n_items", shape[0])),
        factors=int(m.get("factors", shape[-1])),
        params=dict(m.get("params") or {}),
        metrics={k: float(v) for k, v in (als or {}).items() if isinstance(v, int | float)},
        live=live is not None and str(m["version"]) == live.version,
    )


def list_versions(root: Path, live: ModelPointer | None) -> list[Version]:
    """The complete versions under ``root``, oldest first, plus the live model when it lives
    elsewhere (a ``--model`` trained to another directory and published)."""
    found = [_version(d, live) for d in versions(root)]
    if live is not None and not any(v.live for v in found):
        try:
            found.append(_version(live.path, live))
        except (ArtifactError, KeyError, ValueError) as exc:
            log.warning("the live model %s at %s is unreadable: %s", live.version, live.path, exc)
    return found


def table(rows: list[Version]) -> str:
    """``rows`` as the text table ``streamrec model list`` prints (``*``: live)."""
    head = ["", "version", "created (UTC)", "items", "factors", *SHOWN_METRICS]
    lines = [head]
    for v in rows:
        created = time.strftime("%Y-%m-%d %H:%M", time.gmtime(v.created_at_ms / 1000))
        figures = [f"{v.metrics[k]:.4f}" if k in v.metrics else "-" for k in SHOWN_METRICS]
        lines.append(["*" if v.live else "", v.version, created, str(v.n_items),
                      str(v.factors), *figures])  # fmt: skip
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in lines
    )


def live_users(client: redis.Redis, keys: Keys) -> Iterator[str]:
    """Every user with a history in Redis (``<p>:{<topic>:<n>}:user:*``), by SCAN (no
    blocking KEYS; on a Redis Cluster, redis-py scans every master)."""
    for key in client.scan_iter(match=f"{keys.prefix}:{{*}}:user:*", count=1000):
        found = keys.parse_user(key.decode() if isinstance(key, bytes) else str(key))
        if found is not None:
            yield found[2]


def find_version(root: Path, version: str) -> Path:
    """The directory of ``version`` under ``root``; ``ArtifactError`` naming what is there."""
    known = {d.name: d for d in versions(root)}
    if version not in known:
        there = ", ".join(known) or "none"
        raise ArtifactError(f"no model version {version} under {root} (there: {there})")
    return known[version]


def rollback(
    settings: Settings,
    client: redis.Redis,
    root: Path,
    version: str,
    progress: Callable[[float, float], None] | None = None,
) -> tuple[Model, dict[str, int]]:
    """Make the stored ``version`` under ``root`` live, as a new model goes live (module doc).

    Raises ``ArtifactError`` when ``root`` holds no such version or it fails verification
    (nothing is written then), ``InfraError`` when the announcement is not delivered (after
    the pointer moved: workers still find it by polling).
    """
    path = find_version(root, version)
    model = load_model(path)  # verified before anything is written
    keys = Keys(settings.redis_prefix)
    pointed = read_model_pointer(client, keys)
    log.info("rolling back from %s to %s", pointed.version if pointed else "no model",
             model.version)  # fmt: skip
    users = sorted(live_users(client, keys))
    histories = live_histories(client, keys, users, settings.half_life_ms)
    counts = publish(model, settings, client, histories=histories, progress=progress)
    return model, counts
