"""Reference solutions of the course's exercises, written out from the chapters' explanations.

Kept apart from the exercises (omniref/course/exercises.py) so that a student can work without them;
tests/test_course.py proves that each one passes its checker. Each function is named like the exercise asks.
"""
from __future__ import annotations

import math

import numpy as np

SOLUTIONS: dict = {}


def solution(exercise_id: str):
    def register(fn):
        SOLUTIONS[exercise_id] = fn
        return fn
    return register


@solution("01.1")
def hertz_to_mel(f):
    f = np.asarray(f, np.float64)
    return np.where(f < 1000.0, 3.0 * f / 200.0, 15.0 + 27.0 * np.log(np.maximum(f, 1e-10) / 1000.0) / np.log(6.4))


@solution("01.2")
def n_frames(n_samples):
    return n_samples // 160                                   # hop 160; the last centred STFT frame is dropped


@solution("02.1")
def conv_length(n):
    for _ in range(3):
        n = (n - 1) // 2 + 1                                  # kernel 3, stride 2, padding 1
    return n


@solution("02.2")
def audio_tokens(n_frames):
    return 13 * (n_frames // 100) + conv_length(n_frames % 100)


@solution("03.1")
def smart_resize(height, width, factor, min_pixels=3136, max_pixels=12845056):
    h, w = round(height / factor) * factor, round(width / factor) * factor
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h, w


@solution("03.2")
def image_tokens(height, width):
    h, w = smart_resize(height, width, 32)
    return (h // 16) * (w // 16) // 4


@solution("04.1")
def rope_cos_sin(positions, head_dim, theta):
    inv = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim)     # [hd/2]
    ang = np.asarray(positions, np.float32)[:, None] * inv[None].astype(np.float32)   # [L, hd/2]
    ang = np.concatenate([ang, ang], axis=-1)                                         # [L, hd]
    return np.cos(ang), np.sin(ang)


@solution("04.2")
def rotate_half(x):
    h = x.shape[-1] // 2
    return np.concatenate([-x[..., h:], x[..., :h]], axis=-1)


@solution("05.1")
def route(probs, k, norm_topk_prob):
    experts = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
    weights = np.take_along_axis(probs, experts, axis=-1)
    if norm_topk_prob:
        weights = weights / weights.sum(-1, keepdims=True)
    return experts, weights


@solution("05.2")
def swiglu(x, gate, up, down):
    g = x @ gate.T
    return ((g / (1 + np.exp(-g))) * (x @ up.T)) @ down.T


@solution("06.1")
def suppressed_ids(vocab_size, eos_id):
    return [i for i in range(max(0, vocab_size - 1024), vocab_size) if i != eos_id]


@solution("06.2")
def repetition_penalty(logits, previous, penalty):
    out = np.array(logits, np.float32)
    for i in set(previous):
        out[i] = out[i] / penalty if out[i] > 0 else out[i] * penalty
    return out


@solution("07.1")
def output_length(T, upsampling_ratios, upsample_rates):
    n = T * math.prod(upsampling_ratios)
    for r in upsample_rates:
        n = (n - 1) * r                                       # each decoder block trims r samples
    return n


@solution("07.2")
def embed_codes(codes, table, codebook_size):
    Q = codes.shape[0]
    return np.mean([table[codes[q] + q * codebook_size] for q in range(Q)], axis=0)


@solution("08.1")
def count_placeholders(item, merge_size):
    if hasattr(item, "frames"):
        return audio_tokens(item.frames)
    t, h, w = item.grid_thw
    return t * h * w // merge_size ** 2


@solution("08.2")
def write_rows(embeds, input_ids, token_id, rows):
    where = np.flatnonzero(np.asarray(input_ids) == token_id)
    if len(where) != len(rows):
        raise ValueError(f"{len(where)} placeholders but {len(rows)} rows")
    out = np.array(embeds, copy=True)
    out[where] = rows
    return out


@solution("08.3")
def chat_prompt_fixed(ids, content):
    return [ids.im_start, ids.user, ids.nl] + list(content) + [ids.im_end, ids.nl,
                                                               ids.im_start, ids.assistant, ids.nl]


@solution("09.1")
def video_times(t, second_per_grid, position_id_per_seconds):
    return np.arange(t, dtype=np.float32) * np.float32(second_per_grid) * np.float32(position_id_per_seconds)


@solution("09.2")
def interleave_order(grid_thw, second_per_grid, audio_frames):
    t, h, w = grid_thw
    per_grid = h * w // 4
    video = [g * second_per_grid * 13.0 for g in range(t) for _ in range(per_grid)]
    n_audio, out, iv, ia = audio_tokens(audio_frames), [], 0, 0
    while iv < len(video) and ia < n_audio:
        if video[iv] <= ia:
            out.append("v"); iv += 1
        else:
            out.append("a"); ia += 1
    return out + ["v"] * (len(video) - iv) + ["a"] * (n_audio - ia)


@solution("09.3")
def decode_position(prompt_len, rope_delta, k):
    return prompt_len + k + rope_delta


@solution("10.1")
def frame_indices(total_frames, video_fps, fps):
    cap = math.floor(min(768, total_frames) / 2) * 2
    n = min(max(total_frames / video_fps * fps, 4), cap, total_frames)
    n = math.floor(n / 2) * 2
    return np.floor(np.arange(n) * (total_frames / n)).astype(np.int64)


@solution("10.2")
def video_tokens(n_frames, height, width):
    h, w = smart_resize(height, width, 32, min_pixels=128 * 32 * 32, max_pixels=768 * 32 * 32)
    return math.ceil(n_frames / 2) * (h // 32) * (w // 32)


@solution("11.1")
def gqa_attention(q, k, v):
    nh, L, hd = q.shape
    group = nh // k.shape[0]
    k, v = np.repeat(k, group, axis=0), np.repeat(v, group, axis=0)       # [nh, L, hd]
    s = q @ k.transpose(0, 2, 1) / math.sqrt(hd)
    s = np.where(np.tril(np.ones((L, L), bool)), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    return (p / p.sum(-1, keepdims=True)) @ v


@solution("11.2")
def top_p(logits, p):
    order = np.argsort(-logits, kind="stable")
    probs = np.exp(logits[order] - logits.max())
    probs /= probs.sum()
    keep = (np.cumsum(probs) - probs) < p                  # mass before the token still below p
    out = np.full_like(logits, -np.inf)
    out[order[keep]] = logits[order[keep]]
    return out


@solution("11.3")
def qk_norm(x, weight, eps):
    return x / np.sqrt((x.astype(np.float32) ** 2).mean(-1, keepdims=True) + eps) * weight


@solution("12.1")
def chunk_plan(T, chunk_size, left_context):
    plan = []
    for start in range(0, T, chunk_size):
        ctx = left_context if start > left_context else start
        plan.append((start - ctx, start, min(start + chunk_size, T)))
    return plan


@solution("12.2")
def streamed_seconds(T, chunk_size):
    return sum(1920 * (end - start) - 555 for _, start, end in chunk_plan(T, chunk_size, 25)) / 24000
