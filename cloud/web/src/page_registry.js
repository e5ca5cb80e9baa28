// Meters registry: the list (GET /api/v1/meters: seen and registered meters), a search,
// and a form to register (POST /api/v1/meters) or edit (PATCH /api/v1/meters/{id}) a
// meter. Sites come from GET /api/v1/sites; the valid regions, their areas and the
// dwelling types from GET /api/v1/registry/options when the server has it: then the
// form offers only valid combinations (an area list follows the region). Without it the
// fields are free text and the server's answer decides. A rejection shows the API's
// message, next to the field it names.

import { api, enc, canOperate, sites, fleetTz, meterReporting } from './api.js';
import { h, replace, loading, empty, errorState, setTitle, message, badge, announce } from './ui.js';
import { dateTime, ago, toMs } from './fmt.js';
import { navigate } from './app.js';

let optionsMissing = false;

// {regions: [{name, areas: [...]}], dwellings: [...]} or null when not available.
async function registryOptions() {
  if (optionsMissing) return null;
  try {
    const r = await api('/api/v1/registry/options');
    let regions = r.regions || [];
    if (!Array.isArray(regions)) regions = Object.entries(regions).map(([name, areas]) => ({ name, areas }));
    regions = regions.map((x) => (typeof x === 'string' ? { name: x, areas: [] } : { name: x.name || x.id, areas: x.areas || [] }));
    return { regions, dwellings: r.dwelling_types || r.dwellings || [] };
  } catch (e) {
    if (e.missing) {
      optionsMissing = true;
      return null;
    }
    throw e;
  }
}

function listTable(meters, tz, operate) {
  const now = Date.now();
  return h('div', { class: 'table-wrap' }, h('table', { id: 'registry', 'aria-label': 'Meters' },
    h('thead', {}, h('tr', {}, ['Meter', 'Registered', 'Status', 'Gateway', 'Site', 'Region', 'Area', 'Dwelling', 'Prepaid', 'Last reading']
      .map((t) => h('th', { scope: 'col' }, t)), operate ? h('th', { scope: 'col' }, h('span', { class: 'sr-only' }, 'Actions')) : null)),
    h('tbody', {}, meters.map((m) => h('tr', { dataset: { meter: m.id } },
      h('th', { scope: 'row' }, h('a', { href: `#/meters/${enc(m.id)}` }, m.id)),
      h('td', {}, m.registered === false ? badge('warn', 'not registered') : badge('ok', 'registered')),
      h('td', {}, meterReporting(m, now) ? badge('ok', 'reporting') : badge('bad', 'silent')),
      h('td', {}, m.gateway || '–'), h('td', {}, m.site || '–'), h('td', {}, m.region || '–'),
      h('td', {}, m.area || '–'), h('td', {}, m.dwelling_type || '–'), h('td', {}, m.prepaid ? 'yes' : 'no'),
      h('td', { title: dateTime(m.last_seen, tz) }, m.last_seen ? ago(toMs(m.last_seen), now) : 'never'),
      operate ? h('td', {}, h('a', { class: 'button secondary', href: `#/registry/${enc(m.id)}`, 'aria-label': `${m.registered === false ? 'Register' : 'Edit'} ${m.id}` }, m.registered === false ? 'Register' : 'Edit')) : null)))));
}

function select(id, label, choices, value, opts = {}) {
  const s = h('select', { id, name: id, 'aria-describedby': `${id}-err`, disabled: opts.disabled || false },
    h('option', { value: '' }, opts.none || '(none)'),
    choices.map((c) => h('option', { value: c, selected: c === value }, c)));
  if (value && !choices.includes(value)) s.append(h('option', { value, selected: true }, `${value} (not in the list)`));
  return [h('label', { for: id }, label), s, h('p', { class: 'field-error', id: `${id}-err` })];
}

function text(id, label, value, attrs = {}) {
  const i = h('input', { id, name: id, value: value || '', 'aria-describedby': `${id}-err ${id}-hint`, autocomplete: 'off', ...attrs });
  return [h('label', { for: id }, label), i, attrs.hint ? h('p', { class: 'hint', id: `${id}-hint` }, attrs.hint) : null,
    h('p', { class: 'field-error', id: `${id}-err` })];
}

