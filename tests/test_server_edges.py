"""The server's edges, case by case (test_server_fuzz.py generates many more): each malformed offer named
in a 400 before any session, one JSON error envelope for every HTTP error, control messages that used to
end in ``internal``, the auth rate limit, rejected requests that cost nothing, and logs without secrets."""

from __future__ import annotations

import asyncio
import json
import logging
import multiprocessing

import aiohttp
import pytest
from aiortc import RTCPeerConnection

from _server_support import control_url, generator_state, start_server
from server.config import build_config
from server.offers import OfferError, check_offer
from streaming.errors import InputError

TOKEN = "edge-token-51d0"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SDP = {**AUTH, "Content-Type": "application/sdp"}


async def whip_offer() -> str:
    pc = RTCPeerConnection()
    pc.addTransceiver("audio", direction="sendonly")
    pc.addTransceiver("video", direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    await pc.close()
    return pc.localDescription.sdp


def without(sdp: str, prefix: str) -> str:
    return "".join(line for line in sdp.splitlines(keepends=True) if not line.startswith(prefix))


def replaced(sdp: str, prefix: str, new: str) -> str:
    return "".join(new + "\r\n" if line.startswith(prefix) else line for line in sdp.splitlines(keepends=True))


def first_section_twice(sdp: str) -> str:
    head, _, rest = sdp.partition("m=audio")
    audio, _, video = rest.partition("m=video")
    return head + "m=audio" + audio + "m=audio" + audio + "m=video" + video


# Each malformed offer of issue 9 and a word its refusal must name.
MALFORMED = {
    "no ICE credentials": (lambda s: without(without(s, "a=ice-ufrag"), "a=ice-pwd"), "a=ice-ufrag"),
    "no common codec": (lambda s: s.replace("opus/48000/2", "iLBC/8000").replace("G722/", "speex/")
                        .replace("PCMU/", "AMR/").replace("PCMA/", "EVS/"), "codec"),
    "no rtcp-mux": (lambda s: without(s, "a=rtcp-mux"), "a=rtcp-mux"),
    "no setup": (lambda s: without(s, "a=setup"), "a=setup"),
    "a duplicated m-section": (first_section_twice, "second audio"),
    "no mid": (lambda s: without(s, "a=mid"), "a=mid"),
    "a duplicated mid": (lambda s: s.replace("a=mid:1", "a=mid:0"), "a=mid"),
    "no fingerprint": (lambda s: without(s, "a=fingerprint"), "fingerprint"),
    "a bad fingerprint": (lambda s: replaced(without(s, "a=fingerprint:sha-384"), "a=fingerprint:sha-256",
                                             "a=fingerprint:sha-256 ZZ:11"), "fingerprint"),
    "no candidates": (lambda s: without(s, "a=candidate"), "no ICE candidates"),
    "candidate port 99999": (lambda s: s.replace(s.split("a=candidate:")[1].split()[5] + " typ", "99999 typ"),
                             "port"),
    "not SDP": (lambda s: "hello", "no audio or video"),
    "garbage m-line": (lambda s: s.replace("m=audio ", "m=audio x"), "not SDP"),
}


@pytest.fixture
def loopback(monkeypatch):
    import aioice.ice

    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


async def test_each_malformed_offer_gets_a_named_400_before_any_session(tmp_path, loopback):
    offer = await whip_offer()
    check_offer(offer, "whip")  # the unmutated offer passes
    server = await start_server(str(tmp_path / "sources"), token=TOKEN)
    generators = generator_state(server.manager)
    try:
        async with aiohttp.ClientSession() as http:
            for name, (mutate, named) in MALFORMED.items():
                bad = mutate(offer)
                with pytest.raises(OfferError, match=named):
                    check_offer(bad, "whip")
                async with http.post(server.url + "whip?source=red", data=bad, headers=SDP) as r:
                    body = await r.json()
                assert r.status == 400 and body["error"] == "bad_offer" and named in body["message"], (name, body)
                assert server.manager.sessions == {} and generator_state(server.manager) == generators, name
    finally:
        await server.stop()


async def test_every_http_error_is_the_json_envelope(tmp_path):
    server = await start_server(str(tmp_path / "sources"), token=TOKEN)
    base = server.url.rstrip("/")
    cases = [("GET", "/nowhere", AUTH, None, 404, "not_found"),
             ("GET", "/whip", AUTH, None, 405, "method_not_allowed"),
             ("PATCH", "/whip/abc", AUTH, None, 405, "method_not_allowed"),
             ("POST", "/whip?source=red", {**AUTH, "Content-Type": "text/plain"}, "v=0", 415,
              "unsupported_media_type"),
             ("POST", "/whip?source=red", SDP, "v" * 70_000, 413, "too_large"),
             ("POST", "/sources", AUTH, None, 405, "method_not_allowed"),
             ("GET", "/sources", {}, None, 401, "unauthorized"),
             ("GET", "/static/nothing.js", {}, None, 404, "not_found"),
             ("GET", "/control", {}, None, 400, "bad_request")]  # no websocket upgrade
    try:
        async with aiohttp.ClientSession() as http:
            for method, path, headers, body, status, code in cases:
                async with http.request(method, base + path, headers=headers, data=body) as r:
                    assert r.content_type == "application/json", (path, await r.text())
                    payload = await r.json()
                assert (r.status, payload["error"]) == (status, code), (method, path, payload)
                assert set(payload) == {"error", "message"} and payload["message"]
    finally:
        await server.stop()


async def test_control_edges_get_clear_codes_and_wrong_tokens_close_the_socket(tmp_path):
    server = await start_server(str(tmp_path / "sources"), token=TOKEN)
    cases = [("[" * 1000 + "]" * 1000, "too_deep"),
             ('{"op": "ping", "x": ' * 40 + "1" + "}" * 40, "too_deep"),
             ("1" * 5000, "bad_json"),
             ('{"op": "ping", "id": ' + "9" * 5000 + "}", "bad_json"),
             ('{"op": "ping", "id": 12345678901234567890}', "bad_request"),
             ('{"op": "ping", "id": true}', "bad_request"),
             (json.dumps({"op": "ping", "pad": "é" * 40_000}, ensure_ascii=False), "too_large"),  # 80 kB
             (json.dumps({"op": "create", "source": "red", "generator": "g" * 5000}), "bad_request"),
             (json.dumps({"op": "create", "source": "red", "delay": 10 ** 4000}), "bad_request")]
    try:
        async with aiohttp.ClientSession() as http:
            async with http.ws_connect(control_url(server), headers=AUTH) as ws:
                for raw, code in cases:
                    await ws.send_str(raw)
                    reply = await ws.receive_json(timeout=10)
                    assert reply["code"] == code, (raw[:60], reply)
                    assert len(reply["message"]) <= 300 and "ggggggggggggggggggggggggggggggggggggggggggg" not in \
                        reply["message"]
                await ws.send_str('{"op": "ping", "id": 7}')
                assert (await ws.receive_json(timeout=10))["type"] == "reply"
            async with http.ws_connect(control_url(server)) as ws:
                for attempt in range(1, 4):
                    await ws.send_json({"op": "auth", "token": f"wrong{attempt}"})
                    reply = await ws.receive_json(timeout=10)
                    assert reply["code"] == "unauthorized"
                assert "closing" in reply["message"]
                closing = await ws.receive(timeout=10)
                assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED) and ws.close_code == 1008
    finally:
        await server.stop()


