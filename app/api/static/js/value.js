// A record's key, headers and value as DOM: JSON as a collapsible tree, the query's
// words marked, bytes that are not UTF-8 as base64 with a marker. Only text nodes carry
// record data, so a record cannot inject markup.

// The words of a query worth marking: as app/api/search.py's _terms, without field names,
// operators and ranges.
export function queryWords(q) {
  const plain = (q || "").replace(/\[[^\]]*\]|\{[^}]*\}/g, " ");
  const words = plain.match(/[\p{L}\p{N}_]+(?![\p{L}\p{N}_.]*:)/gu) || [];
  return [...new Set(words.filter((w) => !["AND", "OR", "NOT", "TO"].includes(w)))];
}

function wordPattern(words) {
  if (!words.length) return null;
  const alts = words.map((w) => w.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  return new RegExp(`(?<![\\p{L}\\p{N}_])(${alts.join("|")})(?![\\p{L}\\p{N}_])`, "giu");
}

export function marked(text, pattern) {
  const frag = document.createDocumentFragment();
  if (!pattern) {
    frag.append(text);
    return frag;
  }
  let at = 0;
  for (const m of text.matchAll(pattern)) {
    frag.append(text.slice(at, m.index));
    const mark = document.createElement("mark");
    mark.textContent = m[0];
    frag.append(mark);
    at = m.index + m[0].length;
  }
  frag.append(text.slice(at));
  return frag;
}

function span(cls, text, pattern) {
  const s = document.createElement("span");
  s.className = cls;
  s.append(pattern ? marked(text, pattern) : text);
  return s;
}

function tree(value, pattern, depth) {
  if (value === null || typeof value !== "object") {
    const kind = value === null ? "null" : typeof value;
    const text = typeof value === "string" ? JSON.stringify(value) : String(value);
    return span(`j-${kind}`, text, pattern);
  }
  const isArray = Array.isArray(value);
  const entries = isArray ? value.map((v, i) => [i, v]) : Object.entries(value);
  const [open, close] = isArray ? ["[", "]"] : ["{", "}"];
  if (!entries.length) return span("j-punct", open + close);
  const details = document.createElement("details");
  details.open = depth < 3;
  const summary = document.createElement("summary");
  const count = isArray ? `${entries.length} items` : `${entries.length} keys`;
  summary.append(span("j-open", open), span("j-closed", `${open} ${count} ${close}`));
  details.append(summary);
  const body = document.createElement("div");
  body.className = "j-body";
  for (const [k, v] of entries) {
    const row = document.createElement("div");
    if (!isArray) row.append(span("j-key", JSON.stringify(k)), ": ");
    row.append(tree(v, pattern, depth + 1));
    body.append(row);
  }
  details.append(body, span("j-punct", close));
  return details;
}

function bytes(text, encoding, pattern) {
  const box = document.createElement("span");
  if (encoding === "base64") {
    box.append(span("marker", "base64"), " ", span("b64", text));
  } else {
    box.append(span("text", text, pattern));
  }
  return box;
}

// The cell of a hit's value.
export function valueCell(hit, q) {
  const pattern = wordPattern(queryWords(q));
  const cell = document.createElement("div");
  cell.className = "value";
  if (hit.value === null || hit.value === undefined) {
    cell.append(span("muted", "null"));
  } else if (hit.value_json !== null && hit.value_json !== undefined) {
    cell.classList.add("json");
    cell.append(tree(hit.value_json, pattern, 0));
  } else {
    cell.append(bytes(hit.value, hit.encoding, pattern));
  }
  return cell;
}

export function keyCell(hit, q) {
  const pattern = wordPattern(queryWords(q));
  if (hit.key === null || hit.key === undefined) return span("muted", "null");
  return bytes(hit.key, hit.key_encoding, pattern);
}

export function headersCell(hit) {
  const box = document.createElement("div");
  box.className = "headers";
  for (const h of hit.headers || []) {
    const row = document.createElement("div");
    row.append(span("j-key", h.key), "=");
    row.append(h.value === null ? span("muted", "null") : bytes(h.value, h.encoding, null));
    box.append(row);
  }
  return box;
}
