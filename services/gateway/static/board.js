// The price board, the Vietnamese way: TC / Trần / Sàn, three levels of bids (Dư mua), the last match (Khớp lệnh),
// three levels of asks (Dư bán), the day's volume and prices, the foreign investors' columns and the active buy / sell
// split, one row per symbol of the tab's board subscription (tabs.js). Each price is coloured against the reference,
// ceiling and floor (purple ceiling, cyan floor, yellow reference, green up, red down; a volume as its price) and a
// cell whose value changed flashes for a moment. During an ATO / ATC auction the match column shows the projected
// price, marked as such.
// A tab may hold ~1,600 rows: rows are created once (cloned from one template row), a message only marks symbols
// changed, and once a frame only those rows are visited and only the cells whose text, value or colour changed are
// written; rows move only when the sort order really changed, and then only the rows out of place.
// Keyboard: one roving tabindex over the rows (Tab reaches the board once, the arrows, Home / End and Page Up / Down
// move between rows), Enter or Space opens the symbol's detail, Delete removes a row of the watchlist.

import {
  fmtInt, fmtPct, fmtPrice, fmtShort, fmtSigned, fmtTick, fmtVnd, isFutures, isNum, priceTrend,
} from './format.js';
import { invalidate, onRender } from './scheduler.js';
import { store } from './store.js';

// Cells of a row, in column order (the table's header in index.html follows the same order).
const COLUMNS = [
  'symbol', 'ref_price', 'ceiling', 'floor',
  'bid_price_3', 'bid_volume_3', 'bid_price_2', 'bid_volume_2', 'bid_price_1', 'bid_volume_1',
  'last_price', 'last_volume', 'change', 'change_pct',
  'ask_price_1', 'ask_volume_1', 'ask_price_2', 'ask_volume_2', 'ask_price_3', 'ask_volume_3',
  'total_volume', 'open', 'high', 'low', 'avg_price',
  'foreign_buy_volume', 'foreign_sell_volume', 'foreign_room',
  'buy_volume', 'sell_volume', 'split',
];
const AT = Object.fromEntries(COLUMNS.map((field, i) => [field, i]));
const LEVELS = [1, 2, 3];

// A changed value flashes by holding a background for a moment: two style changes per flash, where an animated
// fade would repaint every frame while hundreds of cells change each half second.
const FLASH_MS = 700;
const flashing = new Map(); // cell → until (ms)
let flashTimer = 0;

// The trend of a price in words: the title of a price cell; the last price's glyph (style.css, .cue) says it too.
const TREND_WORDS = {
  up: 'Tăng', down: 'Giảm', ref: 'Tham chiếu', ceiling: 'Giá trần', floor: 'Giá sàn', none: '',
};

// Sorting reads what the rows show (written just before), not the store again.
const SORT_VALUE = {
  symbol: (symbol) => symbol,
  price: (symbol, row) => row.value[AT.last_price],
  change_pct: (symbol, row) => row.value[AT.change_pct],
  volume: (symbol, row) => row.value[AT.total_volume],
  ratio: (symbol, row) => row.value[AT.split],
};

const rows = new Map(); // SYMBOL → {tr, cells, text, value, trend, fresh}
let order = []; // the symbols in the order their rows are in the table
let sort = { key: 'symbol', dir: 1 };
let resort = false; // the sort changed: reorder even if no value did
let selected = null;
let current = null; // the symbol of the row Tab reaches (tabindex 0; every other row has -1)
let template;
let tbody;
let countEl;
let emptyEl;
let removeFromWatchlist = null;

function makeTemplate() {
  const tr = document.createElement('tr');
  for (const field of COLUMNS) {
    const td = document.createElement('td');
    td.dataset.field = field;
    if (field === 'last_price') td.className = 'cue';
    if (field === 'split') {
      td.innerHTML = '<div class="split-cell"><div class="split"><i class="b"></i><i class="n"></i><i class="s"></i></div>'
        + '<span></span></div>';
    }
    tr.append(td);
  }
  return tr;
}

