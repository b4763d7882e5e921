// The header: trading date, phase, the last update's exchange time and the connection state.

import { PHASE_LABELS, fmtClock, fmtDate, phaseAt } from './format.js';
import { invalidate, onRender } from './scheduler.js';
import { store } from './store.js';

const QUIET_MS = 2000;

/**
 * The exchange clock for the phase: the latest update's exchange time, carried forward by the wall time since it
 * arrived once the feed has gone quiet (nothing trades at lunch or after the close, so the last update alone would
 * say "continuous" all through the lunch break).
 */
function exchangeClock() {
  const quiet = performance.now() - store.lastUpdateAt;
  return quiet > QUIET_MS ? store.lastUpdate + quiet : store.lastUpdate;
}

const STATE_LABELS = { connecting: 'Đang kết nối', live: 'Trực tuyến', reconnecting: 'Mất kết nối, đang thử lại' };

/** Every channel live: live; any lost after being live: reconnecting; else still connecting. */
function overallState(channels) {
  const states = Object.values(channels);
  if (states.every((s) => s === 'live')) return 'live';
  if (states.includes('reconnecting')) return 'reconnecting';
  return 'connecting';
}

export function initHeader() {
  const date = document.getElementById('trading-date');
  const phase = document.getElementById('phase');
  const last = document.getElementById('last-update');
  const conn = document.getElementById('connection');
  const connLabel = conn.querySelector('.label');

  // Redrawn every second for the phase: write only what changed.
  const put = (node, text) => {
    if (node.textContent !== text) node.textContent = text;
  };

  onRender('header', () => {
    put(date, fmtDate(store.tradingDate));
    if (store.tradingDate) date.dataset.value = store.tradingDate;

    const hasTime = Number.isFinite(store.lastUpdate);
    put(last, hasTime ? fmtClock(store.lastUpdate) : '—');
    if (store.lastUpdateText) last.dataset.value = store.lastUpdateText;

    const current = hasTime ? phaseAt(exchangeClock()) : null;
    if (phase.dataset.phase !== (current || '')) phase.dataset.phase = current || '';
    put(phase, current ? PHASE_LABELS[current] : '—');

    const state = overallState(store.channels);
    if (conn.dataset.state !== state) conn.dataset.state = state;
    put(connLabel, STATE_LABELS[state]);
    conn.title = Object.entries(store.channels).map(([name, s]) => `${name}: ${s}`).join('\n');
  });
  setInterval(() => invalidate('header'), 1000); // the phase moves on while the feed is quiet
}
