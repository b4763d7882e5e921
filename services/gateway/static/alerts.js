// The alerts panel beside the board: the live feed (the `alerts` channel: a snapshot of the latest, then each new
// one), a toast for each new critical alert, and the editor of the user rules (/api/alerts/rules: the gateway keeps
// them in KV alert_rules, where the alerts service reads them).

import { apiGet, apiRequest } from './auth.js';
import { fillList, fmtClock, parseTime } from './format.js';

const SHOWN = 50; // alerts in the feed, newest first
const TOAST_MS = 8000;
const TOASTS_AT_ONCE = 3;
const KIND_NAMES = {
  price_above: 'Giá vượt lên', price_below: 'Giá xuống dưới', change_beyond: '% thay đổi vượt', volume_beyond: 'KL vượt',
};
const SEVERITY_NAMES = { info: 'Thông tin', warning: 'Cảnh báo', critical: 'Khẩn' };

let alerts = []; // newest first
let parts = null;

/** The Vietnamese message without the symbol it starts with (shown beside it). */
function said(alert) {
  const prefix = `${alert.symbol}: `;
  return alert.message_vi.startsWith(prefix) ? alert.message_vi.slice(prefix.length) : alert.message_vi;
}

function alertItem(alert) {
  const li = document.createElement('li');
  li.dataset.severity = alert.severity;
  li.dataset.type = alert.type;
  const time = document.createElement('time');
  time.dateTime = alert.timestamp;
  time.textContent = fmtClock(parseTime(alert.timestamp));
  const symbol = document.createElement('b');
  symbol.textContent = alert.symbol;
  const text = document.createElement('span');
  text.textContent = said(alert);
  text.title = alert.message_en;
  li.append(time, symbol, text);
  return li;
}

function render() {
  fillList(parts.feed, alerts.map(alertItem));
  parts.count.textContent = alerts.length ? `${alerts.length}` : '';
}

function toast(alert) {
  const note = document.createElement('div');
  note.className = 'toast';
  note.dataset.severity = alert.severity;
  const symbol = document.createElement('b');
  symbol.textContent = alert.symbol;
  note.append(symbol, ` ${said(alert)}`);
  while (parts.toasts.children.length >= TOASTS_AT_ONCE) parts.toasts.firstElementChild.remove();
  parts.toasts.append(note);
  setTimeout(() => note.remove(), TOAST_MS);
}

/** A message of the `alerts` channel: a snapshot replaces the feed (oldest first on the wire); a delta adds to it. */
export function applyAlerts(msg) {
  const received = (msg.data && Array.isArray(msg.data.alerts)) ? msg.data.alerts : [];
  if (msg.type === 'snapshot') {
    alerts = received.slice().reverse().slice(0, SHOWN);
  } else {
    alerts = [...received.slice().reverse(), ...alerts].slice(0, SHOWN);
    received.filter((alert) => alert.severity === 'critical').forEach(toast);
  }
  render();
}

// --- the user rules --------------------------------------------------------------------------------------------

function ruleItem(rule) {
  const li = document.createElement('li');
  li.dataset.rule = rule.id;
  const what = document.createElement('span');
  what.textContent = `${rule.symbol} · ${KIND_NAMES[rule.kind] || rule.kind} ${rule.value.toLocaleString('vi-VN')}`
    + ` · ${SEVERITY_NAMES[rule.severity] || rule.severity}`;
  const remove = document.createElement('button');
  remove.type = 'button';
  remove.textContent = '✕';
  remove.setAttribute('aria-label', `Xoá quy tắc ${rule.symbol}`);
  remove.addEventListener('click', () => deleteRule(rule.id));
  li.append(what, remove);
  return li;
}

function say(text) {
  parts.status.textContent = text;
}

async function loadRules() {
  const res = await apiGet('/api/alerts/rules');
  if (!res.ok || !Array.isArray(res.data)) {
    say(res.status === 401 ? 'Cần token để xem quy tắc.' : 'Không tải được quy tắc.');
    return;
  }
  const items = res.data.map(ruleItem);
  parts.rules.replaceChildren(...items);
  parts.rulesEmpty.hidden = items.length > 0;
}

async function deleteRule(id) {
  const res = await apiRequest(`/api/alerts/rules/${encodeURIComponent(id)}`, { method: 'DELETE' });
  say(res.ok || res.status === 404 ? 'Đã xoá quy tắc.' : 'Không xoá được quy tắc.');
  await loadRules();
}

/** A new rule's id: its symbol and kind, and a suffix that makes it unique (the gateway refuses a taken id). */
function ruleId(symbol, kind) {
  return `${symbol}-${kind}-${Date.now().toString(36)}`.slice(0, 40);
}

async function addRule(event) {
  event.preventDefault();
  const form = parts.form;
  const symbol = form.elements.symbol.value.trim().toUpperCase();
  const kind = form.elements.kind.value;
  const rule = {
    id: ruleId(symbol, kind), symbol, kind, value: Number(form.elements.value.value),
    severity: form.elements.severity.value,
  };
  const res = await apiRequest('/api/alerts/rules', { method: 'POST', body: rule });
  if (res.ok) {
    say(`Đã thêm quy tắc cho ${symbol}.`);
    form.elements.value.value = '';
    await loadRules();
  } else {
    say(res.data && res.data.error ? `Không thêm được: ${res.data.error}` : 'Không thêm được quy tắc.');
  }
}

export function initAlerts({ socket }) {
  parts = {
    feed: document.getElementById('alerts-feed'),
    count: document.getElementById('alerts-count'),
    toasts: document.getElementById('toasts'),
    form: document.getElementById('rule-form'),
    rules: document.getElementById('rules'),
    rulesEmpty: document.getElementById('rules-empty'),
    status: document.getElementById('rules-status'),
  };
  render();
  parts.form.addEventListener('submit', addRule);
  // The rules are read when the editor is opened: with a token set they always need it, and the page does not ask
  // for one before the user wants them.
  parts.form.closest('details').addEventListener('toggle', (event) => {
    if (event.target.open) loadRules();
  });
  socket.subscribe({ channel: 'alerts' });
}
