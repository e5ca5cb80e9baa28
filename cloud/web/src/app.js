// app: the dashboard's shell. Hash routes (#/, #/meters/ID, #/gateways, #/gateways/ID,
// #/alerts, #/alerts/ID, #/registry, #/login) so that meter-cloud serves one page; each
// page module renders into <main> and may return a cleanup function (timers, live
// updates), called on the next route.

import { getSession, clearSession, onExpired, api } from './api.js';
import { h, replace, announce, errorState } from './ui.js';
import * as login from './page_login.js';
import * as overview from './page_overview.js';
import * as meter from './page_meter.js';
import * as gateways from './page_gateways.js';
import * as registry from './page_registry.js';
import * as alerts from './page_alerts.js';

const routes = [
  { re: /^\/login$/, page: login, nav: null, open: true },
  { re: /^\/$/, page: overview, nav: 'overview' },
  { re: /^\/meters\/([^/]+)$/, page: meter, nav: 'registry' },
  { re: /^\/gateways$/, page: gateways, nav: 'gateways' },
  { re: /^\/gateways\/([^/]+)$/, page: gateways, nav: 'gateways' },
  { re: /^\/alerts$/, page: alerts, nav: 'alerts' },
  { re: /^\/alerts\/(\d+)$/, page: alerts, nav: 'alerts' },
  { re: /^\/registry$/, page: registry, nav: 'registry' },
  { re: /^\/registry\/([^/]+)$/, page: registry, nav: 'registry' },
];

const main = document.getElementById('main');
let cleanup = null;
let first = true;
let loginMessage = null;

export function navigate(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

// Goes to the login page with a message (session expired, logged out).
export function toLogin(msg) {
  loginMessage = msg || null;
  navigate('#/login');
}

export function takeLoginMessage() {
  const m = loginMessage;
  loginMessage = null;
  return m;
}

function sessionValid() {
  const s = getSession();
  if (!s) return false;
  if (s.expires && Date.parse(s.expires) <= Date.now()) {
    clearSession();
    loginMessage = 'Your session has expired. Please log in again.';
    return false;
  }
  return true;
}

function shell(navName) {
  const s = getSession();
  const nav = document.getElementById('nav');
  const who = document.getElementById('who');
  nav.hidden = !s;
  who.hidden = !s;
  if (s) {
    const u = s.user || {};
    replace(document.getElementById('who-name'), u.name || 'signed in', ' ',
      h('span', { class: 'role' }, `(${u.role || 'viewer'})`));
    document.getElementById('logout').hidden = !!s.noauth;
  }
  for (const a of nav.querySelectorAll('a[data-nav]')) {
    if (a.dataset.nav === navName) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

async function route() {
  const raw = location.hash.replace(/^#/, '') || '/';
  const [path, query] = raw.split('?');
  const params = new URLSearchParams(query || '');
  let r = null;
  let m = null;
  for (const x of routes) {
    m = path.match(x.re);
    if (m) { r = x; break; }
  }
  if (cleanup) {
    try { cleanup(); } catch { /* a page's cleanup must not stop the next page */ }
    cleanup = null;
  }
  if (!r) {
    shell(null);
    replace(main, h('h1', {}, 'Not found'), h('p', {}, 'There is no such page. ', h('a', { href: '#/' }, 'Go to the overview')));
    return;
  }
  if (!r.open && !sessionValid()) {
    navigate('#/login');
    return;
  }
  shell(r.nav);
  const args = m.slice(1).map((x) => decodeURIComponent(x));
  try {
    const c = await r.page.render(main, args, params);
    cleanup = typeof c === 'function' ? c : null;
  } catch (e) {
    replace(main, errorState(e, route));
  }
  if (!first) {
    main.focus({ preventScroll: false });
    const t = main.querySelector('h1');
    if (t) announce(t.textContent);
  }
  first = false;
}

document.getElementById('logout').addEventListener('click', async () => {
  try {
    await api('/api/v1/logout', { method: 'POST' });
  } catch {
    // logged out here either way
  }
  clearSession();
  toLogin('You have logged out.');
});

document.getElementById('skip').addEventListener('click', (e) => {
  e.preventDefault();
  main.focus();
});

onExpired((msg) => toLogin(`Your session has ended (${msg}). Please log in again.`));
window.addEventListener('hashchange', route);
route();
