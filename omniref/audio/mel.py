"""Waveform -> log-mel features, exactly as Qwen3-Omni's processor computes them
(transformers' `WhisperFeatureExtractor`).

The processor is Whisper's feature extractor with 128 mel bins, `n_fft` 400 (25 ms), hop 160 (10 ms) at
16 kHz, no dither, padding to the longest clip of the call and no truncation. The chain, one function each:

    waveform --frame_signal--> frames --power_spectrum--> |X|^2 --mel_filter_bank @--> mel energies
             --log_mel--> log10, clamp to (clip max - 8), (x + 4) / 4          (+ mfcc: DCT of the log-mel)

Legend (dimension letters used in the shape comments of this module):
    B  clips in one extractor call          N  samples of a clip (16 kHz)
    T  frames (one every `hop_length` samples)
    W  window length = n_fft samples        K  frequency bins of the one-sided spectrum = n_fft // 2 + 1
    M  mel bins (num_mel_bins, 128)         C  cepstral coefficients (MFCC)

Numerics: everything is computed in float64 and rounded to float32 at the end. The reference runs its STFT in
float32; the difference (~1e-5 relative) sits in bins near the -8 decade floor, far inside the 1e-4 tolerance.
"""

from __future__ import annotations

import numpy as np


# Whisper / Qwen3-Omni processor settings (Hub preprocessor_config.json); a case's meta.json may override them.
SAMPLING_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
NUM_MEL_BINS = 128

# Slaney mel scale constants: linear (3 mel per 200 Hz) below 1 kHz, logarithmic above it, with a step
# chosen so that 6.4 kHz (= 1 kHz * 6.4) lies exactly 27 mel above 1 kHz (15 mel).
_MIN_LOG_HERTZ = 1000.0
_MIN_LOG_MEL = 15.0
_LOG_STEP = 27.0 / np.log(6.4)


# ----------------------------------------------------------------------------------------------------------
# The mel scale and its filterbank
# ----------------------------------------------------------------------------------------------------------
def hertz_to_mel(freq):
    """Slaney mel scale: `3 f / 200` below 1 kHz, `15 + 27 ln(f / 1000) / ln(6.4)` above.  [...] -> [...]"""
    freq = np.asarray(freq, dtype=np.float64)
    linear = 3.0 * freq / 200.0
    # np.maximum keeps log() finite for the (unused) low branch; the where picks the right branch per element.
    log = _MIN_LOG_MEL + np.log(np.maximum(freq, _MIN_LOG_HERTZ) / _MIN_LOG_HERTZ) * _LOG_STEP
    return np.where(freq >= _MIN_LOG_HERTZ, log, linear)


def mel_to_hertz(mels):
    """Inverse of `hertz_to_mel`: `200 m / 3` below 15 mel, `1000 exp((m - 15) ln(6.4) / 27)` above.  [...] -> [...]"""
    mels = np.asarray(mels, dtype=np.float64)
    linear = 200.0 * mels / 3.0
    log = _MIN_LOG_HERTZ * np.exp((np.maximum(mels, _MIN_LOG_MEL) - _MIN_LOG_MEL) / _LOG_STEP)
    return np.where(mels >= _MIN_LOG_MEL, log, linear)


