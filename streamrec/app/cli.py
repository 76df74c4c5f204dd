"""The ``streamrec`` command: its argument parser (one function per subcommand) and ``main``.

Bad arguments or settings print one line (``streamrec: error: ...``) and exit 2; a service
that is down prints one line and exits 3; an interrupted command exits 130: every status is
in ``streamrec.exits``. ``commands`` runs what was parsed.

The ALS defaults and the dataset names in the help come from ``streamrec.model.params`` and
``streamrec.model.datasets``: small modules without numeric imports, so building the parser
loads neither scipy nor implicit (``streamrec --help`` stays instant; a worker process never
imports implicit).

Imports the floor (``errors``, ``events``, ``feedback``, ``exits``) and those two modules at
import time, and ``commands`` (and through it everything else) only in ``main``.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from streamrec import __version__
from streamrec.errors import StreamrecError
from streamrec.events import EVENT_TYPES
from streamrec.exits import Exit, status_of
from streamrec.feedback import TRANSFORMS
from streamrec.model import datasets, params
from streamrec.model.params import Params


class _Parser(argparse.ArgumentParser):
    """One-line errors with exit 2; an unknown flag is named first, by the subcommand it was
    given to, with the closest known one (argparse would first complain about a missing
    required flag, or name the unknown one only from the top-level parser)."""

    def error(self, message: str) -> NoReturn:
        self.exit(Exit.USAGE, f"{self.prog}: error: {message} (see --help)\n")

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if args is not None and not self._subparsers:
            unknown = self._unknown_flags(args)
            if unknown:
                self.error(f"unrecognized arguments: {' '.join(unknown)}{self._hint(unknown[0])}")
        return super().parse_known_args(args, namespace)

    def _flags(self) -> list[str]:
        return [f for a in self._actions for f in a.option_strings]

    def _unknown_flags(self, args: Sequence[str]) -> list[str]:
        """Tokens of ``args`` that look like flags this parser has no flag for (exact, or an
        unambiguous prefix as argparse allows; ``--flag=value`` too); after ``--`` none."""
        flags, unknown = self._flags(), []
        for token in args:
            if token == "--":
                break
            if not token.startswith("-") or token == "-" or _NUMBER.match(token):
                continue
            name = token.partition("=")[0] if token.startswith("--") else token[:2]
            if name in flags or (name.startswith("--") and any(f.startswith(name) for f in flags)):
                continue
            unknown.append(token)
        return unknown

    def _hint(self, token: str) -> str:
        close = difflib.get_close_matches(token.partition("=")[0], self._flags(), n=1, cutoff=0.7)
        return f"; did you mean {close[0]}?" if close else ""


_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")  # a negative number is a value, never a flag


#: A function that adds one subcommand's arguments to its parser.
_Arguments = Callable[[_Parser], None]


@dataclass(frozen=True)
class _Command:
    name: str
    summary: str  # the line in ``streamrec --help``
    description: str  # the top of ``streamrec NAME --help``
    arguments: _Arguments


_COMMANDS: list[_Command] = []


def _command(name: str, summary: str, description: str) -> Callable[[_Arguments], _Arguments]:
    """Register the decorated function as the one that adds subcommand ``name``'s arguments
    (``streamrec --help`` lists the subcommands in the order they are registered)."""

    def register(arguments: _Arguments) -> _Arguments:
        _COMMANDS.append(_Command(name, summary, description, arguments))
        return arguments

    return register


def _int_at_least(low: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= ``low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse


_nonneg_int = _int_at_least(0)
_positive_int = _int_at_least(1)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _nonneg_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _speed(text: str) -> float | None:
    """``60x`` / ``60`` -> 60.0; ``max`` -> None (no sleeping between events)."""
    t = text.strip().lower()
    if t == "max":
        return None
    try:
        value = float(t.removesuffix("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a speed: {text!r} (e.g. 60x, 1x or max)") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _hhmm(text: str) -> tuple[int, int]:
    hh, _, mm = text.partition(":")
    if not (hh.isdigit() and mm.isdigit() and int(hh) < 24 and int(mm) < 60):
        raise argparse.ArgumentTypeError(f"expected HH:MM (UTC), got {text!r}")
    return int(hh), int(mm)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0..65535, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used by tests to check deploy files' commands)."""
    p = _Parser(prog="streamrec", description="Real-time recommendations: Kafka -> ALS -> Redis.")
    p.add_argument("--version", action="version", version=f"streamrec {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    for c in _COMMANDS:
        c.arguments(sub.add_parser(c.name, help=c.summary, description=c.description))
    return p


def _source_arguments(p: _Parser, *, required: bool, csv: str, dataset: str) -> None:
    """``--csv`` or ``--dataset``, then ``--data-dir``: the rows train, evaluate and retrain
    read (``commands._load_source``); the dataset names are ``streamrec.model.data``'s."""
    src = p.add_mutually_exclusive_group(required=required)
    src.add_argument("--csv", type=Path, metavar="PATH", help=csv)
    src.add_argument("--dataset", choices=datasets.DATASETS, help=dataset)
    p.add_argument("--data-dir", type=Path, metavar="DIR", help="folder of --dataset files")


def _als_arguments(p: _Parser, d: Params, *, alpha: str) -> None:
    """``--factors``, ``--regularization``, ``--alpha``, ``--iterations``, defaulting to ``d``'s
    (``commands._params`` turns them back into ``Params``)."""
    p.add_argument(
        "--factors", type=_positive_int, default=d.factors, help=f"latent factors ({d.factors})"
    )
    p.add_argument(
        "--regularization",
        type=_nonneg_float,
        default=d.regularization,
        help=f"λ ({d.regularization:g})",
    )
    p.add_argument("--alpha", type=_positive_float, default=d.alpha, help=alpha)
    p.add_argument(
        "--iterations",
        type=_positive_int,
        default=d.iterations,
        help=f"ALS sweeps ({d.iterations})",
    )


@_command(
    "infra",
    "run the local Kafka broker and Redis server",
    "Start, inspect or stop the local Apache Kafka broker (KRaft, 127.0.0.1) and Redis server.",
)
def _infra(p: _Parser) -> None:
    p.add_argument("action", choices=("up", "status", "down"))
    p.add_argument(
        "--redis-cluster",
        action="store_true",
        help="a local Redis Cluster of 6 nodes (3 masters, 3 replicas) on the ports from "
        "STREAMREC_REDIS_URL's on, instead of one server (as STREAMREC_REDIS_CLUSTER=true)",
    )
    p.add_argument(
        "--brokers",
        type=_positive_int,
        metavar="N",
        help="up: run a cluster of N KRaft nodes on loopback (STREAMREC_KAFKA_BROKERS, 1); "
        "status and down find a cluster by themselves",
    )


@_command(
    "topics",
    "create or check the Kafka topics",
    "create: make the missing topics (events, dead letters, models) with "
    "STREAMREC_TOPIC_REPLICATION_FACTOR copies (default 3 on 3+ brokers, else 1) and "
    "min.insync.replicas 2 from 3 copies up; existing ones are left as they are. The one "
    "command that creates topics when STREAMREC_CREATE_TOPICS is false. check: what the "
    "worker checks at start (all exist, the events topic fully replicated); exit 6 if not.",
)
def _topics(p: _Parser) -> None:
    p.add_argument("action", choices=("create", "check"))


@_command(
    "train",
    "fit ALS and write a model directory",
    "Fit implicit ALS on a dataset and write a verified "
    "model directory (float32 .npy, JSON manifest with sha256).",
)
def _train(p: _Parser) -> None:
    d = params.Params()
    _source_arguments(
        p,
        required=True,
        csv="CSV with header user_id,item_id[,weight][,timestamp]",
        dataset="synthetic: generated, needs nothing; lastfm-2k: HetRec "
        "user_artists.dat[.gz]; ml-latest-small, ml-100k, ml-1m: MovieLens ratings "
        "(from --data-dir)",
    )
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="model directory")
    _als_arguments(p, d, alpha=f"confidence scale ({d.alpha:g})")
    p.add_argument(
        "--transform",
        choices=TRANSFORMS,
        default=d.transform,
        help="weight -> confidence: log1p (default) or linear",
    )
    p.add_argument("--seed", type=int, default=d.seed, help=f"random seed ({d.seed})")
    p.add_argument(
        "--tune",
        type=_positive_float,
        metavar="SECONDS",
        help="search factors, regularization, alpha, iterations and transform for about "
        "this long on a validation split of the data (the flags above are the first "
        "trial), then fit on all of it with the best",
    )
    p.add_argument(
        "--publish",
        action="store_true",
        help="point Redis' <prefix>:model at the new model (workers hot-swap) "
        "and write <prefix>:popular",
    )
    p.add_argument(
        "--items",
        type=Path,
        metavar="CSV",
        help="catalog CSV (an id column, name/title, categories/genres, year, numeric columns "
        "as features): fit the content->factor map on the model's items it describes and "
        "store it with the model",
    )
    p.add_argument(
        "--if-absent",
        action="store_true",
        help="do nothing (exit 0) when <prefix>:model already names a model directory that "
        "exists: a first-model step run on every start (compose, a Kubernetes Job) never "
        "replaces a promoted model",
    )


