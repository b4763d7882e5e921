// The price board: one row per VN30 symbol (every priced symbol with "show all"). Rows are created once and
// only the cells whose text changed are written; rows move only when the sort order really changed.
// Keyboard: one roving tabindex over the rows (Tab reaches the board once, the arrows, Home / End and Page Up /
// Down move between rows), Enter or Space opens the symbol's detail.

import {
  fmtInt, fmtPct, fmtPrice, fmtSigned, isNum, priceTrend, setRaw,
} from './format.js';
import { invalidate, onRender } from './scheduler.js';
import { store } from './store.js';

// Cells of a row, in column order (the table's header in index.html follows the same order).
const FIELDS = ['symbol', 'ceiling', 'floor', 'ref_price', 'last_price', 'change', 'change_pct', 'total_volume',
  'buy_volume', 'sell_volume', 'split'];

// A changed price flashes by holding a background for a moment: two style changes per flash, where an animated
// fade would repaint every frame while hundreds of cells change each half second.
const FLASH_MS = 700;
const flashing = new Map(); // cell → until (ms)
let flashTimer = 0;

const SORT_VALUE = {
  symbol: (s) => s,
  price: (s) => store.prices.get(s)?.last_price,
  change_pct: (s) => store.prices.get(s)?.change_pct,
  volume: (s) => store.quotes.get(s)?.total_volume,
  ratio: (s) => buyRatio(store.quotes.get(s)),
};

/** Active buy's share of active buy + active sell, 0..1 (undefined when nothing was classified yet). */
function buyRatio(q) {
  if (!q) return undefined;
  const active = (q.mua_chu_dong_volume || 0) + (q.ban_chu_dong_volume || 0);
  return active ? q.mua_chu_dong_volume / active : undefined;
}

// The trend of a price in words: the title of the last price, whose glyph (style.css, .cue) says it without colour.
const TREND_WORDS = {
  up: 'Tăng', down: 'Giảm', ref: 'Tham chiếu', ceiling: 'Giá trần', floor: 'Giá sàn', none: '',
};

const rows = new Map(); // SYMBOL → {tr, cells, shown}
let order = [];
let sort = { key: 'symbol', dir: 1 };
let showAll = false;
let resort = false; // the sort changed: reorder even if no value did
let selected = null;
let current = null; // the symbol of the row Tab reaches (tabindex 0; every other row has -1)
let tbody;
let countEl;
let emptyEl;

function createRow(symbol) {
  const tr = document.createElement('tr');
  tr.dataset.symbol = symbol;
  tr.tabIndex = symbol === current ? 0 : -1;
  const cells = {};
  for (const field of FIELDS) {
    const td = document.createElement('td');
    td.dataset.field = field;
    if (field === 'last_price') td.className = 'cue';
    if (field === 'split') {
      td.innerHTML = '<div class="split-cell"><div class="split"><i class="b"></i><i class="n"></i><i class="s"></i></div>'
        + '<span></span></div>';
    }
    cells[field] = td;
    tr.append(td);
  }
  if (symbol === selected) {
    tr.classList.add('selected');
    tr.setAttribute('aria-current', 'true');
  }
  return { tr, cells, shown: {} };
}

/** Write a cell only when what it shows changed. */
function setCell(row, field, text, value, trend) {
  const key = `${text}|${value}|${trend}`;
  if (row.shown[field] === key) return;
  row.shown[field] = key;
  const td = row.cells[field];
  td.textContent = text;
  if (value !== null) setRaw(td, value);
  if (trend) td.dataset.trend = trend;
}

function setSplit(row, q) {
  const buy = q?.mua_chu_dong_volume || 0;
  const sell = q?.ban_chu_dong_volume || 0;
  const neutral = q?.neutral_volume || 0;
  const key = `${buy}|${sell}|${neutral}`;
  if (row.shown.split === key) return;
  row.shown.split = key;
  const td = row.cells.split;
  const ratio = buyRatio(q);
  setRaw(td, isNum(ratio) ? Number(ratio.toFixed(4)) : undefined);
  td.dataset.buy = buy;
  td.dataset.sell = sell;
  td.dataset.neutral = neutral;
  const total = buy + sell + neutral;
  const [bar, label] = td.firstChild.children;
  const [b, n, s] = bar.children;
  b.style.width = total ? `${(buy / total) * 100}%` : '0';
  n.style.width = total ? `${(neutral / total) * 100}%` : '0';
  s.style.width = total ? `${(sell / total) * 100}%` : '0';
  label.textContent = isNum(ratio) ? `${Math.round(ratio * 100)}%` : '';
  td.title = total
    ? `Mua CĐ ${((buy / total) * 100).toFixed(1)}% · Bán CĐ ${((sell / total) * 100).toFixed(1)}% · `
      + `Trung tính ${((neutral / total) * 100).toFixed(1)}%`
    : 'Chưa có giao dịch';
}

