// Small DOM helpers shared by the pages, and the session state.

import { t } from './i18n.js';

export const session = { me: null, cameras: [] };

/// h('div', {class: 'x', onclick: f}, child, 'text', …)
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'style' && typeof v === 'object') {
      for (const [p, x] of Object.entries(v)) p.startsWith('--') ? el.style.setProperty(p, x) : (el.style[p] = x);
    } else if (v === true) el.setAttribute(k, '');
    else if (k in el && typeof v !== 'string') el[k] = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/// localStorage key scoped to the logged-in user.
export const userKey = (what) => `vigie.${what}.${session.me ? session.me.user : ''}`;

export const can = (perm) => !!(session.me && session.me.permissions.includes(perm));

/// [[commune label, [cameras…]], …] sorted by commune then camera name.
export function cameraGroups(cams) {
  const m = new Map();
  for (const c of cams) {
    const k = c.commune_name || c.commune;
    if (!m.has(k)) m.set(k, []);
    m.get(k).push(c);
  }
  return [...m.entries()].sort((a, b) => a[0].localeCompare(b[0], 'fr'))
    .map(([k, l]) => [k, l.sort((a, b) => a.name.localeCompare(b.name, 'fr'))]);
}

export function statusDot(online) {
  return h('span', { class: 'dot ' + (online ? 'on' : 'off'), role: 'img', 'aria-label': t(online ? 'status.online' : 'status.offline') });
}

export function message(el, text, kind = 'error') {
  el.replaceChildren(text ? h('div', { class: 'msg ' + kind, role: kind === 'error' ? 'alert' : 'status' }, text) : '');
}

/// A table from column headers and rows of cells (strings or nodes).
export function table(headers, rows, empty) {
  return h('div', { class: 'table-wrap' }, h('table', {},
    h('thead', {}, h('tr', {}, ...headers.map((x) => h('th', { scope: 'col' }, x)))),
    h('tbody', {}, rows.length ? rows.map((r) => h('tr', {}, ...r.map((c) => h('td', {}, c))))
      : h('tr', {}, h('td', { colspan: String(headers.length), class: 'empty' }, empty || '—')))));
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return '';
  const u = ['o', 'Kio', 'Mio', 'Gio', 'Tio'];
  let i = 0; while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
}
