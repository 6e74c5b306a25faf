"""The control websocket and the HTTP endpoints with bad input, limits and tokens: every bad message gets
an error reply with a code, and the connection and the other sessions carry on."""

from __future__ import annotations

import asyncio
import json
import logging
import os

import aiohttp
import pytest

from _server_support import control_url, start_server
from stats_wire import check_documented
from client.control import ControlClient, ControlError
from server.config import build_config, load_file
from server.sources import SourceLibrary
from streaming.errors import InputError

GARBAGE_SDP = "v=0\r\nthis is not sdp\r\n"
AUDIO_ONLY_OFFER_NEEDED = "m=audio"


async def _expect_error(control: ControlClient, code: str, op: str, **fields) -> dict:
    with pytest.raises(ControlError) as caught:
        await control.request(op, **fields)
    assert caught.value.code == code, caught.value.reply
    assert caught.value.reply["message"]
    return caught.value.reply


async def test_bad_control_messages_get_error_replies_and_nothing_else_breaks(tmp_path):
    server = await start_server(str(tmp_path / "sources"))
    try:
        async with ControlClient(control_url(server)) as control, ControlClient(control_url(server)) as other:
            created = await control.request("create", source="red")
            session = created["session"]
            assert created["whip"].endswith(f"/whip/{session}") and created["whep"].endswith(f"/whep/{session}")
            # Raw garbage, answered with id None.
            for raw, code in (("{not json", "bad_json"), ("[1, 2]", "bad_message"), ('{"op": 5}', "unknown_op"),
                              ('{"id": 1}', "unknown_op"), ('{"op": "launch", "id": "x"}', "unknown_op"),
                              ('{"op": "ping", "id": {"a": 1}}', "bad_request"),
                              (json.dumps({"op": "ping", "pad": "x" * 100_000}), "too_large")):
                await control.send_raw(raw)
            replies = [await asyncio.wait_for(control.unmatched.get(), 5) for _ in range(7)]
            assert [r["code"] for r in replies] == ["bad_json", "bad_message", "unknown_op", "unknown_op",
                                                    "unknown_op", "bad_request", "too_large"]
            assert replies[4]["id"] == "x"
            await _expect_error(control, "bad_request", "create")
            await _expect_error(control, "bad_request", "create", source=7)
            await _expect_error(control, "unknown_source", "create", source="green")
            for path in ("../red", "/etc/passwd", "a/b", "..", "red.png/..", "x" * 70):
                await _expect_error(control, "bad_name", "create", source=path)
            await _expect_error(control, "bad_request", "create", source="red", delay=1.0)
            await _expect_error(control, "bad_request", "create", source="red", generator="nope")
            await _expect_error(control, "unknown_session", "stats", session="deadbeef")
            await _expect_error(control, "unknown_session", "stop", session="../../x")
            await _expect_error(control, "bad_request", "swap_reference", session=session, source="blue", mode="wipe")
            await _expect_error(control, "bad_name", "swap_reference", session=session, source="../blue")
            # The connection, the session and the other connection all carry on.
            assert (await control.request("ping"))["op"] == "ping"
            stats = (await control.request("stats", session=session))["stats"]
            assert stats["state"] == "running" and stats["source"] == "red"
            check_documented(stats)  # what the control channel sends is the documented stats
            async with aiohttp.ClientSession() as http, http.get(server.url + "metrics") as response:
                metrics = await response.text()
            assert f'livedub_delay_target_seconds{{session="{session}"}} 4.2' in metrics
            assert f'livedub_chunks_total{{session="{session}",status="late"}} 0.0' in metrics
            assert (await other.request("sources"))["sources"] == ["blue", "red"]
            listed = (await other.request("sessions"))["sessions"]
            assert [s["session"] for s in listed] == [session]
            swap = await control.request("swap_reference", session=session, source="blue", mode="blend")
            assert swap["chunk"] == 0 and swap["mode"] == "blend"
            await control.request("stop", session=session)
            assert (await control.next_event("ended"))["reason"] == "stopped"
            assert (await other.request("sessions"))["sessions"] == []
    finally:
        await server.stop()


async def test_session_limit(tmp_path):
    server = await start_server(str(tmp_path / "sources"), max_sessions=1)
    try:
        async with ControlClient(control_url(server)) as control:
            await control.request("create", source="red")
            reply = await _expect_error(control, "limit_reached", "create", source="blue")
            assert "limit" in reply["message"]
    finally:
        await server.stop()


