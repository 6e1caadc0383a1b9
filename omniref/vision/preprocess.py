"""Pixels -> patches: the Qwen2-VL image/video processor that feeds the Qwen3-Omni vision encoder
(keys: docs/golden_format.md §5.2, §5.3).

    image file / uint8 [H, W, 3]
      -> RGB (grayscale replicated, alpha composited on white)
      -> smart_resize: (H', W') multiples of factor = p*m, H'*W' within [min_pixels, max_pixels]
      -> Pillow bicubic resample                                   uint8 [H', W', 3]   (`image.resized`)
      -> float32(x * (1/255)), then (x - 0.5) / 0.5                 f32   [H', W', 3]
      -> a clip of tp identical frames, patchified in merge-block order
                                                                    f32   [P, 3*tp*p*p] (`image.pixel_values`)

A video (uint8 [T, H, W, 3]) follows the same road with the video processor's pixel budget, the fused
normalisation (x - 127.5) / 127.5, and T/tp temporal grids (an odd T repeats its last frame).

Why merge-block order: the vision encoder later merges every m x m neighbourhood of patches into one LLM
token by concatenating m*m *consecutive* rows. Ordering the rows block by block makes each merge group
contiguous, so the merge is a plain reshape.

Legend (dimension letters used in shape comments)
    T   frames of a clip (an image is a clip of tp identical frames)
    H,W input pixels; H',W' resized pixels
    p   patch_size;  m  spatial_merge_size;  tp  temporal_patch_size (2)
    t,h,w  grid: temporal grids T/tp, patch rows H'/p, patch cols W'/p
    P   patches = t*h*w;  D  patch row length = 3*tp*p*p (channel, frame, y, x)
"""
from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import MediaError, regular_file

__all__ = ["IMAGE_MIN_PIXELS", "IMAGE_MAX_PIXELS", "VIDEO_MIN_PIXELS", "VIDEO_MAX_PIXELS", "MAX_ASPECT_RATIO",
           "VisionInputs", "smart_resize", "load_image", "to_rgb", "resize_bicubic", "rescale_normalize_image",
           "normalize_video", "patchify", "preprocess_image", "preprocess_video", "sample_frame_indices",
           "seconds_per_grid", "load_video"]

# Processor defaults of Qwen3-Omni (docs/golden_format.md §5.2/5.3; the case's meta.json may override them).
IMAGE_MIN_PIXELS = 3136            # 56*56
IMAGE_MAX_PIXELS = 12845056        # 28*28*16384
VIDEO_MIN_PIXELS = 128 * 32 * 32   # 131072: the Omni processor's video `size.shortest_edge`
VIDEO_MAX_PIXELS = 768 * 32 * 32   # 786432: its `size.longest_edge`
MAX_ASPECT_RATIO = 200             # smart_resize refuses anything more elongated (as the reference does)
# Input limits, checked from the file's header before any pixel is decoded: 64 Mpx is a 8192x8192 photo
# (below Pillow's own decompression-bomb threshold of 89 Mpx); a video .npy holds at most 768 frames (the
# video processor's `max_frames`) and 1 GiB. Each frame is resized to at least VIDEO_MIN_PIXELS, so the frame
# count, not the file size, bounds the patches.
MAX_IMAGE_PIXELS = 64 * 1024 * 1024
MAX_VIDEO_BYTES = 1024 ** 3
MAX_VIDEO_FRAMES = 768
IMAGE_MEAN = IMAGE_STD = 0.5       # Qwen3-Omni uses mean = std = 0.5 for every channel


@dataclass
class VisionInputs:
    """What the processor hands the model for one image or video."""
    pixel_values: np.ndarray          # [P, D] float32, rows in merge-block order
    grid_thw: np.ndarray              # [1, 3] int64: (t, h, w) patch grid
    resized: np.ndarray | None = None  # [H', W', 3] uint8 (images) / [T, H', W', 3] uint8 (videos)
    second_per_grid: float | None = None  # videos: seconds covered by one temporal grid (tp / fps)