function createRow(symbol) {
  const tr = template.cloneNode(true);
  tr.dataset.symbol = symbol;
  tr.tabIndex = symbol === current ? 0 : -1;
  if (symbol === selected) {
    tr.classList.add('selected');
    tr.setAttribute('aria-current', 'true');
  }
  const n = COLUMNS.length;
  return {
    tr, cells: [...tr.children], text: new Array(n).fill(''), value: new Array(n), trend: new Array(n).fill(''),
    fresh: true, split: '',
  };
}

/**
 * Write a cell only where what it shows changed: its text, its raw number (data-value, what the tests and a screen
 * reader's table navigation compare) and its colour (data-trend). A number that moved flashes, unless the row is new.
 */
function put(row, field, text, value, trendOf = '', title = null) {
  const i = AT[field];
  const td = row.cells[i];
  if (row.text[i] !== text) {
    row.text[i] = text;
    td.textContent = text;
  }
  const before = row.value[i];
  const now = isNum(value) ? value : undefined;
  if (before !== now) {
    row.value[i] = now;
    if (now === undefined) delete td.dataset.value;
    else td.dataset.value = String(now);
    if (!row.fresh && before !== undefined && now !== undefined) flash(td, now > before ? 'up' : 'down');
  }
  const trend = trendOf === 'none' ? '' : trendOf; // none: an empty cell, or a price with nothing to compare against
  if (row.trend[i] !== trend) {
    row.trend[i] = trend;
    if (trend) td.dataset.trend = trend;
    else delete td.dataset.trend;
  }
  if (title !== null && td.title !== title) td.title = title;
}

/** A price cell: coloured against TC / Trần / Sàn, its trend in words in its title. */
function putPrice(row, field, price, limits, fmt = limits.fmt) {
  const trend = priceTrend(price, limits.ref, limits.ceiling, limits.floor);
  put(row, field, fmt(price), price, trend, TREND_WORDS[trend]);
  return trend;
}

// A stock's average price is whole VND on the board (its exact value stays in data-value).
const fmtWhole = (v) => fmtPrice(isNum(v) ? Math.round(v) : v);

/** Active buy's share of active buy + active sell, 0..1 (undefined when nothing was classified yet). */
function buyRatio(q) {
  if (!q) return undefined;
  const active = (q.mua_chu_dong_volume || 0) + (q.ban_chu_dong_volume || 0);
  return active ? q.mua_chu_dong_volume / active : undefined;
}

