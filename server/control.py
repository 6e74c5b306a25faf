"""The control protocol: JSON messages with an ``op``, the same over the websocket and MQTT.

Every request may carry an ``id``; its reply (``type: "reply"``) or error (``type: "error"``, with a
``code`` and a one-line ``message``) carries it back. A bad message only ever produces an error reply:
the connection, and every session, carry on. Events are pushed as ``type: "event"``.
"""

from __future__ import annotations

import json
import logging
import math

from server.manager import GeneratorUnavailable, LimitReached, SessionManager, UnknownSession
from server.offers import OfferError
from server.outputs import OutputLimit, UnknownOutput
from server.sources import BadName, UnknownSource
from streaming.errors import InputError, quoted
from streaming.workers import GeneratorFailed

log = logging.getLogger("livedub.control")
OPS = ("auth", "create", "swap_reference", "assign_speaker", "end_ingest", "stats", "stop", "sessions", "sources",
       "subscribe", "unsubscribe", "ping", "add_output", "remove_output")
ERROR_CODES = {UnknownSource: "unknown_source", BadName: "bad_name", UnknownSession: "unknown_session",
               LimitReached: "limit_reached", GeneratorUnavailable: "generator_unavailable",
               OfferError: "bad_offer", UnknownOutput: "unknown_output", OutputLimit: "limit_reached"}
MAX_DEPTH = 32  # nesting levels of a message; no op needs more than 2
MAX_ID = 1 << 53  # a whole-number id must survive a JavaScript client's doubles
MAX_NUMBER = 1e9  # larger numbers are no meaningful delay (and would overflow a float)
MAX_AUTH_FAILURES = 3  # wrong tokens on one connection before it is closed
MAX_MESSAGE_CHARS = 300  # an error message quotes back at most this much


class ControlError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _field(message: dict, name: str, kinds: tuple, required: bool = True, default=None):
    if name not in message or message[name] is None:
        if required:
            raise ControlError("bad_request", f"{message.get('op')}: missing field {name!r}")
        return default
    value = message[name]
    if not isinstance(value, kinds) or isinstance(value, bool) and bool not in kinds:
        names = "/".join("number" if k in (int, float) else k.__name__ for k in kinds)
        raise ControlError("bad_request", f"{message.get('op')}: field {name!r} must be a {names}")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not _reasonable(value):
        raise ControlError("bad_request", f"{message.get('op')}: field {name!r} must be a finite number of at "
                                          f"most {MAX_NUMBER:g} in size")
    return value


def _reasonable(number: int | float) -> bool:
    """A number a field can hold: finite and not huge (a 4,000-digit integer would overflow a float)."""
    return abs(number) <= MAX_NUMBER if isinstance(number, int) else math.isfinite(number) and abs(number) <= MAX_NUMBER


