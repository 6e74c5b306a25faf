"""Faults through a real server and real peer connections: a viewer vanishes, the ingest stops, a
generator raises in one session; the sessions survive or end as documented, the others are unaffected."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import aiohttp
import pytest

import server_fault_generators
from _server_support import control_url, loopback_candidates, next_event, speech_48k, start_server
from client.control import ControlClient
from client.webrtc import Publisher, SpeechTrack, Viewer
from model.registry import GENERATORS


@pytest.fixture
def loopback(monkeypatch):
    loopback_candidates(monkeypatch)


@pytest.fixture
def fault_registry(monkeypatch):
    for name, entry in server_fault_generators.REGISTRY.items():
        monkeypatch.setitem(GENERATORS, name, entry)


class FrameCounter:
    def __init__(self) -> None:
        self.video: list[float] = []

    def __call__(self, kind, frame, arrival) -> None:
        if kind == "video":
            self.video.append(arrival)

    def since(self, moment: float) -> int:
        return sum(1 for t in self.video if t >= moment)


async def _wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.1)
    return condition()


@pytest.mark.slow
async def test_viewer_vanishing_and_ingest_stopping_and_a_raising_generator(tmp_path, loopback, fault_registry):
    server = await start_server(str(tmp_path / "sources"), size="128x128")
    try:
        async with ControlClient(control_url(server)) as control, aiohttp.ClientSession() as http:
            # Session A: a generator that raises on chunk 0; two viewers, one of which vanishes.
            a = await control.request("create", source="red", generator="raising_first")
            # Session B: passthrough, its ingest stops (the sender closes its connection, no DELETE).
            b = await control.request("create", source="blue")
            counters = [FrameCounter() for _ in range(3)]
            viewers = [Viewer(http, counters[0]), Viewer(http, counters[1]), Viewer(http, counters[2])]
            await viewers[0].watch(a["whep"])
            await viewers[1].watch(a["whep"])
            await viewers[2].watch(b["whep"])
            senders = [Publisher(http), Publisher(http)]
            speech = speech_48k(8.0)
            await senders[0].publish(a["whip"], SpeechTrack(speech))
            await senders[1].publish(b["whip"], SpeechTrack(speech))
            await asyncio.sleep(1.5)

            await viewers[1].pc.close()  # vanishes: no DELETE
            await senders[1].pc.close()  # B's ingest stops
            stopped = time.monotonic()
            session_a = server.manager.get(a["session"])
            assert await _wait_for(lambda: len(session_a.viewers) == 1, 10), "vanished viewer not removed"

            seen: list[dict] = []
            error = await next_event(control, seen, lambda e: e["event"] == "error", 8)
            assert error["session"] == a["session"] and error["code"] == "generator_failed"
            ended = await next_event(control, seen, lambda e: e["event"] == "ended", 10)
            assert ended["session"] == b["session"] and ended["reason"] == "ingest_ended"
            # B played out what was captured (its delay later), then ended.
            assert time.monotonic() - stopped >= 4.2 - 1.0

            # A carries on: its remaining viewer still gets 25 fps, later chunks are generated.
            moment = time.monotonic()
            await asyncio.sleep(2.0)
            assert 45 <= counters[0].since(moment) <= 55
            assert await _wait_for(lambda: session_a.counts["generated"] >= 1, 5)
            stats = (await control.request("stats", session=a["session"]))["stats"]
            assert stats["chunks"]["failed"] == 1 and stats["state"] == "running" and stats["viewers"] == 1
            assert [s["session"] for s in (await control.request("sessions"))["sessions"]] == [a["session"]]
            await senders[0].close()  # DELETE ends A
            ended = await next_event(control, seen, lambda e: e["event"] == "ended" and e["session"] == a["session"], 5)
            assert ended["reason"] == "ingest_deleted"
            for viewer in viewers:
                await viewer.close(delete=False)
    finally:
        await server.stop()


@pytest.mark.slow
async def test_a_dead_host_worker_fails_one_chunk_and_every_session_on_it_goes_on(tmp_path):
    """Sessions of a per-session generator share a host worker process (streaming/hosts.py): when it dies,
    the chunk it was running fails, the host is restarted, and both sessions go on, each on a fresh
    instance of its own."""
    server = await start_server(str(tmp_path / "sources"), size="64x64", worker="process", workers=1)
    try:
        async with ControlClient(control_url(server)) as control:
            a = (await control.request("create", source="red"))["session"]
            b = (await control.request("create", source="blue"))["session"]
            hosts = server.manager._pools["passthrough"]
            assert hosts.sessions() == [2] and len(hosts.worker_pids) == 1
            (killed,) = hosts.worker_pids
            os.kill(killed, signal.SIGKILL)
            seen: list[dict] = []
            died = await next_event(control, seen, lambda e: e["event"] == "error", 10)
            assert died["session"] in (a, b) and died["code"] == "worker_died"
            # Chunks come on the session clock even without speech: each session's next chunks are
            # generated again by the restarted host.
            for session in (a, b):
                last = max([e["chunk"] for e in seen if e["event"] == "chunk" and e["session"] == session], default=-1)
                await next_event(control, seen, lambda e: e["event"] == "chunk" and e["session"] == session
                                 and e["chunk"] > max(last, died["chunk"]) and e["status"] == "on_time", 15)
            assert not [e for e in seen if e["event"] == "error"]  # the one chunk in flight, no other
            (host,) = hosts.pools
            assert host.deaths == 1 and host.restarts == 1 and hosts.worker_pids != [killed]
    finally:
        await server.stop()


async def test_a_finished_speech_file_ends_its_session_once_played_out(tmp_path, loopback):
    """The sender says its speech is over, by the control op ``end_ingest`` (session C) or by stopping
    its audio sender, whose RTCP BYE ends the server's received track (session D): both sessions play out
    what they captured, a delay later, and end with ``ingest_ended`` instead of idling."""
    server = await start_server(str(tmp_path / "sources"), size="128x128")
    try:
        async with ControlClient(control_url(server)) as control, aiohttp.ClientSession() as http:
            c = await control.request("create", source="red")
            d = await control.request("create", source="blue")
            senders = [Publisher(http), Publisher(http)]
            await senders[0].publish(c["whip"], SpeechTrack(speech_48k(1.5)))
            await senders[1].publish(d["whip"], SpeechTrack(speech_48k(1.5)))
            await asyncio.sleep(1.0)
            reply = await control.request("end_ingest", session=c["session"])
            await senders[1].pc.getSenders()[0].stop()  # RTCP BYE
            ended_input = time.monotonic()
            assert 0.5 < reply["ends_at"] < 1.6
            seen: list[dict] = []
            reasons = {}
            for _ in range(2):
                event = await next_event(control, seen, lambda e: e["event"] == "ended", 10)
                reasons[event["session"]] = event["reason"]
            assert reasons == {c["session"]: "ingest_ended", d["session"]: "ingest_ended"}
            assert time.monotonic() - ended_input >= 4.2 - 1.5  # played out a delay later, not cut
            for sender in senders:
                await sender.close(delete=False)
    finally:
        await server.stop()
