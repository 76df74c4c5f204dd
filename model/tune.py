"""Hyper-parameter search for ALS within a time budget, scored on a validation split carved
from the *training* pairs (``Split.validation``): the test pairs are never looked at.

Search (seeded): trial 0 is the base parameters (``Params()`` unless given); then random
trials drawn from ``SPACE`` (factors, iterations, log-uniform regularization and alpha,
log or linear transform) until ``explore`` of the budget is spent; then local trials around
the best so far (regularization and alpha scaled by ``10**N(0, 0.25)``, a neighbouring
factors/iterations value). A trial is scored like production serves: ALS fitted on the
validation split's train pairs, each validation user's history folded in by the worker's
``Scorer``, NDCG@10 on the held-out pairs.

Budget: a trial starts only if its estimated cost (from the trials so far, scaled by
``iterations * factors**1.5``) fits in what is left, so the search ends within the budget
plus at most one misjudged trial; trial 0 always runs.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from streamrec.als.scorer import HISTORY_MAX
from streamrec.feedback import TRANSFORMS
from streamrec.model.baselines import EASE_LAMBDA, EASE_MAX_ITEMS, ease_lists
from streamrec.model.errors import ModelError
from streamrec.model.evaluate import als_lists
from streamrec.model.metrics import ranking_metrics
from streamrec.model.params import Params
from streamrec.model.split import Split

log = logging.getLogger(__name__)

#: Search space: choices for the discrete parameters, log-uniform (low, high) for the others.
#: Regularization reaches the hundreds: with confidences in the tens, implicit's default 0.01
#: is far too small on MovieLens-like data.
SPACE: dict[str, Any] = {
    "factors": (16, 32, 64, 128),
    "iterations": (5, 10, 15, 20),
    "regularization": (0.01, 1000.0),
    "alpha": (0.3, 100.0),
    "transform": TRANSFORMS,
}
#: Share of the budget spent on random trials before the local ones.
EXPLORE = 0.5
#: Candidates drawn per trial slot before giving up on finding one that fits the budget.
DRAWS = 10
#: Validation users scored per trial at most (a seeded sample beyond that).
MAX_USERS = 5000


@dataclass(frozen=True)
class Trial:
    """One evaluated configuration; ``score`` is ``metrics[metric]`` on the validation split."""

    number: int
    phase: str  # "base", "random" or "local"
    params: Params
    score: float
    metrics: dict[str, float]
    seconds: float

    def row(self) -> dict[str, Any]:
        """A flat dict (params, score, seconds) for tables and JSON."""
        return {
            "trial": self.number,
            "phase": self.phase,
            **asdict(self.params),
            "score": round(self.score, 6),
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class TuneResult:
    """The search's outcome: ``best`` params and every trial, in the order they ran."""

    best: Params
    best_score: float
    metric: str
    trials: tuple[Trial, ...]
    budget_s: float
    elapsed_s: float
    validation: dict[str, Any]
    seed: int

    @property
    def base(self) -> Trial:
        return self.trials[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "best": asdict(self.best),
            "best_score": self.best_score,
            "base_score": self.base.score,
            "metric": self.metric,
            "budget_s": self.budget_s,
            "elapsed_s": round(self.elapsed_s, 3),
            "seed": self.seed,
            "validation": self.validation,
            "trials": [t.row() for t in self.trials],
        }

    def table(self, top: int | None = None) -> str:
        """Trials best first (the ``top`` best only, when given) as fixed-width text."""
        rows = sorted(self.trials, key=lambda t: -t.score)[:top]
        head = (
            f"{'trial':>5} {'phase':<6} {'factors':>7} {'reg':>9} {'alpha':>8} {'iters':>5} "
            f"{'transform':<9} {self.metric:>9} {'seconds':>7}"
        )
        lines = [head]
        for t in rows:
            p = t.params
            lines.append(
                f"{t.number:>5} {t.phase:<6} {p.factors:>7} {p.regularization:>9.3g} "
                f"{p.alpha:>8.3g} {p.iterations:>5} {p.transform:<9} {t.score:>9.4f} "
                f"{t.seconds:>7.1f}"
            )
        return "\n".join(lines)


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(math.exp(rng.uniform(math.log(low), math.log(high))))


