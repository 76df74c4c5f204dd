"""``streamrec demo`` (streamrec/app/demo.py): what fails before anything starts, what it prints,
the events it publishes, and the whole run against the real Kafka, Redis and a worker process."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from streamrec.app import demo
from streamrec.connect import ensure_topics, redis_client
from streamrec.errors import ConfigError, InfraError, InputError
from streamrec.keys import Keys, read_model_pointer, recs_value
from streamrec.settings import Settings, load_settings
from tests.conftest import consume_events, export_settings

GENRE = re.compile(r"^(g\d{2})-track-\d{4}$")


@pytest.fixture()
def own_signals() -> Iterator[None]:
    """run_demo installs SIGINT/SIGTERM handlers in this (pytest's) process: put pytest's back."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def _delivered(out: str) -> int:
    """The last "--- N events delivered to Kafka ---" the demo printed."""
    return int(re.findall(r"--- (\d+) events delivered to Kafka ---", out)[-1])


# --- what fails fast -------------------------------------------------------------------------


def test_a_busy_port_fails_before_anything_starts(tmp_path: Path, own_signals: None) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        with pytest.raises(ConfigError, match="pass --port"):
            demo.run_demo(
                load_settings(), 1.0, 50.0, tmp_path / "demo", sock.getsockname()[1], False
            )
    assert not (tmp_path / "demo").exists()  # nothing trained, no service touched


def test_a_missing_names_file_fails_before_anything_starts(
    tmp_path: Path, own_signals: None
) -> None:
    with pytest.raises(InputError, match="no such names file"):
        demo.run_demo(
            load_settings(), 1.0, 50.0, tmp_path / "demo", None, names_path=tmp_path / "no.csv"
        )
    assert not (tmp_path / "demo").exists()


def test_the_browser_opens_only_where_there_is_a_desktop(monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    called = threading.Event()

    def browser(url: str) -> bool:
        opened.append(url)
        called.set()
        return True

    monkeypatch.setattr(demo.webbrowser, "open", browser)
    monkeypatch.setattr(demo.sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    demo._open_browser("http://127.0.0.1:1/")  # a text console: a text browser would take it
    assert not called.wait(0.3) and opened == []
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    demo._open_browser("http://127.0.0.1:2/")
    assert called.wait(5) and opened == ["http://127.0.0.1:2/"]


# --- against the real services ---------------------------------------------------------------


@pytest.mark.integration
def test_show_prints_each_listeners_list_as_redis_has_it(
    stack: Callable[..., Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    s = stack()
    client, keys = redis_client(s), Keys(s.redis_prefix)
    items = [(f"g03-track-{n:04d}", 1.0 - n / 100) for n in range(7)]
    items += [(f"g05-track-{n:04d}", 0.5) for n in range(4)]
    client.set(keys.recs("fan"), recs_value("fan", items, "v-7", 10_250))
    client.set(keys.recs("late"), recs_value("late", items[7:], "v-7", 9_000))
    listeners = {"fan": "g03", "late": "g05", "newbie": "g07"}
    demo._show(client, keys, listeners, {"fan": 10_000, "late": 9_500}, 42)
    top5 = [i for i, _ in items[:5]]
    assert capsys.readouterr().out.splitlines() == [
        "[demo] --- 42 events delivered to Kafka ---",
        f"[demo] fan (plays g03): 7/10 of the top 10 are g03; top 5 {top5}; model v-7, "
        "list written 250 ms after the last event",
        f"[demo] late (plays g05): 4/10 of the top 10 are g05; top 5 {[i for i, _ in items[7:]]}; "
        "model v-7, list written 0 ms after the last event",
        "[demo] newbie (plays g07): no list yet",
    ]


@pytest.mark.integration
def test_stream_hooks_each_new_listener_on_one_genre(
    stack: Callable[..., Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    s = stack()
    ensure_topics(s)
    catalog = tuple(f"g{g:02d}-track-{t:04d}" for g in range(4) for t in range(12))
    stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        demo._stream(
            s, redis_client(s), Keys(s.redis_prefix), catalog, 200.0, 2.0, threading.Event(),
            stand_in,
        )  # fmt: skip
    finally:
        stand_in.kill()
        stand_in.wait()
    out = capsys.readouterr().out
    sent = _delivered(out)
    assert sent >= 75  # enough for every new listener to have played
    events = [e for _, e in consume_events(s, sent)]
    assert len(events) == sent
    assert all(e.type == "play" and 30 <= (e.value or 0) < 300 for e in events)
    assert all(e.item_id in catalog for e in events)
    new = [e for e in events if e.user_id.startswith("new-listener-")]
    assert len(new) == (sent + 24) // 25  # one event in 25 is a new listener's
    genres: dict[str, set[str]] = {}
    for e in new:
        m = GENRE.match(e.item_id)
        assert m is not None
        genres.setdefault(e.user_id, set()).add(m.group(1))
    assert len(genres) == demo.NEW_LISTENERS
    printed = dict(re.findall(r"\[demo\] (new-listener-\S+) \(plays (g\d\d)\)", out))
    assert {u: {g} for u, g in printed.items()} == genres  # each plays the genre it was given
    regulars = {e.user_id for e in events} - set(genres)
    assert regulars and all(re.fullmatch(r"user-\d{4}", u) for u in regulars)


@pytest.mark.integration
def test_stream_stops_when_the_worker_dies(stack: Callable[..., Settings]) -> None:
    s = stack()
    ensure_topics(s)
    dead = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    dead.wait()
    with pytest.raises(InfraError, match="the worker exited with 3"):
        demo._stream(
            s, redis_client(s), Keys(s.redis_prefix), ("g00-track-0001",), 50.0, 30.0,
            threading.Event(), dead,
        )  # fmt: skip


@pytest.mark.integration
def test_the_whole_demo(
    stack: Callable[..., Settings],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    own_signals: None,
) -> None:
    s = stack()
    # The demo's worker is a child process that reads its settings from the environment.
    export_settings(monkeypatch, s, "topic_events", "topic_dlq", "topic_models", "topic_items",
                    "consumer_group", "topic_events_partitions", "poll_timeout_s",
                    "metrics_bind")  # fmt: skip
    seen: dict[str, Any] = {}

    def page(url: str) -> None:  # instead of a browser: ask the page's API what it serves
        def fetch() -> None:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and "popular" not in seen:
                try:
                    for name in ("model", "popular"):
                        with urllib.request.urlopen(f"{url}/api/{name}", timeout=5) as res:
                            seen[name] = json.loads(res.read())
                except OSError:
                    time.sleep(0.2)

        threading.Thread(target=fetch, daemon=True).start()

    monkeypatch.setattr(demo, "_open_browser", page)
    home = tmp_path / "demo"
    assert demo.run_demo(s, 6.0, 100.0, home, port=0, open_browser=True) == 0
    out = capsys.readouterr().out

    for step in ("1/4 starting Kafka", "2/4 training ALS", "3/4 starting the worker",
                 "4/4 publishing"):  # fmt: skip
        assert f"[demo] {step}" in out
    assert re.search(r"\[demo\] the demo page: http://127\.0\.0\.1:\d+ ", out)
    assert "[demo] worker stopped (exit 0)" in out  # SIGTERM: it finished its batch and left
    version = re.findall(r"model (\S+): \d+ items, published to ", out)[0]
    client, keys = redis_client(s), Keys(s.redis_prefix)
    pointer = read_model_pointer(client, keys)
    assert pointer is not None and pointer.version == version
    assert pointer.path == home / "model"
    assert seen["model"]["version"] == version and len(seen["popular"]["items"]) == 20
    assert (home / "worker.log").stat().st_size > 0

    # the worker folded the demo's events in: every listener it wrote has a list of this model
    sent = _delivered(out)
    assert sent > 0
    users = {e.user_id for e in [e for _, e in consume_events(s, sent)]}
    written = {u: raw for u in users if (raw := client.get(keys.recs(u))) is not None}
    assert written, f"no list written for any of {len(users)} users (see {home / 'worker.log'})"
    for user, raw in written.items():
        value = json.loads(raw)
        assert value["model_version"] == version and value["user_id"] == user
