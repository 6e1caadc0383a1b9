# %% [markdown]
# # 09 · TMRoPE: time-aligned multimodal positions
#
# Chapter 04 gave every token three position numbers (time, height, width) and turned them into rotation
# angles. This chapter is about the *time* row, the part every public port of Qwen3-Omni got wrong at least
# once: how seconds of video and seconds of sound are put on one clock so that the model can tell which sound
# was heard while which frame was shown (`omniref/thinker/positions.py`, HF
# `Qwen3OmniMoeThinkerForConditionalGeneration.get_rope_index`; the interleaving itself in
# `omniref/thinker/prompt.py`, HF `Qwen3OmniMoeProcessor`).
#
#     text      one position per token, all three rows equal
#     audio     one position per audio token = 80 ms of sound (12.5 per second)
#     image     one time value, height/width spread over the merged patch grid
#     video     temporal grid g at  g · second_per_grid · position_id_per_seconds,  h/w as an image
#     video + its own audio   both on that clock, merged by time: 2-second chunks at 1 frame per second
#
# Prerequisites: chapters 04 (RoPE, MRoPE) and 08 (placeholders). Runs in a few seconds; checks against the
# golden case `tiny_bf16_sharded` (in `tests/golden/`), whose prompt holds a video interleaved with its own
# audio track.

# %%
import dataclasses

import matplotlib.pyplot as plt
import numpy as np

from omniref.config import qwen3_omni_30b_a3b_instruct
from omniref.config import ThinkerConfig
from omniref.thinker.positions import cut_blocks, decode_positions, rope_ids_from_config, rope_index
from omniref.thinker.prompt import PROCESSOR_POSITION_ID_PER_SECONDS, Audio, Image, PromptIds, Video, chat_prompt
from omniref.course import case as golden_case, check, show

HUB = qwen3_omni_30b_a3b_instruct()
t = HUB.thinker_config
ids = PromptIds.from_config(HUB, nl=198)
rope = rope_ids_from_config(t)

# %% [markdown]
# ## 1. One clock: `position_id_per_seconds`
# Audio tokens are consecutive, so audio advances by 1 position per 80 ms token: 12.5 positions per second.
# Video time is *computed*: temporal grid g starts at `g · second_per_grid` seconds and gets the position
# `g · second_per_grid · position_id_per_seconds`. The published `config.json` says **13** positions per
# second, close to audio's 12.5 (4% apart, so after a minute the two clocks differ by 30 positions,
# about 2.3 s).
#
# **25 vs 13.** The transformers config *class* defaults to 25 (`ThinkerConfig()` here mirrors it), the Hub
# checkpoint's `config.json` says 13, and the processor hard-codes 13 when it decides the *order* of video and
# audio tokens. Only 13 is consistent: with 25, video positions would run twice as fast as audio positions and
# the order chosen by the processor would no longer sort the tokens by their own time values. omniref reads
# the value from `config.json` (so a checkpoint's 13 is used), and every golden case says 13.

# %%
print(f"class default position_id_per_seconds = {ThinkerConfig().position_id_per_seconds}, "
      f"Hub config.json = {t.position_id_per_seconds}, processor = {PROCESSOR_POSITION_ID_PER_SECONDS}")
assert t.position_id_per_seconds == PROCESSOR_POSITION_ID_PER_SECONDS == 13
for sec in (1, 10, 60):
    print(f"  after {sec:2d} s: audio at {sec * 12.5:6.1f}, video at {sec * 13.0:6.1f} "
          f"(with 25: {sec * 25.0:6.1f})")

# %% [markdown]
# ## 2. One mixed prompt
# A system turn, then a user turn with a 1.5 s audio clip, a 64×96 photo, a 6 s video sampled at 1 frame per
# second (6 frames = 3 temporal patches of 2 frames, `second_per_grid` = 2 s, a 4×6 merged grid per temporal
# patch) **with its own 6 s audio track** (600 mel frames = 78 audio tokens), and a question.

