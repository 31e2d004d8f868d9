// Pages: cameras (status by commune), exports, legal holds, access journal, users.

import { t, lang } from './i18n.js';
import { get, getBackground, post, patch, del } from './api.js';
import * as time from './time.js';
import { h, can, cameraGroups, statusDot, message, table, fmtBytes, session } from './ui.js';

const fmtTime = (s) => (s ? time.dateTime(Date.parse(s)) : '');
const fmtRange = (a, b) => (a ? `${time.date(Date.parse(a))} ${time.precise(Date.parse(a))} → ${time.precise(Date.parse(b))}` : '');
const code = (s) => h('code', { class: 'hash', title: s || '' }, s || '');

function relative(ms) {
  if (!ms) return t('cam.never');
  const s = Math.max(0, (Date.now() - ms) / 1000);
  return s < 60 ? t('ago.s', { n: Math.round(s) }) : s < 3600 ? t('ago.m', { n: Math.round(s / 60) }) : time.dateTime(ms);
}

// ---- Cameras ---------------------------------------------------------------------------------

export function camerasPage(root, ctx) {
  const body = h('div', {});
  const status = h('div', {});
  root.append(h('div', { class: 'page' }, h('div', { class: 'toolbar' }, h('h1', {}, t('cameras.title')),
    h('span', { class: 'hint' }, t('cameras.hint'))), status, body));
  async function refresh(background = false) {
    try {
      const { cameras } = await (background ? getBackground : get)('/api/v1/cameras');
      session.cameras = cameras;
      message(status, '');
      const groups = cameraGroups(cameras);
      if (!groups.length) { body.replaceChildren(h('p', { class: 'empty' }, t('cameras.none'))); return; }
      body.replaceChildren(...groups.map(([commune, list]) => {
        const online = list.filter((c) => c.streams.some((s) => s.status && s.status.online)).length;
        return h('section', { class: 'commune', 'data-commune': list[0].commune },
          h('h2', {}, commune, h('small', {}, ` — ${t('cameras.onlineCount', { n: online, total: list.length })}`)),
          h('div', { class: 'cards' }, ...list.map(card)));
      }));
    } catch (e) { message(status, `${t('error')}: ${e.message}`); }
  }
  function card(c) {
    const rows = c.streams.map((s) => {
      const st = s.status || {}, comp = s.compliance || {};
      return h('div', { class: 'stream' },
        h('div', { class: 'stream-head' }, statusDot(st.online), h('strong', {}, s.name), ' ',
          h('span', { class: st.online ? 'ok' : 'bad' }, t(st.online ? 'status.online' : 'status.offline'))),
        h('dl', {},
          h('dt', {}, t('cam.resolution')), h('dd', {}, st.width ? `${st.width}×${st.height}` : '—'),
          h('dt', {}, t('cam.fps')), h('dd', {}, st.online ? Number(st.fps || 0).toFixed(1) : '—'),
          h('dt', {}, t('cam.codec')), h('dd', {}, st.codec || '—'),
          h('dt', {}, t('cam.lastFrame')), h('dd', { title: st.last_frame || '' }, relative(st.last_frame ? Date.parse(st.last_frame) : null))),
        comp.alert ? h('div', { class: 'alert', role: 'alert' }, '⚠ ', t('cam.belowFloor'), comp.reason ? ` : ${comp.reason}` : '') : null,
        !st.online && st.last_error ? h('div', { class: 'muted small' }, st.last_error) : null);
    });
    return h('article', { class: 'card', 'data-camera': c.id },
      h('header', {}, h('h3', {}, c.name), h('span', { class: 'muted small' }, `${c.id} · ${t('class.' + c.class)}`)),
      recorderLine(c),
      ...rows,
      masksLine(c.masks),
      h('footer', {},
        can('Live') ? h('a', { class: 'button', href: `#/live?cams=${encodeURIComponent(c.id)}&layout=1` }, t('nav.live')) : null,
        can('Playback') ? h('a', { class: 'button', href: `#/playback/${encodeURIComponent(c.id)}` }, t('nav.playback')) : null));
  }
  // Cluster: the node(s) recording the camera now (two during a handover); nothing on a single
  // node (`recording_on` is null there).
  function recorderLine(c) {
    if (!Array.isArray(c.recording_on)) return null;
    const nodes = c.recording_on;
    return h('dl', { class: 'recorder', 'data-recorder': nodes.join(',') },
      h('dt', {}, t('cam.recorder')), h('dd', { class: nodes.length ? '' : 'bad' }, nodes.length ? nodes.join(', ') : t('cam.noRecorder')));
  }
  // Privacy masks (CSI L251-3): how many, and whether the camera itself confirmed them.
  function masksLine(m) {
    if (!m || !m.configured) return null;
    if (m.confirmed_on_camera === true) return h('div', { class: 'masks muted small', 'data-masks': 'confirmed' }, t('cam.masks', { n: m.configured }));
    if (m.confirmed_on_camera === null) return h('div', { class: 'masks muted small', 'data-masks': 'pending' }, t('cam.masksPending', { n: m.configured }));
    return h('div', { class: 'alert masks', role: 'alert', 'data-masks': 'unconfirmed', title: m.last_error || '' },
      '⚠ ', t('cam.masksUnconfirmed', { n: m.configured }), m.last_error ? h('div', { class: 'small' }, m.last_error) : null);
  }
  refresh();
  const timer = setInterval(() => refresh(true), 3000);
  return () => clearInterval(timer);
}

