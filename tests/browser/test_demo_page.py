"""The demo page in a real browser: Debian's Chromium, headless, driven by Playwright.

Against the real stack: Kafka, Redis, a worker thread and the page's server. A new user plays
three items on the page; their list must appear within 10 s without those items. The page's
screenshot is kept as a test artifact (``artifacts/browser/``, or ``$STREAMREC_ARTIFACTS``).

Chromium comes from the distribution (``apt-get install chromium``; the Makefile and CI install
it), never from Playwright's download. Without it, or without the ``playwright`` package, the
test is skipped saying so, unless ``STREAMREC_REQUIRE_BROWSER=1`` (CI), where it fails.
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from streamrec.app.demo import demo_catalog
from streamrec.app.web.server import serve
from streamrec.artifact import load_model
from streamrec.connect import ensure_topics, redis_client
from streamrec.model.data import build_matrix, synthetic
from streamrec.model.params import Params
from streamrec.model.publish import publish
from streamrec.model.train import train
from streamrec.producer.catalog import CatalogProducer
from streamrec.settings import Settings

pytestmark = pytest.mark.integration

CHROMIUM = Path(os.environ.get("STREAMREC_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(
    os.environ.get("STREAMREC_ARTIFACTS", Path(__file__).resolve().parents[2] / "artifacts")
)


def _need_browser() -> None:
    missing = []
    if importlib.util.find_spec("playwright") is None:
        missing.append("the playwright package (pip install -e '.[dev]')")
    if not CHROMIUM.is_file():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    if missing:
        reason = "no " + " and no ".join(missing)
        if os.environ.get("STREAMREC_REQUIRE_BROWSER") == "1":
            pytest.fail(f"STREAMREC_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)


def test_new_user_clicks_three_items_and_gets_a_list_without_them(
    stack: Callable[..., Settings], run_worker: Callable[..., Any], small_model: Path
) -> None:
    _need_browser()
    from playwright.sync_api import sync_playwright

    s = stack()
    model = load_model(small_model)
    publish(model, s, redis_client(s))
    run_worker(s)
    server = serve(s, port=0)
    shot = ARTIFACTS / "browser" / "demo-page.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))

        def console(msg: Any) -> None:
            # a user without a list yet is a 404 by contract; the browser logs it, that's fine
            if msg.type == "error" and "/api/recs/" not in msg.location.get("url", ""):
                problems.append(f"console: {msg.text} ({msg.location.get('url')})")

        page.on("console", console)
        try:
            page.goto(server.url, wait_until="domcontentloaded")
            page.click("#new-user")
            user = page.locator("#current-user .user-id").inner_text()
            assert user.startswith("web-")
            cards = page.locator("#onboarding-items li[data-item-id]")
            cards.nth(2).wait_for(timeout=5_000)
            clicked = [cards.nth(n).get_attribute("data-item-id") for n in range(3)]
            assert len(set(clicked)) == 3 and None not in clicked
            for n in range(3):
                cards.nth(n).locator("button.act-play").click()
            started = time.monotonic()
            page.wait_for_function(
                """(ids) => {
                    const rows = [...document.querySelectorAll("#recs li[data-item-id]")];
                    return rows.length > 0 && !rows.some((r) => ids.includes(r.dataset.itemId));
                }""",
                arg=clicked,
                timeout=10_000,
            )
            assert time.monotonic() - started < 10
            shown = page.locator("#recs li[data-item-id]")
            ids = [shown.nth(n).get_attribute("data-item-id") for n in range(shown.count())]
            assert ids and not set(clicked) & set(ids)
            assert page.locator("#recs-meta .model-version").inner_text() == model.version
            assert "updated" in page.locator("#recs-meta").inner_text()
            because = page.locator("#recs .because").first.inner_text()
            assert because.startswith("because you played Track ")
            # the page's events went through Kafka and the worker: Redis has the same list
            stored = redis_client(s).get(f"{s.redis_prefix}:recs:{user}")
            assert stored is not None
            # every play is acknowledged and, once the list has caught up, marked as such
            page.wait_for_function(
                "document.querySelectorAll('#activity li.ok').length === 3", timeout=5_000
            )
        finally:
            page.screenshot(path=str(shot), full_page=True)
            browser.close()
            server.close()
    assert shot.stat().st_size > 10_000
    assert not problems, problems


def test_filters_redraw_the_list_and_a_new_item_reaches_it_from_its_content(
    stack: Callable[..., Settings], run_worker: Callable[..., Any], tmp_path: Path
) -> None:
    """The page's category picker and year slider re-query the serving API and redraw the
    list, which then holds only matching items; an item added with the form reaches the
    list within seconds, explained "new: from its content"."""
    _need_browser()
    from playwright.sync_api import sync_playwright

    s = stack()
    matrix = build_matrix(synthetic(400, 300, seed=3))
    catalog = demo_catalog(matrix.item_ids)
    ensure_topics(s)
    with CatalogProducer(s) as items:
        for item in catalog.values():
            items.send(item)
    model = train(matrix, Params(factors=16, iterations=8), tmp_path / "model",
                  settings=s, catalog=catalog)  # fmt: skip
    assert model.content_path is not None
    publish(model, s, redis_client(s))
    run_worker(s)
    server = serve(s, port=0)
    shot = ARTIFACTS / "browser" / "demo-page-filters.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    genre_of = {i: c.categories[0] for i, c in catalog.items()}
    year_of = {i: c.year for i, c in catalog.items()}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        page = browser.new_page(viewport={"width": 1280, "height": 1200})
        page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        try:
            page.goto(server.url, wait_until="domcontentloaded")
            page.click("#new-user")
            cards = page.locator("#onboarding-items li[data-item-id]")
            cards.nth(2).wait_for(timeout=5_000)
            played = [cards.nth(n).get_attribute("data-item-id") for n in range(3)]
            for n in range(3):
                cards.nth(n).locator("button.act-play").click()
            page.wait_for_function(
                "document.querySelectorAll('#recs li[data-item-id]').length >= 10",
                timeout=10_000,
            )
            genre = genre_of[str(played[0])]
            page.locator("#filters").wait_for(state="visible", timeout=5_000)
            page.select_option("#filter-category", genre)
            # the list is redrawn from the API: every item of the genre, and as many as asked
            page.wait_for_function(
                """(g) => document.querySelector('#recs').dataset.filters.includes('category=')
                    && [...document.querySelectorAll('#recs li[data-item-id] .name')]
                       .every((n) => n.textContent.endsWith(' · ' + g))""",
                arg=genre,
                timeout=10_000,
            )
            shown = _shown(page)
            assert shown and all(genre_of[i] == genre for i in shown)
            assert not set(played) & set(shown)
            in_genre = sum(1 for i, g in genre_of.items() if g == genre and i not in played)
            assert len(shown) == min(20, in_genre)
            # the year slider: only tracks of 2000 and later
            page.evaluate(
                """() => { const r = document.getElementById('year-min'); r.value = 2000;
                           r.dispatchEvent(new Event('input')); }"""
            )
            page.wait_for_function(
                "document.querySelector('#recs').dataset.filters.includes('year_min=2000')",
                timeout=10_000,
            )
            shown = _shown(page)
            assert all(genre_of[i] == genre and (year_of[i] or 0) >= 2000 for i in shown)
            want = [i for i, g in genre_of.items()
                    if g == genre and (year_of[i] or 0) >= 2000 and i not in played]  # fmt: skip
            assert len(shown) == min(20, len(want))
            page.click("#filters-clear")
            page.select_option("#filter-category", genre)
            # a new item of that genre, added with the form: in the list within seconds
            page.fill("#new-name", "Brand New Tune")
            page.select_option("#new-category", genre)
            page.click("#new-submit")
            page.locator("#new-items li.ok").wait_for(timeout=10_000)
            new_id = page.locator("#new-items li.ok").first.get_attribute("data-item-id")
            assert new_id and new_id.startswith("new-")
            page.wait_for_function(
                """(id) => { const li = document.querySelector(`#recs li[data-item-id="${id}"]`);
                    return li && li.querySelector('.because').textContent
                        === 'new: from its content'; }""",
                arg=new_id,
                timeout=10_000,
            )
        finally:
            page.screenshot(path=str(shot), full_page=True)
            browser.close()
            server.close()
    assert not problems, problems


def _shown(page: Any) -> list[str]:
    rows = page.locator("#recs li[data-item-id]")
    return [str(rows.nth(n).get_attribute("data-item-id")) for n in range(rows.count())]


def test_the_filters_appear_once_the_catalog_arrives_after_the_page(
    stack: Callable[..., Settings], tmp_path: Path
) -> None:
    """The service reads the catalog topic on a thread: a page opened before it has any
    category keeps asking, and offers the filters and the form as soon as the catalog is
    there (CI once opened the page first, and its filters never showed)."""
    _need_browser()
    from playwright.sync_api import sync_playwright

    s = stack()
    matrix = build_matrix(synthetic(400, 300, seed=3))
    catalog = demo_catalog(matrix.item_ids)
    ensure_topics(s)
    model = train(matrix, Params(factors=16, iterations=4), tmp_path / "model", settings=s)
    publish(model, s, redis_client(s))
    server = serve(s, port=0)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                     args=CHROMIUM_ARGS)  # fmt: skip
        page = browser.new_page()
        try:
            page.goto(server.url, wait_until="domcontentloaded")
            time.sleep(1.5)  # the page has asked at least once, and found no category
            assert page.locator("#filters").is_hidden()
            with CatalogProducer(s) as items:
                for item in catalog.values():
                    items.send(item)
            page.locator("#filters").wait_for(state="visible", timeout=15_000)
            assert page.locator("#add-panel").is_visible()
        finally:
            browser.close()
            server.close()
