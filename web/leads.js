// sallyport console: investigative leads (#/leads), one lead (#/lead/number/<E.164>,
// #/lead/pin/<id>) with the sessions behind it, and the watch words heard in a session
// (on the session page, each a button that plays from its moment; #/session/<id>/at/<ms>
// opens the page at that moment). Every list and lead opened is audited by the API.
// Uses app.js's helpers ($, el, row, show, details, localTime, clockText, sessionRow, playRecording,
// guarded, state), called only after both scripts have loaded.
"use strict";

const Leads = (() => {
  const PATTERNS = {
    across_units: "One PIN, several housing units",
    failed_then_other: "Failed for one inmate, then another's PIN worked",
  };
  const PARTIES = { inmate: "Inmate", called: "Called party" };

  function query() {
    const q = new URLSearchParams();
    const days = $("leads-days").value.trim();
    const min = $("leads-min").value.trim();
    if (days) q.set("days", days);
    if (min) q.set("min_inmates", min);
    return q.toString();
  }

  function numberLink(number) {
    return el("a", number, { href: "#/lead/number/" + encodeURIComponent(number), class: "lead-link" });
  }

  function sessionLink(id, atMs) {
    const href = "#/session/" + encodeURIComponent(id) + (typeof atMs === "number" ? "/at/" + atMs : "");
    return el("a", id, { href, class: "session-link" });
  }

  function fill(body, rows, empty) {
    $(body).replaceChildren(...rows);
    if (!rows.length) {
      const tr = row([empty]);
      tr.firstChild.colSpan = $(body).closest("table").querySelectorAll("th").length;
      $(body).appendChild(tr);
    }
  }

  async function open() {
    show("leads-view");
    // The last list goes at once: nothing stale can be followed while the new one loads.
    for (const b of ["leads-shared-body", "leads-new-body", "leads-pin-body", "leads-words-body"]) $(b).replaceChildren();
    const l = await Api.get("/leads?" + query());
    const sp = l.spotting;
    $("leads-spotting").textContent = sp.available
      ? "Spoken watch words: spotting runs (" + sp.queue.pending + " recordings waiting, " + sp.queue.done + " spotted)."
      : "Spoken watch words: spotting is unavailable here: " + sp.reason;
    // Every time in the zone of the facility it happened in (a lead may span facilities).
    fill("leads-shared-body", l.shared_numbers.map((n) => row([numberLink(n.number), n.inmates, n.facilities,
      n.calls, localTime(n.last_at, n.last_time_zone)])), "No number is called by that many inmates in the period.");
    fill("leads-new-body", l.new_numbers.map((n) => row([numberLink(n.number), n.inmates,
      localTime(n.first_at, n.first_time_zone), n.calls])), "No new number was called by that many inmates.");
    const people = peopleOf(l.people);
    fill("leads-pin-body", l.pin_sharing.map((p) => {
      const link = el("a", PATTERNS[p.pattern] || p.pattern, { href: "#/lead/pin/" + encodeURIComponent(p.id), class: "lead-link" });
      const who = el("span");
      who.append(inmateLink(p.inmate_id, people));
      if (p.other_inmate_id) who.append(" then ", inmateLink(p.other_inmate_id, people));
      return row([link, who, p.housing_units.join(", "), p.attempt_ids.length,
        localTime(p.first_at / 1000, p.first_time_zone)]);
    }), "No PIN sharing seen in the period.");
    fill("leads-words-body", l.keyword_alerts.map((a) => row([a.word, PARTIES[a.party] || a.party,
      inmateLink(a.inmate_id, people), localTime(a.call_at, a.time_zone), clockText(a.offset_ms / 1000),
      sessionLink(a.session_id, a.offset_ms)])),
      "No watch word heard in the period.");
  }

  // The API's `people` (inmate id → name, booking number) as "name (booking number)".
  function peopleOf(list) {
    const people = new Map();
    for (const [id, p] of Object.entries(list || {})) {
      people.set(id, (p.name || id) + (p.booking_number ? " (" + p.booking_number + ")" : ""));
    }
    return people;
  }

  // The lead's sessions, people first, as every list of sessions (app.js's sessionRow).
  function sessionRows(sessions) {
    return sessions.map(sessionRow);
  }

  function inmateLink(id, people) {
    if (!id) return "";
    return el("a", people.get(id) || id, { href: "#/inmate/" + encodeURIComponent(id) });
  }

  async function openNumber(number) {
    show("lead-view");
    $("lead-title").textContent = "Number " + number;
    $("lead-callers-body").replaceChildren();
    $("lead-sessions-body").replaceChildren();
    const g = await Api.get("/leads/numbers/" + encodeURIComponent(number) + "?" + query());
    details([["Number", g.number], ["Inmates who called it", String(g.callers.length)]], "lead-details");
    fill("lead-callers-body", g.callers.map((c) => {
      const who = el("a", c.name || c.inmate_id, { href: "#/inmate/" + encodeURIComponent(c.inmate_id) });
      return row([who, c.booking_number, c.facility_id, c.calls, localTime(c.last_at, c.last_time_zone)]);
    }), "Nobody in your facilities called it in the period.");
    fill("lead-sessions-body", sessionRows(g.sessions), "No session.");
  }

  async function openPin(id) {
    show("lead-view");
    $("lead-title").textContent = "PIN sharing";
    $("lead-callers-body").replaceChildren();
    $("lead-sessions-body").replaceChildren();
    const p = await Api.get("/leads/pin/" + encodeURIComponent(id) + "?" + query());
    const inmates = [p.inmate_id].concat(p.other_inmate_id ? [p.other_inmate_id] : []);
    const people = peopleOf(p.people);
    details([["Pattern", PATTERNS[p.pattern] || p.pattern], ["Inmate", people.get(p.inmate_id)],
      ["Then", p.other_inmate_id ? people.get(p.other_inmate_id) : ""], ["Handsets", p.handset_ids.join(", ")],
      ["Housing units", p.housing_units.join(", ")],
      ["First attempt", localTime(p.first_at / 1000, p.first_time_zone)],
      ["Last attempt", localTime(p.last_at / 1000, p.last_time_zone)]], "lead-details");
    fill("lead-callers-body", inmates.map((i) => row([inmateLink(i, people),
      (p.people && p.people[i] && p.people[i].booking_number) || "", p.facility_id, "", ""])), "");
    fill("lead-sessions-body", sessionRows(p.sessions), "No call was made with these attempts.");
  }

  async function route(hash) {
    const number = hash.match(/^#\/lead\/number\/(.+)$/);
    if (number) return openNumber(decodeURIComponent(number[1]));
    const pin = hash.match(/^#\/lead\/pin\/(.+)$/);
    if (pin) return openPin(decodeURIComponent(pin[1]));
    return open();
  }

  // The session page's watch words; `seekMs` (opened from an alert) marks that moment:
  // its row is highlighted and Play starts there.
  async function loadSpotted(sessionId, seekMs) {
    const alerts = await Api.get("/keyword-alerts?session_id=" + encodeURIComponent(sessionId));
    const body = $("spotted-body");
    body.replaceChildren();
    for (const a of alerts || []) {
      const at = el("button", clockText(a.offset_ms / 1000), { type: "button", class: "spotted-seek",
        "aria-label": "Play from " + clockText(a.offset_ms / 1000) + " (" + a.word + ")" });
      at.addEventListener("click", () => guarded(() => playRecording(a.offset_ms / 1000)));
      const tr = row([at, PARTIES[a.party] || a.party, a.word, Math.round(a.confidence * 100) + "%"]);
      tr.dataset.alertId = a.id;
      if (typeof seekMs === "number" && Math.abs(a.offset_ms - seekMs) < 1) {
        tr.classList.add("current");
        tr.setAttribute("aria-current", "true");
      }
      body.appendChild(tr);
    }
    $("spotted-empty").hidden = (alerts || []).length > 0;
    $("spotted").hidden = false;
    $("recording-play").textContent = typeof seekMs === "number"
      ? "Play recording from " + clockText(seekMs / 1000) : "Play recording";
  }

  function init() {
    $("leads-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      guarded(open);
    });
  }

  document.addEventListener("DOMContentLoaded", init);
  return { route, open, loadSpotted };
})();