@_command(
    "evaluate",
    "compare ALS with baselines on a held-out split",
    "Hold out each user's latest 20% of items (random 20% without "
    "timestamps), then report precision, recall, NDCG, MAP and coverage at K and 2K "
    "for popularity, item-kNN, EASE and ALS (lists from the worker's fold-in), "
    "optionally a tuned ALS and an existing model directory.",
)
def _evaluate(p: _Parser) -> None:
    _source_arguments(
        p,
        required=True,
        csv="user_id,item_id[,weight][,timestamp] CSV",
        dataset="a named dataset (see train)",
    )
    p.add_argument(
        "--model", type=Path, metavar="DIR", help="also evaluate this model directory ('live')"
    )
    p.add_argument("--k", type=_positive_int, default=10, help="list length K (10)")
    p.add_argument(
        "--tune",
        type=_positive_float,
        metavar="SECONDS",
        help="also tune ALS for about this long (and EASE's λ) on a validation split "
        "carved from the training part; adds an als-tuned row",
    )
    p.add_argument(
        "--ease-max-items",
        type=_positive_int,
        default=20_000,
        metavar="N",
        help="skip EASE above this many items (20000)",
    )
    p.add_argument("--seed", type=int, default=0, help="split and search seed (0)")
    p.add_argument("--out", type=Path, metavar="FILE", help="also write the report as JSON")


