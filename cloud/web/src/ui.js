// ui: building the DOM without innerHTML (ids and names come from meters and gateways:
// they are text, never markup), and the loading, empty and error states every page uses.

// h('p', {class: 'x', onclick: fn, 'aria-label': '...'}, 'text', child, [more]) -> element
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k in el && typeof v !== 'string') el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function replace(el, ...children) {
  clear(el);
  append(el, children);
  return el;
}

const announcer = () => document.getElementById('announce');

// Says msg to screen readers (the polite live region).
export function announce(msg) {
  const a = announcer();
  if (!a) return;
  a.textContent = '';
  setTimeout(() => { a.textContent = msg; }, 30);
}

export function loading(what = 'Loading…') {
  return h('p', { class: 'state loading', role: 'status' }, what);
}

export function empty(title, ...more) {
  return h('div', { class: 'state empty', 'data-state': 'empty' }, h('p', {}, h('strong', {}, title)),
    more.map((m) => h('p', {}, m)));
}

// The error state for err (an ApiError or any Error); retry: a function, shown as a button.
export function errorState(err, retry) {
  let title = 'Something went wrong';
  let detail = err && err.message ? err.message : String(err);
  if (err && err.unreachable) {
    title = 'meter-cloud is not reachable';
    detail = 'The dashboard cannot reach the server. It may be restarting, or the network is down.';
  } else if (err && err.missing) {
    title = 'Not available on this server';
  } else if (err && err.status === 403) {
    title = 'Not allowed';
  } else if (err && err.status) {
    title = `The server answered ${err.status}`;
  }
  return h('div', { class: 'state error', role: 'alert', 'data-state': 'error' },
    h('p', {}, h('strong', {}, title)), h('p', {}, detail),
    retry ? h('p', {}, h('button', { type: 'button', class: 'secondary', onclick: retry }, 'Try again')) : null);
}

// A message box: kind 'ok' or 'bad'; role alert for bad ones.
export function message(kind, text, detail) {
  return h('div', { class: `msg ${kind}`, role: kind === 'bad' ? 'alert' : 'status' }, text,
    detail ? h('pre', {}, detail) : null);
}

export function badge(kind, text) {
  return h('span', { class: `badge ${kind}` }, text);
}

// A KPI card: label, value text, unit, optional note; name goes to data-kpi for tests.
export function card({ label, value, unit, note, href, name, cls }) {
  const inner = [
    h('p', { class: 'label' }, label),
    h('p', { class: 'value ' + (cls || ''), dataset: name ? { kpi: name } : undefined }, value,
      unit ? h('span', { class: 'unit' }, unit) : null),
    note ? h('p', { class: 'note' }, note) : null,
  ];
  return href ? h('a', { class: 'card', href }, inner) : h('div', { class: 'card' }, inner);
}

export function setTitle(main, title, sub) {
  document.title = `${title} – Meterlink`;
  return [h('h1', { id: 'page-title' }, title), sub ? h('p', { class: 'sub' }, sub) : null];
}
