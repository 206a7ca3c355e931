// Issue 17 in a real browser: the pages speak names, and import. Setup (virtual authenticator)
// -> two agents (a scoped one and an all-access one) -> an import of each format (Bitwarden
// JSON, 1Password 1PUX and CSV, KeePassXC XML and CSV, Chrome/Firefox CSV), parsed in the page,
// with the default L2 fields (card numbers, identity documents, recovery codes) plus one chosen
// by hand -> the all-access agent gets only ciphertext for those, the owner's page opens them ->
// the "share with" picker shares an entry with the scoped agent by name -> "who can read / who
// read it" and "what can it read / what it read" -> unshare and revoke from those views (one
// click + the passkey) -> the audit view: names (also of revoked agents and deleted entries),
// filters, CSV export -> a malformed file is refused naming its line. Loopback only; every wait
// is bounded.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, createWriteStream, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { deflateRawSync } from 'node:zlib';
import { BIN, OUT, check, passed, sleep, freePort, launchBrowser, addPasskeyAuthenticator } from './lib.mjs';

// ---- sample exports, in each tool's published shape (never a real vault's) ----
const secret = (label) => label + '-' + randomBytes(8).toString('hex');
const CARD = '4111' + String(randomBytes(6).readUIntBE(0, 6)).padStart(12, '0').slice(0, 12);
const RECOVERY = secret('recovery');
const PASSPORT = secret('P');
const BW_PASS = secret('bwpass');
const OP_CARD = '5555' + String(randomBytes(6).readUIntBE(0, 6)).padStart(12, '0').slice(0, 12);
const bitwarden = JSON.stringify({ encrypted: false, folders: [], items: [
  { id: 'i1', type: 1, name: 'GitHub', notes: null, fields: [{ name: 'recovery code', value: RECOVERY, type: 1 }],
    login: { uris: [{ match: null, uri: 'https://github.com' }], username: 'octo', password: BW_PASS, totp: null } },
  { id: 'i2', type: 3, name: 'Visa', card: { cardholderName: 'A Owner', brand: 'Visa', number: CARD, expMonth: '12', expYear: '2030', code: '123' } },
  { id: 'i3', type: 4, name: 'Me', identity: { firstName: 'Ada', lastName: 'Owner', passportNumber: PASSPORT } },
  { id: 'i4', type: 2, name: 'Wifi', notes: 'upstairs' },
] });

function crc32(buf) {
  let c, crc = 0xffffffff;
  for (const b of buf) { c = (crc ^ b) & 0xff; for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0xedb88320 : c >>> 1; crc = (crc >>> 8) ^ c; }
  return (crc ^ 0xffffffff) >>> 0;
}
// A zip of deflated files, as 1Password writes a 1PUX.
function zip(files) {
  const locals = [], centrals = [];
  let offset = 0;
  for (const [name, text] of files) {
    const data = Buffer.from(text), comp = deflateRawSync(data), n = Buffer.from(name);
    const h = Buffer.alloc(30);
    h.writeUInt32LE(0x04034b50, 0); h.writeUInt16LE(20, 4); h.writeUInt16LE(8, 8);
    h.writeUInt32LE(crc32(data), 14); h.writeUInt32LE(comp.length, 18); h.writeUInt32LE(data.length, 22); h.writeUInt16LE(n.length, 26);
    const c = Buffer.alloc(46);
    c.writeUInt32LE(0x02014b50, 0); c.writeUInt16LE(20, 4); c.writeUInt16LE(20, 6); c.writeUInt16LE(8, 10);
    c.writeUInt32LE(crc32(data), 16); c.writeUInt32LE(comp.length, 20); c.writeUInt32LE(data.length, 24); c.writeUInt16LE(n.length, 28);
    c.writeUInt32LE(offset, 42);
    locals.push(h, n, comp);
    centrals.push(c, n);
    offset += 30 + n.length + comp.length;
  }
  const cd = Buffer.concat(centrals);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0); end.writeUInt16LE(files.length, 8); end.writeUInt16LE(files.length, 10);
  end.writeUInt32LE(cd.length, 12); end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, cd, end]);
}
const onepux = zip([['export.attributes', '{"version":3,"description":"1Password Unencrypted Export","createdAt":1700000000}'],
  ['export.data', JSON.stringify({ accounts: [{ attrs: { name: 'Ada' }, vaults: [{ attrs: { name: 'Personal' }, items: [
    { uuid: 'u1', state: 'active', categoryUuid: '001', overview: { title: 'App', url: 'https://app.example.com' },
      details: { loginFields: [{ value: 'ada', designation: 'username', fieldType: 'T' }, { value: secret('1p'), designation: 'password', fieldType: 'P' }] } },
    { uuid: 'u2', state: 'active', categoryUuid: '002', overview: { title: 'Mastercard' },
      details: { sections: [{ title: '', fields: [{ title: 'number', id: 'ccnum', value: { creditCardNumber: OP_CARD } }] }] } },
  ] }] }] })]]);