# ----------------------------------------------------------------------------------------------------------
# 1. The resize rule
# ----------------------------------------------------------------------------------------------------------
def smart_resize(height: int, width: int, factor: int, min_pixels: int = IMAGE_MIN_PIXELS,
                 max_pixels: int = IMAGE_MAX_PIXELS) -> tuple[int, int]:
    """(H, W) -> (H', W'): both multiples of `factor` (= p*m), area within the pixel budget, aspect kept.

    Rounds each side to the nearest multiple (Python `round`: half to even, like the reference). Too many
    pixels: shrink both sides by beta = sqrt(H*W/max_pixels) and round *down* (never below one factor). Too
    few: grow by beta = sqrt(min_pixels/(H*W)) and round *up*. Aspect ratios above 200 are refused with the
    reference processor's own message.
    """
    for name, v in (("height", height), ("width", width), ("factor", factor)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
            raise MediaError(f"smart_resize: {name} must be a positive integer, got {v!r}", field=name, value=v)
    if not (0 < min_pixels <= max_pixels):
        raise ValueError(f"smart_resize: need 0 < min_pixels <= max_pixels, got {min_pixels}, {max_pixels}")
    height, width, factor = int(height), int(width), int(factor)
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise MediaError(f"absolute aspect ratio must be smaller than {MAX_ASPECT_RATIO}, "
                         f"got {max(height, width) / min(height, width)} ({height}x{width})", field="aspect ratio")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:   # also catches sides that rounded to 0 (tiny images)
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


# ----------------------------------------------------------------------------------------------------------
# 2. Reading and colour conversion
# ----------------------------------------------------------------------------------------------------------
def to_rgb(image) -> np.ndarray:
    """PIL image or array [H, W] / [H, W, 1|2|3|4] -> uint8 [H, W, 3] RGB.

    The reference's convert_to_rgb: any mode other than RGB goes through RGBA and is alpha-composited on a
    white background (so transparent pixels become white, grayscale is replicated to 3 channels).
    """
    from PIL import Image

    if isinstance(image, Image.Image):
        pil = image
    else:
        arr = np.asarray(image)
        if arr.dtype != np.uint8:
            raise MediaError(f"image array must be uint8 (0..255), got dtype {arr.dtype}", field="dtype")
        if arr.ndim in (2, 3) and min(arr.shape[:2]) == 0:
            raise MediaError(f"image is empty: shape {arr.shape}", field="shape")
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]                                   # [H, W, 1] -> [H, W]
        if arr.ndim == 2:
            pil = Image.fromarray(arr, mode="L")
        elif arr.ndim == 3 and arr.shape[2] == 2:
            pil = Image.fromarray(arr, mode="LA")
        elif arr.ndim == 3 and arr.shape[2] == 3:
            return np.ascontiguousarray(arr)                     # already RGB: nothing to do
        elif arr.ndim == 3 and arr.shape[2] == 4:
            pil = Image.fromarray(arr, mode="RGBA")
        else:
            raise MediaError(f"image array must be [H, W] or [H, W, C] with C in 1..4, got shape {arr.shape}",
                             field="shape")
    if pil.width == 0 or pil.height == 0:
        raise MediaError(f"image is empty: {pil.width}x{pil.height}", field="size")
    if pil.mode != "RGB":
        rgba = pil.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255))
        pil = Image.alpha_composite(white, rgba).convert("RGB")
    return np.asarray(pil, dtype=np.uint8).copy()                # [H, W, 3]


