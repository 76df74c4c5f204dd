"""What each ``streamrec`` subcommand does; ``cli`` parses, this module runs.

Heavy imports (numpy, implicit, confluent-kafka) happen here, inside the commands that need them,
so ``streamrec --help`` and argument errors stay instant. A command returns its exit status
(``streamrec.exits.Exit``) or raises one of ``streamrec.errors`` (``cli.main`` maps it).

May import anything below the application (``streamrec.model``, ``.worker``, ``.producer``,
``.infra``, ``.als``, the floor) and ``streamrec.app.demo``, ``.signals``; never ``cli``.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from streamrec.app.progress import Progress
from streamrec.errors import ConfigError
from streamrec.exits import Exit
from streamrec.settings import Settings, load_settings

if TYPE_CHECKING:
    from pathlib import Path

    from streamrec.artifact import Model
    from streamrec.catalog import Item
    from streamrec.model.data import Interactions
    from streamrec.model.params import Params
    from streamrec.producer.replay import Report

log = logging.getLogger(__name__)


def run(args: argparse.Namespace) -> int:
    handler: Callable[[argparse.Namespace], int] = {
        "infra": cmd_infra,
        "topics": cmd_topics,
        "train": cmd_train,
        "evaluate": cmd_evaluate,
        "evaluate-cold": cmd_evaluate_cold,
        "recommend": cmd_recommend,
        "retrain": cmd_retrain,
        "model": cmd_model,
        "worker": cmd_worker,
        "produce": cmd_produce,
        "catalog": cmd_catalog,
        "replay": cmd_replay,
        "loadgen": cmd_loadgen,
        "demo": cmd_demo,
        "serve": cmd_serve,
    }[args.command]
    return handler(args)


def cmd_infra(args: argparse.Namespace) -> int:
    from streamrec import infra
    from streamrec.connect import ensure_topics

    cluster = {"redis_cluster": True} if args.redis_cluster else {}
    settings = load_settings(kafka_brokers=getattr(args, "brokers", None), **cluster)
    if args.action == "up":
        state = infra.up(settings, echo=print)
        if state.kafka_nodes and settings.kafka_bootstrap != state.kafka.address:
            # Its nodes, whatever the bootstrap named: the topics go to the cluster just started.
            settings = settings.model_copy(update={"kafka_bootstrap": state.kafka.address})
        created = ensure_topics(settings, create=True)
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
    return Exit.OK if state.ok else Exit.INFRA


def cmd_topics(args: argparse.Namespace) -> int:
    from streamrec.connect import ensure_topics, topic_specs
    from streamrec.worker.preflight import check_events_topic

    settings = load_settings()
    # check: a missing topic is a TopicsError (exit 6), as at the worker's start.
    created = ensure_topics(settings, create=args.action == "create")
    if args.action == "create":
        for topic in topic_specs(settings):
            print(f"{topic}: {'created' if topic in created else 'exists, left as it is'}")
    health = check_events_topic(settings)  # TopicsError (exit 6) when it would refuse
    print(
        f"{health.topic}: {health.partitions} partitions, {health.replicas} replicas each "
        f"(wanted {health.wanted} on {health.brokers} brokers), min.insync.replicas "
        f"{health.min_isr}, every partition in sync"
    )
    return Exit.OK


def _params(args: argparse.Namespace) -> Params:
    """ALS parameters from the flags ``train`` and ``retrain`` share."""
    from streamrec.model.params import Params

    return Params(
        factors=args.factors,
        regularization=args.regularization,
        alpha=args.alpha,
        iterations=args.iterations,
        transform=getattr(args, "transform", "log"),
        seed=args.seed,
    )


def cmd_train(args: argparse.Namespace) -> int:
    from streamrec.model.data import build_matrix
    from streamrec.model.train import train

    params = _params(args)
    settings = load_settings()  # before the fit: a bad setting should fail fast
    if args.if_absent and _live_model_exists(settings):
        return 0
    data, source = _load_source(args)
    print(f"loaded {len(data)} rows from {source}")
    extra: dict[str, Any] = {"source": source}
    catalog = None
    if args.items is not None:
        catalog = _items_csv(args.items)
        print(f"loaded {len(catalog)} catalog items from {args.items}")
        extra["items"] = str(args.items)
    if args.tune is not None:
        from streamrec.model.split import split_interactions
        from streamrec.model.tune import tune

        with Progress("tuning", args.tune, "s", rate=False) as shown:
            result = tune(
                split_interactions(data, 0.0),
                args.tune,
                seed=args.seed,
                base=params,
                history_max=settings.history_max,
                progress=shown,
            )
        print(result.table(10))
        params = result.best
        print(
            f"tuned: {len(result.trials)} trials in {result.elapsed_s:.0f}s, validation "
            f"{result.metric} {result.best_score:.4f} (flags: {result.base.score:.4f})"
        )
        extra["tuning"] = {
            k: v for k, v in result.to_dict().items() if k not in ("trials", "best")
        } | {"trials": len(result.trials)}
    matrix = build_matrix(data, params.transform)
    with Progress("fitting ALS", params.iterations, "sweeps") as shown:
        model = train(matrix, params, args.out, extra=extra, progress=shown, settings=settings,
                      catalog=catalog)  # fmt: skip
    print(f"model {model.version}: {model.n_items} items x {model.factors} factors -> {args.out}")
    if args.publish:
        _publish(model, settings)
    return 0


def _items_csv(path: Path) -> dict[str, Item]:
    """``--items CSV``: the catalog CSV read by the one reader of ``catalog load`` (its
    default column mapping), item_id -> item; a bad file is an InputError (exit 4)."""
    from streamrec.producer.catalog import read_catalog_csv

    return {item.item_id: item for item in read_catalog_csv(path)}


def _live_model_exists(settings: Settings) -> bool:
    """``train --if-absent``: the pointer names a model directory that is there (said why)."""
    from streamrec.artifact import MANIFEST
    from streamrec.connect import redis_client
    from streamrec.keys import Keys, read_model_pointer

    pointed = read_model_pointer(redis_client(settings), Keys(settings.redis_prefix))
    if pointed is None:
        return False
    if not (pointed.path / MANIFEST).is_file():
        print(f"{settings.redis_prefix}:model names {pointed.path}, which holds no model: training")
        return False
    print(f"{settings.redis_prefix}:model already names {pointed.version} ({pointed.path}): "
          "nothing to do (--if-absent)")  # fmt: skip
    return True


def _load_source(args: argparse.Namespace) -> tuple[Interactions, str]:
    """The rows ``--csv`` or ``--dataset`` (+ ``--data-dir``) name, and a label for them."""
    from streamrec.model.data import load_csv, load_dataset

    if args.csv is not None:
        return load_csv(args.csv), str(args.csv)  # a missing file is a DataError (exit 4)
    if args.dataset == "synthetic":
        return load_dataset("synthetic"), "synthetic"
    if args.data_dir is None:
        raise ConfigError(f"--dataset {args.dataset} needs --data-dir DIR")
    return load_dataset(args.dataset, args.data_dir), f"{args.dataset}:{args.data_dir}"


def cmd_retrain(args: argparse.Namespace) -> int:
    from streamrec.connect import redis_client
    from streamrec.model.retrain import RetrainConfig, retrain

    settings = load_settings()
    base, name = (None, None)
    if args.csv is not None or args.dataset is not None:
        base, name = _load_source(args)
    elif args.no_kafka:
        raise ConfigError("--no-kafka needs --csv or --dataset")
    catalog = None
    if args.items is not None:
        catalog = _items_csv(args.items)
    cfg = RetrainConfig(
        catalog=catalog,
        models_dir=args.models_dir or settings.home / "models",
        since_days=args.since_days,
        base=base,
        base_name=name,
        params=_params(args),
        tune_s=args.tune or 0.0,
        tolerance=args.tolerance,
        min_lift=args.min_lift,
        keep=args.keep,
        report_dir=args.report,
        read_kafka=not args.no_kafka,
        final_iterations=args.final_iterations,
        seed=args.seed,
        progress=lambda what, unit: Progress(what, None, unit, rate=unit != "s"),
    )
    if args.at is None:
        result = retrain(settings, cfg, redis_client(settings))
        if args.report:
            print(f"report: {args.report / 'report.html'}")
        return Exit.OK if result.promoted else Exit.KEPT
    return _daily(args.at, lambda: retrain(settings, cfg, redis_client(settings)).promoted)


def cmd_model(args: argparse.Namespace) -> int:
    """``model list`` / ``model rollback VERSION`` (``streamrec.model.rollback``)."""
    import json

    from streamrec.connect import redis_client
    from streamrec.errors import InfraError
    from streamrec.keys import Keys, read_model_pointer
    from streamrec.model.rollback import find_version, list_versions, rollback, table

    settings = load_settings()
    root = args.models_dir or settings.home / "models"
    if args.action == "rollback":
        find_version(root, args.version)  # an unknown version: exit 4 before any connection
        client = redis_client(settings)
        with Progress(f"publishing {args.version}", None, "values") as shown:
            model, counts = rollback(settings, client, root, args.version, progress=shown)
        print(
            f"rolled back: {settings.redis_prefix}:model -> {model.version} ({counts['lists']} "
            f"lists, {counts['similar']} similar-item lists); announced on {settings.topic_models}"
        )
        return Exit.OK
    try:  # the list is worth having with Redis down: only the live mark is missing then
        live = read_model_pointer(redis_client(settings), Keys(settings.redis_prefix))
        unknown = ""
    except InfraError as exc:
        live, unknown = None, f"live model unknown: {exc}"
    rows = list_versions(root, live)
    if args.json:
        for v in rows:
            print(json.dumps(v.to_dict(), sort_keys=True))
    elif rows:
        print(table(rows))
    else:
        print(f"no model versions under {root}")
    if unknown:
        log.warning("%s", unknown)
    return Exit.OK


def _daily(at: tuple[int, int], job: Callable[[], object]) -> int:
    """Run ``job`` every day at ``at`` (UTC) until SIGTERM/SIGINT; a failed run is logged and
    the schedule goes on (the live model keeps serving)."""
    import time

    from streamrec.app.signals import install_stop_handlers

    stop = threading.Event()
    install_stop_handlers(stop)
    while not stop.is_set():
        now = time.time()
        today = now - now % 86_400 + at[0] * 3600 + at[1] * 60
        due = today if today > now else today + 86_400
        log.info("next retrain at %s UTC", time.strftime("%Y-%m-%d %H:%M", time.gmtime(due)))
        if stop.wait(due - now):
            break
        try:
            job()
        except Exception:
            log.exception("retrain failed; the live model keeps serving")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    import json
    from dataclasses import replace

    from streamrec.errors import ArtifactError
    from streamrec.model.baselines import EASE_LAMBDA
    from streamrec.model.evaluate import evaluate
    from streamrec.model.params import Params
    from streamrec.model.split import split_interactions
    from streamrec.model.tune import tune, tune_ease

    if args.model is not None and not args.model.is_dir():
        raise ArtifactError(f"--model {args.model}: no such model directory")
    settings = load_settings()
    data, source = _load_source(args)
    print(f"loaded {len(data)} rows from {source}")
    split = split_interactions(data, seed=args.seed)
    extra: dict[str, Any] = {"source": source}
    tuned, ease_lambda = None, EASE_LAMBDA
    if args.tune is not None:
        with Progress("tuning", args.tune, "s", rate=False) as shown:
            result = tune(
                split, args.tune, seed=args.seed, history_max=settings.history_max, progress=shown
            )
        print(result.table(5))
        tuned = result.best
        ease = tune_ease(split, seed=args.seed, max_items=args.ease_max_items)
        if ease.skipped is None:
            ease_lambda = ease.best
        extra["tuning"] = result.to_dict()
        extra["ease_tuning"] = {
            "best": ease.best,
            "scores": {str(k): v for k, v in ease.scores.items()},
            "skipped": ease.skipped,
        }
    report = evaluate(
        split,
        params=Params(seed=args.seed),
        tuned=tuned,
        model_dir=args.model,
        ks=(args.k, 2 * args.k),
        ease_lambda=ease_lambda,
        ease_max_items=args.ease_max_items,
        history_max=settings.history_max,
        seed=args.seed,
    )
    report = replace(report, extra=extra)
    s = report.split
    print(
        f"split ({s['method']}): {s['eval_users']} test users, {s['train_pairs']} train / "
        f"{s['test_pairs']} held-out pairs"
    )
    print(report.table())
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report.to_dict(), indent=2) + "\n", "utf-8")
        print(f"report -> {args.out}")
    return 0


def cmd_evaluate_cold(args: argparse.Namespace) -> int:
    import json

    from streamrec.model.cold import ColdConfig, dataset_with_content, evaluate_cold

    settings = load_settings()
    if args.dataset in ("ml-latest-small", "lastfm-2k", "spotify-top-hits") and not args.data_dir:
        raise ConfigError(f"evaluate-cold {args.dataset} needs --data-dir DIR")
    if args.dataset == "spotify-top-hits":
        from streamrec.model.cold import spotify_genre_agreement

        got = spotify_genre_agreement(args.data_dir, ks=(10, 50))
        print(f"spotify top hits: {got.pop('songs'):.0f} songs, no users; content neighbours "
              "(cosine over standardized audio features) vs random songs:")  # fmt: skip
        for name, value in got.items():
            print(f"  {name:<28} {value:.4f}")
        return 0
    if not 0 < args.holdout < 1:
        raise ConfigError(f"--holdout must be between 0 and 1, got {args.holdout:g}")
    data, content, evaluated = dataset_with_content(args.dataset, args.data_dir)
    print(f"loaded {len(data)} rows, {len(content)} items with content from {args.dataset}")
    lam = args.content_regularization
    cfg = ColdConfig(
        params=_params(args),
        holdout=args.holdout,
        seeds=tuple(range(args.seeds)),
        regularization=settings.content_regularization if lam is None else lam,
        min_category_count=settings.content_min_category_count,
    )
    report = evaluate_cold(data, content, cfg, args.dataset, evaluated)
    print(report.table())
    out = report.to_dict()
    if args.similar:
        from dataclasses import asdict

        from streamrec.model.cold import evaluate_similar_blend

        blend = evaluate_similar_blend(
            data,
            content,
            cfg,
            min_interactions=max(2, settings.content_similar_min_interactions),
            source=args.dataset,
            evaluated=evaluated,
        )
        print(blend.table())
        out["similar_blend"] = {
            k: v for k, v in asdict(blend).items() if k not in ("rare", "frequent")
        }
        out["similar_blend"]["rare"] = {str(w): m for w, m in blend.rare.items()}
        out["similar_blend"]["frequent"] = {str(w): m for w, m in blend.frequent.items()}
    if args.out is not None:
        args.out.write_text(json.dumps(out, indent=2))
        print(f"report: {args.out}")
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    import sys

    from streamrec.errors import ArtifactError
    from streamrec.model.errors import DataError
    from streamrec.model.recommend import recommend_file

    # Like train's --csv: a missing input is bad data (exit 4), not a bad flag.
    if not args.model.is_dir():
        raise ArtifactError(f"--model {args.model}: no such model directory")
    if not args.history.is_file():
        raise DataError(f"--history {args.history}: no such file")
    settings = load_settings()
    stats = recommend_file(
        args.model, args.history, args.out, args.n or settings.top_n, settings.history_max
    )
    print(
        f"{stats.users} lists ({stats.cold} from popularity, {stats.unknown} history entries "
        f"unknown to the model) -> {args.out or 'stdout'}",
        file=sys.stderr if args.out is None else sys.stdout,
    )
    return 0


def _publish(model: Model, settings: Settings) -> None:
    from streamrec.connect import redis_client
    from streamrec.model.publish import publish

    client = redis_client(settings)
    with Progress(f"publishing {model.version}", None, "values") as shown:
        publish(model, settings, client, progress=shown)
    print(f"published: {settings.redis_prefix}:model -> {model.version}")


def cmd_worker(args: argparse.Namespace) -> int:
    import redis
    from threadpoolctl import threadpool_limits

    from streamrec.app.signals import install_stop_handlers
    from streamrec.worker.loop import Worker

    settings = load_settings(model_path=args.model)
    if args.model is not None and not args.model.is_dir():  # as every command's missing input
        from streamrec.errors import ArtifactError

        raise ArtifactError(f"--model {args.model}: no such model directory")
    stop = threading.Event()
    install_stop_handlers(stop)
    # Measured (bench/e2e.py): a second OpenBLAS thread spins at 70-85% of a core on the
    # worker's small products without making it faster; scale out with workers instead.
    try:
        with threadpool_limits(1, "blas"):
            Worker(settings, stop).run(max_messages=args.max_events, duration_s=args.duration)
    except redis.AuthenticationError as exc:  # the password changed under a running worker
        from streamrec.errors import AuthError

        raise AuthError(
            f"Redis at {settings.redis_address} refused the credentials ({exc}); check "
            "STREAMREC_REDIS_PASSWORD or the user and password in STREAMREC_REDIS_URL"
        ) from None
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from streamrec.app.web.server import run

    given = {"serve_bind": args.bind, "serve_workers": args.workers, "model_path": args.model}
    flags = {k: v for k, v in given.items() if v is not None}
    # uvicorn's worker processes read the settings again: they get the flags as variables.
    for name, value in flags.items():
        os.environ[f"STREAMREC_{name.upper()}"] = str(value)
    return run(load_settings(**flags))


def cmd_produce(args: argparse.Namespace) -> int:
    from streamrec.events import new_event
    from streamrec.producer.eventcsv import events, read
    from streamrec.producer.producer import EventProducer

    settings = load_settings()
    if args.user is not None and not args.item:
        raise ConfigError("--user needs --item")
    rows = read(args.csv, args.limit) if args.csv is not None else None  # before connecting
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
        elif rows is not None:
            for event in events(rows):  # file order, first N rows
                producer.send(event)
    print(f"delivered {producer.delivered} event(s) to {producer.topic}")
    return 0


def cmd_catalog(args: argparse.Namespace) -> int:
    from streamrec.connect import ensure_topics
    from streamrec.producer.catalog import CatalogProducer, Columns, read_catalog_csv

    settings = load_settings()
    items = []
    if args.action == "load":  # the whole file is checked before anything connects
        feats = args.features
        columns = Columns(
            id=args.id_col,
            name=args.name_col,
            categories=args.categories_col,
            year=args.year_col,
            available=args.available_col,
            features=tuple(f.strip() for f in feats.split(",") if f.strip()) if feats else None,
        )
        items = read_catalog_csv(args.path, columns)
    ensure_topics(settings)
    producer = CatalogProducer(settings, fmt=getattr(args, "format", "avro"))
    try:
        if args.action == "load":
            for item in items:
                producer.send(item)
        else:
            for item_id in args.ids:
                producer.remove(item_id)
        producer.flush()
    finally:
        print(f"done: {producer.report()} -> {producer.topic}")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from streamrec.app.signals import install_stop_handlers
    from streamrec.connect import ensure_topics
    from streamrec.producer.producer import EventProducer
    from streamrec.producer.replay import read_rows, replay

    if args.evaluate:
        return cmd_replay_evaluate(args)
    settings = load_settings()
    rows = read_rows(args.path, args.limit)  # bad file: fail before connecting
    span = ""
    if rows.timestamps is not None:
        secs = (rows.timestamps[-1] - rows.timestamps[0]) / 1000
        amount = (
            f"{secs:,.0f} s"
            if secs < 600
            else f"{secs / 3600:,.1f} hours"
            if secs < 2 * 86_400
            else f"{secs / 86_400:,.1f} days"
        )
        span = f" spanning {amount} of event time"
    pace = "no sleeping" if args.speed is None else f"{args.speed:g}x real time"
    print(f"replaying {len(rows)} {rows.kind} events{span} from {args.path} ({pace})")
    ensure_topics(settings)
    stop = threading.Event()
    install_stop_handlers(stop)
    with (
        EventProducer(settings, fmt=args.format) as producer,
        Progress("replaying", len(rows), "events") as shown,
    ):
        report = replay(
            producer,
            rows,
            args.speed,
            max_gap_s=args.max_gap,
            progress_every=args.progress,
            stop=stop,
            # On a terminal the bar says it; elsewhere the periodic lines do, as before.
            echo=_quiet if shown.drawing else print,
            progress=shown if shown.drawing else None,
        )
    return _report(report, producer.topic, interrupted=stop.is_set())


def cmd_replay_evaluate(args: argparse.Namespace) -> int:
    """``replay PATH --evaluate --report DIR`` (``streamrec.app.replay_eval``)."""
    from streamrec.app.replay_eval import EvalConfig, run_evaluation
    from streamrec.app.signals import install_stop_handlers

    if args.report is None:
        raise ConfigError("replay --evaluate needs --report DIR")
    if args.speed is not None or args.max_gap is not None:
        raise ConfigError("replay --evaluate paces itself: drop --speed and --max-gap")
    settings = load_settings()
    stop = threading.Event()
    install_stop_handlers(stop)
    cfg = EvalConfig(
        path=args.path,
        report_dir=args.report,
        retrain_every_ms=args.retrain_every,
        params=_params(args),
        limit=args.limit,
        test_limit=args.test_limit,
        n_boot=args.bootstrap,
        seed=args.seed,
        fmt=args.format,
        tolerance=args.tolerance,
        min_lift=args.min_lift,
    )
    report = run_evaluation(settings, cfg, stop=stop)
    pol, lift, fresh = report["policies"], report["lift"], report["freshness_ms"]
    for name, b in pol.items():
        print(f"{name:<11} HR@10 {b['hr10']:.4f}  HR@50 {b['hr50']:.4f}  NDCG@10 {b['ndcg10']:.4f}")
    ls = lift.get("live_over_static", {}).get("hr10", {})
    if ls:
        ci = ls.get("ci") or [float("nan")] * 2
        print(f"live / static HR@10: {ls['value']:.3f}x (95% CI {ci[0]:.3f}-{ci[1]:.3f})")
    print(f"freshness p50 {fresh['p50']:.1f} ms, p99 {fresh['p99']:.1f} ms; "
          f"{report['pacing']['events_per_s']} events/s replayed")  # fmt: skip
    print(f"report: {args.report / 'report.html'}")
    return Exit.INTERRUPTED if stop.is_set() else Exit.OK


def cmd_loadgen(args: argparse.Namespace) -> int:
    from streamrec.app.signals import install_stop_handlers
    from streamrec.connect import ensure_topics
    from streamrec.producer.loadgen import LoadSpec, generated_items, run_load
    from streamrec.producer.producer import EventProducer

    settings = load_settings()
    spec = LoadSpec(
        rate=args.rate,
        users=args.users,
        items=args.items,
        duration_s=args.duration,
        max_events=args.max_events,
        burst=args.burst,
        sessions=args.sessions,
        zipf_users=args.zipf_users,
        zipf_items=args.zipf,
        user_prefix=args.user_prefix,
        seed=args.seed,
    )
    ensure_topics(settings)
    items, catalog = _loadgen_items(settings, args.catalog, args.items)
    if items is None:
        items, catalog = generated_items(args.items), "generated ids item-NNNNNN"
    bound = " until Ctrl-C" if args.duration is None and args.max_events is None else ""
    print(
        f"loadgen: {args.rate:g} events/s, {args.users} users, {len(items)} items "
        f"({catalog}), Zipf {args.zipf:g}/{args.zipf_users:g}, bursts of ~{args.burst:g}{bound}"
    )
    stop = threading.Event()
    install_stop_handlers(stop)
    with (
        EventProducer(settings, fmt=args.format) as producer,
        Progress("loadgen", None, "events") as shown,
    ):
        report = run_load(
            producer,
            spec,
            items,
            stop=stop,
            echo=_quiet if shown.drawing else print,
            progress=shown if shown.drawing else None,
        )
    return _report(report, producer.topic, interrupted=False)


def _quiet(_line: str) -> None:
    """An ``echo`` that says nothing: a progress bar is drawn instead."""


def _loadgen_items(settings: Settings, catalog: str, n: int) -> tuple[list[str] | None, str]:
    """The live model's items, most popular first (``catalog`` model/auto), or None."""
    if catalog == "generated":
        return None, ""
    import numpy as np

    from streamrec.artifact import load_model
    from streamrec.connect import redis_client
    from streamrec.errors import InfraError
    from streamrec.keys import Keys, parse_model_pointer

    try:
        raw = redis_client(settings).get(Keys(settings.redis_prefix).model)
    except InfraError:
        if catalog == "model":
            raise
        raw = None
    if raw is None:
        if catalog == "model":
            raise ConfigError(
                f"--catalog model: no model published at {settings.redis_prefix}:model"
            )
        return None, ""
    try:
        path = parse_model_pointer(raw).path
    except ValueError:
        raise ConfigError(f"{settings.redis_prefix}:model is malformed") from None
    model = load_model(path)
    order = np.argsort(-model.item_popularity, kind="stable")[:n]
    return [model.item_ids[i] for i in order], f"model {model.version}, most popular first"


def _report(report: Report, topic: str, interrupted: bool) -> int:
    print(f"done: {report.line()} -> {topic}" + (" (interrupted)" if interrupted else ""))
    if report.failed:
        from streamrec.producer.errors import DeliveryError

        raise DeliveryError(f"{report.failed} of {report.sent} event(s) not delivered")
    return Exit.INTERRUPTED if interrupted else Exit.OK


def cmd_demo(args: argparse.Namespace) -> int:
    from streamrec.app.demo import run_demo

    return run_demo(
        load_settings(),
        args.duration,
        args.rate,
        args.dir,
        port=None if args.no_web else args.port,
        open_browser=not args.no_browser,
        names_path=args.names,
    )
