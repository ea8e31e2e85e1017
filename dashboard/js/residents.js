// The resident board (everyone's status at a glance) and one resident's page with
// their alert history and daily rhythm: activity per hour over the last 7 days.

import { api } from './api.js';
import { ago, currentLang, t, when } from './i18n.js';
import { byUrgency, h, severityBadge, stateBadge } from './util.js';
import { createMap, drawZones } from './map.js';
import { sightingsSection } from './sightings.js';

const L = window.L;

function locationBadge(status) {
  const loc = status?.location ?? 'unknown';
  return h('span', { class: `loc loc-${loc}` }, t(`location_${loc}`));
}

function deviceList(status) {
  return h(
    'ul',
    { class: 'devices' },
    (status?.devices ?? []).map((d) =>
      h(
        'li',
        { class: d.online ? 'online' : 'offline' },
        `${t(`dev_${d.kind}`)} `,
        h('span', { class: 'dot' }, d.online ? `● ${t('online')}` : `○ ${t('offline')}`),
        d.battery != null ? ` 🔋${d.battery}%` : '',
        d.last_seen_at ? h('small', {}, ' ', h('span', { 'data-since': d.last_seen_at }, ago(d.last_seen_at))) : '',
      ),
    ),
  );
}

function statusFacts(status) {
  const act = status?.last_activity_at;
  const pos = status?.last_position;
  return h(
    'dl',
    { class: 'facts' },
    h('dt', {}, t('last_activity')),
    h('dd', {}, act ? h('span', { 'data-since': act }, ago(act)) : t('never'), status?.last_activity_room ? ` (${status.last_activity_room})` : ''),
    h('dt', {}, t('last_position')),
    h('dd', {}, pos ? [h('span', { 'data-since': pos.ts }, ago(pos.ts)), ` (${pos.lat.toFixed(5)}, ${pos.lon.toFixed(5)})`] : t('never')),
    h('dt', {}, t('devices')),
    h('dd', {}, deviceList(status)),
  );
}

export async function boardView(ctx, el) {
  await ctx.loadResidents();
  const grid = h('div', { class: 'board', id: 'resident-board' });
  el.append(h('h1', {}, t('nav_board')), grid);
  const render = () => {
    const cards = [...ctx.residents.values()].map((r) => {
      const status = ctx.live.statuses.get(r.id);
      const open = [...ctx.live.alerts.values()].filter((a) => a.resident_id === r.id).sort(byUrgency);
      return h(
        'article',
        { class: `card resident ${open.length ? `has-alerts sev-${open[0].severity}` : ''}`, 'data-resident-id': r.id },
        h('h2', {}, h('a', { href: `#/resident/${r.id}` }, r.name)),
        locationBadge(status),
        open.length ? h('p', { class: 'open-count' }, severityBadge(open[0].severity), ` ${open.length} ${t('open_alerts')}`) : null,
        statusFacts(status),
      );
    });
    grid.replaceChildren(...cards);
  };
  render();
  const onFrame = (ev) => {
    if (ev.detail.type !== 'position') render();
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
    h('div', { class: 'two' }, statusEl, mapEl),
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
          h('td', {}, a.resolution ?? ''),
        ),
      )),
    ),
  );
  sightingsSection(id).then((s) => s && mapEl.parentElement.after(s));
  const map = createMap(mapEl);
  const zoneLayer = drawZones(map, zones);
  let marker = null;
  const render = () => {
    const status = ctx.live.statuses.get(id);
    statusEl.replaceChildren(locationBadge(status), statusFacts(status));
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
  const fmt = new Intl.DateTimeFormat(currentLang() === 'ja' ? 'ja-JP' : 'en-GB', { month: 'numeric', day: 'numeric', weekday: 'short', timeZone: 'UTC' });
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
