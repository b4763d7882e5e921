// Small canvas charts: sparkline, line chart (with a zero line) and candles with buy/sell volume bars.
// Canvases are sized from their CSS box times devicePixelRatio, so lines stay crisp on HiDPI screens.

import { fmtClock, fmtPrice, fmtShort, isNum } from './format.js';

const COLORS = {
  up: '#1fd17a',
  down: '#ff4d5e',
  ref: '#f5c542',
  grid: 'rgba(148, 163, 184, 0.12)',
  axis: '#7d8aa0',
  text: '#aeb9cc',
  cross: 'rgba(226, 232, 240, 0.35)',
};
const FONT = '10px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace';

/** Size the canvas backing store to its CSS box; null while it has no size (hidden). */
function prepare(canvas) {
  const w = canvas.clientWidth;
  const h = canvas.clientHeight;
  if (!w || !h) return null;
  const dpr = window.devicePixelRatio || 1;
  const pw = Math.round(w * dpr);
  const ph = Math.round(h * dpr);
  if (canvas.width !== pw || canvas.height !== ph) {
    canvas.width = pw;
    canvas.height = ph;
  }
  const ctx = canvas.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  return { ctx, w, h };
}

const redraws = new Set();
let dpr = window.devicePixelRatio;
// A zoom or a move to another screen changes devicePixelRatio without resizing any CSS box.
window.addEventListener('resize', () => {
  if (window.devicePixelRatio === dpr) return;
  dpr = window.devicePixelRatio;
  for (const redraw of redraws) redraw();
});

/** Call `redraw` whenever the canvas' box or the pixel ratio changes. */
export function watchSize(canvas, redraw) {
  redraws.add(redraw);
  if ('ResizeObserver' in window) new ResizeObserver(() => redraw()).observe(canvas);
}

function extent(values, extra = []) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) if (isNum(v)) { if (v < lo) lo = v; if (v > hi) hi = v; }
  for (const v of extra) if (isNum(v)) { if (v < lo) lo = v; if (v > hi) hi = v; }
  if (lo === Infinity) return null;
  if (lo === hi) {
    const pad = Math.abs(lo) * 0.005 || 1; // a flat series sits mid-height
    lo -= pad;
    hi += pad;
  }
  return { lo, hi };
}

/** Round gridline values (1, 2, 2.5 or 5 × 10^k apart) inside [lo, hi]: prices read 45,400 not 45,412.5. */
function niceTicks(lo, hi, count) {
  const raw = (hi - lo) / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((candidate) => candidate >= raw);
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(Math.round(v * 1e6) / 1e6);
  return ticks;
}

function hline(ctx, y, x0, x1, color, dash = []) {
  ctx.save();
  ctx.strokeStyle = color;
  ctx.setLineDash(dash);
  ctx.lineWidth = 1;
  ctx.beginPath();
  ctx.moveTo(x0, Math.round(y) + 0.5);
  ctx.lineTo(x1, Math.round(y) + 0.5);
  ctx.stroke();
  ctx.restore();
}

/** A bare intraday line against a reference value (dashed), coloured by where it ends. */
export function drawSparkline(canvas, values, reference) {
  const area = prepare(canvas);
  if (!area) return;
  const { ctx, w, h } = area;
  const range = extent(values, [reference]);
  if (!range || values.length < 2) return;
  const pad = 3;
  const x = (i) => pad + (i / (values.length - 1)) * (w - 2 * pad);
  const y = (v) => pad + (1 - (v - range.lo) / (range.hi - range.lo)) * (h - 2 * pad);
  if (isNum(reference)) hline(ctx, y(reference), 0, w, COLORS.ref, [3, 3]);

  const last = values[values.length - 1];
  const color = !isNum(reference) || last === reference ? COLORS.ref : last > reference ? COLORS.up : COLORS.down;
  ctx.beginPath();
  values.forEach((v, i) => (i ? ctx.lineTo(x(i), y(v)) : ctx.moveTo(x(i), y(v))));
  ctx.strokeStyle = color;
  ctx.lineWidth = 1.5;
  ctx.lineJoin = 'round';
  ctx.stroke();

  ctx.lineTo(x(values.length - 1), h);
  ctx.lineTo(x(0), h);
  ctx.closePath();
  const fill = ctx.createLinearGradient(0, 0, 0, h);
  fill.addColorStop(0, `${color}44`);
  fill.addColorStop(1, `${color}00`);
  ctx.fillStyle = fill;
  ctx.fill();
}

/**
 * A time series [{t (ms), v}] with a zero line: green above zero, red below; value labels on the right,
 * exchange times below. `fmt` formats the axis values.
 */
