// Vigie operator UI: login, the header and navigation, the hash router (#/cameras, #/live,
// #/playback/{cam}, #/exports, #/holds, #/journal, #/users), the fr/en switch (remembered per
// user) and the Paris/UTC switch. Plain ES modules, no build step.

import { t, setLang, lang } from './i18n.js';
import { get, post, del, setCsrf, ApiError } from './api.js';
import * as time from './time.js';
import { h, session, can, userKey, message } from './ui.js';
import { livePage } from './live.js';
import { playbackPage } from './playback.js';
import './hooks.js';
import { camerasPage, exportsPage, holdsPage, journalPage, usersPage } from './admin.js';

// Test hooks (window.vigie) are published only by builds with the `ui-test-hooks` feature:
// see hooks/on.js and hooks/off.js, one of which the server serves as hooks.js.
const app = document.getElementById('app');

const PAGES = [
  { id: 'cameras', perm: 'ViewStatus', render: camerasPage },
  { id: 'live', perm: 'Live', render: livePage },
  { id: 'playback', perm: 'Playback', render: playbackPage },
  { id: 'exports', perm: 'ViewEvidence', render: exportsPage },
  { id: 'holds', perm: 'ViewEvidence', render: holdsPage },
  { id: 'journal', perm: 'Audit', render: journalPage },
  { id: 'users', perm: 'ManageUsers', render: usersPage },
];

let cleanup = null;
let clockTimer = null;

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [path, qs] = raw.split('?');
  const [page, ...rest] = path.split('/');
  return { page: page || '', arg: rest.length ? decodeURIComponent(rest.join('/')) : null, query: Object.fromEntries(new URLSearchParams(qs || '')) };
}

function langSwitch(onChange) {
  return h('div', { class: 'segs lang', role: 'group', 'aria-label': t('lang.label') },
    ...['fr', 'en'].map((l) => h('button', { lang: l, 'aria-pressed': String(lang() === l), title: t('lang.' + l),
      onclick: () => { setLang(l); localStorage.setItem('vigie.lang', l); if (session.me) localStorage.setItem(userKey('lang'), l); onChange(); } }, l.toUpperCase())));
}

// ---- Login -----------------------------------------------------------------------------------

