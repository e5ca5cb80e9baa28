// Gateways: the list (GET /api/v1/gateways: status, last seen, queue depth, oldest unsent
// age) and one gateway (GET /api/v1/gateways/{id}: its last health message with poll
// statistics per meter, its streams and losses), with commands for operators and admins
// (POST /api/v1/gateways/{id}/commands: poll_now, maintenance on/off) and their replies.

import { api, enc, canOperate, fleetTz } from './api.js';
import { h, replace, loading, empty, errorState, setTitle, badge, message, announce } from './ui.js';
import { n2, int, dateTime, ago, age, toMs } from './fmt.js';
import { live } from './live.js';

function statusBadge(s) {
  if (s === 'online') return badge('ok', 'online');
  if (s === 'offline') return badge('bad', 'offline');
  return badge('muted', 'unknown');
}

function gwRow(g, tz, now) {
  return h('tr', { dataset: { gateway: g.id } },
    h('th', { scope: 'row' }, h('a', { href: `#/gateways/${enc(g.id)}` }, g.id)),
    h('td', {}, statusBadge(g.status)),
    h('td', { title: dateTime(g.last_seen, tz) }, g.last_seen ? ago(toMs(g.last_seen), now) : 'never'),
    h('td', { class: 'num' }, int(g.queue_depth)),
    h('td', { class: 'num' }, g.oldest_unsent_age_s === null || g.oldest_unsent_age_s === undefined ? '–' : age(g.oldest_unsent_age_s)),
    h('td', { class: 'num' }, int(g.lost)),
    h('td', { class: 'num' }, int(g.gaps)));
}

async function renderList(main) {
  const body = h('div', {}, loading());
  const mode = h('p', { class: 'live' });
  replace(main, setTitle(main, 'Gateways'), body, mode);
  const load = async () => {
    let r, tz;
    try {
      [r, tz] = await Promise.all([api('/api/v1/gateways'), fleetTz()]);
    } catch (e) {
      replace(body, errorState(e, load));
      return;
    }
    const gws = r.gateways || [];
    if (!gws.length) {
      replace(body, empty('No gateways yet', 'A gateway appears here once it has sent its first message to meter-cloud.'));
      return;
    }
    const now = Date.now();
    replace(body, h('div', { class: 'table-wrap' }, h('table', { id: 'gateways', 'aria-label': 'Gateways' },
      h('thead', {}, h('tr', {}, ['Gateway', 'Status', 'Last seen'].map((t) => h('th', { scope: 'col' }, t)),
        ['Queue depth', 'Oldest unsent', 'Lost', 'Gaps'].map((t) => h('th', { scope: 'col', class: 'num' }, t)))),
      h('tbody', {}, gws.map((g) => gwRow(g, tz, now))))),
    h('p', { class: 'hint' }, `Times in ${tz}. Queue depth and oldest unsent come from each gateway's last health message.`));
  };
  await load();
  const lv = live({ onTick: load, onMode: (t) => { mode.textContent = t; } });
  return () => lv.stop();
}

function meterHealthTable(meters) {
  return h('div', { class: 'table-wrap' }, h('table', { id: 'meter-health', 'aria-label': 'Poll statistics per meter' },
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Meter'), h('th', { scope: 'col' }, 'State'),
      ['Polls', 'Failures', 'Timeouts', 'CRC errors', 'Exceptions', 'Round trip (ms)'].map((t) => h('th', { scope: 'col', class: 'num' }, t)))),
    h('tbody', {}, meters.map((m) => h('tr', { dataset: { meter: m.id } },
      h('th', { scope: 'row' }, h('a', { href: `#/meters/${enc(m.id)}` }, m.id)),
      h('td', {}, m.online === false ? badge('bad', 'offline') : badge('ok', 'online')),
      h('td', { class: 'num' }, int(m.polls)),
      h('td', { class: 'num' }, h('span', { class: m.failures ? 'up' : '' }, int(m.failures))),
      h('td', { class: 'num' }, int(m.timeouts)),
      h('td', { class: 'num' }, int(m.crc)),
      h('td', { class: 'num' }, int(m.exceptions)),
      h('td', { class: 'num' }, typeof m.rtt_ms === 'number' ? n2(m.rtt_ms) : '–'))))));
}

