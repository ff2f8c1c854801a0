// sallyport console: the views (login, search, session: a call's or a recorded visit's, an
// inmate's or a number's notes and sessions, live calls and visits) and hash routing:
// #/search, #/session/<id>[/at/<ms>], #/inmate/<id>, #/number/<E.164>, #/live, #/messages
// (messages.js: the review queue, the watch words, the messaging settings), #/leads,
// #/lead/number/<E.164>, #/lead/pin/<id> (the leads: web/leads.js); reports (#/reports)
// are in reports.js.
// Sessions are shown by the people in them (inmate name and booking number, the contact's
// name and relationship, or "not on list" and the number dialed) and every time in the
// facility's time zone, with seconds and the zone named.
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
const VIEWS = ["login-view", "search-view", "session-view", "subject-view", "live-view", "messages-view",
  "leads-view", "lead-view", "reports-view"];

const $ = (id) => document.getElementById(id);
const state = { query: null, offset: 0, listener: null, statsTimer: null, watcher: null, watchTimer: null,
  replay: null, selected: new Set(), evidenceId: null, session: null, seekMs: null };

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

// A time in `zone` (the facility's IANA zone) with seconds and the zone named:
// "2026-03-02 10:00:05 CST". Without a zone, the browser's, named too.
function localTime(t, zone) {
  if (!t) return "";
  const d = new Date(t);
  try {
    const f = new Intl.DateTimeFormat("en-US", { timeZone: zone || undefined, year: "numeric",
      month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit",
      hourCycle: "h23", timeZoneName: "short" });
    const p = {};
    for (const x of f.formatToParts(d)) p[x.type] = x.value;
    return p.year + "-" + p.month + "-" + p.day + " " + p.hour + ":" + p.minute + ":" + p.second +
      " " + p.timeZoneName;
  } catch (e) {
    return d.toISOString();
  }
}

// Seconds as "m:ss" (or "h:mm:ss").
function durationText(secs) {
  if (secs === null || secs === undefined) return "";
  const s = Math.max(0, Math.round(secs));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, "0");
  return h ? h + ":" + String(m).padStart(2, "0") + ":" + ss : m + ":" + ss;
}

// Seconds into a recording as "m:ss.s" ("1:05.3" for 65.3 s); and, from milliseconds,
// back (null when unreadable).
function clockText(secs) {
  const s = Math.max(0, secs);
  const m = Math.floor(s / 60);
  return m + ":" + (s - m * 60).toFixed(1).padStart(4, "0");
}

function parseOffset(text) {
  const v = (text || "").trim();
  if (!v) return null;
  let secs = 0;
  for (const part of v.split(":")) {
    const n = Number(part);
    if (part === "" || !Number.isFinite(n) || n < 0) return null;
    secs = secs * 60 + n;
  }
  return Math.round(secs * 1000);
}

// The inmate of a session: a link to the inmate's page with name and booking number,
// the housing unit under it.
function inmateCell(c) {
  if (!c.inmate_id) return el("span", "not identified", { class: "muted" });
  const box = el("span");
  const name = c.inmate_name ? c.inmate_name + " (" + (c.booking_number || "?") + ")" : c.inmate_id;
  box.appendChild(el("a", name, { href: "#/inmate/" + encodeURIComponent(c.inmate_id), class: "inmate-link" }));
  if (c.housing_unit) box.appendChild(el("span", "Unit " + c.housing_unit, { class: "sub-line" }));
  return box;
}

// The called party: the contact's name and relationship with the number, or "not on
// list" with the number as dialed.
function partyText(c) {
  if (c.contact_name) {
    return c.contact_name + (c.contact_relationship ? " (" + c.contact_relationship + ")" : "");
  }
  if (c.kind === "visit") return "visitor";
  return "not on list";
}

function partyCell(c) {
  const box = el("span", partyText(c), { class: "party" });
  const number = c.number || c.dialed;
  if (number) {
    const link = el("a", number, { href: "#/number/" + encodeURIComponent(number), class: "number-link sub-line" });
    box.appendChild(link);
  }
  return box;
}

// What became of a session: live, or its end reason.
function outcomeText(c) {
  if (c.state === "active") return "in progress";
  return (c.end_reason || c.state || "").replace(/_/g, " ") + (c.recorded ? "" : " (not recorded)");
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
  stopElapsed();
  $("recording-audio").pause();
  await reportHeard().catch(() => {});
  await stopListening();
  await stopWatching();
  await Api.logout().catch(() => {});
  state.query = null;
  state.session = null;
  // Nothing of the previous user's pages stays in the document.
  for (const x of ["results-body", "live-body", "visits-body", "cdr", "charges-body", "notes-body",
    "notes-found-body", "timeline-body", "visit-details", "session-who", "subject-details",
    "subject-notes-body", "subject-sessions-body"]) $(x).replaceChildren();
  clearCallTimeline();
  $("recording-audio").pause();
  $("recording-audio").removeAttribute("src");
  $("notes-found").hidden = true;
  $("subject-sessions-more").hidden = true;
  state.subjectSearch = null;
  clearSelection();
  Reports.clear();
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
  add("inmate_name", $("search-name").value);
  add("inmate_id", $("search-inmate").value);
  add("booking_number", $("search-booking").value);
  add("number", $("search-number").value);
  add("facility_id", $("search-facility").value);
  add("from", dayStart($("search-from").value, false));
  add("to", dayStart($("search-to").value, true));
  add("end_reason", $("search-reason").value);
  add("kind", $("search-kind").value);
  const [sort, order] = ($("search-sort").value || "time:desc").split(":");
  if (sort !== "time" || order !== "desc") {
    q.set("sort", sort);
    q.set("order", order);
  }
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
    const tr = sessionRow(c);
    tr.prepend(cell(selectBox(c)));
    body.appendChild(tr);
  }
  $("results-total").textContent = String(total);
  $("results-empty").hidden = items.length > 0;
  const first = items.length ? state.offset + 1 : 0;
  $("page-info").textContent = first + "–" + (state.offset + items.length) + " of " + total;
  $("page-prev").disabled = state.offset === 0;
  $("page-next").disabled = state.offset + items.length >= total;
  renderSortHeaders();
}

