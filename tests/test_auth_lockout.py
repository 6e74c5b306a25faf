"""Wrong tokens are limited per client address across connections (server/lockout.py), on a clock the
test moves: the policy alone, then a real server on loopback where wrong ``auth`` messages spread over
several control connections and wrong bearer tokens lock the address out, and the lock-out ends."""

from __future__ import annotations

import aiohttp

from _server_support import control_url, start_server
from server.lockout import AuthLockout

TOKEN = "lockout-token-3c9e"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_failures_within_the_window_lock_an_address_out_for_a_while():
    clock = Clock()
    lockout = AuthLockout(max_failures=3, window=60, lockout=300, clock=clock)
    assert not lockout.failed("10.0.0.1") and not lockout.failed("10.0.0.1")
    clock.now += 61  # those two are outside the window now
    assert not lockout.failed("10.0.0.1") and not lockout.failed("10.0.0.1")
    assert lockout.refusal("10.0.0.1") is None and lockout.refusal("10.0.0.2") is None
    assert lockout.failed("10.0.0.1")  # the third within 60 s
    message = lockout.refusal("10.0.0.1")
    assert message == "too many wrong tokens from 10.0.0.1 (3 within 60 s): refused for another 300 s"
    assert lockout.retry_after("10.0.0.1") == 300 and lockout.refusal("10.0.0.2") is None
    clock.now += 299.5
    assert lockout.refusal("10.0.0.1").endswith("another 1 s")
    clock.now += 0.5
    assert lockout.refusal("10.0.0.1") is None and lockout.retry_after("10.0.0.1") == 0
    assert not lockout.failed("10.0.0.1")  # counting starts again from nothing


def test_what_it_holds_is_bounded_by_addresses_not_by_failures():
    clock = Clock()
    lockout = AuthLockout(max_failures=1_000, window=60, clock=clock, max_addresses=50)
    for k in range(5_000):
        lockout.failed(f"10.0.{k // 250}.{k % 250}")
        clock.now += 0.001
    assert lockout.tracked() == 50
    for _ in range(5_000):
        lockout.failed("10.1.0.1")
        clock.now += 1  # one a second: at most a window's worth is kept
    assert len(lockout._failures["10.1.0.1"]) <= 61


async def test_wrong_tokens_over_several_connections_lock_the_address_out(tmp_path):
    server = await start_server(str(tmp_path / "sources"), token=TOKEN)
    clock = Clock()
    server.lockout = AuthLockout(max_failures=5, window=60, lockout=120, clock=clock)
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(2):  # 2 wrong auths per connection: under the connection's own limit of 3
                async with http.ws_connect(control_url(server)) as ws:
                    for attempt in range(2):
                        await ws.send_json({"op": "auth", "token": "wrong"})
                        assert (await ws.receive_json(timeout=10))["code"] == "unauthorized"
            async with http.get(server.url + "sources", headers={"Authorization": "Bearer wrong"}) as r:
                assert r.status == 401  # the fifth wrong token: a bearer token over HTTP
            # Locked out: the right token is refused too, over HTTP and on the control upgrade.
            for path, headers in (("sources", AUTH), ("control", {})):
                async with http.get(server.url + path, headers=headers) as r:
                    payload = await r.json()
                    assert r.status == 429 and payload["error"] == "too_many_failures", payload
                    assert payload["message"] == ("too many wrong tokens from 127.0.0.1 (5 within 60 s): refused "
                                                  "for another 120 s") and r.headers["Retry-After"] == "120"
            async with http.get(server.url + "healthz") as r:
                assert r.status == 200  # what needs no token still answers
            clock.now += 120
            async with http.get(server.url + "sources", headers=AUTH) as r:
                assert r.status == 200
            for wrong in (2, 2, 1):  # 5 wrong auths again, the last one locks: its reply says so, and closes
                async with http.ws_connect(control_url(server)) as ws:
                    for _ in range(wrong):
                        await ws.send_json({"op": "auth", "token": "wrong"})
                        reply = await ws.receive_json(timeout=10)
                    assert reply["code"] == "unauthorized"
                    if wrong == 1:
                        assert reply["message"].startswith("too many wrong tokens from 127.0.0.1"), reply
                        closing = await ws.receive(timeout=10)
                        assert closing.type == aiohttp.WSMsgType.CLOSE and ws.close_code == 1008
    finally:
        await server.stop()
