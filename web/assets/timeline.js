// The playback timeline: one row per camera with its recorded spans and gaps, an axis in the
// display zone (Europe/Paris or UTC), the playhead and the export marks. 24 h at most, zoomable
// down to one minute (wheel, buttons); click or drag to seek. Plain DOM (spans and gaps are
// elements with data-start/data-end), so it is accessible and testable.

import { t } from './i18n.js';
import * as time from './time.js';
import { h } from './ui.js';
import { hooks } from './hooks.js';

const STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600].map((s) => s * 1000);
const MIN_SPAN = 60e3;

export class Timeline {
  constructor({ onSeek, onScrub }) {
    this.onSeek = onSeek; this.onScrub = onScrub || (() => {});
    this.rows = []; this.playhead = null; this.marks = { in: null, out: null }; this.now = Date.now();
    this.axis = h('div', { class: 'tl-axis', 'aria-hidden': 'true' });
    this.tracks = h('div', { class: 'tl-rows' });
    this.markEl = h('div', { class: 'tl-marks', hidden: true });
    this.headEl = h('div', { class: 'tl-playhead', hidden: true });
    this.hoverEl = h('div', { class: 'tl-hover', hidden: true });
    this.body = h('div', { class: 'tl-body', role: 'slider', tabindex: '0', 'aria-label': t('tl.label'),
      'aria-valuemin': '0', 'aria-valuemax': '100' }, this.axis, this.tracks, this.markEl, this.headEl, this.hoverEl);
    this.el = h('div', { class: 'timeline' }, this.body);
    this.bind();
  }
  setDay(start, end) { this.day = [start, end]; this.view = [start, end]; this.render(); }
  setView(a, b) {
    const [ds, de] = this.day;
    let span = Math.min(Math.max(b - a, MIN_SPAN), de - ds);
    a = Math.min(Math.max(a, ds), de - span);
    this.view = [a, a + span]; this.render();
  }
  zoom(factor, center) {
    const [a, b] = this.view;
    center = center ?? (this.playhead !== null && this.playhead >= a && this.playhead <= b ? this.playhead : (a + b) / 2);
    const span = (b - a) * factor;
    const frac = (center - a) / (b - a);
    this.setView(center - span * frac, center - span * frac + span);
  }
  pan(frac) { const [a, b] = this.view; const d = (b - a) * frac; this.setView(a + d, b + d); }
  /// rows: [{id, label, spans: [[startMs, endMs]…], gaps: [[startMs, endMs]…], unavailable: [[startMs, endMs, node]…],
  ///   events: [{ms, type, active}…]}]
  setRows(rows) { this.rows = rows; this.render(); }
  setPlayhead(ms) { this.playhead = ms; this.place(); }
  setMarks(m) { this.marks = m; this.place(); }
  setNow(ms) { this.now = ms; }

  width() { return this.body.getBoundingClientRect().width || 1; }
  frac(ms) { const [a, b] = this.view; return (ms - a) / (b - a); }
  /// Client X coordinate of a time (for tests and tooltips).
  xForTime(ms) { const r = this.body.getBoundingClientRect(); return r.left + this.frac(ms) * r.width; }
  timeAtX(clientX) {
    const r = this.body.getBoundingClientRect();
    const f = Math.min(Math.max((clientX - r.left) / r.width, 0), 1);
    return this.view[0] + f * (this.view[1] - this.view[0]);
  }
  pct(ms) { return `${(this.frac(ms) * 100).toFixed(4)}%`; }