// ---- Exports ---------------------------------------------------------------------------------

/// A live progress view of one export job (polls until it is done or failed).
export function exportProgress(job) {
  const el = h('div', { class: 'export-job', 'data-export': job.id, 'aria-live': 'polite' });
  let timer = null;
  function render(j) {
    const pct = Math.round((j.progress || 0) * 100);
    el.replaceChildren(
      h('div', {}, h('strong', {}, t('ex.job', { id: j.id })), ' — ', h('span', { class: 'ex-status st-' + j.status }, t('ex.st.' + j.status))),
      h('progress', { max: '100', value: String(pct), 'aria-label': t('ex.progress') }), ` ${pct} %`,
      j.status === 'done' ? h('div', {}, h('a', { class: 'button primary download', href: j.package.url, download: `vigie-export-${j.id}.zip` }, t('ex.download')),
        ' ', t('ex.sha'), ' ', code(j.sha256)) : null,
      j.status === 'done' && j.streams ? h('ul', { class: 'export-streams' },
        ...j.streams.map((s) => h('li', { 'data-camera': s.camera }, `${s.camera}/${s.stream} `, code(s.sha256)))) : null,
      j.error ? h('div', { class: 'msg error' }, j.error) : null);
  }
  async function poll() {
    try {
      const j = await getBackground(`/api/v1/exports/${encodeURIComponent(job.id)}`);
      render(j);
      if (j.status === 'done' || j.status === 'failed') return;
    } catch (e) { if (!el.isConnected) return; }
    if (el.isConnected || !timer) timer = setTimeout(poll, 1000);
  }
  render(job);
  timer = setTimeout(poll, 500);
  return el;
}

export function exportsPage(root) {
  const body = h('div', {}), status = h('div', {});
  root.append(h('div', { class: 'page' }, h('div', { class: 'toolbar' }, h('h1', {}, t('ex.title')),
    h('span', { class: 'hint' }, t('ex.hint'))), status, body));
  let timer;
  async function refresh(background = false) {
    try {
      const { exports } = await (background ? getBackground : get)('/api/v1/exports');
      exports.sort((a, b) => (b.created_at || '').localeCompare(a.created_at || ''));
      body.replaceChildren(table(
        [t('ex.created'), t('ex.camera'), t('ex.range'), t('ex.procedure'), t('ex.requester'), t('ex.reason'), t('ex.operator'), t('ex.status'), t('ex.hashes'), ''],
        exports.map((j) => {
          const pct = Math.round((j.progress || 0) * 100);
          return [fmtTime(j.created_at), j.streams ? j.streams.map((s) => `${s.camera}/${s.stream}`).join(', ') : `${j.camera}/${j.stream}`, fmtRange(j.start, j.end), j.procedure, j.requester, j.reason, j.operator,
            h('span', { class: 'ex-status st-' + j.status, 'data-export': j.id }, t('ex.st.' + j.status),
              j.status === 'done' || j.status === 'failed' ? '' : h('progress', { max: '100', value: String(pct), 'aria-label': t('ex.progress') }),
              j.error ? h('div', { class: 'small bad' }, j.error) : null),
            h('div', { class: 'hashes' },
              ...(j.streams && j.status === 'done'
                ? j.streams.map((s) => h('div', { 'data-camera': s.camera }, `MP4 ${s.camera} `, code(s.sha256)))
                : [j.sha256 ? h('div', {}, 'MP4 ', code(j.sha256)) : null]),
              j.package && j.package.sha256 ? h('div', {}, 'ZIP ', code(j.package.sha256)) : null),
            j.status === 'done' && can('Export') ? h('a', { class: 'button download', href: j.package.url, download: `vigie-export-${j.id}.zip` },
              t('ex.download'), j.package.bytes ? ` (${fmtBytes(j.package.bytes)})` : '') : ''];
        }), t('ex.none')));
      message(status, '');
      clearTimeout(timer);
      timer = setTimeout(() => refresh(true), exports.some((j) => j.status === 'queued' || j.status === 'running') ? 1000 : 5000);
    } catch (e) { message(status, `${t('error')}: ${e.message}`); timer = setTimeout(() => refresh(true), 5000); }
  }
  refresh();
  return () => clearTimeout(timer);
}

