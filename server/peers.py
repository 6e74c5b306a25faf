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
from aiortc.sdp import SessionDescription

from server.config import IceServer
from server.tracks import SessionAudioTrack, SessionVideoTrack
from streaming.errors import InputError
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


def offered_media(sdp: str) -> dict[str, str]:
    """Kind -> direction of each media section of an SDP offer; InputError when it is not SDP."""
    try:
        description = SessionDescription.parse(sdp)
    except Exception as exc:  # noqa: BLE001 - aiortc's parser raises assorted errors on garbage
        raise InputError(f"bad SDP offer: {type(exc).__name__} ({str(exc)[:120]}); accepted is an SDP offer "
                         "(RFC 8866) with audio and/or video media sections") from None
    media = {}
    for section in description.media:
        if section.kind in ("audio", "video") and section.port != 0:
            media.setdefault(section.kind, section.direction or "sendrecv")
    if not media:
        raise InputError("bad SDP offer: no audio or video media section")
    return media


async def _answer(pc: RTCPeerConnection, offer: str) -> str:
    await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
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
    """One peer connection and the tasks reading its received tracks."""

    def __init__(self, ice_servers: tuple[IceServer, ...], on_gone: Callable[[], None]) -> None:
        self.pc = RTCPeerConnection(rtc_configuration(ice_servers))
        self.tasks: list[asyncio.Task] = []
        self._gone = False

        @self.pc.on("connectionstatechange")
        def on_state() -> None:
            if self.pc.connectionState in FAILED_STATES and not self._gone:
                self._gone = True
                on_gone()

    def read(self, track: MediaStreamTrack, handle: Callable | None) -> None:
        self.tasks.append(asyncio.create_task(_drain(track, handle), name=f"read-{track.kind}"))

    async def close(self) -> None:
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


async def open_ingest(session: LiveSession, offer: str, ice_servers: tuple[IceServer, ...],
                      on_gone: Callable[[], None]) -> tuple[Peer, str]:
    """Answer a WHIP offer: its audio feeds ``session``'s ingest, its video (if the session has a live
    source) the live source. ``on_gone`` runs once when the connection fails or closes."""
    media = offered_media(offer)
    if media.get("audio") not in ("sendonly", "sendrecv"):
        raise InputError("bad WHIP offer: it sends no audio (a WHIP offer needs a sendonly audio section)")
    peer = Peer(ice_servers, on_gone)

    @peer.pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        if track.kind == "audio":
            peer.read(track, lambda frame: session.ingest.push(frame, session.session_time()))
        elif session.live is not None:
            peer.read(track, lambda frame: session.live.push(frame, session.session_time())
                      if session.live is not None else None)
        else:
            peer.read(track, None)

    try:
        return peer, await _answer(peer.pc, offer)
    except Exception:
        await peer.close()
        raise


async def open_viewer(session: LiveSession, viewer_id: str, offer: str,
                      ice_servers: tuple[IceServer, ...], on_gone: Callable[[], None]) -> tuple[Peer, str]:
    """Answer a WHEP offer with the session's video and speech tracks."""
    media = offered_media(offer)
    if not any(direction in ("recvonly", "sendrecv") for direction in media.values()):
        raise InputError("bad WHEP offer: it receives nothing (a WHEP offer needs recvonly video and/or audio)")
    peer = Peer(ice_servers, on_gone)

    @peer.pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        peer.read(track, None)  # a viewer sending media: read and drop it

    try:
        await peer.pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        for transceiver in peer.pc.getTransceivers():
            if transceiver.kind == "video" and "video" in media:
                peer.pc.addTrack(SessionVideoTrack(session, viewer_id))
            elif transceiver.kind == "audio" and "audio" in media:
                peer.pc.addTrack(SessionAudioTrack(session, viewer_id))
        await peer.pc.setLocalDescription(await peer.pc.createAnswer())
        return peer, peer.pc.localDescription.sdp
    except Exception:
        await peer.close()
        raise
