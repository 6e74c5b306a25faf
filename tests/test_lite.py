"""The lite generator on a real portrait (the astronaut) with espeak-ng speech, run through the real chunk
engine: the mouth follows the loudness and shuts in pauses, nothing outside the lower face changes,
chunks join without a jump, frames without a face pass unchanged, a video source is followed."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data
from PIL import Image

from model.base import SAMPLES_PER_FRAME, ChunkRequest
from model.lite import FADE_FRAMES, build, metrics
from model.lite.face import INNER_LIP_MIDDLE, FaceLandmarks
from model.registry import build_generator
from streaming.audio import normalize_loudness
from streaming.chunker import ChunkPlan, frames_for_samples
from streaming.engine import AudioTrack, ChunkEngine
from streaming.errors import InputError
from streaming.source import VideoSource, resize_and_centercrop
from tests.media import astronaut, grace_hopper, speech

# Chunk borders (frames 81 and 153) fall inside speech; the pause is frames ~18-50.
SENTENCE = ("Good evening. <break time='1200ms'/> "
            "Tomorrow will bring heavy rain across the north, and strong winds along the coast.")


@pytest.fixture(scope="module")
def generator():
    generator = build()
    yield generator
    generator.close()


@pytest.fixture(scope="module")
def faces():
    faces = FaceLandmarks()
    yield faces
    faces.close()


@pytest.fixture(scope="module")
def portrait():
    return astronaut(480)


@pytest.fixture(scope="module")
def spoken():
    return normalize_loudness(speech(SENTENCE))


@pytest.fixture(scope="module")
def dubbed(tmp_path_factory, generator, portrait, spoken):
    """The whole sentence dubbed onto the portrait by the chunk engine, as offline dubbing does."""
    path = tmp_path_factory.mktemp("lite") / "astronaut.png"
    Image.fromarray(portrait).save(path)
    total = frames_for_samples(spoken.size)
    plan = ChunkPlan()
    engine = ChunkEngine(VideoSource(path, (480, 480)), generator, plan)
    track = AudioTrack(spoken)
    frames, infos, borders = [], [], []
    for chunk in plan.chunks(total):
        request = engine.request(chunk.index, track, audio_end_frame=total)
        result = generator.generate(request)
        if chunk.index > 0:
            borders.append(chunk.new_start)
        frames.append(engine.accept(request, result))
        infos.append(result.info)
    return {"frames": np.concatenate(frames)[:total], "infos": infos, "borders": borders, "total": total}


@pytest.fixture(scope="module")
def gaps(dubbed, faces):
    return metrics.lip_gaps(dubbed["frames"], faces)


def test_registered_and_rejects_options():
    with pytest.raises(InputError, match="takes no weights option"):
        build_generator("lite", weights="x")


def test_mouth_follows_loudness(dubbed, gaps, spoken):
    assert len(dubbed["infos"]) == 3 and all(info["face_found"] for info in dubbed["infos"])
    assert np.isfinite(gaps).all(), "the face must stay detectable in every output frame"
    envelope = metrics.loudness_envelope(spoken, dubbed["total"])
    assert metrics.correlation(gaps, envelope) >= 0.5


def test_mouth_shuts_in_the_pause_and_opens_in_speech(gaps, spoken, dubbed):
    envelope = metrics.loudness_envelope(spoken, dubbed["total"])
    loud = envelope > envelope.max() - 10
    # Silence well inside the pause: no speech within 0.2 s on either side.
    quiet = envelope <= -55
    settled = np.convolve(quiet, np.ones(11), mode="same") == 11
    assert settled.sum() >= 10 and loud.sum() >= 10
    assert np.median(gaps[settled]) < 1.5
    assert np.median(gaps[loud]) > 4 * max(np.median(gaps[settled]), 1.0)


def test_outside_the_lower_face_is_untouched(dubbed, portrait, faces):
    landmarks = faces.detect(portrait)
    box = metrics.lower_face_box(landmarks, portrait.shape)
    mean, _ = metrics.outside_difference(dubbed["frames"], portrait[None], box)
    assert mean < 2.0
    # ...while inside it the mouth really moved.
    top, bottom, left, right = box
    inside = np.abs(dubbed["frames"][:, top:bottom, left:right].astype(int) - portrait[top:bottom, left:right])
    assert inside.mean(axis=(1, 2, 3)).max() > 3.0


def test_chunks_join_without_a_jump(dubbed):
    frames = dubbed["frames"].astype(np.float32)
    steps = np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2, 3))  # steps[i]: frame i -> i + 1
    assert len(dubbed["borders"]) == 2
    for border in dubbed["borders"]:
        jump = steps[border - 1]
        neighbours = np.concatenate([steps[border - 5 : border - 1], steps[border : border + 4]])
        assert jump <= 1.5 * neighbours.max() + 0.05, (border, jump, neighbours)


def test_foreign_context_is_faded_in(generator, portrait, spoken):
    """When the previous chunk came from elsewhere (a fallback), our frames start from its last frame."""
    window = ChunkPlan().chunk(1)
    own = generator.generate(_request(window, portrait, spoken)).frames[: window.num_context]
    plain = generator.generate(_request(window, portrait, spoken, context=own)).frames
    foreign = np.clip(portrait.astype(int) + 30, 0, 255).astype(np.uint8)
    joined = generator.generate(_request(window, portrait, spoken, context=np.stack([foreign] * len(own)))).frames
    assert np.abs(joined[0].astype(int) - foreign).mean() < np.abs(plain[0].astype(int) - foreign).mean() / 2
    assert np.array_equal(joined[FADE_FRAMES:], plain[FADE_FRAMES:])


@pytest.mark.parametrize("image", ["flat", "noise", "coffee"])
def test_no_face_passes_frames_unchanged(generator, spoken, image):
    picture = {"flat": np.full((480, 480, 3), 128, np.uint8),
               "noise": np.random.default_rng(0).integers(0, 256, (480, 480, 3), dtype=np.uint8),
               "coffee": resize_and_centercrop(skimage.data.coffee(), (480, 480))}[image]
    result = generator.generate(_request(ChunkPlan().chunk(0), picture, spoken))
    assert result.info["face_found"] is False and result.info["face_frames"] == 0
    assert result.frames.shape == (81, 480, 480, 3)
    assert (result.frames == picture).all()


def test_video_source_is_followed(generator, faces, portrait, spoken):
    """A panning, slowly zooming camera: each output frame is its source frame outside the mouth."""
    plan = ChunkPlan()
    total = plan.window + plan.stride
    sources = np.stack([_camera(portrait, i) for i in range(total)])
    outputs, context = [], None
    for index in range(2):
        window = plan.chunk(index)
        request = _request(window, sources[window.start_frame], spoken, context=context)
        request.source_frames = sources[window.start_frame : window.end_frame]
        result = generator.generate(request)
        assert result.info["face_found"] and result.info["face_frames"] == request.num_new
        outputs.append(result.frames)
        context = result.frames[-plan.context :]
    output = np.concatenate(outputs)
    boxes = [metrics.lower_face_box(faces.detect(sources[i]), portrait.shape) for i in (0, total - 1)]
    union = (min(b[0] for b in boxes), max(b[1] for b in boxes), min(b[2] for b in boxes), max(b[3] for b in boxes))
    mean, _ = metrics.outside_difference(output, sources, union)
    assert mean < 2.0
    # Not the still reference: the output moves with the camera.
    assert metrics.outside_difference(output[-1:], sources[:1], union)[0] > 5 * max(mean, 0.1)
    envelope = metrics.loudness_envelope(spoken, total)
    assert metrics.correlation(metrics.lip_gaps(output, faces), envelope) >= 0.5


def test_mouth_track_reads_only_its_margins_and_ignores_level(spoken):
    from model.lite.speech import MARGINS, mouth_track_for

    # Modulated noise; louder stretches placed outside the margins change nothing, inside them they do.
    rng = np.random.default_rng(1)
    seconds = np.arange(9 * 16_000) / 16_000
    noise = (rng.standard_normal(seconds.size) * 0.02 * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * seconds)))
    start, end = 3 * 16_000, 6 * 16_000
    first, last = start - round(MARGINS.left * 16_000), end + round(MARGINS.right * 16_000)
    frames = (end - start) // SAMPLES_PER_FRAME

    def track(audio):
        return mouth_track_for(audio.astype(np.float32), 0, start, frames)

    def louder(lo, hi):
        changed = noise.copy()
        changed[lo:hi] *= 10
        return changed

    plain = mouth_track_for(noise[first:last].astype(np.float32), first, start, frames)
    outside = track(louder(0, first)), track(louder(last, None))
    for other in outside:
        assert np.allclose(other.opening, plain.opening, atol=1e-4) and np.allclose(other.width, plain.width, atol=1e-4)
    inside = track(louder(start - 24_000, start - 16_000)), track(louder(end, end + 1_600))
    for other in inside:
        assert np.abs(other.opening - plain.opening).max() > 0.05

    # 20 dB quieter speech moves the mouth the same way.
    whole = mouth_track_for(spoken, 0, 0, 150)
    quiet = mouth_track_for(spoken * 0.1, 0, 0, 150)
    assert np.abs(quiet.opening - whole.opening).mean() < 0.03


def test_vowels_set_the_mouth_width():
    from model.lite.speech import mouth_track_for

    def width(text):
        samples = normalize_loudness(speech(text))
        track = mouth_track_for(samples, 0, 0, samples.size // SAMPLES_PER_FRAME)
        return float(np.mean(track.width[track.opening > 0.3]))

    spread, rounded = width("see"), width("saw")
    assert spread > 0.5 and rounded < -0.5


def _request(window, reference, spoken, context=None) -> ChunkRequest:
    first = max(0, window.start_frame * SAMPLES_PER_FRAME - 40_000)
    last = window.end_frame * SAMPLES_PER_FRAME + 8_000
    audio = AudioTrack(spoken).read(first, last)
    return ChunkRequest(index=0, start_frame=window.start_frame, num_frames=window.num_frames, audio=audio,
                        audio_offset=window.start_frame * SAMPLES_PER_FRAME - first, reference_frame=reference,
                        reference_index=window.start_frame, context_frames=context)


def _camera(image: np.ndarray, index: int) -> np.ndarray:
    """Frame ``index`` of a slow pan (up to 12 px) with a slight zoom, sub-pixel like a real camera."""
    scale = 1.0 + 0.0004 * index
    matrix = cv2.getRotationMatrix2D((240.0, 240.0), 0.0, scale)
    matrix[:, 2] += (0.08 * index, 0.05 * index)
    return cv2.warpAffine(image, matrix, (480, 480), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


@pytest.mark.parametrize("crop", [None, (20, 240, 110, 330), (70, 210, 140, 280)])
def test_warp_fades_out_inside_its_region(faces, crop):
    """At any setting, the border ring of the warped region is the untouched image: no tear, no edge."""
    from model.lite import mouth

    image = skimage.data.astronaut()
    if crop:
        image = image[crop[0] : crop[1], crop[2] : crop[3]]
    image = resize_and_centercrop(image, (480, 480))
    geometry = mouth.measure(image, faces.detect(image))
    top, bottom, left, right = geometry.box
    ring = np.ones((bottom - top, right - left), bool)
    ring[2:-2, 2:-2] = False
    for opening, width in [(1.0, 1.0), (1.0, -1.0), (0.0, 0.0), (0.5, -1.0)]:
        out = mouth.render(image, geometry, opening, width)
        changed = np.abs(out[top:bottom, left:right].astype(int) - image[top:bottom, left:right]).max(axis=2)
        assert changed[ring].max() <= 1, (opening, width)
        assert (out[:top] == image[:top]).all() and (out[bottom:] == image[bottom:]).all()


def test_safe_from_worker_threads(generator, portrait, spoken):
    """Calls from several worker threads on one instance are serialised and give the serial result."""
    from concurrent.futures import ThreadPoolExecutor

    request = _request(ChunkPlan().chunk(0), portrait, spoken)
    serial = generator.generate(request).frames
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda _: generator.generate(request).frames, range(3)))
    assert all(np.array_equal(result, serial) for result in results)


def test_closed_mouth_portrait_opens_with_speech(generator, faces, spoken):
    """A portrait with a closed mouth: the new gap is painted (dark inside, teeth); it follows the speech."""
    portrait = grace_hopper(480)
    result = generator.generate(_request(ChunkPlan().chunk(0), portrait, spoken))
    envelope = metrics.loudness_envelope(spoken, 81)
    assert metrics.correlation(metrics.lip_gaps(result.frames, faces), envelope) >= 0.5
    widest = result.frames[int(np.argmax(metrics.lip_gaps(result.frames, faces)))]
    upper, lower = faces.detect(widest)[list(INNER_LIP_MIDDLE)]
    between = np.s_[int(upper[1]) + 1 : int(lower[1]), int(upper[0]) - 3 : int(upper[0]) + 4]
    assert widest[between].mean() < 0.6 * portrait[between].mean()  # dark inside (some teeth), not lips
