"""Benchmark of the live server: `livedub serve` in a subprocess, N concurrent sessions from this process.

Each session sends real read speech (codec2-examples' Harvard sentences, looped) at wall-clock pace over
WHIP and is watched by one WHEP viewer. Printed per run:
- glass-to-glass delay against the budget, p50/p95: the speech, by cross-correlating each 1 s window of
  what was sent with what came back (both stamped by this process's clock); with ``--source live`` also the
  video, from a barcode of the send time stamped on the camera frames (the top rows, which no generator
  touches) and read back from the output frames;
- A/V offset at the output (``--source live``): video delay minus speech delay, per session;
- output fps at the viewer (steady state), time from WHEP POST to the first frame;
- the server process's CPU per session (utime + stime over wall time, all its threads);
- chunks late / skipped / failed, from the sessions' stats.
``--sessions 1 2 4`` runs one measurement per count; the largest count with no late chunk is reported.
``--viewers 0 24`` adds that many more WHEP viewers to each session (in a child process whose viewers
count frames without decoding them, so that the clients' decoding does not take the server's cores);
their fps and the server's CPU per additional viewer are printed. The load average is printed beside
the figures: the machine may be shared.

Run:  PYTHONPATH=$PWD .venv/bin/python bench/bench_server.py [--generator lite] [--sessions 1 2 4]
      [--seconds 20] [--delay 5.5] [--source video|still|live] [--size 512x512] [--stagger 0.7]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from fractions import Fraction

import aiohttp
import av
import numpy as np
from aiortc.mediastreams import MediaStreamTrack

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from client.control import ControlClient  # noqa: E402
from client.recorder import place_audio, to_mono  # noqa: E402
from client.webrtc import Publisher, SpeechTrack, Viewer, read_speech  # noqa: E402
from procstat import stat_fields  # noqa: E402  (bench/, beside this file)
from server.demo import prepare_live  # noqa: E402
from streaming.source import VideoSource  # noqa: E402

BITS, BAR_HEIGHT = 16, 24  # the send-time barcode: 16 blocks across the top rows
RATE = 48_000
T0 = time.monotonic()
LIBRARY = {"video": "astronaut", "still": "portrait"}  # the demo sources (server/demo.py)


def now_ms() -> int:
    return int((time.monotonic() - T0) * 1000)


def stamp(image: np.ndarray, value: int) -> np.ndarray:
    out = image.copy()
    width = out.shape[1] // BITS
    for bit in range(BITS):
        out[:BAR_HEIGHT, bit * width : (bit + 1) * width] = 255 if (value >> bit) & 1 else 0
    return out


def read_stamp(image: np.ndarray) -> int:
    width = image.shape[1] // BITS
    value = 0
    for bit in range(BITS):
        block = image[4 : BAR_HEIGHT - 4, bit * width + 4 : (bit + 1) * width - 4]
        value |= int(block.mean() > 128) << bit
    return value


class StampedCamera(MediaStreamTrack):
    """The demo clip at 25 fps, each frame stamped with its send time (ms since T0, 16 bits)."""

    kind = "video"

    def __init__(self, frames: list[np.ndarray]) -> None:
        super().__init__()
        self.frames = frames
        self.index = 0
        self.started: float | None = None

    async def recv(self) -> av.VideoFrame:
        if self.started is None:
            self.started = time.monotonic()
        await asyncio.sleep(max(0.0, self.started + self.index / 25 - time.monotonic()))
        image = stamp(self.frames[self.index % len(self.frames)], now_ms() % 65536)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = self.index * 3600, Fraction(1, 90_000)
        self.index += 1
        return frame


class Capture:
    def __init__(self, live: bool) -> None:
        self.live = live
        self.video_arrivals: list[float] = []
        self.video_delays: list[tuple[float, float]] = []  # (arrival, seconds since the frame was sent)
        self.audio: list[tuple[float, int, np.ndarray]] = []

    def __call__(self, kind, frame, arrival) -> None:
        if kind == "video":
            self.video_arrivals.append(arrival)
            if self.live:
                sent = read_stamp(frame.to_ndarray(format="rgb24"))
                delay = ((now_ms() - sent) % 65536) / 1000
                self.video_delays.append((arrival, delay))
        else:
            self.audio.append((arrival, frame.pts, to_mono(frame)))


def speech_delays(sent: np.ndarray, sent_at: float, received: np.ndarray, received_at: float,
                  budget: float) -> list[float]:
    """Delay of each voiced 1 s window of ``sent`` in ``received`` (searched within budget +- 1 s)."""
    delays = []
    for start in range(0, len(sent) - RATE, RATE):
        window = sent[start : start + RATE]
        if np.sqrt(np.mean(window ** 2)) < 0.01:
            continue  # a pause: nothing to align
        expected = int((sent_at - received_at + budget) * RATE) + start
        lo, hi = max(0, expected - RATE), min(len(received), expected + 2 * RATE)
        segment = received[lo:hi]
        if len(segment) < 2 * RATE:
            continue
        size = 1 << int(np.ceil(np.log2(len(segment) + RATE)))
        correlation = np.fft.irfft(np.fft.rfft(segment, size) * np.conj(np.fft.rfft(window, size)), size)
        lag = lo + int(np.argmax(correlation[: len(segment) - RATE]))
        delays.append(received_at + lag / RATE - (sent_at + start / RATE))
    return delays


def server_processes(pid: int):
    """(process id, its /proc stat fields) of the server and of its worker processes."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = stat_fields(int(entry))
        except OSError:
            continue
        if int(entry) == pid or int(fields[1]) == pid:
            yield int(entry), fields


