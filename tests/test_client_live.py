"""`livedub client`: a speech file sent in real time over WHIP, the dub recorded from WHEP to an mp4."""

from __future__ import annotations

import av
import pytest

from _server_support import SPEECH_16K, loopback_candidates, start_server
from client.live import send_and_record
from server.cli import main


@pytest.fixture
def loopback(monkeypatch):
    loopback_candidates(monkeypatch)


@pytest.fixture
def short_speech(tmp_path):
    """The first 3 s of the real speech clip."""
    path = str(tmp_path / "speech.wav")
    with av.open(SPEECH_16K) as source, av.open(path, "w") as target:
        stream = target.add_stream("pcm_s16le", rate=16_000)
        stream.layout = "mono"
        for frame in source.decode(audio=0):
            if frame.pts is not None and frame.pts * frame.time_base >= 3.0:
                break
            for packet in stream.encode(frame):
                target.mux(packet)
        for packet in stream.encode(None):
            target.mux(packet)
    return path


@pytest.mark.slow
async def test_client_sends_speech_and_records_the_dub(tmp_path, loopback, short_speech):
    server = await start_server(str(tmp_path / "sources"), size="128x128")
    output = str(tmp_path / "dub.mp4")
    try:
        summary = await send_and_record(server.url, "red", short_speech, output, delay=4.2, swaps=[(1.0, "blue", "cut")],
                                        tail=0.3)
    finally:
        await server.stop()
    assert summary["generator"] == "passthrough" and summary["delay"] == 4.2
    assert summary["stats"]["chunks"]["generated"] >= 1 and summary["stats"]["chunks"]["late"] == 0
    assert summary["swaps"][0]["source"] == "blue"
    with av.open(output) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        frames = list(container.decode(video=0))
        seconds = float(container.duration / av.time_base)
    assert video.width == 128 and audio.rate == 48_000
    # Recording runs from the WHEP answer to 3 s of speech + 4.2 s delay + 0.3 s tail.
    assert 6.9 < seconds < 9.5 and abs(len(frames) / seconds - 25) < 1.5
    assert abs(summary["frames_recorded"]["video"] - len(frames)) <= 2


def test_client_command_line_errors(tmp_path, capsys):
    assert main(["client", "nope.wav", "--source", "red", "-o", str(tmp_path / "o.mp4")]) == 2
    assert "audio file not found" in capsys.readouterr().err
    assert main(["client", SPEECH_16K, "--source", "red", "--server", "ftp://x", "-o", str(tmp_path / "o.mp4")]) == 2
    assert "bad server URL" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["client", SPEECH_16K, "--source", "red", "--swap", "blue"])
    assert "bad swap 'blue'" in capsys.readouterr().err


@pytest.fixture
def server_in_thread(tmp_path):
    """A real LiveServer on loopback, run by its own event loop in a thread (``main`` runs its own loop)."""
    import asyncio
    import threading

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = asyncio.run_coroutine_threadsafe(start_server(str(tmp_path / "sources")), loop).result(30)
    yield server
    asyncio.run_coroutine_threadsafe(server.stop(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def _client_error(capsys, *args) -> str:
    assert main(["client", SPEECH_16K, "--quiet", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("livedub client: error: ") and "Traceback" not in err, err
    return err.removeprefix("livedub client: error: ")


def test_client_errors_from_the_server_are_one_line(tmp_path, capsys, server_in_thread):
    out = ["--server", server_in_thread.url.rstrip("/"), "-o", str(tmp_path / "o.mp4")]
    assert _client_error(capsys, "--source", "x", *out) == "unknown source 'x': available are blue, red"
    assert _client_error(capsys, "--source", "red", "--delay", "0.5", *out).startswith(
        "bad delay 0.5: accepted is 3.56 to 30 seconds")
    assert _client_error(capsys, "--source", "red", "--generator", "magic", *out).startswith("unknown generator")
    assert not (tmp_path / "o.mp4").exists()


def test_client_without_a_server_is_one_line(tmp_path, capsys):
    from _server_support import free_port

    server = f"http://127.0.0.1:{free_port()}"
    assert _client_error(capsys, "--source", "red", "--server", server, "-o", str(tmp_path / "o.mp4")) == (
        f"cannot connect to {server}: is `livedub serve` running?")