@_command(
    "evaluate-cold",
    "measure new items' factors mapped from their content",
    "Hold whole items out of training (a fraction of those with content), train ALS on the "
    "rest, fit the content->factor map on the kept items, map the held-out ones, and report "
    "recall and NDCG at 10 and 50 of ranking them for each user with the mapped factors, "
    "random factors, popularity predicted from content and (not available at serve time) "
    "their true popularity; mean and spread over several seeds.",
)
def _evaluate_cold(p: _Parser) -> None:
    d = params.Params()
    p.add_argument(
        "dataset",
        choices=("ml-latest-small", "lastfm-2k", "synthetic", "planted", "spotify-top-hits"),
        help="ml-latest-small: genres and year; lastfm-2k: user tags (from every other "
        "user); synthetic: the generated genres; planted: a small generated set with a "
        "planted content->factor relation; spotify-top-hits (no users: only its content "
        "neighbours' genre agreement)",
    )
    p.add_argument("--data-dir", type=Path, metavar="DIR", help="folder of the dataset files")
    p.add_argument(
        "--holdout", type=_positive_float, default=0.2, help="fraction of items held out (0.2)"
    )
    p.add_argument("--seeds", type=_positive_int, default=3, help="seeds 0..N-1 (3)")
    p.add_argument(
        "--content-regularization",
        type=_nonneg_float,
        metavar="λ",
        help="ridge λ of the map (default: STREAMREC_CONTENT_REGULARIZATION)",
    )
    _als_arguments(p, d, alpha=f"confidence scale ({d.alpha:g})")
    p.add_argument(
        "--similar",
        action="store_true",
        help="also measure similar items by blend weight (content cosine share, 0 to 1) for "
        "items with fewer than STREAMREC_CONTENT_SIMILAR_MIN_INTERACTIONS training users, "
        "against the items their held-out users also played",
    )
    p.add_argument("--out", type=Path, metavar="FILE", help="also write the report as JSON")
    p.set_defaults(seed=0)  # the seeds are --seeds


