// Admin pages for daily work: residents with their rule settings and safe zones
// (drawn on the map), devices with their MQTT credentials, and user accounts.

import { api } from './api.js';
import { t, when } from './i18n.js';
import { duration, field, h, message } from './util.js';
import { cardForm } from './card.js';
import { consentSection } from './consent.js';
import { ruleLabel } from './rulelabels.js';
import { tryRulesPanel } from './tryrules.js';
import { createMap, drawZones } from './map.js';

const L = window.L;

/** Runs an API action, reporting success, or the failure as `explain` words it, in `out`. */
async function attempt(out, fn, explain = (e) => `${t('error')}: ${e.message}`) {
  try {
    const r = await fn();
    message(out, t('saved'));
    return r;
  } catch (e) {
    message(out, explain(e), 'error');
    return null;
  }
}

// ---- residents ----------------------------------------------------------------

/** Manage residents; `#/admin/residents/ID` opens that resident. A resident just created
 *  opens at once at the consent form, since no device can be registered before it. */
export async function adminResidentsView(ctx, el, id) {
  const out = h('div', { class: 'out' });
  const list = h('ul', { class: 'plain' });
  const detail = h('section', { class: 'resident-admin' });
  const name = h('input', { id: 'new-resident-name', required: true });
  const tz = h('input', { value: 'Asia/Tokyo' });
  const home = h('input', { placeholder: '35.7074, 139.6638' });
  const create = h(
    'form',
    {
      class: 'card inline',
      onsubmit: async (ev) => {
        ev.preventDefault();
        const [lat, lon] = home.value.split(',').map((s) => Number(s.trim()));
        const body = { name: name.value, timezone: tz.value };
        if (home.value.trim()) body.home = { lat, lon };
        const created = await attempt(out, () => api('POST', '/residents', body));
        if (!created) return;
        await renderList();
        await select(created.id, true);
      },
    },
    field(t('name'), name),
    field(t('timezone'), tz),
    field(t('home'), home),
    h('button', { class: 'primary' }, t('create')),
  );
  el.append(h('h1', {}, t('nav_admin_residents')), create, out, h('div', { class: 'two' }, list, detail));
  let cleanupDetail = null;
  const renderList = async () => {
    const residents = [...(await ctx.loadResidents()).values()];
    list.replaceChildren(
      ...residents.map((r) =>
        h('li', {}, h('button', { type: 'button', class: 'link', onclick: () => select(r.id) }, r.name)),
      ),
    );
  };
  const select = async (rid, created = false) => {
    if (cleanupDetail) cleanupDetail();
    cleanupDetail = await residentDetail(ctx, detail, rid, renderList, created);
  };
  await renderList();
  if (id) await select(id);
  return () => cleanupDetail?.();
}

/** Every leaf of the rule settings as an input, labelled with its unit and help in the
 *  reader's language; a setting without a label shows its key, so none is ever hidden.
 *  Below it, the edited rules can be tried on the resident's last 30 days. */
function rulesForm(residentId, rules, out, onSave) {
  const inputs = [];
  const walk = (obj, path) =>
    Object.entries(obj).flatMap(([k, v]) => {
      const p = [...path, k];
      const about = ruleLabel(p);
      if (v && typeof v === 'object') return [h('fieldset', {}, h('legend', {}, about.label), walk(v, p))];
      const input =
        typeof v === 'boolean'
          ? h('input', { type: 'checkbox', checked: v, id: `rule-${p.join('-')}` })
          : h('input', { type: typeof v === 'number' ? 'number' : 'text', value: v ?? '', step: 'any', id: `rule-${p.join('-')}` });
      inputs.push([p, input, v]);
      const hint = h('small', { class: 'hint' });
      const explain = () => {
        const human = about.seconds && input.value !== '' ? ` = ${duration(Number(input.value))}` : '';
        hint.textContent = [about.help, human && `${about.unit}${human}`].filter(Boolean).join(' · ');
      };
      input.addEventListener('input', explain);
      explain();
      const label = about.unit ? `${about.label} (${about.unit})` : about.label;
      return [h('label', { class: 'field', 'data-rule': p.join('.') }, h('span', {}, label), input, hint)];
    });
  const form = h('form', { class: 'rules' }, walk(rules, []), h('button', { class: 'primary' }, t('save')));
  /** The rules as the inputs hold them now, saved or not. Filled into a copy of the
   *  rules shown, so that a list (sleep_rooms, check.kinds) stays a list. */
  const edited = () => {
    const patch = structuredClone(rules);
    for (const [p, input, old] of inputs) {
      let v;
      if (input.type === 'checkbox') v = input.checked;
      else if (input.type === 'number') v = Number(input.value);
      else v = input.value === '' && old === null ? null : input.value;
      let target = patch;
      p.slice(0, -1).forEach((k) => (target = target[k]));
      target[p[p.length - 1]] = v;
    }
    return patch;
  };
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    onSave(edited());
  });
  return h('div', {}, form, tryRulesPanel(residentId, edited));
}

