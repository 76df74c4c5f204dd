"""Progress of the long commands: a bar when stderr is a terminal (a real pty here), plain
lines through logging when it is not; the library code only calls a callback."""

from __future__ import annotations

import fcntl
import io
import logging
import os
import pty
import struct
import subprocess
import sys
import termios
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from streamrec.app.progress import Progress
from streamrec.settings import Settings


def test_plain_lines_when_not_a_terminal(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="streamrec.app.progress")
    stream = io.StringIO()  # not a terminal
    with Progress("fitting ALS", 4, "sweeps", stream=stream, every_s=0) as shown:
        assert not shown.drawing
        for n in range(1, 5):
            shown(n)
    assert stream.getvalue() == ""  # nothing drawn
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("fitting ALS: 1/4 sweeps (25%) in ")
    assert lines[-1].startswith("fitting ALS: done, 4/4 sweeps (100%) in ")
    assert len(lines) == 5


def test_lines_are_spaced_by_every_s(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="streamrec.app.progress")
    with Progress("replaying", 1000, "events", stream=io.StringIO(), every_s=3600) as shown:
        for n in range(1000):
            shown(n + 1)
    assert [r.getMessage().split(",")[0] for r in caplog.records] == ["replaying: done"]


def test_a_bar_on_a_terminal_stream() -> None:
    stream = io.StringIO()
    with Progress("publishing v1", None, "values", stream=stream, bar=True) as shown:
        assert shown.drawing
        shown(500, 2000)  # the total becomes known on the way
        shown(2000)
    out = stream.getvalue()
    assert "publishing v1" in out and "2000/2000" in out and "100%" in out


def _on_terminal(argv: list[str], env: dict[str, str], timeout_s: float = 180) -> tuple[int, str]:
    """Run ``streamrec ARGV`` with stderr on a pseudo-terminal; its exit status and all it
    wrote there."""
    master, slave = pty.openpty()
    # A terminal of 24 rows x 100 columns (a fresh pty is 0 x 0, where tqdm draws nothing).
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamrec", *argv],
        stdout=subprocess.DEVNULL, stderr=slave, env=env,
    )  # fmt: skip
    os.close(slave)
    chunks: list[bytes] = []

    def pump() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        code = proc.wait(timeout=timeout_s)
    finally:
        proc.kill()
        reader.join(10)
        os.close(master)
    return code, b"".join(chunks).decode("utf-8", "replace")


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")}
    return {**env, "STREAMREC_HOME": str(tmp_path / "home"), **extra}


def test_train_draws_fit_and_tune_bars_on_a_terminal_and_lines_elsewhere(tmp_path: Path) -> None:
    argv = ["train", "--dataset", "synthetic", "--factors", "4", "--iterations", "3"]
    code, out = _on_terminal([*argv, "--out", str(tmp_path / "a"), "--tune", "2"], _env(tmp_path))
    assert code == 0, out[-3000:]
    assert "\r" in out  # tqdm redraws in place
    assert "tuning: 100%" in out and "2/2 s" in out  # the budget's seconds
    fitted = [line for line in out.split("\r") if line.startswith("fitting ALS: 100%")]
    assert fitted and "sweeps/s" in fitted[-1], out[-2000:]
    plain = subprocess.run(
        [sys.executable, "-m", "streamrec", *argv, "--out", str(tmp_path / "b")],
        capture_output=True, text=True, timeout=180, env=_env(tmp_path),
    )  # fmt: skip
    assert plain.returncode == 0, plain.stderr[-3000:]
    assert "\r" not in plain.stderr  # no bar in a log
    assert "streamrec.app.progress: fitting ALS: done, 3/3 sweeps (100%)" in plain.stderr


@pytest.mark.integration
def test_publish_replay_and_loadgen_draw_bars_on_a_terminal(
    stack: Callable[..., Settings], tmp_path: Path
) -> None:
    s = stack()
    env = _env(tmp_path)
    for name in ("topic_events", "topic_dlq", "topic_models", "topic_items", "consumer_group",
                 "redis_prefix", "topic_events_partitions"):  # fmt: skip
        env[f"STREAMREC_{name.upper()}"] = str(getattr(s, name))
    code, out = _on_terminal(
        ["train", "--dataset", "synthetic", "--out", str(tmp_path / "m"), "--factors", "4",
         "--iterations", "2", "--publish"], env,
    )  # fmt: skip
    assert code == 0, out[-3000:]
    assert "publishing" in out and "100%" in out  # 0 lists + 1500 similar-item lists

    csv = tmp_path / "e.csv"
    csv.write_text("user_id,item_id,type,value,timestamp\n"
                   + "".join(f"u{i % 50},i{i % 70},play,,{1_700_000_000 + i}\n"
                             for i in range(1200)))  # fmt: skip
    code, out = _on_terminal(["replay", str(csv), "--progress", "100"], env)
    assert code == 0, out[-3000:]
    assert "replaying" in out and "1200/1200" in out
    assert "sent (" not in out  # the periodic lines give way to the bar on a terminal

    code, out = _on_terminal(["loadgen", "--rate", "2000", "--max-events", "600"], env)
    assert code == 0, out[-3000:]
    assert "loadgen" in out and "600/600" in out
