// VN30 index futures: the active (front-month) contract, its basis to VN30 and the basis over the last 30 minutes
// (the chart is described in words for screen readers).

import { describe, range } from './a11y.js';
import { drawLineChart, watchSize } from './charts.js';
import {
  changeTrend, fmtClock, fmtInt, fmtPct, fmtPoints, fmtSigned, isNum, parseTime, setRaw,
} from './format.js';
import { invalidate, onRender } from './scheduler.js';
import { store } from './store.js';

let els;

function set(node, text, value, trend) {
  node.textContent = text;
  setRaw(node, value);
  if (trend !== undefined) node.dataset.trend = trend;
}

function contractRows() {
  const rows = [...store.contracts.values()].sort((a, b) => (a.symbol < b.symbol ? -1 : 1)).map((c) => {
    const tr = document.createElement('tr');
    tr.dataset.symbol = c.symbol;
    if (store.contract && c.symbol === store.contract.symbol) tr.className = 'active';
    const cells = [
      [c.symbol, null],
      [fmtPoints(c.last_price), changeTrend(c.change)],
      [fmtSigned(c.change, fmtPoints), changeTrend(c.change)],
      [fmtSigned(c.basis, fmtPoints), changeTrend(c.basis)],
      [fmtInt(c.volume), null],
    ];
    for (const [text, trend] of cells) {
      const td = document.createElement('td');
      td.textContent = text;
      if (trend) td.dataset.trend = trend;
      tr.append(td);
    }
    return tr;
  });
  els.contracts.tBodies[0].replaceChildren(...rows);
  els.contracts.hidden = rows.length < 2;
}

/** The basis trend in words, e.g. "Basis VN30F2612, 30 phút gần nhất (14:15–14:45): hiện tại +3.98, …". */
function basisText(contract, points) {
  if (!contract) return 'Basis: chưa có hợp đồng';
  if (points.length < 2) return `Basis ${contract.symbol}: chưa đủ dữ liệu`;
  const first = points[0];
  const last = points[points.length - 1];
  const span = range(points.map((p) => p.v));
  return `Basis ${contract.symbol}, 30 phút gần nhất (${fmtClock(first.t, false)}–${fmtClock(last.t, false)}): `
    + `hiện tại ${fmtSigned(last.v, fmtPoints)} (${last.v > 0 ? 'premium' : last.v < 0 ? 'discount' : 'ngang giá'}), `
    + `thấp nhất ${fmtSigned(span.lo, fmtPoints)}, cao nhất ${fmtSigned(span.hi, fmtPoints)}`;
}

function render() {
  const c = store.contract;
  const f = els.fields;
  const trend = c ? changeTrend(c.change) : 'none';
  els.root.dataset.symbol = c ? c.symbol : '';
  set(f.symbol, c ? c.symbol : 'Chưa có hợp đồng', null);
  set(f.last_price, fmtPoints(c?.last_price), c?.last_price, trend);
  set(f.change, fmtSigned(c?.change, fmtPoints), c?.change, trend);
  set(f.change_pct, fmtPct(c?.change_pct), c?.change_pct, trend);
  set(f.spot_value, fmtPoints(c?.spot_value), c?.spot_value);
  set(f.volume, fmtInt(c?.volume), c?.volume);
  f.bid_ask.textContent = c ? `${fmtPoints(c.bid_price)} / ${fmtPoints(c.ask_price)}` : '—';
  els.time.textContent = c ? fmtClock(parseTime(c.last_updated)) : '';

  const basis = c && isNum(c.basis) ? c.basis : null;
  set(els.basis, fmtSigned(basis, fmtPoints), basis, changeTrend(basis));
  set(els.basisPct, fmtPct(c?.basis_pct), c?.basis_pct, changeTrend(basis));
  const premium = basis === null ? null : typeof c.is_premium === 'boolean' ? c.is_premium : basis > 0;
  els.side.textContent = premium === null ? '—' : premium ? 'premium' : 'discount';
  els.side.dataset.side = premium === null ? '' : premium ? 'premium' : 'discount';

  const series = (c && store.basis.get(c.symbol)) || [];
  const points = series.filter((p) => isNum(p.basis)).map((p) => ({ t: p.t, v: p.basis }));
  drawLineChart(els.chart, points, (v) => v.toFixed(1));
  describe(els.chart, basisText(c, points));
  els.chart.dataset.points = String(series.length);
  contractRows();
}

export function initFutures() {
  const root = document.getElementById('futures');
  const fields = {};
  for (const node of root.querySelectorAll('[data-field]')) fields[node.dataset.field] = node;
  els = {
    root,
    fields,
    time: document.getElementById('futures-time'),
    basis: document.getElementById('basis-value'),
    basisPct: document.getElementById('basis-pct'),
    side: document.getElementById('basis-side'),
    chart: document.getElementById('basis-chart'),
    contracts: document.getElementById('futures-contracts'),
  };
  watchSize(els.chart, () => invalidate('futures'));
  onRender('futures', render);
  invalidate('futures');
}
