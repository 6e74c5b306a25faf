"""The chunk's critical path overlapped, on a tiny random official-layout model on the CPU: chunk k+1 is
prepared (wav2vec2, CLIP, VAE of the reference, noise) while chunk k's DiT runs; with
``motion_source=latents`` chunk k+1's DiT runs while chunk k decodes. Overlap is shown by the order of
stage events (an observer holds one stage until the overlapping one has happened: without overlap it
would wait in vain), never by timing; results equal the sequential ones exactly."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
import torch

from it_weights import write_weights
from model.base import ChunkRequest

STRIDE, WINDOW, CONTEXT = 12, 17, 5
WAIT = 300.0  # seconds an observer waits for the overlapping stage before declaring there is none


class Observer:
    """Records (stage event, chunk) from any thread; can hold one event until another has happened."""

    def __init__(self, hold: tuple[str, int] | None = None, until: tuple[str, int] | None = None) -> None:
        self.events: list[tuple[str, int]] = []
        self.hold, self.until = hold, until
        self.held_ok: bool | None = None
        self._changed = threading.Condition()

    def __call__(self, name: str, index: int) -> None:
        with self._changed:
            self.events.append((name, index))
            self._changed.notify_all()
            if (name, index) == self.hold:
                self.held_ok = self._changed.wait_for(lambda: self.until in self.events, timeout=WAIT)

    def position(self, name: str, index: int) -> int:
        return self.events.index((name, index))


@pytest.fixture(scope="module")
def generator(tmp_path_factory):
    from model.infinitetalk.generator import build_generator

    torch.set_num_threads(2)
    weights = write_weights(tmp_path_factory.mktemp("weights"))
    gen = build_generator(weights=str(weights), device="cpu", steps=2, audio_context=1.0, audio_lookahead=0.2)
    yield gen
    gen.close()


def request(index: int, context: np.ndarray | None = None) -> ChunkRequest:
    rng = np.random.default_rng(7)
    audio = (rng.standard_normal(16000 * 4) * 0.1).astype(np.float32)
    references = rng.integers(0, 255, (3, 64, 64, 3), dtype=np.uint8)  # a new keyframe every chunk (video)
    start = index * STRIDE
    return ChunkRequest(index=index, start_frame=start, num_frames=WINDOW, audio=audio,
                        audio_offset=start * 640, reference_frame=references[index], reference_index=start,
                        context_frames=context, audio_end_frame=90, seed=42 + index, color_strength=1.0)


def run_chain(gen, chunks: int = 2, prefetch: bool = False) -> list[np.ndarray]:
    """The offline engine's order: prefetch(0), then prefetch(k+1) (without context) before generate(k)."""
    outputs, context = [], None
    if prefetch:
        gen.prefetch(request(0))
    for index in range(chunks):
        if prefetch and index + 1 < chunks:
            gen.prefetch(request(index + 1))
        frames = gen.generate(request(index, context)).frames
        outputs.append(frames)
        context = frames[-CONTEXT:]
    return outputs


def with_mode(gen, motion_source: str, events=None):
    gen.options = dataclasses.replace(gen.options, motion_source=motion_source)
    gen.events = events
    gen._held = None
    return gen


def sequential_and_overlapped(gen, motion_source: str, observer: Observer) -> list[np.ndarray]:
    """The chain without prefetch, then with it (observed): equal frames; returns the frames."""
    plain = run_chain(with_mode(gen, motion_source))
    overlapped = run_chain(with_mode(gen, motion_source, observer), prefetch=True)
    assert observer.held_ok, f"{observer.until} did not happen while {observer.hold} was held: {observer.events}"
    for a, b in zip(plain, overlapped):
        assert np.array_equal(a, b)
    return plain


def test_next_chunk_is_prepared_while_this_chunk_runs_and_results_are_unchanged(generator):
    observer = Observer(hold=("dit_start", 0), until=("prepare_end", 1))
    sequential_and_overlapped(generator, "frames", observer)
    assert observer.position("prepare_start", 1) < observer.position("dit_end", 0)
    assert observer.events.count(("dit_start", 1)) == 1
    # chunk 1's critical stage did not prepare again: exactly one prepare per chunk
    # one prepare per chunk, never two at once (they share wav2vec2's and the audio projection's hooks)
    assert [e for e in observer.events if e[0].startswith("prepare")] == [
        ("prepare_start", 0), ("prepare_end", 0), ("prepare_start", 1), ("prepare_end", 1)]
    # the official motion path re-encodes the context frames on the critical path
    assert observer.position("dit_end", 0) < observer.position("motion_start", 1) < observer.position("dit_start", 1)


def test_latent_motion_runs_the_next_dit_beside_this_decode(generator):
    observer = Observer(hold=("decode_start", 0), until=("dit_start", 1))
    plain = sequential_and_overlapped(generator, "latents", observer)
    assert observer.position("dit_start", 1) < observer.position("decode_end", 0)
    assert ("motion_start", 1) not in observer.events  # no decode-then-encode round trip
    assert observer.events.count(("dit_start", 1)) == 1  # the DiT run ahead was the one used
    official = run_chain(with_mode(generator, "frames"))
    assert np.array_equal(official[0], plain[0])  # the first chunk has no motion from before
    assert not np.array_equal(official[1], plain[1])  # the deviation changes what follows


def test_latent_motion_falls_back_to_the_official_encode_when_the_context_is_not_its_own(generator):
    gen = with_mode(generator, "latents")
    gen.generate(request(0))
    foreign = np.full((CONTEXT, 64, 64, 3), 128, np.uint8)  # e.g. a live fallback filled chunk 0's slot
    observer = Observer()
    gen.events = observer
    result = gen.generate(request(1, foreign)).frames
    assert ("motion_start", 1) in observer.events
    assert np.array_equal(result, with_mode(generator, "frames").generate(request(1, foreign)).frames)


def test_a_prefetch_for_another_request_is_not_used(generator):
    expected = with_mode(generator, "frames").generate(request(0)).frames
    observer = Observer()
    generator.events = observer
    generator.prefetch(dataclasses.replace(request(0), seed=1))  # not the chunk 0 that comes
    assert np.array_equal(generator.generate(request(0)).frames, expected)
    assert observer.events.count(("prepare_start", 0)) == 2  # the prefetched one, then the right one
