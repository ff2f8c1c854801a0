// sallyport console: the views (login, search, session: a call's or a recorded visit's, live
// calls and visits) and hash routing:
// #/search, #/session/<id>, #/live.
"use strict";

const PAGE = 20;
// The CDR end reasons (`EndReason::ALL` in src/session/mod.rs; a test checks they match).
const END_REASONS = [
  "caller_hangup", "callee_hangup", "funds_exhausted", "max_duration", "media_timeout", "debit_timeout",
  "declined", "no_answer", "busy", "trunk_error", "pin_failed", "inmate_inactive",
  "invalid_number", "not_approved", "blocked", "outside_hours", "call_limit",
  "insufficient_funds", "terminated", "released", "slot_ended", "no_show", "inmate_left",
  "visitor_left", "system",
];
const VIEWS = ["login-view", "search-view", "session-view", "live-view"];

const $ = (id) => document.getElementById(id);
const state = { query: null, offset: 0, listener: null, statsTimer: null, watcher: null, watchTimer: null,
  replay: null, selected: new Set(), evidenceId: null };

// ---- small helpers --------------------------------------------------------------------

function el(tag, text, attrs) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

function row(cells) {
  const tr = el("tr");
  for (const c of cells) {
    const td = el("td");
    if (c instanceof Node) td.appendChild(c); else td.textContent = c === null || c === undefined ? "" : String(c);
    tr.appendChild(td);
  }
  return tr;
}

function when(t) {
  return t ? new Date(t).toLocaleString() : "";
}

function showError(e) {
  const box = $("error");
  if (!e) {
    box.hidden = true;
    box.textContent = "";
    return;
  }
  box.textContent = e.code ? e.message + " (" + e.code + ")" : String(e.message || e);
  box.hidden = false;
}

// Runs an action; an API error is shown, an expired session goes back to the login.
async function guarded(fn) {
  showError(null);
  try {
    return await fn();
  } catch (e) {
    if (e instanceof ApiError && e.status === 401 && Api.token()) {
      Api.forget();
      route();
    }
    showError(e);
    return undefined;
  }
}

function show(view) {
  for (const v of VIEWS) $(v).hidden = v !== view;
  const user = Api.user();
  $("nav").hidden = view === "login-view";
  $("whoami").textContent = user ? user.username + " (" + user.role + ")" : "";
}

// ---- login ----------------------------------------------------------------------------

async function onLogin(ev) {
  ev.preventDefault();
  const box = $("login-error");
  box.hidden = true;
  try {
    await Api.login($("login-username").value, $("login-password").value);
    $("login-password").value = "";
    location.hash = "#/search";
    await route();
  } catch (e) {
    box.textContent = e.code ? e.message + " (" + e.code + ")" : String(e.message || e);
    box.hidden = false;
  }
}

async function onLogout() {
  await stopListening();
  await stopWatching();
  await Api.logout().catch(() => {});
  state.query = null;
  $("results-body").replaceChildren();
  clearSelection();
  state.evidenceId = null;
  $("evidence-result").hidden = true;
  location.hash = "";
  route();
}

// ---- search ---------------------------------------------------------------------------

// The facility list is the signed-in user's: loaded once per token (a later sign-in as
// someone else must not keep the previous user's list), and only once even when two views
// ask at the same time.
let facilitiesFor = null;

async function loadFacilities() {
  const token = Api.token();
  if (facilitiesFor === token) return;
  facilitiesFor = token;
  let list;
  try {
    list = await Api.get("/facilities");
  } catch (e) {
    facilitiesFor = null; // try again next time
    throw e;
  }
  const sel = $("search-facility");
  while (sel.options.length > 1) sel.remove(1);
  for (const f of list || []) sel.appendChild(el("option", f.id + " — " + f.name, { value: f.id }));
}

// A date field (local calendar day) as an instant: the day's start, or the next day's
// start for the end of a range.
function dayStart(value, next) {
  if (!value) return "";
  const d = new Date(value + "T00:00:00");
  if (next) d.setDate(d.getDate() + 1);
  return d.toISOString();
}

