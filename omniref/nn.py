"""Neural-network primitives in plain NumPy: the specification of every op the models use.

Each function here is the definition: the models call it through `omniref.backend.ops`, which runs either this
code or a C++ kernel checked against it (same signature, same result to float32 rounding; see backend.py). This
file imports nothing but NumPy and SciPy. All arithmetic is float32, like the reference run the goldens came from.

Legend: L tokens (Lq queries, Lk keys), H hidden, hd head size, nh query heads, nkv key/value heads,
E experts, k experts per token, I expert width, N samples (time-major rows), Cin / Cout channels, K taps,
r stride, B batch, Hf x Wt a feature map.
"""
from __future__ import annotations

import numpy as np
from scipy import special

__all__ = ["linear", "linear_many", "rms_norm", "layer_norm", "gelu", "gelu_tanh", "silu", "sigmoid", "softmax",
           "rotate_half", "apply_rotary", "attention", "attention_mask", "check_attention_shapes", "moe_experts", "snake_beta",
           "causal_conv", "depthwise_causal_conv", "causal_trans_conv", "conv2d_stride2"]

F32 = np.float32
SNAKE_EPS = 1e-9               # keeps 1 / e^β finite (the reference's `no_div_by_zero`)
QUERY_BLOCK_SCORES = 1 << 24   # attention scores per query block (64 MiB of float32): memory only, see attention


# ---------------------------------------------------------------------------------------------------------
# Dense layers, norms, activations
# ---------------------------------------------------------------------------------------------------------
def linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """y = x Wᵀ + b (torch.nn.Linear).  x [..., in], weight [out, in] (PyTorch layout, as stored), bias [out]
    -> [..., out]."""
    y = np.matmul(x, weight.T)                                           # [..., in] -> [..., out]
    if bias is not None:
        y += bias
    return y


def linear_many(x: np.ndarray, weights) -> list:
    """Several bias-free projections of the same input (attention's q, k and v): [linear(x, w) for w in weights].
    x [..., in], weights[i] [out_i, in] -> list of [..., out_i]. (A kernel may run them in one pass.)"""
    return [linear(x, w) for w in weights]


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """RMSNorm (Zhang & Sennrich 2019; `Qwen3OmniMoeThinkerTextRMSNorm`): x / sqrt(mean(x²) + eps) · w over the
    last axis.  [..., H] -> [..., H]"""
    variance = np.mean(np.square(x), axis=-1, keepdims=True, dtype=F32)  # [..., 1]
    return weight * (x / np.sqrt(variance + F32(eps)))


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    """LayerNorm (torch.nn.LayerNorm): (x - mean) / sqrt(var + eps) · w + b over the last axis (biased
    variance).  [..., H] -> [..., H]"""
    mean = np.mean(x, axis=-1, keepdims=True, dtype=F32)                 # [..., 1]
    centred = x - mean
    var = np.mean(np.square(centred), axis=-1, keepdims=True, dtype=F32)  # [..., 1]
    return centred / np.sqrt(var + F32(eps)) * weight + bias


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact GELU (`gelu` in transformers' ACT2FN): x · Φ(x) = x/2 · (1 + erf(x/√2)).  [...] -> [...]"""
    return F32(0.5) * x * (F32(1.0) + special.erf(x * F32(1 / np.sqrt(2.0))))


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """GELU with the tanh approximation (`gelu_pytorch_tanh`): x/2 · (1 + tanh(√(2/π)(x + 0.044715x³))).
    [...] -> [...]"""
    return F32(0.5) * x * (F32(1.0) + np.tanh(F32(np.sqrt(2.0 / np.pi)) * (x + F32(0.044715) * x * x * x)))


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-x), without overflow warnings for large |x|.  [...] -> [...]"""
    return special.expit(x)


def silu(x: np.ndarray) -> np.ndarray:
    """SiLU / swish: x · sigmoid(x) (the gate nonlinearity of SwiGLU).  [...] -> [...]"""
    return x * special.expit(x)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax: subtracting the max changes nothing mathematically but avoids exp overflow.
    [...] -> [...]"""
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# ---------------------------------------------------------------------------------------------------------
# Rotary position embedding and attention
# ---------------------------------------------------------------------------------------------------------
def rotate_half(x: np.ndarray) -> np.ndarray:
    """[x1, x2] -> [-x2, x1] on the halves of the last axis (the "split-half" RoPE layout of GPT-NeoX/Qwen,
    transformers' `rotate_half`).  [..., hd] -> [..., hd]

    Pairing dimension i with i + hd/2 (not 2i with 2i+1) is why the angle vector is repeated twice.
    """
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)    # [..., hd/2] x 2 -> [..., hd]


