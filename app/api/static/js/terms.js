// Terms panel: the top values of one field among the matches; a click adds it to the query.
import { api } from "./api.js";
import { el } from "./format.js";

// field:"value" as the query syntax wants it: numbers and booleans bare, text quoted.
export function clause(field, value) {
  if (typeof value === "number" || typeof value === "boolean") return `${field}:${value}`;
  return `${field}:"${String(value).replace(/(["\\])/g, "\\$1")}"`;
}

export function addClause(q, c) {
  const base = (q || "").trim();
  return !base || base === "*" ? c : `${base} AND ${c}`;
}

// Fields worth offering: the hits' JSON paths (two levels), key and partition, in the order
// seen; `best` is the one whose values repeat most among the hits, or null when none repeats.
// Its terms are loaded without asking, so it must not be a per-record field (an id, a time):
// counting ten million distinct values takes seconds and holds a search process meanwhile.
export function suggestFields(hits) {
  const values = new Map(); // path -> [occurrences, distinct values]
  const note = (path, v) => {
    if (v === null || typeof v === "object") return;
    if (!values.has(path)) values.set(path, [0, new Set()]);
    const entry = values.get(path);
    entry[0]++;
    entry[1].add(v);
  };
  const seen = new Set();
  for (const h of hits) {
    const v = h.value_json;
    if (!v || typeof v !== "object" || Array.isArray(v)) continue;
    for (const [k, inner] of Object.entries(v)) {
      if (inner && typeof inner === "object" && !Array.isArray(inner)) {
        for (const [k2, leaf] of Object.entries(inner)) {
          seen.add(`value.${k}.${k2}`);
          note(`value.${k}.${k2}`, leaf);
        }
      } else if (!Array.isArray(inner)) {
        seen.add(`value.${k}`);
        note(`value.${k}`, inner);
      }
    }
  }
  let best = null;
  let bestScore = Infinity;
  for (const [path, [n, distinct]] of values) {
    // Present in at least half the hits; with a handful of hits any field is cheap.
    if (n * 2 < hits.length || (distinct.size >= n && hits.length >= 10)) continue;
    // A field the query pins to one value (value.service:payments) tells nothing new: it
    // comes after every field that splits the matches.
    const score = distinct.size / n + (distinct.size === 1 ? 1 : 0);
    if (score < bestScore) [best, bestScore] = [path, score];
  }
  return { fields: [...seen].slice(0, 50).concat(["key", "partition"]), best };
}

// panel: #terms; filters: the search's API parameters; onPick(clause).
export async function loadTerms(panel, filters, field, onPick) {
  const list = panel.querySelector("#terms-list");
  const note = panel.querySelector("#terms-note");
  list.replaceChildren();
  note.textContent = "";
  if (!field) return;
  let data;
  try {
    data = await api("/search/terms", { ...filters, field, size: 10 });
  } catch (err) {
    note.textContent = err.message;
    return;
  }
  if (!panel.isConnected) return;
  if (!data.terms.length) note.textContent = `no values of ${field}`;
  const top = Math.max(...data.terms.map((t) => t.count), 1);
  for (const t of data.terms) {
    const b = el(
      "button",
      {
        type: "button",
        class: "term",
        dataset: { field, value: String(t.value), count: String(t.count) },
        title: `add ${clause(field, t.value)} to the query`,
        onclick: () => onPick(clause(field, t.value)),
      },
      el("span", { class: "term-bar", style: `width: ${(t.count / top) * 100}%` }),
      el("span", { class: "term-value" }, String(t.value)),
      el("span", { class: "term-count" }, String(t.count)),
    );
    list.append(el("li", {}, b));
  }
  if (data.other) note.textContent = `${data.other} in other values`;
}
