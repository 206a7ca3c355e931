// Content script, registered only for the configured vault origin's /extension page (see
// options.js): hands the session token the page obtained with the passkey to the background,
// and tells the page whether it was taken. It reads nothing else from the page and injects
// nothing into it.
'use strict';
(async () => {
  const ext = globalThis.browser || globalThis.chrome;
  const { vault } = await ext.storage.local.get('vault');
  if (!vault || location.origin !== vault || location.pathname !== '/extension' || window.top !== window) return;
  window.addEventListener('message', async (e) => {
    if (e.source !== window || e.origin !== vault) return;
    const d = e.data;
    if (!d || d.type !== 'clavitor-session' || !d.session) return;
    const session = {
      token: String(d.session.token || ''),
      expires_at: Number(d.session.expires_at),
      id: Number(d.session.id),
      name: String(d.session.name || ''),
    };
    let answer;
    try {
      answer = await ext.runtime.sendMessage({ type: 'clavitor-session', session });
    } catch (err) {
      answer = { ok: false, error: err.message };
    }
    window.postMessage({ type: 'clavitor-session-ack', ok: !!(answer && answer.ok), error: answer && answer.error }, vault);
  });
})();