function loginPage(note) {
  stopPage();
  document.title = `Vigie — ${t('login.title')}`;
  const err = h('div', { class: 'login-msg' });
  const user = h('input', { id: 'username', name: 'username', autocomplete: 'username', required: true, autofocus: true });
  const pass = h('input', { id: 'password', name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const submit = h('button', { type: 'submit', class: 'primary', id: 'login-submit' }, t('login.submit'));
  const form = h('form', { class: 'login-card', 'aria-labelledby': 'login-title', onsubmit: async (ev) => {
    ev.preventDefault();
    submit.disabled = true;
    try {
      const me = await post('/api/v1/session', { username: user.value.trim(), password: pass.value });
      pass.value = '';
      await start(me);
    } catch (e) {
      pass.value = '';
      const m = e instanceof ApiError ? (e.status === 401 ? t('login.bad') : e.status === 429 ? t('login.locked') : e.status === 403 ? t('login.disabled') : e.message) : String(e);
      message(err, m);
    } finally { submit.disabled = false; }
  } },
  h('div', { class: 'brand big' }, h('img', { src: '/assets/favicon.svg', alt: '' }), 'Vigie'),
  h('h1', { id: 'login-title' }, t('login.title')),
  h('p', { class: 'muted' }, t('login.intro')),
  h('label', { for: 'username' }, t('login.user')), user,
  h('label', { for: 'password' }, t('login.password')), pass,
  submit, err,
  h('div', { class: 'login-foot' }, langSwitch(() => loginPage(note)), h('span', { class: 'muted small' }, t('login.legal'))));
  app.replaceChildren(h('main', { class: 'login' }, form));
  if (note) message(err, note, 'info');
  user.focus();
}

// ---- Shell -----------------------------------------------------------------------------------

async function start(me) {
  session.me = me;
  setCsrf(me.csrf_token);
  const l = localStorage.getItem(userKey('lang')) || localStorage.getItem('vigie.lang') || 'fr';
  setLang(l);
  try { session.cameras = (await get('/api/v1/cameras')).cameras; } catch { session.cameras = []; }
  if (!location.hash || location.hash === '#/' || location.hash === '#/login') location.hash = can('Live') ? '#/live' : '#/cameras';
  route();
}

function shell(current) {
  const nav = h('nav', { 'aria-label': t('nav.label') }, ...PAGES.filter((p) => can(p.perm)).map((p) =>
    h('a', { href: `#/${p.id}`, class: p.id === current ? 'active' : '', 'aria-current': p.id === current ? 'page' : null }, t('nav.' + p.id))));
  const clock = h('span', { class: 'hdr-clock', title: t('clock.title') });
  const zone = h('button', { class: 'zone', 'aria-label': t('pb.zone'), 'aria-pressed': String(time.isUtc()), title: t('pb.zone'),
    onclick: () => { time.setUtc(!time.isUtc()); route(); } }, time.isUtc() ? 'UTC' : 'Paris');
  const tick = () => { const n = Date.now(); clock.textContent = `${time.date(n)} ${time.hms(n)} ${time.offsetLabel(n)}`; };
  tick(); clearInterval(clockTimer); clockTimer = setInterval(tick, 1000);
  const logout = h('button', { class: 'logout', onclick: async () => { try { await del('/api/v1/session'); } catch { /* expired */ } session.me = null; location.hash = ''; loginPage(); } }, t('nav.logout'));
  return h('header', { class: 'hdr' },
    h('a', { class: 'brand', href: '#/cameras', 'aria-label': 'Vigie' }, h('img', { src: '/assets/favicon.svg', alt: '' }), 'Vigie'),
    nav, h('span', { class: 'spacer' }), clock, zone, langSwitch(route),
    h('span', { class: 'who', title: scopeTitle(session.me) }, session.me.user, h('small', {}, ` (${t('role.' + session.me.role)})`)), logout);
}
function scopeTitle(me) {
  const c = me.scope.communes === 'all' ? t('users.allCommunes') : (me.scope.communes.list || []).join(', ');
  return `${t('users.scope')}: ${c}`;
}

function stopPage() { if (cleanup) { try { cleanup(); } catch (e) { console.error(e); } cleanup = null; } }

function route() {
  if (!session.me) return;
  stopPage();
  document.documentElement.lang = lang();
  const r = parseHash();
  let page = PAGES.find((p) => p.id === r.page);
  if (!page || !can(page.perm)) {
    const fallback = PAGES.find((p) => can(p.perm));
    if (page && !can(page.perm)) { page = null; }
    if (!page) {
      if (r.page && r.page !== fallback.id) {
        app.replaceChildren(shell(''), h('main', { class: 'page', 'data-page': 'forbidden' }, h('h1', {}, t('forbidden.title')), h('p', {}, t('forbidden.text')), h('a', { href: '#/' + fallback.id }, t('nav.' + fallback.id))));
        return;
      }
      page = fallback;
    }
  }
  document.title = `Vigie — ${t('nav.' + page.id)}`;
  const main = h('main', { id: 'main', 'data-page': page.id });
  app.replaceChildren(shell(page.id), main);
  const ctx = { arg: r.arg, query: r.query, cameras: session.cameras, refreshZone: route };
  try { cleanup = page.render(main, ctx) || null; } catch (e) { console.error(e); message(main, `${t('error')}: ${e.message}`); }
}

window.addEventListener('hashchange', route);
window.addEventListener('vigie-unauthenticated', () => { if (session.me) { session.me = null; loginPage(t('login.expired')); } });

async function boot() {
  setLang(localStorage.getItem('vigie.lang') || 'fr');
  try {
    const me = await get('/api/v1/session');
    await start(me);
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) loginPage();
    else app.replaceChildren(h('main', { class: 'page' }, h('h1', {}, 'Vigie'), h('p', { class: 'msg error' }, `${t('error')}: ${e.message}`)));
  }
}
boot();
