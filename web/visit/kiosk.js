// sallyport inmate kiosk: a visit station's page. Staff set it up once with the station's
// id and kiosk token (kept in this device's localStorage). Between visits it lists the
// station's visits for today; the inmate picks theirs, confirms with their calling ID and
// PIN (the same keys, hashes and lockouts as the phones) and joins. "My account" asks the
// same two numbers and shows the inmate's balance, pending deposits, visits ahead and
// history, in a sitting the page forgets on "Done" or after a minute without use;
// "Messages" does the same for the inmate's messages: read them, write to a contact.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const KEY = "sallyport.kiosk";
  const REFRESH_MS = 30000;
  const AFTER_END_MS = 20000;
  let kiosk = null;
  let chosen = null;
  let timer = null;
  // "visit": the PIN joins the chosen visit; "account": it opens the inmate's account;
  // "messages": the inmate's messages.
  let mode = "visit";
  // The inmate's sitting (POST /kiosk/sittings), only while the account is on screen.
  let sitting = null;
  let idle = null;
  const IDLE_MS = 60000;
  const KINDS = {
    deposit: "Deposit", money_order: "Money order", call_charge: "Call",
    visit_charge: "Video visit", purchase: "Purchase", refund: "Refund", release: "Release refund",
    message_charge: "Message",
  };

  function load() {
    try { return JSON.parse(localStorage.getItem(KEY) || "null"); } catch { return null; }
  }

  function fail(text) {
    $("error").textContent = text;
    $("error").hidden = !text;
  }

  function show(view) {
    for (const id of ["setup-view", "today-view", "pin-view", "account-view", "messages-view", "room-view"]) {
      $(id).hidden = id !== view;
    }
  }

  async function api(method, path, body, key) {
    const r = await fetch(`/api/v1${path}`, {
      method,
      headers: Object.assign(
        { Authorization: `Bearer ${kiosk.token}`, "Content-Type": "application/json" },
        sitting ? { "X-Kiosk-Sitting": sitting } : {},
        key ? { "Idempotency-Key": key } : {},
      ),
      body: body ? JSON.stringify(body) : undefined,
    });
    const data = await r.json().catch(() => ({}));
    if (!r.ok) {
      const e = data.error || {};
      const err = new Error(`${e.message || r.statusText} (${e.code || r.status})`);
      err.code = e.code;
      err.status = r.status;
      throw err;
    }
    return data;
  }

  const time = (iso) => new Date(iso).toLocaleTimeString([], { timeStyle: "short" });

  // Between visits: the station's approved visits of today that have not ended, each with
  // its time and the inmate's name, and a button to confirm and join.
  async function today() {
    show("today-view");
    let data;
    try {
      data = await api("GET", `/visit-stations/${encodeURIComponent(kiosk.station)}/visits/today`);
      fail("");
    } catch (e) {
      if (e.status === 401 || e.status === 403) {
        localStorage.removeItem(KEY);
        show("setup-view");
      }
      return fail(e.message);
    }
    $("kiosk-station").textContent = (data.station && data.station.name) || kiosk.station;
    const now = Date.now();
    const visits = (data.visits || []).filter((v) => new Date(v.ends_at).getTime() > now);
    const body = $("today-body");
    body.replaceChildren();
    for (const v of visits) {
      const tr = document.createElement("tr");
      tr.dataset.visitId = v.id;
      for (const text of [`${time(v.starts_at)}–${time(v.ends_at)}`, v.inmate_name || v.inmate_id]) {
        const td = document.createElement("td");
        td.textContent = text;
        tr.append(td);
      }
      const td = document.createElement("td");
      const b = document.createElement("button");
      b.type = "button";
      b.className = "join";
      b.textContent = "This is my visit";
      b.addEventListener("click", () => pick(v));
      td.append(b);
      tr.append(td);
      body.append(tr);
    }
    $("today-empty").hidden = visits.length > 0;
  }

  function pick(v) {
    mode = "visit";
    chosen = v;
    $("pin-visit").textContent = `${time(v.starts_at)}: ${v.inmate_name || v.inmate_id}`;
    $("pin-error").hidden = true;
    $("pin-form").reset();
    show("pin-view");
    $("pin-id").focus();
  }

  function myMessages() {
    mode = "messages";
    chosen = null;
    $("pin-visit").textContent = "Read and write messages.";
    $("pin-error").hidden = true;
    $("pin-form").reset();
    show("pin-view");
    $("pin-id").focus();
  }

  const STATUS = {
    held: "Waiting for staff review",
    delivered: "Delivered",
    rejected: "Not delivered",
  };
  // The key of the message being written: the same until it is sent, so a second press
  // of "Send" before the answer sends it once.
  let composeKey = null;
  // Object URLs of the photos on screen, released when the list is redrawn or closed.
  let photoUrls = [];

  function releasePhotos() {
    for (const u of photoUrls) URL.revokeObjectURL(u);
    photoUrls = [];
  }

  // A photo is fetched with the kiosk's token and sitting (an <img> cannot send them) and
  // shown from a blob.
  async function loadPhoto(img, id) {
    const r = await fetch(`/api/v1/message-photos/${encodeURIComponent(id)}`, {
      headers: { Authorization: `Bearer ${kiosk.token}`, "X-Kiosk-Sitting": sitting },
    });
    if (!r.ok) return;
    const url = URL.createObjectURL(await r.blob());
    photoUrls.push(url);
    img.src = url;
  }

  async function showMessages() {
    const m = await api("GET", "/kiosk/messages");
    $("messages-name").textContent = m.inmate.name;
    const select = $("compose-contact");
    const picked = select.value;
    select.replaceChildren();
    for (const c of m.contacts) {
      const o = document.createElement("option");
      o.value = c.id;
      o.textContent = c.privileged ? `${c.name} (attorney: private)` : c.name;
      select.append(o);
    }
    if (picked) select.value = picked;
    $("compose-body").maxLength = m.max_chars;
    const price = Number(m.price) > 0 ? ` Each message costs $${m.price}.` : "";
    $("compose-hint").textContent = `Up to ${m.max_chars} characters.${price}`;
    releasePhotos();
    const list = $("messages-list");
    list.replaceChildren();
    for (const msg of m.messages) {
      const li = document.createElement("li");
      li.dataset.messageId = msg.id;
      li.dataset.status = msg.status;
      li.className = msg.direction === "from_inmate" ? "sent" : "received";
      const head = document.createElement("p");
      head.className = "muted";
      const who = msg.direction === "from_inmate" ? `You to ${msg.contact_name}` : `${msg.contact_name} to you`;
      head.textContent = `${who}, ${when(msg.created_at)}`;
      if (msg.direction === "from_inmate") {
        const st = document.createElement("span");
        st.className = "status";
        st.textContent = ` · ${STATUS[msg.status] || msg.status}${msg.reason ? `: ${msg.reason}` : ""}`;
        head.append(st);
      }
      const body = document.createElement("p");
      body.className = "body";
      body.textContent = msg.body;
      li.append(head, body);
      for (const p of msg.photos) {
        const img = document.createElement("img");
        img.alt = `Photo from ${msg.direction === "from_inmate" ? "you" : msg.contact_name}`;
        img.width = p.width;
        img.height = p.height;
        img.className = "photo";
        img.dataset.photoId = p.id;
        li.append(img);
        loadPhoto(img, p.id);
      }
      list.append(li);
    }
    $("messages-empty").hidden = m.messages.length > 0;
    show("messages-view");
    touch();
  }

  async function sendMessage(ev) {
    ev.preventDefault();
    touch();
    $("compose-error").hidden = true;
    if (!composeKey) composeKey = (crypto.randomUUID && crypto.randomUUID()) || `${Date.now()}-${Math.random()}`;
    $("compose-send").disabled = true;
    try {
      const sent = await api("POST", "/kiosk/messages", {
        contact_id: $("compose-contact").value,
        body: $("compose-body").value,
      }, composeKey);
      composeKey = null;
      $("compose-body").value = "";
      $("compose-status").textContent = sent.status === "held" ? "Sent: it waits for staff review." : "Sent.";
      await showMessages();
    } catch (e) {
      if (e.status === 401) return done();
      $("compose-error").textContent = e.message;
      $("compose-error").hidden = false;
      // A refusal is final for this text: a corrected text is a new message.
      if (e.status && e.status < 500) composeKey = null;
    } finally {
      $("compose-send").disabled = false;
    }
  }

  function myAccount() {
    mode = "account";
    chosen = null;
    $("pin-visit").textContent = "See your balance and history.";
    $("pin-error").hidden = true;
    $("pin-form").reset();
    show("pin-view");
    $("pin-id").focus();
  }

  const money = (v) => `$${v}`;
  const when = (iso) => new Date(iso).toLocaleString([], { dateStyle: "medium", timeStyle: "short" });

  function cells(tr, texts, numeric) {
    texts.forEach((text, i) => {
      const td = document.createElement("td");
      td.textContent = text;
      if (numeric && numeric.includes(i)) td.className = "num";
      tr.append(td);
    });
  }

  async function showAccount() {
    const a = await api("GET", "/kiosk/sitting");
    $("account-name").textContent = `${a.inmate.first_name} ${a.inmate.last_name} (${a.inmate.booking_number})`;
    $("account-balance").textContent = money(a.account.balance);
    const pending = $("account-pending");
    pending.replaceChildren();
    for (const d of a.pending_deposits) {
      const li = document.createElement("li");
      li.textContent = `${money(d.amount)} by ${d.method.replace("_", " ")}, ${when(d.created_at)}`;
      pending.append(li);
    }
    $("account-pending-empty").hidden = a.pending_deposits.length > 0;
    const visits = $("account-visits-body");
    visits.replaceChildren();
    for (const v of a.visits) {
      const tr = document.createElement("tr");
      cells(tr, [when(v.starts_at), v.visitor_name, v.station_name]);
      visits.append(tr);
    }
    $("account-visits-empty").hidden = a.visits.length > 0;
    const history = $("account-history-body");
    history.replaceChildren();
    // Newest first.
    for (const l of [...a.statement.lines].reverse()) {
      const tr = document.createElement("tr");
      tr.dataset.transactionId = l.transaction_id;
      cells(tr, [when(l.at), KINDS[l.kind] || l.kind, money(l.amount), money(l.balance_after)], [2, 3]);
      history.append(tr);
    }
    $("account-history-empty").hidden = a.statement.lines.length > 0;
    // Calls and visits a family's prepaid account paid for: not on this account's lines.
    const family = $("account-family-body");
    family.replaceChildren();
    for (const p of [...a.paid_by_others].reverse()) {
      const tr = document.createElement("tr");
      const what = p.kind === "visit" ? "Video visit" : `Call to ${p.number || "a number"}`;
      cells(tr, [when(p.started_at), what, money(p.amount)], [2]);
      family.append(tr);
    }
    $("account-family-empty").hidden = a.paid_by_others.length > 0;
    show("account-view");
    $("account-done").focus();
    touch();
  }

  // Any use of the account view keeps it open; a minute without closes it.
  function touch() {
    clearTimeout(idle);
    idle = setTimeout(done, IDLE_MS);
  }

  function done() {
    clearTimeout(idle);
    sitting = null;
    mode = "visit";
    composeKey = null;
    releasePhotos();
    $("compose-body").value = "";
    $("compose-status").textContent = "";
    $("compose-error").hidden = true;
    for (const id of ["account-pending", "account-visits-body", "account-history-body", "account-family-body", "messages-list", "compose-contact"]) $(id).replaceChildren();
    $("messages-name").textContent = "";
    $("account-name").textContent = "";
    $("account-balance").textContent = "";
    watchDay();
  }

  async function confirm(ev) {
    ev.preventDefault();
    if (mode === "account" || mode === "messages") {
      try {
        const r = await api("POST", "/kiosk/sittings", {
          calling_id: $("pin-id").value,
          pin: $("pin-pin").value,
        });
        $("pin-form").reset();
        clearInterval(timer);
        sitting = r.sitting;
        if (mode === "messages") await showMessages();
        else await showAccount();
      } catch (e) {
        sitting = null;
        $("pin-pin").value = "";
        $("pin-error").textContent = e.message;
        $("pin-error").hidden = false;
      }
      return;
    }
    try {
      const r = await api("POST", `/visits/${encodeURIComponent(chosen.id)}/kiosk-join`, {
        calling_id: $("pin-id").value,
        pin: $("pin-pin").value,
      });
      $("pin-form").reset();
      clearInterval(timer);
      show("room-view");
      const room = new VisitRoom(roomElements(), r.secret);
      // The page's room, for diagnostics (the browser tests read its peer's getStats()).
      window.visitRoom = room;
      $("room-leave").onclick = () => room.leave();
      // The ended visit stays on screen a while, then the kiosk starts afresh with the
      // day's list (a reload: nothing of the visit stays in the page).
      room.afterEnd = () => setTimeout(() => location.reload(), AFTER_END_MS);
      room.join();
    } catch (e) {
      $("pin-pin").value = "";
      $("pin-error").textContent = e.message;
      $("pin-error").hidden = false;
    }
  }

  function clock() {
    $("kiosk-clock").textContent = new Date().toLocaleTimeString([], { timeStyle: "short" });
  }

  function start() {
    document.body.dataset.ready = "1";
    clock();
    setInterval(clock, 10000);
    $("setup-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      kiosk = { station: $("setup-station").value.trim(), token: $("setup-token").value.trim() };
      localStorage.setItem(KEY, JSON.stringify(kiosk));
      watchDay();
    });
    $("pin-form").addEventListener("submit", confirm);
    $("account-start").addEventListener("click", myAccount);
    $("account-done").addEventListener("click", done);
    for (const ev of ["click", "keydown", "scroll"]) $("account-view").addEventListener(ev, touch);
    $("messages-start").addEventListener("click", myMessages);
    $("messages-done").addEventListener("click", done);
    $("compose-form").addEventListener("submit", sendMessage);
    for (const ev of ["click", "keydown", "scroll", "input"]) $("messages-view").addEventListener(ev, touch);
    $("pin-cancel").addEventListener("click", () => today());
    kiosk = load();
    if (!kiosk) return show("setup-view");
    watchDay();
  }

  // Shows today's list and refreshes it while it is on screen.
  function watchDay() {
    clearInterval(timer);
    today();
    timer = setInterval(() => { if (!$("today-view").hidden) today(); }, REFRESH_MS);
  }

  start();
})();
