"""``streamrec demo``: the whole pipeline, live, on this machine.

1. bring up the real Kafka broker and Redis (``streamrec infra up``),
2. train ALS on the generated dataset and publish it,
3. start ``streamrec worker`` as its own process,
4. publish play events: a few brand-new listeners, each hooked on one genre, and some
   existing users, and print their lists as read back from Redis, with how fresh they are,
5. serve the demo page on http://127.0.0.1:8000 (``--port``; the serving API of
   ``streamrec.app.web`` on uvicorn, with the page's endpoints): a person
   picks a user or starts as a new one, plays / likes / skips items (real events, through the
   server, to Kafka) and watches their list in Redis change,
6. until Ctrl-C or ``--duration``; then stop the page and the worker (the services keep
   running: ``streamrec infra down`` stops them).

Uses every layer below the application (``infra``, ``model``, ``producer``, the floor) and, in
the application, ``web`` and ``signals``; never ``cli`` or ``commands`` (which import it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import webbrowser
from pathlib import Path

import numpy as np

from streamrec import infra
from streamrec.app.signals import install_stop_handlers
from streamrec.app.web.names import SYNTHETIC_ID, load_names, synthetic_label
from streamrec.app.web.server import WebServer, demo_app
from streamrec.catalog import Item
from streamrec.connect import ensure_topics, redis_client
from streamrec.errors import InfraError
from streamrec.events import new_event
from streamrec.keys import Keys
from streamrec.model.data import build_matrix, synthetic
from streamrec.model.params import Params
from streamrec.model.publish import publish
from streamrec.model.train import train
from streamrec.producer.catalog import CatalogProducer
from streamrec.producer.producer import EventProducer
from streamrec.settings import Settings

SHOW_EVERY_S = 3.0
NEW_LISTENERS = 3


def _say(text: str) -> None:
    print(f"[demo] {text}", flush=True)


def run_demo(
    settings: Settings,
    duration_s: float | None,
    rate: float,
    out_dir: Path | None,
    port: int | None = 8000,
    open_browser: bool = True,
    names_path: Path | None = None,
) -> int:
    """The demo; ``port`` None = console only. Returns the exit status."""
    names = load_names(names_path) if names_path is not None else None
    # Bind the page's port first: a busy port fails in a second, not after the training.
    server = WebServer(port) if port is not None else None
    try:
        return _run(settings, duration_s, rate, out_dir, server, open_browser, names)
    finally:
        if server is not None:
            server.close()


def _run(
    settings: Settings,
    duration_s: float | None,
    rate: float,
    out_dir: Path | None,
    server: WebServer | None,
    open_browser: bool,
    names: dict[str, str] | None,
) -> int:
    stop = threading.Event()
    install_stop_handlers(stop)
    home = out_dir or settings.home / "demo"
    home.mkdir(parents=True, exist_ok=True)

    _say("1/4 starting Kafka (KRaft, 127.0.0.1) and Redis ...")
    state = infra.up(settings, echo=_say)
    for line in state.lines():
        _say("    " + line)
    ensure_topics(settings)

    _say("2/4 training ALS on the generated listening log (2,000 users, 1,500 tracks) ...")
    data = synthetic()
    matrix = build_matrix(data)
    catalog = demo_catalog(matrix.item_ids)
    with CatalogProducer(settings) as items:
        for item in catalog.values():
            items.send(item)
        items.flush()
    _say(f"    catalog: {len(catalog)} tracks (genre, year, 3 audio features) published to "
         f"{settings.topic_items}")  # fmt: skip
    # The catalog's content fits the content map too: tracks added on the page get factors.
    model = train(matrix, Params(), home / "model", extra={"source": "synthetic"},
                  settings=settings, catalog=catalog)  # fmt: skip
    keys = Keys(settings.redis_prefix)
    client = redis_client(settings)
    publish(model, settings, client)
    _say(f"    model {model.version}: {model.n_items} items, published to {keys.model}")

    log_path = home / "worker.log"
    _say(f"3/4 starting the worker (log: {log_path}) ...")
    env = {
        **os.environ,
        "STREAMREC_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "STREAMREC_REDIS_URL": settings.redis_url,
        "STREAMREC_REDIS_PREFIX": settings.redis_prefix,
    }
    with log_path.open("ab") as log_file:
        worker = subprocess.Popen(
            [sys.executable, "-m", "streamrec", "worker"],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        if server is not None:
            app, closers = demo_app(settings, names, on_event=_say)
            server.start(app, closers)
            _say(f"the demo page: {server.url}  (play, like or skip items; watch your list)")
            if open_browser:
                _open_browser(server.url)
        _say(f"4/4 publishing ~{rate:g} play events/s; lists below are read back from Redis")
        _say("    (Ctrl-C to stop)" if duration_s is None else f"    (for {duration_s:g} s)")
        _stream(settings, client, keys, model.item_ids, rate, duration_s, stop, worker)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(timeout=10)
        _say(
            f"worker stopped (exit {worker.returncode}); Kafka and Redis keep running: "
            "'streamrec infra down' stops them"
        )
    return 0


#: The demo catalog's audio features (what the page's "add an item" sliders set), 0..1.
FEATURES = ("energy", "danceability", "acousticness")


def demo_catalog(item_ids: tuple[str, ...]) -> dict[str, Item]:
    """A catalog record for each generated track: its genre as category, a release year and
    three audio features, each genre with its own typical sound (so content predicts taste)."""
    out = {}
    for item in item_ids:
        label = synthetic_label(item)
        m = SYNTHETIC_ID.match(item)
        if label is None or m is None:
            continue
        g, t = int(m.group(1)), int(m.group(2))
        rng = np.random.default_rng(g * 10_000 + t)
        base = np.array([(g * 5 % 12) / 11, (g * 7 % 12) / 11, 1 - (g * 5 % 12) / 11])
        feats = np.clip(base + rng.normal(0, 0.08, 3), 0, 1)
        out[item] = Item(
            item_id=item,
            name=label,
            categories=(label.rpartition(" · ")[2],),
            year=1960 + (t * 37 + g * 11) % 66,
            available=True,
            features={k: round(float(v), 3) for k, v in zip(FEATURES, feats, strict=True)},
            updated_at_ms=int(time.time() * 1000),
        )
    return out


def _open_browser(url: str) -> None:
    """Open ``url`` in the desktop's browser, only where there is a desktop (a text-mode
    browser taking over this terminal would be worse than nothing)."""
    if (
        sys.platform in ("darwin", "win32")
        or os.environ.get("DISPLAY")
        or (os.environ.get("WAYLAND_DISPLAY"))
    ):
        threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()


def _stream(
    settings: Settings,
    client: object,
    keys: Keys,
    item_ids: tuple[str, ...],
    rate: float,
    duration_s: float | None,
    stop: threading.Event,
    worker: subprocess.Popen[bytes],
) -> None:
    import redis

    assert isinstance(client, redis.Redis)
    rng = np.random.default_rng(int(time.time()))
    by_genre: dict[str, list[str]] = {}
    for item in item_ids:
        by_genre.setdefault(item.split("-")[0], []).append(item)
    genres = sorted(by_genre)
    run_id = f"{int(time.time()) % 100000:05d}"
    listeners = {
        f"new-listener-{run_id}-{n}": genres[int(rng.integers(len(genres)))]
        for n in range(NEW_LISTENERS)
    }
    regulars = [f"user-{int(u):04d}" for u in rng.integers(0, 2000, size=20)]
    sent_at: dict[str, int] = {}
    started = time.monotonic()
    next_show = started + SHOW_EVERY_S
    interval = 1.0 / rate
    with EventProducer(settings) as producer:
        n = 0
        while not stop.is_set():
            if duration_s is not None and time.monotonic() - started >= duration_s:
                break
            if worker.poll() is not None:
                raise InfraError(f"the worker exited with {worker.returncode}; see its log")
            # A new listener plays about one track every couple of seconds, as a person would
            # (a genre has ~125 tracks; played faster, they would soon have heard them all).
            if n % 25 == 0:
                user = list(listeners)[(n // 25) % NEW_LISTENERS]
                item = str(rng.choice(by_genre[listeners[user]]))
            else:
                user = str(rng.choice(regulars))
                item = str(rng.choice(item_ids))
            event = new_event(user, item, "play", value=float(rng.integers(30, 300)))
            producer.send(event)
            sent_at[user] = event.timestamp
            n += 1
            if time.monotonic() >= next_show:
                _show(client, keys, listeners, sent_at, producer.delivered)
                next_show = time.monotonic() + SHOW_EVERY_S
            stop.wait(interval)
    _show(client, keys, listeners, sent_at, producer.delivered)


def _show(
    client: object, keys: Keys, listeners: dict[str, str], sent_at: dict[str, int], sent: int
) -> None:
    import redis

    assert isinstance(client, redis.Redis)
    _say(f"--- {sent} events delivered to Kafka ---")
    for user, genre in listeners.items():
        raw = client.get(keys.recs(user))
        if raw is None:
            _say(f"{user} (plays {genre}): no list yet")
            continue
        value = json.loads(raw)
        top = [i["item_id"] for i in value["items"][:5]]
        share = sum(t.startswith(genre) for t in (i["item_id"] for i in value["items"][:10]))
        lag = value["updated_at_ms"] - sent_at.get(user, value["updated_at_ms"])
        _say(
            f"{user} (plays {genre}): {share}/10 of the top 10 are {genre}; top 5 {top}; "
            f"model {value['model_version']}, list written {max(lag, 0)} ms after the last event"
        )
