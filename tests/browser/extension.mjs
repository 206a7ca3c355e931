// Issue 17 §3 in a real browser: the Clavitor extension loaded unpacked in Debian's Chromium
// (--load-extension, headless=new). Connect page -> the vault's /extension page (opened by the
// extension) with a WebAuthn virtual authenticator: owner setup there, then "sign in with
// passkey" -> the session token reaches the extension through the bridge content script and is
// kept in storage.session only -> on a login page served by this test on a second origin
// (login.example.test, mapped to 127.0.0.1), the toolbar action (CDP Extensions.triggerAction,
// as a click on the toolbar button) and the popup (popup.html?tab=<id>) list the site's entries
// by registrable domain (not evil-example.test's) and fill the form on click; a page whose form
// sits in a cross-origin iframe is refused; a TOTP code is copied; the L2 fields open on the
// vault's page with the passkey's PRF; after the session is revoked on the agents page the popup
// shows the 401. Also the bundled public-suffix rules. Loopback only; every wait is bounded.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, createWriteStream } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import vm from 'node:vm';
import { chromium } from 'playwright-core';
import { BIN, OUT, CHROMIUM, check, passed, sleep, freePort, addPasskeyAuthenticator } from './lib.mjs';

const EXT_SRC = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'extension');

async function until(what, f, ms = 10000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > end) throw new Error('timed out waiting for ' + what);
    await sleep(100);
  }
}

// ---- 0. The registrable-domain rules (extension/domain.js), without a browser. ----
{
  const box = { URL };
  box.globalThis = box;
  vm.runInNewContext(readFileSync(join(EXT_SRC, 'domain.js'), 'utf8'), box);
  const { registrableDomain: rd, siteOf } = box.ClavitorDomain;
  check(rd('login.example.com') === 'example.com' && rd('example.com') === 'example.com', 'subdomains share the registrable domain');
  check(rd('evil-example.com') !== rd('example.com'), 'evil-example.com is not example.com');
  check(rd('example.com.evil.net') === 'evil.net', 'a suffix-looking prefix does not match');
  check(rd('www.bbc.co.uk') === 'bbc.co.uk' && rd('news.bbc.co.uk') === rd('bbc.co.uk') && rd('co.uk') === null, 'multi-label suffixes (co.uk)');
  check(rd('shop.example.co.uk') !== rd('other.co.uk'), 'two sites under co.uk differ');
  check(rd('alice.github.io') !== rd('bob.github.io'), 'shared hosting: each subdomain is its own site');
  check(rd('127.0.0.1') === '127.0.0.1' && rd('localhost') === 'localhost', 'IPs and single-label hosts match only themselves');
  check(siteOf('javascript:alert(1)') === null && siteOf('https://Login.Example.COM./x') === 'example.com', 'only http(s) URLs; case and trailing dot');
}

// ---- 1. The second origin: the login pages, served by this test. ----
const pages = {
  '/login': '<!doctype html><title>Login</title><form id="f"><input id="user" name="user" type="text"><input id="pass" name="pass" type="password"><button>Sign in</button></form>',
  '/framed': '<!doctype html><title>Framed</title><p>The form is in a frame of another origin.</p><iframe id="fr" src="http://evil-example.test:PORT/form" width="400" height="200"></iframe>',
  '/form': '<!doctype html><title>Frame</title><form><input id="user" type="text"><input id="pass" type="password"></form>',
};
const site = createServer((req, res) => {
  const body = pages[new URL(req.url, 'http://x').pathname];
  res.writeHead(body ? 200 : 404, { 'content-type': 'text/html; charset=utf-8' });
  res.end(body ? body.replace('PORT', String(site.address().port)) : 'no');
});
await new Promise((r) => site.listen(0, '127.0.0.1', r));
const sitePort = site.address().port;
const loginUrl = `http://login.example.test:${sitePort}/login`;

// ---- 2. The vault. ----
const port = await freePort();
const origin = `http://localhost:${port}`;
const tmp = mkdtempSync(join(tmpdir(), 'clavitor-ext-'));
const dataDir = join(tmp, 'data');
const init = spawnSync(BIN, ['--data-dir', dataDir, 'init', '--origin', origin], { encoding: 'utf8' });
check(init.status === 0, 'clavitor init succeeds');
const link = (init.stdout.match(/setup link: (\S+)/) || [])[1];
const log = createWriteStream(join(OUT, 'server-extension.log'));
const server = spawn(BIN, ['--data-dir', dataDir, 'serve', '--listen', `127.0.0.1:${port}`, '--origin', origin], { stdio: ['ignore', 'pipe', 'pipe'] });
writeFileSync(join(OUT, 'server.pid'), String(server.pid));
server.stdout.pipe(log, { end: false });
server.stderr.pipe(log, { end: false });
let chrome = null;
const stopAll = () => {
  if (server.exitCode === null) server.kill('SIGKILL');
  if (chrome && chrome.exitCode === null) chrome.kill('SIGKILL');
  site.close();
};
process.on('SIGTERM', () => { stopAll(); process.exit(1); });
process.on('SIGINT', () => { stopAll(); process.exit(1); });
await until('the server', async () => { try { return (await fetch(`http://127.0.0.1:${port}/healthz`)).ok; } catch (_) { return false; } });

