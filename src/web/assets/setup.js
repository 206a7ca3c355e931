// The setup page: reads the one-time code from the URL fragment (never sent to the server in a
// request line), enrolls the owner's passkey, shows the owner token once.
'use strict';
(() => {
  const params = new URLSearchParams(location.hash.replace(/^#/, ''));
  const code = params.get('code') || '';
  // Keep the code out of the history and of anything copied from the address bar.
  history.replaceState(null, '', '/setup');
  const status = document.getElementById('setup-status');
  const button = document.getElementById('enroll-button');
  if (!code) {
    Clavitor.setStatus(status, 'This page needs the setup link printed by `clavitor init`.', 'error');
    button.disabled = true;
    return;
  }
  button.addEventListener('click', async () => {
    button.disabled = true;
    try {
      Clavitor.setStatus(status, 'Waiting for your passkey…');
      const start = await Clavitor.call('POST', '/api/setup/start', JSON.stringify({ code }));
      const credential = await Clavitor.register(start.options);
      const done = await Clavitor.call('POST', '/api/setup/finish',
        JSON.stringify({ code, registration_id: start.registration_id, credential }));
      Clavitor.setToken(done.token);
      document.getElementById('owner-token').textContent = done.token;
      document.getElementById('enroll').classList.add('hidden');
      document.getElementById('done').classList.remove('hidden');
    } catch (e) {
      Clavitor.setStatus(status, 'Setup failed: ' + e.message, 'error');
      button.disabled = false;
    }
  });
})();
