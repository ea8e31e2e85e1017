// The alert queue for triage and one alert's page: who, what happened in words, where,
// how long it has waited against the 60-second service level, the one next step, the
// resident's card, one-click records of calls and visits, and the live map.

import { api } from './api.js';
import { ago, t, when } from './i18n.js';
import { byTriage, describe, h, outcome, severityBadge, stateBadge, unacknowledged, whereOf } from './util.js';
import { createMap, drawZones, trailLayer } from './map.js';
import { cardView } from './card.js';

const L = window.L;

/** Calls and visits a worker records with one click, in the order they happen. */
const QUICK_NOTES = ['note_called_no_answer', 'note_called_ok', 'note_neighbour_on_way', 'note_staff_on_way'];

const SEARCH_KINDS = new Set(['geofence_exit', 'night_exit']);
const DEVICE_KINDS = new Set(['device_offline', 'low_battery']);

/** The one thing to do next about an alert. */
export function nextStep(a) {
  if (a.state === 'unanswered') return t('next_unanswered');
  if (a.state === 'acknowledged') return t(DEVICE_KINDS.has(a.kind) ? 'next_acknowledged_device' : 'next_acknowledged');
  if (SEARCH_KINDS.has(a.kind)) return t('next_open_search');
  if (DEVICE_KINDS.has(a.kind)) return t('next_open_device');
  return t('next_open');
}

/** The service-level clock of an unacknowledged alert; app.js ticks every [data-sla]. */
export function slaTimer(a) {
  if (!unacknowledged(a)) return null;
  const el = h('span', { class: 'sla', 'data-sla': a.opened_at, role: 'timer', 'aria-label': t('waiting') });
  tickSla(el);
  return el;
}

export function tickSla(el) {
  const s = Math.max(0, Math.floor((Date.now() - Date.parse(el.dataset.sla)) / 1000));
  const mm = Math.floor(s / 60);
  el.textContent = `⏱ ${mm}:${String(s % 60).padStart(2, '0')}`;
  el.classList.toggle('late', s >= 60);
  if (s >= 60) el.title = t('sla_breached');
}

/** Asks for an optional note; resolves to {note} or null when cancelled. */
function askNote(title) {
  return new Promise((resolve) => {
    const note = h('textarea', { id: 'action-note', rows: 3, maxlength: 2000, placeholder: t('note_placeholder'), 'aria-label': t('note') });
    const dialog = h(
      'dialog',
      { class: 'action-dialog', 'aria-labelledby': 'action-title' },
      h(
        'form',
        { method: 'dialog' },
        h('h2', { id: 'action-title' }, title),
        h('label', { class: 'field' }, h('span', {}, t('note')), note),
        h(
          'div',
          { class: 'buttons' },
          h('button', { value: 'cancel', type: 'submit' }, t('cancel')),
          h('button', { value: 'ok', type: 'submit', class: 'primary', id: 'action-confirm' }, t('confirm')),
        ),
      ),
    );
    dialog.addEventListener('close', () => {
      const ok = dialog.returnValue === 'ok';
      dialog.remove();
      resolve(ok ? { note: note.value.trim() || null } : null);
    });
    document.body.append(dialog);
    dialog.showModal();
    note.focus();
  });
}

async function act(alert, action, live) {
  const answer = await askNote(`${t(action === 'ack' ? 'acknowledge' : 'resolve')}: ${t(`kind_${alert.kind}`)}`);
  if (!answer) return null;
  const updated = await api('POST', `/alerts/${alert.id}/${action}`, answer);
  // The stream brings the same change; applying it now makes the click feel instant.
  live.apply({ type: 'alert', alert: updated });
  return updated;
}

function runner(ctx, alert, after) {
  return (action) => async () => {
    try {
      const updated = await act(alert, action, ctx.live);
      if (updated && after) after(updated);
    } catch (e) {
      window.alert(`${t('error')}: ${e.message}`);
    }
  };
}

function actionButtons(ctx, alert, after) {
  if (!ctx.isStaff() || alert.state === 'resolved') return null;
  const run = runner(ctx, alert, after);
  const who = ctx.residentName(alert.resident_id);
  return h(
    'div',
    { class: 'actions' },
    unacknowledged(alert) && h('button', { type: 'button', class: 'ack', onclick: run('ack'), 'aria-label': `${t('acknowledge')}: ${who}` }, `✋ ${t('acknowledge')}`),
    h('button', { type: 'button', class: 'resolve', onclick: run('resolve'), 'aria-label': `${t('resolve')}: ${who}` }, `✔ ${t('resolve')}`),
  );
}

