// Login: POST /api/v1/login {username, password} -> {token, expires, user}. The session is
// kept in sessionStorage. A server without a login endpoint (404) is used without one.

import { api, setSession, getSession, clearSession } from './api.js';
import { h, replace, message } from './ui.js';
import { navigate, takeLoginMessage } from './app.js';

export async function render(main) {
  document.title = 'Log in – Meterlink';
  const note = takeLoginMessage();
  if (getSession() && !note) {
    navigate('#/');
    return;
  }
  clearSession();
  const out = h('div', { id: 'login-msg', 'aria-live': 'polite' },
    note ? message(note.startsWith('You have logged out') ? 'ok' : 'bad', note) : null);
  const user = h('input', { id: 'username', name: 'username', autocomplete: 'username', required: true, autocapitalize: 'none', spellcheck: 'false' });
  const pw = h('input', { id: 'password', name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const submit = h('button', { type: 'submit' }, 'Log in');
  const form = h('form', { class: 'panel', novalidate: true },
    h('label', { for: 'username' }, 'User name'), user,
    h('label', { for: 'password' }, 'Password'), pw,
    h('div', { class: 'actions' }, submit));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    if (!user.value || !pw.value) {
      replace(out, message('bad', 'Enter your user name and password.'));
      (user.value ? pw : user).focus();
      return;
    }
    submit.disabled = true;
    replace(out, message('', 'Logging in…'));
    try {
      const r = await api('/api/v1/login', { method: 'POST', body: { username: user.value, password: pw.value }, login: true });
      setSession({ token: r.token, expires: r.expires, user: r.user || { name: user.value, role: 'viewer' } });
      pw.value = '';
      navigate('#/');
    } catch (err) {
      if (err.missing) {
        // no authentication on this server (yet): everything is open
        setSession({ token: null, expires: null, user: { name: 'no login on this server', role: 'admin' }, noauth: true });
        navigate('#/');
        return;
      }
      const text = err.status === 401 ? 'Wrong user name or password.'
        : err.status === 429 ? err.message
          : err.unreachable ? 'meter-cloud is not reachable. Try again in a moment.'
            : `Login failed: ${err.message}`;
      replace(out, message('bad', text));
      pw.focus();
    } finally {
      submit.disabled = false;
    }
  });
  replace(main, h('section', { class: 'login', 'aria-labelledby': 'page-title' },
    h('h1', { id: 'page-title' }, 'Log in to Meterlink'), out, form));
  user.focus();
}