function cell(content) {
  const td = el("td");
  td.appendChild(content);
  return td;
}

// One session as a row of people: started (facility time), inmate, called party,
// duration, amount, outcome, and the link to the session.
function sessionRow(c) {
  const link = el("a", c.id, { href: "#/session/" + encodeURIComponent(c.id), class: "session-link" });
  const kind = (c.kind || "call") === "visit" ? "video visit" : "call";
  const started = el("span", localTime(c.invite_at, c.time_zone), { class: "started" });
  const tr = row([started, inmateCell(c), partyCell(c), durationText(c.duration_secs), c.amount,
    outcomeText(c), link]);
  tr.lastChild.appendChild(el("span", kind + ", " + c.facility_id, { class: "sub-line" }));
  tr.dataset.sessionId = c.id;
  tr.dataset.kind = c.kind || "call";
  return tr;
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

// The sort of the results: "time:desc" (the default), "duration:asc", ...
function currentSort() {
  if (state.query === null) return $("search-sort").value || "time:desc";
  const q = new URLSearchParams(state.query);
  return q.get("sort") ? q.get("sort") + ":" + (q.get("order") || "desc") : "time:desc";
}

// A sortable column's header pressed (time, duration, amount): the results sorted by it,
// largest (newest) first; pressed again, the other way. The Order menu follows.
function sortBy(key) {
  const [cur, order] = currentSort().split(":");
  const next = cur === key && order === "desc" ? "asc" : "desc";
  const q = new URLSearchParams(state.query === null ? readQuery().toString() : state.query);
  q.delete("sort");
  q.delete("order");
  if (key !== "time" || next !== "desc") {
    q.set("sort", key);
    q.set("order", next);
  }
  $("search-sort").value = key + ":" + next;
  state.query = q.toString();
  return search(0);
}

// Each sortable header says whether (and which way) the results are sorted by it.
function renderSortHeaders() {
  const [key, order] = currentSort().split(":");
  for (const th of document.querySelectorAll("#results-table th[data-sort]")) {
    const on = th.dataset.sort === key;
    th.setAttribute("aria-sort", on ? (order === "asc" ? "ascending" : "descending") : "none");
    th.querySelector(".sort-mark").textContent = on ? (order === "asc" ? " ▲" : " ▼") : "";
  }
}

// ---- one session ----------------------------------------------------------------------

// The CDR's fields (src/store/calls.rs `Cdr`; times as in src/sessions.rs).
const CDR_FIELDS = [
  ["id", "Session"], ["kind", "Kind"], ["visit_id", "Visit"], ["facility_id", "Facility"],
  ["inmate_name", "Inmate"], ["booking_number", "Booking number"], ["housing_unit", "Housing unit"],
  ["inmate_id", "Inmate id"], ["contact_name", "Called party"], ["contact_relationship", "Relationship"],
  ["number", "Number (E.164)"], ["dialed", "Dialed digits"], ["contact_id", "Contact id"],
  ["state", "State"], ["end_reason", "End reason"], ["terminated_by", "Terminated by"],
  ["duration_secs", "Talk time"],
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
      : (k.endsWith("_at") || k === "billed_until") ? localTime(v, c.time_zone)
      : k === "duration_secs" ? durationText(v)
      : k === "contact_name" && !v && c.kind !== "visit" ? "not on list (dialed " + (c.dialed || c.number || "?") + ")"
      : (v === null || v === undefined ? "" : String(v));
    dl.appendChild(el("dt", label));
    const dd = el("dd", text, { id: "cdr-" + k.replace(/_/g, "-") });
    if (k === "inmate_name" && c.inmate_id) {
      dd.replaceChildren(el("a", text || c.inmate_id, { href: "#/inmate/" + encodeURIComponent(c.inmate_id) }));
    }
    if (k === "number" && v) {
      dd.replaceChildren(el("a", v, { href: "#/number/" + encodeURIComponent(v) }));
    }
    dl.appendChild(dd);
  }
  const who = $("session-who");
  who.replaceChildren(inmateCell(c), c.kind === "visit" ? " had a video visit from " : " called ", partyCell(c), ", " +
    localTime(c.invite_at, c.time_zone) + (c.duration_secs !== null && c.duration_secs !== undefined
      ? ", talked " + durationText(c.duration_secs) : ""));
  $("session-zone").textContent = c.time_zone || "unknown (shown in the browser's zone)";
}

function renderCharges(charges) {
  const body = $("charges-body");
  body.replaceChildren();
  for (const d of charges || []) {
    body.appendChild(row([d.increment, localTime(d.at || d.created_at || d.posted_at, state.zone), d.amount]));
  }
  $("charges-empty").hidden = (charges || []).length > 0;
}

