"""preprocessor_config.json: the settings `Qwen3OmniMoeProcessor` turns audio and pixels into model inputs with.

The processor is Whisper's feature extractor (waveform -> log-mel) plus the Qwen2-VL image processor (pixels
-> patches); a downloaded checkpoint states their settings in preprocessor_config.json (and, in newer
layouts, the video ones in video_preprocessor_config.json). omniref reads them from there instead of
assuming them; what it does not implement is an error naming the file and field.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ProcessorSettings", "load_processor_settings"]


@dataclass
class ProcessorSettings:
    """What `Qwen3OmniMoeProcessor` reads from preprocessor_config.json (Whisper feature extractor + Qwen2-VL
    image processor); the defaults are the published values (the same numbers as `audio.mel` and
    `vision.preprocess` use when called without settings)."""
    sampling_rate: int = 16000         # Hz of the waveform the mel features are computed from
    n_fft: int = 400                   # 25 ms window
    hop_length: int = 160              # 10 ms hop
    feature_size: int = 128            # mel bins
    min_pixels: int = 3136             # image smart_resize bounds (56*56 .. 28*28*16384)
    max_pixels: int = 12845056
    video_min_pixels: int = 128 * 32 * 32   # video `size.shortest_edge` / `longest_edge`
    video_max_pixels: int = 768 * 32 * 32
    patch_size: int = 16
    merge_size: int = 2
    temporal_patch_size: int = 2
    unknown_fields: list = field(default_factory=list, repr=False)

    FILES = ("preprocessor_config.json", "video_preprocessor_config.json")


def load_processor_settings(directory: str | os.PathLike) -> ProcessorSettings:
    """preprocessor_config.json (+ video_preprocessor_config.json when present) of a checkpoint directory;
    missing files or fields keep the published defaults. A setting omniref does not implement (a mean/std
    other than 0.5, dither) is an error naming the file and field, not a silently different input."""
    s, d = ProcessorSettings(), Path(directory)
    for name in ProcessorSettings.FILES:
        path = d / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object")
        size = data.get("size") if isinstance(data.get("size"), dict) else {}
        pixels = ("video_min_pixels", "video_max_pixels") if name.startswith("video") else ("min_pixels", "max_pixels")
        for key, value in list(data.items()) + [(pixels[0], size.get("shortest_edge")),
                                                (pixels[1], size.get("longest_edge"))]:
            key = {"min_pixels": pixels[0], "max_pixels": pixels[1]}.get(key, key)
            if value is None:
                continue
            if key in ("image_mean", "image_std") and list(value) != [0.5, 0.5, 0.5]:
                raise ValueError(f"{path}: {key} {value} is not supported (omniref normalises with 0.5, 0.5, 0.5)")
            if key == "dither" and value:
                raise ValueError(f"{path}: dither {value} is not supported (omniref computes mel without dither)")
            if key in {f.name for f in dataclasses.fields(s)} - {"unknown_fields"}:
                if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                    raise ValueError(f"{path}: {key} is {value!r}, expected a positive number")
                setattr(s, key, int(value))
            elif key not in s.unknown_fields:
                s.unknown_fields.append(key)
    return s
