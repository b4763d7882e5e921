// The watchlist (danh mục theo dõi): the symbols the user chose, kept in this browser's localStorage so they survive a
// reload, and followed between tabs of the same browser (the storage event). Symbols as the gateway accepts them:
// [A-Z0-9_-]{1,30}, at most MAX_SYMBOLS (the gateway's socket takes a subscription of that many of the longest).

const KEY = 'stocktracker.watchlist';
export const MAX_SYMBOLS = 200; // the gateway's limit on one board filter (services/gateway/board.py)
const SYMBOL = /^[A-Z0-9_-]{1,30}$/;

const listeners = new Set();
let symbols = read();

function read() {
  let raw = null;
  try {
    raw = JSON.parse(localStorage.getItem(KEY) || '[]');
  } catch {
    raw = []; // storage disabled or a broken value: start empty
  }
  const list = Array.isArray(raw) ? raw.map((s) => String(s).trim().toUpperCase()).filter((s) => SYMBOL.test(s)) : [];
  return [...new Set(list)].slice(0, MAX_SYMBOLS);
}

function write() {
  try {
    localStorage.setItem(KEY, JSON.stringify(symbols));
  } catch { /* storage disabled: the list lasts as long as the page */ }
}

function changed() {
  for (const listener of listeners) listener(symbols);
}

const fits = (list) => list.length <= MAX_SYMBOLS;

/** The watchlist's symbols, in the order they were added. */
export const watchlist = () => symbols;

export const inWatchlist = (symbol) => symbols.includes(symbol);

/**
 * Add the symbols of `text` (separated by spaces, commas or semicolons, any case). Returns {added, invalid, full}:
 * what was added, what is not a symbol, what did not fit any more.
 */
export function addSymbols(text) {
  const wanted = String(text).split(/[\s,;]+/).map((s) => s.trim().toUpperCase()).filter(Boolean);
  const result = { added: [], invalid: [], full: [] };
  for (const symbol of wanted) {
    if (!SYMBOL.test(symbol)) result.invalid.push(symbol);
    else if (symbols.includes(symbol) || result.added.includes(symbol)) continue;
    else if (!fits([...symbols, ...result.added, symbol])) result.full.push(symbol);
    else result.added.push(symbol);
  }
  if (result.added.length) {
    symbols = [...symbols, ...result.added];
    write();
    changed();
  }
  return result;
}

export function removeSymbol(symbol) {
  if (!symbols.includes(symbol)) return;
  symbols = symbols.filter((s) => s !== symbol);
  write();
  changed();
}

/** Add `symbol` if it is not in the watchlist, else remove it; whether it is in it now. */
export function toggleSymbol(symbol) {
  if (inWatchlist(symbol)) removeSymbol(symbol);
  else addSymbols(symbol);
  return inWatchlist(symbol);
}

/** Call `listener(symbols)` on every change, this page's or another tab's. */
export function onWatchlistChange(listener) {
  listeners.add(listener);
}

window.addEventListener('storage', (event) => {
  if (event.key !== KEY && event.key !== null) return;
  const next = read();
  if (next.length === symbols.length && next.every((s, i) => s === symbols[i])) return;
  symbols = next;
  changed();
});