def sample_params(rng: np.random.Generator, base: Params, space: dict[str, Any] = SPACE) -> Params:
    """A random configuration from ``space`` (seed and anything not in ``space`` from ``base``)."""
    return replace(
        base,
        factors=int(rng.choice(space["factors"])),
        iterations=int(rng.choice(space["iterations"])),
        regularization=round(_log_uniform(rng, *space["regularization"]), 4),
        alpha=round(_log_uniform(rng, *space["alpha"]), 4),
        transform=str(rng.choice(space["transform"])),  # type: ignore[arg-type]
    )


def _neighbour(rng: np.random.Generator, choices: Sequence[int], value: int) -> int:
    options = sorted(choices)
    if value not in options:
        return value
    i = options.index(value) + int(rng.integers(-1, 2))
    return options[min(max(i, 0), len(options) - 1)]


def perturb_params(rng: np.random.Generator, best: Params, space: dict[str, Any] = SPACE) -> Params:
    """A configuration near ``best``: continuous values scaled by 10**N(0, 0.25) (kept inside
    the space), discrete ones moved to a neighbouring choice or kept, transform kept 90%."""
    lo_r, hi_r = space["regularization"]
    lo_a, hi_a = space["alpha"]
    transform = best.transform
    if rng.random() < 0.1:
        transform = str(rng.choice(space["transform"]))  # type: ignore[assignment]
    return replace(
        best,
        factors=_neighbour(rng, space["factors"], best.factors),
        iterations=_neighbour(rng, space["iterations"], best.iterations),
        regularization=round(
            float(np.clip(best.regularization * 10 ** rng.normal(0, 0.25), lo_r, hi_r)), 4
        ),
        alpha=round(float(np.clip(best.alpha * 10 ** rng.normal(0, 0.25), lo_a, hi_a)), 4),
        transform=transform,
    )


def _units(p: Params) -> float:
    """Relative cost of a trial: ALS sweeps scale with iterations and (about) factors**1.5."""
    return p.iterations * p.factors**1.5


def score_params(
    split: Split,
    params: Params,
    users: np.ndarray,
    metric: str = "ndcg@10",
    history_max: int = HISTORY_MAX,
) -> dict[str, float]:
    """Metrics of ALS with ``params`` fitted on ``split.train``, on ``split``'s held-out pairs
    for ``users`` (the served path: fold-in + top-N by the worker's Scorer)."""
    k = int(metric.split("@")[1])
    recs = als_lists(split, params, users, k, history_max)
    return ranking_metrics(recs, split.relevant()[users], (k,), len(split.item_ids))