async function residentDetail(ctx, el, id, onChange, created = false) {
  const out = h('div', { class: 'out' });
  const resident = await api('GET', `/residents/${id}`);
  const zones = await api('GET', `/residents/${id}/geofences`);
  const consent = await consentSection(resident, { editable: true });
  const mapEl = h('div', { class: 'map small', id: 'zone-map' });
  const zoneName = h('input', { id: 'zone-name', value: t('geofences') });
  const radius = h('input', { id: 'zone-radius', type: 'number', value: 200, min: 150 });
  const hint = h('p', { class: 'hint' });
  el.replaceChildren(
    h('h2', {}, resident.name),
    out,
    consent,
    h('h3', {}, t('card')),
    cardForm(id, resident.card, (save) => attempt(out, save)),
    h('h3', {}, t('rules')),
    rulesForm(id, resident.rules, out, async (rules) => {
      await attempt(out, () => api('PATCH', `/residents/${id}`, { rules }));
    }),
    h('h3', {}, t('geofences')),
    h('ul', { class: 'plain' }, zones.map((z) =>
      h('li', {}, z.name, ' ', h('button', {
        type: 'button',
        class: 'danger',
        onclick: async () => {
          if (!window.confirm(t('confirm_delete'))) return;
          if (await attempt(out, () => api('DELETE', `/geofences/${z.id}`))) residentDetail(ctx, el, id, onChange);
        },
      }, t('delete'))),
    )),
    h('div', { class: 'inline' }, field(t('zone_name'), zoneName), field(t('radius_m'), radius)),
    h('div', { class: 'inline' },
      h('button', { type: 'button', id: 'draw-polygon', onclick: () => startDrawing('polygon') }, t('draw_polygon')),
      h('button', { type: 'button', id: 'draw-circle', onclick: () => startDrawing('circle') }, t('draw_circle')),
      h('button', { type: 'button', id: 'finish-polygon', onclick: () => finishPolygon() }, t('finish_polygon')),
    ),
    hint,
    mapEl,
  );
  if (created) {
    message(out, t('resident_created_next', { name: resident.name }));
    consent.scrollIntoView({ block: 'start' });
    consent.querySelector('#consent-given-by-resident')?.focus();
  }
  const map = createMap(mapEl);
  const drawn = drawZones(map, zones);
  if (resident.home) map.setView([resident.home.lat, resident.home.lon], 16);
  if (drawn.getBounds().isValid()) map.fitBounds(drawn.getBounds(), { padding: [20, 20] });
  let mode = null;
  let points = [];
  let sketch = null;
  const save = async (body) => {
    if (await attempt(out, () => api('POST', `/residents/${id}/geofences`, { name: zoneName.value, ...body }))) {
      map.remove();
      residentDetail(ctx, el, id, onChange);
    }
  };
  const startDrawing = (m) => {
    mode = m;
    points = [];
    sketch?.remove();
    sketch = null;
    hint.textContent = t('draw_hint');
  };
  const finishPolygon = () => {
    if (mode !== 'polygon' || points.length < 3) return;
    const ring = points.map((p) => [p.lng, p.lat]);
    ring.push(ring[0]);
    mode = null;
    save({ polygon: { type: 'Polygon', coordinates: [ring] } });
  };
  map.on('click', (ev) => {
    if (mode === 'circle') {
      mode = null;
      save({ circle: { lat: ev.latlng.lat, lon: ev.latlng.lng, radius_m: Number(radius.value) } });
    } else if (mode === 'polygon') {
      points.push(ev.latlng);
      sketch?.remove();
      sketch = L.polygon(points, { color: '#1565c0', dashArray: '4 4' }).addTo(map);
    }
  });
  return () => map.remove();
}

// ---- devices ------------------------------------------------------------------

function secretBox(created) {
  const secret = created.mqtt.password;
  const copy = h('button', {
    type: 'button',
    onclick: async () => {
      await navigator.clipboard?.writeText(secret).catch(() => {});
      copy.textContent = t('copied');
    },
  }, t('copy'));
  return h(
    'div',
    { class: 'secret card', id: 'device-secret' },
    h('p', {}, h('strong', {}, t('secret_once'))),
    h('dl', { class: 'facts' },
      h('dt', {}, 'username'), h('dd', {}, h('code', {}, created.mqtt.username)),
      h('dt', {}, 'password'), h('dd', {}, h('code', { class: 'secret-value' }, secret), ' ', copy),
      h('dt', {}, 'topic'), h('dd', {}, h('code', {}, `${created.mqtt.topic_prefix}…`)),
    ),
  );
}

