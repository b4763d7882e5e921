// Index cards (VN-Index and VN30 first, any other index the gateway tracks after them): value, change, breadth
// and an intraday sparkline (described in words for screen readers: value, change, the session's low and high).

import { describe, range } from './a11y.js';
import { drawSparkline, watchSize } from './charts.js';
import {
  changeTrend, fmtClock, fmtInt, fmtPct, fmtPoints, fmtSigned, isNum, parseTime, setRaw,
} from './format.js';
import { invalidate, onRender } from './scheduler.js';
import { store } from './store.js';

const FIRST = ['VNINDEX', 'VN30'];
const NAMES = { VNINDEX: 'VN-Index', VN30: 'VN30', HNXINDEX: 'HNX-Index', UPCOMINDEX: 'UPCoM' };

const cards = new Map(); // ID → {el, fields, canvas, drawn}
let container;

function createCard(id) {
  const el = document.createElement('article');
  el.className = 'index-card';
  el.dataset.index = id;
  el.innerHTML = `
    <header><h3></h3><span class="muted" data-field="time"></span></header>
    <div class="index-value" data-field="value">—</div>
    <div class="index-change"><span data-field="change">—</span><span data-field="ratio_change">—</span></div>
    <canvas class="spark" role="img"></canvas>
    <div class="breadth">
      <span class="up" title="Số mã tăng">▲ <b data-field="advances">—</b></span>
      <span class="ref" title="Số mã đứng giá">■ <b data-field="no_changes">—</b></span>
      <span class="down" title="Số mã giảm">▼ <b data-field="declines">—</b></span>
    </div>
    <div class="breadth-bar"><i class="up"></i><i class="ref"></i><i class="down"></i></div>`;
  const name = NAMES[id] || id;
  el.querySelector('h3').textContent = name;
  const fields = {};
  for (const node of el.querySelectorAll('[data-field]')) fields[node.dataset.field] = node;
  const card = { name, el, fields, canvas: el.querySelector('canvas'), bar: el.querySelector('.breadth-bar'), drawn: null };
  watchSize(card.canvas, () => {
    card.drawn = null;
    invalidate('indices');
  });
  return card;
}

/** The sparkline in words, e.g. "VN30 1,895.02, giảm 7.33 (-0.39%); trong phiên thấp nhất 1,890.10, cao nhất …". */
function sparkText(name, data, values) {
  if (!data || !isNum(data.value)) return `${name}: chưa có dữ liệu`;
  let text = `${name} ${fmtPoints(data.value)}`;
  if (isNum(data.change)) {
    if (data.change > 0) text += `, tăng ${fmtPoints(data.change)}`;
    else if (data.change < 0) text += `, giảm ${fmtPoints(-data.change)}`;
    else text += ', đứng giá';
    if (isNum(data.ratio_change)) text += ` (${fmtPct(data.ratio_change)})`;
  }
  const span = values.length > 1 ? range(values) : null;
  if (span) text += `; trong phiên thấp nhất ${fmtPoints(span.lo)}, cao nhất ${fmtPoints(span.hi)}`;
  return text;
}

function setField(node, text, value) {
  node.textContent = text;
  setRaw(node, value);
}

function updateCard(card, data) {
  const f = card.fields;
  card.el.dataset.trend = data ? changeTrend(data.change) : 'none';
  setField(f.value, fmtPoints(data?.value), data?.value);
  setField(f.change, fmtSigned(data?.change, fmtPoints), data?.change);
  setField(f.ratio_change, fmtPct(data?.ratio_change), data?.ratio_change);
  setField(f.advances, fmtInt(data?.advances), data?.advances);
  setField(f.no_changes, fmtInt(data?.no_changes), data?.no_changes);
  setField(f.declines, fmtInt(data?.declines), data?.declines);
  f.time.textContent = data ? fmtClock(parseTime(data.last_updated)) : '';

  const total = (data?.advances || 0) + (data?.no_changes || 0) + (data?.declines || 0);
  const [up, ref, down] = card.bar.children;
  up.style.width = total ? `${(data.advances / total) * 100}%` : '0';
  ref.style.width = total ? `${(data.no_changes / total) * 100}%` : '0';
  down.style.width = total ? `${(data.declines / total) * 100}%` : '0';

  const values = (data?.intraday || []).map((p) => p && p.value).filter(isNum);
  if (isNum(data?.value) && values.length && values[values.length - 1] !== data.value) values.push(data.value);
  drawSparkline(card.canvas, values, data?.prior_value > 0 ? data.prior_value : undefined);
  describe(card.canvas, sparkText(card.name, data, values));
}

function render() {
  const ids = [...FIRST, ...[...store.indices.keys()].filter((id) => !FIRST.includes(id)).sort()];
  for (const id of ids) {
    if (!cards.has(id)) {
      const card = createCard(id);
      cards.set(id, card);
      container.append(card.el);
    }
  }
  for (const [id, card] of cards) {
    const data = store.indices.get(id) || null;
    if (!FIRST.includes(id) && !data) {
      card.el.remove();
      cards.delete(id);
    } else if (card.drawn !== data || data === null) {
      card.drawn = data;
      updateCard(card, data);
    }
  }
}

export function initIndices() {
  container = document.getElementById('indices');
  onRender('indices', render);
  invalidate('indices');
}
