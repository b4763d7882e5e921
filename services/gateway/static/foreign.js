// Foreign investors (khối ngoại) over the VN30 basket: totals and top lists from the live summary, per-symbol net
// flow bars from /api/market/foreign-detail, re-read when /ws/foreign speaks (at most every 2 s).

import { apiGet } from './auth.js';
import {
  changeTrend, divergingTrack, fillList, fmtClock, fmtVnd, isNum, parseTime, setRaw,
} from './format.js';
import { invalidate, onRender } from './scheduler.js';
import { applyForeign, setForeignStocks, store } from './store.js';

const MIN_INTERVAL_MS = 2000;

let timer = 0;
let busy = false;
let again = false;
let lastStart = -Infinity;

/** Ask for a fresh foreign-detail; calls closer than 2 s apart are merged into one trailing request. */
export function refreshForeignDetail() {
  if (busy) {
    again = true;
    return;
  }
  if (timer) return;
  timer = setTimeout(fetchDetail, Math.max(0, lastStart + MIN_INTERVAL_MS - performance.now()));
}

async function fetchDetail() {
  timer = 0;
  busy = true;
  lastStart = performance.now();
  const res = await apiGet('/api/market/foreign-detail');
  busy = false;
  if (res.ok && res.data) {
    setForeignStocks(res.data.stocks);
    if (res.data.summary) applyForeign({ type: 'snapshot', data: res.data.summary });
  }
  if (again) {
    again = false;
    refreshForeignDetail();
  }
}

let els;

function setValue(node, value) {
  node.textContent = fmtVnd(value, node.dataset.field === 'total_net_value');
  setRaw(node, value);
  node.dataset.trend = node.dataset.field === 'total_net_value' ? changeTrend(value) : node.dataset.trend || '';
}

function listItems(list, stocks) {
  const items = stocks.map((s) => {
    const li = document.createElement('li');
    li.dataset.symbol = s.symbol;
    setRaw(li, s.net_value);
    const name = document.createElement('b');
    name.textContent = s.symbol;
    const value = document.createElement('span');
    value.textContent = fmtVnd(s.net_value, true);
    value.dataset.trend = changeTrend(s.net_value);
    li.append(name, value);
    return li;
  });
  fillList(list, items);
}

function flowBars(stocks) {
  const rows = stocks.filter((s) => s && isNum(s.net_value)).sort((a, b) => b.net_value - a.net_value);
  const max = Math.max(1, ...rows.map((s) => Math.abs(s.net_value)));
  const nodes = rows.map((s) => {
    const row = document.createElement('div');
    row.className = 'flow-row';
    row.dataset.symbol = s.symbol;
    setRaw(row, s.net_value);
    row.title = `${s.symbol}: mua ${fmtVnd(s.buy_value)} · bán ${fmtVnd(s.sell_value)}`;
    const name = document.createElement('b');
    name.textContent = s.symbol;
    const track = divergingTrack(s.net_value, max); // buyers grow right, sellers grow left
    const value = document.createElement('span');
    value.textContent = fmtVnd(s.net_value, true);
    value.dataset.trend = changeTrend(s.net_value);
    row.append(name, track, value);
    return row;
  });
  els.flows.replaceChildren(...nodes);
  els.flowsEmpty.hidden = nodes.length > 0;
}

let drawnSummary;
let drawnStocks;

function render() {
  const summary = store.foreign;
  if (summary !== drawnSummary) {
    drawnSummary = summary;
    for (const node of els.totals) setValue(node, summary ? summary[node.dataset.field] : undefined);
    els.time.textContent = summary ? fmtClock(parseTime(summary.last_updated)) : '';
    listItems(els.topBuy, (summary?.top_buy || []).filter(Boolean));
    listItems(els.topSell, (summary?.top_sell || []).filter(Boolean));
  }
  if (store.foreignStocks !== drawnStocks) {
    drawnStocks = store.foreignStocks;
    flowBars(drawnStocks);
  }
}

export function initForeign() {
  const root = document.getElementById('foreign');
  els = {
    totals: root.querySelectorAll('[data-field]'),
    time: document.getElementById('foreign-time'),
    topBuy: document.getElementById('foreign-top-buy'),
    topSell: document.getElementById('foreign-top-sell'),
    flows: document.getElementById('foreign-flows'),
    flowsEmpty: document.getElementById('foreign-flows-empty'),
  };
  onRender('foreign', render);
  invalidate('foreign');
}
