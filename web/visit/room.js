// sallyport visit room: one participant's side of a video visit, shared by the visitor page
// and the inmate kiosk. It holds the WebSocket to the gateway (messages in
// src/visit/signal.rs), the one RTCPeerConnection (the gateway is the only peer: ICE-lite,
// host candidates, no STUN/TURN), the countdown, the warnings and the end.
"use strict";

const REASONS = {
  slot_ended: "The visit time is over.",
  funds_exhausted: "The account has run out of funds.",
  debit_timeout: "The visit could not be charged and was ended.",
  inmate_left: "The inmate ended the visit.",
  visitor_left: "The visitor ended the visit.",
  no_show: "The other person did not join in time. Nothing was charged.",
  terminated: "The visit was ended by the facility.",
  system: "The visit ended because of a system problem.",
};

const PHASES = {
  lobby: "Waiting for the visit to start",
  waiting: "Waiting for the other person to connect",
  connected: "Connected",
  paused: "The other person dropped out; the time is not charged until they are back",
};

function fmtDuration(secs) {
  const s = Math.max(0, Math.floor(secs));
  const m = Math.floor(s / 60);
  return `${m}:${String(s % 60).padStart(2, "0")}`;
}

// Fills a pre-made view: elements are found by id under the page (see web/README.md).
class VisitRoom {
  constructor(els, credential) {
    this.els = els;
    this.credential = credential;
    this.ws = null;
    this.pc = null;
    this.local = null;
    this.remaining = null;
    this.tick = null;
    this.ended = false;
    this.offered = false;
    // Called with the reason once the visit has ended (the kiosk goes back to its list).
    this.afterEnd = null;
  }

  say(text) {
    this.els.status.textContent = text;
  }

  // Asks for the camera and microphone (the preview before the slot reuses the stream).
  async media() {
    if (!this.local) {
      this.local = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
      this.els.self.srcObject = this.local;
    }
    return this.local;
  }

  join() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    this.ws = new WebSocket(`${scheme}//${location.host}/api/v1/visit-session/ws`);
    this.ws.onopen = () => this.send({ type: "hello", credential: this.credential });
    this.ws.onmessage = (ev) => this.onMessage(ev.data);
    this.ws.onclose = () => {
      if (!this.ended) this.say("Connection lost. Reload the page to rejoin while the visit lasts.");
    };
    this.tick = setInterval(() => this.countdown(), 1000);
  }

  send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  leave() {
    this.send({ type: "leave" });
  }

  async onMessage(text) {
    let msg;
    try { msg = JSON.parse(text); } catch { return; }
    switch (msg.type) {
      case "state": return this.onState(msg);
      case "answer": return this.onAnswer(msg.sdp);
      case "warning": return this.onWarning(msg);
      case "ended": return this.onEnded(msg.reason);
      case "error":
        // Another window took over this side: this one is done, not disconnected.
        if (msg.code === "opened_elsewhere") this.ended = true;
        return this.showError(`${msg.message} (${msg.code})`);
      default: return undefined;
    }
  }

  async onState(msg) {
    this.remaining = msg.remaining_secs;
    this.els.phase.textContent = PHASES[msg.phase] || msg.phase;
    this.els.phase.dataset.phase = msg.phase;
    if (msg.opens_in_secs !== undefined && msg.phase === "lobby") {
      this.say(`The visit opens in ${fmtDuration(msg.opens_in_secs)}.`);
    }
    if (msg.balance !== undefined) {
      this.els.balance.hidden = false;
      this.els.balanceValue.textContent = `$${msg.balance}`;
    }
    this.countdown();
    if (msg.phase !== "lobby" && !this.offered) {
      this.offered = true;
      try { await this.offer(); } catch (e) { this.showError(`Could not start the video: ${e.message || e}`); }
    }
  }

  countdown() {
    if (this.remaining === null) return;
    this.els.remaining.textContent = fmtDuration(this.remaining);
    if (this.remaining > 0 && !this.ended) this.remaining -= 1;
  }

  // One offer with everything gathered (the gateway takes no trickled candidates).
  async offer() {
    const stream = await this.media();
    this.pc = new RTCPeerConnection({ iceServers: [] });
    for (const t of stream.getTracks()) this.pc.addTrack(t, stream);
    this.pc.ontrack = (ev) => {
      if (!this.els.other.srcObject) this.els.other.srcObject = new MediaStream();
      this.els.other.srcObject.addTrack(ev.track);
    };
    this.pc.onconnectionstatechange = () => {
      this.els.connection.textContent = this.pc.connectionState;
    };
    await this.pc.setLocalDescription(await this.pc.createOffer());
    await new Promise((resolve) => {
      if (this.pc.iceGatheringState === "complete") return resolve();
      const done = () => { if (this.pc.iceGatheringState === "complete") resolve(); };
      this.pc.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, 3000);
    });
    this.send({ type: "offer", sdp: this.pc.localDescription.sdp });
  }

  async onAnswer(sdp) {
    if (this.pc) await this.pc.setRemoteDescription({ type: "answer", sdp });
  }

  onWarning(msg) {
    this.remaining = msg.remaining_secs;
    this.countdown();
    const what = msg.reason === "funds_low" ? "The account is running low" : "The visit time is ending";
    this.els.warning.textContent = `${what}: about ${fmtDuration(msg.remaining_secs)} left.`;
    this.els.warning.hidden = false;
  }

  onEnded(reason) {
    this.ended = true;
    clearInterval(this.tick);
    // Only the outcome stays on screen: no pictures, no button that does nothing now.
    this.els.phase.textContent = "Ended";
    this.els.phase.dataset.phase = "ended";
    this.els.remaining.textContent = fmtDuration(0);
    this.els.videos.hidden = true;
    this.els.leave.hidden = true;
    this.els.ended.hidden = false;
    this.els.endedReason.textContent = REASONS[reason] || reason;
    this.els.endedReason.dataset.reason = reason;
    this.els.warning.hidden = true;
    this.say("The visit has ended.");
    if (this.pc) this.pc.close();
    if (this.local) for (const t of this.local.getTracks()) t.stop();
    if (this.ws) this.ws.close();
    if (this.afterEnd) this.afterEnd(reason);
  }

  showError(text) {
    this.els.error.textContent = text;
    this.els.error.hidden = false;
  }
}

// The elements of a room view, by id.
function roomElements() {
  const $ = (id) => document.getElementById(id);
  return {
    status: $("room-status"), phase: $("room-phase"), remaining: $("room-remaining"),
    balance: $("room-balance"), balanceValue: $("room-balance-value"), warning: $("room-warning"),
    ended: $("room-ended"), endedReason: $("room-ended-reason"), error: $("room-error"),
    self: $("room-self"), other: $("room-other"), connection: $("room-connection"),
    videos: $("room-videos"), leave: $("room-leave"),
  };
}

// A microphone level meter on the preview (an AnalyserNode; no audio leaves the page).
function meter(stream, el) {
  const ctx = new AudioContext();
  const analyser = ctx.createAnalyser();
  ctx.createMediaStreamSource(stream).connect(analyser);
  const data = new Uint8Array(analyser.fftSize);
  const draw = () => {
    analyser.getByteTimeDomainData(data);
    let peak = 0;
    for (const v of data) peak = Math.max(peak, Math.abs(v - 128));
    el.value = Math.min(100, Math.round((peak / 128) * 100));
    requestAnimationFrame(draw);
  };
  draw();
}

window.VisitRoom = VisitRoom;
window.roomElements = roomElements;
window.meter = meter;
