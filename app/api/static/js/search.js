// Search view: form, histogram, exact total, hit rows with paging, terms panel, live tail.
import { api, whoami } from "./api.js";
import { el } from "./format.js";
import { drawHistogram } from "./histogram.js";
import { addClause, loadTerms, suggestFields } from "./terms.js";
import { headersCell, keyCell, valueCell } from "./value.js";

const PAGE = 50;
const AROUND = 10; // records each side of a hit in its "around" link
const PRESETS = { "15m": 15 * 60_000, "1h": 3_600_000, "24h": 86_400_000, "7d": 7 * 86_400_000 };
const SORTS = ["-timestamp", "timestamp", "offset", "-offset", "relevance"];

const TEMPLATE = `
<form id="search-form" class="card" autocomplete="off">
  <div class="row">
    <label class="grow">Topics <select id="topics" multiple size="3"></select></label>
    <div class="grow2">
      <label for="q">Query <a href="#" id="query-help">syntax help</a></label>
      <input id="q" name="q" type="search" placeholder='timeout AND value.service:payments'>
      <div id="query-help-text" class="help" hidden>
        <p><code>timeout</code> bare words search key and value; <code>"disk full"</code> a phrase;
        <code>value.level:error</code> a JSON field; <code>value.status:[500 TO 599]</code>,
        <code>value.latency_ms:>250</code> ranges; <code>headers.trace:abc</code>, <code>key:k</code>,
        <code>offset:[10 TO 20]</code>; <code>AND</code>, <code>OR</code>, <code>NOT</code>, parentheses;
        empty or <code>*</code> matches every record.</p>
      </div>
    </div>
  </div>
  <div class="row">
    <span class="presets">Last
      <button type="button" class="preset" data-range="15m">15 min</button>
      <button type="button" class="preset" data-range="1h">1 h</button>
      <button type="button" class="preset" data-range="24h">24 h</button>
      <button type="button" class="preset" data-range="7d">7 d</button>
      <button type="button" class="preset" data-range="">all</button>
    </span>
    <label>From <input id="start" placeholder="RFC 3339 or epoch ms"></label>
    <label>To <input id="end" placeholder="RFC 3339 or epoch ms"></label>
    <label>Partition <input id="partition" class="narrow" placeholder="all" inputmode="numeric"></label>
    <label>Sort <select id="sort">${SORTS.map((s) => `<option>${s}</option>`).join("")}</select></label>
    <button type="submit" id="search-button" class="primary">Search</button>
    <label class="toggle"><input type="checkbox" id="tail"> Live tail</label>
    <span id="tail-status" class="muted"></span>
  </div>
</form>
<p id="error" class="error" role="alert" hidden></p>
<div class="layout">
  <section class="results">
    <svg id="histogram" role="img" aria-label="matches over time"></svg>
    <p class="summary"><span id="total"></span> <span id="total-label"></span>
      <span id="took" class="muted"></span></p>
    <div id="hits"></div>
    <button type="button" id="load-more" hidden>Load more</button>
  </section>
  <aside id="terms" class="card">
    <label>Top values of <input id="terms-field" list="terms-fields" placeholder="value.level"></label>
    <datalist id="terms-fields"></datalist>
    <ol id="terms-list"></ol>
    <p id="terms-note" class="muted"></p>
  </aside>
</div>`;

function split(v) {
  return (v || "")
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
}

function shellQuote(s) {
  return /^[\w.-]+$/.test(s) ? s : `'${s.replace(/'/g, "'\\''")}'`;
}

async function copy(text, button) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // No clipboard API (plain http on another host): select the text for Ctrl+C.
    const code = button.previousElementSibling;
    getSelection().selectAllChildren(code);
    document.execCommand?.("copy");
  }
  button.textContent = "copied";
  setTimeout(() => (button.textContent = "copy"), 1500);
}

