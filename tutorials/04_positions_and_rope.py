# %% [markdown]
# # 04 · Positions and rotary embeddings: 1-D RoPE, interleaved MRoPE, and the 3-D rope index
#
# How the thinker knows *where* each token is. `omniref/thinker/positions.py` gives every token three
# position numbers (time, height, width); `omniref/decoder.py::rope_cos_sin` turns them into rotation angles.
#
#     token ids [L] --rope_index--> positions [3, L] --rope_cos_sin--> cos, sin [L, hd] --apply_rotary--> q, k
#
# Runs in a second or two as a script or a notebook (figures inline in a notebook, saved under
# `tutorials/_output/` as a script), and checks its numbers (relative-position invariance, MRoPE == RoPE for
# text, and the golden positions of the cases that ship in `tests/golden/`).

# %%
import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from omniref import nn
from omniref.config import qwen3_omni_30b_a3b_instruct
from omniref.decoder import rope_cos_sin, rope_inv_freq
from omniref.thinker.positions import RopeIds, decode_positions, rope_ids_from_config, rope_index
from omniref.thinker.prompt import Audio, Image, PromptIds, chat_prompt
from omniref.course import check, case as golden_case, show

# %% [markdown]
# ## 1. 1-D RoPE: rotate pairs of channels by an angle proportional to the position
# A head vector of size `hd` is seen as `hd/2` 2-D pairs (channel i with channel i + hd/2, the "split-half"
# layout). Pair i turns by `pos · θ^(-2i/hd)`: fast for the first pairs, slow for the last ones. Because both
# q and k are rotated, their dot product depends only on the *difference* of positions.

# %%
hd, theta = 16, 1_000_000.0
inv_freq = rope_inv_freq(hd, theta)                                      # [hd/2]
print("inverse frequencies:", np.array2string(inv_freq, precision=3))
rng = np.random.default_rng(0)
q, k = rng.standard_normal((2, 1, 1, hd)).astype(np.float32)             # [1 head, 1 token, hd]


def rotated_dot(pq, pk):
    cq, sq = rope_cos_sin(np.array([pq], np.float32), hd, theta)          # [1, hd]
    ck, sk = rope_cos_sin(np.array([pk], np.float32), hd, theta)
    return float((nn.apply_rotary(q, cq, sq) * nn.apply_rotary(k, ck, sk)).sum())


dots = [rotated_dot(p, p - 3) for p in (3, 10, 100, 1000)]               # always 3 apart
print("q·k at distance 3 for absolute positions 3, 10, 100, 1000:", np.round(dots, 5))
assert np.ptp(dots) < 1e-4 * max(abs(d) for d in dots), "RoPE must depend on relative position only"

# %% [markdown]
# ## 2. Interleaved MRoPE: which position row drives which frequency
# With three rows, every frequency slot i takes its angle from one row. Qwen3-Omni interleaves them:
# slot i uses height if `i % 3 == 1` (for the first `3·mrope_section[1]` slots), width if `i % 3 == 2`
# (first `3·mrope_section[2]`), time otherwise. So every axis gets fast *and* slow frequencies — the older
# split layout gave time only the fast ones and width only the slow ones.

