"""The page as an operator's console, in headless Chromium at 1280x720: everything visible without
scrolling, thumbnails before starting, errors in plain words, readable figures, audio meters, the heard
delay, and the reference swap shown. Screenshots go to the test's folder (and to $LIVEDUB_SCREENSHOTS)."""

from __future__ import annotations

import os
import re
import shutil
import time

import pytest

from test_browser_server import _poll, browser, server  # noqa: F401 - fixtures: livedub serve + Chromium

pytestmark = pytest.mark.slow
WIDTH, HEIGHT = 1280, 720
# Every element an operator needs, with its id.
CONSOLE = ("thumbs", "source", "delay", "delay-hint", "input", "start", "stop", "reference", "swap-source",
           "swap-button", "speaker-1", "speaker-2", "speakers-note", "video", "meter-in", "meter-out",
           "s-delay", "s-heard", "s-g2g", "s-fps", "s-chunks", "s-tiers", "s-cost", "events", "status")
GEOMETRY = """
const ids = arguments[0], out = {};
for (const id of ids) {
  const e = document.getElementById(id), r = e.getBoundingClientRect(), s = getComputedStyle(e);
  out[id] = {left: r.left, top: r.top, right: r.right, bottom: r.bottom, width: r.width, height: r.height,
             hidden: s.display === 'none' || s.visibility === 'hidden', text: e.innerText || e.value || ''};
}
out.page = {width: innerWidth, height: innerHeight, scrollWidth: document.documentElement.scrollWidth,
            scrollHeight: document.documentElement.scrollHeight};
return out;"""


def _shot(driver, folder, name: str) -> None:
    path = os.path.join(folder, f"console-{name}.png")
    driver.save_screenshot(path)
    if os.environ.get("LIVEDUB_SCREENSHOTS"):
        os.makedirs(os.environ["LIVEDUB_SCREENSHOTS"], exist_ok=True)
        shutil.copy(path, os.environ["LIVEDUB_SCREENSHOTS"])


def _all_in_view(driver) -> dict:
    geometry = driver.execute_script(GEOMETRY, list(CONSOLE))
    page = geometry.pop("page")
    assert (page["width"], page["height"]) == (WIDTH, HEIGHT), page
    assert page["scrollWidth"] <= WIDTH and page["scrollHeight"] <= HEIGHT, f"the page scrolls: {page}"
    for name, box in geometry.items():
        assert not box["hidden"] and box["width"] > 0 and box["height"] > 0, (name, box)
        assert box["left"] >= 0 and box["top"] >= 0 and box["right"] <= WIDTH and box["bottom"] <= HEIGHT, (name, box)
    return geometry


def _click(driver, element_id: str) -> None:
    driver.execute_script(f"document.getElementById('{element_id}').click()")


def _text(driver, element_id: str) -> str:
    return driver.execute_script(f"return document.getElementById('{element_id}').innerText")