def tune(
    split: Split,
    budget_s: float,
    seed: int = 0,
    base: Params | None = None,
    metric: str = "ndcg@10",
    space: dict[str, Any] = SPACE,
    max_trials: int | None = None,
    history_max: int = HISTORY_MAX,
    max_users: int = MAX_USERS,
    explore: float = EXPLORE,
    clock: Callable[[], float] = time.monotonic,
    progress: Callable[[float, float], None] | None = None,
) -> TuneResult:
    """Search ALS parameters for at most about ``budget_s`` seconds; returns the best.

    ``progress(seconds spent, budget_s)`` is called after each trial (the application draws
    it).

    Only ``split.train`` is used: a validation split is carved from it (``split.validation``,
    same rule as the outer split, seed ``seed + 1``). Pass a ``split_interactions(data, 0)``
    split to tune on all the data (then fit the final model on all of it with ``best``).
    ``clock`` is for tests.
    """
    if budget_s <= 0:
        raise ValueError("budget_s must be > 0")
    started = clock()
    base = base or Params(seed=seed)
    valid = split.validation(seed=seed + 1)
    users = valid.eval_users(max_users, seed)
    if len(users) == 0:
        raise ModelError("tuning: no validation user has a held-out positive item")
    log.info(
        "tuning for %.0fs on %d validation users (%d train / %d held-out pairs)",
        budget_s,
        len(users),
        len(valid.train),
        len(valid.test),
    )
    rng = np.random.default_rng(seed)
    trials: list[Trial] = []
    seen: set[Params] = set()

    def run(params: Params, phase: str) -> None:
        t0 = clock()
        metrics = score_params(valid, params, users, metric, history_max)
        trial = Trial(len(trials), phase, params, metrics[metric], metrics, clock() - t0)
        best = max((t.score for t in trials), default=-1.0)
        trials.append(trial)
        seen.add(params)
        if progress is not None:
            progress(min(clock() - started, budget_s), budget_s)
        log.log(
            logging.INFO if trial.score > best else logging.DEBUG,
            "trial %d (%s) %s=%.4f in %.1fs: factors %d reg %.3g alpha %.3g iters %d %s",
            trial.number,
            phase,
            metric,
            trial.score,
            trial.seconds,
            params.factors,
            params.regularization,
            params.alpha,
            params.iterations,
            params.transform,
        )

    def estimate(params: Params) -> float:
        rates = [t.seconds / _units(t.params) for t in trials]
        return 1.2 * float(np.median(rates)) * _units(params)

    run(base, "base")
    while max_trials is None or len(trials) < max_trials:
        elapsed = clock() - started
        left = budget_s - elapsed
        if left <= 0:
            break
        phase = "random" if elapsed < explore * budget_s else "local"
        incumbent = max(trials, key=lambda t: t.score).params
        candidate = None
        for _ in range(DRAWS):
            p = (
                sample_params(rng, base, space)
                if phase == "random"
                else perturb_params(rng, incumbent, space)
            )
            if p not in seen and estimate(p) <= left:
                candidate = p
                break
        if candidate is None:
            log.info("tuning: no untried configuration fits the %.1fs left", left)
            break
        run(candidate, phase)
    best = max(trials, key=lambda t: t.score)
    if progress is not None:
        progress(budget_s, budget_s)  # the search ends here, early or not
    result = TuneResult(
        best=best.params,
        best_score=best.score,
        metric=metric,
        trials=tuple(trials),
        budget_s=budget_s,
        elapsed_s=clock() - started,
        validation={**valid.summary(), "scored_users": len(users)},
        seed=seed,
    )
    log.info(
        "tuning done: %d trials in %.1fs, best %s=%.4f (base %.4f)",
        len(trials),
        result.elapsed_s,
        metric,
        best.score,
        trials[0].score,
    )
    return result


@dataclass(frozen=True)
class EaseTuning:
    """EASE's λ chosen on the validation split: ``scores`` maps λ -> validation metric."""

    best: float
    scores: dict[float, float]
    skipped: str | None = None


def tune_ease(
    split: Split,
    lambdas: Sequence[float] = (50.0, 200.0, 800.0),
    seed: int = 0,
    metric: str = "ndcg@10",
    max_items: int = EASE_MAX_ITEMS,
    max_users: int = MAX_USERS,
) -> EaseTuning:
    """Pick EASE's λ on the same kind of validation split ``tune`` uses (test pairs unseen),
    so a tuned ALS is compared with a tuned EASE. Each λ is one items x items inversion."""
    valid = split.validation(seed=seed + 1)
    users = valid.eval_users(max_users, seed)
    k = int(metric.split("@")[1])
    scores: dict[float, float] = {}
    for lam in lambdas:
        try:
            recs = ease_lists(valid, users, k, lam, max_items=max_items)
        except ModelError as exc:
            return EaseTuning(EASE_LAMBDA, {}, skipped=str(exc))
        scores[float(lam)] = ranking_metrics(
            recs, valid.relevant()[users], (k,), len(valid.item_ids)
        )[metric]
        log.info("EASE lambda %g: validation %s %.4f", lam, metric, scores[float(lam)])
    return EaseTuning(max(scores, key=lambda lam: scores[lam]), scores)
