// Browser test of the passage history on the resident page, driven by tests/browser.rs:
// a family member signs in and reads where the tag was last heard and the passages.

import { join } from 'node:path';
import { mkdirSync } from 'node:fs';
import { check, env, hubContext, launch, run, signIn, watchErrors } from './harness.mjs';

const HUB = env('HUB_URL');
const SHOTS = env('SCREENSHOT_DIR');
const [USER, PASS] = [env('FAMILY_USER'), env('FAMILY_PASS')];
const RESIDENT = env('RESIDENT_ID');
const LAST_PLACE = env('LAST_PLACE');
const PASSAGES = Number(env('PASSAGES'));

async function main() {
  const browser = await launch();
  try {
    const page = await (await hubContext(browser, HUB, 'en-US')).newPage();
    watchErrors(page, 'family');
    await signIn(page, HUB, [USER, PASS]);
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

run('sightings', main);
