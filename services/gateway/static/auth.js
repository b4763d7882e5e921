// The optional gateway token: asked for with one small form when the gateway refuses us (WebSocket close 1008,
// REST 401), kept in sessionStorage, sent as ?token= on WebSockets and as a Bearer header on fetch.
// The form is a modal dialog: focus moves to its input, Tab stays inside, the page behind is inert. Escape (or
// "Để sau") puts it away until the header's "Nhập token" button brings it back; focus then returns where it was.

import { keepTabInside, restoreFocus } from './a11y.js';

const KEY = 'stocktracker.token';
let pending = null; // one form for every caller that needs the token at the same time

export function getToken() {
  try {
    return sessionStorage.getItem(KEY) || '';
  } catch {
    return ''; // storage disabled: work without remembering
  }
}

function setToken(token) {
  try {
    if (token) sessionStorage.setItem(KEY, token);
    else sessionStorage.removeItem(KEY);
  } catch { /* storage disabled */ }
}

/**
 * The gateway refused `used`. Resolves once there is a token worth trying: immediately when someone already
 * replaced it meanwhile, else after the user submits the form.
 */
export function tokenRejected(used) {
  if (getToken() !== used) return Promise.resolve(getToken());
  if (!pending) {
    setToken('');
    pending = askToken(Boolean(used)).then((token) => {
      setToken(token);
      pending = null;
      return token;
    });
  }
  return pending;
}

let dialog = null; // {box, input, reopen, returnTo, inert: [elements made inert while open]}

function dialogParts() {
  if (!dialog) {
    const box = document.getElementById('auth');
    dialog = {
      box, input: box.querySelector('#auth-token'), reopen: document.getElementById('auth-open'), returnTo: null, inert: [],
    };
    box.addEventListener('keydown', (event) => {
      if (event.key === 'Escape') {
        event.preventDefault();
        event.stopPropagation(); // the detail drawer behind must not close as well
        putAway();
      } else {
        keepTabInside(box, event);
      }
    });
    box.querySelector('#auth-later').addEventListener('click', putAway);
    dialog.reopen.addEventListener('click', () => showDialog(dialog.reopen));
  }
  return dialog;
}

function showDialog(opener) {
  const d = dialogParts();
  if (!d.box.hidden) return;
  d.returnTo = opener && opener !== document.body ? opener : null;
  // Everything else is out of reach while the dialog is open (pointer, Tab and screen readers alike).
  d.inert = [...document.body.children].filter((el) => el !== d.box && !el.inert);
  for (const el of d.inert) el.inert = true;
  d.box.hidden = false;
  d.input.focus();
}

function hideDialog() {
  const d = dialogParts();
  d.box.hidden = true;
  for (const el of d.inert) el.inert = false;
  d.inert = [];
}

/** Escape or "Để sau": the token is still wanted, so the header offers the form again. */
function putAway() {
  const d = dialogParts();
  if (d.box.hidden) return;
  hideDialog();
  d.reopen.hidden = false;
  if (!restoreFocus(d.returnTo)) d.reopen.focus();
}

function askToken(wasRejected) {
  const d = dialogParts();
  const form = d.box.querySelector('form');
  d.box.querySelector('#auth-error').hidden = !wasRejected;
  d.input.value = '';
  showDialog(document.activeElement);
  return new Promise((resolve) => {
    form.addEventListener('submit', function submit(event) {
      event.preventDefault();
      const token = d.input.value.trim();
      if (!token) return;
      form.removeEventListener('submit', submit);
      hideDialog();
      d.reopen.hidden = true;
      restoreFocus(d.returnTo);
      resolve(token);
    });
  });
}

/** Headers for a REST call. */
function authHeaders() {
  const token = getToken();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

/**
 * A JSON request to the gateway: {ok, status, data}. Never throws: a network failure is status 0, so callers just
 * show "unavailable". A 401 asks for the token and tries again. `body`, when given, is sent as JSON.
 */
export async function apiRequest(path, { method = 'GET', body } = {}) {
  for (let attempt = 0; attempt < 4; attempt += 1) {
    const used = getToken();
    const headers = authHeaders();
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let response;
    try {
      response = await fetch(path, {
        method, headers, cache: 'no-store', body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch {
      return { ok: false, status: 0, data: null };
    }
    if (response.status === 401) {
      await tokenRejected(used);
      continue;
    }
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    return { ok: response.ok, status: response.status, data };
  }
  return { ok: false, status: 401, data: null };
}

/** GET a JSON document from the gateway (see apiRequest). */
export const apiGet = (path) => apiRequest(path);
