// Terms panel: the top values of one field among the matches; a click adds it to the query.
import { api } from "./api.js";

// field:"value" as the query syntax wants it: numbers and booleans bare, text quoted.
export function clause(field, value) {
  if (typeof value === "number" || typeof value === "boolean") return `${field}:${value}`;
  return `${field}:"${String(value).replace(/(["\\])/g, "\\$1")}"`;
}

export function addClause(q, c) {
  const base = (q || "").trim();
  return !base || base === "*" ? c : `${base} AND ${c}`;
}

// Fields worth offering: the hits' JSON paths (two levels), key and partition.
export function suggestFields(hits) {
  const seen = new Set();
  for (const h of hits) {
    const v = h.value_json;
    if (!v || typeof v !== "object" || Array.isArray(v)) continue;
    for (const [k, inner] of Object.entries(v)) {
      if (inner && typeof inner === "object" && !Array.isArray(inner)) {
        for (const k2 of Object.keys(inner)) seen.add(`value.${k}.${k2}`);
      } else if (!Array.isArray(inner)) seen.add(`value.${k}`);
    }
  }
  return [...seen].slice(0, 50).concat(["key", "partition"]);
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
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    b.className = "term";
    b.dataset.field = field;
    b.dataset.value = String(t.value);
    b.dataset.count = String(t.count);
    b.title = `add ${clause(field, t.value)} to the query`;
    const name = document.createElement("span");
    name.className = "term-value";
    name.textContent = String(t.value);
    const n = document.createElement("span");
    n.className = "term-count";
    n.textContent = String(t.count);
    const bar = document.createElement("span");
    bar.className = "term-bar";
    bar.style.width = `${(t.count / top) * 100}%`;
    b.append(bar, name, n);
    b.addEventListener("click", () => onPick(clause(field, t.value)));
    li.append(b);
    list.append(li);
  }
  if (data.other) note.textContent = `${data.other} in other values`;
}
