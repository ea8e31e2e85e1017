// The live alert list, one alert's page, the acknowledge/resolve actions, and the
// alarm sound for critical alerts.

import { api } from './api.js';
import { ago, t, when } from './i18n.js';
import { byUrgency, h, severityBadge, stateBadge, whereOf } from './util.js';
import { createMap, drawZones, trailLayer } from './map.js';

/** A short repeated tone for new critical alerts; staff can mute it. */
export class Alarm {
  constructor() {
    this.muted = localStorage.getItem('mimamori.muted') === '1';
    this.ctx = null;
  }

  setMuted(m) {
    this.muted = m;
    localStorage.setItem('mimamori.muted', m ? '1' : '0');
  }

  ring() {
    if (this.muted) return;
    try {
      this.ctx ??= new AudioContext();
      const start = this.ctx.currentTime;
      for (let i = 0; i < 3; i++) {
        const osc = this.ctx.createOscillator();
        const gain = this.ctx.createGain();
        osc.frequency.value = 880;
        gain.gain.setValueAtTime(0.2, start + i * 0.4);
        gain.gain.setValueAtTime(0, start + i * 0.4 + 0.25);
        osc.connect(gain).connect(this.ctx.destination);
        osc.start(start + i * 0.4);
        osc.stop(start + i * 0.4 + 0.3);
      }
    } catch {
      // Browsers refuse audio before the first click; the list still shows the alert.
    }
  }
}

/** Asks for an optional note; resolves to {note} or null when cancelled. */
function askNote(title) {
  return new Promise((resolve) => {
    const note = h('textarea', { id: 'action-note', rows: 3, maxlength: 2000, placeholder: t('note_placeholder') });
    const dialog = h(
      'dialog',
      { class: 'action-dialog' },
      h(
        'form',
        { method: 'dialog' },
        h('h3', {}, title),
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

function actionButtons(ctx, alert, after) {
  if (!ctx.isStaff() || alert.state === 'resolved') return null;
  const run = (action) => async () => {
    try {
      const updated = await act(alert, action, ctx.live);
      if (updated && after) after(updated);
    } catch (e) {
      window.alert(`${t('error')}: ${e.message}`);
    }
  };
  return h(
    'div',
    { class: 'actions' },
    (alert.state === 'open' || alert.state === 'unanswered') && h('button', { type: 'button', class: 'ack', onclick: run('ack') }, `✋ ${t('acknowledge')}`),
    h('button', { type: 'button', class: 'resolve', onclick: run('resolve') }, `✔ ${t('resolve')}`),
  );
}

function alertRow(ctx, a) {
  const status = ctx.live.statuses.get(a.resident_id);
  return h(
    'li',
    { class: `alert-row sev-${a.severity} state-${a.state}`, 'data-alert-id': a.id, 'data-kind': a.kind },
    severityBadge(a.severity),
    h(
      'div',
      { class: 'what' },
      h('a', { class: 'who', href: `#/resident/${a.resident_id}` }, ctx.residentName(a.resident_id)),
      h('a', { class: 'kind', href: `#/alert/${a.id}` }, t(`kind_${a.kind}`)),
      h('span', { class: 'where' }, whereOf(a, status)),
    ),
    h('div', { class: 'when' }, h('span', { 'data-since': a.opened_at }, ago(a.opened_at)), h('small', {}, when(a.opened_at))),
    stateBadge(a.state),
    actionButtons(ctx, a),
  );
}

export async function alertListView(ctx, el) {
  const list = h('ul', { class: 'alerts', id: 'alert-list' });
  el.append(h('h1', {}, t('nav_alerts')), list);
  const render = () => {
    const alerts = [...ctx.live.alerts.values()].sort(byUrgency);
    if (alerts.length === 0) list.replaceChildren(h('li', { class: 'empty' }, t('no_alerts')));
    else list.replaceChildren(...alerts.map((a) => alertRow(ctx, a)));
  };
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

export async function alertView(ctx, el, id) {
  const alert = await api('GET', `/alerts/${id}`);
  const body = h('div', { class: 'alert-page' });
  el.append(body);
  let map = null;
  const render = async (a, history) => {
    if (map) map.remove();
    map = null;
    const mapEl = a.kind === 'geofence_exit' ? h('div', { class: 'map small', id: 'alert-map' }) : null;
    const parts = [
      h('h1', { class: `sev-${a.severity}` }, severityBadge(a.severity), ' ', t(`kind_${a.kind}`)),
      h(
        'dl',
        { class: 'facts' },
        h('dt', {}, t('resident')),
        h('dd', {}, h('a', { href: `#/resident/${a.resident_id}` }, ctx.residentName(a.resident_id))),
        h('dt', {}, t('opened')),
        h('dd', {}, when(a.opened_at), ' (', h('span', { 'data-since': a.opened_at }, ago(a.opened_at)), ')'),
        h('dt', {}, t('where')),
        h('dd', {}, whereOf(a, ctx.live.statuses.get(a.resident_id)) || '—'),
        h('dt', {}, t('state')),
        h('dd', { id: 'alert-state' }, stateBadge(a.state)),
        a.acknowledged_by && [h('dt', {}, t('acknowledged_by')), h('dd', {}, `${a.acknowledged_by} — ${when(a.acknowledged_at)}`)],
        a.resolved_by && [h('dt', {}, t('resolved_by')), h('dd', {}, `${a.resolved_by} — ${when(a.resolved_at)}`)],
        a.resolution && [h('dt', {}, t('resolution')), h('dd', {}, a.resolution)],
      ),
      actionButtons(ctx, a, () => refresh()),
      mapEl,
      h('h2', {}, t('history')),
      h(
        'ol',
        { class: 'history' },
        history.map((e) => h('li', {}, h('strong', {}, t(`action_${e.action}`)), ` ${when(e.at)} — ${e.actor}`, e.note ? `: ${e.note}` : '')),
      ),
      h('h2', {}, t('details')),
      h('pre', { class: 'details' }, JSON.stringify(a.details, null, 2)),
    ];
    // replaceChildren would print a null as the text "null".
    body.replaceChildren(...parts.filter(Boolean));
    if (mapEl) map = await geofenceMap(ctx, mapEl, a);
  };
  const refresh = async () => {
    const fresh = await api('GET', `/alerts/${id}`);
    await render(fresh, fresh.history);
  };
  await render(alert, alert.history);
  const onFrame = (ev) => {
    if (ev.detail.type === 'alert' && ev.detail.alert.id === id) refresh();
    if (ev.detail.type === 'position' && map && ev.detail.resident_id === alert.resident_id) {
      map.trail?.addLatLng([ev.detail.lat, ev.detail.lon]);
    }
  };
  ctx.live.addEventListener('frame', onFrame);
  return () => {
    ctx.live.removeEventListener('frame', onFrame);
    if (map) map.remove();
  };
}

/** A map of one geofence alert: the safe zones and the trail since it opened. */
async function geofenceMap(ctx, el, alert) {
  const map = createMap(el);
  const [zones, fixes] = await Promise.all([
    api('GET', `/residents/${alert.resident_id}/geofences`),
    api('GET', `/residents/${alert.resident_id}/track?since=${encodeURIComponent(alert.opened_at)}`),
  ]);
  const layers = [drawZones(map, zones)];
  map.trail = trailLayer(map, fixes);
  layers.push(map.trail);
  const bounds = layers.map((l) => l.getBounds?.()).filter((b) => b && b.isValid());
  if (bounds.length) map.fitBounds(bounds.reduce((a, b) => a.extend(b)), { padding: [20, 20] });
  return map;
}

