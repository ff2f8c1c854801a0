// The family portal's messages: the conversations with the people in custody the family
// is an approved contact of, and a form to write (with a photo, uploaded first and sent
// with the message). Uses family.js's `state`, `$`, `onSubmit`, `say` and `fail` (loaded
// first). Every word shown lives in MESSAGE_STRINGS.
'use strict';

const MESSAGE_STRINGS = {
  status: { held: 'Waiting for staff review', delivered: 'Delivered', rejected: 'Not delivered' },
  fromYou: (to) => `You to ${to}`,
  toYou: (from) => `${from} to you`,
  attorney: 'attorney: private',
  hint: (chars, price) => `Up to ${chars} characters.${Number(price) > 0 ? ` Each message costs $${price}, paid from your prepaid balance at that facility.` : ''}`,
  sent: 'Your message is sent.',
  sentHeld: 'Your message is sent. Staff review it before it is delivered.',
  photoFrom: (who) => `Photo from ${who}`,
  you: 'you',
};

const messages = { contacts: [], key: null };

function newMessageKey() {
  messages.key = (crypto.randomUUID && crypto.randomUUID()) ||
    `${Date.now()}-${Math.random().toString(16).slice(2)}`;
}

/** Calls /api/v1`path` with the session's CSRF token; `raw` sends a file as the body. */
async function messageApi(method, path, body, key, raw) {
  const headers = {};
  if (body !== undefined) headers['Content-Type'] = raw ? raw.type : 'application/json';
  if (method !== 'GET' && state.csrf) headers['X-CSRF-Token'] = state.csrf;
  if (key) headers['Idempotency-Key'] = key;
  let resp;
  try {
    resp = await fetch(`/api/v1${path}`, {
      method, headers, credentials: 'same-origin',
      body: body === undefined ? undefined : (raw ? raw : JSON.stringify(body)),
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

function messageItem(m) {
  const li = document.createElement('li');
  li.dataset.messageId = m.id;
  li.dataset.status = m.status;
  const mine = m.direction === 'to_inmate';
  li.className = mine ? 'sent' : 'received';
  const head = document.createElement('p');
  head.className = 'hint';
  const when = new Date(m.created_at).toLocaleString([], { dateStyle: 'medium', timeStyle: 'short' });
  head.textContent = `${mine ? MESSAGE_STRINGS.fromYou(m.inmate_name) : MESSAGE_STRINGS.toYou(m.inmate_name)}, ${when}`;
  if (mine) {
    const st = document.createElement('span');
    st.className = 'status';
    const text = MESSAGE_STRINGS.status[m.status] || m.status;
    st.textContent = ` · ${text}${m.reason ? `: ${m.reason}` : ''}`;
    head.append(st);
  }
  const body = document.createElement('p');
  body.className = 'body';
  body.textContent = m.body;
  li.append(head, body);
  for (const p of m.photos) {
    const img = document.createElement('img');
    img.src = `/api/v1/message-photos/${encodeURIComponent(p.id)}`;
    img.alt = MESSAGE_STRINGS.photoFrom(mine ? MESSAGE_STRINGS.you : m.inmate_name);
    img.width = p.width;
    img.height = p.height;
    img.className = 'photo';
    img.dataset.photoId = p.id;
    li.append(img);
  }
  return li;
}

function messageHint() {
  const c = messages.contacts.find((x) => x.id === $('message-contact').value);
  if (!c) return;
  $('message-hint').textContent = MESSAGE_STRINGS.hint(c.max_chars, c.price);
  $('message-body').maxLength = c.max_chars;
  $('message-photo').disabled = c.max_photos === 0;
}

async function loadMessages() {
  let data;
  try {
    data = await messageApi('GET', '/family/messages');
  } catch (e) {
    return;
  }
  messages.contacts = data.contacts;
  const select = $('message-contact');
  const picked = select.value;
  select.replaceChildren();
  for (const c of data.contacts) {
    const o = document.createElement('option');
    o.value = c.id;
    o.textContent = `${c.inmate_name} (${c.facility_name})${c.privileged ? `, ${MESSAGE_STRINGS.attorney}` : ''}`;
    select.append(o);
  }
  if (picked) select.value = picked;
  messageHint();
  $('message-form').hidden = data.contacts.length === 0;
  $('messages-none').hidden = data.contacts.length > 0;
  const list = $('messages-list');
  list.replaceChildren(...data.messages.map(messageItem));
}

$('message-contact').addEventListener('change', messageHint);
$('messages-refresh').addEventListener('click', loadMessages);

onSubmit('message-form', async () => {
  $('message-status').textContent = '';
  if (!messages.key) newMessageKey();
  const contact = $('message-contact').value;
  const photos = [];
  const file = $('message-photo').files[0];
  if (file) {
    const p = await messageApi('POST', `/family/messages/photos?contact_id=${encodeURIComponent(contact)}`, file, null, file);
    photos.push(p.id);
  }
  let sent;
  try {
    sent = await messageApi('POST', '/family/messages', { contact_id: contact, body: $('message-body').value, photos }, messages.key);
  } catch (e) {
    // A refusal is final for this text: the corrected message is a new one.
    if (e.code !== 'network') messages.key = null;
    throw e;
  }
  messages.key = null;
  $('message-body').value = '';
  $('message-photo').value = '';
  $('message-status').textContent = sent.status === 'held' ? MESSAGE_STRINGS.sentHeld : MESSAGE_STRINGS.sent;
  await loadMessages();
});

document.addEventListener('family:signed-in', loadMessages);
