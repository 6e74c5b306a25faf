"""A listening programme's video decoder, open only while someone watches: an SRT listener must stay up
so that its sender can call at any time, but decoding a programme nobody uses costs a core's share and
holds decoded frames for nothing.

While the gate is clear, packets are demuxed and dropped. Once it is set, decoding starts at the next
keyframe with a fresh decoder (a frame before one would not decode); once it is clear again, the decoder
is dropped, and with it its reference frames and its frame pool. MPEG-TS carries the parameter sets in
band; what the container gave at the open (extradata) is handed to each fresh decoder as well.
"""

from __future__ import annotations

import threading
from typing import Callable

import av


class GatedDecoder:
    """``decode(packet)``: the packet's frames while ``gate`` is set (from a keyframe on), else none.
    ``gate`` None: always decoding, with the stream's own decoder (a pulled source read only while used)."""

    def __init__(self, stream: av.video.stream.VideoStream, gate: threading.Event | None,
                 on_start: Callable[[], None] = lambda: None) -> None:
        self._stream = stream
        self._gate = gate
        self._on_start = on_start  # a fresh start: frames are put on the clock afresh
        self._codec: av.CodecContext | None = None

    @property
    def wanted(self) -> bool:
        """Whether frames are wanted now (decoding, or waiting for a keyframe to start at)."""
        return self._gate is None or self._gate.is_set()

    def decode(self, packet: av.Packet) -> list[av.VideoFrame]:
        if self._gate is None:
            return packet.decode()
        if not self._gate.is_set():
            self._codec = None  # its frames and buffers go with it
            return []
        if self._codec is None:
            if packet.size == 0 or not packet.is_keyframe:
                return []
            self._codec = self._fresh()
            self._on_start()
        return self._codec.decode(packet)

    def _fresh(self) -> av.CodecContext:
        source = self._stream.codec_context
        codec = av.CodecContext.create(source.name, "r")
        if source.extradata:
            codec.extradata = source.extradata
        # Slice threads, not frame threads: those hold frames back (a frame per thread).
        codec.thread_type = "SLICE"
        return codec
