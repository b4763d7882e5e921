// The market views, from the gateway's board: each index's breadth (advances / declines / unchanged, ceilings /
// floors, traded value), an exchange's top movers (gainers, losers, volume, value) and each VN30 member's part of the
// index's move in points. Views of the whole market that change slowly: read from REST every few seconds while the
// page is visible, not streamed.

import { apiGet } from './auth.js';
import {
  changeTrend, divergingTrack, fillList, fmtInt, fmtPct, fmtPoints, fmtPrice, fmtShort, fmtSigned, fmtVnd, isNum,
  setRaw,
} from './format.js';
import { invalidate, onRender } from './scheduler.js';

const POLL_MS = 5000;
const MOVERS_LIMIT = 5;
const CONTRIBUTORS = 8; // shown on each side: the largest pushes up and down
const INDEX_NAMES = {
  VNINDEX: 'VN-Index', VN30: 'VN30', HNXINDEX: 'HNX-Index', HNX30: 'HNX30', UPCOMINDEX: 'UPCoM',
};
const INDEX_ORDER = ['VNINDEX', 'VN30', 'HNXINDEX', 'HNX30', 'UPCOMINDEX'];
const MOVER_LISTS = [
  ['gainers', 'Tăng mạnh', (m) => fmtPct(m.ratio_change)],
  ['losers', 'Giảm mạnh', (m) => fmtPct(m.ratio_change)],
  ['volume', 'KL lớn', (m) => fmtShort(m.total_volume)],
  ['value', 'GT lớn', (m) => fmtVnd(m.total_value)],
];

const state = {
  breadth: null, movers: null, contribution: null, failed: false,
};
let els;
let timer = 0;
let busy = false;
let again = false; // asked while a poll was under way (the exchange changed): poll once more right after
let drawn = {};

async function poll() {
  clearTimeout(timer);
  timer = setTimeout(poll, POLL_MS);
  if (document.hidden) return;
  if (busy) {
    again = true;
    return;
  }
  busy = true;
  const exchange = els.exchange.value;
  const [breadth, movers, contribution] = await Promise.all([
    apiGet('/api/market/breadth'),
    apiGet(`/api/market/movers?exchange=${encodeURIComponent(exchange)}&limit=${MOVERS_LIMIT}`),
    apiGet('/api/market/contribution?index=VN30'),
  ]);
  busy = false;
  state.failed = ![breadth, movers, contribution].every((res) => res.ok);
  if (breadth.ok && Array.isArray(breadth.data)) state.breadth = breadth.data;
  // An answer for the exchange chosen before a change is dropped: the next poll asks for the new one.
  if (movers.ok && movers.data && movers.data.exchange === els.exchange.value) state.movers = movers.data;
  if (contribution.ok && contribution.data) state.contribution = contribution.data;
  invalidate('views');
  if (again) {
    again = false;
    poll();
  }
}

function cell(tag, text, field, value, trend) {
  const node = document.createElement(tag);
  node.textContent = text;
  if (field) node.dataset.field = field;
  setRaw(node, value);
  if (trend && trend !== 'none') node.dataset.trend = trend;
  return node;
}

function renderBreadth() {
  const known = (state.breadth || []).filter((b) => b && b.members > 0);
  known.sort((a, b) => (INDEX_ORDER.indexOf(a.index_id) + 1 || 99) - (INDEX_ORDER.indexOf(b.index_id) + 1 || 99));
  const rows = known.map((b) => {
    const tr = document.createElement('tr');
    tr.dataset.index = b.index_id;
    const name = cell('th', INDEX_NAMES[b.index_id] || b.index_id);
    name.scope = 'row';
    name.title = `${b.members} mã${b.untraded ? `, ${b.untraded} chưa khớp` : ''}`;
    const bar = document.createElement('td');
    bar.className = 'bar-cell';
    const track = document.createElement('div');
    track.className = 'breadth-bar';
    const traded = b.advances + b.unchanged + b.declines;
    for (const [kind, count] of [['up', b.advances], ['ref', b.unchanged], ['down', b.declines]]) {
      const part = document.createElement('i');
      part.className = kind;
      part.style.width = traded ? `${(count / traded) * 100}%` : '0';
      track.append(part);
    }
    bar.append(track);
    tr.append(
      name,
      cell('td', fmtInt(b.advances), 'advances', b.advances, 'up'),
      cell('td', fmtInt(b.unchanged), 'unchanged', b.unchanged, 'ref'),
      cell('td', fmtInt(b.declines), 'declines', b.declines, 'down'),
      bar,
      cell('td', fmtInt(b.ceilings), 'ceilings', b.ceilings, 'ceiling'),
      cell('td', fmtInt(b.floors), 'floors', b.floors, 'floor'),
      cell('td', fmtVnd(b.total_value), 'total_value', b.total_value),
    );
    return tr;
  });
  els.breadth.tBodies[0].replaceChildren(...rows);
  els.breadth.hidden = rows.length === 0;
  els.breadthEmpty.hidden = rows.length > 0;
}

