// A resident's consent to being watched over (docs/privacy.md): what is on record for
// everyone who may see the resident, and for staff the form that records a consent and
// the button that withdraws it. Until a consent is recorded the hub collects nothing
// from the resident's devices and registers none for them.

import { api } from './api.js';
import { localeTag, t, when } from './i18n.js';
import { field, h, message } from './util.js';

/** "1 April 2026" for the day on the signed form ("2026-04-01"), whatever the reader's zone. */
function day(iso) {
  return new Date(`${iso}T00:00:00Z`).toLocaleDateString(localeTag(), { timeZone: 'UTC', year: 'numeric', month: 'long', day: 'numeric' });
}

/** Today in the resident's time zone, as the date input wants it. */
function today(timeZone) {
  try {
    return new Intl.DateTimeFormat('en-CA', { timeZone }).format(new Date());
  } catch {
    return new Intl.DateTimeFormat('en-CA').format(new Date());
  }
}

function list(items, id) {
  return h('ul', { class: 'consent-items', id }, items.map((i) => h('li', {}, i)));
}

/** Who signed, what for, who may see the data, where the paper is, who entered it. */
function consentFacts(c) {
  return h(
    'dl',
    { class: 'facts' },
    h('dt', {}, t('consent_given_on')), h('dd', { 'data-field': 'given_on' }, day(c.given_on)),
    h('dt', {}, t('consent_given_by')), h('dd', { 'data-field': 'given_by', 'data-by': c.given_by }, t(`consent_giver_${c.given_by}`, { name: c.giver_name })),
    h('dt', {}, t('consent_purposes')), h('dd', {}, list(c.purposes, 'consent-purpose-list')),
    h('dt', {}, t('consent_recipients')), h('dd', {}, list(c.recipients, 'consent-recipient-list')),
    h('dt', {}, t('consent_document')), h('dd', { 'data-field': 'document_ref' }, c.document_ref),
    h('dt', {}, t('consent_recorded')), h('dd', { 'data-field': 'recorded_by' }, t('consent_by_at', { who: c.recorded_by, at: when(c.recorded_at) })),
  );
}

function withdrawal(c) {
  return h(
    'dl',
    { class: 'facts' },
    h('dt', {}, t('consent_withdrawn_at')), h('dd', { 'data-field': 'withdrawn_by' }, t('consent_by_at', { who: c.withdrawn_by, at: when(c.withdrawn_at) })),
    c.withdrawal_note ? [h('dt', {}, t('note')), h('dd', {}, c.withdrawal_note)] : null,
  );
}

/** Earlier consents, newest first, one line each. */
function history(consents) {
  if (!consents.length) return null;
  return h(
    'details',
    { class: 'consent-history' },
    h('summary', {}, t('consent_history', { n: consents.length })),
    h('ul', {}, consents.map((c) =>
      h('li', {}, t('consent_history_line', {
        on: day(c.given_on),
        by: t(`consent_giver_${c.given_by}`, { name: c.giver_name }),
        doc: c.document_ref,
        end: c.withdrawn_at ? t('consent_history_withdrawn', { at: when(c.withdrawn_at), who: c.withdrawn_by }) : '',
      })))),
  );
}

/** One entry per non-empty line. */
function lines(text) {
  return text.split('\n').map((s) => s.trim()).filter(Boolean);
}

/** The form that records a consent as written on the signed paper. */
function recordForm(resident, onRecorded) {
  const by = (value, checked) => h('input', { type: 'radio', name: 'consent-given-by', id: `consent-given-by-${value}`, value, checked });
  const self = by('resident', true);
  const guardian = by('guardian', false);
  const givenOn = h('input', { type: 'date', id: 'consent-given-on', required: true, value: today(resident.timezone), max: today(resident.timezone) });
  const giver = h('input', { id: 'consent-giver-name', required: true, maxlength: 200, autocomplete: 'off' });
  const purposes = h('textarea', { id: 'consent-purposes', required: true, rows: 3, placeholder: t('consent_purposes_placeholder') });
  const recipients = h('textarea', { id: 'consent-recipients', required: true, rows: 3, placeholder: t('consent_recipients_placeholder') });
  const doc = h('input', { id: 'consent-document', required: true, maxlength: 200, autocomplete: 'off' });
  const out = h('div', { class: 'out' });
  const form = h(
    'form',
    { class: 'consent-form', id: 'consent-form', 'aria-labelledby': 'consent-form-title' },
    h('h3', { id: 'consent-form-title' }, t('consent_record')),
    h('fieldset', {},
      h('legend', {}, t('consent_who_signed')),
      h('label', { class: 'choice' }, self, ' ', t('consent_by_resident')),
      h('label', { class: 'choice' }, guardian, ' ', t('consent_by_guardian'))),
    field(t('consent_giver_name'), giver),
    field(t('consent_given_on'), givenOn),
    field(t('consent_purposes_field'), purposes),
    field(t('consent_recipients_field'), recipients),
    field(t('consent_document_field'), doc),
    h('button', { class: 'primary', id: 'consent-record' }, t('consent_record')),
    out,
  );
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const body = {
      given_on: givenOn.value,
      given_by: guardian.checked ? 'guardian' : 'resident',
      giver_name: giver.value.trim(),
      purposes: lines(purposes.value),
      recipients: lines(recipients.value),
      document_ref: doc.value.trim(),
    };
    try {
      await api('POST', `/residents/${resident.id}/consent`, body);
      onRecorded();
    } catch (e) {
      message(out, `${t('error')}: ${e.message}`, 'error');
    }
  });
  return form;
}

