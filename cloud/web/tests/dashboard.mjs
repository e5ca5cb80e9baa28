// The dashboard in a real browser: Debian's chromium driven by playwright-core (never a
// browser of its own), against a running meter-cloud. Started by
// tests/integration/test_dashboard.py, which starts the stack and passes:
//   MLK_BASE      http://127.0.0.1:PORT
//   MLK_USER, MLK_PASSWORD   an admin to log in as ("" when the server has no login)
//   MLK_SHOTS     folder for the screenshots
//   MLK_REPORT    file to write the JSON report to
//   MLK_METER     the meter to open; MLK_GATEWAY the gateway to command
//   MLK_SITE      a site to register a meter at; MLK_REGION, MLK_AREAS (comma-separated)
//   MLK_ALERTS    "1" when the server has alert rules that fire; MLK_ACK_RULE the rule of an
//                 alert to acknowledge; MLK_VIEWER, MLK_VIEWER_PASSWORD a viewer to log in as
// Checks what a person would see, compares it with what the API says, and fails on any
// console error or page error except the few a step expects (listed in the report).
// Exit status 0 when every check passed; the report lists each check either way.

import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';

const env = (k, d) => (process.env[k] === undefined ? d : process.env[k]);
const BASE = env('MLK_BASE');
const USER = env('MLK_USER', '');
const PASSWORD = env('MLK_PASSWORD', '');
const SHOTS = env('MLK_SHOTS', 'screenshots');
const REPORT = env('MLK_REPORT', 'dashboard-report.json');
const METER = env('MLK_METER', 'house');
const GATEWAY = env('MLK_GATEWAY', 'gw-01');
const PREPAID = env('MLK_PREPAID', '');
const SITE = env('MLK_SITE', '');
const REGION = env('MLK_REGION', '');
const AREAS = env('MLK_AREAS', '').split(',').filter(Boolean);
const ALERTS = env('MLK_ALERTS', '') === '1';
const ACK_RULE = env('MLK_ACK_RULE', '');
const VIEWER = env('MLK_VIEWER', '');
const VIEWER_PASSWORD = env('MLK_VIEWER_PASSWORD', '');
const YEAR_POINTS_MAX = 3000;
const T = 20000;

