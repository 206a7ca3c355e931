// The owner's first run in a real browser: setup link -> enroll passkey (WebAuthn virtual
// authenticator over CDP) -> owner token shown -> an entry with an L1 password and an L2 note
// -> a scoped agent -> that agent reads the L1 value and only the L2 ciphertext over the API
// -> an L2 value in the old v1 envelope still shows and is re-sealed as v2 on save -> L2 values
// swapped between fields and between entries (by an admin write, as a compromised server could
// send) are refused by the page while untouched ones still show -> no plaintext is in the raw
// SQLite files or the server's logs. Screenshots go to OUT_DIR. Everything runs on loopback;
// every wait is bounded.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, writeFileSync, existsSync, createWriteStream, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes, webcrypto } from 'node:crypto';
import { BIN, OUT, check, passed, sleep, freePort, launchBrowser, addPasskeyAuthenticator } from './lib.mjs';

function scanForPlaintext(when) {
  const vaults = join(dataDir, 'vaults');
  const files = readdirSync(dataDir).filter((f) => f.startsWith('node.db')).map((f) => join(dataDir, f))
    .concat(readdirSync(vaults).map((f) => join(vaults, f)));
  check(files.some((f) => f.endsWith('.db') && f.includes('vaults')), `the vault file exists (${when})`);
  for (const f of files.concat([logPath])) {
    const bytes = readFileSync(f);
    const name = f.replace(tmp, '<tmp>');
    check(!PLAINTEXTS.some((p) => bytes.includes(Buffer.from(p))), `no L1 or L2 plaintext in ${name} (${when})`);
  }
}

const L1_PASSWORD = 'L1pw-' + randomBytes(12).toString('hex');
const L2_NOTE = 'L2note-' + randomBytes(12).toString('hex');
const secret = (label) => label + '-' + randomBytes(12).toString('hex');
const LEGACY = secret('L2legacy');
const BANK = { note: secret('L2banknote'), pin: secret('L2pin'), answer: secret('L2answer'), hint: secret('L2hint') };
const API_KEY = secret('L1inject');
const PLAINTEXTS = [L1_PASSWORD, L2_NOTE, LEGACY, API_KEY, ...Object.values(BANK)];
const PASSPHRASE = 'correct horse battery staple';

const tmp = mkdtempSync(join(tmpdir(), 'clavitor-browser-'));
const dataDir = join(tmp, 'data');
const port = await freePort();
const origin = `http://localhost:${port}`;

// 1. init prints the setup link (and no token).
const init = spawnSync(BIN, ['--data-dir', dataDir, 'init', '--origin', origin], { encoding: 'utf8' });
check(init.status === 0, 'clavitor init succeeds');
const link = (init.stdout.match(/setup link: (\S+)/) || [])[1];
check(!!link && link.startsWith(origin + '/setup#code='), 'init prints a setup link for the origin');
check(!/cvt_/.test(init.stdout), 'init prints no token');
writeFileSync(join(OUT, 'init.log'), init.stdout + init.stderr);

// 2. The server, logging at debug level to a file we inspect at the end.
const logPath = join(OUT, 'server.log');
const log = createWriteStream(logPath);
const server = spawn(BIN, ['--data-dir', dataDir, 'serve', '--listen', `127.0.0.1:${port}`, '--origin', origin], {
  env: { ...process.env, CLAVITOR_LOG: 'debug' },
  stdio: ['ignore', 'pipe', 'pipe'],
});
// run.sh kills the server by this pid if this script dies or times out before stopping it.
writeFileSync(join(OUT, 'server.pid'), String(server.pid));
const stopServer = () => { if (server.exitCode === null) server.kill('SIGKILL'); };
process.on('SIGTERM', () => { stopServer(); process.exit(1); });
process.on('SIGINT', () => { stopServer(); process.exit(1); });
server.stdout.pipe(log, { end: false });
server.stderr.pipe(log, { end: false });
let up = false;
for (let i = 0; i < 100 && !up; i++) {
  try { up = (await fetch(`http://127.0.0.1:${port}/healthz`)).ok; } catch (_) { await sleep(100); }
}
check(up, 'server answers /healthz');

