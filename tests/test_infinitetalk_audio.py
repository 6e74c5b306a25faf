"""Audio features: the official window indexing and end padding, and the live sliding window's fidelity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from model.infinitetalk.audio_features import chunk_rows, mirror_padding, pad_mirrored, window_index

FIXTURE_MODEL = Path(__file__).parent / "fixtures" / "conformance" / "public" / "encoders" / "wav2vec2"
SPEECH = Path("/usr/share/codec2/raw/speech_orig_16k.wav")


def official_windows(length: int, frame_num: int = 81, motion: int = 9) -> list[tuple[int, torch.Tensor]]:
    """Row indices the official loop gathers per chunk, simulated with a real padded array of row ids."""
    emb = torch.arange(length)
    start, windows = 0, []
    while True:
        windows.append((start, emb[window_index(start, frame_num, emb.shape[0])]))
        if start + frame_num >= length and len(windows) > 1 or (len(windows) == 1 and frame_num >= length):
            break
        start += frame_num - motion
        end = start + frame_num
        if end >= length:
            emb = pad_mirrored(emb, mirror_padding(end, length))
            windows.append((start, emb[window_index(start, frame_num, emb.shape[0])]))
            break
    return windows


@pytest.mark.parametrize("length", [82, 100, 153, 154, 250, 400])
def test_chunk_rows_follow_the_official_clamp_and_mirror(length):
    for start, expected in official_windows(length):
        assert torch.equal(chunk_rows(start, 81, length), expected), (length, start)


def test_live_rows_have_no_end():
    rows = chunk_rows(72, 81, None)
    assert rows.min() == 70 and rows.max() == 72 + 80 + 2


@pytest.mark.skipif(not SPEECH.exists(), reason="codec2 speech sample not installed")
def test_sliding_window_features_stay_close_to_whole_file():
    """Chosen margins (8 s context, 1 s lookahead), tiny random wav2vec2 of the fixtures, real speech: the
    features the DiT reads per (frame, row) keep cosine >= 0.9 with the whole-file ones (mean >= 0.99);
    with no context at all they are measurably worse. A random model is only a proxy for the real one."""
    from bench.bench_infinitetalk_audio_window import fidelity, load_encoder
    from streaming.audio import load_audio, normalize_loudness

    torch.set_num_threads(2)
    encoder = load_encoder(str(FIXTURE_MODEL))
    speech = normalize_loudness(load_audio(SPEECH))
    chosen = fidelity(encoder, speech, 8.0, 1.0)
    starved = fidelity(encoder, speech, 0.08, 0.08)
    assert chosen.min() >= 0.9 and chosen.mean() >= 0.99
    assert starved.mean() < chosen.mean() - 0.005
    assert np.isfinite(chosen).all()
