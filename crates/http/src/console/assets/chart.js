// The usage chart: inline SVG, bars stacked by outcome.
import { api, q } from './api.js';
import { h, clear } from './dom.js';

const HOUR = 3600e3;
const DAY = 24 * HOUR;

export const RANGES = {
  '24h-hour': { label: 'Last 24 hours, by hour', granularity: 'hour', step: HOUR, slots: 24 },
  '24h-minute': { label: 'Last 24 hours, by minute', granularity: 'minute', step: 60e3, slots: 1440 },
  '30d-day': { label: 'Last 30 days, by day', granularity: 'day', step: DAY, slots: 30 },
};

const OUTCOMES = [
  { key: 'valid', label: 'Valid', cls: 'valid' },
  { key: 'rate', label: 'Rate limited', cls: 'rate' },
  { key: 'other', label: 'Other refusals', cls: 'other' },
];

const SVG = 'http://www.w3.org/2000/svg';

function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const c of children) el.append(c);
  return el;
}

// Splits a bucket's counts into the chart's three outcomes.
export function split(counts) {
  const out = { valid: 0, rate: 0, other: 0 };
  for (const [code, n] of Object.entries(counts || {})) {
    const v = Number(n) || 0;
    if (code === 'VALID') out.valid += v;
    else if (code === 'RATE_LIMITED') out.rate += v;
    else out.other += v;
  }
  return out;
}

export async function usageChart(box, keyId, rangeName) {
  const range = RANGES[rangeName] || RANGES['24h-hour'];
  clear(box);
  box.append(h('p', { class: 'hint' }, 'Loading…'));
  const now = Date.now();
  const first = Math.floor(now / range.step) * range.step - (range.slots - 1) * range.step;
  let data;
  try {
    data = await api('GET', `/v1/api-keys/${encodeURIComponent(keyId)}/usage/history` +
      q({ granularity: range.granularity, from: new Date(first).toISOString(), to: new Date(now).toISOString() }));
  } catch (e) {
    clear(box);
    if (e.status === 404) box.append(h('p', { id: 'usage-empty' }, 'No usage history yet.'));
    else box.append(h('p', { class: 'error', id: 'usage-error' }, 'Usage history: ' + e.message));
    return;
  }
  const slots = Array.from({ length: range.slots }, () => ({ valid: 0, rate: 0, other: 0 }));
  for (const b of data.buckets || []) {
    const t = Date.parse(b.start);
    if (Number.isNaN(t)) continue;
    const i = Math.floor((t - first) / range.step);
    if (i < 0 || i >= range.slots) continue;
    const s = split(b.counts);
    slots[i].valid += s.valid;
    slots[i].rate += s.rate;
    slots[i].other += s.other;
  }
  const totals = slots.reduce((a, s) => ({ valid: a.valid + s.valid, rate: a.rate + s.rate, other: a.other + s.other }),
    { valid: 0, rate: 0, other: 0 });
  const max = Math.max(1, ...slots.map((s) => s.valid + s.rate + s.other));
  const W = 720, H = 220, L = 44, B = 24, T = 10, R = 8;
  const plotW = W - L - R, plotH = H - T - B;
  const bw = plotW / range.slots;
  const summary = `${totals.valid} valid, ${totals.rate} rate limited, ${totals.other} other refusals`;
  const chart = svg('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img', 'aria-labelledby': 'usage-svg-title usage-svg-desc', id: 'usage-svg' },
    svg('title', { id: 'usage-svg-title' }, document.createTextNode(range.label)),
    svg('desc', { id: 'usage-svg-desc' }, document.createTextNode(summary)));
  chart.append(svg('line', { class: 'axis', x1: L, y1: T + plotH, x2: W - R, y2: T + plotH }));
  chart.append(svg('line', { class: 'axis', x1: L, y1: T, x2: L, y2: T + plotH }));
  for (const frac of [0, 0.5, 1]) {
    const y = T + plotH - frac * plotH;
    chart.append(svg('text', { x: L - 6, y: y + 4, 'text-anchor': 'end' }, document.createTextNode(String(Math.round(max * frac)))));
  }
  const fmt = range.granularity === 'day'
    ? (t) => new Date(t).toLocaleDateString(undefined, { month: 'short', day: 'numeric' })
    : (t) => new Date(t).toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' });
  for (const i of [0, Math.floor(range.slots / 2), range.slots - 1]) {
    const x = L + i * bw + bw / 2;
    const anchor = i === 0 ? 'start' : i === range.slots - 1 ? 'end' : 'middle';
    chart.append(svg('text', { x: i === range.slots - 1 ? W - R : x, y: H - 6, 'text-anchor': anchor }, document.createTextNode(fmt(first + i * range.step))));
  }
  slots.forEach((s, i) => {
    let y = T + plotH;
    const start = new Date(first + i * range.step).toISOString();
    for (const o of OUTCOMES) {
      const n = s[o.key];
      if (!n) continue;
      const hgt = (n / max) * plotH;
      y -= hgt;
      chart.append(svg('rect', {
        x: L + i * bw + (bw > 3 ? 1 : 0), y, width: Math.max(bw - (bw > 3 ? 2 : 0), 0.5), height: hgt,
        class: 'seg-' + o.cls, 'data-outcome': o.key, 'data-count': n, 'data-start': start,
      }, svg('title', {}, document.createTextNode(`${start}: ${n} ${o.label.toLowerCase()}`))));
    }
  });
  clear(box);
  box.append(
    h('div', { class: 'legend', 'aria-hidden': 'true' },
      OUTCOMES.map((o) => h('span', {}, h('span', { class: 'swatch swatch-' + o.cls }), o.label))),
    chart,
    h('p', { id: 'usage-summary' }, (totals.valid + totals.rate + totals.other) ? 'In this period: ' + summary + '.' : 'No calls in this period.'));
}