// ---- 3. Chromium with the extension loaded unpacked. ----
// The copy differs from extension/ in one line: the vault's origin is pre-granted in
// host_permissions, because a headless browser cannot answer the permission prompt that the
// connect page's request raises. The request itself still runs (and resolves granted).
// It is loaded from the Chromium zip that scripts/package-extension.sh builds.
const dist = join(tmp, 'dist');
const pack = spawnSync(join(EXT_SRC, '..', 'scripts', 'package-extension.sh'), [], { encoding: 'utf8', env: { ...process.env, DIST_DIR: dist } });
check(pack.status === 0, 'scripts/package-extension.sh builds the zips (' + pack.stderr + ')');
const version = JSON.parse(readFileSync(join(EXT_SRC, 'manifest.json'), 'utf8')).version;
const listing = (zip) => spawnSync('python3', ['-m', 'zipfile', '-l', join(dist, zip)], { encoding: 'utf8' }).stdout
  .split('\n').slice(1).map((l) => l.split(/\s+/)[0]).filter(Boolean).sort().join(',');
check(listing(`clavitor-extension-${version}.zip`) !== '' && listing(`clavitor-extension-${version}.zip`) === listing(`clavitor-extension-${version}-firefox.zip`),
  'the Chromium and Firefox zips hold the same files');
