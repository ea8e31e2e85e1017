// Browser test of the dashboard against a real hub, driven by tests/browser.rs:
// headless Debian Chromium through playwright-core, no browser download.
//
// The Rust side creates the users and residents, passes them in environment
// variables, and publishes the MQTT message when this script prints READY,
// writing PUBLISHING to our stdin first so the 2 s clock starts before the publish.

import { createInterface } from 'node:readline';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { check, env, hubContext, launch, run, signIn, watchErrors } from './harness.mjs';
const HUB = env('HUB_URL');
const SHOTS = env('SCREENSHOT_DIR');
const STAFF = [env('STAFF1_USER'), env('STAFF1_PASS')];
const STAFF2 = [env('STAFF2_USER'), env('STAFF2_PASS')];
const ADMIN = [env('ADMIN_USER'), env('ADMIN_PASS')];
const FAMILY = [env('FAMILY_USER'), env('FAMILY_PASS')];
const FAMILY_RESIDENT = env('FAMILY_RESIDENT_NAME');
const OTHER_RESIDENT = env('OTHER_RESIDENT_NAME');
const OTHER_ID = env('OTHER_RESIDENT_ID');
const ZONE_NAME = env('ZONE_NAME');
const LATE_RESIDENT = env('LATE_RESIDENT_NAME');
const LATE_ADDRESS = env('LATE_ADDRESS');
const LATE_PHONE = env('LATE_PHONE');
const LATE_KEY_HOLDER = env('LATE_KEY_HOLDER');
const ALERT_WITHIN_MS = 2000;
/** The alarm's repeat period (alarm.js REPEAT_MS) and a margin for a loaded machine. */
const REPEAT_MS = 2000;

mkdirSync(SHOTS, { recursive: true });
const stdinLines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

