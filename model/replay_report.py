"""The live evaluation's report page (``streamrec replay --evaluate``): one self-contained HTML
file (inline SVG drawn here and by ``model/report.py``, no scripts, no downloads) from the
``report.json`` dict: the policies' figures with their intervals, hit rate over event time,
the gain by user and item type, the freshness distribution, pacing and the retrains."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from streamrec.model.prequential import METRICS, POLICIES, SEGMENTS
from streamrec.model.report import COLORS, PAD, H, W, bars, line

LABELS = {"hr10": "HR@10", "hr50": "HR@50", "ndcg10": "NDCG@10"}


def _esc(x: object) -> str:
    return html.escape(str(x))


def _num(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "&ndash;"
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _ci(block: Mapping[str, Any], metric: str) -> str:
    ci = block.get("ci", {}).get(metric)
    return f" [{_num(ci[0])}, {_num(ci[1])}]" if ci else ""


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d")


def lines(title: str, xs: Sequence[int], series: Mapping[str, Sequence[float]]) -> str:
    """Several lines over the same x (epoch ms, labelled as dates), y from 0 to the max."""
    if not len(xs):
        return ""
    top = max([v for ys in series.values() for v in ys] + [1e-9])
    x0, x1 = min(xs), max(xs)
    span = (x1 - x0) or 1

    def px(x: float) -> float:
        return PAD + (W - 2 * PAD) * (x - x0) / span

    def py(y: float) -> float:
        return H - PAD - (H - 2 * PAD) * y / top

    out = [f'<svg viewBox="0 0 {W} {H + 24}" width="{W}" role="img"><title>{_esc(title)}</title>']
    out.append(f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" stroke="#333"/>')
    out.append(f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{H - PAD}" stroke="#333"/>')
    for s, (name, ys) in enumerate(series.items()):
        pts = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, ys, strict=True))
        color = COLORS[s % len(COLORS)]
        out.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.8" points="{pts}">'
                   f"<title>{_esc(name)}</title></polyline>")  # fmt: skip
        out.append(f'<rect x="{PAD + s * 110}" y="{H + 6}" width="10" height="10" fill="{color}"/>'
                   f'<text x="{PAD + s * 110 + 14}" y="{H + 15}" font-size="11">{_esc(name)}'
                   "</text>")  # fmt: skip
    out.append(
        f'<text x="{PAD}" y="{H - PAD + 16}" font-size="11">{_day(x0)}</text>'
        f'<text x="{W - PAD}" y="{H - PAD + 16}" font-size="11" text-anchor="end">{_day(x1)}'
        f'</text><text x="12" y="{PAD - 10}" font-size="11">HR@10: 0 .. {top:.3f}</text></svg>'
    )
    return "".join(out)


def _times(entry: Mapping[str, Any] | None) -> str:
    """A ratio with its interval (``{"value", "ci"}``), or a dash when it has no value."""
    if not entry or _num(entry.get("value")) == "&ndash;":
        return "&ndash;"
    return f"{_num(entry['value'], 3)}&times;{_ci({'ci': {'x': entry.get('ci')}}, 'x')}"


def _policy_table(report: Mapping[str, Any]) -> str:
    pol = report.get("policies", {})
    head = "".join(f"<th>{LABELS[m]} [95% CI]</th>" for m in METRICS)
    rows = []
    for p in POLICIES:
        b = pol.get(p)
        if not b:
            continue
        cells = "".join(f"<td>{_num(b.get(m))}{_ci(b, m)}</td>" for m in METRICS)
        rows.append(f"<tr><th>{p}</th>{cells}<td>{b.get('events', '')}</td></tr>")
    for key, lift in report.get("lift", {}).items():
        cells = "".join(f"<td>{_times(lift.get(m))}</td>" for m in METRICS)
        rows.append(f"<tr><th>{_esc(key.replace('_', ' '))}</th>{cells}<td></td></tr>")
    return f"<table><tr><th>policy</th>{head}<th>events</th></tr>{''.join(rows)}</table>"


def _segment_table(report: Mapping[str, Any]) -> str:
    pol = report.get("policies", {})
    rows = []
    for seg in SEGMENTS:
        cells = []
        n = 0
        for p in POLICIES:
            b = pol.get(p, {}).get("segments", {}).get(seg)
            if b is None:
                cells.append("<td>&ndash;</td>")
                continue
            n = b.get("events", 0)
            cells.append(f"<td>{_num(b.get('hr10'))}{_ci(b, 'hr10')}</td>")
        lift = report.get("lift", {}).get("live_over_static", {}).get("segments", {}).get(seg, {})
        gain = _times(lift.get("hr10"))
        rows.append(f"<tr><th>{seg.replace('_', ' ')}</th><td>{n}</td>{''.join(cells)}"
                    f"<td>{gain}</td></tr>")  # fmt: skip
    head = "".join(f"<th>{p} HR@10</th>" for p in POLICIES)
    return f"<table><tr><th>events of</th><th>events</th>{head}<th>live / static</th></tr>" + (
        "".join(rows) + "</table>"
    )


def _kv(d: Mapping[str, Any]) -> str:
    return "<table>" + "".join(
        f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in d.items()
    ) + "</table>"  # fmt: skip


def render(report: Mapping[str, Any]) -> str:
    """The page for a ``report.json`` dict."""
    pol = report.get("policies", {})
    ot = report.get("over_time", {})
    over = lines(
        "HR@10 over event time", ot.get("t_ms", []), {p: ot[p] for p in POLICIES if p in ot}
    )
    groups = [s.replace("_", " ") for s in SEGMENTS]
    gain = bars(
        "HR@10 by user and item type",
        groups,
        {p: [pol.get(p, {}).get("segments", {}).get(s, {}).get("hr10", 0.0) or 0.0
             for s in SEGMENTS] for p in POLICIES if p in pol},
    )  # fmt: skip
    sample = report.get("freshness_sample_ms", [])
    fresh_plot = line(
        "freshness quantiles", sample, "events, freshest to stalest", "ms from send to list"
    )
    f = report.get("freshness_ms", {})
    st = report.get("stale_reads", {})
    data = report.get("data", {})
    retrains = report.get("retrains", [])
    rt_rows = "".join(
        f"<tr><td>{_day(r['at_event_ms'])}</td><td>{_esc(r['outcome'])}</td>"
        f"<td>{_esc(r['version'])}</td><td>{_esc(r.get('rows'))}</td><td>{r['seconds']}</td>"
        f"<td>{_esc(r['reason'])}</td></tr>"
        for r in retrains
    )
    style = (
        "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;color:#222}"
        "table{border-collapse:collapse;margin:.5rem 0 1rem}td,th{border:1px solid #ccc;"
        "padding:.25rem .5rem;text-align:left;font-size:.9rem}h2{margin-top:2rem}"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>streamrec live evaluation</title>
<style>{style}</style></head><body>
<h1>Live evaluation: prequential replay</h1>
<p>{_esc(data.get("path"))} (sha256 <code>{_esc(data.get("sha256"))}</code>):
{data.get("events")} events; trained on the first {data.get("train_events")}, replayed
{data.get("replayed_events")} through Kafka, the worker and Redis. Revision
{_esc(report.get("revision"))}.</p>
<p>Every replayed event is a test case: just before it was sent, the user's list was read
from Redis (<b>live</b>), from the last nightly publish (<b>static</b>: no fold-in since;
popular for users it did not know) and the popular list of that publish (<b>popularity</b>).
Intervals: bootstrap over users ({_esc(report.get("settings", {}).get("bootstrap"))} draws).</p>
<h2>Policies</h2>{_policy_table(report)}
<h2>Hit rate over event time</h2>{over}
<h2>Gain by user and item type</h2><p>Known / new: to the model serving when the event was
read.</p>{_segment_table(report)}{gain}
<h2>Freshness</h2><p>From sending an event to its user's list in Redis reflecting it:
p50 {_num(f.get("p50"), 1)} ms, p95 {_num(f.get("p95"), 1)} ms, p99 {_num(f.get("p99"), 1)} ms,
max {_num(f.get("max"), 1)} ms ({_num(f.get("n"), 0)} events, {f.get("unreflected")} not
reflected). Reads that found a list older than the user's previous event:
{st.get("stale")} of {st.get("reads")} ({_num(st.get("share"), 4)}).</p>{fresh_plot}
<h2>Pacing</h2>{_kv(report.get("pacing", {}))}
<h2>Retrains</h2><table><tr><th>event day</th><th>outcome</th><th>version</th><th>rows</th>
<th>seconds</th><th>why</th></tr>{rt_rows}</table>
<h2>Settings</h2>{_kv(report.get("settings", {}))}
<h2>Timings (s)</h2>{_kv(report.get("timings", {}))}
</body></html>
"""


def write_html(path: Path, report: Mapping[str, Any]) -> Path:
    path.write_text(render(report), encoding="utf-8")
    return path
