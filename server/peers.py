"""WebRTC peer connections: WHIP ingest (the speech, and optionally live video, in) and WHEP egress.

Every received track is consumed at once (aiortc's receive queues are unbounded: a track nobody reads
grows memory and delay). ICE servers are exactly the configured ones, none by default, so nothing is
contacted unasked.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from server.config import IceServer
from server.offers import Offer, OfferError
from server.tracks import SessionAudioTrack, SessionVideoTrack
from streaming.session import LiveSession

log = logging.getLogger("livedub.peers")
FAILED_STATES = ("failed", "closed")


def offer_loopback_candidates() -> None:
    """Make aioice offer 127.0.0.1 (it never does by itself), for peers on this machine only.

    aioice has no option for it, so this replaces its host-address lookup for the whole process: only
    ``serve --ice-loopback``, ``client --ice-loopback`` and the tests call it.
    """
    import aioice.ice

    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


def rtc_configuration(ice_servers: tuple[IceServer, ...]) -> RTCConfiguration:
    return RTCConfiguration(iceServers=[RTCIceServer(urls=s.url, username=s.username, credential=s.credential)
                                        for s in ice_servers])


async def _set_offer(pc: RTCPeerConnection, offer: Offer) -> None:
    """Apply a checked offer; anything aiortc still refuses is the offer's fault (a 400), not a bug."""
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer.sdp, type="offer"))
    except Exception as exc:  # noqa: BLE001 - aiortc raises ValueError, OperationError, KeyError...
        raise OfferError(f"bad SDP offer: aiortc refused it ({type(exc).__name__}: {str(exc)[:120]})") from None


async def _answer(pc: RTCPeerConnection, offer: Offer) -> str:
    await _set_offer(pc, offer)
    await pc.setLocalDescription(await pc.createAnswer())
    return pc.localDescription.sdp


async def _drain(track: MediaStreamTrack, handle: Callable | None) -> None:
    """Read a received track until it ends, handing each frame to ``handle`` (or dropping it)."""
    try:
        while True:
            frame = await track.recv()
            if handle is not None:
                handle(frame)
    except MediaStreamError:
        pass


class Peer:
    """One peer connection and the tasks reading its received tracks. It is gone when its connection
    fails or closes, or is not up ``connect_timeout`` seconds after the answer (an offer whose
    candidates cannot be reached would otherwise hold its session, and a worker, until the idle timeout)."""

    def __init__(self, ice_servers: tuple[IceServer, ...], on_gone: Callable[[], None],
                 connect_timeout: float) -> None:
        self.pc = RTCPeerConnection(rtc_configuration(ice_servers))
        self.tasks: list[asyncio.Task] = []
        self._gone = False
        self._on_gone = on_gone
        self._deadline = asyncio.get_running_loop().call_later(connect_timeout, self._not_connected)

        @self.pc.on("connectionstatechange")
        def on_state() -> None:
            if self.pc.connectionState == "connected":
                self._deadline.cancel()
            elif self.pc.connectionState in FAILED_STATES:
                self._report_gone()

    def _not_connected(self) -> None:
        if self.pc.connectionState != "connected":
            log.info("peer not connected in time (%s): giving up", self.pc.connectionState)
            self._report_gone()

    def _report_gone(self) -> None:
        if not self._gone:
            self._gone = True
            self._deadline.cancel()
            self._on_gone()

    def read(self, track: MediaStreamTrack, handle: Callable | None) -> None:
        self.tasks.append(asyncio.create_task(_drain(track, handle), name=f"read-{track.kind}"))

    async def close(self) -> None:
        self._gone = True  # closed by us: not "gone" (on_gone would remove it a second time)
        self._deadline.cancel()
        await close_peer_connection(self.pc)
        tasks, self.tasks = self.tasks, []  # a cancelled task keeps its traceback, whose frames hold the track
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def close_peer_connection(pc: RTCPeerConnection) -> None:
    """Close ``pc`` and break the reference cycles aiortc leaves behind, so that reference counting frees
    the connection (its codecs, jitter buffers, sockets) at once instead of the next full collection.

    aiortc 1.16's ``close()`` drops the connection's own listeners but not those it registered on its ICE
    and DTLS transports: each transport keeps a bound method of the connection, and the connection keeps
    the transports. aioice 0.13's ``Connection.close()`` keeps its check list, whose candidate pairs hold
    STUN protocols that point back at the connection (and hold its closed sockets).
    """
    await pc.close()
    for transport in getattr(pc, "_RTCPeerConnection__dtlsTransports", ()):
        transport.remove_all_listeners()
    for transport in getattr(pc, "_RTCPeerConnection__iceTransports", ()):
        transport.remove_all_listeners()
        transport.iceGatherer.remove_all_listeners()
        check_list = getattr(getattr(transport, "_connection", None), "_check_list", None)
        if isinstance(check_list, list):
            check_list.clear()


async def open_ingest(session: LiveSession, offer: Offer, ice_servers: tuple[IceServer, ...],
                      on_gone: Callable[[], None], connect_timeout: float, speaker: int = 1) -> tuple[Peer, str]:
    """Answer a WHIP offer: its audio feeds speaker ``speaker``'s ingest of ``session``, its video (if the
    session has a live source; speaker 1 only) the live source. ``on_gone`` runs once when the connection
    fails or closes."""
    peer = Peer(ice_servers, on_gone, connect_timeout)
    ingest = session.speakers.ingest(speaker)

    @peer.pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            peer.read(track, lambda frame: ingest.push(frame, session.session_time()))
        elif session.live is not None and speaker == 1:
            peer.read(track, lambda frame: session.live.push(frame, session.session_time())
                      if session.live is not None else None)
        else:
            peer.read(track, None)

    try:
        return peer, await _answer(peer.pc, offer)
    except Exception:
        await peer.close()
        raise


async def open_viewer(session: LiveSession, viewer_id: str, offer: Offer,
                      ice_servers: tuple[IceServer, ...], on_gone: Callable[[], None],
                      connect_timeout: float) -> tuple[Peer, str]:
    """Answer a WHEP offer with the session's video and speech tracks."""
    peer = Peer(ice_servers, on_gone, connect_timeout)

    @peer.pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        peer.read(track, None)  # a viewer sending media: read and drop it

    try:
        await _set_offer(peer.pc, offer)
        for transceiver in peer.pc.getTransceivers():
            if transceiver.kind == "video" and "video" in offer.media:
                peer.pc.addTrack(SessionVideoTrack(session, viewer_id))
            elif transceiver.kind == "audio" and "audio" in offer.media:
                peer.pc.addTrack(SessionAudioTrack(session, viewer_id))
        await peer.pc.setLocalDescription(await peer.pc.createAnswer())
        return peer, peer.pc.localDescription.sdp
    except Exception:
        session.viewers.pop(viewer_id, None)  # the tracks registered the viewer
        await peer.close()
        raise
