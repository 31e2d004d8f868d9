// Playback: up to four cameras played in sync on one day timeline (spans and gaps from
// `recordings`), seekable progressive MP4 windows (`video.mp4`, one span at a time so media time
// maps linearly to wall-clock time), play/pause, speeds 0.5×–16×, frame step, date-time picker,
// stills, in/out marks and the evidence-export form.

import { t } from './i18n.js';
import { get, getBackground, post, streamPath } from './api.js';
import * as time from './time.js';
import { Timeline } from './timeline.js';
import { h, can, message, session } from './ui.js';
import { exportProgress } from './admin.js';
import { hooks } from './hooks.js';
import { codecName } from './live.js';

const RATES = [0.5, 1, 2, 4, 8, 16];
const BEFORE = 5 * 60e3, AFTER = 25 * 60e3;

/// Whether this browser plays a codec (RFC 6381) in a <video> or through MSE.
function canPlay(codec) {
  const mime = `video/mp4; codecs="${codec}"`;
  return document.createElement('video').canPlayType(mime) !== '' ||
    !!(window.MediaSource && MediaSource.isTypeSupported(mime));
}

function once(el, ok, bad = 'error') {
  return new Promise((resolve, reject) => {
    const a = () => { el.removeEventListener(bad, b); resolve(); };
    const b = () => { el.removeEventListener(ok, a); reject(new Error(el.error ? el.error.message || 'media error' : 'media error')); };
    el.addEventListener(ok, a, { once: true });
    el.addEventListener(bad, b, { once: true });
  });
}