async function renderOne(main, id) {
  const body = h('div', {}, loading());
  const mode = h('p', { class: 'live' });
  const reply = h('div', { id: 'cmd-reply', 'aria-live': 'polite' });
  replace(main, setTitle(main, `Gateway ${id}`), h('p', { class: 'sub' }, h('a', { href: '#/gateways' }, 'All gateways')), body, mode);
  const operate = canOperate();
  let busy = false;

  async function send(cmd, args, label) {
    if (busy) return;
    busy = true;
    for (const b of main.querySelectorAll('button[data-cmd]')) b.disabled = true;
    replace(reply, message('', `${label}: waiting for the gateway…`));
    try {
      const r = await api(`/api/v1/gateways/${enc(id)}/commands`, { method: 'POST', body: { cmd, args } });
      const ok = r.ok !== false;
      const detail = JSON.stringify(ok ? r.result : r.error, null, 2);
      replace(reply, message(ok ? 'ok' : 'bad', `${label}: ${ok ? 'done' : 'refused by the gateway'} (command ${r.id || '?'})`, detail));
      announce(`${label}: ${ok ? 'done' : 'refused'}`);
    } catch (e) {
      const text = e.status === 504 ? `${label}: no reply from the gateway in time. ${e.message}`
        : e.status === 403 ? `${label}: not allowed. ${e.message}` : `${label}: failed. ${e.message}`;
      replace(reply, message('bad', text));
    } finally {
      busy = false;
      for (const b of main.querySelectorAll('button[data-cmd]')) b.disabled = false;
      setTimeout(load, 500);
    }
  }

  const commands = operate
    ? h('section', { class: 'panel', 'aria-labelledby': 'h-cmd' }, h('h2', { id: 'h-cmd' }, 'Commands'),
      h('div', { class: 'actions' },
        h('button', { type: 'button', id: 'poll-now', dataset: { cmd: 'poll_now' }, onclick: () => send('poll_now', {}, 'Poll now') }, 'Poll now'),
        h('button', { type: 'button', class: 'secondary', id: 'maint-on', dataset: { cmd: 'maintenance' }, onclick: () => send('maintenance', { on: true }, 'Maintenance on') }, 'Maintenance on'),
        h('button', { type: 'button', class: 'secondary', id: 'maint-off', dataset: { cmd: 'maintenance' }, onclick: () => send('maintenance', { on: false }, 'Maintenance off') }, 'Maintenance off')),
      h('p', { class: 'hint' }, 'Maintenance: the gateway stops publishing and keeps queueing readings until it is turned off.'),
      reply)
    : h('p', { class: 'hint', id: 'cmd-none' }, 'Commands to gateways need the operator or admin role.');

  const load = async () => {
    let g, tz;
    try {
      [g, tz] = await Promise.all([api(`/api/v1/gateways/${enc(id)}`), fleetTz()]);
    } catch (e) {
      if (e.status === 404 && !e.missing) replace(body, empty(`No gateway "${id}"`, 'It has not sent anything to meter-cloud.'));
      else replace(body, errorState(e, load));
      return;
    }
    const hl = g.health && typeof g.health === 'object' ? g.health : null;
    const now = Date.now();
    const facts = h('dl', { class: 'facts', id: 'gw-facts' },
      h('dt', {}, 'Status'), h('dd', {}, statusBadge(g.status), g.status_since ? ` since ${dateTime(g.status_since, tz)}` : ''),
      h('dt', {}, 'Last seen'), h('dd', {}, g.last_seen ? `${dateTime(g.last_seen, tz)} (${ago(toMs(g.last_seen), now)})` : 'never'),
      h('dt', {}, 'Queue depth'), h('dd', { dataset: { fact: 'queue_depth' } }, int(g.queue_depth)),
      h('dt', {}, 'Oldest unsent'), h('dd', {}, g.oldest_unsent_age_s === null || g.oldest_unsent_age_s === undefined ? '–' : age(g.oldest_unsent_age_s)),
      h('dt', {}, 'Health message'), h('dd', {}, g.health_ts ? `${dateTime(g.health_ts, tz)} (${ago(toMs(g.health_ts), now)})` : 'none yet'),
      hl && typeof hl.maintenance === 'boolean' ? [h('dt', {}, 'Maintenance'), h('dd', {}, hl.maintenance ? 'on' : 'off')] : null,
      h('dt', {}, 'Received'), h('dd', {}, `${int(g.received)} readings, ${int(g.duplicates)} duplicates`),
      h('dt', {}, 'Lost / gaps'), h('dd', {}, `${int(g.lost)} lost, ${int(g.gaps)} data gaps`));
    const meters = hl && Array.isArray(hl.meters) ? hl.meters : [];
    replace(body,
      h('section', { class: 'panel', 'aria-label': 'State' }, facts),
      commands,
      h('h2', {}, 'Poll errors per meter'),
      meters.length ? meterHealthTable(meters)
        : empty('No poll statistics yet', hl ? 'The last health message lists no meters.' : 'The gateway has not sent a health message yet (it sends one every minute).'),
      g.losses && g.losses.length ? [h('h2', {}, 'Reported losses'), h('div', { class: 'table-wrap' }, h('table', { 'aria-label': 'Reported losses' },
        h('thead', {}, h('tr', {}, ['When', 'Seq range', 'Count', 'Reason'].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, g.losses.map((l) => h('tr', {}, h('td', {}, dateTime(l.ts, tz)), h('td', {}, `${l.first}–${l.last}`), h('td', {}, int(l.count)), h('td', {}, l.reason))))))] : null);
  };
  await load();
  const lv = live({ onTick: () => (busy ? null : load()), match: (ev) => !ev.data || ev.data.gw === id || ev.data.gateway === id, onMode: (t) => { mode.textContent = t; } });
  return () => lv.stop();
}

export async function render(main, [id]) {
  return id ? renderOne(main, id) : renderList(main);
}