@_command(
    "recommend",
    "offline lists for every user of a history file",
    "For every user in a history file, fold the user's item totals in "
    "against a model and write their top-N list as one JSON line "
    '{"user_id", "items": [{"item_id", "score"}]}, exactly as the worker computes it.',
)
def _recommend(p: _Parser) -> None:
    p.add_argument("--model", type=Path, required=True, metavar="DIR", help="model dir")
    p.add_argument(
        "--history",
        type=Path,
        required=True,
        metavar="PATH",
        help="CSV user_id,item_id[,weight][,timestamp], or a MovieLens/HetRec/Parquet file",
    )
    p.add_argument(
        "--n", type=_positive_int, metavar="N", help="items per list (default: STREAMREC_TOP_N)"
    )
    p.add_argument("--out", type=Path, metavar="FILE", help="JSON lines file (default: stdout)")


@_command(
    "retrain",
    "the nightly job: retrain, evaluate, gate, publish",
    "Read the events topic over a time window (plus optional dataset rows), "
    "evaluate a candidate against the live model and popularity on a per-user holdout, and "
    "promote it only if it passes the gate: write a versioned model, publish every known "
    "user's list, popular and similar items, move the pointer, announce, keep the last K. "
    f"Exits {int(Exit.KEPT)} when the live model is kept.",
)
def _retrain(p: _Parser) -> None:
    d = params.Params()
    _source_arguments(
        p,
        required=False,
        csv="dataset rows to train on too",
        dataset="a named dataset to train on too",
    )
    p.add_argument(
        "--since-days",
        type=_positive_float,
        default=30.0,
        metavar="DAYS",
        help="window of events read from Kafka (30)",
    )
    p.add_argument("--no-kafka", action="store_true", help="train on the dataset only")
    p.add_argument(
        "--models-dir",
        type=Path,
        metavar="DIR",
        help="root of the versioned model directories (default: <home>/models)",
    )
    p.add_argument("--keep", type=_positive_int, default=5, help="versions kept (5)")
    p.add_argument(
        "--tune", type=_positive_float, metavar="SECONDS", help="search parameters first"
    )
    p.add_argument(
        "--tolerance",
        type=_nonneg_float,
        default=0.02,
        help="how far (fraction) the candidate may trail the live model's NDCG@10 (0.02)",
    )
    p.add_argument(
        "--min-lift",
        type=_nonneg_float,
        default=0.10,
        help="how far (fraction) the candidate must beat popularity's NDCG@10 (0.10)",
    )
    p.add_argument("--report", type=Path, metavar="DIR", help="write report.json + .html")
    _als_arguments(p, d, alpha="confidence scale")
    p.add_argument(
        "--final-iterations",
        type=_nonneg_int,
        default=3,
        help="sweeps of the final fit on all the data, started from the evaluated candidate "
        "(3); 0 = a cold fit of --iterations",
    )
    p.add_argument(
        "--seed", type=int, default=d.seed, help=f"split, search and fit seed ({d.seed})"
    )
    p.add_argument(
        "--items",
        type=Path,
        metavar="CSV",
        help="fit the content->factor map on this catalog CSV instead of the items topic "
        "(STREAMREC_TOPIC_ITEMS)",
    )
    p.add_argument(
        "--at",
        type=_hhmm,
        metavar="HH:MM",
        help="stay up and run every day at this UTC time (for a scheduler-less container); "
        "without it, run once and exit",
    )


