// The resident board (everyone's status at a glance) and one resident's page with
// their alert history and daily rhythm: activity per hour over the last 7 days.

import { api } from './api.js';
import { ago, localeTag, t, when } from './i18n.js';
import { byUrgency, h, outcome, roomName, SEVERITY_RANK, severityBadge, stateBadge } from './util.js';
import { cardView } from './card.js';
import { consentSection } from './consent.js';
import { createMap, drawZones } from './map.js';
import { sightingsSection } from './sightings.js';

const L = window.L;

function locationBadge(status) {
  const loc = status?.location ?? 'unknown';
  return h('span', { class: `loc loc-${loc}` }, t(`location_${loc}`));
}

/** A device is a problem when it is offline or its battery is below the resident's limit. */
function deviceProblems(ctx, resident, d) {
  const limit = resident?.rules?.low_battery_pct ?? 20;
  return { offline: !d.online, battery: d.battery != null && d.battery <= limit };
}

function deviceList(ctx, resident, status) {
  return h(
    'ul',
    { class: 'devices' },
    (status?.devices ?? []).map((d) => {
      const p = deviceProblems(ctx, resident, d);
      return h(
        'li',
        { class: d.online ? 'online' : 'offline', 'data-device-id': d.id },
        h('span', { class: 'dev-name' }, ctx.deviceName(d.id) || t(`dev_${d.kind}`)),
        ' ',
        h('span', { class: 'dot' }, d.online ? `● ${t('online')}` : `○ ${t('offline')}`),
        d.battery != null ? h('span', { class: p.battery ? 'battery low' : 'battery' }, ` 🔋${d.battery}%`) : '',
        d.last_seen_at ? h('small', {}, ' ', h('span', { 'data-since': d.last_seen_at }, ago(d.last_seen_at))) : '',
      );
    }),
  );
}

function statusFacts(ctx, resident, status) {
  const act = status?.last_activity_at;
  const pos = status?.last_position;
  return h(
    'dl',
    { class: 'facts' },
    h('dt', {}, t('last_activity')),
    h('dd', {}, act ? h('span', { 'data-since': act }, ago(act)) : t('never'), status?.last_activity_room ? ` (${roomName(status.last_activity_room)})` : ''),
    h('dt', {}, t('last_position')),
    h('dd', {}, pos ? h('span', { 'data-since': pos.ts }, ago(pos.ts)) : t('never')),
    h('dt', {}, t('devices')),
    h('dd', {}, deviceList(ctx, resident, status)),
  );
}

/** What is wrong with a resident now, for sorting, filtering and the card's badges. */
function problemsOf(ctx, resident, status) {
  const open = [...ctx.live.alerts.values()].filter((a) => a.resident_id === resident.id).sort(byUrgency);
  const devices = (status?.devices ?? []).map((d) => deviceProblems(ctx, resident, d));
  return {
    open,
    offline: devices.some((d) => d.offline),
    battery: devices.some((d) => d.battery),
    away: status?.location === 'outside',
  };
}

function rank(p) {
  const sev = p.open.length ? SEVERITY_RANK[p.open[0].severity] * 10 : 0;
  return sev + (p.away ? 4 : 0) + (p.offline ? 2 : 0) + (p.battery ? 1 : 0);
}

const FILTERS = {
  all: () => true,
  alerts: (p) => p.open.length > 0,
  offline: (p) => p.offline,
  battery: (p) => p.battery,
  away: (p) => p.away,
};

function residentCard(ctx, r, p) {
  const status = ctx.live.statuses.get(r.id);
  const sev = p.open[0]?.severity;
  const badges = [
    p.open.length ? h('span', { class: 'open-count' }, severityBadge(sev), ` ${p.open.length} ${t('open_alerts')}`) : null,
    p.away ? h('span', { class: 'badge away' }, t('filter_away')) : null,
    p.offline ? h('span', { class: 'badge offline' }, t('filter_offline')) : null,
    p.battery ? h('span', { class: 'badge battery' }, t('low_battery')) : null,
  ].filter(Boolean);
  return h(
    'article',
    { class: `card resident ${p.open.length ? 'has-alerts' : ''}`, 'data-resident-id': r.id, 'data-severity': sev ?? 'none', 'aria-labelledby': `resident-${r.id}-name` },
    h('h2', { id: `resident-${r.id}-name` }, h('a', { href: `#/resident/${r.id}` }, r.name)),
    h('div', { class: 'badges' }, locationBadge(status), badges.length ? badges : h('span', { class: 'badge ok' }, t('board_ok'))),
    statusFacts(ctx, r, status),
  );
}

