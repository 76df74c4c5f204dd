"""The command line: help for every subcommand, one-line errors and non-zero exits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from streamrec.app.cli import build_parser, main

SUBCOMMANDS = ["infra", "train", "worker", "produce", "demo"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamrec", *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(command: str) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([command, "--help"])
    assert info.value.code == 0


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["frobnicate"], "invalid choice"),
        (["train", "--dataset", "synthetic"], "--out"),
        (["train", "--dataset", "synthetic", "--out", "x", "--factors", "0"], "must be >= 1"),
        (["train", "--dataset", "nope", "--out", "x"], "invalid choice"),
        (["infra", "sideways"], "invalid choice"),
        (["produce", "--user", "u", "--type", "teleport", "--item", "i"], "invalid choice"),
        (["worker", "--duration", "-1"], "must be > 0"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(args: list[str], fragment: str) -> None:
    proc = _run(*args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("streamrec") and fragment in lines[0]


def test_bad_setting_is_one_line_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STREAMREC_TOP_N", "many")
    assert main(["train", "--dataset", "synthetic", "--out", "/nonexistent/x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "top_n" in err[0]


def test_json_logs(tmp_path: Path) -> None:
    env = {**os.environ, "STREAMREC_LOG_FORMAT": "json"}
    csv = tmp_path / "d.csv"
    csv.write_text("user_id,item_id\n" + "".join(f"u{i % 7},i{i % 11}\n" for i in range(60)))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamrec",
            "train",
            "--csv",
            str(csv),
            "--out",
            str(tmp_path / "m"),
            "--factors",
            "4",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    assert any(rec["logger"] == "streamrec.model.train" and rec["level"] == "INFO" for rec in lines)


def test_missing_data_file_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["train", "--csv", str(tmp_path / "none.csv"), "--out", str(tmp_path / "m")])
    assert code == 4
    assert "no such file" in capsys.readouterr().err


def test_lastfm_needs_data_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--dataset", "lastfm-2k", "--out", str(tmp_path / "m")]) == 2
    assert "--data-dir" in capsys.readouterr().err


def test_train_csv_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "plays.csv"
    rows = ["user_id,item_id,weight"] + [
        f"u{u},i{(u * 7 + j) % 40},{j + 1}" for u in range(30) for j in range(6)
    ]
    csv.write_text("\n".join(rows) + "\n")
    out = tmp_path / "model"
    assert main(["train", "--csv", str(csv), "--out", str(out), "--factors", "8"]) == 0
    assert (out / "manifest.json").is_file()
    assert "40 items x 8 factors" in capsys.readouterr().out
