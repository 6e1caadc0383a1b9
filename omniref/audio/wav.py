"""Sound file -> mono float waveform at 16 kHz: the input the log-mel front end (mel.py) expects.

    file.wav --scipy.io.wavfile--> [N, ch] int/float --to_float--> [-1, 1) --mean over ch--> [N]
             --resample_poly (if sr != 16 kHz)--> [N']

Legend: N samples, ch channels.

Integer PCM is scaled by its full-scale value (int16 / 32768, int32 / 2^31, unsigned 8-bit centred at 128),
the convention of soundfile/librosa that the Qwen3-Omni processor's callers use. Resampling is polyphase
(scipy.signal.resample_poly): upsample by p, low-pass with a Kaiser FIR filter, downsample by q, where
p/q is the reduced ratio 16000 / sr.
"""

from __future__ import annotations

import math
import os

import numpy as np
from scipy import signal
from scipy.io import wavfile

TARGET_RATE = 16000

# Full-scale value of each integer PCM type (24-bit files are read by scipy left-justified into int32).
_FULL_SCALE = {np.dtype(np.int16): 32768.0, np.dtype(np.int32): 2.0 ** 31}


def to_float(samples):
    """PCM samples of any supported dtype -> float64 in [-1, 1).  [N, ...] -> [N, ...]"""
    samples = np.asarray(samples)
    if samples.dtype == np.uint8:
        return (samples.astype(np.float64) - 128.0) / 128.0                        # 8-bit WAV is unsigned
    if samples.dtype in _FULL_SCALE:
        return samples.astype(np.float64) / _FULL_SCALE[samples.dtype]
    if samples.dtype in (np.float32, np.float64):
        return samples.astype(np.float64)
    raise TypeError(f"unsupported sample dtype {samples.dtype}: expected int16, int32, uint8, float32 or float64")


def to_mono(samples):
    """Average the channels: [N] or [N, ch] -> [N] (a stereo file becomes the mid signal (L + R) / 2)."""
    if samples.ndim == 1:
        return samples
    if samples.ndim == 2:
        return samples.mean(axis=1)
    raise ValueError(f"expected samples [N] or [N, channels], got shape {samples.shape}")


def resample(waveform, orig_rate, target_rate=TARGET_RATE):
    """Polyphase resampling by the reduced ratio target/orig.  [N] -> [ceil(N * target / orig)]"""
    if int(orig_rate) != orig_rate or orig_rate <= 0 or target_rate <= 0:
        raise ValueError(f"sampling rates must be positive integers, got {orig_rate} -> {target_rate}")
    orig_rate, target_rate = int(orig_rate), int(target_rate)
    if orig_rate == target_rate:
        return np.asarray(waveform, dtype=np.float64)
    g = math.gcd(orig_rate, target_rate)
    return signal.resample_poly(np.asarray(waveform, dtype=np.float64), target_rate // g, orig_rate // g)


def prepare(samples, sampling_rate, target_rate=TARGET_RATE, name="audio"):
    """Any PCM array at any rate -> validated mono float32 at `target_rate`.  [N] or [N, ch] -> [N']

    Raises TypeError for an unsupported dtype and ValueError for empty audio or NaN/inf samples.
    """
    samples = np.asarray(samples)
    if samples.size == 0:
        raise ValueError(f"{name}: the audio is empty (shape {samples.shape})")
    mono = to_mono(to_float(samples))                                              # [N]
    if not np.all(np.isfinite(mono)):
        bad = int(np.count_nonzero(~np.isfinite(mono)))
        raise ValueError(f"{name}: {bad} of {mono.size} samples are NaN or infinite")
    return resample(mono, sampling_rate, target_rate).astype(np.float32)


def read_wav(path, target_rate=TARGET_RATE):
    """Read a WAV file as mono float32 at `target_rate` Hz.  -> [N]

    Raises FileNotFoundError if the file is missing, ValueError if it is not a readable WAV file, is empty
    or holds NaN/inf samples, TypeError for a sample format other than int16/int32/uint8/float32/float64.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such audio file: {path}")
    try:
        rate, samples = wavfile.read(path)
    except (ValueError, EOFError, OSError) as err:                                 # scipy's errors for bad files
        raise ValueError(f"cannot read {path} as a WAV file: {err}") from err
    return prepare(samples, rate, target_rate, name=path)


def write_wav(path, waveform, sampling_rate=TARGET_RATE):
    """Write a mono float waveform in [-1, 1] as 16-bit PCM (values outside are clipped).  [N] -> file"""
    waveform = np.asarray(waveform, dtype=np.float64)
    pcm = np.clip(np.round(waveform * 32767.0), -32768, 32767).astype(np.int16)
    wavfile.write(os.fspath(path), int(sampling_rate), pcm)
