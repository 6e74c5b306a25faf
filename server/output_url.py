"""Output URLs (``rtmp://``, ``rtmps://``, ``srt://``): checked at the edge, shown without their secrets.

A client names where a session's dub goes; the server then connects there, so a URL is checked before
anything is opened: its scheme, host (against the operator's ``--allow-output-host`` list, when given),
port, length and characters. RTMP stream keys and SRT passphrases are secrets: events, stats and logs
show ``shown``, never the URL itself.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import urllib.parse

from streaming.errors import InputError, quoted

SCHEMES = {"rtmp": 1935, "rtmps": 443, "srt": None}  # SRT has no default port
MAX_URL_CHARS = 1024
# srt-live-transmit options a client may set; others (mode=listener, adapter=, port=...) would make the
# server listen or bind where the operator did not say.
SRT_PARAMS = ("streamid", "passphrase", "pbkeylen", "latency", "maxbw")
SECRET_PARAMS = ("streamid", "passphrase")
_HOSTNAME = re.compile(r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")
ACCEPTED = ("accepted are rtmp://HOST[:PORT]/APP/STREAM, rtmps://HOST[:PORT]/APP/STREAM and "
            f"srt://HOST:PORT[?{'|'.join(SRT_PARAMS)}=...]")


@dataclasses.dataclass(frozen=True)
class OutputUrl:
    url: str = dataclasses.field(repr=False)  # the whole URL, its secrets included
    scheme: str
    host: str
    port: int
    shown: str  # the URL with its stream key or passphrase replaced by ***

    @property
    def kind(self) -> str:
        return "srt" if self.scheme == "srt" else "rtmp"


def normal_host(host: str) -> str:
    """A host as compared with the allowed list: lower case, IPv6 without brackets and compressed."""
    host = host.strip().lower().strip("[]")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host.rstrip(".")


def check_host_name(host: str) -> str:
    """An ``--allow-output-host`` entry: a DNS name or an IP address, normalised."""
    normal = normal_host(str(host))
    if not (_is_ip(normal) or _HOSTNAME.match(normal)):
        raise InputError(f"bad output host {quoted(host)}: accepted is a host name or IP address, e.g. "
                         "cdn.example.com or 10.0.0.5")
    return normal


def parse_output_url(text, allowed_hosts: tuple[str, ...] = ()) -> OutputUrl:
    """The checked URL, or InputError with one line naming what is accepted."""
    if not isinstance(text, str):
        raise InputError(f"bad output URL: a string is needed; {ACCEPTED}")
    if len(text) > MAX_URL_CHARS:
        raise InputError(f"output URL of {len(text)} characters: accepted are at most {MAX_URL_CHARS}")
    if any(ord(c) <= 32 or 127 <= ord(c) < 160 for c in text):
        raise InputError("bad output URL: spaces and control characters are not accepted (percent-encode them)")
    try:
        parsed = urllib.parse.urlsplit(text)
    except ValueError:  # e.g. an unclosed [ of an IPv6 address
        raise InputError(f"bad output URL {quoted(text, 60)}: {ACCEPTED}") from None
    scheme = parsed.scheme.lower()
    if scheme not in SCHEMES:
        raise InputError(f"bad output URL scheme {quoted(parsed.scheme or text, 20)}: {ACCEPTED}")
    try:
        port = parsed.port
    except ValueError:
        raise InputError(f"bad output URL port in {_redacted_for_error(parsed)}: accepted is 1 to 65535") from None
    host = normal_host(parsed.hostname or "")
    if not host or not (_is_ip(host) or _HOSTNAME.match(host)):
        raise InputError(f"bad output URL host in {_redacted_for_error(parsed)}: {ACCEPTED}")
    if parsed.username is not None or parsed.password is not None:
        raise InputError("bad output URL: user:password@ is not accepted (put credentials in the stream key "
                         "or the SRT passphrase)")
    if port == 0 or (port is None and SCHEMES[scheme] is None):
        raise InputError(f"bad output URL {_redacted_for_error(parsed)}: a port from 1 to 65535 is needed")
    if allowed_hosts and host not in allowed_hosts:
        raise InputError(f"output host {quoted(host)} is not allowed: accepted are {', '.join(allowed_hosts)}")
    port = port or SCHEMES[scheme]
    if scheme == "srt":
        shown = _check_srt(parsed, host, port)
    else:
        shown = _check_rtmp(parsed, scheme, host, port)
    return OutputUrl(text, scheme, host, port, shown)


def expand_template(template: str, session_id: str, allowed_hosts: tuple[str, ...] = ()) -> OutputUrl:
    """``--output-url``'s template for one session: ``{session}`` is its id."""
    if template.replace("{session}", "").count("{") or template.replace("{session}", "").count("}"):
        raise InputError(f"bad output URL template {quoted(template, 80)}: the only placeholder accepted is "
                         "{session}, e.g. rtmp://host/live/{session}")
    return parse_output_url(template.replace("{session}", session_id), allowed_hosts)


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _check_rtmp(parsed: urllib.parse.SplitResult, scheme: str, host: str, port: int) -> str:
    parts = [p for p in parsed.path.split("/") if p]
    if len(parts) < 2 or parsed.fragment:
        raise InputError(f"bad RTMP URL {scheme}://{_netloc(host, port)}{parsed.path[:40]}: accepted is "
                         f"{scheme}://HOST[:PORT]/APP/STREAM (the application and the stream key)")
    return f"{scheme}://{_netloc(host, port)}/{'/'.join(parts[:-1])}/***"


def _check_srt(parsed: urllib.parse.SplitResult, host: str, port: int) -> str:
    if parsed.path not in ("", "/") or parsed.fragment:
        raise InputError("bad SRT URL: accepted is srt://HOST:PORT with options after ?, no path")
    try:
        params = urllib.parse.parse_qsl(parsed.query, keep_blank_values=True, strict_parsing=bool(parsed.query),
                                        max_num_fields=len(SRT_PARAMS))
    except ValueError:
        raise InputError(f"bad SRT URL options: accepted are at most {len(SRT_PARAMS)} of "
                         f"{', '.join(SRT_PARAMS)} as KEY=VALUE") from None
    names = [name for name, _ in params]
    unknown = [name for name in names if name not in SRT_PARAMS]
    if unknown or len(set(names)) != len(names):
        raise InputError(f"bad SRT URL option {quoted(unknown[0] if unknown else names[0], 20)}: accepted are "
                         f"{', '.join(SRT_PARAMS)}, each once (the server always calls: no mode=)")
    shown = "&".join(f"{name}={'***' if name in SECRET_PARAMS else value}" for name, value in params)
    return f"srt://{_netloc(host, port)}" + (f"?{shown}" if shown else "")


def _redacted_for_error(parsed: urllib.parse.SplitResult) -> str:
    """Enough of a URL to find it, without its path or query (where secrets are)."""
    return quoted(f"{parsed.scheme}://{parsed.netloc.rpartition('@')[2]}", 60)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False
