// sallyport inmate kiosk: a visit station's page. Staff set it up once with the station's
// id and kiosk token (kept in this device's localStorage). Between visits it lists the
// station's visits for today; the inmate picks theirs, confirms with their calling ID and
// PIN (the same keys, hashes and lockouts as the phones) and joins.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const KEY = "sallyport.kiosk";
  const REFRESH_MS = 30000;
  const AFTER_END_MS = 20000;
  let kiosk = null;
  let chosen = null;
  let timer = null;

  function load() {
    try { return JSON.parse(localStorage.getItem(KEY) || "null"); } catch { return null; }
  }

  function fail(text) {
    $("error").textContent = text;
    $("error").hidden = !text;
  }

  function show(view) {
    for (const id of ["setup-view", "today-view", "pin-view", "room-view"]) $(id).hidden = id !== view;
  }

  async function api(method, path, body) {
    const r = await fetch(`/api/v1${path}`, {
      method,
      headers: { Authorization: `Bearer ${kiosk.token}`, "Content-Type": "application/json" },
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
    chosen = v;
    $("pin-visit").textContent = `${time(v.starts_at)}: ${v.inmate_name || v.inmate_id}`;
    $("pin-error").hidden = true;
    $("pin-form").reset();
    show("pin-view");
    $("pin-id").focus();
  }

  async function confirm(ev) {
    ev.preventDefault();
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
