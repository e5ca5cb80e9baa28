// fmt: how numbers and times are shown. Numbers with two decimals; times in the site's
// IANA time zone (from the API), never the browser's.

const LOCALE = (typeof navigator !== 'undefined' && navigator.language) || 'en-US';
const num2 = new Intl.NumberFormat(LOCALE, { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const int0 = new Intl.NumberFormat(LOCALE, { maximumFractionDigits: 0 });
const dtfCache = new Map();

export const DASH = '–';

export function isNum(v) {
  return typeof v === 'number' && Number.isFinite(v);
}

// 1234.5 -> "1,234.50" (in the browser's locale); null -> "–".
export function n2(v) {
  return isNum(v) ? num2.format(v) : DASH;
}

// A signed number with two decimals: "+1.20", "−0.40".
export function signed2(v) {
  if (!isNum(v)) return DASH;
  const s = num2.format(Math.abs(v));
  return v > 0 ? '+' + s : v < 0 ? '−' + s : s;
}

export function int(v) {
  return isNum(v) ? int0.format(v) : DASH;
}

function dtf(tz, opts) {
  const key = tz + JSON.stringify(opts);
  let f = dtfCache.get(key);
  if (!f) {
    try {
      f = new Intl.DateTimeFormat(LOCALE, { timeZone: tz || 'UTC', ...opts });
    } catch {
      f = new Intl.DateTimeFormat(LOCALE, { timeZone: 'UTC', ...opts });
    }
    dtfCache.set(key, f);
  }
  return f;
}

export function toMs(t) {
  if (t === null || t === undefined) return null;
  if (typeof t === 'number') return t;
  const ms = Date.parse(t);
  return Number.isNaN(ms) ? null : ms;
}

// "2 Dec 2026, 14:05" in zone tz.
export function dateTime(t, tz) {
  const ms = toMs(t);
  return ms === null ? DASH : dtf(tz, { dateStyle: 'medium', timeStyle: 'short' }).format(ms);
}

export function dateTimeSec(t, tz) {
  const ms = toMs(t);
  return ms === null ? DASH : dtf(tz, { dateStyle: 'medium', timeStyle: 'medium' }).format(ms);
}

export function date(t, tz) {
  const ms = toMs(t);
  return ms === null ? DASH : dtf(tz, { dateStyle: 'medium' }).format(ms);
}

export function time(t, tz) {
  const ms = toMs(t);
  return ms === null ? DASH : dtf(tz, { hour: '2-digit', minute: '2-digit', hourCycle: 'h23' }).format(ms);
}

// Label of a bucket that starts at t, for a bucket of `unit` (hour, day, month).
export function bucketLabel(t, tz, unit) {
  const ms = toMs(t);
  if (ms === null) return DASH;
  if (unit === 'hour' || unit === '30m') return dtf(tz, { weekday: 'short', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' }).format(ms);
  if (unit === 'month') return dtf(tz, { month: 'short', year: 'numeric' }).format(ms);
  return dtf(tz, { weekday: 'short', day: 'numeric', month: 'short' }).format(ms);
}

// Offset of zone tz from UTC at ms, in ms (+3600000 for CET in winter).
export function tzOffsetMs(ms, tz) {
  const parts = dtf(tz, {
    year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit',
    second: '2-digit', hourCycle: 'h23',
  }).formatToParts(ms);
  const g = (t) => Number(parts.find((p) => p.type === t).value);
  const asUtc = Date.UTC(g('year'), g('month') - 1, g('day'), g('hour'), g('minute'), g('second'));
  return asUtc - Math.floor(ms / 1000) * 1000;
}

// The local calendar date (YYYY-MM-DD) of ms in tz.
export function localDate(ms, tz) {
  const parts = dtf(tz, { year: 'numeric', month: '2-digit', day: '2-digit' }).formatToParts(ms);
  const g = (t) => parts.find((p) => p.type === t).value;
  return `${g('year')}-${g('month')}-${g('day')}`;
}

// The UTC instant of local midnight starting date ymd ("2026-12-02") in tz. Found by
// correcting a first guess with the zone's offset (twice, for days of a DST change).
export function localMidnight(ymd, tz) {
  const [y, m, d] = ymd.split('-').map(Number);
  const guess = Date.UTC(y, m - 1, d);
  let t = guess - tzOffsetMs(guess, tz);
  t = guess - tzOffsetMs(t, tz);
  return t;
}

// "12 s ago", "5 min ago", "3 h ago", "2 d ago" from an age in seconds.
export function age(s) {
  if (!isNum(s)) return DASH;
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 90 * 60) return `${Math.round(s / 60)} min`;
  if (s < 36 * 3600) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} d`;
}

export function ago(t, now = Date.now()) {
  const ms = toMs(t);
  return ms === null ? 'never' : `${age(Math.max(0, (now - ms) / 1000))} ago`;
}