function putSplit(row, q) {
  const buy = q?.mua_chu_dong_volume || 0;
  const sell = q?.ban_chu_dong_volume || 0;
  const neutral = q?.neutral_volume || 0;
  const key = `${buy}|${sell}|${neutral}`;
  if (row.split === key) return;
  row.split = key;
  const td = row.cells[AT.split];
  const ratio = buyRatio(q);
  row.value[AT.split] = isNum(ratio) ? Number(ratio.toFixed(4)) : undefined;
  if (isNum(ratio)) td.dataset.value = String(row.value[AT.split]);
  else delete td.dataset.value;
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

/** The auction a projected price belongs to, for its mark: ATO, ATC, else DK (dự kiến). */
function auctionOf(session) {
  const text = String(session || '').toUpperCase();
  return text.includes('ATO') ? 'ATO' : text.includes('ATC') ? 'ATC' : 'DK';
}

function updateRow(row, symbol) {
  // The board row (BoardQuote) when the subscription has one; the market channel's price otherwise (a watchlist
  // symbol the board tracker has no row for yet).
  const b = store.board.get(symbol);
  const p = b ? null : store.prices.get(symbol);
  const q = store.quotes.get(symbol);
  const futures = isFutures(symbol, b?.exchange);
  const fmt = futures ? fmtTick : fmtPrice;
  const limits = {
    ref: b ? b.ref_price : p?.ref_price, ceiling: b ? b.ceiling : p?.ceiling, floor: b ? b.floor : p?.floor, fmt,
  };
  const projected = b && isNum(b.projected_price) && b.projected_price > 0 ? b.projected_price : null;
  const price = projected ?? (b ? b.last_price : p?.last_price);
  let change = b ? b.change : p?.change;
  let pct = b ? b.ratio_change : p?.change_pct;
  if (projected !== null && isNum(limits.ref) && limits.ref > 0) {
    change = projected - limits.ref;
    pct = Number(((change / limits.ref) * 100).toFixed(2));
  }
  const trend = priceTrend(price, limits.ref, limits.ceiling, limits.floor);
  if (row.tr.dataset.trend !== trend) row.tr.dataset.trend = trend;

  put(row, 'symbol', symbol, null, trend);
  put(row, 'ref_price', fmt(limits.ref), limits.ref, isNum(limits.ref) ? 'ref' : '');
  put(row, 'ceiling', fmt(limits.ceiling), limits.ceiling, isNum(limits.ceiling) ? 'ceiling' : '');
  put(row, 'floor', fmt(limits.floor), limits.floor, isNum(limits.floor) ? 'floor' : '');
  for (const level of LEVELS) {
    for (const [side, levels] of [['bid', b?.bids], ['ask', b?.asks]]) {
      const [levelPrice, volume] = (levels && levels[level - 1]) || [];
      const levelTrend = putPrice(row, `${side}_price_${level}`, levelPrice, limits);
      put(row, `${side}_volume_${level}`, fmtInt(volume), volume, isNum(volume) ? levelTrend : '');
    }
  }

  const auction = projected !== null ? auctionOf(b.session) : '';
  const words = TREND_WORDS[trend] || '';
  put(row, 'last_price', fmt(price), price, trend,
    auction ? `${words ? `${words} · ` : ''}giá khớp dự kiến ${auction === 'DK' ? '' : auction}`.trim() : words);
  const td = row.cells[AT.last_price];
  if ((td.dataset.projected || '') !== auction) {
    if (auction) td.dataset.projected = auction;
    else delete td.dataset.projected;
  }
  // A projected price has no volume yet: the last match's would read as the auction's.
  const lastVolume = projected !== null ? null : b?.last_volume;
  put(row, 'last_volume', fmtInt(lastVolume), lastVolume, isNum(lastVolume) ? trend : '');
  put(row, 'change', fmtSigned(change, fmt), change, isNum(change) ? trend : '');
  put(row, 'change_pct', fmtPct(pct), pct, isNum(pct) ? trend : '');

  const total = b ? b.total_volume : q?.total_volume;
  put(row, 'total_volume', fmtInt(total), total, '', b && isNum(b.total_value) ? `GT ${fmtVnd(b.total_value)}` : '');
  for (const field of ['open', 'high', 'low']) putPrice(row, field, b?.[field], limits);
  putPrice(row, 'avg_price', b?.avg_price, limits, futures ? fmtTick : fmtWhole);

  put(row, 'foreign_buy_volume', fmtInt(b?.foreign_buy_volume), b?.foreign_buy_volume, '',
    isNum(b?.foreign_buy_value) ? `GT mua ${fmtVnd(b.foreign_buy_value)}` : '');
  put(row, 'foreign_sell_volume', fmtInt(b?.foreign_sell_volume), b?.foreign_sell_volume, '',
    isNum(b?.foreign_sell_value) ? `GT bán ${fmtVnd(b.foreign_sell_value)}` : '');
  put(row, 'foreign_room', fmtShort(b?.foreign_room), b?.foreign_room, '',
    isNum(b?.foreign_room) ? `Room còn ${fmtInt(b.foreign_room)}`
      + `${isNum(b.foreign_total_room) ? ` / ${fmtInt(b.foreign_total_room)}` : ''} CP` : '');

  put(row, 'buy_volume', fmtInt(q?.mua_chu_dong_volume), q?.mua_chu_dong_volume);
  put(row, 'sell_volume', fmtInt(q?.ban_chu_dong_volume), q?.ban_chu_dong_volume);
  putSplit(row, q);
  row.fresh = false;
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
    if (until <= now || !td.isConnected) {
      delete td.dataset.flash;
      flashing.delete(td);
    } else {
      next = Math.min(next, until);
    }
  }
  if (flashing.size) flashTimer = setTimeout(() => invalidate('board-flash'), next - now);
}