function readQuery() {
  const q = new URLSearchParams();
  const add = (k, v) => { if (v && v.trim()) q.set(k, v.trim()); };
  add("inmate_id", $("search-inmate").value);
  add("booking_number", $("search-booking").value);
  add("number", $("search-number").value);
  add("facility_id", $("search-facility").value);
  add("from", dayStart($("search-from").value, false));
  add("to", dayStart($("search-to").value, true));
  add("end_reason", $("search-reason").value);
  add("kind", $("search-kind").value);
  return q;
}

async function search(offset) {
  const q = new URLSearchParams(state.query);
  q.set("limit", String(PAGE));
  q.set("offset", String(offset));
  const page = await Api.get("/calls?" + q.toString());
  state.offset = offset;
  renderResults(page);
}

function renderResults(page) {
  const items = Array.isArray(page) ? page : (page && page.items) || [];
  const total = Array.isArray(page) ? items.length : page.total || 0;
  const body = $("results-body");
  body.replaceChildren();
  for (const c of items) {
    const link = el("a", c.id, { href: "#/session/" + encodeURIComponent(c.id), class: "session-link" });
    const tr = row([selectBox(c), link, c.kind || "call", c.facility_id, c.inmate_id, c.number, when(c.invite_at), c.state,
      c.end_reason, c.amount, c.recorded ? "yes" : "no"]);
    tr.dataset.sessionId = c.id;
    tr.dataset.kind = c.kind || "call";
    body.appendChild(tr);
  }
  $("results-total").textContent = String(total);
  $("results-empty").hidden = items.length > 0;
  const first = items.length ? state.offset + 1 : 0;
  $("page-info").textContent = first + "–" + (state.offset + items.length) + " of " + total;
  $("page-prev").disabled = state.offset === 0;
  $("page-next").disabled = state.offset + items.length >= total;
}

// ---- evidence packages ----------------------------------------------------------------

// The tick box of one result: a privileged session is never packaged, a live one not yet.
function selectBox(c) {
  const box = el("input", null, { type: "checkbox", class: "evidence-select", "aria-label": "Select session " + c.id });
  box.dataset.sessionId = c.id;
  box.checked = state.selected.has(c.id);
  if (c.privileged || c.state === "active") {
    box.disabled = true;
    box.title = c.privileged ? "privileged: never recorded nor packaged" : "in progress: package it once it has ended";
  }
  box.addEventListener("change", () => {
    if (box.checked) state.selected.add(c.id); else state.selected.delete(c.id);
    renderSelection();
  });
  return box;
}

function renderSelection() {
  const ids = [...state.selected];
  $("evidence-count").textContent = String(ids.length);
  $("evidence-selected").textContent = ids.join(", ");
  $("evidence-build").disabled = ids.length === 0;
}

function clearSelection() {
  state.selected.clear();
  for (const b of document.querySelectorAll(".evidence-select")) b.checked = false;
  renderSelection();
}

async function buildPackage(ev) {
  ev.preventDefault();
  const ids = [...state.selected];
  if (!ids.length) return;
  const reason = $("evidence-reason").value.trim();
  $("evidence-build").disabled = true;
  try {
    const p = await Api.post("/evidence-packages", { session_ids: ids, reason });
    state.evidenceId = p.id;
    $("evidence-id").textContent = p.id;
    $("evidence-bytes").textContent = String(p.bytes);
    $("evidence-sha256").textContent = p.sha256;
    const verdict = $("evidence-verdict");
    verdict.textContent = p.intact ? "verified intact" : "does NOT verify: " + (p.failed_checks || []).join("; ");
    verdict.dataset.status = p.intact ? "ok" : "failed";
    $("evidence-result").hidden = false;
    $("evidence-download").focus();
  } finally {
    renderSelection();
  }
}

