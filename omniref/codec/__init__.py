"""Speech codec side of Qwen3-Omni: residual-VQ codes -> 24 kHz waveform.

    code2wav.py   codes [Q, T] -> waveform [S] (Code2Wav, docs/golden_format.md §6.8), streaming `chunked_decode`
    rvq.py        residual vector quantization for teaching: k-means codebooks, greedy encode, decode by summing
    wavio.py      write (and read back) 24 kHz WAV files
"""
from .code2wav import Code2Wav, output_length  # noqa: F401
