// sallyport console: a call's timeline on one time axis, with the waveform of both channels
// of its recording drawn from the WAV itself (no library): the file is parsed here (RIFF
// chunks; PCM 8/16-bit, G.711 A-law or µ-law), each channel decoded to [-1, 1], its peaks
// drawn on a canvas (inmate above the line, called party below), and its silent stretches
// found for "skip silence". The axis runs from the first event (the INVITE) to the last
// (the end) or the recording's end, whichever is later; the recording's part is shaded.
"use strict";

// One G.711 byte as a linear sample in [-1, 1] (ITU-T G.711 expansion).
function ulawSample(byte) {
  const u = ~byte & 0xff;
  const t = (((u & 0x0f) << 3) + 0x84) << ((u & 0x70) >> 4);
  return ((u & 0x80) ? (0x84 - t) : (t - 0x84)) / 32768;
}

function alawSample(byte) {
  const a = byte ^ 0x55;
  const seg = (a & 0x70) >> 4;
  let t = (a & 0x0f) << 4;
  t = seg === 0 ? t + 8 : seg === 1 ? t + 0x108 : (t + 0x108) << (seg - 1);
  return ((a & 0x80) ? t : -t) / 32768;
}

const G711 = { 6: null, 7: null };

function g711Table(format) {
  if (!G711[format]) {
    const table = new Float32Array(256);
    for (let i = 0; i < 256; i++) table[i] = format === 7 ? ulawSample(i) : alawSample(i);
    G711[format] = table;
  }
  return G711[format];
}

// A RIFF/WAVE file (ArrayBuffer) as {rate, channels: [Float32Array…], duration}.
function decodeWav(buf) {
  const v = new DataView(buf);
  const tag = (at) => String.fromCharCode(v.getUint8(at), v.getUint8(at + 1), v.getUint8(at + 2), v.getUint8(at + 3));
  if (v.byteLength < 12 || tag(0) !== "RIFF" || tag(8) !== "WAVE") throw new Error("not a WAV file");
  let at = 12;
  let fmt = null;
  let data = null;
  while (at + 8 <= v.byteLength) {
    const id = tag(at);
    const size = v.getUint32(at + 4, true);
    const body = at + 8;
    if (id === "fmt ") {
      fmt = { format: v.getUint16(body, true), channels: v.getUint16(body + 2, true),
        rate: v.getUint32(body + 4, true), bits: v.getUint16(body + 14, true) };
    } else if (id === "data") {
      // A file still being written may say more (or less) than there is.
      data = { offset: body, size: Math.min(size, v.byteLength - body) };
      break;
    }
    at = body + size + (size & 1);
  }
  if (!fmt || !data) throw new Error("the WAV file has no fmt or data chunk");
  const n = fmt.channels;
  const width = fmt.bits / 8;
  if (n < 1 || ![1, 2].includes(width) || ![1, 6, 7].includes(fmt.format)) {
    throw new Error("unsupported WAV format " + fmt.format + "/" + fmt.bits + " bit");
  }
  const frames = Math.floor(data.size / (width * n));
  const channels = [];
  for (let c = 0; c < n; c++) channels.push(new Float32Array(frames));
  const table = fmt.format === 1 ? null : g711Table(fmt.format);
  let p = data.offset;
  for (let i = 0; i < frames; i++) {
    for (let c = 0; c < n; c++) {
      let x;
      if (table) x = table[v.getUint8(p)];
      else if (width === 1) x = (v.getUint8(p) - 128) / 128;
      else x = v.getInt16(p, true) / 32768;
      channels[c][i] = x;
      p += width;
    }
  }
  return { rate: fmt.rate, channels, duration: frames / fmt.rate };
}

// The loudest sample (absolute) of each of `columns` equal slices of `samples`.
function peaks(samples, columns) {
  const out = new Float32Array(columns);
  const per = samples.length / columns;
  for (let col = 0; col < columns; col++) {
    let m = 0;
    const end = Math.min(samples.length, Math.floor((col + 1) * per));
    for (let i = Math.floor(col * per); i < end; i++) {
      const a = Math.abs(samples[i]);
      if (a > m) m = a;
    }
    out[col] = m;
  }
  return out;
}

