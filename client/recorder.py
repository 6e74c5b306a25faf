"""Recording received WebRTC frames to an mp4 (H.264 + AAC, stereo as received), both tracks on one timeline.

Each track's RTP timestamps have their own random origin; the recorder maps a track's first frame to
its arrival time (since the first frame of either track) and follows its timestamps from there.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
from av import AudioFrame

from streaming.media import AAC_BITRATE_PER_CHANNEL

VIDEO_BASE = Fraction(1, 90_000)
AUDIO_RATE = 48_000


def to_planar(frame: AudioFrame) -> np.ndarray:
    """A received audio frame (aiortc decodes Opus to s16, stereo or mono) as float32 ``[channels, n]``."""
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    if frame.format.is_planar:
        samples = data.reshape(channels, -1)
    else:
        samples = data.reshape(-1, channels).T
    scale = 32768.0 if data.dtype == np.int16 else 1.0
    return (samples / scale).astype(np.float32)


def to_mono(frame: AudioFrame) -> np.ndarray:
    """A received audio frame as mono float32 (its channels averaged)."""
    return to_planar(frame).mean(axis=0)


def place_audio(received: list[tuple[float, int, np.ndarray]]) -> tuple[float, np.ndarray]:
    """Received audio ``(arrival, pts, mono samples)`` placed by its timestamps (48 kHz), and the arrival
    time of its first sample: what was heard, on the receiver's clock, without arrival jitter."""
    first_arrival, first_pts, _ = received[0]
    end = max(pts - first_pts + len(samples) for _, pts, samples in received)
    signal = np.zeros(end, np.float32)
    for _, pts, samples in received:
        signal[pts - first_pts : pts - first_pts + len(samples)] = samples
    return first_arrival, signal


class Mp4Recorder:
    def __init__(self, path: str) -> None:
        self.path = path
        self._container = av.open(path, mode="w", format="mp4")
        self._video = None
        self._audio = None
        self._channels = 0  # the audio stream's, from the first audio frame
        self._origin: float | None = None  # arrival of the first frame, either track
        self._offsets: dict[str, tuple[int, float]] = {}  # kind -> (first pts, its seconds on the timeline)
        self._last_video_pts = -1
        self.frames = {"video": 0, "audio": 0}

    def _seconds(self, kind: str, frame, arrival: float) -> float:
        if self._origin is None:
            self._origin = arrival
        if kind not in self._offsets:
            self._offsets[kind] = (frame.pts, arrival - self._origin)
        first_pts, first_seconds = self._offsets[kind]
        return first_seconds + float((frame.pts - first_pts) * frame.time_base)

    def __call__(self, kind: str, frame, arrival: float) -> None:
        if frame.pts is None:
            return
        seconds = self._seconds(kind, frame, arrival)
        if kind == "video":
            if self._video is None:
                self._video = self._container.add_stream("libx264", rate=25)
                self._video.width, self._video.height = frame.width, frame.height
                self._video.pix_fmt = "yuv420p"
                self._video.time_base = VIDEO_BASE
                self._video.options = {"preset": "veryfast", "crf": "20"}
            pts = round(seconds / VIDEO_BASE)
            if pts <= self._last_video_pts:
                return
            self._last_video_pts = pts
            image = frame.reformat(width=self._video.width, height=self._video.height, format="yuv420p")
            image.pts, image.time_base = pts, VIDEO_BASE
            self._container.mux(self._video.encode(image))
        else:
            samples = to_planar(frame)  # what viewers got: stereo from this server (its Opus is stereo)
            if self._audio is None:
                self._channels = min(samples.shape[0], 2)
                self._audio = self._container.add_stream("aac", rate=AUDIO_RATE)
                self._audio.layout = "mono" if self._channels == 1 else "stereo"
                self._audio.bit_rate = AAC_BITRATE_PER_CHANNEL * self._channels
            if samples.shape[0] != self._channels:  # the first frame fixed the stream's channels
                samples = np.resize(samples.mean(axis=0), (self._channels, samples.shape[1]))
            heard = AudioFrame.from_ndarray(np.ascontiguousarray(samples), format="fltp",
                                            layout="mono" if self._channels == 1 else "stereo")
            heard.sample_rate = AUDIO_RATE
            heard.pts, heard.time_base = round(seconds * AUDIO_RATE), Fraction(1, AUDIO_RATE)
            self._container.mux(self._audio.encode(heard))
        self.frames[kind] += 1

    def close(self) -> str:
        for stream in (self._video, self._audio):
            if stream is not None:
                self._container.mux(stream.encode(None))
        self._container.close()
        return self.path
