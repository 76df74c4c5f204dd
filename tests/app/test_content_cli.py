"""``train --items`` stores the content map fitted on a catalog CSV; ``evaluate-cold`` prints
its table (a small planted set) and refuses a dataset without its files in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamrec.app.cli import main
from streamrec.artifact import load_content_map


def test_train_with_items_stores_the_map(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from streamrec.model.data import synthetic

    ids = sorted(set(synthetic().items.astype(str)))
    rows = ["item_id,name,genres,year,energy"]
    rows += [f"{i},{i},{i.split('-')[0]},{2000 + n % 20},{n % 7 / 7:.3f}" for n, i in
             enumerate(ids)]  # fmt: skip
    (tmp_path / "items.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "model"
    argv = ["train", "--dataset", "synthetic", "--out", str(out), "--factors", "8",
            "--iterations", "2", "--items", str(tmp_path / "items.csv")]  # fmt: skip
    assert main(argv) == 0
    assert f"loaded {len(ids)} catalog items" in capsys.readouterr().out
    cmap = load_content_map(out)
    assert cmap is not None and cmap.factors == 8
    assert cmap.feature_names == ("energy", "year") and len(cmap.categories) == 12
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["content"]["file"] == "content_map.npz"
    assert manifest["content_fit"]["items"] == len(ids)


def test_evaluate_cold_prints_its_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "cold.json"
    argv = ["evaluate-cold", "planted", "--seeds", "1", "--factors", "8", "--iterations", "4",
            "--similar", "--out", str(report)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    for name in ("content map", "random", "popularity (content)", "popularity (oracle)"):
        assert name in printed
    data = json.loads(report.read_text())
    mapped = data["summary"]["content map"]["ndcg@10"]["mean"]
    assert mapped > data["summary"]["random"]["ndcg@10"]["mean"]
    assert "similar items by blend weight" in printed
    assert set(data["similar_blend"]["rare"]) == {"0.0", "0.25", "0.5", "0.75", "1.0"}


def test_evaluate_cold_needs_its_data(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate-cold", "ml-latest-small"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["streamrec: error: evaluate-cold ml-latest-small needs --data-dir DIR"]
