// HTTP helpers: JSON in and out, the session's CSRF token on every mutation, API errors as
// exceptions carrying the status and the server's message ({"error": {"code", "message"}}).

let csrf = '';
export function setCsrf(t) { csrf = t || ''; }

export class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

// Requests the UI makes on its own (periodic refreshes) carry `X-Vigie-Background: 1`: the
// server does not count them as activity, so an unattended screen still reaches the session's
// idle timeout. User actions (navigation, clicks) are sent without it.
export async function api(method, path, body, background = false) {
  const headers = {};
  if (background) headers['X-Vigie-Background'] = '1';
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && method !== 'HEAD') headers['X-CSRF-Token'] = csrf;
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    credentials: 'same-origin' });
  const text = await r.text();
  let v = null;
  try { v = text ? JSON.parse(text) : null; } catch { v = text; }
  if (!r.ok) {
    const e = (v && v.error) || {};
    const err = new ApiError(r.status, e.code || String(r.status), e.message || r.statusText);
    if (r.status === 401 && path !== '/api/v1/session') window.dispatchEvent(new CustomEvent('vigie-unauthenticated'));
    throw err;
  }
  return v;
}
export const get = (p) => api('GET', p);
/// A GET made by a timer, not by the user (does not refresh the session's idle time).
export const getBackground = (p) => api('GET', p, undefined, true);
export const post = (p, b) => api('POST', p, b ?? {});
export const patch = (p, b) => api('PATCH', p, b);
export const del = (p) => api('DELETE', p);

export const streamPath = (cam, stream) =>
  `/api/v1/cameras/${encodeURIComponent(cam)}/streams/${encodeURIComponent(stream)}`;
