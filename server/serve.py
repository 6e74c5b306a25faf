"""``livedub serve``: options, the config file, and running the server until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from server.config import build_config, load_file

DEMO_FOLDER = "demo"


def add_serve(commands) -> None:
    parser = commands.add_parser(
        "serve", help="run the live dubbing server (WebRTC in and out, control websocket, MQTT)",
        description="Run the live server: WHIP ingest, WHEP egress, the browser page, /control, /healthz, "
                    "/metrics, MQTT. Every option can also be set in a TOML file (--config), same names.")
    add = parser.add_argument
    add("--config", metavar="FILE", help="TOML file with any of these options (the command line wins)")
    add("--host", help="address to listen on (default 127.0.0.1; any other needs a token)")
    add("--port", type=int, help="HTTP port (default 8080; 0 picks a free one)")
    add("--sources", metavar="DIR", help="folder of source videos/images, addressed by file stem")
    add("--demo", action="store_true", help=f"prepare the demo source and speech in ./{DEMO_FOLDER} and serve "
                                            "them (when --sources is not given)")
    from server.cli import add_generator_options

    add_generator_options(parser, default=None)
    add("--simulate", metavar="KINDxN", help="simulate N GPUs of KIND (e.g. h100x8) with the simulated generator: "
                                            "chunks cost what `livedub plan` predicts (implies --generator simulated)")
    add("--worker", choices=("auto", "thread", "process"), help="where generators run (default auto: a "
                                                               "process, except the trivial passthrough)")
    add("--workers", type=int, metavar="N", help="instances of a shared GPU generator (default 1), or host "
        "processes of a per-session one such as lite (default: one per CPU core left to generators)")
    add("--delay", type=float, metavar="SECONDS", help="latency budget, glass to glass (default 5.5)")
    add("--lead", type=float, metavar="SECONDS", help="frames leave this early to cover the output "
                                                      "leg: encode, network, jitter buffer (default 0.12)")
    add("--size", help="output size: 480 (default) or 720 bucket, WxH, or source (the source's own size, up "
                       "to 3840x2160; the generator works on a region around the speaker)")
    add("--max-sessions", type=int, metavar="N", help="concurrent sessions (default 4)")
    add("--max-viewers", type=int, metavar="N", help="WHEP viewers per session (default 8)")
    add("--idle-timeout", type=float, metavar="SECONDS", help="end a session after this long without "
                                                              "ingest audio (default 60)")
    add("--live-source-idle", type=float, metavar="SECONDS", help="stop reading a live source (decoding, for "
        "an SRT listener) this long after its last session ended (default 30; 0: read from start-up on)")
    add("--connect-timeout", type=float, metavar="SECONDS", help="drop a WebRTC peer not connected this long "
                                                                 "after its answer (default 20)")
    add("--token", help="bearer token required on WHIP/WHEP/control/metrics (prefer --token-file)")
    add("--token-file", metavar="FILE", help="read the bearer token from FILE (or set LIVEDUB_TOKEN)")
    add("--ice-server", action="append", metavar="URL", help="STUN/TURN server, repeatable: stun:HOST:PORT, "
                                                             "turn:USER:CREDENTIAL@HOST:PORT (none by default)")
    add("--ice-loopback", action="store_true", default=None,
        help="offer 127.0.0.1 as the ICE candidate (browsers and clients on this machine only)")
    add("--mqtt", metavar="URL", help="MQTT broker: mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
    add("--mqtt-prefix", metavar="TOPIC", help="topic prefix (default livedub)")
    add("--mqtt-username")
    add("--mqtt-password-file", metavar="FILE", help="MQTT password from FILE (or LIVEDUB_MQTT_PASSWORD)")
    add("--mqtt-ca-file", metavar="FILE", help="CA bundle for TLS (implies TLS)")
    add("--mqtt-cert-file", metavar="FILE", help="client certificate for TLS")
    add("--mqtt-key-file", metavar="FILE", help="client key for TLS")
    add("--mqtt-stats-interval", type=float, metavar="SECONDS", help="stats publishing interval (default 1)")
    add("--output-url", metavar="TEMPLATE", help="push every session's dub there too: rtmp://, rtmps:// or "
                                                 "srt:// URL, {session} is the session id (e.g. "
                                                 "rtmp://host/live/{session})")
    add("--allow-output-host", action="append", metavar="HOST", help="outputs (add_output, create's outputs, "
                                                                     "--output-url) may only go to these hosts; "
                                                                     "repeatable (default: any)")
    add("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    parser.set_defaults(run=run_serve)


SKIPPED = {"config", "demo", "log_level", "run", "command"}


def settings_from(args: argparse.Namespace) -> dict:
    """File settings overridden by the options given on the command line."""
    settings = load_file(args.config) if args.config else {}
    for key, value in vars(args).items():
        if key not in SKIPPED and value is not None and value != []:
            settings[key] = value
    return settings


def run_serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aioice").setLevel(logging.WARNING)
    logging.getLogger("aiortc").setLevel(logging.INFO)  # its DEBUG lines carry whole SDPs, ICE passwords too
    settings = settings_from(args)
    demo_speech = None
    if args.demo and not settings.get("sources"):
        from server.demo import prepare_live

        _, demo_speech = prepare_live(DEMO_FOLDER)
        settings["sources"] = DEMO_FOLDER
    config = build_config(settings)
    return asyncio.run(_serve(config, demo_speech))


async def _serve(config, demo_speech: str | None) -> int:
    from server.app import LiveServer
    from server.peers import offer_loopback_candidates
    from streaming.errors import InputError
    from streaming.workers import GeneratorFailed

    if config.ice_loopback:
        offer_loopback_candidates()
    else:
        import aioice.ice

        if not aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True):
            logging.getLogger("livedub.server").warning(
                "no network interface besides loopback: WebRTC peers cannot connect unless you pass "
                "--ice-loopback (browsers on this machine then need --allow-loopback-in-peer-connection)")
    server = LiveServer(config, demo_speech=demo_speech)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        try:
            url = await server.start()
        except GeneratorFailed as exc:
            raise InputError(str(exc)) from None
        sources = ", ".join(server.library.listing()) or "none"  # live programme sources included
        generator = server.generator
        print(f"livedub serve: open {url}  (generator {generator}, delay {config.delay:g} s, sources: {sources})",
              flush=True)
        if demo_speech:
            print(f"livedub serve: with the demo speech instead of a microphone: {url}#input=demo&source=portrait",
                  flush=True)
        await stop.wait()
        print("livedub serve: stopping", file=sys.stderr, flush=True)
    finally:
        await server.stop()
    return 0