export async function boardView(ctx, el) {
  await Promise.all([ctx.loadResidents(), ctx.loadDevices().catch(() => ctx.devices)]);
  const grid = h('div', { class: 'board', id: 'resident-board' });
  const summary = h('p', { class: 'summary', id: 'board-summary', role: 'status' });
  let filter = 'all';
  const buttons = Object.keys(FILTERS).map((f) =>
    h('button', { type: 'button', class: 'filter', 'data-filter': f, 'aria-pressed': f === filter ? 'true' : 'false', onclick: () => setFilter(f) }, t(`filter_${f}`)));
  el.append(
    h('h1', {}, t('nav_board')),
    h('div', { class: 'filters', role: 'group', 'aria-label': t('filter') }, buttons),
    summary,
    grid,
  );
  const cards = new Map();
  const problems = new Map();
  const draw = (r) => {
    const p = problemsOf(ctx, r, ctx.live.statuses.get(r.id));
    problems.set(r.id, p);
    const card = residentCard(ctx, r, p);
    cards.get(r.id)?.replaceWith(card);
    cards.set(r.id, card);
  };
  /** Problems first; moving the existing cards keeps the rest of the page as it is. */
  const arrange = () => {
    const order = [...ctx.residents.values()].sort((a, b) => rank(problems.get(b.id)) - rank(problems.get(a.id)) || a.name.localeCompare(b.name));
    const shown = order.filter((r) => FILTERS[filter](problems.get(r.id)));
    grid.replaceChildren(...shown.map((r) => cards.get(r.id)));
    const needy = order.filter((r) => rank(problems.get(r.id)) > 0).length;
    summary.textContent = needy ? t('board_problems', { n: needy }) : t('board_ok');
  };
  const setFilter = (f) => {
    filter = f;
    for (const b of buttons) b.setAttribute('aria-pressed', b.dataset.filter === f ? 'true' : 'false');
    arrange();
  };
  const redrawAll = () => {
    for (const id of [...cards.keys()]) if (!ctx.residents.has(id)) cards.delete(id);
    for (const r of ctx.residents.values()) draw(r);
    arrange();
  };
  redrawAll();
  const onFrame = (ev) => {
    const f = ev.detail;
    const id = f.status?.resident_id ?? f.alert?.resident_id ?? f.resident_id;
    if (f.type === 'position') return;
    if (f.type === 'snapshot' || f.type === 'names' || !ctx.residents.has(id) || !cards.has(id)) return redrawAll();
    draw(ctx.residents.get(id));
    arrange();
  };
  ctx.live.addEventListener('frame', onFrame);
  return () => ctx.live.removeEventListener('frame', onFrame);
}

