"""The live server's settings: command-line options, or the same keys in a TOML file.

Every key of the file is an option's long name (dashes or underscores); options given on the command
line win over the file. Secrets (the bearer token, the MQTT password) can come from files or environment
variables so that they never appear in a process list.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import math
import os
import tomllib
import urllib.parse

from streaming.errors import InputError

log = logging.getLogger("livedub.config")
ICE_SCHEMES = ("stun", "turn", "turns")
MQTT_SCHEMES = {"mqtt": 1883, "mqtts": 8883}


@dataclasses.dataclass(frozen=True)
class IceServer:
    url: str
    username: str | None = None
    credential: str | None = None


@dataclasses.dataclass(frozen=True)
class MqttConfig:
    host: str
    port: int
    tls: bool = False
    prefix: str = "livedub"
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    stats_interval: float = 1.0

    def describe(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port} (prefix {self.prefix})"


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    sources: str = "sources"
    generator: str = "lite"
    generator_options: tuple = ()
    worker: str = "auto"  # thread, process, or auto (a process, except for passthrough)
    workers: int = 0  # instances of a shared (GPU) generator (0 = one); hosts of a per-session one (0 = a CPU slot each)
    delay: float = 5.5
    lead: float = 0.12
    size: object = 480
    region: str | None = None  # the region=... generator option (an output size's region); None: per generator
    max_sessions: int = 4
    max_viewers: int = 8
    idle_timeout: float = 60.0
    live_source_idle: float = 30.0  # seconds a live source is still read after its last session (0: always read)
    connect_timeout: float = 20.0  # a WebRTC peer not connected this long after its answer is dropped
    token: str | None = dataclasses.field(default=None, repr=False)
    ice_servers: tuple[IceServer, ...] = ()
    ice_loopback: bool = False
    mqtt: MqttConfig | None = None
    max_message_bytes: int = 65_536
    max_sdp_bytes: int = 65_536
    group: object = None  # a streaming.group.GroupLayout (--gpus/--parallel), or None: no process group
    live_sources: tuple = ()  # server.livesources.LiveSourceSpec: the operator's [live_sources] table
    output_url: str | None = dataclasses.field(default=None, repr=False)  # every session's output ({session})
    allow_output_hosts: tuple[str, ...] = ()  # hosts outputs may go to (empty: any)

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_ice_server(text: str) -> IceServer:
    """``stun:host[:port]`` or ``turn[s]:[user:credential@]host[:port][?transport=udp|tcp]``."""
    scheme, _, rest = str(text).partition(":")
    if scheme not in ICE_SCHEMES or not rest or rest.startswith("//"):
        raise InputError(f"bad ICE server {text!r}: accepted are stun:HOST[:PORT] and "
                         "turn:[USER:CREDENTIAL@]HOST[:PORT][?transport=udp|tcp] (turns: likewise)")
    if "@" in rest:
        if scheme == "stun":
            raise InputError(f"bad ICE server {scheme}:...: a STUN server takes no credentials")
        userinfo, _, address = rest.rpartition("@")
        username, _, credential = userinfo.partition(":")
        return IceServer(f"{scheme}:{address}", urllib.parse.unquote(username), urllib.parse.unquote(credential))
    return IceServer(text)


def parse_mqtt_url(text: str) -> tuple[str, int, bool, str | None, str | None]:
    """``mqtt://[user[:password]@]host[:port]`` or ``mqtts://...`` -> host, port, tls, user, password."""
    parsed = urllib.parse.urlsplit(str(text))
    try:
        port = parsed.port
    except ValueError:
        port = -1
    if parsed.scheme not in MQTT_SCHEMES or not parsed.hostname or port == -1 or parsed.path not in ("", "/"):
        raise InputError(f"bad MQTT URL {text!r}: accepted is mqtt://HOST[:PORT] or mqtts://HOST[:PORT] "
                         "(TLS), optionally with USER[:PASSWORD]@ before the host")
    return (parsed.hostname, port or MQTT_SCHEMES[parsed.scheme], parsed.scheme == "mqtts",
            urllib.parse.unquote(parsed.username) if parsed.username else None,
            urllib.parse.unquote(parsed.password) if parsed.password else None)


