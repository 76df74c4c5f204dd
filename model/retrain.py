"""The nightly retrain: read, evaluate, gate, write, publish, prune, report.

1. **Read** the events topic over a time window (the source of truth) up to a snapshot of its
   end offsets, plus optional dataset rows; the same feedback score as the worker.
2. **Evaluate** on a per-user holdout: the candidate ALS (default or tuned parameters, tuned
   on a validation split carved from training data), popularity, and the live model.
3. **Gate**: promote only if the candidate is at least as good as the live model (within
   ``tolerance``) and clearly better than popularity (``min_lift``); else keep the live model
   and exit ``EXIT_KEPT``.
4. **Write** the final model, fitted on all the data (a few sweeps started from the evaluated
   candidate's factors, ``final_iterations``), as a new versioned directory whose
   manifest records the data window, the Kafka snapshot offsets, parameters and metrics.
5. **Publish** without a gap (``model/publish.py``): every known user's list, popular and
   similar items under the new version, then the pointer and the announcement; workers
   re-fold users whose events came after the snapshot.
6. **Prune** to the last ``keep`` versions (never the live one) and write the report.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import redis

from streamrec.als.ann import build_for, wanted
from streamrec.als.content import HasContent
from streamrec.artifact import Model, load_model
from streamrec.exits import Exit
from streamrec.keys import Keys, read_model_pointer
from streamrec.model.data import Interactions, interactions_from_columns
from streamrec.model.errors import ModelError
from streamrec.model.evaluate import EvalReport, als_fit, evaluate
from streamrec.model.items import fit_for_model, read_catalog, similar_content
from streamrec.model.params import Params
from streamrec.model.publish import Totals, live_histories, publish
from streamrec.model.snapshot import Snapshot, read_window
from streamrec.model.split import split_interactions
from streamrec.model.store import prune, write_version
from streamrec.model.train import fit, warm_start
from streamrec.model.tune import TuneResult, tune
from streamrec.settings import Settings

log = logging.getLogger(__name__)

EXIT_KEPT = Exit.KEPT
METRIC = "ndcg@10"


@dataclass(frozen=True)
class RetrainConfig:
    models_dir: Path
    since_days: float = 30.0
    base: Interactions | None = None  # dataset rows trained on with the events
    base_name: str | None = None
    params: Params = field(default_factory=Params)
    tune_s: float = 0.0
    tolerance: float = 0.02  # the candidate may trail the live model by this fraction
    min_lift: float = 0.10  # ... and must beat popularity by at least this fraction
    keep: int = 5
    report_dir: Path | None = None
    read_kafka: bool = True
    max_eval_users: int | None = 5000
    #: Sweeps of the final fit on all the data, started from the evaluated candidate's
    #: factors (3 land within ~1-3% NDCG of a cold fit, bench/README.md); 0 = a cold fit of
    #: ``params.iterations``.
    final_iterations: int = 3
    seed: int = 0
    #: ``progress(what, unit)``: a context manager giving the progress callback of one long
    #: step (the search, the final fit, the publish); the command draws it
    #: (``streamrec.app.progress``). None: no progress is reported.
    progress: ProgressSteps | None = None
    #: Item content to fit the content->factor map on (item_id -> item, e.g. a catalog CSV's
    #: ``streamrec.producer.catalog.read_catalog_csv``). None: read ``settings.topic_items`` (when
    #: ``read_kafka``); a model with no item content there gets no map.
    catalog: Mapping[str, HasContent] | None = None


#: A callback of one step's progress: ``(done, total)``.
StepProgress = Callable[[float, float], None]
#: ``(what, unit) -> a context manager yielding a StepProgress``.
ProgressSteps = Callable[[str, str], AbstractContextManager[StepProgress]]


def _step(cfg: RetrainConfig, what: str, unit: str) -> AbstractContextManager[StepProgress | None]:
    return cfg.progress(what, unit) if cfg.progress is not None else nullcontext(None)


@dataclass
class RetrainResult:
    promoted: bool
    reason: str
    version: str | None
    live_version: str | None
    evaluation: EvalReport | None
    tuning: TuneResult | None
    timings: dict[str, float]
    counts: dict[str, Any]
    snapshot: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "promoted": self.promoted,
            "reason": self.reason,
            "version": self.version,
            "live_version": self.live_version,
            "evaluation": self.evaluation.to_dict() if self.evaluation else None,
            "tuning": self.tuning.to_dict() if self.tuning else None,
            "timings": self.timings,
            "counts": self.counts,
            "snapshot": self.snapshot,
        }


def concat(a: Interactions | None, b: Interactions | None) -> Interactions:
    """Rows of both (timestamps kept only when both have them)."""
    parts = [x for x in (a, b) if x is not None and len(x)]
    if not parts:
        raise ModelError("no training data: the window holds no events and no dataset was given")
    if len(parts) == 1:
        return parts[0]
    x, y = parts
    ts = (
        np.concatenate([x.timestamps, y.timestamps])
        if x.timestamps is not None and y.timestamps is not None
        else None
    )
    return Interactions(
        np.concatenate([x.users, y.users]),
        np.concatenate([x.items, y.items]),
        np.concatenate([x.weights, y.weights]),
        ts,
    )


def _max_event_ms(data: Interactions) -> int | None:
    ts = data.timestamps
    return int(ts.max()) if ts is not None and len(ts) else None


def live_cut_ms(live: Model) -> int:
    """Epoch ms after which no event can have been in ``live``'s training data: its data's
    newest event (``data.max_event_ms``, written since 2026-12) or, for older models, when it
    was written."""
    data = live.manifest.get("data")
    newest = data.get("max_event_ms") if isinstance(data, dict) else None
    if isinstance(newest, int):
        return newest
    return int(live.manifest["created_at_ms"])


def gate(report: EvalReport, live: bool, tolerance: float, min_lift: float) -> tuple[bool, str]:
    """(promote?, why) from the candidate ("als"), "popularity" and, if any, "live" rows."""
    cand = report.result("als").metrics[METRIC]
    pop = report.result("popularity").metrics[METRIC]
    if cand < pop * (1 + min_lift):
        return False, (
            f"candidate {METRIC} {cand:.4f} is not {min_lift:.0%} above popularity's {pop:.4f}"
        )
    if live:
        cur = report.result("live").metrics[METRIC]
        if cand < cur * (1 - tolerance):
            return False, (
                f"candidate {METRIC} {cand:.4f} is more than {tolerance:.0%} below "
                f"the live model's {cur:.4f}"
            )
        return True, f"candidate {METRIC} {cand:.4f} vs live {cur:.4f}, popularity {pop:.4f}"
    return True, f"candidate {METRIC} {cand:.4f} vs popularity {pop:.4f} (no live model)"


def _run(
    settings: Settings,
    cfg: RetrainConfig,
    client: redis.Redis,
    echo: Callable[[str], None] = print,
) -> RetrainResult:
    timings: dict[str, float] = {}
    started = t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        timings[name] = round(now - t, 3)
        t = now

    keys = Keys(settings.redis_prefix)
    since_ms = int((time.time() - cfg.since_days * 86_400) * 1000)
    snap = Snapshot(settings.topic_events, since_ms, {})
    if cfg.read_kafka:
        since = time.strftime("%Y-%m-%d %H:%M", time.gmtime(since_ms / 1000))
        echo(f"reading {settings.topic_events} since {since} UTC ...")
        snap = read_window(settings, since_ms)
        echo(f"  {snap.decoded} events ({snap.undecodable} undecodable), snapshot {snap.offsets}")
    events = interactions_from_columns(snap.columns, settings.event_weights, settings.half_life_ms)
    data = concat(cfg.base, events)
    catalog = cfg.catalog
    catalog_offsets: dict[int, int] | None = None
    # Items never to recommend: left out of everything published (the workers' purge then
    # finds nothing of them in the lists written here).
    unavailable: set[str] = set()
    if catalog is not None:
        unavailable = {i for i, item in catalog.items() if not getattr(item, "available", True)}
    elif cfg.read_kafka:
        got = read_catalog(settings)
        if got is None:
            echo(f"  no {settings.topic_items} topic: the model gets no content map")
        else:
            catalog, catalog_offsets = got.items, got.offsets
            unavailable = got.unavailable()
            echo(f"  {len(got.items)} catalog items from {settings.topic_items} "
                 f"({got.bad} bad records skipped)")  # fmt: skip
    lap("read")

    pointed = read_model_pointer(client, keys)
    live: Model | None = None
    if pointed is not None:
        try:
            live = load_model(pointed.path)
        except Exception as exc:  # a live model we cannot load is no reason not to retrain
            log.warning(
                "live model %s unreadable (%s); gating against popularity only",
                pointed.version,
                exc,
            )
    echo(f"evaluating on a per-user holdout ({len(data)} rows) ...")
    split = split_interactions(data, seed=cfg.seed)
    lap("split")
    tuning = None
    params = cfg.params
    if cfg.tune_s > 0:
        echo(f"  tuning for up to {cfg.tune_s:g} s on a validation split of the training data ...")
        with _step(cfg, "tuning", "s") as shown:
            tuning = tune(split, cfg.tune_s, seed=cfg.seed, base=cfg.params, progress=shown)
        params = tuning.best
        echo(f"  best: {asdict(params)}")
    if tuning is not None:
        lap("tune")
    candidate, candidate_users = als_fit(split, params)
    lap("evaluate_fit")
    # The live model was trained on most of this window, the holdout included: scored on it,
    # it is scored on answers it learned (ndcg@10 0.42 against a candidate's 0.10 on
    # MovieLens, and the gate kept it 45 times in 46). Every row is scored on the test pairs
    # newer than the live model's data instead, which no model here has seen; with none, the
    # live model cannot be compared honestly and the candidate is gated on popularity alone.
    scored, compare = split, live
    if live is not None and split.test.times is not None:
        scored = split.test_after(live_cut_ms(live))
        echo(f"  scored on the {len(scored.test)} of {len(split.test)} held-out pairs newer "
             f"than the live model's data")  # fmt: skip
        if not np.any(scored.test.totals > 0):
            scored, compare = split, None
            echo("  none is a positive interaction: gated against popularity alone")
    report = evaluate(
        scored,
        models=("popularity", "als"),
        params=params,
        model_dir=compare.path if compare else None,
        max_users=cfg.max_eval_users,
        seed=cfg.seed,
        als=candidate,
    )
    echo(report.table())
    promote, reason = gate(report, compare is not None, cfg.tolerance, cfg.min_lift)
    if live is not None and compare is None:
        reason = reason.replace(" (no live model)", "") + (
            "; the live model not compared: no held-out interaction is newer than its data"
        )
    lap("evaluate")
    snapshot = {
        "topic": snap.topic,
        "since_ms": snap.since_ms,
        "offsets": {str(p): o for p, o in snap.offsets.items()},
    }
    result = RetrainResult(
        promote,
        reason,
        None,
        live.version if live else None,
        report,
        tuning,
        timings,
        {"rows": len(data), "events": snap.decoded},
        snapshot,
    )
    if not promote:
        echo(f"kept the live model: {reason}")
        _report(cfg, result, None)
        return result

    matrix = split.all_matrix(params.transform)  # = build_matrix(data), from the pairs
    init, how = None, ""
    if cfg.final_iterations > 0:
        init = warm_start(matrix, params.factors, split.user_ids, candidate_users,
                          candidate.item_ids, candidate.item_factors, cfg.seed)  # fmt: skip
        how = f": {cfg.final_iterations} sweeps from the evaluated candidate"
    echo(f"fitting the final model on all the data{how} ...")
    with _step(cfg, "fitting the final model", "sweeps") as shown:
        als = fit(matrix, params, False, init, cfg.final_iterations or None, progress=shown)
    lap("fit")
    factors = np.asarray(als.item_factors, dtype=np.float32)
    index = None
    if wanted(len(matrix.item_ids), settings):
        echo(f"building the approximate top-N index of {len(matrix.item_ids)} items ...")
        index = build_for(factors, settings)
        lap("index")
    popularity = np.asarray(matrix.confidence.maximum(0).sum(axis=0), dtype=np.float32).ravel()
    content = None
    if catalog:
        content = fit_for_model(matrix.item_ids, factors, catalog,
                                settings.content_regularization,
                                settings.content_min_category_count)  # fmt: skip
        if catalog_offsets is not None:
            content.info["topic"] = settings.topic_items
            content.info["offsets"] = {str(p): o for p, o in catalog_offsets.items()}
        if content.cmap is not None:
            echo(f"content map: {content.info['items']} items with content, "
                 f"{content.info['features']} features, {content.info['categories']} "
                 f"categories")  # fmt: skip
        lap("content")
    model = write_version(
        cfg.models_dir,
        matrix.item_ids,
        factors,
        popularity,
        asdict(params),
        extra={
            "n_users": len(matrix.user_ids),
            "n_entries": int(matrix.confidence.nnz),
            "data": {
                "since_ms": since_ms,
                "base": cfg.base_name,
                "rows": len(data),
                "events": snap.decoded,
                # the newest event trained on: the next job's gate scores on what came after
                "max_event_ms": _max_event_ms(data),
            },
            "kafka_snapshot": snapshot if cfg.read_kafka else None,
            "metrics": {r.name: r.metrics for r in report.results if not r.skipped},
            "final_fit": {
                "warm_start": cfg.final_iterations > 0,
                "iterations": cfg.final_iterations or params.iterations,
            },
            **({"content_fit": content.info} if content is not None else {}),
        },
        index=index,
        content=content.cmap if content is not None else None,
    )
    lap("write")
    echo(f"publishing {model.version}: lists for every known user, popular, similar items ...")
    # Every user's list: from the worker's live history where it has one, else the data's.
    live_hist = live_histories(client, keys, list(split.user_ids), settings.half_life_ms)
    totals = Totals(split.user_ids, split.item_ids, split.all_totals())
    blend = None
    if content is not None and content.cmap is not None and catalog:
        # Users with a positive total per item, in the model's item order (= the matrix's).
        users_per_item = np.asarray((matrix.confidence > 0).sum(axis=0)).ravel()
        blend = similar_content(matrix.item_ids, content.cmap, catalog, users_per_item, settings)
    with _step(cfg, f"publishing {model.version}", "values") as shown:
        counts = publish(
            model,
            settings,
            client,
            histories=live_hist,
            totals=totals,
            progress=shown,
            content=blend,
            unavailable=unavailable,
        )
    lap("publish")
    pruned = prune(cfg.models_dir, cfg.keep, protect=[model.path])
    result = replace(
        result,
        version=model.version,
        reason=reason,
        counts={**result.counts, **counts, "pruned": len(pruned)},
    )
    timings["total"] = round(time.perf_counter() - started, 3)
    echo(f"promoted {model.version} ({reason})")
    _report(cfg, result, model)
    return result


def _report(cfg: RetrainConfig, result: RetrainResult, model: Model | None) -> None:
    if cfg.report_dir is None:
        return
    from streamrec.model.report import write_report

    cfg.report_dir.mkdir(parents=True, exist_ok=True)
    (cfg.report_dir / "report.json").write_text(json.dumps(result.to_dict(), indent=2, default=str))
    write_report(cfg.report_dir / "report.html", result, model)


def retrain(
    settings: Settings,
    cfg: RetrainConfig,
    client: redis.Redis,
    echo: Callable[[str], None] = print,
) -> RetrainResult:
    """The nightly job (the module's steps 1-6); how it ended, promoted, kept or failed, is
    recorded in ``<p>:retrain:last`` (``record_outcome``) before it returns or raises."""
    keys = Keys(settings.redis_prefix)
    started_ms = int(time.time() * 1000)
    try:
        result = _run(settings, cfg, client, echo)
    except BaseException as exc:
        record_outcome(client, keys, "failed", started_ms, reason=f"{type(exc).__name__}: {exc}")
        raise
    record_outcome(client, keys, "promoted" if result.promoted else "kept", started_ms, result)
    return result


OUTCOMES = ("promoted", "kept", "failed")
_CREDENTIALS = re.compile(r"(://)[^@/\s]*@")


def record_outcome(
    client: redis.Redis,
    keys: Keys,
    outcome: str,
    started_ms: int,
    result: RetrainResult | None = None,
    reason: str = "",
) -> dict[str, Any] | None:
    """Write ``<p>:retrain:last`` (layout in ``streamrec/keys.py``) and return it; None when
    Redis refused it (logged: a record that cannot be written must not hide the run's own
    outcome or error, and a failed run whose Redis is down shows as a stale
    ``streamrec_retrain_last_completed_timestamp_seconds``)."""
    assert outcome in OUTCOMES, outcome
    now_ms = int(time.time() * 1000)
    try:
        previous = json.loads(client.get(keys.retrain_last) or b"{}")
        completed = previous.get("last_completed_at_ms") if isinstance(previous, dict) else None
        evaluation = result.evaluation if result is not None else None
        record = {
            "outcome": outcome,
            "version": result.version if result is not None else None,
            "live_version": result.live_version if result is not None else None,
            # An error line may quote a URL: never store its credentials.
            "reason": _CREDENTIALS.sub(r"\1***@", result.reason if result else reason)[:500],
            "started_at_ms": started_ms,
            "finished_at_ms": now_ms,
            "duration_s": round((now_ms - started_ms) / 1000, 3),
            "last_completed_at_ms": now_ms if outcome != "failed" else completed,
            "metrics": {r.name: r.metrics for r in evaluation.results if not r.skipped}
            if evaluation is not None
            else None,
            "timings": result.timings if result is not None else None,
        }
        client.set(keys.retrain_last, json.dumps(record, separators=(",", ":")))
    except (redis.RedisError, ValueError) as exc:
        log.warning("could not record the retrain's outcome (%s) in %s: %s", outcome,
                    keys.retrain_last, exc)  # fmt: skip
        return None
    return record