// ---- Legal holds -----------------------------------------------------------------------------

export function holdsPage(root) {
  const body = h('div', {}), status = h('div', {});
  root.append(h('div', { class: 'page' }, h('div', { class: 'toolbar' }, h('h1', {}, t('holds.title')),
    h('span', { class: 'hint' }, t('holds.hint'))), status, body));
  async function refresh() {
    try {
      const { holds } = await get('/api/v1/holds');
      holds.sort((a, b) => (b.active - a.active) || b.id - a.id);
      body.replaceChildren(table([t('holds.id'), t('ex.camera'), t('ex.range'), t('ex.procedure'), t('ex.reason'), t('holds.by'), t('holds.state'), ''],
        holds.map((x) => [String(x.id), `${x.camera}/${x.stream}`, fmtRange(x.start, x.end), x.procedure, x.reason,
          `${x.created_by}, ${fmtTime(x.created_at)}`,
          x.active ? h('span', { class: 'ok' }, t('holds.active')) : h('span', { class: 'muted' }, t('holds.released', { by: x.released.by, at: fmtTime(x.released.at) }), x.released.reason ? ` — ${x.released.reason}` : ''),
          x.active && can('Hold') ? releaseForm(x) : '']), t('holds.none')));
    } catch (e) { message(status, `${t('error')}: ${e.message}`); }
  }
  function releaseForm(x) {
    const reason = h('input', { required: true, placeholder: t('holds.releaseReason'), 'aria-label': t('holds.releaseReason') });
    return h('form', { class: 'inline', onsubmit: async (ev) => {
      ev.preventDefault();
      if (!confirm(t('holds.confirm', { id: x.id }))) return;
      try { await post(`/api/v1/holds/${x.id}/release`, { reason: reason.value }); refresh(); } catch (e) { message(status, `${t('error')}: ${e.message}`); }
    } }, reason, h('button', { type: 'submit' }, t('holds.release')));
  }
  refresh();
  return () => {};
}

// ---- Access journal --------------------------------------------------------------------------

const ACTIONS = ['login', 'login-failed', 'lockout', 'logout', 'live-start', 'live-stop', 'playback', 'still', 'export-create',
  'export-download', 'export-delete', 'hold-place', 'hold-release', 'retention-delete', 'recording-blocked', 'config-load', 'user-add', 'user-change',
  'token-create', 'token-revoke', 'quality-alert', 'quality-clear', 'journal-purge', 'service-start', 'service-stop', 'tamper-alarm'];