function alertRow(ctx, a) {
  const status = ctx.live.statuses.get(a.resident_id);
  const who = ctx.residentName(a.resident_id);
  const what = describe(a, (id) => ctx.deviceName(id));
  const where = whereOf(a, status);
  return h(
    'li',
    {
      class: 'alert-row',
      'data-alert-id': a.id,
      'data-kind': a.kind,
      'data-severity': a.severity,
      'data-state': a.state,
      tabindex: 0,
      'aria-label': `${t(`sev_${a.severity}`)}, ${who}, ${t(`kind_${a.kind}`)}, ${t(`state_${a.state}`)}`,
    },
    severityBadge(a.severity),
    h(
      'div',
      { class: 'what' },
      h('a', { class: 'who', href: `#/resident/${a.resident_id}` }, who),
      h('a', { class: 'kind', href: `#/alert/${a.id}` }, t(`kind_${a.kind}`)),
      h('span', { class: 'desc' }, what),
      where && h('span', { class: 'where' }, `📍 ${where}`),
    ),
    h(
      'div',
      { class: 'when' },
      slaTimer(a),
      h('span', { 'data-since': a.opened_at }, ago(a.opened_at)),
      h('small', {}, when(a.opened_at)),
    ),
    h('div', { class: 'next' }, h('small', {}, t('next_step')), h('span', {}, nextStep(a))),
    stateBadge(a.state),
    actionButtons(ctx, a),
  );
}

export async function alertListView(ctx, el) {
  const list = h('ul', { class: 'alerts', id: 'alert-list', 'aria-label': t('nav_alerts') });
  el.append(h('h1', {}, t('nav_alerts')), h('p', { class: 'hint', id: 'queue-hint' }, t('queue_hint')), list);
  const render = () => {
    const focused = document.activeElement?.closest?.('.alert-row')?.dataset.alertId;
    const alerts = [...ctx.live.alerts.values()].sort(byTriage);
    if (alerts.length === 0) list.replaceChildren(h('li', { class: 'empty' }, t('no_alerts')));
    else list.replaceChildren(...alerts.map((a) => alertRow(ctx, a)));
    // A new frame must not take the keyboard user's place in the queue away.
    if (focused && document.activeElement === document.body) list.querySelector(`[data-alert-id="${focused}"]`)?.focus();
  };
  list.addEventListener('keydown', (ev) => queueKeys(ctx, list, ev));
  let pending = false;
  const onFrame = (ev) => {
    if (ev.detail.type === 'position' || pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      render();
    });
  };
  render();
  ctx.live.addEventListener('frame', onFrame);
  return () => ctx.live.removeEventListener('frame', onFrame);
}