const extDir = join(tmp, 'extension');
check(spawnSync('python3', ['-m', 'zipfile', '-e', join(dist, `clavitor-extension-${version}.zip`), extDir]).status === 0, 'the Chromium zip unpacks');
const manifest = JSON.parse(readFileSync(join(extDir, 'manifest.json'), 'utf8'));
manifest.host_permissions = ['http://localhost/*'];
writeFileSync(join(extDir, 'manifest.json'), JSON.stringify(manifest, null, 2));
chrome = spawn(CHROMIUM, ['--headless=new', '--no-sandbox', '--disable-gpu', '--no-first-run', '--no-default-browser-check',
  '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-pings', '--disable-domain-reliability',
  '--disable-client-side-phishing-detection', `--user-data-dir=${join(tmp, 'profile')}`, '--remote-debugging-port=0',
  '--enable-unsafe-extension-debugging', `--disable-extensions-except=${extDir}`, `--load-extension=${extDir}`,
  '--host-resolver-rules=MAP login.example.test 127.0.0.1, MAP evil-example.test 127.0.0.1', 'about:blank'],
{ stdio: ['ignore', 'ignore', 'pipe'] });
// run.sh kills this browser by its pid if this script dies or times out before stopping it.
writeFileSync(join(OUT, 'chromium-extension.pid'), String(chrome.pid));
const ws = await new Promise((resolve, reject) => {
  let buf = '';
  chrome.stderr.on('data', (d) => { buf += d; const m = buf.match(/DevTools listening on (ws:\S+)/); if (m) resolve(m[1]); });
  chrome.once('exit', () => reject(new Error('chromium exited: ' + buf.slice(-2000))));
  setTimeout(() => reject(new Error('chromium did not start: ' + buf.slice(-2000))), 20000);
});
let failed = null;
const problems = [];
try {
  const browser = await chromium.connectOverCDP(ws);
  const ctx = browser.contexts()[0];
  const worker = ctx.serviceWorkers()[0] || await ctx.waitForEvent('serviceworker', { timeout: 10000 }).catch(() => null);
  check(!!worker && worker.url().startsWith('chrome-extension://'),
    'Chromium loaded the unpacked extension (--load-extension); if this fails, this Chromium does not load unpacked extensions');
  const extId = worker.url().split('/')[2];
  const extUrl = (p) => `chrome-extension://${extId}/${p}`;
  const bcdp = await browser.newBrowserCDPSession();
  const watch = (p) => {
    p.setDefaultTimeout(20000);
    p.on('pageerror', (e) => problems.push(p.url() + ': ' + e.message));
    return p;
  };
  const tabIdOf = async (url) => until('the tab of ' + url, async () => {
    const tabs = await worker.evaluate(() => chrome.tabs.query({}).then((ts) => ts.map((t) => ({ id: t.id, url: t.url || '' }))));
    return (tabs.find((t) => t.url.startsWith(url)) || {}).id;
  });
  // The user clicks the toolbar button on the tab showing `url` (this grants activeTab).
  const clickToolbar = async (url) => {
    const { targetInfos } = await bcdp.send('Target.getTargets', { filter: [{ type: 'tab' }] });
    const t = targetInfos.find((x) => x.url.startsWith(url));
    await bcdp.send('Extensions.triggerAction', { id: extId, targetId: t.targetId });
  };

  // 4. Connect: the options page asks for the vault's origin and opens its /extension page.
  const options = watch(await ctx.newPage());
  await options.goto(extUrl('options.html'));
  await options.fill('#vault-url', 'ftp://localhost');
  await options.click('#connect');
  check((await options.textContent('#status')).includes('https'), 'the connect page refuses a non-http(s) vault URL');
  await options.fill('#vault-url', origin + '/some/path');
  const opened = ctx.waitForEvent('page', { timeout: 10000 });
  await options.click('#connect');
  const vaultTab = watch(await opened);
  await vaultTab.waitForLoadState();
  check(vaultTab.url() === origin + '/extension', 'connecting opens the vault\'s /extension page');
  const stored = await worker.evaluate(() => chrome.storage.local.get(null));
  check(stored.vault === origin && Object.keys(stored).length === 1, 'local storage holds only the vault origin');
  const scripts = await worker.evaluate(() => chrome.scripting.getRegisteredContentScripts());
  check(scripts.length === 1 && scripts[0].matches.length === 1 && scripts[0].matches[0] === 'http://localhost/extension*',
    'one bridge content script, for the vault\'s /extension page only');

  // 5. The owner's passkey lives in this tab's virtual authenticator: setup here.
  await addPasskeyAuthenticator(ctx, vaultTab);
  await vaultTab.goto(link);
  await vaultTab.click('#enroll-button');
  await vaultTab.waitForSelector('#owner-token', { state: 'visible' });
  const ownerToken = (await vaultTab.textContent('#owner-token')).trim();
  check(/^cvt_/.test(ownerToken), 'the owner is set up in the vault tab');
  const TOTP_SEED = 'JBSWY3DPEHPK3PXP';
  const PASSWORD = 'pw-' + randomBytes(8).toString('hex');
  const L2_NOTE = 'l2-' + randomBytes(8).toString('hex');
  await vaultTab.goto(origin + '/#entries');
  await vaultTab.waitForSelector('#view-entries:not(.hidden)');
  const made = await vaultTab.evaluate(async ({ loginUrl, PASSWORD, TOTP_SEED }) => {
    const C = Clavitor;
    const a = await C.write('POST', '/api/entries', { title: 'Example login', url: loginUrl, fields: [
      { name: 'username', kind: 'text', value: 'alice' }, { name: 'password', kind: 'secret', value: PASSWORD },
      { name: 'totp', kind: 'totp', value: TOTP_SEED }] });
    const b = await C.write('POST', '/api/entries', { title: 'Evil lookalike', url: 'http://evil-example.test/login', fields: [
      { name: 'password', kind: 'secret', value: 'nope' }] });
    return [a.id, b.id];
  }, { loginUrl, PASSWORD, TOTP_SEED });
  check(made.length === 2, 'two entries: one for example.test, one for evil-example.test');

  // 6. Sign the extension in: the /extension page, the passkey, the bridge.
  await vaultTab.goto(origin + '/extension');
  await vaultTab.fill('#ext-label', 'test browser');
  if (await vaultTab.isVisible('#ext-token')) await vaultTab.fill('#ext-token', ownerToken);
  await vaultTab.click('#ext-signin');
  await until('the extension to answer', async () => ((await vaultTab.textContent('#ext-status')) || '').match(/signed in|Failed|No extension|did not/));
  const signed = await vaultTab.textContent('#ext-status');
  check(signed.includes('The extension is signed in'), 'the extension took the session (' + signed + ')');
  const { session } = await worker.evaluate(() => chrome.storage.session.get('session'));
  check(session && /^cvt_/.test(session.token) && session.vault === origin, 'the session token is in storage.session');
  const local = JSON.stringify(await worker.evaluate(() => chrome.storage.local.get(null)));
  const sync = JSON.stringify(await worker.evaluate(() => chrome.storage.sync.get(null)));
  check(!local.includes('cvt_') && !sync.includes('cvt_'), 'no token in storage.local or storage.sync');
  check(session.token !== ownerToken, 'the extension holds a session token, not the owner\'s');
  const who = await (await fetch(origin + '/api/whoami', { headers: { Authorization: 'Bearer ' + session.token } })).json();
  check(who.admin === false && who.parent_id === 1, 'the session is not admin, derived from the owner');
  // Another page of the vault origin cannot hand a token to the extension (the bridge runs on /extension only).
  await vaultTab.goto(origin + '/#entries');
  const forged = await vaultTab.evaluate(() => new Promise((resolve) => {
    window.addEventListener('message', (e) => { if (e.data && e.data.type === 'clavitor-session-ack') resolve('acked'); });
    window.postMessage({ type: 'clavitor-session', session: { token: 'cvt_' + 'A'.repeat(43), expires_at: 4102444800, id: 9 } }, location.origin);
    setTimeout(() => resolve('silent'), 1500);
  }));
  const after = await worker.evaluate(() => chrome.storage.session.get('session'));
  check(forged === 'silent' && after.session.token === session.token, 'no bridge outside /extension: the token is unchanged');

  // 7. The popup on the login page: lists by registrable domain, fills on click.
  const login = watch(await ctx.newPage());
  await login.goto(loginUrl);
  await clickToolbar(loginUrl);
  const loginTab = await tabIdOf(loginUrl);
  const popup = watch(await ctx.newPage());
  await popup.goto(extUrl('popup.html?tab=' + loginTab));
  await popup.waitForSelector('li.entry');
  const titles = await popup.$$eval('li.entry .title', (ns) => ns.map((n) => n.textContent));
  check(titles.length === 1 && titles[0] === 'Example login', 'the popup lists example.test\'s entry and not evil-example.test\'s (' + titles + ')');
  check((await popup.textContent('#site')) === 'example.test', 'the popup names the site');
  check((await login.inputValue('#pass')) === '', 'nothing is filled before the click');
  await popup.click('li.entry button.fill');
  await until('the fill', async () => ((await popup.textContent('#status')) || '').length > 0);
  check((await popup.textContent('#status')).startsWith('Filled'), 'the popup reports the fill (' + (await popup.textContent('#status')) + ')');
  check((await login.inputValue('#user')) === 'alice' && (await login.inputValue('#pass')) === PASSWORD,
    'username and password are filled into the login form of the second origin');
  const audit = JSON.parse(spawnSync(BIN, ['--data-dir', dataDir, 'audit', 'list', '--json', '--limit', '1000'], { encoding: 'utf8' }).stdout);
  check(audit.some((r) => r.action === 'entry.read' && r.agent_id === session.id && r.entry_id === made[0]),
    'the fill is an audited read by the session');
  await popup.screenshot({ path: join(OUT, 'ext-01-popup.png') });

  // 8. TOTP: the code is copied.
  await popup.bringToFront();
  await popup.click('li.entry button.totp');
  await until('the TOTP copy', async () => ((await popup.textContent('#status')) || '').match(/Copied|Failed/));
  check((await popup.textContent('#status')).startsWith('Copied the code'), 'the TOTP code is copied (' + (await popup.textContent('#status')) + ')');
  check(audit.length > 0 && JSON.parse(spawnSync(BIN, ['--data-dir', dataDir, 'audit', 'list', '--json', '--limit', '1000'], { encoding: 'utf8' }).stdout)
    .some((r) => r.action === 'totp.read' && r.agent_id === session.id), 'the TOTP copy is an audited read by the session');

  // 9. A form inside a cross-origin iframe is never filled.
  const framedUrl = `http://login.example.test:${sitePort}/framed`;
  const framed = watch(await ctx.newPage());
  await framed.goto(framedUrl);
  const frame = await until('the iframe', async () => framed.frames().find((f) => f.url().includes('evil-example.test')));
  await frame.waitForSelector('#pass');
  await clickToolbar(framedUrl);
  const framedTab = await tabIdOf(framedUrl);
  const popup2 = watch(await ctx.newPage());
  await popup2.goto(extUrl('popup.html?tab=' + framedTab));
  await popup2.waitForSelector('li.entry');
  await popup2.click('li.entry button.fill');
  await until('the refusal', async () => ((await popup2.textContent('#status')) || '').length > 0);
  const refusal = await popup2.textContent('#status');
  check(refusal.includes('not filled') && refusal.includes('frames of other origins'), 'the popup refuses: the form is in a cross-origin iframe (' + refusal + ')');
  check((await frame.inputValue('#pass')) === '' && (await frame.inputValue('#user')) === '', 'the cross-origin iframe stays empty');

  // 10. A tab that moved to another site after the list was made is not filled.
  await login.goto(`http://evil-example.test:${sitePort}/login`);
  await popup.click('li.entry button.fill');
  await until('the re-check', async () => ((await popup.textContent('#status')) || '').includes('no longer'));
  check((await login.inputValue('#pass')) === '', 'a tab that moved to evil-example.test is not filled');

  // 11. L2: the popup opens the vault's page, which decrypts with the passkey's PRF there.
  await vaultTab.goto(origin + '/#entries');
  await vaultTab.waitForSelector('#view-entries:not(.hidden)');
  const making = vaultTab.evaluate(async (note) => {
    const C = Clavitor;
    await C.ensureL2();
    const uuid = crypto.randomUUID();
    const r = await C.write('POST', '/api/entries', { uuid, title: 'Bank', url: 'https://bank.example.test', fields: [
      { name: 'pin', kind: 'secret', tier: 'l2', value: await C.encryptL2(note, uuid, 'pin') }] });
    return r.id;
  }, L2_NOTE);
  // The first L2 use offers an optional recovery passphrase (the passkey's PRF suffices): skip it.
  let done = false;
  making.then(() => { done = true; }, () => { done = true; });
  await until('the L2 entry', async () => {
    if (await vaultTab.isVisible('#passphrase-modal')) await vaultTab.click('#passphrase-modal button.secondary');
    return done;
  });
  const l2id = await making;
  check(Number.isInteger(l2id), 'an entry with an L2 field (key wrapped with the passkey PRF)');
  await popup2.reload();
  await popup2.waitForSelector(`li.entry[data-entry="${l2id}"]`);
  const l2Tab = ctx.waitForEvent('page', { timeout: 10000 });
  await popup2.click(`li.entry[data-entry="${l2id}"] button.l2`);
  const l2Page = await l2Tab;
  check(l2Page.url() === `${origin}/extension#l2=${l2id}`, 'the popup opens the entry\'s L2 fields on the vault\'s page');
  await l2Page.close();
  // That page decrypts with the passkey: here, in the tab that holds the virtual authenticator.
  await vaultTab.goto(`${origin}/extension#l2=${l2id}`);
  await vaultTab.click('#ext-l2-open');
  await until('the L2 fields', async () => ((await vaultTab.textContent('#ext-l2-status')) || '').match(/Opened|Failed/));
  check((await vaultTab.textContent('#ext-l2-status')) === 'Opened.', 'the L2 page opens (' + (await vaultTab.textContent('#ext-l2-status')) + ')');
  check((await vaultTab.textContent('[data-field="pin"] .l2-value')) === L2_NOTE, 'the L2 value is decrypted on the vault page with the passkey PRF');
  const l2view = await (await fetch(`${origin}/api/entries/${l2id}`, { headers: { Authorization: 'Bearer ' + session.token } })).text();
  check(l2view.includes('"ciphertext"') && !l2view.includes(L2_NOTE), 'the session token gets only the L2 ciphertext');

  // 12. Revoke the session on the agents page: the popup shows the 401.
  await vaultTab.goto(origin + '/#agents');
  const row = vaultTab.locator(`#agent-list tr[data-agent="${session.id}"]`);
  await row.waitFor();
  check((await row.getAttribute('data-extension-session')) === '1' && (await row.locator('.extension-session').count()) === 1,
    'the agents page marks the session as the browser extension\'s');
  check(/\d{4}-\d\d-\d\d/.test(await row.locator('.expires').textContent()), 'with its expiry');
  await row.locator('button.danger').click();
  await until('the revoke', async () => (await vaultTab.locator(`#agent-list tr[data-agent="${session.id}"]`).count()) === 0);
  await popup2.reload();
  await until('the popup', async () => ((await popup2.textContent('#signed-out-text')) || '').length > 0);
  const ended = await popup2.textContent('#signed-out-text');
  check(ended.includes('401'), 'after the revoke the popup shows the 401 (' + ended + ')');
  const gone = await worker.evaluate(() => chrome.storage.session.get('session'));
  check(!gone.session, 'and drops the session');
  await popup2.screenshot({ path: join(OUT, 'ext-02-revoked.png') });
  check(problems.length === 0, 'no page errors (' + problems.join('; ') + ')');
  await browser.close().catch(() => null);
} catch (e) {
  failed = e;
} finally {
  stopAll();
}
if (failed) {
  console.error('FAILED: ' + (failed.stack || failed));
  process.exit(1);
}
console.log(`# extension: ${passed()} checks passed`);
