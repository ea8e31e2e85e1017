// Web Push on this device: the service worker, the browser's subscription with the
// hub's VAPID key, and the hub's list of this user's browsers kept in step with it.

import { api } from './api.js';
import { t } from './i18n.js';
import { h } from './util.js';

export function pushSupported() {
  return 'serviceWorker' in navigator && 'PushManager' in window && 'Notification' in window;
}

/** Registers the service worker (once per page load); resolves to its registration. */
let registering = null;
export function registerWorker() {
  if (!pushSupported()) return Promise.resolve(null);
  registering ??= navigator.serviceWorker.register('/sw.js', { scope: '/' }).catch(() => null);
  return registering;
}

/** The browser asks its push service for an endpoint; one out of reach may never answer. */
const SUBSCRIBE_WITHIN_MS = 20000;

function withTimeout(promise, ms) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(t('push_no_service'))), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

/** base64url to bytes, as `applicationServerKey` wants them. */
function bytes(b64url) {
  const b64 = b64url.replace(/-/g, '+').replace(/_/g, '/');
  const raw = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
  return Uint8Array.from(raw, (c) => c.charCodeAt(0));
}

function sameKey(sub, key) {
  const have = sub.options?.applicationServerKey;
  if (!have) return false;
  const want = bytes(key);
  const a = new Uint8Array(have);
  return a.length === want.length && a.every((b, i) => b === want[i]);
}

/** 'unsupported', 'denied', 'on' or 'off' for this browser and the signed-in user. */
export async function pushState() {
  if (!pushSupported()) return 'unsupported';
  if (Notification.permission === 'denied') return 'denied';
  const reg = await registerWorker();
  const sub = reg && (await reg.pushManager.getSubscription());
  if (!sub || Notification.permission !== 'granted') return 'off';
  const mine = await api('GET', '/push/subscriptions').catch(() => []);
  return mine.some((s) => s.endpoint === sub.endpoint) ? 'on' : 'off';
}

export async function enablePush() {
  const reg = await registerWorker();
  if (!reg) throw new Error(t('push_unsupported'));
  if ((await Notification.requestPermission()) !== 'granted') throw new Error(t('push_denied'));
  await navigator.serviceWorker.ready;
  const { public_key: key } = await api('GET', '/push/key');
  let sub = await reg.pushManager.getSubscription();
  if (sub && !sameKey(sub, key)) {
    await sub.unsubscribe();
    sub = null;
  }
  sub ??= await withTimeout(
    reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: bytes(key) }),
    SUBSCRIBE_WITHIN_MS,
  );
  await api('POST', '/push/subscriptions', sub.toJSON());
}

export async function disablePush() {
  const reg = await registerWorker();
  const sub = reg && (await reg.pushManager.getSubscription());
  if (!sub) return;
  const mine = await api('GET', '/push/subscriptions');
  for (const s of mine.filter((m) => m.endpoint === sub.endpoint)) {
    await api('DELETE', `/push/subscriptions/${s.id}`);
  }
  await sub.unsubscribe();
}

/** The "Enable notifications on this device" control, with its state and any error. */
export function pushControl() {
  const status = h('span', { class: 'push-status', id: 'push-status', role: 'status' });
  const button = h('button', { type: 'button', id: 'push-toggle', class: 'push-toggle' }, t('push_enable'));
  const box = h('span', { class: 'push', id: 'push-control' }, button, status);
  const show = async () => {
    const state = await pushState().catch(() => 'off');
    box.dataset.state = state;
    button.disabled = state === 'unsupported' || state === 'denied';
    button.textContent = state === 'on' ? `🔔 ${t('push_on')}` : `🔕 ${t('push_enable')}`;
    button.title = state === 'on' ? t('push_disable') : '';
    if (state === 'unsupported') status.textContent = t('push_unsupported');
    if (state === 'denied') status.textContent = t('push_denied');
  };
  button.addEventListener('click', async () => {
    status.textContent = '';
    button.disabled = true;
    try {
      if (box.dataset.state === 'on') await disablePush();
      else await enablePush();
    } catch (e) {
      status.textContent = `${t('push_failed')}: ${e.message}`;
    }
    await show();
  });
  show();
  return box;
}
