// The optional gateway token: asked for with one small form when the gateway refuses us (WebSocket close 1008,
// REST 401), kept in sessionStorage, sent as ?token= on WebSockets and as a Bearer header on fetch.

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

function askToken(wasRejected) {
  const box = document.getElementById('auth');
  const form = box.querySelector('form');
  const input = box.querySelector('#auth-token');
  box.querySelector('#auth-error').hidden = !wasRejected;
  box.hidden = false;
  input.value = '';
  input.focus();
  return new Promise((resolve) => {
    form.addEventListener('submit', function submit(event) {
      event.preventDefault();
      const token = input.value.trim();
      if (!token) return;
      form.removeEventListener('submit', submit);
      box.hidden = true;
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
 * GET a JSON document from the gateway: {ok, status, data}. Never throws: a network failure is status 0, so
 * callers just show "unavailable". A 401 asks for the token and tries again.
 */
export async function apiGet(path) {
  for (let attempt = 0; attempt < 4; attempt += 1) {
    const used = getToken();
    let response;
    try {
      response = await fetch(path, { headers: authHeaders(), cache: 'no-store' });
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