function compare(a, b) {
  const get = SORT_VALUE[sort.key];
  const va = get(a, rows.get(a));
  const vb = get(b, rows.get(b));
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

/** Put the rows in `sorted` order, moving only those out of place (a row that moved up is one move). */
function reorderRows(sorted) {
  let node = tbody.firstElementChild;
  if (!node) {
    tbody.append(...sorted.map((symbol) => rows.get(symbol).tr));
    return;
  }
  for (const symbol of sorted) {
    const { tr } = rows.get(symbol);
    if (tr === node) node = node.nextElementSibling;
    else tbody.insertBefore(tr, node);
  }
}

function emptyText() {
  if (store.boardError) return `Gateway không nhận đăng ký bảng giá: ${store.boardError}`;
  if (store.boardTopic === null) return store.boardSymbols ? 'Danh mục trống: thêm mã ở ô phía trên.' : '';
  if (store.boardSeq < 0) return 'Đang chờ dữ liệu bảng giá…';
  return 'Không có mã nào trên bảng này.';
}

function render() {
  let reorder = resort;
  resort = false;
  // Moving or removing the focused row drops focus to <body>: put it back afterwards.
  const focused = tbody.contains(document.activeElement) ? document.activeElement : null;
  if (store.membershipChanged) {
    store.membershipChanged = false;
    const wanted = new Set(store.boardSymbols || store.board.keys());
    for (const [symbol, row] of rows) {
      if (!wanted.has(symbol)) {
        row.tr.remove();
        rows.delete(symbol);
        flashingIn(row);
        reorder = true;
      }
    }
    for (const symbol of wanted) {
      if (!rows.has(symbol)) {
        const row = createRow(symbol);
        rows.set(symbol, row);
        updateRow(row, symbol);
        store.changed.delete(symbol);
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
    if (sorted.length !== order.length || sorted.some((s, i) => s !== order[i])) reorderRows(sorted);
    order = sorted;
  }
  if (!rows.has(current)) setCurrent(tbody.rows[0]?.dataset.symbol ?? null);
  if (focused && document.activeElement !== focused) {
    (focused.isConnected ? focused : rows.get(current)?.tr)?.focus({ preventScroll: true });
  }
  const count = rows.size ? `${fmtInt(rows.size)} mã` : '';
  if (countEl.textContent !== count) countEl.textContent = count;
  if (emptyEl.hidden !== rows.size > 0) emptyEl.hidden = rows.size > 0;
  const text = rows.size ? '' : emptyText();
  if (emptyEl.textContent !== text) emptyEl.textContent = text;
}

/** A removed row's cells stop flashing. */
function flashingIn(row) {
  if (!flashing.size) return;
  for (const td of row.cells) flashing.delete(td);
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
  if (event.key === 'Delete' && store.boardSymbols && removeFromWatchlist) {
    event.preventDefault();
    // The row goes: the next one (else the previous) becomes the one focused.
    const neighbour = list[at + 1] || list[at - 1];
    if (neighbour) setCurrent(neighbour.dataset.symbol);
    removeFromWatchlist(tr.dataset.symbol);
    return;
  }
  let target = null;
  if (event.key in ROW_STEPS) target = list[Math.max(0, Math.min(list.length - 1, at + ROW_STEPS[event.key]))];
  else if (event.key === 'Home') target = list[0];
  else if (event.key === 'End') target = list[list.length - 1];
  if (target) {
    event.preventDefault();
    target.focus(); // focusin makes it the row Tab comes back to
  }
}

/**
 * `onSelect(symbol, row)`: a row was clicked, or Enter / Space pressed on it. `onRemove(symbol)`: Delete on a row of
 * the watchlist.
 */
export function initBoard({ onSelect, onRemove = null }) {
  const table = document.getElementById('board');
  tbody = table.tBodies[0];
  countEl = document.getElementById('board-count');
  emptyEl = document.getElementById('board-empty');
  removeFromWatchlist = onRemove;
  template = makeTemplate();

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
  onRender('board', render);
  onRender('board-flash', endFlashes);
}
