# %% [markdown]
# # 10 · Video input: frame sampling, temporal patches, seconds per grid, the token budget
#
# A video reaches the vision encoder of chapter 03 as a stack of frames. Four decisions turn a clip into
# placeholder tokens (`omniref/vision/preprocess.py`; HF `Qwen2VLVideoProcessor` as the Omni processor
# configures it):
#
#     decoded clip [N, H, W, 3] at video_fps ─sample at fps─> [n, H, W, 3], n even, 4 <= n <= 768
#       ─smart_resize (video pixel budget)─> [n, h·32, w·32, 3] ─pairs of frames = temporal patches─>
#       pixel_values [t·(2h)·(2w), 3·2·16·16], grid (t, 2h, 2w), t = ceil(n/2)
#       ─> t·h·w tokens, temporal grid g at g·second_per_grid seconds, second_per_grid = 2 / fps
#
# Prerequisites: chapter 03 (patches, merge groups) and 09 (how the grids' times become positions). Runs in a
# few seconds; checks against the golden case `tiny_bf16_sharded` (in `tests/golden/`).

# %%
import math

import matplotlib.pyplot as plt
import numpy as np

from omniref.config import qwen3_omni_30b_a3b_instruct
from omniref.vision.preprocess import (VIDEO_MAX_PIXELS, VIDEO_MIN_PIXELS, preprocess_video, sample_frame_indices,
                                       seconds_per_grid, smart_resize)
from omniref.course import case as golden_case, check, show

VC = qwen3_omni_30b_a3b_instruct().thinker_config.vision_config
p, m, tp = VC.patch_size, VC.spatial_merge_size, VC.temporal_patch_size
factor = p * m
print(f"patch {p}, merge {m}, temporal_patch_size {tp}: one token = {m}x{m} patches x {tp} frames "
      f"= {factor}x{factor} pixels over {tp} frames")

# %% [markdown]
# ## 1. Frame sampling
# A decoded clip has `video_fps` frames per second (25, 30, ...). The processor keeps
# `n = duration · fps` frames (fps = 2 by default in Qwen's own utilities; the Omni processor receives the
# value it should assume), clamped to at least 4 and at most 768, and floored to a multiple of
# `temporal_patch_size` = 2; the kept frames are spread uniformly: index `floor(i · N / n)`.

# %%
for total, vfps, fps in ((300, 30.0, 2.0), (300, 30.0, 1.0), (45, 30.0, 2.0), (36000, 30.0, 2.0)):
    idx = sample_frame_indices(total, video_fps=vfps, fps=fps)
    print(f"  {total / vfps:7.1f} s at {vfps:g} fps, sampled at {fps:g}/s -> {len(idx):3d} frames, "
          f"first {idx[:4].tolist()} ... last {idx[-1]}")
assert len(sample_frame_indices(45, video_fps=30.0, fps=2.0)) == 4              # never fewer than 4
assert len(sample_frame_indices(36000, video_fps=30.0, fps=2.0)) == 768         # never more than 768

# %% [markdown]
# ## 2. Temporal patches of 2 frames, and seconds per grid
# The patch embedding is a 3-D convolution with a temporal kernel of 2: each patch row holds the same 16×16
# square of **two consecutive frames** (3 · 2 · 16 · 16 = 1536 numbers). An odd number of frames gets its
# last frame repeated. One temporal grid therefore spans 2 sampled frames, i.e. `second_per_grid = 2 / fps`
# seconds: 2 s at 1 fps, 1 s at 2 fps, 2/3 s at 3 fps. That number is what the rope index multiplies by
# `position_id_per_seconds` (chapter 09).

# %%
rng = np.random.default_rng(0)
frames = rng.integers(0, 256, (5, 64, 96, 3), dtype=np.uint8)                    # 5 frames: odd
vi = preprocess_video(frames, p, m, tp, fps=2.0)
t_, gh, gw = (int(v) for v in vi.grid_thw[0])
print(f"5 frames of 64x96 -> grid (t, h, w) = {(t_, gh, gw)}, pixel_values {vi.pixel_values.shape}, "
      f"second_per_grid {vi.second_per_grid} s, tokens {t_ * gh * gw // m ** 2}")
rows = vi.pixel_values.reshape(t_, gh * gw, 3, tp, p, p)                          # [t, patches, c, frame, y, x]
assert t_ == math.ceil(5 / tp) and np.array_equal(rows[-1, :, :, 0], rows[-1, :, :, 1])  # last frame repeated
assert not np.array_equal(rows[0, :, :, 0], rows[0, :, :, 1])
for fps in (1.0, 2.0, 3.0):
    print(f"  fps {fps:g}: second_per_grid = {seconds_per_grid(fps, tp):.4f} s")

