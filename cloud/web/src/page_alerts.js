// Alerts: the list (GET /api/v1/alerts?state=...) with a state filter, and one alert
// (GET /api/v1/alerts/{id}) with its delivery attempts. Operators and admins acknowledge a
// firing alert (POST /api/v1/alerts/{id}/ack); viewers see no button (the server would
// answer 403). The configured rules (GET /api/v1/alerts/rules) are listed below.

import { api, enc, canOperate, fleetTz } from './api.js';
import { h, replace, loading, empty, errorState, setTitle, badge, message, announce } from './ui.js';
import { int, dateTime, ago, toMs } from './fmt.js';
import { live } from './live.js';

const FILTERS = [
  { id: 'open', label: 'Open' },
  { id: 'firing', label: 'Firing' },
  { id: 'acknowledged', label: 'Acknowledged' },
  { id: 'resolved', label: 'Resolved' },
  { id: 'all', label: 'All' },
];
const LIST_MAX = 200;

export function stateBadge(s) {
  if (s === 'firing') return badge('bad', 'firing');
  if (s === 'acknowledged') return badge('warn', 'acknowledged');
  if (s === 'resolved') return badge('ok', 'resolved');
  return badge('muted', s || 'unknown');
}

// What an alert is about, as links: the meter (and its gateway), or the gateway.
export function subject(a) {
  const parts = [];
  if (a.meter) parts.push(h('a', { href: `#/meters/${enc(a.meter)}` }, a.meter));
  if (a.gateway) {
    if (parts.length) parts.push(' · ');
    parts.push(h('a', { href: `#/gateways/${enc(a.gateway)}` }, a.gateway));
  }
  return parts.length ? parts : '–';
}

// POST .../ack; shows the outcome in msgEl; resolves to true when acknowledged.
async function acknowledge(a, msgEl, btn) {
  btn.disabled = true;
  try {
    await api(`/api/v1/alerts/${enc(String(a.id))}/ack`, { method: 'POST' });
    replace(msgEl, message('ok', `Alert ${a.id} (${a.rule}) acknowledged: no more reminders.`));
    announce(`Alert ${a.id} acknowledged`);
    return true;
  } catch (e) {
    replace(msgEl, message('bad', `Could not acknowledge alert ${a.id}: ${e.message}`));
    btn.disabled = false;
    return false;
  }
}

function ackButton(a, msgEl, after) {
  if (a.state !== 'firing' || !canOperate()) return null;
  const btn = h('button', { type: 'button', class: 'button secondary', id: `ack-${a.id}`, dataset: { ack: String(a.id) } }, 'Acknowledge');
  btn.addEventListener('click', async () => { if (await acknowledge(a, msgEl, btn)) after(); });
  return btn;
}

function rulesTable(r) {
  const rules = (r && r.rules) || [];
  if (!rules.length) return empty('No alert rules', 'meter-cloud has no alert rules configured (alerts.rules in its configuration).');
  const what = (x) => {
    if (x.kind === 'threshold') return `${x.quantity} ${x.above !== undefined ? '>' : '<'} ${x.above !== undefined ? x.above : x.below} ${x.unit || ''}${x.for_s ? ` for ${x.for_s} s` : ''}`;
    if (x.kind === 'daily_usage') return `over ${x.limit_kwh} kWh a day`;
    if (x.kind === 'balance_days') return `under ${x.days} days of balance`;
    if (x.after_s !== undefined) return `after ${x.after_s} s`;
    return '';
  };
  return h('div', { class: 'table-wrap' }, h('table', { id: 'alert-rules', 'aria-label': 'Alert rules' },
    h('thead', {}, h('tr', {}, ['Rule', 'Kind', 'Condition', 'Applies to', 'Channels'].map((t) => h('th', { scope: 'col' }, t)))),
    h('tbody', {}, rules.map((x) => h('tr', { dataset: { rule: x.name } },
      h('th', { scope: 'row' }, x.name), h('td', {}, x.kind), h('td', {}, what(x)),
      h('td', {}, x.meter || x.gateway || 'all'),
      h('td', {}, (x.channels || []).join(', ') || 'none (recorded only)'))))));
}

