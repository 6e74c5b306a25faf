"""Two speakers offline: `livedub dub SOURCE AUDIO AUDIO2` with the lite generator on a real two-person
picture (the astronaut and Grace Hopper side by side) and two different espeak-ng voices whose pauses fall
at different times. Each face must follow its own speech and not the other's (lip gap against loudness,
measured with mediapipe on the written mp4); the sound mixes both; the face rules and every bad input."""

from __future__ import annotations

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from model.lite import metrics
from model.lite.face import FaceLandmarks
from model.speakers import MAX_FACES, SpeakerError, SpeakerFaces
from server.cli import main
from streaming.chunker import frames_for_samples
from streaming.dub import load_speech
from tests.conftest import write_wav
from tests.media import speech, two_people

SPEAKER_1 = "Good evening. <break time='1500ms'/> Tomorrow will bring heavy rain across the north."
SPEAKER_2 = ("<break time='1200ms'/> Thank you. And what about the weekend? <break time='900ms'/> "
             "Will it clear up?")
SIZE = "640x320"  # two faces of 320 px: enough for the detector, half the pixels of the 480 bucket


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("speakers")
    paths = {"pair": str(folder / "pair.png"), "one": str(folder / "one.png"),
             "speech1": str(folder / "one.wav"), "speech2": str(folder / "two.wav"),
             "silent": str(folder / "silent.wav"), "whistle": str(folder / "whistle.wav")}
    Image.fromarray(two_people(448)).save(paths["pair"])
    one = two_people(448)
    one[:, 448:] = 128  # the astronaut beside a grey wall: one face
    Image.fromarray(one).save(paths["one"])
    write_wav(paths["speech1"], speech(SPEAKER_1), 16000)
    write_wav(paths["speech2"], speech(SPEAKER_2, voice="en+f3"), 16000)
    write_wav(paths["silent"], np.zeros(32000), 16000)
    t = np.arange(48000) / 16000
    write_wav(paths["whistle"], 0.3 * np.sin(2 * np.pi * 7900 * t), 16000)  # sound, but no speech
    return paths


@pytest.fixture(scope="module")
def faces():
    finder = FaceLandmarks(max_faces=MAX_FACES)
    yield finder
    finder.close()


def dubbed(media, tmp_path, *options) -> tuple[np.ndarray, str]:
    out = str(tmp_path / "dub.mp4")
    assert main(["dub", media["pair"], media["speech1"], media["speech2"], "-o", out, "--size", SIZE, "--quiet",
                 *options]) == 0
    with av.open(out) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]), out


def envelopes(media, frames: int) -> np.ndarray:
    return np.stack([metrics.loudness_envelope(load_speech(media[key]), frames) for key in ("speech1", "speech2")])


@pytest.fixture(scope="module")
def default_dub(media, tmp_path_factory, faces):
    frames, out = dubbed(media, tmp_path_factory.mktemp("dub"))
    gaps = metrics.speaker_lip_gaps(frames, faces)
    return {"frames": frames, "out": out, "table": metrics.cross_talk(gaps, envelopes(media, len(frames))),
            "gaps": gaps}


def test_each_face_follows_its_own_speech_only(default_dub, media):
    table, gaps = default_dub["table"], default_dub["gaps"]
    assert np.isfinite(gaps).all()  # both faces found in every written frame
    total = max(load_speech(media[k]).size for k in ("speech1", "speech2"))
    assert len(default_dub["frames"]) == frames_for_samples(total)  # the longer speech sets the length
    own, cross = np.diag(table), table[[0, 1], [1, 0]]
    # Measured 0.85 / 0.83 own, about 0.0 cross. Both faces on one track, or both on the mix, put a
    # cross-talk figure near an own one.
    assert (own > 0.6).all(), table
    assert (np.abs(cross) < 0.3).all(), table
    assert (own - np.abs(cross) > 0.45).all(), table


