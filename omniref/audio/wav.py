"""Sound file -> mono float waveform at 16 kHz: the input the log-mel front end (mel.py) expects.

    file.wav --parse_wav--> [N, ch] int/float --to_float--> [-1, 1) --mean over ch--> [N]
             --resample_poly (if sr != 16 kHz)--> [N']

Legend: N samples, ch channels.

A WAV file is a RIFF container (Microsoft/IBM "Multimedia Programming Interface and Data Specifications
1.0", 1991): `RIFF <size> WAVE` and then chunks `<id:4 bytes> <size:u32 LE> <payload, padded to an even
length>`. `fmt ` says how samples are stored, `data` holds them; anything else (`LIST`, `JUNK`, `fact`, ...)
is skipped. `parse_wav` reads that container itself, so every inconsistent field (a zero channel count, a
block_align that disagrees with the sample size, a chunk that runs past the end of the file) is a
MediaError naming the file and the field, and the sample-rate range and the duration limit are checked
before a single sample is decoded or resampled (a 1 Hz file would otherwise upsample 16000-fold).

Integer PCM is scaled by its full-scale value (int16 / 32768, int32 / 2^31, unsigned 8-bit centred at 128),
the convention of soundfile/librosa that the Qwen3-Omni processor's callers use. Resampling is polyphase
(scipy.signal.resample_poly): upsample by p, low-pass with a Kaiser FIR filter, downsample by q, where
p/q is the reduced ratio 16000 / sr.
"""

from __future__ import annotations

import math
import mmap
import os
import struct

import numpy as np
from scipy import signal
from scipy.io import wavfile

from ..errors import MediaError, env_number, regular_file

TARGET_RATE = 16000
# Limits on what a WAV may hold (keyword arguments of parse_wav / read_wav; the environment variable
# OMNIREF_MAX_AUDIO_SECONDS changes the duration default): telephone audio is 8 kHz, studio audio 192 kHz;
# the thinker's audio encoder was trained on clips of up to a few minutes.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1000, 384000
MAX_SECONDS = 20 * 60
MAX_CHANNELS = 64
MAX_SAMPLES = 1 << 27       # frames x channels (20 min of 48 kHz stereo is 115M); bounds the float64 copy to 1 GiB

# fmt format tags: integer PCM, IEEE float, and WAVE_FORMAT_EXTENSIBLE (whose sub-format GUID starts with one
# of the first two)
PCM, IEEE_FLOAT, EXTENSIBLE = 1, 3, 0xFFFE
# (format, bits per sample) -> NumPy dtype of one stored sample (24-bit PCM is widened below)
_SAMPLE_DTYPES = {(PCM, 8): np.dtype("u1"), (PCM, 16): np.dtype("<i2"), (PCM, 24): None,
                  (PCM, 32): np.dtype("<i4"), (IEEE_FLOAT, 32): np.dtype("<f4"), (IEEE_FLOAT, 64): np.dtype("<f8")}

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
        raise MediaError(f"{name}: the audio is empty (shape {samples.shape})", field="samples")
    mono = to_mono(to_float(samples))                                              # [N]
    if not np.all(np.isfinite(mono)):
        bad = int(np.count_nonzero(~np.isfinite(mono)))
        raise MediaError(f"{name}: {bad} of {mono.size} samples are NaN or infinite", field="samples")
    return resample(mono, sampling_rate, target_rate).astype(np.float32)


