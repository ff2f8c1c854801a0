// sallyport console: watching a live video visit over WebRTC, receive-only. Four recvonly
// transceivers in the order the gateway expects: audio and video of the visitor, then
// audio and video of the inmate. The offer goes out with every ICE candidate gathered (no
// trickle, as for listening), the gateway answers with its SDP.
"use strict";

const WATCH_SIDES = ["visitor", "inmate"];

class Watcher {
  // `videos`: { visitor: <video>, inmate: <video> }, each shows one side (picture and sound).
  constructor(visitId, videos) {
    this.visitId = visitId;
    this.videos = videos;
    this.pc = null;
    this.watcherId = null;
    this.streams = { visitor: new MediaStream(), inmate: new MediaStream() };
    this.mids = { visitor: [], inmate: [] };
  }

  async start() {
    const pc = new RTCPeerConnection({ iceServers: [] });
    this.pc = pc;
    const order = [["audio", "visitor"], ["video", "visitor"], ["audio", "inmate"], ["video", "inmate"]];
    const transceivers = order.map(([kind]) => pc.addTransceiver(kind, { direction: "recvonly" }));
    pc.ontrack = (ev) => {
      const i = transceivers.indexOf(ev.transceiver);
      if (i < 0) return;
      const side = order[i][1];
      this.streams[side].addTrack(ev.track);
      this.show(side);
    };
    await pc.setLocalDescription(await pc.createOffer());
    await Listener.gathered(pc);
    for (let i = 0; i < order.length; i++) this.mids[order[i][1]].push(String(transceivers[i].mid));
    const answer = await Api.post("/visits/" + encodeURIComponent(this.visitId) + "/watch",
      { sdp: pc.localDescription.sdp, type: "offer" });
    this.watcherId = answer.watcher_id;
    await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
  }

  show(side) {
    const video = this.videos[side];
    if (!video) return;
    if (video.srcObject !== this.streams[side]) video.srcObject = this.streams[side];
    // Started by the click on Watch; a browser that still refuses autoplay shows controls.
    video.play().catch(() => { video.controls = true; });
  }

  state() {
    return this.pc ? this.pc.connectionState : "closed";
  }

  // Per side: video frames decoded and audio packets received, from getStats().
  async counts() {
    const out = { visitor: { frames: 0, audio: 0 }, inmate: { frames: 0, audio: 0 } };
    if (!this.pc) return out;
    const stats = await this.pc.getStats();
    stats.forEach((s) => {
      if (s.type !== "inbound-rtp") return;
      const side = WATCH_SIDES.find((w) => this.mids[w].includes(String(s.mid)));
      if (!side) return;
      if (s.kind === "video") out[side].frames += s.framesDecoded || 0;
      if (s.kind === "audio") out[side].audio += s.packetsReceived || 0;
    });
    return out;
  }

  async stop() {
    const pc = this.pc;
    this.pc = null;
    if (pc) pc.close();
    for (const side of WATCH_SIDES) {
      const video = this.videos[side];
      if (video) {
        video.pause();
        video.srcObject = null;
      }
    }
    if (this.watcherId) {
      const id = this.watcherId;
      this.watcherId = null;
      // A visit that ended meanwhile took its watchers along: nothing left to stop.
      await Api.del("/visits/" + encodeURIComponent(this.visitId) + "/watch/" + encodeURIComponent(id))
        .catch((e) => { if (!(e instanceof ApiError && e.status === 404)) throw e; });
    }
  }
}