async def test_http_endpoints_and_bad_offers(tmp_path):
    server = await start_server(str(tmp_path / "sources"))
    base = server.url.rstrip("/")
    sdp = {"Content-Type": "application/sdp"}
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(base + "/healthz") as r:
                assert r.status == 200 and (await r.json())["status"] == "ok"
            async with http.get(base + "/sources") as r:
                assert (await r.json())["sources"] == ["blue", "red"]
            async with http.get(base + "/") as r:
                assert r.status == 200 and "livedub" in await r.text()
            async with http.get(base + "/static/app.js") as r:
                assert r.status == 200
            async with http.get(base + "/static/../../server/config.py") as r:
                assert r.status in (403, 404)
            async with http.post(base + "/whip?source=red", data="v=0", headers={"Content-Type": "text/plain"}) as r:
                assert r.status == 415
            async with http.post(base + "/whip?source=red", data="v" * 70_000, headers=sdp) as r:
                assert r.status == 413
            async with http.post(base + "/whip?source=red", data=GARBAGE_SDP, headers=sdp) as r:
                assert r.status == 400 and "SDP" in (await r.json())["message"]
            async with http.post(base + "/whip?source=../x", data=GARBAGE_SDP, headers=sdp) as r:
                assert r.status == 400
            async with http.post(base + "/whep/nosuchsession", data=GARBAGE_SDP, headers=sdp) as r:
                assert r.status in (400, 404)
            async with http.patch(base + "/whip/abc") as r:
                assert r.status == 405
            async with http.delete(base + "/whip/nosuchsession") as r:
                assert r.status == 404 and (await r.json())["error"] == "unknown_session"
            async with http.get(base + "/metrics") as r:
                text = await r.text()
                assert r.status == 200 and "livedub_sessions 0.0" in text
        assert server.manager.sessions == {}
    finally:
        await server.stop()


async def test_token_is_required_compared_and_never_logged(tmp_path, caplog):
    secret = "s3cret-token-value"
    caplog.set_level(logging.DEBUG)
    server = await start_server(str(tmp_path / "sources"), token=secret)
    base = server.url.rstrip("/")
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(base + "/healthz") as r:
                assert r.status == 200
            async with http.get(base + "/sources") as r:
                assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
            async with http.get(base + "/sources", headers={"Authorization": "Bearer wrong"}) as r:
                assert r.status == 401
            async with http.get(base + "/metrics", headers={"Authorization": f"Bearer {secret}"}) as r:
                assert r.status == 200
            async with http.post(base + "/whip?source=red", data=GARBAGE_SDP,
                                 headers={"Content-Type": "application/sdp"}) as r:
                assert r.status == 401
        async with ControlClient(control_url(server)) as control:
            await _expect_error(control, "unauthorized", "create", source="red")
            await _expect_error(control, "unauthorized", "auth", token="wrong")
            await control.request("auth", token=secret)
            assert (await control.request("create", source="red"))["session"]
        async with ControlClient(control_url(server), token=secret) as control:
            assert (await control.request("sources"))["sources"]
    finally:
        await server.stop()
    # Everything the server side logged (the test's own websockets client logs its frames at DEBUG).
    server_logs = [r.getMessage() for r in caplog.records if not r.name.startswith("websockets.client")]
    assert server_logs and not any(secret in line for line in server_logs)


def test_config_file_command_line_and_host_rules(tmp_path):
    folder = tmp_path / "sources"
    folder.mkdir()
    path = tmp_path / "livedub.toml"
    path.write_text(f'host = "127.0.0.1"\nport = 9000\nsources = "{folder}"\ndelay = 5.0\n'
                    'ice-servers = ["stun:stun.example.org:3478", "turn:me:pw@turn.example.org:3478"]\n'
                    '[mqtt]\nurl = "mqtt://127.0.0.1:1884"\nprefix = "studio/dub"\n')
    path.write_text(path.read_text().replace("[mqtt]", '[generator_options]\nsteps = 8\nfp8 = true\n\n[mqtt]'))
    settings = load_file(str(path))
    settings["delay"] = 6.0  # the command line wins
    settings["generator_option"] = [("steps", "4")]
    config = build_config(settings)
    assert dict(config.generator_options) == {"steps": "4", "fp8": True}
    assert (config.port, config.delay, config.mqtt.port, config.mqtt.prefix) == (9000, 6.0, 1884, "studio/dub")
    assert config.ice_servers[1].username == "me" and config.ice_servers[1].url == "turn:turn.example.org:3478"
    with pytest.raises(InputError, match="refusing to listen on 0.0.0.0 without a token"):
        build_config({"host": "0.0.0.0", "sources": str(folder)})
    assert build_config({"host": "0.0.0.0", "token": "t"}).token == "t"
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    assert build_config({"host": "::", "token_file": str(token_file)}).token == "from-file"
    assert "from-file" not in repr(build_config({"token_file": str(token_file)}))
    for bad, match in (({"port": "x"}, "bad port"), ({"delay": float("nan")}, "bad delay"),
                       ({"mqtt": "http://x"}, "bad MQTT URL"), ({"ice_server": "http://x"}, "bad ICE server"),
                       ({"max_sessions": 0}, "bad max-sessions"), ({"colour": 1}, "unknown setting")):
        with pytest.raises(InputError, match=match):
            build_config(bad)


def test_source_names_never_escape_the_folder(tmp_path):
    folder = tmp_path / "sources"
    folder.mkdir()
    (folder / "anchor.png").write_bytes(b"x")
    (folder / "notes.txt").write_text("x")
    outside = tmp_path / "secret.png"
    outside.write_bytes(b"x")
    os.symlink(outside, folder / "escape.png")
    library = SourceLibrary(str(folder))
    assert list(library.names()) == ["anchor"]
    assert library.path("anchor") == str(folder / "anchor.png")
    for name in ("escape", "notes", "../secret", str(outside), "", None, 5):
        with pytest.raises(InputError):
            library.path(name)