def test_console_at_1280x720(server, browser, tmp_path):  # noqa: F811
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False})
    browser.get(server + "#input=mic")
    # Before starting: a thumbnail per source, the delay field bounded by the generator's real minimum.
    report = _poll(browser, lambda r: r["config"] and len(r["sources"]) == 2, 15)
    assert report["sources"] == ["blue", "red"] and not report["errors"], report["errors"]
    deadline = time.monotonic() + 10
    while browser.execute_script("return [...document.querySelectorAll('#thumbs img')].filter("
                                 "i => i.naturalWidth > 0).length") < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    thumbs = browser.execute_script("return [...document.querySelectorAll('#thumbs button')].map("
                                    "b => [b.dataset.source, b.querySelector('img').naturalWidth, b.getAttribute('aria-selected')])")
    assert thumbs == [["blue", 160, "true"], ["red", 160, "false"]], thumbs
    limits = report["config"]["delay"]
    assert float(browser.execute_script("return document.getElementById('delay').min")) == limits["min"]
    assert _text(browser, "delay-hint") == f"passthrough needs at least {limits['min']:.2f} s (up to 30 s)"
    assert "cannot assign speakers" in _text(browser, "speakers-note") or report["speakers"]["supported"]
    _all_in_view(browser)
    _shot(browser, tmp_path, "1-before")

    # Errors in plain words: a delay below the minimum (checked on the page), an unknown source (the server).
    browser.execute_script("document.getElementById('delay').value = '1'")
    _click(browser, "start")
    report = _poll(browser, lambda r: r["errors"], 5)
    assert report["errors"] == [f"delay 1 s is out of range: passthrough accepts {limits['min']:.2f} to 30 s"]
    browser.execute_script("document.getElementById('delay').value = '4.2';"
                           "document.getElementById('source').add(new Option('green', 'green'));"
                           "document.getElementById('source').value = 'green'")
    _click(browser, "start")
    report = _poll(browser, lambda r: len(r["errors"]) > 1, 10)
    assert report["errors"][1] == "unknown source 'green': available are blue, red"
    assert _text(browser, "status") == report["errors"][1]
    _shot(browser, tmp_path, "2-error")

    # Live: the figures as text, meters moving, the heard delay matched from the speech itself.
    browser.execute_script("window.__livedub.errors = []; document.getElementById('source').value = 'red'")
    browser.find_element("css selector", "#thumbs button[data-source='red']").click()
    _click(browser, "start")
    report = _poll(browser, lambda r: r["errors"] or (r["stats"] and r["stats"]["chunks"]["generated"] >= 2
                                                      and r["heard"] and r["glassToGlassMs"]), 40)
    assert not report["errors"], report["errors"]
    assert report["state"].startswith("live") and report["reference"] == "red"
    print("console report:", {k: report[k] for k in ("fps", "heard", "glassToGlassMs", "jitterBufferMs", "loudest")})
    # The output is the speech sent, 4.2 s later: the envelope match finds it near the target, and the
    # estimate from the stats (server send delay + network + jitter buffer) lies a little past the target.
    assert report["heard"]["correlation"] >= 0.6 and abs(report["heard"]["lagMs"] - 4200) <= 400, report["heard"]
    assert 4000 <= report["glassToGlassMs"] <= 5500, report["glassToGlassMs"]
    assert report["loudest"]["input"] > -45 and report["loudest"]["output"] > -45, report["loudest"]
    texts = _all_in_view(browser)
    assert texts["s-delay"]["text"] == "4.20 s"
    assert re.fullmatch(r"\d+ on time, (none late|.*late.*|.*skipped.*|.*failed.*)", texts["s-chunks"]["text"]), texts["s-chunks"]
    assert re.fullmatch(r"full ×\d+", texts["s-tiers"]["text"]), texts["s-tiers"]
    assert re.fullmatch(r"\d+\.\d\d s \(match 0\.\d\d\)", texts["s-heard"]["text"]), texts["s-heard"]
    assert re.fullmatch(r"\d+\.\d fps \(\d+ frames\)", texts["s-fps"]["text"])
    assert "{" not in "".join(t["text"] for t in texts.values())  # no raw JSON anywhere
    assert "session started on red with passthrough, 4.20 s behind" in texts["events"]["text"]
    _shot(browser, tmp_path, "3-live")

    # Speakers: a server with assign_speaker takes the choice (or refuses it in words); one without says so.
    if report["speakers"]["supported"]:
        assert _text(browser, "speakers-state").startswith(("one speech input", "two speakers"))
        browser.execute_script("const s = document.getElementById('speaker-1'); s.value = '1';"
                               "s.dispatchEvent(new Event('change'))")
        report = _poll(browser, lambda r: r["speakers"]["assigned"] or _text(browser, "speakers-note").startswith("not"), 5)
        assert re.match(r"speaker 1 moves face 2 from chunk \d+|not assigned: .+", _text(browser, "speakers-note"))
    else:
        assert browser.execute_script("return document.getElementById('speaker-1').disabled")
        assert "cannot assign speakers" in _text(browser, "speakers-note")

    # Swap from the page: clicking a thumbnail picks the target; the reference, the pickers and an event follow.
    browser.find_element("css selector", "#thumbs button[data-source='blue']").click()
    assert browser.execute_script("return document.getElementById('swap-source').value") == "blue"
    browser.execute_script("document.getElementById('swap-mode').value = 'blend'")
    _click(browser, "swap-button")
    # The swap event (to every client) may arrive before the reply to the page's own request: wait for both.
    report = _poll(browser, lambda r: r["errors"] or (r["swaps"] and any(e["event"] == "swap" for e in r["events"])), 10)
    assert not report["errors"], report["errors"]
    swap = report["swaps"][0]
    assert _text(browser, "reference") == "blue"
    assert browser.execute_script("return [document.getElementById('source').value,"
                                  "document.getElementById('swap-source').value]") == ["blue", "red"]
    assert f"reference red → blue (blend) from chunk {swap['chunk']}" in _text(browser, "events")
    assert browser.execute_script("return document.querySelector('#thumbs [aria-selected=true]').dataset.source") == "blue"
    _all_in_view(browser)
    _shot(browser, tmp_path, "4-swapped")
    print("screenshots:", tmp_path)