def _depth(value) -> int:
    """Nesting depth of a parsed JSON value, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _parse(raw: str | bytes, max_bytes: int) -> dict:
    """The JSON object of one raw message, its size counted in bytes; ControlError otherwise."""
    size = len(raw) if isinstance(raw, bytes) else len(raw.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise ControlError("too_large", f"message of {size} bytes: accepted are at most {max_bytes} bytes")
    try:
        message = json.loads(raw)
    except RecursionError:
        message = None  # nested deeper than Python's parser goes: refused below like any deep message
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ControlError("bad_json", f"not JSON ({exc.msg if hasattr(exc, 'msg') else exc.reason}); "
                                       "send one JSON object per message") from None
    except ValueError:  # an integer of more digits than Python converts (4,300)
        raise ControlError("bad_json", "a number with too many digits; send one JSON object per message") from None
    if message is None or _depth(message) > MAX_DEPTH:
        raise ControlError("too_deep", f"message nested too deeply: accepted are at most {MAX_DEPTH} levels")
    if not isinstance(message, dict):
        raise ControlError("bad_message", "a message is a JSON object with an 'op'")
    return message


def _request_id(message: dict):
    request_id = message.get("id")
    if request_id is None or isinstance(request_id, str) and len(request_id) <= 64 or (
            isinstance(request_id, int) and not isinstance(request_id, bool) and abs(request_id) <= MAX_ID):
        return request_id
    raise ControlError("bad_request", "'id' must be a string of at most 64 characters or a whole number of "
                                      "at most 2^53")


class ControlChannel:
    """One client's conversation with the server: its authorisation and its event subscriptions."""

    def __init__(self, manager: SessionManager, base_url: str, token: str | None, authorized: bool,
                 max_bytes: int, compare_token) -> None:
        self.manager = manager
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.authorized = authorized or token is None
        self.max_bytes = max_bytes
        self._compare = compare_token
        self.subscriptions: set[str] = set()
        self.auth_failures = 0
        self.closing = False  # set after too many wrong tokens: the transport closes the connection

    def wants(self, event: dict) -> bool:
        """Events of the sessions this client made or subscribed to, and server-wide events (e.g. MQTT)."""
        session = event.get("session")
        return self.authorized and (session is None or "*" in self.subscriptions or session in self.subscriptions)

    async def handle(self, raw: str | bytes) -> dict:
        """The reply to one raw message (never raises)."""
        request_id, op = None, None
        try:
            message = _parse(raw, self.max_bytes)
            request_id = _request_id(message)
            op = message.get("op")
            if op not in OPS:
                raise ControlError("unknown_op", f"unknown op {quoted(op)}: accepted are {', '.join(OPS)}")
            if not self.authorized and op != "auth":
                raise ControlError("unauthorized", "authenticate first: {\"op\": \"auth\", \"token\": ...}")
            result = await getattr(self, f"_op_{op}")(message)
            return {"type": "reply", "id": request_id, "op": op, **result}
        except ControlError as exc:
            return _error(request_id, op, exc.code, str(exc))
        except InputError as exc:
            return _error(request_id, op, ERROR_CODES.get(type(exc), "bad_request"), str(exc))
        except GeneratorFailed as exc:  # the generator could not be built (e.g. no weights)
            return _error(request_id, op, "generator_failed", str(exc))
        except Exception as exc:  # noqa: BLE001 - a bug answers this message only
            log.exception("control op %s failed", op)
            return _error(request_id, op, "internal", f"internal error ({type(exc).__name__})")

    async def _op_auth(self, message: dict) -> dict:
        token = _field(message, "token", (str,))
        if self._token is not None and not self._compare(token, self._token):
            self.auth_failures += 1
            if self.auth_failures >= MAX_AUTH_FAILURES:
                self.closing = True
                raise ControlError("unauthorized", f"wrong token ({self.auth_failures} times): closing the "
                                                   "connection")
            raise ControlError("unauthorized", f"wrong token ({self.auth_failures} of {MAX_AUTH_FAILURES} "
                                               "tries before the connection is closed)")
        self.authorized = True
        return {}

    async def _op_ping(self, message: dict) -> dict:
        return {}

    def urls(self, session_id: str) -> dict:
        return {"whip": f"{self.base_url}/whip/{session_id}", "whep": f"{self.base_url}/whep/{session_id}"}

    async def _op_create(self, message: dict) -> dict:
        if message.get("source") is None and not message.get("live_video"):
            raise ControlError("bad_request", f"create: missing field 'source': available are "
                                              f"{self.manager.library.available()}")
        source = _field(message, "source", (str,), required=False)
        generator = _field(message, "generator", (str,), required=False)
        delay = _field(message, "delay", (int, float), required=False)
        live = _field(message, "live_video", (bool,), required=False, default=False)
        outputs = _field(message, "outputs", (list,), required=False, default=[])
        session = await self.manager.create(source, generator, delay, live_video=live, outputs=outputs)
        self.subscriptions.add(session.id)
        return {"session": session.id, **self.urls(session.id), "delay": session.clock.delay,
                "generator": session.profile.name, "source": session.source_name,
                "outputs": session.reporters["outputs"]() if "outputs" in session.reporters else []}

    async def _op_add_output(self, message: dict) -> dict:
        """{session, url: rtmp://, rtmps:// or srt://} -> the output's id; its progress comes as events."""
        session_id = _field(message, "session", (str,))
        output = self.manager.add_output(session_id, _field(message, "url", (str,)))
        return {"session": session_id, "output": output.id, "url": output.url.shown}

    async def _op_remove_output(self, message: dict) -> dict:
        session_id = _field(message, "session", (str,))
        output_id = _field(message, "output", (str,))
        await self.manager.remove_output(session_id, output_id)
        return {"session": session_id, "output": output_id}

    async def _op_swap_reference(self, message: dict) -> dict:
        session_id = _field(message, "session", (str,))
        source = _field(message, "source", (str,))
        mode = _field(message, "mode", (str,), required=False, default="cut")
        where = await self.manager.swap(session_id, source, mode)
        return {"session": session_id, "source": source, "mode": mode, **where}

    async def _op_end_ingest(self, message: dict) -> dict:
        """The sender's speech has ended (a file or the demo played out): the session plays out what it
        captured, then ends with ``ingest_ended`` instead of idling."""
        session_id = _field(message, "session", (str,))
        return {"session": session_id, **self.manager.end_ingest(session_id)}

    async def _op_assign_speaker(self, message: dict) -> dict:
        """{session, speaker: 1|2, face: a rank from the left (0, 1, ...) or a horizontal position 0..1}."""
        session_id = _field(message, "session", (str,))
        speaker = _field(message, "speaker", (int,))
        face = _field(message, "face", (int, float))
        where = self.manager.get(session_id).assign_speaker(speaker, face)
        return {"session": session_id, "speaker": speaker, "face": face, **where}

    async def _op_stats(self, message: dict) -> dict:
        session_id = _field(message, "session", (str,), required=False)
        if session_id is None:
            return {"sessions": [s.stats().to_wire() for s in self.manager.sessions.values()],
                    "live_sources": self.manager.programmes.stats()}
        return {"stats": self.manager.get(session_id).stats().to_wire()}

    async def _op_stop(self, message: dict) -> dict:
        session_id = _field(message, "session", (str,))
        await self.manager.stop(session_id)
        return {"session": session_id}

    async def _op_sessions(self, message: dict) -> dict:
        return {"sessions": [{"session": sid, "source": s.source_name, "generator": s.profile.name,
                              "state": s.state, **self.urls(sid),
                              "outputs": s.reporters["outputs"]() if "outputs" in s.reporters else []}
                             for sid, s in self.manager.sessions.items()]}

    async def _op_sources(self, message: dict) -> dict:
        return {"sources": self.manager.library.listing(), "live": list(self.manager.library.live_names)}

    async def _op_subscribe(self, message: dict) -> dict:
        session_id = _field(message, "session", (str,))
        if session_id != "*":
            self.manager.get(session_id)
        self.subscriptions.add(session_id)
        return {"session": session_id}

    async def _op_unsubscribe(self, message: dict) -> dict:
        session_id = _field(message, "session", (str,))
        self.subscriptions.discard(session_id)
        return {"session": session_id}


def _error(request_id, op, code: str, message: str) -> dict:
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 3] + "..."
    return {"type": "error", "id": request_id, "op": op if isinstance(op, str) and op in OPS else None,
            "code": code, "message": message}
