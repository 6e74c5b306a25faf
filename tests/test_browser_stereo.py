"""Headless Chromium sends a stereo file from the page in stereo (the answers' ``stereo=1``), and a WHEP
viewer hears each channel as sent, at its level."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import scipy.io.wavfile

from test_browser_server import _poll, browser, server  # noqa: F401 - fixtures: livedub serve + Chromium
from test_speech_out import RATE, content_lag, live_stereo

pytestmark = pytest.mark.slow


async def test_the_page_sends_a_stereo_file_in_stereo(server, browser, tmp_path, monkeypatch):  # noqa: F811
    import aiohttp
    from selenium.webdriver.common.by import By

    from _server_support import loopback_candidates
    from client.recorder import place_audio, to_planar
    from client.webrtc import Viewer

    sent = live_stereo()
    path = str(tmp_path / "stereo.wav")
    scipy.io.wavfile.write(path, RATE, (np.clip(sent.T, -1, 1) * 32767).astype(np.int16))
    browser.get(server + "#source=red&input=file&delay=4.2")
    _poll(browser, lambda r: r["sources"], 10)
    browser.execute_script("document.getElementById('file').hidden = false;")
    browser.find_element(By.ID, "file").send_keys(path)
    browser.find_element(By.ID, "start").click()
    report = _poll(browser, lambda r: r["errors"] or r.get("session"), 10)
    assert not report["errors"], report["errors"]

    loopback_candidates(monkeypatch)
    heard: list[tuple[float, int, np.ndarray]] = []
    async with aiohttp.ClientSession() as http:
        viewer = Viewer(http, lambda kind, frame, arrival: kind == "audio" and heard.append(
            (arrival, frame.pts, to_planar(frame))))
        await viewer.watch(f"{server}whep/{report['session']}", video=False)
        # The file plays out, the page ends the ingest, the session plays out its delay and ends.
        await asyncio.wait_for(viewer.ended.wait(), 30)
        await viewer.close(delete=False)

    channels = [place_audio([(a, pts, samples[c]) for a, pts, samples in heard])[1] for c in (0, 1)]
    # The middle of the file: the page starts playing it while its WHIP connection is still being made.
    compared = sent[:, RATE // 2 : 2 * RATE]
    for c in (0, 1):
        lag, own = content_lag(compared[c], channels[c])
        other = content_lag(compared[1 - c], channels[c])[1]
        gain_db = 20 * np.log10(np.std(channels[c][lag : lag + compared.shape[1]]) / np.std(compared[c]))
        print(f"channel {c}: correlation {own:.2f} with its own, {other:.2f} with the other; level {gain_db:+.2f} dB")
        assert own > 0.7 and abs(other) < 0.3, (c, own, other)  # the browser sent stereo, not a mono mix
        assert abs(gain_db) < 1.0, (c, gain_db)