async def test_rejected_requests_take_no_worker_and_start_no_process(tmp_path, loopback):
    server = await start_server(str(tmp_path / "sources"), token=TOKEN)
    offer = await whip_offer()
    manager = server.manager
    generators = generator_state(manager)  # the default generator's hosts are ready: a session would take a place
    try:
        async with aiohttp.ClientSession() as http:
            for query, status, code in (("delay=0.1", 400, "bad_request"), ("delay=nan", 400, "bad_request"),
                                        ("delay=1e400", 400, "bad_request"), ("delay=x", 400, "bad_request"),
                                        ("generator=infinitetalk", 503, "generator_unavailable"),
                                        ("generator=nope", 400, "bad_request")):
                async with http.post(server.url + f"whip?source=red&{query}", data=offer, headers=SDP) as r:
                    body = await r.json()
                assert (r.status, body["error"]) == (status, code), (query, body)
                assert generator_state(manager) == generators and manager.sessions == {}, query
                assert not multiprocessing.active_children() and "infinitetalk" not in manager._pools
            async with http.ws_connect(control_url(server), headers=AUTH) as ws:
                await ws.send_json({"op": "create", "source": "red", "delay": 0.2})
                assert (await ws.receive_json(timeout=10))["code"] == "bad_request"
                await ws.send_json({"op": "create", "source": "red", "generator": "infinitetalk"})
                reply = await ws.receive_json(timeout=10)
                assert reply["code"] == "generator_unavailable" and "--weights" in reply["message"]
        assert generator_state(manager) == generators and not multiprocessing.active_children()
    finally:
        await server.stop()


