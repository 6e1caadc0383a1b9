"""Patches -> visual tokens: the Qwen3-Omni vision encoder `thinker.visual` with its DeepStack taps
(transformers' `Qwen3OmniMoeVisionEncoder`).

    pixel_values [P, D]                  (rows in merge-block order, from vision/preprocess.py)
      -> patch_embed: one matmul          [P, hv]   (a Conv3d whose kernel equals its stride)
      +  learned positions, bilinearly interpolated from an s x s table to each (h, w) grid
      -> depth x ViT block (2-D RoPE; attention only inside one temporal grid of one image/video)
           after block deepstack_visual_indexes[k]: merger_list.k -> deepstack[k]  [P/m², out_hidden]
      -> merger: LayerNorm, group m² neighbours, MLP -> merged tokens           [P/m², out_hidden]

The merged tokens replace the image/video placeholders in the thinker's input; DeepStack feature k is added
to those same positions after thinker layer k (DeepStack, Meng et al. 2024: multi-level visual features are
stacked into the first LLM layers instead of only the last ViT layer feeding the first LLM layer).

Legend (dimension letters used in shape comments)
    P   patches of all images/videos = Σ t*h*w;   t,h,w  temporal grids, patch rows, patch cols
    D   patch row = in_channels * temporal_patch_size * p * p
    hv  vision hidden_size;  nh  num_heads;  hd = hv/nh;  I  intermediate_size
    m   spatial_merge_size;  s  side of the learned position grid (s² = num_position_embeddings)
    O   out_hidden_size (= thinker hidden size)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .. import taps
from ..backend import ops

__all__ = ["VisionOutput", "encode_vision", "vision_forward", "patch_positions", "position_embeddings",
           "rotary_cos_sin", "segment_ids", "linspace_f32"]

F32 = np.float32
TAP = "thinker.visual."       # taps (omniref.taps) are named after the reference's modules under this path
LN_EPS = 1e-6                 # every LayerNorm of the vision tower (blocks and mergers)


@dataclass
class VisionOutput:
    merged: np.ndarray                                          # [P/m², O]
    deepstack: list[np.ndarray]                                 # len(deepstack_visual_indexes) x [P/m², O]
    hidden_states: list[np.ndarray] = field(default_factory=list)  # depth+1 x [P, hv] (when recorded)


# ----------------------------------------------------------------------------------------------------------
# Grid geometry: where each row of pixel_values sits
# ----------------------------------------------------------------------------------------------------------
def patch_positions(grid_thw: np.ndarray, merge_size: int) -> np.ndarray:
    """grid [n, 3] -> int [P, 2]: the (row, col) of every patch in its image's patch grid, in merge-block
    order (block row, block col, row in block, col in block), repeated for each temporal grid."""
    out = []
    for t, h, w in np.asarray(grid_thw, dtype=np.int64):
        m = merge_size
        r = np.arange(h).reshape(h // m, 1, m, 1)                                # [bh, 1, mh, 1]
        c = np.arange(w).reshape(1, w // m, 1, m)                                # [1, bw, 1, mw]
        rows = np.broadcast_to(r, (h // m, w // m, m, m)).reshape(-1)            # [h*w] block order
        cols = np.broadcast_to(c, (h // m, w // m, m, m)).reshape(-1)            # [h*w]
        out.append(np.tile(np.stack([rows, cols], axis=1), (int(t), 1)))         # [t*h*w, 2]
    return np.concatenate(out, axis=0)


def segment_ids(grid_thw: np.ndarray) -> np.ndarray:
    """grid [n, 3] -> int [P]: one id per (image/video, temporal grid). The reference's cu_seqlens: a patch
    attends only to patches of the same frame pair of the same image."""
    sizes = [int(h * w) for t, h, w in np.asarray(grid_thw) for _ in range(int(t))]
    return np.repeat(np.arange(len(sizes)), sizes)


def linspace_f32(stop: int, n: int) -> np.ndarray:
    """torch.linspace(0, stop, n) in float32, element for element: step = stop/(n-1); the first half counts
    up from 0, the second half counts down from `stop` (so both ends are exact)."""
    if n == 1:
        return np.zeros(1, F32)
    step = F32(stop) / F32(n - 1)
    i = np.arange(n)
    up = step * i.astype(F32)                                   # i < n/2
    down = F32(stop) - step * (n - 1 - i).astype(F32)           # i >= n/2
    return np.where(i < n // 2, up, down).astype(F32)


def position_embeddings(pos_table: np.ndarray, grid_thw: np.ndarray, merge_size: int) -> np.ndarray:
    """Learned s x s position grid [s², hv] -> [P, hv] for every patch
