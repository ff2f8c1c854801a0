// sallyport console: messages (#/messages). For the facility chosen: the messages waiting
// for review (approve, or reject with a reason the sender sees), the watch words (admins
// add and remove them) and the messaging settings (admins). Uses app.js's `el`, `row`,
// `when`, `guarded`, `$` and api.js's `Api` (loaded with it).
"use strict";

const Messages = (() => {
  let loadedFor = null;

  async function facilities() {
    const token = Api.token();
    if (loadedFor === token) return;
    const list = await Api.get("/facilities");
    const sel = $("msg-facility");
    sel.replaceChildren();
    for (const f of list || []) sel.appendChild(el("option", f.id + " — " + f.name, { value: f.id }));
    loadedFor = token;
  }

  function facility() {
    return $("msg-facility").value;
  }

  function decisionCell(m) {
    const td = document.createElement("td");
    const approve = el("button", "Approve", { type: "button", class: "approve" });
    approve.addEventListener("click", () => guarded(async () => {
      await Api.post("/messages/" + encodeURIComponent(m.id) + "/approve");
      await queue();
    }));
    const label = el("label", "Reason", { for: "reason-" + m.id, class: "sr-only" });
    const reason = el("input", undefined, { id: "reason-" + m.id, placeholder: "Reason to reject" });
    const reject = el("button", "Reject", { type: "button", class: "danger reject" });
    reject.addEventListener("click", () => guarded(async () => {
      await Api.post("/messages/" + encodeURIComponent(m.id) + "/reject", { reason: reason.value });
      await queue();
    }));
    td.append(approve, label, reason, reject);
    return td;
  }

  // Object URLs of the photos shown, released when the queue is drawn again.
  let photoUrls = [];

  // A photo to review: fetched with the bearer token (audited message.photo), shown from
  // a blob.
  function photo(p, from) {
    const img = el("img", undefined, { class: "photo", alt: "Photo from " + from,
      width: String(p.width), height: String(p.height), "data-photo-id": p.id });
    Api.download("/message-photos/" + encodeURIComponent(p.id)).then((d) => {
      const url = URL.createObjectURL(d.blob);
      photoUrls.push(url);
      img.src = url;
    }).catch(() => { img.alt = "Photo from " + from + " (could not be loaded)"; });
    return img;
  }

  async function queue() {
    for (const u of photoUrls) URL.revokeObjectURL(u);
    photoUrls = [];
    const list = await Api.get("/messages/review?facility_id=" + encodeURIComponent(facility()));
    const body = $("queue-body");
    body.replaceChildren();
    for (const m of list) {
      const from = m.direction === "from_inmate" ? m.inmate_name : m.contact_name;
      const to = m.direction === "from_inmate" ? m.contact_name : m.inmate_name;
      const tr = row([localTime(m.created_at, m.time_zone), from, to]);
      tr.dataset.messageId = m.id;
      const text = el("td", m.body, { class: "message-body" });
      for (const p of m.photos) text.appendChild(photo(p, from));
      tr.appendChild(text);
      tr.appendChild(el("td", m.flagged.join(", ")));
      tr.appendChild(decisionCell(m));
      body.appendChild(tr);
    }
    $("queue-empty").hidden = list.length > 0;
  }

  async function words() {
    const ul = $("words-list");
    ul.replaceChildren();
    let list;
    try {
      list = await Api.get("/facilities/" + encodeURIComponent(facility()) + "/watch-words");
    } catch (e) {
      // Investigators review; only admins see and edit the list.
      if (e.status === 403) { $("word-form").hidden = true; return; }
      throw e;
    }
    $("word-form").hidden = false;
    for (const w of list) {
      const li = el("li", w.word + " ");
      li.dataset.wordId = w.id;
      const b = el("button", "Remove", { type: "button", "aria-label": "Remove " + w.word });
      b.addEventListener("click", () => guarded(async () => {
        await Api.del("/facilities/" + encodeURIComponent(facility()) + "/watch-words/" + encodeURIComponent(w.id));
        await words();
      }));
      li.appendChild(b);
      ul.appendChild(li);
    }
  }

  async function settings() {
    const s = await Api.get("/facilities/" + encodeURIComponent(facility()) + "/messaging");
    $("msg-review").value = s.review;
    $("msg-max-chars").value = s.max_chars;
    $("msg-price").value = s.price;
    $("msg-max-photos").value = s.max_photos;
    $("msg-max-photo-bytes").value = s.max_photo_bytes;
    $("msg-retention").value = s.retention_days;
    $("msg-settings-status").textContent = "";
  }

  async function saveSettings(ev) {
    ev.preventDefault();
    await Api.put("/facilities/" + encodeURIComponent(facility()) + "/messaging", {
      review: $("msg-review").value,
      max_chars: Number($("msg-max-chars").value),
      price: $("msg-price").value.trim(),
      max_photos: Number($("msg-max-photos").value),
      max_photo_bytes: Number($("msg-max-photo-bytes").value),
      retention_days: Number($("msg-retention").value),
    });
    $("msg-settings-status").textContent = "Saved.";
  }

  async function addWord(ev) {
    ev.preventDefault();
    await Api.post("/facilities/" + encodeURIComponent(facility()) + "/watch-words", { word: $("word-new").value });
    $("word-new").value = "";
    await words();
  }

  async function refresh() {
    await queue();
    await words();
    await settings();
  }

  async function open() {
    await facilities();
    await refresh();
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("msg-facility-form").addEventListener("submit", (ev) => { ev.preventDefault(); guarded(refresh); });
    $("word-form").addEventListener("submit", (ev) => guarded(() => addWord(ev)));
    $("msg-settings-form").addEventListener("submit", (ev) => guarded(() => saveSettings(ev)));
  });

  return { open, refresh };
})();