export async function residentView(ctx, el, id) {
  const [resident, alerts, activity, zones] = await Promise.all([
    api('GET', `/residents/${id}`),
    api('GET', `/alerts?resident_id=${id}&limit=100`),
    api('GET', `/residents/${id}/activity?days=7`),
    api('GET', `/residents/${id}/geofences`),
  ]);
  const statusEl = h('section', { class: 'card' });
  const mapEl = h('div', { class: 'map small', id: 'resident-map' });
  el.append(
    h('h1', { id: 'resident-name' }, resident.name),
    h('div', { class: 'two' }, h('div', {}, statusEl, cardView(resident.card)), mapEl),
    h('h2', {}, t('activity_7d')),
    rhythmChart(activity, resident.timezone),
    h('h2', {}, t('alert_history')),
    h(
      'table',
      { class: 'history', id: 'resident-alerts' },
      h('tbody', {}, alerts.map((a) =>
        h(
          'tr',
          { 'data-alert-id': a.id },
          h('td', {}, severityBadge(a.severity)),
          h('td', {}, h('a', { href: `#/alert/${a.id}` }, t(`kind_${a.kind}`))),
          h('td', {}, when(a.opened_at)),
          h('td', {}, stateBadge(a.state)),
          h('td', {}, outcome(a.resolution)),
        ),
      )),
    ),
  );
  sightingsSection(id).then((s) => s && mapEl.parentElement.after(s));
  const manage = ctx.isStaff() ? `#/admin/residents/${id}` : null;
  consentSection(resident, { manage })
    .then((s) => statusEl.parentElement.append(s))
    .catch((e) => console.warn('consent not shown', e));
  const map = createMap(mapEl);
  const zoneLayer = drawZones(map, zones);
  let marker = null;
  const render = () => {
    const status = ctx.live.statuses.get(id);
    statusEl.replaceChildren(locationBadge(status), statusFacts(ctx, resident, status));
    marker?.remove();
    const p = status?.last_position ?? (resident.home && { lat: resident.home.lat, lon: resident.home.lon });
    if (p) marker = L.marker([p.lat, p.lon], { title: resident.name }).addTo(map);
  };
  render();
  const bounds = L.featureGroup([zoneLayer, ...(marker ? [marker] : [])]).getBounds();
  if (bounds.isValid()) map.fitBounds(bounds, { padding: [20, 20], maxZoom: 16 });
  const onFrame = (ev) => {
    const f = ev.detail;
    if ((f.type === 'status' && f.status.resident_id === id) || f.type === 'snapshot') render();
  };
  ctx.live.addEventListener('frame', onFrame);
  return () => {
    ctx.live.removeEventListener('frame', onFrame);
    map.remove();
  };
}

/** Local day ("2026-01-10") and hour (0–23) of a moment in the resident's time zone. */
function localSlot(iso, timeZone) {
  const parts = new Intl.DateTimeFormat('en-CA', {
    timeZone, year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', hourCycle: 'h23',
  }).formatToParts(new Date(iso));
  const get = (type) => parts.find((p) => p.type === type)?.value;
  return { day: `${get('year')}-${get('month')}-${get('day')}`, hour: Number(get('hour')) };
}

/** A day × hour heat map: each row a day, each cell the activity in that hour. */
function rhythmChart(activity, timeZone) {
  const counts = new Map();
  for (const { hour, count } of activity.hours) {
    const { day, hour: hr } = localSlot(hour, timeZone);
    counts.set(`${day} ${hr}`, (counts.get(`${day} ${hr}`) ?? 0) + count);
  }
  const days = [];
  for (let ms = Date.parse(activity.to) - 1; days.length < 7; ms -= 86400000) {
    const d = localSlot(new Date(ms).toISOString(), timeZone).day;
    if (!days.includes(d)) days.unshift(d);
  }
  const max = Math.max(1, ...counts.values());
  const cell = 22;
  const left = 90;
  const top = 18;
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', `0 0 ${left + 24 * cell} ${top + days.length * cell}`);
  svg.setAttribute('class', 'rhythm');
  svg.setAttribute('id', 'rhythm-chart');
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', t('activity_7d'));
  const add = (tag, attrs, text) => {
    const e = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    svg.append(e);
    return e;
  };
  for (let hr = 0; hr < 24; hr += 3) add('text', { x: left + hr * cell + 2, y: 12, class: 'axis' }, `${hr}`);
  const fmt = new Intl.DateTimeFormat(localeTag(), { month: 'numeric', day: 'numeric', weekday: 'short', timeZone: 'UTC' });
  days.forEach((day, row) => {
    add('text', { x: 0, y: top + row * cell + 15, class: 'axis' }, fmt.format(new Date(`${day}T00:00:00Z`)));
    for (let hr = 0; hr < 24; hr++) {
      const n = counts.get(`${day} ${hr}`) ?? 0;
      const rect = add('rect', {
        x: left + hr * cell, y: top + row * cell, width: cell - 2, height: cell - 2, rx: 3,
        fill: n ? `rgba(21, 101, 192, ${0.15 + 0.85 * (n / max)})` : '#eef1f5',
        'data-count': n,
      });
      const title = document.createElementNS(ns, 'title');
      title.textContent = `${day} ${hr}:00 — ${n}`;
      rect.append(title);
    }
  });
  return svg;
}