def server_rss_mib(pid: int) -> float:
    """Memory of the server and its worker processes, MiB: their proportional set sizes (a page shared
    between them, the frames' shared-memory segments, counted once)."""
    total = 0
    for process, _ in server_processes(pid):
        try:
            with open(f"/proc/{process}/smaps_rollup") as handle:
                total += int(handle.read().split("\nPss:")[1].split()[0])
        except (OSError, IndexError):
            continue
    return total / 1024


def server_cpu_seconds(pid: int) -> float:
    """CPU time of the server and its worker processes (live ones, and those it has waited for)."""
    total = sum(int(f[11]) + int(f[12]) + int(f[13]) + int(f[14]) for _, f in server_processes(pid))
    return total / os.sysconf("SC_CLK_TCK")


class _CountOnly:
    """A stand-in decoder: one tiny frame per received video frame (its RTP timestamp kept)."""

    def decode(self, encoded_frame):
        frame = av.VideoFrame(16, 16, "yuv420p")
        frame.pts, frame.time_base = encoded_frame.timestamp, Fraction(1, 90_000)
        return [frame]


def count_viewers_main(whep: str, count: int, seconds: float) -> None:
    """Child process: ``count`` WHEP viewers of ``whep`` that count video frames for ``seconds``; prints
    each one's steady fps (the middle of the run) and this process's CPU share as JSON."""
    import aiortc.rtcrtpreceiver

    real = aiortc.rtcrtpreceiver.get_decoder
    aiortc.rtcrtpreceiver.get_decoder = lambda codec: _CountOnly() if codec.mimeType.startswith("video") else real(codec)

    async def main() -> dict:
        arrivals = [[] for _ in range(count)]
        async with aiohttp.ClientSession() as http:
            viewers = [Viewer(http, lambda kind, frame, at, i=i: arrivals[i].append(at) if kind == "video" else None)
                       for i in range(count)]
            for viewer in viewers:
                await viewer.watch(whep)
            started = time.monotonic()
            cpu0 = time.process_time()
            await asyncio.sleep(seconds)
            cpu = (time.process_time() - cpu0) / (time.monotonic() - started)
            for viewer in viewers:
                await viewer.close(delete=False)
        fps = []
        for times in arrivals:
            steady = [t for t in times if started + 1.0 <= t <= started + seconds - 0.5]
            fps.append((len(steady) - 1) / (steady[-1] - steady[0]) if len(steady) > 1 else 0.0)
        return {"fps": fps, "cpu": cpu}

    print(json.dumps(asyncio.run(main())), flush=True)


