"""Two speakers live, through a real server with real aiortc peers on loopback: speaker 1's speech on the
session's WHIP ingest, speaker 2's on a second one (POST /whip/ID?speaker=2), the lite generator on a
two-person picture. Each chunk event carries both speakers' voice activity, the generator's mouth tracks
follow each speaker's own speech (speaker 2 is silent through chunk 0), viewers hear both, the control
op ``assign_speaker`` moves a speaker to another face, and bad input gets a named error."""

from __future__ import annotations

import asyncio
import os
import time

import aiohttp
import numpy as np
import pytest
from PIL import Image

from _server_support import control_url, loopback_candidates, speech_48k, start_server
from client.control import ControlClient, ControlError
from client.recorder import place_audio, to_mono
from client.webrtc import Publisher, SpeechTrack, Viewer
from streaming.ingest import PLAYOUT_RATE
from tests.media import speech, two_people

DELAY = 9.0  # lite needs 3.91 s: this leaves about 5 s per chunk for two faces on a busy machine
SECONDS = 7.0
SPEAKER_2_STARTS = 3.8  # seconds: speaker 2 is silent through chunk 0 (frames 0-80, 3.24 s)


@pytest.fixture
def loopback(monkeypatch):
    loopback_candidates(monkeypatch)


def speaker_2_speech() -> np.ndarray:
    """A second voice (espeak-ng) at 48 kHz, after SPEAKER_2_STARTS seconds of silence."""
    import scipy.signal

    voice = speech("And what about the weekend? Will it clear up by Sunday?", voice="en+f3")
    voice = scipy.signal.resample_poly(voice, 3, 1).astype(np.float32)
    out = np.zeros(int(SECONDS * PLAYOUT_RATE), np.float32)
    start = int(SPEAKER_2_STARTS * PLAYOUT_RATE)
    piece = voice[: out.size - start]
    out[start : start + piece.size] = piece
    return out


def correlation_peak(sent: np.ndarray, received: np.ndarray) -> float:
    size = 1 << int(np.ceil(np.log2(len(sent) + len(received))))
    correlation = np.fft.irfft(np.fft.rfft(received, size) * np.conj(np.fft.rfft(sent, size)), size)
    lag = int(np.argmax(correlation[: len(received)]))
    overlap = received[lag : lag + len(sent)]
    return float(correlation[lag] / (np.linalg.norm(sent[: len(overlap)]) * np.linalg.norm(overlap) + 1e-9))


