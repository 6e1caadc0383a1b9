"""Neural-network primitives in plain NumPy: the readable definition of every op the models use.

Legend: L tokens (Lq queries, Lk keys), H hidden, hd head size, nh query heads, nkv key/value heads.

`linear` and `attention` carry almost all the FLOPs, and `gelu`'s erf is the costly activation; `rms_norm` and
`apply_rotary` run around every attention, where NumPy's several passes with temporaries add up. When the C++
backend is active (`OMNIREF_BACKEND=cpp`, the default when the extension is built) they call its kernels, checked
against the NumPy code below on every test; everything else stays NumPy. All arithmetic is float32, like the
reference run the goldens came from.
"""
from __future__ import annotations

import numpy as np
from scipy import special

from . import backend

__all__ = ["linear", "rms_norm", "layer_norm", "gelu", "gelu_tanh", "silu", "sigmoid", "softmax",
           "rotate_half", "apply_rotary", "attention", "attention_mask"]

F32 = np.float32


def linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """y = x Wᵀ + b.  x [..., in], weight [out, in] (PyTorch layout, as stored), bias [out] -> [..., out]."""
    fn = backend.kernel("linear")
    if fn is not None:
        return fn(x, weight, bias)
    y = np.matmul(x, weight.T)
    if bias is not None:
        y += bias
    return y


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """RMSNorm (Zhang & Sennrich 2019): x / sqrt(mean(x²) + eps) · w, over the last axis. [..., H] -> [..., H]."""
    fn = backend.kernel("rms_norm")
    if fn is not None:
        return fn(x, weight, eps)
    variance = np.mean(np.square(x), axis=-1, keepdims=True, dtype=F32)
    return weight * (x / np.sqrt(variance + F32(eps)))


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    """LayerNorm: (x - mean) / sqrt(var + eps) · w + b over the last axis (biased variance). [..., H]."""
    mean = np.mean(x, axis=-1, keepdims=True, dtype=F32)
    centred = x - mean
    var = np.mean(np.square(centred), axis=-1, keepdims=True, dtype=F32)
    return centred / np.sqrt(var + F32(eps)) * weight + bias


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact GELU: x · Φ(x) = x/2 · (1 + erf(x/√2))."""
    fn = backend.kernel("gelu")
    if fn is not None:
        return fn(x)
    return F32(0.5) * x * (F32(1.0) + special.erf(x * F32(1 / np.sqrt(2.0))))


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """GELU with the tanh approximation (`gelu_pytorch_tanh`): x/2 · (1 + tanh(√(2/π)(x + 0.044715x³)))."""
    return F32(0.5) * x * (F32(1.0) + np.tanh(F32(np.sqrt(2.0 / np.pi)) * (x + F32(0.044715) * x * x * x)))


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-x), without overflow warnings for large |x|."""
    return special.expit(x)


def silu(x: np.ndarray) -> np.ndarray:
    """SiLU / swish: x · sigmoid(x) (the gate nonlinearity of SwiGLU)."""
    return x * special.expit(x)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax: subtracting the max changes nothing mathematically but avoids exp overflow."""
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def rotate_half(x: np.ndarray) -> np.ndarray:
    """[x1, x2] -> [-x2, x1] on the halves of the last axis (the "split-half" RoPE layout of GPT-NeoX/Qwen).

    Pairing dimension i with i + hd/2 (not 2i with 2i+1) is why the angle vector is repeated twice below.
    """
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def apply_rotary(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotary position embedding (Su et al. 2021): x·cos + rotate_half(x)·sin.

    x [..., L, hd], cos/sin [L, hd] (the hd/2 angles repeated twice) -> [..., L, hd]
    """
    fn = backend.kernel("rotary")
    if fn is not None:
        return fn(x, cos, sin)
    return x * cos + rotate_half(x) * sin


