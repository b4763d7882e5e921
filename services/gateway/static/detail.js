// Symbol detail drawer: today's 1-minute candles with active buy/sell volume, and the latest ticks, from the
// history API. While open it re-reads the history when the symbol trades (ticks incrementally).
// It is a modal dialog for the keyboard: opening moves focus into it, Tab stays inside, Escape closes it and focus
// goes back to what opened it (the board's row). The candles carry a text description for screen readers.

import {
  describe, keepTabInside, range, restoreFocus,
} from './a11y.js';
import { apiGet } from './auth.js';
import { drawCandles, watchSize } from './charts.js';
import {
  changeTrend, fmtClock, fmtInt, fmtPct, fmtPrice, fmtSigned, isNum, parseTime, priceTrend, setRaw,
} from './format.js';
import { invalidate, onRender } from './scheduler.js';
import { store } from './store.js';

const SHOWN_TICKS = 30;
const POLL_MS = 3000;
const ERROR_RETRY_MS = 10000;
const IDLE_REFRESH_MS = 15000; // re-read even without a visible change: the recorder lags the live view a little

const TRADE_TYPES = {
  mua_chu_dong: ['Mua CĐ', 'up'],
  ban_chu_dong: ['Bán CĐ', 'down'],
  neutral: ['Trung tính', 'ref'],
};

let els;
let symbol = null;
let candles = [];
let ticks = [];
let generation = 0; // bumps on every open/close so late answers for another symbol are dropped
let loadingGen = -1; // the generation whose history request is in flight
let changedSinceLoad = false;
let lastLoad = 0;
let layout = null;
let hover = -1;
let chartDirty = false;
let ticksDirty = false;
let onClose = () => {};
let focusFallback = () => false;
let returnTo = null; // the element that opened the dialog: focus goes back there on close

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

function mergeTicks(incoming) {
  const rows = (Array.isArray(incoming) ? incoming : []).filter((t) => t && isNum(t.price));
  for (const t of rows) t.t = parseTime(t.timestamp);
  const last = ticks[ticks.length - 1];
  const fresh = last
    ? rows.filter((t) => t.t > last.t || (t.t === last.t && t.total_volume > last.total_volume))
    : rows;
  if (fresh.length || !last) ticks = ticks.concat(fresh).slice(-SHOWN_TICKS);
  return fresh.length > 0;
}

async function load() {
  if (!symbol || loadingGen === generation) return;
  const gen = generation;
  const sym = symbol;
  loadingGen = gen;
  changedSinceLoad = false;
  lastLoad = performance.now();
  const base = `/api/history/${encodeURIComponent(sym)}`;
  const last = ticks[ticks.length - 1];
  const tickUrl = last
    ? `${base}/ticks?start=${encodeURIComponent(last.timestamp)}&limit=50000`
    : `${base}/ticks?limit=50000`;
  const [candleRes, tickRes] = await Promise.all([apiGet(`${base}/candles`), apiGet(tickUrl)]);
  if (loadingGen === gen) loadingGen = -1;
  if (gen !== generation) return;

  if (candleRes.ok && Array.isArray(candleRes.data)) {
    candles = candleRes.data.filter((c) => c && isNum(c.open) && isNum(c.close))
      .map((c) => ({ ...c, t: parseTime(c.time) }));
    chartDirty = true;
  }
  if (tickRes.ok && mergeTicks(tickRes.data)) ticksDirty = true;

  const failed = [candleRes, tickRes].find((r) => !r.ok);
  if (failed) setStatus(historyError(failed), 'error');
  else if (!candles.length && !ticks.length) setStatus('Chưa có giao dịch nào được ghi nhận hôm nay.', 'empty');
  else setStatus('');
  invalidate('detail');
}

function poll() {
  if (!symbol || document.hidden) return;
  const since = performance.now() - lastLoad;
  if (els.status.dataset.kind === 'error') {
    if (since > ERROR_RETRY_MS) load(); // e.g. a 503 while the database is not ready: retry, gently
  } else if (changedSinceLoad || since > IDLE_REFRESH_MS) {
    load();
  }
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

function show(sym) {
  generation += 1;
  symbol = sym;
  candles = [];
  ticks = [];
  hover = -1;
  els.root.hidden = false;
  els.root.dataset.symbol = sym;
  els.symbol.textContent = sym;
  els.canvas.dataset.candles = '0';
  els.readout.textContent = '';
  setStatus('Đang tải lịch sử…', 'loading');
  chartDirty = true;
  ticksDirty = true;
  invalidate('detail');
  load();
}

export function closeDetail() {
  if (!symbol) return;
  const closed = symbol;
  // Focus is only taken back when it was ours (inside the dialog, or lost with it), never from elsewhere.
  const active = document.activeElement;
  const ours = !active || active === document.body || els.root.contains(active);
  const back = returnTo;
  returnTo = null;
  generation += 1;
  symbol = null;
  els.root.hidden = true;
  els.root.dataset.symbol = '';
  onClose(closed);
  if (ours && !restoreFocus(back)) focusFallback(closed);
}

/** The board saw these symbols change: refresh our history on the next poll if ours is one of them. */
export function noteMarketChange(changed) {
  if (symbol && changed && changed[symbol]) {
    changedSinceLoad = true;
    invalidate('detail');
  }
}

function renderSummary() {
  const p = store.prices.get(symbol);
  const q = store.quotes.get(symbol);
  const trend = p ? priceTrend(p.last_price, p.ref_price, p.ceiling, p.floor) : 'none';
  const f = els.fields;
  const put = (node, text, value, t) => {
    node.textContent = text;
    setRaw(node, value);
    if (t) node.dataset.trend = t;
  };
  put(f.last_price, fmtPrice(p?.last_price), p?.last_price, trend);
  put(f.change, `${fmtSigned(p?.change)} (${fmtPct(p?.change_pct)})`, p?.change, trend);
  put(f.ref_price, fmtPrice(p?.ref_price), p?.ref_price);
  put(f.total_volume, fmtInt(q?.total_volume), q?.total_volume);
  put(f.buy_volume, fmtInt(q?.mua_chu_dong_volume), q?.mua_chu_dong_volume);
  put(f.sell_volume, fmtInt(q?.ban_chu_dong_volume), q?.ban_chu_dong_volume);
  put(f.neutral_volume, fmtInt(q?.neutral_volume), q?.neutral_volume);
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
}

function renderTicks() {
  const ref = store.prices.get(symbol)?.ref_price;
  const rows = ticks.slice().reverse().map((t) => {
    const tr = document.createElement('tr');
    const [label, typeTrend] = TRADE_TYPES[t.trade_type] || [t.trade_type || '—', 'none'];
    tr.dataset.type = t.trade_type || '';
    const cells = [
      ['time', fmtClock(t.t), null, null],
      ['price', fmtPrice(t.price), t.price, isNum(ref) ? changeTrend(t.price - ref) : null],
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
  describe(els.canvas, els.status.dataset.kind === 'loading' ? `${symbol}: đang tải nến 1 phút` : candlesText());
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

export function initDetail({ onClosed, onFocusLost }) {
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
    status: document.getElementById('detail-status'),
    close: document.getElementById('detail-close'),
  };
  onClose = onClosed;
  if (onFocusLost) focusFallback = onFocusLost;
  els.close.addEventListener('click', closeDetail);
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
  setInterval(poll, POLL_MS);
  onRender('detail', render);
}
