"""Live programme sources cost nothing while unused: a pulled source is read from its first session until
a grace period (on an injected clock) after its last one; an SRT listener keeps listening for its sender
but decodes only while used; stopping ends the reader thread and the relay and drops the held frames."""

from __future__ import annotations

import asyncio
import threading

import pytest
from _media_servers import free_udp_port, missing_srt
from _programme_servers import SrtSender, read_mark, relay_children, until
from _server_support import control_url, start_server

from client.control import ControlClient
from server.config import build_config
from streaming.clock import VirtualClock
from streaming.demand import Demand
from streaming.errors import InputError
from streaming.programme import Programme

needs_srt = pytest.mark.skipif(missing_srt() is not None, reason=str(missing_srt()))


# ---- the grace period ----------------------------------------------------------------------------------
async def test_a_resource_starts_with_its_first_use_and_stops_a_grace_period_after_its_last():
    clock = VirtualClock()
    calls: list[str] = []
    demand = Demand(lambda: calls.append("start"), lambda: calls.append("stop"), idle_after=30, clock=clock)
    first = demand.acquire()
    second = demand.acquire()
    assert calls == ["start"] and demand.running
    first()
    first()  # a release counts once
    await clock.advance(100)
    assert calls == ["start"]  # one user left
    second()
    await clock.advance(29.9)
    assert calls == ["start"]
    third = demand.acquire()  # within the grace period: reused as it is
    third()
    await clock.advance(29.9)
    assert calls == ["start"]  # the grace period starts again from the last release
    await clock.advance(0.1)
    assert calls == ["start", "stop"] and not demand.running
    demand.touch()  # a thumbnail: started, and let go again after the grace period
    assert calls == ["start", "stop", "start"]
    await clock.advance(30)
    assert calls == ["start", "stop", "start", "stop"]
    never = Demand(lambda: calls.append("start 0"), lambda: calls.append("stop 0"), idle_after=0, clock=clock)
    never.acquire()()
    await clock.advance(1e6)
    assert calls[-1] == "start 0" and never.running


def test_live_source_idle_is_a_checked_server_option():
    assert build_config({}).live_source_idle == 30.0
    assert build_config({"live_source_idle": 0}).live_source_idle == 0.0
    with pytest.raises(InputError, match=r"^bad live-source-idle -1: accepted is seconds from 0 to 86400$"):
        build_config({"live_source_idle": -1})


# ---- real SRT ------------------------------------------------------------------------------------------
def _readers() -> list[str]:
    return [thread.name for thread in threading.enumerate() if thread.name.startswith("programme-")]


def _relays(*senders: SrtSender | None) -> list[str]:
    """The programme's relays: this process's srt-live-transmit children but the test's senders."""
    theirs = {str(sender.process.pid) for sender in senders if sender is not None}
    return [relay for relay in relay_children() if relay.split()[0] not in theirs]


def _holds_nothing(programme: Programme) -> bool:
    return programme.latest is None and programme.analysis.kept == 0 and programme._queue.empty()


@needs_srt
async def test_a_pulled_source_is_read_only_while_used_and_for_its_grace_period(tmp_path):
    """An SRT caller source (the sender listens): nothing runs before its first session; it is read
    while one is subscribed and for 30 s (virtual) after; then its thread and relay end and its frames go;
    the next session reads it again."""
    port = free_udp_port()
    sender = SrtSender(port, listener=True)
    clock = VirtualClock()
    states: list = []
    programme = Programme("studio", f"srt://127.0.0.1:{port}?mode=caller", states.append, idle_after=30,
                          idle_clock=clock)
    received: list = []
    try:
        programme.start()  # server start-up: a pulled source is not read yet
        await until(lambda: sender.encoder.sent >= 30, 20)  # a second of programme on offer, unread
        assert (programme.state, programme.decoding, programme.frames) == ("idle", False, 0)
        assert _readers() == [] and _relays(sender) == [] and programme.stats()["state"] == "idle"
        unsubscribe = programme.subscribe(lambda frame, due: received.append(frame))
        assert programme.state == "connecting" and programme.decoding
        await until(lambda: len(received) >= 30, 20)
        assert len(_relays(sender)) == 1
        assert [s.state for s in states] == ["connected"] and states[0].size == "320x320"
        unsubscribe()
        await clock.advance(29)  # within the grace period: still read
        before = len(received)
        assert programme.decoding and programme.latest is not None
        await until(lambda: programme.frames >= before + 15, 20)
        await clock.advance(1)
        assert [s.state for s in states] == ["connected", "idle"] and states[1].reason == "unused for 30 s"
        assert not programme.decoding and programme.stats()["state"] == "idle" and _holds_nothing(programme)
        await until(lambda: not programme.readers and not _relays(sender), 10)  # thread and relay ended
        assert _readers() == [] and _holds_nothing(programme)
        frames = programme.frames
        # A fresh sender: srt-live-transmit listening again after its caller left drops the next call.
        sender.kill()
        sender = SrtSender(port, listener=True)
        await until(lambda: sender.encoder.sent >= 15, 20)
        programme.subscribe(lambda frame, due: received.append(frame))  # the next session
        await until(lambda: programme.frames >= frames + 30, 20)
        again = [s.state for s in states[2:]]  # (a call before the new sender listened is retried)
        assert again[-1] == "connected" and set(again[:-1]) <= {"reconnecting"}, states
        assert len(programme.readers) == 1 and len(_relays(sender)) == 1
    finally:
        await programme.close()
        sender.kill()
    assert _readers() == [] and _relays(sender) == [] and _holds_nothing(programme)


