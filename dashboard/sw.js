// The dashboard's service worker: shows the hub's Web Push notices on the lock screen
// and opens the alert when one is tapped. It lives at /sw.js so that its scope is the
// whole dashboard. The hub encrypts each notice for this browser; the browser has
// already decrypted it when `push` fires.

self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (ev) => ev.waitUntil(self.clients.claim()));

function notice(data) {
  if (!data) return {};
  try {
    return data.json();
  } catch {
    return { body: data.text() };
  }
}

self.addEventListener('push', (ev) => {
  const n = notice(ev.data);
  // One tag per alert: a reminder, or a repeat after a retry, replaces the notification
  // already shown instead of piling up beside it.
  ev.waitUntil(
    self.registration.showNotification(n.title || 'Mimamori 見守り', {
      body: n.body || '',
      tag: n.tag || undefined,
      renotify: Boolean(n.tag),
      requireInteraction: Boolean(n.require_interaction),
      lang: n.lang || undefined,
      data: { url: n.url || '/' },
    }),
  );
});

/** Where a tapped notice leads: the alert on this dashboard (or the hub's public address). */
function target(notification) {
  try {
    return new URL(notification.data?.url || '/', self.location.origin).href;
  } catch {
    return new URL('/', self.location.origin).href;
  }
}

self.addEventListener('notificationclick', (ev) => {
  ev.notification.close();
  const url = target(ev.notification);
  ev.waitUntil(
    (async () => {
      const windows = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
      const open = windows.find((c) => new URL(c.url).origin === new URL(url).origin);
      if (open) {
        await open.focus();
        try {
          return await open.navigate(url);
        } catch {
          // A window this worker does not control cannot be navigated; open a new one.
        }
      }
      return self.clients.openWindow(url);
    })(),
  );
});
