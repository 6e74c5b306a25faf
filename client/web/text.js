// The session's stats and events in plain words (the raw JSON stays in window.__livedub).
"use strict";

const seconds = (s, digits = 2) => (s === null || s === undefined ? "–" : `${Number(s).toFixed(digits)} s`);
const millis = (s) => (s === null || s === undefined ? "–" : `${Math.round(s * 1000)} ms`);
const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

function chunkText(c) {
  const parts = [`${c.generated} on time`];
  for (const [key, word] of [["late", "late"], ["skipped", "skipped"], ["failed", "failed"]]) {
    if (c[key]) parts.push(`${c[key]} ${word}`);
  }
  if (!c.late && !c.skipped && !c.failed) parts.push("none late");
  return parts.join(", ");
}

function tiersText(tiers) {
  const entries = Object.entries(tiers || {}).filter(([, n]) => n > 0);
  if (!entries.length) return "no chunk yet";
  const names = { skip: "skipped (source shown)", fallback: "cheaper generator" };
  return entries.map(([tier, n]) => `${names[tier] || tier} ×${n}`).join(", ");
}

function clock(time) {
  return new Date(time).toLocaleTimeString([], { hour12: false });
}

const REASONS = {
  stopped: "stopped by a client", ingest_ended: "the speech ended", ingest_deleted: "the speech was withdrawn",
  idle: "no speech arrived for too long", failed: "the session failed", server_stopped: "the server stopped",
  ingest_failed: "the speech connection failed",
};

// One line per event; `kind` colours it (problem, swap, or plain). Null for events not worth a line.
function eventText(e) {
  const at = e.slot_at !== undefined ? ` (plays at ${seconds(e.slot_at, 1)})` : "";
  switch (e.event) {
    case "created":
      return { kind: "", text: `session started on ${e.source} with ${e.generator}, ${seconds(e.delay)} behind` };
    case "chunk":
      if (e.status === "on_time") return null;
      return { kind: "problem", text: `chunk ${e.chunk} ${e.status}${e.reason ? `: ${e.reason}` : ""}${at}; the source is shown instead` };
    case "degraded":
      return e.action === "skip"
        ? { kind: "problem", text: `chunk ${e.chunk} skipped: ${e.reason} (${seconds(e.time_left)} left)` }
        : { kind: "problem", text: `chunk ${e.chunk} made at tier ${e.tier}: ${seconds(e.time_left)} left${at}` };
    case "swap":
      return { kind: "swap", text: `reference ${e.previous} → ${e.source} (${e.mode}) from chunk ${e.chunk}, shows at ${seconds(e.at, 1)}` };
    case "speaker":
    case "assign_speaker":
      return { kind: "swap", text: `speaker ${e.speaker} → face ${e.face}` };
    case "error":
      return { kind: "problem", text: `error${e.chunk !== undefined ? ` in chunk ${e.chunk}` : ""}: ${e.message}` };
    case "ended":
      return { kind: "", text: `session ended: ${REASONS[e.reason] || e.reason}` };
    default:
      return { kind: "", text: `${e.event}: ${Object.entries(e).filter(([k]) => !["type", "event", "session"].includes(k))
        .map(([k, v]) => `${k} ${typeof v === "object" ? JSON.stringify(v) : v}`).join(", ")}` };
  }
}

window.livedubText = { seconds, millis, plural, chunkText, tiersText, eventText, clock };