def apply_rotary(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotary position embedding (Su et al. 2021; transformers' `apply_rotary_pos_emb`): x·cos + rotate_half(x)·sin.

    x [..., L, hd], cos/sin [L, hd] (the hd/2 angles repeated twice) -> [..., L, hd]
    """
    return x * cos + rotate_half(x) * sin


def attention_mask(Lq: int, Lk: int, *, causal: bool = False, sliding_window: int | None = None,
                   segments: np.ndarray | None = None, mask: np.ndarray | None = None,
                   rows: slice | None = None) -> np.ndarray | None:
    """Which keys each query may see, as a boolean [Lq, Lk] (True = attend), or None for "all of them".

    causal:          query i sits at absolute position Lk-Lq+i (the last Lq of Lk tokens, so the same rule
                     serves a KV cache) and sees keys at positions <= its own.
    sliding_window:  additionally only the last `sliding_window` keys up to and including its own position.
    segments:        int [L] block ids (Lq == Lk): attend only inside the same block (block-diagonal masks
                     of the audio windows and of the vision encoder's per-image attention, i.e. cu_seqlens).
    mask:            an extra boolean [Lq, Lk] ANDed in.
    rows:            only these queries' rows -> [r, Lk] (a block of queries never needs the whole mask).
    """
    rows = slice(0, Lq) if rows is None else rows
    allowed = None
    if causal or sliding_window is not None:
        q_pos = np.arange(Lk - Lq, Lk)[rows][:, None]        # [r, 1]
        k_pos = np.arange(Lk)[None, :]                       # [1, Lk]
        allowed = k_pos <= q_pos if causal else np.ones((q_pos.shape[0], Lk), bool)     # [r, Lk]
        if sliding_window is not None:
            allowed = allowed & (k_pos > q_pos - sliding_window)
    if segments is not None:
        segments = np.asarray(segments)
        if Lq != Lk or segments.shape != (Lk,):
            raise ValueError(f"segments must have shape [{Lk}] with Lq == Lk (got {segments.shape}, Lq={Lq})")
        same = segments[rows][:, None] == segments[None, :]  # [r, L]
        allowed = same if allowed is None else allowed & same
    if mask is not None:
        allowed = mask[rows] if allowed is None else allowed & mask[rows]
    return allowed


def check_attention_shapes(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> None:
    """q [nh, Lq, hd], k/v [nkv, Lk, hd] with nh a multiple of nkv, else a ValueError naming the shapes."""
    nh, _, hd = q.shape
    nkv = k.shape[0]
    if nh % nkv:
        raise ValueError(f"attention: {nh} query heads are not a multiple of {nkv} key/value heads")
    if k.shape != v.shape or k.shape[2] != hd:
        raise ValueError(f"attention: q {q.shape}, k {k.shape}, v {v.shape} do not fit together")


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, *, causal: bool = False,
              sliding_window: int | None = None, segments: np.ndarray | None = None,
              mask: np.ndarray | None = None, scale: float | None = None) -> np.ndarray:
    """Scaled dot-product attention with grouped-query heads (transformers' `eager_attention_forward`).

    q [nh, Lq, hd], k/v [nkv, Lk, hd] -> [nh, Lq, hd]
    GQA: nh query heads share nkv key/value heads, query head h reads kv head h // (nh // nkv), so the KV
    cache is nh/nkv times smaller. Masks as in `attention_mask`. Scores are scaled by hd^-1/2 by default.

    Memory: the queries go through in blocks of `rows` so that one block's scores [nh, rows, Lk] stay under
    QUERY_BLOCK_SCORES floats; memory then grows linearly with the prompt (a 60k-token prompt would need a
    53.7 GiB score matrix at once). Each query's softmax needs every key but no other query, so blocking
    computes the same dot products and sums; only BLAS's choice of kernel for a shorter matrix may round the
    last bit of a score differently (float32 rounding; no tiny or golden case is long enough to block).
    """
    check_attention_shapes(q, k, v)
    nh, Lq, hd = q.shape
    nkv, Lk, _ = k.shape
    scale = float(hd) ** -0.5 if scale is None else scale
    rows = max(1, QUERY_BLOCK_SCORES // max(1, nh * Lk))                 # queries per block
    blocks = [_attention_rows(q[:, s:s + rows], k, v, slice(s, min(s + rows, Lq)), Lq, scale, causal=causal,
                             sliding_window=sliding_window, segments=segments, mask=mask)
              for s in range(0, Lq, rows)]                               # each [nh, r, hd]
    return blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=1)   # [nh, Lq, hd]


def _attention_rows(q: np.ndarray, k: np.ndarray, v: np.ndarray, rows: slice, Lq: int, scale: float, *,
                   causal: bool, sliding_window, segments, mask) -> np.ndarray:
    """One block of `attention`: queries q [nh, r, hd] (rows `rows` of all Lq) against every key
    k/v [nkv, Lk, hd] -> [nh, r, hd]."""
    nh, r, hd = q.shape
    nkv, Lk, _ = k.shape
    group = nh // nkv
    qg = q.reshape(nkv, group * r, hd)                                   # [nkv, g·r, hd]
    scores = np.matmul(qg, k.transpose(0, 2, 1)) * F32(scale)            # [nkv, g·r, Lk]
    scores = scores.reshape(nkv, group, r, Lk)                           # [nkv, g, r, Lk]
    allowed = attention_mask(Lq, Lk, causal=causal, sliding_window=sliding_window, segments=segments, mask=mask,
                             rows=rows)                                  # [r, Lk] or None
    if allowed is not None:
        scores = np.where(allowed, scores, F32(-np.inf))
    with np.errstate(invalid="ignore"):       # rows with no visible key give -inf - -inf here
        probs = softmax(scores, axis=-1)
    if allowed is not None and not allowed.any(axis=-1).all():
        # a query that may see no key at all attends to nothing: its output is 0 (not 0/0 = NaN)
        probs = np.where(allowed.any(axis=-1, keepdims=True), probs, F32(0.0))
    probs = probs.reshape(nkv, group * r, Lk)                            # [nkv, g·r, Lk]
    return np.matmul(probs, v).reshape(nh, r, hd)                        # [nkv, g·r, hd] -> [nh, r, hd]


# ---------------------------------------------------------------------------------------------------------
# Mixture of experts: the routed experts' feed-forward
# ---------------------------------------------------------------------------------------------------------
def moe_experts(x: np.ndarray, chosen: np.ndarray, mix: np.ndarray, experts) -> np.ndarray:
    """The routed experts of a sparse MoE block (the expert loop of `Qwen3OmniMoeThinkerTextSparseMoeBlock`):
    out[t] = Σ_slots mix[t, s] · down(silu(gate x[t]) ⊙ up x[t]) of expert chosen[t, s].

    x [L, H], chosen [L, k] int, mix [L, k], experts {id: (gate_proj [I, H], up_proj [I, H], down_proj [H, I])}
    for (at least) every chosen id -> [L, H]. Each used expert runs once over its tokens, experts in ascending id.
    """
    out = np.zeros_like(x)                                               # [L, H]
    for e in np.unique(chosen):                                          # only experts some token chose
        rows, slot = np.nonzero(chosen == e)                             # tokens routed to e, and at which rank
        gate, up, down = experts[int(e)]
        xe = x[rows]                                                     # [n_e, H]
        y = linear(silu(linear(xe, gate)) * linear(xe, up), down)        # [n_e, I] -> [n_e, H]
        out[rows] += mix[rows, slot][:, None] * y
    return out


# ---------------------------------------------------------------------------------------------------------
# Code2Wav's vocoder ops, time-major: x [N, C] (samples x channels), the transpose of PyTorch's Conv1d layout
# [C, N]. A conv tap is then a matrix product over a contiguous block of rows and the interleaving of a
# transposed conv is a free reshape. Weights stay in their checkpoint layout.
# ---------------------------------------------------------------------------------------------------------
def snake_beta(x: np.ndarray, alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """SnakeBeta (BigVGAN, Lee et al. 2023; `SnakeBeta` in modeling_qwen3_omni_moe): x + sin²(e^α x) / (e^β + 1e-9),
    per channel.  x [N, C], alpha/beta [C] (log-scale, as stored) -> [N, C]

    A periodic activation: the sin² term gives the network an easy way to produce oscillations (audio is
    periodic). α (frequency) and β (magnitude) are stored as logarithms.
    """
    a = np.exp(alpha)                                                               # [C]
    inv_b = F32(1.0) / (np.exp(beta) + F32(SNAKE_EPS))                              # [C]
    s = x * a                                                                       # [N, C]
    np.sin(s, out=s)
    s *= s
    s *= inv_b
    s += x
    return s


def causal_conv(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, dilation: int = 1,
                residual: np.ndarray | None = None) -> np.ndarray:
    """Causal 1-D convolution, stride 1 (`Qwen3OmniMoeCausalConvNet`), plus an optional residual.
    x [N, Cin], weight [Cout, Cin, K], bias [Cout] | None, residual [N, Cout] | None -> [N, Cout]

    y[t] = b + Σ_j W[:, :, j] · x[t - s_j] (+ residual[t]),  s_j = d·(K-1-j) samples back, x = 0 before the
    start (the reference pads d·(K-1) zeros on the LEFT only, so output t never sees input t+1). Instead of
    padding, tap j adds its product only to the rows t >= s_j that have a real input: one matrix product per
    tap into a reused buffer.
    """
    Cout, Cin, K = weight.shape
    if x.shape[1] != Cin:
        raise ValueError(f"causal_conv: input has {x.shape[1]} channels, weight expects {Cin}")
    N = x.shape[0]
    taps = np.ascontiguousarray(weight.transpose(2, 1, 0))                         # [K, Cin, Cout]
    y = np.matmul(x, taps[K - 1])                                                  # tap K-1 sees x[t]: [N, Cout]
    if bias is not None:
        y += bias
    tmp = np.empty_like(y) if K > 1 else None
    for j in range(K - 1):
        s = dilation * (K - 1 - j)                                                 # tap j looks s samples back
        if s < N:
            y[s:] += np.matmul(x[:N - s], taps[j], out=tmp[:N - s])                # rows t >= s: [N-s, Cout]
    if residual is not None:
        y += residual
    return y


def depthwise_causal_conv(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Causal conv with groups = channels (ConvNeXt's `dwconv`): every channel filtered by its own K taps.
    x [N, C], weight [C, 1, K], bias [C] -> [N, C]"""
    C, _, K = weight.shape
    N = x.shape[0]
    y = x * weight[:, 0, K - 1] + bias                                             # [N, C]
    tmp = np.empty_like(y)
    for j in range(K - 1):
        s = K - 1 - j
        if s < N:
            y[s:] += np.multiply(x[:N - s], weight[:, 0, j], out=tmp[:N - s])      # [N-s, C]
    return y


def causal_trans_conv(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, stride: int) -> np.ndarray:
    """Transposed conv (upsampling ×r), trimmed K - r at both ends (`Qwen3OmniMoeCausalTransConvNet`).
    x [n, Cin], weight [Cin, Cout, K] (PyTorch ConvTranspose1d layout), bias [Cout] -> [(n+1)·r - K, Cout]

    Input sample t spreads K output samples starting at t·r:  full[t·r + k] += W[:, :, k]ᵀ x[t].
    One matrix product gives every (t, k) contribution; an overlap-add places them. The right trim drops the
    samples that would still receive a contribution from the next (unseen) input sample.
    """
    Cin, Cout, K = weight.shape
    r = stride
    if x.shape[1] != Cin:
        raise ValueError(f"causal_trans_conv: input has {x.shape[1]} channels, weight expects {Cin}")
    n = x.shape[0]
    m = -(-K // r)                                                                  # blocks of r taps
    if K != m * r:                                                                  # pad taps to m·r
        weight = np.concatenate([weight, np.zeros((Cin, Cout, m * r - K), weight.dtype)], axis=2)
    W = weight.transpose(0, 2, 1).reshape(Cin, m * r * Cout)                        # [Cin, (k, o)]
    Z = np.matmul(x, W).reshape(n, m, r * Cout)                                     # [n, m, r·Cout]
    full = np.empty((n + m - 1, r * Cout), Z.dtype)                                 # [n+m-1, r·Cout]
    full[:n] = Z[:, 0]                                                              # overlap-add: tap b·r + p
    full[n:] = 0                                                                    # of input t goes to row t+b
    for b in range(1, m):
        full[b:b + n] += Z[:, b]
    full += np.tile(bias, r)                                                        # bias of every sample
    full = full.reshape((n + m - 1) * r, Cout)[:(n - 1) * r + K]                    # [(n-1)·r + K, Cout]
    trim = K - r
    return full[trim:full.shape[0] - trim]                                          # [(n+1)·r - K, Cout]


# ---------------------------------------------------------------------------------------------------------
# The audio encoder's stem conv
# ---------------------------------------------------------------------------------------------------------
def conv2d_stride2(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """3x3 convolution, stride 2, zero padding 1 (the audio tower's `conv2d1..3`, torch.nn.Conv2d), as im2col
    + one matrix product.  x [B, Hf, Wt, Cin] channels-last, weight [Cout, Cin, 3, 3], bias [Cout]
    -> [B, Hf', Wt', Cout] with Hf' = (Hf - 1) // 2 + 1.

    Each output pixel's 3x3xCin neighbourhood is gathered into one row ordered (ky, kx, cin): channels-last,
    the kx and cin of one ky are 3*Cin consecutive floats of the padded input, so the gather is one copy of
    long contiguous runs. The weight is put in the same order, and the convolution is `rows @ weight'.T`.
    """
    b, h, w, cin = x.shape
    h_out, w_out = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))                                # [B, Hf+2, Wt+2, Cin]
    win = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(1, 2))         # [B, Hf, Wt, Cin, 3, 3] view
    win = win[:, :2 * h_out - 1:2, :2 * w_out - 1:2].transpose(0, 1, 2, 4, 5, 3)    # [B, Hf', Wt', ky, kx, Cin]
    cols = np.ascontiguousarray(win).reshape(b, h_out, w_out, 9 * cin)             # [B, Hf', Wt', 9*Cin]
    w_rows = weight.transpose(0, 2, 3, 1).reshape(weight.shape[0], 9 * cin)         # [Cout, (ky, kx, cin)]
    return linear(cols, w_rows, bias)                                               # [B, Hf', Wt', Cout]