async function shot(page, name) {
  const path = join(SHOTS, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  console.log(`screenshot ${path}`);
}

/** A screenshot of one part of the page, without the sticky header over it. */
async function shotOf(page, selector, name) {
  const path = join(SHOTS, `${name}.png`);
  await page.evaluate(() => { document.querySelector('header').style.position = 'static'; });
  await page.locator(selector).screenshot({ path });
  await page.evaluate(() => { document.querySelector('header').style.position = ''; });
  console.log(`screenshot ${path}`);
}

/** Stands in for the browser's autoplay policy, which headless Chromium does not apply:
 *  an AudioContext stays suspended until the document had a user gesture and resumes it.
 *  Every tone the page starts is recorded in `window.__tones` with its pitch. */
function instrumentAudio() {
  const Real = window.AudioContext;
  window.__tones = [];
  // A gesture in this document (Chromium's own sticky activation may outlive a reload).
  let gesture = false;
  for (const type of ['pointerdown', 'keydown']) {
    window.addEventListener(type, (ev) => { gesture ||= ev.isTrusted; }, true);
  }
  window.AudioContext = class extends Real {
    constructor(...args) {
      super(...args);
      this.blockedUntilGesture = true;
    }
    get state() {
      return this.blockedUntilGesture ? 'suspended' : super.state;
    }
    async resume() {
      if (!gesture) return;
      await super.resume();
      this.blockedUntilGesture = false;
      this.dispatchEvent(new Event('statechange'));
    }
    createOscillator() {
      const osc = super.createOscillator();
      const start = osc.start.bind(osc);
      osc.start = (when) => {
        window.__tones.push({ at: performance.now(), hz: osc.frequency.value });
        start(when);
      };
      return osc;
    }
  };
}

/** A browser context that reaches only the hub: the tile server of config.js is
 *  cut off, so the "tiles cannot load" path is what the test sees. */
function context(browser, locale) {
  return hubContext(browser, HUB, locale, instrumentAudio);
}

/** Distinct pitches in the order they were first played: one per repeat of the alarm. */
async function pitches(page) {
  return page.evaluate(() => [...new Set(window.__tones.map((t) => t.hz))]);
}

/** axe-core, served by the hub like Leaflet (the CSP allows only the hub's own scripts). */
async function axeClean(page, what) {
  if (!(await page.evaluate(() => typeof window.axe !== 'undefined'))) {
    await page.addScriptTag({ url: '/node_modules/axe-core/axe.min.js' });
  }
  const bad = await page.evaluate(async () => {
    const r = await window.axe.run(document, { resultTypes: ['violations'] });
    return r.violations
      .filter((v) => v.impact === 'serious' || v.impact === 'critical')
      .map((v) => `${v.id} (${v.impact}): ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(' | ')}`);
  });
  check(bad.length === 0, `axe: no serious or critical violation on ${what}${bad.length ? `\n  ${bad.join('\n  ')}` : ''}`);
}

function login(page, credentials) {
  return signIn(page, HUB, credentials);
}

async function main() {
  // Real audio runs; instrumentAudio() plays the browser's blocking of it.
  const browser = await launch(['--autoplay-policy=no-user-gesture-required']);
  try {
    const a = await (await context(browser, 'en-US')).newPage();
    const b = await (await context(browser, 'en-US')).newPage();
    watchErrors(a, 'staff A');
    watchErrors(b, 'staff B');

    const first = await a.goto(HUB);
    const csp = first.headers()['content-security-policy'] || '';
    check(csp.includes("script-src 'self'") && csp.includes("frame-ancestors 'none'"), 'the page has a strict CSP');
    check(first.headers()['x-content-type-options'] === 'nosniff', 'the page is not sniffed');
    await a.waitForSelector('#sign-in');
    await shot(a, '01-login');
    await login(a, STAFF);
    await login(b, STAFF2);
    check(await a.textContent('#conn') === '● live', 'connection state shows live');

    // Web Push: the service worker registers for the whole dashboard and the control shows.
    const scope = await a.evaluate(async () => (await navigator.serviceWorker.ready).scope);
    check(scope === `${HUB}/`, `the service worker is registered for the dashboard (scope ${scope})`);
    await a.waitForSelector('#push-control[data-state="off"]');
    check(
      (await a.textContent('#push-toggle')).includes('Enable notifications on this device'),
      'the staff dashboard offers notifications on this device',
    );
    await shot(a, 'push-01-staff-control');

    // Signing in was a click, so sound may play; after a reload the browser holds it back
    // and a banner says so until a click enables it.
    check(await a.locator('#sound-banner').isHidden(), 'no banner while sound can play');
    await a.reload();
    await a.waitForSelector('#conn[data-state="live"]');
    const banner = a.locator('#sound-banner');
    await banner.waitFor({ state: 'visible' });
    check((await banner.textContent()).includes('Sound is off — click to enable'), 'a blocked alarm sound shows the banner');
    await shot(a, '02-sound-blocked-banner');
    await banner.click();
    await banner.waitFor({ state: 'hidden' });
    check(true, 'a click enables the sound and the banner goes');

    // A resident created after login presses SOS: the alert names them within 2 s.
    console.log('READY');
    const line = await stdinLines.next();
    check(line.value === 'PUBLISHING', 'the test created a resident and is publishing the SOS');
    const t0 = Date.now();
    const row = a.locator('.alert-row[data-kind="sos"]');
    await row.waitFor({ timeout: ALERT_WITHIN_MS });
    await a.waitForFunction((name) => document.querySelector('.alert-row[data-kind="sos"] .who')?.textContent === name, LATE_RESIDENT, { timeout: Math.max(1, ALERT_WITHIN_MS - (Date.now() - t0)) });
    check(Date.now() - t0 <= ALERT_WITHIN_MS, `alert shown with the new resident's name ${Date.now() - t0} ms after the publish`);
    check((await row.locator('.kind').textContent()) === 'SOS button', 'the alert says what happened');
    check((await row.locator('.desc').textContent()) === 'Pressed the SOS button', 'the alert says it in words');
    check(/s ago|min ago/.test(await row.locator('[data-since]').textContent()), 'the alert says since when');
    check(/^⏱ 0:\d\d$/.test(await row.locator('.sla').textContent()), 'the 60-second service-level timer runs');
    const order = await a.locator('.alert-row').evaluateAll((rows) => rows.map((r) => r.dataset.kind));
    check(order[0] === 'sos' && order.includes('low_battery'), `triage: the critical SOS comes before an older warning (${order.join(', ')})`);
    await b.locator('.alert-row[data-kind="sos"]').waitFor();
    const alertId = await row.getAttribute('data-alert-id');

    // The critical alarm repeats, rising, while nobody acknowledges.
    await a.waitForFunction(() => new Set(window.__tones.map((t) => t.hz)).size >= 3, null, { timeout: 4 * REPEAT_MS + 2000 });
    const rising = await pitches(a);
    check(rising.every((hz, i) => i === 0 || hz > rising[i - 1]), `the critical alarm repeats and rises (${rising.map(Math.round).join(' → ')} Hz)`);
    await a.waitForFunction(() => /^🚨 \(\d+\) /.test(document.title), null, { timeout: 3000 });
    check(true, 'the title flashes with the number of alerts waiting');
    await shot(a, '03-alert-queue');

    // Acknowledge from the keyboard: focus the row, A, a note, Tab to Confirm, Enter.
    await row.focus();
    await a.keyboard.press('a');
    await a.waitForSelector('#action-note');
    await a.keyboard.type('Calling the resident now');
    await a.keyboard.press('Tab');
    await a.keyboard.press('Tab');
    check(await a.evaluate(() => document.activeElement?.id) === 'action-confirm', 'Tab reaches Confirm after the note');
    await a.keyboard.press('Enter');
    await a.locator('.alert-row[data-kind="sos"][data-state="acknowledged"]').waitFor({ timeout: 5000 });
    check(true, 'an alert is acknowledged with the keyboard alone');
    await b.locator('.alert-row[data-kind="sos"] [data-state="acknowledged"]').waitFor({ timeout: 5000 });
    check(true, 'the second browser sees the alert acknowledged');
    await shot(b, '04-acknowledged-in-second-browser');
    // Silence is asserted over more than one repeat period: no condition can show an absence sooner.
    const heard = await a.evaluate(() => window.__tones.length);
    await a.waitForTimeout(REPEAT_MS * 1.5);
    check(await a.evaluate(() => window.__tones.length) === heard, 'the alarm stops once acknowledged');
    check(!(await a.title()).startsWith('🚨'), 'the title stops flashing once nothing urgent waits');

    // The alert's page: the resident's card, one-click records, history.
    await a.locator('.alert-row[data-kind="sos"] a.kind').click();
    await a.waitForSelector('#alert-state [data-state="acknowledged"]');
    check((await a.textContent('#alert-history')).includes('Calling the resident now'), 'the note is in the history');
    const card = a.locator('#resident-card');
    check((await card.textContent()).includes(LATE_ADDRESS), 'the alert page shows the address');
    check((await card.locator('[data-field="phone"] a').getAttribute('href')) === `tel:${LATE_PHONE.replace(/[^\d+]/g, '')}`, 'the phone is a tel: link');
    check((await card.textContent()).includes(LATE_KEY_HOLDER), 'the alert page shows the key holder');
    check(await card.locator('#card-contacts li').count() === 2, 'the emergency contacts are listed in order');
    await a.click('button.quick[data-note="note_called_no_answer"]');
    await a.waitForFunction(() => document.querySelector('#alert-history')?.textContent.includes('Called, no answer'));
    check(true, '"called, no answer" lands in the history with one click');
    await shot(a, '05-alert-page');
    await a.click('button.resolve');
    await a.fill('#action-note', 'She pressed it by accident; all well');
    await a.click('#action-confirm');
    await a.waitForSelector('#alert-state [data-state="resolved"]');
    await b.locator('.alert-row[data-kind="sos"]').waitFor({ state: 'detached', timeout: 5000 });
    check(true, 'resolving removes the alert from the live list in the other browser');

    // Map: markers and zones even though no tile loads.
    await a.goto(`${HUB}/#/map`);
    await a.waitForSelector('.resident-marker');
    await a.waitForSelector('path.zone');
    await a.waitForSelector('.tiles-off');
    check(true, 'the map shows markers and safe zones without tiles');
    await a.locator('path.zone').first().hover({ force: true });
    await a.waitForSelector('.leaflet-tooltip');
    check((await a.textContent('.leaflet-tooltip')) === ZONE_NAME, 'a zone name shows as text');
    check(await a.locator('.leaflet-tooltip img').count() === 0, 'a zone name is not markup');
    check(await a.evaluate(() => window.__xss) === undefined, "a zone name's markup never runs");
    check((await a.locator('.resident-marker .label').allTextContents()).includes(FAMILY_RESIDENT), 'map pins carry the resident names');
    await shot(a, '06-map');

    // Resident board and a resident page with the 7-day rhythm.
    await a.goto(`${HUB}/#/residents`);
    await a.waitForSelector('[data-resident-id]');
    await shot(a, '07-resident-board');
    // Problems first: the resident with a low battery (and its warning) leads the board.
    check((await a.locator('[data-resident-id] h2').first().textContent()) === FAMILY_RESIDENT, 'a resident with a problem comes first');
    await a.click('button.filter[data-filter="battery"]');
    check(JSON.stringify(await a.locator('[data-resident-id] h2').allTextContents()) === JSON.stringify([FAMILY_RESIDENT]), 'the low-battery filter shows only that resident');
    await a.click('button.filter[data-filter="offline"]');
    check(await a.locator('[data-resident-id]').count() === 0, 'the offline filter shows nobody when every device is online');
    await a.click('button.filter[data-filter="all"]');
    check(await a.locator('[data-resident-id]').count() === 3, 'the all filter shows every resident');
    await a.locator(`[data-resident-id] h2 a`, { hasText: FAMILY_RESIDENT }).click();
    await a.waitForSelector('#rhythm-chart');
    check(await a.locator('#rhythm-chart rect').count() === 7 * 24, 'the rhythm chart has 7 days × 24 hours');
    check(await a.locator('#rhythm-chart rect:not([data-count="0"])').count() > 0, 'the rhythm chart shows activity');
    await shot(a, '08-resident-page');

    // The handover lists the shift: what happened, who acknowledged, the calls recorded.
    await a.goto(`${HUB}/#/handover`);
    await a.waitForSelector('#handover-happened');
    check((await a.textContent('#handover-happened')).includes(LATE_RESIDENT), 'the handover lists what happened');
    check((await a.textContent('#handover-acks')).includes(STAFF[0]), 'the handover says who acknowledged');
    check((await a.textContent('#handover-notes')).includes('Called, no answer'), 'the handover lists the calls');
    await shot(a, '09-handover');
    await a.emulateMedia({ media: 'print' });
    check(!(await a.isVisible('header')) && !(await a.isVisible('#handover-print')), 'the printed handover has no header or buttons');
    check(await a.isVisible('#handover-happened'), 'the printed handover keeps the shift');
    await a.emulateMedia({ media: 'screen' });

    // Japanese.
    await a.goto(`${HUB}/#/alerts`);
    await a.click('#lang-switch');
    await a.waitForSelector('text=通報一覧');
    check(await a.getAttribute('html', 'lang') === 'ja', 'the page language is Japanese');
    check((await a.textContent('#conn')).includes('接続中'), 'connection state in Japanese');
    await a.goto(`${HUB}/#/alert/${alertId}`);
    await a.waitForSelector('#alert-state [data-state="resolved"]');
    check((await a.textContent('#alert-state')) === '解決済み', 'alert state in Japanese');
    await shot(a, '10-japanese-alert');
    await a.goto(`${HUB}/#/residents`);
    await a.waitForSelector('[data-resident-id]');
    await shot(a, '11-japanese-board');

    // Admin: a device's secret is shown once.
    const admin = await (await context(browser, 'ja-JP')).newPage();
    watchErrors(admin, 'admin');
    await login(admin, ADMIN);
    await admin.goto(`${HUB}/#/admin/devices`);
    await admin.fill('#device-name', '玄関センサー');
    await admin.selectOption('#device-kind', 'door');
    await admin.click('form.card button.primary');
    const secret = await admin.locator('#device-secret .secret-value').textContent();
    check(/^[0-9a-f]{64}$/.test(secret), 'a new device secret is shown once');
    await shot(admin, '12-admin-devices');
    await admin.goto(`${HUB}/#/admin/residents`);
    await admin.locator('button.link', { hasText: FAMILY_RESIDENT }).click();
    await admin.waitForSelector('#zone-map path.zone');
    await shot(admin, '13-admin-resident');

    // The rule editor tries edited, unsaved rules on the stored history beside the current
    // ones. Her motion sensor speaks only when it sees her, so the one-hour offline limit
    // took it for dead (and her for unwatched) in each quiet spell; a day's limit does not.
    await admin.fill('#rule-offline-motion_s', '86400');
    await admin.click('#rules-try');
    await admin.locator('#rules-try-table').waitFor({ timeout: 30000 });
    const counts = async (kind) => {
      const row = admin.locator(`#rules-try-table tr[data-kind="${kind}"]`);
      const count = async (which) => Number(await row.locator(`[data-setting="${which}"]`).getAttribute('data-count'));
      return { label: await row.locator('th').textContent(), now: await count('current'), edited: await count('edited') };
    };
    const offline = await counts('device_offline');
    const still = await counts('inactivity');
    check(offline.label === '機器の通信途絶' && still.label === '動きがない', 'the tried alert kinds have their Japanese labels');
    check(offline.edited < offline.now, `device offline: ${offline.now} with the current rules, ${offline.edited} edited`);
    check(still.edited < still.now, `no movement: ${still.now} with the current rules, ${still.edited} edited`);
    check((await admin.textContent('#rules-try-range')).includes('件'), 'the comparison says how much history it covered');
    check((await admin.inputValue('#rule-offline-motion_s')) === '86400', 'trying leaves the edited rules in the form');
    await shot(admin, '13b-rules-tried');
    await consentFlow(admin);

    // A family user sees their own resident and nobody else.
    const fam = await (await context(browser, 'ja-JP')).newPage();
    watchErrors(fam, 'family');
    await login(fam, FAMILY);
    await fam.waitForSelector('[data-resident-id]');
    const cards = await fam.locator('[data-resident-id] h2').allTextContents();
    check(cards.length === 1 && cards[0] === FAMILY_RESIDENT, `family board shows only ${FAMILY_RESIDENT}`);
    check(!(await fam.textContent('body')).includes(OTHER_RESIDENT), 'the other resident is nowhere on the page');
    check(await fam.locator('a[href="#/alerts"]').count() === 0, 'family users have no alert desk');
    await shot(fam, '14-family-board');
    await fam.waitForSelector('#push-control[data-state="off"]');
    check(
      (await fam.textContent('#push-toggle')).includes('この端末で通知を受け取る'),
      'the family page offers notifications on this device, in Japanese',
    );
    await shot(fam, 'push-02-family-control');
    // No real push service is reachable from here: allowed notifications and a press of the
    // control end in a clear message rather than a control that claims to be on.
    await fam.context().grantPermissions(['notifications'], { origin: HUB });
    await fam.click('#push-toggle');
    await fam.waitForFunction(
      () => document.querySelector('#push-status')?.textContent.startsWith('通知を有効にできませんでした'),
      null,
      { timeout: 30000 },
    );
    check(
      (await fam.getAttribute('#push-control', 'data-state')) === 'off',
      'without a push service the control says why and stays off',
    );
    await fam.goto(`${HUB}/#/resident/${OTHER_ID}`);
    await fam.waitForSelector('.msg-error');
    check((await fam.textContent('.msg-error')) === '見つかりません。', "another resident's page is not found");

    await everyPage(browser, admin, alertId);
    await wanderer(admin);
  } finally {
    await browser.close();
  }
}

/** A resident created in the dashboard opens at the consent form; a device waits for the
 *  consent, and registers once the form recorded it; withdrawing asks first. (Japanese.) */
async function consentFlow(page) {
  const name = '加藤 幸子';
  await page.goto(`${HUB}/#/admin/residents`);
  await page.fill('#new-resident-name', name);
  await page.click('form.card button.primary');
  await page.waitForSelector('#consent[data-consent="none"] #consent-form');
  check(await page.evaluate(() => document.activeElement?.id) === 'consent-given-by-resident', 'a new resident opens at the consent form, focused');
  check((await page.textContent('.resident-admin .out')).includes('次に下の欄で同意を記録'), 'the page says the consent comes next');
  await shotOf(page, '#consent', 'consent-01-new-resident');
  await axeClean(page, 'the consent form');

  const register = async () => {
    await page.goto(`${HUB}/#/admin/devices`);
    await page.selectOption('#device-resident', { label: name });
    await page.selectOption('#device-kind', 'button');
    await page.fill('#device-name', 'ペンダント');
    await page.click('form.card button.primary');
  };
  await register();
  const link = page.locator('#device-consent-link');
  await link.waitFor();
  check((await page.textContent('.msg-error')).includes('同意が記録されていない'), 'a device before consent is refused, saying why');
  check(await page.locator('#device-secret .secret-value').count() === 0, 'no device secret without consent');
  const consentPage = await link.getAttribute('href');
  const id = consentPage.split('/').pop();
  await link.click();
  await page.waitForSelector('#consent-form');

  await page.check('#consent-given-by-guardian');
  await page.fill('#consent-giver-name', '加藤 一郎（長男）');
  await page.fill('#consent-purposes', '見守り\n緊急時の対応\n');
  await page.fill('#consent-recipients', '地域包括支援センター\n民生委員\n家族');
  await page.fill('#consent-document', '同意書 2026-201');
  await page.click('#consent-record');
  await page.waitForSelector('#consent[data-consent="given"]');
  check((await page.textContent('#consent-state')) === '同意あり', 'the consent shows as given');
  check(await page.evaluate(() => document.activeElement?.id) === 'consent-title', 'focus returns to the consent heading, which says it is given');
  check((await page.textContent('#consent [data-field="given_by"]')) === '加藤 一郎（長男）（代理人）', 'it says a guardian gave it, and who');
  check(JSON.stringify(await page.locator('#consent-recipient-list li').allTextContents()) === JSON.stringify(['地域包括支援センター', '民生委員', '家族']), 'it names the recipients');
  check(await page.locator('#consent-purpose-list li').count() === 2, 'it lists the purposes, blank lines left out');
  check((await page.textContent('#consent [data-field="document_ref"]')) === '同意書 2026-201', 'it names the document');
  check((await page.textContent('#consent [data-field="recorded_by"]')).includes('admin'), 'it says who recorded it');
  check(await page.locator('#consent .consent-history').count() === 0, 'a first consent has no earlier ones');
  await shotOf(page, '#consent', 'consent-02-given');
  await axeClean(page, 'a recorded consent');

  await register();
  const secret = await page.locator('#device-secret .secret-value').textContent();
  check(/^[0-9a-f]{64}$/.test(secret), 'with consent recorded the device registers');

  await page.goto(`${HUB}/${consentPage}`);
  await page.waitForSelector('#consent[data-consent="given"]');
  await page.fill('#consent-withdraw-note', '施設に入所');
  let asked = '';
  page.once('dialog', (d) => {
    asked = d.message();
    d.accept();
  });
  await page.click('#consent-withdraw');
  await page.waitForSelector('#consent[data-consent="withdrawn"]');
  check(asked.includes(name) && asked.includes('収集されません'), 'withdrawing asks first, saying collection stops');
  check(await page.evaluate(() => document.activeElement?.id) === 'consent-title', 'after withdrawing, focus is on the consent heading');
  check((await page.textContent('#consent [data-field="withdrawn_by"]')).includes('admin'), 'the withdrawal says who');
  check((await page.textContent('#consent')).includes('施設に入所'), 'the withdrawal keeps its note');
  check(await page.locator('#consent-form').isVisible(), 'a new consent can be recorded after a withdrawal');
  check((await page.textContent('#consent .consent-history summary')).includes('1'), 'the withdrawn consent is kept as an earlier one');
  await shotOf(page, '#consent', 'consent-03-withdrawn');
  await page.goto(`${HUB}/#/admin/audit`);
  await page.waitForSelector('#audit-log tr[data-action="consent.withdraw"]');
  const audited = async (action) => (await page.locator(`#audit-log tr[data-action="${action}"]`).allTextContents()).some((row) => row.includes(`resident/${id}`));
  check(await audited('consent.record') && await audited('consent.withdraw'), 'recording and withdrawing are on the audit trail');
}

/** A search: the alert page's map moves the marker and extends the trail in place. */
async function wanderer(page) {
  const walk = async (cmd) => {
    console.log(cmd);
    check((await stdinLines.next()).value === 'WALKED', `the test published the fixes of ${cmd}`);
  };
  await page.evaluate(() => localStorage.setItem('mimamori.lang', 'en'));
  await page.goto(`${HUB}/#/alerts`);
  await page.reload();
  await walk('WANDER');
  const row = page.locator('.alert-row[data-kind="geofence_exit"]');
  await row.waitFor({ timeout: 10000 });
  check(/^\d+ m outside “/.test(await row.locator('.desc').textContent()), 'the exit says how far outside which zone');
  await row.locator('a.kind').click();
  await page.waitForSelector('#alert-map .leaflet-marker-icon');
  await page.waitForSelector('#alert-map path.trail', { state: 'attached' });
  const map = await page.$('#alert-map');
  const before = await page.evaluate(() => ({
    at: document.querySelector('#alert-map .leaflet-marker-icon').style.transform,
    trail: document.querySelector('#alert-map path.trail').getAttribute('d'),
  }));
  await walk('MOVE');
  await page.waitForFunction((b) => {
    const marker = document.querySelector('#alert-map .leaflet-marker-icon');
    const trail = document.querySelector('#alert-map path.trail');
    return marker && trail && marker.style.transform !== b.at && trail.getAttribute('d') !== b.trail;
  }, before, { timeout: 10000 });
  check(await map.evaluate((el) => el.isConnected), 'a new fix moves the marker and extends the trail; the map is not rebuilt');
  await shot(page, '15-search-map');
}

/** Every page in English and Japanese: a screenshot of each, and axe-core clean on each. */
async function everyPage(browser, page, alertId) {
  const pages = [
    ['alerts', '#/alerts', '#alert-list'],
    ['alert', `#/alert/${alertId}`, '#alert-history li'],
    ['map', '#/map', '.resident-marker'],
    ['board', '#/residents', '[data-resident-id]'],
    ['resident', `#/resident/${OTHER_ID}`, '#consent[data-consent="given"]'],
    ['handover', '#/handover', '#handover-happened'],
    ['admin-residents', '#/admin/residents', '#new-resident-name'],
    ['admin-resident', `#/admin/residents/${OTHER_ID}`, '#consent[data-consent="given"] #consent-withdraw'],
    ['admin-devices', '#/admin/devices', '#device-name'],
    ['admin-users', '#/admin/users', '#user-name'],
    ['audit', '#/admin/audit', '#audit-log'],
  ];
  for (const lang of ['en', 'ja']) {
    const guest = await (await context(browser, lang === 'ja' ? 'ja-JP' : 'en-GB')).newPage();
    watchErrors(guest, `${lang} login`);
    await guest.goto(HUB);
    await guest.evaluate((l) => localStorage.setItem('mimamori.lang', l), lang);
    await guest.reload();
    await guest.waitForSelector('#sign-in');
    await shot(guest, `${lang}-login`);
    await axeClean(guest, `${lang} login`);
    await guest.close();

    await page.evaluate((l) => localStorage.setItem('mimamori.lang', l), lang);
    await page.goto(`${HUB}/#/alerts`);
    await page.reload();
    await page.waitForSelector('#conn[data-state="live"]');
    // Whether Chromium keeps the page's earlier click across this reload varies; the
    // banner itself is checked above, here it only must not cover the screenshots.
    if (await page.locator('#sound-banner').isVisible()) await page.locator('#sound-banner').click();
    for (const [name, hash, selector] of pages) {
      await page.goto(`${HUB}/${hash}`);
      await page.waitForSelector(selector);
      check((await page.getAttribute('html', 'lang')) === lang, `${name} is in ${lang}`);
      await shot(page, `${lang}-${name}`);
      await axeClean(page, `${lang} ${name}`);
    }
  }
}

run('e2e', main);