async def test_no_log_line_carries_a_header_value_or_a_token(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    server = await start_server(str(tmp_path / "sources"), token=TOKEN)
    host, port = server.url.split("//")[1].rstrip("/").rsplit(":", 1)
    try:
        for header in (f"Authorization: Bearer {TOKEN}\r", f"Authorization: Bearer {TOKEN}\x01",
                       f"X-Note: {TOKEN}\x7f"):
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(f"GET /sources HTTP/1.1\r\nHost: x\r\n{header}\r\nConnection: close\r\n\r\n".encode())
            response = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            assert response.split()[1] == b"400" and TOKEN.encode() not in response  # the parser refused it
            assert json.loads(response.partition(b"\r\n\r\n")[2])["error"] == "malformed_request"
        async with aiohttp.ClientSession() as http:
            async with http.get(server.url + f"sources?token={TOKEN}", headers=AUTH) as r:
                assert r.status == 200
    finally:
        await server.stop()
    lines = [r.getMessage() for r in caplog.records if not r.name.startswith("websockets.client")]
    assert not [line for line in lines if TOKEN in line]
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert sum("refused a malformed HTTP request" in line for line in lines) == 3
    assert any('"GET /sources" 200' in line for line in lines)  # the access line, without its query


# Requests aiohttp's HTTP parser refuses, and the reason its envelope must name.
UNPARSEABLE = [(b"GET /sources HTTP/1.1\r\nHost: x\r\nX-Note: v\x01\r\n\r\n", "(Invalid header value char): "
                "accepted is HTTP/1.x with header values of printable characters"),
               (b"GE\x01T / HTTP/1.1\r\n\r\n", "(Invalid method encountered): accepted are GET, POST"),
               (b"GET / HTTP/9.9\r\n\r\n", "(Bad status line)"),
               (b"\x16\x03\x01\x00\xa5\x01\x00\x00\r\n\r\n", "(Received HTTPS traffic on an HTTP port): this "
                "port speaks plain HTTP"),
               (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", "(Got more than 8190 bytes when reading): accepted are "
                "request lines and headers of at most 8190 bytes"),
               (b"GET / HTTP/1.1\r\nBad Name: v\r\n\r\n", "(Invalid header token)"),
               (b"POST /whip HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n", "(Invalid character in Content-Length)")]


async def test_requests_the_http_parser_refuses_get_the_envelope(tmp_path):
    """aiohttp answers these before the application (server/envelope.py): the JSON envelope, with the
    parser's reason and what is accepted, never the bytes sent."""
    server = await start_server(str(tmp_path / "sources"), token=TOKEN)
    host, port = server.url.split("//")[1].rstrip("/").rsplit(":", 1)
    try:
        for request, reason in UNPARSEABLE:
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(request)
            response = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            head, _, body = response.partition(b"\r\n\r\n")
            assert head.split()[1] == b"400" and b"Content-Type: application/json" in head, response[:300]
            payload = json.loads(body)
            assert payload["error"] == "malformed_request" and reason in payload["message"], (request[:40], payload)
            assert payload["message"].startswith("malformed HTTP request (") and "\n" not in payload["message"]
            assert b"aaaaaaaa" not in body and b"v\\x01" not in body and b"1x" not in body
    finally:
        await server.stop()


def test_a_parser_reason_never_carries_the_bytes_it_quotes():
    from aiohttp.http_exceptions import BadHttpMessage, LineTooLong

    from server.envelope import malformed_message, parser_reason

    assert parser_reason(BadHttpMessage("Invalid header value char:\n\n  b'Bearer s3cret\\x01'\n  ^")) == \
        "Invalid header value char"
    assert parser_reason(BadHttpMessage("Duplicate 'Host' header found.")) == "Duplicate 'Host' header found"
    for odd in ("x" * 200, "caf\u00e9 value", "tab\there", ""):  # too long, not ASCII, not printable, empty
        assert parser_reason(BadHttpMessage(odd)) == "BadHttpMessage"
    assert malformed_message(LineTooLong("", 8190)).endswith("at most 8190 bytes")


async def test_another_aiohttp_major_version_keeps_its_plain_text_answers(tmp_path, monkeypatch):
    """The handler subclass relies on aiohttp 3.x internals: elsewhere the runner is aiohttp's own."""
    import server.envelope

    monkeypatch.setattr(server.envelope, "SUPPORTED", False)
    server = await start_server(str(tmp_path / "sources"))
    host, port = server.url.split("//")[1].rstrip("/").rsplit(":", 1)
    try:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GE\x01T / HTTP/1.1\r\n\r\n")
        response = await asyncio.wait_for(reader.read(), 10)
        writer.close()
        assert response.split()[1] == b"400" and b"Content-Type: text/plain" in response
        async with aiohttp.ClientSession() as http:  # the application's own errors: the envelope still
            async with http.get(server.url + "nope") as r:
                assert r.status == 404 and (await r.json())["error"] == "not_found"
    finally:
        await server.stop()


def test_token_files_with_crlf_are_stripped_and_bad_tokens_refused(tmp_path, caplog):
    path = tmp_path / "token"
    path.write_bytes(TOKEN.encode() + b"\r\n")
    with caplog.at_level(logging.WARNING, "livedub.config"):
        assert build_config({"token_file": str(path)}).token == TOKEN
    assert "CRLF" in caplog.text and TOKEN not in caplog.text
    for bad in ("two words", "tab\tinside", "bell\x07"):
        with pytest.raises(InputError, match="bad token"):
            build_config({"token": bad})


async def _until(condition, limit: float = 20.0) -> bool:
    """Polls ``condition`` (a guard against hanging, not a timing assertion)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not condition() and loop.time() < deadline:
        await asyncio.sleep(0.1)
    return condition()


async def test_a_peer_that_never_connects_gives_its_session_back(tmp_path, loopback):
    server = await start_server(str(tmp_path / "sources"), token=TOKEN, connect_timeout=1.0)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(server.url + "whip?source=red", data=await whip_offer(), headers=SDP) as r:
                assert r.status == 201  # a valid offer from a peer that is gone before it could connect
            session_id = r.headers["X-Livedub-Session"]
            viewer = RTCPeerConnection()
            viewer.addTransceiver("video", direction="recvonly")
            await viewer.setLocalDescription(await viewer.createOffer())
            await viewer.close()
            async with http.post(server.url + f"whep/{session_id}", data=viewer.localDescription.sdp,
                                 headers=SDP) as r:
                assert r.status == 201
            session = server.manager.get(session_id)
            assert len(session.viewers) == 1
            assert await _until(lambda: not session.viewers)  # the viewer is dropped
            assert await _until(lambda: not server.manager.sessions)  # the ingest too: the session ends
            assert session.end_reason == "ingest_ended"
    finally:
        await server.stop()
