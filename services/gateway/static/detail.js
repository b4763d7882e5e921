// Symbol detail drawer: today's 1-minute candles with active buy/sell volume, the latest classified trades and the
// book. Live, not polled: opening it subscribes to the symbol's `trades` and `candles` topics on the tab's socket
// (snapshot: the latest trades, the latest candles with the forming one last; then what is new), closing it
// unsubscribes. Only the day's earlier candles are read once from the history API (the gateway's tape keeps the latest
// 60), merged with the live ones by minute, the live candle winning.
// It is a modal dialog for the keyboard: opening moves focus into it, Tab stays inside, Escape closes it and focus
// goes back to what opened it (the board's row). The candles carry a text description for screen readers.

import {
  describe, keepTabInside, range, restoreFocus,
} from './a11y.js';
import { apiGet } from './auth.js';
import { drawCandles, watchSize } from './charts.js';
import {
  changeTrend, fmtClock, fmtInt, fmtPct, fmtPrice, fmtSigned, fmtTick, isFutures, isNum, parseTime, priceTrend,
  setRaw,
} from './format.js';
import { invalidate, onRender } from './scheduler.js';
import { store } from './store.js';
import { inWatchlist, onWatchlistChange, toggleSymbol } from './watchlist.js';

const SHOWN_TICKS = 50; // the trades snapshot's size
const ERROR_RETRY_MS = 10000;

const TRADE_TYPES = {
  mua_chu_dong: ['Mua CĐ', 'up'],
  ban_chu_dong: ['Bán CĐ', 'down'],
  neutral: ['Trung tính', 'ref'],
};

let els;
let socket;
let symbol = null;
let history = new Map(); // minute (ms) → candle, from /api/history (the day's, as the recorder has them)
let live = new Map(); // minute (ms) → candle, from the candles topic (the latest, the forming one included)
let candles = [];
let ticks = [];
let seq = { trades: -1, candles: -1 }; // the topics' latest messages applied; -1 until their snapshot
let generation = 0; // bumps on every open/close so a late history answer for another symbol is dropped
let historyState = 'idle'; // 'loading' | 'ok' | 'error'
let retryTimer = 0;
let layout = null;
let hover = -1;
let chartDirty = false;
let ticksDirty = false;
let onClose = () => {};
let focusFallback = () => false;
let returnTo = null; // the element that opened the dialog: focus goes back there on close

/** Futures points to 0.1 (1,899.0), VND prices whole, as the board prints them. */
const priceFormat = () => (isFutures(symbol, store.board.get(symbol)?.exchange) ? fmtTick : fmtPrice);

const requests = (sym) => [{ channel: 'trades', symbol: sym }, { channel: 'candles', symbol: sym }];

function setStatus(text, kind = '') {
  els.status.textContent = text;
  els.status.dataset.kind = kind;
  els.status.hidden = !text;
}

function historyError(res) {
  if (res.status === 503) return 'Lịch sử chưa sẵn sàng: cơ sở dữ liệu chưa kết nối, sẽ thử lại.';
  if (res.status === 0) return 'Không kết nối được gateway, sẽ thử lại.';
  return `Không tải được lịch sử (HTTP ${res.status}).`;
}

/** What the status line says once the history answered (or failed). */
function updateStatus(failed = null) {
  if (failed) setStatus(historyError(failed), 'error');
  else if (historyState === 'loading') setStatus('Đang tải lịch sử…', 'loading');
  else if (!candles.length && !ticks.length && seq.trades >= 0) {
    setStatus('Chưa có giao dịch nào được ghi nhận hôm nay.', 'empty');
  } else setStatus('');
}

/** The candles drawn: the history's and the live ones by minute, of the latest trading date only. */
function mergeCandles() {
  const merged = new Map(history);
  for (const [t, candle] of live) merged.set(t, candle);
  const all = [...merged.values()];
  const latest = all.reduce((date, c) => (c.trading_date && c.trading_date > date ? c.trading_date : date), '');
  candles = all.filter((c) => !latest || !c.trading_date || c.trading_date === latest).sort((a, b) => a.t - b.t);
  chartDirty = true;
}

