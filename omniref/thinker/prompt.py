"""A conversation -> prompt token ids, every media placeholder expanded to its token count (HF Qwen3OmniMoeProcessor).

The chat layout Qwen3-Omni was trained on ("system", "user", "assistant" and "\\n" are single tokens):

    <im_start> system \\n  ...system text...  <im_end> \\n           (optional)
    <im_start> user \\n    [media blocks] [text]  <im_end> \\n
    <im_start> assistant \\n                                       <- the model continues from here

Media blocks, one placeholder token per encoder output row (so the features can be written into them):
    audio clip  : <audio_start>  audio_token  x out_len(frames)                <audio_end>
    image       : <vision_start> image_token  x t*h*w/m^2                      <vision_end>
    video       : <vision_start> video_token  x t*h*w/m^2                      <vision_end>
    video + own audio (use_audio_in_video):
                  <vision_start><audio_start> video and audio tokens merged by time <audio_end><vision_end>
In the merged block, the video tokens of temporal grid g carry the time g * second_per_grid * 13.0 (13.0 is
the processor's own `position_id_per_seconds`) and audio token k carries k; a video token goes first when
its time is <= the audio token's. (80 ms per audio token and 13 positions per second agree to 4 %: this
puts each second of video beside the sound heard during it.)

Legend: L prompt tokens, m spatial merge size, t/h/w patch grid.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Callable, Sequence, Union

import numpy as np

from omniref.audio import mel, wav
from omniref.preprocessor_config import ProcessorSettings
from omniref.thinker.model import ThinkerPrompt
from omniref.thinker.positions import audio_output_length
from omniref.vision.preprocess import preprocess_image, preprocess_video

__all__ = ["Audio", "Image", "Video", "PromptIds", "media_tokens", "chat_prompt", "newline_token_id",
           "build_prompt", "n_visual_tokens", "PROCESSOR_POSITION_ID_PER_SECONDS"]

PROCESSOR_POSITION_ID_PER_SECONDS = 13.0    # Qwen3OmniMoeProcessor's default (not the model config's value)


@dataclass
class Audio:
    """An audio clip, known by its number of valid mel frames (10 ms each)."""
    frames: int


@dataclass
class Image:
    """An image, known by its patch grid (t, h, w) (t = 1)."""
    grid_thw: Sequence[int]


@dataclass
class Video:
    """A video: patch grid (t, h, w), seconds per temporal grid, and its own audio track's frames if any."""
    grid_thw: Sequence[int]
    second_per_grid: float = 1.0
    audio_frames: int | None = None


Item = Union[str, Sequence[int], Audio, Image, Video]


@dataclass(frozen=True)
class PromptIds:
    """Every special token id the prompt layout needs."""
    im_start: int
    im_end: int
    system: int
    user: int
    assistant: int
    nl: int
    audio_start: int
    audio_end: int
    audio: int
    vision_start: int
    vision_end: int
    image: int
    video: int
    merge_size: int

    @classmethod
    def from_config(cls, cfg, nl: int) -> "PromptIds":
        """From an OmniConfig; `nl` is the newline token id (not in config.json: meta.json or the tokenizer)."""
        t = cfg.thinker_config
        return cls(im_start=cfg.im_start_token_id, im_end=cfg.im_end_token_id, system=cfg.system_token_id,
                   user=cfg.user_token_id, assistant=cfg.assistant_token_id, nl=int(nl),
                   audio_start=t.audio_start_token_id, audio_end=t.audio_end_token_id, audio=t.audio_token_id,
                   vision_start=t.vision_start_token_id, vision_end=t.vision_end_token_id,
                   image=t.image_token_id, video=t.video_token_id,
                   merge_size=t.vision_config.spatial_merge_size)


def n_visual_tokens(grid_thw, m: int) -> int:
    t, h, w = (int(v) for v in grid_thw)
    if h % m or w % m:
        raise ValueError(f"patch grid {h}x{w} is not divisible by the merge size {m}")
    return t * h * w // (m * m)


def media_tokens(item, ids: PromptIds, pps: float = PROCESSOR_POSITION_ID_PER_SECONDS) -> list[int]:
    """One media item -> its expanded token block (start/end markers included)."""
    m = ids.merge_size
    if isinstance(item, Audio):
        return [ids.audio_start] + [ids.audio] * audio_output_length(item.frames) + [ids.audio_end]
    if isinstance(item, Image):
        return [ids.vision_start] + [ids.image] * n_visual_tokens(item.grid_thw, m) + [ids.vision_end]
    if isinstance(item, Video) and item.audio_frames is None:
        return [ids.vision_start] + [ids.video] * n_visual_tokens(item.grid_thw, m) + [ids.vision_end]
    if isinstance(item, Video):
        t, h, w = (int(v) for v in item.grid_thw)
        per_grid = n_visual_tokens((1, h, w), m)                                 # tokens per temporal grid
        v_time = np.repeat(np.arange(t) * float(item.second_per_grid) * pps, per_grid)   # [t*h*w/m^2] float64
        n_audio = audio_output_length(item.audio_frames)                  # audio tokens of the video's clip
        body, iv, ia = [], 0, 0
        while iv < len(v_time) and ia < n_audio:          # merge by time, video first on ties
            if v_time[iv] <= ia:
                body.append(ids.video); iv += 1
            else:
                body.append(ids.audio); ia += 1
        body += [ids.video] * (len(v_time) - iv) + [ids.audio] * (n_audio - ia)
        return [ids.vision_start, ids.audio_start] + body + [ids.audio_end, ids.vision_end]
    raise TypeError(f"not a media item: {type(item).__name__}")


