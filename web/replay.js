// sallyport console: a recorded video visit played back as one. The two sides' recordings
// (one WebM per participant) play side by side in two <video> elements driven by one set of
// controls. Each file's time 0 is its own first frame, stamped on the gateway's clock as the
// recording's `started_at` (docs/architecture.md, "Time line and alignment"), so the visit's
// time line starts at the earlier `started_at` and the later recording is shifted by the
// difference: at visit time t, a side plays at `t - offset`, waits at its first frame before
// its start and rests on its last after its end.
//
// The side furthest into its own file that is still playing is the clock; the other follows
// it: a small drift is taken up by playing it a little faster or slower, a drift over
// `SEEK_DRIFT` seconds by seeking it. When no side covers the moment (both wait or rest),
// the wall clock moves the time line on.
"use strict";

class VisitReplay {
  // `sides`: [{ side: "visitor"|"inmate", video: HTMLVideoElement, recording }] where
  // `recording` is the API's recording (id, started_at, duration_ms, ...).
  constructor(sides) {
    const starts = sides.map((s) => Date.parse(s.recording.started_at));
    const t0 = Math.min(...starts);
    this.sides = sides.map((s, i) => ({ ...s, offset: (starts[i] - t0) / 1000 }));
    this.startedAt = t0;
    this.playing = false;
    this.position = 0;
    this.wallAt = 0;
    this.timer = null;
    this.listeners = [];
  }

  static SEEK_DRIFT = 0.25;
  static NUDGE_DRIFT = 0.04;

  // A side's length in seconds: the file's own (once its metadata is in), else the row's;
  // a recording still being written (a visit in progress) is as long as it is old.
  length(s) {
    const d = s.video.duration;
    if (Number.isFinite(d) && d > 0) return d;
    if (s.recording.duration_ms !== null && s.recording.duration_ms !== undefined) {
      return s.recording.duration_ms / 1000;
    }
    return Math.max(0, (Date.now() - Date.parse(s.recording.started_at)) / 1000);
  }

  // The visit's length: where the later-ending side ends.
  duration() {
    return Math.max(0, ...this.sides.map((s) => s.offset + this.length(s)));
  }

  // The side that sets the time: playing, inside its file, the furthest along it.
  clockSide() {
    let best = null;
    for (const s of this.sides) {
      const v = s.video;
      if (v.paused || v.ended || v.seeking || v.readyState < 2) continue;
      if (!best || v.currentTime > best.video.currentTime) best = s;
    }
    return best;
  }

  // The visit time now (seconds from the earlier recording's start).
  now() {
    if (!this.playing) return this.position;
    const clock = this.clockSide();
    if (clock) return clock.offset + clock.video.currentTime;
    return this.position + (performance.now() - this.wallAt) / 1000;
  }

  on(fn) {
    this.listeners.push(fn);
  }

  emit() {
    for (const fn of this.listeners) fn(this);
  }

  async play() {
    if (this.playing) return;
    if (this.position >= this.duration() - 0.05) this.position = 0;
    this.playing = true;
    this.wallAt = performance.now();
    await this.sync(true);
    this.timer = setInterval(() => this.sync(false), 100);
    this.emit();
  }

  pause() {
    this.position = Math.min(this.now(), this.duration());
    this.playing = false;
    clearInterval(this.timer);
    this.timer = null;
    for (const s of this.sides) s.video.pause();
    this.emit();
  }

  toggle() {
    return this.playing ? (this.pause(), undefined) : this.play();
  }

  // Moves the time line to `t` (seconds): both sides seek there, each by its offset.
  async seek(t) {
    this.position = Math.max(0, Math.min(t, this.duration()));
    this.wallAt = performance.now();
    const seeks = this.sides.map((s) => {
      const local = Math.max(0, Math.min(this.position - s.offset, this.length(s)));
      return seekVideo(s.video, local);
    });
    for (const s of this.sides) s.video.pause();
    await Promise.all(seeks);
    if (this.playing) await this.sync(true);
    this.emit();
  }

  // Brings each side to where the time line is: started, paused, nudged or moved.
  async sync(starting) {
    if (!this.playing) return;
    const t = this.now();
    const end = this.duration();
    if (t >= end) {
      this.pause();
      this.position = end;
      this.emit();
      return;
    }
    if (!this.clockSide()) {
      this.position = t;
      this.wallAt = performance.now();
    }
    const clock = this.clockSide();
    const starts = [];
    for (const s of this.sides) {
      const v = s.video;
      const local = t - s.offset;
      if (local < 0 || local >= this.length(s)) {
        if (!v.paused) v.pause();
        const rest = local < 0 ? 0 : this.length(s);
        if (!v.seeking && Math.abs(v.currentTime - rest) > VisitReplay.SEEK_DRIFT) v.currentTime = rest;
        continue;
      }
      if (v.paused) {
        if (starting || Math.abs(v.currentTime - local) > VisitReplay.NUDGE_DRIFT) v.currentTime = local;
        v.playbackRate = 1;
        starts.push(v.play().catch((e) => {
          if (e && e.name !== "AbortError") showError(new Error("playback: " + (e.message || String(e))));
        }));
        continue;
      }
      if (s === clock || v.seeking) {
        v.playbackRate = 1;
        continue;
      }
      const drift = v.currentTime - local;
      if (Math.abs(drift) > VisitReplay.SEEK_DRIFT) {
        v.currentTime = local;
        v.playbackRate = 1;
      } else if (Math.abs(drift) > VisitReplay.NUDGE_DRIFT) {
        v.playbackRate = drift > 0 ? 0.9 : 1.1;
      } else {
        v.playbackRate = 1;
      }
    }
    await Promise.all(starts);
    if (!starting) this.emit();
  }

  // Stops and forgets the files (the view is left).
  stop() {
    this.playing = false;
    clearInterval(this.timer);
    this.timer = null;
    for (const s of this.sides) {
      s.video.pause();
      s.video.removeAttribute("src");
      s.video.load();
    }
  }
}

// Sets a video's time and resolves once it has seeked (or at once when it is there).
function seekVideo(v, t) {
  return new Promise((resolve) => {
    if (Math.abs(v.currentTime - t) < 0.001 && !v.seeking) {
      resolve();
      return;
    }
    const done = () => {
      v.removeEventListener("seeked", done);
      v.removeEventListener("error", done);
      resolve();
    };
    v.addEventListener("seeked", done);
    v.addEventListener("error", done);
    v.currentTime = t;
  });
}
