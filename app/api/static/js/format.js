// Shared helpers of the console's views: building DOM, formatting figures, error boxes.
// Everything is built with DOM nodes and textContent, never innerHTML, so record contents
// and names from the API can never inject markup.

/** el('td', {class: 'n', dataset: {topic: t}, onclick: f}, child, 'text', ...) */
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'dataset') Object.assign(node.dataset, v);
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else if (k === 'class') node.className = v;
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

/** An exact integer with thousands separators; '—' for null. */
export function num(n) {
  if (n === null || n === undefined) return '—';
  return Number(n).toLocaleString('en-US', { maximumFractionDigits: 1 });
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

export function bytes(n) {
  if (n === null || n === undefined) return '—';
  let v = Number(n);
  let i = 0;
  while (Math.abs(v) >= 1024 && i < UNITS.length - 1) {
    v /= 1024;
    i += 1;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(v < 10 ? 2 : v < 100 ? 1 : 0)} ${UNITS[i]}`;
}

/** RFC 3339 (UTC) of epoch milliseconds or of an RFC 3339 string; '—' for null. */
export function time(t) {
  if (t === null || t === undefined || t === '') return '—';
  const d = new Date(t);
  return Number.isNaN(d.getTime()) ? String(t) : d.toISOString().replace('T', ' ');
}

/** 3.2 s, 4 min 10 s, 2 h 5 min, 3 d 4 h */
export function duration(seconds) {
  if (seconds === null || seconds === undefined) return '—';
  const s = Number(seconds);
  if (s < 60) return `${s < 10 ? s.toFixed(2).replace(/\.?0+$/, '') : Math.round(s)} s`;
  const parts = [
    [86400, 'd'],
    [3600, 'h'],
    [60, 'min'],
    [1, 's'],
  ];
  const out = [];
  let rest = Math.floor(s);
  for (const [size, unit] of parts) {
    if (rest >= size && out.length < 2) {
      out.push(`${Math.floor(rest / size)} ${unit}`);
      rest %= size;
    } else if (out.length) break;
  }
  return out.join(' ');
}

/** A table cell holding a figure: the exact value in data-value, the text formatted. */
export function figure(value, kind, cls) {
  const text = kind === 'bytes' ? bytes(value) : num(value);
  const attrs = { class: cls ? `n ${cls}` : 'n' };
  if (value !== null && value !== undefined) {
    attrs.dataset = { value: String(value) };
    if (kind === 'bytes') attrs.title = `${num(value)} bytes`;
  }
  return el('td', attrs, text);
}

/** <table> with a header row; rows are <tr> nodes. */
export function table(cls, headers, rows) {
  const head = el('tr', {}, headers.map((h) => el('th', {}, h)));
  return el('table', { class: `grid ${cls || ''}`.trim() }, el('thead', {}, head), el('tbody', {}, rows));
}

/** What went wrong, for a person: the API's text and the status. */
export function errorText(err, what) {
  const status = err && err.status;
  const message = (err && err.message) || String(err);
  const prefix = what ? `Could not load ${what}: ` : '';
  if (status === 401) return `${prefix}sign-in required (HTTP 401). ${message}`;
  if (status) return `${prefix}${message} (HTTP ${status})`;
  return `${prefix}${message}`;
}

export function errorBox(err, what) {
  return el('div', { class: 'error view-error', role: 'alert' }, errorText(err, what));
}

export function loading(what) {
  return el('p', { class: 'loading' }, `Loading ${what}…`);
}

// The last answer per key, so a view rendered again (every navigation renders afresh)
// repaints at once from it and replaces it when the new answer comes, instead of flashing
// "Loading…" and losing the scroll position.
const memo = new Map();
const MEMO_SIZE = 32;

/** Fill `container` with build(data) once `promise` resolves, or an error box if it fails;
 * never rejects, so no view leaves an uncaught promise behind. With a `key`, the previous
 * answer under it is shown meanwhile. Resolves to the data, or undefined on error. */
export async function fill(container, what, promise, build, key) {
  const old = key === undefined ? undefined : memo.get(key);
  if (old === undefined) container.replaceChildren(loading(what));
  else container.replaceChildren(...[build(old)].flat(Infinity));
  try {
    const data = await promise;
    if (key !== undefined) {
      memo.delete(key);
      memo.set(key, data);
      if (memo.size > MEMO_SIZE) memo.delete(memo.keys().next().value);
    }
    container.replaceChildren(...[build(data)].flat(Infinity));
    return data;
  } catch (err) {
    if (key !== undefined) memo.delete(key);
    container.replaceChildren(errorBox(err, what));
    return undefined;
  }
}

/** api() again after 1 s when the server answers 429 (too many expensive searches at
 * once: it asks for Retry-After: 1). */
export async function retrying(call) {
  try {
    return await call();
  } catch (err) {
    if (!err || err.status !== 429) throw err;
    await new Promise((resolve) => setTimeout(resolve, 1000));
    return call();
  }
}

/** Link the views' stylesheet once (until index.html links it itself). */
export function useViewsCss() {
  if (document.querySelector('link[data-views-css], link[href$="views.css"]')) return;
  const href = new URL('../views.css', import.meta.url).href;
  document.head.append(el('link', { rel: 'stylesheet', href, dataset: { viewsCss: '1' } }));
}

/** A link that navigates within the console (pushState via nav) but is also a real URL,
 * so it can be opened in a new tab or copied. */
export function navLink(nav, params, ...children) {
  const qs = new URLSearchParams(params);
  return el(
    'a',
    {
      href: `?${qs}`,
      onclick: (ev) => {
        if (ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return;
        ev.preventDefault();
        nav(qs);
      },
    },
    ...children,
  );
}

/** A row that opens `params` when clicked anywhere (its first cell holds a real link). */
export function linkRow(nav, params, attrs, name, ...cells) {
  const row = el('tr', attrs, el('td', { class: 'name' }, navLink(nav, params, name)), ...cells);
  row.addEventListener('click', (ev) => {
    if (!ev.target.closest('a')) nav(new URLSearchParams(params));
  });
  return row;
}

/** A row of one topic partition: data-topic, data-partition, the topic (a link to it) and
 * the partition number, then `cells`. */
export function partitionRow(cls, nav, topic, partition, ...cells) {
  return el(
    'tr',
    { class: cls, dataset: { topic, partition: String(partition) } },
    el('td', { class: 'topic' }, navLink(nav, { view: 'topics', topic }, topic)),
    figure(partition, 'num', 'partition'),
    ...cells,
  );
}