export function drawLineChart(canvas, points, fmt = (v) => v.toFixed(2)) {
  const area = prepare(canvas);
  if (!area) return;
  const { ctx, w, h } = area;
  ctx.font = FONT;
  if (points.length < 2) {
    ctx.fillStyle = COLORS.axis;
    ctx.textAlign = 'center';
    ctx.fillText('Chưa đủ dữ liệu', w / 2, h / 2);
    return;
  }
  const right = 44;
  const bottom = 14;
  const plotW = w - right;
  const plotH = h - bottom - 4;
  const range = extent(points.map((p) => p.v), [0]);
  const t0 = points[0].t;
  const t1 = points[points.length - 1].t;
  const x = (t) => (t1 === t0 ? plotW : ((t - t0) / (t1 - t0)) * plotW);
  const y = (v) => 4 + (1 - (v - range.lo) / (range.hi - range.lo)) * plotH;

  for (const v of [range.hi, range.lo]) {
    hline(ctx, y(v), 0, plotW, COLORS.grid);
    ctx.fillStyle = COLORS.text;
    ctx.textAlign = 'left';
    ctx.textBaseline = 'middle';
    ctx.fillText(fmt(v), plotW + 4, Math.min(Math.max(y(v), 8), plotH));
  }
  const zero = y(0);
  hline(ctx, zero, 0, plotW, COLORS.axis, [2, 3]);

  const path = new Path2D();
  points.forEach((p, i) => (i ? path.lineTo(x(p.t), y(p.v)) : path.moveTo(x(p.t), y(p.v))));
  // The same path twice, clipped to each side of zero, gives a line that changes colour where it crosses.
  for (const [top, height, color] of [[0, zero, COLORS.up], [zero, h - zero, COLORS.down]]) {
    ctx.save();
    ctx.beginPath();
    ctx.rect(0, top, plotW, height);
    ctx.clip();
    ctx.strokeStyle = color;
    ctx.lineWidth = 1.5;
    ctx.stroke(path);
    ctx.restore();
  }

  ctx.fillStyle = COLORS.axis;
  ctx.textBaseline = 'bottom';
  ctx.textAlign = 'left';
  ctx.fillText(fmtClock(t0, false), 0, h);
  ctx.textAlign = 'right';
  ctx.fillText(fmtClock(t1, false), plotW, h);
}

/**
 * Candles [{t, open, high, low, close, buy_volume, sell_volume}] over mirrored volume bars (active buy up,
 * active sell down). Returns the layout, so a pointer position can be mapped back to a candle.
 */
export function drawCandles(canvas, candles, hover = -1) {
  const area = prepare(canvas);
  if (!area) return null;
  const { ctx, w, h } = area;
  ctx.font = FONT;
  if (!candles.length) {
    ctx.fillStyle = COLORS.axis;
    ctx.textAlign = 'center';
    ctx.fillText('Chưa có dữ liệu nến', w / 2, h / 2);
    return null;
  }
  const right = 54;
  const bottom = 14;
  const plotW = w - right;
  const priceH = Math.round((h - bottom) * 0.68);
  const volTop = priceH + 8;
  const volH = h - bottom - volTop;
  const mid = volTop + volH / 2;
  const slot = plotW / candles.length;
  const body = Math.max(1, Math.min(9, slot * 0.7));

  const range = extent([...candles.map((c) => c.high), ...candles.map((c) => c.low)]);
  const y = (v) => 8 + (1 - (v - range.lo) / (range.hi - range.lo)) * (priceH - 14);
  let maxVol = 1;
  for (const c of candles) maxVol = Math.max(maxVol, c.buy_volume || 0, c.sell_volume || 0);
  const vy = (v) => ((v || 0) / maxVol) * (volH / 2);

  for (const v of niceTicks(range.lo, range.hi, 4)) {
    hline(ctx, y(v), 0, plotW, COLORS.grid);
    ctx.fillStyle = COLORS.text;
    ctx.textAlign = 'left';
    ctx.textBaseline = 'middle';
    ctx.fillText(fmtPrice(v), plotW + 4, y(v));
  }
  hline(ctx, mid, 0, plotW, COLORS.grid);
  ctx.fillStyle = COLORS.axis;
  ctx.fillText(`▲${fmtShort(maxVol)}`, plotW + 4, volTop + 5);
  ctx.fillText(`▼${fmtShort(maxVol)}`, plotW + 4, h - bottom - 5);

  let lastHour = null;
  candles.forEach((c, i) => {
    const cx = Math.round(i * slot + slot / 2) + 0.5;
    const color = c.close > c.open ? COLORS.up : c.close < c.open ? COLORS.down : COLORS.ref;
    ctx.strokeStyle = color;
    ctx.fillStyle = color;
    ctx.beginPath();
    ctx.moveTo(cx, y(c.high));
    ctx.lineTo(cx, y(c.low));
    ctx.stroke();
    const top = y(Math.max(c.open, c.close));
    ctx.fillRect(cx - body / 2, top, body, Math.max(1, y(Math.min(c.open, c.close)) - top));

    ctx.fillStyle = COLORS.up;
    ctx.fillRect(cx - body / 2, mid - vy(c.buy_volume), body, vy(c.buy_volume));
    ctx.fillStyle = COLORS.down;
    ctx.fillRect(cx - body / 2, mid, body, vy(c.sell_volume));

    const label = fmtClock(c.t, false);
    const hour = label.slice(0, 2);
    if (lastHour !== null && hour !== lastHour && cx > 16 && cx < plotW - 16) {
      ctx.fillStyle = COLORS.axis;
      ctx.textAlign = 'center';
      ctx.textBaseline = 'bottom';
      ctx.fillText(`${hour}:00`, cx, h);
    }
    lastHour = hour;
  });

  if (hover >= 0 && hover < candles.length) {
    const cx = Math.round(hover * slot + slot / 2) + 0.5;
    ctx.strokeStyle = COLORS.cross;
    ctx.beginPath();
    ctx.moveTo(cx, 0);
    ctx.lineTo(cx, h - bottom);
    ctx.stroke();
  }
  return { slot, plotW };
}
