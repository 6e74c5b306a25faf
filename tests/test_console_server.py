"""What the operator's console page reads from the server: source thumbnails, the generator's real minimum
delay, swap events every client sees, and errors that list what is available."""

from __future__ import annotations

import io

import aiohttp
import numpy as np
import pytest
from PIL import Image

from _server_support import control_url, start_server
from client.control import ControlClient, ControlError
from streaming.chunker import ChunkPlan
from streaming.session import SessionSettings, lowest_delay


async def test_thumbnails_are_small_jpegs_of_each_source_and_cached(tmp_path):
    server = await start_server(str(tmp_path / "sources"))
    try:
        async with aiohttp.ClientSession() as http:
            for name, colour in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
                async with http.get(server.url + f"sources/{name}/thumbnail") as response:
                    assert response.status == 200 and response.content_type == "image/jpeg"
                    image = np.asarray(Image.open(io.BytesIO(await response.read())).convert("RGB"))
                assert max(image.shape[:2]) <= 160
                corner = image[:8, :8].reshape(-1, 3).mean(axis=0)  # the still's plain colour, JPEG-rounded
                assert np.abs(corner - colour).max() < 20, (name, corner)
            async with http.get(server.url + "sources/green/thumbnail") as response:
                body = await response.json()
                assert response.status == 404 and body["error"] == "unknown_source"
                assert body["message"] == "unknown source 'green': available are blue, red"
            async with http.get(server.url + "sources/..%2Fred/thumbnail") as response:
                assert response.status in (400, 404)
        # Cached per file version: the same bytes object again, until the file changes.
        first = server.thumbnails.jpeg("red")
        assert server.thumbnails.jpeg("red") is first
        Image.new("RGB", (64, 64), (0, 200, 0)).save(server.library.path("red"))
        assert server.thumbnails.jpeg("red") != first
    finally:
        await server.stop()


async def test_config_gives_the_generators_real_minimum_delay(tmp_path):
    # A default delay well above lite's minimum: the minimum includes the warm cost measured at start-up,
    # which a busy machine raises.
    server = await start_server(str(tmp_path / "sources"), generator="lite", delay=8.0)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(server.url + "config") as response:
                config = await response.json()
        from model.lite import speech

        # The window, lite's lookahead, the margins and the warm chunk cost measured at start-up, to 0.01 s
        # as the field shows it.
        warm = server.manager.warm_cost("lite")
        expected = lowest_delay(ChunkPlan(), speech.MARGINS.right, SessionSettings(), warm)
        delay = config["delay"]
        assert config["generator"] == "lite" and delay["exact"] is True and warm is not None
        assert delay["min"] == expected > 3.9 and delay["max"] == 30 and delay["default"] == 8.0
        assert "create" in config["ops"]
        async with ControlClient(control_url(server)) as control:
            with pytest.raises(ControlError) as caught:  # just below the minimum: refused, naming the range
                await control.request("create", source="red", delay=delay["min"] - 0.01)
            assert caught.value.reply["message"].startswith(f"bad delay {delay['min'] - 0.01!r}: accepted is {delay['min']}")
            created = await control.request("create", source="red", delay=delay["min"])  # the minimum is taken
            assert created["delay"] == delay["min"]
    finally:
        await server.stop()


async def test_errors_list_the_available_sources_and_swaps_are_events(tmp_path):
    server = await start_server(str(tmp_path / "sources"))
    try:
        async with ControlClient(control_url(server)) as control, ControlClient(control_url(server)) as watcher:
            for fields, code, message in (
                    ({"source": "green"}, "unknown_source", "unknown source 'green': available are blue, red"),
                    ({"source": ""}, "bad_name", "no source given: available are blue, red"),
                    ({}, "bad_request", "create: missing field 'source': available are blue, red")):
                with pytest.raises(ControlError) as caught:
                    await control.request("create", **fields)
                assert (caught.value.code, caught.value.reply["message"]) == (code, message)
            with pytest.raises(ControlError) as caught:
                await control.request("create", source="../red")
            assert caught.value.reply["message"].endswith("available are blue, red")
            session = (await control.request("create", source="red"))["session"]
            await watcher.request("subscribe", session=session)
            reply = await control.request("swap_reference", session=session, source="blue", mode="blend")
            event = await watcher.next_event("swap")
            assert event == {"type": "event", "event": "swap", "session": session, "source": "blue",
                             "previous": "red", "mode": "blend", "chunk": reply["chunk"], "at": reply["at"]}
    finally:
        await server.stop()


async def test_thumbnails_and_config_need_the_token(tmp_path):
    server = await start_server(str(tmp_path / "sources"), token="s3cret")
    try:
        async with aiohttp.ClientSession() as http:
            for path in ("sources/red/thumbnail", "config"):
                async with http.get(server.url + path) as response:
                    assert response.status == 401 and (await response.json())["error"] == "unauthorized"
                async with http.get(server.url + path, headers={"Authorization": "Bearer s3cret"}) as response:
                    assert response.status == 200, path
    finally:
        await server.stop()