def _content(items, ids: PromptIds, encode: Callable[[str], list[int]] | None) -> list[int]:
    out: list[int] = []
    for it in ([items] if isinstance(items, str) else items):
        if isinstance(it, (Audio, Image, Video)):
            out += media_tokens(it, ids)
        elif isinstance(it, str):
            if encode is None:
                raise ValueError("text given as a string but no tokenizer: pass encode= or token ids")
            out += list(encode(it))
        elif isinstance(it, (int, np.integer)):
            out.append(int(it))                              # a token id
        else:
            out += [int(v) for v in it]                      # a list of token ids
    return out


def chat_prompt(ids: PromptIds, user, system=None, encode: Callable[[str], list[int]] | None = None) -> np.ndarray:
    """The prompt for one user turn (and an optional system turn), ending with the assistant header: [L] int64.

    user/system: a string, or a list of items in order: strings, token ids, token-id lists, Audio/Image/Video.
    """
    toks: list[int] = []
    if system is not None:
        toks += [ids.im_start, ids.system, ids.nl] + _content(system, ids, encode) + [ids.im_end, ids.nl]
    toks += [ids.im_start, ids.user, ids.nl] + _content(user, ids, encode) + [ids.im_end, ids.nl]
    toks += [ids.im_start, ids.assistant, ids.nl]                        # the model continues from here
    return np.asarray(toks, dtype=np.int64)                             # [L]


def newline_token_id(checkpoint_dir, tokenizer=None) -> int | None:
    """The id of "\\n" (part of the chat layout, absent from config.json): the tokenizer's single token for it,
    else meta.json `token_ids.nl` (golden cases); None when neither says."""
    import json
    from pathlib import Path
    if tokenizer is not None:
        ids = tokenizer.encode("\n")
        if len(ids) == 1:
            return int(ids[0])
    from ..errors import CheckpointError, parse_json, regular_file
    meta = Path(checkpoint_dir) / "meta.json"
    if os.path.lexists(meta):
        data = parse_json(regular_file(meta, "meta.json", CheckpointError).read_bytes(), meta, "meta.json",
                          CheckpointError, max_depth=64)
        nl = ((data.get("token_ids") if isinstance(data, dict) else None) or {}).get("nl")
        if nl is not None:
            if isinstance(nl, bool) or not isinstance(nl, int) or nl < 0:
                raise CheckpointError(f"{meta}: token_ids.nl = {nl!r}: expected a token id", file=meta,
                                      field="token_ids.nl", value=nl)
            return nl
    return None


def _waveform(clip, rate: int) -> np.ndarray:
    """A WAV path (read and resampled to `rate` Hz mono) or a waveform already at `rate` -> [N] float32."""
    if isinstance(clip, (str, bytes)) or hasattr(clip, "__fspath__"):
        return wav.read_wav(clip, rate)
    return np.asarray(clip, np.float32)


def build_prompt(ids: PromptIds, vision_config, *, audio=(), images=(), video=None, video_fps: float = 1.0,
                 video_audio=None, text=(), system=None, processor: ProcessorSettings | None = None) -> ThinkerPrompt:
    """Media + text of one user turn -> ThinkerPrompt (what Qwen3OmniMoeProcessor.__call__ returns).

    audio: clips (WAV paths or 16 kHz waveforms [N]); images: paths, PIL images or uint8 [H, W, 3];
    video: uint8 frames [T, H, W, 3] sampled at `video_fps`; video_audio: the video's own clip
    (use_audio_in_video: its tokens interleave with the video's); text/system: token ids.
    Order in the user turn: audio clips, images, the video, then the text.
    processor: the checkpoint's preprocessor_config.json settings (default: the published values).
    """
    vc, ps = vision_config, processor or ProcessorSettings()
    prompt, items = ThinkerPrompt(input_ids=np.zeros(0, np.int64)), []
    if video_audio is not None and video is None:
        raise ValueError("video_audio needs a video")
    clips = [_waveform(a, ps.sampling_rate) for a in audio]                       # n x [N] at 16 kHz
    if video_audio is not None:
        clips.append(_waveform(video_audio, ps.sampling_rate))                    # the video's clip comes last
    if clips:
        prompt.input_features, prompt.feature_attention_mask = mel.extract_features(
            clips, ps.feature_size, ps.n_fft, ps.hop_length, ps.sampling_rate)    # [n, 128, F], [n, F]
        items += [Audio(int(n)) for n in prompt.feature_attention_mask.sum(1)[:len(audio)]]
    patches = [preprocess_image(im, vc.patch_size, vc.spatial_merge_size, vc.temporal_patch_size,
                                ps.min_pixels, ps.max_pixels) for im in images]
    if patches:
        prompt.pixel_values = np.concatenate([vi.pixel_values for vi in patches])   # [P, 3*2*p*p]
        prompt.image_grid_thw = np.stack([vi.grid_thw[0] for vi in patches])        # [n_img, 3]
        items += [Image(vi.grid_thw[0]) for vi in patches]
    if video is not None:
        vi = preprocess_video(video, vc.patch_size, vc.spatial_merge_size, vc.temporal_patch_size, fps=video_fps,
                              min_pixels=ps.video_min_pixels, max_pixels=ps.video_max_pixels)
        prompt.video_pixel_values, prompt.video_grid_thw = vi.pixel_values, vi.grid_thw  # [Pv, 3*2*p*p], [1, 3]
        prompt.video_second_per_grid = np.array([vi.second_per_grid], np.float32)     # [1]
        own = int(prompt.feature_attention_mask[-1].sum()) if video_audio is not None else None
        prompt.use_audio_in_video = own is not None
        items.append(Video(vi.grid_thw[0], vi.second_per_grid, audio_frames=own))
    system = [[int(t) for t in system]] if system is not None else None
    prompt.input_ids = chat_prompt(ids, items + [[int(t) for t in text]], system=system)   # [L]
    return prompt
