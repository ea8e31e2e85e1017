// The resident's card: shown on the alert page and the resident's page (phone numbers
// as tel: links, contacts in calling order), and edited by staff under Manage residents.

import { api } from './api.js';
import { t } from './i18n.js';
import { field, h } from './util.js';

export const CARE_LEVELS = ['support_1', 'support_2', 'care_1', 'care_2', 'care_3', 'care_4', 'care_5'];

/** A phone number people can press on a phone or a softphone. */
export function telLink(number, label = number) {
  return h('a', { href: `tel:${number.replace(/[^\d+]/g, '')}`, class: 'tel' }, `📞 ${label}`);
}

const TEXT_FIELDS = ['address', 'phone', 'key_holder', 'key_box', 'care_level', 'doctor', 'allergies', 'care_notes'];

/** The card as a definition list; fields nobody filled in are left out. */
export function cardView(card) {
  const rows = [];
  for (const f of TEXT_FIELDS) {
    const v = card?.[f];
    if (!v) continue;
    let value = v;
    if (f === 'phone') value = telLink(v);
    if (f === 'care_level') value = t(`care_${v}`);
    rows.push(h('dt', {}, t(`card_${f}`)), h('dd', { 'data-field': f, class: f === 'care_notes' || f === 'allergies' ? 'multiline' : '' }, value));
  }
  const contacts = card?.emergency_contacts ?? [];
  const body = [
    rows.length ? h('dl', { class: 'facts' }, rows) : null,
    contacts.length
      ? [
          h('h3', {}, t('card_contacts')),
          h('ol', { class: 'contacts', id: 'card-contacts' }, contacts.map((c) =>
            h('li', {}, h('strong', {}, c.name), c.relation ? ` (${c.relation}) ` : ' ', telLink(c.phone)))),
        ]
      : null,
  ].filter(Boolean);
  return h(
    'section',
    { class: 'card resident-card', id: 'resident-card', 'aria-labelledby': 'resident-card-title' },
    h('h2', { id: 'resident-card-title' }, t('card')),
    body.length ? body : h('p', { class: 'empty' }, t('card_empty')),
  );
}

/** Staff's form for the card; saves the whole card as one PATCH. */
export function cardForm(id, card, done) {
  const inputs = {};
  const text = (f, multiline) => {
    inputs[f] = multiline
      ? h('textarea', { id: `card-${f}`, rows: 3, value: card[f] ?? '' })
      : h('input', { id: `card-${f}`, value: card[f] ?? '', type: f === 'phone' ? 'tel' : 'text' });
    return field(t(`card_${f}`), inputs[f]);
  };
  const level = h(
    'select',
    { id: 'card-care_level' },
    h('option', { value: '' }, t('care_none')),
    CARE_LEVELS.map((l) => h('option', { value: l, selected: card.care_level === l }, t(`care_${l}`))),
  );
  const contacts = h('ol', { class: 'contact-rows' });
  const addContact = (c = { name: '', relation: '', phone: '' }) => {
    const row = h(
      'li',
      { class: 'inline contact-row' },
      field(t('contact_name'), h('input', { class: 'c-name', value: c.name })),
      field(t('contact_relation'), h('input', { class: 'c-relation', value: c.relation ?? '' })),
      field(t('contact_phone'), h('input', { class: 'c-phone', type: 'tel', value: c.phone })),
      h('button', { type: 'button', class: 'danger', onclick: () => row.remove() }, t('delete')),
    );
    contacts.append(row);
  };
  (card.emergency_contacts ?? []).forEach(addContact);
  const form = h(
    'form',
    { class: 'card-form', id: 'card-form' },
    text('address'), text('phone'), text('key_holder'), text('key_box'),
    field(t('card_care_level'), level),
    text('doctor'), text('allergies', true), text('care_notes', true),
    h('h4', {}, t('card_contacts')),
    contacts,
    h('button', { type: 'button', id: 'card-add-contact', onclick: () => addContact() }, t('card_add_contact')),
    h('button', { class: 'primary', id: 'card-save' }, t('save')),
  );
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const body = {};
    for (const [f, input] of Object.entries(inputs)) body[f] = input.value.trim() || null;
    body.care_level = level.value || null;
    body.emergency_contacts = [...contacts.querySelectorAll('.contact-row')]
      .map((row) => ({
        name: row.querySelector('.c-name').value.trim(),
        relation: row.querySelector('.c-relation').value.trim() || null,
        phone: row.querySelector('.c-phone').value.trim(),
      }))
      .filter((c) => c.name || c.phone);
    done(() => api('PATCH', `/residents/${id}`, { card: body }));
  });
  return form;
}
