"""Synthetic media and their preprocessing for the golden generator (FORMAT.md section 5).

Everything here runs in the private golden venv (torch + transformers); nothing in omniref imports it.

    waveform (16 kHz mono) --WhisperFeatureExtractor--> mel.input_features / mel.attention_mask   (5.1)
    RGB uint8 image       --Qwen2VLImageProcessorPil--> image.resized / pixel_values / grid_thw  (5.2)
    RGB uint8 frames      --FORMAT 5.3 rule (numpy)-->  video.pixel_values / grid_thw             (5.3)

Videos: the Qwen2-VL *video* processor needs torchvision, which this environment does not have. Its output for
frames that are already a smart_resize fixed point (no resampling) is fully specified by FORMAT.md 5.3, so
`video_pixel_values` computes it directly; `check_against_shared` verifies this on the shared `image_basic`
case, whose video was produced by the real torchvision processor.

Legend: S samples, F mel frames, T video frames, H/W pixels, p patch size, m merge size.
"""
from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000
MEL_INIT = dict(feature_size=128, sampling_rate=16000, hop_length=160, chunk_length=300, n_fft=400,
                padding_value=0.0, dither=0.0, return_attention_mask=True)
MEL_CALL = dict(sampling_rate=16000, padding=True, truncation=False, return_attention_mask=True)
IMAGE_INIT = dict(temporal_patch_size=2, min_pixels=3136, max_pixels=12845056,
                  image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
VIDEO_MIN_PIXELS, VIDEO_MAX_PIXELS = 128 * 32 * 32, 768 * 32 * 32   # the processor's videos_kwargs size


# ----------------------------------------------------------------------------------------------------------
# synthetic signals
# ----------------------------------------------------------------------------------------------------------
def synth_waveform(rng: np.random.Generator, n_samples: int, silence_tail: int = 0) -> np.ndarray:
    """A chirp + two tones + noise, quantised to 16-bit PCM levels (compresses well, still float32).

    n_samples -> [S] float32 in [-1, 1). `silence_tail` samples at the end are digital zeros (exercises the
    log floor of the mel stage).
    """
    t = np.arange(n_samples) / SAMPLE_RATE                                    # [S] seconds
    f0, f1 = rng.uniform(150, 400), rng.uniform(2500, 6000)
    dur = max(t[-1], 1e-3)
    chirp = np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t ** 2 / (2 * dur)))    # linear chirp f0 -> f1
    tones = sum(rng.uniform(0.1, 0.3) * np.sin(2 * np.pi * rng.uniform(200, 7000) * t + rng.uniform(0, 6))
                for _ in range(2))
    env = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.5, 3.0) * t) ** 2       # slow amplitude envelope
    x = 0.35 * env * chirp + tones + 0.03 * rng.standard_normal(n_samples)
    if silence_tail:
        x[-silence_tail:] = 0.0
    x = np.clip(x, -0.99, 0.99)
    return (np.round(x * 32768.0) / 32768.0).astype(np.float32)


