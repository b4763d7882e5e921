// The dashboard's entry point: builds the page parts and opens the tab's one gateway socket: the four plain channels
// (market, index, foreign, derivatives) from the start, the filtered ones (board for the tab shown, trades and
// candles for the symbol whose detail is open, the alerts) subscribed to on it as the page needs them.

import { applyAlerts, initAlerts } from './alerts.js';
import { apiGet } from './auth.js';
import { focusRow, initBoard, selectRow } from './board.js';
import {
  applyCandles, applyTrades, closeDetail, detailError, initDetail, noteMarketChange, openDetail,
} from './detail.js';
import { setSchedule } from './format.js';
import { initForeign, refreshForeignDetail } from './foreign.js';
import { initFutures } from './futures.js';
import { initHeader } from './header.js';
import { initIndices } from './indices.js';
import { GatewaySocket } from './socket.js';
import {
  applyBoard, applyDerivatives, applyForeign, applyIndex, applyMarket, setBoardError, setChannelState, store,
} from './store.js';
import { activeTab, initTabs, selectTab } from './tabs.js';
import { initViews } from './views.js';
import { removeSymbol } from './watchlist.js';

const SCHEDULE_RETRY_MS = 5000;
const CHANNELS = ['market', 'index', 'foreign', 'derivatives'];

/** The trading schedule the header's phase follows; retried until the gateway answers. */
async function loadSchedule() {
  const res = await apiGet('/api/market/schedule');
  if (!(res.ok && setSchedule(res.data))) setTimeout(loadSchedule, SCHEDULE_RETRY_MS);
}

const isMessage = (msg) => msg.type === 'snapshot' || msg.type === 'delta';

const handlers = {
  market(msg) {
    applyMarket(msg);
    const data = msg.data || {};
    noteMarketChange(data.quotes);
    noteMarketChange(data.prices);
  },
  index: applyIndex,
  foreign(msg) {
    applyForeign(msg);
    refreshForeignDetail();
  },
  derivatives: applyDerivatives,
  board(msg) {
    applyBoard(msg);
    if (msg.topic === store.boardTopic) noteMarketChange(msg.data);
  },
  trades: applyTrades,
  candles: applyCandles,
  alerts: applyAlerts,
};

/** A request the gateway could not follow: said where it matters, never as a console error. */
function onError(msg) {
  if (msg.channel === 'board') setBoardError(msg.data);
  else if (msg.channel === 'trades' || msg.channel === 'candles') detailError(msg.data);
}

function start() {
  loadSchedule();
  initHeader();
  initIndices();

  // One socket for the tab, every channel on it: each message says its channel.
  const socket = new GatewaySocket(
    CHANNELS,
    (msg) => {
      if (msg.type === 'error') onError(msg);
      else if (isMessage(msg) && Object.hasOwn(handlers, msg.channel)) handlers[msg.channel](msg);
    },
    (state) => CHANNELS.forEach((name) => setChannelState(name, state)),
  );

  initBoard({
    onSelect(symbol, row) {
      selectRow(symbol);
      openDetail(symbol, row);
    },
    onRemove: removeSymbol,
  });
  initTabs({ socket });
  initViews();
  initForeign();
  initFutures();
  initAlerts({ socket });
  // Closing the detail gives focus back to the row that opened it (or that symbol's row, if it was re-created).
  initDetail({ socket, onClosed: () => selectRow(null), onFocusLost: focusRow });
  socket.start();

  // Exposed for debugging from the console only.
  window.stockTracker = {
    store, closeDetail, selectTab, activeTab, subscriptions: () => [...socket.subscriptions.values()],
  };
}

start();
