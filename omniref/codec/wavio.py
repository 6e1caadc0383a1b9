"""Waveform -> .wav file at Code2Wav's 24 kHz (and back, for tests and tutorials).

    wav [S] float in [-1, 1] --clip, scale by 32767, round--> int16 PCM --scipy.io.wavfile--> file.wav
                             (or stored as 32-bit IEEE float with sample_format="float32")

Legend: S samples.

16-bit PCM is what every player understands; float32 keeps Code2Wav's output bit for bit. Code2Wav already
clamps to [-1, 1], so clipping here only guards against other callers. Scaling by 32767 (not 32768) keeps
+1.0 representable; `read_wav` divides by 32768, the usual full-scale convention for reading (audio/wav.py),
so a round trip is exact to within one 16-bit step (2^-15 plus the 32767/32768 gain, < 4e-5 in all).
"""
from __future__ import annotations

import os

import numpy as np
from scipy.io import wavfile

from ..audio.wav import parse_wav
from ..errors import MediaError

__all__ = ["SAMPLE_RATE", "write_wav", "read_wav"]

SAMPLE_RATE = 24000   # Code2Wav output rate: 1920 samples per 12.5 Hz code frame


def write_wav(path: str | os.PathLike, wav, sample_rate: int = SAMPLE_RATE,
              sample_format: str = "int16") -> str:
    """Write a mono waveform.  wav [S] (or [1, S], [1, 1, S] as Code2Wav returns it) -> path written

    sample_format: "int16" (16-bit PCM) or "float32" (IEEE float, lossless for our float32 output).
    """
    wav = np.asarray(wav)
    if wav.dtype.kind != "f":
        raise TypeError(f"write_wav: expected a float waveform in [-1, 1], got dtype {wav.dtype}")
    if wav.ndim > 1 and all(n == 1 for n in wav.shape[:-1]):
        wav = wav.reshape(-1)                                        # [1, 1, S] -> [S]
    if wav.ndim != 1:
        raise ValueError(f"write_wav: expected a mono waveform [S], got shape {list(wav.shape)}")
    if not np.all(np.isfinite(wav)):
        raise ValueError("write_wav: waveform contains NaN or infinite samples")
    if int(sample_rate) != sample_rate or sample_rate <= 0:
        raise ValueError(f"write_wav: sample_rate must be a positive integer, got {sample_rate}")
    wav = np.clip(wav, -1.0, 1.0)
    if sample_format == "int16":
        data = np.round(wav * 32767.0).astype(np.int16)              # [S] PCM
    elif sample_format == "float32":
        data = wav.astype(np.float32)
    else:
        raise ValueError(f"write_wav: sample_format must be 'int16' or 'float32', got {sample_format!r}")
    wavfile.write(os.fspath(path), int(sample_rate), data)
    return os.fspath(path)


def read_wav(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read a mono .wav written by `write_wav` (or any 16-bit / float file).  -> (wav [S] float32, rate)

    The container is parsed (and every field checked) by the thinker's audio reader, `audio.wav.parse_wav`.
    """
    rate, data = parse_wav(path)
    if data.ndim > 1:
        data = data.mean(axis=1)                                     # [S, ch] -> [S]
    if data.dtype == np.int16:
        data = data / 32768.0
    elif data.dtype.kind != "f":
        raise MediaError(f"{path}: sample type {data.dtype}, expected 16-bit PCM or float", file=path,
                         field="bits per sample")
    return data.astype(np.float32), int(rate)
