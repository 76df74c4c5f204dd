"""``streamrec recommend``, ``evaluate`` and ``train --tune``: output shapes, the worker's lists,
one-line errors with exit 2."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from streamrec.als.scorer import Scorer
from streamrec.app.cli import build_parser, main
from streamrec.artifact import load_model
from streamrec.model.data import load_csv, synthetic
from streamrec.model.recommend import user_histories


def _history_csv(path: Path, users: int = 40) -> Path:
    """Rows of the small model's own dataset (its items), for ``users`` users, plus one
    unknown item and one user with only a dislike."""
    data = synthetic(400, 300, seed=3)
    keep = {f"user-{n:04d}" for n in range(users)}
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user_id", "item_id", "weight", "timestamp"])
        for u, i, wt, ts in zip(data.users, data.items, data.weights, data.timestamps, strict=True):  # type: ignore[arg-type]
            if u in keep:
                w.writerow([u, i, float(wt), int(ts)])
        w.writerow(["user-0000", "never-seen-item", 2.0, 1_700_000_000_000])
        w.writerow(["zz-cold", str(data.items[0]), -2.0, 1_700_000_000_000])
    return path


@pytest.mark.parametrize("command", ["evaluate", "recommend"])
def test_help(command: str) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([command, "--help"])
    assert info.value.code == 0


def test_recommend_writes_the_workers_lists(
    small_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    history = _history_csv(tmp_path / "h.csv")
    out = tmp_path / "recs" / "out.jsonl"
    code = main(
        ["recommend", "--model", str(small_model), "--history", str(history), "--n", "7",
         "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    assert "41 lists (1 from popularity, 1 history entries unknown" in capsys.readouterr().out
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 41
    assert all(set(row) == {"user_id", "items"} for row in lines)
    assert all(len(row["items"]) == 7 for row in lines)
    assert all(set(it) == {"item_id", "score"} for row in lines for it in row["items"])

    # exactly what the worker's Scorer gives for the same item totals
    hist = user_histories(load_csv(history))
    expected, _, _ = Scorer.create(load_model(small_model), n=7).recommend(hist)
    assert [row["user_id"] for row in lines] == [u for u, _ in expected]
    for row, (_user, ranked) in zip(lines, expected, strict=True):
        assert [(it["item_id"], it["score"]) for it in row["items"]] == ranked
    # and nothing from a user's own history
    first = next(row for row in lines if row["user_id"] == "user-0001")
    assert not {it["item_id"] for it in first["items"]} & set(hist["user-0001"])


def test_recommend_to_stdout_in_batches(
    small_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    history = _history_csv(tmp_path / "h.csv", users=5)
    from streamrec.model.recommend import recommend_file

    stats = recommend_file(small_model, history, None, 3, batch=2)
    captured = capsys.readouterr().out.splitlines()
    assert stats.users == 6 and len(captured) == 6
    assert json.loads(captured[0])["user_id"] == "user-0000"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["recommend", "--model", "m", "--history", "h.csv", "--n", "0"], "must be >= 1"),
        (["recommend", "--history", "h.csv"], "--model"),
        (["evaluate", "--dataset", "ml-1m"], "needs --data-dir"),
        (["evaluate", "--dataset", "ml-9m"], "invalid choice"),
        (["evaluate", "--csv", "x.csv", "--tune", "-3"], "must be > 0"),
        (["evaluate", "--csv", "x.csv", "--k", "ten"], "not an integer"),
        (["train", "--dataset", "synthetic", "--out", "x", "--tune", "0"], "must be > 0"),
    ],
)
def test_bad_arguments_one_line_exit_2(
    args: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = main(args)
    except SystemExit as exc:  # argparse errors exit from inside the parser
        code = int(exc.code or 0)
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("streamrec") and fragment in err[0]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["recommend", "--model", "MODEL", "--history", "/nope.csv"], "no such file"),
        (["recommend", "--model", "/nonexistent", "--history", "h.csv"], "no such model"),
        (["evaluate", "--csv", "/nonexistent.csv"], "no such file"),
        (["evaluate", "--dataset", "ml-1m", "--data-dir", "/nonexistent"], "no ratings.dat"),
    ],
)
def test_missing_inputs_are_data_errors_exit_4(
    args: list[str], fragment: str, small_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # as train --csv with a missing file: one line, exit 4 (bad data), not 2
    assert main([str(small_model) if a == "MODEL" else a for a in args]) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0], err


def test_evaluate_writes_a_report(
    tmp_path: Path, small_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    history = _history_csv(tmp_path / "h.csv", users=120)
    out = tmp_path / "report.json"
    code = main(
        ["evaluate", "--csv", str(history), "--k", "5", "--model", str(small_model),
         "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "ndcg@5" in printed and "live" in printed
    report = json.loads(out.read_text())
    assert report["ks"] == [5, 10]
    assert [r["name"] for r in report["results"]] == [
        "popularity",
        "itemknn",
        "ease",
        "als",
        "live",
    ]
    assert report["split"]["method"] == "time"
    assert 0 <= report["results"][3]["metrics"]["ndcg@5"] <= 1


def test_train_with_tuning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    history = _history_csv(tmp_path / "h.csv", users=80)
    code = main(
        ["train", "--csv", str(history), "--out", str(tmp_path / "m"), "--tune", "2",
         "--factors", "8", "--iterations", "3"]
    )  # fmt: skip
    assert code == 0
    assert "tuned:" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert manifest["tuning"]["trials"] >= 1 and manifest["tuning"]["budget_s"] == 2.0
    assert manifest["tuning"]["metric"] == "ndcg@10"
    assert set(manifest["params"]) >= {"factors", "regularization", "alpha", "iterations"}