async function openSession(id, atMs) {
  show("session-view");
  state.seekMs = typeof atMs === "number" ? atMs : null;
  $("spotted").hidden = true;
  stopReplay();
  $("session-id").textContent = id;
  for (const x of ["cdr", "charges-body", "visit-details", "timeline-body"]) $(x).replaceChildren();
  $("recording").hidden = true;
  $("recording-none").hidden = true;
  $("recording-none").textContent = "No recording.";
  clearCallTimeline();
  $("visit").hidden = true;
  $("replay").hidden = true;
  $("replay-refused").hidden = true;
  if ($("recording-audio").getAttribute("src")) {
    $("recording-audio").pause();
    await reportHeard().catch(() => {});
    delete $("recording-audio").dataset.heardSent;
    $("recording-audio").removeAttribute("src");
    $("recording-audio").load();
  }
  delete $("recording-audio").dataset.recordingId;
  $("recording-audio").hidden = true;
  $("recording-start").hidden = false;
  $("notes-body").replaceChildren();
  $("session-who").replaceChildren();
  state.session = null;
  const c = await Api.get("/calls/" + encodeURIComponent(id));
  state.session = c;
  state.zone = c.time_zone;
  const visit = c.kind === "visit";
  $("cdr-title").textContent = visit ? "Visit session record" : "Call record";
  $("recording-title").textContent = visit ? "Recordings (both sides, played together)" : "Recording";
  renderCdr(c);
  renderCharges(c.charges);
  $("notes").hidden = !!c.privileged;
  if (!c.privileged) await loadSessionNotes(c.id);
  if (visit) return openVisit(c);
  renderCallTimeline(c);
  const recId = (c.recording && c.recording.id) || c.recording_id;
  if (c.recording && c.recording.status === "purged") {
    $("recording-none").textContent = "The recording was purged (retention period over).";
  }
  if (!recId || (c.recording && c.recording.status === "purged")) {
    $("recording-none").hidden = false;
    return;
  }
  await openRecording(recId, c.recording);
  await Leads.loadSpotted(c.id, state.seekMs);
}

// ---- a recorded video visit -----------------------------------------------------------

const VISIT_FIELDS = [
  ["id", "Visit"], ["inmate_name", "Inmate"], ["visitor_name", "Visitor (contact)"],
  ["contact_id", "Contact"], ["station_name", "Station"], ["starts_at", "Slot starts"],
  ["ends_at", "Slot ends"], ["length_minutes", "Length (minutes)"], ["status", "Booking status"],
  ["privileged", "Privileged"], ["requested_by", "Booked by"],
];

function renderVisit(v, zone) {
  const dl = $("visit-details");
  dl.replaceChildren();
  for (const [k, label] of VISIT_FIELDS) {
    const x = v ? v[k] : null;
    const text = k.endsWith("_at") ? localTime(x, zone) : (x === null || x === undefined ? "" : String(x));
    dl.appendChild(el("dt", label));
    dl.appendChild(el("dd", text, { id: "visit-" + k.replace(/_/g, "-") }));
  }
}

// The timeline; `origin` (ms, or null) is the replay's time 0: each event gets its visit
// time (signed: a join comes before the recordings start) and, within the recordings (a
// second of slack either side), a button that moves the replay there; times in `zone`, the facility's.
function renderTimeline(events, origin, duration, zone) {
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
    const tr = row([localTime(e.at, zone), offset, e.kind, e.side || ""]);
    tr.dataset.event = e.kind;
    body.appendChild(tr);
  }
  $("timeline-empty").hidden = (events || []).length > 0;
}

async function openVisit(c) {
  $("visit").hidden = false;
  renderVisit(c.visit, c.time_zone);
  renderTimeline(c.timeline, null, 0, c.time_zone);
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
    // No play ticket (audited recording.play) and no byte of video until Play (or a seek).
    video.dataset.recordingId = rec.id;
    if (video.getAttribute("src")) {
      video.removeAttribute("src");
      video.load();
    }
    $("replay-sha256-" + side).textContent = rec.sha256 || "";
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
      renderTimeline(c.timeline, replay.startedAt, replay.duration(), c.time_zone);
    });
  }
  $("replay").hidden = false;
  renderReplay(replay);
  renderTimeline(c.timeline, replay.startedAt, replay.duration(), c.time_zone);
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

// The replay's sources, asked for when the investigator first plays or seeks: a play
// ticket per side (audited recording.play), then each video's metadata (its length).
async function replaySources(r) {
  const missing = r.sides.filter((s) => !s.video.getAttribute("src"));
  if (!missing.length) return;
  for (const s of missing) {
    const play = await Api.post("/recordings/" + encodeURIComponent(s.recording.id) + "/play");
    if (state.replay !== r) return;
    s.video.src = play.url;
    if (play.sha256) $("replay-sha256-" + s.side).textContent = play.sha256;
  }
  await Promise.all(missing.map((s) => new Promise((resolve) => {
    if (s.video.readyState >= 1) return resolve();
    const done = () => {
      s.video.removeEventListener("loadedmetadata", done);
      s.video.removeEventListener("error", done);
      resolve();
    };
    s.video.addEventListener("loadedmetadata", done);
    s.video.addEventListener("error", done);
    setTimeout(done, 10000);
  })));
}

async function toggleReplay() {
  const r = state.replay;
  if (!r) return;
  await replaySources(r);
  if (state.replay === r) await r.toggle();
}