@_command(
    "model",
    "list the stored model versions, or roll back to one",
    "The model store (--models-dir, default <home>/models, where retrain writes): 'list' "
    "shows every version with its size and holdout metrics and marks the live one; "
    "'rollback VERSION' makes a stored version live as a new model goes live: verified, "
    "every user's list rewritten from their live history, popular and similar items, the "
    "pointer moved and the version announced, so workers swap to it.",
)
def _model(p: _Parser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=_Parser)

    def models_dir(q: argparse.ArgumentParser) -> None:
        q.add_argument(
            "--models-dir",
            type=Path,
            metavar="DIR",
            help="root of the versioned model directories (default: <home>/models)",
        )

    listing = sub.add_parser("list", help="stored versions, their metrics, the live one (*)")
    models_dir(listing)
    listing.add_argument("--json", action="store_true", help="one JSON object per version")
    back = sub.add_parser("rollback", help="make a stored version live again")
    back.add_argument("version", metavar="VERSION", help="a version from 'model list'")
    models_dir(back)


@_command(
    "worker",
    "consume events and keep lists fresh in Redis",
    "Consume interaction events, fold users in against the "
    "model's item factors, write top-N lists to Redis. Stops on "
    "SIGTERM/SIGINT after finishing the batch.",
)
def _worker(p: _Parser) -> None:
    p.add_argument(
        "--model",
        type=Path,
        metavar="DIR",
        help="model directory (default: the one <prefix>:model names; then the "
        "worker also hot-swaps when the pointer moves)",
    )
    p.add_argument(
        "--duration", type=_positive_float, metavar="SECONDS", help="stop after this long"
    )
    p.add_argument("--max-events", type=_positive_int, metavar="N", help="stop after N messages")


@_command(
    "serve",
    "the serving API for front-ends (HTTP, FastAPI on uvicorn)",
    "Serve lists with filters, similar and popular items and the catalog over HTTP "
    "(README: The serving API); docs at /docs. Stops on SIGTERM/SIGINT.",
)
def _serve(p: _Parser) -> None:
    p.add_argument("--bind", metavar="HOST:PORT", help="listen here (STREAMREC_SERVE_BIND)")
    p.add_argument(
        "--workers",
        type=_positive_int,
        metavar="N",
        help="uvicorn processes (STREAMREC_SERVE_WORKERS)",
    )
    p.add_argument(
        "--model", type=Path, metavar="DIR", help="model directory (default: the pointer's)"
    )


@_command(
    "produce",
    "publish one event, or replay a CSV",
    "Publish an interaction event from flags, or every row "
    "of a CSV (user_id,item_id[,type][,value][,timestamp]).",
)
def _produce(p: _Parser) -> None:
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--user", metavar="USER_ID", help="user id (with --item)")
    what.add_argument("--csv", type=Path, metavar="PATH", help="replay this CSV in file order")
    p.add_argument("--item", metavar="ITEM_ID", help="item id")
    p.add_argument("--type", choices=EVENT_TYPES, default="play", help="event type (play)")
    p.add_argument("--value", type=float, help="play seconds, rating or dwell")
    p.add_argument("--timestamp", type=int, metavar="MS", help="epoch ms (default: now)")
    p.add_argument("--event-id", help="default: a random id")
    p.add_argument(
        "--format",
        choices=("avro", "json"),
        default="avro",
        help="wire encoding (avro single-object, default)",
    )
    p.add_argument("--limit", type=_positive_int, metavar="N", help="CSV: first N rows")


