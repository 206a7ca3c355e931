// The popup: the entries whose URL has the current tab's registrable domain (domain.js), and
// per entry: fill (username + password into the login form of the tab's top frame, on click
// only), copy the TOTP code, open the L2 fields (on the vault's own page, which decrypts them
// with the passkey's PRF). Every value comes from the vault over its API with the session token
// (an audited read) and only from the configured vault origin.
//
// `?tab=<id>` names the tab to work on instead of the active one (the browser test opens this
// page in a tab of its own). It grants nothing: filling still needs the access the browser gives
// for the tab whose toolbar button was clicked (activeTab), and the same checks run.
'use strict';
(() => {
  const ext = globalThis.browser || globalThis.chrome;
  const $ = (id) => document.getElementById(id);
  const say = (text, kind) => { $('status').textContent = text; $('status').className = 'status' + (kind ? ' ' + kind : ''); };
  const el = (tag, props, ...children) => {
    const n = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === 'text') n.textContent = v;
      else if (k === 'class') n.className = v;
      else if (k.startsWith('on')) n.addEventListener(k.slice(2), v);
      else n.setAttribute(k, v);
    }
    n.append(...children);
    return n;
  };
  const { siteOf } = globalThis.ClavitorDomain;

  class SessionEnded extends Error {}
  let vault = null;
  let session = null;
  let tabId = null;

  function signedOut(text) {
    $('entries').replaceChildren();
    $('signed-out-text').textContent = text;
    $('signed-out').classList.remove('hidden');
  }

  // Only the configured vault origin, with the session token; a 401 ends the session here.
  async function vaultGet(path) {
    const r = await fetch(vault + path, {
      headers: { Authorization: 'Bearer ' + session.token }, cache: 'no-store', credentials: 'omit', redirect: 'error',
    });
    if (r.status === 401) {
      await ext.storage.session.remove('session');
      throw new SessionEnded('The vault refused the session (401): it was revoked or has expired. Sign in again.');
    }
    const data = await r.json().catch(() => null);
    if (!r.ok) throw new Error((data && data.message) || 'HTTP ' + r.status);
    return data;
  }

  async function currentTab() {
    const hint = new URLSearchParams(location.search).get('tab');
    if (hint !== null) {
      if (!/^\d{1,15}$/.test(hint)) throw new Error('bad tab id');
      return ext.tabs.get(Number(hint));
    }
    const [tab] = await ext.tabs.query({ active: true, currentWindow: true });
    return tab;
  }

  // Runs in the page's top frame (never in a frame: frameIds [0]). Re-checks that the page is
  // still the one the entry was chosen for, then fills the first visible password field and
  // the username field before it in the same form.
  function fillInPage(expectedOrigin, username, password) {
    if (window.top !== window) return { ok: false, error: 'not the top frame' };
    if (location.origin !== expectedOrigin) return { ok: false, error: 'the page changed to ' + location.origin };
    const visible = (i) => !i.disabled && !i.readOnly && i.getClientRects().length > 0;
    const pw = Array.from(document.querySelectorAll('input[type=password]')).find(visible);
    if (!pw) return { ok: false, error: 'no login form in this page (forms inside frames of other origins are never filled)' };
    const scope = pw.form || document;
    const inputs = Array.from(scope.querySelectorAll('input'));
    const before = inputs.slice(0, inputs.indexOf(pw)).reverse();
    const user = before.find((i) => visible(i) && ['text', 'email', 'tel', ''].includes(i.getAttribute('type') || ''));
    const set = (input, value) => {
      const setter = Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set;
      setter.call(input, value);
      input.dispatchEvent(new Event('input', { bubbles: true }));
      input.dispatchEvent(new Event('change', { bubbles: true }));
    };
    if (user && username) set(user, username);
    set(pw, password);
    return { ok: true, user: !!(user && username) };
  }

  function pick(fields) {
    const l1 = fields.filter((f) => f.tier !== 'l2' && typeof f.value === 'string');
    const password = l1.find((f) => f.kind === 'secret' && /pass/i.test(f.name)) || l1.find((f) => f.kind === 'secret');
    const username = l1.find((f) => f.kind === 'text' && /user|login|email|name/i.test(f.name)) || l1.find((f) => f.kind === 'text');
    return { username: username ? username.value : '', password: password ? password.value : '' };
  }

  async function fill(entry) {
    try {
      const full = await vaultGet('/api/entries/' + entry.id);
      const { username, password } = pick(full.fields || []);
      if (!password) throw new Error('this entry has no L1 password to fill');
      // Again at fill time: the tab may have moved on since the list was made.
      const tab = await ext.tabs.get(tabId);
      const site = siteOf(tab.url);
      if (!site || site !== siteOf(full.url)) throw new Error('this tab is no longer on ' + siteOf(full.url));
      const origin = new URL(tab.url).origin;
      const [res] = await ext.scripting.executeScript({
        target: { tabId, frameIds: [0] }, func: fillInPage, args: [origin, username, password],
      });
      const out = res && res.result;
      if (!out || !out.ok) throw new Error('not filled: ' + ((out && out.error) || 'no answer from the page'));
      say('Filled ' + entry.title + '.', 'ok');
    } catch (e) {
      say(e instanceof SessionEnded ? e.message : 'Failed: ' + e.message, 'error');
      if (e instanceof SessionEnded) signedOut(e.message);
    }
  }

  async function copyTotp(entry) {
    try {
      const { code } = await vaultGet('/api/ext/totp/' + entry.id);
      await navigator.clipboard.writeText(code);
      say('Copied the code for ' + entry.title + '.', 'ok');
    } catch (e) {
      say(e instanceof SessionEnded ? e.message : 'Failed: ' + e.message, 'error');
      if (e instanceof SessionEnded) signedOut(e.message);
    }
  }

  async function openL2(entry) {
    await ext.tabs.create({ url: vault + '/extension#l2=' + encodeURIComponent(entry.id) });
  }

  async function main() {
    ({ vault } = await ext.storage.local.get('vault'));
    if (!vault) { signedOut('Not connected to a vault.'); return; }
    ({ session } = await ext.storage.session.get('session'));
    if (!session || session.vault !== vault || session.expires_at * 1000 <= Date.now()) {
      signedOut('Not signed in.');
      return;
    }
    const tab = await currentTab();
    tabId = tab && tab.id;
    const site = tab && siteOf(tab.url);
    if (!site) { say('Open a web page to see its logins.'); return; }
    $('site').textContent = site;
    let list;
    try {
      list = await vaultGet('/api/entries');
    } catch (e) {
      if (e instanceof SessionEnded) signedOut(e.message); else say('Failed: ' + e.message, 'error');
      return;
    }
    const mine = list.filter((e) => e.url && siteOf(e.url) === site);
    $('entries').replaceChildren(...mine.map((e) => el('li', { class: 'entry', 'data-entry': String(e.id) },
      el('div', { class: 'title', text: e.title }),
      el('div', { class: 'row' },
        el('button', { class: 'fill', text: 'Fill', onclick: () => fill(e) }),
        el('button', { class: 'totp secondary', text: 'Copy TOTP', onclick: () => copyTotp(e) }),
        el('button', { class: 'l2 secondary', text: 'L2 fields', onclick: () => openL2(e) })))));
    if (!mine.length) say('No entry for ' + site + '.');
  }

  $('open-options').addEventListener('click', () => ext.runtime.openOptionsPage());
  main().catch((e) => say('Failed: ' + e.message, 'error'));
})();
