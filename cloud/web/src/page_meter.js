// Meter: KPI cards (GET /api/v1/meters/{id}/kpi), usage bars (.../usage?period=),
// power and, for prepaid meters, balance lines (.../series?quantity=&from=&to=&points=).
// Views: today, 7 days, 30 days, 1 year, or any day from the date picker; every time in
// the site's zone (kpi.tz). Charts zoom and scroll with ECharts dataZoom. Series ask for
// about as many points as the chart is wide (at most POINTS_MAX each), so even a year is
// a few thousand points in all. A reading on the live stream (GET /api/v1/stream) shows its
// power at once; the KPIs are then fetched again (at most every 2 s).

import { api, enc, qs } from './api.js';
import { h, replace, loading, empty, errorState, card, setTitle } from './ui.js';
import { n2, signed2, dateTime, localDate, localMidnight, bucketLabel, ago, toMs } from './fmt.js';
import { makeChart, usageOption, lineOption } from './charts.js';
import { live } from './live.js';
import { stateBadge } from './page_alerts.js';

const DAY = 86400000;
const POINTS_MAX = 1000;
const VIEWS = [
  { id: 'today', label: 'Today' },
  { id: '7d', label: '7 days' },
  { id: '30d', label: '30 days' },
  { id: '1y', label: '1 year' },
];

// The range and usage period of a view in zone tz at now: {from, to, period, live}.
export function viewRange(view, date, tz, now = Date.now()) {
  const today = localDate(now, tz);
  const midnight = localMidnight(today, tz);
  const back = (days) => localMidnight(localDate(midnight - days * DAY + DAY / 2, tz), tz);
  if (view === 'day' && date) {
    const from = localMidnight(date, tz);
    const next = localMidnight(localDate(from + DAY + DAY / 2, tz), tz);
    return { from, to: Math.min(next, now), end: next, period: 'hour', live: next > now };
  }
  if (view === '7d') return { from: back(6), to: now, period: 'hour', live: true };
  if (view === '30d') return { from: back(29), to: now, period: 'day', live: true };
  if (view === '1y') return { from: back(364), to: now, period: 'day', live: true };
  return { from: midnight, to: now, end: midnight + DAY, period: 'hour', live: true };
}

function pointsFor(el) {
  return Math.max(100, Math.min(POINTS_MAX, Math.round((el.clientWidth || 600) * 1.25)));
}

function kpiCards(k) {
  const cur = k.currency || '';
  const t = k.today || {};
  const cards = [
    card({ label: "Today's usage", value: n2(t.energy), unit: 'kWh', name: 'today', note: t.complete === false ? 'gaps in the data' : null }),
    card({
      label: 'Change vs yesterday', value: signed2(t.change), unit: 'kWh', name: 'change',
      cls: t.change >= 0.005 ? 'up' : t.change <= -0.005 ? 'down' : '',
      note: `${t.change_pct === null || t.change_pct === undefined ? 'no comparison' : signed2(t.change_pct) + ' %'}; yesterday to this time ${n2(t.previous)} kWh`,
    }),
    card({ label: 'Current power', value: n2(k.power && k.power.w), unit: 'W', name: 'power', note: k.power && k.power.ts ? `at ${dateTime(k.power.ts, k.tz)}` : 'no reading' }),
    card({
      label: 'Cost today', value: t.cost === undefined ? 'no tariff' : n2(t.cost), unit: t.cost === undefined ? '' : cur, name: 'cost',
      note: t.previous_cost !== undefined ? `yesterday to this time ${n2(t.previous_cost)} ${cur}` : 'set a tariff on the site',
    }),
  ];
  if (k.prepaid && k.balance) {
    const b = k.balance;
    cards.push(card({ label: 'Balance', value: n2(b.value), unit: cur, name: 'balance', note: b.avg_daily_use !== null && b.avg_daily_use !== undefined ? `using ${n2(b.avg_daily_use)} a day` : null }));
    cards.push(card({ label: 'Days left', value: b.days_left === null || b.days_left === undefined ? '–' : n2(b.days_left), unit: 'days', name: 'days-left', note: b.days_left === null ? 'no use seen' : 'at the average daily use' }));
  }
  return h('div', { class: 'cards', id: 'kpis' }, cards);
}

