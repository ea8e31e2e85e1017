// Browser test of the passage history on the resident page, driven by tests/browser.rs:
// a family member signs in and reads where the tag was last heard and the passages.

import { join } from 'node:path';
import { mkdirSync } from 'node:fs';
import { chromium } from 'playwright-core';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`missing environment variable ${k}`);
  return v;
};
const HUB = env('HUB_URL');
const SHOTS = env('SCREENSHOT_DIR');
const [USER, PASS] = [env('FAMILY_USER'), env('FAMILY_PASS')];
const RESIDENT = env('RESIDENT_ID');
const LAST_PLACE = env('LAST_PLACE');
const PASSAGES = Number(env('PASSAGES'));
const errors = [];

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
  console.log(`ok - ${what}`);
}

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--no-first-run'],
  });
  try {
    const ctx = await browser.newContext({ locale: 'en-US', viewport: { width: 1280, height: 860 } });
    const hub = new URL(HUB);
    await ctx.route('**/*', (route) =>
      new URL(route.request().url()).host === hub.host ? route.continue() : route.abort());
    const page = await ctx.newPage();
    page.on('pageerror', (e) => errors.push(e.message));
    page.on('console', (m) => {
      if (/Content Security Policy/i.test(m.text())) errors.push(`CSP violation: ${m.text()}`);
    });
    await page.goto(HUB);
    await page.fill('#username', USER);
    await page.fill('#password', PASS);
    await page.click('#sign-in');
    await page.waitForSelector('#conn[data-state="live"]');
    await page.goto(`${HUB}/#/resident/${RESIDENT}`);
    const last = await (await page.waitForSelector('#last-seen')).textContent();
    check(last.startsWith(`Last seen at ${LAST_PLACE}, `) && last.includes('min ago'), `"${last}"`);
    const rows = await page.$$eval('#resident-sightings tbody tr', (trs) => trs.map((tr) => tr.textContent));
    check(rows.length === PASSAGES, `${PASSAGES} passages listed, newest first`);
    check(rows[0].includes(LAST_PLACE), 'the newest passage is the last place');
    mkdirSync(SHOTS, { recursive: true });
    await page.screenshot({ path: join(SHOTS, 'sightings.png'), fullPage: true });
  } finally {
    await browser.close();
  }
}

main()
  .then(() => {
    if (errors.length) throw new Error(`script errors in the page:\n${errors.join('\n')}`);
    console.log('sightings: all checks passed');
    process.exit(0);
  })
  .catch((e) => {
    console.error(`sightings FAILED: ${e.stack || e}`);
    process.exit(1);
  });
