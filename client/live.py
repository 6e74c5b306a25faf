"""``livedub client``: send a speech file to a livedub server in real time, record the dub, print stats.

It creates a session over the control websocket, watches it over WHEP (recording to mp4), sends the
speech over WHIP at wall-clock pace, optionally swaps the reference at given times, and ends the session
(DELETE on the WHIP resource) once the delayed output of the whole speech has played.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import urllib.parse

from streaming.errors import InputError


def _swap(text: str) -> tuple[float, str, str]:
    """``NAME@SECONDS[:blend|cut]``."""
    name, _, rest = text.partition("@")
    when, _, mode = rest.partition(":")
    try:
        seconds = float(when)
    except ValueError:
        seconds = -1.0
    if not name or seconds < 0 or mode not in ("", "cut", "blend"):
        raise argparse.ArgumentTypeError(f"bad swap {text!r}: accepted is NAME@SECONDS[:cut|blend], e.g. "
                                         "anchor@5:blend")
    return seconds, name, mode or "cut"


def add_client(commands) -> None:
    parser = commands.add_parser("client", help="send a speech file to a livedub server, record the dub",
                                 description="Send SPEECH to a livedub server in real time over WHIP, "
                                             "record the dubbed output from WHEP to an mp4, print stats.")
    add = parser.add_argument
    add("speech", help="speech file (wav, flac, mp3, m4a or a video with sound)")
    add("--second-speech", metavar="FILE", help="a second speaker's speech, sent on its own WHIP ingest "
                                                "(?speaker=2): speaker 1 is the leftmost face, speaker 2 the next")
    add("--source", required=True, help="source name on the server (see its /sources)")
    add("--server", default="http://127.0.0.1:8080", help="server URL (default http://127.0.0.1:8080)")
    add("-o", "--output", default="dub.mp4", help="recorded output mp4 (default dub.mp4)")
    add("--delay", type=float, help="latency budget for this session (default: the server's)")
    add("--generator", help="generator for this session (default: the server's)")
    add("--token", help="bearer token (prefer --token-file or LIVEDUB_TOKEN)")
    add("--token-file", metavar="FILE")
    add("--swap", type=_swap, action="append", default=[], metavar="NAME@SECONDS[:MODE]",
        help="swap the reference to NAME at SECONDS into the speech (repeatable)")
    add("--tail", type=float, default=0.5, help="seconds recorded after the delayed speech ends")
    add("--ice-server", action="append", default=[], metavar="URL", help="STUN/TURN server (none by default)")
    add("--ice-loopback", action="store_true", help="offer 127.0.0.1 (a server on this machine)")
    add("--quiet", action="store_true", help="no stats lines while running")
    parser.set_defaults(run=run_client)


def run_client(args: argparse.Namespace) -> int:
    from server.config import read_secret
    from streaming.media import check_output_path

    token = read_secret(args.token, args.token_file, "LIVEDUB_TOKEN", "token")
    check_output_path(args.output)
    parsed = urllib.parse.urlsplit(args.server)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise InputError(f"bad server URL {args.server!r}: accepted is http(s)://HOST[:PORT]")
    if args.ice_loopback:
        from server.peers import offer_loopback_candidates

        offer_loopback_candidates()
    try:
        summary = asyncio.run(send_and_record(args.server, args.source, args.speech, args.output, token=token,
                                              delay=args.delay, generator=args.generator, swaps=args.swap,
                                              tail=args.tail, ice_servers=args.ice_server,
                                              progress=None if args.quiet else sys.stdout,
                                              second_speech_path=args.second_speech))
    except Exception as exc:  # noqa: BLE001 - what the server or the network said, as one line
        raise _one_line(exc, args.server) or exc from None
    print(json.dumps(summary, indent=1))
    return 0


def _one_line(exc: Exception, server: str) -> InputError | None:
    """The user-facing line for an error from the server or the connection to it; None for a bug."""
    import aiohttp
    import websockets.exceptions

    from client.control import ControlError
    from client.webrtc import OfferRefused

    if isinstance(exc, InputError):
        return exc
    if isinstance(exc, ControlError):
        return InputError(str(exc.reply.get("message") or exc))  # e.g. the server's own "bad delay ..."
    if isinstance(exc, OfferRefused):
        return InputError(f"{server} refused the WebRTC offer (HTTP {exc.status}): {exc.message}")
    if isinstance(exc, websockets.exceptions.InvalidStatus):
        status = exc.response.status_code
        hint = ": give the server's token (--token-file or LIVEDUB_TOKEN)" if status == 401 else ""
        return InputError(f"{server} refused the control connection (HTTP {status}){hint}")
    if isinstance(exc, (ConnectionRefusedError, aiohttp.ClientConnectorError, websockets.exceptions.InvalidURI,
                        websockets.exceptions.InvalidHandshake)) or (
            isinstance(exc, OSError) and not isinstance(exc, ConnectionError)):
        return InputError(f"cannot connect to {server}: is `livedub serve` running?")
    if isinstance(exc, (ConnectionError, aiohttp.ClientError, websockets.exceptions.ConnectionClosed)):
        return InputError(f"lost the connection to {server} ({type(exc).__name__}: {str(exc)[:120]}); "
                          "is `livedub serve` still running?")
    return None


def _line(stats: dict, clock: float) -> str:
    chunks = stats["chunks"]
    send = stats["delay"]["send"]
    cost = stats["cost"]["mean"]
    return (f"t={clock:5.1f}s  delay {stats['delay']['target']:.2f} s (sent at p50 "
            f"{send['p50'] if send['p50'] is not None else '-'} s)  fps {stats['fps_out']:.1f}  chunks "
            f"{chunks['generated']} ok / {chunks['late']} late / {chunks['skipped']} skipped / {chunks['failed']} "
            f"failed  tiers {stats['tiers']}  cost {cost if cost is not None else '-'} s")


async def send_and_record(server: str, source: str, speech_path: str, output: str, token: str | None = None,
                          delay: float | None = None, generator: str | None = None, swaps=(), tail: float = 0.5,
                          ice_servers=(), progress=None, second_speech_path: str | None = None) -> dict:
    import aiohttp

    from client.control import ControlClient, ControlError
    from client.recorder import Mp4Recorder
    from client.webrtc import Publisher, SpeechTrack, Viewer, read_speech
    from streaming.audio import load_audio

    load_audio(speech_path)  # validates the file with a clear error before anything connects
    samples = read_speech(speech_path)
    second_samples = None
    if second_speech_path is not None:
        load_audio(second_speech_path)
        second_samples = read_speech(second_speech_path)
    base = server.rstrip("/")
    control_url = ("wss" if base.startswith("https") else "ws") + base[base.index(":"):] + "/control"
    options = {k: v for k, v in (("delay", delay), ("generator", generator)) if v is not None}
    recorder = Mp4Recorder(output)
    async with ControlClient(control_url, token) as control, aiohttp.ClientSession() as http:
        created = await control.request("create", source=source, **options)
        viewer = Viewer(http, recorder, token, list(ice_servers))
        publisher = Publisher(http, token, list(ice_servers))
        # Speaker 2 on its own WHIP ingest of the same session.
        second = None if second_samples is None else Publisher(http, token, list(ice_servers))
        watched_at = time.monotonic()
        try:
            await viewer.watch(created["whep"])
            track = SpeechTrack(samples)
            await publisher.publish(created["whip"], track)
            tracks = [track]
            if second is not None:
                tracks.append(SpeechTrack(second_samples))
                await second.publish(created["whip"] + "?speaker=2", tracks[1])
            pending = sorted(swaps)
            swapped = []
            end = None
            stats = None
            while end is None or time.monotonic() < end:
                await asyncio.sleep(0.25 if pending else 1.0)
                elapsed = time.monotonic() - (track.started_at or time.monotonic())
                while pending and track.started_at is not None and elapsed >= pending[0][0]:
                    at, name, mode = pending.pop(0)
                    reply = await control.request("swap_reference", session=created["session"], source=name,
                                                  mode=mode)
                    swapped.append({"source": name, "mode": mode, "chunk": reply["chunk"], "at": reply["at"]})
                try:
                    stats = (await control.request("stats", session=created["session"]))["stats"]
                except ControlError as exc:
                    if exc.code != "unknown_session":
                        raise
                    break  # the session played its speech out and ended
                if progress is not None:
                    print(_line(stats, elapsed), file=progress, flush=True)
                if end is None and all(t.finished for t in tracks):
                    # The files are over: the session plays out what it has and ends by itself.
                    await control.request("end_ingest", session=created["session"])
                    end = max(t.started_at + t.duration for t in tracks) + created["delay"] + tail
        finally:
            if second is not None:
                await second.close()  # speaker 2 leaves first (DELETE ?speaker=2)
            await publisher.close()  # DELETE on the WHIP resource ends the session
            await viewer.close(delete=False)
            recorder.close()
    return {"output": output, "session": created["session"], "source": source, "generator": created["generator"],
            "delay": created["delay"], "frames_recorded": recorder.frames, "swaps": swapped,
            "seconds": round(time.monotonic() - watched_at, 2), "stats": stats}