export async function render(main, [id], params) {
  const base = `/api/v1/meters/${enc(id)}`;
  let view = params.get('date') ? 'day' : (params.get('view') || 'today');
  let date = params.get('date');
  if (!VIEWS.some((v) => v.id === view) && view !== 'day') view = 'today';

  const title = setTitle(main, `Meter ${id}`);
  const sub = h('p', { class: 'sub', id: 'meter-sub' }, '');
  const kpiBox = h('div', { id: 'kpi-box' }, loading('Loading the meter…'));
  const mode = h('span', { class: 'live', id: 'live-mode' });
  const alertBox = h('div', { id: 'meter-alerts-box' });
  replace(main, title, sub, alertBox, kpiBox);

  let k;
  let meterInfo = null;
  try {
    [k, meterInfo] = await Promise.all([
      api(`${base}/kpi`),
      api('/api/v1/meters').then((r) => (r.meters || []).find((m) => m.id === id) || null).catch(() => null),
    ]);
  } catch (e) {
    if (e.status === 404 && !e.missing) {
      replace(kpiBox, empty(`No meter "${id}"`, 'It is neither registered nor has it sent a reading. ', h('a', { href: '#/registry' }, 'See the meters')));
      return null;
    }
    replace(kpiBox, errorState(e, () => render(main, [id], params)));
    return null;
  }
  const tz = k.tz || 'UTC';
  const subText = () => [
    meterInfo && meterInfo.gateway ? ['gateway ', h('a', { href: `#/gateways/${enc(meterInfo.gateway)}` }, meterInfo.gateway), ' · '] : null,
    `times in ${tz}`,
    meterInfo && meterInfo.last_seen ? ` · last reading ${ago(toMs(meterInfo.last_seen))}` : ' · no reading yet',
    k.prepaid ? ' · prepaid' : null,
  ];
  replace(sub, subText());
  // the meter's open alerts, if any (nothing shown without them or without an alerts API)
  const loadAlerts = async () => {
    let r;
    try {
      r = await api(`/api/v1/alerts${qs({ state: 'open', meter: id, limit: 5 })}`);
    } catch {
      return;
    }
    const list = (r && r.alerts) || [];
    replace(alertBox, list.length ? h('ul', { class: 'alerts', id: 'meter-alerts', 'aria-label': 'Open alerts of this meter' },
      list.map((a) => h('li', { dataset: { alert: String(a.id) } }, stateBadge(a.state),
        h('a', { class: 'what', href: `#/alerts/${enc(String(a.id))}` }, a.message || a.rule)))) : null);
  };
  loadAlerts();
  const noData = () => (!meterInfo || !meterInfo.last_reading)
    ? empty('No data yet', 'This meter has not delivered a reading yet. Its values show up here as soon as it does.') : null;
  replace(kpiBox, noData(), kpiCards(k));

  // toolbar
  const buttons = VIEWS.map((v) => h('button', { type: 'button', 'aria-pressed': String(v.id === view), dataset: { view: v.id }, onclick: () => setView(v.id, null) }, v.label));
  const picker = h('input', { type: 'date', id: 'day', class: 'date', max: localDate(Date.now(), tz), value: date || '' });
  picker.addEventListener('change', () => { if (picker.value) setView('day', picker.value); });
  const toolbar = h('div', { class: 'toolbar' },
    h('div', { class: 'seg', role: 'group', 'aria-label': 'Period' }, buttons),
    h('div', {}, h('label', { for: 'day' }, 'Day'), picker),
    mode);

  const usageEl = h('div', { class: 'chart', id: 'chart-usage' });
  const powerEl = h('div', { class: 'chart', id: 'chart-power' });
  const balanceEl = k.prepaid ? h('div', { class: 'chart', id: 'chart-balance' }) : null;
  const usageMsg = h('div', {});
  const powerMsg = h('div', {});
  const balanceMsg = h('div', {});
  const rangeText = h('p', { class: 'sub', id: 'range' });
  main.append(...[toolbar, rangeText,
    h('section', { class: 'panel', 'aria-labelledby': 'h-usage' }, h('h2', { id: 'h-usage' }, 'Usage'), usageMsg, usageEl),
    h('section', { class: 'panel', 'aria-labelledby': 'h-power' }, h('h2', { id: 'h-power' }, 'Power'), powerMsg, powerEl),
    balanceEl ? h('section', { class: 'panel', 'aria-labelledby': 'h-balance' }, h('h2', { id: 'h-balance' }, 'Balance'), balanceMsg, balanceEl) : null].filter(Boolean));

  let charts = [];
  try {
    charts = await Promise.all([makeChart(usageEl, 'Usage chart'), makeChart(powerEl, 'Power chart'),
      balanceEl ? makeChart(balanceEl, 'Balance chart') : null]);
  } catch (e) {
    replace(usageMsg, errorState(e));
  }
  const [cu, cp, cb] = charts;
  let gen = 0;

  async function loadCharts(fresh) {
    const my = ++gen;
    const r = viewRange(view, date, tz);
    replace(rangeText, `${dateTime(r.from, tz)} to ${dateTime(r.end && !r.live ? r.end : r.to, tz)}`);
    const pts = pointsFor(powerEl);
    const reqs = [
      api(`${base}/usage${qs({ period: r.period, from: r.from, to: r.end && !r.live ? r.end : r.to })}`),
      api(`${base}/series${qs({ quantity: 'power', from: r.from, to: r.to, points: pts })}`),
      k.prepaid ? api(`${base}/series${qs({ quantity: 'balance', from: r.from, to: r.to, points: pts })}`) : null,
    ];
    const res = await Promise.allSettled(reqs);
    if (my !== gen) return; // a newer view is loading
    const [u, p, b] = res;
    show(u, cu, usageMsg, (d) => (d.buckets || []).some((x) => x.energy !== null && x.energy !== undefined),
      (d) => usageOption({ buckets: d.buckets || [], unit: d.unit || 'kWh', tz, currency: d.totals && d.totals.currency, label: (t) => bucketLabel(t, tz, r.period) }),
      'No usage in this period', fresh);
    show(p, cp, powerMsg, (d) => (d.points || []).length > 0,
      (d) => lineOption({ points: d.points, unit: d.unit || 'W', tz, name: 'power', kind: 'power', min: r.from, max: r.end && !r.live ? r.end : r.to }), 'No power readings in this period', fresh);
    if (k.prepaid) {
      show(b, cb, balanceMsg, (d) => (d.points || []).length > 0,
        (d) => lineOption({ points: d.points, unit: k.currency || '', tz, name: 'balance', kind: 'balance', min: r.from, max: r.end && !r.live ? r.end : r.to }), 'No balance readings in this period', fresh);
    }
  }

  function show(settled, c, msgEl, hasData, option, emptyText, fresh) {
    if (!c) return;
    if (settled.status === 'rejected') {
      replace(msgEl, errorState(settled.reason));
      c.chart.clear();
      return;
    }
    const d = settled.value;
    if (!hasData(d)) {
      replace(msgEl, empty(emptyText, 'Pick another period or day.'));
    } else {
      replace(msgEl);
    }
    const opt = option(d);
    if (fresh) {
      c.chart.setOption(opt, { notMerge: true });
    } else {
      // keep the zoom: only the data changes
      c.chart.setOption({ xAxis: opt.xAxis, series: opt.series });
    }
  }

  function setView(v, d) {
    view = v;
    date = d;
    for (const b of buttons) b.setAttribute('aria-pressed', String(b.dataset.view === v));
    if (v !== 'day') picker.value = '';
    history.replaceState(null, '', `#/meters/${enc(id)}${v === 'day' ? `?date=${d}` : v === 'today' ? '' : `?view=${v}`}`);
    loadCharts(true);
  }

  async function refresh() {
    try {
      k = await api(`${base}/kpi`);
      meterInfo = await api('/api/v1/meters').then((r) => (r.meters || []).find((m) => m.id === id) || meterInfo).catch(() => meterInfo);
    } catch (e) {
      replace(kpiBox, errorState(e, refresh));
      return;
    }
    replace(kpiBox, noData(), kpiCards(k));
    replace(sub, subText());
    loadAlerts();
    if (viewRange(view, date, tz).live) await loadCharts(false);
  }

  // A reading on the stream shows its power at once; the refresh that follows brings the
  // sums (usage, cost), which need the server.
  let events = 0;
  const onEvent = (ev) => {
    if (ev.type !== 'reading' || !ev.data || ev.data.meter !== id) return;
    mode.dataset.events = String(++events);
    const v = ev.data.values || {};
    if (typeof v.power !== 'number' || !ev.data.ts) return;
    if (k.power && k.power.ts && toMs(k.power.ts) > toMs(ev.data.ts)) return; // older than shown
    k.power = { w: v.power, ts: ev.data.ts };
    const el = kpiBox.querySelector('[data-kpi="power"]');
    if (!el || !el.firstChild) return;
    el.firstChild.textContent = n2(v.power);
    const note = el.parentElement && el.parentElement.querySelector('.note');
    if (note) note.textContent = `at ${dateTime(ev.data.ts, k.tz)}`;
  };

  await loadCharts(true);
  const lv = live({
    onTick: refresh,
    onEvent,
    match: (ev) => !ev.data || typeof ev.data !== 'object' || ev.data.meter === id || (Array.isArray(ev.data.meters) && ev.data.meters.includes(id)) || (Array.isArray(ev.data.readings) && ev.data.readings.some((x) => x.meter === id)),
    onMode: (t) => { mode.textContent = t; },
  });
  return () => {
    lv.stop();
    for (const c of charts) if (c) c.dispose();
  };
}