const report = { checks: [], console: [], allowed: [], requests: {}, screenshots: [], notes: [] };
let failed = 0;
function check(name, ok, detail) {
  report.checks.push({ name, ok: !!ok, detail });
  if (!ok) failed++;
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}${detail !== undefined ? ': ' + (typeof detail === 'string' ? detail : JSON.stringify(detail)) : ''}`);
}

// Formatting as the page does it (fmt.js), in the locale the browser is given.
const nf2 = new Intl.NumberFormat('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const n2 = (v) => (typeof v === 'number' && Number.isFinite(v) ? nf2.format(v) : '–');
const signed2 = (v) => (typeof v !== 'number' ? '–' : v > 0 ? '+' + nf2.format(v) : v < 0 ? '−' + nf2.format(-v) : nf2.format(v));

fs.mkdirSync(SHOTS, { recursive: true });

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
});

// A console error is allowed only while a step expects it: {phase, status, url part}.
let phase = 'start';
let allowed = [];
function allowedError(msg) {
  const loc = msg.location();
  const text = msg.text();
  const st = (text.match(/status of (\d{3})/) || [])[1];
  return allowed.find((a) => (!a.status || String(a.status) === st) && (!a.url || (loc.url || '').includes(a.url)));
}
// Endpoints the dashboard asks for that this server may not have yet: their 404 is the
// "not available" path of the page, listed in the report as missing API.
const OPTIONAL = ['/api/v1/alerts'];

function watch(page, label) {
  page.on('console', (msg) => {
    if (msg.type() !== 'error' && msg.type() !== 'warning') return;
    const entry = { page: label, phase, type: msg.type(), text: msg.text(), url: msg.location().url };
    const opt = OPTIONAL.find((u) => (entry.url || '').includes(u) && /status of 404/.test(entry.text));
    const a = opt ? { why: `optional endpoint ${opt} is missing` } : allowedError(msg);
    if (msg.type() === 'warning') { report.notes.push(entry); return; }
    if (a) report.allowed.push({ ...entry, why: a.why });
    else report.console.push(entry);
  });
  page.on('pageerror', (err) => report.console.push({ page: label, phase, type: 'pageerror', text: String(err && err.stack || err) }));
  page.on('response', async (res) => {
    const u = new URL(res.url());
    if (!u.pathname.startsWith('/api/')) return;
    const key = u.pathname.replace(/\/meters\/[^/]+\//, '/meters/{id}/').replace(/\/gateways\/[^/]+(\/|$)/, '/gateways/{id}$1');
    (report.requests[key] ||= []).push(res.status());
  });
}

async function shot(page, name) {
  const file = path.join(SHOTS, `${name}.png`);
  await page.waitForTimeout(300); // charts finish drawing
  await page.screenshot({ path: file, fullPage: true });
  report.screenshots.push(file);
}

async function login(page, user = USER, password = PASSWORD) {
  await page.goto(BASE + '/');
  await page.waitForURL(/#\/login$/, { timeout: T });
  await page.locator('#username').waitFor({ timeout: T });
  if (!user) return false;
  await page.fill('#username', user);
  await page.fill('#password', password);
  await page.click('button[type=submit]');
  await page.waitForURL(/#\/$/, { timeout: T });
  await page.locator('[data-kpi="gateways-online"]').waitFor({ timeout: T });
  return true;
}

// The API as the page's user sees it (the page's own token).
async function apiGet(page, p) {
  return page.evaluate(async (p) => {
    const s = JSON.parse(sessionStorage.getItem('meterlink.session') || 'null');
    const r = await fetch(p, { headers: s && s.token ? { Authorization: 'Bearer ' + s.token } : {} });
    return { status: r.status, body: await r.json().catch(() => null) };
  }, p);
}

async function eventually(fn, ms = 15000) {
  const end = Date.now() + ms;
  let last;
  for (;;) {
    last = await fn();
    if (last.ok || Date.now() > end) return last;
    await new Promise((r) => setTimeout(r, 500));
  }
}

// Reads GET /api/v1/stream from here (not the page), with token: every "reading" event's
// data goes to events. Returns {stop}.
function streamReader(token, events) {
  const ctl = new AbortController();
  (async () => {
    const res = await fetch(BASE + '/api/v1/stream', { headers: { Authorization: 'Bearer ' + token, Accept: 'text/event-stream' }, signal: ctl.signal });
    const dec = new TextDecoder();
    let buf = '';
    let type = 'message';
    for await (const chunk of res.body) {
      buf += dec.decode(chunk, { stream: true });
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i).replace(/\r$/, '');
        buf = buf.slice(i + 1);
        if (line.startsWith('event:')) type = line.slice(6).trim();
        else if (line.startsWith('data:') && type === 'reading') {
          try { events.push({ at: Date.now(), ...JSON.parse(line.slice(5)) }); } catch { /* not JSON */ }
        } else if (line === '') type = 'message';
      }
    }
  })().catch(() => {});
  return { stop: () => ctl.abort() };
}

const kpiText = (page, name) => page.locator(`[data-kpi="${name}"]`).evaluate((el) => el.firstChild.textContent.trim());

async function desktop() {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: 'en-US' });
  const page = await ctx.newPage();
  watch(page, 'desktop');

  // -- login
  phase = 'login';
  await page.goto(BASE + '/');
  await page.waitForURL(/#\/login$/, { timeout: T });
  await shot(page, 'desktop-login');
  // a wrong password: a clear message, and the 401 it costs is expected
  allowed = [{ status: 401, url: '/api/v1/login', why: 'wrong password on purpose' }];
  if (USER) {
    await page.fill('#username', USER);
    await page.fill('#password', 'not-the-password');
    await page.click('button[type=submit]');
    const bad = await page.locator('#login-msg .msg.bad').textContent({ timeout: T });
    check('login: wrong password is refused with a message', /wrong user name or password/i.test(bad), bad);
  }
  allowed = [];
  const loggedIn = await login(page);
  check('login: the admin logs in and sees the overview', loggedIn || !USER, USER ? page.url() : 'no login on this server');
  if (!USER) report.notes.push('the server has no login: login steps skipped');

  // -- overview counts against the API
  phase = 'overview';
  const ov = await eventually(async () => {
    const [g, m] = [await apiGet(page, '/api/v1/gateways'), await apiGet(page, '/api/v1/meters')];
    const now = Date.now();
    const gws = g.body.gateways;
    const online = gws.filter((x) => x.status === 'online').length;
    const rep = m.body.meters.filter((x) => (typeof x.reporting === 'boolean' ? x.reporting
      : x.last_reading && x.last_reading.ok !== false && x.last_seen && now - Date.parse(x.last_seen) < 900000)).length;
    const want = { 'gateways-online': String(online), 'gateways-offline': String(gws.length - online),
      'meters-reporting': String(rep), 'meters-silent': String(m.body.meters.length - rep) };
    const seen = {};
    for (const k of Object.keys(want)) seen[k] = await kpiText(page, k);
    return { ok: JSON.stringify(seen) === JSON.stringify(want), seen, want };
  });
  check('overview: gateway and meter counts match the API', ov.ok, { seen: ov.seen, api: ov.want });
  const alerts = await kpiText(page, 'alerts');
  check('overview: open alerts shown ("No alerts" without an alerts API)', alerts.length > 0, alerts);
  if (ALERTS) {
    const oa = await eventually(async () => {
      const r = await apiGet(page, '/api/v1/alerts?state=open&limit=5');
      const card = await kpiText(page, 'alerts');
      const listed = await page.locator('#open-alerts li[data-alert]').evaluateAll((ls) => ls.map((l) => Number(l.dataset.alert)));
      const want = { card: String(r.body.total), listed: r.body.alerts.map((a) => a.id) };
      return { ok: r.status === 200 && r.body.total > 0 && JSON.stringify({ card, listed }) === JSON.stringify(want), seen: { card, listed }, want };
    });
    check('overview: the open-alerts count and list match GET /api/v1/alerts?state=open', oa.ok, { seen: oa.seen, api: oa.want });
    const href = await page.locator('#open-alerts li a.what').first().getAttribute('href');
    check('overview: each open alert links to its page', /^#\/alerts\/\d+$/.test(href || ''), href);
  }
  const todayTotal = await kpiText(page, 'today-energy');
  check("overview: today's energy has two decimals", /^\d[\d,]*\.\d\d$/.test(todayTotal), todayTotal);
  await shot(page, 'desktop-overview');

  // -- meter page: KPIs as the page's last KPI answer says, and as the API says now
  phase = 'meter';
  let lastKpi = null;
  const seriesPoints = [];
  page.on('response', async (res) => {
    const u = new URL(res.url());
    const m = u.pathname.match(/^\/api\/v1\/meters\/([^/]+)\/(kpi|series|usage)$/);
    if (!m || !res.ok()) return;
    const meter = decodeURIComponent(m[1]);
    const b = await res.json().catch(() => null);
    if (!b) return;
    if (m[2] === 'kpi') { if (meter === (page.currentMeter || METER)) lastKpi = b; return; }
    if (m[2] === 'series') seriesPoints.push({ at: Date.now(), meter, q: u.searchParams.get('quantity'), points: b.points.length, asked: Number(u.searchParams.get('points')) });
    else seriesPoints.push({ at: Date.now(), meter, q: 'usage', period: u.searchParams.get('period'), points: b.buckets.length });
  });
  await page.click(`a[href="#/meters/${METER}"]`);
  await page.locator('[data-kpi="today"]').waitFor({ timeout: T });
  await page.waitForFunction(() => {
    const el = document.getElementById('chart-power');
    const c = el && window.echarts && window.echarts.getInstanceByDom(el);
    const o = c && c.getOption();
    return !!(o && o.series && o.series[0] && o.series[0].data.length > 0);
  }, null, { timeout: T });
  const kp = await eventually(async () => {
    const k = lastKpi;
    const want = { today: n2(k.today.energy), change: signed2(k.today.change), power: n2(k.power.w),
      cost: k.today.cost === undefined ? 'no tariff' : n2(k.today.cost) };
    const seen = {};
    for (const name of Object.keys(want)) seen[name] = await kpiText(page, name);
    return { ok: JSON.stringify(seen) === JSON.stringify(want), seen, want };
  }, 5000);
  check('meter: KPI cards show the KPI answer (two decimals)', kp.ok, { seen: kp.seen, api: kp.want });
  const now = await apiGet(page, `/api/v1/meters/${METER}/kpi`);
  const shown = Number((await kpiText(page, 'today')).replace(/,/g, ''));
  check("meter: today's usage agrees with the API now (±0.05 kWh)", Math.abs(shown - now.body.today.energy) <= 0.05,
    { shown, api: now.body.today.energy });
  if (ALERTS) {
    const ma = await eventually(async () => {
      const r = await apiGet(page, `/api/v1/alerts?state=open&meter=${METER}`);
      const shown = await page.locator('#meter-alerts li[data-alert]').evaluateAll((ls) => ls.map((l) => Number(l.dataset.alert)));
      return { ok: r.body.total > 0 && JSON.stringify(shown) === JSON.stringify(r.body.alerts.map((a) => a.id)), shown, api: r.body.alerts.map((a) => a.id) };
    });
    check("meter: the meter's open alerts are shown with links", ma.ok, ma);
  }
  check('meter: times are in the site zone the API gives', (await page.locator('#meter-sub').textContent()).includes(now.body.tz), now.body.tz);
  await shot(page, 'desktop-meter');

  // periods: each loads its usage bars and power line
  for (const [view, period] of [['7d', 'hour'], ['30d', 'day'], ['1y', 'day'], ['today', 'hour']]) {
    const t0 = Date.now();
    await page.click(`button[data-view="${view}"]`);
    await page.waitForFunction((t0) => true, t0);
    const got = await eventually(async () => {
      const u = seriesPoints.filter((s) => s.at >= t0 && s.q === 'usage');
      const p = seriesPoints.filter((s) => s.at >= t0 && s.q === 'power');
      return { ok: u.length > 0 && p.length > 0, usage: u.at(-1), power: p.at(-1) };
    }, 10000);
    const pressed = await page.locator(`button[data-view="${view}"]`).getAttribute('aria-pressed');
    check(`meter: ${view} view loads usage (${period}) and power`, got.ok && got.usage.period === period && pressed === 'true',
      { usage: got.usage, power: got.power, pressed });
    if (view === '1y') await shot(page, 'desktop-meter-1y');
  }
  // the date picker: yesterday, hourly bars
  {
    const t0 = Date.now();
    const day = await page.evaluate(() => {
      const el = document.getElementById('day');
      const d = new Date(Date.parse(el.max + 'T12:00:00Z') - 86400000).toISOString().slice(0, 10);
      el.value = d;
      el.dispatchEvent(new Event('change', { bubbles: true }));
      return d;
    });
    const got = await eventually(async () => ({ ok: seriesPoints.some((s) => s.at >= t0 && s.q === 'usage') }), 10000);
    check('meter: the date picker shows one day', got.ok && page.url().includes(`date=${day}`), page.url());
  }
  // zoom: the charts have dataZoom (inside + slider)
  const dz = await page.evaluate(() => window.echarts.getInstanceByDom(document.getElementById('chart-usage')).getOption().dataZoom.map((d) => d.type));
  check('meter: charts zoom and scroll (dataZoom inside + slider)', dz.includes('inside') && dz.includes('slider'), dz);
  // live: the KPIs refresh without a reload (SSE or every 10 s)
  {
    const before = report.requests['/api/v1/meters/{id}/kpi'].length;
    await page.click('button[data-view="today"]');
    await page.waitForTimeout(11500);
    const after = report.requests['/api/v1/meters/{id}/kpi'].length;
    const mode = await page.locator('#live-mode').textContent();
    check('meter: live updates without reloading', after > before, { kpiRequestsBefore: before, after, mode });
  }
  // live via SSE: a reading on the stream changes the current power on the page before the
  // page asks for the KPIs again, and the value is the one the stream carried
  {
    const token = await page.evaluate(() => JSON.parse(sessionStorage.getItem('meterlink.session')).token);
    const seen = [];
    const rd = streamReader(token, seen);
    await page.evaluate(() => {
      // count the page's KPI requests as they start (the page calls the global fetch)
      if (window.__kpiStarted === undefined) {
        window.__kpiStarted = 0;
        const f = window.fetch;
        window.fetch = (u, o) => {
          if (/\/api\/v1\/meters\/[^/]+\/kpi(\?|$)/.test(String(u))) window.__kpiStarted++;
          return f(u, o);
        };
      }
    });
    let got = null;
    const tries = [];
    for (let i = 0; i < 4 && !got; i++) {
      const r = await page.evaluate(async (ms) => {
        const el = () => document.querySelector('[data-kpi="power"]');
        const mode = document.getElementById('live-mode');
        const start = { text: el().firstChild.textContent, kpi: window.__kpiStarted, events: Number(mode.dataset.events || 0) };
        return new Promise((resolve) => {
          const obs = new MutationObserver(() => {
            const e = el();
            const text = e && e.firstChild ? e.firstChild.textContent : null;
            if (text === null || text === start.text) return;
            obs.disconnect();
            resolve({ start, text, kpi: window.__kpiStarted, events: Number(mode.dataset.events || 0), mode: mode.textContent });
          });
          obs.observe(document.getElementById('kpi-box'), { subtree: true, childList: true, characterData: true });
          setTimeout(() => { obs.disconnect(); resolve({ start, timeout: true }); }, ms);
        });
      }, 15000);
      tries.push(r);
      if (!r.timeout && r.kpi === r.start.kpi && r.events > r.start.events) got = r;
    }
    await page.waitForTimeout(300); // the reader has the event too
    rd.stop();
    // the counter does count: the refresh that follows the event asks for the KPIs
    const counted = got ? await page.waitForFunction((n) => window.__kpiStarted > n, got.kpi, { timeout: T }).then(() => true, () => false) : false;
    check('meter: after the streamed reading the page refreshes its KPIs (the fetch counter works)', counted);
    const streamed = seen.filter((e) => e.meter === METER && e.values && typeof e.values.power === 'number').map((e) => n2(e.values.power));
    check('meter: a reading pushed by the SSE stream updates the current power without a KPI fetch or reload',
      !!got && streamed.includes(got.text) && /live/i.test(got.mode),
      { change: got, streamedValues: streamed.slice(-5), tries: tries.length });
  }

  // -- a prepaid meter with a year of hourly history: balance cards and chart, and the
  // points a 1-year view fetches
  if (PREPAID) {
    phase = 'prepaid';
    page.currentMeter = PREPAID;
    lastKpi = null;
    await page.evaluate((m) => { location.hash = `#/meters/${m}`; }, PREPAID);
    await page.locator('[data-kpi="balance"]').waitFor({ timeout: T });
    const pk = await eventually(async () => {
      const k = lastKpi;
      if (!k) return { ok: false };
      const want = { today: n2(k.today.energy), balance: n2(k.balance.value), 'days-left': n2(k.balance.days_left) };
      const seen = {};
      for (const name of Object.keys(want)) seen[name] = await kpiText(page, name);
      return { ok: JSON.stringify(seen) === JSON.stringify(want), seen, want };
    }, 5000);
    check('prepaid meter: balance and days left show the KPI answer', pk.ok, { seen: pk.seen, api: pk.want });
    await page.waitForFunction(() => {
      const c = window.echarts && window.echarts.getInstanceByDom(document.getElementById('chart-balance'));
      const o = c && c.getOption();
      return !!(o && o.series && o.series[0].data.length > 0);
    }, null, { timeout: T });
    check('prepaid meter: the balance chart has data', true);
    await shot(page, 'desktop-meter-prepaid');
    const t0 = Date.now();
    await page.click('button[data-view="1y"]');
    const got = await eventually(async () => {
      const r = seriesPoints.filter((s) => s.at >= t0 && s.meter === PREPAID);
      return { ok: ['usage', 'power', 'balance'].every((q) => r.some((x) => x.q === q)), r };
    }, 15000);
    await page.waitForTimeout(300);
    const year = seriesPoints.filter((s) => s.at >= t0 && s.meter === PREPAID);
    const total = year.reduce((s, x) => s + x.points, 0);
    const bound = year.reduce((s, x) => s + (x.asked || x.points), 0);
    report.yearPoints = { total, bound, requests: year };
    check(`meter: a 1-year view fetches at most ${YEAR_POINTS_MAX} points in all (a year of hourly data)`,
      got.ok && total > 365 && total <= YEAR_POINTS_MAX && bound <= YEAR_POINTS_MAX,
      { total, askedAtMost: bound, requests: year.map((x) => `${x.q}:${x.points}${x.asked ? '/' + x.asked : ''}`) });
    const bars = await page.evaluate(() => window.echarts.getInstanceByDom(document.getElementById('chart-usage')).getOption().series[0].data.filter((v) => v !== null).length);
    check('meter: the 1-year usage chart has a bar for (nearly) every day', bars >= 360, bars);
    await shot(page, 'desktop-meter-prepaid-1y');
    page.currentMeter = METER;
  } else {
    report.notes.push('no prepaid meter given: balance and 1-year points not checked');
  }

  // -- alerts: the list as the API has it, acknowledge one, its page with notifications
  if (ALERTS) {
    phase = 'alerts';
    await page.click('a[data-nav="alerts"]');
    await page.locator('#alerts tr[data-alert]').first().waitFor({ timeout: T });
    const al = await eventually(async () => {
      const r = await apiGet(page, '/api/v1/alerts?state=open&limit=200');
      const rows = await page.locator('#alerts tr[data-alert]').evaluateAll((ts) => ts.map((t) => [Number(t.dataset.alert), t.dataset.state]));
      const want = r.body.alerts.map((a) => [a.id, a.state]);
      return { ok: JSON.stringify(rows) === JSON.stringify(want), rows, want };
    });
    check('alerts: the page lists the open alerts with their states as the API does', al.ok, { rows: al.rows, api: al.want });
    await shot(page, 'desktop-alerts');
    const list = (await apiGet(page, '/api/v1/alerts?state=firing&limit=200')).body.alerts;
    const target = list.find((a) => a.rule === ACK_RULE) || list[0];
    const btn = page.locator(`#alerts tr[data-alert="${target.id}"] button[data-ack]`);
    check('alerts: a firing alert has an acknowledge button for an admin', (await btn.count()) === 1, target.id);
    await btn.click();
    const ok = await page.locator('#alert-msg .msg.ok').textContent({ timeout: T });
    const acked = await eventually(async () => {
      const r = await apiGet(page, `/api/v1/alerts/${target.id}`);
      const row = await page.locator(`#alerts tr[data-alert="${target.id}"]`).getAttribute('data-state').catch(() => null);
      return { ok: r.body.state === 'acknowledged' && r.body.acknowledged_by === USER && row === 'acknowledged', api: r.body.state, by: r.body.acknowledged_by, row };
    });
    check('alerts: acknowledging shows a message, and the API and the row say acknowledged', /acknowledged/.test(ok) && acked.ok, { message: ok, ...acked });
    await page.click(`#alerts tr[data-alert="${target.id}"] a`);
    await page.locator('#alert-facts').waitFor({ timeout: T });
    const facts = await page.locator('#alert-facts').textContent();
    check('alert page: state, rule and who acknowledged', facts.includes('acknowledged') && facts.includes(target.rule) && facts.includes(USER), facts.slice(0, 200));
    await shot(page, 'desktop-alert');
    await page.click('a[data-nav="alerts"]');
    await page.click('button[data-filter="resolved"]');
    const none = await page.locator('#alerts-box [data-state="empty"]').textContent({ timeout: T });
    const resolved = (await apiGet(page, '/api/v1/alerts?state=resolved')).body.total;
    check('alerts: an empty list has an empty state', resolved > 0 || /No resolved alerts/.test(none), { none, resolved });
    await shot(page, 'desktop-alerts-empty');
  } else {
    report.notes.push('no alert rules on this server: the alerts page was not checked');
  }

  // -- gateways: list, one gateway, poll now
  phase = 'gateways';
  await page.click('a[data-nav="gateways"]');
  await page.locator(`#gateways tr[data-gateway="${GATEWAY}"]`).waitFor({ timeout: T });
  await shot(page, 'desktop-gateways');
  await page.click(`a[href="#/gateways/${GATEWAY}"]`);
  await page.locator('#poll-now').waitFor({ timeout: T });
  await page.click('#poll-now');
  const reply = page.locator('#cmd-reply .msg.ok, #cmd-reply .msg.bad');
  await reply.waitFor({ timeout: 15000 });
  const replyText = await reply.textContent();
  check('gateway: "poll now" shows the gateway\'s reply', /Poll now: done/.test(replyText), replyText.slice(0, 300));
  await shot(page, 'desktop-gateway');

  // -- registry: register a meter; an invalid area is rejected with the API's message
  phase = 'registry';
  await page.click('a[data-nav="registry"]');
  await page.locator('#registry').waitFor({ timeout: T });
  await page.fill('#search', METER);
  const rows = await page.locator('#registry tbody tr').count();
  check('registry: search narrows the list', rows >= 1 && (await page.locator('#count').textContent()).startsWith(`${rows} of`), rows);
  await page.fill('#search', '');
  await shot(page, 'desktop-registry');
  await page.click('#new-meter');
  await page.locator('#meter-form').waitFor({ timeout: T });
  await page.fill('#f-id', 'dash-new-1');
  await page.fill('#f-gateway', GATEWAY);
  const siteIsSelect = await page.locator('#f-site').evaluate((el) => el.tagName === 'SELECT');
  if (siteIsSelect) await page.selectOption('#f-site', SITE); else await page.fill('#f-site', SITE);
  const regionIsSelect = await page.locator('#f-region').evaluate((el) => el.tagName === 'SELECT');
  check('registry: region and area are choices from GET /api/v1/registry/options', regionIsSelect, { regionIsSelect });
  if (regionIsSelect) {
    await page.selectOption('#f-region', REGION);
    const areas = await page.locator('#f-area option').evaluateAll((os) => os.map((o) => o.value).filter(Boolean));
    check('registry: the area list offers only the region\'s areas', JSON.stringify(areas) === JSON.stringify(AREAS), { areas, want: AREAS });
    // an option list that has gone stale (the configuration changed): the server decides
    await page.locator('#f-area').evaluate((el) => el.append(new Option('nowhere', 'nowhere')));
    await page.selectOption('#f-area', 'nowhere');
  } else {
    report.notes.push('no GET /api/v1/registry/options: region and area are free text');
    await page.fill('#f-region', REGION);
    await page.fill('#f-area', 'nowhere');
  }
  allowed = [{ status: 400, url: '/api/v1/meters', why: 'an invalid area on purpose' }];
  await page.click('#f-save');
  const rej = page.locator('#form-msg .msg.bad');
  await rej.waitFor({ timeout: T });
  const rejText = await rej.textContent();
  const fieldErr = await page.locator('#f-area-err').textContent();
  check('registry: an invalid area is rejected with the API\'s message', /^Rejected: area: /.test(rejText) && /nowhere/.test(rejText) && fieldErr.includes('nowhere'),
    { message: rejText, field: fieldErr, invalid: await page.locator('#f-area').getAttribute('aria-invalid') });
  await shot(page, 'desktop-registry-rejected');
  allowed = [];
  if (regionIsSelect) await page.selectOption('#f-area', AREAS[0]); else await page.fill('#f-area', AREAS[0]);
  await page.click('#f-save');
  const okMsg = await page.locator('#form-msg .msg.ok').textContent({ timeout: T });
  const saved = await apiGet(page, '/api/v1/meters/dash-new-1');
  check('registry: a valid meter is registered', /registered/.test(okMsg) && saved.status === 200 && saved.body.area === AREAS[0],
    { message: okMsg, api: saved.body && { area: saved.body.area, region: saved.body.region, site: saved.body.site } });

  // -- an expired or revoked token: back to the login page with a message
  phase = 'expired';
  allowed = [{ status: 401, why: 'a revoked token on purpose' }];
  await page.evaluate(() => {
    const s = JSON.parse(sessionStorage.getItem('meterlink.session'));
    s.token = s.token ? s.token.slice(0, -4) + 'AAAA' : 'bogus';
    sessionStorage.setItem('meterlink.session', JSON.stringify(s));
  });
  await page.goto(BASE + '/#/gateways');
  await page.waitForURL(/#\/login$/, { timeout: T });
  const expired = await page.locator('#login-msg').textContent({ timeout: T });
  check('a token that is no longer valid leads back to the login with a message', /log in again/i.test(expired), expired);
  allowed = [];
  // the API unreachable: the error state (requests fail at the network)
  phase = 'unreachable';
  await login(page);
  allowed = [{ why: 'the API is unreachable on purpose' }];
  await page.route('**/api/v1/**', (r) => r.abort('connectionrefused'));
  await page.evaluate(() => { location.hash = '#/gateways'; });
  const err = await page.locator('[data-state="error"]').textContent({ timeout: T });
  check('the API unreachable: a clear error state', /not reachable/i.test(err), err);
  await shot(page, 'desktop-error');
  if (ALERTS) {
    await page.evaluate(() => { location.hash = '#/alerts'; });
    const aerr = await page.locator('#alerts-box [data-state="error"]').textContent({ timeout: T });
    check('the API unreachable: the alerts page shows the error state', /not reachable/i.test(aerr), aerr);
  }
  await page.unroute('**/api/v1/**');
  allowed = [];

  // logout
  phase = 'logout';
  await page.evaluate(() => { location.hash = '#/'; });
  await page.locator('[data-kpi="gateways-online"]').waitFor({ timeout: T });
  if (USER) {
    await page.click('#logout');
    await page.waitForURL(/#\/login$/, { timeout: T });
    const out = await page.locator('#login-msg').textContent();
    const token = await page.evaluate(() => sessionStorage.getItem('meterlink.session'));
    check('logout: back to the login, the session is gone', /logged out/i.test(out) && token === null, out);
  }
  await ctx.close();
}

async function phone() {
  const ctx = await browser.newContext({ viewport: { width: 375, height: 812 }, locale: 'en-US', isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
  const page = await ctx.newPage();
  watch(page, 'phone');
  phase = 'phone';
  await page.goto(BASE + '/');
  await page.waitForURL(/#\/login$/, { timeout: T });
  await shot(page, 'phone-login');
  await login(page);
  const pages = [
    ['overview', '#/', '[data-kpi="gateways-online"]'],
    ['meter', `#/meters/${METER}`, '#chart-power canvas'],
    ...(PREPAID ? [['meter-prepaid', `#/meters/${PREPAID}?view=30d`, '#chart-balance canvas']] : []),
    ['gateways', '#/gateways', `#gateways tr[data-gateway="${GATEWAY}"]`],
    ['gateway', `#/gateways/${GATEWAY}`, '#gw-facts'],
    ['registry', '#/registry', '#registry'],
    ['registry-form', '#/registry/new', '#meter-form'],
  ];
  if (ALERTS) {
    const first = (await apiGet(page, '/api/v1/alerts?limit=1')).body.alerts[0];
    pages.push(['alerts', '#/alerts', '#alerts tr[data-alert]'], ['alert', `#/alerts/${first.id}`, '#alert-facts']);
  }
  for (const [name, hash, sel] of pages) {
    await page.evaluate((h) => { location.hash = h; }, hash);
    await page.locator(sel).first().waitFor({ timeout: T });
    await page.waitForTimeout(400);
    const wide = await page.evaluate(() => document.documentElement.scrollWidth);
    check(`phone: ${name} fits 375 px (no sideways scrolling of the page)`, wide <= 375, wide);
    await shot(page, `phone-${name}`);
  }
  // keyboard: the nav links and buttons are reachable with Tab
  const labels = await page.evaluate(() => [...document.querySelectorAll('button, a[href], input, select')]
    .filter((el) => !el.closest('[hidden]') && el.offsetParent !== null)
    .filter((el) => !(el.textContent.trim() || el.getAttribute('aria-label') || (el.id && document.querySelector(`label[for="${el.id}"]`)) || el.type === 'submit'))
    .map((el) => el.outerHTML.slice(0, 80)));
  check('phone: every control of the form has a name for screen readers', labels.length === 0, labels);
  await ctx.close();
}

// A viewer sees the alerts but no acknowledge button (the API would refuse it: 403).
async function viewer() {
  if (!ALERTS || !VIEWER) return;
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: 'en-US' });
  const page = await ctx.newPage();
  watch(page, 'viewer');
  phase = 'viewer';
  await login(page, VIEWER, VIEWER_PASSWORD);
  await page.evaluate(() => { location.hash = '#/alerts?state=firing'; });
  await page.locator('#alerts tr[data-alert]').first().waitFor({ timeout: T });
  const rows = await page.locator('#alerts tr[data-alert]').count();
  const buttons = await page.locator('#alerts button[data-ack]').count();
  check('alerts: a viewer sees firing alerts but no acknowledge button', rows > 0 && buttons === 0, { rows, buttons });
  await ctx.close();
}

try {
  await desktop();
  await viewer();
  await phone();
} catch (e) {
  check('the run finished', false, String(e && e.stack || e));
} finally {
  await browser.close();
}
check('no console errors or page errors', report.console.length === 0, report.console);
report.failed = failed;
fs.writeFileSync(REPORT, JSON.stringify(report, null, 2));
console.log(`${report.checks.length - failed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
