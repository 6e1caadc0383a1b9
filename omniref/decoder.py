"""The Qwen3 decoder stack shared by the Thinker, the Talker, the code predictor and Code2Wav's pre-transformer
(transformers: `Qwen3OmniMoeThinkerTextModel`, `Qwen3OmniMoeTalkerModel`, `Qwen3OmniMoeTalkerCodePredictorModel`,
`Qwen3OmniMoeCode2WavTransformerModel`).

Legend: L tokens in this call, P tokens already in the KV cache, H hidden, hd head size, nh / nkv query /
key-value heads, E experts, k experts per token (num_experts_per_tok), I expert width.

One layer, pre-norm (the residual stream x is never normalised in place):

    x ── RMSNorm ── attention(GQA, q/k RMSNorm, RoPE, causal) ──(× layer scale)──(+)── RMSNorm ── MLP ──(+)──>
    └───────────────────────────────────────────────────────────┘ └──────────────────────────────────┘

where MLP is one of
    dense SwiGLU          down(silu(gate(x)) ⊙ up(x))                                 (code predictor, code2wav)
    sparse MoE            Σ_top-k p_e · expert_e(x), router softmax over all E experts    (thinker)
    MoE + shared expert   the above + sigmoid(shared_expert_gate(x)) · shared_expert(x)   (talker)

Every variant comes from the config (`Decoder.from_config`): QK-norm (Qwen3's attention; not Code2Wav's), MoE
layers (`num_experts`, `mlp_only_layers`, `decoder_sparse_step`), the talker's shared expert
(`shared_expert_intermediate_size`) and Code2Wav's layer scale (`layer_scale_initial_scale`). The weights must then
hold every tensor those variants use: a missing one is a CheckpointError naming the key. Rotary angles are computed by the caller (`rope_cos_sin`), because the four models place
their tokens differently (3-row multimodal positions, or plain 0..L-1).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from . import taps
from .backend import ops
from .errors import CheckpointError, ConfigError

__all__ = ["rope_inv_freq", "rope_cos_sin", "KVCache", "Decoder", "MoEStats", "swiglu", "moe", "weight"]

F32 = np.float32


# ---------------------------------------------------------------------------------------------------------
# Rotary angles
# ---------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=16)
def rope_inv_freq(head_dim: int, theta: float) -> np.ndarray:
    """[hd/2] inverse frequencies θ^(-2i/hd), computed in float32 like the reference (read-only: cached, since
    every decode step asks again)."""
    exponent = np.arange(0, head_dim, 2, dtype=np.int64).astype(F32) / F32(head_dim)
    inv_freq = (F32(1.0) / (F32(theta) ** exponent)).astype(F32)
    inv_freq.setflags(write=False)
    return inv_freq


def rope_cos_sin(positions: np.ndarray, head_dim: int, theta: float,
                 mrope_section: list[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rotary cos/sin tables.  positions [L] (1-D RoPE) or [3, L] (multimodal: time, height, width rows)
    -> cos, sin [L, hd].

    Interleaved MRoPE: frequency slot i of the hd/2 slots takes its position from row 1 (height) when
    i % 3 == 1 and i < 3·mrope_section[1], from row 2 (width) when i % 3 == 2 and i < 3·mrope_section[2], and
    from row 0 (time) otherwise. Interleaving (t h w t h w ... t t t) gives every axis both fast and slow
    frequencies, unlike the older split layout (all t slots, then all h, then all w).
    For a text token the three rows are equal, so MRoPE reduces to ordinary 1-D RoPE.
    """
    inv_freq = rope_inv_freq(head_dim, theta)                            # [hd/2]
    positions = np.asarray(positions, dtype=F32)
    if positions.ndim == 1:
        angles = positions[:, None] * inv_freq[None, :]                  # [L, hd/2]
    else:
        half = head_dim // 2
        slot = np.arange(half)
        row = np.zeros(half, dtype=np.int64)                             # time row by default
        if mrope_section is not None:
            row[(slot % 3 == 1) & (slot < 3 * mrope_section[1])] = 1     # height slots
            row[(slot % 3 == 2) & (slot < 3 * mrope_section[2])] = 2     # width slots
        angles = positions[row, :].T * inv_freq[None, :]                 # [L, hd/2]
    emb = np.concatenate([angles, angles], axis=-1)                      # [L, hd] (split-half layout)
    return np.cos(emb).astype(F32), np.sin(emb).astype(F32)


