"""Real media servers for tests, on free loopback ports with their files in a temp folder: nginx with its
RTMP module (live application, HLS on, the playlists also served over HTTP) and an ``srt-live-transmit`` listener writing what it receives
to a file. Each is started and stopped by the test; ``missing()`` names what is not installed."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

from _server_support import free_port

NGINX = "/usr/sbin/nginx"
RTMP_MODULE = "/usr/lib/nginx/modules/ngx_rtmp_module.so"
SRT_BINARY = "srt-live-transmit"


def missing_nginx() -> str | None:
    if not os.path.exists(NGINX) or not os.path.exists(RTMP_MODULE):
        return f"nginx with its RTMP module is not installed ({NGINX}, {RTMP_MODULE}; scripts/setup.sh installs them)"
    return None


def missing_srt() -> str | None:
    if shutil.which(SRT_BINARY) is None:
        return f"{SRT_BINARY} is not installed (Debian package srt-tools; scripts/setup.sh installs it)"
    return None


def _wait_tcp(port: int, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and process.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not start (exit status {process.poll()})")


def _stop(process: subprocess.Popen | None) -> None:
    """SIGTERM (srt-live-transmit then writes out what it holds), SIGKILL if that is not enough."""
    if process is None:
        return
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait(10)


class Nginx:
    """nginx in the foreground (one process) with ``rtmp://127.0.0.1:PORT/live/KEY`` and its HLS
    playlists in ``hls/KEY.m3u8``."""

    def __init__(self, folder: str, port: int | None = None, playlist_seconds: int = 6) -> None:
        self.folder = folder
        self.port = port or free_port()
        self.http_port = free_port()  # the HLS it makes, served over HTTP (``hls_url``)
        self.hls = os.path.join(folder, "hls")
        os.makedirs(os.path.join(folder, "logs"), exist_ok=True)
        os.makedirs(self.hls, exist_ok=True)
        self.config = os.path.join(folder, "nginx.conf")
        with open(self.config, "w") as handle:
            handle.write(f"""load_module {RTMP_MODULE};
daemon off;
master_process off;
pid {folder}/nginx.pid;
error_log {folder}/logs/error.log info;
events {{ worker_connections 64; }}
rtmp {{
    server {{
        listen 127.0.0.1:{self.port};
        application live {{
            live on;
            record off;
            hls on;
            hls_path {self.hls};
            hls_fragment 1s;
            hls_playlist_length {playlist_seconds}s;
        }}
    }}
}}
http {{
    access_log off;
    types {{ application/vnd.apple.mpegurl m3u8; video/mp2t ts; }}
    server {{ listen 127.0.0.1:{self.http_port}; location /hls/ {{ root {folder}; }} }}
}}
""")
        self.process: subprocess.Popen | None = None

    def url(self, key: str) -> str:
        return f"rtmp://127.0.0.1:{self.port}/live/{key}"

    def hls_url(self, key: str) -> str:
        return f"http://127.0.0.1:{self.http_port}/hls/{key}.m3u8"

    def start(self) -> "Nginx":
        self.process = subprocess.Popen([NGINX, "-c", self.config, "-p", self.folder], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        _wait_tcp(self.port, self.process, "nginx")
        return self

    def stop(self) -> None:
        _stop(self.process)
        self.process = None


class SrtListener:
    """``srt-live-transmit srt://127.0.0.1:PORT?mode=listener file://con`` writing what it receives (an
    MPEG-TS stream) to ``path``."""

    def __init__(self, path: str, port: int | None = None) -> None:
        self.path = path
        self.port = port or free_udp_port()
        self.process: subprocess.Popen | None = None

    def url(self) -> str:
        return f"srt://127.0.0.1:{self.port}"

    def start(self) -> "SrtListener":
        with open(self.path, "ab") as sink:
            self.process = subprocess.Popen([shutil.which(SRT_BINARY), "-q", f"srt://127.0.0.1:{self.port}?mode=listener",
                                             "file://con"], stdout=sink, stderr=subprocess.DEVNULL)
        return self

    def stop(self) -> None:
        _stop(self.process)
        self.process = None


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_TLS_FRONT = """
import asyncio, ssl, sys
cert, key, port, upstream = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
context.load_cert_chain(cert, key)
async def pipe(source, sink):
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    except (ConnectionError, ssl.SSLError):
        pass
    finally:
        sink.close()
async def forward(reader, writer):
    up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream)
    await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
async def main():
    server = await asyncio.start_server(forward, "127.0.0.1", port, ssl=context)
    await server.serve_forever()
asyncio.run(main())
"""


class TlsFront:
    """A TLS-terminating TCP forwarder to ``upstream`` on loopback (in its own process), as a CDN's
    RTMPS ingest is in front of its RTMP servers."""

    def __init__(self, cert: str, key: str, upstream: int) -> None:
        self.port = free_port()
        self.args = [sys.executable, "-c", _TLS_FRONT, cert, key, str(self.port), str(upstream)]
        self.process: subprocess.Popen | None = None

    def start(self) -> "TlsFront":
        self.process = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_tcp(self.port, self.process, "the TLS front")
        return self

    def stop(self) -> None:
        _stop(self.process)
        self.process = None