# %%
def slot_rows(head_dim, section):
    slot = np.arange(head_dim // 2)
    row = np.zeros(head_dim // 2, int)
    row[(slot % 3 == 1) & (slot < 3 * section[1])] = 1
    row[(slot % 3 == 2) & (slot < 3 * section[2])] = 2
    return row


real = qwen3_omni_30b_a3b_instruct().thinker_config.text_config
layouts = {"tiny (hd 16, [2, 3, 3])": slot_rows(16, [2, 3, 3]),
           f"30B-A3B (hd {real.head_dim}, {real.mrope_section})": slot_rows(real.head_dim, real.mrope_section)}
for name, row in layouts.items():
    print(f"{name:34s}", "".join("thw"[r] for r in row))
fig, axes = plt.subplots(len(layouts), 1, figsize=(10, 2.2))
for ax, (name, row) in zip(axes, layouts.items()):
    ax.imshow(row[None], cmap=matplotlib.colors.ListedColormap(["#4878d0", "#ee854a", "#6acc64"]), aspect="auto",
              vmin=0, vmax=2)
    ax.set_yticks([]); ax.set_title(name + "   (blue: time, orange: height, green: width)", fontsize=8)
axes[-1].set_xlabel("frequency slot i (fast → slow)")
fig.tight_layout(); show(fig, "04_mrope_slots")

# For a text token all three rows hold the same number, so MRoPE is exactly 1-D RoPE:
pos1 = np.arange(12, dtype=np.float32)
c1, s1 = rope_cos_sin(pos1, hd, theta)
c3, s3 = rope_cos_sin(np.tile(pos1, (3, 1)), hd, theta, [2, 3, 3])
assert np.array_equal(c1, c3) and np.array_equal(s1, s3)
print("text tokens: MRoPE cos/sin == 1-D RoPE cos/sin (exactly)")

# %% [markdown]
# ## 3. The rope index of a mixed prompt
# A system turn, then a user turn with a 2.3 s audio clip, a 128×192-pixel image (8×12 patches of 16 px,
# merged 2×2 into 4×6 tokens) and some text. Text and audio advance all three rows together; the image
# tokens share one time value and spread over a height × width grid; text resumes after the largest
# position the image used, so the last position is smaller than the prompt length (`rope_delta < 0`).

# %%
P = PromptIds(im_start=1, im_end=2, system=3, user=4, assistant=5, nl=6, audio_start=7, audio_end=8, audio=9,
              vision_start=10, vision_end=11, image=12, video=13, merge_size=2)
ids = RopeIds(image_token_id=12, video_token_id=13, audio_token_id=9, vision_start_token_id=10,
              audio_start_token_id=7, position_id_per_seconds=13, spatial_merge_size=2)
prompt = chat_prompt(P, [Audio(230), Image((1, 8, 12)), [40, 41, 42, 43]], system=[20, 21, 22])
pos, delta = rope_index(prompt, ids, image_grid_thw=[[1, 8, 12]], audio_frames=[230])
L = prompt.shape[0]
print(f"prompt: {L} tokens, largest position {pos.max():.0f}, rope_delta {delta:.0f}")
img = np.flatnonzero(prompt == P.image)
print("image tokens (t, h, w) of the first merged row:", pos[:, img[:6]].T.astype(int).tolist())
assert pos[0, img].min() == pos[0, img].max()                            # one time value for the image
assert pos[1, img].max() - pos[1, img].min() == 3 and pos[2, img].max() - pos[2, img].min() == 5
assert delta == pos.max() + 1 - L
nxt = decode_positions(L, delta, 3)
assert np.array_equal(nxt[0], pos.max() + np.array([1, 2, 3], np.float32))   # decoding continues after max

fig, ax = plt.subplots(figsize=(11, 3.4))
for r, (name, colour) in enumerate(zip(("time", "height", "width"), ("#4878d0", "#ee854a", "#6acc64"))):
    ax.plot(np.arange(L), pos[r], ".", ms=4 + 2 * (2 - r), color=colour, label=name)
kinds = {P.audio: "audio", P.image: "image"}
for tok, name in kinds.items():
    where = np.flatnonzero(prompt == tok)
    ax.axvspan(where[0] - 0.5, where[-1] + 0.5, color="grey", alpha=0.12)
    ax.text(where.mean(), pos.max() * 0.95, name, ha="center")
ax.set_xlabel("token index"); ax.set_ylabel("rope position"); ax.legend(loc="lower right")
ax.set_title(f"3-D rope positions of a text + audio + image prompt (L = {L}, rope_delta = {delta:.0f})")
fig.tight_layout(); show(fig, "04_position_grids")

# The image block as a picture: each merged token's (height, width) position
fig, ax = plt.subplots(figsize=(5, 3))
grid = (pos[1, img] - pos[1, img].min()).astype(int), (pos[2, img] - pos[2, img].min()).astype(int)
canvas = np.zeros((4, 6)); canvas[grid] = np.arange(img.size)
im = ax.imshow(canvas, cmap="viridis"); ax.set_title("image tokens in sequence order\nplaced at their (h, w) positions")
ax.set(xlabel="width position − block start", ylabel="height position − block start")
fig.colorbar(im, ax=ax, label="token index inside the image block")
fig.tight_layout(); show(fig, "04_image_block")

# %% [markdown]
# ## 4. Check against the reference
# For both model cases that ship in `tests/golden/` the rope index of the prompt must equal the reference's
# `thinker.position_ids` exactly (`tiny_bf16_sharded` holds a video interleaved with its own audio track).

# %%
for name in ("tiny_f32", "tiny_bf16_sharded"):
    case = golden_case(name)
    g = case.golden
    ref_pos, ref_delta = rope_index(g["thinker.input_ids"][0], rope_ids_from_config(case.config.thinker_config),
                                    image_grid_thw=g.get("image.grid_thw"), video_grid_thw=g.get("video.grid_thw"),
                                    second_per_grid=g.get("video.second_per_grid"),
                                    audio_frames=g["mel.attention_mask"].sum(1),
                                    use_audio_in_video=bool(g["thinker.use_audio_in_video"]))
    assert np.array_equal(ref_pos, g["thinker.position_ids"][:, 0]) and ref_delta == g["thinker.rope_deltas"][0, 0]
    print(f"{name}: {ref_pos.shape[1]} positions identical to the reference, rope_delta {ref_delta:.0f}")

# %% [markdown]
# ## Exercises
# Check an answer here with `check("04.2", your_function)`, or from a file with
# `python -m omniref.course check 04.2 answers.py` (`python -m omniref.course list` shows every task).
#
# - **04.1** (implement) `rope_cos_sin(positions, head_dim, theta)`: 1-D RoPE tables [L, hd] in the split-half layout.
# - **04.2** (find the planted bug) `rotate_half(x)`: `rotate_half_buggy` below pairs channel 2i with 2i+1 (the GPT-J
#   layout), so q·k no longer depends on the relative position only with Qwen's tables. Write the split-half version.

# %%
def rotate_half_buggy(x):
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = -x[..., 1::2], x[..., 0::2]
    return out


def rotate_half(x):
    raise NotImplementedError        # your answer


check("04.2", rotate_half)