@_command(
    "catalog",
    "publish the item catalog (contract 3)",
    "Publish item records to the compacted items topic (key = item_id): 'load PATH' sends "
    "every row of a catalog CSV (an id column, name/title, categories split on | or ;, a "
    "year, every other numeric column as a feature; the mapping by flags), checked whole "
    "before anything is sent; 'remove ID...' sends tombstones. Ends with a delivery report.",
)
def _catalog(p: _Parser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=_Parser)
    load = sub.add_parser("load", help="publish every row of a catalog CSV (.gz allowed)")
    load.add_argument("path", type=Path, metavar="PATH", help="the CSV (header row)")
    load.add_argument(
        "--id-col", metavar="COL", help="id column (default: item_id, id, movieId, ...)"
    )
    load.add_argument("--name-col", metavar="COL", help="name column (default: name, title)")
    load.add_argument(
        "--categories-col",
        metavar="COL",
        help="categories column, split on | or ; (default: categories, genres, ...)",
    )
    load.add_argument("--year-col", metavar="COL", help="year column (default: year)")
    load.add_argument(
        "--available-col",
        metavar="COL",
        help="true/false column (default: available; none = every item available)",
    )
    load.add_argument(
        "--features",
        metavar="A,B,C",
        help="feature columns (default: every other all-numeric column)",
    )
    load.add_argument(
        "--format",
        choices=("avro", "json"),
        default="avro",
        help="wire encoding (avro single-object, default)",
    )
    remove = sub.add_parser("remove", help="tombstone items: they leave the catalog and every list")
    remove.add_argument("ids", nargs="+", metavar="ID", help="item ids")


@_command(
    "replay",
    "replay timestamped interactions in time order",
    "Publish every row of a file as an event, in timestamp order, keeping "
    "the original timestamps and sleeping the gaps (scaled by --speed). Files: MovieLens "
    "ratings.csv (userId,movieId,rating,timestamp -> rating events), u.data, ratings.dat or "
    "CSV user_id,item_id[,type][,value][,timestamp]; .gz allowed. --evaluate: the live "
    "evaluation (README: Live evaluation).",
)
def _replay(p: _Parser) -> None:
    p.add_argument("path", type=Path, metavar="PATH", help="the file to replay")
    p.add_argument(
        "--speed",
        type=_speed,
        default=None,
        metavar="FACTOR",
        help="60x = sixty times faster than real time; max = no sleeping (default)",
    )
    p.add_argument(
        "--max-gap",
        type=_nonneg_float,
        metavar="SECONDS",
        help="longest sleep between two events, after --speed (quiet periods pass quickly)",
    )
    p.add_argument("--limit", type=_positive_int, metavar="N", help="the earliest N events only")
    p.add_argument(
        "--progress", type=_positive_int, default=10_000, metavar="N", help="report every N"
    )
    p.add_argument(
        "--format", choices=("avro", "json"), default="avro", help="wire encoding (avro)"
    )
    _evaluate_arguments(p)


def _duration_ms(text: str) -> int:
    """``1d`` / ``12h`` / ``30m`` / ``90s`` (a bare number: days) -> milliseconds, > 0."""
    t = text.strip().lower()
    unit = {"d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1000}.get(t[-1:], 0)
    try:
        value = float(t[:-1] if unit else t) * (unit or 86_400_000)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 1d, 12h, 90d)") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return int(value)


def _evaluate_arguments(p: _Parser) -> None:
    """``replay --evaluate``: the live evaluation (``streamrec.app.replay_eval``)."""
    p.add_argument(
        "--evaluate",
        action="store_true",
        help="prequential evaluation through Kafka, a worker and Redis: train on the first "
        "half, replay the second, score each event against the list read just before it "
        "(README: Live evaluation); needs --report",
    )
    p.add_argument("--report", type=Path, metavar="DIR", help="--evaluate: report.json + .html")
    p.add_argument(
        "--retrain-every",
        type=_duration_ms,
        default=86_400_000,
        metavar="DURATION",
        help="--evaluate: the nightly retrain's period in event time (1d; 12h, 90d, ...)",
    )
    p.add_argument(
        "--test-limit",
        type=_positive_int,
        metavar="N",
        help="--evaluate: replay only the first N events of the second half",
    )
    p.add_argument(
        "--bootstrap",
        type=_nonneg_int,
        default=1000,
        metavar="N",
        help="--evaluate: bootstrap draws (over users) for the intervals (1000)",
    )
    p.add_argument(
        "--tolerance",
        type=_nonneg_float,
        default=0.02,
        help="--evaluate: the retrain gate's, as in 'streamrec retrain' (0.02)",
    )
    p.add_argument(
        "--min-lift",
        type=_nonneg_float,
        default=0.10,
        help="--evaluate: the retrain gate's, as in 'streamrec retrain' (0.10)",
    )
    d = params.Params()
    _als_arguments(p, d, alpha="--evaluate: confidence scale")
    p.add_argument("--seed", type=int, default=d.seed, help=f"--evaluate: seed ({d.seed})")


