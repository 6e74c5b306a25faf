"""The one JSON error envelope of every HTTP answer, aiohttp's own parser refusals included.

The application's errors go through its middleware (server/app.py). A request aiohttp's HTTP parser
refuses (a control character in a header value, a bad request line, a line over 8190 bytes...) never
reaches the application: aiohttp answers it from ``RequestHandler.handle_error`` in plain text that
quotes the offending line back. Here that answer is the same envelope, whose message names what was
wrong from the parser's reason only (never the line itself, so never a header value).

The hook is a ``RequestHandler`` subclass made by a ``web.Server`` subclass that the runner builds in
place of aiohttp's. aiohttp has no public option for the handler class, so this relies on two internals
stable since aiohttp 3.8 (``Server._loop``/``_kwargs`` and ``handle_error``'s signature); on another
major version the runner is aiohttp's own and these answers stay aiohttp's plain text.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler

MAX_MESSAGE_CHARS = 300
MAX_REASON_CHARS = 80
# The ``error`` code of aiohttp's own HTTP errors (no route, wrong method, body too large...).
HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 413: "too_large", 415: "unsupported_media_type", 500: "internal"}
SUPPORTED = aiohttp.__version__.split(".")[0] == "3" and hasattr(RequestHandler, "handle_error")


def problem(status: int, code: str, message: str, **headers) -> web.Response:
    """The one error envelope of every HTTP error: ``{"error": CODE, "message": ONE LINE}``."""
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 3] + "..."
    return web.json_response({"error": code, "message": message}, status=status, headers=headers)


def parser_reason(exc: HttpProcessingError) -> str:
    """What the parser objected to, without the bytes it quotes: its message up to the first ':'
    ("Invalid header value char", "Got more than 8190 bytes when reading"...)."""
    reason = (exc.message or "").split(":", 1)[0].split("\n", 1)[0].strip().rstrip(".")
    if not reason or len(reason) > MAX_REASON_CHARS or not reason.isprintable() or not reason.isascii():
        reason = type(exc).__name__
    return reason


def malformed_message(exc: HttpProcessingError) -> str:
    """One line: what was wrong and what is accepted."""
    if isinstance(exc, BadHttpMethod) and "HTTPS" in parser_reason(exc):
        accepted = "this port speaks plain HTTP (http://, not https://)"
    elif isinstance(exc, BadHttpMethod):
        accepted = "accepted are GET, POST, DELETE and PATCH"
    elif isinstance(exc, LineTooLong):
        accepted = "accepted are request lines and headers of at most 8190 bytes"
    else:
        accepted = "accepted is HTTP/1.x with header values of printable characters (no CR, LF or control bytes)"
    return f"malformed HTTP request ({parser_reason(exc)}): {accepted}"


class EnvelopeRequestHandler(RequestHandler):
    """aiohttp's connection handler, its own error answers in the envelope."""

    __slots__ = ()

    def handle_error(self, request, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        # aiohttp's own answer first: it logs (through server.httplog's filter) and raises when a
        # response has already been sent on this connection.
        plain = super().handle_error(request, status, exc, message)
        if isinstance(exc, HttpProcessingError):
            text, code = malformed_message(exc), "malformed_request"
        else:
            phrase = HTTPStatus(status).phrase if status in {s.value for s in HTTPStatus} else "error"
            text, code = f"{phrase} (HTTP {status})", HTTP_CODES.get(status, f"http_{status}")
        response = problem(plain.status, code, text)
        response.force_close()  # as aiohttp does: the connection's state is unknown after such an error
        return response


class EnvelopeServer(web.Server):
    """``web.Server`` making ``EnvelopeRequestHandler``s (aiohttp's ``Server.__call__`` less its fallback
    for bad handler arguments, which ours never are)."""

    def __call__(self) -> RequestHandler:
        return EnvelopeRequestHandler(self, loop=self._loop, **self._kwargs)


class EnvelopeAppRunner(web.AppRunner):
    """``web.AppRunner`` whose server answers parser errors in the envelope (aiohttp 3.x); elsewhere
    exactly aiohttp's runner."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        if SUPPORTED and type(server) is web.Server:
            server.__class__ = EnvelopeServer  # same object and state, our handler class
        elif not SUPPORTED:
            logging.getLogger("livedub.http").info(
                "aiohttp %s: malformed requests get aiohttp's plain-text 400", aiohttp.__version__)
        return server