const onepasswordCsv = 'Title,Url,Username,Password,OTPAuth,Favorite,Archived,Tags,Notes\nMail,https://mail.example.com,ada,' + secret('opcsv') + ',,false,false,,"two\nlines"\n';
const keepassXml = '<?xml version="1.0" encoding="utf-8"?>\n<KeePassFile><Meta><Generator>KeePassXC</Generator></Meta><Root><Group><Name>Root</Name>\n'
  + '<Entry><String><Key>Title</Key><Value>Router</Value></String><String><Key>Password</Key><Value ProtectInMemory="True">' + secret('kp') + '</Value></String>'
  + '<String><Key>Security answer</Key><Value>' + secret('answer') + '</Value></String></Entry></Group></Root></KeePassFile>\n';
const keepassCsv = '"Group","Title","Username","Password","URL","Notes","TOTP","Icon","Last Modified","Created"\n"Root","Forum","ada","' + secret('kpcsv') + '","https://forum.example.org","","","0","2024-01-02T03:04:05Z","2024-01-02T03:04:05Z"\n';
const chromeCsv = 'name,url,username,password,note\nexample.com,https://example.com/login,ada,' + secret('chrome') + ',\n';
const firefoxCsv = '"url","username","password","httpRealm","formActionOrigin","guid","timeCreated","timeLastUsed","timePasswordChanged"\n"https://accounts.firefox.example","ada","' + secret('ff') + '",,"https://accounts.firefox.example","{0b0d2a52-1a1b-4c5f-8a3d-2f5c5f1e2d3c}","1700000000000","1700000000000","1700000000000"\n';
const FILES = [
  ['bitwarden.json', bitwarden, 'Bitwarden JSON', 4], ['export.1pux', onepux, '1Password 1PUX', 2], ['1password.csv', onepasswordCsv, '1Password CSV', 1],
  ['keepass.xml', keepassXml, 'KeePassXC XML', 1], ['keepass.csv', keepassCsv, 'KeePassXC CSV', 1],
  ['chrome.csv', chromeCsv, 'Chrome/Firefox CSV', 1], ['firefox.csv', firefoxCsv, 'Chrome/Firefox CSV', 1],
];

// ---- the server ----
const tmp = mkdtempSync(join(tmpdir(), 'clavitor-names-'));
const dataDir = join(tmp, 'data');
const port = await freePort();
const origin = `http://localhost:${port}`;
const init = spawnSync(BIN, ['--data-dir', dataDir, 'init', '--origin', origin], { encoding: 'utf8' });
check(init.status === 0, 'clavitor init succeeds');
const link = (init.stdout.match(/setup link: (\S+)/) || [])[1];
const logPath = join(OUT, 'names-server.log');
const log = createWriteStream(logPath);
const server = spawn(BIN, ['--data-dir', dataDir, 'serve', '--listen', `127.0.0.1:${port}`, '--origin', origin], { stdio: ['ignore', 'pipe', 'pipe'] });
writeFileSync(join(OUT, 'server.pid'), String(server.pid));
process.on('SIGTERM', () => { if (server.exitCode === null) server.kill('SIGKILL'); process.exit(1); });
server.stdout.pipe(log, { end: false });
server.stderr.pipe(log, { end: false });
let up = false;
for (let i = 0; i < 100 && !up; i++) {
  try { up = (await fetch(`http://127.0.0.1:${port}/healthz`)).ok; } catch (_) { await sleep(100); }
}
check(up, 'server answers /healthz');
const api = (path, token) => fetch(`http://127.0.0.1:${port}${path}`, { headers: { Authorization: 'Bearer ' + token } });

