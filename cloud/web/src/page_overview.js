// Overview: gateways online/offline (GET /api/v1/gateways), meters reporting/silent
// (GET /api/v1/meters), open alerts (GET /api/v1/alerts when the server has it), today's
// energy (the sum of GET /api/v1/meters/{id}/kpi "today"), and a table of the meters.

import { api, enc, fleetTz, meterReporting, SILENT_AFTER_S, mapLimit } from './api.js';
import { h, replace, loading, empty, errorState, card, setTitle } from './ui.js';
import { n2, int, dateTime, ago, toMs } from './fmt.js';
import { live } from './live.js';

const KPI_METERS_MAX = 50; // meters whose KPIs are summed here; more need a fleet endpoint

let alertsMissing = false; // the server has no alerts API: do not ask again

// Open alerts; {none: true} when the server has no alerts API.
async function alertsCount() {
  if (alertsMissing) return { n: 0, none: true };
  try {
    const r = await api('/api/v1/alerts');
    const list = Array.isArray(r) ? r : (r && r.alerts) || [];
    return { n: list.filter((a) => a.state !== 'resolved').length };
  } catch (e) {
    if (!e.missing) throw e;
    alertsMissing = true;
    return { n: 0, none: true };
  }
}

export async function render(main) {
  const title = setTitle(main, 'Overview');
  const body = h('div', { id: 'overview' }, loading());
  const mode = h('p', { class: 'live', id: 'live-mode' });
  replace(main, title, body, mode);

  const load = async () => {
    let gw, mt, al, tz;
    try {
      [gw, mt, al, tz] = await Promise.all([api('/api/v1/gateways'), api('/api/v1/meters'), alertsCount(), fleetTz()]);
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
      card({ label: 'Open alerts', value: al.none ? 'No alerts' : int(al.n), name: 'alerts', note: al.none ? 'alerts are not available on this server' : null }),
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
    replace(body, cards,
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