async def extra_viewers(whep: str, count: int, seconds: float) -> dict | None:
    if count <= 0:
        return None
    child = await asyncio.create_subprocess_exec(
        sys.executable, os.path.abspath(__file__), "--count-viewers", whep, str(count), str(seconds),
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), stdout=asyncio.subprocess.PIPE)
    out, _ = await child.communicate()
    return json.loads(out.decode().strip().splitlines()[-1])


async def one_session(base: str, index: int, args, speech: np.ndarray, camera: list | None) -> dict:
    await asyncio.sleep(index * args.stagger)
    capture = Capture(camera is not None)
    async with ControlClient(base.replace("http://", "ws://") + "control") as control, \
            aiohttp.ClientSession() as http:
        if camera is None:
            created = await control.request("create", source=LIBRARY[args.source], delay=args.delay)
            whip, whep, session = created["whip"], created["whep"], created["session"]
        viewer = Viewer(http, capture)
        publisher = Publisher(http)
        track = SpeechTrack(speech)
        if camera is not None:
            resource = await publisher.publish(f"{base}whip?delay={args.delay}", track, StampedCamera(camera))
            session = resource.rsplit("/", 1)[1]
            whep = f"{base}whep/{session}"
        posted = time.monotonic()
        await viewer.watch(whep)
        extra = asyncio.ensure_future(extra_viewers(whep, args.extra_viewers, args.seconds + args.delay - 1.0))
        if camera is None:
            await publisher.publish(whip, track)
        while not capture.video_arrivals and time.monotonic() - posted < 10:
            await asyncio.sleep(0.01)
        first_frame = capture.video_arrivals[0] - posted if capture.video_arrivals else None
        while track.started_at is None or time.monotonic() < track.started_at + args.seconds + args.delay + 0.5:
            await asyncio.sleep(0.2)
        stats = (await control.request("stats", session=session))["stats"]
        chunk_events = []
        while not control.events.empty():
            event = control.events.get_nowait()
            if event.get("event") in ("chunk", "degraded") and event.get("session") == session:
                chunk_events.append(event)
        extra = await extra
        await publisher.close()
        await viewer.close(delete=False)
    received_at, received = place_audio(capture.audio)
    audio = speech_delays(speech, track.started_at, received, received_at, args.delay)
    steady = [t for t in capture.video_arrivals if track.started_at + args.delay + 1 <= t
              <= track.started_at + args.seconds + args.delay - 0.5]
    fps = (len(steady) - 1) / (steady[-1] - steady[0]) if len(steady) > 1 else 0.0
    video = [d for t, d in capture.video_delays if track.started_at + args.delay + 1 <= t]
    return {"audio_delays": audio, "video_delays": video, "fps": fps, "first_frame": first_frame,
            "server_fps": stats["fps_out"], "av_send": stats["av_offset_send"], "server_skipped": stats["frames_skipped"],
            "chunks": stats["chunks"], "tiers": stats["tiers"], "cost": stats["cost"]["mean"],
            "settled": stats["ingest"]["settled"], "anchor_late": stats["ingest"]["anchor_late"],
            "generator": stats["cost"]["generator_mean"], "extra": extra,
            "chunk_events": chunk_events}


def percentiles(values) -> str:
    if not values:
        return "-"
    return f"p50 {np.percentile(values, 50):.3f} s, p95 {np.percentile(values, 95):.3f} s"


