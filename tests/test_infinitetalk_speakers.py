"""Two speakers on the infinitetalk generator (tiny random weights in the official layout, on the CPU):
one audio window per speaker, person masks from the faces detected in a real two-person reference (the
official code takes the boxes from the user), and a clear error without the multi weights. The weights
are random, so this checks the routing inputs and the plumbing, not the picture."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from it_weights import write_weights
from model.base import AUDIO_RATE, SAMPLES_PER_FRAME, ChunkRequest, Tier
from model.speakers import SpeakerFaces
from streaming.errors import InputError
from tests.media import speech, two_people

FRAMES = 5  # 4k+1 frames: the smallest chunk InfiniteTalk takes
HEIGHT = 224  # the reference is 224x448: two faces of 224 px


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return write_weights(tmp_path_factory.mktemp("weights"), speakers=("single", "multi"))


def build(weights, speakers: str):
    from model.infinitetalk.generator import build_generator

    return build_generator(weights=str(weights), device="cpu", steps=2, audio_context=1.0, audio_lookahead=0.5,
                           speakers=speakers)


def two_speaker_request(generator, faces: SpeakerFaces | None = None) -> ChunkRequest:
    left = round(generator.audio_margins.left * AUDIO_RATE)
    length = left + FRAMES * SAMPLES_PER_FRAME + round(generator.audio_margins.right * AUDIO_RATE)

    def fit(samples: np.ndarray) -> np.ndarray:
        out = np.zeros(length, np.float32)
        out[left : left + min(samples.size, length - left)] = samples[: length - left]
        return out

    return ChunkRequest(index=0, start_frame=0, num_frames=FRAMES, audio=fit(speech("Hello there")),
                        audio_offset=left, reference_frame=two_people(HEIGHT), reference_index=0,
                        audio_end_frame=FRAMES, second_audio=fit(speech("Good morning", voice="en+f3")),
                        speaker_faces=faces)


@pytest.fixture(scope="module")
def multi(weights):
    generator = build(weights, "multi")
    yield generator
    generator.close()


def test_one_audio_window_per_speaker_and_masks_from_the_faces(multi):
    request = two_speaker_request(multi)
    window = multi.audio_window(request)
    assert window.shape[0] == 2 and window.shape[1] == FRAMES
    assert not np.allclose(window[0].numpy(), window[1].numpy())  # each speaker's own speech
    masks = multi.person_masks(request, request.size).numpy()
    latent = (HEIGHT // 8, 2 * HEIGHT // 8)
    assert masks.shape == (3, *latent)
    person1, person2, background = masks.astype(bool)
    assert not (person1 & person2).any() and ((person1 | person2) ^ background).all()
    # The faces sit at x = 0.22 and 0.76 of the width, around a third of the way down.
    row = latent[0] // 3
    assert person1[row, int(0.22 * latent[1])] and person2[row, int(0.76 * latent[1])]
    assert not person1[:, latent[1] // 2 + 2:].any() and not person2[:, : latent[1] // 2 - 2].any()
    swapped = multi.person_masks(two_speaker_request(multi, SpeakerFaces.ordered("right-left")), request.size)
    assert np.array_equal(swapped.numpy()[0], masks[1]) and np.array_equal(swapped.numpy()[1], masks[0])


def test_generates_a_two_speaker_chunk(multi):
    """Rendered at 64x128 (a cheaper tier; the CPU is slow at the full size), masks at that latent size."""
    request = dataclasses.replace(two_speaker_request(multi), tier=Tier(scale=0.3))
    result = multi.generate(request)
    assert result.info["render_size"] == (64, 128)
    assert result.frames.shape == (FRAMES, HEIGHT, 2 * HEIGHT, 3) and result.frames.dtype == np.uint8


def test_single_weights_refuse_two_speakers(weights):
    generator = build(weights, "single")
    try:
        with pytest.raises(InputError, match="two speakers need the multi weights: add --generator-option "
                                             "speakers=multi"):
            generator.generate(two_speaker_request(generator))
    finally:
        generator.close()


def test_one_face_in_the_reference_is_refused(multi):
    request = two_speaker_request(multi)
    request.reference_frame = request.reference_frame.copy()
    request.reference_frame[:, HEIGHT:] = 128  # only the astronaut is left
    with pytest.raises(InputError, match="found 1 face in the reference; two speakers need two"):
        multi.generate(request)