let context;
try {
  const browser = await launchBrowser(join(tmp, 'profile'), { acceptDownloads: true, viewport: { width: 1280, height: 900 } });
  context = browser.context;
  const { page, problems } = browser;
  await addPasskeyAuthenticator(context, page);

  await page.goto(link);
  await page.click('#enroll-button');
  await page.waitForSelector('#owner-token', { state: 'visible' });
  const owner = (await page.textContent('#owner-token')).trim();
  await page.click('#continue');
  await page.waitForSelector('#view-entries:not(.hidden)');
  const gated = (method, path, body) => page.evaluate(([m, p, b]) => Clavitor.write(m, p, b), [method, path, body]);
  const bot = await gated('POST', '/api/agents', { name: 'deploy-bot' });
  const reader = await gated('POST', '/api/agents', { name: 'reader', all_access: true });
  check(bot.agent.scope === '0002' && reader.agent.all_access, 'a scoped agent and an all-access agent exist');

  // Waits for the status line to say one of `words`, answering the L2 passphrase dialog (the
  // first L2 use creates the key; with PRF the passphrase is optional).
  async function settle(words) {
    for (let i = 0; i < 150; i++) {
      if (await page.isVisible('#passphrase-modal')) {
        await page.fill('#passphrase-input', 'correct horse battery staple');
        await page.click('#passphrase-ok');
      }
      const st = (await page.textContent('#status')) || '';
      if (words.some((w) => st.startsWith(w))) return st;
      await sleep(100);
    }
    return (await page.textContent('#status')) || '';
  }
  const clearStatus = () => page.evaluate(() => { document.getElementById('status').textContent = ''; });
  // Navigates to a view; the same fragment twice fires no hashchange, so step off it first.
  const go = async (hash) => {
    if (await page.evaluate(() => location.hash) === hash) await page.evaluate(() => { location.hash = '#passkeys'; });
    await page.goto(origin + '/' + hash);
  };

  // ---- import, each format ----
  await go('#import');
  await page.waitForSelector('#view-import:not(.hidden)');
  const t0 = Date.now();
  for (const [name, content, format, count] of FILES) {
    await clearStatus();
    await page.setInputFiles('#import-file', { name, mimeType: 'application/octet-stream', buffer: Buffer.from(content) });
    await page.click('#import-parse');
    await page.waitForSelector('#import-preview:not(.hidden)');
    const summary = await page.textContent('#import-summary');
    check(summary.startsWith(count + ' entries read as ' + format), `${name}: previewed as ${format} (${summary})`);
    if (name === 'bitwarden.json') {
      const types = await page.locator('#import-types tr').evaluateAll((rs) => rs.map((r) => r.textContent));
      check(['login1', 'card1', 'identity1', 'note1'].every((t) => types.includes(t)), 'the preview counts entries per type');
      const l2 = await page.locator('#import-entries input.l2:checked').evaluateAll((cs) => cs.map((c) => c.dataset.field));
      check(['recovery code', 'number', 'code', 'passport number'].every((f) => l2.includes(f)) && !l2.includes('password'),
        'card numbers, identity documents and recovery codes are L2 by default (' + l2.join(', ') + ')');
      // Editable: the GitHub password goes L2 too.
      await page.locator('#import-entries tr[data-item="0"] input.l2[data-field="password"]').check();
      await page.screenshot({ path: join(OUT, 'names-01-import-preview.png'), fullPage: true });
    }
    await page.click('#import-go');
    const st = await settle(['Imported', 'Failed']);
    check(st.startsWith('Imported ' + count + ' entries'), `${name}: imported in one passkey-approved batch (${st})`);
  }
  console.log(`# ${FILES.length} imports took ${Date.now() - t0} ms`);

  // The all-access agent gets ciphertext only for the L2 fields; the owner's page opens them.
  const all = await (await api('/api/entries', reader.token)).json();
  check(all.length === 11 && all.every((e) => e.scopes.length === 0), 'every imported entry is owner-only');
  const full = async (title, token) => (await api('/api/entries/' + all.find((e) => e.title === title).id, token || reader.token)).json();
  const visa = await full('Visa');
  const num = visa.fields.find((f) => f.name === 'number');
  check(num.tier === 'l2' && num.value === undefined && num.ciphertext.startsWith('v2.') && !JSON.stringify(visa).includes(CARD),
    'the card number is unreadable to an all-access agent');
  const gh = await full('GitHub');
  check(!JSON.stringify(gh).includes(RECOVERY) && !JSON.stringify(gh).includes(BW_PASS) && gh.fields.find((f) => f.name === 'username').value === 'octo',
    'the recovery code and the hand-picked password are L2; the username is L1');
  check(!JSON.stringify(await full('Me')).includes(PASSPORT) && !JSON.stringify(await full('Mastercard')).includes(OP_CARD),
    'passport and 1PUX card numbers are L2');
  await go('#entries');
  await page.locator('#entry-list tr', { hasText: 'Visa' }).locator('button', { hasText: 'Open' }).click();
  await page.waitForSelector('#view-entry:not(.hidden)');
  await page.waitForFunction(() => document.getElementById('entry-title').value === 'Visa');
  for (let i = 0; i < 50 && !(await page.locator('#entry-fields .f-value').evaluateAll((els) => els.map((e) => e.value))).includes(CARD); i++) await sleep(100);
  check((await page.locator('#entry-fields .f-value').evaluateAll((els) => els.map((e) => e.value))).includes(CARD), 'the owner\'s page opens the card number');

  // ---- share with, by name ----
  await go('#entries');
  await page.waitForSelector('#entry-list tr');
  await page.locator('#entry-list tr', { hasText: 'GitHub' }).locator('button', { hasText: 'Open' }).click();
  await page.waitForFunction(() => document.getElementById('entry-title').value === 'GitHub');
  const picker = await page.textContent('#entry-share');
  check(picker.includes('deploy-bot') && picker.includes('0002') && picker.includes('reader') && picker.includes('reads everything'),
    'the share-with picker names the agents, hex id secondary');
  await page.locator('#entry-share label[data-agent="2"] input').check();
  check(await page.inputValue('#entry-scopes') === '0002', 'picking deploy-bot sets its scope');
  await clearStatus();
  await page.click('#entry-save-scopes');
  check((await settle(['Scopes saved', 'Failed'])).startsWith('Scopes saved'), 'the share is saved with a passkey');
  const ghId = all.find((e) => e.title === 'GitHub').id;
  let botList = [];
  for (let i = 0; i < 50 && !botList.length; i++) { botList = await (await api('/api/entries', bot.token)).json(); if (!botList.length) await sleep(100); }
  check(botList.length === 1 && botList[0].id === ghId, 'deploy-bot now reads GitHub');
  await api('/api/entries/' + ghId, bot.token);
  await go('#entries');
  await page.waitForSelector(`#entry-list tr[data-entry="${ghId}"] .chip`);
  check((await page.textContent(`#entry-list tr[data-entry="${ghId}"]`)).includes('deploy-bot'), 'the entry list shows its scopes as agent names');

  // ---- who can read it, who did ----
  await go('#entry-access/' + ghId);
  await page.waitForSelector('#ea-readers tr[data-agent="2"]');
  const readers = await page.locator('#ea-readers tr').evaluateAll((rs) => rs.map((r) => r.dataset.agent));
  check(['1', '2', '3'].every((a) => readers.includes(a)) && readers.length === 3, 'who can read: the owner, deploy-bot, reader');
  check((await page.textContent('#ea-readers tr[data-agent="2"] .did-read')).startsWith('yes, 1 time'), 'deploy-bot read it in the last 30 days');
  check((await page.textContent('#ea-readers tr[data-agent="3"] .did-read')).startsWith('yes'), 'so did reader');
  check((await page.textContent('#ea-reads')).includes('deploy-bot'), 'the reads list names deploy-bot');
  await page.screenshot({ path: join(OUT, 'names-02-entry-access.png'), fullPage: true });

  // ---- what it can read, what it read; unshare from there ----
  await go('#agent-access/2');
  await page.waitForSelector(`#aa-entries tr[data-entry="${ghId}"]`);
  check(await page.locator('#aa-entries tr').count() === 1, 'deploy-bot can read exactly GitHub');
  check((await page.textContent('#aa-reads')).includes('GitHub'), 'and the page shows it read GitHub');
  await page.screenshot({ path: join(OUT, 'names-03-agent-access.png'), fullPage: true });
  await clearStatus();
  await page.locator(`#aa-entries tr[data-entry="${ghId}"] button`, { hasText: 'Unshare' }).click();
  check((await settle(['Unshared', 'Failed'])).startsWith('Unshared'), 'unshare is one click plus the passkey');
  for (let i = 0; i < 50 && botList.length; i++) { botList = await (await api('/api/entries', bot.token)).json(); if (botList.length) await sleep(100); }
  check(botList.length === 0, 'deploy-bot reads GitHub no more');
  await page.waitForFunction(() => document.querySelectorAll('#aa-entries tr').length === 0);

  // ---- revoke from the entry view; delete an entry; names stay in the audit ----
  await go('#entry-access/' + ghId);
  await page.waitForSelector('#ea-readers tr[data-agent="3"] button');
  await clearStatus();
  await page.locator('#ea-readers tr[data-agent="3"] button', { hasText: 'Revoke agent' }).click();
  check((await settle(['Revoked', 'Failed'])).startsWith('Revoked'), 'revoking an agent is one click plus the passkey');
  check((await api('/api/entries', reader.token)).status === 401, 'the revoked agent is refused');
  const wifi = all.find((e) => e.title === 'Wifi').id;
  await gated('DELETE', '/api/entries/' + wifi);

  await go('#audit');
  await page.waitForSelector('#audit-list tr');
  const filtered = async (action) => {
    await page.selectOption('#audit-action', action);
    await page.click('#audit-apply');
    await page.waitForFunction((a) => document.querySelectorAll('#audit-list tr').length > 0
      && Array.from(document.querySelectorAll('#audit-list tr')).every((r) => r.children[3].textContent === a), action);
    return page.textContent('#audit-list');
  };
  const reads = await filtered('entry.read');
  check(reads.includes('reader (revoked)'), 'the audit names a revoked agent by what it was called');
  check(reads.includes('deploy-bot') && reads.includes('GitHub') && reads.includes('Visa'), 'and live agents and entries by name');
  check((await filtered('entry.delete')).includes('Wifi (deleted)'), 'and a deleted entry by its title');
  await page.selectOption('#audit-agent', '2');
  await page.selectOption('#audit-action', 'entry.read');
  await page.click('#audit-apply');
  await page.waitForFunction(() => document.querySelectorAll('#audit-list tr').length > 0
    && Array.from(document.querySelectorAll('#audit-list tr')).every((r) => r.textContent.includes('deploy-bot') && r.textContent.includes('entry.read')));
  check(await page.locator('#audit-list tr').count() === 1, 'filtering by agent and action leaves deploy-bot\'s one read');
  await page.screenshot({ path: join(OUT, 'names-04-audit.png'), fullPage: true });
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#audit-csv')]);
  const csv = readFileSync(await download.path(), 'utf8');
  const lines = csv.trim().split(/\r?\n/);
  check(lines[0].startsWith('id,time_ms,actor,agent_id,agent_name,action') && lines.length === 2 && lines[1].includes('deploy-bot') && lines[1].includes('GitHub'),
    'the CSV export holds the filtered rows with names');
  const outcomeDenied = await (await api('/api/audit?outcome=denied&agent=2', owner)).json();
  check(Array.isArray(outcomeDenied.rows) && outcomeDenied.rows.every((r) => r.outcome === 'denied'), 'the API filters by outcome');
  const future = await (await api('/api/audit?since=' + (Date.now() + 3600000), owner)).json();
  check(future.rows.length === 0, 'and by time');

  // ---- a malformed file is refused, naming its line; nothing imported ----
  await go('#import');
  await page.waitForSelector('#view-import:not(.hidden)');
  await clearStatus();
  await page.setInputFiles('#import-file', { name: 'bad.csv', mimeType: 'text/csv', buffer: Buffer.from('name,url,username,password\na,b,c,d\ne,f\n') });
  await page.click('#import-parse');
  await page.waitForFunction(() => document.getElementById('status').textContent.startsWith('Not imported'));
  check((await page.textContent('#status')).includes('line 3'), 'a malformed file is refused naming its line');
  check(await page.isHidden('#import-preview'), 'and offers nothing to import');
  check(problems.length === 0, 'no page errors or CSP violations: ' + problems.join('; '));
} finally {
  if (context) await context.close();
  server.kill('SIGTERM');
  for (let i = 0; i < 100 && server.exitCode === null; i++) await sleep(100);
  if (server.exitCode === null) server.kill('SIGKILL');
  rmSync(join(OUT, 'server.pid'), { force: true });
  log.end();
}
rmSync(tmp, { recursive: true, force: true });
console.log(`${passed()} passed, 0 failed`);
