"""Mouth parameters from speech: per output frame, how far the mouth opens and how wide it is.

Cues (all from the audio itself, no models):
- opening: level of the voiced band (150-3500 Hz) relative to the recent speech peak, so it follows
  syllables, stays shut in pauses, opens less on sibilants (their energy lies above the band) and does not
  depend on the absolute level of the track;
- width: from the first two formants (linear prediction on the 0-4 kHz band): a high second formant
  means spread lips (ee, eh), a low one with a low first formant rounded lips (aw, oh, w); a low second
  formant with a high first one is an open, unrounded vowel (ah) and stays near neutral.

Every value is a function of absolute time: analysis frames sit on a grid aligned to sample 0 of the
stream and every value reads a bounded span of audio around its frame, which the audio margins cover.
Two chunks therefore agree (to float rounding) on the frames they share: chunk borders join by construction.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.ndimage

from model.base import AUDIO_RATE, SAMPLES_PER_FRAME, AudioMargins, ChunkRequest

HOP = 160  # 10 ms analysis hop; divides SAMPLES_PER_FRAME
WINDOW = 400  # 25 ms analysis window
FFT = 512
PEAK_SPAN = (2.0, 0.1)  # seconds before / after a frame over which the reference (peak) level is taken
SMOOTH_SIGMA = 0.025  # seconds: smooth, and about 60 ms from closed to open
WIDTH_SIGMA = 0.04  # seconds: the width changes a little more slowly than the opening
TRUNCATE = 3.0  # Gaussian smoothing reads this many sigmas either side
LEAD = 0.03  # seconds: lips move slightly ahead of the sound they make
DYNAMIC_RANGE_DB = 30.0  # levels this far below the recent peak close the mouth
SILENCE_DBFS = -55.0  # a peak level below this is silence: nothing to say
# Audio the analysis reads around the window (seconds): peak span, both smoothings, lead, analysis window.
_REACH = TRUNCATE * (SMOOTH_SIGMA + WIDTH_SIGMA) + WINDOW / 2 / AUDIO_RATE + 0.01
MARGINS = AudioMargins(left=round(PEAK_SPAN[0] + _REACH, 2), right=round(PEAK_SPAN[1] + LEAD + _REACH, 2))


@dataclasses.dataclass
class MouthTrack:
    """Per output frame: ``opening`` 0 (shut) .. 1 (wide open), ``width`` -1 (rounded) .. +1 (spread)."""

    opening: np.ndarray
    width: np.ndarray


def band_mask(low: float, high: float) -> np.ndarray:
    freqs = np.fft.rfftfreq(FFT, 1.0 / AUDIO_RATE)
    return (freqs >= low) & (freqs < high)


VOICED = band_mask(150, 3500)
LPC_ORDER = 10  # for the 0-4 kHz band seen as an 8 kHz signal: up to five formants
LPC_BINS = FFT // 4 + 1  # spectrum bins up to 4 kHz
LAG_WINDOW = np.exp(-0.5 * (2 * np.pi * 60.0 / 8000.0 * np.arange(LPC_ORDER + 1)) ** 2)  # 60 Hz smoothing


def mouth_track(request: ChunkRequest) -> MouthTrack:
    """Mouth parameters for every frame of the request's window (context frames included)."""
    window_start = request.start_frame * SAMPLES_PER_FRAME
    return mouth_track_for(request.audio, window_start - request.audio_offset, window_start, request.num_frames)