async def run(base: str, pid: int, sessions: int, args, speech, camera) -> dict:
    cpu0, own0, wall0 = server_cpu_seconds(pid), time.process_time(), time.monotonic()
    idle_rss, peak_rss = server_rss_mib(pid), [0.0]

    async def sample_rss() -> None:
        while True:
            peak_rss[0] = max(peak_rss[0], server_rss_mib(pid))
            await asyncio.sleep(1.0)

    sampler = asyncio.ensure_future(sample_rss())
    results = await asyncio.gather(*(one_session(base, i, args, speech, camera) for i in range(sessions)))
    sampler.cancel()
    wall = time.monotonic() - wall0
    cpu, own = (server_cpu_seconds(pid) - cpu0) / wall, (time.process_time() - own0) / wall
    audio = [d for r in results for d in r["audio_delays"]]
    video = [d for r in results for d in r["video_delays"]]
    late = sum(r["chunks"]["late"] + r["chunks"]["skipped"] + r["chunks"]["failed"] for r in results)
    offsets = [float(np.median(r["video_delays"]) - np.median(r["audio_delays"]))
               for r in results if r["video_delays"] and r["audio_delays"]]
    print(f"\n== {sessions} session(s), generator {args.generator} ({args.worker} workers), source {args.source}, "
          f"budget {args.delay} s, started {args.stagger:g} s apart, "
          f"{args.seconds:g} s of speech each")
    print(f"speech delay glass to glass: {percentiles(audio)}  (budget {args.delay} s; {len(audio)} windows)")
    print("  per session, p50: " + ", ".join(f"{np.median(r['audio_delays']):.3f} s" if r["audio_delays"] else "-"
                                            for r in results))
    av_send = ", ".join(f"p50 {r['av_send']['p50'] * 1000:+.1f} ms / p95 {r['av_send']['p95'] * 1000:+.1f} ms"
                        for r in results if r["av_send"]["p50"] is not None)
    print("  speech anchor per session, settled / still late (ms): " + ", ".join(
        f"{r['settled'] * 1000:.0f} / {r['anchor_late'] * 1000:.0f}" for r in results))
    print(f"A/V offset as sent by the server (video - audio send time, same instant): {av_send}")
    if video:
        print(f"video delay glass to glass:  {percentiles(video)}  ({len(video)} frames)")
        print(f"A/V offset at the aiortc receiver (video - speech delay, per session; aiortc does not "
              f"lip-sync, its audio jitter buffer holds 80 ms more): "
              f"{', '.join(f'{o * 1000:+.0f} ms' for o in offsets)}")
    fps = ", ".join(f"{r['fps']:.2f}" for r in results)
    first = ", ".join("-" if r["first_frame"] is None else f"{r['first_frame']:.3f} s" for r in results)
    costs = ", ".join(f"{r['cost']:.3f} s ({r['generator']:.3f} s in the generator)" if r["cost"] else "-"
                      for r in results)
    server_fps = ", ".join(f"{r['server_fps']:.2f} ({r['server_skipped']} skipped)" for r in results)
    print(f"output fps per viewer: {fps} received; {server_fps} sent by the server")
    print(f"WHEP POST to first frame: {first}")
    print(f"server CPU (with its worker processes): {cpu * 100:.0f}% of one core in all, "
          f"{cpu * 100 / sessions:.0f}% per session; the clients (this process, same machine): {own * 100:.0f}%")
    extra = [r["extra"] for r in results if r["extra"]]
    if extra:
        fps_extra = [f for e in extra for f in e["fps"]]
        print(f"{args.extra_viewers} more viewers per session (counting frames, not decoding): fps min "
              f"{min(fps_extra):.2f}, median {np.median(fps_extra):.2f}; their process's CPU "
              f"{', '.join(str(round(e['cpu'] * 100)) + '%' for e in extra)}")
    print(f"server memory (PSS, with its worker processes): {idle_rss:.0f} MiB before, peak {peak_rss[0]:.0f} MiB "
          f"({(peak_rss[0] - idle_rss) / sessions:.0f} MiB per session)")
    print(f"load average while it ran: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"chunks late/skipped/failed: {late}; generated: {sum(r['chunks']['generated'] for r in results)}; "
          f"tiers {[r['tiers'] for r in results]}; cost per chunk (mean, submission to result) {costs}")
    if args.chunks:
        for number, result in enumerate(results):
            print(f"session {number}: " + "; ".join(_chunk_line(e) for e in result["chunk_events"]))
    return {"sessions": sessions, "late": late, "cpu": cpu}


