// The tab's one gateway WebSocket, carrying every channel it follows (/ws?channels=...), that keeps itself
// connected: backoff from 0.5 s doubling to 10 s, reset once a message arrives; a close with 1008 (policy: missing
// or wrong token) waits for a token instead. Each reconnect starts with a snapshot of every channel.
// The filtered channels (board, trades, candles) are subscribed to on the socket itself: the subscriptions are kept
// here and sent again on every (re)connect, since the gateway forgets them with the socket.

import { getToken, tokenRejected } from './auth.js';

const MIN_DELAY_MS = 500;
const MAX_DELAY_MS = 10000;
const POLICY_VIOLATION = 1008;

export class GatewaySocket {
  /**
   * @param {string[]} channels  the channels to follow: market, foreign, index, derivatives
   * @param {(msg: object) => void} onMessage   each decoded {type, channel, seq, data}
   * @param {(state: string) => void} onState  'connecting' | 'live' | 'reconnecting'
   */
  constructor(channels, onMessage, onState) {
    this.channels = channels;
    this.onMessage = onMessage;
    this.onState = onState;
    this.delay = MIN_DELAY_MS;
    this.everLive = false;
    this.socket = null;
    this.timer = 0;
    this.subscriptions = new Map(); // key → request, e.g. {channel: 'board', group: 'VN30'}
  }

  /**
   * Follow a filtered channel's topic, now and after every reconnect: `request` is {channel, and symbols | group |
   * exchange for board, symbol for trades / candles}, nothing else (the gateway refuses unknown fields).
   */
  subscribe(request) {
    const key = JSON.stringify(request);
    if (this.subscriptions.has(key)) return;
    this.subscriptions.set(key, request);
    this.send({ op: 'subscribe', ...request });
  }

  /** Stop following what `subscribe(request)` asked for. */
  unsubscribe(request) {
    const key = JSON.stringify(request);
    if (!this.subscriptions.delete(key)) return;
    this.send({ op: 'unsubscribe', ...request });
  }

  /** Send now if connected; else the next connect sends the subscriptions anyway. */
  send(message) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(message));
  }

  start() {
    this.setState('connecting');
    this.connect();
  }

  setState(state) {
    if (state !== this.state) {
      this.state = state;
      this.onState(state);
    }
  }

  connect() {
    this.timer = 0;
    const token = getToken();
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const query = `?channels=${this.channels.join(',')}${token ? `&token=${encodeURIComponent(token)}` : ''}`;
    const socket = new WebSocket(`${scheme}//${location.host}/ws${query}`);
    this.socket = socket;
    let gotMessage = false;

    socket.onopen = () => {
      for (const request of this.subscriptions.values()) socket.send(JSON.stringify({ op: 'subscribe', ...request }));
    };

    socket.onmessage = (event) => {
      if (!gotMessage) {
        // Live only once the gateway has spoken: a refused token is accepted, then closed.
        gotMessage = true;
        this.everLive = true;
        this.delay = MIN_DELAY_MS;
        this.setState('live');
      }
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch {
        return;
      }
      if (msg && typeof msg === 'object') this.onMessage(msg);
    };

    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      if (event.code === POLICY_VIOLATION) {
        this.setState('connecting');
        tokenRejected(token).then(() => this.connect());
        return;
      }
      this.setState(this.everLive ? 'reconnecting' : 'connecting');
      this.timer = setTimeout(() => this.connect(), this.delay);
      this.delay = Math.min(this.delay * 2, MAX_DELAY_MS);
    };
    // An error is always followed by a close, which does the work.
    socket.onerror = () => {};
  }
}