// Stretches (seconds, [{from, to}]) of at least `minSecs` where every channel stays
// under `threshold` (of full scale) in each 20 ms window.
function silentStretches(wav, threshold, minSecs) {
  const win = Math.max(1, Math.round(wav.rate / 50));
  const length = wav.channels[0].length;
  const out = [];
  let start = null;
  for (let i = 0; i < length; i += win) {
    let loud = false;
    for (const ch of wav.channels) {
      const end = Math.min(length, i + win);
      for (let j = i; j < end; j++) {
        if (Math.abs(ch[j]) >= threshold) {
          loud = true;
          break;
        }
      }
      if (loud) break;
    }
    if (!loud && start === null) start = i;
    if (loud && start !== null) {
      if ((i - start) / wav.rate >= minSecs) out.push({ from: start / wav.rate, to: i / wav.rate });
      start = null;
    }
  }
  if (start !== null && (length - start) / wav.rate >= minSecs) {
    out.push({ from: start / wav.rate, to: length / wav.rate });
  }
  return out;
}

// A call's events on one axis over the recording's waveform. `events` is the API's
// timeline (`at` RFC 3339, `kind`, …); `recording` the API's recording row or null.
class CallTimeline {
  constructor(canvas, markers, playhead, events, recording) {
    this.canvas = canvas;
    this.markers = markers;
    this.playhead = playhead;
    this.events = (events || []).map((e) => ({ ...e, ms: Date.parse(e.at) }));
    this.recording = recording || null;
    this.recStart = this.recording ? Date.parse(this.recording.started_at) : null;
    this.recLength = this.recording && this.recording.duration_ms ? this.recording.duration_ms / 1000 : null;
    this.wav = null;
    this.silences = [];
    this.peaks = null;
  }

  // The axis, in ms since the epoch: [first, last].
  span() {
    const times = this.events.map((e) => e.ms);
    if (this.recStart !== null) {
      times.push(this.recStart);
      if (this.recLength !== null) times.push(this.recStart + this.recLength * 1000);
    }
    if (!times.length) return [0, 1];
    const a = Math.min(...times);
    const b = Math.max(...times);
    return [a, b > a ? b : a + 1000];
  }

  // Where an instant (ms) lies on the axis, 0..1.
  x(ms) {
    const [a, b] = this.span();
    return Math.max(0, Math.min(1, (ms - a) / (b - a)));
  }

  // An event's time in the recording (seconds; negative before it started), or null.
  offset(e) {
    return this.recStart === null ? null : (e.ms - this.recStart) / 1000;
  }

  // The recording's time `t` (s) as an instant.
  instant(t) {
    return this.recStart + t * 1000;
  }

  // The decoded recording: waveform and silent stretches.
  setWav(wav) {
    this.wav = wav;
    this.recLength = wav.duration;
    this.silences = silentStretches(wav, 0.02, 1.0);
    this.draw();
  }

  // The silent stretch holding recording time `t`, if any.
  silenceAt(t) {
    return this.silences.find((s) => t >= s.from && t < s.to) || null;
  }

  draw() {
    const c = this.canvas;
    const w = c.width;
    const h = c.height;
    const g = c.getContext("2d");
    g.clearRect(0, 0, w, h);
    g.fillStyle = "#f6f7f9";
    g.fillRect(0, 0, w, h);
    if (this.recStart !== null && this.recLength) {
      const x0 = Math.round(this.x(this.recStart) * w);
      const x1 = Math.round(this.x(this.recStart + this.recLength * 1000) * w);
      g.fillStyle = "#e6ecf6";
      g.fillRect(x0, 0, Math.max(1, x1 - x0), h);
      if (this.wav) {
        const cols = Math.max(1, x1 - x0);
        const half = h / 2;
        const colors = ["#1f5fbf", "#16702e"];
        this.wav.channels.slice(0, 2).forEach((ch, i) => {
          const p = peaks(ch, cols);
          g.fillStyle = colors[i];
          for (let k = 0; k < cols; k++) {
            const len = Math.max(1, p[k] * (half - 4));
            if (i === 0) g.fillRect(x0 + k, half - len, 1, len);
            else g.fillRect(x0 + k, half, 1, len);
          }
        });
        g.fillStyle = "rgba(91, 100, 117, 0.18)";
        for (const s of this.silences) {
          const a = Math.round(this.x(this.instant(s.from)) * w);
          const b = Math.round(this.x(this.instant(s.to)) * w);
          g.fillRect(a, 0, Math.max(1, b - a), h);
        }
      }
    }
    g.fillStyle = "#5b6475";
    g.fillRect(0, Math.round(h / 2), w, 1);
    for (const e of this.events) {
      g.fillStyle = e.kind === "cut" ? "#a61b1b" : e.kind === "increment" ? "#8a93a3" : "#1d2330";
      g.fillRect(Math.round(this.x(e.ms) * (w - 1)), 0, 1, e.kind === "increment" ? h / 6 : h);
    }
  }

  // The playhead at recording time `t`.
  moveHead(t) {
    if (this.recStart === null) return;
    this.playhead.hidden = false;
    this.playhead.style.left = (this.x(this.instant(t)) * 100).toFixed(3) + "%";
  }
}
