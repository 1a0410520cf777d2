// Status view: the indexer (GET /indexer: per-partition checkpoints, lag and rate, and the
// worker processes) and the search segments of each topic (GET /segments).
import { api } from './api.js';
import { bytes, duration, el, figure, fill, num, partitionRow, table, time, useViewsCss } from './format.js';

const STATES = ['open', 'sealing', 'local', 'uploaded'];

function workers(list) {
  if (!list.length) return el('p', { class: 'empty' }, 'No worker processes.');
  const rows = list.map((w) => el('tr', { class: 'worker', dataset: { worker: String(w.worker) } },
    figure(w.worker, 'num', 'worker-id'),
    el('td', { class: 'n' }, w.pid === null ? '—' : String(w.pid)),
    el('td', { class: w.alive ? 'alive ok' : 'alive bad' }, w.alive ? 'alive' : 'down'),
    figure(w.restarts, 'num', 'restarts'),
    figure(w.partitions, 'num', 'partitions'),
    el('td', { class: 'n uptime', dataset: { value: String(w.uptime_s) } }, duration(w.uptime_s))));
  return table('workers', ['worker', 'pid', 'state', 'restarts', 'partitions', 'uptime'], rows);
}

function checkpoints(parts, nav) {
  if (!parts.length) return el('p', { class: 'empty' }, 'No partitions yet.');
  const rows = parts.map((p) => partitionRow('checkpoint', nav, p.topic, p.partition,
    figure(p.indexed_offset, 'num', 'indexed'),
    figure(p.high_watermark, 'num', 'high-watermark'),
    figure(p.lag_records, 'num', p.lag_records > 0 ? 'lag-records behind' : 'lag-records'),
    el('td', { class: 'n lag-seconds', dataset: { value: String(p.lag_seconds) } },
      duration(p.lag_seconds)),
    el('td', { class: 'n rate', dataset: { value: String(p.records_per_second) } },
      `${num(p.records_per_second)}/s`),
    el('td', { class: 'last-commit' }, time(p.last_commit)),
    figure(p.open_segment_base, 'num', 'open-base'),
  ));
  return table('checkpoints', ['topic', 'partition', 'indexed offset', 'high watermark',
    'lag (records)', 'lag (time)', 'rate', 'last commit (UTC)', 'open segment from'], rows);
}

function indexer(res, nav) {
  if (!res.enabled) {
    return el('p', { class: 'empty' }, 'Indexing is off (CHRONIK_INDEX_WORKERS=0): nothing is searchable.');
  }
  const lag = res.partitions.reduce((n, p) => n + p.lag_records, 0);
  const worst = res.partitions.reduce((s, p) => Math.max(s, p.lag_seconds), 0);
  const rate = res.partitions.reduce((n, p) => n + p.records_per_second, 0);
  const alive = res.workers.filter((w) => w.alive).length;
  const facts = el('p', { class: 'facts' },
    el('span', { class: 'fact', id: 'indexer-lag', dataset: { value: String(lag) } },
      `lag ${num(lag)} records`),
    ` (oldest unsearchable ${duration(worst)}) · `,
    el('span', { class: 'fact', id: 'indexer-rate', dataset: { value: String(rate) } },
      `${num(rate)} records/s`),
    ` · ${alive} of ${res.workers.length} workers alive · `,
    el('span', { class: res.errors ? 'fact bad' : 'fact', id: 'indexer-errors',
      dataset: { value: String(res.errors) } }, `${num(res.errors)} errors`));
  return [
    facts,
    el('h4', {}, 'Workers'),
    workers(res.workers),
    el('h4', {}, 'Checkpoints per partition'),
    checkpoints(res.partitions, nav),
  ];
}

function segmentRow(s) {
  return el(
    'tr',
    {
      class: `segment state-${s.state}`,
      dataset: { topic: s.topic, partition: String(s.partition), baseOffset: String(s.base_offset) },
    },
    figure(s.partition, 'num', 'partition'),
    el('td', { class: 'n offsets' }, `${num(s.base_offset)} – ${num(s.last_offset)}`),
    el('td', { class: 'time' }, `${time(s.min_timestamp)} → ${time(s.max_timestamp)}`),
    figure(s.records, 'num', 'records'),
    figure(s.bytes, 'bytes', 'bytes'),
    el('td', { class: 'state' }, s.state),
    el('td', { class: 'object-key' }, s.object_key || '—'),
  );
}

function topicSegments(name, totals, segs, open) {
  const counts = STATES.map((st) => [st, segs.filter((s) => s.state === st).length])
    .filter(([, n]) => n)
    .map(([st, n]) => `${n} ${st}`)
    .join(', ');
  const summary = el('summary', {},
    el('span', { class: 'name' }, name),
    ` — ${num(totals.segments)} segment${totals.segments === 1 ? '' : 's'}, ${num(totals.records)} records, ${bytes(totals.bytes)}`,
    counts ? ` (${counts})` : '');
  const rows = segs.map(segmentRow);
  return el('details', { class: 'segment-topic', open, dataset: { topic: name, segments: String(totals.segments),
    records: String(totals.records), bytes: String(totals.bytes) } },
  summary,
  table('segments', ['partition', 'offsets', 'time (UTC)', 'records', 'bytes', 'state', 'object key'],
    rows));
}

function segments(res) {
  const names = Object.keys(res.topics || {}).sort();
  if (!names.length) return el('p', { class: 'empty' }, 'No search segments yet.');
  const by = new Map(names.map((n) => [n, []]));
  for (const s of res.segments) (by.get(s.topic) || []).push(s);
  const total = res.total;
  return [
    el('p', { class: 'facts', id: 'segments-total', dataset: { segments: String(total.segments),
      records: String(total.records), bytes: String(total.bytes) } },
    `${num(total.segments)} segments, ${num(total.records)} records, ${bytes(total.bytes)} in all. `,
    'Open: being indexed; sealing: being packaged; local: sealed, not uploaded yet; uploaded: ',
    'in the object store.'),
    names.map((n) => topicSegments(n, res.topics[n], by.get(n), names.length <= 3)),
  ];
}

export function render(root, params, nav) {
  useViewsCss();
  const idx = el('div', { class: 'status-body' });
  const seg = el('div', { class: 'status-body' });
  root.replaceChildren(el('section', { class: 'status-view' },
    el('h2', {}, 'Status ',
      el('button', { type: 'button', class: 'refresh', onclick: () => render(root, params, nav) },
        'Refresh')),
    el('section', { id: 'indexer' }, el('h3', {}, 'Indexer'), idx),
    el('section', { id: 'segments' }, el('h3', {}, 'Search segments per topic'), seg)));
  return Promise.all([
    fill(idx, 'the indexer status', api('/indexer'), (res) => indexer(res, nav), 'indexer'),
    fill(seg, 'the segments', api('/segments'), segments, 'segments'),
  ]);
}