def synth_image(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Smooth gradients + a few flat rectangles + mild noise: [H, W, 3] uint8."""
    yy, xx = np.meshgrid(np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij")
    img = np.stack([
        0.5 + 0.4 * np.sin(2 * np.pi * (rng.uniform(0.5, 2) * xx + rng.uniform(0, 1))),
        0.5 + 0.4 * np.cos(2 * np.pi * (rng.uniform(0.5, 2) * yy + rng.uniform(0, 1))),
        xx * yy,
    ], axis=-1)                                                               # [H, W, 3] in [0, 1]
    for _ in range(3):
        y0, x0 = rng.integers(0, height // 2), rng.integers(0, width // 2)
        img[y0:y0 + height // 3, x0:x0 + width // 3] = rng.uniform(0, 1, 3)
    img += 0.04 * rng.standard_normal(img.shape)
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)


def synth_video(rng: np.random.Generator, n_frames: int, height: int, width: int) -> np.ndarray:
    """A few flat coloured blocks moving over a flat background: [T, H, W, 3] uint8.

    Mostly flat on purpose: video pixel values are large (>= 131072 pixels per frame, FORMAT 5.3) and flat
    regions keep golden.npz small under deflate.
    """
    frames = np.empty((n_frames, height, width, 3), np.uint8)
    bg = rng.integers(0, 256, 3)
    blocks = [(rng.integers(0, height - 64), rng.integers(0, width - 96), rng.integers(24, 64),
               rng.integers(32, 96), rng.integers(0, 256, 3), rng.integers(-12, 13, 2)) for _ in range(5)]
    for f in range(n_frames):
        frames[f] = bg
        for y, x, h, w, col, (dy, dx) in blocks:
            yy, xx = int(np.clip(y + f * dy, 0, height - h)), int(np.clip(x + f * dx, 0, width - w))
            frames[f, yy:yy + h, xx:xx + w] = col
    return frames


# ----------------------------------------------------------------------------------------------------------
# preprocessing through the reference
# ----------------------------------------------------------------------------------------------------------
def mel_features(waveforms: list[np.ndarray]) -> dict[str, np.ndarray]:
    """One WhisperFeatureExtractor call over all clips (FORMAT 5.1).

    [S_i] float32 each -> input_features [n, 128, F] float32, attention_mask [n, F] int32.
    """
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor(**MEL_INIT)
    out = fe([np.asarray(w, np.float32) for w in waveforms], return_tensors="np", **MEL_CALL)
    feats = np.asarray(out["input_features"], np.float32)
    mask = np.asarray(out["attention_mask"], np.int32)
    return {"input_features": feats, "attention_mask": mask}


def image_inputs(image: np.ndarray, patch_size: int, merge_size: int) -> dict[str, np.ndarray]:
    """Qwen2VLImageProcessorPil (the PIL backend) on one RGB image (FORMAT 5.2).

    [H, W, 3] uint8 -> resized [H', W', 3] uint8, pixel_values [H'/p * W'/p, 3*2*p*p] f32, grid_thw [1, 3].
    The resized image is captured by wrapping the processor's own `resize`.
    """
    from PIL import Image
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    proc = Qwen2VLImageProcessorPil(patch_size=patch_size, merge_size=merge_size, **IMAGE_INIT)
    captured = {}
    original_resize = proc.resize

    def recording_resize(*args, **kwargs):
        out = original_resize(*args, **kwargs)
        captured["resized"] = np.asarray(out)
        return out

    proc.resize = recording_resize
    out = proc(images=[Image.fromarray(image)], return_tensors="np")
    resized = captured["resized"]
    if resized.shape[0] == 3 and resized.shape[-1] != 3:                       # channels-first -> HWC
        resized = resized.transpose(1, 2, 0)
    return {"resized": np.ascontiguousarray(resized.astype(np.uint8)),
            "pixel_values": np.asarray(out["pixel_values"], np.float32),
            "grid_thw": np.asarray(out["image_grid_thw"], np.int64)}


def smart_resize(h: int, w: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """The reference's smart_resize (imported, so the fixed-point check uses the reference rule)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as ref

    return ref(h, w, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)


def video_pixel_values(frames: np.ndarray, patch_size: int, merge_size: int, temporal_patch_size: int = 2,
                       fps: float = 2.0) -> dict[str, np.ndarray]:
    """FORMAT 5.3 for frames that are a smart_resize fixed point (the torchvision processor then only
    normalises and patchifies).

    [T, H, W, 3] uint8 -> pixel_values [T'/2 * H/p * W/p, 3*2*p*p] f32, grid_thw [1, 3] int64,
    second_per_grid [1] f32, fps [1] f32.
    """
    t, h, w, _ = frames.shape
    factor = patch_size * merge_size
    if smart_resize(h, w, factor, VIDEO_MIN_PIXELS, VIDEO_MAX_PIXELS) != (h, w):
        raise ValueError(f"video frames {h}x{w} are not a smart_resize fixed point for factor {factor}")
    if t % temporal_patch_size:                                                # odd T: repeat the last frame
        pad = temporal_patch_size - t % temporal_patch_size
        frames = np.concatenate([frames, np.repeat(frames[-1:], pad, axis=0)], axis=0)
    x = (frames.astype(np.float32) - np.float32(127.5)) / np.float32(127.5)     # [T', H, W, 3] in [-1, 1]
    x = x.transpose(0, 3, 1, 2)                                               # [T', 3, H, W]
    gt, gh, gw = x.shape[0] // temporal_patch_size, h // patch_size, w // patch_size
    x = x.reshape(gt, temporal_patch_size, 3, gh // merge_size, merge_size, patch_size,
                  gw // merge_size, merge_size, patch_size)
    # rows: (t, block_y, block_x, in_y, in_x); columns: (channel, frame in pair, y, x)
    x = x.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    pv = np.ascontiguousarray(x.reshape(gt * gh * gw, 3 * temporal_patch_size * patch_size * patch_size))
    return {"pixel_values": pv.astype(np.float32),
            "grid_thw": np.array([[gt, gh, gw]], np.int64),
            "second_per_grid": np.array([temporal_patch_size / fps], np.float32),
            "fps": np.array([fps], np.float32)}


def check_against_shared(shared_dir: str) -> dict[str, float]:
    """Reproduce the shared preprocessing goldens with this module; returns max abs errors (all must be 0)."""
    import os

    errs = {}
    mel_case = os.path.join(shared_dir, "mel_basic", "golden.npz")
    if os.path.exists(mel_case):
        g = np.load(mel_case)
        m = mel_features([g["mel.waveform"]])
        errs["mel_basic/mel.input_features"] = float(np.abs(m["input_features"] - g["mel.input_features"]).max())
    img_case = os.path.join(shared_dir, "image_basic", "golden.npz")
    if os.path.exists(img_case):
        g = np.load(img_case)
        p = g["image.pixel_values"].shape[1] // 6
        p = int(round(p ** 0.5))
        im = image_inputs(g["image.raw"], p, 2)
        errs["image_basic/image.pixel_values"] = float(np.abs(im["pixel_values"] - g["image.pixel_values"]).max())
        errs["image_basic/image.resized"] = float(np.abs(im["resized"].astype(int) - g["image.resized"]).max())
        v = video_pixel_values(g["video.raw"], p, 2, fps=float(g["video.fps"][0]))
        errs["image_basic/video.pixel_values"] = float(np.abs(v["pixel_values"] - g["video.pixel_values"]).max())
        errs["image_basic/video.grid_thw"] = float(np.abs(v["grid_thw"] - g["video.grid_thw"]).max())
    return errs