async function loadHistory() {
  clearTimeout(retryTimer);
  retryTimer = 0;
  const gen = generation;
  const sym = symbol;
  historyState = 'loading';
  const res = await apiGet(`/api/history/${encodeURIComponent(sym)}/candles`);
  if (gen !== generation) return;
  if (res.ok && Array.isArray(res.data)) {
    historyState = 'ok';
    history = new Map();
    for (const c of res.data) {
      if (!c || !isNum(c.open) || !isNum(c.close)) continue;
      const t = parseTime(c.time);
      if (!Number.isNaN(t)) history.set(t, { ...c, t });
    }
    mergeCandles();
    updateStatus();
  } else {
    historyState = 'error';
    updateStatus(res);
    // e.g. a 503 while the database is not ready: retry, gently (the live candles keep coming meanwhile)
    retryTimer = setTimeout(() => gen === generation && loadHistory(), ERROR_RETRY_MS);
  }
  invalidate('detail');
}

/** Whether a topic's message is one to apply: ours, a snapshot, or a delta newer than what we have. */
function accept(channel, msg) {
  if (!symbol || msg.topic !== symbol) return false;
  if (msg.type === 'snapshot') {
    seq[channel] = Number(msg.seq) || 0;
    return true;
  }
  if (seq[channel] < 0 || !(msg.seq > seq[channel])) return false;
  seq[channel] = msg.seq;
  return true;
}

/** The `trades` topic: {trades: [ClassifiedTrade]}, the latest as a snapshot, then the new ones in order. */
export function applyTrades(msg) {
  if (!accept('trades', msg)) return;
  const incoming = (Array.isArray(msg.data?.trades) ? msg.data.trades : []).filter((t) => t && isNum(t.price));
  for (const t of incoming) t.t = parseTime(t.timestamp);
  if (msg.type === 'snapshot') {
    ticks = incoming.slice(-SHOWN_TICKS);
  } else {
    // A trade repeated (the stream read again) has no larger cumulative volume than the last one kept.
    const last = ticks[ticks.length - 1];
    const fresh = last ? incoming.filter((t) => !(t.total_volume <= last.total_volume)) : incoming;
    if (!fresh.length) return;
    ticks = ticks.concat(fresh).slice(-SHOWN_TICKS);
  }
  ticksDirty = true;
  if (historyState !== 'error') updateStatus();
  invalidate('detail');
}

/** The `candles` topic: {candles: [Candle]}, the latest as a snapshot, then those that changed. */
export function applyCandles(msg) {
  if (!accept('candles', msg)) return;
  if (msg.type === 'snapshot') live = new Map();
  for (const c of Array.isArray(msg.data?.candles) ? msg.data.candles : []) {
    if (!c || !isNum(c.open) || !isNum(c.close)) continue;
    const t = parseTime(c.time);
    if (!Number.isNaN(t)) live.set(t, { ...c, t });
  }
  mergeCandles();
  if (historyState !== 'error') updateStatus();
  invalidate('detail');
}

/** The gateway refused a trades / candles subscription (e.g. not a symbol). */
export function detailError(why) {
  if (!symbol) return;
  setStatus(`Gateway không nhận đăng ký: ${why}`, 'error');
}

/**
 * Open the drawer on `sym` (or just move focus into it when it already shows `sym`); `opener` gets focus back
 * when it closes.
 */
export function openDetail(sym, opener = document.activeElement) {
  if (opener && opener !== document.body && !els.root.contains(opener)) returnTo = opener;
  if (sym !== symbol) show(sym);
  els.close.focus();
}

function leave() {
  if (!symbol) return;
  for (const request of requests(symbol)) socket.unsubscribe(request);
}

function show(sym) {
  leave();
  generation += 1;
  symbol = sym;
  history = new Map();
  live = new Map();
  candles = [];
  ticks = [];
  seq = { trades: -1, candles: -1 };
  hover = -1;
  els.root.hidden = false;
  els.root.dataset.symbol = sym;
  els.symbol.textContent = sym;
  els.canvas.dataset.candles = '0';
  els.readout.textContent = '';
  setStatus('Đang tải lịch sử…', 'loading');
  chartDirty = true;
  ticksDirty = true;
  for (const request of requests(sym)) socket.subscribe(request);
  invalidate('detail');
  loadHistory();
}

export function closeDetail() {
  if (!symbol) return;
  const closed = symbol;
  // Focus is only taken back when it was ours (inside the dialog, or lost with it), never from elsewhere.
  const active = document.activeElement;
  const ours = !active || active === document.body || els.root.contains(active);
  const back = returnTo;
  returnTo = null;
  leave();
  clearTimeout(retryTimer);
  generation += 1;
  symbol = null;
  els.root.hidden = true;
  els.root.dataset.symbol = '';
  onClose(closed);
  if (ours && !restoreFocus(back)) focusFallback(closed);
}