/// One camera's player: its spans for the day and the MP4 window it currently plays.
class CamPlayer {
  constructor(cam) {
    // The main (recorded) stream: a `live`-only sub-stream has no recording.
    const main = cam.streams.find((s) => s.name === cam.main_stream) || cam.streams[0];
    this.cam = cam; this.stream = main.name;
    this.spans = []; this.gaps = []; this.unavailable = []; this.win = null; this.loading = false; this.seq = 0;
    this.fps = (main.status && main.status.fps) || 25;
    // A codec this browser cannot play (H.265 in most Chromium builds): the server's H.264
    // fallback (`transcode=h264`, streamed, so a seek outside what is loaded is a new request).
    const codec = main.status && main.status.rfc6381_codec;
    this.codec = codecName(codec);
    this.transcode = !!codec && !canPlay(codec);
    this.note = this.transcode ? t('live.transcoded', { codec: this.codec }) : '';
    this.onNote = () => {};
    this.video = h('video', { muted: '', playsinline: '', preload: 'auto', 'aria-label': t('pb.video', { name: cam.name }) });
    this.video.muted = true;
  }
  async loadSpans(a, b, background = false) {
    const r = await (background ? getBackground : get)(`${streamPath(this.cam.id, this.stream)}/recordings?start=${time.iso(a)}&end=${time.iso(b)}`);
    this.spans = r.spans.map((s) => [Date.parse(s.start), Date.parse(s.end)]);
    this.gaps = r.gaps.map((s) => [Date.parse(s.start), Date.parse(s.end)]);
    // Cluster: footage held by a node that is down now (not a gap: it comes back with the node).
    this.unavailable = (r.unavailable || []).map((s) => [Date.parse(s.start), Date.parse(s.end), s.node]);
    // The camera's own events (ONVIF alarms), marked on the timeline; their absence is no error.
    this.events = [];
    if (this.cam.onvif) {
      try {
        const ev = await (background ? getBackground : get)(`/api/v1/cameras/${encodeURIComponent(this.cam.id)}/events?start=${time.iso(a)}&end=${time.iso(b)}&stream=${encodeURIComponent(this.stream)}`);
        this.events = ev.events.map((e) => ({ ms: Date.parse(e.time), type: e.type, active: e.active }));
      } catch { /* no events shown */ }
    }
  }
  /// Reads the stream's codec again; true when it turns out this browser cannot play it (the
  /// player now uses the H.264 fallback).
  async detectCodec() {
    try {
      const { cameras } = await getBackground('/api/v1/cameras');
      const c = cameras.find((x) => x.id === this.cam.id);
      const st = c && c.streams.find((x) => x.name === this.stream);
      const codec = st && st.status && st.status.rfc6381_codec;
      if (!codec || canPlay(codec)) return false;
      this.codec = codecName(codec); this.transcode = true;
      this.note = t('live.transcoded', { codec: this.codec }); this.onNote(this.note);
      return true;
    } catch { return false; }
  }
  /// Whether the (streamed, transcoded) file has the picture at `ms` already.
  loaded(ms) {
    const b = this.video.buffered, t = (ms - this.win.start) / 1000;
    for (let i = 0; i < b.length; i++) if (b.start(i) <= t && t <= b.end(i)) return true;
    return false;
  }
  /// The transcoded file failed: ask again to read why (503 busy, 501 not built, …).
  async explain(url, seq, ms) {
    const ctl = new AbortController();
    let why = this.error, code = null;
    try {
      const r = await fetch(url, { signal: ctl.signal, credentials: 'same-origin' });
      if (!r.ok) {
        const j = await r.json().catch(() => null);
        why = (j && j.error && j.error.message) || `HTTP ${r.status}`;
        code = r.status === 503 && j && j.error ? j.error.code : r.status;
      }
    } catch { /* network */ } finally { ctl.abort(); }
    // 503 busy: the server transcodes its maximum already (the next seek or play retries);
    // 503 unavailable (turned off) or 501 (no GStreamer): it cannot transcode at all.
    const key = code === 'busy' ? 'live.transcodeBusy' : (code === 'unavailable' || code === 501) ? 'live.transcodeUnavailable' : 'pb.transcodeFailed';
    this.note = t(key, { codec: this.codec, why });
    this.onNote(this.note);
    if (code === 'busy') setTimeout(() => { if (seq === this.seq && !this.win) this.seek(ms); }, 5000);
  }
  spanAt(ms) { return this.spans.find(([s, e]) => s <= ms && ms < e - 100) || null; }
  nextSpan(ms) { return this.spans.find(([s]) => s > ms) || null; }
  wall() { return this.win && !this.loading && this.video.readyState >= 1 ? this.win.start + this.video.currentTime * 1000 : null; }
  unload() {
    this.seq++; this.win = null; this.loading = false;
    this.video.pause(); this.video.removeAttribute('src'); this.video.load();
  }
  /// Shows the picture at `ms`; false when nothing is recorded there.
  async seek(ms) {
    const sp = this.spanAt(ms);
    if (!sp) { this.unload(); return false; }
    const w = this.win;
    if (w && !this.loading && ms >= w.start && ms < w.end - 200 && (!this.transcode || this.loaded(ms))) {
      this.video.currentTime = (ms - w.start) / 1000;
      return true;
    }
    const seq = ++this.seq;
    // Transcoded: the file starts where the picture is wanted (it cannot seek before what it
    // has received).
    const start = this.transcode ? ms : Math.max(sp[0], ms - BEFORE), end = Math.min(sp[1], ms + AFTER);
    this.win = { start, end };
    this.loading = true; this.error = null;
    this.url = `${streamPath(this.cam.id, this.stream)}/video.mp4?start=${time.iso(start)}&end=${time.iso(end)}` +
      (this.transcode ? '&transcode=h264' : '');
    this.video.src = this.url;
    try {
      await once(this.video, 'loadedmetadata');
      if (seq !== this.seq) return true;
      if (!this.transcode) {
        this.video.currentTime = (ms - start) / 1000;
        await once(this.video, 'seeked');
      }
    } catch (e) {
      if (seq === this.seq) {
        this.win = null; this.loading = false; this.error = String(e.message || e);
        if (this.transcode) this.explain(this.url, seq, ms);
        // "Format not supported" on the recording itself: the codec was unknown when the camera
        // list was read (stream not online yet). Ask for the stream's codec now; one this
        // browser cannot play switches to the fallback.
        else if (this.video.error && this.video.error.code === 4 && await this.detectCodec()) return this.seek(ms);
      }
      return false;
    }
    if (this.transcode && this.note !== t('live.transcoded', { codec: this.codec })) {
      this.note = t('live.transcoded', { codec: this.codec }); this.onNote(this.note);
    }
    if (seq === this.seq) this.loading = false;
    return true;
  }
}

