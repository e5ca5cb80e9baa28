// api: every call to meter-cloud's JSON API goes through api() here. It adds the bearer
// token, turns failures into ApiError (status 0: the server did not answer), and on a
// 401 ends the session and tells the app (onExpired), which goes back to the login page.
// The session (token, expiry, user) lives in sessionStorage: gone when the tab closes.

const KEY = 'meterlink.session';
const expiredListeners = [];

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
  }
  // The path does not exist on this server (an endpoint not built yet), as opposed to a
  // meter or gateway that does not exist.
  get missing() {
    return this.status === 404 && /^no such path/.test(this.message);
  }
  get unreachable() {
    return this.status === 0;
  }
}

export function getSession() {
  try {
    const s = JSON.parse(sessionStorage.getItem(KEY) || 'null');
    return s && typeof s === 'object' ? s : null;
  } catch {
    return null;
  }
}

export function setSession(s) {
  sessionStorage.setItem(KEY, JSON.stringify(s));
}

export function clearSession() {
  sessionStorage.removeItem(KEY);
}

export function onExpired(fn) {
  expiredListeners.push(fn);
}

export function role() {
  const s = getSession();
  return (s && s.user && s.user.role) || 'viewer';
}

// Whether the current user may send commands to gateways and change the registry.
export function canOperate() {
  return role() === 'operator' || role() === 'admin';
}

export function authHeaders() {
  const s = getSession();
  return s && s.token ? { Authorization: 'Bearer ' + s.token } : {};
}

// Calls the API: path with its query, opts.method, opts.body (an object, sent as JSON),
// opts.signal. Resolves to the parsed JSON; rejects with ApiError.
export async function api(path, opts = {}) {
  const headers = { Accept: 'application/json', ...authHeaders() };
  let body;
  if (opts.body !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(opts.body);
  }
  let res;
  try {
    res = await fetch(path, {
      method: opts.method || 'GET', headers, body, signal: opts.signal, cache: 'no-store',
      credentials: 'same-origin',
    });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, 'unreachable', 'meter-cloud does not answer (the network or the server is down)');
  }
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!res.ok) {
    const e = (data && data.error) || {};
    const err = new ApiError(res.status, e.code || 'http_' + res.status,
      e.message || `HTTP ${res.status} ${res.statusText}`);
    err.body = e;
    if (res.status === 401 && !opts.login && getSession()) {
      clearSession();
      for (const fn of expiredListeners) fn(err.message);
    }
    throw err;
  }
  return data;
}

// A query string from an object, leaving out null and undefined values.
export function qs(params) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined) p.set(k, String(v));
  const s = p.toString();
  return s ? '?' + s : '';
}

export const enc = encodeURIComponent;

// A meter counts as silent when its newest reading failed or is older than this.
export const SILENT_AFTER_S = 15 * 60;

export function meterReporting(m, now = Date.now()) {
  if (typeof m.reporting === 'boolean') return m.reporting;
  const r = m.last_reading;
  const t = m.last_seen ? Date.parse(m.last_seen) : NaN;
  return !!r && r.ok !== false && !Number.isNaN(t) && now - t < SILENT_AFTER_S * 1000;
}

// Runs fn over items with at most n at a time; resolves to the results in order.
export async function mapLimit(items, n, fn) {
  const out = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
  return out;
}

let sitesCache = null;

// GET /api/v1/sites, once per page load ([] when the server has no sites endpoint).
export async function sites() {
  if (!sitesCache) {
    sitesCache = api('/api/v1/sites').then((r) => (Array.isArray(r) ? r : (r && r.sites) || []))
      .catch((e) => {
        sitesCache = null;
        if (e.missing) return [];
        throw e;
      });
  }
  return sitesCache;
}

// The zone for times that belong to no one site (gateways, the fleet): the first site's,
// else UTC.
export async function fleetTz() {
  try {
    const s = await sites();
    return (s.find((x) => x.tz) || {}).tz || 'UTC';
  } catch {
    return 'UTC';
  }
}