# %%
audio_clip, video_audio = 150, 600                     # mel frames (10 ms)
photo_grid, video_grid, spg = (1, 4, 6), (3, 8, 12), 2.0
items = [Audio(audio_clip), Image(photo_grid), Video(video_grid, spg, audio_frames=video_audio),
         [3838, 374, 419, 30]]                         # "What is this?" in the Qwen vocabulary
prompt = chat_prompt(ids, items, system=[2610, 525, 264, 10950, 17847, 13])   # "You are a helpful assistant."
pos, delta = rope_index(prompt, rope, image_grid_thw=[photo_grid], video_grid_thw=[video_grid],
                        second_per_grid=[spg], audio_frames=[audio_clip, video_audio], use_audio_in_video=True)
L = len(prompt)
blocks = cut_blocks(prompt.tolist(), rope, np.array([photo_grid]), np.array([video_grid]),
                    np.array([spg], np.float32), [audio_clip, video_audio], True)
print(f"prompt: {L} tokens, positions [3, {pos.shape[1]}], largest {pos.max():.0f}, rope_delta {delta:.0f}")
for b in blocks:
    print(f"  {b.kind:15s} tokens {b.start:3d}..{b.end - 1:3d}: {b.n_audio:3d} audio + {b.n_visual:3d} visual")

# %% [markdown]
# ## 3. Audio-in-video: 2-second chunks
# Inside the interleaved block, video tokens of temporal grid g carry time `26 g` (2 s · 13) and audio token k
# carries k; the block lists them sorted by that value, video first on a tie. At 1 frame per second each
# temporal grid spans 2 s, so the block reads: the 24 tokens of frames 0-1, the 26 audio tokens of seconds
# 0-2, the 24 tokens of frames 2-3, the audio of seconds 2-4, ... : **2-second chunks** of picture, then sound.

# %%
aiv = blocks[-1]
body = prompt[aiv.start + 2:aiv.end - 2]                           # between the 2 + 2 markers
runs, cur, n = [], body[0], 0
for tok in body:
    if tok != cur:
        runs.append(("video" if cur == ids.video else "audio", n)); cur, n = tok, 0
    n += 1
runs.append(("video" if cur == ids.video else "audio", n))
print("interleaved block:", " | ".join(f"{k} x{n}" for k, n in runs))
vt = pos[0, aiv.start + 2:aiv.end - 2][body == ids.video]
at = pos[0, aiv.start + 2:aiv.end - 2][body == ids.audio]
start = pos[0, aiv.start + 2]
print(f"video temporal positions per grid: {np.unique(vt - start).tolist()} (= g * {spg:g} s * 13)")
assert np.array_equal(np.unique(vt - start), np.arange(3) * spg * 13)
assert np.array_equal(at - start, np.arange(len(at)))              # audio: consecutive from the block start
assert [k for k, _ in runs[:4]] == ["video", "audio", "video", "audio"] and runs[1][1] == 26

# %% [markdown]
# ## 4. `rope_deltas`: where generation continues
# Text after a block resumes at 1 + the largest position of the last piece written, so the final position is
# smaller than L − 1. The model stores `rope_delta = max + 1 − L` once, and generated token k sits at
# `L + k + rope_delta` in all three rows: the positions keep counting from the prompt's largest one.

# %%
gen = decode_positions(L, delta, 4)                                 # [3, 4]
print(f"L = {L}, largest prompt position {pos.max():.0f}, rope_delta = {delta:.0f}; "
      f"generated tokens at {gen[0].tolist()}")
assert gen[0, 0] == pos.max() + 1 and np.all(gen[0] == gen[1]) and np.all(gen[1] == gen[2])

# %%
colours = {"text": "0.55", "audio": "#4878d0", "image": "#ee854a", "video": "#6acc64"}
kind = np.full(L, "text", dtype=object)
kind[prompt == ids.audio] = "audio"
kind[prompt == ids.image] = "image"
kind[prompt == ids.video] = "video"
fig, ax = plt.subplots(1, 2, figsize=(13, 4.2), gridspec_kw={"width_ratios": [1.4, 1]})
for k, c in colours.items():
    sel = kind == k
    ax[0].plot(np.flatnonzero(sel), pos[0, sel], ".", color=c, ms=4, label=k)
