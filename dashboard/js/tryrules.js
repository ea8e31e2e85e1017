// "Try on the last 30 days" in the rule editor: the resident's stored history replayed
// (POST /residents/{id}/replay) with the current rules and with the edited, unsaved ones,
// and how many alerts of each kind each would have raised, side by side.

import { api } from './api.js';
import { localeTag, t } from './i18n.js';
import { h, message } from './util.js';

const DAYS = 30;

/** The panel; `edited()` returns the rules as the form holds them now. */
export function tryRulesPanel(residentId, edited) {
  const out = h('div', { class: 'out', id: 'rules-try-out' });
  const result = h('div', { id: 'rules-try-result' });
  const button = h('button', { type: 'button', id: 'rules-try' }, t('try_rules'));
  button.addEventListener('click', async () => {
    button.disabled = true;
    result.replaceChildren();
    message(out, t('try_running'));
    try {
      const from = new Date(Date.now() - DAYS * 86_400_000).toISOString();
      const path = `/residents/${residentId}/replay`;
      // One after the other: the hub runs only a few replays at a time.
      const current = await api('POST', path, { from });
      const tried = await api('POST', path, { from, rules: edited() });
      out.replaceChildren();
      result.replaceChildren(...comparison(current.summary, tried.summary));
    } catch (e) {
      message(out, `${t('error')}: ${e.message}`, 'error');
    } finally {
      button.disabled = false;
    }
  });
  return h('section', { class: 'rules-try' }, button, out, result);
}

/** The table of counts per alert kind, and what the history covered. */
function comparison(current, tried) {
  const kinds = [...new Set([...Object.keys(current.alerts), ...Object.keys(tried.alerts)])].sort();
  const history = current.history || {};
  const day = (iso) => (iso ? new Date(iso).toLocaleDateString(localeTag()) : '—');
  const covered = h(
    'p',
    { class: 'hint', id: 'rules-try-range' },
    t('try_range', { from: day(history.from), until: day(history.until), n: history.readings ?? 0 }),
  );
  const starts = history.first_reading && Date.parse(history.first_reading) - Date.parse(history.from) > 86_400_000;
  const short = starts ? h('p', { class: 'hint' }, t('try_short', { date: day(history.first_reading) })) : null;
  if (kinds.length === 0) return [covered, short, h('p', { id: 'rules-try-none' }, t('try_none'))];
  const cell = (summary, kind, which) => {
    const answered = summary.confirmed?.[kind] ?? 0;
    return h(
      'td',
      { 'data-setting': which, 'data-count': summary.alerts[kind] ?? 0 },
      String(summary.alerts[kind] ?? 0),
      answered ? h('small', { class: 'hint' }, ` (${t('try_answered', { n: answered })})`) : null,
    );
  };
  const table = h(
    'table',
    { class: 'list', id: 'rules-try-table' },
    h('caption', {}, t('try_title')),
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, t('try_alert')), h('th', { scope: 'col' }, t('try_current')), h('th', { scope: 'col' }, t('try_edited')))),
    h(
      'tbody',
      {},
      kinds.map((kind) =>
        h('tr', { 'data-kind': kind }, h('th', { scope: 'row' }, t(`kind_${kind}`)), cell(current, kind, 'current'), cell(tried, kind, 'edited')),
      ),
    ),
  );
  return [covered, short, table];
}
