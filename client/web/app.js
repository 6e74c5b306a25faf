// livedub operator's console: pick a source (thumbnails), create a session over /control, watch it over
// WHEP, send speech over WHIP; the output beside its figures, audio meters, the reference and its swaps.
// What the page sees is also kept in window.__livedub (tests and curious users read it).
"use strict";

const $ = (id) => document.getElementById(id);
const T = window.livedubText;
const report = (window.__livedub = {
  state: "idle", session: null, framesShown: 0, fps: 0, firstFrameMs: null, errors: [], events: [],
  stats: null, jitterBufferMs: null, swaps: [], config: null, sources: [], reference: null,
  levels: { input: null, output: null }, loudest: { input: null, output: null },
  heard: null, glassToGlassMs: null, speakers: { supported: false, assigned: [] },
});

let control = null;
let nextId = 1;
const waiting = new Map();
let viewerPc = null, senderPc = null, senderStream = null, audioContext = null, statsTimer = null, watch = null;
let created = null;

function setStatus(text, isError = false) {
  report.state = text;
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
  if (isError) report.errors.push(text);
}

function authHeaders() {
  const token = $("token").value.trim();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

// GET a JSON resource; a failure is thrown in the server's own words (its error envelope's message).
async function getJson(path) {
  const response = await fetch(path, { headers: authHeaders() });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(`${path}: ${body.message || `HTTP ${response.status}`}`);
  return body;
}

// ---- before starting: sources (with thumbnails), the accepted delays ------------------------------------
async function loadConfig() {
  const config = (report.config = await getJson("/config"));
  const { min, max, default: fallback } = config.delay;
  Object.assign($("delay"), { min: String(min), max: String(max), placeholder: `default ${fallback.toFixed(2)}` });
  const about = config.delay.exact ? "" : "about ";  // the generator's lookahead is not known yet
  $("delay-hint").textContent = `${config.generator} needs at least ${about}${min.toFixed(2)} s (up to ${max} s)`;
  $("server-info").textContent = `generator ${config.generator} · output ${config.size}`;
  report.speakers.supported = config.ops.includes("assign_speaker");
  speakerNote(report.speakers.supported ? "start a session to assign faces"
    : "this server cannot assign speakers (no assign_speaker op): one speaker is dubbed");
}

async function loadSources() {
  const { sources } = await getJson("/sources");
  report.sources = sources;
  for (const select of [$("source"), $("swap-source")]) {
    select.replaceChildren(...sources.map((name) => new Option(name, name)));
  }
  if (!sources.length) throw new Error("this server has no sources: put videos or images in its sources folder");
  if (sources.length > 1) $("swap-source").selectedIndex = 1;
  $("thumbs").replaceChildren(...sources.map(thumbnail));
  markSource();
}

function thumbnail(name) {
  const button = document.createElement("button");
  button.type = "button";
  button.dataset.source = name;
  button.title = name;
  button.setAttribute("role", "option");
  const image = document.createElement("img");
  image.alt = name;
  button.append(image, name);
  // Fetched (not an <img src>) so that the bearer token goes along.
  fetch(`/sources/${encodeURIComponent(name)}/thumbnail`, { headers: authHeaders() })
    .then((r) => (r.ok ? r.blob() : Promise.reject(new Error(`HTTP ${r.status}`))))
    .then((blob) => { image.src = URL.createObjectURL(blob); })
    .catch(() => { image.alt = `${name} (no preview)`; });
  button.onclick = () => {
    if (created) { $("swap-source").value = name; return; }  // live: the click picks the swap target
    $("source").value = name;
    markSource();
  };
  return button;
}

function markSource() {
  const current = created ? report.reference : $("source").value;
  for (const button of $("thumbs").children) button.setAttribute("aria-selected", String(button.dataset.source === current));
}

async function loadServer() {
  try {
    await Promise.all([loadConfig(), loadSources()]);
  } catch (error) { setStatus(error.message, true); }
}

// ---- control websocket --------------------------------------------------------------------------------
function connectControl() {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/control`);
    ws.onopen = () => resolve(ws);
    ws.onerror = () => reject(new Error("cannot reach the server's control connection"));
    ws.onclose = () => { for (const [, w] of waiting) w.reject(new Error("control connection closed")); waiting.clear(); };
    ws.onmessage = (message) => {
      const data = JSON.parse(message.data);
      if (data.type === "event") return onEvent(data);
      const waiter = waiting.get(data.id);
      if (!waiter) return;
      waiting.delete(data.id);
      if (data.type !== "error") return waiter.resolve(data);
      const error = new Error(data.message);  // the server's words; its code stays with the error
      error.code = data.code;
      waiter.reject(error);
    };
  });
}

function request(op, fields = {}) {
  const id = nextId++;
  return new Promise((resolve, reject) => {
    waiting.set(id, { resolve, reject });
    control.send(JSON.stringify({ id, op, ...fields }));
  });
}

function onEvent(event) {
  report.events.push(event);
  if (report.events.length > 200) report.events.shift();
  if (event.event === "swap") showReference(event.source);
  const line = T.eventText(event);
  if (line) {
    const item = document.createElement("li");
    item.className = line.kind;
    item.textContent = `${T.clock(Date.now())} ${line.text}`;
    $("events").prepend(item);
    while ($("events").children.length > 50) $("events").lastChild.remove();
  }
  if (event.event === "ended") stop(false);
}

function showReference(name) {
  report.reference = name;
  $("reference").textContent = name;
  $("source").value = name;  // the pickers follow the swap
  const other = report.sources.find((s) => s !== name);
  if ($("swap-source").value === name && other) $("swap-source").value = other;
  markSource();
}

// ---- WebRTC -------------------------------------------------------------------------------------------
function waitForIce(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { if (pc.iceGatheringState === "complete") resolve(); };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, 2000);  // send what was gathered; the server does not trickle
  });
}

// Opus in stereo (RFC 7587 stereo=1): a browser decodes what it receives as mono unless its own offer
// asks for stereo (the server's answer asks the same of what the browser sends).
function stereoOpus(sdp) {
  const payload = (sdp.match(/^a=rtpmap:(\d+) opus\/48000\/2\r?$/im) || [])[1];
  if (!payload) return sdp;
  const fmtp = new RegExp(`^a=fmtp:${payload} ([^\r\n]*)`, "m");
  if (fmtp.test(sdp)) {
    return sdp.replace(fmtp, (line, params) => (/stereo=/.test(params) ? line : `${line};stereo=1;sprop-stereo=1`));
  }
  return sdp.replace(new RegExp(`^(a=rtpmap:${payload} opus/48000/2)(\r?)$`, "im"),
                     `$1$2\na=fmtp:${payload} stereo=1;sprop-stereo=1$2`);
}

async function negotiate(pc, url) {
  const offer = await pc.createOffer();
  await pc.setLocalDescription({ type: "offer", sdp: stereoOpus(offer.sdp) });
  await waitForIce(pc);
  const response = await fetch(url, {
    method: "POST", body: pc.localDescription.sdp,
    headers: { "Content-Type": "application/sdp", ...authHeaders() },
  });
  const body = await response.text();
  if (response.status !== 201) {
    let message = body;
    try { message = JSON.parse(body).message; } catch (e) { /* not the envelope: show it as it came */ }
    throw new Error(`${new URL(url).pathname.split("/")[1].toUpperCase()} refused: ${message}`);
  }
  await pc.setRemoteDescription({ type: "answer", sdp: body });
}

function countFrames(video, startedAt) {
  const shown = [];
  const onFrame = (now) => {
    report.framesShown += 1;
    if (report.firstFrameMs === null) report.firstFrameMs = Math.round(performance.now() - startedAt);
    shown.push(now);
    while (shown.length && now - shown[0] > 2000) shown.shift();
    report.fps = shown.length > 1 ? (shown.length - 1) / ((shown[shown.length - 1] - shown[0]) / 1000) : 0;
    video.requestVideoFrameCallback(onFrame);
  };
  video.requestVideoFrameCallback(onFrame);
}

async function speechStream() {
  const input = $("input").value;
  if (input === "mic") {  // a stereo interface stays stereo where the browser allows it
    return navigator.mediaDevices.getUserMedia({ audio: { channelCount: { ideal: 2 } }, video: false });
  }
  let data;
  if (input === "demo") {
    const response = await fetch("/demo/speech.wav");
    if (!response.ok) throw new Error("this server has no demo speech (run it with --demo); choose microphone or a file");
    data = await response.arrayBuffer();
  } else {
    const file = $("file").files[0];
    if (!file) throw new Error("choose a speech file first (any audio or video the browser plays)");
    data = await file.arrayBuffer();
  }
  audioContext = new AudioContext({ sampleRate: 48000 });
  const buffer = await audioContext.decodeAudioData(data);
  const player = audioContext.createBufferSource();
  player.buffer = buffer;
  const destination = audioContext.createMediaStreamDestination();
  player.connect(destination);
  // A file or the demo that has played out: the session plays out what it captured and ends by itself.
  player.onended = () => { if (created) request("end_ingest", { session: created.session }).catch(() => {}); };
  player.start();
  return destination.stream;
}

// The delay field checked in plain words before the server is asked (the server checks it again).
function chosenDelay() {
  const text = $("delay").value.trim();
  if (!text) return {};
  const delay = Number(text), limits = report.config && report.config.delay;
  if (!Number.isFinite(delay)) throw new Error(`delay '${text}' is not a number: give seconds, e.g. 4.5`);
  if (limits && (delay < limits.min || delay > limits.max)) {
    throw new Error(`delay ${delay} s is out of range: ${report.config.generator} accepts ${limits.min.toFixed(2)} to ${limits.max} s`);
  }
  return { delay };
}

async function start() {
  $("start").disabled = true;
  try {
    const delay = chosenDelay();
    if (!$("source").value) throw new Error(`choose a source first: available are ${report.sources.join(", ") || "none"}`);
    setStatus("connecting");
    control = await connectControl();
    const token = $("token").value.trim();
    if (token) await request("auth", { token });
    watch = new window.livedubAudio.AudioWatch(showLevels);
    created = await request("create", { source: $("source").value, ...delay });
    report.session = created.session;
    showReference(created.source);
    // The server's "created" event goes out before this connection follows the session: its line is made here.
    onEvent({ type: "event", event: "created", session: created.session, source: created.source,
              generator: created.generator, delay: created.delay });

    viewerPc = new RTCPeerConnection({ iceServers: [] });
    viewerPc.addTransceiver("video", { direction: "recvonly" });
    viewerPc.addTransceiver("audio", { direction: "recvonly" });
    const received = new MediaStream();
    viewerPc.ontrack = (event) => {
      received.addTrack(event.track);
      $("video").srcObject = received;
      if (event.track.kind === "audio") watch.watch("output", new MediaStream([event.track]));
    };
    countFrames($("video"), performance.now());
    await negotiate(viewerPc, created.whep);

    senderStream = await speechStream();
    watch.watch("input", senderStream);
    senderPc = new RTCPeerConnection({ iceServers: [] });
    senderPc.addTransceiver(senderStream.getAudioTracks()[0], { direction: "sendonly", streams: [senderStream] });
    await negotiate(senderPc, created.whip);
    setStatus(`live: session ${created.session} on ${created.generator}, output ${created.delay} s behind`);
    $("stop").disabled = false;
    $("swap-button").disabled = false;
    enableSpeakers();
    statsTimer = setInterval(refreshStats, 1000);
  } catch (error) {
    setStatus(String(error.message || error), true);
    stop(true);  // a session made before the failure is stopped, not left to idle out
  }
}

// ---- figures ------------------------------------------------------------------------------------------
function showLevels(levels) {
  const floor = window.livedubAudio.LEVEL_FLOOR_DB;
  for (const [name, db] of Object.entries(levels)) {
    report.levels[name] = Math.round(db);
    report.loudest[name] = Math.max(report.loudest[name] ?? floor, report.levels[name]);
    const id = name === "input" ? "level-in" : "level-out";
    $(id).style.width = `${100 - (100 * (db - floor)) / -floor}%`;  // the cover above the level
    $(`${id}-db`).textContent = db <= floor ? "silent" : `${Math.round(db)} dB`;
  }
}

// What the browser's own stats say about the two network legs and the viewer's buffering (seconds).
async function browserLegs() {
  const legs = { sendRtt: null, viewRtt: null, jitterBuffer: null, decode: null };
  const rtt = (stats) => {
    for (const e of stats.values()) if (e.type === "candidate-pair" && e.nominated && e.currentRoundTripTime !== undefined) return e.currentRoundTripTime;
    return null;
  };
  if (senderPc) legs.sendRtt = rtt(await senderPc.getStats());
  if (viewerPc) {
    const stats = await viewerPc.getStats();
    legs.viewRtt = rtt(stats);
    for (const e of stats.values()) {
      if (e.type === "inbound-rtp" && e.kind === "video" && e.jitterBufferEmittedCount) {
        legs.jitterBuffer = e.jitterBufferDelay / e.jitterBufferEmittedCount;
        if (e.framesDecoded) legs.decode = e.totalDecodeTime / e.framesDecoded;
      }
    }
  }
  return legs;
}

async function refreshStats() {
  if (!created || !control || control.readyState !== WebSocket.OPEN) return;
  let stats;
  try {
    ({ stats } = await request("stats", { session: created.session }));
  } catch (error) { return; }
  report.stats = stats;
  const legs = await browserLegs();
  report.jitterBufferMs = legs.jitterBuffer === null ? null : Math.round(legs.jitterBuffer * 1000);
  // From stats: speech packet (20 ms) + uplink (RTT/2) + the server's capture-to-send delay + downlink
  // (RTT/2) + jitter buffer + decode. The server's send delay is measured from the speech's arrival.
  const send = stats.delay.send.p50;
  if (send !== null && send !== undefined && legs.jitterBuffer !== null) {
    const total = 0.02 + (legs.sendRtt || 0) / 2 + send + (legs.viewRtt || 0) / 2 + legs.jitterBuffer + (legs.decode || 0);
    report.glassToGlassMs = Math.round(total * 1000);
    $("s-g2g").textContent = `${T.seconds(total)} (server ${T.seconds(send)}, buffer ${T.millis(legs.jitterBuffer)})`;
  }
  const target = stats.delay.target;
  const heard = watch && watch.heardDelay((target - 2) * 1000, (target + 2) * 1000);
  if (heard) {
    report.heard = heard;
    $("s-heard").textContent = `${T.seconds(heard.lagMs / 1000)} (match ${heard.correlation.toFixed(2)})`;
  }
  $("s-delay").textContent = T.seconds(target);
  $("s-fps").textContent = `${report.fps.toFixed(1)} fps (${report.framesShown} frames)`;
  $("s-fps-out").textContent = `${stats.fps_out.toFixed(1)} fps to ${T.plural(stats.viewers, "viewer")}`;
  $("s-chunks").textContent = T.chunkText(stats.chunks);
  $("s-tiers").textContent = T.tiersText(stats.tiers);
  $("s-cost").textContent = `${stats.generator}, ${T.millis(stats.cost.mean)} per chunk`;
  $("s-ingest").textContent = `${T.seconds(stats.ingest.seconds, 1)}${stats.ingest.ended ? " (ended)" : ""}`;
  if (stats.source !== report.reference) showReference(stats.source);
  showSpeakers(stats.ingest.speaker2);
}

// ---- reference swaps and speakers ----------------------------------------------------------------------
async function swapReference() {
  try {
    const reply = await request("swap_reference", {
      session: created.session, source: $("swap-source").value, mode: $("swap-mode").value,
    });
    report.swaps.push(reply);
    showReference(reply.source);
  } catch (error) { setStatus(`swap refused: ${error.message}`, true); }
}

function speakerNote(text) { $("speakers-note").textContent = text; }

function enableSpeakers() {
  for (const n of [1, 2]) {
    const select = $(`speaker-${n}`);
    select.replaceChildren(new Option("face 1 (leftmost)", "0"), new Option("face 2 (next)", "1"));
    select.value = String(n - 1);
    select.disabled = !report.speakers.supported;
  }
  if (report.speakers.supported) speakerNote("each speaker's speech moves the face chosen here");
}

// A second speaker's ingest (POST /whip/ID?speaker=2), when the server has one: its state and the faces.
function showSpeakers(second) {
  if (!report.speakers.supported) return;
  report.speakers.second = second || null;
  $("speakers-state").textContent = !second ? "one speech input; speaker 2 joins with POST /whip/ID?speaker=2"
    : `two speakers: speaker 2 ${second.ended ? "has ended" : `sending (${second.frames} packets)`}`;
  if (second) showFaces(second.faces);
}

function showFaces(faces) {
  (faces || []).forEach((face, i) => {
    const select = $(`speaker-${i + 1}`);
    if (select && Number.isInteger(face) && document.activeElement !== select) select.value = String(face);
  });
}

async function assignSpeaker(select) {
  const speaker = Number(select.dataset.speaker), face = Number(select.value);
  try {
    const reply = await request("assign_speaker", { session: created.session, speaker, face });
    report.speakers.assigned.push(reply);
    showFaces(reply.faces);
    speakerNote(`speaker ${speaker} moves face ${face + 1} from chunk ${reply.chunk ?? "next"}`);
  } catch (error) {
    // Refused (one speaker only, no such face, an older server): say so and leave the control as it was.
    speakerNote(`not assigned: ${error.message}`);
    if (error.code === "unknown_op") for (const n of [1, 2]) $(`speaker-${n}`).disabled = true;
  }
}

function stop(sendStop = true) {
  if (sendStop && created && control && control.readyState === WebSocket.OPEN) {
    request("stop", { session: created.session }).catch(() => {});
  }
  clearInterval(statsTimer);
  for (const pc of [senderPc, viewerPc]) if (pc) pc.close();
  if (senderStream) senderStream.getTracks().forEach((t) => t.stop());
  if (audioContext) audioContext.close();
  if (watch) watch.close();
  senderPc = viewerPc = senderStream = audioContext = watch = null;
  created = null;
  if (report.state.startsWith("live")) setStatus("ended");
  $("start").disabled = false;
  $("stop").disabled = true;
  $("swap-button").disabled = true;
  for (const n of [1, 2]) $(`speaker-${n}`).disabled = true;
}

$("start").onclick = start;
$("stop").onclick = () => stop(true);
$("swap-button").onclick = swapReference;
$("source").onchange = markSource;
for (const n of [1, 2]) $(`speaker-${n}`).onchange = (event) => assignSpeaker(event.target);
$("input").onchange = () => { if ($("input").value === "file") $("file").click(); };
$("token").onchange = loadServer;
const params = new URLSearchParams(location.hash.slice(1));  // #token=...&source=...&input=demo&delay=4
if (params.get("token")) $("token").value = params.get("token");
loadServer().then(() => {
  if (params.get("source")) { $("source").value = params.get("source"); markSource(); }
  if (params.get("input")) $("input").value = params.get("input");
  if (params.get("delay")) $("delay").value = params.get("delay");
  if (params.get("autostart")) start();
});
