// Consumer groups view: every group the user may describe with state, members and total lag
// (GET /groups); one group's members, their assignments and the committed offset, high
// watermark and lag per partition (GET /groups/{group}).
import { api } from './api.js';
import { el, figure, fill, linkRow, navLink, num, partitionRow, table, useViewsCss } from './format.js';

function stateBadge(state) {
  return el('span', { class: `state state-${(state || 'unknown').toLowerCase()}` }, state || '—');
}

function groupRow(g, nav, selected) {
  return linkRow(
    nav,
    { view: 'groups', group: g.group },
    { class: g.group === selected ? 'group selected' : 'group', dataset: { group: g.group } },
    g.group,
    el('td', { class: 'state' }, stateBadge(g.state)),
    figure(g.members, 'num', 'members'),
    figure(g.lag, 'num', 'lag'),
    el('td', { class: 'protocol' }, [g.protocol_type, g.protocol].filter(Boolean).join(' / ') || '—'),
    el('td', { class: 'topics' }, (g.topics || []).join(', ') || '—'),
  );
}

function groupList(res, nav, selected) {
  const groups = (res && res.groups) || [];
  if (!groups.length) {
    return el('p', { class: 'empty' }, 'No consumer groups (or none this user may describe). ',
      'A consumer with a group.id appears here once it joins or commits.');
  }
  return table('groups', ['group', 'state', 'members', 'lag', 'protocol', 'topics'],
    groups.map((g) => groupRow(g, nav, selected)));
}

function assignment(parts) {
  if (!parts || !parts.length) return el('span', { class: 'muted' }, 'nothing assigned');
  return parts.map((a) => el('div', { class: 'assignment', dataset: { topic: a.topic } },
    el('span', { class: 'name' }, a.topic), `: ${a.partitions.join(', ')}`));
}

function members(g) {
  if (!g.members.length) return el('p', { class: 'empty' }, 'No members: the group is empty.');
  const rows = g.members.map((m) => el('tr', { class: 'member', dataset: { member: m.member_id } },
    el('td', { class: 'member-id' }, m.member_id),
    el('td', {}, m.client_id || '—'),
    el('td', {}, m.client_host || '—'),
    el('td', {}, m.group_instance_id || '—'),
    el('td', { class: 'member-assignment' }, assignment(m.assignment))));
  return table('members', ['member', 'client id', 'host', 'instance id', 'assignment'], rows);
}

function offsets(g, nav) {
  if (!g.offsets.length) {
    return el('p', { class: 'empty' }, 'No committed offsets (or none on a topic this user may describe).');
  }
  const rows = g.offsets.map((o) => partitionRow('lag', nav, o.topic, o.partition,
    figure(o.committed, 'num', 'committed'),
    figure(o.high_watermark, 'num', 'high-watermark'),
    figure(o.log_start_offset, 'num', 'log-start'),
    figure(o.lag, 'num', o.lag > 0 ? 'lag behind' : 'lag'),
    el('td', { class: 'metadata' }, o.metadata || ''),
    el('td', {}, o.lag > 0
      ? navLink(nav, { view: 'topics', topic: o.topic, partition: String(o.partition),
        offset: String(o.committed) }, 'next records')
      : ''),
  ));
  const total = g.offsets.reduce((n, o) => n + o.lag, 0);
  const foot = el('tr', { class: 'total' }, el('td', { colspan: '5' }, 'total lag'),
    figure(total, 'num', 'lag-total'), el('td', { colspan: '2' }));
  const t = table('offsets', ['topic', 'partition', 'committed', 'high watermark', 'log start',
    'lag', 'metadata', ''], rows);
  t.append(el('tfoot', {}, foot));
  return t;
}

function detail(g, nav) {
  return [
    el('h2', {}, `Group ${g.group}`),
    el('p', { class: 'facts' }, stateBadge(g.state),
      ` generation ${num(g.generation)} · `,
      `protocol ${[g.protocol_type, g.protocol].filter(Boolean).join(' / ') || '—'} · `,
      `${num(g.members.length)} member${g.members.length === 1 ? '' : 's'}`),
    el('h3', {}, 'Members and assignment'),
    members(g),
    el('h3', {}, 'Offsets and lag'),
    el('p', { class: 'hint' }, 'Lag: high watermark − committed offset, per partition.'),
    offsets(g, nav),
  ];
}

export function render(root, params, nav) {
  useViewsCss();
  const selected = params.get('group');
  const list = el('div', { id: 'group-list' });
  const box = selected !== null ? el('section', { id: 'group-detail', dataset: { group: selected } }) : null;
  root.replaceChildren(el('section', { class: 'groups-view' },
    el('h2', {}, 'Consumer groups ',
      el('button', { type: 'button', class: 'refresh', onclick: () => render(root, params, nav) },
        'Refresh')),
    list, box));
  const jobs = [fill(list, 'consumer groups', api('/groups'), (res) => groupList(res, nav, selected),
    'groups')];
  if (box) {
    jobs.push(fill(box, `group ${selected}`, api(`/groups/${encodeURIComponent(selected)}`),
      (g) => detail(g, nav), `group:${selected}`));
  }
  return Promise.all(jobs);
}
