// Number and time formatting. Every timestamp the gateway sends is exchange time (Asia/Ho_Chi_Minh, UTC+7);
// we always display it in that zone, whatever the browser's own zone is.

const EXCHANGE_OFFSET_MS = 7 * 3600 * 1000;

const intFmt = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
const dec1 = new Intl.NumberFormat('en-US', { minimumFractionDigits: 1, maximumFractionDigits: 1 });
const dec2 = new Intl.NumberFormat('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const upTo2 = new Intl.NumberFormat('en-US', { maximumFractionDigits: 2 });
const oneTo2 = new Intl.NumberFormat('en-US', { minimumFractionDigits: 1, maximumFractionDigits: 2 });

const DASH = '—';

export const isNum = (v) => typeof v === 'number' && Number.isFinite(v);

/** Put a raw number in data-value; no attribute at all while the number is unknown. */
export function setRaw(node, value) {
  if (isNum(value)) node.dataset.value = String(value);
  else delete node.dataset.value;
}

/** Fill a list with its items, or with one muted "Chưa có" (none yet) while there are none. */
export function fillList(list, items) {
  if (!items.length) {
    const li = document.createElement('li');
    li.className = 'muted';
    li.textContent = 'Chưa có';
    items = [li];
  }
  list.replaceChildren(...items);
}

/**
 * A bar diverging from the centre of its track: a positive `value` grows right, a negative one left, `max` (the
 * largest magnitude shown) reaching the edge; coloured by its sign.
 */
export function divergingTrack(value, max) {
  const track = document.createElement('div');
  track.className = 'flow-track';
  const bar = document.createElement('i');
  bar.dataset.trend = changeTrend(value);
  const half = (Math.abs(value) / max) * 50;
  bar.style.width = `${half}%`;
  bar.style.left = value >= 0 ? '50%' : `${50 - half}%`;
  track.append(bar);
  return track;
}

/** Whole numbers (volumes, VND prices) with thousands separators. */
export const fmtInt = (v) => (isNum(v) ? intFmt.format(v) : DASH);

/** A price as sent: VND prices are whole, index/futures points keep up to two decimals. */
export const fmtPrice = (v) => (isNum(v) ? upTo2.format(v) : DASH);

/** A futures price on a board (ticks of 0.1 point): 1,899.0, 1,897.85. */
export const fmtTick = (v) => (isNum(v) ? oneTo2.format(v) : DASH);

/** A futures contract, by its code (VN30F…) or by the exchange it was sent with. */
export const isFutures = (symbol, exchange) => /^VN30F/.test(symbol || '')
  || ['DER', 'DERIVATIVES'].includes(String(exchange || '').toUpperCase());

/** Index or futures points, always two decimals. */
export const fmtPoints = (v) => (isNum(v) ? dec2.format(v) : DASH);

const sign = (v) => (v > 0 ? '+' : v < 0 ? '-' : '');

export const fmtSigned = (v, fmt = fmtPrice) => (isNum(v) ? sign(v) + fmt(Math.abs(v)) : DASH);

export const fmtPct = (v) => (isNum(v) ? `${sign(v)}${dec2.format(Math.abs(v))}%` : DASH);

/** VND amounts abbreviated the way Vietnamese traders read them: tỷ (1e9) and triệu (1e6). */
export function fmtVnd(v, signed = false) {
  if (!isNum(v)) return DASH;
  const abs = Math.abs(v);
  const prefix = signed ? sign(v) : v < 0 ? '-' : '';
  if (abs >= 1e9) return `${prefix}${dec1.format(abs / 1e9)} tỷ`;
  if (abs >= 1e6) return `${prefix}${dec1.format(abs / 1e6)} tr`;
  return prefix + intFmt.format(abs);
}

/** Share counts abbreviated for tight spots (lists, chart labels). */
export function fmtShort(v) {
  if (!isNum(v)) return DASH;
  const abs = Math.abs(v);
  const prefix = v < 0 ? '-' : '';
  if (abs >= 1e9) return `${prefix}${dec1.format(abs / 1e9)}B`;
  if (abs >= 1e6) return `${prefix}${dec1.format(abs / 1e6)}M`;
  if (abs >= 1e4) return `${prefix}${dec1.format(abs / 1e3)}K`;
  return prefix + intFmt.format(abs);
}

// msgspec writes e.g. 2025-03-10T09:15:03.123456+07:00; Date.parse is not guaranteed to accept six fractional
// digits, so parse it ourselves. A time without an offset is exchange time.
const ISO = /^(\d{4})-(\d\d)-(\d\d)(?:[T ](\d\d):(\d\d)(?::(\d\d)(?:\.(\d+))?)?)?(Z|[+-]\d\d:?\d\d)?$/;

/** Milliseconds since the epoch, or NaN. */
export function parseTime(text) {
  if (typeof text !== 'string') return NaN;
  const m = ISO.exec(text);
  if (!m) return NaN;
  const ms = m[7] ? Number(m[7].slice(0, 3).padEnd(3, '0')) : 0;
  const utc = Date.UTC(+m[1], +m[2] - 1, +m[3], +(m[4] || 0), +(m[5] || 0), +(m[6] || 0), ms);
  if (m[8] === 'Z') return utc;
  if (!m[8]) return utc - EXCHANGE_OFFSET_MS;
  const off = m[8].replace(':', '');
  const minutes = (Number(off.slice(1, 3)) * 60 + Number(off.slice(3, 5))) * (off[0] === '-' ? -1 : 1);
  return utc - minutes * 60000;
}

/** The wall-clock fields of a moment in exchange time. */
function exchangeParts(ms) {
  const d = new Date(ms + EXCHANGE_OFFSET_MS);
  return { h: d.getUTCHours(), m: d.getUTCMinutes(), s: d.getUTCSeconds(), dow: d.getUTCDay() };
}

const pad = (n) => String(n).padStart(2, '0');

export function fmtClock(ms, withSeconds = true) {
  if (!isNum(ms)) return DASH;
  const p = exchangeParts(ms);
  return withSeconds ? `${pad(p.h)}:${pad(p.m)}:${pad(p.s)}` : `${pad(p.h)}:${pad(p.m)}`;
}

/** YYYY-MM-DD → DD/MM/YYYY, the Vietnamese way. */
export const fmtDate = (iso) => (typeof iso === 'string' && iso.length >= 10
  ? `${iso.slice(8, 10)}/${iso.slice(5, 7)}/${iso.slice(0, 4)}` : DASH);

// The HOSE schedule as [start minute of the day, phase], each phase lasting until the next start: served by the
// gateway (/api/market/schedule), the one the classifier and the feed's watchdog use, never a copy of it here.
let schedule = null;

/** Take the gateway's schedule (a TradingSchedule); the board shows HOSE's. */
export function setSchedule(data) {
  const phases = data && data.exchanges && data.exchanges.HOSE;
  if (!Array.isArray(phases)) return false;
  schedule = phases.map(({ start, phase }) => {
    const [h, m] = String(start).split(':').map(Number);
    return [h * 60 + m, phase];
  });
  return true;
}

export const PHASE_LABELS = {
  pre_open: 'Chờ mở cửa', ato: 'ATO', continuous: 'Liên tục', lunch: 'Nghỉ trưa', atc: 'ATC',
  post_close: 'Thỏa thuận', closed: 'Đóng cửa',
};

/** The HOSE trading phase at an exchange moment (weekends closed); null until the schedule is known. */
export function phaseAt(ms) {
  if (!schedule) return null;
  if (!isNum(ms)) return 'closed';
  const p = exchangeParts(ms);
  if (p.dow === 0 || p.dow === 6) return 'closed';
  const minute = p.h * 60 + p.m;
  let phase = 'pre_open';
  for (const [start, name] of schedule) if (minute >= start) phase = name;
  return phase;
}

/** Board colour of a price against its reference, ceiling and floor. */
export function priceTrend(price, ref, ceiling, floor) {
  if (!isNum(price) || price <= 0) return 'none';
  if (isNum(ceiling) && ceiling > 0 && price === ceiling) return 'ceiling';
  if (isNum(floor) && floor > 0 && price === floor) return 'floor';
  if (!isNum(ref) || ref <= 0) return 'none';
  return price > ref ? 'up' : price < ref ? 'down' : 'ref';
}

/** Direction of a signed change, for colouring. */
export const changeTrend = (v) => (!isNum(v) ? 'none' : v > 0 ? 'up' : v < 0 ? 'down' : 'ref');
