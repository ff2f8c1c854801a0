// The family portal's prepaid calling page: the family's prepaid accounts (one per
// facility), opening one, and each account's statement (a period, CSV, print). Every word
// shown lives in STRINGS. The session is the portal's HttpOnly cookie; the one request that
// changes something (opening an account) carries the session's CSRF token.
'use strict';

const STRINGS = {
  network: 'The portal cannot be reached. Check your connection and try again.',
  familyFirst: 'Yes',
  inmateFirst: 'After the inmate\'s account',
  statement: 'Statement',
  opened: 'Your prepaid account is open. Add money to it to pay for calls and visits.',
  deposit: 'Deposit',
  moneyOrder: 'Money order',
  refund: 'Refund',
  refundBalance: 'Refund the balance',
  refundAsk: (amount) => `Refund ${amount} to the cards that paid it? There is no fee.`,
  refunded: (amount) => `Refund of ${amount} requested.`,
  refundPart: (amount, last4) => `${amount} to the card ending ${last4}`,
  refundOwed: (amount) => `${amount} paid back by the facility`,
  callTo: (number, inmate, n) => `Call to ${number || 'an unknown number'}${inmate ? ` from ${inmate}` : ''}, minute block ${n}`,
  visitWith: (inmate, n) => `Video visit${inmate ? ` with ${inmate}` : ''}, minute block ${n}`,
};

const state = { csrf: '' };

function $(id) { return document.getElementById(id); }
function say(text) { const n = $('notice'); n.textContent = text; n.hidden = !text; }
function fail(text) { const e = $('error'); e.textContent = text; e.hidden = !text; }

