// Commercial controls on the owner's pages, served as /assets/edition.js by the commercial
// edition only (the community edition serves an empty script): bulk agents on the Agents view
// (paste or upload a list, create all with one passkey tap, tokens shown once) and autoscope
// suggestions in the entry editor (applying them only fills the form; saving is the ordinary
// passkey-approved write). Data goes into the page with textContent only; no value is ever sent
// to autoscope, only field names and kinds.
'use strict';
(() => {
  const C = Clavitor;
  const el = C.el;
  const $ = (id) => document.getElementById(id);

  // ---- bulk agents: one agent per line, "name" or "name, scope scope …" ----
  function parseLines(text) {
    const out = [];
    for (const line of text.split('\n')) {
      const t = line.trim();
      if (!t || t.startsWith('#')) continue;
      const comma = t.indexOf(',');
      const name = (comma < 0 ? t : t.slice(0, comma)).trim();
      const scopes = comma < 0 ? [] : t.slice(comma + 1).split(/[\s,;]+/).filter(Boolean);
      out.push({ name, scopes });
    }
    return out;
  }

  const agentsView = $('view-agents');
  if (agentsView) {
    const area = el('textarea', { id: 'bulk-lines', rows: 6, placeholder: 'one agent per line: name, scope scope … (up to 500)' });
    const file = el('input', { type: 'file', id: 'bulk-file', accept: '.csv,.txt,text/plain,text/csv' });
    const out = el('p', { id: 'bulk-status', class: 'status' });
    const tokens = el('table', { id: 'bulk-tokens', class: 'hidden' });
    file.addEventListener('change', async () => {
      if (file.files && file.files[0]) area.value = await file.files[0].text();
    });
    const create = async () => {
      const list = parseLines(area.value);
      if (!list.length) { C.setStatus(out, 'Nothing to create.', 'error'); return; }
      try {
        const r = await C.write('POST', '/api/mgmt/agents/bulk', { agents: list });
        tokens.replaceChildren(
          el('tr', {}, el('th', { text: 'Id' }), el('th', { text: 'Name' }), el('th', { text: 'Token (shown once)' })),
          ...r.agents.map((a) => el('tr', {},
            el('td', { text: String(a.agent.id) }), el('td', { text: a.agent.name }), el('td', { class: 'token', text: a.token }))));
        tokens.classList.remove('hidden');
        area.value = '';
        C.setStatus(out, r.agents.length + ' agents created. Copy their tokens now: they are not shown again.', 'ok');
        window.dispatchEvent(new HashChangeEvent('hashchange'));
      } catch (e) {
        C.setStatus(out, 'Failed: ' + e.message + ' (nothing was created)', 'error');
      }
    };
    agentsView.append(
      el('h2', { text: 'Bulk create' }),
      el('p', { class: 'muted', text: 'Paste or upload a list, one agent per line: a name, then optionally a comma and its extra scopes. All are created together with one passkey tap, or none.' }),
      area,
      el('div', { class: 'row' }, file, el('button', { id: 'bulk-create', text: 'Create all', onclick: create })),
      out, tokens);
  }

  // ---- autoscope: suggestions for the entry being edited ----
  const entryView = $('view-entry');
  if (entryView) {
    const box = el('div', { id: 'autoscope-box', class: 'hidden' });
    const out = el('p', { id: 'autoscope-status', class: 'status' });
    let last = null;
    const rows = () => Array.from($('entry-fields').children);
    const suggest = async () => {
      const ask = {
        title: $('entry-title').value,
        url: $('entry-url').value,
        type: $('entry-type').value || 'login',
        // Names and kinds only: autoscope never takes a value.
        fields: rows().map((r) => ({ name: r.querySelector('.f-name').value, kind: r.querySelector('.f-kind').value }))
          .filter((f) => f.name.trim()),
      };
      try {
        last = await C.call('POST', '/api/autoscope', JSON.stringify(ask));
      } catch (e) {
        C.setStatus(out, 'Failed: ' + e.message, 'error');
        return;
      }
      const lines = last.fields.map((f) => el('li', { text: f.name + ': ' + f.tier + (f.scopes.length ? ' (scopes ' + f.scopes.join(', ') + ')' : '') + ' — ' + f.reason }));
      const scopeLines = last.scopes.map((s) => el('li', { text: 'scope ' + s.scope + ' — ' + s.reason }));
      box.replaceChildren(
        el('p', { class: 'muted', text: 'Suggestions (' + (last.source === 'llm' ? 'model' : 'rules') + (last.fallback ? '; model not used: ' + last.fallback : '') + '). Applying only fills the form; Save asks for your passkey.' }),
        el('ul', {}, ...lines, ...scopeLines),
        el('button', { id: 'autoscope-apply', class: 'secondary', text: 'Apply suggestions', onclick: apply }));
      box.classList.remove('hidden');
      C.setStatus(out, '', '');
    };
    const apply = () => {
      if (!last) return;
      for (const r of rows()) {
        const s = last.fields.find((f) => f.name === r.querySelector('.f-name').value);
        if (s) r.querySelector('.f-tier').value = s.tier === 'L2' ? 'l2' : 'l1';
      }
      const input = $('entry-scopes');
      const have = input.value.split(',').map((s) => s.trim()).filter(Boolean);
      for (const s of last.scopes) if (!have.includes(s.scope)) have.push(s.scope);
      input.value = have.join(', ');
      C.setStatus(out, 'Applied to the form; Save to keep them.', 'ok');
    };
    const field = $('field-add');
    field.parentNode.insertBefore(el('button', { id: 'autoscope-suggest', class: 'secondary', text: 'Suggest tiers and scopes', onclick: suggest }), field.nextSibling);
    field.parentNode.parentNode.insertBefore(box, field.parentNode.nextSibling);
    box.before(out);
  }
})();
