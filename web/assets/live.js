// Live wall: a grid of tiles (1, 2×2, 3×3, 4×4), each playing one camera's live WebSocket
// (fMP4 over MSE, protocol in docs/API.md "Live"), with automatic reconnection, the camera name
// and the wall-clock time of the picture on each tile; click a tile to enlarge it. Tiles play the
// camera's `live` stream, the enlarged tile its main (recorded) stream.

import { t } from './i18n.js';
import { streamPath } from './api.js';
import * as time from './time.js';
import { h, cameraGroups, statusDot, userKey } from './ui.js';
import { hooks } from './hooks.js';
import { ptzAvailable, ptzControls } from './ptz.js';

/// Whether this browser's Media Source Extensions decode a codec (RFC 6381 string).
export function mseSupports(codec) {
  return !!(window.MediaSource && MediaSource.isTypeSupported(`video/mp4; codecs="${codec}"`));
}

/// A codec's name for people: H.265 / H.264, else the RFC 6381 string.
export function codecName(codec) {
  if (/^(hvc1|hev1)/i.test(codec || '')) return 'H.265';
  if (/^(avc1|avc3)/i.test(codec || '')) return 'H.264';
  return codec || '?';
}

/// One live stream played into a <video> element. Reconnects by itself until stop().
/// When the browser cannot decode the stream's codec (`codec`, from the camera's status, or the
/// `init` message), it switches to the server's H.264 fallback (`?transcode=h264`) and says so
/// in `state.fallback` ({codec, refused: null | 'busy' | 'unavailable', why}).
export class LivePlayer {
  constructor(video, camera, stream, onState, codec) {
    Object.assign(this, { video, camera, stream, onState: onState || (() => {}) });
    this.state = { state: 'connecting', segments: 0, inits: 0, drops: 0, reconnects: 0, wallMs: null,
      latencyMs: null, error: null, closeReason: null, width: null, height: null, fallback: null, codec: null,
      recorder: null, recorders: null, following: null };
    // Known unsupported before connecting: straight to the fallback.
    if (codec && !mseSupports(codec)) this.state.fallback = { codec: codecName(codec), refused: null, why: null };
    this.stopped = false;
    this.backoff = 1000;
    this.timer = setInterval(() => this.tick(), 250);
    this.connect();
  }
  set(s) { this.state.state = s; this.onState(this.state); }
  connect() {
    if (this.stopped) return;
    this.cleanup();
    const ms = this.ms = new MediaSource();
    this.sb = null; this.queue = []; this.mapping = []; this.expect = null; this.lastMessage = Date.now();
    this.url = URL.createObjectURL(ms);
    this.video.src = this.url;
    ms.addEventListener('sourceopen', () => {
      if (this.stopped || ms !== this.ms) return;
      const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
      const q = this.state.fallback ? '?transcode=h264' : '';
      const ws = this.ws = new WebSocket(`${proto}//${location.host}${streamPath(this.camera, this.stream)}/live${q}`);
      ws.binaryType = 'arraybuffer';
      ws.onopen = () => { this.backoff = 1000; this.set('open'); };
      ws.onmessage = (ev) => { if (ws === this.ws) this.message(ev); };
      ws.onclose = (ev) => {
        if (ws !== this.ws) return;
        this.state.closeReason = `${ev.code} ${ev.reason}`;
        // The server ended the view because its rights ended (4401: credentials no longer
        // valid, 4403: no longer allowed): a retry would only be refused.
        if (ev.code === 4401 || ev.code === 4403) { this.ws = null; this.set('ended'); return; }
        // The fallback refused: 4503 the server transcodes its maximum already (retry later),
        // 4501 it cannot transcode at all (no retry).
        const fb = this.state.fallback;
        if (fb && (ev.code === 4503 || ev.code === 4501)) {
          fb.refused = ev.code === 4501 ? 'unavailable' : (/turned off/.test(ev.reason) ? 'unavailable' : 'busy');
          fb.why = ev.reason;
          if (fb.refused === 'unavailable') { this.ws = null; this.set('ended'); return; }
          this.backoff = Math.max(this.backoff, 5000);
        }
        this.retry();
      };
    }, { once: true });
  }
  retry() {
    if (this.stopped) return;
    this.ws = null;
    this.state.reconnects++;
    this.set('reconnecting');
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), this.backoff);
    this.backoff = Math.min(this.backoff * 2, 10000);
  }
  message(ev) {
    this.lastMessage = Date.now();
    if (typeof ev.data === 'string') {
      const m = JSON.parse(ev.data);
      if (m.type === 'init') {
        this.state.codec = m.codec;
        // The browser cannot decode this stream: ask the server for H.264 instead of failing
        // (and reconnecting) forever.
        if (!this.state.fallback && !mseSupports(m.codec)) {
          this.state.fallback = { codec: codecName(m.codec), refused: null, why: null };
          this.onState(this.state);
          this.connect();
          return;
        }
        if (this.state.fallback) this.state.fallback.refused = null;
        this.mime = m.mime; this.state.inits++; this.state.width = m.width; this.state.height = m.height; this.expect = 'init';
      } else if (m.type === 'media') {
        this.mapping.push({ t: m.dts_90k / 90000, wall: m.wall_ms });
        if (this.mapping.length > 2000) this.mapping.splice(0, 1000);
        this.expect = 'media';
      } else if (m.type === 'drop') this.state.drops++;
      else if (m.type === 'recorder') {
        // Cluster: the node sending the camera's frames; while the camera moves to another
        // recorder (failover, drain) the server keeps this socket and says so once a second,
        // then resumes on the same decode timeline.
        this.state.recorder = m.node;
        this.state.following = m.state === 'following' ? (m.reason || '') : null;
        if (m.state === 'streaming') this.state.recorders = [...(this.state.recorders || []), m.node];
        this.onState(this.state);
      }
      return;
    }
    if (this.expect === 'init') {
      try { this.newSourceBuffer(); } catch (e) { this.state.error = String(e); this.ws && this.ws.close(); return; }
    } else this.state.segments++;
    this.queue.push(ev.data);
    this.pump();
  }
  newSourceBuffer() {
    if (this.sb && this.ms.readyState === 'open') { if (this.sb.changeType) this.sb.changeType(this.mime); return; }
    const sb = this.sb = this.ms.addSourceBuffer(this.mime);
    sb.mode = 'segments';
    sb.addEventListener('updateend', () => {
      const b = sb.buffered;
      // Keep about 30 s behind the playhead.
      if (!sb.updating && b.length && this.video.currentTime - b.start(0) > 40) {
        try { sb.remove(b.start(0), this.video.currentTime - 30); } catch { /* closed */ }
        return;
      }
      this.pump();
    });
  }
  pump() {
    const sb = this.sb;
    if (!sb || sb.updating || this.queue.length === 0 || this.ms.readyState !== 'open') return;
    try { sb.appendBuffer(this.queue.shift()); } catch (e) { this.state.error = String(e); this.ws && this.ws.close(); }
  }
  wallAt(t) {
    const m = this.mapping;
    for (let i = m.length - 1; i >= 0; i--) if (m[i].t <= t) return m[i].wall + (t - m[i].t) * 1000;
    return null;
  }
  tick() {
    const v = this.video, b = v.buffered;
    if (b.length) {
      const end = b.end(b.length - 1), start = b.start(b.length - 1);
      // Stay near the live edge.
      if (end - v.currentTime > 1.0 || v.currentTime < start) v.currentTime = Math.max(start, end - 0.15);
      if (v.paused) v.play().catch(() => {});
    }
    const wall = this.wallAt(v.currentTime);
    if (wall !== null) {
      this.state.wallMs = wall; this.state.latencyMs = Date.now() - wall;
      if (this.state.state === 'open' && v.readyState >= 2) this.set('playing');
    }
    this.state.currentTime = v.currentTime;
    // A silent socket for 10 s: reconnect.
    if (this.ws && this.ws.readyState === WebSocket.OPEN && Date.now() - this.lastMessage > 10000) {
      this.state.closeReason = 'no data for 10 s';
      const ws = this.ws; this.ws = null; ws.close(); this.retry();
    }
    this.onState(this.state);
  }
  cleanup() {
    if (this.ws) { const ws = this.ws; this.ws = null; ws.onclose = null; try { ws.close(); } catch { /* */ } }
    if (this.url) { URL.revokeObjectURL(this.url); this.url = null; }
  }
  stop() {
    this.stopped = true;
    clearInterval(this.timer); clearTimeout(this.retryTimer);
    this.cleanup();
    this.video.removeAttribute('src'); this.video.load();
  }
}

