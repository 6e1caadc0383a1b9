"""The audio path: sound file -> waveform (wav.py) -> log-mel features (mel.py) -> audio tokens (encoder.py)."""

from .encoder import audio_encoder, audio_output_length, encode_audio
from .mel import extract_features, hertz_to_mel, mel_filter_bank, mel_to_hertz, mfcc
from .wav import read_wav, resample

__all__ = ["read_wav", "resample", "extract_features", "hertz_to_mel", "mel_to_hertz", "mel_filter_bank",
           "mfcc", "audio_output_length", "audio_encoder", "encode_audio"]
