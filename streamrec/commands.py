"""What each ``streamrec`` subcommand does; ``cli`` parses, this module runs.

Heavy imports (numpy, implicit, confluent-kafka) happen here, inside the commands that need them,
so ``streamrec --help`` and argument errors stay instant.
"""

from __future__ import annotations

import argparse
import csv
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from streamrec.errors import ConfigError
from streamrec.settings import Settings, load_settings

if TYPE_CHECKING:
    from streamrec.artifact import Model
    from streamrec.events import Event

log = logging.getLogger(__name__)


def run(args: argparse.Namespace) -> int:
    handler: Callable[[argparse.Namespace], int] = {
        "infra": cmd_infra,
        "train": cmd_train,
        "worker": cmd_worker,
        "produce": cmd_produce,
        "demo": cmd_demo,
    }[args.command]
    return handler(args)


def cmd_infra(args: argparse.Namespace) -> int:
    from streamrec import infra
    from streamrec.connect import ensure_topics

    settings = load_settings()
    if args.action == "up":
        state = infra.up(settings, echo=print)
        created = ensure_topics(settings)
        for line in state.lines():
            print(line)
        if created:
            print(f"created topics: {', '.join(created)}")
        return 0
    if args.action == "down":
        infra.down(settings, echo=print)
        return 0
    state = infra.status(settings)
    for line in state.lines():
        print(line)
    return 0 if state.ok else 3


def cmd_train(args: argparse.Namespace) -> int:
    from model.data import build_matrix, load_csv, load_lastfm, synthetic
    from model.train import Params, train

    params = Params(
        factors=args.factors,
        regularization=args.regularization,
        alpha=args.alpha,
        iterations=args.iterations,
        transform=args.transform,
        seed=args.seed,
    )
    settings = load_settings()  # before the fit: a bad setting should fail fast
    if args.csv is not None:
        data, source = load_csv(args.csv), str(args.csv)
    elif args.dataset == "lastfm-2k":
        if args.data_dir is None:
            raise ConfigError("--dataset lastfm-2k needs --data-dir DIR")
        data, source = load_lastfm(args.data_dir), f"lastfm-2k:{args.data_dir}"
    else:
        data, source = synthetic(), "synthetic"
    print(f"loaded {len(data)} rows from {source}")
    matrix = build_matrix(data, params.transform)
    model = train(matrix, params, args.out, extra={"source": source})
    print(f"model {model.version}: {model.n_items} items x {model.factors} factors -> {args.out}")
    if args.publish:
        _publish(model, settings)
    return 0


def _publish(model: Model, settings: Settings) -> None:
    from model.publish import publish
    from streamrec.connect import redis_client

    publish(model, settings, redis_client(settings))
    print(f"published: {settings.redis_prefix}:model -> {model.version}")


def cmd_worker(args: argparse.Namespace) -> int:
    from streamrec.cli import install_stop_handlers
    from worker.loop import Worker

    settings = load_settings(model_path=args.model)
    stop = threading.Event()
    install_stop_handlers(stop)
    Worker(settings, stop).run(max_messages=args.max_events, duration_s=args.duration)
    return 0


def cmd_produce(args: argparse.Namespace) -> int:
    from producer.producer import EventProducer
    from streamrec.events import new_event

    settings = load_settings()
    if args.user is not None and not args.item:
        raise ConfigError("--user needs --item")
    with EventProducer(settings, fmt=args.format) as producer:
        if args.user is not None:
            event = new_event(
                args.user,
                args.item,
                args.type,
                args.value,
                args.timestamp,
                event_id=args.event_id,
            )
            producer.send(event)
        else:
            for event in _csv_events(args.csv, args.limit):
                producer.send(event)
    print(f"delivered {producer.delivered} event(s) to {producer.topic}")
    return 0


def _csv_events(path: Path, limit: int | None) -> list[Event]:
    from streamrec.errors import EventError
    from streamrec.events import new_event

    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    events: list[Event] = []
    with path.open(newline="", encoding="utf-8") as f:
        for n, row in enumerate(csv.DictReader(f), start=2):
            if limit is not None and len(events) >= limit:
                break
            try:
                events.append(
                    new_event(
                        row["user_id"],
                        row["item_id"],
                        row.get("type") or "play",
                        float(row["value"]) if row.get("value") else None,
                        int(row["timestamp"]) if row.get("timestamp") else None,
                    )
                )
            except (KeyError, ValueError, EventError) as exc:
                raise ConfigError(f"{path}:{n}: bad row ({exc})") from None
    return events


def cmd_demo(args: argparse.Namespace) -> int:
    from streamrec.demo import run_demo

    return run_demo(load_settings(), args.duration, args.rate, args.dir)
