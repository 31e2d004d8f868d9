// Live view over WebSocket + Media Source Extensions. Protocol: docs/API.md, section "Live".
const q = new URLSearchParams(location.search);
const camera = q.get('camera') || '', stream = q.get('stream') || 'main';
const video = document.getElementById('v'), info = document.getElementById('info');
document.getElementById('title').textContent = `${camera} / ${stream}`;
// State readable by tests: window.vigieLive.
const live = window.vigieLive = { state: 'connecting', inits: 0, segments: 0, drops: 0,
  latencyMs: null, wallMs: null, error: null, closeReason: null };
let ms, sb, queue = [], expect = null, mapping = [], mime = null;

function pump() {
  if (!sb || sb.updating || queue.length === 0) return;
  try { sb.appendBuffer(queue.shift()); } catch (e) { live.error = String(e); }
}
// Wall-clock time of the picture at media time t (seconds), from the "media" announcements.
function wallAt(t) {
  for (let i = mapping.length - 1; i >= 0; i--) {
    if (mapping[i].t <= t) return mapping[i].wall + (t - mapping[i].t) * 1000;
  }
  return null;
}
function newSourceBuffer() {
  if (sb && ms.readyState === 'open') {
    if (sb.changeType) sb.changeType(mime);
    return;
  }
  sb = ms.addSourceBuffer(mime);
  sb.mode = 'segments';
  sb.addEventListener('updateend', () => {
    // Keep about 30 s behind the playhead.
    const b = sb.buffered;
    if (!sb.updating && b.length && video.currentTime - b.start(0) > 40) {
      sb.remove(b.start(0), video.currentTime - 30);
      return;
    }
    pump();
  });
}
function connect() {
  ms = new MediaSource(); sb = null; queue = []; mapping = [];
  video.src = URL.createObjectURL(ms);
  ms.addEventListener('sourceopen', () => {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(`${proto}//${location.host}/api/v1/cameras/${encodeURIComponent(camera)}/streams/${encodeURIComponent(stream)}/live`);
    ws.binaryType = 'arraybuffer';
    ws.onopen = () => { live.state = 'open'; };
    ws.onmessage = (ev) => {
      if (typeof ev.data === 'string') {
        const m = JSON.parse(ev.data);
        if (m.type === 'init') { mime = m.mime; live.inits++; live.width = m.width; live.height = m.height; expect = 'init'; }
        else if (m.type === 'media') { mapping.push({ t: m.dts_90k / 90000, wall: m.wall_ms }); if (mapping.length > 2000) mapping.splice(0, 1000); expect = 'media'; }
        else if (m.type === 'drop') { live.drops++; }
        return;
      }
      if (expect === 'init') newSourceBuffer(); else live.segments++;
      queue.push(ev.data); pump();
    };
    ws.onclose = (ev) => {
      live.state = 'closed'; live.closeReason = `${ev.code} ${ev.reason}`;
      // 4401/4403: the viewer's rights ended; a retry would only be refused.
      if (ev.code === 4401 || ev.code === 4403) { info.textContent = `Flux fermé (${ev.code} ${ev.reason})`; return; }
      info.textContent = `Flux interrompu (${ev.code} ${ev.reason}) — reconnexion…`;
      setTimeout(connect, 2000);
    };
  }, { once: true });
}
// Stay near the live edge: jump when more than 1 s behind what is buffered.
setInterval(() => {
  const b = video.buffered;
  if (b.length) {
    const end = b.end(b.length - 1);
    if (end - video.currentTime > 1.0 || video.currentTime < b.start(b.length - 1)) video.currentTime = Math.max(b.start(b.length - 1), end - 0.15);
    if (video.paused) video.play().catch(() => {});
  }
  const wall = wallAt(video.currentTime);
  if (wall !== null) {
    live.wallMs = wall; live.latencyMs = Date.now() - wall;
    info.textContent = `${new Date(wall).toLocaleString('fr-FR')} — latence ${(live.latencyMs / 1000).toFixed(2)} s — ${live.width}×${live.height}`;
  }
  live.currentTime = video.currentTime;
}, 200);
connect();
