"""MQTT against a real mosquitto: stats and events arrive, a command swaps the reference, and the broker
being down at start, killed and restarted mid-session never disturbs the session."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import aiomqtt
import pytest

import subprocess

from _server_support import Mosquitto, control_url, free_port, make_tls_files, start_server
from client.control import ControlClient


class Subscriber:
    """Everything published under the prefix, collected by a test client (reconnecting like the server)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.messages: list[tuple[float, str, dict | str]] = []
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client("127.0.0.1", self.port, identifier="test-sub") as client:
                    await client.subscribe("livedub/#")
                    self.client = client
                    async for message in client.messages:
                        payload = message.payload.decode()
                        try:
                            payload = json.loads(payload)
                        except json.JSONDecodeError:
                            pass
                        self.messages.append((time.monotonic(), str(message.topic), payload))
            except aiomqtt.MqttError:
                self.client = None
                await asyncio.sleep(0.2)

    def since(self, moment: float, suffix: str) -> list:
        return [p for t, topic, p in self.messages if t >= moment and topic.endswith(suffix)]

    async def wait(self, moment: float, suffix: str, match=lambda p: True, timeout: float = 10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [p for p in self.since(moment, suffix) if match(p)]
            if found:
                return found[0]
            await asyncio.sleep(0.05)
        raise AssertionError(f"nothing on *{suffix} within {timeout} s")

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def _health(server) -> dict:
    async with aiohttp.ClientSession() as http, http.get(server.url + "healthz") as response:
        return await response.json()


@pytest.mark.slow
async def test_stats_commands_and_a_broker_that_comes_and_goes(tmp_path):
    port = free_port()
    broker = Mosquitto(str(tmp_path), port)
    server = await start_server(str(tmp_path / "sources"), mqtt=f"mqtt://127.0.0.1:{port}",
                                mqtt_stats_interval=0.2)
    subscriber = None
    try:
        # The broker is down at start: the server runs, and says so.
        assert (await _health(server))["mqtt"] == "disconnected"
        async with ControlClient(control_url(server)) as control:
            session = (await control.request("create", source="red"))["session"]
            broker.start()
            subscriber = Subscriber(port)
            start = time.monotonic()
            stats = await subscriber.wait(start, f"sessions/{session}/stats")
            assert stats["session"] == session and stats["source"] == "red"
            assert (await _health(server))["mqtt"] == "connected"
            assert await subscriber.wait(0, "status", lambda p: p == "online")

            # A command over MQTT, the same JSON op as on the websocket.
            moment = time.monotonic()
            await _publish(subscriber, {"id": "swap-1", "op": "swap_reference", "session": session,
                                        "source": "blue", "mode": "cut"})
            reply = await subscriber.wait(moment, "reply", lambda p: p.get("id") == "swap-1")
            assert reply["type"] == "reply" and reply["source"] == "blue" and reply["chunk"] >= 0
            await subscriber.wait(moment, f"sessions/{session}/stats", lambda p: p["source"] == "blue")
            await _publish(subscriber, {"id": 2, "op": "nonsense"})
            bad = await subscriber.wait(moment, "reply", lambda p: p.get("id") == 2)
            assert bad["type"] == "error" and bad["code"] == "unknown_op"

            # Kill the broker mid-session: the session goes on, untouched.
            broker.stop()
            killed = time.monotonic()
            before = server.manager.get(session).stats().time
            await asyncio.sleep(1.5)
            assert (await _health(server))["mqtt"] == "disconnected"
            assert (await control.request("stats", session=session))["stats"]["state"] == "running"
            assert server.manager.get(session).stats().time > before + 1.4
            # Restart it on the same port: the server reconnects and publishes again.
            broker.start()
            stats = await subscriber.wait(time.monotonic(), f"sessions/{session}/stats", timeout=15)
            assert stats["state"] == "running"
            mqtt_events = [e for e in _drain(control) if e.get("event") == "mqtt"]
            assert [e["state"] for e in mqtt_events][-2:] == ["disconnected", "connected"]
            assert time.monotonic() - killed < 15
            await control.request("stop", session=session)
            ended = await subscriber.wait(killed, f"sessions/{session}/events", lambda p: p["event"] == "ended")
            assert ended["reason"] == "stopped"
    finally:
        if subscriber is not None:
            await subscriber.close()
        await server.stop()
        broker.stop()


async def _publish(subscriber: Subscriber, message: dict) -> None:
    for _ in range(50):
        if getattr(subscriber, "client", None) is not None:
            await subscriber.client.publish("livedub/command", json.dumps(message), qos=1)
            return
        await asyncio.sleep(0.1)
    raise AssertionError("test MQTT client never connected")


def _drain(control: ControlClient) -> list[dict]:
    events = []
    while not control.events.empty():
        events.append(control.events.get_nowait())
    return events


@pytest.mark.slow
async def test_password_and_tls(tmp_path):
    tls = make_tls_files(str(tmp_path))
    passwords = str(tmp_path / "passwords")
    subprocess.run(["mosquitto_passwd", "-c", "-b", passwords, "dubber", "right-pw"], check=True)
    broker = Mosquitto(str(tmp_path), anonymous=False,
                       extra=f"password_file {passwords}\ncafile {tls['ca.crt']}\ncertfile {tls['server.crt']}\n"
                             f"keyfile {tls['server.key']}\ntls_version tlsv1.2\n").start()
    (tmp_path / "right").write_text("right-pw\n")
    (tmp_path / "wrong").write_text("wrong-pw\n")
    servers = []
    try:
        for name in ("right", "wrong"):
            servers.append(await start_server(str(tmp_path / "sources"), mqtt=f"mqtts://127.0.0.1:{broker.port}",
                                              mqtt_username="dubber", mqtt_password_file=str(tmp_path / name),
                                              mqtt_ca_file=tls["ca.crt"]))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and servers[0].mqtt.state != "connected":
            await asyncio.sleep(0.1)
        assert servers[0].mqtt.state == "connected"
        assert servers[1].mqtt.state == "disconnected" and "135" in (servers[1].mqtt.last_error or "")
    finally:
        for server in servers:
            await server.stop()
        broker.stop()
