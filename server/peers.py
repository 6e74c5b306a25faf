"""WebRTC peer connections: WHIP ingest (the speech, and optionally live video, in) and WHEP egress.

Every received track is consumed at once (aiortc's receive queues are unbounded: a track nobody reads
grows memory and delay). ICE servers are exactly the configured ones, none by default, so nothing is
contacted unasked.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Callable

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from server.config import IceServer
from server.offers import Offer, OfferError
from server.egress import Egress
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
    return stereo_opus(pc.localDescription.sdp)


OPUS_STEREO = "stereo=1;sprop-stereo=1"


def stereo_opus(sdp: str) -> str:
    """The answer with Opus in stereo both ways (RFC 7587): a browser sends mono unless the answer asks for
    stereo. aiortc decodes and encodes Opus in stereo whatever the SDP says, so only the peer reads this."""
    for payload in re.findall(r"^a=rtpmap:(\d+) opus/48000/2\r?$", sdp, re.M | re.I):
        fmtp = re.search(rf"^a=fmtp:{payload} ([^\r\n]*)", sdp, re.M)
        if fmtp is None:
            sdp = re.sub(rf"^(a=rtpmap:{payload} opus/48000/2)(\r?)$", rf"\1\2\na=fmtp:{payload} {OPUS_STEREO}\2",
                         sdp, flags=re.M | re.I)
        elif "stereo=" not in fmtp.group(1):
            sdp = sdp[: fmtp.end(1)] + ";" + OPUS_STEREO + sdp[fmtp.end(1) :]
    return sdp


async def _drain(track: MediaStreamTrack, handle: Callable | None, ended: Callable[[], None] | None) -> None:
    """Read a received track until it ends, handing each frame to ``handle`` (or dropping it); then
    ``ended`` (the sender stopped its track, sent RTCP BYE, or the connection closed)."""
    try:
        while True:
            frame = await track.recv()
            if handle is not None:
                handle(frame)
    except MediaStreamError:
        if ended is not None:
            ended()


class Peer:
    """One peer connection and the tasks reading its received tracks. It is gone when its connection
    fails or closes, or is not up ``connect_timeout`` seconds after the answer (an offer whose
    candidates cannot be reached would otherwise hold its session, and a worker, until the idle timeout)."""

    def __init__(self, ice_servers: tuple[IceServer, ...], on_gone: Callable[[], None],
                 connect_timeout: float) -> None:
        self.pc = RTCPeerConnection(rtc_configuration(ice_servers))
        self.tasks: list[asyncio.Task] = []
        self.tracks: list[MediaStreamTrack] = []  # output tracks, stopped (unsubscribed) on close
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

    def read(self, track: MediaStreamTrack, handle: Callable | None, ended: Callable[[], None] | None = None) -> None:
        self.tasks.append(asyncio.create_task(_drain(track, handle, ended), name=f"read-{track.kind}"))

    async def close(self) -> None:
        self._gone = True  # closed by us: not "gone" (on_gone would remove it a second time)
        self._deadline.cancel()
        await close_peer_connection(self.pc)
        tracks, self.tracks = self.tracks, []
        for track in tracks:
            track.stop()  # unsubscribed from the session's encoders
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
            # Speaker 1's speech ending ends the session's input (played out); speaker 2's is silence after.
            peer.read(track, lambda frame: session.receive_audio(frame, speaker),
                      session.end_ingest if speaker == 1 else ingest.end)
        elif session.takes_video and speaker == 1:
            peer.read(track, session.receive_video)
        else:
            peer.read(track, None)

    try:
        return peer, await _answer(peer.pc, offer)
    except Exception:
        await peer.close()
        raise


async def open_viewer(session: LiveSession, egress: Egress, viewer_id: str, offer: Offer,
                      ice_servers: tuple[IceServer, ...], on_gone: Callable[[], None],
                      connect_timeout: float) -> tuple[Peer, str]:
    """Answer a WHEP offer with the session's encoded video (in the codec the viewer prefers of those
    both sides have, VP8 or H.264) and speech (Opus), shared with every other viewer of the session."""
    peer = Peer(ice_servers, on_gone, connect_timeout)

    @peer.pc.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        peer.read(track, None)  # a viewer sending media: read and drop it

    try:
        await _set_offer(peer.pc, offer)
        for transceiver in peer.pc.getTransceivers():
            if transceiver.kind == "video" and "video" in offer.media:
                track = egress.video_track(_negotiated(transceiver), viewer_id)
                sender = peer.pc.addTrack(track)
                # aiortc turns a viewer's PLI/FIR into a flag for its own encoder; with pre-encoded
                # packets the session's encoder must make the keyframe instead.
                sender._send_keyframe = track.encoder.request_keyframe
                peer.tracks.append(track)
            elif transceiver.kind == "audio" and "audio" in offer.media:
                track = egress.speech_track(viewer_id)
                peer.pc.addTrack(track)
                peer.tracks.append(track)
        await peer.pc.setLocalDescription(await peer.pc.createAnswer())
        return peer, stereo_opus(peer.pc.localDescription.sdp)
    except Exception:
        session.playout.forget_viewer(viewer_id)  # the tracks registered the viewer
        await peer.close()
        raise


def _negotiated(transceiver) -> str:
    """The video codec the sender will use: the first common one, in the offer's order of preference
    (aiortc keeps the negotiated list in ``_codecs`` once the offer is set)."""
    for codec in transceiver._codecs:
        if codec.mimeType.lower() != "video/rtx":
            return "video/H264" if codec.mimeType.lower() == "video/h264" else codec.mimeType
    raise OfferError("bad SDP offer: no video codec in common (accepted are VP8 and H.264)")
