// The family portal's account pages: register, verify, log in, reset, change, close.
// Every word shown lives in STRINGS (one place, for the translation to come). The session
// is an HttpOnly cookie the script never sees; requests that change something carry the
// session's CSRF token (from the login answer or GET /family/session) in X-CSRF-Token.
'use strict';

const STRINGS = {
  passwordsDiffer: 'The two passwords are not the same.',
  checkEmail: 'Check your email: if the address can receive it, we sent a link. Open it to go on.',
  verified: 'Your email address is confirmed. You can log in now.',
  passwordReset: 'Your password is changed. Log in with the new one.',
  passwordChanged: 'Your password is changed. Other sessions were logged out.',
  emailChanged: 'Your email address is changed. Log in again.',
  closed: 'Your account is closed.',
  loggedOut: 'You are logged out.',
  sessionEnded: 'Your session has ended. Log in again.',
  network: 'The portal cannot be reached. Check your connection and try again.',
};

const state = { csrf: '', email: '' };

function $(id) { return document.getElementById(id); }

function show(view) {
  for (const v of ['login', 'register', 'forgot', 'reset', 'account']) {
    $(`${v}-view`).hidden = v !== view;
  }
  $('nav').hidden = view !== 'account';
  const heading = $(`${view}-title`);
  if (heading) { heading.tabIndex = -1; heading.focus(); }
}

function say(text) { const n = $('notice'); n.textContent = text; n.hidden = !text; }
function fail(text) { const e = $('error'); e.textContent = text; e.hidden = !text; }
function clear() { say(''); fail(''); }

/** Calls the API; returns the JSON body (or null) or throws {code, message}. */
async function api(method, path, body) {
  const headers = {};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && state.csrf) headers['X-CSRF-Token'] = state.csrf;
  let resp;
  try {
    resp = await fetch(`/api/v1/family${path}`, {
      method, headers, credentials: 'same-origin',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw { code: 'network', message: STRINGS.network };
  }
  const text = await resp.text();
  const data = text ? JSON.parse(text) : null;
  if (!resp.ok) {
    const err = (data && data.error) || { code: String(resp.status), message: resp.statusText };
    throw err;
  }
  return data;
}

/** Names the view in the address bar without a hashchange (which would re-route and
 * clear the message just shown). */
function setHash(hash) { history.replaceState(null, '', location.pathname + hash); }

function signedIn(session) {
  state.csrf = session.csrf_token || '';
  state.email = session.email;
  $('account-email').textContent = session.email;
  $('whoami').textContent = session.email;
  setHash('#account');
  show('account');
  document.dispatchEvent(new Event('family:signed-in'));
}

function signedOut(message) {
  state.csrf = '';
  state.email = '';
  setHash('#login');
  show('login');
  if (message) say(message);
}

/** Runs a form's action with its errors shown; the button is disabled meanwhile. */
function onSubmit(formId, action) {
  const form = $(formId);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    clear();
    const button = form.querySelector('button[type="submit"]');
    button.disabled = true;
    try {
      await action();
    } catch (e) {
      if (e.code === 'unauthorized') signedOut(STRINGS.sessionEnded);
      else fail(e.message || String(e));
    } finally {
      button.disabled = false;
    }
  });
}

function samePasswords(a, b) {
  if ($(a).value !== $(b).value) { fail(STRINGS.passwordsDiffer); $(b).focus(); return false; }
  return true;
}

onSubmit('login-form', async () => {
  const s = await api('POST', '/login', { email: $('login-email').value, password: $('login-password').value });
  $('login-password').value = '';
  signedIn(s);
});

onSubmit('register-form', async () => {
  if (!samePasswords('register-password', 'register-confirm')) return;
  await api('POST', '/register', { email: $('register-email').value, password: $('register-password').value });
  $('register-password').value = '';
  $('register-confirm').value = '';
  say(STRINGS.checkEmail);
});

onSubmit('forgot-form', async () => {
  await api('POST', '/password/forgot', { email: $('forgot-email').value });
  say(STRINGS.checkEmail);
});

onSubmit('reset-form', async () => {
  if (!samePasswords('reset-password', 'reset-confirm')) return;
  await api('POST', '/password/reset', { token: state.resetToken, password: $('reset-password').value });
  $('reset-password').value = '';
  $('reset-confirm').value = '';
  signedOut(STRINGS.passwordReset);
});

onSubmit('password-form', async () => {
  const s = await api('POST', '/password', {
    current_password: $('password-current').value, new_password: $('password-new').value,
  });
  $('password-current').value = '';
  $('password-new').value = '';
  signedIn(s);
  say(STRINGS.passwordChanged);
});

onSubmit('email-form', async () => {
  await api('POST', '/email', { new_email: $('email-new').value, password: $('email-password').value });
  $('email-password').value = '';
  say(STRINGS.checkEmail);
});

onSubmit('close-form', async () => {
  await api('POST', '/close', { password: $('close-password').value });
  $('close-password').value = '';
  signedOut(STRINGS.closed);
});

$('logout').addEventListener('click', async () => {
  clear();
  try { await api('POST', '/logout'); } catch (e) { /* the session is gone either way */ }
  signedOut(STRINGS.loggedOut);
});

/** Uses a link's secret from the fragment (#verify=…, #email=…, #reset=…). */
async function followLink(kind, token) {
  setHash('');
  if (kind === 'reset') { state.resetToken = token; show('reset'); return; }
  const path = kind === 'verify' ? '/verify' : '/email/confirm';
  try {
    await api('POST', path, { token });
    signedOut(kind === 'verify' ? STRINGS.verified : STRINGS.emailChanged);
  } catch (e) {
    signedOut('');
    fail(e.message);
  }
}

async function route() {
  const hash = location.hash.slice(1);
  const m = /^(verify|reset|email)=([0-9a-f]+)$/.exec(hash);
  if (m) { clear(); await followLink(m[1], m[2]); return; }
  if (['register', 'forgot', 'login'].includes(hash)) { clear(); show(hash); return; }
  try {
    signedIn(await api('GET', '/session'));
  } catch (e) {
    show('login');
  }
}

window.addEventListener('hashchange', route);
route().finally(() => { document.body.dataset.ready = '1'; });
