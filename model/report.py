"""The retrain report: one self-contained HTML page (inline SVG, no scripts, no downloads).

Written for someone who was not there: what was decided and why, the metrics of every model,
the popularity long tail, and — when parameters were searched — the metric against each one.
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from streamrec.artifact import Model

if TYPE_CHECKING:
    from streamrec.model.retrain import RetrainResult

W, H, PAD = 560, 260, 44
COLORS = ["#2b6cb0", "#c05621", "#2f855a", "#6b46c1", "#b7791f", "#718096"]


def _esc(x: object) -> str:
    return html.escape(str(x))


def bars(title: str, groups: Sequence[str], series: dict[str, Sequence[float]]) -> str:
    """Grouped bar chart: one group per metric, one bar per model."""
    names = list(series)
    top = max([v for vals in series.values() for v in vals] + [1e-9])
    gw = (W - 2 * PAD) / max(1, len(groups))
    bw = gw * 0.8 / max(1, len(names))
    out = [f'<svg viewBox="0 0 {W} {H + 30}" width="{W}" role="img"><title>{_esc(title)}</title>']
    out.append(f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" stroke="#333"/>')
    for g, group in enumerate(groups):
        x0 = PAD + g * gw + gw * 0.1
        for s, name in enumerate(names):
            v = series[name][g]
            h = (H - 2 * PAD) * v / top
            x = x0 + s * bw
            out.append(
                f'<rect x="{x:.1f}" y="{H - PAD - h:.1f}" width="{bw * 0.9:.1f}" '
                f'height="{h:.1f}" fill="{COLORS[s % len(COLORS)]}"><title>{_esc(name)} '
                f"{_esc(group)}: {v:.4f}</title></rect>"
            )
        out.append(
            f'<text x="{x0 + gw * 0.4:.1f}" y="{H - PAD + 16}" font-size="11" '
            f'text-anchor="middle">{_esc(group)}</text>'
        )
    for s, name in enumerate(names):
        out.append(
            f'<rect x="{PAD + s * 110}" y="{H + 4}" width="10" height="10" '
            f'fill="{COLORS[s % len(COLORS)]}"/><text x="{PAD + s * 110 + 14}" '
            f'y="{H + 13}" font-size="11">{_esc(name)}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def line(title: str, ys: Sequence[float], xlabel: str, ylabel: str, log_y: bool = True) -> str:
    """A line over rank (x) of values (y), log-scaled y by default."""
    if not len(ys):
        return ""
    vals = [math.log10(max(y, 1e-9)) if log_y else y for y in ys]
    lo, hi = min(vals), max(vals)
    span = hi - lo or 1.0
    n = len(vals)
    step = max(1, n // 400)
    pts = " ".join(
        f"{PAD + (W - 2 * PAD) * i / max(1, n - 1):.1f},"
        f"{H - PAD - (H - 2 * PAD) * (vals[i] - lo) / span:.1f}"
        for i in range(0, n, step)
    )
    return (
        f'<svg viewBox="0 0 {W} {H}" width="{W}" role="img"><title>{_esc(title)}</title>'
        f'<polyline fill="none" stroke="{COLORS[0]}" stroke-width="1.5" points="{pts}"/>'
        f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" stroke="#333"/>'
        f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{H - PAD}" stroke="#333"/>'
        f'<text x="{W / 2}" y="{H - 8}" font-size="11" text-anchor="middle">{_esc(xlabel)}'
        f'</text><text x="12" y="{PAD - 10}" font-size="11">{_esc(ylabel)}'
        f"{' (log10)' if log_y else ''}: {lo:.2f} .. {hi:.2f}</text></svg>"
    )


def scatter(
    title: str,
    xs: Sequence[float],
    ys: Sequence[float],
    xlabel: str,
    ylabel: str,
    log_x: bool = False,
) -> str:
    """Points (x, y); log-scaled x for parameters searched on a log scale."""
    if not len(xs):
        return ""
    px = [math.log10(x) if log_x and x > 0 else float(x) for x in xs]
    x0, x1 = min(px), max(px)
    y0, y1 = min(ys), max(ys)
    sx, sy = (x1 - x0) or 1.0, (y1 - y0) or 1.0
    dots = "".join(
        f'<circle cx="{PAD + (W - 2 * PAD) * (x - x0) / sx:.1f}" '
        f'cy="{H - PAD - (H - 2 * PAD) * (y - y0) / sy:.1f}" r="3.5" '
        f'fill="{COLORS[1]}" fill-opacity="0.7"><title>{xx:g}: {y:.4f}</title></circle>'
        for x, xx, y in zip(px, xs, ys, strict=True)
    )
    return (
        f'<svg viewBox="0 0 {W} {H}" width="{W}" role="img"><title>{_esc(title)}</title>'
        f'{dots}<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" stroke="#333"/>'
        f'<text x="{W / 2}" y="{H - 8}" font-size="11" text-anchor="middle">{_esc(xlabel)}'
        f"{' (log10)' if log_x else ''}: {min(xs):g} .. {max(xs):g}</text>"
        f'<text x="12" y="{PAD - 10}" font-size="11">{_esc(ylabel)}: {y0:.4f} .. {y1:.4f}'
        f"</text></svg>"
    )


def write_report(path: Path, result: RetrainResult, model: Model | None) -> Path:
    """Write ``report.html`` for ``result`` (``model``: the promoted model, if any)."""
    verdict = "promoted" if result.promoted else "kept the live model"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>streamrec retrain report</title>",
        "<style>body{font:14px system-ui,sans-serif;max-width:900px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;"
        "text-align:right}th:first-child,td:first-child{text-align:left}"
        ".ok{color:#2f855a}.no{color:#c05621}</style></head><body>",
        "<h1>streamrec retrain report</h1>",
        f"<p>{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Decision: "
        f"<b class='{'ok' if result.promoted else 'no'}'>{verdict}</b>: {_esc(result.reason)}."
        f"</p><p>New version: <code>{_esc(result.version or '-')}</code>; live before: "
        f"<code>{_esc(result.live_version or 'none')}</code>.</p>",
        "<h2>Data</h2><p>"
        + ", ".join(f"{_esc(k)}: {_esc(v)}" for k, v in result.counts.items())
        + "</p>",
        f"<p>Kafka snapshot: <code>{_esc(result.snapshot)}</code></p>",
    ]
    ev = result.evaluation
    if ev is not None:
        rows = [r for r in ev.results if not r.skipped]
        k = ev.ks[0]
        metrics = [f"ndcg@{k}", f"precision@{k}", f"recall@{k}", f"map@{k}", f"coverage@{k}"]
        parts.append(
            f"<h2>Evaluation</h2><p>Split: <code>{_esc(ev.split)}</code>. Relevant items "
            "are each user's held-out positive interactions; lists exclude what the "
            "user had in training.</p>"
        )
        parts.append(
            "<table><tr><th>model</th>"
            + "".join(f"<th>{m}</th>" for m in metrics)
            + "<th>seconds</th></tr>"
        )
        for r in ev.results:
            if r.skipped:
                parts.append(
                    f"<tr><td>{_esc(r.name)}</td><td colspan='6'>skipped: "
                    f"{_esc(r.skipped)}</td></tr>"
                )
                continue
            parts.append(
                f"<tr><td>{_esc(r.name)}</td>"
                + "".join(f"<td>{r.metrics.get(m, float('nan')):.4f}</td>" for m in metrics)
                + f"<td>{r.seconds:.1f}</td></tr>"
            )
        parts.append("</table>")
        parts.append(
            bars(
                "metrics per model",
                metrics,
                {r.name: [r.metrics.get(m, 0.0) for m in metrics] for r in rows},
            )
        )
    if model is not None:
        pop = np.sort(np.asarray(model.item_popularity))[::-1]
        head = pop[: max(1, len(pop) // 10)].sum() / max(pop.sum(), 1e-9)
        parts.append(
            f"<h2>Popularity long tail</h2><p>{len(pop)} items; the top 10% hold "
            f"{head:.0%} of all positive feedback.</p>"
        )
        parts.append(line("item popularity by rank", pop.tolist(), "item rank", "popularity"))
    tu = result.tuning
    if tu is not None:
        parts.append(
            f"<h2>Parameter search</h2><p>{len(tu.trials)} trials in "
            f"{tu.elapsed_s:.0f} s of a {tu.budget_s:g} s budget, scored by "
            f"{_esc(tu.metric)} on a validation split carved from the training data "
            f"(never the test split). Best: <code>{_esc(tu.to_dict()['best'])}</code>."
            "</p>"
        )
        scores = [t.score for t in tu.trials]
        for name, log_x in (
            ("factors", False),
            ("regularization", True),
            ("alpha", True),
            ("iterations", False),
        ):
            xs = [float(getattr(t.params, name)) for t in tu.trials]
            parts.append(scatter(f"{tu.metric} vs {name}", xs, scores, name, tu.metric, log_x))
        parts.append("<pre>" + _esc(tu.table(top=15)) + "</pre>")
    if result.timings:
        parts.append(
            "<h2>Timings (s)</h2><p>"
            + ", ".join(f"{_esc(k)} {v:.1f}" for k, v in result.timings.items())
            + "</p>"
        )
    parts.append("</body></html>")
    path.write_text("\n".join(parts), "utf-8")
    return path
