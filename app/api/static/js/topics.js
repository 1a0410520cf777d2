// Topics view: every topic with its offsets and the bytes each storage layer holds
// (GET /topics, object store from GET /segments), one topic's configs and partitions
// (GET /topics/{t}) and its records browsed by offset (GET /search, sort=offset).
import { api } from './api.js';
import { el, figure, fill, linkRow, navLink, num, table, time, useViewsCss } from './format.js';
import { browser } from './browse.js';

const LAYERS = ['memory', 'wal', 'segments', 'object'];
const LAYER_NAMES = { memory: 'memory', wal: 'WAL', segments: 'segments', object: 'object store' };

/** Bytes and records in the object store per topic and partition: the uploaded segments. */
function uploaded(segments) {
  const out = new Map();
  for (const s of (segments && segments.segments) || []) {
    if (s.state !== 'uploaded') continue;
    const key = `${s.topic}\u0000${s.partition}`;
    const cur = out.get(key) || { records: 0, bytes: 0 };
    cur.records += s.records;
    cur.bytes += s.bytes;
    out.set(key, cur);
  }
  return out;
}

function layersOf(p, objects, topic) {
  const layer = (k) => (p.layers && p.layers[k]) || { records: 0, bytes: 0 };
  return {
    memory: layer('memory'),
    wal: layer('wal'),
    segments: layer('segments'),
    // Without /segments (not allowed, or it failed) the object store is unknown, not empty.
    object: objects ? objects.get(`${topic}\u0000${p.partition}`) || { records: 0, bytes: 0 } : null,
  };
}

function totals(t, objects) {
  const sum = { partitions: t.partitions.length, records: 0, hw: 0, start: 0 };
  for (const k of LAYERS) sum[k] = objects || k !== 'object' ? 0 : null;
  for (const p of t.partitions) {
    sum.records += p.log_end_offset - p.log_start_offset;
    sum.hw += p.log_end_offset;
    sum.start += p.log_start_offset;
    const layers = layersOf(p, objects, t.name);
    for (const k of LAYERS) if (layers[k]) sum[k] += layers[k].bytes;
  }
  return sum;
}

function topicRow(t, objects, nav, selected) {
  const s = totals(t, objects);
  return linkRow(
    nav,
    { view: 'topics', topic: t.name },
    { class: t.name === selected ? 'topic selected' : 'topic', dataset: { topic: t.name } },
    t.name,
    figure(s.partitions, 'num', 'partitions'),
    figure(s.records, 'num', 'records'),
    LAYERS.map((k) => figure(s[k], 'bytes', `bytes-${k}`)),
    figure(s.hw, 'num', 'high-watermark'),
    figure(s.start, 'num', 'log-start'),
  );
}

function topicList(topics, segments, nav, selected) {
  if (!topics.length) {
    return el('p', { class: 'empty' }, 'No topics yet (or none this user may describe). ',
      'Produce to a topic with any Kafka client and it appears here.');
  }
  const objects = segments ? uploaded(segments) : null;
  const heads = ['topic', 'partitions', 'records', ...LAYERS.map((k) => `${LAYER_NAMES[k]} bytes`),
    'high watermark', 'log start'];
  const note = el('p', { class: 'hint' },
    'Records: high watermark − log start, summed over partitions (offsets, so compacted topics ',
    'count removed records too). Memory and WAL overlap: the memory tail caches the WAL\'s newest ',
    'batches; segments are the sealed search segments, the object store the uploaded ones.',
    segments ? '' : ' Object store: unknown (GET /segments failed).');
  return [table('topics', heads, topics.map((t) => topicRow(t, objects, nav, selected))), note];
}

function layerFigure(layer) {
  const td = figure(layer.bytes, 'bytes', null);
  td.append(el('span', { class: 'sub' }, ` ${num(layer.records)} rec`));
  td.dataset.records = String(layer.records);
  return td;
}

