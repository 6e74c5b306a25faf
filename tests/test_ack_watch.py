"""server/ack_watch.py on real loopback TCP connections: the kernel's acknowledged-bytes count and send
queue, judged on an injected time (the ``now`` each check is given), never on how fast anything ran."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from server.ack_watch import AckWatch, acknowledged
from tests.conftest import ROOT


@pytest.fixture
def connection():
    server = socket.create_server(("127.0.0.1", 0))
    sender = socket.create_connection(server.getsockname())
    receiver, _ = server.accept()
    server.close()
    sender.setblocking(False)
    yield sender, receiver
    sender.close()
    receiver.close()


def _fill(sender: socket.socket) -> int:
    """Write until the send buffer is full (the receiver reads nothing), then until the kernel's
    acknowledged count is steady: the receiver's buffer is full too and its window closed."""
    sent = 0
    for _ in range(100_000):  # bounded: a send buffer is megabytes at most
        try:
            sent += sender.send(b"x" * 65536)
        except BlockingIOError:
            break
    previous = None
    for _ in range(200):  # bounded: loopback settles in well under a millisecond
        now = acknowledged(sender)
        if now == previous:
            break
        previous = now
        time.sleep(0.005)
    return sent


def test_a_receiver_that_reads_nothing_is_stalled_after_the_stall_time(connection):
    sender, _ = connection
    sent = _fill(sender)
    acked, waiting = acknowledged(sender)
    assert waiting > 0 and acked + waiting == sent + 1  # the SYN counts as one acknowledged byte
    watch = AckWatch(sender, stall=2.0, now=100.0)
    assert not watch.stalled(101.0)
    assert not watch.stalled(101.9)
    assert watch.stalled(102.0)
    assert watch.reason() == "the receiver stopped taking the stream (nothing acknowledged for 2 s)"


def test_reading_moves_the_stall_on(connection):
    sender, receiver = connection
    _fill(sender)
    watch = AckWatch(sender, stall=2.0, now=0.0)
    assert not watch.stalled(1.5)
    receiver.recv(1 << 20)
    _fill(sender)  # what the read made room for is sent and acknowledged
    assert not watch.stalled(3.0)  # it moved at 3.0: two more seconds from there
    assert not watch.stalled(4.5)
    assert watch.stalled(5.0)


def test_nothing_waiting_is_never_a_stall(connection):
    sender, receiver = connection
    sender.send(b"hello")
    assert receiver.recv(5) == b"hello"
    assert acknowledged(sender)[1] == 0  # nothing waits: all of it was acknowledged
    watch = AckWatch(sender, stall=1.0, now=0.0)
    assert not watch.stalled(60.0)  # an idle stream (no data to send) is not a stalled receiver


FIND = """
import socket, sys
from server.ack_watch import receiver_socket
server = socket.create_server(("127.0.0.1", 0))
first = socket.create_connection(server.getsockname())
accepted, _ = server.accept()
accepted.close()
found = receiver_socket()  # the listener is not connected: only ``first`` counts
print(found.getpeername()[1] == server.getsockname()[1], found.fileno() != first.fileno())
second = socket.create_connection(server.getsockname())
print(receiver_socket())  # two connections: nobody can say which is the receiver's
"""


def test_the_relay_finds_its_one_connection_and_refuses_to_guess_between_two():
    result = subprocess.run([sys.executable, "-c", FIND], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["True True", "None"]