function updateRow(row, symbol) {
  const p = store.prices.get(symbol);
  const q = store.quotes.get(symbol);
  const trend = p ? priceTrend(p.last_price, p.ref_price, p.ceiling, p.floor) : 'none';
  const before = row.lastPrice;
  row.lastPrice = p?.last_price;
  if (row.tr.dataset.trend !== trend) row.tr.dataset.trend = trend;

  setCell(row, 'symbol', symbol, null, trend);
  setCell(row, 'ceiling', fmtPrice(p?.ceiling), p?.ceiling, 'ceiling');
  setCell(row, 'floor', fmtPrice(p?.floor), p?.floor, 'floor');
  setCell(row, 'ref_price', fmtPrice(p?.ref_price), p?.ref_price, 'ref');
  setCell(row, 'last_price', fmtPrice(p?.last_price), p?.last_price, trend);
  if (row.cells.last_price.title !== TREND_WORDS[trend]) row.cells.last_price.title = TREND_WORDS[trend] || '';
  setCell(row, 'change', fmtSigned(p?.change), p?.change, trend);
  setCell(row, 'change_pct', fmtPct(p?.change_pct), p?.change_pct, trend);
  setCell(row, 'total_volume', fmtInt(q?.total_volume), q?.total_volume);
  setCell(row, 'buy_volume', fmtInt(q?.mua_chu_dong_volume), q?.mua_chu_dong_volume);
  setCell(row, 'sell_volume', fmtInt(q?.ban_chu_dong_volume), q?.ban_chu_dong_volume);
  setSplit(row, q);

  if (isNum(before) && isNum(row.lastPrice) && before !== row.lastPrice) {
    flash(row.cells.last_price, row.lastPrice > before ? 'up' : 'down');
  }
}

function flash(td, direction) {
  td.dataset.flash = direction;
  flashing.set(td, performance.now() + FLASH_MS);
  if (!flashTimer) flashTimer = setTimeout(() => invalidate('board-flash'), FLASH_MS);
}

function endFlashes() {
  flashTimer = 0;
  const now = performance.now();
  let next = Infinity;
  for (const [td, until] of flashing) {
    if (until <= now) {
      delete td.dataset.flash;
      flashing.delete(td);
    } else {
      next = Math.min(next, until);
    }
  }
  if (flashing.size) flashTimer = setTimeout(() => invalidate('board-flash'), next - now);
}

function visibleSymbols() {
  const basket = store.basket && store.basket.length ? store.basket : null;
  const symbols = new Set(basket || store.prices.keys());
  if (showAll) for (const symbol of store.prices.keys()) symbols.add(symbol);
  return symbols;
}

