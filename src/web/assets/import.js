// Import from other password managers, in the browser: the export file is parsed here and
// never leaves this page unparsed. Formats (the same as `clavitor entry import --from`):
// Bitwarden's unencrypted JSON, 1Password's 1PUX (a zip) and CSV, KeePassXC's XML and CSV,
// and the Chrome/Firefox password CSV. Each parser returns
//   [{ origin, title, type, url, fields: [{ name, kind, value }] }]
// or throws an Error naming the line or item at fault. No value is ever put in a message.
'use strict';
const ClavitorImport = (() => {
  const fail = (msg) => { throw new Error(msg); };

  // ---- shared ----
  function item(origin, type) { return { origin, title: '', type, url: '', fields: [] }; }
  function push(e, name, kind, value) {
    if (value === null || value === undefined) return;
    value = String(value);
    if (value.trim() === '') return;
    const base = String(name || '').trim() || 'field';
    let n = base;
    for (let i = 2; e.fields.some((f) => f.name === n); i++) n = base + ' ' + i;
    e.fields.push({ name: n, kind, value });
  }
  const label = (n, title) => 'item ' + n + (title ? ' ("' + title + '")' : '');
  function hostOf(url) {
    const rest = url.includes('://') ? url.split('://').slice(1).join('://') : url;
    return rest.split(/[/?#]/)[0].split('@').pop();
  }
  function finish(list) {
    if (!list.length) fail('the file holds no entries');
    for (const e of list) {
      if (!e.title.trim()) e.title = e.url.trim() || 'Imported (' + e.origin + ')';
      e.title = e.title.trim();
      e.url = e.url.trim();
    }
    return list;
  }

  // ---- CSV (RFC 4180: quotes, doubled quotes, newlines inside quotes) ----
  function csv(text) {
    const rows = [];
    let row = [], cell = '', quoted = false, line = 1, rowLine = 1, i = 0, wasQuoted = false;
    while (i < text.length) {
      const c = text[i];
      if (quoted) {
        if (c === '"') {
          if (text[i + 1] === '"') { cell += '"'; i += 2; continue; }
          quoted = false; i++; continue;
        }
        if (c === '\n') line++;
        cell += c; i++; continue;
      }
      if (c === '"') {
        if (cell !== '' || wasQuoted) fail('line ' + line + ': malformed CSV (a quote inside an unquoted cell)');
        quoted = true; wasQuoted = true; i++; continue;
      }
      if (c === ',') { row.push(cell); cell = ''; wasQuoted = false; i++; continue; }
      if (c === '\r' && text[i + 1] === '\n') { i++; continue; }
      if (c === '\n') {
        row.push(cell); rows.push({ line: rowLine, cells: row });
        row = []; cell = ''; wasQuoted = false; line++; rowLine = line; i++; continue;
      }
      cell += c; i++;
    }
    if (quoted) fail('line ' + rowLine + ': malformed CSV (a quote is never closed)');
    if (cell !== '' || row.length) { row.push(cell); rows.push({ line: rowLine, cells: row }); }
    if (!rows.length) fail('line 1: not a CSV header');
    const headers = rows[0].cells.map((h) => h.trim().toLowerCase());
    const body = rows.slice(1).filter((r) => r.cells.some((c) => c.trim() !== ''));
    for (const r of body) {
      if (r.cells.length !== headers.length) fail('line ' + r.line + ': ' + r.cells.length + ' cells where the header has ' + headers.length);
    }
    const col = (names) => { for (const n of names) { const k = headers.indexOf(n); if (k >= 0) return k; } return -1; };
    const need = (format, names) => {
      const k = col(names);
      if (k < 0) fail('line 1: not a ' + format + ' export: no "' + names[0] + '" column (the header has ' + headers.join(', ') + ')');
      return k;
    };
    const get = (r, k) => (k >= 0 ? r.cells[k] : '');
    return { headers, rows: body, col, need, get };
  }

  function browserCsv(text) {
    const t = csv(text);
    const url = t.need('Chrome/Firefox password', ['url']);
    t.need('Chrome/Firefox password', ['password']);
    const [name, user, pass, note] = [t.col(['name']), t.col(['username']), t.col(['password']), t.col(['note', 'notes'])];
    return t.rows.map((r) => {
      const e = item('line ' + r.line, 'login');
      e.url = t.get(r, url);
      e.title = t.get(r, name) || hostOf(e.url);
      push(e, 'username', 'text', t.get(r, user));
      push(e, 'password', 'secret', t.get(r, pass));
      push(e, 'note', 'note', t.get(r, note));
      return e;
    });
  }

  function onePasswordCsv(text) {
    const t = csv(text);
    const title = t.need('1Password CSV', ['title']);
    const url = t.col(['url', 'website', 'login url']);
    const user = t.col(['username', 'login username']);
    const pass = t.col(['password', 'login password']);
    const otp = t.col(['otpauth', 'one-time password', 'totp']);
    const notes = t.col(['notes', 'notesplain']);
    if (user < 0 && pass < 0 && notes < 0) fail('line 1: not a 1Password CSV export: no Username, Password or Notes column');
    return t.rows.map((r) => {
      const e = item('line ' + r.line, 'login');
      e.title = t.get(r, title);
      e.url = t.get(r, url);
      push(e, 'username', 'text', t.get(r, user));
      push(e, 'password', 'secret', t.get(r, pass));
      push(e, 'totp', 'totp', t.get(r, otp));
      push(e, 'notes', 'note', t.get(r, notes));
      if (!t.get(r, user) && !t.get(r, pass)) e.type = 'note';
      return e;
    });
  }

  function keepassCsv(text) {
    const t = csv(text);
    const title = t.need('KeePassXC CSV', ['title']);
    const user = t.need('KeePassXC CSV', ['username', 'user name']);
    const pass = t.need('KeePassXC CSV', ['password']);
    const [url, notes, otp, group] = [t.col(['url']), t.col(['notes']), t.col(['totp']), t.col(['group'])];
    return t.rows.map((r) => {
      const e = item('line ' + r.line, 'login');
      e.title = t.get(r, title);
      e.url = t.get(r, url);
      push(e, 'username', 'text', t.get(r, user));
      push(e, 'password', 'secret', t.get(r, pass));
      push(e, 'totp', 'totp', t.get(r, otp));
      push(e, 'notes', 'note', t.get(r, notes));
      push(e, 'group', 'text', t.get(r, group));
      return e;
    });
  }

  // ---- Bitwarden JSON ----
  const s = (o, k) => (o && typeof o[k] === 'string' ? o[k] : '');
  function bitwarden(text) {
    let data;
    try { data = JSON.parse(text); } catch (err) {
      const m = /line (\d+)/.exec(err.message) || /position (\d+)/.exec(err.message);
      let line = 1;
      if (m && err.message.includes('position')) line = text.slice(0, Number(m[1])).split('\n').length;
      else if (m) line = Number(m[1]);
      fail('line ' + line + ': not a Bitwarden JSON export (invalid JSON)');
    }
    if (!data || typeof data !== 'object' || Array.isArray(data)) fail('not a Bitwarden JSON export');
    if (data.encrypted === true) fail('this Bitwarden export is encrypted: export again choosing "JSON" (not "JSON (Encrypted)")');
    if (!Array.isArray(data.items)) fail('not a Bitwarden JSON export: no "items" list');
    return data.items.map((it, k) => {
      const n = k + 1;
      const name = s(it, 'name');
      if (!it || typeof it !== 'object') fail(label(n, '') + ': not an object');
      if (typeof it.type !== 'number') fail(label(n, name) + ': no numeric "type"');
      const e = item('item ' + n, 'login');
      e.title = name;
      if (it.type === 1) {
        const l = it.login || {};
        const uris = (Array.isArray(l.uris) ? l.uris : []).map((u) => s(u, 'uri')).filter(Boolean);
        e.url = uris[0] || '';
        push(e, 'username', 'text', s(l, 'username'));
        push(e, 'password', 'secret', s(l, 'password'));
        push(e, 'totp', 'totp', s(l, 'totp'));
        for (const u of uris.slice(1)) push(e, 'url', 'url', u);
      } else if (it.type === 2) {
        e.type = 'note';
      } else if (it.type === 3) {
        e.type = 'card';
        const c = it.card || {};
        push(e, 'cardholder', 'text', s(c, 'cardholderName'));
        push(e, 'brand', 'text', s(c, 'brand'));
        push(e, 'number', 'secret', s(c, 'number'));
        if (s(c, 'expMonth') || s(c, 'expYear')) push(e, 'expiry', 'text', s(c, 'expMonth') + '/' + s(c, 'expYear'));
        push(e, 'code', 'secret', s(c, 'code'));
      } else if (it.type === 4) {
        e.type = 'identity';
        const d = it.identity || {};
        for (const [key, field, kind] of [['title', 'title', 'text'], ['firstName', 'first name', 'text'], ['middleName', 'middle name', 'text'],
          ['lastName', 'last name', 'text'], ['username', 'username', 'text'], ['company', 'company', 'text'], ['email', 'email', 'text'],
          ['phone', 'phone', 'text'], ['address1', 'address', 'text'], ['address2', 'address 2', 'text'], ['address3', 'address 3', 'text'],
          ['city', 'city', 'text'], ['state', 'state', 'text'], ['postalCode', 'postal code', 'text'], ['country', 'country', 'text'],
          ['ssn', 'ssn', 'secret'], ['passportNumber', 'passport number', 'secret'], ['licenseNumber', 'license number', 'secret']]) {
          push(e, field, kind, s(d, key));
        }
      } else if (it.type === 5) {
        e.type = 'ssh-key';
        const k2 = it.sshKey || {};
        push(e, 'private key', 'secret', s(k2, 'privateKey'));
        push(e, 'public key', 'text', s(k2, 'publicKey'));
        push(e, 'fingerprint', 'text', s(k2, 'keyFingerprint'));
      } else {
        fail(label(n, name) + ': unknown item type ' + it.type);
      }
      for (const f of Array.isArray(it.fields) ? it.fields : []) {
        const v = typeof f.value === 'string' || typeof f.value === 'number' || typeof f.value === 'boolean' ? String(f.value) : '';
        push(e, s(f, 'name'), f.type === 1 ? 'secret' : 'text', v);
      }
      push(e, 'notes', 'note', s(it, 'notes'));
      return e;
    });
  }

  // ---- 1PUX: a zip; export.data is JSON ----
  async function unzipEntry(bytes, wanted) {
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    let eocd = -1;
    for (let i = bytes.length - 22; i >= Math.max(0, bytes.length - 65557); i--) {
      if (dv.getUint32(i, true) === 0x06054b50) { eocd = i; break; }
    }
    if (eocd < 0) fail('not a 1PUX archive: not a zip file');
    const count = dv.getUint16(eocd + 10, true);
    let p = dv.getUint32(eocd + 16, true);
    for (let k = 0; k < count; k++) {
      if (p + 46 > bytes.length || dv.getUint32(p, true) !== 0x02014b50) fail('not a 1PUX archive: damaged zip directory');
      const method = dv.getUint16(p + 10, true);
      const csize = dv.getUint32(p + 20, true);
      const nlen = dv.getUint16(p + 28, true), xlen = dv.getUint16(p + 30, true), clen = dv.getUint16(p + 32, true);
      const local = dv.getUint32(p + 42, true);
      const name = new TextDecoder().decode(bytes.subarray(p + 46, p + 46 + nlen));
      p += 46 + nlen + xlen + clen;
      if (name !== wanted) continue;
      if (local + 30 > bytes.length || dv.getUint32(local, true) !== 0x04034b50) fail('not a 1PUX archive: damaged zip entry');
      const start = local + 30 + dv.getUint16(local + 26, true) + dv.getUint16(local + 28, true);
      const data = bytes.subarray(start, start + csize);
      if (method === 0) return new TextDecoder().decode(data);
      if (method !== 8) fail('not a 1PUX archive: unsupported compression');
      const stream = new Blob([data]).stream().pipeThrough(new DecompressionStream('deflate-raw'));
      try { return await new Response(stream).text(); } catch (_) { fail('not a 1PUX archive: ' + wanted + ' does not decompress'); }
    }
    fail('not a 1PUX archive: it has no ' + wanted);
  }

  const CATEGORIES = { '001': 'login', '002': 'card', '003': 'note', '004': 'identity', '005': 'password', '006': 'document',
    100: 'software-license', 101: 'bank-account', 102: 'database', 103: 'driver-license', 105: 'membership', 106: 'passport',
    108: 'ssn', 109: 'router', 110: 'server', 111: 'email', 112: 'api', 114: 'ssh-key' };

  async function onePux(bytes) {
    const text = await unzipEntry(bytes, 'export.data');
    let data;
    try { data = JSON.parse(text); } catch (_) { fail('export.data: not valid JSON'); }
    if (!data || !Array.isArray(data.accounts)) fail('export.data: not a 1PUX export (no "accounts" list)');
    const out = [];
    let n = 0;
    for (const account of data.accounts) {
      for (const vault of (account && Array.isArray(account.vaults)) ? account.vaults : []) {
        for (const it of Array.isArray(vault.items) ? vault.items : []) {
          n += 1;
          const ov = it && it.overview;
          const title = s(ov, 'title');
          if (!it || typeof it !== 'object' || !ov || typeof ov !== 'object') fail(label(n, title) + ': not a 1PUX item (no "overview")');
          if (s(it, 'state') && s(it, 'state') !== 'active') continue;
          const e = item('item ' + n, CATEGORIES[s(it, 'categoryUuid')] || 'other');
          e.title = title;
          e.url = s(ov, 'url');
          const d = it.details || {};
          for (const f of Array.isArray(d.loginFields) ? d.loginFields : []) {
            const des = s(f, 'designation');
            if (des === 'username') push(e, 'username', 'text', s(f, 'value'));
            else if (des === 'password') push(e, 'password', 'secret', s(f, 'value'));
            else push(e, s(f, 'name'), s(f, 'fieldType') === 'P' ? 'secret' : 'text', s(f, 'value'));
          }
          push(e, 'password', 'secret', s(d, 'password'));
          for (const section of Array.isArray(d.sections) ? d.sections : []) {
            for (const f of Array.isArray(section.fields) ? section.fields : []) {
              const name = s(f, 'title') || s(f, 'id');
              const v = f.value;
              if (!v || typeof v !== 'object' || Array.isArray(v)) fail(label(n, title) + ': field "' + name + '" has no typed "value"');
              for (const [ty, x] of Object.entries(v)) {
                let kind = 'text', val = null;
                if ((ty === 'concealed' || ty === 'creditCardNumber') && typeof x === 'string') { kind = 'secret'; val = x; }
                else if (ty === 'totp' && typeof x === 'string') { kind = 'totp'; val = x; }
                else if (ty === 'url' && typeof x === 'string') { kind = 'url'; val = x; }
                else if (ty === 'email' && x && typeof x === 'object') val = s(x, 'email_address');
                else if (typeof x === 'string' || typeof x === 'number' || typeof x === 'boolean') val = String(x);
                if (val !== null) push(e, name, kind, val);
              }
            }
          }
          push(e, 'notes', 'note', s(d, 'notesPlain'));
          out.push(e);
        }
      }
    }
    return out;
  }

  // ---- KeePassXC XML ----
  function keepassXml(text) {
    const doc = new DOMParser().parseFromString(text, 'application/xml');
    const err = doc.getElementsByTagName('parsererror')[0];
    if (err) {
      const m = /line (?:number )?(\d+)/i.exec(err.textContent || '');
      fail('line ' + (m ? m[1] : '?') + ': not a KeePass XML export (malformed XML)');
    }
    const root = doc.documentElement;
    if (!root || root.nodeName !== 'KeePassFile') fail('line 1: not a KeePass XML export: no <KeePassFile> element');
    const out = [];
    const kids = (node, name) => Array.from(node.children).filter((c) => c.nodeName === name);
    const walk = (group, path) => {
      const nameEl = kids(group, 'Name')[0];
      const here = path.concat([nameEl ? nameEl.textContent : '']);
      for (const entry of kids(group, 'Entry')) {
        const e = item('entry ' + (out.length + 1), 'login');
        push(e, 'group', 'text', here.join('/'));
        for (const str of kids(entry, 'String')) {
          const key = (kids(str, 'Key')[0] || {}).textContent || '';
          const valueEl = kids(str, 'Value')[0];
          if (valueEl && /^true$/i.test(valueEl.getAttribute('Protected') || '')) {
            fail('entry ' + (out.length + 1) + ': a value is encrypted (Protected="True"): export the database from KeePassXC with Database > Export > XML');
          }
          const value = valueEl ? valueEl.textContent : '';
          if (key === 'Title') e.title = value;
          else if (key === 'URL') e.url = value;
          else if (key === 'UserName') push(e, 'username', 'text', value);
          else if (key === 'Password') push(e, 'password', 'secret', value);
          else if (key === 'Notes') push(e, 'notes', 'note', value);
          else if (key === 'otp' || key === 'TOTP Seed') push(e, 'totp', 'totp', value);
          else if (key !== 'TOTP Settings') push(e, key, 'text', value);
        }
        out.push(e);
      }
      for (const g of kids(group, 'Group')) walk(g, here);
    };
    for (const r of kids(root, 'Root')) for (const g of kids(r, 'Group')) walk(g, []);
    return out;
  }

  // ---- which format, and which fields go L2 by default ----
  const FORMATS = {
    bitwarden: 'Bitwarden JSON', '1pux': '1Password 1PUX', '1password-csv': '1Password CSV',
    'keepass-xml': 'KeePassXC XML', 'keepass-csv': 'KeePassXC CSV', 'browser-csv': 'Chrome/Firefox CSV',
  };

  // By content first, as the CLI does (zip signature, first character '<' or '{'), then by the
  // CSV header.
  function detect(bytes) {
    if (bytes[0] === 0x50 && bytes[1] === 0x4b && bytes[2] === 3 && bytes[3] === 4) return '1pux';
    const head = new TextDecoder().decode(bytes.subarray(0, 4096)).replace(/^\uFEFF/, '').trimStart();
    if (head.startsWith('<')) return 'keepass-xml';
    if (head.startsWith('{')) return 'bitwarden';
    const first = head.split(/\r?\n/)[0].toLowerCase().replace(/"/g, '').split(',').map((x) => x.trim());
    if (first.includes('group') && first.includes('title')) return 'keepass-csv';
    if (first.includes('title')) return '1password-csv';
    return 'browser-csv';
  }

  async function parse(format, bytes) {
    if (format === '1pux') return finish(await onePux(bytes));
    let text;
    try { text = new TextDecoder('utf-8', { fatal: true }).decode(bytes).replace(/^\uFEFF/, ''); } catch (_) {
      fail('the file is not UTF-8 text');
    }
    if (format === 'bitwarden') return finish(bitwarden(text));
    if (format === '1password-csv') return finish(onePasswordCsv(text));
    if (format === 'keepass-xml') return finish(keepassXml(text));
    if (format === 'keepass-csv') return finish(keepassCsv(text));
    if (format === 'browser-csv') return finish(browserCsv(text));
    return fail('unknown format ' + format);
  }

  // Card numbers and codes, identity documents, recovery codes and security answers.
  const L2_NAMES = /(card ?number|^number$|ccnum|^code$|cvv|cvc|verification|passport|licen[cs]e number|^ssn$|social security|national id|id number|document number|recovery|backup code|security answer|^answer|secret question|security question)/i;
  function defaultL2(entry, field) {
    if (field.kind === 'totp') return false;
    if (entry.type === 'card' && /^(number|code)$/i.test(field.name)) return true;
    return L2_NAMES.test(field.name);
  }

  return { parse, detect, defaultL2, FORMATS, csv };
})();