export function journalPage(root, ctx) {
  const f = {
    start: h('input', { type: 'datetime-local', step: '1', name: 'start' }),
    end: h('input', { type: 'datetime-local', step: '1', name: 'end' }),
    actor: h('input', { name: 'actor', placeholder: t('journal.actorHint') }),
    camera: h('select', { name: 'camera' }, h('option', { value: '' }, t('journal.any')), ...ctx.cameras.map((c) => h('option', { value: c.id }, c.name))),
    action: h('select', { name: 'action' }, h('option', { value: '' }, t('journal.any')), ...ACTIONS.map((a) => h('option', { value: a }, a))),
  };
  f.start.value = time.toInput(Date.now() - 86400e3);
  const body = h('div', {}), status = h('div', {}), csv = h('a', { class: 'button' }, t('journal.csv')),
    register = h('a', { class: 'button' }, t('journal.register'));
  const field = (label, el) => h('label', { class: 'field' }, h('span', {}, label), el);
  const form = h('form', { class: 'filters', onsubmit: (ev) => { ev.preventDefault(); refresh(); } },
    field(t('journal.from'), f.start), field(t('journal.to'), f.end), field(t('journal.actor'), f.actor),
    field(t('ex.camera'), f.camera), field(t('journal.action'), f.action),
    h('div', { class: 'form-actions' }, h('button', { type: 'submit', class: 'primary' }, t('journal.filter')), csv, register));
  root.append(h('div', { class: 'page' }, h('div', { class: 'toolbar' }, h('h1', {}, t('journal.title')),
    h('span', { class: 'hint' }, t('journal.hint'))), form, status, body));
  function query() {
    const q = new URLSearchParams();
    const s = time.fromInput(f.start.value), e = time.fromInput(f.end.value);
    if (s !== null) q.set('start', time.iso(s));
    if (e !== null) q.set('end', time.iso(e));
    for (const k of ['actor', 'camera', 'action']) if (f[k].value.trim()) q.set(k, f[k].value.trim());
    return q;
  }
  async function refresh() {
    const q = query();
    csv.href = `/api/v1/audit?${q}&format=csv`;
    const r = new URLSearchParams(); if (q.get('start')) r.set('start', q.get('start')); if (q.get('end')) r.set('end', q.get('end'));
    register.href = `/api/v1/register.csv?${r}`;
    q.set('limit', '1000');
    try {
      const { entries, unavailable_nodes: down = [] } = await get(`/api/v1/audit?${q}`);
      const list = [...entries].reverse();
      // In a cluster every entry names the node whose journal holds it (sequence numbers are
      // per node), and a node that could not be read is said, never silently left out.
      const cluster = list.some((e) => e.node) || down.length > 0;
      const notes = [];
      if (down.length) notes.push(t('journal.unavailable', { nodes: down.map((d) => `${d.node} (${d.reason})`).join(', ') }));
      if (list.length >= 1000) notes.push(t('journal.truncated'));
      message(status, notes.join(' '), down.length ? 'error' : 'info');
      const head = [t('journal.seq'), t('journal.time'), t('journal.actor'), t('journal.action'), t('ex.camera'), t('ex.range'),
        t('ex.procedure'), t('ex.reason'), t('journal.addr'), t('journal.details')];
      body.replaceChildren(table(cluster ? [t('journal.node'), ...head] : head,
      list.map((e) => {
        const row = [String(e.seq), fmtTime(e.time), e.actor, h('span', { class: 'action a-' + e.action }, e.action),
          e.camera ? `${e.camera}${e.stream ? '/' + e.stream : ''}` : '', fmtRange(e.start, e.end), e.procedure || '', e.reason || '',
          e.remote_addr || '', e.details && Object.keys(e.details).length ? h('code', { class: 'details' }, JSON.stringify(e.details)) : ''];
        return cluster ? [e.node || '', ...row] : row;
      }), t('journal.none')));
    } catch (err) { message(status, `${t('error')}: ${err.message}`); }
  }
  refresh();
  return () => {};
}

// ---- Users -----------------------------------------------------------------------------------

const ROLES = ['admin', 'supervisor', 'operator', 'investigator', 'auditor'];

function scopeText(s) {
  const communes = s.communes === 'all' ? t('users.allCommunes') : (s.communes.list || []).join(', ');
  return s.cameras ? `${communes} · ${t('users.camerasOnly')} ${s.cameras.join(', ')}` : communes;
}

