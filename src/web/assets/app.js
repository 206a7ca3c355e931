// The owner's vault pages: entries, agents, passkeys, audit. One page, views switched by the
// URL fragment. Every write goes through Clavitor.write (challenge -> passkey assertion).
// Data is put into the page with textContent only, never as HTML.
'use strict';
(() => {
  const C = Clavitor;
  const $ = (id) => document.getElementById(id);
  const el = C.el;
  const status = $('status');
  const VIEWS = ['login', 'entries', 'entry', 'agents', 'passkeys', 'audit', 'entry-access', 'agent-access', 'import'];
  const DAY_MS = 24 * 3600 * 1000;
  // What counts as an agent using an entry: reading it, a TOTP code, the proxy injecting it.
  const READS = ['entry.read', 'totp.read', 'proxy.inject'];
  const KINDS = ['text', 'secret', 'url', 'totp', 'note'];
  const PLACES = ['header', 'basic', 'query'];
  let editing = null; // the entry being edited (null: a new one)
  let newUuid = null; // a new entry's uuid, chosen here so its L2 values can be bound to it
  let auditBefore = null;
  let known = { agents: [], me: null }; // the agents the caller may list, and the caller itself

  const say = (t, kind) => C.setStatus(status, t, kind);
  const fail = (e) => say(e instanceof C.ApiError && e.status === 401 ? 'Your token was not accepted.' : 'Failed: ' + e.message, 'error');
  const scopesOf = (text) => text.split(',').map((s) => s.trim()).filter(Boolean);
  const refreshL2 = () => { $('l2-state').textContent = C.l2Unlocked() ? 'L2 unlocked' : 'L2 locked'; };

  function show(view) {
    for (const v of VIEWS) $('view-' + v).classList.toggle('hidden', v !== view);
    for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.view === view);
  }

  // ---- names: agents by their own scope, scopes as chips ----
  async function loadKnown() {
    const [list, me] = await Promise.all([C.get('/api/agents').then((r) => r.agents).catch(() => []), C.get('/api/whoami')]);
    known = { agents: list, me };
    return known;
  }
  const agentByScope = (scope) => known.agents.find((a) => a.scope === scope);
  const agentById = (id) => known.agents.find((a) => a.id === id);
  const canRead = (a, scopes) => a.all_access || scopes.some((x) => a.scopes.includes(x));
  const through = (a, scopes) => (a.all_access ? 'reads everything' : 'scope ' + scopes.filter((x) => a.scopes.includes(x)).join(', '));
  // A chip: the name first, the hex id as the secondary detail.
  function chip(text, small, cls) {
    return el('span', { class: 'chip' + (cls ? ' ' + cls : '') }, text, small ? el('small', { text: small }) : null);
  }
  function scopeChips(scopes) {
    if (!scopes.length) return el('span', { class: 'muted', text: '(owner only)' });
    return el('span', { class: 'chips' }, ...scopes.map((x) => {
      const a = agentByScope(x);
      return a ? chip(a.name, x) : chip(x, '', 'scope');
    }));
  }
  const agentLabel = (id, name, gone) => (name ? name + (gone ? ' (revoked)' : '') : id ? 'agent ' + id : '');

  async function route() {
    if (!C.token()) { show('login'); return; }
    const view = location.hash.replace(/^#/, '') || 'entries';
    try {
      const [name, arg] = view.split('/');
      if (name === 'entry-access') { show('entry-access'); await loadEntryAccess(Number(arg)); }
      else if (name === 'agent-access') { show('agent-access'); await loadAgentAccess(Number(arg)); }
      else if (view === 'import') { show('import'); setupImport(); }
      else if (view === 'agents') { show('agents'); await loadAgents(); }
      else if (view === 'passkeys') { show('passkeys'); await loadPasskeys(); }
      else if (view === 'audit') { show('audit'); await auditFilters(); auditBefore = null; $('audit-list').replaceChildren(); await loadAudit(); }
      else { show('entries'); await loadEntries(); }
    } catch (e) {
      if (e instanceof C.ApiError && e.status === 401) { C.clearToken(); show('login'); }
      fail(e);
    }
  }

  // ---- entries ----
  async function loadEntries() {
    loadRequests();
    const q = $('entry-search').value.trim();
    const [list] = await Promise.all([
      q ? C.get('/api/search?q=' + encodeURIComponent(q) + '&limit=500') : C.get('/api/entries'),
      // Names are fetched once per list, not again for every keystroke of a search.
      q && known.me ? known : loadKnown()]);
    const rows = list.map((e) => el('tr', { 'data-entry': String(e.id) },
      el('td', { text: e.title }), el('td', { text: e.type }), el('td', { text: e.url }),
      el('td', {}, scopeChips(e.scopes)),
      el('td', {}, el('button', { class: 'secondary', text: 'Open', onclick: () => openEntry(e.id) }),
        ' ', el('a', { href: '#entry-access/' + e.id, class: 'who', text: 'Who can read' }))));
    $('entry-list').replaceChildren(...rows);
  }

  // ---- access requests (agents asking for a rule for a host) ----
  const utc = (secs) => new Date(secs * 1000).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');

  async function loadRequests() {
    let list = [];
    try { list = (await C.get('/api/proxy/requests')).requests || []; } catch (e) { list = []; }
    $('requests-box').classList.toggle('hidden', list.length === 0);
    $('request-list').replaceChildren(...list.map((r) => el('tr', { 'data-request': String(r.id) },
      el('td', { text: r.agent_name + ' (agent ' + r.agent_id + ')' }), el('td', {}, el('code', { text: r.host })),
      el('td', { text: r.reason }), el('td', { text: utc(r.created_at) }),
      el('td', {},
        el('button', { class: 'secondary', text: 'Create entry with rule', onclick: () => newEntry({ host: r.host, agent: r.agent_id }) }),
        el('button', { class: 'danger', text: 'Dismiss', onclick: () => dismissRequest(r.id) })))));
  }

  async function dismissRequest(id) {
    try {
      say('Approve the dismissal with your passkey…');
      await C.write('DELETE', '/api/proxy/requests/' + id);
      say('Request dismissed.', 'ok');
      await loadRequests();
    } catch (e) { fail(e); }
  }

  // ---- proxy rules of the entry being edited ----
  function ruleRow(r) {
    const place = r.place || { kind: 'header', name: 'Authorization', template: 'Bearer {{api_key}}' };
    const kind = el('select', { class: 'r-kind' }, ...PLACES.map((k) => el('option', { value: k, text: k, selected: k === place.kind })));
    const a = el('input', { type: 'text', class: 'r-a', value: place.name || place.username_field || place.param || '' });
    const b = el('input', { type: 'text', class: 'r-b', value: place.template || place.password_field || place.field || '' });
    const hints = () => {
      const k = kind.value;
      a.placeholder = k === 'header' ? 'header name' : k === 'basic' ? 'username field' : 'query parameter';
      b.placeholder = k === 'header' ? 'Bearer {{api_key}}' : k === 'basic' ? 'password field' : 'field';
    };
    kind.addEventListener('change', hints);
    hints();
    const row = el('tr', { class: 'rule' },
      el('td', {}, el('input', { type: 'text', class: 'r-host', value: r.host || '', placeholder: 'api.example.com' })),
      el('td', {}, el('input', { type: 'text', class: 'r-path', value: r.path_prefix || '', placeholder: '/v1/ (optional)' })),
      el('td', {}, el('input', { type: 'text', class: 'r-methods', value: (r.methods || []).join(','), placeholder: 'any' })),
      el('td', {}, kind), el('td', {}, a), el('td', {}, b),
      el('td', {}, el('button', { class: 'danger', text: 'Remove', onclick: () => row.remove() })));
    return row;
  }

  function rulesBody() {
    return Array.from($('entry-rules').children).map((r) => {
      const q = (c) => r.querySelector(c).value.trim();
      const kind = q('.r-kind');
      const place = kind === 'header' ? { kind, name: q('.r-a'), template: q('.r-b') }
        : kind === 'basic' ? { kind, username_field: q('.r-a'), password_field: q('.r-b') }
          : { kind, param: q('.r-a'), field: q('.r-b') };
      const rule = { host: q('.r-host'), place };
      if (q('.r-path')) rule.path_prefix = q('.r-path');
      const methods = q('.r-methods').split(',').map((m) => m.trim().toUpperCase()).filter(Boolean);
      if (methods.length) rule.methods = methods;
      return rule;
    });
  }

  // f.error: an L2 value that did not open here (shown instead of the value, never the value);
  // f.legacy: an L2 value in the old envelope, re-sealed bound to this field on save.
  function fieldRow(f) {
    const kind = el('select', { class: 'f-kind' }, ...KINDS.map((k) => el('option', { value: k, text: k, selected: k === f.kind })));
    const tier = el('select', { class: 'f-tier' }, el('option', { value: 'l1', text: 'L1', selected: f.tier !== 'l2' }),
      el('option', { value: 'l2', text: 'L2 (browser-encrypted)', selected: f.tier === 'l2' }));
    const value = el('input', { type: f.kind === 'secret' ? 'password' : 'text', class: 'f-value', value: f.value || '' });
    const cell = el('td', {}, value);
    if (f.blank) {
      value.placeholder = 'inject-only: never sent back; re-enter it to save';
    } else if (f.error) {
      value.placeholder = 'enter a new value, or remove this field';
      cell.append(el('div', { class: 'l2-error status error', text: f.error }));
    } else if (f.legacy) {
      cell.append(el('div', { class: 'l2-legacy muted', text: 'old L2 envelope: re-sealed to this field when you save' }));
    }
    const row = el('tr', {},
      el('td', {}, el('input', { type: 'text', class: 'f-name', value: f.name || '' })),
      el('td', {}, kind), el('td', {}, tier), cell,
      el('td', {}, el('button', { class: 'danger', text: 'Remove', onclick: () => row.remove() })));
    if (f.error) row.dataset.refused = '1';
    if (f.blank) row.dataset.blank = '1';
    return row;
  }

  // from: an access request ({host, agent}) to prefill the entry and its rule from.
  async function newEntry(from) {
    editing = null;
    newUuid = crypto.randomUUID();
    $('entry-heading').textContent = 'New entry';
    for (const id of ['entry-title', 'entry-url', 'entry-scopes']) $(id).value = '';
    $('entry-type').value = 'login';
    $('entry-fields').replaceChildren(fieldRow({ name: 'username', kind: 'text' }), fieldRow({ name: 'password', kind: 'secret' }));
    $('entry-rules').replaceChildren();
    $('entry-inject-only').checked = false;
    if (from) {
      $('entry-title').value = from.host;
      $('entry-type').value = 'api';
      if (!from.host.startsWith('*.')) $('entry-url').value = 'https://' + from.host;
      $('entry-scopes').value = from.agent.toString(16).padStart(4, '0');
      $('entry-fields').replaceChildren(fieldRow({ name: 'api_key', kind: 'secret' }));
      $('entry-rules').replaceChildren(ruleRow({ host: from.host }));
      $('entry-inject-only').checked = true;
      say('Enter the key, check the rule, and save: your passkey approves it. Then dismiss the request.');
    }
    $('entry-delete').classList.add('hidden');
    $('entry-save-scopes').classList.add('hidden');
    await sharePicker();
    show('entry');
  }

  async function openEntry(id) {
    try {
      const e = await C.get('/api/entries/' + id);
      const fields = [];
      if (e.fields.some((f) => f.tier === 'l2')) {
        await C.ensureL2((t) => say(t));
        refreshL2();
      }
      let refused = 0;
      for (const f of e.fields) {
        const field = { name: f.name, kind: f.kind, tier: f.tier, value: f.value || '' };
        if (e.inject_only && f.tier !== 'l2' && f.kind !== 'totp') field.blank = true;
        if (f.tier === 'l2') {
          try {
            const opened = await C.decryptL2(f.ciphertext, e.uuid, f.name);
            field.value = opened.value;
            field.legacy = opened.legacy;
          } catch (err) {
            field.error = err.message;
            refused += 1;
          }
        }
        fields.push(field);
      }
      editing = e;
      $('entry-heading').textContent = 'Edit entry';
      $('entry-title').value = e.title;
      $('entry-type').value = e.type;
      $('entry-url').value = e.url;
      $('entry-scopes').value = e.scopes.join(',');
      $('entry-fields').replaceChildren(...fields.map(fieldRow));
      $('entry-rules').replaceChildren(...(e.inject || []).map(ruleRow));
      $('entry-inject-only').checked = !!e.inject_only;
      $('entry-delete').classList.remove('hidden');
      $('entry-save-scopes').classList.remove('hidden');
      await sharePicker();
      if (refused) say(refused + ' L2 value(s) could not be opened here and are not shown: they were moved or altered.', 'error');
      else if (e.inject_only) say('Inject-only: its values are never sent back, not even to you. Re-enter them to save the entry, or use "Save scopes only".');
      else say(e.fields.some((f) => f.kind === 'totp' && f.tier === 'l1')
        ? 'TOTP seeds are never sent back: re-enter a TOTP field before saving, or use "Save scopes only".' : '');
      show('entry');
    } catch (err) { fail(err); }
  }

  async function entryBody() {
    const fields = [];
    const rows = Array.from($('entry-fields').children);
    const uuid = editing ? editing.uuid : newUuid;
    for (const r of rows) {
      if (r.dataset.refused && r.querySelector('.f-value').value === '') {
        throw new Error('the field "' + r.querySelector('.f-name').value + '" could not be opened: enter a new value or remove it before saving');
      }
      if (r.dataset.blank && r.querySelector('.f-value').value === '') {
        throw new Error('re-enter the value of "' + r.querySelector('.f-name').value + '": inject-only values are never sent back');
      }
    }
    const l2Names = rows.filter((r) => r.querySelector('.f-tier').value === 'l2').map((r) => r.querySelector('.f-name').value);
    if (new Set(l2Names).size !== l2Names.length) throw new Error('two L2 fields have the same name');
    if (rows.some((r) => r.querySelector('.f-tier').value === 'l2')) {
      await C.ensureL2((t) => say(t));
      refreshL2();
    }
    for (const r of rows) {
      const tier = r.querySelector('.f-tier').value;
      const plain = r.querySelector('.f-value').value;
      fields.push({
        name: r.querySelector('.f-name').value,
        kind: r.querySelector('.f-kind').value,
        tier,
        value: tier === 'l2' ? await C.encryptL2(plain, uuid, r.querySelector('.f-name').value) : plain,
      });
    }
    return { uuid, title: $('entry-title').value, type: $('entry-type').value || 'login', url: $('entry-url').value,
      scopes: scopesOf($('entry-scopes').value), fields, inject: rulesBody(), inject_only: $('entry-inject-only').checked };
  }

  async function saveEntry() {
    try {
      const body = await entryBody();
      say('Approve the change with your passkey…');
      if (editing) await C.write('PUT', '/api/entries/' + editing.id, body);
      else await C.write('POST', '/api/entries', body);
      say('Saved.', 'ok');
      location.hash = '#entries';
      await route();
    } catch (e) { fail(e); }
  }

  async function saveScopes() {
    try {
      say('Approve the change with your passkey…');
      await C.write('PUT', '/api/entries/' + editing.id + '/scopes', { scopes: scopesOf($('entry-scopes').value) });
      say('Scopes saved.', 'ok');
    } catch (e) { fail(e); }
  }

  async function deleteEntry() {
    try {
      say('Approve the deletion with your passkey…');
      await C.write('DELETE', '/api/entries/' + editing.id);
      say('Deleted.', 'ok');
      location.hash = '#entries';
      await route();
    } catch (e) { fail(e); }
  }

  // ---- agents ----
  function showToken(t) {
    $('agent-token').textContent = t;
    $('agent-token-box').classList.remove('hidden');
  }

  // An agent's expiry as the owner reads it: never, a UTC time, or expired.
  function expiryText(a) {
    if (a.expires_at == null) return 'never';
    const when = new Date(a.expires_at * 1000).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
    return (a.expires_at * 1000 <= Date.now() ? 'expired ' : '') + when;
  }

  // Agents in id order, each followed by the tokens derived from it (recursively), with depth.
  function agentTree(agents) {
    const ids = new Set(agents.map((a) => a.id));
    const children = new Map();
    for (const a of agents) {
      const p = a.parent_id != null && ids.has(a.parent_id) ? a.parent_id : null;
      if (!children.has(p)) children.set(p, []);
      children.get(p).push(a);
    }
    const out = [];
    const walk = (parent, depth) => {
      for (const a of (children.get(parent) || []).sort((x, y) => x.id - y.id)) {
        out.push([a, depth]);
        if (depth < 32) walk(a.id, depth + 1);
      }
    };
    walk(null, 0);
    return out;
  }

  async function loadAgents() {
    const { agents } = await loadKnown();
    const rows = agentTree(agents).map(([a, depth]) => {
      const scopes = el('input', { type: 'text', value: a.scopes.join(',') });
      const all = el('input', { type: 'checkbox', checked: a.all_access });
      const admin = el('input', { type: 'checkbox', checked: a.admin });
      const reveal = el('input', { type: 'checkbox', checked: a.reveal_to_model, class: 'reveal-to-model',
        onchange: () => agentWrite('PATCH', a.id, { reveal_to_model: reveal.checked }) });
      const listed = el('input', { type: 'checkbox', checked: a.proxy_only_listed, class: 'proxy-only-listed',
        onchange: () => agentWrite('PATCH', a.id, { proxy_only_listed: listed.checked }) });
      const act = (label, cls, fn) => el('button', { class: cls, text: label, onclick: fn });
      const name = el('td', { text: (depth ? '\u21b3 '.padStart(depth * 2 + 2, '\u00a0') : '') + a.name });
      name.append(' ', el('a', { href: '#agent-access/' + a.id, class: 'what', text: 'what it can read' }));
      if (a.parent_id != null) name.append(el('div', { class: 'muted derived-from', text: 'derived from agent ' + a.parent_id }));
      // Issue 17 §3: the browser extension's session (read-only, expiring; revoke ends it).
      if (a.extension_session) name.append(' ', el('span', { class: 'chip extension-session', text: 'browser extension session' }));
      return el('tr', { 'data-agent': String(a.id), 'data-parent': a.parent_id == null ? '' : String(a.parent_id),
        'data-extension-session': a.extension_session ? '1' : '' },
        el('td', { text: String(a.id) }), name, el('td', {}, scopes, scopeChips(a.scopes)),
        el('td', {}, el('label', {}, all, ' all'), el('label', {}, admin, ' admin'),
          el('label', { title: 'clavitor mcp may hand this agent\'s L1 values to the model' }, reveal, ' reveal to model'),
          el('label', { title: 'the proxy refuses this agent\'s requests to hosts no rule names' }, listed, ' proxy: listed hosts only')),
        el('td', { class: 'expires', text: expiryText(a) }),
        el('td', {},
          act('Save', 'secondary', () => agentWrite('PUT', a.id, { scopes: scopesOf(scopes.value), all_access: all.checked, admin: admin.checked })),
          act('Rotate token', 'secondary', () => agentWrite('PUT', a.id, { rotate_token: true })),
          act('Revoke', 'danger', () => agentWrite('DELETE', a.id))));
    });
    $('agent-list').replaceChildren(...rows);
    await loadScim();
  }

  async function agentWrite(method, id, body) {
    try {
      say('Approve the change with your passkey…');
      const r = await C.write(method, '/api/agents/' + id, body);
      if (r && r.token) showToken(r.token);
      say('Done.', 'ok');
      await loadAgents();
    } catch (e) { fail(e); }
  }

  async function createAgent() {
    try {
      const body = { name: $('agent-name').value, scopes: scopesOf($('agent-scopes').value), all_access: $('agent-all-access').checked, admin: $('agent-admin').checked,
        proxy_only_listed: $('agent-proxy-only-listed').checked };
      const hours = Number($('agent-ttl-hours').value);
      if ($('agent-ttl-hours').value !== '' && hours > 0) body.expires_at = Math.floor(Date.now() / 1000 + hours * 3600);
      say('Approve the new agent with your passkey…');
      const r = await C.write('POST', '/api/agents', body);
      showToken(r.token);
      say('Created agent ' + r.agent.id + ' (scope ' + r.agent.scope + ').', 'ok');
      $('agent-name').value = '';
      $('agent-ttl-hours').value = '';
      await loadAgents();
    } catch (e) { fail(e); }
  }

  // ---- provisioning (SCIM; the commercial edition only: elsewhere the box stays hidden) ----
  let edition = null;
  async function loadScim() {
    // Asked once; a community server has no such routes (and a 404 would be a console error).
    if (edition === null) { try { edition = (await C.get('/healthz')).edition; } catch (e) { edition = ''; } }
    if (edition !== 'commercial') return;
    let tokens, pending;
    try {
      tokens = (await C.get('/api/scim/tokens')).tokens || [];
      pending = (await C.get('/api/scim/grants')).pending || [];
    } catch (e) { $('scim-box').classList.add('hidden'); return; }
    $('scim-box').classList.remove('hidden');
    const ms = (t) => (t == null ? '' : utc(Math.floor(t / 1000)));
    $('scim-token-list').replaceChildren(...tokens.map((t) => el('tr', { 'data-scim-token': String(t.id) },
      el('td', { text: String(t.id) }), el('td', { text: t.name }), el('td', { text: ms(t.created_at) }), el('td', { text: ms(t.revoked_at) }),
      el('td', {}, t.revoked_at == null ? el('button', { class: 'danger', text: 'Revoke', onclick: () => scimWrite('DELETE', '/api/scim/tokens/' + t.id) }) : ''))));
    $('scim-grant-list').replaceChildren(...pending.map((g) => el('tr', {},
      el('td', {}, el('input', { type: 'checkbox', class: 'scim-grant', checked: true, 'data-group': String(g.group_id), 'data-agent': String(g.agent_id) })),
      el('td', { text: g.agent + ' (agent ' + g.agent_id + ')' }), el('td', { text: g.group }), el('td', {}, el('code', { text: g.scope })))));
    $('scim-approve').disabled = pending.length === 0;
  }

  async function scimWrite(method, path, body) {
    try {
      say('Approve with your passkey…');
      const r = await C.write(method, path, body);
      if (r && r.token) {
        $('scim-token').textContent = r.token;
        $('scim-base').textContent = r.scim_base_url;
        $('scim-token-box').classList.remove('hidden');
      }
      say('Done.', 'ok');
      await loadAgents();
    } catch (e) { fail(e); }
  }

  function approveGrants() {
    const grants = [...document.querySelectorAll('.scim-grant')].filter((c) => c.checked)
      .map((c) => ({ group_id: Number(c.dataset.group), agent_id: Number(c.dataset.agent) }));
    if (grants.length) scimWrite('POST', '/api/scim/grants', { grants });
  }

  // ---- passkeys ----
  async function loadPasskeys() {
    const [{ passkeys }, { keyring }] = await Promise.all([C.get('/api/passkeys'), C.get('/api/keyring'), loadKnown()]);
    const wraps = (keyring && Array.isArray(keyring.wraps)) ? keyring.wraps : [];
    const unlocks = (id) => wraps.some((w) => w.kind === 'prf' && w.credential_id === id);
    const pass = wraps.some((w) => w.kind === 'passphrase');
    $('l2-wraps').textContent = !keyring ? 'No L2 key yet: it is created when you first save an L2 field.'
      : 'L2 can be unlocked by ' + wraps.filter((w) => w.kind === 'prf').length + ' passkey(s)'
        + (pass ? ' and a recovery passphrase.' : ' and no recovery passphrase.');
    $('l2-wrap-actions').classList.toggle('hidden', !keyring);
    $('passkey-list').replaceChildren(...passkeys.map((p) => el('tr', {},
      el('td', { text: p.name || '(unnamed)' }), el('td', {}, el('code', { text: p.id.slice(0, 16) + '…' })),
      el('td', { text: String(p.sign_count) }), el('td', {}, p.agent_id == null ? '' : chip((agentById(p.agent_id) || { name: 'agent ' + p.agent_id }).name, 'agent ' + p.agent_id)),
      el('td', { text: unlocks(p.id) ? 'yes' : 'no' }),
      el('td', {}, el('button', { class: 'danger', text: 'Remove', onclick: () => removePasskey(p.id) })))));
  }

  async function addPasskey() {
    try {
      const start = await C.call('POST', '/api/passkeys/options', '{}');
      say('Touch the NEW passkey…');
      const credential = await C.register(start.options);
      say('Now approve with an EXISTING passkey…');
      await C.write('POST', '/api/passkeys', { registration_id: start.registration_id, name: $('passkey-name').value, credential });
      say('Passkey added.', 'ok');
      await loadPasskeys();
    } catch (e) { fail(e); }
  }

  async function addWrap(kind) {
    try {
      await C.addL2Wrap(kind, (t) => say(t));
      refreshL2();
      say(kind === 'passphrase' ? 'Recovery passphrase added.' : 'That passkey now unlocks L2.', 'ok');
      await loadPasskeys();
    } catch (e) { fail(e); }
  }

  async function removePasskey(id) {
    try {
      say('Approve the removal with your passkey…');
      await C.write('DELETE', '/api/passkeys/' + id);
      say('Passkey removed.', 'ok');
      await loadPasskeys();
    } catch (e) { fail(e); }
  }

  // ---- audit ----
  function auditQuery() {
    const p = new URLSearchParams();
    for (const [k, id] of [['agent', 'audit-agent'], ['entry', 'audit-entry'], ['action', 'audit-action'], ['outcome', 'audit-outcome']]) {
      if ($(id).value) p.set(k, $(id).value);
    }
    for (const [k, id] of [['since', 'audit-since'], ['until', 'audit-until']]) {
      const t = $(id).value ? new Date($(id).value).getTime() : NaN;
      if (!Number.isNaN(t)) p.set(k, String(t));
    }
    return p;
  }

  // Fills the filters' choices (agents and entries by name) once per visit, keeping the choice.
  async function auditFilters() {
    const [entries] = await Promise.all([C.get('/api/entries'), loadKnown()]);
    const fill = (id, first, items) => {
      const keep = $(id).value;
      $(id).replaceChildren(el('option', { value: '', text: first }), ...items.map(([v, t]) => el('option', { value: String(v), text: t })));
      $(id).value = keep;
    };
    fill('audit-agent', 'any agent', known.agents.map((a) => [a.id, a.name + ' (' + a.scope + ')']));
    fill('audit-entry', 'any entry', entries.map((e) => [e.id, e.title]));
    fill('audit-action', 'any action', ['entry.read', 'totp.read', 'entry.list', 'entry.search', 'entry.create', 'entry.update', 'entry.delete',
      'agent.create', 'agent.update', 'agent.revoke', 'token.derive', 'passkey.add', 'passkey.remove', 'keyring.update', 'audit.read',
      'proxy.inject', 'proxy.refuse', 'auth'].map((a) => [a, a]));
  }

  async function loadAudit() {
    const p = auditQuery();
    p.set('limit', '100');
    if (auditBefore) p.set('before', String(auditBefore));
    const { rows, next_before } = await C.get('/api/audit?' + p.toString());
    auditBefore = next_before;
    $('audit-more').classList.toggle('hidden', !next_before);
    $('audit-list').append(...rows.map((r) => el('tr', { 'data-audit': String(r.id) },
      el('td', { text: String(r.id) }), el('td', { text: new Date(r.ts).toISOString() }),
      el('td', { class: 'a-agent' }, r.agent_id ? chip(agentLabel(r.agent_id, r.agent_name, r.agent_gone), r.actor + ' ' + r.agent_id, r.agent_gone ? 'gone' : '') : r.actor),
      el('td', { text: r.action }),
      el('td', { class: 'a-entry' }, r.entry_id ? chip((r.entry_title || 'entry ' + r.entry_id) + (r.entry_gone ? ' (deleted)' : ''), '#' + r.entry_id, r.entry_gone ? 'gone' : '') : ''),
      el('td', { text: r.outcome }), el('td', { text: r.detail }), el('td', { text: r.client }))));
  }

  // The same filters as CSV: fetched with the token (a plain link would carry none), saved
  // through a blob URL.
  async function exportCsv() {
    try {
      const p = auditQuery();
      p.set('limit', '1000');
      p.set('format', 'csv');
      const r = await fetch('/api/audit?' + p.toString(), { headers: { Authorization: 'Bearer ' + C.token() }, cache: 'no-store', credentials: 'omit' });
      if (!r.ok) throw new C.ApiError(r.status, await r.json().catch(() => null));
      const url = URL.createObjectURL(await r.blob());
      const a = el('a', { href: url, download: 'clavitor-audit.csv' });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
      say('Exported.', 'ok');
    } catch (e) { fail(e); }
  }

  // ---- "share with": the entry's scopes chosen as agents ----
  async function sharePicker() {
    if (!known.me) await loadKnown();
    const box = $('entry-share');
    const current = () => scopesOf($('entry-scopes').value);
    // Derived tokens (short-lived, narrower than their parent) are shared through their parent.
    const boxes = known.agents.filter((a) => !a.all_access && a.parent_id == null).map((a) => {
      const cb = el('input', { type: 'checkbox', class: 'share', checked: current().includes(a.scope) });
      cb.dataset.scope = a.scope;
      cb.addEventListener('change', () => {
        const rest = current().filter((x) => x !== a.scope);
        $('entry-scopes').value = (cb.checked ? rest.concat([a.scope]) : rest).join(',');
      });
      return el('label', { class: 'chip', 'data-agent': String(a.id) }, cb, a.name, el('small', { text: a.scope }));
    });
    const all = known.agents.filter((a) => a.all_access).map((a) => el('span', { class: 'chip all', title: 'reads every entry' }, a.name, el('small', { text: 'reads everything' })));
    box.replaceChildren(...boxes, ...all);
    if (!boxes.length) box.append(el('span', { class: 'muted', text: 'no scoped agents yet' }));
  }
  $('entry-scopes').addEventListener('input', () => {
    const now = scopesOf($('entry-scopes').value);
    for (const cb of document.querySelectorAll('#entry-share input.share')) cb.checked = now.includes(cb.dataset.scope);
  });

  // ---- who can read an entry, and who did ----
  async function readsOf(filter) {
    const out = [];
    for (const action of READS) {
      const p = new URLSearchParams(Object.assign({ action, outcome: 'ok', limit: '1000' }, filter));
      out.push(...(await C.get('/api/audit?' + p.toString())).rows);
    }
    return out.sort((x, y) => y.id - x.id);
  }

  async function loadEntryAccess(id) {
    // From the list (metadata only): opening the entry would be a read of its values.
    const [list] = await Promise.all([C.get('/api/entries'), loadKnown()]);
    const e = list.find((x) => x.id === id);
    if (!e) throw new Error('no entry ' + id);
    const reads = await readsOf({ entry: String(id), since: String(Date.now() - 30 * DAY_MS) });
    $('ea-title').textContent = e.title;
    $('ea-scopes').replaceChildren('Shared with: ', scopeChips(e.scopes));
    const byAgent = new Map();
    for (const r of reads) {
      const k = r.agent_id;
      if (!byAgent.has(k)) byAgent.set(k, { n: 0, last: r.ts, name: r.agent_name, gone: r.agent_gone });
      byAgent.get(k).n += 1;
    }
    $('ea-readers').replaceChildren(...known.agents.filter((a) => canRead(a, e.scopes)).map((a) => {
      const did = byAgent.get(a.id);
      const action = a.all_access
        ? (known.me && a.id === known.me.id ? el('span', { class: 'muted', text: 'you' })
          : el('button', { class: 'danger', text: 'Revoke agent', onclick: () => revokeFrom(a.id, '#entry-access/' + id) }))
        : el('button', { class: 'danger', text: 'Unshare', onclick: () => unshare(e, a, '#entry-access/' + id) });
      return el('tr', { 'data-agent': String(a.id) }, el('td', {}, chip(a.name, a.scope)), el('td', { text: through(a, e.scopes) }),
        el('td', { class: 'did-read', text: did ? 'yes, ' + did.n + ' time(s), last ' + utc(did.last / 1000) : 'no' }), el('td', {}, action));
    }));
    $('ea-reads').replaceChildren(...Array.from(byAgent.entries()).map(([aid, d]) => el('tr', { 'data-agent': String(aid) },
      el('td', {}, chip(agentLabel(aid, d.name, d.gone), 'agent ' + aid, d.gone ? 'gone' : '')), el('td', { text: String(d.n) }), el('td', { text: utc(d.last / 1000) }))));
    if (!byAgent.size) $('ea-reads').append(el('tr', {}, el('td', { class: 'muted', text: 'nobody read it in the last 30 days' })));
    $('ea-open').onclick = () => { location.hash = '#entries'; openEntry(id); };
  }

  // Unsharing = dropping the scopes through which this agent reads the entry (one passkey tap).
  async function unshare(e, a, back) {
    try {
      say('Approve with your passkey: ' + a.name + ' will no longer read "' + e.title + '"…');
      await C.write('PUT', '/api/entries/' + e.id + '/scopes', { scopes: e.scopes.filter((x) => !a.scopes.includes(x)) });
      say('Unshared.', 'ok');
      if (location.hash === back) await route(); else location.hash = back;
    } catch (err) { fail(err); }
  }

  async function revokeFrom(id, back) {
    try {
      say('Approve the revocation with your passkey…');
      await C.write('DELETE', '/api/agents/' + id);
      say('Revoked.', 'ok');
      if (location.hash === back) await route(); else location.hash = back;
    } catch (err) { fail(err); }
  }

  // ---- what an agent can read, and what it read ----
  async function loadAgentAccess(id) {
    // Everything first, then the page is drawn at once (no half-drawn view to act on).
    const [entries, , allReads] = await Promise.all([C.get('/api/entries'), loadKnown(), readsOf({ agent: String(id) })]);
    const a = agentById(id);
    if (!a) throw new Error('no agent ' + id + ' (revoked, or not yours to see)');
    $('aa-title').textContent = a.name;
    $('aa-role').replaceChildren(chip(a.name, a.scope), ' ', a.all_access ? 'reads every entry' : 'holds ' + a.scopes.join(', '), a.admin ? ', admin' : '');
    const mine = known.me && known.me.id === a.id;
    $('aa-revoke').classList.toggle('hidden', !!mine);
    $('aa-revoke').onclick = () => revokeFrom(a.id, '#agents');
    $('aa-entries').replaceChildren(...entries.filter((e) => canRead(a, e.scopes)).map((e) => el('tr', { 'data-entry': String(e.id) },
      el('td', { text: e.title }), el('td', { text: through(a, e.scopes) }),
      el('td', {}, a.all_access ? el('span', { class: 'muted', text: 'revoke the agent to stop this' })
        : el('button', { class: 'danger', text: 'Unshare', onclick: () => unshare(e, a, '#agent-access/' + id) })))));
    const reads = allReads.slice(0, 200);
    $('aa-reads').replaceChildren(...reads.map((r) => el('tr', { 'data-entry': String(r.entry_id) },
      el('td', { text: utc(r.ts / 1000) }),
      el('td', {}, chip((r.entry_title || 'entry ' + r.entry_id) + (r.entry_gone ? ' (deleted)' : ''), '#' + r.entry_id, r.entry_gone ? 'gone' : '')),
      el('td', { text: r.action }))));
    if (!reads.length) $('aa-reads').append(el('tr', {}, el('td', { class: 'muted', text: 'it has read nothing' })));
  }

  // ---- import ----
  let parsed = null;
  function setupImport() {
    const f = $('import-format');
    if (f.options.length === 1) {
      for (const [k, t] of Object.entries(ClavitorImport.FORMATS)) f.append(el('option', { value: k, text: t }));
    }
  }

  async function previewImport() {
    try {
      const file = $('import-file').files[0];
      if (!file) throw new Error('choose an export file first');
      const bytes = new Uint8Array(await file.arrayBuffer());
      const format = $('import-format').value || ClavitorImport.detect(bytes);
      parsed = await ClavitorImport.parse(format, bytes);
      const types = new Map();
      for (const e of parsed) types.set(e.type, (types.get(e.type) || 0) + 1);
      $('import-summary').textContent = parsed.length + ' entries read as ' + ClavitorImport.FORMATS[format] + '.';
      $('import-types').replaceChildren(...Array.from(types.entries()).map(([t, n]) => el('tr', { 'data-type': t }, el('td', { text: t }), el('td', { text: String(n) }))));
      $('import-entries').replaceChildren(...parsed.map((e, i) => el('tr', { 'data-item': String(i) },
        el('td', { text: e.title }), el('td', { text: e.type }),
        el('td', { class: 'chips' }, ...e.fields.map((f) => {
          const cb = el('input', { type: 'checkbox', class: 'l2', checked: ClavitorImport.defaultL2(e, f) });
          cb.dataset.field = f.name;
          return el('label', { class: 'chip', title: f.kind }, cb, f.name, el('small', { text: f.kind }));
        })))));
      $('import-go').textContent = 'Import ' + parsed.length + ' entries';
      $('import-preview').classList.remove('hidden');
      say('Check which fields are L2, then import (one passkey tap).');
    } catch (e) {
      parsed = null;
      $('import-preview').classList.add('hidden');
      say('Not imported: ' + e.message, 'error');
    }
  }

  async function runImport() {
    try {
      if (!parsed) throw new Error('preview a file first');
      const rows = Array.from($('import-entries').children);
      const l2 = rows.map((r) => new Set(Array.from(r.querySelectorAll('input.l2')).filter((c) => c.checked).map((c) => c.dataset.field)));
      if (l2.some((set) => set.size)) { await C.ensureL2((t) => say(t)); refreshL2(); }
      const entries = [];
      for (const [i, e] of parsed.entries()) {
        const uuid = crypto.randomUUID();
        const fields = [];
        for (const f of e.fields) {
          const tier = l2[i].has(f.name) ? 'l2' : 'l1';
          fields.push({ name: f.name, kind: f.kind, tier, value: tier === 'l2' ? await C.encryptL2(f.value, uuid, f.name) : f.value });
        }
        entries.push({ uuid, title: e.title, type: e.type, url: e.url, fields });
      }
      const size = new TextEncoder().encode(JSON.stringify({ entries })).length;
      if (size > 250 * 1024) throw new Error('this import is ' + Math.round(size / 1024) + ' KiB, over the 256 KiB of one request: split the export into smaller files');
      say('Approve the import of ' + entries.length + ' entries with your passkey…');
      const r = await C.write('POST', '/api/entries/import', { entries });
      say('Imported ' + r.ids.length + ' entries (owner-only until you share them).', 'ok');
      parsed = null;
      $('import-preview').classList.add('hidden');
      $('import-file').value = '';
    } catch (e) { fail(e); }
  }

  // ---- wiring ----
  $('login-button').addEventListener('click', () => {
    C.setToken($('login-token').value.trim());
    $('login-token').value = '';
    route();
  });
  $('sign-out').addEventListener('click', () => { C.clearToken(); location.reload(); });
  $('entry-search').addEventListener('input', () => loadEntries().catch(fail));
  $('entry-new').addEventListener('click', () => newEntry().catch(fail));
  $('field-add').addEventListener('click', () => $('entry-fields').append(fieldRow({ kind: 'text' })));
  $('rule-add').addEventListener('click', () => $('entry-rules').append(ruleRow({})));
  $('entry-save').addEventListener('click', saveEntry);
  $('entry-save-scopes').addEventListener('click', saveScopes);
  $('entry-delete').addEventListener('click', deleteEntry);
  $('entry-cancel').addEventListener('click', () => { location.hash = '#entries'; route(); });
  $('agent-create').addEventListener('click', createAgent);
  $('scim-token-create').addEventListener('click', () => scimWrite('POST', '/api/scim/tokens', { name: $('scim-token-name').value }));
  $('scim-approve').addEventListener('click', approveGrants);
  $('passkey-add').addEventListener('click', addPasskey);
  $('l2-add-passphrase').addEventListener('click', () => addWrap('passphrase'));
  $('l2-add-prf').addEventListener('click', () => addWrap('prf'));
  $('audit-more').addEventListener('click', () => loadAudit().catch(fail));
  $('audit-apply').addEventListener('click', () => { auditBefore = null; $('audit-list').replaceChildren(); loadAudit().catch(fail); });
  $('audit-csv').addEventListener('click', exportCsv);
  $('import-parse').addEventListener('click', previewImport);
  $('import-go').addEventListener('click', runImport);
  window.addEventListener('hashchange', route);
  route();
})();
