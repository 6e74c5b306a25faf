"""Benchmark: the CPU cost of RTMP outputs on a live session.

One live session (generator lite by default, on the demo portrait, at the server's output size) is fed
real read speech at wall-clock pace. Its server process's CPU (utime + stime of all its threads, over
wall time, in % of one core) is measured with no output, then with 1, 2, ... outputs pushing to a local
nginx with its RTMP module (HLS off: nginx's own work is printed apart). Each RTMP connection's relay
process (server.rtmp_relay: FLV muxing and the network writes) is measured apart and added to the cost.
The first output starts the session's H.264 and AAC encodes (shared with WebRTC viewers that chose
H.264, and by every further output); each further output adds only its relay and the writes into it.
The load average is printed: the machine may be shared.

``--stall``: then nginx stops reading (SIGSTOP) and the time until the last output notices (its state leaves
``connected``, with the reason) is printed, and the time to connect again once nginx runs (SIGCONT).

Run:  PYTHONPATH=$PWD .venv/bin/python bench/bench_outputs.py [--outputs 3] [--seconds 10]
      [--generator lite] [--size 480] [--stall [--stall-limit 300]]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

from _media_servers import Nginx, missing_nginx  # noqa: E402
from _server_support import speech_48k  # noqa: E402
from procstat import cpu_seconds, stat_fields  # noqa: E402
from server.app import LiveServer  # noqa: E402
from server.config import build_config  # noqa: E402
from server.demo import prepare_live  # noqa: E402
from streaming.ingest import PLAYOUT_RATE  # noqa: E402

BLOCK = 960


async def feed_forever(session, speech: np.ndarray) -> None:
    """Speech in 20 ms frames at wall-clock pace, looped, as a WHIP sender would send it."""
    from _server_support import audio_frame

    started = time.monotonic()
    k = 0
    while session.state != "ended":
        due = started + k * BLOCK / PLAYOUT_RATE
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        at = (k * BLOCK) % (len(speech) - BLOCK)
        session.ingest.push(audio_frame(speech[at : at + BLOCK], k * BLOCK), session.session_time())
        k += 1


def relay_pids() -> list[int]:
    """This process's RTMP relay children (not the generator's worker process)."""
    pids = []
    for name in os.listdir("/proc"):
        try:
            parent = int(stat_fields(int(name))[1])
            with open(f"/proc/{name}/cmdline", "rb") as handle:
                relay = b"server.rtmp_relay" in handle.read()
        except (OSError, ValueError):
            continue
        if parent == os.getpid() and relay:
            pids.append(int(name))
    return pids


async def measure(seconds: float, nginx_pid: int) -> tuple[float, float, float]:
    """% of one core: this process, its relays, nginx."""
    relays = relay_pids()
    wall, ours, theirs = time.monotonic(), cpu_seconds(), cpu_seconds(nginx_pid)
    relayed = sum(cpu_seconds(pid) for pid in relays)
    await asyncio.sleep(seconds)
    wall = time.monotonic() - wall
    relayed = sum(cpu_seconds(pid) for pid in relays) - relayed  # a relay that ended mid-way would raise
    return (100 * (cpu_seconds() - ours) / wall, 100 * relayed / wall,
            100 * (cpu_seconds(nginx_pid) - theirs) / wall)


async def main(args: argparse.Namespace) -> None:
    reason = missing_nginx()
    if reason:
        sys.exit(f"bench_outputs: {reason}")
    folder = tempfile.mkdtemp(prefix="bench-outputs-")
    nginx = Nginx(os.path.join(folder, "nginx"))
    with open(nginx.config) as handle:
        config = handle.read().replace("hls on;", "hls off;")
    with open(nginx.config, "w") as handle:
        handle.write(config)
    nginx.start()
    prepare_live(os.path.join(ROOT, "demo"))
    server = LiveServer(build_config({"sources": os.path.join(ROOT, "demo"), "port": 0,
                                      "generator": args.generator, "size": args.size, "delay": args.delay}))
    await server.start()
    try:
        session = await server.manager.create("portrait")
        height, width = session.output_size
        feeder = asyncio.create_task(feed_forever(session, speech_48k(30.0)))
        await asyncio.sleep(args.delay + 2.0)  # the first chunks are out: the session is in its steady state
        print(f"bench_outputs: session {width}x{height} at 25 fps, generator {args.generator}, "
              f"{args.seconds:g} s per measurement, {os.cpu_count()} cores, load average "
              f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")
        rows = []
        for count in range(args.outputs + 1):
            if count:
                output = server.manager.add_output(session.id, nginx.url(f"out{count}"))
                while output.state != "connected":
                    await asyncio.sleep(0.05)
                await asyncio.sleep(1.0)
            ours, relays, theirs = await measure(args.seconds, nginx.process.pid)
            stats = session.stats()
            dropped = sum(o["dropped"] for o in stats.reported.get("outputs", []))
            rows.append(ours + relays)
            print(f"  {count} output(s): server {ours:5.1f} % of a core, its relays {relays:4.1f} %, "
                  f"nginx {theirs:4.1f} %, "
                  f"late chunks so far {stats.chunks.late}, output items dropped {dropped}")
        if args.outputs:
            first = rows[1] - rows[0]
            more = (rows[-1] - rows[1]) / (args.outputs - 1) if args.outputs > 1 else float("nan")
            print(f"bench_outputs: first RTMP output +{first:.1f} % of a core (H.264 + AAC encode, relay); "
                  f"each further output +{more:.1f} % (its relay, the writes into it)")
        if args.stall and args.outputs:
            await stalled_receiver(nginx.process.pid, output, args.stall_limit)
        feeder.cancel()
    finally:
        await server.stop()
        nginx.stop()


async def stalled_receiver(nginx_pid: int, output, limit: float) -> None:
    """nginx stops reading: how long until ``output`` notices, then how long to reconnect once it reads."""
    os.kill(nginx_pid, signal.SIGSTOP)
    started = time.monotonic()
    try:
        while output.state == "connected" and time.monotonic() - started < limit:
            await asyncio.sleep(0.05)
        noticed = time.monotonic() - started
    finally:
        os.kill(nginx_pid, signal.SIGCONT)
    if output.state == "connected":
        print(f"bench_outputs: nginx stopped reading; not noticed within {limit:g} s")
        return
    print(f"bench_outputs: nginx stopped reading; noticed after {noticed:.1f} s ({output.error})")
    resumed = time.monotonic()
    while output.state != "connected" and time.monotonic() - resumed < limit:
        await asyncio.sleep(0.05)
    print(f"bench_outputs: nginx reading again; {output.state} after {time.monotonic() - resumed:.1f} s")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outputs", type=int, default=3, help="outputs added one by one (default 3)")
    parser.add_argument("--seconds", type=float, default=10.0, help="each measurement's length (default 10)")
    parser.add_argument("--generator", default="lite")
    parser.add_argument("--size", default="480", help="output size: 480, 720 or WxH (default 480)")
    parser.add_argument("--delay", type=float, default=5.5)
    parser.add_argument("--stall", action="store_true", help="then time how long a receiver that stops "
                        "reading takes to be noticed")
    parser.add_argument("--stall-limit", type=float, default=300.0, help="give up waiting after this (s)")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
