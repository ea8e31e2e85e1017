// The passage history of a resident who carries a BLE tag: where receivers last heard it
// ("Last seen at Koenji station, 12 min ago") and the list of passages, newest first,
// from GET /residents/{id}/sightings (staff, and the resident's family).
import { api } from './api.js';
import { ago, t, when } from './i18n.js';
import { h } from './util.js';

/** The newest passages shown. */
const SHOWN = 50;

/** A section for the resident page, or null when no receiver has heard a tag of theirs. */
export async function sightingsSection(residentId) {
  const seen = await api('GET', `/residents/${residentId}/sightings?limit=${SHOWN}`);
  if (!seen.length) return null;
  const last = seen[0];
  return h(
    'section',
    { class: 'card', id: 'resident-sightings' },
    h('h2', {}, t('passages')),
    h('p', { id: 'last-seen' }, t('last_seen_at', { place: last.data?.place ?? '', ago: ago(last.ts) })),
    h(
      'table',
      { class: 'history' },
      h('tbody', {}, seen.map((s) =>
        h('tr', {}, h('td', {}, when(s.ts)), h('td', {}, s.data?.place ?? '')),
      )),
    ),
  );
}
