// The dashboard's shell: login, the header (navigation, connection state, sound,
// language), hash routing between views, and the live stream they all share.

import { api, login, logout, me, token } from './api.js';
import { ago, currentLang, setLang, t } from './i18n.js';
import { Live } from './live.js';
import { h, message } from './util.js';
import { alertListView, alertView, tickSla } from './alerts.js';
import { Alarm } from './alarm.js';
import { handoverView } from './handover.js';
import { mapView } from './map.js';
import { boardView, residentView } from './residents.js';
import { adminAuditView, adminDevicesView, adminResidentsView, adminUsersView } from './admin.js';
import { pushControl, registerWorker } from './push.js';

const root = document.getElementById('app');

/** What every view can reach. */
const ctx = {
  live: null,
  me: null,
  residents: new Map(),
  devices: new Map(),
  alarm: new Alarm(),
  async loadResidents() {
    const list = await api('GET', '/residents');
    this.residents = new Map(list.map((r) => [r.id, r]));
    return this.residents;
  },
  async loadDevices() {
    const list = await api('GET', '/devices');
    this.devices = new Map(list.map((d) => [d.id, d]));
    return this.devices;
  },
  residentName(id) {
    return this.residents.get(id)?.name ?? `#${id}`;
  },
  deviceName(id) {
    return id ? this.devices.get(id)?.name ?? id : '';
  },
  isStaff() {
    return this.me && (this.me.role === 'staff' || this.me.role === 'admin');
  },
};

