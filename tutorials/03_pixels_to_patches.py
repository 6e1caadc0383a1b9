# %% [markdown]
# # 03 · From pixels to patches to visual tokens
#
# The vision arrow of Qwen3-Omni: a photo becomes a grid of 16x16 patches, each patch a row of numbers; a
# ViT turns the rows into features; every 2x2 group of neighbouring patches is merged into one token that
# takes the place of an `<image_pad>` in the prompt, and a few intermediate layers ("DeepStack") hand extra
# features straight to the first thinker layers. Code: `omniref/vision/preprocess.py` (pixels -> patches)
# and `omniref/vision/encoder.py` (patches -> tokens). Runs in a few seconds, saves figures under
# `tutorials/figures/`, checks its numbers.
#
#     photo uint8 [H, W, 3] -> resized [H', W', 3] -> pixel_values [P, 3·2·16·16] -> tokens [P/4, out_hidden]

# %%
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

from omniref.config import qwen3_omni_30b_a3b_instruct
from omniref.tiny import load_tiny
from omniref.vision import encoder, preprocess as pp

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "tutorials" / "figures"
FIGURES.mkdir(parents=True, exist_ok=True)
REAL = qwen3_omni_30b_a3b_instruct().thinker_config.vision_config     # the published 30B-A3B vision tower
p, m, tp = REAL.patch_size, REAL.spatial_merge_size, REAL.temporal_patch_size

# %% [markdown]
# ## 1. A real photo
# `omniref/data/photo.jpg` is matplotlib's sample portrait of Grace Hopper (`grace_hopper.jpg`, 512x600).
# `load_image` decodes it with Pillow and converts any mode to RGB the way the reference processor does
# (transparent pixels are composited on white, grayscale is replicated).

# %%
photo = pp.load_image(ROOT / "omniref" / "data" / "photo.jpg")          # [H, W, 3] uint8
H, W, _ = photo.shape
print(f"photo: {H}x{W} pixels, dtype {photo.dtype}")

# %% [markdown]
# ## 2. The resize rule (`smart_resize`)
# The encoder needs whole 2x2 groups of patches, so both sides must be multiples of `factor = p·m = 32`.
# `smart_resize` rounds each side to the nearest multiple (half to even, as Python's `round`), and if the
# area leaves the pixel budget `[min_pixels, max_pixels] = [3136, 12845056]` it rescales both sides by the
# same factor (rounding down when shrinking, up when growing), which keeps the aspect ratio. Anything more
# elongated than 200:1 is refused. The image is then resampled with Pillow's bicubic filter.

# %%
factor = p * m
h2, w2 = pp.smart_resize(H, W, factor)
print(f"factor {factor}: {H}x{W} -> {h2}x{w2}  (rounded {H / factor:.2f} -> {h2 // factor}, "
      f"{W / factor:.2f} -> {w2 // factor} multiples)")
assert (h2, w2) == (round(H / factor) * factor, round(W / factor) * factor)   # inside the budget: plain rounding
for size in [(20, 30), (181, 263), (1080, 1920), (4000, 6000), (10, 2000)]:
    r = pp.smart_resize(*size, factor)
    print(f"  {size[0]:>5}x{size[1]:<5} -> {r[0]:>5}x{r[1]:<5} = {r[0] * r[1] // (p * p):>6} patches, "
          f"{r[0] * r[1] // (factor * factor):>5} tokens")
try:
    pp.smart_resize(5, 1200, factor)
except ValueError as e:
    print(f"  5x1200 refused: {e}")

# %% [markdown]
# ## 3. Patches and merge groups
# After rescaling to [0, 1] (`x/255`) and normalising with mean = std = 0.5 the values lie in [-1, 1]. The image
# is then treated as a clip of `temporal_patch_size = 2` identical frames (the patch embedding is a 3-D
# convolution shared with video), and cut into 16x16 patches. **Row order**: block by block over the 2x2
# merge groups, and inside a group row-major. That way the 4 patches that become one token are 4 consecutive
# rows, and the merge is a reshape. Each row lists (channel, frame, y, x): 3·2·16·16 = 1536 numbers.