def load_file(path: str) -> dict:
    """The TOML file's keys, normalised to underscores; the ``[mqtt]`` table flattened to ``mqtt_*``."""
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise InputError(f"config file not found: {path}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"bad config file {path}: {exc} (accepted: TOML, keys as the long options)") from None
    flat: dict = {}
    for key, value in data.items():
        key = key.replace("-", "_")
        if key == "mqtt" and isinstance(value, dict):
            for sub, sub_value in value.items():
                flat["mqtt_" + sub.replace("-", "_") if sub != "url" else "mqtt"] = sub_value
        else:
            flat[key] = value
    return flat


def read_secret(value: str | None, file: str | None, env: str, what: str) -> str | None:
    """A secret from the option, else its file, else the environment variable ``env``."""
    if value:
        return value
    if file:
        try:
            with open(file, newline="") as handle:
                raw = handle.read()
        except OSError as exc:
            raise InputError(f"cannot read the {what} file {file}: {exc.strerror}") from None
        secret = raw.strip()
        if not secret:
            raise InputError(f"the {what} file {file} is empty")
        if raw not in (secret, secret + "\n"):  # a lone final newline is what editors write
            log.warning("the %s file %s has whitespace or CR (CRLF line ends?) around its value: stripped", what,
                        file)
        return secret
    return os.environ.get(env) or None


def check_token(token: str | None) -> str | None:
    """A bearer token must travel in a header: printable ASCII without spaces (it is never echoed)."""
    if token is not None and not all("!" <= c <= "~" for c in token):
        raise InputError("bad token: accepted are printable ASCII characters without spaces or control "
                         "characters (they must fit an Authorization header)")
    return token


def _number(settings: dict, key: str, kind, low: float, high: float, unit: str):
    value = settings[key]
    try:
        number = kind(value)
    except (TypeError, ValueError):
        number = None
    if number is None or isinstance(value, bool) or (kind is float and not math.isfinite(number)) or (
            kind is int and float(value) != number) or not low <= number <= high:
        raise InputError(f"bad {key.replace('_', '-')} {value!r}: accepted is {unit} from {low:g} to {high:g}")
    return number


def build_config(settings: dict) -> ServerConfig:
    """A checked ServerConfig from merged settings (file values overridden by the command line)."""
    from server.livesources import parse_live_sources
    from streaming.group import group_layout
    from streaming.source import parse_size

    unknown = set(settings) - KNOWN_KEYS
    if unknown:
        raise InputError(f"unknown setting(s) {', '.join(sorted(unknown))}: accepted are "
                         f"{', '.join(sorted(KNOWN_KEYS))}")
    defaults = ServerConfig()
    s = {k: v for k, v in settings.items() if v is not None}
    get = lambda key, default: s.get(key, default)  # noqa: E731
    merged = {key: get(key, getattr(defaults, key)) for key in
              ("host", "port", "sources", "generator", "worker", "workers", "delay", "lead", "max_sessions",
               "max_viewers", "idle_timeout", "live_source_idle", "connect_timeout", "max_message_bytes",
               "max_sdp_bytes")}
    for key, kind, low, high, unit in (("port", int, 0, 65535, "a port number"),
                                       ("workers", int, 0, 64, "a whole number"),
                                       ("delay", float, 0.5, 30, "seconds"), ("lead", float, 0, 1, "seconds"),
                                       ("max_sessions", int, 1, 256, "a whole number"),
                                       ("max_viewers", int, 1, 256, "a whole number"),
                                       ("idle_timeout", float, 1, 86400, "seconds"),
                                       ("live_source_idle", float, 0, 86400, "seconds"),
                                       ("connect_timeout", float, 0.5, 600, "seconds"),
                                       ("max_message_bytes", int, 256, 16 << 20, "bytes"),
                                       ("max_sdp_bytes", int, 1024, 1 << 20, "bytes")):
        merged[key] = _number(merged, key, kind, low, high, unit)
    if merged["worker"] not in ("auto", "thread", "process"):
        raise InputError(f"bad worker {merged['worker']!r}: accepted are auto, thread, process")
    size = get("size", 480)
    merged["size"] = size if isinstance(size, (int, tuple)) else parse_size(str(size))
    token = check_token(read_secret(s.get("token"), s.get("token_file"), "LIVEDUB_TOKEN", "token"))
    if not is_loopback(merged["host"]) and not token:
        raise InputError(f"refusing to listen on {merged['host']} without a token: give --token-file FILE "
                         "(or --token, or LIVEDUB_TOKEN), or listen on 127.0.0.1")
    ice = s.get("ice_server", s.get("ice_servers", []))
    ice = [ice] if isinstance(ice, str) else list(ice)
    options = dict(s.get("generator_options", {}))  # the file's [generator_options] table
    options.update(dict(s.get("generator_option", [])))  # --generator-option KEY=VALUE
    options.update({k: v for k, v in (("weights", s.get("weights")), ("device", s.get("device"))) if v})
    merged["region"] = _region(merged["size"], options)
    if s.get("simulate"):
        merged["generator"] = _simulated_generator(s, options)
    group = group_layout(s.get("gpus"), s.get("parallel"), merged["generator"], options)
    if group is not None and merged["workers"] > 1:
        raise InputError(f"--workers {merged['workers']} does not go with --gpus/--parallel: one process group "
                         "serves every session")
    output_url, allowed = _output_settings(s)
    return ServerConfig(**merged, token=token, generator_options=tuple(sorted(options.items())), group=group,
                        ice_servers=tuple(parse_ice_server(u) for u in ice),
                        ice_loopback=bool(s.get("ice_loopback", False)), mqtt=_mqtt_config(s),
                        live_sources=parse_live_sources(s.get("live_sources")),
                        output_url=output_url, allow_output_hosts=allowed)


def _region(size, options: dict) -> str | None:
    """The ``region`` generator option, taken out of the generator's own options (livedub cuts the region
    for any generator); checked here so that a bad one stops the server before it starts."""
    from streaming.region import region_finder, region_option

    if "region" not in options:
        return None
    region_finder(size, "", {"region": options["region"]}, (0, 0))  # refused without an output size
    return region_option("", {"region": options.pop("region")})[0]


def _output_settings(s: dict) -> tuple[str | None, tuple[str, ...]]:
    """``--output-url`` (checked now with a sample session id) and ``--allow-output-host`` (repeatable)."""
    from server.output_url import check_host_name, expand_template

    hosts = s.get("allow_output_host", [])
    allowed = tuple(dict.fromkeys(check_host_name(h) for h in ([hosts] if isinstance(hosts, str) else hosts)))
    template = s.get("output_url")
    if template is not None:
        try:
            expand_template(str(template), "0" * 16, allowed)
        except InputError as exc:
            raise InputError(f"--output-url: {exc}") from None
    return template, allowed


def _simulated_generator(s: dict, options: dict) -> str:
    """``--simulate KINDxN``: a shorthand for ``--generator simulated --generator-option simulate=KINDxN``."""
    from model.gpus import parse_gpus

    generator = s.get("generator", "simulated")
    if generator != "simulated":
        raise InputError(f"--simulate goes with the simulated generator, not {generator!r}: drop --generator or "
                         "give --generator simulated")
    try:
        gpu, count = parse_gpus(s["simulate"])
    except ValueError as exc:
        raise InputError(str(exc)) from None
    options["simulate"] = f"{gpu.kind}x{count}"
    return generator


def _mqtt_config(s: dict) -> MqttConfig | None:
    if not s.get("mqtt"):
        return None
    host, port, tls, username, password = parse_mqtt_url(s["mqtt"])
    password = read_secret(password or s.get("mqtt_password"), s.get("mqtt_password_file"),
                           "LIVEDUB_MQTT_PASSWORD", "MQTT password")
    files = {key: s.get(f"mqtt_{key}") for key in ("ca_file", "cert_file", "key_file")}
    for key, path in files.items():
        if path and not os.path.isfile(path):
            raise InputError(f"bad mqtt-{key.replace('_', '-')}: {path} is not a file")
    if (files["cert_file"] is None) != (files["key_file"] is None):
        raise InputError("mqtt-cert-file and mqtt-key-file go together (a client certificate and its key)")
    prefix = str(s.get("mqtt_prefix", "livedub")).strip("/")
    if not prefix or any(c in prefix for c in "#+\0"):
        raise InputError(f"bad mqtt-prefix {prefix!r}: accepted is a topic without wildcards, e.g. studio/livedub")
    interval = _number({"mqtt_stats_interval": s.get("mqtt_stats_interval", 1.0)}, "mqtt_stats_interval",
                       float, 0.1, 3600, "seconds")
    return MqttConfig(host, port, tls or bool(files["ca_file"]), prefix, username or s.get("mqtt_username"),
                      password, **files, stats_interval=interval)


KNOWN_KEYS = {
    "host", "port", "sources", "generator", "generator_option", "generator_options", "weights", "device",
    "worker", "workers", "delay", "lead", "size", "max_sessions", "max_viewers", "idle_timeout", "live_source_idle", "connect_timeout", "token", "token_file", "ice_server", "ice_servers",
    "gpus", "parallel", "ice_loopback", "mqtt", "mqtt_prefix", "mqtt_username", "mqtt_password", "mqtt_password_file",
    "mqtt_ca_file", "mqtt_cert_file", "mqtt_key_file", "mqtt_stats_interval", "max_message_bytes",
    "max_sdp_bytes", "simulate", "live_sources", "output_url", "allow_output_host",
}