async function renderForm(main, box, id, meters) {
  const existing = id && id !== 'new' ? meters.find((m) => m.id === id) : null;
  const registered = existing && existing.registered !== false;
  const title = registered ? `Edit meter ${id}` : existing ? `Register meter ${id}` : 'Register a meter';
  replace(box, loading());
  let siteList, opts;
  try {
    [siteList, opts] = await Promise.all([sites(), registryOptions()]);
  } catch (e) {
    replace(box, errorState(e, () => renderForm(main, box, id, meters)));
    return;
  }
  const m = existing || {};
  const gateways = [...new Set(meters.map((x) => x.gateway).filter(Boolean))].sort();
  const out = h('div', { id: 'form-msg', 'aria-live': 'polite' });
  const fields = [];
  fields.push(...text('f-id', 'Meter id', m.id || (id !== 'new' ? id : ''), { required: true, readOnly: !!existing, hint: existing ? 'The id cannot change.' : '1 to 63 of A–Z a–z 0–9 _ . -', pattern: '[A-Za-z0-9_.\\-]{1,63}' }));
  fields.push(...text('f-gateway', 'Gateway', m.gateway, { required: true, list: 'gw-list' }));
  fields.push(h('datalist', { id: 'gw-list' }, gateways.map((g) => h('option', { value: g }))));
  if (siteList.length) fields.push(...select('f-site', 'Site', siteList.map((s) => s.id), m.site, { none: '(choose a site)' }));
  else fields.push(...text('f-site', 'Site', m.site, { hint: 'No sites are set up yet: an administrator adds them (POST /api/v1/sites).' }));
  if (opts) {
    const [rl, rs, re] = select('f-region', 'Region', opts.regions.map((r) => r.name), m.region);
    const areasOf = (name) => ((opts.regions.find((r) => r.name === name) || {}).areas || []);
    const [al, as, ae] = select('f-area', 'Area', areasOf(m.region), m.area, { none: m.region ? '(none)' : '(choose a region first)', disabled: !m.region });
    rs.addEventListener('change', () => {
      const keep = as.value;
      replace(as, h('option', { value: '' }, rs.value ? '(none)' : '(choose a region first)'),
        areasOf(rs.value).map((a) => h('option', { value: a, selected: a === keep }, a)));
      as.disabled = !rs.value;
      announce(rs.value ? `${areasOf(rs.value).length} areas in ${rs.value}` : 'Choose a region first');
    });
    fields.push(h('div', { class: 'grid2' }, h('div', {}, rl, rs, re), h('div', {}, al, as, ae)));
    fields.push(...select('f-dwelling', 'Dwelling type', opts.dwellings, m.dwelling_type));
  } else {
    fields.push(h('div', { class: 'grid2' }, h('div', {}, ...text('f-region', 'Region', m.region)), h('div', {}, ...text('f-area', 'Area', m.area, { hint: 'Must be one of the region’s areas.' }))));
    fields.push(...text('f-dwelling', 'Dwelling type', m.dwelling_type));
  }
  const prepaid = h('input', { type: 'checkbox', id: 'f-prepaid', checked: !!m.prepaid });
  fields.push(h('label', { class: 'check', for: 'f-prepaid' }, prepaid, 'Prepaid meter (has a balance)'));
  const save = h('button', { type: 'submit', id: 'f-save' }, registered ? 'Save changes' : 'Register');
  const form = h('form', { class: 'panel', id: 'meter-form', novalidate: true, 'aria-labelledby': 'form-title' },
    h('h2', { id: 'form-title' }, title),
    opts ? null : h('p', { class: 'hint', id: 'no-options' }, 'This server does not list the valid regions, areas and dwelling types; meter-cloud checks them when you save.'),
    fields, out,
    h('div', { class: 'actions' }, save, h('a', { class: 'button secondary', href: '#/registry' }, 'Cancel')));

  const val = (fid) => {
    const el = form.querySelector('#' + fid);
    return el ? el.value.trim() : '';
  };
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    for (const el of form.querySelectorAll('.field-error')) el.textContent = '';
    for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
    const body = {
      gateway: val('f-gateway') || null, site: val('f-site') || null, region: val('f-region') || null,
      area: val('f-area') || null, dwelling_type: val('f-dwelling') || null, prepaid: prepaid.checked,
    };
    if (!registered) body.id = val('f-id');
    // only what the form knows; a PATCH sends the fields, null clears
    if (!registered) for (const k of ['gateway', 'site', 'region', 'area', 'dwelling_type']) if (body[k] === null) delete body[k];
    const local = !registered && !body.id ? ['f-id', 'Enter the meter id.'] : !body.gateway && !registered ? ['f-gateway', 'Enter the gateway.'] : !body.site && !registered ? ['f-site', 'Choose the site.'] : null;
    if (local) {
      const [fid, msg] = local;
      form.querySelector(`#${fid}-err`).textContent = msg;
      form.querySelector('#' + fid).setAttribute('aria-invalid', 'true');
      replace(out, message('bad', msg));
      form.querySelector('#' + fid).focus();
      return;
    }
    save.disabled = true;
    replace(out, message('', 'Saving…'));
    try {
      const r = registered
        ? await api(`/api/v1/meters/${enc(id)}`, { method: 'PATCH', body })
        : await api('/api/v1/meters', { method: 'POST', body });
      replace(out, message('ok', `Meter ${r.id || body.id || id} ${registered ? 'saved' : 'registered'}.`));
      announce('Saved');
      setTimeout(() => navigate('#/registry'), 800);
    } catch (err) {
      const field = err.status === 400 && err.code === 'bad_field' ? (err.body && err.body.field) : null;
      replace(out, message('bad', err.status === 400 ? `Rejected: ${err.message}` : err.status === 409 ? err.message : `Not saved: ${err.message}`));
      const map = { id: 'f-id', gateway: 'f-gateway', site: 'f-site', region: 'f-region', area: 'f-area', dwelling_type: 'f-dwelling', prepaid: 'f-prepaid' };
      const fname = field || (err.message.match(/^(\w+):/) || [])[1];
      const fid = map[fname];
      if (fid && form.querySelector('#' + fid)) {
        const el = form.querySelector('#' + fid);
        el.setAttribute('aria-invalid', 'true');
        const fe = form.querySelector(`#${fid}-err`);
        if (fe) fe.textContent = err.message;
        el.focus();
      }
    } finally {
      save.disabled = false;
    }
  });
  replace(box, form);
  (existing ? form.querySelector('#f-gateway') : form.querySelector('#f-id')).focus();
}

