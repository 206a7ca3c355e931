// The vault-side page of the browser extension (issue 17 §3), served at /extension.
// An extension page cannot run a WebAuthn ceremony for this vault's RP ID, so the extension
// opens this page: it asks for a session (POST /api/sessions, approved with the passkey) and
// hands the session token to the extension's content script, which the extension registers for
// this origin only, by window.postMessage to this same window and origin. With #l2=<entry id>
// it opens that entry's L2 fields here, with the passkey's PRF (common.js): L2 plaintext never
// leaves this page.
'use strict';
(() => {
  const C = Clavitor;
  const $ = (id) => document.getElementById(id);
  const say = (text, kind) => C.setStatus($('ext-status'), text, kind);

  if (C.token()) $('ext-token-row').classList.add('hidden');

  function useTypedToken() {
    const typed = $('ext-token').value.trim();
    $('ext-token').value = '';
    if (typed) C.setToken(typed);
    if (!C.token()) throw new Error('paste your owner token first');
  }

  let answered = false;
  window.addEventListener('message', (e) => {
    if (e.source !== window || e.origin !== location.origin) return;
    const d = e.data;
    if (!d || d.type !== 'clavitor-session-ack') return;
    answered = true;
    if (d.ok) say('The extension is signed in. You can close this tab.', 'ok');
    else say('The extension did not take the session: ' + String(d.error || 'refused'), 'error');
  });

  async function signIn() {
    try {
      useTypedToken();
      say('Approve with your passkey…');
      const s = await C.write('POST', '/api/sessions', { label: $('ext-label').value.trim() });
      answered = false;
      window.postMessage({ type: 'clavitor-session', session: { id: s.id, name: s.name, token: s.token, expires_at: s.expires_at } }, location.origin);
      say('Handing the session to the extension…');
      setTimeout(() => {
        if (!answered) say('No extension answered in this tab. Revoke the session "' + s.name + '" on the agents page.', 'error');
      }, 3000);
    } catch (e) {
      if (e instanceof C.ApiError && e.status === 401) C.clearToken();
      say('Failed: ' + e.message, 'error');
      if (!C.token()) $('ext-token-row').classList.remove('hidden');
    }
  }

  async function openL2(id) {
    const status = (text, kind) => C.setStatus($('ext-l2-status'), text, kind);
    try {
      useTypedToken();
      const e = await C.get('/api/entries/' + encodeURIComponent(id));
      $('ext-l2-title').textContent = 'L2 fields of ' + e.title;
      await C.ensureL2((t) => status(t));
      const rows = [];
      for (const f of e.fields) {
        if (f.tier !== 'l2') continue;
        let value;
        try {
          value = (await C.decryptL2(f.ciphertext, e.uuid, f.name)).value;
        } catch (err) {
          value = err.message;
        }
        rows.push(C.el('tr', { 'data-field': f.name }, C.el('th', { text: f.name }), C.el('td', { class: 'l2-value', text: value })));
      }
      $('ext-l2-fields').replaceChildren(...rows);
      status(rows.length ? 'Opened.' : 'This entry has no L2 fields.', 'ok');
    } catch (err) {
      status('Failed: ' + err.message, 'error');
    }
  }

  $('ext-signin').addEventListener('click', signIn);
  const m = location.hash.match(/^#l2=(\d{1,19})$/);
  if (m) {
    $('ext-l2-card').classList.remove('hidden');
    $('ext-l2-open').addEventListener('click', () => openL2(m[1]));
  }
})();