async function seekReplay(t) {
  if (!state.replay) return;
  await replaySources(state.replay);
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

// Shows the recording without fetching it: no play ticket (audited recording.play) and
// no byte of audio until the investigator presses Play.
async function openRecording(id, rec) {
  const path = "/recordings/" + encodeURIComponent(id);
  const audio = $("recording-audio");
  $("recording").hidden = false;
  audio.dataset.recordingId = id;
  $("recording-sha256").textContent = (rec && rec.sha256) || "";
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

// Play pressed: a play ticket now (audited recording.play), then the audio element
// fetches and plays; `at` (seconds) to start from a moment.
async function playRecording(at) {
  const audio = $("recording-audio");
  const id = audio.dataset.recordingId;
  if (!id) return;
  if (!audio.getAttribute("src")) {
    const play = await Api.post("/recordings/" + encodeURIComponent(id) + "/play");
    audio.src = play.url;
    applySpeed();
    if (play.sha256) $("recording-sha256").textContent = play.sha256;
    audio.hidden = false;
    $("recording-start").hidden = true;
    // The waveform comes from the same ticket: fetched now that Play was pressed (its
    // fetch from byte 0 is audited as recording.play, like the player's).
    loadWaveform(play.url, id);
  }
  if (typeof at !== "number" && state.seekMs !== null) at = state.seekMs / 1000;
  state.seekMs = null;
  if (typeof at === "number") audio.currentTime = at;
  await audio.play();
  if (typeof at !== "number") audio.focus();
}

// What the player actually played (its `played` ranges, so far), audited as
// recording.heard: sent when playback pauses or ends and when the session is left; the
// same ranges are never sent twice.
async function reportHeard() {
  const audio = $("recording-audio");
  const id = audio.dataset.recordingId;
  if (!id || !audio.getAttribute("src")) return;
  const ranges = [];
  for (let i = 0; i < audio.played.length && ranges.length < 100; i++) {
    const from = Math.round(audio.played.start(i) * 1000);
    const to = Math.round(audio.played.end(i) * 1000);
    if (to > from) ranges.push({ from_ms: from, to_ms: to });
  }
  const sent = JSON.stringify([id, ranges]);
  if (!ranges.length || audio.dataset.heardSent === sent) return;
  audio.dataset.heardSent = sent;
  await Api.post("/recordings/" + encodeURIComponent(id) + "/heard", { ranges });
}

// ---- a call's timeline ------------------------------------------------------------------

// What each kind of event is called on the page.
const EVENT_NAMES = {
  invite: "INVITE from the handset", pin: "ID + PIN entry", checks: "Destination checks",
  trunk_answer: "Trunk answered", announcement: "Announcement to the called party",
  accepted: "Called party accepted", recording_started: "Recording started",
  increment: "Increment charged", warning: "Warning to the inmate", cut: "Call cut",
  ended: "Call ended",
};

function eventDetail(e) {
  switch (e.kind) {
    case "invite": return e.detail ? "dialed " + e.detail : "";
    case "pin": return e.detail === "valid" ? "valid" : (e.detail || "").replace(/_/g, " ") + " (refused)";
    case "checks": return e.detail === "authorized" ? "authorized" : "refused: " + (e.detail || "").replace(/_/g, " ");
    case "announcement": return e.detail === "privileged" ? "privileged call (not recorded)" : "recorded-call notice";
    case "warning": return e.detail === "funds_low" ? "funds running low" : e.detail === "max_duration" ? "maximum duration near" : e.detail || "";
    case "increment": return "#" + e.increment + ": " + e.amount;
    case "cut": return (e.detail || "").replace(/_/g, " ") + (e.by ? ", by " + e.by : "");
    default: return e.detail || "";
  }
}

function clearCallTimeline() {
  state.timeline = null;
  state.waveformFor = null;
  $("call-timeline").hidden = true;
  $("call-timeline-body").replaceChildren();
  $("call-markers").replaceChildren();
  $("call-playhead").hidden = true;
  $("silence-info").textContent = "";
  const c = $("waveform");
  c.getContext("2d").clearRect(0, 0, c.width, c.height);
}

// The call's events in a table and as markers on the axis; each a button that plays the
// recording from its moment (an event before the recording started plays from its start).
function renderCallTimeline(c) {
  const events = Array.isArray(c.timeline) ? c.timeline : [];
  const rec = c.recording && c.recording.status !== "purged" ? c.recording : null;
  const t = new CallTimeline($("waveform"), $("call-markers"), $("call-playhead"), events, rec);
  state.timeline = t;
  const body = $("call-timeline-body");
  const markers = $("call-markers");
  t.events.forEach((e, i) => {
    const name = EVENT_NAMES[e.kind] || e.kind;
    const off = t.offset(e);
    let at = "";
    if (off !== null) {
      const text = (off < 0 ? "-" : "") + clockText(Math.abs(off));
      at = el("button", text, { type: "button", class: "event-seek",
        "aria-label": "Play from " + text + " (" + name + ")" });
      at.addEventListener("click", () => guarded(() => seekCall(off)));
    }
    const tr = row([localTime(e.at, c.time_zone), at, name, eventDetail(e), e.balance_after || ""]);
    tr.dataset.event = e.kind;
    tr.dataset.index = String(i);
    if (off !== null) tr.dataset.offset = off.toFixed(3);
    body.appendChild(tr);
    if (off !== null) {
      const m = el("button", "", { type: "button", class: "marker marker-" + e.kind,
        "aria-label": name + " at " + (off < 0 ? "-" : "") + clockText(Math.abs(off)), title: name + ": " + eventDetail(e) });
      m.dataset.event = e.kind;
      m.dataset.index = String(i);
      m.style.left = (t.x(e.ms) * 100).toFixed(3) + "%";
      m.addEventListener("click", () => guarded(() => seekCall(off)));
      markers.appendChild(m);
    }
  });
  $("call-timeline").hidden = events.length === 0;
  t.draw();
}

// Plays the recording from `off` seconds into it (clamped to the recording).
async function seekCall(off) {
  const t = state.timeline;
  const len = t && t.recLength ? t.recLength : Infinity;
  await playRecording(Math.max(0, Math.min(off, len - 0.1)));
}

// The waveform from the play ticket's URL (fetched once per session page).
async function loadWaveform(url, id) {
  const t = state.timeline;
  if (!t || state.waveformFor === id) return;
  state.waveformFor = id;
  try {
    const resp = await fetch(url);
    if (!resp.ok) throw new Error("HTTP " + resp.status);
    const wav = decodeWav(await resp.arrayBuffer());
    if (state.timeline !== t) return;
    t.setWav(wav);
    const silent = t.silences.reduce((a, s) => a + (s.to - s.from), 0);
    $("silence-info").textContent = t.silences.length + " silent stretch(es), " + silent.toFixed(1) + " s";
    $("waveform").setAttribute("aria-label", "Waveform of the recording (" + wav.duration.toFixed(1) +
      " s): inmate above the line, called party below; shaded: silence");
    $("waveform").dataset.drawn = "1";
  } catch (e) {
    state.waveformFor = null;
    showError(new Error("the waveform cannot be drawn: " + e.message));
  }
}

function applySpeed() {
  const audio = $("recording-audio");
  const v = Number($("playback-speed").value) || 1;
  audio.defaultPlaybackRate = v;
  audio.playbackRate = v;
}

// While playing: the playhead follows; with "skip silence", a silent stretch is jumped
// over (to a little before its end).
function onPlayback() {
  const audio = $("recording-audio");
  const t = state.timeline;
  if (!t || !audio.getAttribute("src")) return;
  t.moveHead(audio.currentTime);
  if (!$("skip-silence").checked || audio.paused || audio.seeking) return;
  const s = t.silenceAt(audio.currentTime);
  if (s && s.to - audio.currentTime > 0.4) audio.currentTime = s.to - 0.2;
}

// Keyboard shortcuts of the session page (listed on it): not while typing in a field.
function onShortcut(ev) {
  if ($("session-view").hidden || !state.timeline || ev.ctrlKey || ev.altKey || ev.metaKey) return;
  const target = ev.target;
  const tag = target && target.tagName;
  if (["INPUT", "TEXTAREA", "SELECT", "AUDIO"].includes(tag) || (target && target.isContentEditable)) return;
  const audio = $("recording-audio");
  if (!audio.dataset.recordingId) return;
  const started = !!audio.getAttribute("src");
  const speeds = [...$("playback-speed").options].map((o) => o.value);
  const key = ev.key;
  if (key === " " || key === "k") {
    if (key === " " && tag === "BUTTON") return;
    ev.preventDefault();
    if (!started || audio.paused) guarded(() => playRecording()); else audio.pause();
  } else if ((key === "ArrowLeft" || key === "ArrowRight") && started) {
    ev.preventDefault();
    audio.currentTime = Math.max(0, audio.currentTime + (key === "ArrowLeft" ? -5 : 5));
  } else if (key === "[" || key === "]") {
    ev.preventDefault();
    const i = speeds.indexOf($("playback-speed").value);
    const j = Math.max(0, Math.min(speeds.length - 1, i + (key === "[" ? -1 : 1)));
    $("playback-speed").value = speeds[j];
    applySpeed();
  } else if (key === "s") {
    ev.preventDefault();
    $("skip-silence").checked = !$("skip-silence").checked;
  } else if (key === "n" || key === "p") {
    ev.preventDefault();
    const now = started ? audio.currentTime : -Infinity;
    const offs = state.timeline.events.map((e) => state.timeline.offset(e)).filter((o) => o !== null)
      .map((o) => Math.max(0, o));
    const next = key === "n" ? offs.find((o) => o > now + 0.25) : [...offs].reverse().find((o) => o < now - 1);
    if (next !== undefined) guarded(() => seekCall(next));
  }
}

// ---- notes and bookmarks --------------------------------------------------------------

async function loadSessionNotes(id) {
  const notes = await Api.get("/notes?session_id=" + encodeURIComponent(id));
  const body = $("notes-body");
  body.replaceChildren();
  for (const n of notes || []) body.appendChild(sessionNoteRow(n));
  $("notes-empty").hidden = (notes || []).length > 0;
}

function momentText(n) {
  return clockText(n.start_ms / 1000) + (n.end_ms !== null && n.end_ms !== undefined ? "–" + clockText(n.end_ms / 1000) : "");
}

// Who wrote the note's current version and when, in the zone of the session's facility.
function byText(n) {
  const zone = n.time_zone || state.zone;
  return n.updated_by + ", " + localTime(n.updated_at, zone) + (n.version > 1 ? " (version " + n.version + ")" : "");
}

// A note on the session page: its moment (a button that plays from there), text, author,
// and Edit / Delete (each a new version).
function sessionNoteRow(n) {
  const at = el("button", momentText(n), { type: "button", class: "note-seek",
    "aria-label": "Play from " + momentText(n) });
  // A visit's note plays both sides from there; a call's, the recording.
  at.addEventListener("click", () => guarded(() => state.replay ? seekReplay(n.start_ms / 1000)
    : playRecording(n.start_ms / 1000)));
  const actions = el("span");
  const edit = el("button", "Edit", { type: "button", class: "note-edit" });
  edit.addEventListener("click", () => guarded(() => editNote(n)));
  const del = el("button", "Delete", { type: "button", class: "note-delete danger" });
  del.addEventListener("click", () => guarded(() => deleteNote(n)));
  actions.append(edit, " ", del);
  const tr = row([at, n.body, byText(n), actions]);
  tr.dataset.noteId = n.id;
  return tr;
}

async function addNote(ev) {
  ev.preventDefault();
  const c = state.session;
  if (!c) return;
  const start = parseOffset($("note-start").value);
  const end = parseOffset($("note-end").value);
  if (start === null) throw new Error("the moment is not m:ss.s");
  const body = { session_id: c.id, start_ms: start, body: $("note-body").value };
  if (end !== null) body.end_ms = end;
  await Api.post("/notes", body);
  $("note-body").value = "";
  $("note-end").value = "";
  await loadSessionNotes(c.id);
}

// The note field takes the playback position: the recording's, or a visit's replay's
// (on the visit's time line, where its notes' moments are).
function markPosition() {
  const at = state.replay ? state.replay.now() : $("recording-audio").currentTime;
  $("note-start").value = clockText(at || 0);
  $("note-body").focus();
}

async function editNote(n) {
  const text = window.prompt("Edit the note (the previous version is kept):", n.body);
  if (text === null) return;
  await Api.put("/notes/" + encodeURIComponent(n.id),
    { version: n.version, start_ms: n.start_ms, end_ms: n.end_ms, body: text });
  await loadSessionNotes(n.session_id);
}

async function deleteNote(n) {
  if (!window.confirm("Delete this note? Its versions stay in the record.")) return;
  await Api.del("/notes/" + encodeURIComponent(n.id) + "?version=" + n.version);
  await loadSessionNotes(n.session_id);
}

// A note in a list (an inmate's, a number's, a text search): the session it is on and
// its moment, the text, who wrote it.
function listedNoteRow(n) {
  const link = el("a", n.session_id, { href: "#/session/" + encodeURIComponent(n.session_id), class: "session-link" });
  const tr = row([link, momentText(n), n.body, byText(n)]);
  tr.dataset.noteId = n.id;
  return tr;
}

async function searchNotes(ev) {
  ev.preventDefault();
  const q = $("notes-q").value.trim();
  if (!q) return;
  const notes = await Api.get("/notes?q=" + encodeURIComponent(q));
  const body = $("notes-found-body");
  body.replaceChildren();
  for (const n of notes || []) body.appendChild(listedNoteRow(n));
  $("notes-found-empty").hidden = (notes || []).length > 0;
  $("notes-found").hidden = false;
}

// ---- an inmate's or a number's page ---------------------------------------------------

function clearSubject() {
  for (const x of ["subject-details", "subject-notes-body", "subject-sessions-body"]) $(x).replaceChildren();
  $("subject-sessions-more").hidden = true;
  state.subjectSearch = null;
  $("subject-title").textContent = "";
}

async function openInmate(id) {
  show("subject-view");
  clearSubject();
  const i = await Api.get("/inmates/" + encodeURIComponent(id));
  $("subject-title").textContent = "Inmate " + i.first_name + " " + i.last_name + " (" + i.booking_number + ")";
  details([["Name", i.first_name + " " + i.last_name], ["Booking number", i.booking_number],
    ["Housing unit", i.housing_unit || "unknown"], ["Status", i.status], ["Facility", i.facility_id], ["Inmate id", i.id]]);
  await subjectLists("inmate_id=" + encodeURIComponent(id), "inmate_id=" + encodeURIComponent(id) + "&kind=all",
    ["search-inmate", id]);
}

async function openNumber(number) {
  show("subject-view");
  clearSubject();
  $("subject-title").textContent = "Number " + number;
  details([["Number", number]]);
  await subjectLists("number=" + encodeURIComponent(number), "number=" + encodeURIComponent(number),
    ["search-number", number]);
}

// All of an inmate's (a number's) sessions in the search: the form holds only that, the
// results are sorted and paged there.
async function searchAllOfSubject() {
  const field = state.subjectSearch;
  if (!field) return;
  $("search-form").reset();
  $(field[0]).value = field[1];
  state.query = readQuery().toString();
  location.hash = "#/search";
  await search(0);
  $("results").scrollIntoView();
}

// Name-value pairs into a <dl> (by id), replacing what it held.
function details(pairs, id = "subject-details") {
  const dl = $(id);
  dl.replaceChildren();
  for (const [k, v] of pairs) dl.append(el("dt", k), el("dd", v));
}

// The notes and the newest sessions of an inmate or a number; when there are more
// sessions than one page, says so and offers them all in the search (`field` and value
// of the search form that finds them).
async function subjectLists(notesQuery, callsQuery, field) {
  const [notes, page] = await Promise.all([Api.get("/notes?" + notesQuery),
    Api.get("/calls?" + callsQuery + "&limit=" + PAGE)]);
  const items = (page && page.items) || [];
  const nb = $("subject-notes-body");
  for (const n of notes || []) nb.appendChild(listedNoteRow(n));
  $("subject-notes-empty").hidden = (notes || []).length > 0;
  const sb = $("subject-sessions-body");
  for (const c of items) sb.appendChild(sessionRow(c));
  $("subject-sessions-empty").hidden = items.length > 0;
  const total = (page && page.total) || items.length;
  $("subject-sessions-count").textContent = "The " + items.length + " newest of " + total + " sessions.";
  $("subject-sessions-more").hidden = total <= items.length;
  state.subjectSearch = field;
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
  // Never a ticket for an element that was not playing (no source: nothing was asked).
  if (!id || audio.dataset.renewing || !audio.getAttribute("src")) return;
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
    listen.addEventListener("click", () => guarded(() => startListening(c.id, c)));
    const term = el("button", "Terminate", { type: "button", class: "terminate danger" });
    term.addEventListener("click", () => guarded(() => terminate(c.id)));
    actions.append(listen, " ", term);
    const link = el("a", c.id, { href: "#/session/" + encodeURIComponent(c.id), class: "session-link" });
    const accepted = el("span", localTime(c.accepted_at, c.time_zone));
    const elapsed = el("span", "", { class: "elapsed sub-line" });
    if (c.accepted_at) elapsed.dataset.since = String(Date.parse(c.accepted_at));
    accepted.appendChild(elapsed);
    const charged = el("span", c.amount, { class: "charged" });
    const balance = el("span", balanceText(c), { class: "balance" });
    const tr = row([inmateCell(c), partyCell(c), accepted, charged, balance, link, actions]);
    tr.dataset.callId = c.id;
    body.appendChild(tr);
  }
  $("live-empty").hidden = items.length > 0;
  tickElapsed();
  if (!state.elapsedTimer) state.elapsedTimer = setInterval(tickElapsed, 1000);
  if (!state.liveTimer) state.liveTimer = setInterval(() => refreshLiveCalls().catch(() => {}), 3000);
}

function balanceText(c) {
  return c.balance === null || c.balance === undefined ? "unknown" : c.balance;
}

// What each live call has been charged and the balance left, as increments are debited:
// the rows stay (a listen in progress is untouched) unless calls came or went.
async function refreshLiveCalls() {
  if ((location.hash || "") !== "#/live" || !Api.token()) return;
  const data = await Api.get("/calls/active");
  const items = Array.isArray(data) ? data : [];
  const rows = [...document.querySelectorAll("#live-body tr[data-call-id]")];
  const same = rows.length === items.length && items.every((c) => rows.some((r) => r.dataset.callId === c.id));
  if (!same) return loadLiveCalls();
  for (const c of items) {
    const tr = rows.find((r) => r.dataset.callId === c.id);
    tr.querySelector(".charged").textContent = c.amount;
    tr.querySelector(".balance").textContent = balanceText(c);
  }
}

// The time each live call has been connected, ticking.
function tickElapsed() {
  for (const e of document.querySelectorAll("#live-body .elapsed[data-since], #visits-body .elapsed[data-since]")) {
    e.textContent = "connected " + durationText((Date.now() - Number(e.dataset.since)) / 1000);
  }
}

function stopElapsed() {
  clearInterval(state.elapsedTimer);
  state.elapsedTimer = null;
  clearInterval(state.liveTimer);
  state.liveTimer = null;
}

async function startListening(id, call) {
  // The click's user activation lets the audio graph start.
  Listener.audioContext();
  await stopListening();
  $("listen-panel").hidden = false;
  $("listen-call").textContent = id;
  const inmate = call && call.inmate_name ? call.inmate_name + (call.booking_number ? " (" + call.booking_number + ")" : "") : "not identified";
  $("listen-label-inmate").textContent = "Track 1: inmate — " + inmate;
  $("listen-label-called").textContent = "Track 2: called party — " + (call ? partyText(call) + (call.number ? " " + call.number : "") : "") +
    " (and the gateway's prompts)";
  for (const p of PARTIES) {
    $("listen-meter-" + p).value = 0;
    $("listen-meter-" + p).dataset.level = "0";
    $("listen-volume-" + p).value = "1";
    $("listen-gain-" + p).textContent = "100%";
  }
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
  state.meterTimer = setInterval(() => updateMeters(l), 100);
}

// The two parties of a listened call, in track order.
const PARTIES = ["inmate", "called"];

// The meters, and each volume slider's range: up to 200 % through the audio graph, 100 %
// when the elements play the tracks (an element cannot amplify).
function updateMeters(l) {
  if (state.listener !== l) return;
  $("listen-panel").dataset.audio = Listener.ctx ? Listener.ctx.state : "none";
  const max = String(Listener.maxVolume());
  PARTIES.forEach((p, i) => {
    const level = l.level(i);
    const meter = $("listen-meter-" + p);
    meter.value = level;
    meter.textContent = level.toFixed(2);
    meter.dataset.level = level.toFixed(3);
    // What the graph received and played of the party (RMS), for whoever checks the volume.
    meter.dataset.received = l.rms(i, "analyser").toFixed(5);
    meter.dataset.played = l.rms(i, "out").toFixed(5);
    const slider = $("listen-volume-" + p);
    if (slider.max !== max) {
      slider.max = max;
      setVolume(p);
    }
  });
}

function setVolume(p) {
  const v = Number($("listen-volume-" + p).value);
  $("listen-gain-" + p).textContent = Math.round(v * 100) + "%";
  if (state.listener) state.listener.setVolume(PARTIES.indexOf(p), v);
}

async function updateStats(l) {
  if (state.listener !== l) return;
  const n = await l.packetsReceived();
  $("listen-packets").textContent = String(n);
  const st = l.state();
  $("listen-state").textContent = st === "failed" ? "failed: " + l.whyFailed() : st;
}

// Focuses `button` in the row (of `rows`) whose `key` data is `id`, if it is still there.
function refocus(rows, key, id, button) {
  const tr = [...document.querySelectorAll(rows)].find((r) => r.dataset[key] === id);
  const b = tr && tr.querySelector(button);
  if (b) b.focus();
}

async function stopListening() {
  clearInterval(state.statsTimer);
  state.statsTimer = null;
  clearInterval(state.meterTimer);
  state.meterTimer = null;
  const l = state.listener;
  state.listener = null;
  $("listen-panel").hidden = true;
  $("listen-state").textContent = "idle";
  if (l) await l.stop();
}

// Terminating never depends on the listener: a listener whose connection died is gone on
// the gateway already (its delete answers not_found), and the call must still end on
// this click.
async function terminate(id) {
  if (!window.confirm("Terminate call " + id + "? Both parties are disconnected.")) return;
  if (state.listener && state.listener.callId === id) {
    try {
      await stopListening();
    } catch (e) {
      console.warn("the listener could not be stopped cleanly", e);
    }
  }
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
    // People first, as every session: the inmate, the visitor, the station, and the times
    // in the facility's zone (named), the connected time ticking.
    const visitor = el("span", v.visitor_name + (v.visitor_relationship ? " (" + v.visitor_relationship + ")" : ""),
      { class: "party" });
    const started = el("span", localTime(v.session && v.session.started_at, v.time_zone));
    const elapsed = el("span", "", { class: "elapsed sub-line" });
    if (v.session && v.session.started_at) elapsed.dataset.since = String(Date.parse(v.session.started_at));
    started.appendChild(elapsed);
    const what = el("span", v.id, { class: "visit-id" });
    what.appendChild(el("span", "video visit, " + v.facility_id + (v.privileged ? ", privileged: never watched" : ""),
      { class: "sub-line" }));
    const tr = row([inmateCell({ inmate_id: v.inmate_id, inmate_name: v.inmate_name, booking_number: v.booking_number,
      housing_unit: v.housing_unit }), visitor, v.station_name, started, localTime(v.ends_at, v.time_zone), what, actions]);
    tr.dataset.visitId = v.id;
    body.appendChild(tr);
  }
  $("visits-empty").hidden = items.length > 0;
  tickElapsed();
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
    stopElapsed();
    await stopListening();
    await stopWatching();
  }
  if (!hash.startsWith("#/session/")) {
    $("recording-audio").pause();
    await reportHeard().catch(() => {});
    stopReplay();
  }
  const session = hash.match(/^#\/session\/([^/]+)(?:\/at\/(\d+))?$/);
  if (session) {
    const at = session[2] === undefined ? undefined : Number(session[2]);
    return guarded(() => openSession(decodeURIComponent(session[1]), at));
  }
  if (hash.startsWith("#/lead")) return guarded(() => Leads.route(hash));
  const inmate = hash.match(/^#\/inmate\/(.+)$/);
  if (inmate) return guarded(() => openInmate(decodeURIComponent(inmate[1])));
  const number = hash.match(/^#\/number\/(.+)$/);
  if (number) return guarded(() => openNumber(decodeURIComponent(number[1])));
  if (hash.startsWith("#/live")) {
    show("live-view");
    return guarded(loadLive);
  }
  if (hash.startsWith("#/messages")) {
    show("messages-view");
    return guarded(Messages.open);
  }
  if (hash.startsWith("#/reports")) {
    show("reports-view");
    return guarded(() => Reports.route(hash));
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
  for (const b of document.querySelectorAll("#results-table button.sort")) {
    b.addEventListener("click", () => guarded(() => sortBy(b.dataset.sort)));
  }
  $("page-prev").addEventListener("click", () => guarded(() => search(Math.max(0, state.offset - PAGE))));
  $("page-next").addEventListener("click", () => guarded(() => search(state.offset + PAGE)));
  $("evidence-form").addEventListener("submit", (ev) => guarded(() => buildPackage(ev)));
  $("subject-search-all").addEventListener("click", () => guarded(searchAllOfSubject));
  $("evidence-clear").addEventListener("click", clearSelection);
  $("evidence-download").addEventListener("click", () => guarded(downloadPackage));
  $("live-refresh").addEventListener("click", () => guarded(loadLive));
  // Stopping from the panel puts the focus back on the row's button (the panel goes).
  $("listen-stop").addEventListener("click", () => guarded(async () => {
    const id = state.listener && state.listener.callId;
    await stopListening();
    refocus("#live-body tr[data-call-id]", "callId", id, "button.listen");
  }));
  $("watch-stop").addEventListener("click", () => guarded(async () => {
    const id = state.watcher && state.watcher.visitId;
    await stopWatching();
    refocus("#visits-body tr[data-visit-id]", "visitId", id, "button.watch");
  }));
  $("watch-end").addEventListener("click", (ev) => guarded(() => endVisit(ev.currentTarget.dataset.visitId)));
  $("recording-audio").addEventListener("error", renewTicket);
  $("recording-play").addEventListener("click", () => guarded(() => playRecording()));
  $("recording-audio").addEventListener("pause", () => guarded(reportHeard));
  $("recording-audio").addEventListener("ended", () => guarded(reportHeard));
  $("note-form").addEventListener("submit", (ev) => guarded(() => addNote(ev)));
  $("note-mark").addEventListener("click", markPosition);
  $("notes-search").addEventListener("submit", (ev) => guarded(() => searchNotes(ev)));
  $("recording-download").addEventListener("click", (ev) => guarded(() => downloadRecording(ev)));
  for (const side of ["visitor", "inmate"]) {
    $("replay-download-" + side).addEventListener("click", (ev) => guarded(() => downloadRecording(ev)));
    $("replay-video-" + side).addEventListener("error", renewReplayTicket);
  }
  $("replay-play").addEventListener("click", () => guarded(toggleReplay));
  const seek = $("replay-seek");
  seek.addEventListener("input", () => { seek.dataset.dragging = "1"; });
  seek.addEventListener("change", () => {
    delete seek.dataset.dragging;
    guarded(() => seekReplay(Number(seek.value)));
  });
  for (const p of PARTIES) $("listen-volume-" + p).addEventListener("input", () => setVolume(p));
  $("playback-speed").addEventListener("change", applySpeed);
  $("skip-silence").addEventListener("change", () => { state.skipShown = false; });
  const audio = $("recording-audio");
  audio.addEventListener("timeupdate", onPlayback);
  audio.addEventListener("play", () => {
    clearInterval(state.skipTimer);
    state.skipTimer = setInterval(onPlayback, 100);
  });
  for (const ev of ["pause", "ended", "emptied"]) audio.addEventListener(ev, () => {
    clearInterval(state.skipTimer);
    state.skipTimer = null;
  });
  document.addEventListener("keydown", onShortcut);
  Reports.init();
  window.addEventListener("hashchange", route);
  document.body.dataset.ready = "1";
  route();
}

document.addEventListener("DOMContentLoaded", init);
