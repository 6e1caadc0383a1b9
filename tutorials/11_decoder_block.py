# %% [markdown]
# # 11 · The decoder block: GQA, QK-norm, the KV cache, and choosing the next token
#
# Every thinker layer is the same block (`omniref/decoder.py`, HF `Qwen3OmniMoeThinkerTextDecoderLayer`):
#
#     x ─RMSNorm─ q,k,v projections ─ per-head RMSNorm of q and k (QK-norm) ─ RoPE ─ causal GQA attention ─ o_proj ─(+)─
#       ─RMSNorm─ MoE (chapter 05) ─(+)─> next layer          ... final RMSNorm ─ lm_head ─ logits ─ sampling
#
# This chapter runs layer 0 of the golden case `tiny_f32` by hand, piece by piece, and ends with the logit
# processors that pick the next token (`omniref/thinker/sampling.py`). The intermediate arrays are computed
# by calling the model's own functions (`nn.linear`, `nn.rms_norm`, `nn.apply_rotary`, `nn.attention`) and
# checked against the taps the model records (`omniref/trace.py`).
# Prerequisites: chapters 04 (RoPE) and 05 (MoE). Runs in a few seconds as a script or a notebook.

# %%
import matplotlib.pyplot as plt
import numpy as np

import omniref.trace
from omniref import nn
from omniref.config import qwen3_omni_30b_a3b_instruct
from omniref.decoder import KVCache, moe, rope_cos_sin
from omniref.thinker.model import Thinker
from omniref.thinker.sampling import SamplingConfig, apply_repetition_penalty, next_token, top_k_filter, top_p_filter
from omniref.course import case as golden_case, check, show

case = golden_case("tiny_f32")
g, cfg = case.golden, case.config
text = cfg.thinker_config.text_config
thinker = Thinker(case.weights, cfg)
w = case.weights.scope("thinker.model.")
nh, nkv, hd, eps = text.num_attention_heads, text.num_key_value_heads, text.head_dim, text.rms_norm_eps
x = g["thinker.hidden_states.0"][0]                                   # [L, H] fused input (chapter 08)
positions = g["thinker.position_ids"][:, 0]                           # [3, L] (chapter 09)
L, H = x.shape
print(f"tiny_f32 thinker: hidden {H}, {nh} query heads, {nkv} key/value head(s), head_dim {hd}; prompt L = {L}")

# %% [markdown]
# ## 1. Layer 0, piece by piece

# %%
p = "layers.0.self_attn."
h = nn.rms_norm(x, w["layers.0.input_layernorm.weight"], eps)                        # [L, H]
q = nn.linear(h, w[p + "q_proj.weight"]).reshape(L, nh, hd)                          # [L, nh, hd]
k = nn.linear(h, w[p + "k_proj.weight"]).reshape(L, nkv, hd)                         # [L, nkv, hd]
v = nn.linear(h, w[p + "v_proj.weight"]).reshape(L, nkv, hd).transpose(1, 0, 2)      # [nkv, L, hd]
qn = nn.rms_norm(q, w[p + "q_norm.weight"], eps)                                     # QK-norm, per head
kn = nn.rms_norm(k, w[p + "k_norm.weight"], eps)
cos, sin = rope_cos_sin(positions, hd, text.rope_theta, text.mrope_section)          # [L, hd]
qr = nn.apply_rotary(qn.transpose(1, 0, 2), cos, sin)                                # [nh, L, hd]
kr = nn.apply_rotary(kn.transpose(1, 0, 2), cos, sin)                                # [nkv, L, hd]
o = nn.attention(qr, kr, v, causal=True)                                             # [nh, L, hd]
attn = nn.linear(o.transpose(1, 0, 2).reshape(L, nh * hd), w[p + "o_proj.weight"])  # [L, H]
x1 = x + attn
mlp = moe(nn.rms_norm(x1, w["layers.0.post_attention_layernorm.weight"], eps), w, "layers.0.mlp.",
          text.num_experts, text.num_experts_per_tok, text.norm_topk_prob)