let context;
try {
  const browser = await launchBrowser(join(tmp, 'profile'));
  context = browser.context;
  const { page, problems } = browser;

  await addPasskeyAuthenticator(context, page);

  // 3. Setup link -> enroll -> owner token shown once.
  const resp = await page.goto(link);
  const csp = resp.headers()['content-security-policy'] || '';
  check(csp.includes("script-src 'self'") && !csp.includes('unsafe-inline'), 'setup page has a strict CSP');
  await page.click('#enroll-button');
  await page.waitForSelector('#owner-token', { state: 'visible' }).catch(async (e) => {
    throw new Error('setup did not finish: ' + (await page.textContent('#setup-status')) + ' (' + e.message + ')');
  });
  const ownerToken = (await page.textContent('#owner-token')).trim();
  check(/^cvt_[0-9A-Za-z]{43}$/.test(ownerToken), 'the owner token is shown after enrolling the passkey');
  await page.screenshot({ path: join(OUT, '01-setup-owner-token.png'), fullPage: true });

  // 4. An entry with an L1 password and an L2 note, for agent 2's scope.
  await page.click('#continue');
  await page.waitForSelector('#view-entries:not(.hidden)');
  await page.click('#entry-new');
  await page.fill('#entry-title', 'Mail server');
  await page.fill('#entry-url', 'https://mail.example.com');
  await page.fill('#entry-scopes', '0002');
  const rows = page.locator('#entry-fields tr');
  await rows.nth(0).locator('.f-value').fill('ops');
  await rows.nth(1).locator('.f-value').fill(L1_PASSWORD);
  await page.click('#field-add');
  const note = rows.nth(2);
  await note.locator('.f-name').fill('recovery note');
  await note.locator('.f-kind').selectOption('note');
  await note.locator('.f-tier').selectOption('l2');
  await note.locator('.f-value').fill(L2_NOTE);
  await page.screenshot({ path: join(OUT, '02-entry-form.png'), fullPage: true });
  await page.click('#entry-save');
  // The first L2 use creates the L2 key: a passphrase dialog appears (optional with PRF,
  // required without). Answer it: the test later reads the key through the passphrase wrap.
  let usedPassphrase = false;
  for (let i = 0; i < 100; i++) {
    if (await page.isVisible('#passphrase-modal')) {
      const prompt = await page.textContent('#passphrase-modal p');
      usedPassphrase = !prompt.includes('Optional');
      await page.fill('#passphrase-input', PASSPHRASE);
      await page.click('#passphrase-ok');
    }
    const s = (await page.textContent('#status')) || '';
    if (s.startsWith('Saved') || s.startsWith('Failed')) break;
    await sleep(100);
  }
  const saved = (await page.textContent('#status')) || '';
  check(saved.startsWith('Saved'), 'the entry is saved with a passkey assertion (' + saved + ')');
  console.log(usedPassphrase ? '# L2 key wrapped under a passphrase (no PRF)' : '# L2 key wrapped under the passkey PRF output');
  await page.waitForSelector('#entry-list tr');
  await page.screenshot({ path: join(OUT, '03-entries.png'), fullPage: true });

  // 5. A scoped agent; its token is shown once.
  await page.goto(origin + '/#agents');
  await page.waitForSelector('#view-agents:not(.hidden)');
  await page.fill('#agent-name', 'deploy-bot');
  await page.click('#agent-create');
  await page.waitForSelector('#agent-token-box:not(.hidden)');
  const agentToken = (await page.textContent('#agent-token')).trim();
  check(/^cvt_/.test(agentToken) && agentToken !== ownerToken, 'a new agent token is shown once');
  await page.screenshot({ path: join(OUT, '04-agent-created.png'), fullPage: true });

  // 6. The agent reads the L1 value and only the L2 ciphertext.
  const api = async (path, token) => (await fetch(`http://127.0.0.1:${port}${path}`, { headers: { Authorization: 'Bearer ' + token } }));
  const list = await (await api('/api/entries', agentToken)).json();
  check(list.length === 1 && list[0].title === 'Mail server' && list[0].scopes.includes('0002'), 'the scoped agent sees the entry');
  const entry = await (await api('/api/entries/' + list[0].id, agentToken)).json();
  const pw = entry.fields.find((f) => f.name === 'password');
  const nt = entry.fields.find((f) => f.name === 'recovery note');
  check(pw && pw.tier === 'l1' && pw.value === L1_PASSWORD, 'the agent reads the L1 password');
  check(nt && nt.tier === 'l2' && nt.value === undefined && typeof nt.ciphertext === 'string', 'the agent gets the L2 note as ciphertext only');
  check(nt.ciphertext.startsWith('v2.') && !nt.ciphertext.includes(L2_NOTE), 'the ciphertext is a v2 envelope, not the plaintext');
  check(entry.uuid && /^[0-9a-f-]{36}$/.test(entry.uuid), 'the entry has the uuid its L2 values are bound to');
  check((await api('/api/agents', agentToken)).status === 403, 'the scoped agent is not an admin');

  // The agent derives a token for a sub-agent (bearer only); the agents page lists it under its
  // parent with its expiry, and turns reveal_to_model on for the parent (passkey assertion).
  const derivedResp = await fetch(`http://127.0.0.1:${port}/api/tokens/derive`, { method: 'POST',
    headers: { Authorization: 'Bearer ' + agentToken, 'Content-Type': 'application/json' },
    body: JSON.stringify({ name: 'sub-agent', ttl_secs: 3600 }) });
  check(derivedResp.status === 201, 'the agent derives a token for a sub-agent');
  const derived = await derivedResp.json();
  await page.goto(origin + '/#audit');
  await page.waitForSelector('#view-audit:not(.hidden)');
  await page.goto(origin + '/#agents');
  await page.waitForSelector(`tr[data-agent="${derived.id}"][data-parent="2"]`);
  const derivedRow = await page.textContent(`tr[data-agent="${derived.id}"]`);
  check(derivedRow.includes('derived from agent 2') && /\d{4}-\d\d-\d\d/.test(derivedRow), 'the derived token is listed under its parent with its expiry');
  const order = await page.locator('#agent-list tr').evaluateAll((rows) => rows.map((r) => r.dataset.agent));
  check(order.indexOf(String(derived.id)) === order.indexOf('2') + 1, 'right after its parent');
  const whoami = async (t) => (await api('/api/whoami', t)).json();
  check((await whoami(agentToken)).reveal_to_model === false, 'reveal_to_model is off by default');
  await page.locator('tr[data-agent="2"] input.reveal-to-model').check();
  for (let i = 0; i < 100 && !(await whoami(agentToken)).reveal_to_model; i++) await sleep(100);
  check((await whoami(agentToken)).reveal_to_model === true, 'the page turns reveal_to_model on with a passkey');
  await page.screenshot({ path: join(OUT, '04b-derived-token.png'), fullPage: true });

  // Issue 18: the agent asks for a host; the entries page shows the request; the owner creates
  // an inject-only entry with a rule from it (passkey) and restricts the agent to listed hosts.
  const asked = await fetch(`http://127.0.0.1:${port}/api/proxy/requests`, { method: 'POST',
    headers: { Authorization: 'Bearer ' + agentToken, 'Content-Type': 'application/json' },
    body: JSON.stringify({ host: 'api.example.test', reason: 'the model API' }) });
  check(asked.status === 201, 'the agent asks for access to a host');
  await page.goto(origin + '/#audit');
  await page.waitForSelector('#view-audit:not(.hidden)');
  await page.goto(origin + '/#entries');
  await page.waitForSelector('#request-list tr');
  check((await page.textContent('#request-list')).includes('api.example.test'), 'the entries page shows the pending request');
  await page.locator('#request-list tr button', { hasText: 'Create entry with rule' }).click();
  await page.waitForSelector('#view-entry:not(.hidden)');
  check(await page.inputValue('#entry-rules .r-host') === 'api.example.test' && await page.isChecked('#entry-inject-only'),
    'the editor is prefilled with the host, a rule and inject-only');
  await page.locator('#entry-fields tr').nth(0).locator('.f-value').fill(API_KEY);
  await page.click('#entry-save');
  for (let i = 0; i < 100; i++) {
    const s = (await page.textContent('#status')) || '';
    if (s.startsWith('Saved') || s.startsWith('Failed')) break;
    await sleep(100);
  }
  check(((await page.textContent('#status')) || '').startsWith('Saved'), 'the entry and its rule are saved with a passkey');
  const injected = (await (await api('/api/entries', agentToken)).json()).find((e) => e.title === 'api.example.test');
  const inj = await (await api('/api/entries/' + injected.id, agentToken)).json();
  check(inj.inject_only === true && inj.inject[0].host === 'api.example.test' && inj.inject[0].place.template === 'Bearer {{api_key}}',
    'the agent sees the rule');
  check(!JSON.stringify(inj).includes(API_KEY) && inj.fields[0].name === 'api_key', 'and the field name, never the value');
  await page.screenshot({ path: join(OUT, '04c-inject-only-entry.png'), fullPage: true });
  await page.goto(origin + '/#agents');
  await page.waitForSelector('tr[data-agent="2"] input.proxy-only-listed');
  await page.locator('tr[data-agent="2"] input.proxy-only-listed').check();
  for (let i = 0; i < 100 && !(await whoami(agentToken)).proxy_only_listed; i++) await sleep(100);
  check((await whoami(agentToken)).proxy_only_listed === true, 'the agents page restricts the agent to listed hosts (passkey)');

  // The agents page rotates and revokes (each with a passkey assertion).
  await page.locator('tr[data-agent="2"] button', { hasText: 'Rotate token' }).click();
  await page.waitForFunction((old) => document.getElementById('agent-token').textContent.trim() !== old, agentToken);
  const rotated = (await page.textContent('#agent-token')).trim();
  check((await api('/api/entries', agentToken)).status === 401, 'the rotated-away token stops working');
  check((await api('/api/entries', rotated)).status === 200, 'the rotated token works');
  await page.locator('tr[data-agent="2"] button', { hasText: 'Revoke' }).click();
  await page.waitForSelector('tr[data-agent="2"]', { state: 'detached' });
  check((await api('/api/entries', rotated)).status === 401, 'a revoked agent is refused');
  check((await api('/api/entries', derived.token)).status === 401, 'its derived token is revoked with it');
  check(await page.locator(`tr[data-agent="${derived.id}"]`).count() === 0, 'and leaves the agents page');

  // 7. The owner's page decrypts the L2 note again.
  await page.goto(origin + '/#entries');
  await page.waitForSelector('#entry-list tr');
  await page.click('#entry-list tr button');
  await page.waitForSelector('#view-entry:not(.hidden)');
  for (let i = 0; i < 50 && await page.isVisible('#passphrase-modal'); i++) {
    await page.fill('#passphrase-input', 'correct horse battery staple');
    await page.click('#passphrase-ok');
    await sleep(200);
  }
  const values = await page.locator('#entry-fields .f-value').evaluateAll((els) => els.map((e) => e.value));
  check(values.includes(L2_NOTE), 'the owner page decrypts the L2 note');
  await page.screenshot({ path: join(OUT, '05-entry-decrypted.png'), fullPage: true });

  // 8. Binding. Helpers: the owner's reads, a gated write made by the page (the passkey signs
  // whatever body it is given: here, what a compromised server would carry), opening an entry.
  const ownerGet = async (path) => (await api(path, ownerToken)).json();
  const gatedWrite = (method, path, body) => page.evaluate(([m, p, b]) => Clavitor.write(m, p, b).then(() => 'ok', (e) => 'error: ' + e.message), [method, path, body]);
  const asInput = (e, fields) => ({ uuid: e.uuid, title: e.title, type: e.type, url: e.url, scopes: e.scopes,
    fields: fields.map((f) => ({ name: f.name, kind: f.kind, tier: f.tier, value: f.tier === 'l2' ? f.ciphertext : f.value })) });
  const byTitle = async (title) => {
    const list = await ownerGet('/api/entries');
    return ownerGet('/api/entries/' + list.find((x) => x.title === title).id);
  };
  async function openEntry(title) {
    await page.goto(origin + '/#audit');
    await page.waitForSelector('#view-audit:not(.hidden)');
    await page.goto(origin + '/#entries');
    await page.waitForSelector('#view-entries:not(.hidden)');
    await page.locator('#entry-list tr', { hasText: title }).locator('button').click();
    await page.waitForSelector('#view-entry:not(.hidden)');
    await page.waitForFunction((t) => document.getElementById('entry-title').value === t, title);
    return {
      values: await page.locator('#entry-fields .f-value').evaluateAll((els) => els.map((e) => e.value)),
      errors: await page.locator('#entry-fields .l2-error').evaluateAll((els) => els.map((e) => e.textContent)),
      legacy: await page.locator('#entry-fields .l2-legacy').count(),
    };
  }
  async function saveAndWait() {
    await page.evaluate(() => { document.getElementById('status').textContent = ''; });
    await page.click('#entry-save');
    for (let i = 0; i < 100; i++) {
      const st = (await page.textContent('#status')) || '';
      if (st.startsWith('Saved') || st.startsWith('Failed')) return st;
      await sleep(100);
    }
    return (await page.textContent('#status')) || '';
  }

  // 8a. A v1 value (the older envelope, constant associated data) still opens, marked, and is
  // re-sealed as v2 on the next save. The test makes one with the L2 key it unwraps through the
  // recovery passphrase, as an older page would have.
  const subtle = webcrypto.subtle;
  const unb64u = (t) => Buffer.from(t, 'base64url');
  const { keyring } = await ownerGet('/api/keyring');
  const pwWrap = keyring.wraps.find((w) => w.kind === 'passphrase');
  check(!!pwWrap, 'the keyring holds a passphrase wrap');
  const pbkdf = await subtle.importKey('raw', Buffer.from(PASSPHRASE), 'PBKDF2', false, ['deriveKey']);
  const wk = await subtle.deriveKey({ name: 'PBKDF2', hash: 'SHA-256', salt: unb64u(pwWrap.salt), iterations: pwWrap.iterations },
    pbkdf, { name: 'AES-GCM', length: 256 }, false, ['decrypt']);
  const rawL2 = await subtle.decrypt({ name: 'AES-GCM', iv: unb64u(pwWrap.iv), additionalData: Buffer.from('clavitor-l2-keyring-v1') }, wk, unb64u(pwWrap.wrapped));
  const l2key = await subtle.importKey('raw', rawL2, 'AES-GCM', false, ['encrypt']);
  const iv = webcrypto.getRandomValues(new Uint8Array(12));
  const v1ct = await subtle.encrypt({ name: 'AES-GCM', iv, additionalData: Buffer.from('clavitor-l2-field-v1') }, l2key, Buffer.from(LEGACY));
  const v1 = 'v1.' + Buffer.from(iv).toString('base64url') + '.' + Buffer.from(v1ct).toString('base64url');
  let mail = await byTitle('Mail server');
  const withLegacy = asInput(mail, mail.fields.concat([{ name: 'legacy', kind: 'note', tier: 'l2', ciphertext: v1 }]));
  check(await gatedWrite('PUT', '/api/entries/' + mail.id, withLegacy) === 'ok', 'an entry with a v1 L2 value is stored');
  let seen = await openEntry('Mail server');
  check(seen.values.includes(LEGACY) && seen.legacy === 1 && seen.errors.length === 0, 'a v1 value still shows, marked as the old envelope');
  check((await saveAndWait()).startsWith('Saved'), 'the owner saves the entry');
  mail = await byTitle('Mail server');
  check(mail.fields.filter((f) => f.tier === 'l2').every((f) => f.ciphertext.startsWith('v2.')), 'saving re-seals every L2 value as v2');

  // 8b. A second entry, made in the page (its uuid chosen before encrypting), with four L2 fields.
  await page.goto(origin + '/#entries');
  await page.waitForSelector('#view-entries:not(.hidden)');
  await page.click('#entry-new');
  await page.fill('#entry-title', 'Bank');
  await rows.nth(0).locator('.f-value').fill('acct');
  await rows.nth(1).locator('.f-value').fill('L1-bank-' + L1_PASSWORD);
  for (const [name, value] of [['recovery note', BANK.note], ['pin', BANK.pin], ['answer', BANK.answer], ['hint', BANK.hint]]) {
    await page.click('#field-add');
    const r = rows.last();
    await r.locator('.f-name').fill(name);
    await r.locator('.f-tier').selectOption('l2');
    await r.locator('.f-value').fill(value);
  }
  check((await saveAndWait()).startsWith('Saved'), 'a new entry with four L2 fields is saved');
  const bank = await byTitle('Bank');
  check(bank.fields.filter((f) => f.tier === 'l2').length === 4, 'the new entry has its four L2 values');
  seen = await openEntry('Bank');
  check([BANK.note, BANK.pin, BANK.answer, BANK.hint].every((v) => seen.values.includes(v)) && seen.errors.length === 0,
    'the new entry\'s L2 values open (bound to the uuid the page chose)');

  // 8c. The swap: within Bank, pin <-> answer; between entries, the two "recovery note" values
  // (same field name, so only the entry binding tells them apart). Sent as an admin write.
  const ct = (e, name) => e.fields.find((f) => f.name === name).ciphertext;
  const swap = (e, pairs) => asInput(e, e.fields.map((f) => (f.name in pairs ? Object.assign({}, f, { ciphertext: pairs[f.name] }) : f)));
  mail = await byTitle('Mail server');
  const bankSwapped = swap(bank, { pin: ct(bank, 'answer'), answer: ct(bank, 'pin'), 'recovery note': ct(mail, 'recovery note') });
  const mailSwapped = swap(mail, { 'recovery note': ct(bank, 'recovery note') });
  check(await gatedWrite('PUT', '/api/entries/' + bank.id, bankSwapped) === 'ok', 'the server accepts swapped ciphertexts (it cannot tell)');
  check(await gatedWrite('PUT', '/api/entries/' + mail.id, mailSwapped) === 'ok', 'and the swap between entries');

  seen = await openEntry('Bank');
  await page.screenshot({ path: join(OUT, '06-swapped-values-refused.png'), fullPage: true });
  check(![BANK.pin, BANK.answer, BANK.note, L2_NOTE].some((v) => seen.values.includes(v)), 'no swapped value is shown under the wrong label');
  check(seen.errors.length === 3 && seen.errors.every((t) => t.includes('does not belong to this field')), 'each swapped value shows a clear refusal instead (' + seen.errors.join(' | ') + ')');
  check(seen.values.includes(BANK.hint) && seen.values.includes('acct'), 'the untouched values still show');
  check(((await page.textContent('#status')) || '').includes('could not be opened'), 'the page says values were refused');
  seen = await openEntry('Mail server');
  check(!seen.values.includes(BANK.note) && seen.errors.length === 1, 'a value moved from another entry is refused');
  check(seen.values.includes(L1_PASSWORD) && seen.values.includes(LEGACY), 'the rest of that entry still shows');
  const refusedSave = await saveAndWait();
  check(refusedSave.includes('could not be opened'), 'a refused field is not saved back silently (' + refusedSave + ')');
  await page.goto(origin + '/#passkeys');
  await page.waitForSelector('#passkey-list tr');
  await page.waitForFunction(() => document.getElementById('l2-wraps').textContent !== '');
  check((await page.textContent('#l2-wraps')).includes('recovery passphrase') && await page.isVisible('#l2-add-passphrase'),
    'the passkeys page shows what unlocks L2 and offers to add a wrap');
  // The page adds a second recovery passphrase wrap, keeping the existing wraps.
  const wrapsBefore = (await ownerGet('/api/keyring')).keyring.wraps.length;
  await page.evaluate(() => { document.getElementById('status').textContent = ''; });
  await page.click('#l2-add-passphrase');
  await page.waitForSelector('#passphrase-modal');
  await page.fill('#passphrase-input', 'another long recovery passphrase');
  await page.click('#passphrase-ok');
  await page.waitForFunction(() => /added|Failed/.test(document.getElementById('status').textContent));
  const wrapsAfter = (await ownerGet('/api/keyring')).keyring.wraps;
  check(wrapsAfter.length === wrapsBefore + 1 && wrapsAfter.slice(0, wrapsBefore).every((w, i) => w.wrapped === keyring.wraps[i].wrapped),
    'the page adds a recovery passphrase wrap and keeps the others (' + (await page.textContent('#status')) + ')');
  await page.screenshot({ path: join(OUT, '07-passkeys.png'), fullPage: true });
  await page.goto(origin + '/#audit');
  await page.waitForSelector('#audit-list tr');
  await page.screenshot({ path: join(OUT, '08-audit.png'), fullPage: true });
  check(problems.length === 0, 'no page errors or CSP violations: ' + problems.join('; '));
  // While the server runs, the WAL files hold the recent pages: inspect them too.
  scanForPlaintext('while serving');
} finally {
  if (context) await context.close();
  server.kill('SIGTERM');
  for (let i = 0; i < 100 && server.exitCode === null; i++) await sleep(100);
  if (server.exitCode === null) server.kill('SIGKILL');
  for (let i = 0; i < 50 && server.exitCode === null && server.signalCode === null; i++) await sleep(100);
  // Stopped: run.sh must not kill whatever process may get this pid next.
  rmSync(join(OUT, 'server.pid'), { force: true });
  log.end();
}

// 9. No plaintext is in the raw files (database, WAL, shared memory) or the logs.
await sleep(200);
scanForPlaintext('after shutdown');
rmSync(tmp, { recursive: true, force: true });
console.log(`${passed()} passed, 0 failed`);