function partitionRow(t, p, objects) {
  const layers = layersOf(p, objects, t.name);
  return el(
    'tr',
    { class: 'partition', dataset: { partition: String(p.partition) } },
    figure(p.partition, 'num', 'partition'),
    figure(p.log_start_offset, 'num', 'log-start'),
    figure(p.log_end_offset, 'num', 'high-watermark'),
    figure(p.last_stable_offset, 'num', 'last-stable'),
    figure(p.indexed_offset, 'num', 'indexed'),
    figure(p.log_end_offset - p.log_start_offset, 'num', 'records'),
    LAYERS.map((k) => {
      const td = layers[k] ? layerFigure(layers[k]) : el('td', { class: 'n' }, '—');
      td.classList.add(`bytes-${k}`);
      return td;
    }),
    el('td', { class: 'n dirty' }, p.dirty_ratio === null || p.dirty_ratio === undefined
      ? '—' : `${(p.dirty_ratio * 100).toFixed(1)} %`),
    el('td', { class: 'last-compaction' }, time(p.last_compaction)),
  );
}

function configs(t) {
  const names = Object.keys(t.configs || {}).sort();
  if (!names.length) return el('p', { class: 'empty' }, 'No overrides: broker defaults apply.');
  const rows = names.map((k) => el('tr', { class: 'config', dataset: { config: k } },
    el('td', { class: 'name' }, k), el('td', { class: 'config-value' }, t.configs[k])));
  return table('configs', ['config', 'value'], rows);
}

function detail(t, segments, nav) {
  const objects = segments ? uploaded(segments) : null;
  const heads = ['partition', 'log start', 'high watermark', 'last stable', 'indexed', 'records',
    ...LAYERS.map((k) => LAYER_NAMES[k]), 'dirty', 'last compaction'];
  const search = new URLSearchParams({ topic: t.name });
  return [
    el('h2', {}, `Topic ${t.name}`, ' ', el('small', { class: 'topic-id' }, t.topic_id)),
    el('p', {}, navLink(nav, search, 'Search this topic'), ' · ',
      navLink(nav, { view: 'status' }, 'Segments and indexing')),
    el('h3', {}, 'Configs'),
    configs(t),
    el('h3', {}, 'Partitions'),
    table('partitions', heads, t.partitions.map((p) => partitionRow(t, p, objects))),
  ];
}

export function render(root, params, nav) {
  useViewsCss();
  const selected = params.get('topic');
  const list = el('div', { id: 'topic-list' });
  const detailBox = selected
    ? el('section', { id: 'topic-detail', dataset: { topic: selected } })
    : null;
  root.replaceChildren(
    el('section', { class: 'topics-view' },
      el('h2', {}, 'Topics ',
        el('button', { type: 'button', class: 'refresh', onclick: () => render(root, params, nav) },
          'Refresh')),
      list,
      detailBox),
  );
  // Without /segments (it failed) only the object store column is unknown.
  const segmentsP = api('/segments').catch(() => null);
  const jobs = [
    fill(list, 'topics', Promise.all([api('/topics'), segmentsP]),
      ([topics, segments]) => topicList(topics, segments, nav, selected), 'topics'),
  ];
  if (selected) {
    const topicP = api(`/topics/${encodeURIComponent(selected)}`);
    // The browser is built once, from the first answer (remembered or new), and kept when
    // the figures above it are repainted: it fetches its page once and keeps the focus.
    const info = el('div', { class: 'topic-info' });
    const browse = el('div', { class: 'topic-browse' });
    detailBox.append(info, browse);
    let scrolled = false;
    jobs.push(fill(info, `topic ${selected}`, Promise.all([topicP, segmentsP]),
      ([t, segments]) => {
        if (!browse.firstChild) browse.append(el('h3', {}, 'Records by offset'), browser(t, params, nav));
        if (!scrolled && !params.has('partition')) {
          scrolled = true;
          // A click in a long list: bring the detail into sight once it is laid out.
          requestAnimationFrame(() => {
            const box = detailBox.getBoundingClientRect();
            if (box.top > window.innerHeight * 0.6) detailBox.scrollIntoView({ block: 'start' });
          });
        }
        return detail(t, segments, nav);
      }, `topic:${selected}`));
  }
  return Promise.all(jobs);
}
