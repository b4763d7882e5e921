// The board's tabs: which rows the board shows, as one `board` subscription on the tab's socket (VN30: its group;
// HOSE / HNX / UPCOM / futures: the exchange; the watchlist: its symbols). Switching tabs leaves the old subscription
// before following the new, so the gateway only ever sends the rows shown. The tab chosen is remembered.
// Keyboard: the tabs are one Tab stop (the arrows, Home and End move between them and show the tab, as WAI-ARIA's
// tabs pattern with automatic activation). The watchlist tab has a small editor: add symbols, remove them.

import { invalidate, onRender } from './scheduler.js';
import { boardTopic, setBoardTopic, store } from './store.js';
import {
  MAX_SYMBOLS, addSymbols, onWatchlistChange, removeSymbol, watchlist,
} from './watchlist.js';

const TAB_KEY = 'stocktracker.tab';

/** id → {label, title, filter}: the board filter as the gateway reads it (null: the watchlist's symbols). */
const TABS = {
  vn30: { label: 'VN30', title: 'Bảng giá VN30', filter: { group: 'VN30' } },
  hose: { label: 'HOSE', title: 'Bảng giá HOSE', filter: { exchange: 'HOSE' } },
  hnx: { label: 'HNX', title: 'Bảng giá HNX', filter: { exchange: 'HNX' } },
  upcom: { label: 'UPCoM', title: 'Bảng giá UPCoM', filter: { exchange: 'UPCOM' } },
  futures: { label: 'Phái sinh', title: 'Phái sinh · hợp đồng tương lai', filter: { exchange: 'DER' } },
  watchlist: { label: 'Danh mục', title: 'Danh mục theo dõi', filter: null },
};

let socket;
let active = null; // the tab id shown
let request = null; // the board subscription followed (null: none, an empty watchlist)
let els;

function remembered() {
  try {
    const id = localStorage.getItem(TAB_KEY);
    return id && Object.hasOwn(TABS, id) ? id : 'vn30';
  } catch {
    return 'vn30';
  }
}

function remember(id) {
  try {
    localStorage.setItem(TAB_KEY, id);
  } catch { /* storage disabled */ }
}

/** Follow the subscription the active tab needs (and leave the one it replaces). */
function follow(keepRows) {
  const tab = TABS[active];
  const symbols = tab.filter ? null : watchlist();
  const filter = tab.filter || (symbols.length ? { symbols } : null);
  const next = filter ? { channel: 'board', ...filter } : null;
  if (JSON.stringify(next) === JSON.stringify(request)) return;
  if (request) socket.unsubscribe(request);
  request = next;
  setBoardTopic(next ? boardTopic(next) : null, symbols, keepRows);
  if (next) socket.subscribe(next);
}

/** Show tab `id`; `focus`: move keyboard focus to its tab too (the arrows). */
export function selectTab(id, focus = false) {
  if (!Object.hasOwn(TABS, id)) return;
  const changed = id !== active;
  active = id;
  remember(id);
  for (const button of els.tabs) {
    const selected = button.dataset.tab === id;
    button.setAttribute('aria-selected', String(selected));
    button.tabIndex = selected ? 0 : -1;
    if (selected && focus) button.focus();
  }
  els.title.textContent = TABS[id].title;
  els.panel.setAttribute('aria-labelledby', `tab-${id}`);
  document.getElementById('board').dataset.tab = id;
  els.editor.hidden = id !== 'watchlist';
  if (changed) follow(false);
  invalidate('watchlist');
}

/** The tab shown: 'vn30', 'hose', 'hnx', 'upcom', 'futures' or 'watchlist'. */
export const activeTab = () => active;

function onTabKey(event) {
  const ids = els.tabs.map((button) => button.dataset.tab);
  const at = ids.indexOf(event.target.dataset?.tab);
  if (at < 0 || event.altKey || event.ctrlKey || event.metaKey) return;
  const target = {
    ArrowRight: ids[(at + 1) % ids.length], ArrowLeft: ids[(at - 1 + ids.length) % ids.length],
    Home: ids[0], End: ids[ids.length - 1],
  }[event.key];
  if (target) {
    event.preventDefault();
    selectTab(target, true);
  }
}

function say(text) {
  if (els.status.textContent !== text) els.status.textContent = text;
}

function onAdd(event) {
  event.preventDefault();
  const text = els.input.value;
  if (!text.trim()) return;
  const { added, invalid, full } = addSymbols(text);
  const parts = [];
  if (added.length) parts.push(`Đã thêm ${added.join(', ')}`);
  if (invalid.length) parts.push(`Không phải mã: ${invalid.join(', ')}`);
  if (full.length) parts.push(`Danh mục đã đầy (tối đa ${MAX_SYMBOLS} mã): ${full.join(', ')}`);
  if (!parts.length) parts.push('Đã có trong danh mục');
  say(parts.join(' · '));
  els.input.value = invalid.join(' ');
  els.input.focus();
}

/** The editor's chips, one per symbol, each with its remove button. */
function renderChips() {
  const symbols = watchlist();
  const shown = [...els.chips.children].map((li) => li.dataset.symbol);
  if (shown.length === symbols.length && shown.every((s, i) => s === symbols[i])) return;
  const focused = els.chips.contains(document.activeElement) ? document.activeElement.closest('li') : null;
  const nextFocus = focused ? (focused.nextElementSibling || focused.previousElementSibling) : null;
  els.chips.replaceChildren(...symbols.map((symbol) => {
    const li = document.createElement('li');
    li.dataset.symbol = symbol;
    const name = document.createElement('span');
    name.textContent = symbol;
    const remove = document.createElement('button');
    remove.type = 'button';
    remove.textContent = '✕';
    remove.setAttribute('aria-label', `Bỏ ${symbol} khỏi danh mục`);
    remove.title = `Bỏ ${symbol} khỏi danh mục`;
    li.append(name, remove);
    return li;
  }));
  // Removing the chip that had focus: focus its neighbour (or the input), never <body>.
  if (focused && !focused.isConnected) {
    const again = nextFocus && els.chips.querySelector(`li[data-symbol="${nextFocus.dataset.symbol}"] button`);
    (again || els.input).focus();
  }
  els.empty.hidden = symbols.length > 0;
}

export function initTabs({ socket: gatewaySocket }) {
  socket = gatewaySocket;
  const list = document.getElementById('board-tabs');
  els = {
    list,
    tabs: [...list.querySelectorAll('[role=tab]')],
    title: document.getElementById('board-title'),
    panel: document.getElementById('board-tabpanel'),
    editor: document.getElementById('watchlist'),
    input: document.getElementById('watchlist-input'),
    status: document.getElementById('watchlist-status'),
    chips: document.getElementById('watchlist-chips'),
    empty: document.getElementById('watchlist-empty'),
  };
  for (const button of els.tabs) button.textContent = TABS[button.dataset.tab].label;
  list.addEventListener('click', (event) => {
    const button = event.target.closest('[role=tab]');
    if (button) selectTab(button.dataset.tab);
  });
  list.addEventListener('keydown', onTabKey);
  els.editor.addEventListener('submit', onAdd);
  els.chips.addEventListener('click', (event) => {
    const li = event.target.closest('button') && event.target.closest('li[data-symbol]');
    if (li) {
      removeSymbol(li.dataset.symbol);
      say(`Đã bỏ ${li.dataset.symbol}`);
    }
  });
  onWatchlistChange(() => {
    if (active === 'watchlist') follow(true);
    invalidate('watchlist');
  });
  onRender('watchlist', renderChips);
  selectTab(remembered());
}
