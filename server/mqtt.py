"""MQTT for broadcast tools: per-session stats and events out, control commands in (aiomqtt).

Topics under the prefix P:
  P/status                     "online" (retained; the broker publishes "offline" when we vanish)
  P/sessions/ID/stats          the ``stats`` reply of session ID, every stats interval
  P/sessions/ID/events         every event of session ID (chunk, degraded, error, created, ended)
  P/command                    (subscribed) the control ops as JSON, exactly as on the websocket
  P/reply                      the reply to each command, with the command's ``id``
The bridge never blocks a session: events wait in a bounded outbox (oldest dropped), stats are only sent
while connected, and a broker that is down or goes away is retried with backoff and reported.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import secrets
import ssl

import aiomqtt

from server.config import MqttConfig

log = logging.getLogger("livedub.mqtt")
BACKOFF = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
OUTBOX = 1000


class MqttBridge:
    def __init__(self, config: MqttConfig, manager, make_channel) -> None:
        self.config = config
        self.manager = manager
        self._make_channel = make_channel
        self._channel = None  # made at start, when the server's URL is known
        self._outbox: collections.deque[tuple[str, bytes]] = collections.deque(maxlen=OUTBOX)
        self._wake = asyncio.Event()
        self.state = "disconnected"
        self.connects = 0
        self.last_error: str | None = None
        self.dropped = 0
        self._task: asyncio.Task | None = None

    def topic(self, suffix: str) -> str:
        return f"{self.config.prefix}/{suffix}"

    # ---- outgoing ---------------------------------------------------------------------------------------
    def on_event(self, event: dict) -> None:
        """A manager listener: queue the event for its session's topic (never blocks)."""
        suffix = f"sessions/{event['session']}/events" if event.get("session") else "events"
        if len(self._outbox) == self._outbox.maxlen:
            self.dropped += 1
        self._outbox.append((self.topic(suffix), json.dumps(event).encode()))
        self._wake.set()

    def _tls_context(self) -> ssl.SSLContext | None:
        if not self.config.tls:
            return None
        context = ssl.create_default_context(cafile=self.config.ca_file)
        if self.config.cert_file:
            context.load_cert_chain(self.config.cert_file, self.config.key_file)
        return context

    # ---- the connection loop ----------------------------------------------------------------------------
    def start(self) -> None:
        self._channel = self._make_channel()
        self._task = asyncio.create_task(self._run(), name="mqtt")

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                async with aiomqtt.Client(
                        self.config.host, self.config.port, username=self.config.username,
                        password=self.config.password, tls_context=self._tls_context(),
                        identifier=f"livedub-{secrets.token_hex(4)}", keepalive=10, timeout=5,
                        will=aiomqtt.Will(self.topic("status"), b"offline", qos=1, retain=True)) as client:
                    failures = 0
                    self._set_state("connected", None)
                    await client.publish(self.topic("status"), b"online", qos=1, retain=True)
                    await client.subscribe(self.topic("command"), qos=1)
                    await self._serve(client)
            except (aiomqtt.MqttError, OSError, ssl.SSLError) as exc:
                self._set_state("disconnected", f"{type(exc).__name__}: {exc}"[:200])
            wait = BACKOFF[min(failures, len(BACKOFF) - 1)]
            failures += 1
            await asyncio.sleep(wait)

    def _set_state(self, state: str, error: str | None) -> None:
        changed = state != self.state or (error and error != self.last_error)
        self.state, self.last_error = state, error or self.last_error
        if state == "connected":
            self.connects += 1
        if changed:
            (log.info if state == "connected" else log.warning)(
                "MQTT %s %s%s", state, self.config.describe(), f": {error}" if error else "")
            self.manager.emit({"type": "event", "event": "mqtt", "state": state,
                               **({"error": error} if error else {})})

    async def _serve(self, client: aiomqtt.Client) -> None:
        tasks = [asyncio.create_task(coroutine) for coroutine in
                 (self._read(client), self._write(client), self._publish_stats(client))]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            task.result()

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload if isinstance(message.payload, (bytes, str)) else b""
            reply = await self._channel.handle(payload)
            await client.publish(self.topic("reply"), json.dumps(reply).encode(), qos=1)

    async def _write(self, client: aiomqtt.Client) -> None:
        while True:
            while self._outbox:
                topic, payload = self._outbox[0]
                await client.publish(topic, payload, qos=1)
                self._outbox.popleft()
            self._wake.clear()
            await self._wake.wait()

    async def _publish_stats(self, client: aiomqtt.Client) -> None:
        while True:
            for session_id, session in list(self.manager.sessions.items()):
                await client.publish(self.topic(f"sessions/{session_id}/stats"),
                                     json.dumps(session.stats().to_wire()).encode(), qos=0)
            await asyncio.sleep(self.config.stats_interval)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
