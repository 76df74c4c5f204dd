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


def test_als_flags_default_to_params(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from dataclasses import dataclass

    from streamrec.model import params as params_module

    @dataclass(frozen=True)
    class Other(params_module.Params):
        factors: int = 7
        regularization: float = 0.25
        alpha: float = 2.5
        iterations: int = 3
        seed: int = 11

    monkeypatch.setattr(params_module, "Params", Other)
    for argv in (["train", "--dataset", "synthetic", "--out", "x"], ["retrain"]):
        args = build_parser().parse_args(argv)
        got = (args.factors, args.regularization, args.alpha, args.iterations, args.seed)
        assert got == (7, 0.25, 2.5, 3, 11), argv
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for fragment in ("latent factors (7)", "λ (0.25)", "confidence scale (2.5)", "ALS sweeps (3)",
                     "random seed (11)"):  # fmt: skip
        assert fragment in text


def test_dataset_choices_are_the_loaders(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamrec.model import datasets as data_module

    for command in (["train", "--out", "x"], ["evaluate"], ["retrain"]):
        args = build_parser().parse_args([*command, "--dataset", data_module.DATASETS[-1]])
        assert args.dataset == data_module.DATASETS[-1]
    monkeypatch.setattr(data_module, "DATASETS", (*data_module.DATASETS, "brand-new"))
    assert build_parser().parse_args(["evaluate", "--dataset", "brand-new"]).dataset == "brand-new"


def test_parsing_other_commands_loads_no_training_code() -> None:
    # The worker's process and `streamrec --help` must not pay for scipy and implicit.
    code = (
        "import sys\n"
        "from streamrec.app.cli import build_parser\n"
        "light = {'streamrec.model', 'streamrec.model.datasets', 'streamrec.model.params',\n"
        "         'streamrec.model.errors'}\n"
        "p = build_parser()\n"
        "p.parse_args(['worker', '--duration', '1'])\n"
        "p.format_help()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('scipy', 'implicit')\n"
        "             or m.startswith('streamrec.model') and m not in light))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert proc.stdout.strip() == "[]"


def test_help_of_every_command_is_complete(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["retrain", "--help"])
    out = capsys.readouterr().out
    assert "--final-iterations" in out and "--data-dir" in out and "Exits 5 when" in out


@pytest.mark.parametrize(
    ("error", "status"),
    [
        ("ConfigError", 2),
        ("InfraError", 3),
        ("ArtifactError", 4),
        ("EventError", 4),
        ("StreamrecError", 4),
        ("KeyboardInterrupt", 130),
    ],
)
def test_errors_map_to_the_exit_table(
    error: str, status: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import builtins

    from streamrec import errors
    from streamrec.app import commands

    exc = getattr(errors, error, None) or getattr(builtins, error)

    def fail(_args: object) -> int:
        raise exc("boom")

    monkeypatch.setattr(commands, "run", fail)
    assert main(["worker"]) == status


def test_the_exit_table_documents_every_status() -> None:
    import re

    from streamrec import exits
    from streamrec.exits import Exit

    rows = dict(re.findall(r"^(\d+)\s+``([A-Z]+)``", exits.__doc__ or "", re.M))
    assert rows == {str(e.value): e.name for e in Exit}
    assert len({e.value for e in Exit}) == len(Exit)
    assert (Exit.USAGE, Exit.INFRA, Exit.DATA, Exit.KEPT, Exit.INTERRUPTED) == (2, 3, 4, 5, 130)