function compare(a, b) {
  const get = SORT_VALUE[sort.key];
  const va = get(a);
  const vb = get(b);
  const missingA = va === undefined || va === null;
  const missingB = vb === undefined || vb === null;
  if (missingA !== missingB) return missingA ? 1 : -1; // rows without data stay at the bottom
  if (!missingA && va !== vb) return (va < vb ? -1 : 1) * sort.dir;
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Make `symbol`'s row the one Tab reaches. */
function setCurrent(symbol) {
  const previous = rows.get(current);
  if (previous && current !== symbol) previous.tr.tabIndex = -1;
  current = symbol;
  const row = rows.get(symbol);
  if (row && row.tr.tabIndex !== 0) row.tr.tabIndex = 0;
}

function render() {
  let reorder = resort;
  resort = false;
  // Moving or removing the focused row drops focus to <body>: put it back afterwards.
  const focused = tbody.contains(document.activeElement) ? document.activeElement : null;
  if (store.membershipChanged) {
    store.membershipChanged = false;
    const wanted = visibleSymbols();
    for (const [symbol, row] of rows) {
      if (!wanted.has(symbol)) {
        row.tr.remove();
        rows.delete(symbol);
        reorder = true;
      }
    }
    for (const symbol of wanted) {
      if (!rows.has(symbol)) {
        const row = createRow(symbol);
        rows.set(symbol, row);
        updateRow(row, symbol);
        reorder = true;
      }
    }
  }
  for (const symbol of store.changed) {
    const row = rows.get(symbol);
    if (!row) continue;
    updateRow(row, symbol);
    if (sort.key !== 'symbol') reorder = true;
  }
  store.changed.clear();

  if (reorder) {
    const sorted = [...rows.keys()].sort(compare);
    if (sorted.length !== order.length || sorted.some((s, i) => s !== order[i])) {
      tbody.append(...sorted.map((s) => rows.get(s).tr));
      order = sorted;
    }
  }
  if (!rows.has(current)) setCurrent(tbody.rows[0]?.dataset.symbol ?? null);
  if (focused && document.activeElement !== focused) {
    (focused.isConnected ? focused : rows.get(current)?.tr)?.focus({ preventScroll: true });
  }
  const count = `${rows.size} mã`;
  if (countEl.textContent !== count) countEl.textContent = count;
  if (emptyEl.hidden !== rows.size > 0) emptyEl.hidden = rows.size > 0;
}

function setSort(key) {
  sort = sort.key === key ? { key, dir: -sort.dir } : { key, dir: 1 };
  const table = tbody.closest('table');
  table.dataset.sortKey = sort.key;
  table.dataset.sortDir = sort.dir > 0 ? 'asc' : 'desc';
  for (const th of table.querySelectorAll('th[data-sort]')) {
    const active = th.dataset.sort === sort.key;
    th.setAttribute('aria-sort', active ? (sort.dir > 0 ? 'ascending' : 'descending') : 'none');
  }
  resort = true;
  invalidate('board');
}

/** Highlight the row whose detail is open (null: none). */
export function selectRow(symbol) {
  const before = rows.get(selected)?.tr;
  if (before) {
    before.classList.remove('selected');
    before.removeAttribute('aria-current');
  }
  selected = symbol;
  const tr = rows.get(symbol)?.tr;
  if (tr) {
    tr.classList.add('selected');
    tr.setAttribute('aria-current', 'true');
  }
}

/** Focus `symbol`'s row, else the row Tab reaches; whether a row has focus now. */
export function focusRow(symbol) {
  const tr = (rows.get(symbol) || rows.get(current))?.tr;
  if (!tr) return false;
  tr.focus();
  return document.activeElement === tr;
}

const ROW_STEPS = { ArrowDown: 1, ArrowUp: -1, PageDown: 10, PageUp: -10 };

function onRowKey(event, onSelect) {
  const tr = event.target.closest('tr[data-symbol]');
  if (!tr || event.altKey || event.ctrlKey || event.metaKey) return;
  if (event.key === 'Enter' || event.key === ' ') {
    event.preventDefault();
    onSelect(tr.dataset.symbol, tr);
    return;
  }
  const list = [...tbody.rows];
  const at = list.indexOf(tr);
  let target = null;
  if (event.key in ROW_STEPS) target = list[Math.max(0, Math.min(list.length - 1, at + ROW_STEPS[event.key]))];
  else if (event.key === 'Home') target = list[0];
  else if (event.key === 'End') target = list[list.length - 1];
  if (target) {
    event.preventDefault();
    target.focus(); // focusin makes it the row Tab comes back to
  }
}

export function initBoard({ onSelect }) {
  const table = document.getElementById('board');
  tbody = table.tBodies[0];
  countEl = document.getElementById('board-count');
  emptyEl = document.getElementById('board-empty');

  table.tHead.addEventListener('click', (event) => {
    const th = event.target.closest('th[data-sort]');
    if (th) setSort(th.dataset.sort);
  });
  table.tHead.addEventListener('keydown', (event) => {
    const th = event.target.closest('th[data-sort]');
    if (th && (event.key === 'Enter' || event.key === ' ')) {
      event.preventDefault();
      setSort(th.dataset.sort);
    }
  });
  tbody.addEventListener('click', (event) => {
    const tr = event.target.closest('tr[data-symbol]');
    if (tr) onSelect(tr.dataset.symbol, tr);
  });
  tbody.addEventListener('keydown', (event) => onRowKey(event, onSelect));
  tbody.addEventListener('focusin', (event) => {
    const tr = event.target.closest('tr[data-symbol]');
    if (tr) setCurrent(tr.dataset.symbol);
  });
  document.getElementById('show-all').addEventListener('change', (event) => {
    showAll = event.target.checked;
    document.getElementById('board-title').textContent = showAll ? 'Bảng giá · tất cả mã' : 'Bảng giá VN30';
    store.membershipChanged = true;
    invalidate('board');
  });
  onRender('board', render);
  onRender('board-flash', endFlashes);
}