export async function render(main, [id]) {
  const operate = canOperate();
  const list = h('div', {}, loading());
  const formBox = h('div', { id: 'form-box' });
  const search = h('input', { id: 'search', type: 'search', class: 'search', placeholder: 'id, gateway, site, region, area', autocomplete: 'off' });
  const count = h('p', { class: 'hint', id: 'count', 'aria-live': 'polite' });
  replace(main, setTitle(main, 'Meters'),
    operate ? h('p', {}, h('a', { class: 'button', href: '#/registry/new', id: 'new-meter' }, 'Register a meter')) : h('p', { class: 'hint' }, 'Registering meters needs the operator or admin role.'),
    formBox,
    h('label', { for: 'search' }, 'Search'), search, count, list);
  let meters, tz;
  try {
    [meters, tz] = await Promise.all([api('/api/v1/meters').then((r) => r.meters || []), fleetTz()]);
  } catch (e) {
    replace(list, errorState(e, () => render(main, [id])));
    return;
  }
  const show = () => {
    const q = search.value.trim().toLowerCase();
    const hits = q ? meters.filter((m) => [m.id, m.gateway, m.site, m.region, m.area, m.dwelling_type]
      .some((v) => v && String(v).toLowerCase().includes(q))) : meters;
    count.textContent = `${hits.length} of ${meters.length} meters`;
    if (!meters.length) replace(list, empty('No meters yet', 'No meter has sent a reading and none is registered.', operate ? 'Register one with the button above.' : ''));
    else if (!hits.length) replace(list, empty(`No meter matches “${search.value}”`));
    else replace(list, listTable(hits, tz, operate));
  };
  search.addEventListener('input', show);
  show();
  if (id && operate) await renderForm(main, formBox, id, meters);
  else if (id) replace(formBox, message('bad', 'Registering and editing meters needs the operator or admin role.'));
  return null;
}