export function playbackPage(root, ctx) {
  const all = ctx.cameras.filter((c) => c.streams.length);
  const ids = [ctx.arg, ...(ctx.query.with || '').split(',')].filter((id, i, a) => id && a.indexOf(id) === i && all.some((c) => c.id === id)).slice(0, 4);
  if (!ids.length) {
    root.append(h('div', { class: 'page' }, h('h1', {}, t('pb.title')), h('p', {}, t('pb.choose')),
      h('ul', { class: 'link-list' }, ...all.map((c) => h('li', {}, h('a', { href: `#/playback/${encodeURIComponent(c.id)}` }, `${c.name} (${c.commune_name || c.commune})`))))));
    return () => {};
  }
  const players = ids.map((id) => new CamPlayer(all.find((c) => c.id === id)));
  let pos = ctx.query.t ? (isNaN(+ctx.query.t) ? Date.parse(ctx.query.t) : +ctx.query.t) : Date.now() - 60e3;
  let playing = false, rateIdx = 1, day = [time.dayStart(pos), time.nextDay(time.dayStart(pos))];
  const marks = { in: null, out: null };
  const status = h('div', { class: 'pb-status', role: 'status', 'aria-live': 'polite' });

  // Timeline.
  const timeline = new Timeline({
    onScrub: (ms) => { showClock(ms); },
    onSeek: (ms) => seekAll(ms),
  });
  // Video panes.
  const panes = players.map((p) => {
    const clock = h('span', { class: 'tile-clock' }, '');
    const none = h('div', { class: 'pane-none', hidden: true }, t('pb.none'));
    // Why this camera's picture is transcoded by the server (or why it cannot be).
    const note = h('div', { class: 'tile-note', role: 'status', hidden: !p.note }, p.note);
    p.onNote = (text) => { note.textContent = text; note.hidden = !text; };
    const still = h('button', { class: 'tile-btn', title: t('pb.still'), 'aria-label': `${t('pb.still')} : ${p.cam.name}`, onclick: () => downloadStill(p) }, '⤓');
    const remove = players.length > 1 ? h('button', { class: 'tile-btn', title: t('pb.removeCam'), 'aria-label': `${t('pb.removeCam')} : ${p.cam.name}`,
      onclick: () => { location.hash = hashFor(ids.filter((x) => x !== p.cam.id), pos); } }, '✕') : null;
    const el = h('div', { class: 'pane', 'data-camera': p.cam.id }, p.video, note,
      h('div', { class: 'tile-top' }, h('span', { class: 'tile-name' }, p.cam.name), clock), none,
      h('div', { class: 'tile-bottom' }, h('span', {}), h('span', { class: 'tile-actions' }, still, remove)));
    return { p, el, clock, none };
  });
  const grid = h('div', { class: 'pb-grid', style: { '--n': players.length > 1 ? 2 : 1 } }, ...panes.map((x) => x.el));

  // Controls.
  const btn = (label, text, onclick, extra = {}) => h('button', { 'aria-label': label, title: label, onclick, ...extra }, text);
  const playBtn = btn(t('pb.play'), '▶', () => setPlaying(!playing), { class: 'primary play' });
  const rateSel = h('select', { 'aria-label': t('pb.speed'), onchange: () => setRate(+rateSel.value) },
    ...RATES.map((r, i) => h('option', { value: String(i), selected: i === rateIdx }, `${String(r).replace('.', ',')}×`)));
  const clockMain = h('span', { class: 'clock-main' }), clockAlt = h('span', { class: 'clock-alt' });
  const zoneBtn = btn(t('pb.zone'), '', () => { time.setUtc(!time.isUtc()); ctx.refreshZone(); }, { class: 'zone' });
  const picker = h('input', { type: 'datetime-local', step: '1', 'aria-label': t('pb.goto'), value: time.toInput(pos) });
  const pickForm = h('form', { class: 'pick', onsubmit: (ev) => { ev.preventDefault(); const ms = time.fromInput(picker.value); if (ms !== null) goTo(ms); } },
    picker, h('button', { type: 'submit' }, t('pb.go')));
  const controls = h('div', { class: 'pb-controls', role: 'toolbar', 'aria-label': t('pb.controls') },
    btn(t('pb.back10'), '−10 s', () => seekAll(cur() - 10e3)),
    btn(t('pb.prevFrame'), '▮◀', () => step(-1)),
    playBtn,
    btn(t('pb.nextFrame'), '▶▮', () => step(1)),
    btn(t('pb.fwd10'), '+10 s', () => seekAll(cur() + 10e3)),
    rateSel,
    h('div', { class: 'clock', 'aria-live': 'off' }, clockMain, clockAlt), zoneBtn,
    h('span', { class: 'spacer' }),
    btn(t('pb.still'), t('pb.stillShort'), () => downloadStill(master() || players[0])),
    pickForm);
  const addSel = h('select', { 'aria-label': t('pb.addCam') }, h('option', { value: '' }, t('pb.addCam')),
    ...all.filter((c) => !ids.includes(c.id)).map((c) => h('option', { value: c.id }, `${c.name} — ${c.commune_name || c.commune}`)));
  addSel.addEventListener('change', () => { if (addSel.value) location.hash = hashFor([...ids, addSel.value], pos); });
  const tlBar = h('div', { class: 'tl-bar' },
    btn(t('pb.prevDay'), '◀ ' + t('pb.day'), () => goTo(pos - 86400e3)),
    h('strong', { class: 'tl-day' }, ''),
    btn(t('pb.nextDay'), t('pb.day') + ' ▶', () => goTo(pos + 86400e3)),
    btn(t('pb.now'), t('pb.now'), () => goTo(Date.now() - 30e3)),
    h('span', { class: 'spacer' }),
    btn(t('tl.panLeft'), '◀', () => timeline.pan(-0.25)),
    btn(t('tl.zoomOut'), '−', () => timeline.zoom(2), { class: 'zoom-out' }),
    btn(t('tl.zoomIn'), '+', () => timeline.zoom(0.5), { class: 'zoom-in' }),
    btn(t('tl.day'), '24 h', () => timeline.setView(...day)),
    btn(t('tl.panRight'), '▶', () => timeline.pan(0.25)),
    players.length < 4 && addSel.options.length > 1 ? addSel : null);

  // Export marks and form.
  const markInfo = h('span', { class: 'marks' });
  const exportBox = h('div', { class: 'export-box' });
  const markBar = h('div', { class: 'mark-bar' },
    btn(t('pb.markIn'), t('pb.markInShort'), () => setMark('in'), { class: 'mark-in' }),
    btn(t('pb.markOut'), t('pb.markOutShort'), () => setMark('out'), { class: 'mark-out' }),
    btn(t('pb.clearMarks'), '✕', () => { marks.in = marks.out = null; updateMarks(); }),
    markInfo);

  root.append(h('div', { class: 'page playback' },
    h('div', { class: 'toolbar' }, h('h1', {}, t('pb.title')), h('span', { class: 'pb-cams' }, players.map((p) => p.cam.name).join(' · '))),
    grid, controls, tlBar, timeline.el, status,
    can('Export') ? h('details', { class: 'export-panel', open: true }, h('summary', {}, t('ex.new')), markBar, exportBox) : null));
  buildExportForm();

  const test = hooks.playback = { players, timeline, seek: (ms) => seekAll(ms), pos: () => cur(), marks,
    state: () => ({ playing, rate: RATES[rateIdx], pos: cur(), players: players.map((p) => ({ camera: p.cam.id, url: p.url || null,
      win: p.win, loading: p.loading, currentTime: p.video.currentTime, readyState: p.video.readyState, wall: p.wall(), error: p.error || null,
      transcode: p.transcode, note: p.note })) }) };

  function hashFor(list, ms) {
    const [first, ...rest] = list;
    return `#/playback/${encodeURIComponent(first)}?t=${Math.round(ms)}${rest.length ? '&with=' + rest.map(encodeURIComponent).join(',') : ''}`;
  }
  function master() { return players.find((p) => p.wall() !== null) || null; }
  function cur() { const m = master(); return m ? m.wall() : pos; }
  function showClock(ms) {
    clockMain.textContent = `${time.date(ms)} ${time.precise(ms)} ${time.offsetLabel(ms)}`;
    const utc = new Date(ms).toISOString().slice(11, 19);
    clockAlt.textContent = time.isUtc() ? '' : `UTC ${utc}`;
    zoneBtn.textContent = time.isUtc() ? 'UTC' : 'Paris';
    zoneBtn.setAttribute('aria-pressed', String(time.isUtc()));
  }
  async function loadDay(background = false) {
    tlBar.querySelector('.tl-day').textContent = time.date(day[0]);
    try {
      await Promise.all(players.map((p) => p.loadSpans(day[0], day[1], background)));
      message(status, '');
    } catch (e) { message(status, `${t('error')}: ${e.message}`); }
    timeline.setNow(Date.now());
    timeline.setRows(players.map((p) => ({ id: p.cam.id, label: p.cam.name, spans: p.spans, gaps: p.gaps, unavailable: p.unavailable, events: p.events })));
  }
  async function goTo(ms) {
    const d = time.dayStart(ms);
    if (d !== day[0]) {
      day = [d, time.nextDay(d)];
      timeline.setDay(...day);
      await loadDay();
    }
    await seekAll(ms);
  }
  async function seekAll(ms) {
    ms = Math.min(Math.max(ms, day[0]), day[1] - 1);
    pos = ms;
    timeline.setPlayhead(ms); showClock(ms); picker.value = time.toInput(ms);
    if (!players.some((p) => p.spanAt(ms))) {
      // Nothing there: the next recording, if any (gaps are skipped).
      const next = players.map((p) => p.nextSpan(ms)).filter(Boolean).sort((a, b) => a[0] - b[0])[0];
      if (next && next[0] < day[1]) { message(status, t('pb.jumped'), 'info'); ms = pos = next[0]; timeline.setPlayhead(ms); }
      else { message(status, t('pb.noneAt', { time: time.dateTime(ms) }), 'info'); players.forEach((p) => p.unload()); setPlaying(false); return; }
    } else message(status, '');
    await Promise.all(players.map((p) => p.seek(ms)));
    applyPlay();
  }
  function applyPlay() {
    for (const p of players) {
      p.video.playbackRate = RATES[rateIdx];
      if (!p.win || p.loading) continue;
      if (playing && p.video.paused) p.video.play().catch(() => {});
      if (!playing && !p.video.paused) p.video.pause();
    }
    playBtn.textContent = playing ? '❚❚' : '▶';
    playBtn.setAttribute('aria-label', t(playing ? 'pb.pause' : 'pb.play'));
    playBtn.title = playBtn.getAttribute('aria-label');
    playBtn.setAttribute('aria-pressed', String(playing));
  }
  function setPlaying(v) { playing = v; applyPlay(); }
  function setRate(i) { rateIdx = Math.min(Math.max(i, 0), RATES.length - 1); rateSel.value = String(rateIdx); applyPlay(); }
  function step(dir) {
    setPlaying(false);
    const m = master();
    seekAll(cur() + dir * 1000 / (m ? m.fps : 25));
  }
  function downloadStill(p) {
    const at = p.wall() ?? cur();
    const a = h('a', { href: `${streamPath(p.cam.id, p.stream)}/snapshot.jpg?at=${time.iso(at)}`,
      download: `${p.cam.id}_${new Date(at).toISOString().replace(/[-:]/g, '').replace(/\.\d+/, '')}.jpg` });
    document.body.append(a); a.click(); a.remove();
  }
  function setMark(which) {
    marks[which] = cur();
    if (marks.in !== null && marks.out !== null && marks.out < marks.in) [marks.in, marks.out] = [marks.out, marks.in];
    updateMarks();
  }
  function updateMarks() {
    timeline.setMarks(marks);
    const f = (ms) => (ms === null ? '—' : `${time.date(ms)} ${time.precise(ms)}`);
    markInfo.textContent = `${t('pb.in')} ${f(marks.in)} · ${t('pb.out')} ${f(marks.out)}` +
      (marks.in !== null && marks.out !== null ? ` (${time.duration((marks.out - marks.in) / 1000)})` : '');
    if (exportBox.updateRange) exportBox.updateRange();
  }
  function buildExportForm() {
    if (!can('Export')) return;
    // Cameras played in sync: one checkbox each (all ticked); two or more make one
    // multi-camera package (one master per camera, one signed manifest).
    const camSel = players.length > 1
      ? h('div', { class: 'export-cams', role: 'group', 'aria-label': t('ex.cameras') },
        ...players.map((p) => h('label', { class: 'check' },
          h('input', { type: 'checkbox', name: 'cameras', value: p.cam.id, checked: true }), ` ${p.cam.name}`)))
      : h('select', { name: 'camera', 'aria-label': t('ex.camera') }, ...players.map((p) => h('option', { value: p.cam.id }, p.cam.name)));
    const chosen = () => (players.length > 1
      ? players.filter((p) => camSel.querySelector(`input[value="${CSS.escape(p.cam.id)}"]`).checked)
      : [players.find((x) => x.cam.id === camSel.value) || players[0]]);
    const field = (name, label, el) => h('label', { class: 'field' }, h('span', {}, label), el);
    const reason = h('textarea', { name: 'reason', rows: '2', required: true, maxlength: '500' });
    const procedure = h('input', { name: 'procedure', required: true, maxlength: '500', placeholder: t('ex.procedureHint') });
    const requester = h('input', { name: 'requester', required: true, maxlength: '500', placeholder: t('ex.requesterHint') });
    const out = h('div', { class: 'export-result' });
    const submit = h('button', { type: 'submit', class: 'primary' }, t('ex.create'));
    const form = h('form', { class: 'export-form', onsubmit: async (ev) => {
      ev.preventDefault();
      if (marks.in === null || marks.out === null || marks.out <= marks.in) { message(out, t('ex.needMarks')); return; }
      const list = chosen();
      if (!list.length) { message(out, t('ex.needCamera')); return; }
      const what = list.length > 1
        ? { streams: list.map((p) => ({ camera: p.cam.id, stream: p.stream })) }
        : { camera: list[0].cam.id, stream: list[0].stream };
      submit.disabled = true;
      try {
        const job = await post('/api/v1/exports', { ...what, start: time.iso(marks.in), end: time.iso(marks.out),
          reason: reason.value, procedure: procedure.value, requester: requester.value });
        out.replaceChildren(exportProgress(job));
      } catch (e) { message(out, `${t('error')} ${e.status || ''}: ${e.message}`); } finally { submit.disabled = false; }
    } },
    players.length > 1 ? h('fieldset', { class: 'field' }, h('legend', {}, t('ex.cameras')), camSel) : field('camera', t('ex.camera'), camSel),
    field('procedure', t('ex.procedure'), procedure),
    field('requester', t('ex.requester'), requester),
    field('reason', t('ex.reason'), reason),
    h('div', { class: 'form-actions' }, submit, h('a', { href: '#/exports' }, t('ex.list'))));
    exportBox.append(form, out);
  }

  // Playback loop: follow the master, keep the others within 0.3 s, move the playhead.
  const loop = setInterval(() => {
    const m = master();
    if (m) pos = m.wall();
    for (const x of panes) {
      const p = x.p;
      const w = p.wall();
      x.clock.textContent = w !== null ? time.precise(w) : '';
      const has = !!p.spanAt(pos) || (p.win && pos >= p.win.start && pos < p.win.end);
      x.none.hidden = has || p.loading;
      if (p === m || !m) continue;
      if (!has) { if (p.win) p.unload(); continue; }
      if (p.loading) continue;
      if (!p.win || pos < p.win.start || pos >= p.win.end - 200) { p.seek(pos).then(applyPlay); continue; }
      if (Math.abs(w - pos) > 300 * Math.max(1, RATES[rateIdx] / 2)) p.video.currentTime = (pos - p.win.start) / 1000;
      if (playing && p.video.paused) p.video.play().catch(() => {});
      if (!playing && !p.video.paused) p.video.pause();
    }
    if (!timeline.drag) { timeline.setPlayhead(pos); showClock(pos); }
    // The master reached the end of its window: continue (same span grown, or the next span).
    if (m && playing && !m.loading && (m.video.ended || m.win.end - pos < 150)) continueFrom(m.win.end);
  }, 200);
  let continuing = false;
  async function continueFrom(ms) {
    if (continuing) return;
    continuing = true;
    try {
      if (day[1] > Date.now() - 3600e3) await loadDay();
      const p = players.find((x) => x.spanAt(ms));
      if (p) await seekAll(ms);
      else {
        const next = players.map((x) => x.nextSpan(ms)).filter(Boolean).sort((a, b) => a[0] - b[0])[0];
        if (next) await seekAll(next[0]); else { setPlaying(false); message(status, t('pb.end'), 'info'); }
      }
    } finally { continuing = false; }
  }
  const refresh = setInterval(() => { if (day[1] > Date.now()) loadDay(true); }, 10000);

  const onKey = (ev) => {
    if (ev.target.closest && ev.target.closest('input, textarea, select, [contenteditable]')) return;
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const k = ev.key;
    let done = true;
    if (k === ' ' || k === 'k') setPlaying(!playing);
    else if (k === 'ArrowLeft') ev.shiftKey ? seekAll(cur() - 10e3) : step(-1);
    else if (k === 'ArrowRight') ev.shiftKey ? seekAll(cur() + 10e3) : step(1);
    else if (k === 'ArrowUp') seekAll(cur() + 60e3);
    else if (k === 'ArrowDown') seekAll(cur() - 60e3);
    else if (k === '+' || k === '=') setRate(rateIdx + 1);
    else if (k === '-' || k === '_') setRate(rateIdx - 1);
    else if (k === 'i' || k === 'I') setMark('in');
    else if (k === 'o' || k === 'O') setMark('out');
    else if (k === 's' || k === 'S') downloadStill(master() || players[0]);
    else if (k === 'u' || k === 'U') { time.setUtc(!time.isUtc()); ctx.refreshZone(); }
    else if (k === 'z') timeline.zoom(0.5);
    else if (k === 'Z' || k === 'x') timeline.zoom(2);
    else if (k === 'Home') timeline.setView(...day);
    else done = false;
    if (done) ev.preventDefault();
  };
  window.addEventListener('keydown', onKey);

  timeline.setDay(...day);
  updateMarks(); showClock(pos);
  loadDay().then(() => seekAll(pos));
  void session; void test;
  return () => { clearInterval(loop); clearInterval(refresh); window.removeEventListener('keydown', onKey); players.forEach((p) => p.unload()); };
}
