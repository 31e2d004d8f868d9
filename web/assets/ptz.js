// PTZ controls of an enlarged live tile (ONVIF cameras, users with the Ptz right): hold a
// direction button or an arrow key to move, release to stop; + / − zoom; presets (go to,
// store). One operator at a time: the answer says how long the camera stays ours, a refusal
// names who holds it. The server journals every command.

import { t } from './i18n.js';
import { api } from './api.js';
import { h, can } from './ui.js';

const SPEED = 0.5;
const KEYS = {
  ArrowLeft: { pan: -SPEED }, ArrowRight: { pan: SPEED }, ArrowUp: { tilt: SPEED }, ArrowDown: { tilt: -SPEED },
  '+': { zoom: SPEED }, '=': { zoom: SPEED }, '-': { zoom: -SPEED },
};

/// Whether the controls are offered for `cam` to this user.
export const ptzAvailable = (cam) => !!cam.onvif && can('Ptz');

/// The control bar; `bar.keydown(ev)` / `bar.keyup(ev)` steer from the keyboard (true when
/// the key was a PTZ key); `bar.stop()` ends a move in progress (tile closed).
export function ptzControls(cam) {
  const base = `/api/v1/cameras/${encodeURIComponent(cam.id)}/ptz`;
  const status = h('span', { class: 'ptz-status', role: 'status', 'aria-live': 'polite' }, '');
  let moving = false;
  const show = (msg, bad) => { status.textContent = msg; status.classList.toggle('bad', !!bad); };
  async function send(method, path, body) {
    try {
      const r = await api(method, base + path, body);
      if (r && r.lock) show(t('ptz.yours', { s: r.lock.expires_in_s }));
      return r;
    } catch (e) { show(e.message, true); return null; }
  }
  const start = (v) => { moving = true; send('POST', '/move', { pan: 0, tilt: 0, zoom: 0, ...v }); };
  const stop = () => { if (!moving) return; moving = false; send('POST', '/stop'); };
  const hold = (label, symbol, v) => {
    const b = h('button', { class: 'ptz-btn', type: 'button', 'data-ptz': label, title: t('ptz.' + label), 'aria-label': t('ptz.' + label) }, symbol);
    b.addEventListener('pointerdown', (ev) => { ev.preventDefault(); ev.stopPropagation(); b.setPointerCapture?.(ev.pointerId); start(v); });
    for (const k of ['pointerup', 'pointercancel', 'lostpointercapture']) b.addEventListener(k, (ev) => { ev.stopPropagation(); stop(); });
    b.addEventListener('click', (ev) => ev.stopPropagation());
    return b;
  };
  const presets = h('select', { class: 'ptz-presets', 'aria-label': t('ptz.presets'), onclick: (ev) => ev.stopPropagation() });
  const name = h('input', { class: 'ptz-name', type: 'text', maxlength: '64', placeholder: t('ptz.presetName'), 'aria-label': t('ptz.presetName'),
    onclick: (ev) => ev.stopPropagation(), onkeydown: (ev) => ev.stopPropagation() });
  async function loadPresets() {
    try {
      const r = await api('GET', base + '/presets');
      presets.replaceChildren(h('option', { value: '' }, t('ptz.presets')),
        ...r.presets.map((p) => h('option', { value: p.token }, p.name)));
    } catch (e) { show(e.message, true); }
  }
  const click = (label, text, f) => h('button', { class: 'ptz-btn', type: 'button', 'data-ptz': label, title: t('ptz.' + label),
    onclick: (ev) => { ev.stopPropagation(); f(); } }, text);
  const bar = h('div', { class: 'ptz', role: 'group', 'aria-label': t('ptz.label'), onclick: (ev) => ev.stopPropagation() },
    hold('left', '◀', { pan: -SPEED }), hold('up', '▲', { tilt: SPEED }), hold('down', '▼', { tilt: -SPEED }),
    hold('right', '▶', { pan: SPEED }), hold('zoomIn', '+', { zoom: SPEED }), hold('zoomOut', '−', { zoom: -SPEED }),
    click('stop', '■', () => { moving = true; stop(); }),
    presets, click('goto', t('ptz.gotoShort'), () => presets.value && send('POST', '/presets/' + encodeURIComponent(presets.value))),
    name, click('save', t('ptz.saveShort'), async () => {
      const n = name.value.trim();
      if (n && await send('PUT', '/presets/' + encodeURIComponent(n))) { name.value = ''; loadPresets(); }
    }),
    status);
  bar.keydown = (ev) => {
    const v = KEYS[ev.key];
    if (!v) return false;
    ev.preventDefault();
    if (!ev.repeat && !moving) start(v);
    return true;
  };
  bar.keyup = (ev) => { if (!KEYS[ev.key]) return false; stop(); return true; };
  bar.stop = stop;
  loadPresets();
  return bar;
}
