// What the browser scripts driven by tests/browser.rs share: their settings from the
// environment, checks, Debian's Chromium, a context that reaches only the hub, signing
// in, and failing the run on a script error or a CSP violation in any page.

import { chromium } from 'playwright-core';

/** A setting the Rust side passes; missing is a mistake of the test, said at once. */
export const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`missing environment variable ${k}`);
  return v;
};

export function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
  console.log(`ok - ${what}`);
}

const errors = [];

/** Script errors and Content-Security-Policy violations both fail the run. */
export function watchErrors(page, who) {
  page.on('pageerror', (e) => errors.push(`${who}: ${e.message}`));
  page.on('console', (m) => {
    if (/Content Security Policy/i.test(m.text())) errors.push(`${who}: CSP violation: ${m.text()}`);
  });
}

/** Debian's Chromium, headless, with no traffic of its own. */
export function launch(extraArgs = []) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic',
      '--no-first-run', '--disable-component-update', '--disable-sync',
      ...extraArgs,
    ],
  });
}

/** A browser context that may reach the hub only (map tiles from elsewhere are refused). */
export async function hubContext(browser, hubUrl, locale, initScript) {
  const ctx = await browser.newContext({ locale, viewport: { width: 1280, height: 860 } });
  if (initScript) await ctx.addInitScript(initScript);
  const hub = new URL(hubUrl);
  await ctx.route('**/*', (route) => {
    const url = new URL(route.request().url());
    return url.host === hub.host ? route.continue() : route.abort();
  });
  return ctx;
}

export async function signIn(page, hubUrl, [user, pass]) {
  await page.goto(hubUrl);
  await page.fill('#username', user);
  await page.fill('#password', pass);
  await page.click('#sign-in');
  await page.waitForSelector('#conn[data-state="live"]');
}

/** Runs `main`, then exits 0 only when it passed and no page misbehaved. */
export function run(name, main) {
  main()
    .then(() => {
      if (errors.length) throw new Error(`script errors in the page:\n${errors.join('\n')}`);
      console.log(`${name}: all checks passed`);
      process.exit(0);
    })
    .catch((e) => {
      console.error(`${name} FAILED: ${e.stack || e}`);
      process.exit(1);
    });
}
