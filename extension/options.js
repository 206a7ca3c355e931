// The connect page: the vault's address, the host permission for that one origin, the bridge
// content script for that origin's /extension page, and sign-in (which opens that page).
'use strict';
(() => {
  const ext = globalThis.browser || globalThis.chrome;
  const $ = (id) => document.getElementById(id);
  const BRIDGE_ID = 'clavitor-vault-bridge';
  const say = (text, kind) => { $('status').textContent = text; $('status').className = 'status' + (kind ? ' ' + kind : ''); };

  // https anywhere; plain http only to this machine (a vault on loopback), as the server's own rule.
  function parseVault(text) {
    let u;
    try {
      u = new URL(String(text).trim());
    } catch (_) {
      throw new Error('not a URL');
    }
    const loopback = u.hostname === 'localhost' || u.hostname === '127.0.0.1' || u.hostname === '[::1]';
    if (u.protocol !== 'https:' && !(u.protocol === 'http:' && loopback)) throw new Error('the vault must use https (http only on this machine)');
    if (u.username || u.password) throw new Error('no credentials in the address');
    return u.origin;
  }

  // Match patterns carry no port (Firefox has none; Chromium treats none as any): the bridge
  // and the background check the exact origin themselves.
  const patternOf = (origin) => {
    const u = new URL(origin);
    return `${u.protocol}//${u.hostname}/*`;
  };

  async function registerBridge(origin) {
    try { await ext.scripting.unregisterContentScripts({ ids: [BRIDGE_ID] }); } catch (_) { /* none yet */ }
    const u = new URL(origin);
    await ext.scripting.registerContentScripts([{
      id: BRIDGE_ID, matches: [`${u.protocol}//${u.hostname}/extension*`], js: ['bridge.js'], runAt: 'document_idle', allFrames: false,
    }]);
  }

  async function connect() {
    let origin;
    try {
      origin = parseVault($('vault-url').value);
    } catch (e) {
      say(e.message, 'error');
      return;
    }
    // Asked inside the click (a user gesture), for this one origin only.
    const granted = await ext.permissions.request({ origins: [patternOf(origin)] });
    if (!granted) {
      say('Without access to ' + origin + ' the extension cannot reach your vault.', 'error');
      return;
    }
    const { vault: old } = await ext.storage.local.get('vault');
    if (old && old !== origin && patternOf(old) !== patternOf(origin)) {
      try { await ext.permissions.remove({ origins: [patternOf(old)] }); } catch (_) { /* already gone */ }
    }
    await ext.storage.session.remove('session');
    await ext.storage.local.set({ vault: origin });
    await registerBridge(origin);
    await showCurrent();
    await signIn();
  }

  async function signIn() {
    const { vault } = await ext.storage.local.get('vault');
    if (!vault) { say('Connect to your vault first.', 'error'); return; }
    say('Sign in with your passkey in the vault\'s tab.');
    await ext.tabs.create({ url: vault + '/extension' });
  }

  async function signOut() {
    await ext.storage.session.remove('session');
    say('Signed out here. The session stays valid on the server until it expires: revoke it on the agents page to end it now.', 'ok');
    await showCurrent();
  }

  async function showCurrent() {
    const { vault } = await ext.storage.local.get('vault');
    const { session } = await ext.storage.session.get('session');
    if (vault) $('vault-url').value = vault;
    $('current').textContent = !vault ? 'Not connected.'
      : session ? `Connected to ${vault}; signed in until ${new Date(session.expires_at * 1000).toLocaleString()}.`
        : `Connected to ${vault}; not signed in.`;
  }

  $('connect').addEventListener('click', connect);
  $('signin').addEventListener('click', signIn);
  $('signout').addEventListener('click', signOut);
  showCurrent();
})();
