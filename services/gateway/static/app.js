// The dashboard's entry point: builds the page parts, opens the four gateway channels and loads the basket.

import { apiGet } from './auth.js';
import { focusRow, initBoard, selectRow } from './board.js';
import { closeDetail, initDetail, noteMarketChange, openDetail } from './detail.js';
import { setSchedule } from './format.js';
import { initForeign, refreshForeignDetail } from './foreign.js';
import { initFutures } from './futures.js';
import { initHeader } from './header.js';
import { initIndices } from './indices.js';
import { GatewaySocket } from './socket.js';
import {
  applyDerivatives, applyForeign, applyIndex, applyMarket, setBasket, setChannelState, store,
} from './store.js';

const BASKET_RETRY_MS = 5000;
let basketTimer = 0;

/** The trading schedule the header's phase follows; retried until the gateway answers. */
async function loadSchedule() {
  const res = await apiGet('/api/market/schedule');
  if (!(res.ok && setSchedule(res.data))) setTimeout(loadSchedule, BASKET_RETRY_MS);
}

/** The VN30 basket; retried while the gateway cannot answer or does not know it yet. */
async function loadBasket() {
  clearTimeout(basketTimer);
  basketTimer = 0;
  const res = await apiGet('/api/market/basket');
  const symbols = res.ok && res.data && Array.isArray(res.data.symbols) ? res.data.symbols : null;
  if (symbols) setBasket(symbols);
  if ((!symbols || !symbols.length) && !basketTimer) basketTimer = setTimeout(loadBasket, BASKET_RETRY_MS);
}

const isMessage = (msg) => msg.type === 'snapshot' || msg.type === 'delta';

const handlers = {
  market(msg) {
    applyMarket(msg);
    const data = msg.data || {};
    noteMarketChange(data.quotes);
    noteMarketChange(data.prices);
    if (msg.type === 'snapshot') loadBasket(); // a (re)connect: the basket may have changed meanwhile
  },
  index: applyIndex,
  foreign(msg) {
    applyForeign(msg);
    refreshForeignDetail();
  },
  derivatives: applyDerivatives,
};

function start() {
  loadSchedule();
  initHeader();
  initIndices();
  initBoard({
    onSelect(symbol, row) {
      selectRow(symbol);
      openDetail(symbol, row);
    },
  });
  initForeign();
  initFutures();
  // Closing the detail gives focus back to the row that opened it (or that symbol's row, if it was re-created).
  initDetail({ onClosed: () => selectRow(null), onFocusLost: focusRow });

  // One socket for the tab, every channel on it: each message says its channel.
  const channels = Object.keys(handlers);
  const socket = new GatewaySocket(
    channels,
    (msg) => isMessage(msg) && Object.hasOwn(handlers, msg.channel) && handlers[msg.channel](msg),
    (state) => channels.forEach((name) => setChannelState(name, state)),
  );
  socket.start();
  loadBasket();

  // Exposed for debugging from the console only.
  window.stockTracker = { store, closeDetail };
}

start();