def _chunks(path, data: bytes):
    """RIFF/WAVE bytes -> (chunk id, payload offset, payload size) for each chunk, every size checked."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise MediaError(f"{path}: not a WAV file (it must start with 'RIFF....WAVE', got {data[:12]!r})",
                         file=path)
    (riff_size,) = struct.unpack_from("<I", data, 4)
    if riff_size < 4 or riff_size + 8 > len(data):
        raise MediaError(f"{path}: RIFF size {riff_size} disagrees with the file ({len(data)} bytes, so at "
                         f"most {len(data) - 8}): truncated or corrupt", file=path, field="RIFF size",
                         value=riff_size)
    end, pos = 8 + riff_size, 12
    while pos + 8 <= end:
        cid, size = data[pos:pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        if pos + 8 + size > end:
            raise MediaError(f"{path}: chunk {cid!r} of {size} bytes at byte {pos} runs past the end of the RIFF "
                             f"data ({end} bytes): truncated or corrupt", file=path, field=cid.decode("latin-1"),
                             value=size)
        yield cid, pos + 8, size
        pos += 8 + size + (size & 1)                                 # odd payloads are padded to even


def _fmt(path, data: bytes, offset: int, size: int) -> tuple[int, int, int, int]:
    """The `fmt ` chunk -> (format tag, channels, sample rate, bits per sample), every field checked."""
    if size < 16:
        raise MediaError(f"{path}: 'fmt ' chunk of {size} bytes, expected at least 16", file=path, field="fmt ")
    tag, channels, rate, byte_rate, block_align, bits = struct.unpack_from("<HHIIHH", data, offset)
    if tag == EXTENSIBLE:
        if size < 40:
            raise MediaError(f"{path}: WAVE_FORMAT_EXTENSIBLE 'fmt ' chunk of {size} bytes, expected 40",
                             file=path, field="fmt ")
        tag = struct.unpack_from("<H", data, offset + 24)[0]          # first two bytes of the sub-format GUID
    def bad(field, value, expected):
        return MediaError(f"{path}: {field} is {value}, expected {expected}", file=path, field=field, value=value)
    if tag not in (PCM, IEEE_FLOAT):
        raise bad("format tag", tag, "1 (PCM) or 3 (IEEE float)")
    if not 1 <= channels <= MAX_CHANNELS:
        raise bad("channels", channels, f"1..{MAX_CHANNELS}")
    if (tag, bits) not in _SAMPLE_DTYPES:
        raise bad("bits per sample", bits, "8, 16, 24 or 32 for PCM; 32 or 64 for float")
    if block_align != channels * bits // 8:
        raise bad("block_align", block_align, f"channels * bits / 8 = {channels * bits // 8}")
    if byte_rate != rate * block_align:
        raise bad("byte rate", byte_rate, f"sample rate * block_align = {rate * block_align}")
    return tag, channels, rate, bits


def parse_wav(path, *, min_rate: int = MIN_SAMPLE_RATE, max_rate: int = MAX_SAMPLE_RATE,
              max_seconds: float | None = None) -> tuple[int, np.ndarray]:
    """A WAV file -> (sample rate, samples [N] or [N, ch] in the stored dtype; 24-bit PCM as left-justified
    int32 like scipy). Every field is checked against the file and the limits before samples are decoded."""
    if max_seconds is None:
        max_seconds = env_number("OMNIREF_MAX_AUDIO_SECONDS", MAX_SECONDS, float, minimum=0.0)
    path = regular_file(path, "WAV file", MediaError)
    with open(path, "rb") as fh:                                     # mapped: only the chunks we use are read
        if os.fstat(fh.fileno()).st_size < 12:
            raise MediaError(f"{path}: not a WAV file ({os.fstat(fh.fileno()).st_size} bytes)", file=path)
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
            return _parse(path, data, min_rate, max_rate, max_seconds)


def _parse(path, data, min_rate: int, max_rate: int, max_seconds: float) -> tuple[int, np.ndarray]:
    fmt = samples = None
    for cid, offset, size in _chunks(path, data):
        if cid == b"fmt " and fmt is None:
            fmt = _fmt(path, data, offset, size)
        elif cid == b"data":
            if fmt is None:
                raise MediaError(f"{path}: 'data' chunk before the 'fmt ' chunk", file=path, field="fmt ")
            samples = (offset, size)
            break
    if fmt is None or samples is None:
        missing = "fmt " if fmt is None else "data"
        raise MediaError(f"{path}: no '{missing}' chunk", file=path, field=missing)
    tag, channels, rate, bits = fmt
    if not min_rate <= rate <= max_rate:
        raise MediaError(f"{path}: sample rate {rate} Hz is outside {min_rate}..{max_rate} Hz", file=path,
                         field="sample rate", value=rate)
    offset, size = samples
    frame = channels * bits // 8
    if size % frame:
        raise MediaError(f"{path}: 'data' chunk of {size} bytes is not a whole number of {frame}-byte frames",
                         file=path, field="data", value=size)
    n = size // frame
    if n > max_seconds * rate:
        raise MediaError(f"{path}: {n / rate:.1f} s of audio, more than the limit of {max_seconds:g} s "
                         "(OMNIREF_MAX_AUDIO_SECONDS)", file=path, field="duration", value=n / rate)
    if n * channels > MAX_SAMPLES:
        raise MediaError(f"{path}: {n} frames x {channels} channels is more than {MAX_SAMPLES} samples", file=path,
                         field="data", value=n * channels)
    raw = data[offset:offset + size]
    if bits == 24:                                                   # 3 bytes LE -> the top of an int32
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3)
        pcm = np.zeros((b.shape[0], 4), np.uint8)
        pcm[:, 1:] = b
        out = pcm.view("<i4").reshape(-1)
    else:
        out = np.frombuffer(raw, _SAMPLE_DTYPES[(tag, bits)])
    out = out.astype(out.dtype.newbyteorder("="))                     # native order, a private copy
    return rate, (out if channels == 1 else out.reshape(n, channels))


def read_wav(path, target_rate=TARGET_RATE, **limits):
    """Read a WAV file as mono float32 at `target_rate` Hz.  -> [N]

    Raises MediaError (a ValueError) naming the file and the field when it is missing, not a regular file,
    not a WAV file, inconsistent, outside the rate / duration limits (`limits`: see parse_wav), empty, or
    holds NaN/inf samples.
    """
    rate, samples = parse_wav(path, **limits)
    return prepare(samples, rate, target_rate, name=os.fspath(path))


def write_wav(path, waveform, sampling_rate=TARGET_RATE):
    """Write a mono float waveform in [-1, 1] as 16-bit PCM (values outside are clipped).  [N] -> file"""
    waveform = np.asarray(waveform, dtype=np.float64)
    pcm = np.clip(np.round(waveform * 32767.0), -32768, 32767).astype(np.int16)
    wavfile.write(os.fspath(path), int(sampling_rate), pcm)
