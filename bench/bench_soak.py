"""Soak benchmark of the live server: `livedub serve` in a subprocess, N minutes of session churn.

Sessions are created one after another (``--concurrent`` at a time) and each is ended a different way in
turn, so that every path that tears a session down is exercised:
- created over the control websocket, watched over WHEP, speech sent over WHIP, ended by DELETE on WHIP;
- created by POST /whip?source=..., watched over WHEP, ended by the control ``stop`` op;
- created over the control websocket, ended by the client closing both peer connections without a
  DELETE (the server sees the connections go and ends the session after playing out).
Each session sends ``--speech-seconds`` of real read speech (codec2-examples) at wall-clock pace.

A sampler reads /proc every ``--sample-seconds``: the resident memory of the server and of its worker
processes (every descendant), the server's open file descriptors and threads (and those FFmpeg named:
decoder frame threads), the number of worker processes and the shared-memory segments they map. At the
end of the warm-up and at the end of the run the churn
pauses until the server has no session and its worker count is back at rest, and the idle figures are
taken there, so that like is compared with like. Printed: RSS after warm-up vs at the end and their
ratio, the post-warm-up RSS trend (MiB per hour, least squares), fds/threads/workers first/last/max.

Run:  PYTHONPATH=$PWD .venv/bin/python bench/bench_soak.py --minutes 30 [--warmup 3] [--concurrent 2]
      [--speech-seconds 6] [--size 256x256] [--csv samples.csv]
      (``--python /work/main/.venv/bin/python --root /work/main`` serves another checkout, e.g. for a
      before/after comparison; the clients always run from this one.)
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import sys
import tempfile
import time

import aiohttp
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench_server import livedub_serve  # noqa: E402
from client.control import ControlClient  # noqa: E402
from client.webrtc import Publisher, SpeechTrack, Viewer, read_speech  # noqa: E402
from procstat import stat_fields  # noqa: E402
from server.demo import prepare_live  # noqa: E402
from server.peers import offer_loopback_candidates  # noqa: E402

RATE = 48_000
MIB = 1024 * 1024
END_MODES = ("whip_delete", "control_stop", "peers_closed")
IDLE_SETTLE = 3.0  # seconds idle before an idle sample (buffers handed back, workers gone)
FULL_RETRY = 1.0  # seconds a lane waits when the server is at its session limit


# ---- /proc sampling ---------------------------------------------------------------------------------------
def _status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as handle:
        return dict(line.split(":", 1) for line in handle if ":" in line)


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent = int(stat_fields(int(entry))[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(parent, []).append(int(entry))
    return tree


def descendants(pid: int) -> list[int]:
    tree, found, todo = _children(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def rss_bytes(pid: int) -> int:
    return int(_status(pid)["VmRSS"].split()[0]) * 1024


def shared_segments(pids: list[int]) -> int:
    """Distinct /dev/shm segments mapped by these processes (frames passed to the worker processes)."""
    names = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/maps") as handle:
                names.update(line.split()[-1] for line in handle if "/dev/shm/" in line)
        except OSError:
            pass
    return len(names)


def ffmpeg_threads(pid: int) -> int:
    """Threads FFmpeg started and named (``av:h264:df0``...: a decoder's frame threads)."""
    count = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/comm") as handle:
                count += handle.read().startswith("av:")
        except OSError:
            pass
    return count


def sample(pid: int, started: float, phase: str, sessions: int) -> dict:
    workers = []
    children = descendants(pid)
    for child in children:
        try:
            workers.append(rss_bytes(child))
        except (OSError, KeyError):
            pass  # it ended between the listing and the read
    status = _status(pid)
    return {"t": round(time.monotonic() - started, 1), "phase": phase, "sessions_done": sessions,
            "server_rss_mib": round(int(status["VmRSS"].split()[0]) / 1024, 1),
            "workers_rss_mib": round(sum(workers) / MIB, 1), "workers": len(workers),
            "fds": len(os.listdir(f"/proc/{pid}/fd")), "threads": int(status["Threads"]),
            "ffmpeg_threads": ffmpeg_threads(pid),
            "shm_segments": shared_segments([pid, *children])}


# ---- one session ------------------------------------------------------------------------------------------
class Counter:
    def __init__(self) -> None:
        self.video = 0

    def __call__(self, kind, frame, arrival) -> None:
        self.video += kind == "video"


async def one_session(base: str, index: int, args, speech: np.ndarray) -> dict:
    mode = END_MODES[index % len(END_MODES)]
    source = args.sources[index % len(args.sources)]
    sink = Counter()
    async with ControlClient(base.replace("http://", "ws://") + "control") as control, \
            aiohttp.ClientSession() as http:
        viewer, publisher, track = Viewer(http, sink), Publisher(http), SpeechTrack(speech)
        try:
            if mode == "control_stop":
                resource = await publisher.publish(f"{base}whip?source={source}&delay={args.delay}", track)
                session = resource.rsplit("/", 1)[1]
                await viewer.watch(f"{base}whep/{session}")
            else:
                created = await control.request("create", source=source, delay=args.delay)
                session = created["session"]
                await viewer.watch(created["whep"])
                await publisher.publish(created["whip"], track)
            while track.started_at is None or time.monotonic() < track.started_at + track.duration + args.delay:
                await asyncio.sleep(0.2)
            if mode == "control_stop":
                await control.request("stop", session=session)
        finally:
            await publisher.close(delete=mode == "whip_delete")
            await viewer.close(delete=False)
    return {"mode": mode, "frames": sink.video}


def _server_full(exc: Exception) -> bool:
    """The session limit was reached: a session whose client just closed its peers is still playing out
    (the server notices a closed peer only when ICE consent fails). Retried, not counted as a session:
    without this a lane spun through thousands of refused creates in a few seconds."""
    return getattr(exc, "code", None) == "limit_reached" or (
        getattr(exc, "status", None) == 503 and "session limit" in str(getattr(exc, "message", "")))


async def wait_idle(base: str, pid: int, rest_workers: int, timeout: float = 120.0) -> None:
    """Until the server reports no session and its worker processes are back to ``rest_workers``."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            async with http.get(base + "healthz") as response:
                sessions = (await response.json())["sessions"]
            if sessions == 0 and len(descendants(pid)) <= rest_workers:
                break
            await asyncio.sleep(0.5)
    await asyncio.sleep(IDLE_SETTLE)


async def soak(base: str, pid: int, args, speech: np.ndarray) -> list[dict]:
    started = time.monotonic()
    samples: list[dict] = []
    state = {"phase": "warm-up", "done": 0, "failed": 0, "frames": 0, "full": 0}

    async def sampler() -> None:
        while True:
            samples.append(sample(pid, started, state["phase"], state["done"]))
            await asyncio.sleep(args.sample_seconds)

    async def churn(until: float, lane: int) -> None:
        index = lane
        while time.monotonic() < until:
            try:
                result = await one_session(base, index, args, speech)
                state["frames"] += result["frames"]
            except Exception as exc:  # noqa: BLE001 - counted and printed; the soak goes on
                if _server_full(exc):  # not a session: wait for a slot, then the same one again
                    state["full"] += 1
                    await asyncio.sleep(FULL_RETRY)
                    continue
                state["failed"] += 1
                print(f"session {index} failed: {type(exc).__name__}: {str(exc)[:200]}", flush=True)
            state["done"] += 1
            index += args.concurrent

    rest_workers = len(descendants(pid))
    sampling = asyncio.create_task(sampler())
    try:
        warm_until = started + args.warmup * 60
        await asyncio.gather(*(churn(warm_until, lane) for lane in range(args.concurrent)))
        await wait_idle(base, pid, rest_workers)
        samples.append(sample(pid, started, "idle-after-warm-up", state["done"]))
        state["phase"] = "soak"
        end = started + args.minutes * 60
        await asyncio.gather(*(churn(end, lane) for lane in range(args.concurrent)))
        await wait_idle(base, pid, rest_workers)
        samples.append(sample(pid, started, "idle-at-end", state["done"]))
    finally:
        sampling.cancel()
    print(f"sessions: {state['done']} ({state['failed']} failed), {state['frames']} video frames received; "
          f"{state['full']} waits of {FULL_RETRY:g} s for a free session slot", flush=True)
    return samples


def report(samples: list[dict], args) -> None:
    warm = next(s for s in samples if s["phase"] == "idle-after-warm-up")
    last = next(s for s in samples if s["phase"] == "idle-at-end")
    soak = [s for s in samples if s["phase"] in ("soak", "idle-at-end")]
    hours = np.array([s["t"] for s in soak]) / 3600
    slope = float(np.polyfit(hours, [s["server_rss_mib"] for s in soak], 1)[0]) if len(soak) > 2 else float("nan")
    print(f"\n== soak: {args.minutes:g} min ({args.warmup:g} min warm-up), {args.concurrent} concurrent sessions of "
          f"{args.speech_seconds:g} s speech, generator lite, size {args.size}, {os.cpu_count()} cores")
    ratio = last["server_rss_mib"] / warm["server_rss_mib"]
    print(f"server RSS idle: {warm['server_rss_mib']:.0f} MiB after warm-up ({warm['sessions_done']} sessions), "
          f"{last['server_rss_mib']:.0f} MiB at the end ({last['sessions_done']} sessions): ratio {ratio:.3f}")
    print(f"server RSS during the soak: max {max(s['server_rss_mib'] for s in samples):.0f} MiB; trend after "
          f"warm-up {slope:+.0f} MiB/h (least squares over {len(soak)} samples)")
    print(f"worker processes' RSS idle: {warm['workers_rss_mib']:.0f} MiB after warm-up, "
          f"{last['workers_rss_mib']:.0f} MiB at the end; max during the soak "
          f"{max(s['workers_rss_mib'] for s in samples):.0f} MiB")
    for key in ("fds", "threads", "ffmpeg_threads", "workers", "shm_segments"):
        print(f"{key:>12}: first {samples[0][key]}, after warm-up {warm[key]}, last {last[key]}, "
              f"max {max(s[key] for s in samples)}")
    print(json.dumps({"rss_ratio": round(ratio, 3), "rss_after_warmup_mib": warm["server_rss_mib"],
                      "rss_end_mib": last["server_rss_mib"], "within_10_percent": abs(ratio - 1) <= 0.10,
                      "fds": [warm["fds"], last["fds"]], "threads": [warm["threads"], last["threads"]]}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="whole run, warm-up included")
    parser.add_argument("--warmup", type=float, default=3.0, metavar="MINUTES")
    parser.add_argument("--concurrent", type=int, default=2)
    parser.add_argument("--speech-seconds", type=float, default=6.0)
    parser.add_argument("--delay", type=float, default=5.5)
    parser.add_argument("--size", default="256x256")
    parser.add_argument("--sample-seconds", type=float, default=5.0)
    parser.add_argument("--csv", metavar="FILE", help="also write every sample")
    parser.add_argument("--python", default=sys.executable, help="interpreter of the server")
    parser.add_argument("--root", default=ROOT, help="checkout the server runs from")
    args = parser.parse_args()
    args.sources = ["portrait", "astronaut"]  # a still and a video, alternately
    folder = tempfile.mkdtemp(prefix="livedub-soak-")
    _, speech_path = prepare_live(folder)
    speech = read_speech(speech_path)
    speech = np.tile(speech, int(np.ceil(args.speech_seconds * RATE / len(speech))))[: int(args.speech_seconds * RATE)]
    offer_loopback_candidates()
    options = ["--generator", "lite", "--size", args.size, "--max-sessions", str(args.concurrent + 1), "--ice-loopback"]
    with livedub_serve(folder, options, args.python, args.root) as (server, base):
        time.sleep(5)  # the lite host worker warms up
        samples = asyncio.run(soak(base, server.pid, args, speech))
    if args.csv:
        with open(args.csv, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(samples[0]))
            writer.writeheader()
            writer.writerows(samples)
    report(samples, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