const ROUTES = [
  [/^#\/alerts$/, () => alertListView],
  [/^#\/alert\/(\d+)$/, () => alertView],
  [/^#\/map$/, () => mapView],
  [/^#\/residents$/, () => boardView],
  [/^#\/resident\/(\d+)$/, () => residentView],
  [/^#\/admin\/residents(?:\/(\d+))?$/, () => adminResidentsView],
  [/^#\/admin\/devices$/, () => adminDevicesView],
  [/^#\/admin\/users$/, () => adminUsersView],
  [/^#\/admin\/audit$/, () => adminAuditView],
  [/^#\/handover$/, () => handoverView],
];

let cleanup = null;

function home() {
  return ctx.isStaff() ? '#/alerts' : '#/residents';
}

async function route() {
  if (!token()) return showLogin();
  if (!ctx.live) await startSession();
  const hash = location.hash || home();
  const match = ROUTES.map(([re, view]) => [hash.match(re), view]).find(([m]) => m);
  if (!match) {
    location.hash = home();
    return;
  }
  const [m, view] = match;
  if (cleanup) cleanup();
  cleanup = null;
  renderHeader(hash);
  const main = document.getElementById('view');
  main.replaceChildren();
  try {
    cleanup = (await view()(ctx, main, ...m.slice(1).map(Number))) || null;
  } catch (e) {
    message(main, e.status === 404 ? t('not_found') : `${t('error')}: ${e.message}`, 'error');
  }
}

async function startSession() {
  ctx.me = me();
  await Promise.all([ctx.loadResidents(), ctx.loadDevices().catch(() => ctx.devices)]);
  ctx.live = new Live(token);
  ctx.live.addEventListener('connection', () => renderConnection());
  ctx.live.addEventListener('frame', (ev) => keepNamesCurrent(ev.detail));
  if (ctx.isStaff()) {
    ctx.alarm.attach();
    ctx.live.addEventListener('new-alert', (ev) => ctx.alarm.announce(ev.detail, ctx.residentName(ev.detail.resident_id)));
    ctx.live.addEventListener('frame', () => ctx.alarm.update([...ctx.live.alerts.values()]));
  }
  ctx.live.start();
  registerWorker();
}

/** Residents created or renamed after login are named by the stream; a frame about one
 *  still unknown (its name frame fell out of the replay window) reloads the list. */
let reloading = null;
function keepNamesCurrent(frame) {
  if (frame.type === 'resident') {
    const known = ctx.residents.get(frame.resident_id);
    ctx.residents.set(frame.resident_id, { ...(known ?? { id: frame.resident_id }), name: frame.name });
    return;
  }
  const id = frame.alert?.resident_id ?? frame.status?.resident_id;
  if (id === undefined || ctx.residents.has(id) || reloading) return;
  reloading = Promise.all([ctx.loadResidents(), ctx.loadDevices().catch(() => ctx.devices)])
    .then(() => ctx.live?.dispatchEvent(new CustomEvent('frame', { detail: { type: 'names' } })))
    .catch(() => {})
    .finally(() => {
      reloading = null;
    });
}

function endSession() {
  ctx.alarm.detach();
  if (ctx.live) ctx.live.stop();
  ctx.live = null;
  ctx.me = null;
  if (cleanup) cleanup();
  cleanup = null;
}

function showLogin() {
  endSession();
  const error = h('div', { id: 'login-error' });
  const user = h('input', { id: 'username', name: 'username', autocomplete: 'username', required: true });
  const pass = h('input', { id: 'password', name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const form = h(
    'form',
    {
      class: 'login card',
      onsubmit: async (ev) => {
        ev.preventDefault();
        try {
          await login(user.value.trim(), pass.value);
          location.hash = '';
          await route();
        } catch (e) {
          message(error, e.status === 401 ? t('login_failed') : `${t('error')}: ${e.message}`, 'error');
        }
      },
    },
    h('h1', {}, `👀 ${t('app_title')}`),
    h('h2', {}, t('login_title')),
    h('label', { class: 'field' }, h('span', {}, t('username')), user),
    h('label', { class: 'field' }, h('span', {}, t('password')), pass),
    h('button', { type: 'submit', class: 'primary', id: 'sign-in' }, t('sign_in')),
    error,
    langSwitch(showLogin),
  );
  root.replaceChildren(h('main', { class: 'login-page' }, form));
  user.focus();
}

function langSwitch(rerender) {
  return h(
    'button',
    {
      type: 'button',
      class: 'lang',
      id: 'lang-switch',
      onclick: () => {
        setLang(currentLang() === 'ja' ? 'en' : 'ja');
        rerender();
      },
    },
    t('language'),
  );
}

function renderConnection() {
  const el = document.getElementById('conn');
  if (!el || !ctx.live) return;
  const s = ctx.live.state;
  el.dataset.state = s;
  el.textContent = s === 'live' ? `● ${t('live')}` : `○ ${t('reconnecting')}`;
}

function renderHeader(hash) {
  const link = (href, key, show = true) =>
    show && h('a', { href, class: hash.startsWith(href) ? 'active' : '' }, t(key));
  const admin = ctx.me?.role === 'admin';
  const nav = h(
    'nav',
    {},
    link('#/alerts', 'nav_alerts', ctx.isStaff()),
    link('#/map', 'nav_map'),
    link('#/residents', 'nav_board'),
    link('#/handover', 'nav_handover', ctx.isStaff()),
    link('#/admin/residents', 'nav_admin_residents', ctx.isStaff()),
    link('#/admin/devices', 'nav_admin_devices', ctx.isStaff()),
    link('#/admin/users', 'nav_admin_users', admin),
    link('#/admin/audit', 'nav_audit', admin),
  );
  const sound = ctx.isStaff()
    && h(
      'button',
      {
        type: 'button',
        id: 'sound-toggle',
        onclick: () => {
          ctx.alarm.setMuted(!ctx.alarm.muted);
          renderHeader(location.hash);
        },
      },
      ctx.alarm.muted ? `🔇 ${t('sound_off')}` : `🔔 ${t('sound_on')}`,
    );
  const header = h(
    'header',
    {},
    h('a', { class: 'brand', href: home() }, `👀 ${t('app_title')}`),
    nav,
    h('span', { id: 'conn', role: 'status', 'aria-live': 'polite' }),
    sound,
    pushControl(),
    langSwitch(() => route()),
    h('span', { class: 'who' }, ctx.me?.username ?? ''),
    h(
      'button',
      {
        type: 'button',
        id: 'sign-out',
        onclick: async () => {
          await logout().catch(() => {});
          showLogin();
        },
      },
      t('sign_out'),
    ),
  );
  let main = document.getElementById('view');
  if (!main) main = h('main', { id: 'view' });
  root.replaceChildren(soundBanner(), header, main);
  renderConnection();
}

let banner = null;

/** Full width above everything while the browser holds the alarm sound back. */
function soundBanner() {
  banner = h(
    'button',
    { type: 'button', id: 'sound-banner', class: 'sound-banner', title: t('sound_blocked_hint'), onclick: () => ctx.alarm.unblock() },
    `🔇 ${t('sound_blocked')}`,
  );
  showBanner();
  return banner;
}

function showBanner() {
  if (banner) banner.hidden = !(ctx.isStaff() && ctx.alarm.blocked);
}

/** Every "5 min ago" on the page counts up by itself. */
setInterval(() => {
  for (const el of document.querySelectorAll('[data-since]')) el.textContent = ago(el.dataset.since);
  for (const el of document.querySelectorAll('[data-sla]')) tickSla(el);
}, 1000);

ctx.alarm.addEventListener('change', showBanner);

window.addEventListener('hashchange', route);
window.addEventListener('mimamori:logged-out', () => showLogin());
route();
