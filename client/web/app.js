// livedub browser client: create a session over /control, watch it over WHEP, send speech over WHIP.
// What the page sees is also kept in window.__livedub (tests and curious users read it).
"use strict";

const $ = (id) => document.getElementById(id);
const report = (window.__livedub = {
  state: "idle", session: null, framesShown: 0, fps: 0, firstFrameMs: null, errors: [], events: [],
  stats: null, jitterBufferMs: null, swaps: [],
});

let control = null;
let nextId = 1;
const waiting = new Map();
let viewerPc = null, senderPc = null, senderStream = null, audioContext = null, statsTimer = null;
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

async function loadSources() {
  const response = await fetch("/sources", { headers: authHeaders() });
  if (!response.ok) { setStatus(`sources: HTTP ${response.status}`, true); return; }
  const { sources } = await response.json();
  for (const select of [$("source"), $("swap-source")]) {
    select.replaceChildren(...sources.map((name) => new Option(name, name)));
  }
  if (sources.length > 1) $("swap-source").selectedIndex = 1;
}

function connectControl() {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/control`);
    ws.onopen = () => resolve(ws);
    ws.onerror = () => reject(new Error("control websocket failed"));
    ws.onclose = () => { for (const [, w] of waiting) w.reject(new Error("control closed")); waiting.clear(); };
    ws.onmessage = (message) => {
      const data = JSON.parse(message.data);
      if (data.type === "event") return onEvent(data);
      const waiter = waiting.get(data.id);
      if (!waiter) return;
      waiting.delete(data.id);
      data.type === "error" ? waiter.reject(new Error(`${data.code}: ${data.message}`)) : waiter.resolve(data);
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
  if (event.event === "chunk" && event.status === "on_time") return;  // the usual case: not listed
  const item = document.createElement("li");
  item.textContent = `${event.event}: ${JSON.stringify(event)}`;
  $("events").prepend(item);
  while ($("events").children.length > 50) $("events").lastChild.remove();
  if (event.event === "ended") stop(false);
}

function waitForIce(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { if (pc.iceGatheringState === "complete") resolve(); };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, 2000);  // send what was gathered; the server does not trickle
  });
}

async function negotiate(pc, url) {
  await pc.setLocalDescription(await pc.createOffer());
  await waitForIce(pc);
  const response = await fetch(url, {
    method: "POST", body: pc.localDescription.sdp,
    headers: { "Content-Type": "application/sdp", ...authHeaders() },
  });
  const body = await response.text();
  if (response.status !== 201) throw new Error(`POST ${url}: HTTP ${response.status} ${body}`);
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
  if (input === "mic") return navigator.mediaDevices.getUserMedia({ audio: true, video: false });
  let data;
  if (input === "demo") {
    const response = await fetch("/demo/speech.wav");
    if (!response.ok) throw new Error("this server has no demo speech (run it with --demo)");
    data = await response.arrayBuffer();
  } else {
    const file = $("file").files[0];
    if (!file) throw new Error("choose a speech file first");
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

async function start() {
  $("start").disabled = true;
  try {
    setStatus("connecting");
    control = await connectControl();
    const token = $("token").value.trim();
    if (token) await request("auth", { token });
    const delay = parseFloat($("delay").value);
    created = await request("create", { source: $("source").value, ...(isNaN(delay) ? {} : { delay }) });
    report.session = created.session;

    viewerPc = new RTCPeerConnection({ iceServers: [] });
    viewerPc.addTransceiver("video", { direction: "recvonly" });
    viewerPc.addTransceiver("audio", { direction: "recvonly" });
    const received = new MediaStream();
    viewerPc.ontrack = (event) => { received.addTrack(event.track); $("video").srcObject = received; };
    const watchStarted = performance.now();
    countFrames($("video"), watchStarted);
    await negotiate(viewerPc, created.whep);

    senderStream = await speechStream();
    senderPc = new RTCPeerConnection({ iceServers: [] });
    senderPc.addTransceiver(senderStream.getAudioTracks()[0], { direction: "sendonly", streams: [senderStream] });
    await negotiate(senderPc, created.whip);
    setStatus(`live: session ${created.session}, output ${created.delay} s behind`);
    $("stop").disabled = false;
    $("swap-button").disabled = false;
    statsTimer = setInterval(refreshStats, 1000);
  } catch (error) {
    setStatus(String(error.message || error), true);
    stop(false);
  }
}

async function refreshStats() {
  if (!created || !control || control.readyState !== WebSocket.OPEN) return;
  try {
    const { stats } = await request("stats", { session: created.session });
    report.stats = stats;
    const ms = (s) => (s === null || s === undefined ? "–" : `${(s * 1000).toFixed(0)} ms`);
    $("s-delay").textContent = `${stats.delay.target.toFixed(2)} s`;
    $("s-send").textContent = `${ms(stats.delay.send.p50)} / ${ms(stats.delay.send.p95)}`;
    $("s-fps-out").textContent = stats.fps_out.toFixed(1);
    const c = stats.chunks;
    $("s-chunks").textContent = `${c.generated} / ${c.late} / ${c.skipped} / ${c.failed}`;
    $("s-tiers").textContent = JSON.stringify(stats.tiers);
    $("s-cost").textContent = ms(stats.cost.mean);
  } catch (error) { return; }
  $("s-fps").textContent = `${report.framesShown} (${report.fps.toFixed(1)})`;
  if (viewerPc) {
    for (const entry of (await viewerPc.getStats()).values()) {
      if (entry.type === "inbound-rtp" && entry.kind === "video" && entry.jitterBufferEmittedCount) {
        report.jitterBufferMs = Math.round((1000 * entry.jitterBufferDelay) / entry.jitterBufferEmittedCount);
        $("s-jitter").textContent = `${report.jitterBufferMs} ms`;
      }
    }
  }
}

async function swapReference() {
  try {
    const reply = await request("swap_reference", {
      session: created.session, source: $("swap-source").value, mode: $("swap-mode").value,
    });
    report.swaps.push(reply);
  } catch (error) { setStatus(String(error.message || error), true); }
}

function stop(sendStop = true) {
  if (sendStop && created && control && control.readyState === WebSocket.OPEN) {
    request("stop", { session: created.session }).catch(() => {});
  }
  clearInterval(statsTimer);
  for (const pc of [senderPc, viewerPc]) if (pc) pc.close();
  if (senderStream) senderStream.getTracks().forEach((t) => t.stop());
  if (audioContext) audioContext.close();
  senderPc = viewerPc = senderStream = audioContext = null;
  if (report.state.startsWith("live")) setStatus("ended");
  $("start").disabled = false;
  $("stop").disabled = true;
  $("swap-button").disabled = true;
}

$("start").onclick = start;
$("stop").onclick = () => stop(true);
$("swap-button").onclick = swapReference;
$("input").onchange = () => { if ($("input").value === "file") $("file").click(); };
$("token").onchange = loadSources;
const params = new URLSearchParams(location.hash.slice(1));  // #token=...&source=...&input=demo&delay=4
if (params.get("token")) $("token").value = params.get("token");
loadSources().then(() => {
  if (params.get("source")) $("source").value = params.get("source");
  if (params.get("input")) $("input").value = params.get("input");
  if (params.get("delay")) $("delay").value = params.get("delay");
  if (params.get("autostart")) start();
});
