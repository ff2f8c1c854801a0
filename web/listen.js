// sallyport console: live listening over WebRTC, receive-only. One recvonly audio
// transceiver per party (track 1 the inmate, track 2 the called party and the gateway's
// prompts); the offer goes out with every ICE candidate gathered (no trickle), the gateway
// answers with its SDP. Each track is played through WebAudio: an AnalyserNode measures
// the party's level (before the volume), a GainNode sets its volume. (Chromium feeds a
// remote WebRTC track into WebAudio only while a media element plays it too: each track
// also plays in a muted <audio>.)
"use strict";

class Listener {
  constructor(callId, audioBox) {
    this.callId = callId;
    this.audioBox = audioBox;
    this.pc = null;
    this.listenerId = null;
    // Per track, in transceiver order: {audio, source, analyser, gain, samples}.
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
    audio.muted = true;
    const source = ctx.createMediaStreamSource(stream);
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 1024;
    const gain = ctx.createGain();
    source.connect(analyser);
    source.connect(gain);
    gain.connect(ctx.destination);
    this.parties[at] = { audio, source, analyser, gain, samples: new Float32Array(analyser.fftSize) };
    audio.play().catch(() => {});
  }

  // Track `i`'s level now: its RMS over the last 1024 samples on a dB scale, 0 (−60 dBFS
  // or quieter) to 1 (full scale).
  level(i) {
    const p = this.parties[i];
    if (!p) return 0;
    p.analyser.getFloatTimeDomainData(p.samples);
    let sum = 0;
    for (const x of p.samples) sum += x * x;
    const rms = Math.sqrt(sum / p.samples.length);
    if (rms <= 0) return 0;
    return Math.max(0, Math.min(1, 1 + (20 * Math.log10(rms)) / 60));
  }

  // Track `i`'s volume (1 as received, 0 silent, 2 twice as loud).
  setVolume(i, v) {
    const p = this.parties[i];
    if (p) p.gain.gain.value = v;
  }

  volume(i) {
    const p = this.parties[i];
    return p ? p.gain.gain.value : null;
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

  // Packets received on every inbound RTP stream, added up.
  async packetsReceived() {
    if (!this.pc) return 0;
    const stats = await this.pc.getStats();
    let n = 0;
    stats.forEach((s) => {
      if (s.type === "inbound-rtp" && s.kind === "audio") n += s.packetsReceived || 0;
    });
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