async function renderList(main, params) {
  let filter = FILTERS.some((f) => f.id === params.get('state')) ? params.get('state') : 'open';
  const buttons = FILTERS.map((f) => h('button', { type: 'button', 'aria-pressed': String(f.id === filter), dataset: { filter: f.id }, onclick: () => setFilter(f.id) }, f.label));
  const msgEl = h('div', { id: 'alert-msg', 'aria-live': 'polite' });
  const body = h('div', { id: 'alerts-box' }, loading());
  const rulesBox = h('div', { id: 'rules-box' });
  const mode = h('p', { class: 'live', id: 'live-mode' });
  replace(main, setTitle(main, 'Alerts'),
    h('div', { class: 'toolbar' }, h('div', { class: 'seg filters', role: 'group', 'aria-label': 'Show alerts' }, buttons)),
    msgEl, body, h('h2', { id: 'rules-h' }, 'Rules'), rulesBox, mode);

  let gen = 0;
  const load = async () => {
    const my = ++gen;
    let r, tz;
    try {
      [r, tz] = await Promise.all([api(`/api/v1/alerts?limit=${LIST_MAX}${filter === 'all' ? '' : `&state=${filter}`}`), fleetTz()]);
    } catch (e) {
      if (my === gen) replace(body, errorState(e, load));
      return;
    }
    if (my !== gen) return;
    const list = r.alerts || [];
    if (!list.length) {
      const what = filter === 'all' ? 'No alerts yet' : `No ${filter === 'open' ? 'open' : filter} alerts`;
      replace(body, empty(what, filter === 'open' || filter === 'firing'
        ? 'Nothing needs attention: no rule is firing now.' : 'None in this list.'));
      return;
    }
    const now = Date.now();
    replace(body,
      h('p', { class: 'hint', id: 'alerts-count' }, `${int(list.length)}${r.total > list.length ? ` of ${int(r.total)}` : ''} alert${r.total === 1 ? '' : 's'}; times in ${tz}`),
      h('div', { class: 'table-wrap' }, h('table', { id: 'alerts', class: 'stack', 'aria-label': 'Alerts' },
        h('thead', {}, h('tr', {}, ['Alert', 'State', 'Rule', 'Meter / gateway', 'Message', 'Fired'].map((t) => h('th', { scope: 'col' }, t)),
          h('th', { scope: 'col' }, h('span', { class: 'sr-only' }, 'Action')))),
        h('tbody', {}, list.map((a) => h('tr', { dataset: { alert: String(a.id), state: a.state } },
          h('th', { scope: 'row' }, h('a', { href: `#/alerts/${enc(String(a.id))}` }, `#${a.id}`)),
          h('td', {}, stateBadge(a.state)),
          h('td', {}, a.rule),
          h('td', {}, subject(a)),
          h('td', { class: 'wrap' }, a.message),
          h('td', { title: dateTime(a.fired_at, tz) }, ago(toMs(a.fired_at), now)),
          h('td', {}, ackButton(a, msgEl, load))))))));
  };
  function setFilter(f) {
    filter = f;
    for (const b of buttons) b.setAttribute('aria-pressed', String(b.dataset.filter === f));
    history.replaceState(null, '', `#/alerts${f === 'open' ? '' : `?state=${f}`}`);
    replace(msgEl);
    load();
  }
  await load();
  api('/api/v1/alerts/rules').then((r) => replace(rulesBox, rulesTable(r)))
    .catch((e) => replace(rulesBox, errorState(e)));
  const lv = live({ onTick: load, onMode: (t) => { mode.textContent = t; } });
  return () => lv.stop();
}

async function renderOne(main, id) {
  const msgEl = h('div', { id: 'alert-msg', 'aria-live': 'polite' });
  const body = h('div', { id: 'alert-box' }, loading());
  const mode = h('p', { class: 'live', id: 'live-mode' });
  replace(main, setTitle(main, `Alert #${id}`), h('p', {}, h('a', { href: '#/alerts' }, '← All alerts')), msgEl, body, mode);
  const load = async () => {
    let a, tz;
    try {
      [a, tz] = await Promise.all([api(`/api/v1/alerts/${enc(id)}`), fleetTz()]);
    } catch (e) {
      if (e.status === 404 && !e.missing) {
        replace(body, empty(`No alert #${id}`, h('a', { href: '#/alerts' }, 'See the alerts')));
        return;
      }
      replace(body, errorState(e, load));
      return;
    }
    const fact = (k, v) => [h('dt', {}, k), h('dd', {}, v)];
    const dl = h('dl', { class: 'facts', id: 'alert-facts' },
      fact('State', stateBadge(a.state)), fact('Rule', `${a.rule} (${a.kind})`), fact('About', subject(a)),
      fact('Message', a.message), fact('Fired', dateTime(a.fired_at, tz)),
      fact('Acknowledged', a.acknowledged_at ? `${dateTime(a.acknowledged_at, tz)} by ${a.acknowledged_by}` : 'no'),
      fact('Resolved', a.resolved_at ? dateTime(a.resolved_at, tz) : 'no'),
      fact('Reminders', int(a.reminders)));
    const d = a.deliveries || [];
    replace(body,
      h('section', { class: 'panel', 'aria-labelledby': 'alert-h' }, h('h2', { id: 'alert-h' }, a.message), dl,
        h('div', { class: 'actions' }, ackButton(a, msgEl, load))),
      h('h2', { id: 'deliveries-h' }, 'Notifications'),
      d.length ? h('div', { class: 'table-wrap' }, h('table', { id: 'deliveries', class: 'stack', 'aria-labelledby': 'deliveries-h' },
        h('thead', {}, h('tr', {}, ['When', 'Channel', 'Event', 'Attempt', 'Result', 'Code', 'Error', 'Retry at'].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, d.map((x) => h('tr', { dataset: { delivery: String(x.id), status: x.status } },
          h('td', {}, dateTime(x.at, tz)), h('td', {}, x.channel), h('td', {}, x.event), h('td', { class: 'num' }, int(x.attempt)),
          h('td', {}, badge(x.status === 'delivered' ? 'ok' : 'bad', x.status)),
          h('td', { class: 'num' }, x.code === null ? '–' : String(x.code)),
          h('td', { class: 'wrap' }, x.error || '–'),
          h('td', {}, x.retry_at ? dateTime(x.retry_at, tz) : '–'))))))
        : empty('No notifications', 'This alert\'s rule has no channels, or nothing has been sent yet.'));
  };
  await load();
  const lv = live({ onTick: load, onMode: (t) => { mode.textContent = t; } });
  return () => lv.stop();
}

export async function render(main, args, params) {
  if (args[0]) return renderOne(main, args[0]);
  return renderList(main, params);
}
