"""Sessions on one source share its face analysis (model/lite/analysis.py): N sessions of the ``lite``
generator on one shared clip track each source frame's face once, and get exactly what one session alone
gets; N source-size sessions find each chunk's face once and choose the same regions as a finder alone.
Counted with counting wrappers around the real mediapipe graphs (no timing)."""

from __future__ import annotations

import gc
import threading
import weakref

import cv2
import numpy as np
import pytest

from model.lite import build
from model.lite.analysis import SourceAnalysis
from model.lite.face import FaceLandmarks
from streaming.audio import normalize_loudness
from streaming.chunker import ChunkPlan
from streaming.engine import AudioTrack, ChunkEngine
from streaming.region import RegionFinder
from streaming.regionsource import RegionSource
from streaming.sharedsource import SharedClip
from tests.media import astronaut, speech

PLAN = ChunkPlan(window=21, context=5)  # short chunks: the test is about who analyses, not how well
CHUNKS = 3
SIZE = 256


class CountingFaces:
    """A real FaceLandmarks whose landmark runs are counted (by kind)."""

    def __init__(self, max_faces: int = 1) -> None:
        self._faces = FaceLandmarks(max_faces=max_faces)
        self.max_faces = max_faces
        self.tracks = 0
        self.detects = 0

    def track(self, image):
        self.tracks += 1
        return self._faces.track(image)

    def detect(self, image):
        self.detects += 1
        return self._faces.detect(image)

    def detect_all(self, image):
        return self._faces.detect_all(image)

    def close(self):
        self._faces.close()