def fft_frequencies(n_fft=N_FFT, sampling_rate=SAMPLING_RATE):
    """Centre frequency in Hz of each one-sided FFT bin: 0 .. sr/2 in K = n_fft//2 + 1 steps.  -> [K]"""
    return np.linspace(0.0, sampling_rate // 2, n_fft // 2 + 1)


def mel_filter_bank(num_mel_bins=NUM_MEL_BINS, n_fft=N_FFT, sampling_rate=SAMPLING_RATE,
                    min_frequency=0.0, max_frequency=None):
    """Triangular filters on the Slaney mel scale, Slaney area-normalised.  -> [K, M]

    M + 2 edge frequencies are equally spaced in mel between `min_frequency` and `max_frequency` (default
    sr/2). Filter m rises linearly from edge m to edge m+1 (its peak, value 1 before normalisation) and
    falls back to 0 at edge m+2. Each filter is then scaled by `2 / (f_right - f_left)` so that its area in
    Hz is 1: wide high-frequency filters do not collect more energy than narrow low ones.
    """
    if max_frequency is None:
        max_frequency = sampling_rate / 2.0
    if not (0.0 <= min_frequency < max_frequency <= sampling_rate / 2.0):
        raise ValueError(f"need 0 <= min_frequency < max_frequency <= sr/2, got {min_frequency}, "
                         f"{max_frequency} at sr {sampling_rate}")
    fft_freqs = fft_frequencies(n_fft, sampling_rate)                              # [K]
    mel_edges = np.linspace(hertz_to_mel(min_frequency), hertz_to_mel(max_frequency), num_mel_bins + 2)
    edges = mel_to_hertz(mel_edges)                                                # [M+2] Hz
    widths = np.diff(edges)                                                        # [M+1]
    offsets = edges[None, :] - fft_freqs[:, None]                                  # [K, M+2] edge - bin
    rising = -offsets[:, :-2] / widths[:-1]                                        # [K, M] (f - left)/(centre - left)
    falling = offsets[:, 2:] / widths[1:]                                          # [K, M] (right - f)/(right - centre)
    filters = np.maximum(0.0, np.minimum(rising, falling))                         # [K, M] triangles
    return filters * (2.0 / (edges[2:] - edges[:-2]))[None, :]                     # Slaney area norm


# ----------------------------------------------------------------------------------------------------------
# Short-time Fourier transform
# ----------------------------------------------------------------------------------------------------------
def hann_window(length=N_FFT):
    """Periodic Hann window `0.5 - 0.5 cos(2 pi n / W)` (periodic: the DFT-friendly variant).  -> [W]"""
    n = np.arange(length, dtype=np.float64)
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * n / length)


def frame_signal(waveform, n_fft=N_FFT, hop_length=HOP_LENGTH):
    """Centred, reflection-padded frames, one every hop: frame t covers samples t*hop - W/2 .. t*hop + W/2.

    [N] -> [1 + N // hop, W]. The signal is extended by W/2 samples on each side by reflection without
    repeating the edge sample (numpy 'reflect' = torch 'reflect'), so frame 0 is centred on sample 0.
    """
    waveform = np.asarray(waveform, dtype=np.float64)
    half = n_fft // 2
    padded = np.pad(waveform, half, mode="reflect")                              # [N + W]
    n_frames = 1 + len(waveform) // hop_length
    starts = np.arange(n_frames) * hop_length                                     # [T+1]
    return padded[starts[:, None] + np.arange(n_fft)[None, :]]                    # [T+1, W]


def power_spectrum(frames, window=None):
    """|DFT|^2 of each windowed frame, non-negative frequencies only.  [..., W] -> [..., W//2 + 1]"""
    frames = np.asarray(frames, dtype=np.float64)
    if window is None:
        window = hann_window(frames.shape[-1])
    spectrum = np.fft.rfft(frames * window, axis=-1)                              # [..., K] complex
    return spectrum.real ** 2 + spectrum.imag ** 2


# ----------------------------------------------------------------------------------------------------------
# Log-mel features of one extractor call
# ----------------------------------------------------------------------------------------------------------
def log_mel(mel_energies):
    """Whisper's log compression of one clip.  [M, T] -> [M, T]

    log10 with a 1e-10 floor, then a dynamic-range clamp: nothing may lie more than 8 decades (80 dB) below
    the clip's loudest value, then `(x + 4) / 4` brings typical speech roughly into [-1, 1].
    """
    log_spec = np.log10(np.maximum(mel_energies, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


def check_waveform(waveform, name="waveform"):
    """A clear error for what cannot be a mono waveform: wrong dtype, wrong rank, empty, NaN/inf.  [N] -> [N]"""
    arr = np.asarray(waveform)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name}: expected a real float or integer array, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a mono waveform [samples], got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name}: the waveform is empty")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise ValueError(f"{name}: {bad} of {arr.size} samples are NaN or infinite")
    return arr