/** These symbols' board rows or prices changed: redraw our figures if ours is one of them. */
export function noteMarketChange(changed) {
  if (symbol && changed && changed[symbol] !== undefined) invalidate('detail');
}

function renderSummary() {
  const b = store.board.get(symbol);
  const p = store.prices.get(symbol);
  const q = store.quotes.get(symbol);
  const last = b ? b.last_price : p?.last_price;
  const ref = b ? b.ref_price : p?.ref_price;
  const change = b ? b.change : p?.change;
  const pct = b ? b.ratio_change : p?.change_pct;
  const trend = priceTrend(last, ref, b ? b.ceiling : p?.ceiling, b ? b.floor : p?.floor);
  const fmt = priceFormat();
  const f = els.fields;
  const put = (node, text, value, t) => {
    node.textContent = text;
    setRaw(node, value);
    if (t) node.dataset.trend = t;
  };
  put(f.last_price, fmt(last), last, trend);
  put(f.change, `${fmtSigned(change, fmt)} (${fmtPct(pct)})`, change, trend);
  put(f.ref_price, fmt(ref), ref);
  put(f.total_volume, fmtInt(b ? b.total_volume : q?.total_volume), b ? b.total_volume : q?.total_volume);
  put(f.buy_volume, fmtInt(q?.mua_chu_dong_volume), q?.mua_chu_dong_volume);
  put(f.sell_volume, fmtInt(q?.ban_chu_dong_volume), q?.ban_chu_dong_volume);
  put(f.neutral_volume, fmtInt(q?.neutral_volume), q?.neutral_volume);
  renderBook(b);
  renderWatch();
}

/** The book as the board row has it (3 levels on HOSE, up to 10 elsewhere): bids left, asks right, best first. */
function renderBook(b) {
  const depth = Math.max(b?.bids?.length || 0, b?.asks?.length || 0);
  const limits = [b?.ref_price, b?.ceiling, b?.floor];
  const fmt = priceFormat();
  const key = b ? JSON.stringify([b.bids, b.asks, limits]) : '';
  if (els.book.dataset.key === key) return;
  els.book.dataset.key = key;
  const body = [];
  for (let i = 0; i < depth; i += 1) {
    const tr = document.createElement('tr');
    const [bidPrice, bidVolume] = b.bids[i] || [];
    const [askPrice, askVolume] = b.asks[i] || [];
    for (const [field, text, value, trend] of [
      ['bid_volume', fmtInt(bidVolume), bidVolume, null],
      ['bid_price', fmt(bidPrice), bidPrice, priceTrend(bidPrice, ...limits)],
      ['ask_price', fmt(askPrice), askPrice, priceTrend(askPrice, ...limits)],
      ['ask_volume', fmtInt(askVolume), askVolume, null],
    ]) {
      const td = document.createElement('td');
      td.dataset.field = field;
      td.textContent = isNum(value) ? text : '';
      setRaw(td, value);
      if (trend && trend !== 'none') td.dataset.trend = trend;
      tr.append(td);
    }
    body.push(tr);
  }
  els.book.tBodies[0].replaceChildren(...body);
  els.book.hidden = depth === 0;
}

function renderWatch() {
  const watched = inWatchlist(symbol);
  if (els.watch.getAttribute('aria-pressed') !== String(watched)) {
    els.watch.setAttribute('aria-pressed', String(watched));
    els.watch.textContent = watched ? '★ Trong danh mục' : '☆ Thêm vào danh mục';
  }
}

/** The candles in words, e.g. "BID: 29 nến 1 phút từ 09:15 đến 14:45, giá đóng cửa cuối 45,500, …". */
function candlesText() {
  if (!candles.length) return `${symbol}: chưa có nến 1 phút`;
  const first = candles[0];
  const last = candles[candles.length - 1];
  const high = range(candles.map((c) => c.high));
  const low = range(candles.map((c) => c.low));
  const volume = (key) => candles.reduce((sum, c) => sum + (isNum(c[key]) ? c[key] : 0), 0);
  return `${symbol}: ${candles.length} nến 1 phút từ ${fmtClock(first.t, false)} đến ${fmtClock(last.t, false)}, `
    + `giá đóng cửa cuối ${fmtPrice(last.close)}, cao nhất ${fmtPrice(high?.hi)}, thấp nhất ${fmtPrice(low?.lo)}; `
    + `KL mua CĐ ${fmtInt(volume('buy_volume'))}, bán CĐ ${fmtInt(volume('sell_volume'))}`;
}

