// The dashboard's state, in plain objects: the WebSocket messages are applied here and only mark the page parts
// they touch as dirty (scheduler.js draws them in the next frame).

import { parseTime } from './format.js';
import { invalidate } from './scheduler.js';

const BASIS_WINDOW_MS = 30 * 60 * 1000;

export const store = {
  tradingDate: null, // YYYY-MM-DD
  lastUpdate: NaN, // ms, the latest exchange time seen in any message
  lastUpdateText: '', // the same as the gateway sent it (ISO, exchange time)
  lastUpdateAt: 0, // performance.now() when lastUpdate last moved
  channels: { market: 'connecting', index: 'connecting', foreign: 'connecting', derivatives: 'connecting' },
  prices: new Map(), // SYMBOL → PriceData
  quotes: new Map(), // SYMBOL → SessionStats
  board: new Map(), // SYMBOL → BoardQuote of the board subscription shown (a symbol without a row is absent)
  boardTopic: null, // that subscription's canonical topic, as the gateway names it in its messages (null: none)
  boardSymbols: null, // the symbols a watchlist asks for, in its order (null: whatever rows the topic has)
  boardSeq: -1, // the seq of the topic's latest message applied; -1 until its snapshot arrived
  boardError: '', // why the gateway refused the subscription
  changed: new Set(), // symbols whose row must be redrawn
  membershipChanged: true, // the board's rows appeared or disappeared
  indices: new Map(), // ID → IndexData
  foreign: null, // ForeignSummary
  foreignStocks: [], // [ForeignInvestorData] from /api/market/foreign-detail
  contract: null, // the active contract's DerivativesData
  contracts: new Map(), // SYMBOL → DerivativesData
  basis: new Map(), // contract → [BasisPoint], its last 30 minutes
};

const time = (item) => parseTime(item && item.last_updated);

/** Note an item's exchange time and trading date for the header. */
function seen(item) {
  if (!item) return;
  const t = time(item);
  if (t > store.lastUpdate || (Number.isNaN(store.lastUpdate) && !Number.isNaN(t))) {
    store.lastUpdate = t;
    store.lastUpdateText = item.last_updated;
    store.lastUpdateAt = performance.now();
    invalidate('header');
  }
  if (typeof item.trading_date === 'string' && !(store.tradingDate >= item.trading_date)) {
    store.tradingDate = item.trading_date;
    invalidate('header');
  }
}

// Indices, the foreign summary and the active contract come on two channels (market and their own); the
// newer copy wins so a late message on one cannot undo the other.
const isNewer = (incoming, current) => !current || !(time(incoming) < time(current));

function applyEntries(target, entries, onChange) {
  for (const [key, value] of Object.entries(entries || {})) {
    if (value === null) {
      if (target.delete(key)) onChange(key, true);
    } else if (value && typeof value === 'object') {
      const had = target.has(key);
      target.set(key, value);
      seen(value);
      onChange(key, !had);
    }
  }
}

function replaceMap(target, entries, onChange) {
  const incoming = entries || {};
  for (const key of [...target.keys()]) {
    if (!(key in incoming)) {
      target.delete(key);
      onChange(key, true);
    }
  }
  applyEntries(target, incoming, onChange);
}

// The market channel's prices and session stats fill a row's columns but never decide which rows there are: the
// board subscription does.
const rowChanged = (symbol) => store.changed.add(symbol);

const boardRowChanged = (symbol, membership) => {
  store.changed.add(symbol);
  if (membership) store.membershipChanged = true;
};

function applyIndices(entries, replace) {
  const merge = {};
  for (const [id, value] of Object.entries(entries || {})) {
    const current = store.indices.get(id);
    merge[id] = value === null || isNewer(value, current) ? value : current;
  }
  if (replace) replaceMap(store.indices, merge, () => {});
  else applyEntries(store.indices, merge, () => {});
  invalidate('indices');
}

function applySummary(summary) {
  if (summary === null || summary === undefined) {
    store.foreign = null;
  } else if (isNewer(summary, store.foreign)) {
    store.foreign = summary;
    seen(summary);
  }
  invalidate('foreign');
}

function applyActiveContract(contract) {
  if (contract && !isNewer(contract, store.contract)) return;
  store.contract = contract || null;
  if (contract) {
    store.contracts.set(contract.symbol, contract);
    seen(contract);
  }
  invalidate('futures');
}

/** /ws/market: prices and session stats (the board's active buy / sell columns), and copies of the rest. */
export function applyMarket(msg) {
  const data = msg.data || {};
  const replace = msg.type === 'snapshot';
  if (replace) {
    if (data.trading_date) store.tradingDate = data.trading_date;
    replaceMap(store.prices, data.prices, rowChanged);
    replaceMap(store.quotes, data.quotes, rowChanged);
    applyIndices(data.indices, true);
    applySummary(data.foreign);
    applyActiveContract(data.derivatives);
    seen({ last_updated: data.last_updated });
    invalidate('header');
  } else {
    applyEntries(store.prices, data.prices, rowChanged);
    applyEntries(store.quotes, data.quotes, rowChanged);
    if (data.indices && Object.keys(data.indices).length) applyIndices(data.indices, false);
    if ('foreign' in data) applySummary(data.foreign);
    if ('derivatives' in data) applyActiveContract(data.derivatives);
  }
  if (store.changed.size) invalidate('board');
}