function hitRow(hit, q, bootstrap, many) {
  const lo = Math.max(hit.offset - AROUND, 0);
  const around = el(
    "a",
    {
      class: "around",
      href: `/?${new URLSearchParams({
        topic: hit.topic,
        partition: String(hit.partition),
        q: `offset:[${lo} TO ${hit.offset + AROUND}]`,
        sort: "offset",
      })}`,
      title: `records ${lo} to ${hit.offset + AROUND} of partition ${hit.partition}`,
    },
    "around",
  );
  const code = el(
    "code",
    {},
    `kcat -C -b ${bootstrap} -t ${shellQuote(hit.topic)} -p ${hit.partition} ` +
      `-o ${hit.offset} -c 1`,
  );
  const button = el("button", { type: "button", class: "copy" }, "copy");
  button.addEventListener("click", () => copy(code.textContent, button));
  const meta = el(
    "div",
    { class: "meta" },
    el("span", { class: "time" }, hit.timestamp),
    many && el("span", { class: "topic" }, hit.topic),
    el("span", { class: "partition" }, `p${hit.partition}`),
    el("span", { class: "offset" }, `@${hit.offset}`),
    el("span", { class: "key" }, "key ", keyCell(hit, q)),
    around,
  );
  const dataset = {
    topic: hit.topic,
    partition: String(hit.partition),
    offset: String(hit.offset),
    timestamp: String(hit.timestamp_ms),
  };
  return el(
    "article",
    { class: "hit", dataset },
    meta,
    hit.headers?.length ? headersCell(hit) : null,
    valueCell(hit, q),
    el("div", { class: "kcat" }, code, button),
  );
}

export function render(root, params, nav) {
  root.innerHTML = TEMPLATE;
  const $ = (sel) => root.querySelector(sel);
  const topics = split(params.getAll("topic").join(","));
  const partitions = split(params.getAll("partition").join(","));
  const sort = SORTS.includes(params.get("sort")) ? params.get("sort") : "-timestamp";
  $("#q").value = params.get("q") || "";
  $("#start").value = params.get("start") || "";
  $("#end").value = params.get("end") || "";
  $("#partition").value = partitions.join(",");
  $("#sort").value = sort;
  $("#terms-field").value = params.get("field") || "";
  const errorBox = $("#error");
  const showError = (err) => {
    if (err.status === 401) return; // the sign-in form says it
    errorBox.textContent = err.message;
    errorBox.hidden = false;
  };

  const formParams = (over = {}) => {
    const p = new URLSearchParams();
    const chosen = [...$("#topics").selectedOptions].map((o) => o.value);
    const values = {
      topic: chosen.join(","),
      q: $("#q").value.trim(),
      start: $("#start").value.trim(),
      end: $("#end").value.trim(),
      partition: split($("#partition").value).join(","),
      sort: $("#sort").value === "-timestamp" ? "" : $("#sort").value,
      // Only a field the user chose goes in the URL, not the one suggested.
      field: $("#terms-field").dataset.suggested ? "" : $("#terms-field").value.trim(),
      ...over,
    };
    for (const [k, v] of Object.entries(values)) if (v) p.set(k, v);
    return p;
  };
  $("#search-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    nav(formParams());
  });
  $("#query-help").addEventListener("click", (ev) => {
    ev.preventDefault();
    $("#query-help-text").hidden = !$("#query-help-text").hidden;
  });
  for (const b of root.querySelectorAll(".preset")) {
    b.addEventListener("click", () => {
      const width = PRESETS[b.dataset.range];
      const start = width ? new Date(Date.now() - width).toISOString() : "";
      nav(formParams({ start, end: "" }));
    });
  }
  // Enter or leaving the box picks the field (it is outside the form: no submit).
  const pickField = () => {
    const input = $("#terms-field");
    if (input.value.trim() === input.dataset.shown) return;
    delete input.dataset.suggested;
    input.dataset.shown = input.value.trim();
    nav(formParams());
  };
  $("#terms-field").addEventListener("change", pickField);
  $("#terms-field").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") {
      ev.preventDefault();
      pickField();
    }
  });

  run(root, $, { topics, partitions, sort, params, nav, formParams, showError });
}