@needs_srt
async def test_a_listener_takes_its_sender_with_no_session_but_decodes_only_while_one_uses_it(tmp_path):
    port = free_udp_port()
    clock = VirtualClock()
    states: list = []
    programme = Programme("programme", f"srt://127.0.0.1:{port}?mode=listener", states.append, idle_after=30,
                          idle_clock=clock)
    received: list = []
    sender = None
    try:
        programme.start()  # listening from start-up on
        await until(lambda: len(_relays(sender)) == 1, 10)
        asking = asyncio.ensure_future(programme.picture(5))  # a thumbnail while no sender is there
        await clock.advance(5)
        assert await asking is None and programme.decoding  # none came: "no picture yet"
        await clock.advance(30)
        assert not programme.decoding  # asked for nothing more: decoding stops again
        sender = SrtSender(port)
        await until(lambda: states, 20)
        assert [(s.state, s.size) for s in states] == [("connected", "320x320")]  # the sender is there
        sent = sender.encoder.sent
        await until(lambda: sender.encoder.sent >= sent + 45, 20)  # 1.5 s more of programme: not decoded
        assert programme.frames == 0 and not programme.decoding and _holds_nothing(programme)
        picture = await asyncio.wait_for(programme.picture(5), 20)  # a thumbnail: from the next keyframe
        assert picture is not None and read_mark(picture[0].to_ndarray(format="rgb24")) >= 45
        unsubscribe = programme.subscribe(lambda frame, due: received.append(frame))
        await until(lambda: len(received) >= 30, 20)  # decoded from the next keyframe on
        unsubscribe()
        await clock.advance(30)
        frames = programme.frames
        assert not programme.decoding and _holds_nothing(programme)
        sent = sender.encoder.sent
        await until(lambda: sender.encoder.sent >= sent + 45, 20)
        assert programme.frames == frames and _holds_nothing(programme)  # no more decoded, nothing kept
        assert len(programme.readers) == 1 and len(_relays(sender)) == 1  # still connected to its sender
        first_run = [read_mark(frame.to_ndarray(format="rgb24")) for frame in received]
        programme.subscribe(lambda frame, due: received.append(frame))
        await until(lambda: programme.frames >= frames + 30, 20)
        assert [s.state for s in states] == ["connected"]  # never lost: no event but the first
        second_run = [read_mark(frame.to_ndarray(format="rgb24")) for frame in received[len(first_run):]]
    finally:
        await programme.close()
        if sender is not None:
            sender.kill()
    assert _readers() == [] and _relays(sender) == [] and _holds_nothing(programme)
    # Each run: every frame from where decoding started (a keyframe), in order; the second after a gap
    # of at least the 1.5 s (45 frames) not decoded.
    for run in (first_run, second_run):
        assert len(run) >= 30 and run == list(range(run[0], run[0] + len(run))), run
    assert first_run[0] >= 45 and second_run[0] >= first_run[-1] + 45


@needs_srt
async def test_a_session_on_a_pulled_source_that_is_down_starts_and_plays_it_once_it_comes(tmp_path):
    """Created while its source connects (here: its sender is not up yet), a session starts as on any
    programme that is down (no picture until the first frame) and gets the frames once it is up."""
    port = free_udp_port()
    server = await start_server(str(tmp_path / "sources"), size="256x256",
                                live_sources={"studio": f"srt://127.0.0.1:{port}?mode=caller"})
    sender = None
    try:
        async with ControlClient(control_url(server)) as control:
            assert (await control.request("stats"))["live_sources"][0]["state"] == "idle"
            assert _relays(sender) == []
            created = await control.request("create", source="studio")
            session = server.manager.get(created["session"])
            stats = (await control.request("stats"))["live_sources"][0]
            assert stats["decoding"] and stats["state"] in ("connecting", "reconnecting") and stats["sessions"] == 1
            assert not session.live.has_frames
            sender = SrtSender(port, listener=True)
            await until(lambda: session.live.frames_received >= 25, 30)
            await control.request("stop", session=session.id)
            await until(lambda: server.manager.programmes.get("studio").subscribers == 0, 10)
            stats = (await control.request("stats"))["live_sources"][0]
            assert stats["decoding"] and stats["state"] == "connected"  # the grace period (30 s) runs
    finally:
        await server.stop()
        if sender is not None:
            sender.kill()
    assert _relays(sender) == [] and _readers() == []