export async function adminDevicesView(ctx, el) {
  const out = h('div', { class: 'out' });
  const secret = h('div');
  const table = h('tbody');
  const residents = [...(await ctx.loadResidents()).values()];
  const resident = h('select', { id: 'device-resident' }, residents.map((r) => h('option', { value: r.id }, r.name)));
  const kind = h('select', { id: 'device-kind' }, ['motion', 'door', 'gps', 'button', 'gateway'].map((k) => h('option', { value: k }, t(`dev_${k}`))));
  const name = h('input', { id: 'device-name', required: true });
  const render = async () => {
    const devices = await api('GET', '/devices');
    table.replaceChildren(...devices.map((d) =>
      h('tr', { 'data-device-id': d.id },
        h('td', {}, h('code', {}, d.id)),
        h('td', {}, d.name),
        h('td', {}, t(`dev_${d.kind}`)),
        h('td', {}, ctx.residentName(d.resident_id)),
        h('td', {}, d.battery != null ? `${d.battery}%` : ''),
        h('td', {}, when(d.last_seen_at)),
        h('td', {},
          h('button', { type: 'button', onclick: async () => {
            const c = await attempt(out, () => api('POST', `/devices/${d.id}/rotate-secret`));
            if (c) secret.replaceChildren(secretBox(c));
          } }, t('rotate_secret')),
          ' ',
          h('button', { type: 'button', class: 'danger', onclick: async () => {
            if (!window.confirm(t('confirm_delete'))) return;
            if (await attempt(out, () => api('DELETE', `/devices/${d.id}`))) render();
          } }, t('revoke')),
        ),
      )));
  };
  el.append(
    h('h1', {}, t('nav_admin_devices')),
    h('form', {
      class: 'card inline',
      onsubmit: async (ev) => {
        ev.preventDefault();
        const rid = Number(resident.value);
        const c = await attempt(out, () => api('POST', '/devices', { resident_id: rid, kind: kind.value, name: name.value }), (e) =>
          // The only conflict here: the resident's consent is not on record yet.
          e.status === 409
            ? [t('device_needs_consent', { name: ctx.residentName(rid) }), ' ', h('a', { href: `#/admin/residents/${rid}`, id: 'device-consent-link' }, t('device_record_consent'))]
            : `${t('error')}: ${e.message}`);
        if (c) {
          secret.replaceChildren(secretBox(c));
          render();
        }
      },
    }, field(t('resident'), resident), field(t('kind'), kind), field(t('name'), name), h('button', { class: 'primary' }, t('create'))),
    out,
    secret,
    h('table', { class: 'list' }, table),
  );
  await render();
}

// ---- users --------------------------------------------------------------------

export async function adminUsersView(ctx, el) {
  const out = h('div', { class: 'out' });
  const table = h('tbody');
  const residents = [...(await ctx.loadResidents()).values()];
  const username = h('input', { id: 'user-name', required: true, autocomplete: 'off' });
  const password = h('input', { id: 'user-password', type: 'password', required: true, minlength: 10, autocomplete: 'new-password' });
  const role = h('select', { id: 'user-role' }, ['staff', 'family', 'admin'].map((r) => h('option', { value: r }, r)));
  const of = h('select', { id: 'user-residents', multiple: true }, residents.map((r) => h('option', { value: r.id }, r.name)));
  const render = async () => {
    const users = await api('GET', '/users');
    table.replaceChildren(...users.map((u) =>
      h('tr', {},
        h('td', {}, u.username),
        h('td', {}, u.role),
        h('td', {}, u.resident_ids.map((id) => ctx.residentName(id)).join(', ')),
        h('td', {}, u.id === ctx.me.id ? '' : h('button', { type: 'button', class: 'danger', onclick: async () => {
          if (!window.confirm(t('confirm_delete'))) return;
          if (await attempt(out, () => api('DELETE', `/users/${u.id}`))) render();
        } }, t('delete'))),
      )));
  };
  el.append(
    h('h1', {}, t('nav_admin_users')),
    h('form', {
      class: 'card inline',
      onsubmit: async (ev) => {
        ev.preventDefault();
        const resident_ids = [...of.selectedOptions].map((o) => Number(o.value));
        if (await attempt(out, () => api('POST', '/users', { username: username.value, password: password.value, role: role.value, resident_ids }))) {
          password.value = '';
          render();
        }
      },
    }, field(t('username'), username), field(t('password'), password), field(t('role'), role), field(t('residents_of'), of), h('button', { class: 'primary' }, t('create'))),
    out,
    h('table', { class: 'list' }, table),
  );
  await render();
}

// ---- audit trail --------------------------------------------------------------

/** The audit trail, newest first: who did what to which record (admins only). */
export async function adminAuditView(ctx, el) {
  const entries = await api('GET', '/audit?limit=500');
  const details = (d) => (d ? Object.entries(d).filter(([, v]) => v !== null).map(([k, v]) => `${k}: ${typeof v === 'object' ? JSON.stringify(v) : v}`).join(', ') : '');
  el.append(
    h('h1', {}, t('nav_audit')),
    h(
      'table',
      { class: 'list', id: 'audit-log' },
      h('thead', {}, h('tr', {}, ['audit_at', 'audit_actor', 'audit_action', 'audit_target', 'audit_details'].map((k) => h('th', { scope: 'col' }, t(k))))),
      h('tbody', {}, entries.map((e) =>
        h('tr', { 'data-action': e.action },
          h('td', {}, when(e.at)),
          h('td', {}, e.actor),
          h('td', {}, h('code', {}, e.action)),
          h('td', {}, e.target),
          h('td', { class: 'audit-details' }, details(e.details)),
        ))),
    ),
  );
}