# %%
inputs = pp.preprocess_image(photo, p, m)
t, gh, gw = inputs.grid_thw[0]
P, D = inputs.pixel_values.shape
print(f"resized {inputs.resized.shape}, grid (t, h, w) = {(int(t), int(gh), int(gw))}, pixel_values {P}x{D}, "
      f"tokens {P // (m * m)}")
assert (P, D) == (gh * gw, 3 * tp * p * p)

# undo the patch order by hand and recover the normalised image exactly
pos = encoder.patch_positions(inputs.grid_thw, m)                      # [P, 2] (row, col) of every row
rebuilt = np.zeros((gh * p, gw * p, 3), np.float32)
for (r, c), row in zip(pos, inputs.pixel_values):
    rebuilt[r * p:(r + 1) * p, c * p:(c + 1) * p] = row.reshape(3, tp, p, p)[:, 0].transpose(1, 2, 0)
assert np.array_equal(rebuilt, pp.rescale_normalize_image(inputs.resized))
print("un-patchified pixel_values == normalised resized image: exact")

fig, ax = plt.subplots(1, 3, figsize=(16, 6), gridspec_kw={"width_ratios": [1, 1, 1.2]})
ax[0].imshow(photo)
ax[0].set(title=f"original {H}x{W}")
zr, zc = 4, 6                                                          # zoom: the first 4x6 patches (2x3 groups)
for a_, lim in ((ax[1], (h2, w2)), (ax[2], (zr * p, zc * p))):
    a_.imshow(inputs.resized)
    for x in range(0, lim[1] + 1, p):
        a_.axvline(x - 0.5, color="w", lw=0.4 if x % factor else 1.8)
    for y in range(0, lim[0] + 1, p):
        a_.axhline(y - 0.5, color="w", lw=0.4 if y % factor else 1.8)
    a_.set(xlim=(-0.5, lim[1] - 0.5), ylim=(lim[0] - 0.5, -0.5))
ax[1].add_patch(Rectangle((-0.5, -0.5), zc * p, zr * p, fill=False, ec="C1", lw=2))
ax[1].set(title=f"resized {h2}x{w2}: {gh}x{gw} patches (thin),\n2x2 merge groups (thick); orange: zoomed part")
shown = [i for i in range(P) if pos[i, 0] < zr and pos[i, 1] < zc]       # rows of pixel_values in the zoom
for i, j in zip(shown, shown[1:]):
    if j == i + 1:                                                     # rows 12..63 lie outside the zoom
        ax[2].annotate("", xy=(pos[j, 1] * p + p / 2, pos[j, 0] * p + p / 2),
                       xytext=(pos[i, 1] * p + p / 2, pos[i, 0] * p + p / 2),
                       arrowprops=dict(arrowstyle="->", color="C1", lw=1.5))
for i in shown:
    ax[2].text(pos[i, 1] * p + p / 2, pos[i, 0] * p + p / 2, str(i), color="k", fontsize=10, ha="center",
               va="center", bbox=dict(boxstyle="round", fc="yellow", alpha=0.8))
ax[2].add_patch(Rectangle((-0.5, -0.5), factor, factor, fill=False, ec="C3", lw=3))
ax[2].set(title="row index in pixel_values (merge-block order);\nred: the 4 patches of token 0")
fig.tight_layout()
fig.savefig(FIGURES / "03_patch_grid.png", dpi=72)

# %% [markdown]
# ## 4. Learned positions, interpolated
# The encoder has a learned 48x48 table of position vectors (`num_position_embeddings = 2304`). An image with
# an `h x w` patch grid reads it with **bilinear interpolation, corners aligned**: patch row r looks at table
# row `r·(s-1)/(h-1)`, so the four corner patches take exactly the four corner vectors, and every image sees
# the whole table stretched over it.