out0 = x1 + mlp                                                                      # [L, H]
for name, a in (("x", x), ("q", q), ("k", k), ("v", v), ("attention out", o), ("o_proj", attn), ("layer 0 out", out0)):
    print(f"  {name:14s} {list(a.shape)}")
ref = g["thinker.hidden_states.1"][0]                 # the reference's output of layer 0 (before DeepStack)
err = np.abs(out0 - ref).max() / np.abs(ref).max()
print(f"layer 0 by hand vs the reference's thinker.hidden_states.1: rel err {err:.1e}")
assert err < 1e-5

# %% [markdown]
# The model offers the same intermediates itself, as named *taps* (`omniref/trace.py`, named after the
# reference's modules: `thinker.model.layers.0.self_attn.q_norm` is what that module returns). A trace of one
# forward must hold exactly what we computed by hand above.

# %%
p0 = "thinker.model.layers.0."
with omniref.trace.Trace(include=[p0 + "*", p0[:-1]]) as tr:           # record the taps of one forward
    thinker.forward(x, positions)
by_hand = {p0 + "self_attn.q_norm": qn, p0 + "self_attn.k_norm": kn, p0 + "self_attn.q_rotary": qr,
           p0 + "self_attn.k_rotary": kr, p0 + "self_attn.o_proj": attn, p0[:-1]: out0}
for name, ours in by_hand.items():
    tapped = tr.arrays[name][0]                               # the batch axis of the reference's layout dropped
    assert np.allclose(tapped, ours, rtol=1e-5, atol=1e-6), name
    print(f"  tap {name:42s} {list(tr.arrays[name].shape)} == by hand")
print(f"one forward offers {len(tr)} taps under {p0}*; `omniref trace` / `omniref compare` use the same names")

# %% [markdown]
# ## 2. Grouped-query attention (GQA)
# `tiny_f32` has 4 query heads and **1** key/value head: all four queries read the same keys and values. That
# is ordinary multi-head attention with the kv heads repeated `nh / nkv` times, but the KV cache (next
# section) only stores the nkv heads. The published thinker: 32 query heads, 4 kv heads, head_dim 128,
# 48 layers.