@pytest.mark.slow
async def test_two_speakers_live(tmp_path, loopback):
    folder = str(tmp_path / "sources")
    os.makedirs(folder)
    Image.fromarray(two_people(320)).save(os.path.join(folder, "pair.png"))
    server = await start_server(folder, generator="lite", size="640x320", delay=DELAY)
    heard: list = []
    first, second = speech_48k(SECONDS), speaker_2_speech()
    try:
        async with ControlClient(control_url(server)) as control, aiohttp.ClientSession() as http:
            created = await control.request("create", source="pair", delay=DELAY, timeout=120)  # a busy machine
            session = created["session"]
            viewer = Viewer(http, lambda kind, frame, arrival: heard.append((arrival, frame.pts, to_mono(frame)))
                            if kind == "audio" else None)
            await viewer.watch(created["whep"], video=False)
            publisher = Publisher(http)
            await publisher.publish(created["whip"], SpeechTrack(first))
            # An offer that passes the check but cannot be answered (no common codec) leaves one speaker.
            no_codec = (await _offer()).replace("opus/48000/2", "iLBC/8000").replace("G722/", "speex/") \
                .replace("PCMU/", "AMR/").replace("PCMA/", "EVS/")
            async with http.post(created["whip"] + "?speaker=2", data=no_codec,
                                 headers={"Content-Type": "application/sdp"}) as response:
                assert response.status == 400, await response.text()
            assert server.manager.get(session).speakers.count == 1
            second_publisher = Publisher(http)
            resource = await second_publisher.publish(created["whip"] + "?speaker=2", SpeechTrack(second))
            assert resource.endswith(f"/whip/{session}?speaker=2")

            # A second speaker-2 ingest, a speaker 3 and bad assignments: named errors, the session goes on.
            async with http.post(created["whip"] + "?speaker=2", data="v=0\r\n",
                                 headers={"Content-Type": "application/sdp"}) as response:
                assert response.status == 400  # the offer is checked first
            async with http.post(created["whip"] + "?speaker=3", data=await _offer(),
                                 headers={"Content-Type": "application/sdp"}) as response:
                body = await response.json()
                assert response.status == 400 and "bad speaker '3': accepted are 1 and 2" in body["message"]
            async with http.post(created["whip"] + "?speaker=2", data=await _offer(),
                                 headers={"Content-Type": "application/sdp"}) as response:
                body = await response.json()
                assert response.status == 503 and "already has speaker 2's ingest" in body["message"]
            for speaker, face, words in ((3, 0, "bad speaker 3"), (1, 1.5, "bad face position 1.5"),
                                         (2, 99, "bad face number 99"), (1, "left", "must be a number")):
                with pytest.raises(ControlError) as caught:
                    await control.request("assign_speaker", session=session, speaker=speaker, face=face)
                assert caught.value.code == "bad_request" and words in caught.value.reply["message"]

            events = []
            deadline = time.monotonic() + SECONDS + DELAY + 1.0
            while time.monotonic() < deadline and sum(e["event"] == "chunk" for e in events) < 2:
                try:
                    events.append(await control.next_event(timeout=0.5))
                except asyncio.TimeoutError:
                    pass
            # Speaker 1 to the right face, speaker 2 to the left (by position and by rank).
            swapped = await control.request("assign_speaker", session=session, speaker=1, face=0.9)
            assert swapped["faces"] == [0.9, 1]
            swapped = await control.request("assign_speaker", session=session, speaker=2, face=0)
            assert swapped["faces"] == [0.9, 0] and swapped["chunk"] >= 2
            while time.monotonic() < deadline:
                try:
                    events.append(await control.next_event(timeout=0.5))
                except asyncio.TimeoutError:
                    pass
            stats = (await control.request("stats", session=session))["stats"]
            await second_publisher.close()  # DELETE ?speaker=2: speaker 2 leaves, the session goes on
            assert server.manager.get(session).state == "running"
            await publisher.close()
            await viewer.close(delete=False)
    finally:
        await server.stop()

    chunks = {e["chunk"]: e for e in events if e["event"] == "chunk" and e["status"] == "on_time"}
    assert {0, 1} <= set(chunks), events
    # Per-speaker voice activity, and the generator's mouth tracks, each from its own speaker's speech.
    zero, one = chunks[0], chunks[1]
    print("speech fractions", zero["speech_fractions"], one["speech_fractions"], "openings",
          [(c["info"]["mean_opening_1"], c["info"]["mean_opening_2"]) for c in (zero, one)])
    assert zero["speech_fractions"][0] > 0.5 and zero["speech_fractions"][1] < 0.1, zero
    assert one["speech_fractions"][1] > 0.3, one
    assert zero["info"]["speakers"] == 2 and zero["info"]["face_frames"] == zero["info"]["frames"]
    assert zero["info"]["mean_opening_1"] > 0.1 and zero["info"]["mean_opening_2"] < 0.02, zero["info"]
    assert one["info"]["mean_opening_2"] > 0.1, one["info"]
    assert stats["ingest"]["speaker2"]["frames"] > 200 and stats["ingest"]["speaker2"]["faces"] == [0.9, 0]

    # Viewers hear both speakers (each correlates with what the viewer received).
    _, received = place_audio(heard)
    assert correlation_peak(first, received) > 0.5
    assert correlation_peak(second[int(SPEAKER_2_STARTS * PLAYOUT_RATE):], received) > 0.3


async def _offer() -> str:
    from aiortc import RTCPeerConnection

    pc = RTCPeerConnection()
    pc.addTransceiver("audio", direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    await pc.close()
    return pc.localDescription.sdp


@pytest.mark.slow
async def test_client_sends_two_speakers(tmp_path, loopback):
    """`livedub client SPEECH --second-speech FILE`: speaker 2 on its own ingest, the dub recorded."""
    from client.live import send_and_record
    from tests.conftest import write_wav

    folder = str(tmp_path / "sources")
    os.makedirs(folder)
    Image.fromarray(two_people(320)).save(os.path.join(folder, "pair.png"))
    first = write_wav(str(tmp_path / "one.wav"), speech_48k(3.0), PLAYOUT_RATE)
    second = write_wav(str(tmp_path / "two.wav"), speaker_2_speech()[: 4 * PLAYOUT_RATE], PLAYOUT_RATE)
    server = await start_server(folder, generator="lite", size="640x320", delay=DELAY)
    try:
        summary = await send_and_record(server.url, "pair", first, str(tmp_path / "dub.mp4"), delay=DELAY,
                                        second_speech_path=second)
    finally:
        await server.stop()
    stats = summary["stats"]
    assert stats["ingest"]["speaker2"]["frames"] >= 190  # 4 s of 20 ms frames, all sent before the end
    assert stats["chunks"]["generated"] >= 1 and summary["frames_recorded"]["video"] > 25 * 4