@_command(
    "loadgen",
    "publish synthetic load: Zipf users and items, session bursts",
    "Publish events at a steady rate: users and items drawn from Zipf "
    "distributions, each user active in short bursts (sessions). Items come from the "
    "live model (most popular first) when one is published, else item-000000...",
)
def _loadgen(p: _Parser) -> None:
    p.add_argument(
        "--rate", type=_positive_float, default=100.0, metavar="EVENTS_PER_S", help="(100)"
    )
    p.add_argument("--users", type=_positive_int, default=10_000, help="users (10000)")
    p.add_argument(
        "--items", type=_positive_int, default=1_000, help="distinct items drawn from (1000)"
    )
    p.add_argument(
        "--duration",
        type=_positive_float,
        metavar="SECONDS",
        help="stop after this long (default: until Ctrl-C or --max-events)",
    )
    p.add_argument("--max-events", type=_positive_int, metavar="N", help="stop after N")
    p.add_argument("--burst", type=_positive_float, default=8.0, help="mean events per session (8)")
    p.add_argument("--sessions", type=_positive_int, default=32, help="users active at once (32)")
    p.add_argument("--zipf", type=_nonneg_float, default=1.1, help="item popularity exponent (1.1)")
    p.add_argument(
        "--zipf-users", type=_nonneg_float, default=1.0, help="user activity exponent (1.0)"
    )
    p.add_argument(
        "--catalog",
        choices=("auto", "model", "generated"),
        default="auto",
        help="item ids: the live model's (model), item-NNNNNN (generated), or model when "
        "one is published (auto)",
    )
    p.add_argument("--user-prefix", default="loadgen-user-", help="user ids are PREFIX + number")
    p.add_argument("--seed", type=int, help="random seed (default: random)")
    p.add_argument(
        "--format", choices=("avro", "json"), default="avro", help="wire encoding (avro)"
    )


@_command(
    "demo",
    "the whole pipeline on this machine, live",
    "Bring up Kafka and Redis, train on a generated dataset, "
    "start the worker, publish events and show lists read back from "
    "Redis, until Ctrl-C or --duration.",
)
def _demo(p: _Parser) -> None:
    p.add_argument(
        "--duration",
        type=_positive_float,
        metavar="SECONDS",
        help="stop after this long (default: run until Ctrl-C)",
    )
    p.add_argument(
        "--rate",
        type=_positive_float,
        default=50.0,
        metavar="EVENTS_PER_S",
        help="events published per second (50)",
    )
    p.add_argument(
        "--dir", type=Path, metavar="DIR", help="where the demo model goes (default: <home>/demo)"
    )
    p.add_argument(
        "--port",
        type=_port,
        default=8000,
        help="the demo page's port on 127.0.0.1 (8000; 0 = any free port)",
    )
    p.add_argument("--no-browser", action="store_true", help="do not open the page in a browser")
    p.add_argument("--no-web", action="store_true", help="console only: no demo page")
    p.add_argument(
        "--names",
        type=Path,
        metavar="PATH",
        help="item display names: JSON {id: name}, or CSV/TSV with id and name/title columns",
    )


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg (+ exc), for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def _configure_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    # Read directly: logging must work before (and when) the settings fail to load.
    if os.environ.get("STREAMREC_LOG_FORMAT", "text").lower() == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging(args.verbose)
    from streamrec.app import commands

    try:
        return int(commands.run(args) or 0)
    except (StreamrecError, KeyboardInterrupt) as exc:
        # One line and the status of streamrec.exits' table, the same for every command.
        status = status_of(exc)
        if status is None:  # not reached: every StreamrecError has a status
            raise
        if status is not Exit.INTERRUPTED:
            error = "error: " if status is Exit.USAGE else ""
            print(f"streamrec: {error}{exc}", file=sys.stderr)
        return status


if __name__ == "__main__":
    sys.exit(main())
