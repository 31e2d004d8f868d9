// The standalone live page (/live.html?camera=ID&stream=NAME): one LivePlayer (live.js, the
// same player the live wall uses; protocol in docs/API.md "Live") and a status line.
import { LivePlayer } from './live.js';
import { expose } from './hooks.js';
import { t } from './i18n.js';

const q = new URLSearchParams(location.search);
const camera = q.get('camera') || '', stream = q.get('stream') || 'main';
const video = document.getElementById('v'), info = document.getElementById('info');
document.getElementById('title').textContent = `${camera} / ${stream}`;

const player = new LivePlayer(video, camera, stream, (s) => {
  if (s.state === 'ended') {
    info.textContent = `Flux fermé (${s.closeReason})`;
  } else if (s.state === 'reconnecting') {
    info.textContent = `Flux interrompu (${s.closeReason}) — reconnexion…`;
  } else if (s.wallMs !== null) {
    info.textContent = `${new Date(s.wallMs).toLocaleString('fr-FR')} — latence ${(s.latencyMs / 1000).toFixed(2)} s — ${s.width}×${s.height}`;
  }
  // The H.264 fallback: say why the picture is transcoded (or why it cannot be).
  const fb = s.fallback;
  if (fb) {
    const key = fb.refused === 'busy' ? 'live.transcodeBusy' : fb.refused === 'unavailable' ? 'live.transcodeUnavailable' : 'live.transcoded';
    info.textContent += ` — ${t(key, { codec: fb.codec, why: fb.why || '' })}`;
  }
});
// State readable by tests (builds with `ui-test-hooks`): window.vigieLive.
expose('vigieLive', player.state);
