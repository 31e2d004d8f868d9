// Wall-clock formatting in Europe/Paris (or UTC), and Paris local time → UTC without a library.
// Times are numbers of milliseconds since the epoch everywhere in the UI.

export const ZONE = 'Europe/Paris';
let utc = localStorage.getItem('vigie.utc') === '1';
export const isUtc = () => utc;
export function setUtc(v) { utc = !!v; localStorage.setItem('vigie.utc', utc ? '1' : '0'); }
export const zone = () => (utc ? 'UTC' : ZONE);

const fmts = new Map();
function fmt(key, opts) {
  const k = key + zone();
  if (!fmts.has(k)) fmts.set(k, new Intl.DateTimeFormat('fr-FR', { timeZone: zone(), hourCycle: 'h23', ...opts }));
  return fmts.get(k);
}
const two = (n) => String(n).padStart(2, '0');

/// Calendar parts of `ms` in the display zone.
export function parts(ms, z = zone()) {
  const f = new Intl.DateTimeFormat('en-GB', { timeZone: z, hourCycle: 'h23', year: 'numeric', month: '2-digit',
    day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit' });
  const o = {};
  for (const p of f.formatToParts(new Date(ms))) if (p.type !== 'literal') o[p.type] = Number(p.value);
  return { y: o.year, mo: o.month, d: o.day, h: o.hour % 24, mi: o.minute, s: o.second };
}
/// UTC milliseconds of a local civil time in zone `z` (the first of two candidates in a DST fold).
export function fromLocal(y, mo, d, h = 0, mi = 0, s = 0, z = zone()) {
  const guess = Date.UTC(y, mo - 1, d, h, mi, s);
  let t = guess;
  for (let i = 0; i < 3; i++) {
    const p = parts(t, z);
    const asUtc = Date.UTC(p.y, p.mo - 1, p.d, p.h, p.mi, p.s);
    t = guess - (asUtc - t);
  }
  return t;
}
export const offsetLabel = (ms) => {
  if (utc) return 'UTC';
  const p = parts(ms);
  const off = Math.round((Date.UTC(p.y, p.mo - 1, p.d, p.h, p.mi, p.s) - Math.floor(ms / 1000) * 1000) / 60000);
  return `UTC${off >= 0 ? '+' : '−'}${two(Math.floor(Math.abs(off) / 60))}:${two(Math.abs(off) % 60)}`;
};
export const hms = (ms) => fmt('hms', { hour: '2-digit', minute: '2-digit', second: '2-digit' }).format(new Date(ms));
export const hm = (ms) => fmt('hm', { hour: '2-digit', minute: '2-digit' }).format(new Date(ms));
export const date = (ms) => fmt('date', { year: 'numeric', month: '2-digit', day: '2-digit' }).format(new Date(ms));
export const dateTime = (ms) => `${date(ms)} ${hms(ms)}`;
/// With tenths of a second (player clock).
export const precise = (ms) => `${hms(ms)}.${Math.floor(((ms % 1000) + 1000) % 1000 / 100)}`;
/// Start of the day holding `ms`, in the display zone.
export function dayStart(ms) {
  const p = parts(ms);
  return fromLocal(p.y, p.mo, p.d, 0, 0, 0);
}
export function nextDay(dayStartMs) {
  const p = parts(dayStartMs + 36 * 3600e3);
  return fromLocal(p.y, p.mo, p.d, 0, 0, 0);
}
/// Value for <input type="datetime-local"> (display zone).
export function toInput(ms) {
  const p = parts(ms);
  return `${p.y}-${two(p.mo)}-${two(p.d)}T${two(p.h)}:${two(p.mi)}:${two(p.s)}`;
}
export function fromInput(v) {
  const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2}))?/.exec(v || '');
  if (!m) return null;
  return fromLocal(+m[1], +m[2], +m[3], +m[4], +m[5], +(m[6] || 0));
}
export const iso = (ms) => new Date(Math.round(ms)).toISOString();
export const parse = (s) => (s ? Date.parse(s) : null);
export function duration(secs) {
  secs = Math.max(0, Math.round(secs));
  const h = Math.floor(secs / 3600), m = Math.floor(secs / 60) % 60, s = secs % 60;
  return h ? `${h} h ${two(m)} min` : m ? `${m} min ${two(s)} s` : `${s} s`;
}
