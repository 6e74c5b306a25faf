"""An ended session is freed by reference counting alone: nothing of it waits for a full garbage collection.

Before, every ended session lived on in reference cycles (aiortc's transports holding their peer
connection's listeners, aioice's check list, cancelled tasks keeping their tracebacks) until the
collector's oldest generation ran: over 52 sessions the idle server held 953 MB, 496 MB after a
``gc.collect()``. Here a real server on loopback runs a session over WHIP and WHEP, the session ends, and
weak references to the session, its peers, their peer connections and its output tracks must all be dead
with the collector disabled the whole time.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import os
import subprocess
import sys
import weakref

import aiohttp
import pytest

from _server_support import control_url, loopback_candidates, speech_48k, start_server
from client.control import ControlClient
from client.webrtc import Publisher, SpeechTrack, Viewer


@pytest.fixture
def loopback(monkeypatch):
    loopback_candidates(monkeypatch)


def _cycle_through(start) -> str:
    """A reference cycle through ``start`` as type names (for the failure message), or ''."""
    seen = {id(start): None}
    queue = [start]
    while queue:
        current = queue.pop(0)
        for referent in gc.get_referents(current):
            if referent is start:
                path, node = [type(current).__qualname__], current
                while seen[id(node)] is not None:
                    node = seen[id(node)]
                    path.append(type(node).__qualname__)
                return " <- ".join(path)
            if id(referent) not in seen and not isinstance(referent, type) and len(seen) < 100_000:
                seen[id(referent)] = current
                queue.append(referent)
    return ""


async def _wait_gone(refs: dict[str, weakref.ref], server) -> dict[str, str]:
    """Poll until every referent is freed (the end runs in tasks); those still alive, with a cycle."""
    for _ in range(100):
        if not server.manager.sessions and all(ref() is None for ref in refs.values()):
            return {}
        await asyncio.sleep(0.05)
    return {name: _cycle_through(ref()) for name, ref in refs.items() if ref() is not None}


@pytest.mark.parametrize("end", ["whip_delete", "control_stop"])
async def test_an_ended_session_is_freed_without_the_garbage_collector(tmp_path, loopback, end):
    server = await start_server(str(tmp_path / "sources"), size="128x128")
    refs: dict[str, weakref.ref] = {}
    gc.collect()  # start from a clean slate; from here on only reference counting frees anything
    gc.disable()
    try:
        async with ControlClient(control_url(server)) as control, aiohttp.ClientSession() as http:
            created = await control.request("create", source="red", delay=4.2)
            viewer, publisher = Viewer(http, lambda *frame: None), Publisher(http)
            await viewer.watch(created["whep"])
            await publisher.publish(created["whip"], SpeechTrack(speech_48k(1.0)))
            entry = server.manager._entries[created["session"]]
            (viewer_peer,) = entry.viewers.values()
            refs.update(session=weakref.ref(entry.session), pool=weakref.ref(entry.session.pool),
                        ingest_peer=weakref.ref(entry.ingest), ingest_pc=weakref.ref(entry.ingest.pc),
                        viewer_peer=weakref.ref(viewer_peer), viewer_pc=weakref.ref(viewer_peer.pc))
            tracks = [sender.track for sender in viewer_peer.pc.getSenders() if sender.track is not None]
            assert {track.kind for track in tracks} == {"audio", "video"}
            refs.update({f"{track.kind}_track": weakref.ref(track) for track in tracks})
            del entry, viewer_peer, tracks
            while not viewer.ended.is_set() and server.manager.get(created["session"]).ingest.frames_received < 25:
                await asyncio.sleep(0.05)  # half a second of speech has arrived: the session is running
            if end == "control_stop":
                await control.request("stop", session=created["session"])
            await publisher.close(delete=end == "whip_delete")
            await viewer.close(delete=False)
        alive = await _wait_gone(refs, server)
        assert not alive, f"alive after the end without a collection (cycles through them): {alive}"
    finally:
        gc.enable()
        await server.stop()


def test_a_video_source_is_freed_without_the_garbage_collector(tmp_path):
    """A VideoSource part way through its video: its open decoder (and FFmpeg's frame threads) goes with it.
    Its decoding generator used to be a method, whose suspended frame held the source: a cycle."""
    from server.demo import make_demo_source
    from streaming.source import VideoSource

    clip = make_demo_source(str(tmp_path / "clip.mp4"), seconds=1.0, size=64)
    gc.collect()
    gc.disable()
    try:
        source = VideoSource(clip, (64, 64), "loop")
        assert source.frame(30).shape == (64, 64, 3)  # looped once: a second decoding pass is suspended
        ref = weakref.ref(source)
        del source
        assert ref() is None, f"alive without a collection (cycle: {_cycle_through(ref())})"
    finally:
        gc.enable()


HEAP_PROBE = r"""
import asyncio, ctypes, sys
import numpy as np
from _server_support import start_server

class Info(ctypes.Structure):  # glibc's struct mallinfo2
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info

def mapped_for_a_frame() -> int:
    np.ones(8 << 20, np.uint8)  # an 8 MiB buffer, freed at once: glibc's dynamic threshold would rise to it
    before = libc.mallinfo2().hblkhd  # bytes in mmaps of their own
    frame = np.ones(1 << 20, np.uint8)  # a 1 MiB frame buffer
    return libc.mallinfo2().hblkhd - before

async def serve(folder):
    server = await start_server(folder)
    await server.stop()

print(mapped_for_a_frame())
asyncio.run(serve(sys.argv[1]))
print(mapped_for_a_frame())
"""


def test_the_server_keeps_frame_buffers_out_of_the_heap_arenas(tmp_path):
    """Over churn the idle server's RSS crept up by about 0.3 MiB a session while nothing of a session
    survived: glibc's dynamic mmap threshold had moved frame-sized buffers into the arenas, which
    fragmented (streaming/heap.py). The server fixes the threshold when it starts: after that, a 1 MiB
    buffer is an mmap of its own even after an 8 MiB one was freed (before, it came from an arena)."""
    if not hasattr(ctypes.CDLL(None), "mallinfo2"):
        pytest.skip("not glibc 2.33 or later: no mallinfo2 to read the heap's mmaps with")
    tests = os.path.dirname(os.path.abspath(__file__))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["PYTHONPATH"] = os.pathsep.join([tests, os.path.dirname(tests)])
    result = subprocess.run([sys.executable, "-c", HEAP_PROBE, str(tmp_path / "sources")], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    before_start, after_start = (int(line) for line in result.stdout.split())
    assert before_start == 0  # glibc's default: the arenas serve it (the test can tell the difference)
    assert after_start >= 1 << 20  # the server's policy: its own mmap, handed back when freed
