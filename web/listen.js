// sallyport console: live listening over WebRTC, receive-only. One recvonly audio
// transceiver per party (track 1 the inmate, track 2 the called party and the gateway's
// prompts); the offer goes out with every ICE candidate gathered (no trickle), the gateway
// answers with its SDP. Each track is played through WebAudio: an AnalyserNode measures
// the party's level (before the volume), a GainNode sets its volume (0-200 %), a second
// AnalyserNode measures what goes out (after the volume). Without a running audio
// context (no sound device), each track's <audio> element plays it instead, its volume
// 0-100 % (an element cannot amplify), and the meters read the receivers' audioLevel.
// (Chromium feeds a
// remote WebRTC track into WebAudio only while a media element plays it too: each track
// also plays in a muted <audio>.)
"use strict";

class Listener {
  constructor(callId, audioBox) {
    this.callId = callId;
    this.audioBox = audioBox;
    this.pc = null;
    this.listenerId = null;
    // Per track, in transceiver order: {audio, source, analyser, gain, out, samples}.
    this.parties = [];
  }

  // The page's one AudioContext, created (or resumed) on an investigator's click.
  static audioContext() {
    const Ctx = window.AudioContext || window.webkitAudioContext;
    if (!Ctx) return null;
    if (!Listener.ctx) Listener.ctx = new Ctx();
    if (Listener.ctx.state === "suspended") Listener.ctx.resume().catch(() => {});
    return Listener.ctx;
  }

  async start() {
    const pc = new RTCPeerConnection({ iceServers: [] });
    this.pc = pc;
    pc.addTransceiver("audio", { direction: "recvonly" });
    pc.addTransceiver("audio", { direction: "recvonly" });
    pc.ontrack = (ev) => this.play(ev);
    await pc.setLocalDescription(await pc.createOffer());
    await Listener.gathered(pc);
    const answer = await Api.post("/calls/" + encodeURIComponent(this.callId) + "/listen",
      { sdp: pc.localDescription.sdp });
    this.listenerId = answer.listener_id;
    await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
  }

  play(ev) {
    const stream = new MediaStream([ev.track]);
    const audio = document.createElement("audio");
    audio.autoplay = true;
    audio.srcObject = stream;
    audio.dataset.mid = ev.transceiver ? String(ev.transceiver.mid) : "";
    const index = this.pc ? this.pc.getTransceivers().indexOf(ev.transceiver) : -1;
    const at = index >= 0 ? index : this.parties.length;
    audio.dataset.track = String(at + 1);
    this.audioBox.appendChild(audio);
    const ctx = Listener.audioContext();
    if (!ctx) return; // no WebAudio: the element plays it, without meter or volume
    // The graph plays the track while it runs; otherwise (an audio context that could not
    // start: no sound device, a browser's autoplay rule) the element does, so the
    // investigator always hears it (`route`, called on every meter tick).
    audio.muted = ctx.state === "running";
    const source = ctx.createMediaStreamSource(stream);
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 1024;
    const gain = ctx.createGain();
    const out = ctx.createAnalyser();
    out.fftSize = analyser.fftSize;
    source.connect(analyser);
    source.connect(gain);
    gain.connect(out);
    out.connect(ctx.destination);
    this.parties[at] = { audio, source, analyser, gain, out, samples: new Float32Array(analyser.fftSize) };
    audio.play().catch(() => {});
  }

  // Each track to the graph while the audio context runs, else to its element.
  route() {
    const running = !!Listener.ctx && Listener.ctx.state === "running";
    for (const p of this.parties) if (p && p.audio.muted !== running) p.audio.muted = running;
    return running;
  }

  // Track `i`'s level now on a dB scale, 0 (−60 dBFS or quieter) to 1 (full scale): the RMS
  // of its last 1024 samples while the audio context runs, else the receiver's own
  // `audioLevel` (getStats, twice a second).
  level(i) {
    const rms = this.route() ? this.rms(i, "analyser") : (this.statsLevels || [])[i] || 0;
    if (rms <= 0) return 0;
    return Math.max(0, Math.min(1, 1 + (20 * Math.log10(rms)) / 60));
  }

