"""The official ``loudness_norm`` (ITU-R BS.1770 integrated, gated, as pyloudnorm measures it) on 16 kHz
speech: in model/ because the generators' conformance checks compare against it and model/ imports
nothing from streaming/ (streaming/audio.py re-exports it and adds the running measure of a live stream).
"""

from __future__ import annotations

import numpy as np
import pyloudnorm
import scipy.signal

from model.base import AUDIO_RATE

TARGET_LUFS = -23.0
# BS.1770 absolute gate: blocks below it are silence.
ABSOLUTE_GATE_LUFS = -70.0


def _k_weighting() -> list[tuple[float, np.ndarray, np.ndarray]]:
    """pyloudnorm's K-weighting stages at 16 kHz as (passband gain, b, a)."""
    return [(stage.passband_gain, stage.b, stage.a) for stage in pyloudnorm.Meter(AUDIO_RATE)._filters.values()]


def _gated_loudness(block_energy: np.ndarray) -> float:
    """BS.1770 gating over mean-square block energies: absolute gate, then the relative gate 10 LU below."""
    if block_energy.size == 0:
        return float("-inf")
    with np.errstate(divide="ignore"):
        block_lufs = -0.691 + 10 * np.log10(block_energy)
        above = block_energy[block_lufs >= ABSOLUTE_GATE_LUFS]
        if above.size == 0:
            return float("-inf")
        relative_gate = -0.691 + 10 * np.log10(above.mean()) - 10
        gated = block_energy[(block_lufs > relative_gate) & (block_lufs > ABSOLUTE_GATE_LUFS)]
        return float(-0.691 + 10 * np.log10(gated.mean())) if gated.size else float("-inf")


def integrated_loudness(samples: np.ndarray, piece_seconds: float = 30.0) -> float:
    """BS.1770 integrated loudness in LUFS (-inf for silence), as pyloudnorm measures it.

    Same filters and the same blocks as ``pyloudnorm.Meter.integrated_loudness`` (400 ms, 75 % overlap,
    its block count and bounds, a last block that may run past the end), computed piece by piece with
    carried filter state so that an hour of speech needs no whole-length float64 copies. Clips shorter
    than one block use one block of their length, as pyloudnorm with that block size.
    """
    total = samples.size
    block = int(0.4 * AUDIO_RATE) if total >= int(0.4 * AUDIO_RATE) else max(total, 1)
    block_seconds = block / AUDIO_RATE
    count = int(np.round((total / AUDIO_RATE - block_seconds) / (block_seconds * 0.25))) + 1
    starts = np.array([int(block_seconds * (j * 0.25) * AUDIO_RATE) for j in range(count)], np.int64)
    ends = np.array([int(block_seconds * (j * 0.25 + 1) * AUDIO_RATE) for j in range(count)], np.int64)
    energy = np.zeros(count, np.float64)
    filters = _k_weighting()
    states = [scipy.signal.lfilter_zi(b, a) * 0.0 for _, b, a in filters]
    step = max(int(piece_seconds * AUDIO_RATE), 1)
    for first in range(0, total, step):
        data = samples[first : first + step].astype(np.float64)
        for i, (gain, b, a) in enumerate(filters):
            data, states[i] = scipy.signal.lfilter(b, a, data, zi=states[i])
            data = data * gain
        sums = np.concatenate([[0.0], np.cumsum(data * data)])
        last = first + data.size
        lo, hi = np.clip(starts, first, last), np.clip(ends, first, last)
        touched = hi > lo
        energy[touched] += sums[hi[touched] - first] - sums[lo[touched] - first]
    return _gated_loudness(energy / block)


def loudness_gain(loudness: float, target: float = TARGET_LUFS) -> float:
    """The official ``loudness_norm`` gain: to ``target`` LUFS; 1 when |loudness| > 100 (silence)."""
    if not np.isfinite(loudness) or abs(loudness) > 100:
        return 1.0
    return float(10.0 ** ((target - loudness) / 20.0))


def normalize_loudness(samples: np.ndarray, target: float = TARGET_LUFS) -> np.ndarray:
    """The official ``loudness_norm``: scale to ``target`` LUFS; unchanged when |loudness| > 100 (silence)."""
    gain = loudness_gain(integrated_loudness(samples), target)
    return (samples.astype(np.float64) * gain).astype(np.float32) if gain != 1.0 else samples.astype(np.float32)


def is_silent_loudness(loudness: float) -> bool:
    """No gating block above BS.1770's absolute gate (-70 LUFS)."""
    return not np.isfinite(loudness) or loudness < ABSOLUTE_GATE_LUFS


def is_silent(samples: np.ndarray) -> bool:
    return is_silent_loudness(integrated_loudness(samples))
