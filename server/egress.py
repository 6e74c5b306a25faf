"""Egress: one encode per session and codec, whatever the number of viewers.

A session's video is paced and encoded once per negotiated codec (VP8 with libvpx, H.264 with x264's
real-time preset), its speech once with Opus; every viewer's track hands the same ``av.Packet``s to its
RTP sender, which packetises them without re-encoding (aiortc's ``RTCRtpSender`` sends an ``av.Packet``
that ``recv()`` returns through the codec's ``pack``). A viewer that joins, or asks for one (RTCP PLI or
FIR), gets a keyframe from the next frame on; until that keyframe it gets no video (it could not decode
it). Each viewer's queue is short: a viewer that cannot keep up loses packets and waits for a keyframe,
and never holds back the others. An encoder runs while it has viewers, paced by the session's clock
(``Pacer``: sleep until due, skip ahead instead of bursting when far behind).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import fractions
import logging

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from model.base import FPS
from streaming.i420 import has_i420, image_size, rgb_to_i420
from streaming.playout import Playout
from streaming.timeline import AUDIO_BLOCK, AUDIO_CLOCK, VIDEO_CLOCK

log = logging.getLogger("livedub.egress")
SKIP_AFTER = 6  # this many periods late (240 ms of video), the item due now is sent instead: no long burst
VIEWER_QUEUE = 8  # items a viewer may fall behind before it loses them (video: then waits for a keyframe)
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)
AUDIO_TIME_BASE = fractions.Fraction(1, AUDIO_CLOCK)
BITS_PER_PIXEL = 0.08  # per frame: 512x512 at 25 fps -> 524 kbps, clear for a talking head
# 1080p at 25 fps -> 4.1 Mbps; 4K is capped at 10 Mbps (a talking head, mostly still, needs no more).
MIN_BITRATE, MAX_BITRATE = 250_000, 10_000_000
# H.264 levels (Annex A): (level, max frame size in macroblocks, max macroblocks per second), smallest first.
H264_LEVELS = (("31", 3600, 108_000), ("32", 5120, 216_000), ("40", 8192, 245_760), ("42", 8704, 522_240),
               ("50", 22_080, 589_824), ("51", 36_864, 983_040), ("52", 36_864, 2_073_600))
PIXELS_PER_ENCODE_THREAD = 2_100_000  # one core encodes 1080p at 25 fps (x264 veryfast: ~15 ms a frame)
KEYFRAME_SECONDS = 4.0  # a periodic keyframe too, so that a lost packet never freezes a viewer for long
VIDEO_CODECS = ("video/VP8", "video/H264")
ENCODE_AHEAD = 0.04  # seconds before its due time a video frame is encoded (1-10 ms each, more when busy)
OPUS_BITRATE = 96_000  # as aiortc's own Opus encoder
AAC_BITRATE = 128_000  # stereo speech for the broadcast outputs (RTMP/SRT)
BROADCAST_VIDEO = "video/H264"  # what RTMP and MPEG-TS carry; shared with WebRTC viewers that chose H.264


def bitrate_for(size: tuple[int, int]) -> int:
    return int(min(MAX_BITRATE, max(MIN_BITRATE, size[0] * size[1] * FPS * BITS_PER_PIXEL)))


def h264_level(size: tuple[int, int]) -> str:
    """The lowest H.264 level whose frame size and macroblock rate take ``size`` at 25 fps (3.1 up to 720p,
    4.0 for 1080p, 5.1 for 4K)."""
    blocks = -(-size[0] // 16) * -(-size[1] // 16)
    return next((level for level, frame, rate in H264_LEVELS if blocks <= frame and blocks * FPS <= rate),
                H264_LEVELS[-1][0])


def encode_threads(size: tuple[int, int]) -> int:
    """Threads of one encode: one core up to 1080p (the other serves every other session), more above."""
    return max(1, round(size[0] * size[1] / PIXELS_PER_ENCODE_THREAD))


def yuv420_frame(image: np.ndarray) -> av.VideoFrame:
    """A frame as the encoders take it, from RGB or from I420 (a timeline's, streaming/i420.py: converted
    before with this same conversion). OpenCV's I420 conversion is about four times faster than swscale's
    at 1080p (2 ms against 9), within one level of it."""
    if image.ndim == 2:
        return av.VideoFrame.from_ndarray(image, format="yuv420p")
    if not has_i420(image.shape[:2]):
        return av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
    return av.VideoFrame.from_ndarray(rgb_to_i420(image), format="yuv420p")


class Pacer:
    """Indices due on a schedule: ``next()`` sleeps until the next one is due and returns it, or the one
    due now when it woke up more than ``SKIP_AFTER`` periods late."""

    def __init__(self, playout: Playout, due, at) -> None:
        self._playout = playout
        self._due, self._at = due, at
        self._next: int | None = None
        self.skipped = 0

    async def next(self) -> int:
        now = self._playout.now()
        if self._next is None:
            self._next = self._at(now) + 1
        index = self._next
        wait = self._due(index) - now
        if wait > 0:
            await self._playout.sleep(wait)
        elif -wait > SKIP_AFTER * (self._due(index + 1) - self._due(index)):
            index = self._at(now)
            self.skipped += index - self._next
        self._next = index + 1
        return index


@dataclasses.dataclass(frozen=True)
class Encoded:
    index: int  # frame n or speech block j
    packets: tuple[av.Packet, ...]
    keyframe: bool


class _Encoder:
    """One paced encode loop; the packets go to every subscribed viewer's queue."""

    kind = ""
    # Encode on the event loop itself: for work far cheaper than a thread hand-off's wait on a busy
    # machine (20 ms of Opus: a fraction of a millisecond), which would make the loop late and skip.
    on_loop = False

    def __init__(self, playout: Playout, executor: concurrent.futures.Executor | None) -> None:
        self.playout = playout
        self._executor = executor
        self._viewers: set[EncodedTrack] = set()
        self._task: asyncio.Task | None = None
        self.encoded = 0  # items encoded: one per frame (or block) whatever the number of viewers

    def subscribe(self, track: "EncodedTrack") -> None:
        self._viewers.add(track)
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())

    def unsubscribe(self, track: "EncodedTrack") -> None:
        self._viewers.discard(track)
        if not self._viewers and self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        pacer = self._pacer()
        try:
            while self._viewers:
                index = await pacer.next()
                if self.playout.ended(self._seconds(index)):
                    break
                if self.on_loop:
                    encoded = self._encode(index)
                else:
                    encoded = await asyncio.get_running_loop().run_in_executor(self._executor, self._encode, index)
                self.encoded += 1
                wait = self._due(index) - self.playout.now()
                if wait > 0:  # encoded ahead: it leaves when due, whatever the encode took
                    await self.playout.sleep(wait)
                for viewer in list(self._viewers):
                    viewer.deliver(encoded)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - an encoder bug ends this output, with its traceback
            log.exception("%s encoder failed", self.kind)
        for viewer in list(self._viewers):
            viewer.deliver(None)  # the end of the output

    def _pacer(self) -> Pacer:
        raise NotImplementedError

    def _due(self, index: int) -> float:
        raise NotImplementedError

    def _seconds(self, index: int) -> float:
        raise NotImplementedError

    def _encode(self, index: int) -> Encoded:
        raise NotImplementedError

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for viewer in list(self._viewers):
            viewer.deliver(None)
        self._viewers.clear()