# ---------------------------------------------------------------------------------------------------------
# KV cache
# ---------------------------------------------------------------------------------------------------------
class KVCache:
    """Keys and values of every layer for the tokens seen so far: layer i -> k, v [nkv, P, hd].

    Storage grows by doubling so that appending one token per decode step is amortised O(1) copies.
    """

    def __init__(self):
        self._k: list[np.ndarray] = []
        self._v: list[np.ndarray] = []
        self._len: list[int] = []

    def __len__(self) -> int:
        """Tokens cached (P)."""
        return self._len[0] if self._len else 0

    def append(self, layer: int, k: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Add k, v [nkv, L, hd] of `layer`; return all cached k, v [nkv, P+L, hd] (views)."""
        if layer == len(self._k):
            cap = max(16, 2 * k.shape[1])
            self._k.append(np.empty((k.shape[0], cap, k.shape[2]), F32))
            self._v.append(np.empty((v.shape[0], cap, v.shape[2]), F32))
            self._len.append(0)
        n, add = self._len[layer], k.shape[1]
        if n + add > self._k[layer].shape[1]:
            cap = 2 * (n + add)
            for store in (self._k, self._v):
                grown = np.empty((store[layer].shape[0], cap, store[layer].shape[2]), F32)
                grown[:, :n] = store[layer][:, :n]
                store[layer] = grown
        self._k[layer][:, n:n + add] = k
        self._v[layer][:, n:n + add] = v
        self._len[layer] = n + add
        return self._k[layer][:, :n + add], self._v[layer][:, :n + add]


# ---------------------------------------------------------------------------------------------------------
# MLPs
# ---------------------------------------------------------------------------------------------------------
def weight(w, key: str):
    """w[key], or a CheckpointError naming the key (a config's variant needs a tensor the weights lack)."""
    try:
        return w[key]
    except KeyError:
        where = getattr(w, "prefix", "")
        raise CheckpointError(f"missing weight '{where}{key}': the config's architecture needs it") from None


def expert_weights(w, prefix: str) -> tuple:
    """(gate_proj, up_proj, down_proj) weights of the SwiGLU MLP under `prefix` (a dense MLP's `mlp.`, a shared
    expert's, or a routed expert's `experts.{e}.`)."""
    return (weight(w, prefix + "gate_proj.weight"), weight(w, prefix + "up_proj.weight"),
            weight(w, prefix + "down_proj.weight"))


def swiglu(x: np.ndarray, w, prefix: str) -> np.ndarray:
    """SwiGLU MLP (Shazeer 2020; `Qwen3OmniMoeThinkerTextMLP`): down(silu(gate(x)) ⊙ up(x)).
    x [L, H] -> [L, H]; weights under `prefix`."""
    gate, up, down = expert_weights(w, prefix)
    g = ops.linear(x, gate)                                               # [L, H] -> [L, I]
    u = ops.linear(x, up)                                                 # [L, H] -> [L, I]
    return ops.linear(ops.silu(g) * u, down)                              # [L, I] -> [L, H]


@dataclass
class MoEStats:
    """What the router did in one MoE call, kept for tutorials and debugging (not needed for the output)."""
    probs: np.ndarray = None        # [L, E] router softmax
    experts: np.ndarray = None      # [L, k] chosen expert ids, best first
    weights: np.ndarray = None      # [L, k] mixing weights actually used
    layer: int = -1


def moe(x: np.ndarray, w, prefix: str, num_experts: int, top_k: int, norm_topk_prob: bool,
        stats: list | None = None, layer: int = -1, shared_expert: bool = False, tap: str = "") -> np.ndarray:
    """Sparse mixture of experts (`Qwen3OmniMoeThinkerTextSparseMoeBlock`; with `shared_expert`,
    `Qwen3OmniMoeTalkerTextSparseMoeBlock`).  x [L, H] -> [L, H].

    1. Router: logits = x W_gᵀ [L, E], softmax over ALL experts (in float32).
    2. Each token keeps its top-k experts; with norm_topk_prob their probabilities are renormalised to sum 1.
    3. Tokens are grouped per expert, so every chosen expert runs one matmul over its tokens, and experts that
       no token chose are never touched (their weights are never even read from disk).
    A shared expert (the talker's) runs on every token and is scaled by sigmoid(shared_expert_gate(x)).
    tap: the block's module name for the trace taps (`thinker.model.layers.3.mlp.`).
    """
    logits = ops.linear(x, weight(w, prefix + "gate.weight"))                      # [L, H] -> [L, E]
    taps.record(tap + "gate", logits)
    probs = ops.softmax(logits.astype(F32), axis=-1)                                # [L, E]
    if probs.shape[1] != num_experts:
        raise ValueError(f"{prefix}gate.weight routes to {probs.shape[1]} experts, config says {num_experts}")
    chosen = np.argsort(-probs, axis=-1, kind="stable")[:, :top_k]                   # [L, k]
    weights = np.take_along_axis(probs, chosen, axis=-1)                             # [L, k]
    if norm_topk_prob:
        weights = weights / weights.sum(axis=-1, keepdims=True)
    taps.record(tap + "gate.router_scores", weights)
    taps.record(tap + "gate.router_indices", chosen)
    experts = {e: expert_weights(w, f"{prefix}experts.{e}.")
               for e in sorted(set(chosen.ravel().tolist()))}       # only experts some token chose are read
    out = ops.moe_experts(x, chosen, weights.astype(F32), experts)     # [L, H]
    taps.record(tap + "experts", out)
    if shared_expert:
        shared = swiglu(x, w, prefix + "shared_expert.")                              # [L, H]
        taps.record(tap + "shared_expert", shared)
        gate = ops.linear(x, weight(w, prefix + "shared_expert_gate.weight"))          # [L, H] -> [L, 1]
        taps.record(tap + "shared_expert_gate", gate)
        out += ops.sigmoid(gate) * shared
    if stats is not None:
        stats.append(MoEStats(probs=probs, experts=chosen, weights=weights, layer=layer))
    return out


# ---------------------------------------------------------------------------------------------------------
# The stack
# ---------------------------------------------------------------------------------------------------------
@dataclass
class Decoder:
    """A stack of pre-norm decoder layers whose weights live under one checkpoint prefix.

    weights: a mapping with keys relative to the stack (`layers.{i}.self_attn.q_proj.weight`, `norm.weight`),
             e.g. `Weights.scope("thinker.model.")`. The variant fields say which tensors a layer has.
    """
    weights: object
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    num_experts: int = 0            # 0 -> dense SwiGLU layers
    num_experts_per_tok: int = 0
    norm_topk_prob: bool = True
    sliding_window: int | None = None
    moe_stats: list | None = field(default=None, repr=False)   # set to a list to record router decisions
    qk_norm: bool = True            # Qwen3: RMSNorm on each query/key head (`q_norm`, `k_norm`)
    shared_expert: bool = False     # the talker's gated shared expert beside the routed ones
    layer_scale: bool = False       # Code2Wav: learned per-channel gain on each residual branch
    mlp_only_layers: tuple = ()     # dense layers inside an MoE stack (with decoder_sparse_step)
    decoder_sparse_step: int = 1

    @classmethod
    def from_config(cls, weights, cfg, **overrides) -> "Decoder":
        """Build from a TextConfig / TalkerTextConfig / CodePredictorConfig / Code2WavConfig: the config fields
        decide every variant (the HF classes build their modules from the same fields)."""
        if getattr(cfg, "attention_bias", False):
            raise ConfigError("attention_bias = true: omniref.decoder implements the published models, whose "
                              "attention projections have no bias")
        layer_scale = hasattr(cfg, "layer_scale_initial_scale")      # Qwen3OmniMoeCode2WavTransformerLayer
        kw = dict(num_layers=cfg.num_hidden_layers, num_heads=cfg.num_attention_heads,
                  num_kv_heads=cfg.num_key_value_heads, head_dim=cfg.head_dim, rms_norm_eps=cfg.rms_norm_eps,
                  num_experts=getattr(cfg, "num_experts", 0) or 0,
                  num_experts_per_tok=getattr(cfg, "num_experts_per_tok", 0) or 0,
                  norm_topk_prob=bool(getattr(cfg, "norm_topk_prob", True)),
                  sliding_window=getattr(cfg, "sliding_window", None),
                  qk_norm=not layer_scale,      # Code2Wav's attention has no q/k norm; every Qwen3 text stack has
                  shared_expert=bool(getattr(cfg, "shared_expert_intermediate_size", 0)),
                  layer_scale=layer_scale,
                  mlp_only_layers=tuple(getattr(cfg, "mlp_only_layers", ()) or ()),
                  decoder_sparse_step=int(getattr(cfg, "decoder_sparse_step", 1) or 1))
        if hasattr(cfg, "shared_expert_intermediate_size"):
            kw["mlp_only_layers"], kw["decoder_sparse_step"] = (), 1   # every talker layer is MoE
        kw.update(overrides)
        return cls(weights, **kw)

    def is_moe_layer(self, i: int) -> bool:
        """Layer i is sparse (`Qwen3OmniMoeThinkerTextDecoderLayer`'s rule): experts exist, i is not in
        mlp_only_layers, and (i + 1) is a multiple of decoder_sparse_step."""
        return self.num_experts > 0 and i not in self.mlp_only_layers and (i + 1) % self.decoder_sparse_step == 0

    def w(self, key: str):
        return weight(self.weights, key)

    @property
    def tap_prefix(self) -> str:
        """The stack's checkpoint prefix (`thinker.model.`): its taps are named after the checkpoint's modules."""
        return getattr(self.weights, "prefix", "")

    # --- one layer -------------------------------------------------------------------------------------
    def attention(self, i: int, x: np.ndarray, cos: np.ndarray, sin: np.ndarray,
                  cache: KVCache | None) -> np.ndarray:
        """Self-attention of layer i (`Qwen3OmniMoeThinkerTextAttention`).  x [L, H] (already normalised),
        cos/sin [L, hd] -> [L, H]."""
        p = f"layers.{i}.self_attn."
        tap = self.tap_prefix + p                                             # taps: the reference's module names
        L = x.shape[0]
        # three projections of the same x (= three ops.linear calls; one pass over the weights on the cpp backend)
        q, k, v = ops.linear_many(x, [self.w(p + f"{m}_proj.weight") for m in "qkv"])  # [L, nh·hd], 2 x [L, nkv·hd]
        taps.record(tap + "q_proj", q, add_batch=True)
        taps.record(tap + "k_proj", k, add_batch=True)
        taps.record(tap + "v_proj", v, add_batch=True)
        q = q.reshape(L, self.num_heads, self.head_dim)                       # [L, nh, hd]
        k = k.reshape(L, self.num_kv_heads, self.head_dim)                    # [L, nkv, hd]
        v = v.reshape(L, self.num_kv_heads, self.head_dim)                    # [L, nkv, hd]
        if self.qk_norm:
            # QK-norm (Qwen3): RMSNorm over each head's vector before RoPE keeps attention logits bounded
            q = ops.rms_norm(q, self.w(p + "q_norm.weight"), self.rms_norm_eps)
            k = ops.rms_norm(k, self.w(p + "k_norm.weight"), self.rms_norm_eps)
            taps.record(tap + "q_norm", q, add_batch=True)
            taps.record(tap + "k_norm", k, add_batch=True)
        q = ops.apply_rotary(q.transpose(1, 0, 2), cos, sin)                  # [L, nh, hd] -> [nh, L, hd]
        k = ops.apply_rotary(k.transpose(1, 0, 2), cos, sin)                  # [L, nkv, hd] -> [nkv, L, hd]
        taps.record(tap + "q_rotary", q, add_batch=True)
        taps.record(tap + "k_rotary", k, add_batch=True)
        v = v.transpose(1, 0, 2)                                              # [nkv, L, hd]
        if cache is not None:
            k, v = cache.append(i, k, v)                                      # [nkv, P+L, hd]
        # k, v may be views into the cache's [nkv, capacity, hd] buffers: the C++ kernel reads them in place
        o = ops.attention(np.ascontiguousarray(q), k, v, causal=True, sliding_window=self.sliding_window)
        o = o.transpose(1, 0, 2).reshape(L, self.num_heads * self.head_dim)  # [nh, L, hd] -> [L, nh·hd]
        taps.record(tap + "attn_output", o, add_batch=True)
        o = ops.linear(o, self.w(p + "o_proj.weight"))                         # [L, nh·hd] -> [L, H]
        taps.record(tap + "o_proj", o, add_batch=True)
        taps.record(tap[:-1], o, add_batch=True)                             # the self_attn module's output
        return o

    def mlp(self, i: int, x: np.ndarray) -> np.ndarray:
        """The feed-forward half of layer i: dense SwiGLU, or MoE (+ shared expert). [L, H] -> [L, H]."""
        p = f"layers.{i}.mlp."
        if self.is_moe_layer(i):
            return moe(x, self.weights, p, self.num_experts, self.num_experts_per_tok, self.norm_topk_prob,
                       stats=self.moe_stats, layer=i, shared_expert=self.shared_expert,
                       tap=self.tap_prefix + p)
        return swiglu(x, self.weights, p)

    def layer(self, i: int, x: np.ndarray, cos: np.ndarray, sin: np.ndarray,
              cache: KVCache | None = None) -> np.ndarray:
        """Decoder layer i (`Qwen3OmniMoeThinkerTextDecoderLayer`).  x [L, H] -> [L, H]."""
        p, eps = f"layers.{i}.", self.rms_norm_eps
        tap = self.tap_prefix + p
        h = ops.rms_norm(x, self.w(p + "input_layernorm.weight"), eps)
        taps.record(tap + "input_layernorm", h, add_batch=True)
        h = self.attention(i, h, cos, sin, cache)
        if self.layer_scale:            # LayerScale (CaiT): a learned per-channel residual gain
            h = self.w(p + "self_attn_layer_scale.scale") * h
            taps.record(tap + "self_attn_layer_scale", h, add_batch=True)
        x = x + h
        h = ops.rms_norm(x, self.w(p + "post_attention_layernorm.weight"), eps)
        taps.record(tap + "post_attention_layernorm", h, add_batch=True)
        h = self.mlp(i, h)
        taps.record(tap + "mlp", h, add_batch=True)
        if self.layer_scale:
            h = self.w(p + "mlp_layer_scale.scale") * h
            taps.record(tap + "mlp_layer_scale", h, add_batch=True)
        x = x + h
        taps.record(tap[:-1], x, add_batch=True)          # the decoder layer's output
        return x

    # --- the whole stack --------------------------------------------------------------------------------
    def forward(self, x: np.ndarray, cos: np.ndarray, sin: np.ndarray, cache: KVCache | None = None,
                hidden_states: list | None = None, after_layer=None) -> np.ndarray:
        """Run every layer and the final RMSNorm.  x [L, H] (input embeddings), cos/sin [L, hd] -> [L, H].

        cache:          a KVCache; the L new tokens follow the P cached ones (incremental decoding).
        hidden_states:  if a list, receives num_layers + 1 arrays [L, H]: the input, the raw output of
                        layers 0..n-2, and the final-norm output (the reference's `output_hidden_states`).
        after_layer:    optional f(i, x) -> x applied after layer i and after recording it (DeepStack).
        """
        if hidden_states is not None:
            hidden_states.append(x)
        taps.record(self.tap_prefix + "rotary_emb", cos, add_batch=True)
        for i in range(self.num_layers):
            x = self.layer(i, x, cos, sin, cache)
            if hidden_states is not None and i < self.num_layers - 1:
                hidden_states.append(x)
            if after_layer is not None:
                x = after_layer(i, x)
        x = ops.rms_norm(x, self.w("norm.weight"), self.rms_norm_eps)
        taps.record(self.tap_prefix + "norm", x, add_batch=True)
        if hidden_states is not None:
            hidden_states.append(x)
        return x
