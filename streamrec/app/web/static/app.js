// streamrec demo page: plain JS, no build step. Talks only to this page's own server, the
// serving API: POST /api/events publishes to Kafka; GET /api/recs/<user> is the user's list
// under the page's filters (category, years); POST /v1/items adds an item to the catalog.
"use strict";

(function () {
  const POLL_MS = 500; // normal poll of the user's list
  const FAST_POLL_MS = 150; // for a few seconds after an event, to show the update promptly
  const FAST_FOR_MS = 4000;
  const LIST_N = 20;
  const VERBS = { play: "played", like: "liked", click: "opened", purchase: "bought", view: "viewed" };
  const POSITIVE = new Set(["play", "like", "click", "purchase", "view"]);

  const state = {
    user: null,
    isNew: false,
    session: new Map(), // item_id -> last event type sent from this page
    lastUpdated: null, // updated_at_ms of the list on screen
    lastVersion: null,
    shown: [], // item ids on screen
    pending: [], // events waiting for a list written after them: {ts, li}
    fastUntil: 0,
    timer: null,
    polling: false,
    received: 0, // Date.now() when the list was received
    serverSkew: 0,
    generation: 0, // bumps when the user changes: late answers for the old user are dropped
    lastKey: null, // what the list on screen shows (items, version, time): redraw when it moves
    filters: { category: "", yearMin: null, yearMax: null },
    years: null, // [lo, hi] of the catalog
  };

  const $ = (id) => document.getElementById(id);

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = text;
    return e;
  }

  async function api(path, opts) {
    const res = await fetch(path, { cache: "no-store", ...(opts || {}) });
    let body = null;
    try {
      body = await res.json();
    } catch (_) {
      body = { error: `HTTP ${res.status}` };
    }
    $("conn").className = "dot ok";
    return { status: res.status, body };
  }

  function toast(text, bad) {
    const t = $("toast");
    t.textContent = text;
    t.className = bad ? "bad" : "";
    t.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => (t.hidden = true), 3500);
  }

  function fmtTime(ms) {
    return new Date(ms).toLocaleTimeString([], { hour12: false });
  }

  function fmtAge(ms) {
    if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms ago`;
    if (ms < 120000) return `${(ms / 1000).toFixed(1)} s ago`;
    return `${Math.round(ms / 60000)} min ago`;
  }

  // --- items -------------------------------------------------------------------------------

  function itemRow(item, opts) {
    const li = el("li", "item");
    li.dataset.itemId = item.item_id;
    const main = el("div", "item-main");
    const name = el("button", "name link", item.name || item.item_id);
    name.type = "button";
    name.title = `${item.item_id}: open it (a click event) and show similar items`;
    name.addEventListener("click", () => act("click", item));
    main.appendChild(name);
    if (item.name && item.name !== item.item_id) main.appendChild(el("span", "id", item.item_id));
    if (opts.score && typeof item.score === "number") {
      main.appendChild(el("span", "score", item.score.toFixed(3)));
    }
    li.appendChild(main);
    if (opts.because) {
      const b = item.because;
      const why = el("div", "because");
      if (item.why === "content") {
        why.textContent = "new: from its content";
        why.classList.add("new");
      } else if (b) {
        const verb = VERBS[state.session.get(b.item_id)] || "played";
        why.textContent = `because you ${verb} ${b.name || b.item_id}`;
      } else {
        why.textContent = "popular right now";
      }
      li.appendChild(why);
    }
    if (opts.actions) {
      const acts = el("div", "actions");
      for (const [type, label, title] of [
        ["play", "▶ Play", "play it (a play event)"],
        ["like", "♥ Like", "like it"],
        ["skip", "Skip", "skip it (negative feedback)"],
      ]) {
        const b = el("button", `act act-${type}`, label);
        b.type = "button";
        b.title = title;
        b.addEventListener("click", () => act(type, item, li));
        acts.appendChild(b);
      }
      li.appendChild(acts);
    }
    const done = state.session.get(item.item_id);
    if (done) li.classList.add(`did-${done}`);
    return li;
  }

  function fill(list, items, opts) {
    list.replaceChildren(...items.map((i) => itemRow(i, opts)));
  }

  // --- users -------------------------------------------------------------------------------

  function setUser(user, isNew) {
    user = (user || "").trim();
    if (!user) return;
    state.user = user;
    state.isNew = !!isNew;
    state.generation += 1;
    state.session = new Map();
    state.lastUpdated = null;
    state.lastKey = null;
    state.lastVersion = null;
    state.shown = [];
    state.pending = [];
    $("recs").replaceChildren();
    $("activity").replaceChildren();
    $("history").replaceChildren();
    $("history-empty").hidden = false;
    $("current-user").textContent = "";
    $("current-user").append(
      isNew ? "You are a new user: " : "Listening as ",
      el("strong", "user-id", user),
      isNew ? " (no history yet)." : "."
    );
    $("recs-meta").textContent = "";
    $("recs-empty").textContent = isNew
      ? "No list yet: play, like or skip a few items above."
      : "Loading…";
    $("recs-empty").hidden = false;
    $("onboarding").hidden = !isNew;
    if (isNew) loadOnboarding();
    history.replaceState(null, "", `#user=${encodeURIComponent(user)}`);
    poll(true);
  }

  function newUserId() {
    const rnd = Math.random().toString(36).slice(2, 7);
    return `web-${Date.now().toString(36).slice(-4)}${rnd}`;
  }

  async function loadUsers() {
    try {
      const { status, body } = await api("/api/users?limit=50");
      if (status !== 200) return;
      const sel = $("user-select");
      const keep = sel.value;
      sel.replaceChildren(el("option", null, "an existing user…"));
      sel.firstChild.value = "";
      for (const u of body.users) {
        const o = el("option", null, u);
        o.value = u;
        sel.appendChild(o);
      }
      sel.value = keep;
    } catch (_) {
      /* the next refresh retries */
    }
  }

  async function loadOnboarding() {
    const { status, body } = await api("/api/popular?n=12");
    const list = $("onboarding-items");
    if (status !== 200) {
      list.replaceChildren(el("li", "muted", body.error || "no popular items yet"));
      return;
    }
    fill(list, body.items, { actions: true });
  }

  // --- events ------------------------------------------------------------------------------

  async function act(type, item, li) {
    if (!state.user) setUser(newUserId(), true);
    const gen = state.generation;
    const value = type === "play" ? 180 : type === "skip" ? 5 : null;
    const entry = el("li", "pending", `${VERBS[type] || type} ${item.name || item.item_id} …`);
    $("activity").prepend(entry);
    while ($("activity").children.length > 12) $("activity").lastChild.remove();
    let res;
    try {
      res = await api("/api/events", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ user_id: state.user, item_id: item.item_id, type, value }),
      });
    } catch (err) {
      entry.textContent = `not sent: ${err}`;
      entry.className = "bad";
      $("conn").className = "dot bad";
      return;
    }
    if (gen !== state.generation) return;
    if (res.status !== 202) {
      entry.textContent = `not sent: ${res.body.error}`;
      entry.className = "bad";
      toast(res.body.error, true);
      return;
    }
    state.session.set(item.item_id, type);
    for (const row of document.querySelectorAll(`li[data-item-id="${CSS.escape(item.item_id)}"]`)) {
      row.classList.add(`did-${type}`);
    }
    entry.textContent = `${VERBS[type] || type} ${item.name || item.item_id}: in Kafka, waiting for your list…`;
    state.pending.push({ ts: res.body.timestamp, li: entry, label: entry.textContent });
    state.fastUntil = Date.now() + FAST_FOR_MS;
    if (type !== "skip") showSimilar(item.item_id);
    poll(true);
  }

  // --- the user's list ---------------------------------------------------------------------

  function filterParams() {
    const f = state.filters;
    const parts = [];
    if (f.category) parts.push(`category=${encodeURIComponent(f.category)}`);
    if (state.years && f.yearMin !== null && f.yearMin > state.years[0]) parts.push(`year_min=${f.yearMin}`);
    if (state.years && f.yearMax !== null && f.yearMax < state.years[1]) parts.push(`year_max=${f.yearMax}`);
    return parts.length ? "&" + parts.join("&") : "";
  }

  function sessionParam() {
    const pos = [...state.session].filter(([, t]) => POSITIVE.has(t)).map(([i]) => i);
    return pos.slice(-20).map(encodeURIComponent).join(",");
  }

  async function poll(now) {
    clearTimeout(state.timer);
    if (!state.user) return;
    if (state.isNew && !state.session.size) return; // no list before the first event
    if (state.polling) {
      state.again = true;
      return;
    }
    state.polling = true;
    const gen = state.generation;
    try {
      const sess = sessionParam();
      const path = `/api/recs/${encodeURIComponent(state.user)}?n=${LIST_N}` +
        (sess ? `&session=${sess}` : "") + filterParams();
      const { status, body } = await api(path);
      if (gen === state.generation) {
        if (status === 200) showList(body);
        else if (status === 404) showNoList(body);
        else $("recs-meta").textContent = body.error || `HTTP ${status}`;
      }
    } catch (_) {
      $("conn").className = "dot bad";
    } finally {
      state.polling = false;
    }
    const fast = Date.now() < state.fastUntil || state.again;
    state.again = false;
    state.timer = setTimeout(() => poll(false), fast ? FAST_POLL_MS : POLL_MS);
  }

  function showNoList(body) {
    $("recs-empty").hidden = false;
    if (!state.isNew && !state.session.size) {
      $("recs-empty").textContent = `${body.error} Try an item below.`;
      $("onboarding").hidden = false;
      if (!$("onboarding-items").children.length) loadOnboarding();
    }
  }

  function showList(v) {
    state.received = Date.now();
    state.serverSkew = v.server_time_ms - state.received;
    const key = JSON.stringify([v.updated_at_ms, v.model_version, v.items.map((i) => i.item_id)]);
    const changed = key !== state.lastKey;
    renderMeta(v);
    // events the list now reflects: show how long they took to reach the list (also when
    // the list looks unchanged: two batches can write it within the same millisecond)
    state.pending = state.pending.filter((p) => {
      if (v.updated_at_ms >= p.ts) {
        p.li.textContent = p.label.replace(/: in Kafka, waiting for your list…$/, "") +
          `: list updated ${Math.max(0, v.updated_at_ms - p.ts)} ms later`;
        p.li.className = "ok";
        return false;
      }
      return true;
    });
    if (!changed) return;
    const before = new Set(state.shown);
    state.lastKey = key;
    state.lastUpdated = v.updated_at_ms;
    state.lastVersion = v.model_version;
    state.shown = v.items.map((i) => i.item_id);
    $("recs-empty").hidden = v.items.length > 0;
    if (!v.items.length) {
      $("recs-empty").textContent = filterParams() ? "Nothing matches these filters." : "The list is empty.";
    }
    fill($("recs"), v.items, { actions: true, because: true, score: true });
    if (before.size) {
      for (const li of $("recs").children) if (!before.has(li.dataset.itemId)) li.classList.add("fresh");
    }
    $("recs").dataset.updatedAtMs = String(v.updated_at_ms);
    $("recs").dataset.modelVersion = v.model_version;
    $("recs").dataset.source = v.source || "";
    $("recs").dataset.filters = filterParams();
    renderHistory(v.history || []);
    const m = $("model-version");
    if (m.dataset.version && m.dataset.version !== v.model_version) toast(`new model ${v.model_version}`);
  }

  function renderMeta(v) {
    const age = Date.now() + state.serverSkew - v.updated_at_ms;
    const meta = $("recs-meta");
    meta.replaceChildren(
      "model ",
      el("code", "model-version", v.model_version),
      " · updated ",
      el("time", "updated", `${fmtTime(v.updated_at_ms)} (${fmtAge(age)})`),
      ` · ${v.items.length} items`
    );
  }

  function renderHistory(hist) {
    const ul = $("history");
    ul.replaceChildren(
      ...hist.slice(0, 12).map((h) => {
        const li = el("li", h.total > 0 ? "chip" : "chip neg", h.name || h.item_id);
        li.title = `${h.item_id} · weight ${h.total.toFixed(2)}`;
        return li;
      })
    );
    $("history-empty").hidden = hist.length > 0;
  }

  // --- side panels -------------------------------------------------------------------------

  async function showSimilar(itemId) {
    const { status, body } = await api(`/api/similar/${encodeURIComponent(itemId)}?n=8`);
    if (status !== 200) {
      $("similar-empty").textContent = body.error;
      $("similar-empty").hidden = false;
      $("similar").replaceChildren();
      return;
    }
    $("similar-of").textContent = body.name || itemId;
    $("similar-empty").hidden = true;
    fill($("similar"), body.items, { actions: true });
  }

  async function loadPopular() {
    try {
      const { status, body } = await api("/api/popular?n=10" + filterParams());
      if (status === 200) fill($("popular"), body.items, { actions: true });
      else $("popular").replaceChildren(el("li", "muted", body.error));
    } catch (_) {
      $("conn").className = "dot bad";
    }
  }

  async function loadModel() {
    try {
      const { status, body } = await api("/api/model");
      const m = $("model-version");
      if (status === 200) {
        if (m.dataset.version && m.dataset.version !== body.version) {
          toast(`the worker now serves model ${body.version}`);
        }
        m.dataset.version = body.version;
        m.textContent = `model ${body.version} · ${body.n_items} items`;
      } else {
        m.textContent = body.error;
      }
    } catch (_) {
      $("conn").className = "dot bad";
    }
  }

  // --- filters and new items ---------------------------------------------------------------

  // The service reads the catalog topic on a thread after it starts: a page opened first gets
  // no categories yet, so it asks again each second for a minute before it offers no filters.
  async function loadCatalog(tries = 60) {
    const again = () => {
      if (tries > 1) setTimeout(() => loadCatalog(tries - 1), 1000);
    };
    let res;
    try {
      res = await api("/v1/categories");
    } catch (_) {
      again();
      return;
    }
    if (res.status !== 200) {
      again();
      return;
    }
    const { categories, years, features } = res.body;
    const names = Object.keys(categories);
    if (!names.length) {
      again(); // no catalog (yet): no filters to offer
      return;
    }
    const sel = $("filter-category");
    const pick = $("new-category");
    for (const c of names) {
      const o = el("option", null, `${c} (${categories[c]})`);
      o.value = c;
      sel.appendChild(o);
      const p = el("option", null, c);
      p.value = c;
      pick.appendChild(p);
    }
    if (years) {
      state.years = years;
      for (const id of ["year-min", "year-max"]) {
        $(id).min = years[0];
        $(id).max = years[1];
      }
      $("year-min").value = years[0];
      $("year-max").value = years[1];
      state.filters.yearMin = years[0];
      state.filters.yearMax = years[1];
      $("new-year").value = years[1];
    } else {
      $("year-min").hidden = $("year-max").hidden = true;
    }
    const box = $("new-features");
    for (const f of (features || []).filter((x) => x !== "year").slice(0, 4)) {
      const row = el("label", "feature", f);
      const input = document.createElement("input");
      Object.assign(input, { type: "range", min: 0, max: 1, step: 0.01, value: 0.5 });
      input.dataset.feature = f;
      input.setAttribute("aria-label", f);
      row.appendChild(input);
      box.appendChild(row);
    }
    renderYears();
    $("filters").hidden = false;
    $("add-panel").hidden = false;
  }

  function renderYears() {
    if (!state.years) return;
    $("year-range").textContent = `${state.filters.yearMin}–${state.filters.yearMax}`;
  }

  function filtersChanged() {
    const f = state.filters;
    f.category = $("filter-category").value;
    let lo = Number($("year-min").value);
    let hi = Number($("year-max").value);
    if (lo > hi) [lo, hi] = [hi, lo];
    f.yearMin = lo;
    f.yearMax = hi;
    renderYears();
    state.lastKey = null; // the same list, another view of it: redraw
    poll(true);
    loadPopular();
  }

  async function addItem(e) {
    e.preventDefault();
    const features = {};
    for (const input of $("new-features").querySelectorAll("input[data-feature]")) {
      features[input.dataset.feature] = Number(input.value);
    }
    const body = {
      name: $("new-name").value.trim(),
      categories: [$("new-category").value].filter(Boolean),
      year: $("new-year").value ? Number($("new-year").value) : null,
      features,
    };
    const entry = el("li", "pending", `publishing ${body.name} …`);
    $("new-items").prepend(entry);
    let res;
    try {
      res = await api("/v1/items", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
    } catch (err) {
      entry.textContent = `not published: ${err}`;
      entry.className = "bad";
      return;
    }
    if (res.status !== 202) {
      entry.textContent = `not published: ${res.body.error}`;
      entry.className = "bad";
      toast(res.body.error, true);
      return;
    }
    entry.textContent = `${body.name} (${res.body.item_id}): in the catalog`;
    entry.className = "ok";
    entry.dataset.itemId = res.body.item_id;
    state.fastUntil = Date.now() + 8000;
    poll(true);
  }

  // --- wiring ------------------------------------------------------------------------------

  function init() {
    $("new-user").addEventListener("click", () => setUser(newUserId(), true));
    $("user-select").addEventListener("change", (e) => setUser(e.target.value, false));
    $("user-select").addEventListener("focus", loadUsers);
    $("user-form").addEventListener("submit", (e) => {
      e.preventDefault();
      setUser($("user-input").value, false);
    });
    for (const id of ["filter-category", "year-min", "year-max"]) {
      $(id).addEventListener("input", filtersChanged);
    }
    $("filters-clear").addEventListener("click", () => {
      $("filter-category").value = "";
      if (state.years) {
        $("year-min").value = state.years[0];
        $("year-max").value = state.years[1];
      }
      filtersChanged();
    });
    $("add-item").addEventListener("submit", addItem);
    loadModel();
    loadCatalog();
    loadPopular();
    loadUsers();
    setInterval(loadModel, 5000);
    setInterval(loadPopular, 10000);
    const m = /^#user=(.+)$/.exec(location.hash);
    if (m) setUser(decodeURIComponent(m[1]), false);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