export function usersPage(root, ctx) {
  const communes = [...new Map(ctx.cameras.map((c) => [c.commune, c.commune_name || c.commune])).entries()];
  const body = h('div', {}), status = h('div', {}), tokens = h('div', {});
  const nf = {
    name: h('input', { name: 'name', required: true, pattern: '[a-z0-9._-]+', autocomplete: 'off' }),
    role: h('select', { name: 'role' }, ...ROLES.map((r) => h('option', { value: r, selected: r === 'operator' }, t('role.' + r)))),
    password: h('input', { name: 'password', type: 'password', required: true, minlength: '12', autocomplete: 'new-password' }),
    all: h('input', { type: 'checkbox', name: 'all' }),
    cameras: h('input', { name: 'cameras', placeholder: t('users.camerasHint') }),
  };
  const boxes = communes.map(([id, name]) => h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'commune', value: id }), name));
  const field = (label, el) => h('label', { class: 'field' }, h('span', {}, label), el);
  const createForm = h('form', { class: 'user-form', onsubmit: async (ev) => {
    ev.preventDefault();
    const picked = boxes.map((b) => b.querySelector('input')).filter((i) => i.checked).map((i) => i.value);
    const cams = nf.cameras.value.split(',').map((s) => s.trim()).filter(Boolean);
    const bodyJson = { name: nf.name.value.trim(), role: nf.role.value, password: nf.password.value, communes: nf.all.checked ? 'all' : picked };
    if (cams.length) bodyJson.cameras = cams;
    try {
      await post('/api/v1/users', bodyJson);
      message(status, t('users.created', { name: bodyJson.name }), 'ok');
      createForm.reset(); refresh();
    } catch (e) { message(status, `${t('error')}: ${e.message}`); }
  } },
  field(t('users.name'), nf.name), field(t('users.role'), nf.role), field(t('users.password'), nf.password),
  h('fieldset', {}, h('legend', {}, t('users.scope')), h('label', { class: 'check' }, nf.all, t('users.allCommunes')), ...boxes,
    field(t('users.cameras'), nf.cameras)),
  h('div', { class: 'form-actions' }, h('button', { type: 'submit', class: 'primary' }, t('users.create'))));
  root.append(h('div', { class: 'page' }, h('div', { class: 'toolbar' }, h('h1', {}, t('users.title'))), status, body,
    h('details', { class: 'panel' }, h('summary', {}, t('users.new')), createForm),
    h('h2', {}, t('tokens.title')), tokens));
  async function change(name, what) {
    try { await patch(`/api/v1/users/${encodeURIComponent(name)}`, what); refresh(); } catch (e) { message(status, `${t('error')}: ${e.message}`); refresh(); }
  }
  async function refresh() {
    try {
      const { users } = await get('/api/v1/users');
      body.replaceChildren(table([t('users.name'), t('users.role'), t('users.scope'), t('users.state'), t('users.updated'), ''],
        users.map((u) => {
          const role = h('select', { 'aria-label': t('users.roleOf', { name: u.name }), onchange: () => change(u.name, { role: role.value }) },
            ...ROLES.map((r) => h('option', { value: r, selected: r === u.role }, t('role.' + r))));
          const scope = h('input', { value: u.scope.communes === 'all' ? 'all' : (u.scope.communes.list || []).join(','), size: '16',
            'aria-label': t('users.scopeOf', { name: u.name }), title: t('users.scopeEdit') });
          const scopeForm = h('form', { class: 'inline', onsubmit: (ev) => {
            ev.preventDefault();
            const v = scope.value.trim();
            change(u.name, { communes: v === 'all' ? 'all' : v.split(',').map((s) => s.trim()).filter(Boolean) });
          } }, scope, h('button', { type: 'submit' }, t('users.apply')));
          return [h('strong', {}, u.name), role, h('div', {}, h('div', { class: 'small' }, scopeText(u.scope)), scopeForm),
            u.disabled ? h('span', { class: 'bad' }, t('users.disabled')) : h('span', { class: 'ok' }, t('users.enabled')),
            fmtTime(u.updated),
            h('button', { onclick: () => change(u.name, { disabled: !u.disabled }), disabled: u.name === session.me.user },
              t(u.disabled ? 'users.enable' : 'users.disable'))];
        })));
      const tk = await get('/api/v1/tokens');
      tokens.replaceChildren(table([t('tokens.id'), t('users.name'), t('tokens.label'), t('tokens.created'), t('tokens.expires'), t('tokens.lastUsed'), ''],
        tk.tokens.map((x) => [code(x.id), x.user, x.label, fmtTime(x.created), x.expires ? fmtTime(x.expires) : '—', x.last_used ? fmtTime(x.last_used) : '—',
          h('button', { onclick: async () => { if (confirm(t('tokens.confirm', { id: x.id }))) { try { await del(`/api/v1/tokens/${x.id}`); refresh(); } catch (e) { message(status, e.message); } } } }, t('tokens.revoke'))]),
        t('tokens.none')));
    } catch (e) { message(status, `${t('error')}: ${e.message}`); }
  }
  refresh();
  void lang;
  return () => {};
}