# %% [markdown]
# ## 3. The token budget
# Each frame is resized like an image, but inside the *video* pixel budget: at least 128 and at most 768
# tokens' worth of pixels per frame (`[131072, 786432]` pixels), so 720p and 1080p frames are both shrunk to 640×1152
# (720 tokens per temporal grid), and a tiny frame is
# enlarged to the minimum.
# Tokens per video = t · (h/32) · (w/32): the sequence grows linearly with duration and fps.

# %%
sizes = {"360p (360x640)": (360, 640), "720p (720x1280)": (720, 1280), "1080p (1080x1920)": (1080, 1920)}
durations = np.array([2, 5, 10, 30, 60, 120, 300])
budget = {}
for name, (H, W) in sizes.items():
    h, w = smart_resize(H, W, factor, VIDEO_MIN_PIXELS, VIDEO_MAX_PIXELS)
    per_grid = (h // factor) * (w // factor)
    for fps in (1.0, 2.0):
        n = [len(sample_frame_indices(int(d * 30), video_fps=30.0, fps=fps)) for d in durations]
        budget[name, fps] = np.array([math.ceil(k / tp) * per_grid for k in n])
    print(f"  {name:18s} -> frames resized to {h}x{w}: {per_grid} tokens per temporal grid; "
          f"60 s at 2 fps = {budget[name, 2.0][5]:,} tokens")
assert smart_resize(1080, 1920, factor, VIDEO_MIN_PIXELS, VIDEO_MAX_PIXELS)[0] * \
    smart_resize(1080, 1920, factor, VIDEO_MIN_PIXELS, VIDEO_MAX_PIXELS)[1] <= VIDEO_MAX_PIXELS

fig, ax = plt.subplots(1, 2, figsize=(12, 3.8))
idx = sample_frame_indices(300, video_fps=30.0, fps=2.0)
for k, i in enumerate(idx[:12]):
    ax[0].bar(i / 30.0, 1, width=0.08, color=f"C{k // 2}")
    ax[0].text(i / 30.0, 1.02, str(k // 2), ha="center", fontsize=7)
ax[0].set(xlabel="time in the clip (s)", ylabel="kept frame", yticks=[], xlim=(-0.2, 6.2), ylim=(0, 1.2),
          title="frames kept from a 30 fps clip at 2 fps\n(colour and number: temporal grid, 2 frames each)")
for (name, fps), tokens in budget.items():
    wide = name.startswith("720p")                        # 720p and 1080p coincide: both are shrunk to 640x1152
    ax[1].loglog(durations, tokens, "o-" if fps == 2.0 else "s--", ms=3, lw=4 if wide else 1.2,
                 alpha=0.35 if wide else 1.0, label=f"{name}, {fps:g} fps")
ax[1].axhline(32768, color="k", lw=0.6, ls=":")
ax[1].text(2.2, 36000, "32k context", fontsize=7)
ax[1].set(xlabel="video duration (s)", ylabel="video tokens", title="token budget of one video")
ax[1].legend(fontsize=6)
fig.tight_layout()
show(fig, "10_video_budget")

# %% [markdown]
# ## 4. Check against the reference
# `tiny_bf16_sharded` holds the reference processor's input: 3 raw frames of 256×512 at fps 3 and its output
# pixel values, grid and `second_per_grid`; the prompt holds one placeholder per merged token.

# %%
case = golden_case("tiny_bf16_sharded")
g = case.golden
vcfg = case.config.thinker_config.vision_config
ours = preprocess_video(g["video.raw"], vcfg.patch_size, vcfg.spatial_merge_size, vcfg.temporal_patch_size,
                        fps=float(g["video.fps"][0]))
assert np.array_equal(ours.grid_thw, g["video.grid_thw"])
err = np.abs(ours.pixel_values - g["video.pixel_values"]).max()
assert err <= 1e-6 and np.float32(ours.second_per_grid) == g["video.second_per_grid"][0]
n_tokens = int(np.prod(g["video.grid_thw"][0])) // vcfg.spatial_merge_size ** 2
in_prompt = int((g["thinker.input_ids"][0] == case.config.thinker_config.video_token_id).sum())
print(f"tiny_bf16_sharded: {g['video.raw'].shape[0]} frames at {g['video.fps'][0]:g} fps -> grid "
      f"{ours.grid_thw[0].tolist()}, second_per_grid {ours.second_per_grid:.4f} s, pixel_values max abs err "
      f"{err:.1e}; {n_tokens} video tokens = {in_prompt} placeholders in the prompt")
assert n_tokens == in_prompt

# %% [markdown]
# ## Exercises
# `check("10.1", fn)` here, or `python -m omniref.course check 10.1 answers.py`.
#
# - **10.1** (implement) `frame_indices(total_frames, video_fps, fps)`: the indices of the kept frames.
# - **10.2** (predict) `video_tokens(n_frames, height, width)`: the placeholder count of a video of n sampled
#   frames of H×W (patch 16, merge 2, video pixel budget).

# %%
def video_tokens(n_frames, height, width):
    raise NotImplementedError        # your answer


check("10.2", video_tokens)