# %%
s = int(np.sqrt(REAL.num_position_embeddings))
fy = encoder.linspace_f32(s - 1, int(gh))
fx = encoder.linspace_f32(s - 1, int(gw))
print(f"table {s}x{s}; patch rows 0..{gh - 1} read table rows {fy[0]:.2f}, {fy[1]:.3f}, ..., {fy[-1]:.2f}")
# check: interpolating a table that holds its own coordinates returns the source coordinates
coords = np.stack(np.meshgrid(np.arange(s), np.arange(s), indexing="ij"), -1).reshape(s * s, 2).astype(np.float32)
got = encoder.position_embeddings(coords, inputs.grid_thw, m)          # [P, 2]
assert np.allclose(got, np.stack([fy[pos[:, 0]], fx[pos[:, 1]]], axis=1), atol=1e-5)

fig, ax = plt.subplots(figsize=(6, 6))
gy, gx = np.meshgrid(np.arange(s), np.arange(s), indexing="ij")
ax.plot(gx.ravel(), gy.ravel(), "s", ms=9, color="0.75", label=f"table entries ({s}x{s} grid)")
py, px = np.meshgrid(fy, fx, indexing="ij")
ax.plot(px.ravel(), py.ravel(), "o", ms=5, color="C0", label=f"where the {gh}x{gw} patches read")
r0, c0 = 2, 3                                                          # one patch and its 4 blended neighbours
y0, x0 = int(fy[r0]), int(fx[c0])
wy, wx = fy[r0] - y0, fx[c0] - x0
for dy_, dx_ in ((0, 0), (0, 1), (1, 0), (1, 1)):
    wgt = (wy if dy_ else 1 - wy) * (wx if dx_ else 1 - wx)
    ax.plot([fx[c0], x0 + dx_], [fy[r0], y0 + dy_], "-", color="C3", lw=1)
    ax.text(x0 + dx_ + 0.08, y0 + dy_ - 0.12, f"{wgt:.2f}", color="C3", fontsize=9)
ax.set(xlim=(-0.7, 7.7), ylim=(7.7, -0.7), aspect="equal", xlabel="table column", ylabel="table row",
       title=f"top-left corner of the lookup; red: patch ({r0},{c0}) blends 4 entries")