def test_the_sound_mixes_both_speakers(default_dub, media):
    with av.open(default_dub["out"]) as container:
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
        rate = container.streams.audio[0].rate
    frames = len(default_dub["frames"])
    heard = metrics.loudness_envelope(audio[:: rate // 16000].astype(np.float32), frames)
    levels = envelopes(media, frames)
    for speaker in (0, 1):
        alone = (levels[speaker] > -30) & (levels[1 - speaker] < -55)  # only this speaker talks
        assert alone.sum() > 5
        assert np.median(heard[alone]) > -35  # ... and the output's sound has them


def test_speaker_order_right_left_swaps_the_faces(media, tmp_path, faces):
    frames, _ = dubbed(media, tmp_path, "--speaker-order", "right-left")
    table = metrics.cross_talk(metrics.speaker_lip_gaps(frames, faces), envelopes(media, len(frames)))
    # Left face (row 0) now follows speech 2, the right face speech 1.
    assert table[0, 1] > 0.6 and table[1, 0] > 0.6, table
    assert abs(table[0, 0]) < 0.3 and abs(table[1, 1]) < 0.3, table


@pytest.mark.parametrize("args, message", [
    (["one", "speech1", "speech2"], "found 1 face in the reference; two speakers need two"),
    (["pair", "speech1", "silent"], "silent.wav is silent (below -70 LUFS); give a speech track"),
    (["pair", "speech1", "whistle"], "no speech heard in"),
    (["pair", "speech1", "speech2", "--speaker-faces", "a,b"], "bad speaker faces 'a,b': accepted are two "
                                                                 "horizontal positions from 0 (left) to 1"),
    (["pair", "speech1", "speech2", "--speaker-faces", "0.2,1.5"], "bad speaker faces '0.2,1.5'"),
    (["pair", "speech1", "speech2", "--speaker-faces", "0.2"], "bad speaker faces '0.2'"),
    (["pair", "speech1", "speech2", "--speaker-faces", "0.7,0.8"], "both speakers picked the same face (faces "
                                                                    "at x = 0.22, 0.76 of the width)"),
    (["pair", "speech1", "--speaker-faces", "0.2,0.8"], "--speaker-faces is for two speakers: give a second"),
    (["pair", "speech1", "speech2", "--speaker-order", "right-left", "--speaker-faces", "0.2,0.8"],
     "accepted is one of them"),
])
def test_bad_two_speaker_input_is_one_clear_line(media, tmp_path, capsys, args, message):
    paths = [media.get(a, a) for a in args]
    code = main(["dub", *paths, "-o", str(tmp_path / "x.mp4"), "--size", SIZE, "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "x.mp4").exists()


def test_face_positions_pick_the_nearest_faces(media, tmp_path, faces):
    """--speaker-faces 0.9,0.1 is right-left by position."""
    frames, _ = dubbed(media, tmp_path, "--speaker-faces", "0.9,0.1")
    table = metrics.cross_talk(metrics.speaker_lip_gaps(frames[:60], faces), envelopes(media, 60))
    assert table[0, 1] > 0.5 and table[1, 0] > 0.5, table


# ---- the face rule on its own -------------------------------------------------------------------------
def test_resolve_by_rank_and_position():
    centres, width = [700.0, 100.0, 400.0], 800  # unordered, as a detector may give them
    assert SpeakerFaces().resolve(centres, width) == (1, 2)  # leftmost, next
    assert SpeakerFaces.ordered("right-left").resolve(centres, width) == (0, 2)
    assert SpeakerFaces((0.95, 0.0)).resolve(centres, width) == (0, 1)
    assert SpeakerFaces().with_pick(2, 0.9).resolve(centres, width) == (1, 0)
    with pytest.raises(SpeakerError, match="found 1 face in the reference; two speakers need two"):
        SpeakerFaces().resolve([10.0], width)
    with pytest.raises(SpeakerError, match="speaker 2 asks for face 3 but the reference has 3 faces"):
        SpeakerFaces((0, 3)).resolve(centres, width)
    with pytest.raises(SpeakerError, match="bad face number 5: accepted are 0..3 from the left"):
        SpeakerFaces((0, 5))
    for bad in ("x", True, None, -0.5, 1.5, [1]):
        with pytest.raises(SpeakerError, match="bad face"):
            SpeakerFaces().with_pick(1, bad)
    with pytest.raises(SpeakerError, match="bad speaker 3: accepted are 1 and 2"):
        SpeakerFaces().with_pick(3, 0)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=30))
def test_any_speaker_faces_text_parses_or_says_what_is_accepted(text):
    try:
        faces = SpeakerFaces.parse_positions(text)
    except SpeakerError as exc:
        assert "accepted are two horizontal positions" in str(exc) and "\n" not in str(exc)
    else:
        assert len(faces.picks) == 2 and all(0 <= p <= 1 for p in faces.picks)