async function api(method, path, body, key) {
  const headers = {};
  if (key) headers['Idempotency-Key'] = key;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && state.csrf) headers['X-CSRF-Token'] = state.csrf;
  let resp;
  try {
    resp = await fetch(`/api/v1${path}`, {
      method, headers, credentials: 'same-origin',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw { code: 'network', message: STRINGS.network };
  }
  const text = await resp.text();
  const data = text ? JSON.parse(text) : null;
  if (!resp.ok) throw (data && data.error) || { code: String(resp.status), message: resp.statusText };
  return data;
}

function cell(row, text, cls) {
  const td = document.createElement('td');
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function when(iso) { return new Date(iso).toLocaleString(); }
function dollars(amount) { return amount.startsWith('-') ? `-$${amount.slice(1)}` : `$${amount}`; }

async function showAccounts() {
  $('accounts-view').hidden = false;
  const data = await api('GET', '/family/prepaid');
  const body = $('accounts');
  body.replaceChildren();
  for (const a of data.accounts) {
    const tr = document.createElement('tr');
    cell(tr, a.facility_name || a.account.facility_id);
    cell(tr, dollars(a.account.balance), 'num balance');
    cell(tr, a.payer_order === 'inmate_first' ? STRINGS.inmateFirst : STRINGS.familyFirst);
    const link = document.createElement('a');
    link.href = `?account=${encodeURIComponent(a.account.id)}`;
    link.textContent = STRINGS.statement;
    link.setAttribute('aria-label', `${STRINGS.statement}: ${a.facility_name || a.account.facility_id}`);
    const actions = cell(tr, '');
    actions.appendChild(link);
    if (a.account.balance !== '0.00' && a.account.balance !== '0') {
      const b = document.createElement('button');
      b.type = 'button';
      b.className = 'refund';
      b.textContent = STRINGS.refundBalance;
      b.setAttribute('aria-label', `${STRINGS.refundBalance}: ${a.facility_name || a.account.facility_id}`);
      b.addEventListener('click', () => refundBalance(a.account, b));
      actions.append(' ', b);
    }
    body.appendChild(tr);
  }
  $('no-accounts').hidden = data.accounts.length > 0;
  $('accounts-table').hidden = data.accounts.length === 0;
  const have = new Set(data.accounts.map((a) => a.account.facility_id));
  const select = $('open-facility');
  select.replaceChildren();
  for (const f of data.facilities.filter((f) => !have.has(f.id))) {
    const o = document.createElement('option');
    o.value = f.id;
    o.textContent = f.name;
    select.appendChild(o);
  }
  $('open-form').hidden = select.options.length === 0;
  $('no-facilities').hidden = data.facilities.length > 0;
}

/** One key per account per page: a retried or double-clicked refund is the same one. */
const refundKeys = {};

async function refundBalance(account, button) {
  fail('');
  say('');
  if (!window.confirm(spI18n.t(STRINGS.refundAsk(dollars(account.balance))))) return;
  refundKeys[account.id] = refundKeys[account.id] || crypto.randomUUID();
  button.disabled = true;
  try {
    const r = await api('POST', `/family/prepaid/${encodeURIComponent(account.id)}/refund`, undefined, refundKeys[account.id]);
    const parts = r.parts.map((p) => (p.card_last4
      ? STRINGS.refundPart(dollars(p.amount), p.card_last4)
      : STRINGS.refundOwed(dollars(p.amount))));
    delete refundKeys[account.id];
    await showAccounts();
    say(`${STRINGS.refunded(dollars(r.total))} ${parts.join('; ')}.`);
  } catch (e) {
    fail(e.message || String(e));
    button.disabled = false;
  }
}

function dayInput(date) { return date.toISOString().slice(0, 10); }

function describe(line, sessions) {
  if (line.session_id) {
    const s = sessions[line.session_id] || {};
    return s.kind === 'visit'
      ? STRINGS.visitWith(s.inmate_name, line.increment)
      : STRINGS.callTo(s.number, s.inmate_name, line.increment);
  }
  if (line.kind === 'deposit') return STRINGS.deposit;
  if (line.kind === 'money_order') return STRINGS.moneyOrder;
  if (line.kind === 'refund') return STRINGS.refund;
  return line.memo || line.kind;
}

async function showStatement(id) {
  $('statement-view').hidden = false;
  const params = new URLSearchParams(location.search);
  const to = params.get('to') ? new Date(`${params.get('to')}T00:00:00Z`) : new Date();
  const from = params.get('from') ? new Date(`${params.get('from')}T00:00:00Z`)
    : new Date(to.getTime() - 31 * 86400000);
  $('period-from').value = dayInput(from);
  $('period-to').value = dayInput(to);
  // The end day is included: the period runs to the next midnight (UTC).
  const end = new Date(`${dayInput(to)}T00:00:00Z`).getTime() + 86400000;
  const range = `from=${encodeURIComponent(`${dayInput(from)}T00:00:00Z`)}&to=${encodeURIComponent(new Date(end).toISOString())}`;
  const st = await api('GET', `/family/prepaid/${encodeURIComponent(id)}/statement?${range}`);
  $('statement-account').textContent = st.account_id;
  $('opening').textContent = dollars(st.opening_balance);
  $('closing').textContent = dollars(st.closing_balance);
  $('csv-link').href = `/api/v1/family/prepaid/${encodeURIComponent(id)}/statement?${range}&format=csv`;
  const body = $('lines');
  body.replaceChildren();
  for (const l of st.lines) {
    const tr = document.createElement('tr');
    cell(tr, when(l.at));
    cell(tr, describe(l, st.sessions));
    cell(tr, dollars(l.amount), 'num');
    cell(tr, dollars(l.balance_after), 'num');
    body.appendChild(tr);
  }
  $('no-lines').hidden = st.lines.length > 0;
  const list = await api('GET', '/family/prepaid');
  const mine = list.accounts.find((a) => a.account.id === id);
  $('statement-facility').textContent = mine ? (mine.facility_name || mine.account.facility_id) : '';
}

$('open-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  fail('');
  const button = $('open-submit');
  button.disabled = true;
  try {
    await api('POST', '/family/prepaid', { facility_id: $('open-facility').value });
    await showAccounts();
    say(STRINGS.opened);
  } catch (e) {
    fail(e.message || String(e));
  } finally {
    button.disabled = false;
  }
});

$('period-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const params = new URLSearchParams(location.search);
  params.set('from', $('period-from').value);
  params.set('to', $('period-to').value);
  location.search = params.toString();
});

$('print').addEventListener('click', () => window.print());

async function start() {
  try {
    const session = await api('GET', '/family/session');
    state.csrf = session.csrf_token || '';
  } catch (e) {
    $('signed-out').hidden = false;
    return;
  }
  const account = new URLSearchParams(location.search).get('account');
  try {
    if (account) await showStatement(account);
    else await showAccounts();
  } catch (e) {
    fail(e.message || String(e));
  }
}

start().finally(() => { document.body.dataset.ready = '1'; });
