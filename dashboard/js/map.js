// Maps (Leaflet): the overview of every visible resident's last position, their
// safe zones and the trails of open geofence alerts. Tiles come from config.js only
// (the site's own setting, never a link's): where tiles load from learns which
// areas residents live in. Markers and zones are drawn even when no tile loads.

import config from '../config.js';
import { api } from './api.js';
import { ago, t } from './i18n.js';
import { h } from './util.js';

const L = window.L;

/** The tile source of config.js; `null` (no `url`) draws the map without tiles. */
export function tileSource() {
  return config.tiles && config.tiles.url ? config.tiles : null;
}

export function createMap(el) {
  // No animations: views come and go quickly, and a map removed mid-animation throws.
  const map = L.map(el, { zoomAnimation: false, fadeAnimation: false, markerZoomAnimation: false }).setView(config.center, config.zoom);
  const tiles = tileSource();
  const notice = () => {
    if (el.querySelector('.tiles-off')) return;
    el.append(h('div', { class: 'tiles-off' }, t('tiles_off')));
  };
  if (tiles) {
    L.tileLayer(tiles.url, { attribution: tiles.attribution, maxZoom: tiles.maxZoom ?? 19 })
      .on('tileerror', notice)
      .addTo(map);
  } else {
    notice();
  }
  return map;
}

/** Safe zones as outlined shapes; returns their layer group. */
export function drawZones(map, zones) {
  const group = L.featureGroup();
  for (const z of zones) {
    const style = { color: '#2e7d32', weight: 2, fillOpacity: 0.08, className: 'zone' };
    const layer = z.circle
      ? L.circle([z.circle.lat, z.circle.lon], { ...style, radius: z.circle.radius_m })
      : L.polygon(z.polygon.coordinates.map((ring) => ring.map(([lon, lat]) => [lat, lon])), style);
    // An element, not a string: Leaflet puts a string in as HTML.
    layer.bindTooltip(h('span', {}, z.name));
    group.addLayer(layer);
  }
  return group.addTo(map);
}

/** A trail of fixes, oldest first, as a dashed red line. */
export function trailLayer(map, fixes) {
  return L.polyline(
    fixes.map((f) => [f.lat, f.lon]),
    { color: '#c62828', weight: 3, dashArray: '6 6', className: 'trail' },
  ).addTo(map);
}

/** Red with an open alert, orange outside the safe zones, green otherwise. */
function markerState(ctx, status) {
  if ([...ctx.live.alerts.values()].some((a) => a.resident_id === status.resident_id)) return 'alert';
  return status.location === 'outside' ? 'outside' : 'ok';
}

/** A pin with the resident's name on it (an element, never markup: names are people's input). */
function markerIcon(ctx, status) {
  const state = markerState(ctx, status);
  return L.divIcon({
    className: `resident-marker marker-${state}`,
    html: h('span', { class: 'pin' }, h('span', { 'aria-hidden': 'true' }, status.location === 'outside' ? '🚶' : '🏠'), h('span', { class: 'label' }, ctx.residentName(status.resident_id))),
    iconSize: null,
  });
}

function residentMarker(ctx, status) {
  const p = status.last_position;
  return L.marker([p.lat, p.lon], { icon: markerIcon(ctx, status), title: ctx.residentName(status.resident_id), alt: ctx.residentName(status.resident_id) }).bindPopup(() =>
    h(
      'div',
      {},
      h('a', { href: `#/resident/${status.resident_id}` }, ctx.residentName(status.resident_id)),
      h('br'),
      `${t('last_position')}: ${ago(p.ts)}`,
    ),
  );
}

export async function mapView(ctx, el) {
  const mapEl = h('div', { class: 'map', id: 'overview-map' });
  el.append(h('h1', {}, t('nav_map')), mapEl);
  const map = createMap(mapEl);
  const residents = [...(await ctx.loadResidents()).values()];
  const zoneSets = await Promise.all(residents.map((r) => api('GET', `/residents/${r.id}/geofences`)));
  const zones = zoneSets.map((z) => drawZones(map, z));
  const markers = new Map();
  const trails = new Map();
  /** Moves and recolours a resident's marker in place. */
  const place = (status) => {
    const m = markers.get(status.resident_id);
    if (!status.last_position) return;
    if (!m) markers.set(status.resident_id, residentMarker(ctx, status).addTo(map));
    else m.setLatLng([status.last_position.lat, status.last_position.lon]).setIcon(markerIcon(ctx, status));
  };
  for (const s of ctx.live.statuses.values()) place(s);
  const drawTrail = async (alert) => {
    if (alert.kind !== 'geofence_exit' || trails.has(alert.id)) return;
    trails.set(alert.id, null);
    const fixes = await api('GET', `/residents/${alert.resident_id}/track?since=${encodeURIComponent(alert.opened_at)}`);
    trails.set(alert.id, trailLayer(map, fixes));
  };
  await Promise.all([...ctx.live.alerts.values()].map(drawTrail));
  const layers = [...zones, ...markers.values()];
  const bounds = L.featureGroup(layers).getBounds();
  if (bounds.isValid()) map.fitBounds(bounds, { padding: [30, 30], maxZoom: 16 });
  const onFrame = (ev) => {
    const f = ev.detail;
    if (f.type === 'status') place(f.status);
    if (f.type === 'snapshot' || f.type === 'names') ctx.live.statuses.forEach(place);
    if (f.type === 'alert' || f.type === 'resident') {
      const s = ctx.live.statuses.get(f.alert?.resident_id ?? f.resident_id);
      if (s) place(s);
    }
    if (f.type === 'alert' && f.alert.state === 'resolved') {
      trails.get(f.alert.id)?.remove();
      trails.delete(f.alert.id);
    } else if (f.type === 'alert') drawTrail(f.alert);
    if (f.type === 'position') {
      for (const a of ctx.live.alerts.values()) {
        if (a.kind === 'geofence_exit' && a.resident_id === f.resident_id) trails.get(a.id)?.addLatLng([f.lat, f.lon]);
      }
    }
  };
  ctx.live.addEventListener('frame', onFrame);
  return () => {
    ctx.live.removeEventListener('frame', onFrame);
    map.remove();
  };
}