def _camera(image: np.ndarray, index: int) -> np.ndarray:
    """Frame ``index`` of a slow pan with a slight zoom (the face moves: tracking matters)."""
    matrix = cv2.getRotationMatrix2D((SIZE / 2, SIZE / 2), 0.0, 1.0 + 0.001 * index)
    matrix[:, 2] += (0.3 * index, 0.2 * index)
    return cv2.warpAffine(image, matrix, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


@pytest.fixture(scope="module")
def frames():
    portrait = astronaut(SIZE)
    return [_camera(portrait, i) for i in range(PLAN.chunk(CHUNKS - 1).end_frame)]


@pytest.fixture(scope="module")
def spoken():
    return AudioTrack(normalize_loudness(speech("Good evening, and welcome to the news.")))


def _clip(frames, made: list) -> SharedClip:
    clip = SharedClip([f.copy() for f in frames], False, 72)

    def make_faces(max_faces):
        made.append(CountingFaces(max_faces))
        return made[-1]

    clip.analysis.of_clip = SourceAnalysis(weakref.proxy(clip), make_faces)
    return clip


def test_a_shared_clip_is_freed_by_reference_counting_once_analysed(frames):
    """No cycle between a clip and its analysis: its frames go back as its last session lets go."""
    gc.collect()
    gc.disable()
    try:
        clip = SharedClip([f.copy() for f in frames[:2]], False, 72)
        assert clip.analysis.tracked(1) is not None  # the analysis has read the clip
        gone = weakref.ref(clip)
        del clip
        assert gone() is None
    finally:
        gc.enable()


def _dub(engines: list[ChunkEngine], spoken) -> list[list[np.ndarray]]:
    """Each engine's chunks, requested in turn chunk by chunk (sessions running side by side)."""
    outputs = [[] for _ in engines]
    for index in range(CHUNKS):
        for engine, output in zip(engines, outputs):
            request = engine.request(index, spoken)
            output.append(engine.accept(request, engine.generator.generate(request)))
    return outputs


def test_sessions_on_one_clip_track_each_frame_once_and_match_one_session_alone(frames, spoken):
    alone_made, shared_made = [], []
    generators = [build() for _ in range(4)]
    try:
        alone = ChunkEngine(_clip(frames, alone_made), generators[0], PLAN)
        shared = _clip(frames, shared_made)
        sessions = [ChunkEngine(shared, generator, PLAN) for generator in generators[1:]]
        own_tracks = [CountingFaces() for _ in generators]
        for generator, counter in zip(generators, own_tracks):
            assert generator._own_faces is None  # made when first needed: shared landmarks never need it
            generator._own_faces = counter  # the generator's own tracker: it must not run
        (expected,) = _dub([alone], spoken)
        outputs = _dub(sessions, spoken)
    finally:
        for generator in generators:
            generator.close()
    analysed = PLAN.chunk(CHUNKS - 1).end_frame  # every frame of every window, once
    assert [faces.tracks for faces in shared_made] == [analysed]
    assert [faces.tracks for faces in alone_made] == [analysed]
    assert [counter.tracks for counter in own_tracks] == [0] * len(generators)
    for output in outputs:
        assert all(np.array_equal(a, b) for a, b in zip(output, expected))
    # The analysis found the face and the generator animated it (the output is not the source).
    assert not np.array_equal(expected[1], np.stack(frames[PLAN.chunk(1).new_start : PLAN.chunk(1).end_frame]))


def test_a_generator_without_shared_landmarks_tracks_its_own(frames, spoken):
    """A source without an analysis (a decoder of its own) leaves the tracking to the generator."""

    class PlainSource:  # VideoSource's surface over held frames
        is_still, size = False, (SIZE, SIZE)

        def frame(self, index):
            return frames[index]

        def frames(self, start, count):
            return np.stack(frames[start : start + count])

        def release_before(self, index):
            pass

    generator = build()
    try:
        counter = CountingFaces()
        generator._own_faces = counter
        engine = ChunkEngine(PlainSource(), generator, PLAN)
        request = engine.request(0, spoken)
        assert request.source_landmarks is None
        generator.generate(request)
    finally:
        generator.close()
    assert counter.tracks == PLAN.window


def test_source_size_sessions_find_each_face_once_and_choose_the_same_regions(frames):
    wide = [np.pad(f, ((40, 40), (120, 120), (0, 0)), mode="edge") for f in frames]  # a 336x496 "programme"
    made: list = []
    clip = _clip(wide, made)
    sessions = [RegionSource(clip, RegionFinder("face", any_size=True), PLAN) for _ in range(3)]
    alone_finder = RegionFinder("face", any_size=True)
    try:
        for index in range(CHUNKS):
            chosen = {source.framing(index) for source in sessions}
            assert chosen == {alone_finder.choose([wide[PLAN.chunk(index).start_frame]])}
            assert next(iter(chosen)).found
    finally:
        alone_finder.close()
    (detector,) = made
    assert detector.detects == CHUNKS  # each chunk's first frame, once for the three sessions


def test_analysis_is_bounded_by_frame_index_and_computed_once_across_threads(frames):
    made: list = []

    class Frames:
        def frame(self, index):
            return frames[index]

    analysis = SourceAnalysis(Frames(), lambda max_faces: made.append(CountingFaces(max_faces)) or made[-1])
    results: dict[int, list] = {}

    def session(name: int) -> None:
        results[name] = [analysis.tracked(i) for i in range(20)]

    threads = [threading.Thread(target=session, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert made[0].tracks == 20  # three sessions, each frame once
    assert all(np.array_equal(a, b) for r in results.values() for a, b in zip(r, results[0]))
    assert analysis.held() == 20
    analysis.release_before(15)
    assert analysis.held() == 5
    assert np.array_equal(analysis.tracked(18), results[0][18])  # still held: not run again
    assert made[0].tracks == 20
    analysis.tracked(30)  # ahead: every frame up to it is tracked once, in order
    assert made[0].tracks == 31 and analysis.held() == 16
    analysis.close()


async def test_two_live_sessions_on_one_clip_analyse_each_frame_once(frames):
    """Two live sessions (virtual clock, lite on threads) on one shared clip: every chunk animated on the
    analysis's landmarks, and no frame analysed twice (warm-up and prefetch included)."""
    from _server_support import audio_frame, speech_48k
    from streaming.clock import InlineExecutor, VirtualClock
    from streaming.ingest import PLAYOUT_RATE
    from streaming.session import LiveSession, SessionSettings
    from streaming.pool import GeneratorPool
    from streaming.workers import GeneratorSpec

    clock = VirtualClock()
    made: list = []
    clip = _clip(frames, made)
    pools = [GeneratorPool(GeneratorSpec.from_registry("lite", {}), mode="thread", clock=clock.now,
                           executor=InlineExecutor()) for _ in range(2)]
    events: list[list] = [[], []]
    try:
        for pool in pools:
            await pool.start()
        sessions = [LiveSession(f"s{n}", clip, "clip", pool, SessionSettings(delay=1.0), events[n].append, clock=clock,
                                plan=ChunkPlan(window=9, context=3), executor=InlineExecutor(), warm=True)
                    for n, pool in enumerate(pools)]
        for session in sessions:
            await session.start()
        speech = speech_48k(1.2)
        for k in range(len(speech) // 960):
            for session in sessions:
                session.receive_audio(audio_frame(speech[k * 960 : (k + 1) * 960], k * 960))
            await clock.advance(960 / PLAYOUT_RATE)
        for session in sessions:
            session.end_ingest()
        while any(session.state != "ended" for session in sessions):
            await clock.advance(0.02)
    finally:
        for pool in pools:
            await pool.close()
    analysis = clip.analysis.of_clip
    (tracker,) = made
    assert tracker.tracks == analysis.runs == analysis.held() >= 30  # each frame once, for both sessions
    for session_events in events:
        chunks = [e for e in session_events if type(e).__name__ == "ChunkDone"]
        assert len(chunks) >= 3 and all(c.status == "on_time" and c.info.get("face_found") for c in chunks)


def _programme_sessions(frames, sessions: int, made: list, count: int = 48):
    """A programme's frames pushed to ``sessions`` sessions that joined 0, 7, 14... frames apart (each
    on its own capture timeline); each session's windows' analysis, and the programme's analysis."""
    import av

    from streaming.livesource import LiveVideoSource
    from streaming.programmeanalysis import ProgrammeAnalysis

    analysis = ProgrammeAnalysis(capacity=40, make_faces=lambda max_faces: made.append(CountingFaces(max_faces))
                                 or made[-1])
    sources = [LiveVideoSource((SIZE, SIZE), analysis=analysis) for _ in range(sessions)]
    for number, image in enumerate(frames[:count]):
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        analysis.add(frame)
        for joined, source in enumerate(sources):
            if number >= 7 * joined:
                source.push(frame, (number - 7 * joined + 0.5) / 25)  # mid-slot: no float edge
    return sources, analysis


def test_sessions_on_one_programme_track_each_frame_once_and_match_one_session_alone(frames):
    made: list = []
    sources, analysis = _programme_sessions(frames, 3, made)
    landmarks = []
    for joined, source in enumerate(sources):
        first = 40 - 7 * joined - 16  # the same programme frames 24..40, at each session's own indices
        window = source.window(first, first + 16)
        landmarks.append([window.analysis.tracked(i) for i in range(first, first + 16)])
    alone_made: list = []
    (alone,), _ = _programme_sessions(frames, 1, alone_made)
    window = alone.window(24, 40)
    expected = [window.analysis.tracked(i) for i in range(24, 40)]
    assert [faces.tracks for faces in made] == [16] and [faces.tracks for faces in alone_made] == [16]
    assert all(points is not None for points in expected)
    for session in landmarks:
        assert all(np.array_equal(a, b) for a, b in zip(session, expected))
    # Bounded: the programme keeps its last 40 frames, the analysis no more of them.
    assert analysis.at_size((SIZE, SIZE)).held() <= 40


def test_a_live_window_hands_the_programme_landmarks_to_the_generator(frames, spoken):
    made: list = []
    (source,), _ = _programme_sessions(frames, 1, made, count=PLAN.window)
    engine = ChunkEngine(source.window(0, PLAN.window), build(), PLAN)
    try:
        request = engine.request(0, spoken)
    finally:
        engine.generator.close()
    assert request.source_landmarks is not None and len(request.source_landmarks) == PLAN.window
    assert made[0].tracks == PLAN.window
    # A frame the programme no longer keeps (over its capacity): the window leaves tracking to the generator.
    (source,), _ = _programme_sessions(frames, 1, [], count=48)
    assert source.window(0, PLAN.window).analysis is None
