// Audio level meters (Web Audio AnalyserNode) and the heard delay: the speech this page sends matched
// against the dub it plays back. Both taps run in one AudioContext; levels are read every 20 ms.
"use strict";

const LEVEL_FLOOR_DB = -60;  // the meters' left end
const ENVELOPE_STEP_MS = 20;  // one loudness sample per 20 ms (an audio packet)
const ENVELOPE_KEEP_MS = 40000;  // the sent envelope must reach back past the longest delay (30 s)
const MATCH_WINDOW_MS = 6000;  // the stretch of played-back dub matched against what was sent
const MATCH_MIN_CORRELATION = 0.6;  // below it no delay is claimed (silence, or a dub that is not the speech)

class LevelTap {
  constructor(context, stream) {
    this.source = context.createMediaStreamSource(stream);
    this.analyser = context.createAnalyser();
    this.analyser.fftSize = 1024;  // about 21 ms at 48 kHz: one reading per envelope step
    this.samples = new Float32Array(this.analyser.fftSize);
    this.source.connect(this.analyser);
  }

  rms() {
    this.analyser.getFloatTimeDomainData(this.samples);
    let sum = 0;
    for (const s of this.samples) sum += s * s;
    return Math.sqrt(sum / this.samples.length);
  }

  disconnect() { this.source.disconnect(); }
}

const toDb = (rms) => Math.max(LEVEL_FLOOR_DB, 20 * Math.log10(rms + 1e-9));

// Loudness per 20 ms bin of wall-clock time (performance.now), so that the two envelopes share one axis.
class Envelope {
  constructor() { this.bins = new Map(); }

  add(now, value) {
    const bin = Math.round(now / ENVELOPE_STEP_MS);
    this.bins.set(bin, Math.max(this.bins.get(bin) || 0, value));
    for (const key of this.bins.keys()) {  // Map keeps insertion order: the oldest first
      if (key >= bin - ENVELOPE_KEEP_MS / ENVELOPE_STEP_MS) break;
      this.bins.delete(key);
    }
  }
}

// The lag (ms) at which the sent envelope best explains the played one, searched within `low..high` ms;
// null when the best correlation is weak. Pearson correlation of log loudness (speech's dynamics, not its
// gain: the dub is loudness-normalised).
function matchDelay(sent, played, now, low, high) {
  const last = Math.round(now / ENVELOPE_STEP_MS);
  const count = MATCH_WINDOW_MS / ENVELOPE_STEP_MS;
  const out = [];
  for (let bin = last - count; bin < last; bin++) if (played.bins.has(bin)) out.push(bin);
  if (out.length < count / 2) return null;
  const ys = out.map((bin) => smoothed(played, bin));
  let best = { lagMs: null, correlation: -1 };
  for (let lag = Math.round(low / ENVELOPE_STEP_MS); lag <= Math.round(high / ENVELOPE_STEP_MS); lag++) {
    const xs = [], yy = [];
    out.forEach((bin, i) => { if (sent.bins.has(bin - lag)) { xs.push(smoothed(sent, bin - lag)); yy.push(ys[i]); } });
    if (xs.length < count / 2) continue;
    const r = pearson(xs, yy);
    if (r > best.correlation) best = { lagMs: lag * ENVELOPE_STEP_MS, correlation: r };
  }
  return best.correlation >= MATCH_MIN_CORRELATION ? best : null;
}

// Log loudness averaged over a bin and its neighbours (60 ms): a missed or doubled timer tick, and the
// codec's own smearing, then matter less.
function smoothed(envelope, bin) {
  let sum = 0, n = 0;
  for (let b = bin - 1; b <= bin + 1; b++) {
    if (envelope.bins.has(b)) { sum += Math.log10(envelope.bins.get(b) + 1e-4); n++; }
  }
  return sum / n;
}

function pearson(xs, ys) {
  const n = xs.length, mx = xs.reduce((a, b) => a + b) / n, my = ys.reduce((a, b) => a + b) / n;
  let sxy = 0, sxx = 0, syy = 0;
  for (let i = 0; i < n; i++) {
    const dx = xs[i] - mx, dy = ys[i] - my;
    sxy += dx * dy; sxx += dx * dx; syy += dy * dy;
  }
  return sxx && syy ? sxy / Math.sqrt(sxx * syy) : 0;
}

// The page's audio watch: meters for the speech sent and the dub received, and their envelopes.
class AudioWatch {
  constructor(onLevels) {
    this.context = new AudioContext();
    this.taps = {};
    this.envelopes = { input: new Envelope(), output: new Envelope() };
    this.onLevels = onLevels;
    this.timer = setInterval(() => this.read(), ENVELOPE_STEP_MS);
  }

  watch(name, stream) {
    if (this.taps[name] || !stream.getAudioTracks().length) return;
    this.context.resume();
    this.taps[name] = new LevelTap(this.context, stream);
  }

  read() {
    const now = performance.now(), levels = {};
    for (const [name, tap] of Object.entries(this.taps)) {
      const rms = tap.rms();
      this.envelopes[name].add(now, rms);
      levels[name] = toDb(rms);
    }
    this.onLevels(levels);
  }

  heardDelay(lowMs, highMs) {
    return matchDelay(this.envelopes.input, this.envelopes.output, performance.now(), lowMs, highMs);
  }

  close() {
    clearInterval(this.timer);
    for (const tap of Object.values(this.taps)) tap.disconnect();
    this.context.close();
  }
}

window.livedubAudio = { AudioWatch, LEVEL_FLOOR_DB, matchDelay, Envelope };