function renderMovers() {
  const movers = state.movers;
  for (const [key, , value] of MOVER_LISTS) {
    const list = els.moverLists[key];
    const items = (movers?.[key] || []).map((m) => {
      const li = document.createElement('li');
      li.dataset.symbol = m.symbol;
      const trend = changeTrend(m.change);
      li.append(
        cell('b', m.symbol),
        cell('span', fmtPrice(m.last_price), 'last_price', m.last_price, trend),
        cell('span', value(m), key === 'volume' ? 'total_volume' : key === 'value' ? 'total_value' : 'ratio_change',
          key === 'volume' ? m.total_volume : key === 'value' ? m.total_value : m.ratio_change,
          key === 'gainers' || key === 'losers' ? trend : null),
      );
      return li;
    });
    fillList(list, items);
  }
}

function renderContribution() {
  const c = state.contribution;
  const members = (c?.members || []).filter((m) => isNum(m.points));
  const up = members.filter((m) => m.points > 0).slice(0, CONTRIBUTORS);
  const down = members.filter((m) => m.points < 0).slice(-CONTRIBUTORS);
  const shown = [...up, ...down];
  const max = Math.max(1e-9, ...shown.map((m) => Math.abs(m.points)));
  const rows = shown.map((m) => {
    const row = document.createElement('div');
    row.className = 'flow-row';
    row.setAttribute('role', 'listitem');
    row.dataset.symbol = m.symbol;
    setRaw(row, m.points);
    row.title = `${m.symbol}: ${fmtSigned(m.points, fmtPoints)} điểm · tỷ trọng ${(m.weight * 100).toFixed(2)}%`
      + ` · ${fmtPct(m.ratio_change)}`;
    // What pushed the index up grows right, what pulled it down grows left.
    row.append(cell('b', m.symbol), divergingTrack(m.points, max), cell('span', fmtSigned(m.points, fmtPoints), 'points', m.points,
      changeTrend(m.points)));
    return row;
  });
  els.contribution.replaceChildren(...rows);
  let note = '';
  if (c && isNum(c.change)) {
    note = `VN30 ${fmtSigned(c.change, fmtPoints)} điểm; các mã giải thích ${fmtSigned(c.explained, fmtPoints)}`;
  }
  if (c && c.unweighted?.length) {
    note += `${note ? ' · ' : ''}chưa có số CP niêm yết, không tính: ${c.unweighted.join(', ')}`;
  }
  els.contributionNote.textContent = note || (c ? '' : 'Đang tải…');
  els.contributionNote.hidden = !els.contributionNote.textContent;
  els.contributionEmpty.hidden = rows.length > 0;
}

function render() {
  if (drawn.breadth !== state.breadth) renderBreadth();
  if (drawn.movers !== state.movers) renderMovers();
  if (drawn.contribution !== state.contribution) renderContribution();
  drawn = { breadth: state.breadth, movers: state.movers, contribution: state.contribution };
  els.status.hidden = !state.failed;
}

export function initViews() {
  const root = document.getElementById('views');
  els = {
    root,
    breadth: document.getElementById('breadth'),
    breadthEmpty: document.getElementById('breadth-empty'),
    exchange: document.getElementById('movers-exchange'),
    moverLists: Object.fromEntries(MOVER_LISTS.map(([key]) => [key, document.getElementById(`movers-${key}`)])),
    contribution: document.getElementById('contribution'),
    contributionNote: document.getElementById('contribution-note'),
    contributionEmpty: document.getElementById('contribution-empty'),
    status: document.getElementById('views-status'),
  };
  els.exchange.addEventListener('change', () => {
    state.movers = null;
    invalidate('views');
    poll();
  });
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden) poll();
  });
  onRender('views', render);
  poll();
}