def extract_features(waveforms, num_mel_bins=NUM_MEL_BINS, n_fft=N_FFT, hop_length=HOP_LENGTH,
                     sampling_rate=SAMPLING_RATE):
    """Log-mel features of several clips in one call, padded to the longest clip (`WhisperFeatureExtractor.__call__`).

    waveforms: one [N] array or a list of B arrays [N_b] (mono, already at `sampling_rate`).
    Returns (input_features [B, M, T] float32, attention_mask [B, T] int32) with T = max N_b // hop.
    Frame t of clip b is valid iff t * hop < N_b. Shorter clips are zero-padded at the end *before* the
    STFT, so their last valid frames see zeros instead of the reflected signal (the reference does this).
    """
    if isinstance(waveforms, np.ndarray) and waveforms.ndim == 1:
        waveforms = [waveforms]
    if len(waveforms) == 0:
        raise ValueError("extract_features: no waveform given")
    clips = [check_waveform(w, f"waveform {b}").astype(np.float32) for b, w in enumerate(waveforms)]
    lengths = np.array([len(c) for c in clips])                                   # [B]
    longest = int(lengths.max())
    n_frames = longest // hop_length                                              # T
    if n_frames == 0:
        raise ValueError(f"extract_features: the longest clip has {longest} samples, fewer than one hop "
                         f"({hop_length}); no feature frame can be computed")
    filters = mel_filter_bank(num_mel_bins, n_fft, sampling_rate)                 # [K, M]
    window = hann_window(n_fft)                                                   # [W]
    features = np.empty((len(clips), num_mel_bins, n_frames), dtype=np.float32)
    for b, clip in enumerate(clips):
        padded = np.zeros(longest, dtype=np.float64)
        padded[: len(clip)] = clip                                                # [N] zero-padded to the longest
        power = power_spectrum(frame_signal(padded, n_fft, hop_length), window)  # [T+1, K]
        mel = filters.T @ power[:-1].T                                            # [M, T]: last frame dropped
        features[b] = log_mel(mel)
    mask = (np.arange(n_frames)[None, :] * hop_length < lengths[:, None]).astype(np.int32)  # [B, T]
    return features, mask


def mfcc(log_mel_features, n_mfcc=20):
    """Mel-frequency cepstral coefficients: orthonormal DCT-II of the log-mel along the mel axis.

    [..., M, T] -> [..., C, T]. The DCT decorrelates neighbouring mel bins; the first few coefficients keep
    the spectral envelope (timbre, formants) and drop the fine pitch harmonics. Written as an explicit
    basis matrix so the formula is visible: `c_k = s_k sum_m x_m cos(pi k (2m + 1) / 2M)`,
    `s_0 = sqrt(1/M)`, `s_k = sqrt(2/M)`.
    """
    x = np.asarray(log_mel_features, dtype=np.float64)
    n_mels = x.shape[-2]
    if not 1 <= n_mfcc <= n_mels:
        raise ValueError(f"mfcc: n_mfcc must be in 1..{n_mels}, got {n_mfcc}")
    k = np.arange(n_mfcc)[:, None]                                                # [C, 1]
    m = np.arange(n_mels)[None, :]                                                # [1, M]
    basis = np.cos(np.pi * k * (2 * m + 1) / (2 * n_mels))                       # [C, M]
    basis *= np.where(k == 0, np.sqrt(1.0 / n_mels), np.sqrt(2.0 / n_mels))
    return np.einsum("cm,...mt->...ct", basis, x)                                 # [..., C, T]


# ----------------------------------------------------------------------------------------------------------
# Golden stage
# ----------------------------------------------------------------------------------------------------------
