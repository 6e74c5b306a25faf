"""How close live (sliding-window) wav2vec2 features are to the official whole-file features.

For every chunk of a speech file (81-frame windows, stride 72, as the engine cuts them) the generator's
features are computed from the audio the engine hands it (left context + lookahead, zeros past the end)
and compared with what the official code feeds the DiT (whole-file features, same windows and end
handling): cosine similarity per (frame, window row) over the layers x hidden vector; min / mean / p1.

    python bench/bench_infinitetalk_audio_window.py [--model DIR|random-base] [--speech WAV]

``DIR`` is a wav2vec2 folder (default: the tiny random model of the conformance fixtures); ``random-base``
builds the wav2vec2-base architecture (12 x 768, conv positional kernel 128, as chinese-wav2vec2-base)
with random weights. Random weights are only a proxy for the real chinese-wav2vec2-base: the receptive
field is the architecture's, but how much a trained model relies on far context is not.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from model.base import AudioMargins
from model.infinitetalk.audio_features import SAMPLES_PER_FRAME, Wav2VecEncoder, chunk_features, chunk_rows
from streaming.audio import load_audio, normalize_loudness
from streaming.chunker import ChunkPlan, frames_for_samples
from streaming.engine import AudioTrack

FIXTURE_MODEL = Path(__file__).parents[1] / "tests/fixtures/conformance/public/encoders/wav2vec2"
SPEECH = "/usr/share/codec2/raw/speech_orig_16k.wav"


def load_encoder(model: str) -> Wav2VecEncoder:
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    if model == "random-base":
        torch.manual_seed(0)
        return Wav2VecEncoder(Wav2Vec2Model(Wav2Vec2Config()).eval(), Wav2Vec2FeatureExtractor(do_normalize=True))
    return Wav2VecEncoder(Wav2Vec2Model.from_pretrained(model, local_files_only=True),
                          Wav2Vec2FeatureExtractor.from_pretrained(model, local_files_only=True))


def fidelity(encoder: Wav2VecEncoder, speech: np.ndarray, left: float, right: float) -> np.ndarray:
    """Cosine similarity of every (frame, row) the DiT reads, live vs whole-file, over all chunks."""
    total = frames_for_samples(speech.size)
    whole = encoder.embed(speech)
    plan, margins, track = ChunkPlan(), AudioMargins(left, right), AudioTrack(speech)
    scores = []
    for chunk in plan.chunks(total):
        first, last, _ = plan.audio_span(chunk, margins)
        live = chunk_features(encoder, track.read(first, last), first, chunk.start_frame, chunk.num_frames, total)
        official = whole[chunk_rows(chunk.start_frame, chunk.num_frames, total)]
        scores.append(torch.nn.functional.cosine_similarity(live.flatten(2), official.flatten(2), dim=-1).flatten())
    return torch.cat(scores).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(FIXTURE_MODEL))
    parser.add_argument("--speech", default=SPEECH)
    parser.add_argument("--repeat", type=int, default=1, help="tile the speech N times (a longer stream)")
    parser.add_argument("--left", type=float, nargs="+", default=[1.0, 2.0, 4.0, 8.0])
    parser.add_argument("--right", type=float, nargs="+", default=[0.08, 0.5, 1.0, 2.0])
    args = parser.parse_args()
    torch.set_num_threads(2)
    encoder = load_encoder(args.model)
    speech = normalize_loudness(np.tile(load_audio(args.speech), args.repeat))
    print(f"model {args.model}; speech {args.speech}: {speech.size / 16000:.1f} s, "
          f"{frames_for_samples(speech.size)} frames; cosine per (frame, window row), live vs whole-file")
    print(f"{'left s':>7} {'ahead s':>8} {'min':>7} {'p1':>7} {'mean':>7} {'s/run':>6}")
    for left in args.left:
        for right in args.right:
            started = time.perf_counter()
            cos = fidelity(encoder, speech, left, right)
            print(f"{left:7.2f} {right:8.2f} {cos.min():7.4f} {np.percentile(cos, 1):7.4f} {cos.mean():7.4f} "
                  f"{time.perf_counter() - started:6.1f}")


if __name__ == "__main__":
    main()