// Fetched with the bearer token (audited as evidence_package.download), saved as a file.
async function downloadPackage() {
  if (!state.evidenceId) return;
  const got = await Api.download("/evidence-packages/" + encodeURIComponent(state.evidenceId));
  const url = URL.createObjectURL(got.blob);
  const a = el("a", null, { href: url, download: got.name });
  a.hidden = true;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

function onSearch(ev) {
  ev.preventDefault();
  state.query = readQuery().toString();
  guarded(() => search(0));
}

// ---- one session ----------------------------------------------------------------------

// The CDR's fields (src/store/calls.rs `Cdr`; times as in src/sessions.rs).
const CDR_FIELDS = [
  ["id", "Session"], ["kind", "Kind"], ["visit_id", "Visit"], ["facility_id", "Facility"], ["inmate_id", "Inmate"],
  ["number", "Number (E.164)"], ["dialed", "Dialed digits"], ["contact_id", "Contact"],
  ["state", "State"], ["end_reason", "End reason"],
  ["invite_at", "Invite"], ["answer_at", "Answered"], ["accepted_at", "Accepted"],
  ["billed_until", "Billed until"], ["media_end_at", "Parties disconnected"],
  ["end_at", "Ended"], ["closed_at", "Record closed"],
  ["billed_increments", "Billed increments"], ["amount", "Amount"], ["tariff", "Tariff"],
  ["paused_ms", "Billing paused (ms)"],
  ["privileged", "Privileged"], ["recorded", "Recorded"], ["recording_id", "Recording"],
  ["node_id", "Node"],
];

// "plan p1 (deck d1, prefix 1555): local audio, 0.05/min in 6 s increments of 0.005"
function tariffText(t) {
  if (!t) return "";
  return "plan " + (t.rate_plan_id || "?") + " (deck " + (t.rate_deck_id || "?") +
    ", prefix " + (t.prefix || "?") + "): " + t.class + " " + t.service + ", " +
    t.per_minute + "/min in " + t.increment_secs + " s increments of " + t.cost_per_increment;
}

function renderCdr(c) {
  const dl = $("cdr");
  dl.replaceChildren();
  for (const [k, label] of CDR_FIELDS) {
    const v = c[k];
    const text = k === "tariff" ? tariffText(v)
      : (k.endsWith("_at") || k === "billed_until") ? when(v)
      : (v === null || v === undefined ? "" : String(v));
    dl.appendChild(el("dt", label));
    dl.appendChild(el("dd", text, { id: "cdr-" + k.replace(/_/g, "-") }));
  }
}

function renderCharges(charges) {
  const body = $("charges-body");
  body.replaceChildren();
  for (const d of charges || []) {
    body.appendChild(row([d.increment, when(d.at || d.created_at || d.posted_at), d.amount]));
  }
  $("charges-empty").hidden = (charges || []).length > 0;
}

async function openSession(id) {
  show("session-view");
  stopReplay();
  $("session-id").textContent = id;
  for (const x of ["cdr", "charges-body", "visit-details", "timeline-body"]) $(x).replaceChildren();
  $("recording").hidden = true;
  $("recording-none").hidden = true;
  $("recording-none").textContent = "No recording.";
  $("visit").hidden = true;
  $("replay").hidden = true;
  $("replay-refused").hidden = true;
  const c = await Api.get("/calls/" + encodeURIComponent(id));
  const visit = c.kind === "visit";
  $("cdr-title").textContent = visit ? "Visit session record" : "Call record";
  $("recording-title").textContent = visit ? "Recordings (both sides, played together)" : "Recording";
  renderCdr(c);
  renderCharges(c.charges);
  if (visit) return openVisit(c);
  const recId = (c.recording && c.recording.id) || c.recording_id;
  if (c.recording && c.recording.status === "purged") {
    $("recording-none").textContent = "The recording was purged (retention period over).";
  }
  if (!recId || (c.recording && c.recording.status === "purged")) {
    $("recording-none").hidden = false;
    return;
  }
  await openRecording(recId);
}

// ---- a recorded video visit -----------------------------------------------------------

const VISIT_FIELDS = [
  ["id", "Visit"], ["inmate_name", "Inmate"], ["visitor_name", "Visitor (contact)"],
  ["contact_id", "Contact"], ["station_name", "Station"], ["starts_at", "Slot starts"],
  ["ends_at", "Slot ends"], ["length_minutes", "Length (minutes)"], ["status", "Booking status"],
  ["privileged", "Privileged"], ["requested_by", "Booked by"],
];

function renderVisit(v) {
  const dl = $("visit-details");
  dl.replaceChildren();
  for (const [k, label] of VISIT_FIELDS) {
    const x = v ? v[k] : null;
    const text = k.endsWith("_at") ? when(x) : (x === null || x === undefined ? "" : String(x));
    dl.appendChild(el("dt", label));
    dl.appendChild(el("dd", text, { id: "visit-" + k.replace(/_/g, "-") }));
  }
}

// The timeline; `origin` (ms, or null) is the replay's time 0: each event gets its visit
// time (signed: a join comes before the recordings start) and, within the recordings (a
// second of slack either side), a button that moves the replay there.
function renderTimeline(events, origin, duration) {
  const body = $("timeline-body");
  body.replaceChildren();
  for (const e of events || []) {
    const at = Date.parse(e.at);
    let offset = "";
    if (origin !== null) {
      const t = (at - origin) / 1000;
      const text = (t < 0 ? "-" : "") + clockText(Math.abs(t));
      if (t >= -1 && t <= duration + 1) {
        const to = Math.max(0, Math.min(t, duration));
        offset = el("button", text, { type: "button", class: "timeline-seek",
          "aria-label": "Play from " + text + " (" + e.kind + (e.side ? " " + e.side : "") + ")" });
        offset.addEventListener("click", () => guarded(() => seekReplay(to)));
      } else {
        offset = text;
      }
    }
    const tr = row([when(e.at), offset, e.kind, e.side || ""]);
    tr.dataset.event = e.kind;
    body.appendChild(tr);
  }
  $("timeline-empty").hidden = (events || []).length > 0;
}

async function openVisit(c) {
  $("visit").hidden = false;
  renderVisit(c.visit);
  renderTimeline(c.timeline, null, 0);
  const name = { visitor: (c.visit && c.visit.visitor_name) || "", inmate: (c.visit && c.visit.inmate_name) || "" };
  // The recordings are asked for on their own: a privileged visit is refused (403, audited).
  let recordings;
  try {
    recordings = await Api.get("/calls/" + encodeURIComponent(c.id) + "/recordings");
  } catch (e) {
    if (e instanceof ApiError && e.code === "privileged") {
      const box = $("replay-refused");
      box.textContent = "Privileged visit: never recorded or watched (" + e.code + ").";
      box.hidden = false;
      return;
    }
    throw e;
  }
  const playable = (recordings || []).filter((r) => r.status !== "purged" && r.participant !== "both");
  if (!playable.length) {
    const purged = (recordings || []).some((r) => r.status === "purged");
    $("recording-none").textContent = purged ? "The recordings were purged (retention period over)." : "No recording.";
    $("recording-none").hidden = false;
    return;
  }
  const sides = [];
  for (const side of ["visitor", "inmate"]) {
    const rec = playable.find((r) => r.participant === side);
    const video = $("replay-video-" + side);
    video.closest("figure").hidden = !rec;
    $("replay-caption-" + side).textContent = (side === "visitor" ? "Visitor" : "Inmate") +
      (name[side] ? ": " + name[side] : "") + (rec ? "" : " (no recording)");
    if (!rec) continue;
    const play = await Api.post("/recordings/" + encodeURIComponent(rec.id) + "/play");
    video.dataset.recordingId = rec.id;
    video.src = play.url;
    $("replay-sha256-" + side).textContent = play.sha256 || rec.sha256 || "";
    const link = $("replay-download-" + side);
    link.dataset.recordingId = rec.id;
    link.href = "/api/v1/recordings/" + encodeURIComponent(rec.id) + "/audio?download=1";
    sides.push({ side, video, recording: rec });
  }
  const replay = new VisitReplay(sides);
  state.replay = replay;
  for (const s of replay.sides) $("replay-offset-" + s.side).textContent = "+" + s.offset.toFixed(1) + " s";
  replay.on(renderReplay);
  for (const s of sides) {
    s.video.addEventListener("loadedmetadata", () => {
      if (state.replay !== replay) return;
      renderReplay(replay);
      renderTimeline(c.timeline, replay.startedAt, replay.duration());
    });
  }
  $("replay").hidden = false;
  renderReplay(replay);
  renderTimeline(c.timeline, replay.startedAt, replay.duration());
  await Promise.all(sides.map((s) => verifyInto("/recordings/" + encodeURIComponent(s.recording.id),
    $("replay-verify-" + s.side))));
}

function renderReplay(r) {
  if (state.replay !== r) return;
  const d = r.duration();
  const t = Math.min(r.now(), d);
  const seek = $("replay-seek");
  seek.max = String(d.toFixed(1));
  if (document.activeElement !== seek || !seek.dataset.dragging) seek.value = String(t.toFixed(1));
  $("replay-time").textContent = clockText(t);
  $("replay-duration").textContent = clockText(d);
  $("replay-play").textContent = r.playing ? "Pause" : "Play";
  $("replay-play").setAttribute("aria-pressed", r.playing ? "true" : "false");
}

async function seekReplay(t) {
  if (!state.replay) return;
  await state.replay.seek(t);
  $("replay-seek").focus();
}

function stopReplay() {
  const r = state.replay;
  state.replay = null;
  if (r) r.stop();
}

// A replayed side's play ticket expired: a new one, and carry on where the time line is.
async function renewReplayTicket(ev) {
  const video = ev.currentTarget;
  const r = state.replay;
  const id = video.dataset.recordingId;
  const last = Number(video.dataset.renewedAt || 0);
  if (!r || !id || video.dataset.renewing || !video.getAttribute("src")) return;
  if (Date.now() - last < 10000) {
    showError(new Error("the recording cannot be played"));
    return;
  }
  video.dataset.renewing = "1";
  video.dataset.renewedAt = String(Date.now());
  try {
    const play = await Api.post("/recordings/" + encodeURIComponent(id) + "/play");
    video.src = play.url;
    await r.seek(r.now());
  } catch (e) {
    showError(e);
  } finally {
    delete video.dataset.renewing;
  }
}

async function openRecording(id) {
  const path = "/recordings/" + encodeURIComponent(id);
  const audio = $("recording-audio");
  $("recording").hidden = false;
  audio.dataset.recordingId = id;
  const play = await Api.post(path + "/play");
  audio.src = play.url;
  $("recording-sha256").textContent = play.sha256 || "";
  // The download ticket is asked for (and audited) only when the link is clicked.
  const link = $("recording-download");
  link.dataset.recordingId = id;
  link.href = "/api/v1" + path + "/audio?download=1";
  await verifyRecording(path);
}

// The download link: a download ticket now (audited as recording.download), then the
// browser fetches it as an attachment.
async function downloadRecording(ev) {
  ev.preventDefault();
  const id = ev.currentTarget.dataset.recordingId;
  if (!id) return;
  const dl = await Api.post("/recordings/" + encodeURIComponent(id) + "/download");
  const a = el("a", null, { href: dl.url, download: "" });
  a.hidden = true;
  document.body.appendChild(a);
  a.click();
  a.remove();
}

async function verifyRecording(path) {
  await verifyInto(path, $("recording-verify"));
}

async function verifyInto(path, out) {
  try {
    renderVerification(out, await Api.get(path + "/verify"));
  } catch (e) {
    out.dataset.status = "error";
    out.textContent = "could not check: " + e.message;
  }
}

// `{ok, problems}` from GET /recordings/{id}/verify into the status element.
function renderVerification(out, v) {
  out.dataset.status = v.ok ? "ok" : "failed";
  out.textContent = v.ok ? "verified: the file matches its hash and the chain"
    : "FAILED: " + (v.problems || []).map(describeProblem).join("; ");
}

// One integrity problem as `kind path: detail` (path, else the recording id).
function describeProblem(p) {
  if (p === null || typeof p !== "object") return String(p);
  const where = p.path || p.recording_id || "";
  return [p.kind, where].filter(Boolean).join(" ") + (p.detail ? ": " + p.detail : "");
}

// A play ticket is short-lived: when the element fails (a later range request with an
// expired ticket), fetch a new one and carry on where it was.
async function renewTicket() {
  const audio = $("recording-audio");
  const id = audio.dataset.recordingId;
  const last = Number(audio.dataset.renewedAt || 0);
  if (!id || audio.dataset.renewing) return;
  if (Date.now() - last < 10000) {
    showError(new Error("the recording cannot be played"));
    return;
  }
  audio.dataset.renewing = "1";
  audio.dataset.renewedAt = String(Date.now());
  const at = audio.currentTime;
  try {
    const play = await Api.post("/recordings/" + encodeURIComponent(id) + "/play");
    audio.src = play.url;
    audio.currentTime = at;
  } catch (e) {
    showError(e);
  } finally {
    delete audio.dataset.renewing;
  }
}

// ---- live calls -----------------------------------------------------------------------

async function loadLive() {
  await Promise.all([loadLiveCalls(), loadLiveVisits()]);
}

async function loadLiveCalls() {
  const data = await Api.get("/calls/active");
  const items = Array.isArray(data) ? data : (data && data.items) || [];
  const body = $("live-body");
  body.replaceChildren();
  for (const c of items) {
    const actions = el("span");
    const listen = el("button", "Listen", { type: "button", class: "listen" });
    listen.disabled = c.listenable === false;
    listen.addEventListener("click", () => guarded(() => startListening(c.id)));
    const term = el("button", "Terminate", { type: "button", class: "terminate danger" });
    term.addEventListener("click", () => guarded(() => terminate(c.id)));
    actions.append(listen, " ", term);
    const tr = row([c.id, c.facility_id, c.inmate_id, c.number, when(c.accepted_at), actions]);
    tr.dataset.callId = c.id;
    body.appendChild(tr);
  }
  $("live-empty").hidden = items.length > 0;
}

async function startListening(id) {
  await stopListening();
  $("listen-panel").hidden = false;
  $("listen-call").textContent = id;
  $("listen-packets").value = "0";
  $("listen-packets").textContent = "0";
  $("listen-state").textContent = "connecting";
  const l = new Listener(id, $("listen-audio"));
  state.listener = l;
  try {
    await l.start();
  } catch (e) {
    await stopListening();
    throw e;
  }
  state.statsTimer = setInterval(() => updateStats(l), 500);
}

async function updateStats(l) {
  if (state.listener !== l) return;
  const n = await l.packetsReceived();
  $("listen-packets").textContent = String(n);
  $("listen-state").textContent = l.state();
}

async function stopListening() {
  clearInterval(state.statsTimer);
  state.statsTimer = null;
  const l = state.listener;
  state.listener = null;
  $("listen-panel").hidden = true;
  $("listen-state").textContent = "idle";
  if (l) await l.stop();
}

async function terminate(id) {
  if (!window.confirm("Terminate call " + id + "? Both parties are disconnected.")) return;
  if (state.listener && state.listener.callId === id) await stopListening();
  await Api.post("/calls/" + encodeURIComponent(id) + "/terminate");
  await loadLive();
}

// ---- live visits ----------------------------------------------------------------------

async function loadLiveVisits() {
  const items = (await Api.get("/visits/live")) || [];
  const body = $("visits-body");
  body.replaceChildren();
  for (const v of items) {
    const actions = el("span");
    const watch = el("button", "Watch", { type: "button", class: "watch" });
    // Privileged (attorney) visits are never watched.
    watch.disabled = v.watchable === false;
    if (watch.disabled) watch.title = "privileged: never watched";
    watch.addEventListener("click", () => guarded(() => startWatching(v.id)));
    const end = el("button", "End visit", { type: "button", class: "end-visit danger" });
    end.addEventListener("click", () => guarded(() => endVisit(v.id)));
    actions.append(watch, " ", end);
    const tr = row([v.id, v.facility_id, v.inmate_name, v.visitor_name, v.station_name,
      when(v.ends_at), v.privileged ? "yes" : "no", actions]);
    tr.dataset.visitId = v.id;
    body.appendChild(tr);
  }
  $("visits-empty").hidden = items.length > 0;
}

async function startWatching(id) {
  await stopWatching();
  $("watch-panel").hidden = false;
  $("watch-visit").textContent = id;
  $("watch-end").dataset.visitId = id;
  for (const side of ["visitor", "inmate"]) {
    $("watch-frames-" + side).value = "0";
    $("watch-frames-" + side).textContent = "0";
  }
  $("watch-state").textContent = "connecting";
  const w = new Watcher(id, { visitor: $("watch-video-visitor"), inmate: $("watch-video-inmate") });
  state.watcher = w;
  try {
    await w.start();
  } catch (e) {
    await stopWatching();
    throw e;
  }
  state.watchTimer = setInterval(() => updateWatch(w), 500);
  $("watch-stop").focus();
}

async function updateWatch(w) {
  if (state.watcher !== w) return;
  const n = await w.counts();
  for (const side of ["visitor", "inmate"]) $("watch-frames-" + side).textContent = String(n[side].frames);
  $("watch-state").textContent = w.state();
}

async function stopWatching() {
  clearInterval(state.watchTimer);
  state.watchTimer = null;
  const w = state.watcher;
  state.watcher = null;
  $("watch-panel").hidden = true;
  $("watch-state").textContent = "idle";
  if (w) await w.stop();
}

async function endVisit(id) {
  if (!id) return;
  if (!window.confirm("End visit " + id + " now? Both sides are disconnected.")) return;
  if (state.watcher && state.watcher.visitId === id) await stopWatching();
  await Api.post("/visits/" + encodeURIComponent(id) + "/terminate");
  await loadLiveVisits();
}

// ---- routing --------------------------------------------------------------------------

async function route() {
  const hash = location.hash || "";
  if (!Api.token()) {
    await stopListening();
    await stopWatching();
    show("login-view");
    $("login-username").focus();
    return;
  }
  if (!hash.startsWith("#/live")) {
    await stopListening();
    await stopWatching();
  }
  if (!hash.startsWith("#/session/")) {
    $("recording-audio").pause();
    stopReplay();
  }
  const session = hash.match(/^#\/session\/(.+)$/);
  if (session) return guarded(() => openSession(decodeURIComponent(session[1])));
  if (hash.startsWith("#/live")) {
    show("live-view");
    return guarded(loadLive);
  }
  show("search-view");
  return guarded(loadFacilities);
}

function init() {
  const reasons = $("search-reason");
  for (const r of END_REASONS) reasons.appendChild(el("option", r.replace(/_/g, " "), { value: r }));
  $("login-form").addEventListener("submit", onLogin);
  $("logout").addEventListener("click", () => guarded(onLogout));
  $("search-form").addEventListener("submit", onSearch);
  $("page-prev").addEventListener("click", () => guarded(() => search(Math.max(0, state.offset - PAGE))));
  $("page-next").addEventListener("click", () => guarded(() => search(state.offset + PAGE)));
  $("evidence-form").addEventListener("submit", (ev) => guarded(() => buildPackage(ev)));
  $("evidence-clear").addEventListener("click", clearSelection);
  $("evidence-download").addEventListener("click", () => guarded(downloadPackage));
  $("live-refresh").addEventListener("click", () => guarded(loadLive));
  $("listen-stop").addEventListener("click", () => guarded(stopListening));
  $("watch-stop").addEventListener("click", () => guarded(stopWatching));
  $("watch-end").addEventListener("click", (ev) => guarded(() => endVisit(ev.currentTarget.dataset.visitId)));
  $("recording-audio").addEventListener("error", renewTicket);
  $("recording-download").addEventListener("click", (ev) => guarded(() => downloadRecording(ev)));
  for (const side of ["visitor", "inmate"]) {
    $("replay-download-" + side).addEventListener("click", (ev) => guarded(() => downloadRecording(ev)));
    $("replay-video-" + side).addEventListener("error", renewReplayTicket);
  }
  $("replay-play").addEventListener("click", () => guarded(async () => {
    if (state.replay) await state.replay.toggle();
  }));
  const seek = $("replay-seek");
  seek.addEventListener("input", () => { seek.dataset.dragging = "1"; });
  seek.addEventListener("change", () => {
    delete seek.dataset.dragging;
    guarded(() => seekReplay(Number(seek.value)));
  });
  window.addEventListener("hashchange", route);
  document.body.dataset.ready = "1";
  route();
}

document.addEventListener("DOMContentLoaded", init);
