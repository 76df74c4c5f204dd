"""The retrain report: the SVG charts' geometry on known inputs, and what the page says."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from streamrec.artifact import Model
from streamrec.model.evaluate import EvalReport, ModelResult
from streamrec.model.params import Params
from streamrec.model.report import bars, line, scatter, write_report
from streamrec.model.retrain import RetrainResult
from streamrec.model.tune import Trial, TuneResult

# The plot area is x in [44, 516], y in [44, 216] (W 560, H 260, PAD 44): 472 x 172.


def _attrs(svg: str, tag: str) -> list[dict[str, str]]:
    return [
        dict(re.findall(r'(\w[\w-]*)="([^"]*)"', m)) for m in re.findall(f"<{tag} ([^>]*)>", svg)
    ]


def test_bars_scale_to_the_tallest_value_and_escape_names() -> None:
    svg = bars("m <1>", ["g1", "g2"], {"a": [1.0, 0.5], "<b>&": [0.25, 0.0]})
    rects = _attrs(svg, "rect")
    assert len(rects) == 4 + 2  # a bar per (group, series), a legend swatch per series
    # Groups 236 wide; bars 94.4 apart, 85.0 wide, from 10% into their group.
    got = [(r["x"], r["y"], r["width"], r["height"]) for r in rects[:4]]
    assert got == [
        ("67.6", "44.0", "85.0", "172.0"),  # a, g1: the tallest fills the plot
        ("162.0", "173.0", "85.0", "43.0"),  # <b>&, g1: a quarter of it
        ("303.6", "130.0", "85.0", "86.0"),  # a, g2: half
        ("398.0", "216.0", "85.0", "0.0"),  # <b>&, g2: nothing
    ]
    assert rects[0]["fill"] == "#2b6cb0" and rects[1]["fill"] == "#c05621"
    assert "<title>m &lt;1&gt;</title>" in svg and "<title>a g1: 1.0000</title>" in svg
    assert "&lt;b&gt;&amp; g2: 0.0000" in svg and "<b>" not in svg
    # All zeros: empty bars, no division by zero.
    flat = _attrs(bars("zero", ["g"], {"a": [0.0]}), "rect")
    assert flat[0]["height"] == "0.0"


def test_line_is_log_scaled_and_thinned() -> None:
    svg = line("pop", [100.0, 10.0, 1.0], "rank", "popularity")
    assert _attrs(svg, "polyline")[0]["points"] == "44.0,44.0 280.0,130.0 516.0,216.0"
    assert "popularity (log10): 0.00 .. 2.00" in svg
    linear = line("pop", [3.0, 1.0, 2.0], "rank", "v", log_y=False)
    assert _attrs(linear, "polyline")[0]["points"] == "44.0,44.0 280.0,216.0 516.0,130.0"
    assert "v: 1.00 .. 3.00" in linear
    # A constant line sits on the axis; zeros are clamped to 1e-9 before the log.
    assert _attrs(line("c", [0.0, 0.0], "x", "y"), "polyline")[0]["points"] == (
        "44.0,216.0 516.0,216.0"
    )
    assert "y (log10): -9.00 .. -9.00" in line("c", [0.0, 0.0], "x", "y")
    many = _attrs(line("n", list(np.linspace(1, 2, 1000)), "x", "y"), "polyline")[0]
    assert len(many["points"].split()) == 500  # every second point of 1000
    assert line("empty", [], "x", "y") == ""


def test_scatter_places_points_and_logs_x_when_asked() -> None:
    svg = scatter("s", [1.0, 10.0, 100.0], [0.1, 0.3, 0.2], "reg", "ndcg@10", log_x=True)
    dots = [(c["cx"], c["cy"]) for c in _attrs(svg, "circle")]
    assert dots == [("44.0", "216.0"), ("280.0", "44.0"), ("516.0", "130.0")]
    assert "<title>10: 0.3000</title>" in svg
    assert "reg (log10): 1 .. 100" in svg and "ndcg@10: 0.1000 .. 0.3000" in svg
    lin = scatter("s", [2.0, 4.0], [0.5, 0.5], "factors", "m")
    assert [(c["cx"], c["cy"]) for c in _attrs(lin, "circle")] == [
        ("44.0", "216.0"),
        ("516.0", "216.0"),
    ]
    assert "factors: 2 .. 4" in lin and "(log10)" not in lin
    assert scatter("s", [], [], "x", "y") == ""


def _result(
    promoted: bool,
    evaluation: EvalReport | None = None,
    tuning: TuneResult | None = None,
    timings: dict[str, float] | None = None,
    version: str | None = "v-new",
    live_version: str | None = None,
    snapshot: dict[str, str] | None = None,
) -> RetrainResult:
    return RetrainResult(
        promoted=promoted,
        reason="candidate ndcg@10 0.3 vs <live> 0.2",
        version=version,
        live_version=live_version,
        evaluation=evaluation,
        tuning=tuning,
        timings=timings or {},
        counts={"events": 120, "users": 7},
        snapshot=snapshot or {"topic": "t"},
    )


def test_report_page_says_what_was_decided_with_every_section(tmp_path: Path) -> None:
    metrics = {"ndcg@10": 0.25, "precision@10": 0.1, "recall@10": 0.3, "map@10": 0.125}
    evaluation = EvalReport(
        split={"method": "time"},
        ks=(10, 20),
        results=(
            ModelResult("als", metrics, 1.5),
            ModelResult("ease", {}, 0.0, skipped="EASE skipped: 30000 items > limit 20000"),
        ),
    )
    trials = tuple(
        Trial(n, "random", Params(factors=f, regularization=r), s, {"ndcg@10": s}, 2.0)
        for n, (f, r, s) in enumerate([(16, 0.1, 0.2), (32, 10.0, 0.4), (64, 1.0, 0.3)])
    )
    tuning = TuneResult(trials[1].params, 0.4, "ndcg@10", trials, 30.0, 12.0, {}, 0)
    model = Model(
        path=Path("m"),
        version="v-new",
        item_ids=tuple(f"i{n}" for n in range(10)),
        item_factors=np.zeros((10, 2), np.float32),
        item_popularity=np.array([5, 50, 5, 5, 10, 5, 5, 5, 5, 5], np.float32),
        params={},
        manifest={},
    )
    result = _result(True, evaluation=evaluation, tuning=tuning, timings={"read": 1.24, "fit": 3})
    out = write_report(tmp_path / "report.html", result, model)
    assert out == tmp_path / "report.html"
    page = out.read_text("utf-8")
    assert (
        "Decision: <b class='ok'>promoted</b>: candidate ndcg@10 0.3 vs &lt;live&gt; 0.2." in page
    )
    assert "<code>v-new</code>; live before: <code>none</code>" in page
    assert "events: 120, users: 7" in page
    # The metrics table at the first K: a row per model, missing metrics as nan.
    assert (
        "<tr><td>als</td><td>0.2500</td><td>0.1000</td><td>0.3000</td><td>0.1250</td>"
        "<td>nan</td><td>1.5</td></tr>"
    ) in page
    assert "<td colspan='6'>skipped: EASE skipped: 30000 items &gt; limit 20000</td>" in page
    assert "<title>metrics per model</title>" in page
    assert "<title>ease " not in page  # skipped rows get no bars
    # The long tail: the top 10% of 10 items is the one with 50 of 100.
    assert "10 items; the top 10% hold 50% of all positive feedback." in page
    assert "3 trials in 12 s of a 30 s budget, scored by ndcg@10" in page
    for name in ("factors", "regularization", "alpha", "iterations"):
        assert f"<title>ndcg@10 vs {name}</title>" in page
    assert "regularization (log10): 0.1 .. 10" in page
    assert "Timings (s)</h2><p>read 1.2, fit 3.0</p>" in page
    assert page.endswith("</body></html>")


def test_report_without_evaluation_model_or_tuning(tmp_path: Path) -> None:
    result = _result(False, version=None, live_version="v-old", snapshot={"topic": "<t>"})
    page = write_report(tmp_path / "r.html", result, None).read_text("utf-8")
    assert "<b class='no'>kept the live model</b>" in page
    assert "New version: <code>-</code>; live before: <code>v-old</code>" in page
    assert "{&#x27;topic&#x27;: &#x27;&lt;t&gt;&#x27;}" in page
    for section in ("<h2>Evaluation", "<h2>Popularity", "<h2>Parameter search", "<h2>Timings"):
        assert section not in page
    assert "<svg" not in page