/** Withdrawing: a note for the record, and a confirmation, since it stops collection. */
function withdrawForm(resident, onWithdrawn) {
  const note = h('input', { id: 'consent-withdraw-note', maxlength: 2000, autocomplete: 'off' });
  const out = h('div', { class: 'out' });
  const form = h(
    'form',
    { class: 'inline consent-withdraw', id: 'consent-withdraw-form' },
    field(t('consent_withdraw_note'), note),
    h('button', { class: 'danger', id: 'consent-withdraw' }, t('consent_withdraw')),
    out,
  );
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (!window.confirm(t('consent_withdraw_confirm', { name: resident.name }))) return;
    try {
      await api('POST', `/residents/${resident.id}/consent/withdraw`, note.value.trim() ? { note: note.value.trim() } : {});
      onWithdrawn();
    } catch (e) {
      message(out, `${t('error')}: ${e.message}`, 'error');
    }
  });
  return form;
}

/**
 * The consent section of a resident: `editable` (staff) adds the form to record one and
 * the withdrawal; `onChange` is told the new state (`given`, `withdrawn`, `none`) after
 * either; `manage` links a read-only section to where staff change it. Resolves to the
 * section, which redraws itself after a change.
 */
export async function consentSection(resident, { editable = false, onChange = () => {}, manage = null } = {}) {
  const el = h('section', { class: 'card consent', id: 'consent', 'aria-labelledby': 'consent-title' });
  const draw = async (said) => {
    const { current, history: all } = await api('GET', `/residents/${resident.id}/consent`);
    const latest = all[0];
    const state = current ? 'given' : latest ? 'withdrawn' : 'none';
    el.dataset.consent = state;
    // The form that had focus is gone after a redraw: focus goes to the section's
    // heading, which now reads the new state, so a screen reader says what happened.
    const redraw = (key) => async () => {
      const next = await draw(t(key, { name: resident.name }));
      el.querySelector('#consent-title')?.focus();
      onChange(next);
    };
    const badge = h('span', { class: `badge consent-${state}`, id: 'consent-state' }, t(`consent_state_${state}`));
    const status = h('div', { class: 'out', id: 'consent-message' });
    if (said) message(status, said);
    const body = {
      given: () => [consentFacts(current), editable ? withdrawForm(resident, redraw('consent_withdrawn_msg')) : null],
      withdrawn: () => [h('p', { class: 'hint' }, t('consent_withdrawn_help')), withdrawal(latest)],
      none: () => [h('p', { class: 'hint' }, t('consent_none_help'))],
    }[state]();
    const earlier = all.filter((c) => c.id !== current?.id);
    let form = null;
    if (editable) {
      form = recordForm(resident, redraw('consent_recorded_msg'));
      // A renewed consent is the rarer case: folded away while one is current.
      if (current) form = h('details', { class: 'consent-renew' }, h('summary', {}, t('consent_record_renewed')), form);
    }
    const parts = [
      h('h2', { id: 'consent-title', tabindex: '-1' }, t('consent'), ' ', badge),
      status,
      body,
      form,
      manage ? h('p', {}, h('a', { href: manage, id: 'consent-manage' }, t('consent_manage'))) : null,
      history(earlier),
    ];
    el.replaceChildren(...parts.flat().filter(Boolean));
    return state;
  };
  await draw();
  return el;
}
