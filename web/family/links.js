// The family portal's linking part: find a person in custody, ask to be a contact for one
// of the family's numbers, have the gateway call that number and key the code shown here,
// follow each request's status, withdraw one. Uses family.js's `api`, `state`, `$`,
// `onSubmit`, `say` and `fail` (loaded first). Every word shown lives in LINK_STRINGS.
'use strict';

const LINK_STRINGS = {
  noneFound: 'Nobody in custody there matches. Check the spelling, or search by booking number.',
  more: 'More people match than are shown: add a first name or search by booking number.',
  choose: 'Choose',
  booking: 'booking number',
  requestFor: (who) => `Asking to be a contact of ${who}.`,
  requested: 'Your request is saved. Now confirm your number: choose "Call me" below.',
  callMe: 'Call me to confirm this number',
  withdraw: 'Withdraw',
  withdrawn: 'The request is withdrawn.',
  code: (number) => `We are calling ${number} now. When asked, enter this code on that phone, then the pound key (#):`,
  codeUntil: (t) => `The code works until ${t}.`,
  video: 'with video visits',
  noRequests: 'You have no requests yet.',
  reason: (r) => `Reason: ${r}`,
  status: {
    pending_verification: 'Waiting for you to confirm the number',
    verification_failed: 'Not confirmed (too many wrong codes): make a new request',
    pending_approval: 'Number confirmed; waiting for staff to approve',
    approved: 'Approved',
    denied: 'Denied',
    withdrawn: 'Withdrawn',
  },
};

const links = { chosen: null, poll: null };

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

async function loadFacilities() {
  const select = $('search-facility');
  if (select.options.length) return;
  const data = await api('GET', '/facilities');
  for (const f of data.facilities) {
    const o = el('option', `${f.name} (${f.id})`);
    o.value = f.id;
    select.appendChild(o);
  }
}

function showResults(data) {
  const box = $('search-results');
  box.textContent = '';
  if (!data.inmates.length) { box.appendChild(el('p', LINK_STRINGS.noneFound)); return; }
  const list = el('ul', undefined, 'results');
  for (const i of data.inmates) {
    const li = el('li');
    const who = `${i.first_name} ${i.last_name}`;
    li.appendChild(el('span', `${who}, ${LINK_STRINGS.booking} ${i.booking_number}, ${i.facility_name} `));
    const b = el('button', LINK_STRINGS.choose);
    b.type = 'button';
    b.setAttribute('aria-label', `${LINK_STRINGS.choose} ${who} (${i.booking_number})`);
    b.addEventListener('click', () => {
      links.chosen = i;
      $('request-who').textContent = LINK_STRINGS.requestFor(`${who} (${i.booking_number})`);
      $('request-form').hidden = false;
      $('request-name').focus();
    });
    li.appendChild(b);
    list.appendChild(li);
  }
  box.appendChild(list);
  if (data.more) box.appendChild(el('p', LINK_STRINGS.more, 'hint'));
}

function showRequests(data) {
  const list = $('requests-list');
  list.textContent = '';
  list.className = 'requests';
  if (!data.links.length) { list.appendChild(el('li', LINK_STRINGS.noRequests)); return; }
  for (const l of data.links) {
    const li = el('li');
    li.dataset.id = l.id;
    li.dataset.status = l.status;
    const what = `${l.inmate_name} (${l.booking_number}) — ${l.number}` + (l.video ? `, ${LINK_STRINGS.video}` : '');
    li.appendChild(el('div', what));
    li.appendChild(el('strong', LINK_STRINGS.status[l.status] || l.status, 'link-status'));
    if (l.reason) li.appendChild(el('div', LINK_STRINGS.reason(l.reason)));
    const actions = el('div');
    if (l.status === 'pending_verification') {
      const call = el('button', LINK_STRINGS.callMe);
      call.type = 'button';
      call.className = 'call-me';
      call.addEventListener('click', () => callMe(l, call));
      actions.appendChild(call);
    }
    if (['pending_verification', 'pending_approval', 'approved'].includes(l.status)) {
      const w = el('button', LINK_STRINGS.withdraw, 'danger');
      w.type = 'button';
      w.addEventListener('click', () => withdraw(l, w));
      actions.appendChild(w);
    }
    li.appendChild(actions);
    list.appendChild(li);
  }
}

async function refreshRequests() {
  showRequests(await api('GET', '/links'));
}

async function act(button, action) {
  clear();
  button.disabled = true;
  try { await action(); } catch (e) { fail(e.message || String(e)); } finally { button.disabled = false; }
}

function callMe(l, button) {
  return act(button, async () => {
    const r = await api('POST', `/links/${encodeURIComponent(l.id)}/call`);
    const box = $('code-box');
    box.textContent = '';
    box.appendChild(el('span', LINK_STRINGS.code(r.link.number) + ' '));
    const code = el('strong', r.code);
    code.id = 'link-code';
    box.appendChild(code);
    box.appendChild(el('span', ' ' + LINK_STRINGS.codeUntil(new Date(r.expires_at).toLocaleTimeString())));
    box.hidden = false;
    await refreshRequests();
    // Follow the call: the status changes once the code is keyed.
    clearInterval(links.poll);
    let left = 60;
    links.poll = setInterval(async () => {
      left -= 1;
      try {
        const data = await api('GET', '/links');
        const now = data.links.find((x) => x.id === l.id);
        showRequests(data);
        if (!now || now.status !== 'pending_verification' || now.wrong_codes !== r.link.wrong_codes || left <= 0) {
          clearInterval(links.poll);
          box.hidden = true;
        }
      } catch (e) { clearInterval(links.poll); }
    }, 2000);
  });
}

function withdraw(l, button) {
  return act(button, async () => {
    await api('POST', `/links/${encodeURIComponent(l.id)}/withdraw`);
    say(LINK_STRINGS.withdrawn);
    await refreshRequests();
  });
}

onSubmit('search-form', async () => {
  const q = new URLSearchParams({ facility: $('search-facility').value });
  for (const [key, id] of [['last_name', 'search-last'], ['first_name', 'search-first'], ['booking_number', 'search-booking']]) {
    if ($(id).value.trim()) q.set(key, $(id).value.trim());
  }
  showResults(await api('GET', `/roster?${q}`));
});

onSubmit('request-form', async () => {
  if (!links.chosen) return;
  await api('POST', '/links', {
    inmate_id: links.chosen.inmate_id,
    number: $('request-number').value,
    name: $('request-name').value,
    relationship: $('request-relationship').value,
    video: $('request-video').checked,
  });
  $('request-form').hidden = true;
  $('search-results').textContent = '';
  links.chosen = null;
  say(LINK_STRINGS.requested);
  await refreshRequests();
  $('requests-title').tabIndex = -1;
  $('requests-title').focus();
});

document.addEventListener('family:signed-in', async () => {
  try {
    await loadFacilities();
    await refreshRequests();
  } catch (e) {
    fail(e.message || String(e));
  }
});