/** ↑/↓ move between alerts, A acknowledges the focused one, Enter opens it. */
function queueKeys(ctx, list, ev) {
  const row = ev.target.closest('.alert-row');
  if (!row || ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const rows = [...list.querySelectorAll('.alert-row')];
  const i = rows.indexOf(row);
  if (ev.key === 'ArrowDown' || ev.key === 'ArrowUp') {
    rows[Math.min(rows.length - 1, Math.max(0, i + (ev.key === 'ArrowDown' ? 1 : -1)))]?.focus();
    ev.preventDefault();
  } else if ((ev.key === 'a' || ev.key === 'A') && ev.target === row) {
    const alert = ctx.live.alerts.get(Number(row.dataset.alertId));
    if (alert && unacknowledged(alert) && ctx.isStaff()) runner(ctx, alert)('ack')();
    ev.preventDefault();
  } else if (ev.key === 'Enter' && ev.target === row) {
    location.hash = `#/alert/${row.dataset.alertId}`;
  }
}

export async function alertView(ctx, el, id) {
  const first = await api('GET', `/alerts/${id}`);
  const resident = await api('GET', `/residents/${first.resident_id}`).catch(() => null);
  const head = h('div', { class: 'alert-head' });
  const quick = ctx.isStaff() ? h('section', { class: 'quick-notes card', id: 'quick-notes', 'aria-labelledby': 'quick-title' }) : null;
  const history = h('ol', { class: 'history', id: 'alert-history' });
  const mapEl = SEARCH_KINDS.has(first.kind) ? h('div', { class: 'map small', id: 'alert-map', role: 'region', 'aria-label': t('trail') }) : null;
  el.append(
    h('div', { class: 'alert-page' },
      head,
      h('div', { class: 'two' },
        h('div', {}, quick, h('h2', {}, t('history')), history),
        h('div', {}, resident ? cardView(resident.card) : null, mapEl),
      ),
    ),
  );
  const render = (a) => {
    const status = ctx.live.statuses.get(a.resident_id);
    head.replaceChildren(
      h('h1', { class: 'alert-title', 'data-severity': a.severity }, severityBadge(a.severity), ' ', t(`kind_${a.kind}`)),
      h(
        'dl',
        { class: 'facts' },
        h('dt', {}, t('resident')),
        h('dd', {}, h('a', { href: `#/resident/${a.resident_id}`, id: 'alert-resident' }, ctx.residentName(a.resident_id))),
        h('dt', {}, t('what')),
        h('dd', { id: 'alert-what' }, describe(a, (d) => ctx.deviceName(d))),
        h('dt', {}, t('where')),
        h('dd', { id: 'alert-where' }, whereOf(a, status) || resident?.card?.address || '—'),
        h('dt', {}, t('opened')),
        h('dd', {}, when(a.opened_at), ' (', h('span', { 'data-since': a.opened_at }, ago(a.opened_at)), ') ', slaTimer(a)),
        h('dt', {}, t('state')),
        h('dd', { id: 'alert-state' }, stateBadge(a.state)),
        h('dt', {}, t('next_step')),
        h('dd', { id: 'alert-next' }, a.state === 'resolved' ? '—' : nextStep(a)),
        a.acknowledged_by && [h('dt', {}, t('acknowledged_by')), h('dd', {}, `${a.acknowledged_by} — ${when(a.acknowledged_at)}`)],
        a.resolved_by && [h('dt', {}, t('resolved_by')), h('dd', {}, `${a.resolved_by} — ${when(a.resolved_at)}`)],
        a.resolution && [h('dt', {}, t('resolution')), h('dd', { id: 'alert-outcome' }, outcome(a.resolution))],
      ),
      // replaceChildren would print a null as the text "null".
      ...[actionButtons(ctx, a, () => refresh())].filter(Boolean),
    );
    history.replaceChildren(...a.history.map(historyItem));
    // Built once, so a note being typed survives the frames of a live alert.
    if (quick) quick.hidden = a.state === 'resolved';
  };
  const refresh = async () => render(await api('GET', `/alerts/${id}`));
  if (quick) quickNotes(quick, id, refresh);
  render(first);
  const map = mapEl ? await alertMap(mapEl, first) : null;
  const onFrame = (ev) => {
    const f = ev.detail;
    if (f.type === 'alert' && f.alert.id === id) refresh();
    if (f.type === 'position' && map && f.resident_id === first.resident_id) map.follow(f);
  };
  ctx.live.addEventListener('frame', onFrame);
  return () => {
    ctx.live.removeEventListener('frame', onFrame);
    map?.remove();
  };
}

function historyItem(e) {
  return h(
    'li',
    { 'data-action': e.action },
    h('strong', {}, t(`action_${e.action}`)),
    ` ${when(e.at)} — ${e.actor}`,
    e.note ? `: ${outcome(e.note)}` : '',
  );
}

/** One click records a call or a visit in the alert's history (the alert core's note). */
function quickNotes(el, alertId, after) {
  const out = h('p', { class: 'msg', role: 'status' });
  const record = (note) => async () => {
    try {
      await api('POST', `/alerts/${alertId}/note`, { note });
      out.textContent = t('note_recorded');
      await after();
    } catch (e) {
      out.textContent = `${t('error')}: ${e.message}`;
    }
  };
  const free = h('input', { id: 'free-note', maxlength: 2000, 'aria-label': t('note'), placeholder: t('note_placeholder') });
  el.replaceChildren(
    h('h2', { id: 'quick-title' }, t('quick_notes')),
    h('div', { class: 'quick-buttons' }, QUICK_NOTES.map((key) =>
      h('button', { type: 'button', class: 'quick', 'data-note': key, onclick: record(t(key)) }, t(key)))),
    h('form', {
      class: 'inline',
      onsubmit: async (ev) => {
        ev.preventDefault();
        if (!free.value.trim()) return;
        await record(free.value.trim())();
        free.value = '';
      },
    }, free, h('button', { type: 'submit' }, t('add_note'))),
    out,
  );
}

/** How far before the alert the trail starts: the way out matters to a search. */
const TRAIL_LEAD_MS = 15 * 60 * 1000;

/** The map of a search: safe zones, the trail from shortly before the alert opened and
 *  where the person is now; positions from the stream move the marker and extend the trail. */
async function alertMap(el, alert) {
  const map = createMap(el);
  const since = new Date(Date.parse(alert.opened_at) - TRAIL_LEAD_MS).toISOString();
  const [zones, fixes] = await Promise.all([
    api('GET', `/residents/${alert.resident_id}/geofences`),
    api('GET', `/residents/${alert.resident_id}/track?since=${encodeURIComponent(since)}`),
  ]);
  const zoneLayer = drawZones(map, zones);
  const trail = trailLayer(map, fixes);
  const d = alert.details || {};
  const last = fixes[fixes.length - 1] ?? (typeof d.lat === 'number' ? { lat: d.lat, lon: d.lon } : null);
  const icon = L.divIcon({ className: 'resident-marker outside', html: '<span>🚶</span>', iconSize: [28, 28] });
  const marker = last ? L.marker([last.lat, last.lon], { icon, keyboard: false }).addTo(map) : null;
  const bounds = [zoneLayer, trail].map((l) => l.getBounds?.()).filter((b) => b && b.isValid());
  if (bounds.length) map.fitBounds(bounds.reduce((a, b) => a.extend(b)), { padding: [20, 20], maxZoom: 17 });
  let pin = marker;
  map.follow = (fix) => {
    trail.addLatLng([fix.lat, fix.lon]);
    if (pin) pin.setLatLng([fix.lat, fix.lon]);
    else pin = L.marker([fix.lat, fix.lon], { icon, keyboard: false }).addTo(map);
  };
  return map;
}
