// Overview: gateways online/offline (GET /api/v1/gateways), meters reporting/silent
// (GET /api/v1/meters), open alerts (GET /api/v1/alerts?state=open: the count and the
// newest few, linked to the alerts page), today's energy (the sum of
// GET /api/v1/meters/{id}/kpi "today"), and a table of the meters.

import { api, enc, fleetTz, meterReporting, SILENT_AFTER_S, mapLimit } from './api.js';
import { h, replace, loading, empty, errorState, card, setTitle } from './ui.js';
import { stateBadge, subject } from './page_alerts.js';
import { n2, int, dateTime, ago, toMs } from './fmt.js';
import { live } from './live.js';

const KPI_METERS_MAX = 50; // meters whose KPIs are summed here; more need a fleet endpoint
const ALERTS_SHOWN = 5; // open alerts listed here; the alerts page has them all

let alertsMissing = false; // the server has no alerts API: do not ask again

// Open alerts: {n, list} (the newest ALERTS_SHOWN); {none: true} when the server has no
// alerts API, {error} when it failed (the rest of the overview still shows).
async function openAlerts() {
  if (alertsMissing) return { n: 0, list: [], none: true };
  try {
    const r = await api(`/api/v1/alerts?state=open&limit=${ALERTS_SHOWN}`);
    const list = (r && r.alerts) || [];
    return { n: typeof r.total === 'number' ? r.total : list.length, list };
  } catch (e) {
    if (e.status === 401) throw e;
    if (!e.missing) return { n: null, list: [], error: e };
    alertsMissing = true;
    return { n: 0, list: [], none: true };
  }
}

function alertsSection(al, tz, now) {
  if (al.none) return null;
  const head = h('h2', { id: 'alerts-h' }, 'Open alerts');
  if (al.error) return [head, errorState(al.error)];
  if (!al.list.length) return [head, empty('No open alerts', 'Nothing needs attention: no alert rule is firing now.')];
  return [head, h('ul', { class: 'alerts', id: 'open-alerts', 'aria-labelledby': 'alerts-h' },
    al.list.map((a) => h('li', { dataset: { alert: String(a.id), state: a.state } },
      stateBadge(a.state),
      h('a', { class: 'what', href: `#/alerts/${enc(String(a.id))}` }, a.message || a.rule),
      h('span', {}, subject(a)),
      h('span', { class: 'when', title: dateTime(a.fired_at, tz) }, ago(toMs(a.fired_at), now))))),
  al.n > al.list.length ? h('p', { class: 'hint' }, h('a', { href: '#/alerts' }, `All ${int(al.n)} open alerts`)) : null];
}

export async function render(main) {
  const title = setTitle(main, 'Overview');
  const body = h('div', { id: 'overview' }, loading());
  const mode = h('p', { class: 'live', id: 'live-mode' });
  replace(main, title, body, mode);

  const load = async () => {
    let gw, mt, al, tz;
    try {
      [gw, mt, al, tz] = await Promise.all([api('/api/v1/gateways'), api('/api/v1/meters'), openAlerts(), fleetTz()]);
    } catch (e) {
      replace(body, errorState(e, load));
      return;
    }
    const gateways = gw.gateways || [];
    const meters = mt.meters || [];
    if (!gateways.length && !meters.length) {
      replace(body, empty('No data yet',
        'No gateway has sent anything to meter-cloud so far. Once a gateway is connected, its meters show up here.'));
      return;
    }
    const now = Date.now();
    const online = gateways.filter((g) => g.status === 'online').length;
    const reporting = meters.filter((m) => meterReporting(m, now)).length;
    const kpis = await mapLimit(meters.slice(0, KPI_METERS_MAX), 6,
      (m) => api(`/api/v1/meters/${enc(m.id)}/kpi`).catch(() => null));
    const today = kpis.filter((k) => k && k.today && typeof k.today.energy === 'number');
    const total = today.reduce((s, k) => s + k.today.energy, 0);
    const cards = h('div', { class: 'cards' },
      card({ label: 'Gateways online', value: int(online), name: 'gateways-online', href: '#/gateways', note: `of ${int(gateways.length)}` }),
      card({ label: 'Gateways offline', value: int(gateways.length - online), name: 'gateways-offline', href: '#/gateways', cls: gateways.length - online ? 'up' : '' }),
      card({ label: 'Meters reporting', value: int(reporting), name: 'meters-reporting', href: '#/registry', note: `of ${int(meters.length)}` }),
      card({ label: 'Meters silent', value: int(meters.length - reporting), name: 'meters-silent', href: '#/registry', note: `no reading for ${SILENT_AFTER_S / 60} min`, cls: meters.length - reporting ? 'up' : '' }),
      card({ label: 'Open alerts', value: al.none ? 'No alerts' : al.error ? '–' : int(al.n), name: 'alerts', href: al.none ? null : '#/alerts',
        note: al.none ? 'alerts are not available on this server' : al.error ? 'could not be loaded' : al.n ? 'firing or acknowledged' : 'none firing',
        cls: al.n ? 'up' : '' }),
      card({ label: "Today's energy", value: today.length ? n2(total) : '–', unit: 'kWh', name: 'today-energy', href: '#/registry',
        note: `${int(today.length)} meter${today.length === 1 ? '' : 's'}${meters.length > KPI_METERS_MAX ? ` of ${int(meters.length)}` : ''}` }));
    const rows = meters.map((m, i) => {
      const k = kpis[i];
      const mtz = (k && k.tz) || tz;
      const ok = meterReporting(m, now);
      return h('tr', { dataset: { meter: m.id } },
        h('th', { scope: 'row' }, h('a', { href: `#/meters/${enc(m.id)}` }, m.id)),
        h('td', {}, h('span', { class: `badge ${ok ? 'ok' : 'bad'}` }, ok ? 'reporting' : 'silent')),
        h('td', { class: 'num' }, k && k.power ? n2(k.power.w) : '–'),
        h('td', { class: 'num' }, k && k.today ? n2(k.today.energy) : '–'),
        h('td', {}, h('a', { href: `#/gateways/${enc(m.gateway)}` }, m.gateway || '–')),
        h('td', { title: dateTime(m.last_seen, mtz) }, m.last_seen ? ago(toMs(m.last_seen), now) : 'never'));
    });
    replace(body, cards, alertsSection(al, tz, now),
      h('h2', { id: 'meters-h' }, 'Meters'),
      meters.length ? h('div', { class: 'table-wrap' }, h('table', { 'aria-labelledby': 'meters-h' },
        h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Meter'), h('th', { scope: 'col' }, 'Status'),
          h('th', { scope: 'col', class: 'num' }, 'Power (W)'), h('th', { scope: 'col', class: 'num' }, 'Today (kWh)'),
          h('th', { scope: 'col' }, 'Gateway'), h('th', { scope: 'col' }, 'Last reading'))),
        h('tbody', {}, rows)))
        : empty('No meters yet', 'No meter has delivered a reading yet.'));
  };
  await load();
  const lv = live({ onTick: load, onMode: (t) => { mode.textContent = t; } });
  return () => lv.stop();
}
