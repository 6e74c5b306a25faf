"""A live SRT programme read by the server: how late its frames are due, and what reading costs.

A sender (PyAV's H.264 MPEG-TS at 30 fps into srt-live-transmit as caller, in a process of its own;
still picture with a strip of fresh noise)
feeds a programme source (srt-live-transmit listener -> PyAV, the server's reader thread). Printed:
the latency from the sender encoding a frame to the frame being due on the server's capture timeline
(and to its arrival), and the CPU the server side spends (reader thread + relay) per second of
programme. Usage:
    python bench/bench_programme.py --size 1280x720 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

SENDER = r"""
import sys, time, json, subprocess
from fractions import Fraction
import av, numpy as np
sys.path[:0] = [{root!r}, {tests!r}]
from _programme_servers import marked_frame
width, height, seconds, port = {width}, {height}, {seconds}, {port}
relay = subprocess.Popen(["srt-live-transmit", "-q", "file://con", f"srt://127.0.0.1:{{port}}"], stdin=subprocess.PIPE)
class Out:
    def write(self, data):
        relay.stdin.write(data); relay.stdin.flush(); return len(data)
base = (np.random.default_rng(0).random((height, width, 3)) * 60 + 90).astype(np.uint8)
sent = []
with av.open(Out(), "w", format="mpegts", options={{"flush_packets": "1", "max_delay": "0"}}) as container:
    stream = container.add_stream("libx264", rate=30)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.options = {{"preset": "ultrafast", "tune": "zerolatency", "g": "30"}}
    started = time.monotonic()
    for k in range(int(seconds * 30)):
        time.sleep(max(0.0, started + k / 30 - time.monotonic()))
        frame = av.VideoFrame.from_ndarray(marked_frame(base, k), format="rgb24")
        frame.pts = k
        sent.append(time.monotonic())
        for packet in stream.encode(frame):
            container.mux(packet)
relay.kill(); relay.wait()
print(json.dumps(sent))
"""


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def run(width: int, height: int, seconds: float) -> dict:
    from _media_servers import free_udp_port
    from _programme_servers import read_mark

    from streaming.programme import Programme

    port = free_udp_port()
    received: dict[int, tuple[float, float]] = {}
    programme = Programme("programme", f"srt://127.0.0.1:{port}?mode=listener")
    programme.subscribe(lambda frame, due: received.setdefault(
        read_mark(frame.to_ndarray(format="rgb24")), (time.monotonic(), due)))
    programme.start()
    await asyncio.sleep(0.5)
    cpu_before, children_before = time.process_time(), child_cpu()
    sender = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SENDER.format(root=ROOT, tests=os.path.join(ROOT, "tests"), width=width,
                                            height=height, seconds=seconds, port=port),
        stdout=subprocess.PIPE)
    out, _ = await sender.communicate()
    await asyncio.sleep(1.0)
    await programme.close()
    sender_cpu = child_cpu() - children_before  # the sender process and its relay (waited for)
    reader_cpu = time.process_time() - cpu_before  # this process: the reader thread (and reading the marks)
    sent = json.loads(out)
    pairs = [(sent[k], *received[k]) for k in range(len(sent)) if k in received and k < 4096]
    due_lag = np.array([due - t for t, _, due in pairs])
    arrival_lag = np.array([arrival - t for t, arrival, _ in pairs])
    return {"size": f"{width}x{height}", "seconds": seconds, "frames_sent": len(sent), "frames_received": len(pairs),
            "due_after_encode_s": {"p50": round(float(np.median(due_lag)), 3),
                                   "p95": round(float(np.percentile(due_lag, 95)), 3)},
            "due_after_encode_second_half_s": {"p50": round(float(np.median(due_lag[len(due_lag) // 2:])), 3),
                                               "p95": round(float(np.percentile(due_lag[len(due_lag) // 2:], 95)), 3)},
            "arrival_after_encode_s": {"p50": round(float(np.median(arrival_lag)), 3),
                                       "p95": round(float(np.percentile(arrival_lag, 95)), 3)},
            "reader_cpu_per_programme_second": round(reader_cpu / seconds, 3),
            "sender_and_relays_cpu_per_second": round(sender_cpu / seconds, 3), "cpus": os.cpu_count()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    print(json.dumps(asyncio.run(run(width, height, args.seconds)), indent=1))


if __name__ == "__main__":
    main()
