// charts: ECharts (loaded on first use: the login and overview pages do without its
// 1 MB) and the three chart kinds of the meter page. Times are shown in the site's zone:
// ECharts knows only local time or UTC, so time values are shifted by the zone's offset
// and drawn as UTC; tooltips format the real instant with Intl in that zone. Tooltips
// are built as DOM nodes, without inline styles (the Content-Security-Policy forbids them).

import { h } from './ui.js';
import { n2, dateTime, tzOffsetMs } from './fmt.js';

let loadingEcharts = null;

export function loadEcharts() {
  if (window.echarts) return Promise.resolve(window.echarts);
  if (!loadingEcharts) {
    loadingEcharts = new Promise((resolve, reject) => {
      const s = document.createElement('script');
      s.src = '/static/echarts.min.js';
      s.async = true;
      s.onload = () => (window.echarts ? resolve(window.echarts) : reject(new Error('the chart library did not load')));
      s.onerror = () => {
        loadingEcharts = null;
        reject(new Error('the chart library (echarts.min.js) could not be loaded'));
      };
      document.head.append(s);
    });
  }
  return loadingEcharts;
}

const COLORS = { usage: '#0b5cad', power: '#c2410c', balance: '#1d7a3a' };

// Offsets per hour, so a series of a few thousand points calls Intl only a few hundred times.
function shifter(tz) {
  const cache = new Map();
  return (ms) => {
    const hour = Math.floor(ms / 3600000);
    let off = cache.get(hour);
    if (off === undefined) {
      off = tzOffsetMs(ms, tz);
      cache.set(hour, off);
    }
    return ms + off;
  };
}

function tip(lines) {
  return h('div', { class: 'tip' }, lines.map((l) => h('div', {}, l)));
}

const zoom = [
  { type: 'inside', filterMode: 'none', zoomOnMouseWheel: 'ctrl', moveOnMouseMove: true, moveOnMouseWheel: true },
  { type: 'slider', filterMode: 'none', height: 22, bottom: 8, brushSelect: false },
];

const grid = { left: 8, right: 16, top: 28, bottom: 56, containLabel: true };

// A chart in el that resizes with it; returns {chart, dispose}.
export async function makeChart(el, label) {
  const echarts = await loadEcharts();
  const chart = echarts.init(el, null, { renderer: 'canvas' });
  el.setAttribute('role', 'img');
  el.setAttribute('aria-label', label);
  const ro = new ResizeObserver(() => chart.resize());
  ro.observe(el);
  return { chart, dispose: () => { ro.disconnect(); chart.dispose(); } };
}

// Usage bars: buckets [{start, energy, cost?}], labels made by label(start).
export function usageOption({ buckets, unit, tz, label, currency }) {
  const cats = buckets.map((b) => label(b.start));
  return {
    animation: false,
    grid,
    tooltip: {
      trigger: 'axis', axisPointer: { type: 'shadow' }, confine: true,
      formatter: (ps) => {
        const b = buckets[ps[0].dataIndex];
        return tip([dateTime(b.start, tz), `${n2(b.energy)} ${unit}`,
          b.cost !== undefined && b.cost !== null ? `${n2(b.cost)} ${currency || ''}` : null,
          b.complete === false ? 'incomplete (gaps in the data)' : null].filter(Boolean));
      },
    },
    xAxis: { type: 'category', data: cats, axisLabel: { hideOverlap: true } },
    yAxis: { type: 'value', name: unit, nameTextStyle: { align: 'left' } },
    dataZoom: zoom,
    series: [{
      type: 'bar', name: 'usage', color: COLORS.usage, large: true,
      data: buckets.map((b) => (b.energy === null || b.energy === undefined ? null : Math.round(b.energy * 100) / 100)),
    }],
  };
}

// A line of a series' points [[ts, min, avg, max], ...] (the average drawn; min and max
// in the tooltip).
export function lineOption({ points, unit, tz, name, kind, min, max }) {
  const shift = shifter(tz);
  const data = points.map((p) => [shift(p[0]), p[2], p[0], p[1], p[3]]);
  return {
    animation: false,
    useUTC: true,
    grid,
    tooltip: {
      trigger: 'axis', confine: true,
      formatter: (ps) => {
        const d = ps[0].data;
        const lines = [dateTime(d[2], tz), `${name}: ${n2(d[1])} ${unit}`];
        if (d[3] !== d[4]) lines.push(`min ${n2(d[3])}, max ${n2(d[4])}`);
        return tip(lines);
      },
    },
    xAxis: { type: 'time', axisLabel: { hideOverlap: true }, ...(min !== undefined ? { min: shift(min) } : {}), ...(max !== undefined ? { max: shift(max) } : {}) },
    yAxis: { type: 'value', name: unit, scale: true, nameTextStyle: { align: 'left' } },
    dataZoom: zoom,
    series: [{
      type: 'line', name, color: COLORS[kind] || COLORS.power, showSymbol: data.length < 60, symbolSize: 5, sampling: 'lttb',
      step: kind === 'balance' ? 'end' : false, areaStyle: kind === 'balance' ? { opacity: 0.12 } : undefined,
      data,
    }],
  };
}
