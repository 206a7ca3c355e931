// Shared by the owner's pages: API calls with the owner token, the WebAuthn ceremonies
// (challenge -> assertion -> write), and L2 encryption with WebCrypto. The L2 key lives only in
// this page's memory; the server stores it wrapped (PRF-derived key, or a passphrase fallback).
'use strict';
const Clavitor = (() => {
  const enc = new TextEncoder();
  const dec = new TextDecoder();
  const TOKEN_KEY = 'clavitor.token';
  const WRAP_AAD = enc.encode('clavitor-l2-keyring-v1');
  // v1 (older pages): one constant associated data for every value, so a value moved to another
  // field or entry still opened. v2 binds the entry uuid and the field name (a JSON array: an
  // unambiguous encoding); v1 values are still read and are re-sealed as v2 on the next save.
  const FIELD_AAD_V1 = enc.encode('clavitor-l2-field-v1');
  const fieldAad = (uuid, name) => enc.encode(JSON.stringify(['clavitor-l2-field-v2', String(uuid), String(name)]));
  const PBKDF2_ITERATIONS = 600000;

  function b64u(buf) {
    const bytes = new Uint8Array(buf);
    let s = '';
    for (const b of bytes) s += String.fromCharCode(b);
    return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  }

  function unb64u(text) {
    let s = String(text).replace(/-/g, '+').replace(/_/g, '/');
    while (s.length % 4) s += '=';
    const bin = atob(s);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  async function sha256hex(bytes) {
    const d = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
    return Array.from(d, (b) => b.toString(16).padStart(2, '0')).join('');
  }

  const token = () => sessionStorage.getItem(TOKEN_KEY) || '';
  const setToken = (t) => sessionStorage.setItem(TOKEN_KEY, t);
  const clearToken = () => sessionStorage.removeItem(TOKEN_KEY);

  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.message) || 'HTTP ' + status);
      this.status = status;
      this.body = body;
    }
  }

  async function call(method, path, bodyText, extraHeaders) {
    const headers = Object.assign({}, extraHeaders || {});
    const t = token();
    if (t) headers.Authorization = 'Bearer ' + t;
    if (bodyText) headers['Content-Type'] = 'application/json';
    const r = await fetch(path, { method, headers, body: bodyText || undefined, cache: 'no-store', credentials: 'omit' });
    const text = await r.text();
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch (_) { data = { message: text.slice(0, 200) }; }
    }
    if (!r.ok) throw new ApiError(r.status, data);
    return data;
  }

  const get = (path) => call('GET', path);

  // A credential as JSON for the server, minus the PRF output, which must never leave the page.
  function forServer(cred) {
    const j = cred.toJSON();
    if (j.clientExtensionResults) delete j.clientExtensionResults.prf;
    return j;
  }

  async function assert(options) {
    const publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(options.publicKey);
    const cred = await navigator.credentials.get({ publicKey });
    return forServer(cred);
  }

  // Every write: a challenge bound to exactly this method, path and body, then the assertion.
  async function write(method, path, obj) {
    const bodyText = obj === undefined ? '' : JSON.stringify(obj);
    const body_sha256 = await sha256hex(enc.encode(bodyText));
    const ch = await call('POST', '/api/webauthn/challenge', JSON.stringify({ method, path, body_sha256 }));
    const assertion = await assert(ch.options);
    return call(method, path, bodyText, {
      'X-WebAuthn-Challenge': ch.challenge_id,
      'X-WebAuthn-Assertion': JSON.stringify(assertion),
    });
  }

  // Registration; asks for the PRF extension so the key can later wrap the L2 key. The server
  // prefers (does not require) user verification, so a security key without a PIN can enroll;
  // the credProtect "user verification required" request contradicts that, and browsers refuse
  // the pair: it is left out (the server does not depend on it).
  async function register(options) {
    const json = Object.assign({}, options.publicKey);
    json.extensions = Object.assign({}, json.extensions || {});
    delete json.extensions.credentialProtectionPolicy;
    delete json.extensions.enforceCredentialProtectionPolicy;
    const publicKey = PublicKeyCredential.parseCreationOptionsFromJSON(json);
    publicKey.extensions = Object.assign({}, publicKey.extensions || {}, { prf: {} });
    const cred = await navigator.credentials.create({ publicKey });
    return forServer(cred);
  }

  // ---- L2: the vault's browser-side key ----
  const l2 = { key: null };

  async function prfEval(rpId, credentialIds, salt) {
    if (!credentialIds.length) return null;
    try {
      const cred = await navigator.credentials.get({
        publicKey: {
          challenge: crypto.getRandomValues(new Uint8Array(32)),
          rpId,
          allowCredentials: credentialIds.map((id) => ({ type: 'public-key', id: unb64u(id) })),
          userVerification: 'required',
          extensions: { prf: { eval: { first: salt } } },
        },
      });
      const res = cred.getClientExtensionResults();
      const first = res && res.prf && res.prf.results && res.prf.results.first;
      return first ? { credentialId: cred.id, output: new Uint8Array(first) } : null;
    } catch (_) {
      return null;
    }
  }

  async function prfWrappingKey(output) {
    const base = await crypto.subtle.importKey('raw', output, 'HKDF', false, ['deriveKey']);
    return crypto.subtle.deriveKey(
      { name: 'HKDF', hash: 'SHA-256', salt: new Uint8Array(0), info: enc.encode('clavitor l2 wrapping key') },
      base, { name: 'AES-GCM', length: 256 }, false, ['encrypt', 'decrypt']);
  }

  async function passphraseWrappingKey(passphrase, salt, iterations) {
    const base = await crypto.subtle.importKey('raw', enc.encode(passphrase), 'PBKDF2', false, ['deriveKey']);
    return crypto.subtle.deriveKey({ name: 'PBKDF2', hash: 'SHA-256', salt, iterations },
      base, { name: 'AES-GCM', length: 256 }, false, ['encrypt', 'decrypt']);
  }

  async function wrapWith(wk, raw) {
    const iv = crypto.getRandomValues(new Uint8Array(12));
    const ct = await crypto.subtle.encrypt({ name: 'AES-GCM', iv, additionalData: WRAP_AAD }, wk, raw);
    return { iv: b64u(iv), wrapped: b64u(ct) };
  }

  async function unwrapWith(wk, w) {
    const raw = await crypto.subtle.decrypt({ name: 'AES-GCM', iv: unb64u(w.iv), additionalData: WRAP_AAD }, wk, unb64u(w.wrapped));
    return new Uint8Array(raw);
  }

  // Extractable only so that the owner can add a wrap (passphrase, another passkey) later;
  // the raw key is already in this page's memory whenever it is unwrapped.
  async function useRawKey(raw) {
    l2.key = await crypto.subtle.importKey('raw', raw, 'AES-GCM', true, ['encrypt', 'decrypt']);
    raw.fill(0);
  }

  async function newPassphraseWrap(raw, message) {
    const pass = await askPassphrase(message);
    if (pass === null || pass === '') return null;
    if (pass.length < 12) throw new Error('the passphrase must have at least 12 characters');
    const salt = crypto.getRandomValues(new Uint8Array(16));
    const wk = await passphraseWrappingKey(pass, salt, PBKDF2_ITERATIONS);
    return Object.assign({ kind: 'passphrase', salt: b64u(salt), iterations: PBKDF2_ITERATIONS }, await wrapWith(wk, raw));
  }

  // Asks for a passphrase in the page (never window.prompt, which shows it in the clear).
  function askPassphrase(message) {
    return new Promise((resolve) => {
      const modal = document.createElement('div');
      modal.className = 'modal';
      modal.id = 'passphrase-modal';
      const box = document.createElement('div');
      const p = document.createElement('p');
      p.textContent = message;
      const input = document.createElement('input');
      input.type = 'password';
      input.id = 'passphrase-input';
      input.autocomplete = 'new-password';
      const row = document.createElement('div');
      row.className = 'row';
      const ok = document.createElement('button');
      ok.textContent = 'OK';
      ok.id = 'passphrase-ok';
      const cancel = document.createElement('button');
      cancel.textContent = 'Cancel';
      cancel.className = 'secondary';
      row.append(ok, cancel);
      box.append(p, input, row);
      modal.append(box);
      document.body.append(modal);
      input.focus();
      const done = (v) => { modal.remove(); resolve(v); };
      ok.addEventListener('click', () => done(input.value));
      input.addEventListener('keydown', (e) => { if (e.key === 'Enter') done(input.value); });
      cancel.addEventListener('click', () => done(null));
    });
  }

  // Makes the L2 key available: unwraps the stored one, or creates the vault's first one.
  async function ensureL2(onStatus) {
    if (l2.key) return;
    const say = onStatus || (() => {});
    const [{ keyring }, info, { passkeys }] = await Promise.all([get('/api/keyring'), get('/api/webauthn/info'), get('/api/passkeys')]);
    if (keyring && Array.isArray(keyring.wraps)) {
      const prfWraps = keyring.wraps.filter((w) => w.kind === 'prf');
      if (prfWraps.length) {
        say('Unlocking L2 with your passkey…');
        const salt = unb64u(keyring.prf_salt);
        const out = await prfEval(info.rp_id, prfWraps.map((w) => w.credential_id), salt);
        const w = out && prfWraps.find((x) => x.credential_id === out.credentialId);
        if (w) {
          await useRawKey(await unwrapWith(await prfWrappingKey(out.output), w));
          return;
        }
      }
      const pw = keyring.wraps.find((w) => w.kind === 'passphrase');
      if (!pw) throw new Error('this passkey cannot unlock the L2 key');
      const pass = await askPassphrase('Your L2 passphrase unlocks the L2 fields:');
      if (pass === null) throw new Error('L2 stays locked');
      say('Deriving the key from your passphrase…');
      const wk = await passphraseWrappingKey(pass, unb64u(pw.salt), pw.iterations);
      try {
        await useRawKey(await unwrapWith(wk, pw));
      } catch (_) {
        throw new Error('wrong passphrase');
      }
      return;
    }
    // No keyring yet: create the vault's L2 key and store it wrapped.
    say('Creating the L2 key…');
    const raw = crypto.getRandomValues(new Uint8Array(32));
    const prfSalt = crypto.getRandomValues(new Uint8Array(32));
    const ring = { version: 1, alg: 'AES-GCM-256', prf_salt: b64u(prfSalt), wraps: [] };
    const out = await prfEval(info.rp_id, passkeys.map((p) => p.id), prfSalt);
    if (out) {
      ring.wraps.push(Object.assign({ kind: 'prf', credential_id: out.credentialId }, await wrapWith(await prfWrappingKey(out.output), raw)));
    }
    const pw = await newPassphraseWrap(raw, out
      ? 'Optional recovery passphrase for L2 (leave empty to rely on your passkey only):'
      : 'Your passkey does not support PRF. Choose an L2 passphrase (at least 12 characters):');
    if (pw) ring.wraps.push(pw);
    if (!ring.wraps.length) throw new Error('L2 needs your passkey (PRF) or a passphrase');
    say('Storing the wrapped L2 key (approve with your passkey)…');
    await write('PUT', '/api/keyring', ring);
    await useRawKey(raw);
  }

  // Adds a wrap of the (unlocked) L2 key to the stored keyring, keeping every existing wrap:
  // 'passphrase' asks for a recovery passphrase, 'prf' asks a passkey (the one the owner
  // touches) for its PRF output. Either lets the owner remove a passkey that was the only wrap.
  async function addL2Wrap(kind, onStatus) {
    const say = onStatus || (() => {});
    await ensureL2(say);
    const [{ keyring }, info, { passkeys }] = await Promise.all([get('/api/keyring'), get('/api/webauthn/info'), get('/api/passkeys')]);
    if (!keyring || !Array.isArray(keyring.wraps)) throw new Error('there is no L2 keyring yet');
    const raw = new Uint8Array(await crypto.subtle.exportKey('raw', l2.key));
    try {
      let wrap;
      if (kind === 'passphrase') {
        wrap = await newPassphraseWrap(raw, 'New recovery passphrase for L2 (at least 12 characters):');
        if (!wrap) throw new Error('no passphrase given');
      } else {
        say('Touch the passkey that should unlock L2…');
        const out = await prfEval(info.rp_id, passkeys.map((p) => p.id), unb64u(keyring.prf_salt));
        if (!out) throw new Error('that passkey does not support PRF: add a recovery passphrase instead');
        if (keyring.wraps.some((w) => w.kind === 'prf' && w.credential_id === out.credentialId)) {
          throw new Error('that passkey already unlocks L2');
        }
        wrap = Object.assign({ kind: 'prf', credential_id: out.credentialId }, await wrapWith(await prfWrappingKey(out.output), raw));
      }
      const ring = Object.assign({}, keyring, { wraps: keyring.wraps.concat([wrap]) });
      say('Storing the new wrap (approve with your passkey)…');
      await write('PUT', '/api/keyring', ring);
    } finally {
      raw.fill(0);
    }
  }

  async function encryptL2(plaintext, uuid, fieldName) {
    if (!uuid || !fieldName) throw new Error('an L2 value needs its entry and field');
    const iv = crypto.getRandomValues(new Uint8Array(12));
    const ct = await crypto.subtle.encrypt({ name: 'AES-GCM', iv, additionalData: fieldAad(uuid, fieldName) }, l2.key, enc.encode(plaintext));
    return 'v2.' + b64u(iv) + '.' + b64u(ct);
  }

  // Opens an L2 value of field `fieldName` of entry `uuid`: { value, legacy } (legacy: a v1 value,
  // not bound to its place). Throws with a message for the owner if the value does not belong
  // here (moved from another field or entry) or was altered.
  async function decryptL2(text, uuid, fieldName) {
    const parts = String(text).split('.');
    if (parts.length !== 3 || (parts[0] !== 'v1' && parts[0] !== 'v2')) throw new Error('not an L2 value');
    const legacy = parts[0] === 'v1';
    const additionalData = legacy ? FIELD_AAD_V1 : fieldAad(uuid, fieldName);
    try {
      const pt = await crypto.subtle.decrypt({ name: 'AES-GCM', iv: unb64u(parts[1]), additionalData }, l2.key, unb64u(parts[2]));
      return { value: dec.decode(pt), legacy };
    } catch (_) {
      throw new Error('refused: this value does not belong to this field (moved from another field or entry, or altered)');
    }
  }

  function setStatus(el, text, kind) {
    el.textContent = text;
    el.className = 'status' + (kind ? ' ' + kind : '');
  }

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === 'class') node.className = v;
      else if (k === 'text') node.textContent = v;
      else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
      else if (k in node) node[k] = v;
      else node.setAttribute(k, v);
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c);
    return node;
  }

  return {
    b64u, unb64u, sha256hex, token, setToken, clearToken, call, get, write, register,
    ensureL2, addL2Wrap, encryptL2, decryptL2, l2Unlocked: () => !!l2.key, setStatus, el, ApiError,
  };
})();