class VideoEncoder(_Encoder):
    """The session's frames, encoded once for one codec."""

    kind = "video"

    def __init__(self, playout: Playout, mime: str, size: tuple[int, int],
                 executor: concurrent.futures.Executor | None = None) -> None:
        super().__init__(playout, executor)
        self.mime = mime
        self._size = size
        self._codec = _video_codec(mime, size)
        self._keyframe_wanted = True
        self._last_keyframe: int | None = None

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the frames encoded now."""
        return self._size

    def request_keyframe(self) -> None:
        """The next frame is encoded whole (a viewer joined, or lost packets and sent PLI/FIR)."""
        self._keyframe_wanted = True

    def _pacer(self) -> Pacer:
        # Frames are encoded ENCODE_AHEAD before they are due and leave when due: the encode's time
        # (a few ms, more on a busy machine) does not put the video behind the speech.
        schedule = self.playout.schedule
        return Pacer(self.playout, lambda n: schedule.frame_due(n) - ENCODE_AHEAD,
                     lambda t: schedule.frame_at(t + ENCODE_AHEAD))

    def _due(self, index: int) -> float:
        return self.playout.schedule.frame_due(index)

    def _seconds(self, index: int) -> float:
        return index / FPS

    def _encode(self, n: int) -> Encoded:
        image = np.ascontiguousarray(self.playout.frame(n))
        size = image_size(image)
        if size != self._size:  # a live source's first frame set the size: a new stream
            self._size = size
            self._codec = _video_codec(self.mime, self._size)
            self._keyframe_wanted = True
        frame = yuv420_frame(image)
        frame.pts = self.playout.schedule.video_pts(n)
        frame.time_base = VIDEO_TIME_BASE
        periodic = self._last_keyframe is not None and n - self._last_keyframe >= KEYFRAME_SECONDS * FPS
        keyframe = self._keyframe_wanted or periodic
        self._keyframe_wanted = False
        frame.pict_type = av.video.frame.PictureType.I if keyframe else av.video.frame.PictureType.NONE
        packets = tuple(self._codec.encode(frame))
        for packet in packets:
            packet.pts, packet.time_base = frame.pts, VIDEO_TIME_BASE
        keyframe = any(p.is_keyframe for p in packets)
        if keyframe:
            self._last_keyframe = n
        return Encoded(n, packets, keyframe)


class SpeechEncoder(_Encoder):
    """The session's delayed speech, encoded once with Opus (20 ms packets, stereo as received)."""

    kind = "audio"
    on_loop = True

    def __init__(self, playout: Playout, executor: concurrent.futures.Executor | None = None) -> None:
        super().__init__(playout, executor)
        self._codec = av.CodecContext.create("libopus", "w")
        self._codec.bit_rate = OPUS_BITRATE
        self._codec.sample_rate = AUDIO_CLOCK
        self._codec.layout = "stereo"  # what the SDP's opus/48000/2 says
        self._codec.format = "s16"
        self._codec.time_base = AUDIO_TIME_BASE
        self._codec.options = {"application": "voip", "frame_duration": "20"}  # aiortc's settings, 20 ms packets

    def _pacer(self) -> Pacer:
        return Pacer(self.playout, self.playout.schedule.block_due, self.playout.schedule.block_at)

    def _due(self, index: int) -> float:
        return self.playout.schedule.block_due(index)

    def _seconds(self, index: int) -> float:
        return index * AUDIO_BLOCK / AUDIO_CLOCK

    def _encode(self, j: int) -> Encoded:
        stereo = (np.clip(self.playout.speech(j), -1.0, 1.0) * 32767).astype(np.int16)  # [2, 960], as received
        frame = av.AudioFrame.from_ndarray(stereo.T.reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate = AUDIO_CLOCK
        frame.pts = self.playout.schedule.audio_pts(j)
        frame.time_base = AUDIO_TIME_BASE
        packets = tuple(self._codec.encode(frame))
        for packet in packets:  # the encoder's own pts may run a few ms early (its pre-skip): use the block's
            packet.pts, packet.time_base = frame.pts, AUDIO_TIME_BASE
        return Encoded(j, packets, True)


class AacEncoder(SpeechEncoder):
    """The session's delayed speech, encoded once with AAC (stereo, 48 kHz) for every broadcast output.
    Its packets' timestamps count samples of output time (block j starts at j * 960), so an output lines
    them up with video frame n at n / 25 s."""

    def __init__(self, playout: Playout, executor: concurrent.futures.Executor | None = None) -> None:
        _Encoder.__init__(self, playout, executor)
        self._codec = av.CodecContext.create("aac", "w")
        self._codec.bit_rate = AAC_BITRATE
        self._codec.sample_rate = AUDIO_CLOCK
        self._codec.layout = "stereo"
        self._codec.format = "fltp"
        self._codec.time_base = AUDIO_TIME_BASE
        self._codec.open()  # now: its AudioSpecificConfig is what every output's stream header carries

    @property
    def extradata(self) -> bytes | None:
        return self._codec.extradata

    def _encode(self, j: int) -> Encoded:
        frame = av.AudioFrame.from_ndarray(planar_stereo(self.playout.speech(j)), format="fltp", layout="stereo")
        frame.sample_rate = AUDIO_CLOCK
        frame.pts = j * AUDIO_BLOCK
        frame.time_base = AUDIO_TIME_BASE
        # AAC frames are 1024 samples: a 960-sample block gives no packet or one (the encoder buffers).
        return Encoded(j, tuple(self._codec.encode(frame)), True)


def planar_stereo(block: np.ndarray) -> np.ndarray:
    """A speech block as (2, samples) float32 in [-1, 1]: mono (samples,) is heard on both sides."""
    block = np.asarray(block, np.float32)
    if block.ndim == 1:
        block = np.stack((block, block))
    return np.ascontiguousarray(np.clip(block[:2], -1.0, 1.0))


class EncodedTrack(MediaStreamTrack):
    """One viewer's track: the session encoder's packets, from its first pull and next keyframe on."""

    def __init__(self, encoder: _Encoder, viewer_id: str) -> None:
        super().__init__()
        self.kind = encoder.kind
        self.encoder = encoder
        self.stats = encoder.playout.viewer(viewer_id)
        self._queue: asyncio.Queue[Encoded | None] = asyncio.Queue(VIEWER_QUEUE)
        self._synced = False  # seen a keyframe since joining (or since losing packets)
        self._pending: list[av.Packet] = []
        self._last_sent: int | None = None
        self._subscribed = False

    def deliver(self, encoded: Encoded | None) -> None:
        if self._queue.full():
            if isinstance(self.encoder, VideoEncoder):
                while not self._queue.empty():
                    self._queue.get_nowait()  # fallen behind: drop what it has, resume at a keyframe
                self._synced = False
                self.encoder.request_keyframe()
            else:
                self._queue.get_nowait()  # speech packets stand alone: only the oldest is lost
        self._queue.put_nowait(encoded)

    async def recv(self) -> av.Packet:
        if not self._subscribed:
            # From the sender's first pull (the connection is up), not from the answer: packets made
            # before then would only queue up, and reach the viewer late.
            self._subscribed = True
            self.encoder.subscribe(self)
            if isinstance(self.encoder, VideoEncoder):
                self.encoder.request_keyframe()
        while not self._pending:
            if self.readyState != "live":
                raise MediaStreamError
            encoded = await self._queue.get()
            if encoded is None:
                self.stop()
                raise MediaStreamError
            if not self._synced and not encoded.keyframe:
                continue
            self._synced = True
            self._pending = list(encoded.packets)
            self._sent(encoded.index)
        return self._pending.pop(0)

    def _sent(self, index: int) -> None:
        now = self.encoder.playout.now()
        if self.kind == "video":
            if self._last_sent is not None and index - self._last_sent > 1:
                self.stats.skipped += index - self._last_sent - 1
            self._last_sent = index
            self.encoder.playout.frame_sent(self.stats, index)
        else:
            self.stats.audio_block_sent(index, now)

    def stop(self) -> None:
        self.encoder.unsubscribe(self)
        super().stop()


class Egress:
    """A session's encoders: one per video codec viewers negotiated, one for the speech."""

    def __init__(self, playout: Playout, size: tuple[int, int],
                 executor: concurrent.futures.Executor | None = None) -> None:
        self.playout = playout
        self.size = size
        self._executor = executor
        self.video: dict[str, VideoEncoder] = {}
        self.speech = SpeechEncoder(playout, executor)
        self.aac: AacEncoder | None = None  # made for the first broadcast output

    def video_encoder(self, mime: str) -> VideoEncoder:
        if mime not in VIDEO_CODECS:
            raise ValueError(f"no encoder for {mime}: accepted are {', '.join(VIDEO_CODECS)}")
        if mime not in self.video:
            self.video[mime] = VideoEncoder(self.playout, mime, self.size, self._executor)
        return self.video[mime]

    def video_track(self, mime: str, viewer_id: str) -> EncodedTrack:
        return EncodedTrack(self.video_encoder(mime), viewer_id)

    def broadcast_encoders(self) -> tuple[VideoEncoder, AacEncoder]:
        """The H.264 and AAC encoders that RTMP/SRT outputs subscribe to (H.264 shared with viewers)."""
        if self.aac is None:
            self.aac = AacEncoder(self.playout, self._executor)
        return self.video_encoder(BROADCAST_VIDEO), self.aac

    def speech_track(self, viewer_id: str) -> EncodedTrack:
        return EncodedTrack(self.speech, viewer_id)

    def close(self) -> None:
        for encoder in (*self.video.values(), self.speech, *([self.aac] if self.aac else [])):
            encoder.close()


def _video_codec(mime: str, size: tuple[int, int]) -> av.VideoCodecContext:
    height, width = size
    if mime == "video/VP8":
        codec = av.CodecContext.create("libvpx", "w")
        codec.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0", "static-thresh": "1",
                         "error-resilient": "1", "partitions": "0"}
    else:
        codec = av.CodecContext.create("libx264", "w")
        codec.options = {"preset": "veryfast", "tune": "zerolatency", "level": h264_level(size)}
        codec.profile = "Baseline"  # what aiortc's SDP offers (profile-level-id 42e01f / 42001f)
    codec.width, codec.height = width, height
    codec.pix_fmt = "yuv420p"
    codec.bit_rate = bitrate_for(size)
    codec.framerate = fractions.Fraction(FPS, 1)
    codec.time_base = VIDEO_TIME_BASE
    codec.gop_size = 10 * 60 * FPS  # keyframes on demand and every KEYFRAME_SECONDS, not by the encoder
    codec.thread_count = encode_threads(size)
    return codec