def mouth_track_for(audio: np.ndarray, audio_start: int, window_start: int, num_frames: int) -> MouthTrack:
    """``audio`` begins at absolute sample ``audio_start``; frames start at absolute ``window_start``."""
    left = round(MARGINS.left * AUDIO_RATE)
    right = round(MARGINS.right * AUDIO_RATE)
    # Analysis grid: frame j is centred on absolute sample HOP * j.
    first_hop = (window_start - left) // HOP
    last_hop = -(-(window_start + num_frames * SAMPLES_PER_FRAME + right) // HOP)
    span_start = first_hop * HOP - WINDOW // 2
    buffer = np.zeros((last_hop - first_hop) * HOP + WINDOW, np.float32)
    # Copy what we have; zeros elsewhere (before the stream, or margins the caller did not supply).
    lo = max(audio_start, span_start)
    hi = min(audio_start + audio.size, span_start + buffer.size)
    if hi > lo:
        buffer[lo - span_start : hi - span_start] = audio[lo - audio_start : hi - audio_start]
    frames = np.lib.stride_tricks.sliding_window_view(buffer, WINDOW)[::HOP]
    spectrum = np.abs(np.fft.rfft(frames * np.hanning(WINDOW).astype(np.float32), FFT)) ** 2

    voiced_db = _db(spectrum[:, VOICED].sum(axis=1))
    first_formant, second_formant = formants(spectrum)

    sigma = SMOOTH_SIGMA * AUDIO_RATE / HOP
    smooth_db = scipy.ndimage.gaussian_filter1d(voiced_db, sigma, mode="nearest", truncate=TRUNCATE)
    # Reference level: the loudest recent speech (a running maximum, itself smoothed).
    before, after = (round(s * AUDIO_RATE / HOP) for s in PEAK_SPAN)
    peak = scipy.ndimage.maximum_filter1d(smooth_db, before + after + 1, origin=(before - after) // 2,
                                          mode="nearest")
    peak = np.maximum(peak, SILENCE_DBFS)
    opening = np.clip((smooth_db - (peak - DYNAMIC_RANGE_DB)) / DYNAMIC_RANGE_DB, 0.0, 1.0)
    opening = opening ** 1.5  # quiet speech (consonants, trailing syllables) opens only a little

    # Width only means something while voiced: weigh the balance by the opening before smoothing.
    spread = np.clip((second_formant - 1450.0) / 450.0, -1.0, 1.0)
    # Low F2 with a high F1 is an open unrounded vowel (ah): keep it from reading as rounded.
    spread = np.where(spread < 0, spread * np.clip((700.0 - first_formant) / 200.0, 0.0, 1.0), spread)
    width_sigma = WIDTH_SIGMA * AUDIO_RATE / HOP
    weight = scipy.ndimage.gaussian_filter1d(opening, width_sigma, mode="nearest", truncate=TRUNCATE) + 1e-3
    width = scipy.ndimage.gaussian_filter1d(spread * opening, width_sigma, mode="nearest", truncate=TRUNCATE)
    width /= weight
    width *= np.minimum(1.0, weight / 0.2)

    # Sample both at the output frames' centres, a little ahead of the sound.
    centres = window_start + SAMPLES_PER_FRAME * (np.arange(num_frames) + 0.5) + LEAD * AUDIO_RATE
    grid = HOP * np.arange(first_hop, last_hop + 1, dtype=np.float64)[: opening.size]
    return MouthTrack(np.interp(centres, grid, opening).astype(np.float32),
                      np.interp(centres, grid, width).astype(np.float32))


# Band power -> mean square of the signal in that band (one-sided spectrum of a Hann-windowed frame).
POWER_SCALE = 2.0 / (FFT * float(np.sum(np.hanning(WINDOW) ** 2)))


def formants(spectrum: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and second formant (Hz) per analysis frame, by linear prediction on the 0-4 kHz band.

    The band's power spectrum is read as that of an 8 kHz signal, its inverse transform gives the
    autocorrelation, Levinson-Durbin the predictor (all frames at once), the companion matrices' eigenvalues
    its poles; formants are the poles above 150 Hz with bandwidths under 500 Hz, lowest first.
    """
    autocorrelation = np.fft.irfft(spectrum[:, :LPC_BINS], axis=1)[:, : LPC_ORDER + 1] * LAG_WINDOW
    autocorrelation[:, 0] = autocorrelation[:, 0] * 1.0001 + 1e-12  # white-noise floor: a stable predictor
    count = autocorrelation.shape[0]
    predictor = np.zeros((count, LPC_ORDER + 1))
    predictor[:, 0] = 1.0
    error = autocorrelation[:, 0].copy()
    for i in range(1, LPC_ORDER + 1):
        reflection = -(autocorrelation[:, i] + np.sum(predictor[:, 1:i] * autocorrelation[:, i - 1 : 0 : -1], axis=1))
        reflection /= error
        predictor[:, 1:i] += reflection[:, None] * predictor[:, i - 1 : 0 : -1].copy()
        predictor[:, i] = reflection
        error *= 1.0 - reflection * reflection
    companion = np.zeros((count, LPC_ORDER, LPC_ORDER))
    companion[:, 0, :] = -predictor[:, 1:]
    companion[:, np.arange(1, LPC_ORDER), np.arange(LPC_ORDER - 1)] = 1.0
    poles = np.linalg.eigvals(companion)
    frequency = np.angle(poles) * 8000.0 / (2 * np.pi)
    bandwidth = -np.log(np.abs(poles) + 1e-12) * 8000.0 / np.pi
    frequency = np.where((frequency > 150.0) & (bandwidth < 500.0), frequency, np.inf)
    frequency.sort(axis=1)
    lowest = np.where(np.isfinite(frequency[:, :2]), frequency[:, :2], 1450.0)  # none: neutral
    return lowest[:, 0], lowest[:, 1]


def _db(power: np.ndarray) -> np.ndarray:
    """dB relative to full scale (a full-scale square wave is 0 dB)."""
    return 10.0 * np.log10(power * POWER_SCALE + 1e-12)
