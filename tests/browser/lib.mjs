// What the browser tests share: their settings from the environment, checks that count, a free
// loopback port, and a headless Chromium (its own profile, loopback traffic only) whose tab gets
// a virtual passkey authenticator (WebAuthn over CDP, with PRF for L2).
import { createServer } from 'node:net';
import { chromium } from 'playwright-core';

export const BIN = process.env.CLAVITOR_BIN;
export const OUT = process.env.OUT_DIR;
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
if (!BIN || !OUT) throw new Error('CLAVITOR_BIN and OUT_DIR must be set');

let passedChecks = 0;
/** Fails the test with `what` unless `cond`; counts and prints each check that holds. */
export function check(cond, what) {
  if (!cond) throw new Error('check failed: ' + what);
  passedChecks += 1;
  console.log('ok - ' + what);
}
/** How many checks have held so far. */
export const passed = () => passedChecks;

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A TCP port free on 127.0.0.1 a moment ago (the server is told to listen there). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Loopback only: no background, update, sync, safe-browsing or ping traffic. */
export const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-pings', '--disable-domain-reliability',
  '--disable-client-side-phishing-detection', '--no-default-browser-check'];

/**
 * Headless Chromium with a profile in `profileDir` (`options` adds to or overrides the launch
 * options). Returns the context, its first page (20 s default timeout) and `problems`, where the
 * page's errors and console errors are collected for a final check.
 */
export async function launchBrowser(profileDir, options = {}) {
  const context = await chromium.launchPersistentContext(profileDir, {
    executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, viewport: { width: 1200, height: 900 }, ...options,
  });
  const page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(20000);
  const problems = [];
  page.on('pageerror', (e) => problems.push('page error: ' + e.message));
  page.on('console', (m) => { if (m.type() === 'error') problems.push('console: ' + m.text()); });
  return { context, page, problems };
}

/** Gives `page`'s tab a platform authenticator that always verifies its user (CTAP 2.1, resident
 * keys, PRF); returns the CDP session it lives in. */
export async function addPasskeyAuthenticator(context, page) {
  const cdp = await context.newCDPSession(page);
  await cdp.send('WebAuthn.enable');
  await cdp.send('WebAuthn.addVirtualAuthenticator', {
    options: {
      protocol: 'ctap2', ctap2Version: 'ctap2_1', transport: 'internal', hasResidentKey: true,
      hasUserVerification: true, isUserVerified: true, automaticPresenceSimulation: true, hasPrf: true,
    },
  });
  return cdp;
}