def _chunk_line(event: dict) -> str:
    """One chunk event, short: index, status or action, and its times."""
    if event["event"] == "degraded":
        return f"#{event['chunk']} {event['action']} (left {event['time_left']} s)"
    times = "/".join(str(event.get(k)) for k in ("seconds", "generator_seconds") if event.get(k) is not None)
    return f"#{event['chunk']} {event['status']} {times}".rstrip()


@contextlib.contextmanager
def livedub_serve(folder: str, options: list[str], python: str = sys.executable, root: str = ROOT):
    """``livedub serve --sources folder *options`` in a subprocess on a local port, once its /healthz
    answers (its first line printed); yields the process and its base URL; stopped on exit."""
    port = 18000 + os.getpid() % 2000
    server = subprocess.Popen([python, "-m", "server.cli", "serve", "--sources", folder, "--port", str(port),
                               "--log-level", "WARNING", *options], cwd=root, env=dict(os.environ, PYTHONPATH=root),
                              stdout=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(base + "healthz", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        print(server.stdout.readline().strip(), flush=True)
        yield server, base
    finally:
        server.terminate()
        server.wait(20)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--generator", default="lite")
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--delay", type=float, default=5.5)
    parser.add_argument("--source", choices=("video", "still", "live"), default="video",
                        help="library clip (panning camera), library still portrait, or live stamped camera")
    parser.add_argument("--size", default="512x512")
    parser.add_argument("--worker", choices=("auto", "thread", "process"), default="auto")
    parser.add_argument("--viewers", type=int, nargs="+", default=[0], metavar="N",
                        help="more WHEP viewers per session, one measurement per number (they count frames)")
    parser.add_argument("--chunks", action="store_true", help="print each session's chunk events")
    parser.add_argument("--count-viewers", nargs=3, metavar=("WHEP", "N", "SECONDS"), help=argparse.SUPPRESS)
    parser.add_argument("--stagger", type=float, default=0.0, metavar="SECONDS",
                        help="start session i at i * SECONDS (0: all at once, the worst case: every "
                             "session's chunks fall due together)")
    args = parser.parse_args()
    if args.count_viewers:
        count_viewers_main(args.count_viewers[0], int(args.count_viewers[1]), float(args.count_viewers[2]))
        return 0
    folder = tempfile.mkdtemp(prefix="livedub-bench-")
    clip, speech_path = prepare_live(folder)
    speech = read_speech(speech_path)
    speech = np.tile(speech, int(np.ceil(args.seconds * RATE / len(speech))))[: int(args.seconds * RATE)]
    camera = None
    if args.source == "live":
        source = VideoSource(clip, (512, 512))
        camera = [source.frame(i) for i in range(250)]
    options = ["--generator", args.generator, "--size", args.size, "--max-sessions", str(max(args.sessions)),
               "--max-viewers", str(max(args.viewers) + 1), "--delay", str(args.delay), "--worker", args.worker]
    with livedub_serve(folder, options) as (server, base):
        clean, cpu_by_viewers = [], {}
        for viewers in args.viewers:
            args.extra_viewers = viewers
            for count in args.sessions:
                result = asyncio.run(run(base, server.pid, count, args, speech, camera))
                if result["late"] == 0 and viewers == args.viewers[0]:
                    clean.append(count)
                cpu_by_viewers.setdefault(count, {})[viewers] = result["cpu"]
        summary = {"sessions_with_no_late_chunk": clean, "cores": os.cpu_count()}
        for count, by_viewers in cpu_by_viewers.items():
            if len(by_viewers) > 1:
                (v0, c0), (v1, c1) = min(by_viewers.items()), max(by_viewers.items())
                summary[f"server_cpu_per_additional_viewer_{count}_sessions"] = round((c1 - c0) / ((v1 - v0) * count), 4)
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
