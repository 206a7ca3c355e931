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
      if (done.token) {
        Clavitor.setToken(done.token);
        document.getElementById('owner-token').textContent = done.token;
      } else {
        // The vault already had an owner (made on the command line): only the passkey was new.
        document.getElementById('done-heading').textContent = 'Passkey enrolled';
        document.getElementById('done-text').textContent =
          'Your passkey now approves changes. Sign in to the vault with your existing admin token.';
        document.getElementById('owner-token').classList.add('hidden');
      }
      document.getElementById('enroll').classList.add('hidden');
      document.getElementById('done').classList.remove('hidden');
    } catch (e) {
      Clavitor.setStatus(status, 'Setup failed: ' + e.message, 'error');
      button.disabled = false;
    }
  });
})();