  // The RMS of track `i`'s last 1024 samples as received (`analyser`) or as played, after
  // its volume (`out`); 0 without a running audio context.
  rms(i, node) {
    const p = this.parties[i];
    if (!p || !Listener.ctx || Listener.ctx.state !== "running") return 0;
    p[node].getFloatTimeDomainData(p.samples);
    let sum = 0;
    for (const x of p.samples) sum += x * x;
    return Math.sqrt(sum / p.samples.length);
  }

  // The loudest volume this browser can give a track now: 2 through a running audio
  // graph, 1 through an element.
  static maxVolume() {
    return Listener.ctx && Listener.ctx.state === "running" ? 2 : 1;
  }

  // Track `i`'s volume (1 as received, 0 silent, 2 twice as loud): the graph's gain, and
  // the element's volume for when the element plays it (at most 1).
  setVolume(i, v) {
    const p = this.parties[i];
    if (!p) return;
    p.gain.gain.value = v;
    p.audio.volume = Math.max(0, Math.min(1, v));
  }

  // Track `i`'s volume as it is played now: the gain while the graph plays it, else the
  // element's volume.
  volume(i) {
    const p = this.parties[i];
    if (!p) return null;
    return this.route() ? p.gain.gain.value : p.audio.volume;
  }

  // Resolves when ICE gathering is complete (or after 3 s with what there is).
  static gathered(pc) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        if (pc.iceGatheringState !== "complete") return;
        pc.removeEventListener("icegatheringstatechange", done);
        resolve();
      };
      pc.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, 3000);
    });
  }

  state() {
    return this.pc ? this.pc.connectionState : "closed";
  }

  // Why a connection failed, from the addresses each side offered (the candidates of the
  // offer and of the gateway's answer): said to the investigator instead of "failed".
  whyFailed() {
    const addresses = (desc) => [...new Set(((desc && desc.sdp) || "").split(/\r?\n/)
      .filter((l) => l.startsWith("a=candidate:")).map((l) => l.split(" ")[4]).filter(Boolean))];
    const mine = addresses(this.pc && this.pc.localDescription);
    const theirs = addresses(this.pc && this.pc.remoteDescription);
    const loopback = (a) => a === "::1" || a.startsWith("127.");
    const gateway = theirs.length ? theirs.join(", ") : "no address";
    const fix = " The gateway's rtp.advertised_ip must be an address this computer reaches over UDP" +
      " (or its rtp.listen_ip a wildcard, 0.0.0.0, so that it offers every address it has).";
    if (!mine.length) {
      return "this browser offered no address to connect from (its privacy settings hide them)." + fix;
    }
    if (mine.every((a) => a.endsWith(".local"))) {
      return "this browser offered only hidden (mDNS) addresses (" + mine.join(", ") +
        "), which the gateway cannot use; allow the page camera or microphone access, or turn off the hiding of local addresses.";
    }
    if (theirs.length && theirs.every(loopback) && !mine.some(loopback)) {
      return "the gateway offered only " + gateway + " (loopback) and this browser only " + mine.join(", ") +
        ": they cannot reach each other." + fix;
    }
    return "no connection between this browser (" + mine.join(", ") + ") and the gateway (" + gateway + ")." + fix;
  }

  // Packets received on every inbound RTP stream, added up; each track's `audioLevel`
  // kept for the meters.
  async packetsReceived() {
    if (!this.pc) return 0;
    let n = 0;
    const levels = [];
    for (const t of this.pc.getTransceivers()) {
      const stats = await t.receiver.getStats();
      let level = null;
      stats.forEach((s) => {
        if (s.type !== "inbound-rtp" || s.kind !== "audio") return;
        n += s.packetsReceived || 0;
        if (typeof s.audioLevel === "number") level = s.audioLevel;
      });
      levels.push(level);
    }
    this.statsLevels = levels;
    return n;
  }

  async stop() {
    const pc = this.pc;
    this.pc = null;
    if (pc) pc.close();
    for (const p of this.parties) {
      if (!p) continue;
      p.source.disconnect();
      p.gain.disconnect();
      p.out.disconnect();
      p.audio.srcObject = null;
    }
    this.parties = [];
    this.audioBox.replaceChildren();
    if (this.listenerId) {
      const id = this.listenerId;
      this.listenerId = null;
      await Api.del("/calls/" + encodeURIComponent(this.callId) + "/listen/" + encodeURIComponent(id));
    }
  }
}
