// A partition's records by offset: GET /search with partition=P, sort=offset and
// q=offset:>=O, a page of PAGE records from offset O on. The URL holds the topic,
// partition and offset, so a page can be shared and Back returns to the previous one.
import { api } from './api.js';
import { headersCell, keyCell, valueCell } from './value.js';
import { el, fill, num, retrying, table, time } from './format.js';

export const PAGE = 50;

function intParam(params, name) {
  const raw = params.get(name);
  if (raw === null || raw.trim() === '' || !/^\d+$/.test(raw.trim())) return null;
  return Number(raw.trim());
}

function oneLine(hit) {
  if (hit.value === null || hit.value === undefined) return el('span', { class: 'muted' }, 'null');
  if (hit.value_json !== null && hit.value_json !== undefined) return JSON.stringify(hit.value_json);
  if (hit.encoding === 'base64') return [el('span', { class: 'marker' }, 'base64'), ' ', hit.value];
  return hit.value;
}

// One line per record, so a page of 50 fits a screen or two; a click shows the whole value
// (JSON as a tree).
function collapsed(hit) {
  const details = el('details', { class: 'record-details' },
    el('summary', {}, el('span', { class: 'one-line' }, oneLine(hit))));
  details.addEventListener('toggle', () => {
    if (details.open && details.childElementCount === 1) details.append(valueCell(hit, ''));
  }, { once: false });
  return details;
}

function recordRow(t, hit) {
  return el(
    'tr',
    { class: 'record', dataset: { offset: String(hit.offset), partition: String(hit.partition) } },
    el('td', { class: 'n offset' }, String(hit.offset)),
    el('td', { class: 'time' }, time(hit.timestamp)),
    el('td', { class: 'record-key' }, keyCell(hit, '')),
    el('td', { class: 'record-headers' }, headersCell(hit)),
    el('td', { class: 'record-value' }, collapsed(hit)),
  );
}

function page(t, p, from, res, go) {
  const hits = res.hits || [];
  const indexed = p.indexed_offset;
  const notes = [];
  if (indexed !== null && indexed !== undefined && indexed < p.log_end_offset) {
    notes.push(`Offsets from ${num(indexed)} on are not searchable yet (the indexer is `
      + `${num(p.log_end_offset - indexed)} records behind).`);
  }
  if (!hits.length) {
    const why = from >= p.log_end_offset
      ? `offset ${num(from)} is at or past the high watermark ${num(p.log_end_offset)}`
      : 'none is searchable there (removed by retention or compaction, not indexed yet, '
        + 'or in an aborted transaction)';
    return [el('p', { class: 'empty', id: 'browse-empty' },
      `No records at or after offset ${num(from)}: ${why}.`), notes.map((n) => el('p', { class: 'hint' }, n))];
  }
  const lastOffset = hits[hits.length - 1].offset;
  const summary = el('p', { class: 'browse-summary' },
    `Offsets ${num(hits[0].offset)} – ${num(lastOffset)}: ${num(hits.length)} of the `
    + `${num(res.total)} searchable records at or after offset ${num(from)}.`);
  const more = res.total > hits.length;
  const nextButton = el('button', { type: 'button', id: 'browse-next-page', disabled: !more,
    onclick: () => go(lastOffset + 1) }, `Next ${PAGE} →`);
  return [
    summary,
    notes.map((n) => el('p', { class: 'hint' }, n)),
    table('records', ['offset', 'time (UTC)', 'key', 'headers', 'value'],
      hits.map((h) => recordRow(t, h))),
    el('p', { class: 'pager' }, nextButton),
  ];
}

/** The browser's section: form and the page of records at the URL's partition and offset. */
export function browser(t, params, nav) {
  const partitions = t.partitions.map((p) => p.partition);
  let pn = intParam(params, 'partition');
  if (pn === null || !partitions.includes(pn)) pn = partitions.length ? partitions[0] : 0;
  const p = t.partitions.find((x) => x.partition === pn);
  if (!p) return el('p', { class: 'empty' }, 'This topic has no partitions.');
  let from = intParam(params, 'offset');
  if (from === null) from = p.log_start_offset;

  const go = (partition, offset) => {
    nav(new URLSearchParams({ view: 'topics', topic: t.name, partition: String(partition),
      offset: String(Math.max(0, offset)) }));
  };
  const select = el('select', { id: 'browse-partition', name: 'partition' },
    partitions.map((n) => el('option', { value: String(n), selected: n === pn }, `partition ${n}`)));
  select.addEventListener('change', () => {
    const q = t.partitions.find((x) => x.partition === Number(select.value));
    go(Number(select.value), q ? q.log_start_offset : 0);
  });
  const input = el('input', { id: 'browse-offset', name: 'offset', type: 'number', min: '0',
    step: '1', value: String(from), 'aria-label': 'offset' });
  const message = el('span', { class: 'form-error', role: 'alert' });
  const form = el('form', { id: 'browse-form', class: 'browse-form' },
    el('label', {}, 'Partition ', select),
    el('label', {}, ' from offset ', input),
    el('button', { type: 'submit' }, 'Show'),
    el('button', { type: 'button', id: 'browse-first', onclick: () => go(pn, p.log_start_offset) },
      'First'),
    el('button', { type: 'button', id: 'browse-older', disabled: from <= p.log_start_offset,
      onclick: () => go(pn, Math.max(p.log_start_offset, from - PAGE)) }, `← Previous ${PAGE}`),
    el('button', { type: 'button', id: 'browse-latest',
      onclick: () => go(pn, Math.max(p.log_start_offset, p.log_end_offset - PAGE)) }, 'Latest'),
    el('span', { class: 'hint' },
      ` log start ${num(p.log_start_offset)}, high watermark ${num(p.log_end_offset)}`),
    message);
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const raw = input.value.trim();
    if (!/^\d+$/.test(raw)) {
      message.textContent = ' The offset is a whole number ≥ 0.';
      return;
    }
    message.textContent = '';
    go(pn, Number(raw));
  });

  const records = el('div', { id: 'browse-records' });
  const query = { topic: t.name, partition: pn, sort: 'offset', q: `offset:>=${from}`, limit: PAGE };
  fill(records, 'records', retrying(() => api('/search', query)),
    (res) => page(t, p, from, res, (offset) => go(pn, offset)));
  return el('div', { class: 'browser' }, form, records);
}