(`Qwen3OmniMoeVisionEncoder.fast_pos_embed_interpolate`).

    Bilinear interpolation with aligned corners: patch row r of h maps to table row r*(s-1)/(h-1), so the
    grid's corners land on the table's corners whatever the image size. Each patch blends its 4 neighbouring
    table vectors; every temporal grid of a video reuses the same vectors.
    """
    n_pos, hv = pos_table.shape
    s = math.isqrt(n_pos)
    if s * s != n_pos:
        raise ValueError(f"num_position_embeddings={n_pos} is not a perfect square")
    out = []
    for t, h, w in np.asarray(grid_thw, dtype=np.int64):
        fy, fx = linspace_f32(s - 1, int(h)), linspace_f32(s - 1, int(w))   # [h], [w] source coordinates
        y0, x0 = fy.astype(np.int64), fx.astype(np.int64)                      # floor (coordinates are >= 0)
        y1, x1 = np.minimum(y0 + 1, s - 1), np.minimum(x0 + 1, s - 1)          # clamped upper neighbours
        dy, dx = fy - y0.astype(F32), fx - x0.astype(F32)                      # [h], [w] fractions
        one = F32(1)
        corners = [(y0, x0, (one - dy)[:, None] * (one - dx)[None]),            # weights [h, w] each
                   (y0, x1, (one - dy)[:, None] * dx[None]),
                   (y1, x0, dy[:, None] * (one - dx)[None]),
                   (y1, x1, dy[:, None] * dx[None])]
        emb = None
        for yi, xi, wgt in corners:
            term = pos_table[yi[:, None] * s + xi[None, :]] * wgt[..., None]   # [h, w, hv]
            emb = term if emb is None else emb + term
        m = merge_size
        emb = emb.reshape(h // m, m, w // m, m, hv).transpose(0, 2, 1, 3, 4).reshape(h * w, hv)  # block order
        out.append(np.tile(emb, (int(t), 1)))                                   # [t*h*w, hv]
    return np.concatenate(out, axis=0)


def rotary_cos_sin(positions: np.ndarray, head_dim: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """2-D RoPE: (row, col) [P, 2] -> cos, sin [P, hd].

    The head's hd/2 rotation pairs are split in two: the first hd/4 frequencies turn with the patch row,
    the next hd/4 with the column, freq_j = θ^(-2j/(hd/2)), j < hd/4. Angles [row·freq, col·freq] (hd/2)
    are repeated twice to hd for the split-half layout of `nn.rotate_half`.
    """
    dim = head_dim // 2
    inv_freq = (F32(1.0) / (F32(theta) ** (np.arange(0, dim, 2, dtype=F32) / F32(dim)))).astype(F32)  # [hd/4]
    pos = positions.astype(F32)
    angles = np.concatenate([pos[:, :1] * inv_freq, pos[:, 1:] * inv_freq], axis=1)   # [P, hd/2]
    emb = np.concatenate([angles, angles], axis=1)                                    # [P, hd]
    return np.cos(emb), np.sin(emb)


# ----------------------------------------------------------------------------------------------------------
# The blocks
# ----------------------------------------------------------------------------------------------------------
def _activation(name: str):
    acts = {"gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh", "gelu": "gelu", "silu": "silu"}
    if name not in acts:
        raise ValueError(f"vision hidden_act {name!r} is not supported (known: {sorted(acts)})")
    return lambda x: getattr(ops, acts[name])(x)


def vision_block(x: np.ndarray, w, num_heads: int, cos: np.ndarray, sin: np.ndarray, segments: np.ndarray,
                 act, tap: str = "") -> np.ndarray:
    """One pre-norm ViT block (`Qwen3OmniMoeVisionBlock`). x [P, hv] -> [P, hv]; `w` holds the block's weights (`attn.qkv.weight`, ...)."""
    P, hv = x.shape
    hd = hv // num_heads
    hn = ops.layer_norm(x, w["norm1.weight"], w["norm1.bias"], LN_EPS)
    taps.record(tap + "norm1", hn)
    qkv = ops.linear(hn, w["attn.qkv.weight"], w["attn.qkv.bias"])              # [P, 3hv] = [q | k | v]
    qkv = qkv.reshape(P, 3, num_heads, hd).transpose(1, 2, 0, 3)                # [3, nh, P, hd]
    q = ops.apply_rotary(qkv[0], cos, sin)                                       # [nh, P, hd]
    k = ops.apply_rotary(qkv[1], cos, sin)                                       # [nh, P, hd]
    attn = ops.attention_by_blocks(q, k, np.ascontiguousarray(qkv[2]), segments)  # [nh, P, hd]
    attn = attn.transpose(1, 0, 2).reshape(P, hv)                               # heads back side by side
    attn = ops.linear(attn, w["attn.proj.weight"], w["attn.proj.bias"])          # [P, hv]
    taps.record(tap + "attn", attn)
    x = x + attn
    hn = ops.layer_norm(x, w["norm2.weight"], w["norm2.bias"], LN_EPS)
    taps.record(tap + "norm2", hn)
    mlp = ops.linear(act(ops.linear(hn, w["mlp.linear_fc1.weight"], w["mlp.linear_fc1.bias"])),
                    w["mlp.linear_fc2.weight"], w["mlp.linear_fc2.bias"])      # [P, I] -> [P, hv]
    taps.record(tap + "mlp", mlp)
    x = x + mlp
    taps.record(tap[:-1], x)                                                    # the block's output
    return x


