// The commercial owner's pages (issue 16 §2, §5) in a real browser, against a commercial build:
// setup link -> passkey (WebAuthn virtual authenticator over CDP) -> the Agents view's bulk box:
// a pasted list of three agents created with one passkey tap, their tokens shown once and
// working -> the entry editor's autoscope button suggests tiers and a scope (names and kinds
// only) and "Apply" fills the form -> Save (a passkey tap) stores them. Everything runs on
// loopback; every wait is bounded. Screenshots go to OUT_DIR.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, createWriteStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, OUT, check, passed, sleep, freePort, launchBrowser, addPasskeyAuthenticator } from './lib.mjs';

const tmp = mkdtempSync(join(tmpdir(), 'clavitor-browser-commercial-'));
const dataDir = join(tmp, 'data');
const port = await freePort();
const origin = `http://localhost:${port}`;

const init = spawnSync(BIN, ['--data-dir', dataDir, 'init', '--origin', origin], { encoding: 'utf8' });
check(init.status === 0, 'clavitor init succeeds');
const link = (init.stdout.match(/setup link: (\S+)/) || [])[1];
check(!!link, 'init prints a setup link');

const log = createWriteStream(join(OUT, 'server-commercial.log'));
const server = spawn(BIN, ['--data-dir', dataDir, 'serve', '--listen', `127.0.0.1:${port}`, '--origin', origin], {
  env: { ...process.env, CLAVITOR_LOG: 'info' },
  stdio: ['ignore', 'pipe', 'pipe'],
});
writeFileSync(join(OUT, 'server-commercial.pid'), String(server.pid));
const stopServer = () => { if (server.exitCode === null) server.kill('SIGKILL'); };
process.on('SIGTERM', () => { stopServer(); process.exit(1); });
process.on('SIGINT', () => { stopServer(); process.exit(1); });
server.stdout.pipe(log, { end: false });
server.stderr.pipe(log, { end: false });
let edition = null;
for (let i = 0; i < 100 && !edition; i++) {
  try { edition = (await (await fetch(`http://127.0.0.1:${port}/healthz`)).json()).edition; } catch (_) { await sleep(100); }
}
check(edition === 'commercial', 'a commercial server answers /healthz');

let context;
try {
  const browser = await launchBrowser(join(tmp, 'profile'));
  context = browser.context;
  const { page, problems } = browser;
  await addPasskeyAuthenticator(context, page);

  await page.goto(link);
  await page.click('#enroll-button');
  await page.waitForSelector('#owner-token', { state: 'visible' });
  const ownerToken = (await page.textContent('#owner-token')).trim();
  check(/^cvt_/.test(ownerToken), 'the owner is set up with a passkey');
  await page.click('#continue');
  await page.waitForSelector('#view-entries:not(.hidden)');

  // Bulk: paste three agents, one tap.
  await page.goto(origin + '/#agents');
  await page.waitForSelector('#view-agents:not(.hidden)');
  await page.fill('#bulk-lines', 'github-ci\nmailer, beef\n# a comment line\nbackup-bot, beef cafe\n');
  await page.click('#bulk-create');
  await page.waitForSelector('#bulk-tokens:not(.hidden)');
  const tokens = await page.$$eval('#bulk-tokens td.token', (tds) => tds.map((td) => td.textContent.trim()));
  check(tokens.length === 3 && tokens.every((t) => /^cvt_/.test(t)), 'three agents created with one passkey tap, tokens shown');
  check(((await page.textContent('#bulk-status')) || '').includes('3 agents created'), 'the page says tokens are shown once');
  const who = await (await fetch(`http://127.0.0.1:${port}/api/whoami`, { headers: { Authorization: 'Bearer ' + tokens[1] } })).json();
  check(who.name === 'mailer' && who.scopes.includes('beef'), 'a bulk token works and carries its scopes');
  await page.waitForFunction(() => document.querySelectorAll('#agent-list tr').length >= 4);
  check(true, 'the agent list shows the new agents');
  await page.screenshot({ path: join(OUT, 'c1-bulk-agents.png'), fullPage: true });

  // Autoscope in the entry editor: suggestions, apply, save.
  await page.goto(origin + '/#entries');
  await page.waitForSelector('#view-entries:not(.hidden)');
  await page.click('#entry-new');
  await page.fill('#entry-title', 'GitHub deploy');
  await page.fill('#entry-url', 'https://github.com/acme');
  const rows = page.locator('#entry-fields tr');
  await rows.nth(0).locator('.f-value').fill('octo');
  await rows.nth(1).locator('.f-value').fill('pw-not-sent-to-autoscope');
  await page.click('#field-add');
  await rows.nth(2).locator('.f-name').fill('card number');
  await rows.nth(2).locator('.f-value').fill('4111111111111111');
  const sent = [];
  page.on('request', (r) => { if (r.url().endsWith('/api/autoscope')) sent.push(r.postData() || ''); });
  await page.click('#autoscope-suggest');
  await page.waitForSelector('#autoscope-box:not(.hidden)');
  check(sent.length === 1 && !sent[0].includes('pw-not-sent') && !sent[0].includes('4111') && sent[0].includes('card number'),
    'autoscope is sent names and kinds, no value');
  const text = await page.textContent('#autoscope-box');
  check(text.includes('card number: L2') && text.includes('github-ci'), 'suggestions are shown with reasons');
  await page.click('#autoscope-apply');
  check((await rows.nth(2).locator('.f-tier').inputValue()) === 'l2', 'apply sets the card number to L2');
  check((await page.inputValue('#entry-scopes')).includes('0002'), "apply adds github-ci's scope");
  await page.screenshot({ path: join(OUT, 'c2-autoscope.png'), fullPage: true });
  await page.click('#entry-save');
  for (let i = 0; i < 100; i++) {
    if (await page.isVisible('#passphrase-modal')) {
      await page.fill('#passphrase-input', 'correct horse battery staple');
      await page.click('#passphrase-ok');
    }
    const s = (await page.textContent('#status')) || '';
    if (s.startsWith('Saved') || s.startsWith('Failed')) break;
    await sleep(100);
  }
  check(((await page.textContent('#status')) || '').startsWith('Saved'), 'the entry is saved with the applied suggestions (passkey tap)');
  check(problems.length === 0, 'no page errors: ' + problems.join('; '));
} finally {
  if (context) await context.close();
  stopServer();
}
console.log(`# ${passed()} checks passed`);
