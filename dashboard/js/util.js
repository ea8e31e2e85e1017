// Small DOM and formatting helpers shared by the views.

import { t } from './i18n.js';

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
  for (const c of children.flat()) {
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

export function severityBadge(sev) {
  return h('span', { class: `sev sev-${sev}` }, `${SEVERITY_ICON[sev] || ''} ${t(`sev_${sev}`)}`);
}

export function stateBadge(state) {
  return h('span', { class: `state state-${state}`, 'data-state': state }, t(`state_${state}`));
}

/** Where an alert happened, in words: a position, a room, or the device. */
export function whereOf(alert, status) {
  const d = alert.details || {};
  if (typeof d.lat === 'number' && typeof d.lon === 'number') return `${d.lat.toFixed(5)}, ${d.lon.toFixed(5)}`;
  if (d.room) return d.room;
  if (alert.kind === 'inactivity' || alert.kind === 'no_morning_activity') {
    return status?.last_activity_room || '';
  }
  return alert.device_id || '';
}

export function field(label, input) {
  return h('label', { class: 'field' }, h('span', {}, label), input);
}

export function message(el, text, kind = 'info') {
  el.replaceChildren(h('p', { class: `msg msg-${kind}`, role: kind === 'error' ? 'alert' : 'status' }, text));
}