def load_image(path: str | os.PathLike, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """A PNG/JPEG/... file -> uint8 [H, W, 3] RGB (see `to_rgb`).

    Missing, non-regular, unreadable or corrupt files and images above `max_pixels` (checked from the header,
    before decoding) raise MediaError naming the file.
    """
    import warnings

    from PIL import Image, UnidentifiedImageError

    path = regular_file(path, "image file", MediaError)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.width * im.height > max_pixels:
                    raise MediaError(f"{path}: image of {im.width}x{im.height} pixels is above the limit of "
                                     f"{max_pixels} pixels", file=path, field="size", value=(im.width, im.height))
                im.load()                                        # decode now, inside the try
                return to_rgb(im)
    except MediaError as e:
        if e.file is None:
            raise MediaError(f"{path}: {e}", file=path, field=e.field, value=e.value) from None
        raise
    except UnidentifiedImageError:
        raise MediaError(f"{path}: not an image file Pillow can read (PNG, JPEG, ...)", file=path) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise MediaError(f"{path}: image is too large to decode safely ({e})", file=path, field="size") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, TypeError,
            ZeroDivisionError) as e:                             # truncated / corrupt data, as Pillow reports it
        raise MediaError(f"{path}: cannot decode image ({type(e).__name__}: {e})", file=path) from None


def resize_bicubic(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 [H, W, 3] -> uint8 [height, width, 3] with Pillow's BICUBIC filter (the PIL backend's resample).

    Pillow's bicubic (a = -0.5, antialiased when shrinking, integer arithmetic on uint8) is what makes
    `image.resized` bit-exact; an unchanged size is returned as is.
    """
    from PIL import Image

    if rgb.shape[:2] == (height, width):
        return rgb
    return np.asarray(Image.fromarray(rgb, mode="RGB").resize((width, height), Image.BICUBIC))


# ----------------------------------------------------------------------------------------------------------
# 3. Rescale / normalise (the exact float32 arithmetic of each processor)
# ----------------------------------------------------------------------------------------------------------
def rescale_normalize_image(rgb: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] -> float32 [H, W, 3] in [-1, 1], as the PIL image processor computes it.

    rescale: x * (1/255) in float64, rounded to float32; normalize: (x - mean) / std in float32.
    """
    x = (rgb.astype(np.float64) * (1 / 255)).astype(np.float32)                 # [H, W, 3] in [0, 1]
    return (x - np.float32(IMAGE_MEAN)) / np.float32(IMAGE_STD)               # [H, W, 3] in [-1, 1]


def normalize_video(frames: np.ndarray) -> np.ndarray:
    """uint8 [T, H, W, 3] -> float32 [T, H, W, 3]: the torchvision backend fuses rescale and normalize into
    (x - 255*mean) / (255*std) = (x - 127.5) / 127.5, computed in float32."""
    x = frames.astype(np.float32)
    return (x - np.float32(255 * IMAGE_MEAN)) / np.float32(255 * IMAGE_STD)