/**
 * The canonical name the gateway gives a board subscription (services/gateway/board.py, BoardFilter.topic), so its
 * messages can be told from a late one of the subscription just left: e.g. group=VN30, exchange=HNX,
 * symbols=ACB,FPT (upper case, sorted, once each).
 */
export function boardTopic({ exchange, group, symbols }) {
  const parts = [];
  if (exchange) parts.push(`exchange=${exchange}`);
  if (group) parts.push(`group=${group.toUpperCase()}`);
  if (symbols) {
    const names = [...new Set(symbols.map((s) => s.trim().toUpperCase()).filter(Boolean))].sort();
    parts.push(`symbols=${names.join(',')}`);
  }
  return parts.join('&') || 'all';
}

/**
 * Show another board subscription's rows: `topic` (null: none), `symbols` the watchlist's (null: the topic's rows).
 * `keep`: keep the rows shown until the new snapshot replaces them (a watchlist edit), else start empty.
 */
export function setBoardTopic(topic, symbols = null, keep = false) {
  store.boardTopic = topic;
  store.boardSymbols = symbols ? [...symbols] : null;
  store.boardSeq = -1;
  store.boardError = '';
  if (!keep) {
    for (const symbol of store.board.keys()) store.changed.add(symbol);
    store.board.clear();
  }
  store.membershipChanged = true;
  invalidate('board');
}

/**
 * The board channel: a snapshot replaces the topic's rows ({SYMBOL: BoardQuote | null}), a delta changes some (null:
 * the row is gone). Messages of another topic, deltas before the snapshot and anything older than what was applied
 * (seq) are dropped: a topic just left or re-entered may still have messages on the way.
 */
export function applyBoard(msg) {
  if (!msg.topic || msg.topic !== store.boardTopic) return;
  const data = msg.data && typeof msg.data === 'object' ? msg.data : {};
  if (msg.type === 'snapshot') {
    store.boardSeq = Number(msg.seq) || 0;
    store.boardError = '';
    replaceMap(store.board, data, boardRowChanged);
  } else {
    if (store.boardSeq < 0 || !(msg.seq > store.boardSeq)) return;
    store.boardSeq = msg.seq;
    applyEntries(store.board, data, boardRowChanged);
  }
  invalidate('board');
}

/** The gateway refused the board subscription shown. */
export function setBoardError(why) {
  store.boardError = String(why || 'lỗi');
  invalidate('board');
}

/** /ws/index: {ID: IndexData} (a delta holds only the changed ones, null when deleted). */
export function applyIndex(msg) {
  applyIndices(msg.data, msg.type === 'snapshot');
}

/** /ws/foreign: the snapshot is the summary itself, a delta is {summary}. */
export function applyForeign(msg) {
  applySummary(msg.type === 'snapshot' ? msg.data : (msg.data || {}).summary);
}

export function setForeignStocks(stocks) {
  store.foreignStocks = Array.isArray(stocks) ? stocks : [];
  invalidate('foreign');
}

function addBasisPoints(points) {
  for (const point of points || []) {
    if (!point || typeof point.futures_symbol !== 'string') continue;
    const t = parseTime(point.timestamp);
    if (Number.isNaN(t)) continue;
    let series = store.basis.get(point.futures_symbol);
    if (!series) store.basis.set(point.futures_symbol, (series = []));
    const last = series[series.length - 1];
    if (last && point.trading_date > last.trading_date) series.length = 0;
    else if (last && t <= last.t) continue;
    series.push({ t, basis: point.basis, basis_pct: point.basis_pct, trading_date: point.trading_date });
  }
  for (const series of store.basis.values()) {
    const since = series.length ? series[series.length - 1].t - BASIS_WINDOW_MS : 0;
    let drop = 0;
    while (drop < series.length && series[drop].t < since) drop += 1;
    if (drop) series.splice(0, drop);
  }
}

/** /ws/derivatives: {contract, contracts, basis_points}. */
export function applyDerivatives(msg) {
  const data = msg.data || {};
  if (msg.type === 'snapshot') {
    store.contracts.clear();
    store.basis.clear();
    store.contract = null;
  }
  applyEntries(store.contracts, data.contracts, () => {});
  if ('contract' in data) {
    const contract = data.contract || null;
    if (!contract || isNewer(contract, store.contract)) store.contract = contract;
    if (contract) seen(contract);
  }
  addBasisPoints(data.basis_points);
  invalidate('futures');
}

export function setChannelState(name, state) {
  store.channels[name] = state;
  invalidate('header');
}
