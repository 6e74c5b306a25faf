"""The HTTP side of ``livedub serve``: one port for the page, WHIP, WHEP, health, metrics and control.

aiohttp serves all of it: POST/DELETE with bodies (WHIP/WHEP), static files and a websocket on one port,
in the same event loop as aiortc (whose own examples use it).

  GET  /                      the browser page (client/web)
  GET  /healthz               {"status": "ok", ...} (no token needed)
  GET  /demo/speech.wav       the demo speech, with ``serve --demo`` (for the page's "play demo speech")
  GET  /metrics               Prometheus text
  GET  /sources               {"sources": [names]}
  GET  /sources/NAME/thumbnail  a small JPEG of the source's first frame (cached)
  GET  /config                {"generator": NAME, "delay": {"min", "max", "default", "exact"}, "size", "ops"}
  POST /whip?source=NAME[&delay=S]   SDP offer -> 201, SDP answer, Location /whip/ID (new session)
  POST /whip/ID               SDP offer -> 201: the ingest of a session made by the control op ``create``
  POST /whip/ID?speaker=2     SDP offer -> 201: a second speaker's speech for the session (two faces)
  DELETE /whip/ID             ends the session (DELETE /whip/ID?speaker=2: speaker 2 leaves, the session goes on)
  POST /whep/ID               SDP offer -> 201, SDP answer, Location /whep/ID/VIEWER
  DELETE /whep/ID/VIEWER      ends that viewer
  GET  /control               the control websocket (JSON)
With a token configured, everything but the page and /healthz needs ``Authorization: Bearer TOKEN``
(the websocket also accepts ``{"op": "auth", "token": ...}`` as its first message, for browsers).
Every HTTP error, aiohttp's own included, is ``{"error": CODE, "message": ONE LINE}``; offers are
checked (server/offers.py) before a session exists.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket

from aiohttp import WSCloseCode, WSMsgType, web

import client
from server.auth import authorized, same_token
from server.config import ServerConfig
from server.control import ERROR_CODES, OPS, ControlChannel
from server.envelope import HTTP_CODES, EnvelopeAppRunner
from server.envelope import problem as _problem
from streaming.heap import bound_heap
from server.httplog import AccessLogger, http_logger
from server.livesources import PICTURE_WAIT, check_no_clash, programme_thumbnail
from server.lockout import AuthLockout
from server.manager import GeneratorUnavailable, LimitReached, SessionManager, UnknownSession
from server.metrics import CONTENT_TYPE, render
from server.mqtt import MqttBridge
from server.offers import Offer, OfferError, check_offer
from server.sources import SourceLibrary, Thumbnails, UnknownSource
from streaming.chunker import ChunkPlan
from streaming.errors import InputError, quoted
from streaming.session import SessionSettings
from streaming.workers import GeneratorFailed

log = logging.getLogger("livedub.server")
WEB_DIR = os.path.join(os.path.dirname(client.__file__), "web")
WEBSOCKET_HARD_LIMIT = 1 << 20  # beyond this aiohttp closes the socket (1009); below it we answer
EVENT_QUEUE = 256
STATIC_FILES = frozenset(name for name in os.listdir(WEB_DIR) if os.path.isfile(os.path.join(WEB_DIR, name)))
STATUS = {UnknownSession: 404, UnknownSource: 404, LimitReached: 503, GeneratorUnavailable: 503}


def _http_problem(request: web.Request, exc: web.HTTPException) -> web.Response:
    """aiohttp's own error (raised by the router, a static file, a body limit) in the envelope."""
    if exc.status == 404:
        message = f"no such resource {quoted(request.path)}"
    elif exc.status == 405:
        message = (f"method {quoted(request.method)} not allowed on {quoted(request.path)}: accepted are "
                   f"{', '.join(sorted(getattr(exc, 'allowed_methods', ()) or ())) or 'none'}")
    else:
        message = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
    headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "WWW-Authenticate")}
    return _problem(exc.status, HTTP_CODES.get(exc.status, f"http_{exc.status}"), message.strip(), **headers)


def _speaker(request: web.Request) -> int:
    """The ``?speaker=`` of a WHIP request: 1 (default: the session's own speech) or 2 (a second speaker)."""
    speaker = request.query.get("speaker", "1")
    if speaker not in ("1", "2"):
        raise InputError(f"bad speaker {quoted(speaker, 20)}: accepted are 1 and 2 (?speaker=2 sends the "
                         "second speaker's speech)")
    return int(speaker)


