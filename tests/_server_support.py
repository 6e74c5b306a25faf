"""Helpers shared by the live server tests: media files, speech fed in real time, a local mosquitto."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from fractions import Fraction

import av
import numpy as np
from PIL import Image

from streaming.ingest import PLAYOUT_RATE

SPEECH_16K = "/usr/share/codec2/raw/speech_orig_16k.wav"


def write_still(path: str, colour: tuple[int, int, int], size: int = 128) -> str:
    image = np.zeros((size, size, 3), np.uint8)
    image[:] = colour
    image[size // 4 : size // 2, size // 4 : size // 2] = 255 - np.asarray(colour, np.uint8)  # some structure
    Image.fromarray(image).save(path)
    return path


def speech_48k(seconds: float) -> np.ndarray:
    """Real read speech (codec2-examples) at 48 kHz mono float32, cut to ``seconds``."""
    with av.open(SPEECH_16K) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=PLAYOUT_RATE)
        pieces = [o.to_ndarray().reshape(-1) for f in container.decode(audio=0) for o in resampler.resample(f)]
    samples = np.concatenate(pieces)
    return samples[: int(seconds * PLAYOUT_RATE)].astype(np.float32)


def audio_frame(samples: np.ndarray, pts: int) -> av.AudioFrame:
    pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16)[None, :]
    frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
    frame.sample_rate = PLAYOUT_RATE
    frame.pts = pts
    frame.time_base = Fraction(1, PLAYOUT_RATE)
    return frame


async def feed_in_real_time(session, samples: np.ndarray, block: int = 960) -> None:
    """Push ``samples`` into a session's ingest as a sender would: 20 ms frames at wall-clock pace."""
    started = time.monotonic()
    for k in range(len(samples) // block):
        due = started + k * block / PLAYOUT_RATE
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        session.ingest.push(audio_frame(samples[k * block : (k + 1) * block], k * block), session.session_time())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Mosquitto:
    """A mosquitto broker on a free local port, started and stopped by the test."""

    def __init__(self, folder: str, port: int | None = None, extra: str = "", anonymous: bool = True) -> None:
        self.folder = folder
        self.port = port or free_port()
        self.config = os.path.join(folder, "mosquitto.conf")
        with open(self.config, "w") as handle:
            handle.write(f"per_listener_settings true\nlistener {self.port} 127.0.0.1\n"
                         f"allow_anonymous {'true' if anonymous else 'false'}\npersistence false\n"
                         + ("user root\n" if os.geteuid() == 0 else "") + extra)
        self.process: subprocess.Popen | None = None

    def start(self) -> "Mosquitto":
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.process = subprocess.Popen([binary, "-c", self.config], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        self.process = None


def loopback_candidates(monkeypatch) -> None:
    """aioice never offers 127.0.0.1; loopback tests make it (for this test only)."""
    import aioice.ice

    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


def source_folder(folder: str) -> str:
    os.makedirs(folder, exist_ok=True)
    write_still(os.path.join(folder, "red.png"), (200, 30, 30))
    write_still(os.path.join(folder, "blue.png"), (30, 30, 200))
    return folder


async def start_server(folder: str, **settings):
    """A LiveServer on a free local port with the passthrough generator; stop it with ``stop()``."""
    from server.app import LiveServer
    from server.config import build_config

    config = build_config({"sources": source_folder(folder), "port": 0, "generator": "passthrough",
                           "delay": 4.2, **settings})
    server = LiveServer(config)
    await server.start()
    return server


def generator_state(manager) -> dict:
    """Each started generator pool, and the sessions on each of its hosts: what a refused request must
    leave as it was (no pool started, no session's place taken)."""
    return {name: (id(pool), tuple(pool.sessions()) if hasattr(pool, "sessions") else None)
            for name, pool in manager._pools.items()}


def control_url(server) -> str:
    return server.url.replace("http://", "ws://") + "control"


def make_tls_files(folder: str) -> dict[str, str]:
    """A throw-away CA and a server certificate for 127.0.0.1 (openssl)."""
    paths = {name: os.path.join(folder, name) for name in ("ca.key", "ca.crt", "server.key", "server.csr",
                                                            "server.crt", "san.ext")}
    with open(paths["san.ext"], "w") as handle:
        handle.write("subjectAltName=IP:127.0.0.1\n")
    run = lambda *args: subprocess.run(["openssl", *args], check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", paths["ca.key"], "-out", paths["ca.crt"],
        "-days", "2", "-subj", "/CN=livedub-test-ca")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", paths["server.key"], "-out", paths["server.csr"],
        "-subj", "/CN=127.0.0.1")
    run("x509", "-req", "-in", paths["server.csr"], "-CA", paths["ca.crt"], "-CAkey", paths["ca.key"],
        "-CAcreateserial", "-out", paths["server.crt"], "-days", "2", "-extfile", paths["san.ext"])
    return paths


async def next_event(control, seen: list[dict], match, timeout: float) -> dict:
    """The first event (already seen or arriving within ``timeout``) that ``match``es; consumed."""
    deadline = time.monotonic() + timeout
    while True:
        for event in seen:
            if match(event):
                seen.remove(event)
                return event
        seen.append(await control.next_event(timeout=max(0.01, deadline - time.monotonic())))