ax.legend(loc="lower center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=8)
fig.tight_layout()
fig.savefig(FIGURES / "03_pos_interp.png", dpi=90)

# %% [markdown]
# ## 5. 2-D rotary embedding
# Inside attention each head vector (hd = 1152/16 = 72) is rotated by angles that depend on the patch's
# (row, col). Its 36 rotation pairs split in two: 18 frequencies `θ^(-2j/36)` turn with the **row**, the same
# 18 with the **column**. A query-key score then depends only on the *offset* between the two patches, for any
# image size; the learned table above gives the absolute position.

# %%
hd = REAL.hidden_size // REAL.num_heads
cos, sin = encoder.rotary_cos_sin(pos, hd, REAL.rope_theta)            # [P, hd]
freq = REAL.rope_theta ** (-np.arange(hd // 4) * 4.0 / hd)
print(f"head size {hd}: {hd // 4} frequencies per axis, wavelengths {2 * np.pi / freq[0]:.1f} .. "
      f"{2 * np.pi / freq[-1]:.0f} patches")
rng = np.random.default_rng(0)
q, k = rng.standard_normal((2, hd)).astype(np.float32)
rot = lambda v, i: v * cos[i] + np.concatenate([-v[hd // 2:], v[:hd // 2]]) * sin[i]
a, b = [int(np.flatnonzero((pos == rc).all(1))[0]) for rc in ([3, 5], [1, 2])]    # offset (2, 3)
c, d = [int(np.flatnonzero((pos == rc).all(1))[0]) for rc in ([12, 20], [10, 17])]  # offset (2, 3)
print(f"score at offset (2,3): {rot(q, a) @ rot(k, b):.5f} vs {rot(q, c) @ rot(k, d):.5f}")
assert np.isclose(rot(q, a) @ rot(k, b), rot(q, c) @ rot(k, d), rtol=1e-4)

fig, ax = plt.subplots(1, 2, figsize=(12, 3.6))
order = np.lexsort((pos[:, 1], pos[:, 0]))                             # patches in raster order for display
ax[0].imshow(cos[order][:, :hd // 2].T, aspect="auto", cmap="coolwarm", interpolation="nearest")
ax[0].set(title="cos(angle): first 18 pairs follow the row, next 18 the column", xlabel="patch (raster order)",
          ylabel="rotation pair")
ax[1].semilogy(2 * np.pi / freq, "o-")
ax[1].set(title="wavelength of each frequency", xlabel="frequency j", ylabel="patches per turn")
fig.tight_layout()
fig.savefig(FIGURES / "03_rope.png", dpi=90)

# %% [markdown]
# ## 6. The encoder and its DeepStack taps
# The published tower has 27 blocks; after blocks 8, 16 and 24 a separate merger turns the current features
# into token-sized vectors. The thinker adds those three to the image tokens' hidden states after its layers
# 0, 1 and 2: low- and mid-level vision reaches the language model directly, not only through the last layer.
#
#     block 0 .. 8 | 9 .. 16 | 17 .. 24 | 25 26 -> merger      -> tokens replace <image_pad>
#                 v          v          v
#          merger_list.0  merger_list.1  merger_list.2  -> added after thinker layers 0, 1, 2
#
# The real weights are 30 GB; we run the same code on the tiny random model (2 blocks, taps after 0 and 1).
# Attention is restricted to one temporal grid of one image (here the whole photo).

# %%
cfg, weights = load_tiny()
tiny = cfg.thinker_config.vision_config
print(f"real tower: {REAL.depth} blocks, taps after {REAL.deepstack_visual_indexes}; "
      f"tiny tower: {tiny.depth} blocks, taps after {tiny.deepstack_visual_indexes}")
tin = pp.preprocess_image(photo, tiny.patch_size, tiny.spatial_merge_size)
out = encoder.vision_forward(weights.scope("thinker.visual."), tiny, tin.pixel_values, tin.grid_thw,
                             record_hidden=True)
n_tok = tin.pixel_values.shape[0] // tiny.spatial_merge_size ** 2
print(f"tokens {out.merged.shape}, deepstack {[d.shape for d in out.deepstack]}, "
      f"hidden states {len(out.hidden_states)} x {out.hidden_states[0].shape}")
assert out.merged.shape == (n_tok, tiny.out_hidden_size) and len(out.deepstack) == len(tiny.deepstack_visual_indexes)

th, tw = int(tin.grid_thw[0, 1]) // m, int(tin.grid_thw[0, 2]) // m
maps = [("merged tokens", out.merged)] + [(f"deepstack {k} (after block {i})", d)
                                          for k, (i, d) in enumerate(zip(tiny.deepstack_visual_indexes, out.deepstack))]
fig, ax = plt.subplots(1, len(maps) + 1, figsize=(4 * (len(maps) + 1), 4))
ax[0].imshow(tin.resized)
ax[0].set(title="input")
for a_, (name, feat) in zip(ax[1:], maps):
    a_.imshow(np.linalg.norm(feat, axis=1).reshape(th, tw), cmap="viridis")  # tokens are in raster order of groups
    a_.set(title=f"|{name}| per token")
fig.suptitle("tiny random tower: one token per 2x2 group (random weights: the maps show structure, not meaning)")
fig.tight_layout()
fig.savefig(FIGURES / "03_deepstack.png", dpi=90)

# %% [markdown]
# ## 7. Check against the goldens
# Preprocessing must match the reference exactly (resized image bit for bit, pixel values to 1e-6), the
# encoder to 1e-4 relative.

# %%
from omniref import stages
from omniref.golden import Case

for d in sorted((ROOT / "tests" / "golden").glob("*")) + sorted((ROOT.parent / "shared" / "golden").glob("*")):
    if not (d / "golden.npz").is_file():
        continue
    case = Case(d)
    g = case.golden
    for stage in (stages.image_stage, stages.video_stage, stages.vision_stage, stages.vision_video_stage):
        for key, ours in stage(case).items():
            ref = g[key]
            rel = np.abs(ours.astype(np.float64) - ref).max() / max(np.abs(ref).max(), 1e-12)
            tol = 0.0 if ref.dtype.kind in "iu" else 1e-6 if key.endswith("pixel_values") else 1e-4
            print(f"{case.name:>12} {key:<28} rel {rel:.1e}")
            assert rel <= tol, key
print(f"figures saved in {FIGURES}")