function renderChart() {
  layout = drawCandles(els.canvas, candles, hover);
  els.canvas.dataset.candles = String(layout ? candles.length : 0);
  const c = candles[hover] || candles[candles.length - 1];
  els.readout.textContent = c
    ? `${fmtClock(c.t, false)}  O ${fmtPrice(c.open)}  H ${fmtPrice(c.high)}  L ${fmtPrice(c.low)}  C ${fmtPrice(c.close)}`
      + `  ·  KL ${fmtInt(c.volume)}  ·  Mua CĐ ${fmtInt(c.buy_volume)}  ·  Bán CĐ ${fmtInt(c.sell_volume)}`
    : '';
  if (c) setRaw(els.readout, c.close);
}

function renderTicks() {
  const ref = (store.board.get(symbol) || store.prices.get(symbol))?.ref_price;
  const fmt = priceFormat();
  const rows = ticks.slice().reverse().map((t) => {
    const tr = document.createElement('tr');
    const [label, typeTrend] = TRADE_TYPES[t.trade_type] || [t.trade_type || '—', 'none'];
    tr.dataset.type = t.trade_type || '';
    if (isNum(t.total_volume)) tr.dataset.total = String(t.total_volume);
    const cells = [
      ['time', fmtClock(t.t), null, null],
      ['price', fmt(t.price), t.price, isNum(ref) ? changeTrend(t.price - ref) : null],
      ['volume', fmtInt(t.volume), t.volume, null],
      ['trade_type', label, null, typeTrend],
      ['rule', t.rule || '—', null, null],
    ];
    for (const [field, text, value, trend] of cells) {
      const td = document.createElement('td');
      td.dataset.field = field;
      if (field === 'price') td.className = 'cue';
      td.textContent = text;
      if (value !== null) setRaw(td, value);
      if (trend) td.dataset.trend = trend;
      tr.append(td);
    }
    return tr;
  });
  els.ticks.tBodies[0].replaceChildren(...rows);
}

function render() {
  if (!symbol) return;
  renderSummary();
  describe(els.canvas, els.status.dataset.kind === 'loading' && !candles.length
    ? `${symbol}: đang tải nến 1 phút` : candlesText());
  if (chartDirty) {
    chartDirty = false;
    renderChart();
  }
  if (ticksDirty) {
    ticksDirty = false;
    renderTicks();
  }
}

function pointerToCandle(event) {
  if (!layout || !candles.length) return -1;
  const x = event.clientX - els.canvas.getBoundingClientRect().left;
  if (x < 0 || x > layout.plotW) return -1;
  return Math.min(candles.length - 1, Math.floor(x / layout.slot));
}

/** `socket`: the tab's GatewaySocket, for the symbol's trades and candles topics. */
export function initDetail({ socket: gatewaySocket, onClosed, onFocusLost }) {
  socket = gatewaySocket;
  const root = document.getElementById('detail');
  const fields = {};
  for (const node of root.querySelectorAll('.detail-stats [data-field]')) fields[node.dataset.field] = node;
  els = {
    root,
    fields,
    symbol: document.getElementById('detail-symbol'),
    canvas: document.getElementById('detail-candles'),
    readout: document.getElementById('detail-readout'),
    ticks: document.getElementById('detail-ticks'),
    book: document.getElementById('detail-book'),
    status: document.getElementById('detail-status'),
    close: document.getElementById('detail-close'),
    watch: document.getElementById('detail-watch'),
  };
  onClose = onClosed;
  if (onFocusLost) focusFallback = onFocusLost;
  els.close.addEventListener('click', closeDetail);
  els.watch.addEventListener('click', () => {
    if (symbol) toggleSymbol(symbol);
  });
  onWatchlistChange(() => invalidate('detail'));
  root.addEventListener('keydown', (event) => keepTabInside(root, event));
  document.addEventListener('keydown', (event) => {
    if (event.key === 'Escape' && symbol && !event.defaultPrevented && document.getElementById('auth').hidden) {
      event.preventDefault();
      closeDetail();
    }
  });
  els.canvas.addEventListener('pointermove', (event) => {
    const index = pointerToCandle(event);
    if (index !== hover) {
      hover = index;
      chartDirty = true;
      invalidate('detail');
    }
  });
  els.canvas.addEventListener('pointerleave', () => {
    hover = -1;
    chartDirty = true;
    invalidate('detail');
  });
  watchSize(els.canvas, () => {
    chartDirty = true;
    invalidate('detail');
  });
  onRender('detail', render);
}
