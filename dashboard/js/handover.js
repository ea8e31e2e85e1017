// The shift handover: since a chosen time, what happened, what is still open, who
// acknowledged what, and every note and call recorded — one page that prints cleanly.

import { api } from './api.js';
import { localeTag, t, when } from './i18n.js';
import { describe, field, h, outcome, severityBadge, stateBadge } from './util.js';

const DEFAULT_HOURS = 12;
/** Alerts fetched for one handover; a night shift has far fewer. */
const LIMIT = 1000;

/** "2026-01-10T21:30" in the browser's own zone, for a datetime-local input. */
function localInput(ms) {
  const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60000);
  return d.toISOString().slice(0, 16);
}

export async function handoverView(ctx, el) {
  const since = h('input', { type: 'datetime-local', id: 'handover-since', value: localInput(Date.now() - DEFAULT_HOURS * 3600000) });
  const body = h('div', { id: 'handover-body' });
  el.append(
    h('h1', {}, t('nav_handover')),
    h(
      'form',
      {
        class: 'inline no-print',
        onsubmit: (ev) => {
          ev.preventDefault();
          show();
        },
      },
      field(t('handover_since'), since),
      h('button', { type: 'submit' }, t('handover_show')),
      h('button', { type: 'button', id: 'handover-print', onclick: () => window.print() }, `🖨 ${t('print')}`),
    ),
    body,
  );
  const show = async () => {
    const from = Date.parse(since.value);
    body.replaceChildren(await handover(ctx, Number.isFinite(from) ? from : Date.now() - DEFAULT_HOURS * 3600000));
  };
  await show();
}

async function handover(ctx, from) {
  const after = (iso) => iso && Date.parse(iso) >= from;
  const all = await api('GET', `/alerts?limit=${LIMIT}`);
  const relevant = all.filter((a) => a.state !== 'resolved' || after(a.opened_at) || after(a.resolved_at) || after(a.acknowledged_at));
  const detailed = await Promise.all(relevant.map((a) => api('GET', `/alerts/${a.id}`)));
  const happened = detailed.filter((a) => after(a.opened_at)).sort((a, b) => Date.parse(a.opened_at) - Date.parse(b.opened_at));
  const open = detailed.filter((a) => a.state !== 'resolved');
  const events = detailed.flatMap((a) => a.history.filter((e) => after(e.at)).map((e) => ({ ...e, alert: a })));
  events.sort((x, y) => Date.parse(x.at) - Date.parse(y.at));
  const acks = events.filter((e) => e.action === 'acknowledged');
  const notes = events.filter((e) => e.note && e.actor !== 'hub');
  const who = (a) => ctx.residentName(a.resident_id);
  const what = (a) => describe(a, (d) => ctx.deviceName(d));
  const table = (id, head, rows) =>
    rows.length
      ? h('table', { class: 'list handover', id }, h('thead', {}, h('tr', {}, head.map((k) => h('th', { scope: 'col' }, t(k))))), h('tbody', {}, rows))
      : h('p', { class: 'empty' }, t('handover_none'));
  const alertLink = (a) => h('a', { href: `#/alert/${a.id}` }, t(`kind_${a.kind}`));
  return h(
    'div',
    { class: 'handover-sheet' },
    h('p', { class: 'period' }, `${t('handover_since')}: ${new Date(from).toLocaleString(localeTag())} — ${when(new Date().toISOString())}`),
    h('h2', {}, `${t('handover_open')} (${open.length})`),
    table('handover-open', ['resident', 'kind', 'what', 'opened', 'state', 'acknowledged_by'], open.map((a) =>
      h('tr', { 'data-alert-id': a.id }, h('td', {}, who(a)), h('td', {}, severityBadge(a.severity), ' ', alertLink(a)), h('td', {}, what(a)),
        h('td', {}, when(a.opened_at)), h('td', {}, stateBadge(a.state)), h('td', {}, a.acknowledged_by ?? '—')))),
    h('h2', {}, `${t('handover_happened')} (${happened.length})`),
    table('handover-happened', ['opened', 'resident', 'kind', 'what', 'state', 'resolution'], happened.map((a) =>
      h('tr', { 'data-alert-id': a.id }, h('td', {}, when(a.opened_at)), h('td', {}, who(a)), h('td', {}, severityBadge(a.severity), ' ', alertLink(a)),
        h('td', {}, what(a)), h('td', {}, stateBadge(a.state)), h('td', {}, outcome(a.resolution))))),
    h('h2', {}, t('handover_acks')),
    table('handover-acks', ['audit_at', 'audit_actor', 'resident', 'kind'], acks.map((e) =>
      h('tr', {}, h('td', {}, when(e.at)), h('td', {}, e.actor), h('td', {}, who(e.alert)), h('td', {}, alertLink(e.alert))))),
    h('h2', {}, t('handover_notes')),
    table('handover-notes', ['audit_at', 'audit_actor', 'resident', 'kind', 'note'], notes.map((e) =>
      h('tr', {}, h('td', {}, when(e.at)), h('td', {}, e.actor), h('td', {}, who(e.alert)), h('td', {}, alertLink(e.alert)), h('td', {}, e.note)))),
  );
}
