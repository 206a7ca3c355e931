// The extension's background (a service worker in Chromium, an event page in Firefox): it takes
// the session token from the bridge content script and keeps it in storage.session (memory
// only: gone when the browser closes; never storage.local or sync). It accepts the token only
// from this extension's own content script, in the top frame of the configured vault origin's
// /extension page.
'use strict';
const ext = globalThis.browser || globalThis.chrome;

async function configuredVault() {
  const { vault } = await ext.storage.local.get('vault');
  return typeof vault === 'string' ? vault : null;
}

function senderOrigin(sender) {
  if (sender.origin) return sender.origin;
  try {
    return new URL(sender.url).origin;
  } catch (_) {
    return null;
  }
}

async function takeSession(msg, sender) {
  const vault = await configuredVault();
  if (sender.id !== ext.runtime.id || !sender.tab || sender.frameId !== 0) throw new Error('not from this extension\'s vault page');
  if (!vault || senderOrigin(sender) !== vault) throw new Error('not from the configured vault origin');
  let path = '';
  try { path = new URL(sender.url).pathname; } catch (_) { /* refused below */ }
  if (path !== '/extension') throw new Error('not from the vault\'s extension page');
  const s = msg.session || {};
  const token = String(s.token || '');
  if (!/^cvt_[A-Za-z0-9]{20,100}$/.test(token)) throw new Error('not a session token');
  const expiresAt = Number(s.expires_at);
  if (!Number.isSafeInteger(expiresAt) || expiresAt * 1000 <= Date.now()) throw new Error('the session has expired');
  const session = { token, expires_at: expiresAt, id: Number(s.id) || 0, name: String(s.name || '').slice(0, 200), vault };
  // Restrict session storage to extension pages (Chromium's default; explicit for clarity).
  if (ext.storage.session.setAccessLevel) {
    try { await ext.storage.session.setAccessLevel({ accessLevel: 'TRUSTED_CONTEXTS' }); } catch (_) { /* Firefox: always trusted only */ }
  }
  await ext.storage.session.set({ session });
  return { ok: true };
}

ext.runtime.onMessage.addListener((msg, sender, sendResponse) => {
  if (!msg || msg.type !== 'clavitor-session') return false;
  takeSession(msg, sender).then(sendResponse, (e) => sendResponse({ ok: false, error: e.message }));
  return true;
});
