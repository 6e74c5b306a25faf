"""The Python client's WebRTC side: a speech file sent in real time over WHIP, the dub received over WHEP.

The speech track paces itself by the wall clock (20 ms frames), like a live microphone. The receiver
reads both tracks of a WHEP connection and hands every frame, with its arrival time, to a sink.
"""

from __future__ import annotations

import asyncio
import json
import time
from fractions import Fraction
from typing import Callable

import aiohttp
import av
import numpy as np
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from server.peers import close_peer_connection

RATE = 48_000
BLOCK = 960  # 20 ms


def read_speech(path: str) -> np.ndarray:
    """Any audio file, decoded to 48 kHz float32 at its own level: ``[n]`` when it is mono, else stereo
    ``[2, n]`` (more channels downmixed by FFmpeg)."""
    from streaming.playback import PlaybackSpeech

    speech = PlaybackSpeech()
    try:
        with av.open(path) as container:
            for frame in container.decode(audio=0):
                frame.pts = None
                speech(frame)
        speech.finish()
        samples = np.array(speech.samples.T)  # a copy in memory: the spool goes with ``close``
    finally:
        speech.close()
    return samples[0] if samples.shape[0] == 1 else samples


class SpeechTrack(MediaStreamTrack):
    """Samples (``[n]`` mono or ``[2, n]`` stereo) sent as 20 ms stereo frames at wall-clock pace, then
    silence (``end_with_silence``) or the end. Mono goes out duplicated, at its level: aiortc's encoder would
    upmix a mono frame at -3 dB a channel."""

    kind = "audio"

    def __init__(self, samples: np.ndarray, end_with_silence: bool = True) -> None:
        super().__init__()
        samples = np.asarray(samples, np.float32)
        self.samples = np.vstack([samples, samples]) if samples.ndim == 1 else samples  # [2, n]
        self.end_with_silence = end_with_silence
        self.started_at: float | None = None  # monotonic time frame 0 was handed to the sender
        self._index = 0

    @property
    def duration(self) -> float:
        return self.samples.shape[1] / RATE

    @property
    def finished(self) -> bool:
        return self._index * BLOCK >= self.samples.shape[1]

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self.started_at is None:
            self.started_at = time.monotonic()
        else:
            await asyncio.sleep(max(0.0, self.started_at + self._index * BLOCK / RATE - time.monotonic()))
        start = self._index * BLOCK
        if start >= self.samples.shape[1] and not self.end_with_silence:
            self.stop()
            raise MediaStreamError
        block = np.zeros((2, BLOCK), np.float32)
        piece = self.samples[:, start : start + BLOCK]
        block[:, : piece.shape[1]] = piece
        pcm = (np.clip(block, -1, 1) * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(pcm.T.reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate = RATE
        frame.pts = start
        frame.time_base = Fraction(1, RATE)
        self._index += 1
        return frame


class OfferRefused(RuntimeError):
    """A WHIP/WHEP offer answered with an error; ``message`` is the server's (its JSON envelope's)."""

    def __init__(self, url: str, status: int, body: str) -> None:
        try:
            message = json.loads(body).get("message") or body
        except (ValueError, AttributeError):
            message = body
        self.status, self.message = status, " ".join(str(message).split())[:300]
        super().__init__(f"POST {url}: HTTP {status}: {self.message}")


def peer_connection(ice_servers: list[str] | None = None) -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(iceServers=[RTCIceServer(urls=u) for u in ice_servers or []]))


async def _post_offer(http: aiohttp.ClientSession, url: str, pc: RTCPeerConnection, token: str | None) -> str:
    """POST the local offer; set the answer; the resource URL from ``Location``."""
    await pc.setLocalDescription(await pc.createOffer())
    headers = {"Content-Type": "application/sdp"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with http.post(url, data=pc.localDescription.sdp, headers=headers) as response:
        body = await response.text()
        if response.status != 201:
            raise OfferRefused(url, response.status, body)
        location = str(response.url.join(aiohttp.client.URL(response.headers["Location"])))
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
    return location


class Publisher:
    """A WHIP ingest: one speech track (and optionally a video track)."""

    def __init__(self, http: aiohttp.ClientSession, token: str | None = None, ice_servers=None) -> None:
        self.http, self.token = http, token
        self.pc = peer_connection(ice_servers)
        self.resource: str | None = None

    async def publish(self, url: str, audio: MediaStreamTrack, video: MediaStreamTrack | None = None) -> str:
        self.pc.addTransceiver(audio, direction="sendonly")
        if video is not None:
            self.pc.addTransceiver(video, direction="sendonly")
        self.resource = await _post_offer(self.http, url, self.pc, self.token)
        return self.resource

    async def close(self, delete: bool = True) -> None:
        if delete and self.resource:
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            async with self.http.delete(self.resource, headers=headers) as response:
                await response.read()
        await close_peer_connection(self.pc)


class Viewer:
    """A WHEP viewer: every received frame goes to ``sink(kind, frame, arrival_monotonic)``."""

    def __init__(self, http: aiohttp.ClientSession, sink: Callable, token: str | None = None,
                 ice_servers=None) -> None:
        self.http, self.token, self.sink = http, token, sink
        self.pc = peer_connection(ice_servers)
        self.resource: str | None = None
        self._tasks: list[asyncio.Task] = []
        self.ended = asyncio.Event()

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._tasks.append(asyncio.create_task(self._read(track)))

    async def _read(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                self.sink(track.kind, frame, time.monotonic())
        except MediaStreamError:
            self.ended.set()

    async def watch(self, url: str, video: bool = True, audio: bool = True, codec: str | None = None) -> str:
        """``codec``: the video codec to ask for ("video/VP8" or "video/H264"; default: both, VP8 first)."""
        if video:
            transceiver = self.pc.addTransceiver("video", direction="recvonly")
            if codec is not None:
                from aiortc import RTCRtpReceiver

                wanted = [c for c in RTCRtpReceiver.getCapabilities("video").codecs
                          if c.mimeType.lower() in (codec.lower(), "video/rtx")]
                transceiver.setCodecPreferences(wanted)
        if audio:
            self.pc.addTransceiver("audio", direction="recvonly")
        self.resource = await _post_offer(self.http, url, self.pc, self.token)
        return self.resource

    async def close(self, delete: bool = True) -> None:
        if delete and self.resource:
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            try:
                async with self.http.delete(self.resource, headers=headers) as response:
                    await response.read()
            except aiohttp.ClientError:
                pass  # the server may have ended the session already
        await close_peer_connection(self.pc)
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
