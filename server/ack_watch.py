"""An RTMP relay's watch on its receiver: the bytes it acknowledged, which stop when it stops reading.

A receiver that stops reading (hung, or a CDN dropping the stream without closing it) used to be noticed
only once a write blocked: after TCP's send buffer (auto-tuned up to megabytes), the receiver's buffer and
the relay's input pipe had filled, which at a low bitrate takes minutes. FFmpeg's writes have no timeout,
and PyAV opens an output URL without protocol options, so neither a timeout nor a smaller buffer can be set
on the connection. The kernel knows at once, though: while data waits in the send queue (``TIOCOUTQ``),
the bytes the receiver acknowledged (``TCP_INFO``'s ``tcpi_bytes_acked``) stop growing. The relay owns one
TCP connection, its receiver's, found among its own file descriptors.
"""

from __future__ import annotations

import array
import fcntl
import os
import socket
import struct
import termios
import threading
import time
from typing import Callable

# struct tcp_info (linux/tcp.h): 8 bytes of u8 fields, 24 u32 fields and two u64 rates come first.
BYTES_ACKED_OFFSET = 120
TCP_INFO_BYTES = 128


def receiver_socket() -> socket.socket | None:
    """This process's connected TCP socket (a duplicate of its descriptor), or None if it has none or
    several (then nobody can say which is the receiver's)."""
    by_inode: dict[str, int] = {}  # one descriptor per socket: the listing's own and our dups come and go
    for name in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # closed meanwhile (the listing's own descriptor)
            continue
        if link.startswith("socket:"):
            by_inode.setdefault(link, int(name))
    found = []
    for fd in by_inode.values():
        try:
            sock = socket.socket(fileno=os.dup(fd))
        except OSError:
            continue
        try:
            if sock.type == socket.SOCK_STREAM and sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.getpeername()  # connected (raises otherwise)
                found.append(sock)
                continue
        except OSError:
            pass
        sock.close()
    if len(found) == 1:
        return found[0]
    for sock in found:
        sock.close()
    return None


def acknowledged(sock: socket.socket) -> tuple[int, int]:
    """(bytes the peer acknowledged so far, bytes waiting in the send queue)."""
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCP_INFO_BYTES)
    waiting = array.array("i", [0])
    fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, waiting)
    return struct.unpack_from("Q", raw, BYTES_ACKED_OFFSET)[0], waiting[0]


class AckWatch:
    """Says when ``sock``'s peer has acknowledged nothing for ``stall`` seconds while data was waiting."""

    def __init__(self, sock: socket.socket, stall: float, now: float) -> None:
        self.sock, self.stall = sock, stall
        self._acked, _ = acknowledged(sock)
        self._since = now  # when the acknowledged count last moved, or the queue was last empty

    def stalled(self, now: float) -> bool:
        acked, waiting = acknowledged(self.sock)
        if acked != self._acked or waiting == 0:
            self._acked, self._since = acked, now
            return False
        return now - self._since >= self.stall

    def reason(self) -> str:
        return f"the receiver stopped taking the stream (nothing acknowledged for {self.stall:g} s)"


def watch_in_thread(stall: float, on_stall: Callable[[str], None], period: float = 0.5) -> bool:
    """Watch this process's receiver connection from a daemon thread; ``on_stall(reason)`` once it
    stalls. False (and no thread) when no single TCP connection is found."""
    sock = receiver_socket()
    if sock is None or stall <= 0:
        return False
    watch = AckWatch(sock, stall, time.monotonic())

    def run() -> None:
        try:
            while not watch.stalled(time.monotonic()):
                time.sleep(period)
        except OSError:  # the connection is gone: the writer finds out and says why
            return
        on_stall(watch.reason())

    threading.Thread(target=run, name="ack-watch", daemon=True).start()
    return True
