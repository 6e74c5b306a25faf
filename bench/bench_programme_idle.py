"""What an SRT programme listener costs the server while no session uses it: before (decoded from
start-up on: ``live_source_idle = 0``) and now (on demand: listening, demuxing, not decoding), then while a
session uses it, and once more after its grace period. A sender process (H.264 MPEG-TS at 30 fps into
srt-live-transmit as caller, bench_programme.py's) feeds the listener throughout. Printed per phase: the
server side's CPU (this process: the reader thread; plus its srt-live-transmit relay) per second, its
resident memory, and the decoded frames it holds. Usage:
    python bench/bench_programme_idle.py --size 1920x1080 --seconds 6
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

from bench_programme import SENDER  # noqa: E402  (the same sender)
from procstat import cpu_seconds  # noqa: E402


def relay_cpu() -> float:
    """CPU seconds of this process's running srt-live-transmit relays."""
    from _programme_servers import relay_children

    total = 0.0
    for relay in relay_children():
        try:
            total += cpu_seconds(int(relay.split()[0]))
        except OSError:  # ended meanwhile
            continue
    return total


def rss_mib() -> float:
    with open("/proc/self/status") as handle:
        kib = next(int(line.split()[1]) for line in handle if line.startswith("VmRSS:"))
    return round(kib / 1024, 1)


async def phase(programme, seconds: float) -> dict:
    cpu, relay, frames = time.process_time(), relay_cpu(), programme.frames
    await asyncio.sleep(seconds)
    return {"server_cpu_cores": round((time.process_time() - cpu + relay_cpu() - relay) / seconds, 3),
            "rss_mib": rss_mib(), "frames_decoded": programme.frames - frames,
            "frames_held": programme.analysis.kept + (programme.latest is not None), "state": programme.state,
            "decoding": programme.decoding}


async def run(width: int, height: int, seconds: float, idle_after: float) -> dict:
    from _media_servers import free_udp_port
    from _programme_servers import until

    from streaming.clock import VirtualClock
    from streaming.programme import Programme

    port = free_udp_port()
    clock = VirtualClock()
    programme = Programme("programme", f"srt://127.0.0.1:{port}?mode=listener", idle_after=idle_after,
                          idle_clock=clock)
    programme.start()
    sender = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SENDER.format(root=ROOT, tests=os.path.join(ROOT, "tests"), width=width,
                                            height=height, seconds=seconds * 4 + 10, port=port),
        stdout=subprocess.DEVNULL, start_new_session=True)  # its own group: its relay is killed with it
    phases = {}
    try:
        await until(lambda: programme.state == "connected", 20)
        await asyncio.sleep(2.0)  # settled: the connection's start is not measured
        phases["unused"] = await phase(programme, seconds)
        if idle_after > 0:
            unsubscribe = programme.subscribe(lambda frame, due: None)
            await asyncio.sleep(1.0)
            phases["used"] = await phase(programme, seconds)
            unsubscribe()
            await clock.advance(idle_after)  # the grace period
            await asyncio.sleep(1.0)
            phases["unused_again"] = await phase(programme, seconds)
    finally:
        os.killpg(sender.pid, signal.SIGKILL)  # the sender and its srt-live-transmit (an orphan would go on)
        await sender.wait()
        await programme.close()
    return phases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1920x1080")
    parser.add_argument("--seconds", type=float, default=6.0)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    from streaming.heap import bound_heap

    bound_heap()  # as the server does (server/app.py): freed frames go back to the system
    result = {"size": args.size, "seconds_per_phase": args.seconds, "cpus": os.cpu_count(),
              "before (live_source_idle 0)": asyncio.run(run(width, height, args.seconds, 0)),
              "on demand (live_source_idle 30)": asyncio.run(run(width, height, args.seconds, 30))}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