def _input_problem(exc: InputError) -> web.Response:
    return _problem(STATUS.get(type(exc), 400), ERROR_CODES.get(type(exc), "bad_request"), str(exc))


class LiveServer:
    def __init__(self, config: ServerConfig, plan: ChunkPlan = ChunkPlan(),
                 settings: SessionSettings | None = None, demo_speech: str | None = None) -> None:
        self.config = config
        self.demo_speech = demo_speech
        self.library = SourceLibrary(config.sources, [spec.name for spec in config.live_sources])
        check_no_clash(config.live_sources, self.library.names())
        self.thumbnails = Thumbnails(self.library, config.size)
        self.manager = SessionManager(config, self.library, plan, settings)
        self.mqtt = MqttBridge(config.mqtt, self.manager, self._mqtt_channel) if config.mqtt else None
        self.lockout = AuthLockout()  # wrong tokens per client address, across connections
        self.app = self._build_app()
        self._runner: web.AppRunner | None = None
        self.url: str | None = None
        self.generator: str | None = None

    # ---- lifecycle --------------------------------------------------------------------------------------
    async def start(self) -> str:
        """Check (or load) the default generator, start listening; the URL to open."""
        bound_heap()  # frame-sized buffers as mmaps, handed back when freed: RSS flat over churn
        self.generator = await self.manager.prepare()
        # The access log names method and path only (a ?token= query never reaches it); aiohttp's own
        # errors go to a logger that drops header values (a malformed Authorization header included),
        # and their answers are the JSON envelope too (server/envelope.py).
        self._runner = EnvelopeAppRunner(self.app, access_log=logging.getLogger("livedub.access"),
                                          access_log_class=AccessLogger, logger=http_logger(), shutdown_timeout=2)
        await self._runner.setup()
        family = socket.AF_INET6 if ":" in self.config.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.config.host, self.config.port))
        except OSError as exc:
            sock.close()
            raise InputError(f"cannot listen on {self.config.host}:{self.config.port}: {exc.strerror}") from None
        await web.SockSite(self._runner, sock).start()
        host, port = sock.getsockname()[:2]
        self.url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
        if self.mqtt is not None:
            self.manager.listen(self.mqtt.on_event)
            self.mqtt.start()
        return self.url

    async def stop(self) -> None:
        if self.mqtt is not None:
            await self.mqtt.close()
        await self.manager.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def _mqtt_channel(self) -> ControlChannel:
        return ControlChannel(self.manager, self.url or "", None, True, self.config.max_message_bytes,
                              same_token)

    # ---- routes -----------------------------------------------------------------------------------------
    def _build_app(self) -> web.Application:
        app = web.Application(client_max_size=max(self.config.max_sdp_bytes, self.config.max_message_bytes) + 1024,
                              middlewares=[self._envelope, self._guard])
        app.router.add_get("/", self._index)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/healthz", self._healthz)
        if self.demo_speech:
            app.router.add_get("/demo/speech.wav", lambda request: web.FileResponse(self.demo_speech))
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/sources", self._sources)
        app.router.add_get("/sources/{name}/thumbnail", self._thumbnail)
        app.router.add_get("/config", self._config)
        app.router.add_post("/whip", self._whip_create)
        app.router.add_post("/whip/{session}", self._whip_attach)
        app.router.add_delete("/whip/{session}", self._whip_delete)
        app.router.add_patch("/whip/{session}", self._no_trickle)
        app.router.add_post("/whep/{session}", self._whep)
        app.router.add_delete("/whep/{session}/{viewer}", self._whep_delete)
        app.router.add_patch("/whep/{session}/{viewer}", self._no_trickle)
        app.router.add_get("/control", self._control)
        return app

    OPEN_PATHS = ("/", "/healthz", "/control", "/demo/speech.wav")

    @web.middleware
    async def _envelope(self, request: web.Request, handler):
        """Every HTTP error in the JSON envelope, aiohttp's own (404, 405, 413, 415) included."""
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return _http_problem(request, exc)
        except Exception as exc:  # a bug: its traceback is logged here, the client gets the envelope
            log.exception("%s %s failed", request.method, request.rel_url.raw_path)
            return _problem(500, "internal", f"internal error ({type(exc).__name__})")

    @web.middleware
    async def _guard(self, request: web.Request, handler):
        """Bearer token on everything but the page and health (the websocket checks its own)."""
        if request.path not in self.OPEN_PATHS and not request.path.startswith("/static/"):
            refused = self._locked_out(request)
            if refused is not None:
                return refused
            if not authorized(request.headers.get("Authorization"), self.config.token):
                if request.headers.get("Authorization"):  # a wrong token, not a missing one
                    self.lockout.failed(request.remote)
                return _problem(401, "unauthorized", "missing or wrong bearer token",
                                **{"WWW-Authenticate": 'Bearer realm="livedub"'})
        try:
            return await handler(request)
        except InputError as exc:
            return _input_problem(exc)
        except GeneratorFailed as exc:
            return _problem(503, "generator_failed", str(exc))

    def _locked_out(self, request: web.Request) -> web.Response | None:
        """429 for an address with too many wrong tokens lately (only where a token is asked for)."""
        refusal = self.lockout.refusal(request.remote) if self.config.token is not None else None
        if refusal is None:
            return None
        return _problem(429, "too_many_failures", refusal,
                        **{"Retry-After": str(self.lockout.retry_after(request.remote))})

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(os.path.join(WEB_DIR, "index.html"))

    async def _static(self, request: web.Request) -> web.StreamResponse:
        """The page's files: a flat folder, so a name with a path in it is simply not there (a 404 raised
        here, not by FileResponse at send time, reaches the error envelope)."""
        name = request.match_info["name"]
        if name not in STATIC_FILES:
            raise web.HTTPNotFound()
        return web.FileResponse(os.path.join(WEB_DIR, name))

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "sessions": len(self.manager.sessions),
                                  "max_sessions": self.config.max_sessions,
                                  "mqtt": self.mqtt.state if self.mqtt else None})

    async def _metrics(self, request: web.Request) -> web.Response:
        body = render(self.manager, lambda: self.mqtt.state if self.mqtt else None)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def _sources(self, request: web.Request) -> web.Response:
        return web.json_response({"sources": self.library.listing(), "live": list(self.library.live_names)})

    async def _thumbnail(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        programme = self.manager.programmes.get(name)
        if programme is not None:  # the programme's last frame, made afresh each time
            # An idle one is read from now on (until live_source_idle after), its first frame waited for.
            latest = await programme.picture(PICTURE_WAIT)
            data = await asyncio.get_running_loop().run_in_executor(None, programme_thumbnail, programme, latest)
            return web.Response(body=data, content_type="image/jpeg", headers={"Cache-Control": "no-store"})
        data = await asyncio.get_running_loop().run_in_executor(None, self.thumbnails.jpeg, name)
        return web.Response(body=data, content_type="image/jpeg", headers={"Cache-Control": "max-age=60"})

    async def _config(self, request: web.Request) -> web.Response:
        """What a client needs to fill its form: the accepted delays (the generator's real minimum)."""
        from streaming.source import format_size

        return web.json_response({
            "generator": self.generator or self.config.generator, "delay": await self.manager.delay_limits(),
            "size": format_size(self.config.size), "ops": list(OPS)})

    async def _read_sdp(self, request: web.Request, role: str) -> Offer:
        """The request's SDP offer, checked for ``role`` before anything is built for it."""
        if request.content_type != "application/sdp":
            raise web.HTTPUnsupportedMediaType(text=f"Content-Type must be application/sdp, not "
                                                    f"{quoted(request.content_type)}")
        if (request.content_length or 0) > self.config.max_sdp_bytes:
            raise web.HTTPRequestEntityTooLarge(self.config.max_sdp_bytes, request.content_length)
        body = await request.read()
        if len(body) > self.config.max_sdp_bytes:
            raise web.HTTPRequestEntityTooLarge(self.config.max_sdp_bytes, len(body))
        try:
            return check_offer(body.decode("utf-8"), role)
        except UnicodeDecodeError:
            raise OfferError("bad SDP offer: not UTF-8 text") from None

    @staticmethod
    def _sdp_created(answer: str, location: str, **headers) -> web.Response:
        return web.Response(status=201, text=answer, content_type="application/sdp",
                            headers={"Location": location, **headers})

    async def _whip_create(self, request: web.Request) -> web.Response:
        offer = await self._read_sdp(request, "whip")
        delay = request.query.get("delay")
        try:
            delay = None if delay is None else float(delay)
        except ValueError:
            raise InputError(f"bad delay {quoted(delay, 20)}: accepted is a number of seconds") from None
        live = offer.media.get("video") in ("sendonly", "sendrecv")
        source = request.query.get("source")
        if source is None and not live:
            raise InputError("no source: give ?source=NAME (one of /sources), or offer a video track")
        session = await self.manager.create(source, request.query.get("generator"), delay, live_video=live)
        try:
            answer = await self.manager.attach_ingest(session.id, offer)
        except BaseException:
            await self.manager.stop(session.id, "ingest_failed")
            raise
        return self._sdp_created(answer, f"/whip/{session.id}", **{"X-Livedub-Session": session.id,
                                                                    "Link": f'</whep/{session.id}>; rel="whep"'})

    async def _whip_attach(self, request: web.Request) -> web.Response:
        offer = await self._read_sdp(request, "whip")
        session_id = request.match_info["session"]
        speaker = _speaker(request)
        answer = await self.manager.attach_ingest(session_id, offer, speaker)
        location = f"/whip/{session_id}" + ("?speaker=2" if speaker == 2 else "")
        return self._sdp_created(answer, location, **{"X-Livedub-Session": session_id})

    async def _whip_delete(self, request: web.Request) -> web.Response:
        if _speaker(request) == 2:  # speaker 2 leaves; the session goes on with speaker 1
            await self.manager.detach_second_speaker(request.match_info["session"])
        else:
            await self.manager.stop(request.match_info["session"], "ingest_deleted")
        return web.Response(status=200)

    async def _whep(self, request: web.Request) -> web.Response:
        offer = await self._read_sdp(request, "whep")
        session_id = request.match_info["session"]
        viewer_id, answer = await self.manager.add_viewer(session_id, offer)
        return self._sdp_created(answer, f"/whep/{session_id}/{viewer_id}")

    async def _whep_delete(self, request: web.Request) -> web.Response:
        await self.manager.remove_viewer(request.match_info["session"], request.match_info["viewer"])
        return web.Response(status=200)

    async def _no_trickle(self, request: web.Request) -> web.Response:
        return _problem(405, "method_not_allowed", "trickle ICE and ICE restarts are not supported: send the "
                                                   "offer once ICE gathering is complete", Allow="POST, DELETE")

    # ---- the control websocket ----------------------------------------------------------------------------
    async def _control(self, request: web.Request) -> web.WebSocketResponse:
        refused = self._locked_out(request)
        if refused is not None:
            return refused
        ws = web.WebSocketResponse(max_msg_size=WEBSOCKET_HARD_LIMIT, heartbeat=30)
        await ws.prepare(request)
        channel = ControlChannel(self.manager, f"{request.scheme}://{request.host}", self.config.token,
                                 authorized(request.headers.get("Authorization"), self.config.token)
                                 if request.headers.get("Authorization") else False,
                                 self.config.max_message_bytes, same_token)
        if request.headers.get("Authorization") and not channel.authorized:
            self.lockout.failed(request.remote)  # a wrong bearer token on the upgrade
        outbox: asyncio.Queue = asyncio.Queue(maxsize=EVENT_QUEUE)

        def on_event(event: dict) -> None:
            if channel.wants(event) and not outbox.full():
                outbox.put_nowait(event)  # a slow client loses events, never replies or other sessions

        async def send() -> None:
            while True:
                await ws.send_str(json.dumps(await outbox.get()))

        unlisten = self.manager.listen(on_event)
        sender = asyncio.create_task(send())
        try:
            async for message in ws:
                if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    reply = await channel.handle(message.data)
                    if reply.get("op") == "auth" and reply.get("code") == "unauthorized" and \
                            self.lockout.failed(request.remote):  # this address's wrong tokens, all connections
                        channel.closing = True
                        reply["message"] = self.lockout.refusal(request.remote)
                    if channel.closing:  # too many wrong tokens: the last reply, then the door
                        sender.cancel()
                        await asyncio.gather(sender, return_exceptions=True)
                        await ws.send_str(json.dumps(reply))
                        await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"too many wrong tokens")
                        break
                    await outbox.put(reply)
                elif message.type == WSMsgType.ERROR:
                    break
        finally:
            unlisten()
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            # aiohttp 3.14 leaves the connection's protocol holding the socket's heartbeat callback, a
            # cycle (protocol -> socket -> request -> protocol) that keeps the socket's zlib state and
            # buffers until a full collection; the socket is closed here, so the callback has no use.
            if getattr(request.protocol, "_data_received_cb", None) is not None:
                request.protocol._data_received_cb = None
        return ws
