// sallyport console: live listening over WebRTC, receive-only. One recvonly audio
// transceiver per party (inmate, called party); the offer goes out with every ICE candidate
// gathered (no trickle), the gateway answers with its SDP.
"use strict";

class Listener {
  constructor(callId, audioBox) {
    this.callId = callId;
    this.audioBox = audioBox;
    this.pc = null;
    this.listenerId = null;
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
    const audio = document.createElement("audio");
    audio.autoplay = true;
    audio.srcObject = ev.streams[0] || new MediaStream([ev.track]);
    audio.dataset.mid = ev.transceiver ? String(ev.transceiver.mid) : "";
    this.audioBox.appendChild(audio);
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
    this.audioBox.replaceChildren();
    if (this.listenerId) {
      const id = this.listenerId;
      this.listenerId = null;
      await Api.del("/calls/" + encodeURIComponent(this.callId) + "/listen/" + encodeURIComponent(id));
    }
  }
}
