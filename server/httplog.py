"""What the HTTP server logs: never a header value, a query string, a token or a password.

aiohttp's default access line carries the request line, query string included (``?token=`` would land
in the log), and a request it cannot parse (e.g. an ``Authorization`` header with a control character,
as a token file with CRLF line ends makes) is logged at ERROR with the offending header, token and all,
in the exception's text. Here the access line names the method and the path only, and parse errors
become one WARNING line naming the error's kind.
"""

from __future__ import annotations

import logging

from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError

HTTP_LOGGER = "livedub.http"


class AccessLogger(AbstractAccessLogger):
    """``REMOTE "METHOD /path" STATUS BYTES SECONDS``: the path percent-encoded, without its query."""

    def log(self, request, response, time: float) -> None:
        self.logger.info('%s "%s %s" %d %d %.3fs', request.remote, request.method, request.rel_url.raw_path,
                         response.status, response.body_length, time)


class DropHeaderValues(logging.Filter):
    """Turns aiohttp's report of an unparseable request (whose text quotes the bad header line) into one
    line without it; other records pass unchanged."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg = "refused a malformed HTTP request from %s (%s, %d): its content is not logged"
            record.args = (remote, type(exc).__name__, exc.code)
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def http_logger() -> logging.Logger:
    """The logger aiohttp's request handler reports its own errors to."""
    logger = logging.getLogger(HTTP_LOGGER)
    if not any(isinstance(f, DropHeaderValues) for f in logger.filters):
        logger.addFilter(DropHeaderValues())
    return logger
