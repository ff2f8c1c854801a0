// sallyport visitor page: the family member's side of a video visit, opened from the join
// link. The visit's secret is the link's fragment (`#<secret>`): a fragment never reaches
// a server's logs or a Referer header. A reload keeps it, so a reload rejoins.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const secret = decodeURIComponent(location.hash.slice(1));
  const when = (iso) => new Date(iso).toLocaleString([], { dateStyle: "medium", timeStyle: "short" });

  function fail(text) {
    $("error").textContent = text;
    $("error").hidden = false;
  }

  async function visit() {
    const r = await fetch("/api/v1/visit-session", { headers: { Authorization: `Visit ${secret}` } });
    const body = await r.json().catch(() => ({}));
    if (!r.ok) {
      const e = body.error || {};
      throw new Error(`${e.message || r.statusText} (${e.code || r.status})`);
    }
    return body;
  }

  async function start() {
    document.body.dataset.ready = "1";
    if (!secret) return fail("This page needs the link from your visit confirmation.");
    let v;
    try { v = await visit(); } catch (e) { return fail(e.message); }
    $("visit-inmate").textContent = v.inmate_name || "";
    $("visit-start").textContent = when(v.slot_start);
    $("visit-end").textContent = when(v.slot_end);
    if (v.opens_in_secs > 0) {
      $("visit-opens").textContent = `The visit opens in about ${Math.ceil(v.opens_in_secs / 60)} minute(s).`;
    }
    $("check-view").hidden = false;
    const room = new VisitRoom(roomElements(), secret);
    // The page's room, for diagnostics (the browser tests read its peer's getStats()).
    window.visitRoom = room;
    $("check-start").addEventListener("click", async () => {
      try {
        const stream = await room.media();
        $("check-video").srcObject = stream;
        $("check-preview").hidden = false;
        meter(stream, $("check-level"));
      } catch (e) {
        fail(`The camera or microphone could not be used: ${e.message || e}`);
      }
    });
    $("join").addEventListener("click", () => {
      $("check-view").hidden = true;
      $("room-view").hidden = false;
      room.join();
    });
    $("room-leave").addEventListener("click", () => room.leave());
  }

  start();
})();
