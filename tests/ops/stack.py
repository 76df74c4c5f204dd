"""What the operations tests share: a real retrain publishing a model, events, /metrics names."""

from __future__ import annotations

import re
from pathlib import Path

import redis

from streamrec.events import new_event
from streamrec.model.data import Interactions, synthetic
from streamrec.model.params import Params
from streamrec.model.retrain import RetrainConfig, RetrainResult, retrain
from streamrec.producer.producer import EventProducer
from streamrec.settings import Settings

FAST = Params(factors=16, iterations=6, regularization=1.0, alpha=4.0)
_NAME = re.compile(r"\bstreamrec_[a-z0-9_]+")


def base_data() -> Interactions:
    return synthetic(400, 300, seed=11)


def real_retrain(
    s: Settings, client: redis.Redis, models: Path, **overrides: object
) -> RetrainResult:
    """One run of the nightly job on the generated dataset (no Kafka read: fast)."""
    cfg = RetrainConfig(models_dir=models, base=base_data(), base_name="synthetic", params=FAST,
                        read_kafka=False, **overrides)  # type: ignore[arg-type]  # fmt: skip
    return retrain(s, cfg, client, echo=lambda _line: None)


def produce(s: Settings, n: int, seed: int = 0) -> None:
    """``n`` play events of known users on known items."""
    data = base_data()
    users, items = data.users.astype(str), data.items.astype(str)
    with EventProducer(s) as p:
        for k in range(n):
            j = (seed * 7919 + k * 31) % len(users)
            p.send(new_event(f"u{users[j]}", items[j], "play", value=30.0))


def exported_names(metrics_text: str) -> set[str]:
    """Sample names in a /metrics exposition (``x_bucket``, ``x_total``...)."""
    names = set()
    for line in metrics_text.splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def queried_names(expr: str) -> set[str]:
    """The streamrec metric names a PromQL expression reads."""
    return set(_NAME.findall(expr))
