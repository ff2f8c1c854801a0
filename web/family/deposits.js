// The family portal's deposits: a card deposit form, the status page of one deposit (its
// confirmation number and timeline), the family's own deposits, and where money orders go.
// Loaded after family.js, whose `state` (the CSRF token) and `$` it uses. Every click of
// the form sends the same Idempotency-Key until a deposit comes back, so a double click or
// a retry after a lost answer makes one deposit, never two.
'use strict';

const DEPOSIT_STRINGS = {
  submitted: 'submitted',
  authorized: 'authorized, waiting for the payment provider to confirm',
  posted: 'posted to the account',
  declined: 'declined',
  held: 'held',
  voided: 'voided',
  refunded: 'refunded to the card',
  made: 'Deposit made: confirmation number ',
};

const deposits = { key: '', shown: '' };

function newDepositKey() {
  deposits.key = (crypto.randomUUID && crypto.randomUUID()) ||
    `${Date.now()}-${Math.random().toString(16).slice(2)}`;
}

/** Calls /api/v1`path` with the session's CSRF token (and a key when given). */
async function depositApi(method, path, body, key) {
  const headers = {};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && state.csrf) headers['X-CSRF-Token'] = state.csrf;
  if (key) headers['Idempotency-Key'] = key;
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
  if (!resp.ok) {
    throw (data && data.error) || { code: String(resp.status), message: resp.statusText };
  }
  return data;
}

function stateText(d) { return DEPOSIT_STRINGS[d.state] || d.state; }

function showDeposit(d) {
  deposits.shown = d.id;
  $('deposit-view').hidden = false;
  $('deposit-confirmation').textContent = d.confirmation;
  $('deposit-state').textContent = stateText(d);
  $('deposit-state').className = `state-${d.state}`;
  $('deposit-reason').textContent = d.reason ? `(${d.reason})` : '';
  $('deposit-amount-shown').textContent = `$${d.amount}`;
  $('deposit-account-shown').textContent = d.account_id;
  $('deposit-last4').textContent = d.card_last4;
  const list = $('deposit-timeline');
  // Each part its own text node, so the translation (i18n.js) finds the state's words.
  list.replaceChildren(...d.timeline.map((e) => {
    const li = document.createElement('li');
    const when = new Date(e.at).toLocaleString(document.documentElement.lang || undefined);
    const what = document.createElement('span');
    what.textContent = DEPOSIT_STRINGS[e.state] || e.state;
    li.append(`${when}: `, what, e.reason ? ` (${e.reason})` : '');
    return li;
  }));
}

async function loadDeposits() {
  const list = await depositApi('GET', '/family/deposits');
  $('deposit-list').replaceChildren(...list.map((d) => {
    const li = document.createElement('li');
    const b = document.createElement('button');
    b.type = 'button';
    const what = document.createElement('span');
    what.textContent = stateText(d);
    b.append(`${d.confirmation}: $${d.amount}, `, what);
    b.addEventListener('click', () => { showDeposit(d); $('deposit-view-title').focus(); });
    li.append(b);
    return li;
  }));
  const wanted = new URLSearchParams(location.search).get('deposit');
  const found = list.find((d) => d.id === wanted || d.confirmation === wanted);
  if (found) showDeposit(found);
}

/** The accounts the form offers: the family's prepaid accounts and the accounts of the
 * inmates it is an approved contact of (any inmate's account number may still be typed). */
async function loadTargets() {
  const mine = await depositApi('GET', '/family/prepaid');
  const options = [];
  for (const a of mine.accounts) {
    const o = document.createElement('option');
    o.value = a.account.id;
    o.label = spI18n.t(`Your prepaid calling account, ${a.facility_name || a.account.facility_id}`);
    options.push(o);
  }
  for (const i of mine.linked_inmates) {
    const o = document.createElement('option');
    o.value = i.account_id;
    o.label = `${i.inmate_name} (${i.booking_number}), ${i.facility_id}`;
    options.push(o);
  }
  $('deposit-targets').replaceChildren(...options);
}

async function loadInfo() {
  const info = await depositApi('GET', '/payments/info');
  $('money-order-text').textContent = info.money_order_instructions;
  if (info.test_cards.length) {
    $('deposit-test-cards').hidden = false;
    $('deposit-test-card-list').replaceChildren(...info.test_cards.map((c) => {
      const li = document.createElement('li');
      const what = document.createElement('span');
      what.textContent = c.outcome;
      li.append(`${c.number}: `, what);
      return li;
    }));
  }
}

onSubmit('deposit-form', async () => {
  if (!deposits.key) newDepositKey();
  const d = await depositApi('POST', '/family/deposits', {
    account_id: $('deposit-account').value.trim(),
    amount: $('deposit-amount').value.trim(),
    depositor: $('deposit-name').value.trim(),
    card_number: $('deposit-card').value,
    exp_month: Number($('deposit-exp-month').value),
    exp_year: Number($('deposit-exp-year').value),
    cvc: $('deposit-cvc').value.trim(),
  }, deposits.key);
  newDepositKey(); // the next deposit is another one
  $('deposit-card').value = '';
  $('deposit-cvc').value = '';
  showDeposit(d);
  say(spI18n.t(DEPOSIT_STRINGS.made + d.confirmation));
  await loadDeposits();
});

$('deposit-refresh').addEventListener('click', async () => {
  clear();
  try {
    if (deposits.shown) showDeposit(await depositApi('GET', `/deposits/${deposits.shown}`));
    await loadDeposits();
  } catch (e) { fail(e.message || String(e)); }
});

// The deposits load whenever the account view is shown (family.js shows it on sign-in).
new MutationObserver(() => {
  if ($('account-view').hidden) return;
  Promise.all([loadDeposits(), loadInfo(), loadTargets()]).catch((e) => fail(e.message || String(e)));
}).observe($('account-view'), { attributes: true, attributeFilter: ['hidden'] });
newDepositKey();