# %%
mha = nn.attention(qr, np.repeat(kr, nh // nkv, axis=0), np.repeat(v, nh // nkv, axis=0), causal=True)
assert np.allclose(mha, o, atol=1e-6)
real = qwen3_omni_30b_a3b_instruct().thinker_config.text_config
per_token = lambda kv_heads: 2 * real.num_hidden_layers * kv_heads * real.head_dim * 2    # K and V, bf16
print(f"GQA == MHA with repeated kv heads; published thinker KV cache: "
      f"{per_token(real.num_key_value_heads) / 1024:.0f} "
      f"KiB per token with {real.num_key_value_heads} kv heads, {per_token(real.num_attention_heads) / 1024:.0f} KiB "
      f"if every one of the {real.num_attention_heads} heads kept its own "
      f"(32k tokens: {per_token(real.num_key_value_heads) * 32768 / 2 ** 30:.1f} vs "
      f"{per_token(real.num_attention_heads) * 32768 / 2 ** 30:.0f} GiB)")

# %% [markdown]
# ## 3. QK-norm, and why scaling all of `q_proj` is invisible after it
# Qwen3 normalises each head's query and key vector (RMSNorm over hd, with a learned gain) *before* RoPE. The
# attention logits are then bounded by the gains, whatever the projections do: training cannot blow them up.
# A consequence that confuses port debugging: multiply the whole `q_proj` weight by any c > 0 and nothing
# changes, because `rms_norm(c·q) = c·q / sqrt(c²·mean(q²) + eps) = q / sqrt(mean(q²) + eps/c²)`
# (exactly invisible as c grows; only a c small enough that eps/c² rivals mean(q²) shows through).
# A bug that scales q (a wrong `scaling` factor, a missing 1/sqrt(hd) folded into the weight) is invisible
# after QK-norm and only shows up where q is used without it.

# %%
def logits_head0(c, with_norm):
    """Attention logits of head 0 [L, L] with q_proj scaled by c."""
    qc = c * q
    if with_norm:
        qc = nn.rms_norm(qc, w[p + "q_norm.weight"], eps)
    qc = nn.apply_rotary(qc.transpose(1, 0, 2), cos, sin)
    kk = kr if with_norm else nn.apply_rotary(k.transpose(1, 0, 2), cos, sin)
    return qc[0] @ kk[0].T / np.sqrt(hd)


def entropy(logits):
    mask = np.tril(np.ones((L, L), bool))
    pr = nn.softmax(np.where(mask, logits, -np.inf), axis=-1)
    return float(-(pr * np.log(np.where(pr > 0, pr, 1))).sum(-1).mean())


scales = np.array([0.01, 0.1, 1, 10, 100, 1000])
peak = {nm: [np.abs(logits_head0(c, nm)).max() for c in scales] for nm in (True, False)}
ent = {nm: [entropy(logits_head0(c, nm)) for c in scales] for nm in (True, False)}
base = logits_head0(1, True)
change = {c: np.abs(logits_head0(c, True) - base).max() / np.abs(base).max() for c in scales}
print("with QK-norm, relative change of the logits when q_proj is scaled by c:",
      ", ".join(f"c={c:g}: {d:.1e}" for c, d in change.items()))
print(f"  (q's mean square here is {np.mean(q ** 2):.1e}; eps/c^2 = {eps:.0e}/c^2 only matters when c is tiny)")
print(f"without it, the largest logit goes {peak[False][0]:.3g} -> {peak[False][-1]:.3g}, i.e. times c")
assert all(d < 1e-4 for c, d in change.items() if c >= 1) and peak[False][-1] > 1000 * peak[False][0]

fig, ax = plt.subplots(1, 2, figsize=(11, 3.4))
for nm, style in ((True, "o-"), (False, "s--")):
    ax[0].loglog(scales, peak[nm], style, label="with QK-norm" if nm else "without")
    ax[1].semilogx(scales, ent[nm], style, label="with QK-norm" if nm else "without")
ax[0].set(xlabel="scale c applied to q_proj", ylabel="largest |attention logit|", title="logits of head 0, layer 0")
ax[1].set(xlabel="scale c applied to q_proj", ylabel="mean attention entropy (nats)",
          title="how spread out attention is")
ax[0].legend(); ax[1].legend()
fig.tight_layout()
show(fig, "11_qk_norm")

# %% [markdown]
# ## 4. The KV cache is an exact rewrite of recomputation
# Causal attention means token i never looks at tokens after it, so the keys and values of earlier tokens
# never change once computed. Generating with a cache (run the prompt once, keep every layer's K and V, then
# feed one new token at a time) gives the same numbers as re-running the whole growing sequence at every
# step, with far less work: step n costs O(n) attention instead of O(n²), and none of the old tokens' MLPs.
# Check: the last 6 rows of a full forward versus a prefill of L − 6 rows followed by 6 single-row steps.

# %%
full = thinker.forward(x, positions)                                         # [L, H] all at once
cache = KVCache()
rows = [thinker.forward(x[:L - 6], positions[:, :L - 6], cache)]             # prefill: [L-6, H]
for i in range(L - 6, L):                                                    # decode: one row at a time
    rows.append(thinker.forward(x[i:i + 1], positions[:, i:i + 1], cache))   # [1, H]
step = np.concatenate(rows)
errs = np.abs(step - full).max(axis=1) / np.abs(full).max()
print(f"cache of {len(cache)} tokens; max rel difference, cached vs recomputed, per row: {errs.max():.1e}")
assert errs.max() < 1e-5

n = np.arange(1, 513)
fig, ax = plt.subplots(1, 2, figsize=(11, 3.4))
ax[0].semilogy(np.arange(L), np.maximum(errs, 1e-12), ".")
ax[0].axvline(L - 6.5, color="k", lw=0.5)
ax[0].set(xlabel="token index (right of the line: one decode step each)", ylabel="relative difference",
          title="cached vs recomputed hidden states (float32 rounding only)")
ax[1].plot(n, np.cumsum(n * (n + 1) / 2), label="recompute everything each step")
ax[1].plot(n, np.cumsum(n), label="KV cache")
ax[1].set(xlabel="generated tokens", ylabel="query-key dot products (cumulative)", yscale="log",
          title="attention work per layer and head")
ax[1].legend()
fig.tight_layout()
show(fig, "11_kv_cache")

# %% [markdown]
# ## 5. From logits to the next token
# The reference's last-position logits of `tiny_f32` (200-token vocabulary). Greedy takes the argmax (what
# the golden run did). Sampling divides by a **temperature** (< 1 sharpens, > 1 flattens), then optionally
# keeps only the **top-k** scores or the smallest **top-p** set whose probability reaches p, and draws. The
# **repetition penalty** (CTRL) first divides the positive scores of already-seen tokens by the penalty and
# multiplies their negative ones.

# %%
logits = g["thinker.logits_last"][0]                                          # [V]
greedy = next_token(logits, SamplingConfig())
print(f"greedy: token {greedy}; the reference generated {g['thinker.generated_ids'][0, 0]} first")
assert greedy == g["thinker.generated_ids"][0, 0]
probs = lambda z: nn.softmax(z.astype(np.float64))
order = np.argsort(-logits)[:20]
fig, ax = plt.subplots(1, 3, figsize=(14, 3.4))
for temp in (0.5, 1.0, 2.0):
    ax[0].plot(probs(logits / temp)[order], "o-", ms=3, label=f"temperature {temp}")
ax[0].set(xlabel="token rank (by logit)", ylabel="probability", title="temperature")
ax[0].legend(fontsize=7)
for name, z in (("no filter", logits), ("top-k = 5", top_k_filter(logits, 5)),
                ("top-p = 0.5", top_p_filter(logits, 0.5))):
    ax[1].plot(probs(z)[order], "o-", ms=3, label=f"{name}: {np.isfinite(z).sum()} tokens kept")
ax[1].set(xlabel="token rank (by logit)", ylabel="probability after filtering", title="top-k and top-p")
ax[1].legend(fontsize=7)
seen = order[:3].tolist()
for pen in (1.0, 1.3, 2.0):
    ax[2].plot(probs(apply_repetition_penalty(logits, seen, pen))[order], "o-", ms=3, label=f"penalty {pen}")
ax[2].axvspan(-0.5, 2.5, color="grey", alpha=0.15)
ax[2].set(xlabel="token rank (grey: already generated)", ylabel="probability", title="repetition penalty")
ax[2].legend(fontsize=7)
fig.tight_layout()
show(fig, "11_sampling")

# sampling follows the filtered distribution: 3000 seeded draws at temperature 1, top-p 0.5
rng = np.random.default_rng(0)
sc = SamplingConfig(do_sample=True, top_p=0.5)
draws = np.bincount([next_token(logits, sc, rng=rng) for _ in range(3000)], minlength=logits.size) / 3000
want = probs(top_p_filter(logits, 0.5))
print(f"3000 draws with top-p 0.5: {np.count_nonzero(draws)} distinct tokens "
      f"(allowed {np.isfinite(top_p_filter(logits, 0.5)).sum()}), "
      f"max |frequency - probability| {np.abs(draws - want).max():.3f}")
assert np.all(draws[want == 0] == 0) and np.abs(draws - want).max() < 0.05

# %% [markdown]
# ## Exercises
# `check("11.1", fn)` here, or `python -m omniref.course check 11.1 answers.py`.
#
# - **11.1** (implement) `gqa_attention(q, k, v)`: causal attention, q [nh, L, hd], k/v [nkv, L, hd].
# - **11.2** (implement) `top_p(logits, p)`: the nucleus filter (scores outside the set become -inf).
# - **11.3** (implement) `qk_norm(x, weight, eps)`: RMSNorm over the last axis. Then convince yourself, with
#   your function, that `qk_norm(c * x, ...)` equals `qk_norm(x, ...)` for c = 10.

# %%
def gqa_attention(q, k, v):
    raise NotImplementedError        # your answer


check("11.1", gqa_attention)
