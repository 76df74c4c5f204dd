"""The command line: help for every subcommand, one-line errors and non-zero exits."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from streamrec.app.cli import build_parser, main
from streamrec.settings import Settings

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
        ("InputError", 4),
        ("AuthError", 7),
        ("TopicsError", 6),
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
    assert (Exit.TOPICS, Exit.AUTH) == (6, 7)
    # The README's table says the same.
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for e in Exit:
        assert re.search(rf"^\| `{e.value}` \| `{e.name}` \|", readme, re.M), e.name


# --- Every command behaves the same ------------------------------------------------------------


def _every_command() -> list[list[str]]:
    """The parser's subcommands (and ``model``'s actions), each with the arguments it needs."""
    parser = build_parser()
    needs = {
        "infra": ["status"],
        "topics": ["check"],
        "train": ["--dataset", "synthetic", "--out", "x"],
        "replay": ["x.csv"],
        "model": ["list"],
        "produce": ["--user", "u", "--item", "i"],
        "evaluate-cold": ["planted"],
        "catalog": ["load", "x.csv"],
    }
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    commands = [[name, *needs.get(name, [])] for name in sub.choices]
    return [*commands, ["model", "rollback", "v1"]]


def test_every_command_is_covered() -> None:
    names = {c[0] for c in _every_command()}
    assert names >= {"infra", "train", "evaluate", "recommend", "retrain", "model", "worker",
                     "produce", "replay", "loadgen", "demo"}  # fmt: skip


@pytest.mark.parametrize("argv", _every_command(), ids=" ".join)
def test_an_unknown_flag_is_named_by_its_command(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main([*argv, "--no-such-flag", "3"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    prog = " ".join(a for a in argv[:2] if a in ("list", "rollback", "load") or a == argv[0])
    assert err[0].startswith(f"streamrec {prog}: error: unrecognized arguments: --no-such-flag")


def test_a_misspelt_flag_gets_a_suggestion(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["replay", "x.csv", "--sped", "60x"])
    assert "did you mean --speed?" in capsys.readouterr().err
    # Abbreviations argparse accepts stay accepted; negative numbers are values.
    args = build_parser().parse_args(["loadgen", "--dur", "5", "--seed", "-3"])
    assert (args.duration, args.seed) == (5.0, -3)


def _argv_for_settings(argv: list[str], tmp_path: Path) -> list[str]:
    if argv[0] == "recommend":  # its inputs are checked first: give it real ones
        (tmp_path / "m").mkdir(exist_ok=True)
        (tmp_path / "h.csv").write_text("user_id,item_id\nu,i\n")
        return [*argv, "--model", str(tmp_path / "m"), "--history", str(tmp_path / "h.csv")]
    if argv[0] == "evaluate":
        return [*argv, "--dataset", "synthetic"]
    return argv


@pytest.mark.parametrize("argv", _every_command(), ids=" ".join)
def test_a_malformed_setting_is_one_line_and_exit_2_for_every_command(
    argv: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("STREAMREC_EVENT_WEIGHTS", "like=3")  # not JSON: a 47-line traceback once
    monkeypatch.chdir(tmp_path)
    assert main(_argv_for_settings(argv, tmp_path)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    bad = "streamrec: error: bad setting event_weights (STREAMREC_EVENT_WEIGHTS)"
    assert err[0].startswith(bad)
    assert '{"play": 1.0}' in err[0]  # what a good value looks like


def test_an_unknown_variable_is_warned_about(tmp_path: Path) -> None:
    env = {**os.environ, "STREAMREC_TOPN": "5", "STREAMREC_HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "streamrec", "model", "list", "--models-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    warned = [line for line in proc.stderr.splitlines() if "STREAMREC_TOPN" in line]
    assert len(warned) == 1 and "did you mean STREAMREC_TOP_N?" in warned[0], proc.stderr


def _missing_inputs(tmp: Path) -> list[list[str]]:
    gone = str(tmp / "gone.csv")
    model = str(tmp / "no-model")
    return [
        ["train", "--csv", gone, "--out", str(tmp / "m")],
        ["evaluate", "--csv", gone],
        ["evaluate", "--dataset", "synthetic", "--model", model],
        ["retrain", "--no-kafka", "--csv", gone],
        ["recommend", "--model", model, "--history", gone],
        ["replay", gone],
        ["produce", "--csv", gone],
        ["worker", "--model", model],
        ["demo", "--names", gone, "--no-browser", "--duration", "1"],
        ["model", "rollback", "19990101T000000Z-0000", "--models-dir", str(tmp)],
    ]


@pytest.mark.parametrize("index", range(10))
def test_a_missing_input_is_exit_4_for_every_command(
    index: int,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Services point nowhere: the missing file is found before anything connects."""
    monkeypatch.setenv("STREAMREC_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    monkeypatch.setenv("STREAMREC_REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("STREAMREC_HOME", str(tmp_path / "home"))
    argv = _missing_inputs(tmp_path)[index]
    assert main(argv) == 4, capsys.readouterr().err
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("streamrec: "), err
    assert "no such" in err[0] or "no model version" in err[0]


# --- Passwords never printed, by the real commands --------------------------------------------


@pytest.fixture
def locked_redis(tmp_path: Path) -> Iterator[int]:
    """A redis-server of this test's own, on a free port, that wants the password
    ``right-pw``; its port. Stopped (by its pid) at teardown."""
    import socket
    import time

    import redis

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--requirepass", "right-pw",
         "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=port, password="right-pw", socket_timeout=1).ping()
                break
            except redis.RedisError:
                if time.monotonic() > deadline:
                    pytest.fail("the test's redis-server did not answer within 10 s")
                time.sleep(0.05)
        yield port
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _cli_env(s: Settings, home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")}
    for name in ("topic_events", "topic_dlq", "topic_models", "topic_items", "consumer_group",
                 "redis_prefix", "topic_events_partitions", "kafka_bootstrap"):  # fmt: skip
        env[f"STREAMREC_{name.upper()}"] = str(getattr(s, name))
    return {**env, "STREAMREC_HOME": str(home), "STREAMREC_METRICS_BIND": "", **extra}


@pytest.mark.integration
def test_a_refused_password_is_one_line_exit_7_and_never_printed(
    stack: Callable[..., Settings], locked_redis: int, small_model: Path, tmp_path: Path
) -> None:
    s = stack()
    env = _cli_env(s, tmp_path, STREAMREC_REDIS_URL=f"redis://:hunter2@127.0.0.1:{locked_redis}/0")
    for argv in (
        ["retrain", "--no-kafka", "--dataset", "synthetic", "--factors", "4", "--iterations", "2"],
        ["worker", "--model", str(small_model), "--duration", "1"],
        ["train", "--dataset", "synthetic", "--out", str(tmp_path / "m"), "--factors", "4",
         "--iterations", "1", "--publish"],
        ["model", "rollback", "x", "--models-dir", str(tmp_path)],
    ):  # fmt: skip
        proc = subprocess.run(
            [sys.executable, "-m", "streamrec", *argv],
            capture_output=True, text=True, timeout=120, env=env,
        )  # fmt: skip
        out = proc.stdout + proc.stderr
        assert "hunter2" not in out, (argv, out)
        if argv[0] == "model":  # the unknown version is found first: exit 4
            assert proc.returncode == 4, out
            continue
        assert proc.returncode == 7, (argv, out)
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith(f"streamrec: Redis at 127.0.0.1:{locked_redis}/0 refused the "
                               "credentials"), last  # fmt: skip
    # model list still lists with Redis refusing, warns once, and shows no password.
    proc = subprocess.run(
        [sys.executable, "-m", "streamrec", "model", "list", "--models-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert proc.returncode == 0 and "hunter2" not in proc.stdout + proc.stderr
    assert "live model unknown" in proc.stderr


@pytest.mark.integration
def test_the_worker_and_retrain_logs_never_show_the_url_password(
    stack: Callable[..., Settings], locked_redis: int, small_model: Path, tmp_path: Path
) -> None:
    """With the right password in STREAMREC_REDIS_URL, the worker's start log and the nightly
    job's lines name the server, never the password (text and JSON logs alike)."""
    s = stack()
    url = f"redis://:right-pw@127.0.0.1:{locked_redis}/0"
    for fmt in ("text", "json"):
        env = _cli_env(s, tmp_path, STREAMREC_REDIS_URL=url, STREAMREC_LOG_FORMAT=fmt)
        worker = subprocess.run(
            [sys.executable, "-m", "streamrec", "-v", "worker", "--model", str(small_model),
             "--duration", "2"],
            capture_output=True, text=True, timeout=120, env=env,
        )  # fmt: skip
        out = worker.stdout + worker.stderr
        assert worker.returncode == 0, out[-3000:]
        assert f"127.0.0.1:{locked_redis}/0" in out and "worker up" in out
        assert "right-pw" not in out
    retrain = subprocess.run(
        [sys.executable, "-m", "streamrec", "-v", "retrain", "--no-kafka", "--dataset",
         "synthetic", "--factors", "4", "--iterations", "2", "--models-dir",
         str(tmp_path / "models")],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    out = retrain.stdout + retrain.stderr
    assert retrain.returncode == 0, out[-3000:]
    assert "promoted" in out and "right-pw" not in out
    # Its long steps log plain lines in a log (no terminal), never a bar's carriage returns.
    assert "\r" not in out and "fitting the final model: done, 3/3 sweeps" in out


@pytest.mark.integration
def test_a_password_changed_under_a_running_worker_is_exit_7(
    stack: Callable[..., Settings], locked_redis: int, small_model: Path, tmp_path: Path
) -> None:
    import time

    import redis

    s = stack()
    url = f"redis://:right-pw@127.0.0.1:{locked_redis}/0"
    env = _cli_env(s, tmp_path, STREAMREC_REDIS_URL=url)
    worker = subprocess.Popen(
        [sys.executable, "-m", "streamrec", "worker", "--model", str(small_model),
         "--duration", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        admin = redis.Redis(port=locked_redis, password="right-pw", socket_timeout=5)
        deadline = time.monotonic() + 60
        while not admin.keys(f"{s.redis_prefix}:{{*}}:origin"):  # its partitions are set up
            assert worker.poll() is None, worker.communicate()
            assert time.monotonic() < deadline, "the worker did not start within 60 s"
            time.sleep(0.1)
        admin.config_set("requirepass", "new-pw")
        admin.client_kill_filter(_type="normal", skipme=True)  # its connections must log in again
        _, err = worker.communicate(timeout=60)
    finally:
        worker.kill()
    assert worker.returncode == 7, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"streamrec: Redis at 127.0.0.1:{locked_redis}/0 refused"), last
    assert "right-pw" not in err and "Traceback" not in err
