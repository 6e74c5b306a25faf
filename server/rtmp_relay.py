"""``python -m server.rtmp_relay``: one RTMP/RTMPS connection of a session's output, in a process of its own.

PyAV opens an output URL holding the GIL (FFmpeg's TCP connect, TLS and RTMP handshake) and its writes
have no timeout, so the server runs them here, where blocking stalls nobody else (server/output_sinks.py
starts, watches and kills this process). Its stdin: one JSON line (``url``, ``size`` [height, width],
``aac_config`` hex), so the stream key stays off the command line; then the session's packets as
``PacketSink`` frames them. It connects, prints ``RTMP_CONNECTED``, and muxes the packets (FLV, no
re-encode) until its input ends (it ends the stream) or the receiver fails (its last line says why); a
receiver that acknowledges nothing for ``ack_stall`` seconds while data waits fails it too
(server/ack_watch.py), long before a write would block.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys

import av

from server.ack_watch import watch_in_thread
from server.output_sinks import RTMP_CONNECTED, MuxSink, SinkError, describe, read_packets


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent() -> None:
    """Killed when the server dies: an orphan would wait on a silent receiver's handshake for ever
    (FFmpeg's RTMP connect has no timeout; once streaming, the input's end ends it anyway)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the server kills it whenever it can
        pass


def main() -> int:
    die_with_parent()
    stdin = sys.stdin.buffer
    try:
        header = json.loads(stdin.readline())
        config = bytes.fromhex(header["aac_config"]) if header.get("aac_config") else None
        sink = MuxSink(header["url"], "flv", tuple(header["size"]), config)
    except (av.FFmpegError, OSError, SinkError, ValueError, KeyError, TypeError) as exc:
        print(describe(exc), file=sys.stderr, flush=True)
        return 1
    print(RTMP_CONNECTED, file=sys.stderr, flush=True)
    watch_in_thread(float(header.get("ack_stall") or 0), give_up)
    try:
        for video, keyframe, pts, data in read_packets(stdin):
            if video:
                sink.write_video(data, pts, keyframe)
            else:
                sink.write_audio(data, pts)
    except (av.FFmpegError, OSError) as exc:
        print(describe(exc), file=sys.stderr, flush=True)  # the server says "connection lost: "
        return 1
    finally:
        sink.close()
    return 0


def give_up(reason: str) -> None:
    """The receiver stalled: say why and end now (the main thread may be blocked in FFmpeg's write)."""
    print(reason, file=sys.stderr, flush=True)
    os._exit(1)


if __name__ == "__main__":
    sys.exit(main())