async function run(root, $, ctx) {
  const { partitions, sort, params, nav, formParams, showError } = ctx;
  let topics = ctx.topics;
  let all;
  try {
    all = await api("/topics");
  } catch (err) {
    showError(err);
    return;
  }
  const names = all.map((t) => t.name).sort();
  if (!topics.length && names.length) {
    // A first visit: the first topic, every record, newest first.
    topics = [names[0]];
    const p = new URLSearchParams(params);
    p.set("topic", topics[0]);
    history.replaceState(null, "", `/?${p}`);
  }
  const select = $("#topics");
  for (const name of new Set([...names, ...topics])) {
    const o = new Option(name, name, false, topics.includes(name));
    select.append(o);
  }
  if (!topics.length) {
    $("#total-label").textContent = "No topics yet: produce to one with any Kafka client.";
    return;
  }
  const q = params.get("q") || "";
  const filters = {
    topic: topics.join(","),
    q,
    start: params.get("start") || undefined,
    end: params.get("end") || undefined,
    partition: partitions.map(Number),
  };
  const me = await whoami().catch(() => null);
  const bootstrap = (me && me.kafka_bootstrap) || `${location.hostname}:9092`;
  const many = topics.length > 1;
  const hitsBox = $("#hits");
  const seen = new Set();
  let total = 0;
  const setTotal = (n) => {
    total = n;
    $("#total").textContent = String(n);
    $("#total").dataset.value = String(n);
    $("#total-label").textContent = n === 1 ? "match" : "matches";
  };
  const add = (hits, { prepend = false } = {}) => {
    let added = 0;
    for (const h of hits) {
      const id = `${h.topic}/${h.partition}/${h.offset}`;
      if (seen.has(id)) continue;
      seen.add(id);
      added++;
      const row = hitRow(h, q, bootstrap, many);
      // The tail's hits come oldest first: each goes on top, so the newest ends up first.
      if (prepend) hitsBox.insertBefore(row, hitsBox.firstChild);
      else hitsBox.append(row);
    }
    return added;
  };

  const histogram = api("/search/histogram", filters);
  histogram.catch(() => {}); // shown below, or the search's own error is
  let page;
  try {
    page = await api("/search", { ...filters, sort, limit: PAGE });
  } catch (err) {
    showError(err);
    // No empty chart card under the error: it would read as "no matches".
    $("#histogram").style.display = "none";
    $("#terms").hidden = true;
    return;
  }
  if (!root.isConnected) return;
  setTotal(page.total);
  $("#took").textContent = `in ${page.took_ms} ms`;
  add(page.hits);

  const { fields, best } = suggestFields(page.hits);
  $("#terms-fields").replaceChildren(...fields.map((f) => new Option(f)));
  const field = params.get("field") || best || "";
  $("#terms-field").value = field;
  $("#terms-field").dataset.shown = field;
  if (!params.get("field")) $("#terms-field").dataset.suggested = "1";
  const pick = (c) => nav(formParams({ q: addClause($("#q").value, c) }));
  if (field) loadTerms($("#terms"), filters, field, pick);
  else $("#terms-note").textContent = "Type or pick a field to count its values.";

  histogram.then(
    (h) =>
      drawHistogram($("#histogram"), h, (a, b) =>
        nav(
          formParams({ start: new Date(a).toISOString(), end: new Date(b).toISOString() }),
        ),
      ),
    showError,
  );

  const more = $("#load-more");
  let cursor = page.next_cursor;
  let shown = page.hits.length;
  // Relevance order has no cursor: it pages by skipping what is shown.
  const hasMore = () =>
    sort === "relevance" ? shown > 0 && shown % PAGE === 0 && shown < total : Boolean(cursor);
  more.hidden = !hasMore();
  more.addEventListener("click", async () => {
    more.disabled = true;
    try {
      const next = await api("/search", {
        ...filters,
        sort,
        limit: PAGE,
        ...(sort === "relevance" ? { offset: shown } : { cursor }),
      });
      cursor = next.next_cursor;
      shown += next.hits.length;
      add(next.hits);
      more.hidden = !hasMore() || !next.hits.length;
    } catch (err) {
      showError(err);
    } finally {
      more.disabled = false;
    }
  });

  liveTail(root, $, filters, page.hits, (hits) => {
    const n = add(hits, { prepend: true });
    if (n) setTotal(total + n);
  });
}

// Polls every second for matches newer than the newest shown; skips while the user has
// scrolled down (prepending would move what they read), catching up when back on top.
function liveTail(root, $, filters, hits, prepend) {
  const box = $("#tail");
  const status = $("#tail-status");
  let newest = Math.max(Date.now() - 5000, ...hits.map((h) => h.timestamp_ms));
  let timer = null;
  let busy = false;
  const tick = async () => {
    if (!root.isConnected) {
      clearInterval(timer);
      return;
    }
    if (window.scrollY > 40) {
      status.textContent = "paused while scrolled";
      return;
    }
    if (busy) return;
    busy = true;
    try {
      const since = { start: newest, end: undefined };
      const page = await api("/search", { ...filters, ...since, sort: "timestamp", limit: 200 });
      status.textContent = "live";
      if (page.hits.length) {
        newest = Math.max(newest, ...page.hits.map((h) => h.timestamp_ms));
        prepend(page.hits);
      }
    } catch (err) {
      status.textContent = `stopped: ${err.message}`;
      box.checked = false;
      clearInterval(timer);
    } finally {
      busy = false;
    }
  };
  box.addEventListener("change", () => {
    clearInterval(timer);
    status.textContent = "";
    if (box.checked) {
      timer = setInterval(tick, 1000);
      tick();
    }
  });
}