def attention_mask(Lq: int, Lk: int, *, causal: bool = False, sliding_window: int | None = None,
                   segments: np.ndarray | None = None, mask: np.ndarray | None = None) -> np.ndarray | None:
    """Which keys each query may see, as a boolean [Lq, Lk] (True = attend), or None for "all of them".

    causal:          query i sits at absolute position Lk-Lq+i (the last Lq of Lk tokens, so the same rule
                     serves a KV cache) and sees keys at positions <= its own.
    sliding_window:  additionally only the last `sliding_window` keys up to and including its own position.
    segments:        int [L] block ids (Lq == Lk): attend only inside the same block (block-diagonal masks
                     of the audio windows and of the vision encoder's per-image attention, i.e. cu_seqlens).
    mask:            an extra boolean [Lq, Lk] ANDed in.
    """
    allowed = None
    if causal or sliding_window is not None:
        q_pos = np.arange(Lk - Lq, Lk)[:, None]              # [Lq, 1]
        k_pos = np.arange(Lk)[None, :]                       # [1, Lk]
        allowed = k_pos <= q_pos if causal else np.ones((Lq, Lk), bool)
        if sliding_window is not None:
            allowed = allowed & (k_pos > q_pos - sliding_window)
    if segments is not None:
        segments = np.asarray(segments)
        if Lq != Lk or segments.shape != (Lk,):
            raise ValueError(f"segments must have shape [{Lk}] with Lq == Lk (got {segments.shape}, Lq={Lq})")
        same = segments[:, None] == segments[None, :]
        allowed = same if allowed is None else allowed & same
    if mask is not None:
        allowed = mask if allowed is None else allowed & mask
    return allowed


def attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, *, causal: bool = False,
              sliding_window: int | None = None, segments: np.ndarray | None = None,
              mask: np.ndarray | None = None, scale: float | None = None) -> np.ndarray:
    """Scaled dot-product attention with grouped-query heads.

    q [nh, Lq, hd], k/v [nkv, Lk, hd] -> [nh, Lq, hd]
    GQA: nh query heads share nkv key/value heads, query head h reads kv head h // (nh // nkv), so the KV
    cache is nh/nkv times smaller. Masks as in `attention_mask`. Scores are scaled by hd^-1/2 by default.
    """
    nh, Lq, hd = q.shape
    nkv, Lk, _ = k.shape
    if nh % nkv:
        raise ValueError(f"attention: {nh} query heads are not a multiple of {nkv} key/value heads")
    if k.shape != v.shape or k.shape[2] != hd:
        raise ValueError(f"attention: q {q.shape}, k {k.shape}, v {v.shape} do not fit together")
    scale = float(hd) ** -0.5 if scale is None else scale
    fn = backend.kernel("attention")
    if fn is not None:
        return fn(q, k, v, causal, sliding_window, segments, mask, scale)
    group = nh // nkv
    qg = q.reshape(nkv, group * Lq, hd)                                  # [nkv, g·Lq, hd]
    scores = np.matmul(qg, k.transpose(0, 2, 1)) * F32(scale)            # [nkv, g·Lq, Lk]
    scores = scores.reshape(nkv, group, Lq, Lk)
    allowed = attention_mask(Lq, Lk, causal=causal, sliding_window=sliding_window, segments=segments, mask=mask)
    if allowed is not None:
        scores = np.where(allowed, scores, F32(-np.inf))
    with np.errstate(invalid="ignore"):       # rows with no visible key give -inf - -inf here
        probs = softmax(scores, axis=-1)
    if allowed is not None and not allowed.any(axis=-1).all():
        # a query that may see no key at all attends to nothing: its output is 0 (not 0/0 = NaN)
        probs = np.where(allowed.any(axis=-1, keepdims=True), probs, F32(0.0))
    probs = probs.reshape(nkv, group * Lq, Lk)
    return np.matmul(probs, v).reshape(nh, Lq, hd)                       # [nh, Lq, hd]
