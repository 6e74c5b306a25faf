"""Headless Chromium end to end: `livedub serve` in a subprocess, the page sends its fake microphone (a
WAV of real speech) over WHIP and shows the dub from WHEP; the test reads what the page reports."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest

from _server_support import SPEECH_16K, free_port, source_folder

CHROMIUM, DRIVER = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver") or "/usr/bin/chromedriver"
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)),
                                 reason="chromium/chromium-driver not installed (scripts/setup.sh installs them)")]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _only_loopback() -> bool:
    """No interface but lo: then both sides must use 127.0.0.1 (aioice and Chromium skip it by default)."""
    import aioice.ice

    return not aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False)


@pytest.fixture
def server(tmp_path):
    port = free_port()
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    process = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "serve", "--sources", source_folder(str(tmp_path / "sources")),
         "--port", str(port), "--generator", "passthrough", "--delay", "4.2", "--size", "256x256",
         "--log-level", "WARNING"] + (["--ice-loopback"] if _only_loopback() else []),
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url + "healthz", timeout=1) as response:
                    assert json.load(response)["status"] == "ok"
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"livedub serve did not start: {process.stdout.read()}")
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@pytest.fixture
def browser():
    os.environ.setdefault("SE_OFFLINE", "true")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="livedub-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                 f"--use-file-for-fake-audio-capture={SPEECH_16K}", "--autoplay-policy=no-user-gesture-required",
                 f"--user-data-dir={profile}"):
        options.add_argument(flag)
    if _only_loopback():
        options.add_argument("--allow-loopback-in-peer-connection")
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _poll(driver, condition, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        report = driver.execute_script("return window.__livedub")
        if condition(report) or time.monotonic() > deadline:
            return report
        time.sleep(0.25)


def test_the_page_sends_its_microphone_and_shows_the_dub(server, browser):
    browser.get(server + "#source=red&input=mic&delay=4.2&autostart=1")
    started = time.monotonic()
    report = _poll(browser, lambda r: r["errors"] or (r["stats"] and r["stats"]["chunks"]["generated"] >= 1
                                                      and r["framesShown"] >= 150), 25)
    assert not report["errors"], report["errors"]
    print("page report:", {k: report[k] for k in ("fps", "firstFrameMs", "framesShown", "jitterBufferMs")},
          "server delay sent:", report["stats"]["delay"]["send"])
    assert report["state"].startswith("live"), report["state"]
    assert report["firstFrameMs"] is not None and report["firstFrameMs"] < 1500
    assert 22 <= report["fps"] <= 27, report["fps"]
    stats = report["stats"]
    # The server received the microphone in real time (about one second of speech per second).
    elapsed = time.monotonic() - started
    assert stats["ingest"]["frames"] > 0 and 0.6 * elapsed < stats["ingest"]["seconds"] <= elapsed + 0.5
    assert stats["chunks"]["generated"] >= 1 and stats["chunks"]["late"] == 0
    assert stats["delay"]["target"] == 4.2 and 22 <= stats["fps_out"] <= 27
    # Swap the reference from the page.
    browser.execute_script("document.getElementById('swap-source').value = 'blue';"
                           "document.getElementById('swap-button').click();")
    report = _poll(browser, lambda r: r["swaps"] or r["errors"], 5)
    assert not report["errors"] and report["swaps"][0]["source"] == "blue"
    report = _poll(browser, lambda r: r["stats"]["source"] == "blue", 5)
    assert report["stats"]["source"] == "blue"