# ----------------------------------------------------------------------------------------------------------
# 4. Patchify in merge-block order
# ----------------------------------------------------------------------------------------------------------
def patchify(frames: np.ndarray, patch_size: int, merge_size: int,
             temporal_patch_size: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """float32 [T, H', W', 3] -> (pixel_values [t*h*w, 3*tp*p*p], grid_thw [1, 3]).

    Rows are ordered (temporal grid, block row, block col, row in block, col in block); each row is the
    patch flattened as (channel, frame in the tp-group, y, x) -- the Conv3d kernel's own layout, so the
    patch embedding is one matmul. A T that is not a multiple of tp repeats the last frame.
    """
    if frames.ndim != 4 or frames.shape[3] != 3:
        raise ValueError(f"patchify expects frames [T, H, W, 3], got shape {frames.shape}")
    p, m, tp = patch_size, merge_size, temporal_patch_size
    T, H, W, C = frames.shape
    if H % (p * m) or W % (p * m):
        raise ValueError(f"frame size {H}x{W} is not a multiple of patch_size*merge_size = {p * m}; "
                         "run smart_resize first")
    if T == 0:
        raise ValueError("patchify: the clip has no frames")
    if T % tp:                                                   # pad time by repeating the last frame
        frames = np.concatenate([frames, np.repeat(frames[-1:], tp - T % tp, axis=0)], axis=0)
        T = frames.shape[0]
    t, h, w = T // tp, H // p, W // p
    x = frames.reshape(t, tp, h // m, m, p, w // m, m, p, C)     # [t, tp, bh, mh, y, bw, mw, x, C]
    x = x.transpose(0, 2, 5, 3, 6, 8, 1, 4, 7)                   # [t, bh, bw, mh, mw, C, tp, y, x]
    pixel_values = np.ascontiguousarray(x.reshape(t * h * w, C * tp * p * p), dtype=np.float32)  # [P, D]
    return pixel_values, np.array([[t, h, w]], dtype=np.int64)


# ----------------------------------------------------------------------------------------------------------
# 5. The two processors
# ----------------------------------------------------------------------------------------------------------
def preprocess_image(image, patch_size: int, merge_size: int, temporal_patch_size: int = 2,
                     min_pixels: int = IMAGE_MIN_PIXELS, max_pixels: int = IMAGE_MAX_PIXELS) -> VisionInputs:
    """An image (path, PIL image or uint8 array) -> VisionInputs(pixel_values [h*w, D], grid_thw (1, h, w))."""
    rgb = load_image(image) if isinstance(image, (str, os.PathLike)) else to_rgb(image)     # [H, W, 3]
    try:
        h, w = smart_resize(rgb.shape[0], rgb.shape[1], patch_size * merge_size, min_pixels, max_pixels)
    except MediaError as e:
        if isinstance(image, (str, os.PathLike)):                  # name the file the message is about
            raise MediaError(f"{image}: {e}", file=image, field=e.field, value=e.value) from None
        raise
    resized = resize_bicubic(rgb, h, w)                                                    # [H', W', 3]
    x = rescale_normalize_image(resized)                                                   # [H', W', 3]
    clip = np.broadcast_to(x[None], (temporal_patch_size,) + x.shape)   # a still image = tp identical frames
    pixel_values, grid_thw = patchify(clip, patch_size, merge_size, temporal_patch_size)
    return VisionInputs(pixel_values, grid_thw, resized=resized)


def seconds_per_grid(fps: float = 1.0, temporal_patch_size: int = 2) -> float:
    """Seconds of video one temporal grid covers: tp / fps (the Omni processor's `video_second_per_grid`;
    fps defaults to 1.0 there). Returned as the float32 value the thinker receives."""
    if not (fps > 0) or not math.isfinite(fps):
        raise ValueError(f"fps must be a positive finite number, got {fps}")
    return float(np.float32(temporal_patch_size / fps))


def preprocess_video(frames: np.ndarray, patch_size: int, merge_size: int, temporal_patch_size: int = 2,
                     fps: float = 1.0, min_pixels: int = VIDEO_MIN_PIXELS,
                     max_pixels: int = VIDEO_MAX_PIXELS) -> VisionInputs:
    """uint8 frames [T, H, W, 3] (already sampled) -> VisionInputs(pixel_values [t*h*w, D], grid (t, h, w)).

    Frames that are not a smart_resize fixed point are resampled with Pillow's bicubic; the reference's
    torchvision backend may differ there by +-1 in a few pixels (docs/golden_format.md §5.3: no case resamples video).
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8:
        raise MediaError(f"video frames must be uint8, got dtype {frames.dtype}", field="dtype")
    if frames.ndim == 3:                                          # grayscale video [T, H, W]
        frames = frames[..., None]
    if frames.ndim != 4 or min(frames.shape[:3], default=0) == 0 or frames.shape[3] not in (1, 2, 3, 4):
        raise MediaError(f"video must be uint8 [T, H, W, 3] with T, H, W >= 1, got shape {frames.shape}",
                         field="shape", value=frames.shape)
    if frames.shape[0] > MAX_VIDEO_FRAMES:
        raise MediaError(f"video of {frames.shape[0]} frames: at most {MAX_VIDEO_FRAMES} (sample it first)",
                         field="frames", value=frames.shape[0])
    if not (isinstance(fps, (int, float, np.floating)) and math.isfinite(fps) and fps > 0):
        raise MediaError(f"video fps must be a finite positive number, got {fps!r}", field="fps", value=fps)
    if frames.shape[3] != 3:
        frames = np.stack([to_rgb(f) for f in frames])            # [T, H, W, 3]
    T, H, W, _ = frames.shape
    h, w = smart_resize(H, W, patch_size * merge_size, min_pixels, max_pixels)
    resized = np.stack([resize_bicubic(f, h, w) for f in frames]) if (h, w) != (H, W) else frames  # [T, H', W', 3]
    pixel_values, grid_thw = patchify(normalize_video(resized), patch_size, merge_size, temporal_patch_size)
    return VisionInputs(pixel_values, grid_thw, resized=resized,
                        second_per_grid=seconds_per_grid(fps, temporal_patch_size))


def load_video(path: str | os.PathLike, max_bytes: int = MAX_VIDEO_BYTES) -> np.ndarray:
    """A .npy file of uint8 frames -> [T, H, W, 3] (or [T, H, W]), its header checked before the data is read.

    Only plain arrays are read (no pickles: a pickle runs code); dtype, rank and size come from the .npy
    header, so an empty, mistyped or oversized array is refused without loading it.
    """
    path = regular_file(path, "video file", MediaError)
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(fh)
    except Exception as e:          # noqa: BLE001 - the header is untrusted text; any parse failure is the file's
        raise MediaError(f"{path}: not a .npy array file ({type(e).__name__}: {e})", file=path) from None
    if dtype != np.uint8 or len(shape) not in (3, 4) or min(shape) == 0 or (len(shape) == 4 and shape[3] > 4):
        raise MediaError(f"{path}: video must be uint8 frames [T, H, W, 3] with T, H, W >= 1, got {dtype} "
                         f"{list(shape)}", file=path, field="shape", value=shape)
    if math.prod(shape) > max_bytes or shape[0] > MAX_VIDEO_FRAMES:
        raise MediaError(f"{path}: video of {shape[0]} frames, {math.prod(shape)} bytes is above the limit of "
                         f"{MAX_VIDEO_FRAMES} frames and {max_bytes} bytes", file=path, field="size", value=shape)
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, TypeError) as e:
        raise MediaError(f"{path}: cannot read the video frames ({e})", file=path) from None


def sample_frame_indices(total_num_frames: int, video_fps: float | None = None, fps: float | None = None,
                         num_frames: int | None = None, temporal_patch_size: int = 2, min_frames: int = 4,
                         max_frames: int = 768) -> np.ndarray:
    """Which frames of a decoded video to keep -> int [n] (the Qwen2-VL video processor's `sample_frames`).

    Either `num_frames` (rounded to a multiple of tp) or `fps` (needs the video's own `video_fps`):
    n = total/video_fps*fps, clamped to [min_frames, max_frames, total], floored to a multiple of tp.
    The n indices are spread uniformly: floor(i * total/n). With neither, every frame is kept.
    """
    if fps is not None and num_frames is not None:
        raise ValueError("`num_frames` and `fps` are mutually exclusive arguments, please use only one!")
    if total_num_frames <= 0:
        raise ValueError(f"the video has no frames (total_num_frames={total_num_frames})")
    tp = temporal_patch_size
    if num_frames is not None:
        n = round(num_frames / tp) * tp
    elif fps is not None:
        if video_fps is None or not video_fps > 0:
            raise ValueError("sampling at `fps` frames per second needs the video's own fps (video_fps > 0), "
                             f"got {video_fps}")
        cap = math.floor(min(max_frames, total_num_frames) / tp) * tp
        n = min(max(total_num_frames / video_fps * fps, min_frames), cap, total_num_frames)
        n = math.floor(n / tp) * tp
    else:
        return np.arange(total_num_frames)
    if n > total_num_frames:
        raise ValueError(f"Video can't be sampled. The inferred `num_frames={n}` exceeds "
                         f"`total_num_frames={total_num_frames}`. Decrease `num_frames` or `fps` for sampling.")
    if n <= 0:
        raise ValueError(f"cannot sample a multiple of temporal_patch_size={tp} frames from "
                         f"{total_num_frames} frames (got {n})")
    step = total_num_frames / n
    # the reference builds arange(0, total, step) in float32 and truncates to int
    return np.floor(np.arange(n, dtype=np.float64) * step).astype(np.float32).astype(np.int64)