  render() {
    if (!this.view) return;
    const [a, b] = this.view, w = this.width();
    // Axis: the smallest step giving ≥ 80 px between labels, aligned on local midnight.
    const step = STEPS.find((s) => (s / (b - a)) * w >= 80) || STEPS[STEPS.length - 1];
    const ticks = [];
    const base = this.day[0];
    for (let x = base + Math.ceil((a - base) / step) * step; x <= b; x += step) {
      ticks.push(h('div', { class: 'tl-tick', style: { left: this.pct(x) } },
        h('span', {}, step < 60e3 ? time.hms(x) : time.hm(x))));
    }
    this.axis.replaceChildren(...ticks);
    const clip = (s, e) => [Math.max(s, a), Math.min(e, b)];
    this.tracks.replaceChildren(...this.rows.map((row) => {
      const track = h('div', { class: 'tl-track' });
      for (const [s0, e0] of row.gaps || []) {
        const [s, e] = clip(s0, Math.min(e0, this.now));
        if (e <= s) continue;
        track.append(h('div', { class: 'tl-gap', 'data-start': new Date(s0).toISOString(), 'data-end': new Date(e0).toISOString(),
          title: `${t('tl.gap')} ${time.hms(s0)} → ${time.hms(e0)} (${time.duration((e0 - s0) / 1000)})`,
          style: { left: this.pct(s), width: `max(3px, ${((e - s) / (b - a) * 100).toFixed(4)}%)` } }));
      }
      // Footage a node that is down holds (cluster): shaded, named, not playable until it is back.
      for (const [s0, e0, node] of row.unavailable || []) {
        const [s, e] = clip(s0, e0);
        if (e <= s) continue;
        track.append(h('div', { class: 'tl-unavailable', 'data-start': new Date(s0).toISOString(), 'data-end': new Date(e0).toISOString(), 'data-node': node,
          title: `${t('tl.unavailable', { node })} ${time.hms(s0)} → ${time.hms(e0)}`,
          style: { left: this.pct(s), width: `max(3px, ${((e - s) / (b - a) * 100).toFixed(4)}%)` } }));
      }
      for (const [s0, e0] of row.spans) {
        const [s, e] = clip(s0, e0);
        if (e <= s) continue;
        track.append(h('div', { class: 'tl-span', 'data-start': new Date(s0).toISOString(), 'data-end': new Date(e0).toISOString(),
          title: `${t('tl.recorded')} ${time.hms(s0)} → ${time.hms(e0)}`,
          style: { left: this.pct(s), width: `${((e - s) / (b - a) * 100).toFixed(4)}%` } }));
      }
      // Camera events (ONVIF): a thin mark per event, coloured by type, its time and type as title.
      for (const ev of row.events || []) {
        if (ev.ms < a || ev.ms > b) continue;
        track.append(h('div', { class: `tl-event tl-event-${ev.type}` + (ev.active === false ? ' cleared' : ''),
          'data-time': new Date(ev.ms).toISOString(), 'data-type': ev.type,
          title: `${t('ev.' + ev.type)} ${ev.active === false ? t('ev.cleared') : ''} ${time.hms(ev.ms)}`.replace(/\s+/g, ' '),
          style: { left: this.pct(ev.ms) } }));
      }
      if (this.now < b) track.append(h('div', { class: 'tl-future', style: { left: this.pct(Math.max(this.now, a)), right: '0' } }));
      return h('div', { class: 'tl-row', 'data-camera': row.id }, track, h('span', { class: 'tl-label' }, row.label));
    }));
    this.place();
  }
  place() {
    if (!this.view) return;
    const [a, b] = this.view;
    const p = this.playhead;
    this.headEl.hidden = p === null || p < a || p > b;
    if (!this.headEl.hidden) this.headEl.style.left = this.pct(p);
    if (p !== null) {
      this.body.setAttribute('aria-valuenow', ((p - a) / (b - a) * 100).toFixed(1));
      this.body.setAttribute('aria-valuetext', time.dateTime(p));
    }
    const { in: i, out: o } = this.marks;
    this.markEl.hidden = i === null && o === null;
    if (!this.markEl.hidden) {
      const s = Math.max(i ?? o, a), e = Math.min(o ?? i, b);
      this.markEl.style.left = this.pct(s);
      this.markEl.style.width = `max(2px, ${(Math.max(e - s, 0) / (b - a) * 100).toFixed(4)}%)`;
      this.markEl.classList.toggle('open', i === null || o === null);
    }
  }
  bind() {
    const b = this.body;
    b.addEventListener('pointerdown', (ev) => {
      if (ev.button !== 0) return;
      this.drag = { x: ev.clientX };
      try { b.setPointerCapture(ev.pointerId); } catch { /* synthetic */ }
      const ms = this.timeAtX(ev.clientX);
      this.setPlayhead(ms); this.onScrub(ms);
      ev.preventDefault();
    });
    b.addEventListener('pointermove', (ev) => {
      const ms = this.timeAtX(ev.clientX);
      this.hoverEl.hidden = false;
      this.hoverEl.style.left = this.pct(ms);
      this.hoverEl.textContent = time.hms(ms);
      if (this.drag) { this.setPlayhead(ms); this.onScrub(ms); }
    });
    b.addEventListener('pointerleave', () => { this.hoverEl.hidden = true; });
    b.addEventListener('pointerup', (ev) => {
      if (!this.drag) return;
      this.drag = null;
      const ms = this.timeAtX(ev.clientX);
      hooks.lastTimelineClick = ms;
      this.setPlayhead(ms); this.onSeek(ms);
    });
    b.addEventListener('pointercancel', () => { this.drag = null; });
    b.addEventListener('wheel', (ev) => {
      ev.preventDefault();
      if (ev.shiftKey || Math.abs(ev.deltaX) > Math.abs(ev.deltaY)) this.pan((ev.deltaX || ev.deltaY) > 0 ? 0.1 : -0.1);
      else this.zoom(ev.deltaY > 0 ? 1.25 : 0.8, this.timeAtX(ev.clientX));
    }, { passive: false });
    new ResizeObserver(() => this.render()).observe(b);
  }
}