ax[0].plot(np.arange(L, L + 4), gen[0], "x", color="C3", label="generated (rope_delta)")
ax[0].axhline(pos.max(), color="C3", lw=0.5, ls=":")
ax[0].set(xlabel="token index", ylabel="temporal position (row 0)",
          title=f"one mixed prompt: L = {L}, largest position {pos.max():.0f}, rope_delta = {delta:.0f}")
ax[0].legend(fontsize=7)
sec = lambda p: (p - start) / 13.0                                  # position -> seconds on the video clock
sel = slice(aiv.start + 2, aiv.end - 2)
idx = np.arange(L)[sel]
for k, c in (("video", colours["video"]), ("audio", colours["audio"])):
    m = kind[sel] == k
    ax[1].plot(idx[m], sec(pos[0, sel][m]), "s" if k == "video" else ".", color=c, ms=3, label=k)
for g_ in range(1, 3):
    ax[1].axhline(g_ * spg, color="k", lw=0.4, ls="--")
ax[1].set(xlabel="token index", ylabel="time on the video clock (s)",
          title="audio-in-video block: 2-second chunks\n(frames of a 2 s grid first, then its sound)")
ax[1].legend(fontsize=7)
fig.tight_layout()
show(fig, "09_tmrope_timeline")

# %% [markdown]
# ## 5. Check against the reference
# `tiny_bf16_sharded` holds a 3-frame video at 3 fps (grid t = 2 after repeating the last frame,
# `second_per_grid` = 2/3 s: fractional temporal positions 0 and 8.67) interleaved with its own 1.0 s audio
# track. Our positions must equal the reference's bit for bit, and with 25 positions per second they would not.

# %%
case = golden_case("tiny_bf16_sharded")
g = case.golden
tcfg = case.config.thinker_config
kw = dict(video_grid_thw=g["video.grid_thw"], second_per_grid=g["video.second_per_grid"],
          audio_frames=g["mel.attention_mask"].sum(1), use_audio_in_video=bool(g["thinker.use_audio_in_video"]))
ours, our_delta = rope_index(g["thinker.input_ids"][0], rope_ids_from_config(tcfg), **kw)
assert np.array_equal(ours, g["thinker.position_ids"][:, 0]) and our_delta == g["thinker.rope_deltas"][0, 0]
print(f"tiny_bf16_sharded: {ours.shape[1]} positions identical to the reference (rope_delta {our_delta:.0f}); "
      f"video temporal positions {np.unique(ours[0, g['thinker.input_ids'][0] == tcfg.video_token_id]).tolist()}")
wrong = dataclasses.replace(rope_ids_from_config(tcfg), position_id_per_seconds=25.0)
bad, _ = rope_index(g["thinker.input_ids"][0], wrong, **kw)
print(f"with position_id_per_seconds = 25: {(bad != ours).any(0).sum()} of {ours.shape[1]} positions differ")
assert (bad != ours).any()

# %% [markdown]
# ## Exercises
# `check("09.1", fn)` here, or `python -m omniref.course check 09.1 answers.py`.
#
# - **09.1** (implement) `video_times(t, second_per_grid, position_id_per_seconds)`: the float32 temporal
#   positions of the t temporal grids, relative to the block start.
# - **09.2** (implement) `interleave_order(grid_thw, second_per_grid, audio_frames)`: the list of `"v"`/`"a"`
#   in an audio-in-video block (merge 2, 13 positions per second, video first on ties).
# - **09.3** (predict) `decode_position(prompt_len, rope_delta, k)`: the position of generated token k.

# %%
def video_times(t, second_per_grid, position_id_per_seconds):
    raise NotImplementedError        # your answer


check("09.1", video_times)
