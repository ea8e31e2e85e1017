// Small DOM and formatting helpers shared by the views.

import { localeTag, t } from './i18n.js';

/** Builds an element: h('button', {class: 'x', onclick}, 'text', child…). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'value') el.value = v;
    else if (k === 'checked') el.checked = Boolean(v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export const SEVERITY_RANK = { critical: 3, high: 2, warning: 1 };
export const SEVERITY_ICON = { critical: '🚨', high: '⚠️', warning: 'ℹ️' };

/** Most severe first, then newest first. */
export function byUrgency(a, b) {
  return (
    (SEVERITY_RANK[b.severity] || 0) - (SEVERITY_RANK[a.severity] || 0) ||
    Date.parse(b.opened_at) - Date.parse(a.opened_at)
  );
}

/** Nobody has taken it on yet: the service-level clock is running. */
export function unacknowledged(alert) {
  return alert.state === 'open' || alert.state === 'unanswered';
}

/** Triage order: unacknowledged first, then most severe, then waiting longest. */
export function byTriage(a, b) {
  return (
    Number(unacknowledged(b)) - Number(unacknowledged(a)) ||
    (SEVERITY_RANK[b.severity] || 0) - (SEVERITY_RANK[a.severity] || 0) ||
    Date.parse(a.opened_at) - Date.parse(b.opened_at)
  );
}

export function severityBadge(sev) {
  return h('span', { class: `sev sev-${sev}` }, `${SEVERITY_ICON[sev] || ''} ${t(`sev_${sev}`)}`);
}

export function stateBadge(state) {
  return h('span', { class: `state state-${state}`, 'data-state': state }, t(`state_${state}`));
}

/** A room id as people say it ("living_room" → "living room" / "居間"). */
export function roomName(room) {
  if (!room) return '';
  const key = `room_${room}`;
  const said = t(key);
  return said === key ? room.replace(/_/g, ' ') : said;
}

/** "2 h 5 min" / "2時間5分". */
export function duration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return t('dur_s', { s });
  if (s < 3600) return t('dur_m', { m: Math.floor(s / 60) });
  return t('dur_hm', { h: Math.floor(s / 3600), m: Math.floor((s % 3600) / 60) });
}

/** A clock time in the reader's locale. */
export function clock(iso) {
  if (!iso) return '—';
  return new Date(iso).toLocaleTimeString(localeTag(), { hour: '2-digit', minute: '2-digit' });
}

/** What happened, in a sentence; `deviceName` turns a device id into its name. */
export function describe(alert, deviceName = (id) => id) {
  const d = alert.details || {};
  const device = deviceName(alert.device_id) || t('devices');
  switch (alert.kind) {
    case 'sos':
      return d.presses > 1 ? t('what_sos_n', { n: d.presses }) : t('what_sos');
    case 'inactivity': {
      const dur = duration(d.threshold_s ?? 0);
      return d.room ? t('what_inactivity_room', { dur, room: roomName(d.room) }) : t('what_inactivity', { dur });
    }
    case 'no_morning_activity':
      return t('what_no_morning_activity', { time: clock(d.deadline) });
    case 'geofence_exit':
      if (typeof d.distance_m !== 'number') return t('what_geofence_exit_nozone');
      return t(d.place ? 'what_geofence_exit_place' : 'what_geofence_exit', { dist: Math.round(d.distance_m), zone: d.zone ?? '', place: d.place });
    case 'device_offline':
      return d.last_seen_at ? t('what_device_offline', { device, time: clock(d.last_seen_at) }) : t('what_device_offline_never', { device });
    case 'low_battery':
      return t('what_low_battery', { device, n: d.battery });
    case 'dwell':
      return t('what_dwell', { room: roomName(d.room), dur: duration(d.limit_s ?? 0) });
    case 'night_exit':
      return t('what_night_exit', { time: clock(d.door_opened_at) });
    default:
      return t(`kind_${alert.kind}`);
  }
}

/** Where an alert happened, in words: a room, or the distance from the safe zone. */
export function whereOf(alert, status) {
  const d = alert.details || {};
  if (typeof d.distance_m === 'number' && d.zone) {
    const far = t('where_zone', { dist: Math.round(d.distance_m), zone: d.zone });
    return d.place ? `${d.place} (${far})` : far;
  }
  if (d.place) return d.place;
  const room = d.room || ((alert.kind === 'inactivity' || alert.kind === 'no_morning_activity') && status?.last_activity_room);
  return room ? t('where_room', { room: roomName(room) }) : '';
}

/** What the hub writes in an alert's history when a live alert changes. */
const HUB_NOTES = { 'pressed again': 'hub_pressed_again', 'new position': 'hub_new_position', 'details changed': 'hub_details_changed' };

/** Why the hub cleared an alert by itself, in the reader's language; staff's own words as they are. */
export function outcome(resolution) {
  if (Object.hasOwn(HUB_NOTES, resolution ?? '')) return t(HUB_NOTES[resolution]);
  const m = /^condition_cleared: (.*)$/.exec(resolution || '');
  if (!m) return resolution || '';
  const why = m[1];
  const patterns = [
    [/^door opened$/, () => t('why_door_opened')],
    [/^door closed$/, () => t('why_door_closed')],
    [/^door used$/, () => t('why_door_used')],
    [/^motion resumed \((.+)\)$/, (r) => t('why_motion_resumed', { room: roomName(r) })],
    [/^moved to (.+)$/, (r) => t('why_moved_to', { room: roomName(r) })],
    [/^back inside (.+)$/, (z) => t('why_back_inside', { zone: z })],
    [/^battery at (\d+)%$/, (n) => t('why_battery_at', { n })],
    [/^battery above the new threshold$/, () => t('why_battery_threshold')],
    [/^offline threshold raised$/, () => t('why_offline_threshold')],
    [/^inactivity threshold raised$/, () => t('why_inactivity_threshold')],
    [/^inactivity rule no longer applies$/, () => t('why_inactivity_off')],
    [/^no safe zone configured$/, () => t('why_no_zone')],
    [/^device reported again$/, () => t('why_device_back')],
  ];
  for (const [re, say] of patterns) {
    const p = re.exec(why);
    if (p) return t('outcome_cleared', { why: say(...p.slice(1)) });
  }
  return t('outcome_cleared', { why });
}

export function field(label, input) {
  return h('label', { class: 'field' }, h('span', {}, label), input);
}

export function message(el, text, kind = 'info') {
  el.replaceChildren(h('p', { class: `msg msg-${kind}`, role: kind === 'error' ? 'alert' : 'status' }, text));
}