const LAYOUTS = [1, 2, 3, 4];

export function livePage(root, ctx) {
  const key = userKey('wall');
  const saved = JSON.parse(localStorage.getItem(key) || '{}');
  const cams = ctx.cameras.filter((c) => c.streams.length);
  const known = new Set(cams.map((c) => c.id));
  let n = LAYOUTS.includes(saved.n) ? saved.n : (cams.length > 4 ? 3 : cams.length > 1 ? 2 : 1);
  if (ctx.query.layout && LAYOUTS.includes(+ctx.query.layout)) n = +ctx.query.layout;
  let slots = Array.isArray(saved.slots) ? saved.slots.filter((s) => s === null || known.has(s)) : [];
  if (ctx.query.cams) slots = ctx.query.cams.split(',').filter((c) => known.has(c));
  if (!slots.some(Boolean)) slots = cams.map((c) => c.id);
  let enlarged = null;
  const players = new Map(); // slot index → {player, tile}
  const test = (hooks.live = { tiles: [] });

  const grid = h('div', { class: 'wall', role: 'region', 'aria-label': t('live.wall') });
  const layoutBtns = LAYOUTS.map((k) => h('button', { class: 'seg', 'aria-pressed': String(k === n),
    'aria-label': t('live.layout', { n: k * k }), title: t('live.layout', { n: k * k }),
    onclick: () => { n = k; enlarged = null; save(); render(); } }, k === 1 ? '1' : `${k}×${k}`));
  const side = h('aside', { class: 'side', 'aria-label': t('cameras.title') });
  const page = h('div', { class: 'live-page' }, side,
    h('section', { class: 'live-main' },
      h('div', { class: 'toolbar' }, h('h1', {}, t('live.title')),
        h('div', { class: 'segs', role: 'group', 'aria-label': t('live.layouts') }, ...layoutBtns),
        h('span', { class: 'hint' }, t('live.hint'))),
      grid));
  root.append(page);

  function save() { localStorage.setItem(key, JSON.stringify({ n, slots })); }
  function stopAll() { for (const { player } of players.values()) player.stop(); players.clear(); }

  function renderSide() {
    side.replaceChildren(h('h2', {}, t('cameras.title')));
    for (const [commune, list] of cameraGroups(cams)) {
      side.append(h('h3', {}, commune));
      const ul = h('ul', {});
      for (const c of list) {
        const st = (c.streams[0] || {}).status || {};
        ul.append(h('li', {}, h('button', { class: 'cam-pick', draggable: 'true', 'data-camera': c.id,
          title: t('live.pick'), 'aria-label': `${t('live.pick')} : ${c.name}`,
          ondragstart: (ev) => ev.dataTransfer.setData('text/vigie-camera', c.id),
          onclick: () => place(c.id) }, statusDot(st.online), c.name)));
      }
      side.append(ul);
    }
  }
  function place(cam, at) {
    const count = n * n;
    let i = at ?? slots.slice(0, count).findIndex((s) => !s);
    if (i < 0 || i === undefined) i = slots.slice(0, count).indexOf(cam) >= 0 ? slots.indexOf(cam) : count - 1;
    while (slots.length <= i) slots.push(null);
    const prev = slots.indexOf(cam);
    if (prev >= 0 && prev !== i) slots[prev] = null;
    slots[i] = cam; enlarged = null; save(); render();
  }

  // A tile of the wall plays the camera's live stream (its sub-stream when it has one: a 4×4
  // wall of main streams is too much for one browser); the enlarged tile plays the main one.
  function streamFor(cam, i) {
    const first = cam.streams[0].name;
    return enlarged === i ? (cam.main_stream || first) : (cam.live_stream || first);
  }
  function render() {
    layoutBtns.forEach((b, k) => b.setAttribute('aria-pressed', String(LAYOUTS[k] === n)));
    const count = n * n;
    // Keep the players of tiles that stay on the same stream; stop the others.
    for (const [i, p] of players) {
      const cam = cams.find((c) => c.id === slots[i]);
      if (i >= count || slots[i] !== p.camera || (enlarged !== null && enlarged !== i) || !cam || streamFor(cam, i) !== p.stream) {
        p.player.stop(); players.delete(i);
      }
    }
    grid.replaceChildren();
    grid.style.setProperty('--n', enlarged !== null ? 1 : n);
    test.tiles = [];
    for (let i = 0; i < count; i++) {
      if (enlarged !== null && enlarged !== i) continue;
      const camId = slots[i] || null;
      const cam = cams.find((c) => c.id === camId);
      const tile = h('div', { class: 'tile' + (cam ? '' : ' empty'), 'data-slot': String(i), tabindex: '0',
        role: 'button', 'aria-label': cam ? t(enlarged === i ? 'live.shrink' : 'live.enlarge', { name: cam.name }) : t('live.empty') });
      tile.addEventListener('dragover', (ev) => { ev.preventDefault(); tile.classList.add('drop'); });
      tile.addEventListener('dragleave', () => tile.classList.remove('drop'));
      tile.addEventListener('drop', (ev) => { ev.preventDefault(); const id = ev.dataTransfer.getData('text/vigie-camera'); if (id) place(id, i); });
      if (!cam) { tile.append(h('div', { class: 'tile-empty' }, t('live.empty'))); grid.append(tile); continue; }
      const stream = streamFor(cam, i);
      const video = h('video', { muted: '', autoplay: '', playsinline: '', 'aria-label': t('live.video', { name: cam.name }) });
      video.muted = true;
      const clock = h('span', { class: 'tile-clock', 'aria-live': 'off' }, '--:--:--');
      const badge = h('span', { class: 'tile-state' }, t('live.connecting'));
      // Why the picture is transcoded by the server (or why it cannot be).
      const note = h('div', { class: 'tile-note', role: 'status', hidden: true });
      const close = h('button', { class: 'tile-btn', 'aria-label': t('live.remove', { name: cam.name }), title: t('live.remove', { name: cam.name }),
        onclick: (ev) => { ev.stopPropagation(); slots[i] = null; enlarged = null; save(); render(); } }, '✕');
      const replay = h('a', { class: 'tile-btn', href: `#/playback/${encodeURIComponent(cam.id)}`, title: t('nav.playback'),
        'aria-label': `${t('nav.playback')} : ${cam.name}`, onclick: (ev) => ev.stopPropagation() }, '⟲');
      tile.append(video, note, h('div', { class: 'tile-top' }, h('span', { class: 'tile-name' }, cam.name), clock),
        h('div', { class: 'tile-bottom' }, badge, h('span', { class: 'tile-actions' }, replay, close)));
      const toggle = () => { enlarged = enlarged === i ? null : i; render(); };
      tile.addEventListener('click', toggle);
      // PTZ on the tile shown alone (enlarged, or a one-tile wall).
      const ptz = (enlarged === i || count === 1) && ptzAvailable(cam) ? ptzControls(cam) : null;
      if (ptz) { tile.append(ptz); tile.addEventListener('keyup', (ev) => ptz.keyup(ev)); }
      tile.addEventListener('keydown', (ev) => {
        if (ptz && ptz.keydown(ev)) return;
        if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); toggle(); }
      });
      let entry = players.get(i);
      const onState = (s) => {
        clock.textContent = s.wallMs ? time.hms(s.wallMs) : '--:--:--';
        badge.textContent = s.following !== null && s.following !== undefined ? t('live.following') :
          s.state === 'playing' ? (s.width ? `${s.width}×${s.height}` : '') :
          s.state === 'ended' ? (s.closeReason || '') :
          t('live.' + (s.state === 'reconnecting' ? 'reconnecting' : 'connecting'));
        tile.classList.toggle('stalled', s.state === 'reconnecting' || s.state === 'ended' || (s.following !== null && s.following !== undefined));
        const fb = s.fallback;
        note.hidden = !fb;
        if (fb) {
          note.textContent = t(fb.refused === 'busy' ? 'live.transcodeBusy' : fb.refused === 'unavailable' ? 'live.transcodeUnavailable' : 'live.transcoded',
            { codec: fb.codec, why: fb.why || '' });
          if (fb.refused === 'busy' && s.state === 'reconnecting') badge.textContent = t('live.transcodeRetry');
        }
      };
      if (entry) {
        // Move the existing video element into the new tile.
        tile.replaceChild(entry.player.video, video);
        entry.player.onState = onState;
      } else {
        const st = (cam.streams.find((x) => x.name === stream) || {}).status || {};
        entry = { camera: cam.id, stream, player: new LivePlayer(video, cam.id, stream, onState, st.rfc6381_codec) };
        players.set(i, entry);
      }
      test.tiles.push({ slot: i, camera: cam.id, stream: entry.stream, enlarged: enlarged === i, state: entry.player.state, video: entry.player.video, ptz: !!ptz, note });
      grid.append(tile);
    }
  }
  const onKey = (ev) => { if (ev.key === 'Escape' && enlarged !== null) { enlarged = null; render(); } };
  window.addEventListener('keydown', onKey);
  renderSide();
  render();
  return () => { window.removeEventListener('keydown', onKey); stopAll(); };
}
