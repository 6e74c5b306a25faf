"""Speech out as it came in: 48 kHz, the input's channels, the input's loudness (the -23 LUFS copy feeds the
models only). Offline: the mp4 written by ``dub``, read back with PyAV. Live: a stereo WHIP sender over real
aiortc, heard by a WHEP viewer."""

from __future__ import annotations

import asyncio

import av
import numpy as np
import pyloudnorm
import pytest
import scipy.signal

from model.base import FPS
from streaming.audio import integrated_loudness, load_audio
from streaming.dub import DubSettings, dub
from tests.conftest import write_wav

RATE = 48_000
SPEECH_16K = "/usr/share/codec2/raw/speech_orig_16k.wav"  # real read speech (codec2-examples)


def real_speech(rate: int, seconds: float, lufs: float = -16.0) -> np.ndarray:
    """Read speech resampled to ``rate`` at ``lufs`` (its peaks clipped to 0.99)."""
    speech = load_audio(SPEECH_16K)[: int(16_000 * seconds)]
    speech = speech * np.float32(10 ** ((lufs - integrated_loudness(speech)) / 20))
    return np.clip(scipy.signal.resample_poly(speech, rate // 100, 160), -0.99, 0.99).astype(np.float32)


def read_audio(path: str) -> tuple[int, np.ndarray, int]:
    """The first audio stream of ``path``: rate, samples [channels, n] (float), video frame count."""
    with av.open(path) as container:
        stream = container.streams.audio[0]
        rate = stream.rate
        samples = np.concatenate([f.to_ndarray() for f in container.decode(audio=0)], axis=1)
    with av.open(path) as container:
        frames = sum(1 for _ in container.decode(video=0))
    return rate, samples, frames


def lag_of(reference: np.ndarray, signal: np.ndarray) -> tuple[int, float]:
    """The lag (samples) at which ``signal`` best matches ``reference``, and the normalised correlation."""
    corr = scipy.signal.correlate(signal, reference, mode="full", method="fft")
    best = int(np.argmax(corr))
    lag = best - (len(reference) - 1)
    shifted = signal[max(lag, 0):][: len(reference) - max(-lag, 0)]
    ref = reference[max(-lag, 0):][: len(shifted)]
    return lag, float(np.dot(ref, shifted) / (np.linalg.norm(ref) * np.linalg.norm(shifted) + 1e-12))


def dub_file(tmp_path, audio_path: str, name: str = "out.mp4", second: str | None = None):
    from PIL import Image

    still = str(tmp_path / "still.png")
    image = np.full((64, 64, 3), 90, np.uint8)
    image[16:48, 16:48] = 200
    Image.fromarray(image).save(still)
    out = str(tmp_path / name)
    report = dub(still, audio_path, out, DubSettings(generator="passthrough", size=(64, 64)),
                 second_audio_path=second)
    return out, report


def test_stereo_44k_comes_out_48k_stereo_at_its_own_loudness(tmp_path):
    left = real_speech(44_100, 3.0, lufs=-12.0)
    t = np.arange(left.size) / 44_100
    right = (0.6 * np.roll(left, 44_100 // 2) + 0.05 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)
    path = write_wav(str(tmp_path / "in.wav"), np.stack([left, right], axis=1), 44_100)
    out, report = dub_file(tmp_path, path)
    rate, heard, frames = read_audio(out)

    assert rate == RATE and heard.shape[0] == 2
    assert "48 kHz stereo" in report.summary()
    # Exactly as long as the video (frames / 25 s); the AAC encoder's priming is trimmed by the edit list.
    assert frames == report.frames
    assert abs(heard.shape[1] - frames * RATE // FPS) <= 1024
    # Each channel is its own input channel, not a mix of both, and in place (no shift).
    reference = [scipy.signal.resample_poly(channel, 160, 147) for channel in (left, right)]
    for channel in (0, 1):
        lag, own = lag_of(reference[channel][:RATE * 2], heard[channel][:RATE * 2])
        assert abs(lag) <= 2 and own > 0.95, (channel, lag, own)
        other = np.corrcoef(reference[1 - channel][:RATE * 2], heard[channel][:RATE * 2])[0, 1]
        assert own - abs(other) > 0.5, (channel, own, other)
    # The input's loudness, not the models' -23 LUFS: the mono measure of model/loudness.py on both files,
    # and BS.1770's stereo measure.
    loudness_in, loudness_out = integrated_loudness(load_audio(path)), integrated_loudness(load_audio(out))
    assert abs(loudness_in + 23) > 5, loudness_in
    assert abs(loudness_out - loudness_in) < 0.5, (loudness_in, loudness_out)
    meter_in, meter_out = pyloudnorm.Meter(44_100), pyloudnorm.Meter(RATE)
    stereo_in = meter_in.integrated_loudness(np.stack([left, right], axis=1).astype(np.float64))
    stereo_out = meter_out.integrated_loudness(heard.T.astype(np.float64))
    assert abs(stereo_out - stereo_in) < 0.5, (stereo_in, stereo_out)


def test_mono_stays_mono_and_keeps_its_level(tmp_path):
    speech = real_speech(16_000, 2.0, lufs=-31.0)  # quiet
    path = write_wav(str(tmp_path / "in.wav"), speech, 16_000)
    out, report = dub_file(tmp_path, path)
    rate, heard, frames = read_audio(out)
    assert rate == RATE and heard.shape[0] == 1 and "48 kHz mono" in report.summary()
    assert abs(heard.shape[1] - frames * RATE // FPS) <= 1024
    loudness_in, loudness_out = integrated_loudness(load_audio(path)), integrated_loudness(load_audio(out))
    assert abs(loudness_out - loudness_in) < 0.5 and loudness_in < -25, (loudness_in, loudness_out)


def test_eight_channels_are_downmixed_to_stereo_and_said_so(tmp_path):
    t = np.arange(44_100 * 2) / 44_100
    speech = real_speech(44_100, 2.0, lufs=-24.0)
    data = np.stack([speech] + [0.05 * np.sin(2 * np.pi * (200 + 60 * i) * t) for i in range(7)],
                    axis=1)
    out, report = dub_file(tmp_path, write_wav(str(tmp_path / "in.wav"), data, 44_100))
    rate, heard, _ = read_audio(out)
    assert rate == RATE and heard.shape[0] == 2
    assert "downmixed from 8 channels" in report.summary()
    assert np.abs(heard).max() > 0.1  # the speech is there


def test_two_speakers_mix_at_their_own_levels(tmp_path):
    first = real_speech(16_000, 2.0, lufs=-20.0)  # mono
    t = np.arange(48_000 * 3) / 48_000
    second = np.stack([0.1 * np.sin(2 * np.pi * 440 * t), 0.1 * np.sin(2 * np.pi * 660 * t)], axis=1)
    from tests.conftest import espeak

    voice = load_audio(espeak(str(tmp_path / "voice.wav"), "A second voice speaks here, slowly and clearly."))
    voice = scipy.signal.resample_poly(voice, 3, 1)[: int(1.5 * 48_000)] * 0.2  # over before 2 s
    second[: voice.size] += voice[:, None]  # speech too, or the second file is refused as no speech
    one = write_wav(str(tmp_path / "one.wav"), first, 16_000)
    two = write_wav(str(tmp_path / "two.wav"), second, 48_000)
    # Two faces for the speakers: the astronaut twice, side by side.
    from PIL import Image
    from skimage import data

    face = np.asarray(Image.fromarray(data.astronaut()).resize((160, 160)))
    still = str(tmp_path / "two.png")
    Image.fromarray(np.concatenate([face, face], axis=1)).save(still)
    out = str(tmp_path / "mix.mp4")
    report = dub(still, one, out, DubSettings(generator="passthrough", size=(160, 320)), second_audio_path=two)
    rate, heard, frames = read_audio(out)
    assert rate == RATE and heard.shape[0] == 2 and abs(heard.shape[1] - frames * RATE // FPS) <= 1024
    assert frames == 3 * FPS  # the longer file's length
    # The tone of speaker 2's right channel is in the right channel only, at its own level (0.1 peak).
    spectrum = lambda x: np.abs(np.fft.rfft(x[RATE * 2 + 2400 : RATE * 3 - 2400]))  # noqa: E731 - after speaker 1
    freqs = np.fft.rfftfreq(RATE - 4800, 1 / RATE)
    right, left = spectrum(heard[1]), spectrum(heard[0])
    at = lambda s, f: s[np.argmin(np.abs(freqs - f))]  # noqa: E731
    assert at(right, 660) > 20 * at(left, 660) and at(left, 440) > 20 * at(right, 440)
    tone_level = np.sqrt(2) * np.sqrt(np.mean(heard[0][RATE * 2 + 2400 : RATE * 3 - 2400] ** 2))
    assert abs(tone_level - 0.1) < 0.01, tone_level  # the file's own level, not normalised
    # Speaker 1 (mono) is in both channels at its own level: what is left when speaker 2's channel is taken out.
    expected = scipy.signal.resample_poly(first, 3, 1)[: 2 * RATE]
    for channel in (0, 1):
        rest = heard[channel][: 2 * RATE] - second[: 2 * RATE, channel]
        lag, own = lag_of(expected, rest)
        assert abs(lag) <= 2 and own > 0.95, (channel, lag, own)
        assert abs(np.std(rest) / np.std(expected) - 1) < 0.05



# ---- live: stereo over real aiortc ---------------------------------------------------------------------------

def stereo_frame(samples: np.ndarray, pts: int) -> av.AudioFrame:
    """``[2, n]`` float samples as a packed s16 stereo frame, as aiortc's Opus decoder hands them over."""
    from fractions import Fraction

    pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16)
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm.T).reshape(1, -1), format="s16", layout="stereo")
    frame.sample_rate, frame.pts, frame.time_base = RATE, pts, Fraction(1, RATE)
    return frame


@pytest.mark.parametrize("stereo", [True, False])
def test_playout_speech_is_planar_stereo_as_received(stereo):
    """What the output encoders read (Playout.speech): [2, 960] float32, the sender's channels and level;
    a mono sender on both channels at its level. The model ring stays 16 kHz mono, normalised."""
    from streaming.ingest import LiveAudioIngest
    from streaming.playout import Playout
    from streaming.timeline import AUDIO_BLOCK

    ingest = LiveAudioIngest(capacity_seconds=5, receive_latency=0.0)
    t = np.arange(2 * RATE) / RATE
    sent = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.05 * np.sin(2 * np.pi * 660 * t)]).astype(np.float32)
    for k in range(sent.shape[1] // AUDIO_BLOCK):
        block = sent[:, k * AUDIO_BLOCK : (k + 1) * AUDIO_BLOCK]
        if stereo:
            ingest.push(stereo_frame(block, k * AUDIO_BLOCK), k * 0.02)
        else:
            from _server_support import audio_frame

            ingest.push(audio_frame(block[0], k * AUDIO_BLOCK), k * 0.02)
    playout = Playout(None, None, None, ingest.playout.read)
    expected = sent if stereo else np.stack([sent[0], sent[0]])
    for j in (0, 10, 99):
        block = playout.speech(j)
        assert block.shape == (2, AUDIO_BLOCK) and block.dtype == np.float32
        np.testing.assert_allclose(block, expected[:, j * AUDIO_BLOCK : (j + 1) * AUDIO_BLOCK], atol=2e-4)
    assert playout.speech(-1).shape == (2, AUDIO_BLOCK) and not playout.speech(-1).any()
    model = ingest.model.read(8000, 24000)
    assert model.ndim == 1 and abs(integrated_loudness(model) + 23) < 1.5  # the models' copy: -23 LUFS


def test_answers_ask_for_stereo_opus():
    from server.peers import stereo_opus

    chrome = ("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\na=rtpmap:111 opus/48000/2\r\n"
              "a=fmtp:111 minptime=10;useinbandfec=1\r\n")
    assert "a=fmtp:111 minptime=10;useinbandfec=1;stereo=1;sprop-stereo=1\r\n" in stereo_opus(chrome)
    assert stereo_opus(stereo_opus(chrome)) == stereo_opus(chrome)
    bare = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 opus/48000/2\r\na=rtpmap:0 PCMU/8000\r\n"
    assert stereo_opus(bare) == ("v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 opus/48000/2\r\n"
                                 "a=fmtp:96 stereo=1;sprop-stereo=1\r\na=rtpmap:0 PCMU/8000\r\n")
    assert stereo_opus("v=0\r\nm=audio 9 UDP 0\r\na=rtpmap:0 PCMU/8000\r\n").count("fmtp") == 0


LIVE_DELAY = 4.2  # test_server_webrtc's: the passthrough's minimum is 3.56 s, with room on a busy machine
LIVE_SECONDS = 2.5


def live_stereo() -> np.ndarray:
    """Different speech on each channel, at different levels: read speech left, a quieter, later part of
    the same recording right."""
    from _server_support import speech_48k

    speech = speech_48k(LIVE_SECONDS + 3.0)
    left = speech[: int(LIVE_SECONDS * RATE)] * np.float32(0.8 / np.abs(speech).max())
    right = speech[int(3.0 * RATE) :][: left.size] * np.float32(0.25 / np.abs(speech).max())
    return np.stack([left, right])


def content_lag(sent: np.ndarray, received: np.ndarray) -> tuple[int, float]:
    """Samples by which ``received`` lags ``sent`` (by content) and the normalised correlation there."""
    corr = scipy.signal.correlate(received.astype(np.float64), sent.astype(np.float64), mode="valid", method="fft")
    lag = int(np.argmax(corr))
    part = received[lag : lag + sent.size]
    return lag, float(np.dot(part, sent) / (np.linalg.norm(part) * np.linalg.norm(sent) + 1e-12))


@pytest.mark.slow
async def test_live_stereo_reaches_a_whep_viewer_as_sent(tmp_path, monkeypatch):
    import aiohttp

    from _server_support import control_url, loopback_candidates, start_server
    from client.control import ControlClient
    from client.recorder import place_audio, to_planar
    from client.webrtc import Publisher, SpeechTrack, Viewer

    loopback_candidates(monkeypatch)
    sent = live_stereo()
    heard: list[tuple[float, int, np.ndarray]] = []
    server = await start_server(str(tmp_path / "sources"), size="64x64")
    try:
        async with ControlClient(control_url(server)) as control, aiohttp.ClientSession() as http:
            created = await control.request("create", source="red", delay=LIVE_DELAY)
            viewer = Viewer(http, lambda kind, frame, arrival: kind == "audio" and heard.append(
                (arrival, frame.pts, to_planar(frame))))
            await viewer.watch(created["whep"], video=False)
            track = SpeechTrack(sent)
            publisher = Publisher(http)
            await publisher.publish(created["whip"], track)
            # Both answers ask for Opus in stereo, as a browser needs to send (and decode) stereo.
            assert "stereo=1" in publisher.pc.remoteDescription.sdp and "stereo=1" in viewer.pc.remoteDescription.sdp
            while not track.finished:
                await asyncio.sleep(0.2)
            await control.request("end_ingest", session=created["session"])  # the session plays it out and ends
            await asyncio.wait_for(viewer.ended.wait(), LIVE_DELAY + 10)
            await publisher.close(delete=False)
            await viewer.close(delete=False)
    finally:
        await server.stop()

    assert heard and all(samples.shape[0] == 2 for _, _, samples in heard)  # Opus stereo
    channels = [place_audio([(a, pts, samples[c]) for a, pts, samples in heard])[1] for c in (0, 1)]
    # The first 2 s: the last of the speech may still be on its way when the ingest is ended.
    lags, compared = [], sent[:, : 2 * RATE]
    for c in (0, 1):
        lag, own = content_lag(compared[c], channels[c])
        other = content_lag(compared[1 - c], channels[c])[1]
        assert own > 0.75 and abs(other) < 0.3, (c, own, other)  # its own channel (Opus), not a mix of both
        part = channels[c][lag : lag + compared.shape[1]]
        gain_db = 20 * np.log10(np.std(part) / np.std(compared[c]))
        assert abs(gain_db) < 0.5, (c, gain_db)  # the sender's level: no normalisation on the way
        lags.append(lag)
        print(f"channel {c}: correlation {own:.2f} with its own, {other:.2f} with the other; level {gain_db:+.2f} dB")
    assert abs(lags[0] - lags[1]) <= 2  # both channels on one timeline