def patch_merger(x: np.ndarray, w, merge_size: int, postshuffle_norm: bool) -> np.ndarray:
    """[P, hv] -> [P/m², O]: m² consecutive rows (one merge block) become one token through an MLP
    (`Qwen3OmniMoeVisionPatchMerger`).

    The final merger normalises each patch (LayerNorm over hv) before grouping; the DeepStack mergers
    (`postshuffle_norm`) normalise the grouped m²·hv row instead. MLP: fc -> GELU (erf) -> fc.
    """
    P, hv = x.shape
    g = merge_size * merge_size
    if postshuffle_norm:
        x = ops.layer_norm(x.reshape(P // g, g * hv), w["ln_q.weight"], w["ln_q.bias"], LN_EPS)  # [P/m², m²hv]
    else:
        x = ops.layer_norm(x, w["ln_q.weight"], w["ln_q.bias"], LN_EPS).reshape(P // g, g * hv)
    x = ops.gelu(ops.linear(x, w["mlp.0.weight"], w["mlp.0.bias"]))               # [P/m², m²hv]
    return ops.linear(x, w["mlp.2.weight"], w["mlp.2.bias"])                     # [P/m², O]


# ----------------------------------------------------------------------------------------------------------
# The whole tower
# ----------------------------------------------------------------------------------------------------------
def _check_inputs(vc, pixel_values: np.ndarray, grid_thw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    D = vc.in_channels * vc.temporal_patch_size * vc.patch_size ** 2
    pixel_values = np.asarray(pixel_values)
    grid_thw = np.asarray(grid_thw)
    if grid_thw.ndim == 1:
        grid_thw = grid_thw[None]
    if grid_thw.ndim != 2 or grid_thw.shape[1] != 3 or not np.issubdtype(grid_thw.dtype, np.integer):
        raise ValueError(f"grid_thw must be an integer array [n, 3] of (t, h, w), got {grid_thw.dtype} "
                         f"{grid_thw.shape}")
    if len(grid_thw) == 0 or (grid_thw <= 0).any():
        raise ValueError(f"grid_thw must hold at least one grid of positive sizes, got {grid_thw.tolist()}")
    m = vc.spatial_merge_size
    if (grid_thw[:, 1:] % m).any():
        raise ValueError(f"grid h and w must be multiples of spatial_merge_size={m}, got {grid_thw.tolist()}")
    P = int(np.prod(grid_thw, axis=1).sum())
    if pixel_values.ndim != 2 or pixel_values.shape != (P, D):
        raise ValueError(f"pixel_values must be [{P}, {D}] for grid_thw {grid_thw.tolist()} "
                         f"(3*temporal_patch_size*patch_size²), got {pixel_values.shape}")
    return pixel_values.astype(F32, copy=False), grid_thw.astype(np.int64)


def vision_forward(weights, vision_config, pixel_values: np.ndarray, grid_thw: np.ndarray, *,
                   record_hidden: bool = False) -> VisionOutput:
    """pixel_values [P, D], grid_thw [n, 3] -> VisionOutput (merged tokens, DeepStack features, and with
    `record_hidden` the block inputs/outputs `hidden_states[0..depth]`, each [P, hv])."""
    vc = vision_config
    w = weights
    if "patch_embed.proj.weight" not in w and "thinker.visual.patch_embed.proj.weight" in w:
        w = w.scope("thinker.visual.")                        # accept the whole checkpoint too
    pixel_values, grid_thw = _check_inputs(vc, pixel_values, grid_thw)
    hv, m = vc.hidden_size, vc.spatial_merge_size

    # Patch embedding: the Conv3d kernel [hv, C, tp, p, p] flattened in the patch row's own order
    proj = w["patch_embed.proj.weight"].reshape(hv, -1)                          # [hv, D]
    x = ops.linear(pixel_values, proj, w["patch_embed.proj.bias"])                # [P, hv]
    taps.record(TAP + "patch_embed", x)
    pos = position_embeddings(w["pos_embed.weight"], grid_thw, m)               # [P, hv]
    taps.record(TAP + "pos_embeds", pos)
    x = x + pos                                                                  # [P, hv]

    cos, sin = rotary_cos_sin(patch_positions(grid_thw, m), hv // vc.num_heads, vc.rope_theta)  # [P, hd]
    taps.record(TAP + "rotary_pos_emb", cos)
    segments = segment_ids(grid_thw)                                             # [P]
    act = _activation(vc.hidden_act)
    deepstack_at = list(vc.deepstack_visual_indexes)
    hidden = [x] if record_hidden else []
    missing = [t for t in deepstack_at if not 0 <= t < vc.depth]
    if missing:
        raise ValueError(f"deepstack_visual_indexes {missing} lie outside the {vc.depth} vision blocks")
    # DeepStack features come out in BLOCK order; the merger applied after block i is merger_list.{k} with k
    # its position in deepstack_visual_indexes (as the reference does: for a sorted list, feature k = merger k)
    deepstack: list[np.ndarray] = []
    for i in range(vc.depth):
        x = vision_block(x, w.scope(f"blocks.{i}."), vc.num_heads, cos, sin, segments, act,
                         tap=f"{TAP}blocks.{i}.")
        if record_hidden:
            hidden.append(x)
        if i in deepstack_at:                                # DeepStack tap after block i
            k = deepstack_at.index(i)
            deepstack.append(patch_merger(x, w.scope(f"merger_list.{k}."), m, postshuffle_norm=True))
            taps.record(f"{TAP}merger_list.{k}", deepstack[-1])
    merged = patch_merger(x, w.scope("merger."), m, postshuffle_norm=False)    # [P/m², O]
    taps.record(TAP + "merger", merged)
    return VisionOutput(merged, deepstack, hidden)


def encode_vision(weights_view, vision_config, pixel_values: np.ndarray, grid_thw: np.ndarray):
    """What the thinker calls: -> (merged [P/m², O], [deepstack_k [P/m², O] for each tapped block])."""
    out = vision_forward(weights_view, vision_config, pixel_values, grid_thw)
    return out.merged, out.deepstack
