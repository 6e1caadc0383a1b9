"""Validated Python wrappers around the compiled kernels in `omniref._C` (csrc/): argument checks, nothing else.

Nothing reaches C++ unchecked: every wrapper checks dtypes, shapes and ranges here and raises an
omniref.errors.InputError (a ValueError) or a TypeError that names the problem and the numbers, then hands
C-contiguous, aligned float32 arrays to the kernel. Integer arguments are range-checked (or clamped where a
larger value means the same) so no index arithmetic in C++ can overflow; csrc/bindings.h checks again. What each kernel computes is defined once, in omniref/nn.py (the NumPy specification); omniref/backend.py
pairs each op with its kernel, and the tests check every kernel against nn.

Legend: M tokens (rows of x), K input features, N output features, Hq / Hkv query / key-value heads,
Lq / Lk query / key positions, D head dim.
"""
from __future__ import annotations

import math
import os
import weakref

import numpy as np

from omniref import nn
from omniref.errors import InputError  # a ValueError: bad kernel arguments, named with their values
from omniref.weights import BF16Weight, as_float32  # noqa: F401  (the bf16 weight type is data)

# How idle OpenMP threads wait between kernel calls. libgomp's default spins ~300k iterations (milliseconds),
# holding a core that this 2-core machine kind shares with the main Python thread, NumPy's OpenBLAS pool and
# other processes; fully passive waiting instead pays a futex wake-up on each of the few hundred kernel calls
# of a decode step. Measured on the thinker bench (8 layers, decode tok/s, same machine and load): passive 37,
# GOMP_SPINCOUNT=100000 59, unbounded-ish 1000000 61 but with multi-second stalls when other work competed.
# A bounded spin covers the Python gap between consecutive calls and then sleeps. Read once when libgomp
# loads; an explicit OMP_WAIT_POLICY or GOMP_SPINCOUNT from the user wins.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "100000")

def _load_extension():
    """The compiled module: `omniref._C`, or the file named by OMNIREF_NATIVE_LIB (the sanitizer build that
    .ci/sanitizers.sh tests, without reinstalling the package)."""
    path = os.environ.get("OMNIREF_NATIVE_LIB")
    if path:
        import importlib.util
        import sys
        spec = importlib.util.spec_from_file_location("omniref._C", path)
        if spec is None or spec.loader is None:
            raise ImportError(f"OMNIREF_NATIVE_LIB={path!r} is not a loadable extension module")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        sys.modules["omniref._C"] = mod
        return mod
    from omniref import _C as mod  # type: ignore[attr-defined]
    return mod


try:  # absent when the package runs from a source tree that was never built
    _C = _load_extension()
    IMPORT_ERROR: Exception | None = None
except Exception as exc:  # ImportError, or an OSError from a broken shared library
    _C = None
    IMPORT_ERROR = exc


def available() -> bool:
    """True when the compiled extension imported."""
    return _C is not None


def _require():
    if _C is None:
        raise RuntimeError(f"the omniref C++ extension is not available ({IMPORT_ERROR}); "
                           "install with `pip install -e .` or use OMNIREF_BACKEND=numpy")
    return _C


# ---------------------------------------------------------------------------------------------------------
# validation helpers
# ---------------------------------------------------------------------------------------------------------
def _float32(name: str, a) -> np.ndarray:
    """Real floating arrays become C-contiguous, aligned float32; anything else is a TypeError."""
    if type(a) is np.ndarray and a.dtype == np.float32 and a.flags.c_contiguous and a.flags.aligned:
        return a                                     # the common case, on the decode hot path: nothing to do
    a = np.asarray(a)
    if not (np.issubdtype(a.dtype, np.floating) and a.dtype.itemsize <= 8):
        raise TypeError(f"{name}: expected a float32 array, got dtype {a.dtype}")
    return np.require(a, np.float32, ["C", "A"])     # a copy only when needed (e.g. a buffer at an odd offset)


_INF = float("inf")


def _positive_int(name: str, value) -> int:
    """An integer >= 1 (a Python or NumPy int, or a float with an integral value); else a ValueError."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer, float, np.floating)):
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    if isinstance(value, (float, np.floating)) and not (np.isfinite(value) and float(value).is_integer()):
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    if int(value) < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


# Pre-packed weights. A GEMM first packs W into panels of W^T; for a weight used by few rows that is a large
# share of the work (an MoE expert sees ~64 tokens in prefill: a fifth of the MoE's time). A float32 weight
# that provably cannot change (`_immutable`: a checkpoint's, which omniref.weights hands out as read-only views
# of a read-only file mapping) is packed once, on the first call that runs it as a GEMM, and the packing is
# kept as long as the weight itself lives. Anything else is packed per call: a read-only view of a writable
# array changes when its base does. OMNIREF_PACK_WEIGHTS=0 turns caching off (less memory: the packing is a
# second copy of each such weight).
PACK_WEIGHTS = os.environ.get("OMNIREF_PACK_WEIGHTS", "1").strip().lower() not in ("0", "false", "no")
GEMM_MIN_ROWS = 8           # linear: more rows than this run the packed GEMM (csrc/gemm_kernels.inc `linear`)
MOE_PACK_MIN_TOKENS = 5     # experts with fewer tokens stream their weights as they are (csrc/moe_kernels.inc)
_packed_cache: dict = {}    # (id(weight), isa) -> (weakref to the weight, its packing)


def _immutable(a: np.ndarray) -> bool:
    """True when nothing can change a's values: a and every array it views are read-only, and the chain of
    bases ends in a read-only array that owns its memory, immutable `bytes`, or a buffer that refuses writes
    (a read-only mmap). A read-only view of a writable array is not: writing to the base changes it."""
    obj = a
    while isinstance(obj, np.ndarray):
        if obj.flags.writeable:
            return False
        if obj.base is None:
            return obj.flags.owndata      # (a base-less non-owner wraps foreign memory: unknown, refuse)
        obj = obj.base
    if isinstance(obj, bytes):
        return True
    try:
        with memoryview(obj) as m:        # mmap (ACCESS_READ), array.array, ...: ask the buffer itself
            return m.readonly
    except TypeError:
        return False


def packed_weight(w: np.ndarray) -> np.ndarray | None:
    """The GEMM panel layout of an immutable float32 weight [N, K] (`_immutable`) for the current instruction
    set (1-D), made once and kept while `w` lives; None for anything that could change, or when caching is off."""
    if not PACK_WEIGHTS or w.flags.writeable or not _immutable(w):
        return None
    key = (id(w), _C.isa())
    hit = _packed_cache.get(key)
    if hit is not None and hit[0]() is w:
        return hit[1]
    p = _C.pack_weight(w)
    _packed_cache[key] = (weakref.ref(w, lambda _, key=key: _packed_cache.pop(key, None)), p)
    return p


# ---------------------------------------------------------------------------------------------------------
# linear
# ---------------------------------------------------------------------------------------------------------


def linear(x, weight, bias=None, *, naive: bool = False) -> np.ndarray:
    """y[..., N] = x[..., K] @ weight[N, K]^T + bias[N] on the C++ kernels.

    weight: float32 [N, K] or a BF16Weight. naive=True runs the reference triple loop (tests only).
    """
    C = _require()
    if not (type(x) is np.ndarray and x.dtype == np.float32 and x.flags.c_contiguous):  # fast path: as is
        x = _float32("linear: x", x)
    if x.ndim < 1:
        raise InputError(f"linear: x must have at least 1 dimension [..., K], got shape {x.shape}")
    if isinstance(weight, BF16Weight):
        w = weight.bits
    elif type(weight) is np.ndarray and weight.dtype == np.float32 and weight.flags.c_contiguous:
        w = weight
    else:
        w = _float32("linear: weight", weight)
    if w.ndim != 2:
        raise InputError(f"linear: weight must be 2-D [N, K], got shape {w.shape}")
    N, K = w.shape
    if x.shape[-1] != K:
        raise InputError(f"linear: x {x.shape} has K={x.shape[-1]} but weight {w.shape} expects K={K}")
    b = None
    if bias is not None:
        b = _float32("linear: bias", bias)
        if b.shape != (N,):
            raise InputError(f"linear: bias must have shape ({N},), got {b.shape}")
    M = x.size // K if K else 0
    # a GEMM (M > 8) on a read-only float32 weight reads its panels packed once (packed_weight) instead of
    # packing W on every call; the arithmetic, and so the result, is the same
    packed = packed_weight(w) if M > GEMM_MIN_ROWS and w.dtype == np.float32 and not naive else None
    if x.ndim == 2:
        return C.linear(x, w, b, naive, packed)  # [M, K] -> [M, N]
    lead = x.shape[:-1]
    y = C.linear(x.reshape(M, K), w, b, naive, packed)  # [M, K] -> [M, N]
    return y.reshape(*lead, N)


def linear_many(x, weights) -> list:
    """[x @ w.T for w in weights] (no bias); same results as one `linear` call per weight.

    One token x [1, K] with weights all float32 or all BF16Weight ([N_i, K] each) runs in one parallel region
    (C.linear_many: one fork/join for the q, k, v projections of a decode step instead of three); anything else
    (several tokens: compute-bound GEMMs, or mixed weight types) is one `linear` call per weight.
    """
    C = _require()
    ws = [w.bits if isinstance(w, BF16Weight) else w for w in weights]
    one = type(x) is np.ndarray and x.dtype == np.float32 and x.ndim == 2 and x.shape[0] == 1 and x.flags.c_contiguous
    same = all(type(w) is np.ndarray and w.dtype == ws[0].dtype and w.dtype in (np.float32, np.uint16)
               and w.ndim == 2 and w.flags.c_contiguous for w in ws)
    if not (one and same and 1 <= len(ws) <= 16):
        return [linear(x, w) for w in weights]
    return C.linear_many(x, ws)


# ---------------------------------------------------------------------------------------------------------
# attention
# ---------------------------------------------------------------------------------------------------------
def _kv_rows(name: str, a) -> np.ndarray:
    """Like _float32, but a float32 [Hkv, Lk, D] view whose heads are C-contiguous [Lk, D] blocks at any stride
    (a KV cache's [Hkv, capacity, D] buffer sliced to [:, :Lk]) is kept as it is: the kernel reads it in place."""
    if type(a) is np.ndarray and a.dtype == np.float32 and a.ndim == 3 and not a.flags.c_contiguous:
        _, L, D = a.shape
        if (D <= 1 or a.strides[2] == 4) and (L <= 1 or a.strides[1] == 4 * D) and a.strides[0] >= 4 * L * D:
            return a
    return _float32(name, a)


def _check_attention(q, k, v, causal, sliding_window, segments, mask, scale):
    q, k, v = _float32("attention: q", q), _kv_rows("attention: k", k), _kv_rows("attention: v", v)
    if q.ndim != 3 or k.ndim != 3 or v.ndim != 3:
        raise InputError(f"attention: q, k, v must be 3-D [heads, L, D], got {q.shape}, {k.shape}, {v.shape}")
    Hq, Lq, D = q.shape
    Hkv, Lk, Dk = k.shape
    if Dk != D or v.shape != k.shape:
        raise InputError(f"attention: q {q.shape}, k {k.shape}, v {v.shape} must be [Hq, Lq, D], [Hkv, Lk, D], "
                         f"[Hkv, Lk, D]")
    if Hkv == 0 or Hq % Hkv:
        raise InputError(f"attention: query heads {Hq} must be a multiple of key/value heads {Hkv} (GQA)")
    if causal and Lq > Lk:
        raise InputError(f"attention: causal attention needs Lq <= Lk (queries are the last Lq positions), "
                         f"got Lq={Lq} Lk={Lk}")
    window = 0
    if sliding_window is not None:
        window = _positive_int("attention: sliding_window (or None)", sliding_window)
        window = min(window, max(Lk, 1))  # a window of Lk or more hides no key: the same, and fits int64
    seg = None
    if segments is not None:
        seg = np.asarray(segments)
        if not np.issubdtype(seg.dtype, np.integer):
            raise TypeError(f"attention: segments must be integer block ids, got dtype {seg.dtype}")
        if Lq != Lk or seg.shape != (Lq,):
            raise InputError(f"attention: segments shape {seg.shape} must be ({Lq},) with Lq == Lk "
                             f"(got Lq={Lq}, Lk={Lk})")
        seg = np.ascontiguousarray(seg, dtype=np.int64)
    m = None
    if mask is not None:
        m = np.asarray(mask)
        if m.dtype != np.bool_:
            raise TypeError(f"attention: mask must be boolean (True = may attend), got dtype {m.dtype}")
        if m.shape != (Lq, Lk):
            raise InputError(f"attention: mask shape {m.shape} must be (Lq, Lk) = ({Lq}, {Lk})")
        m = np.ascontiguousarray(m)
    sc = float(D) ** -0.5 if scale is None else float(scale)
    if not math.isfinite(sc):
        raise InputError(f"attention: scale must be finite, got {scale}")
    return q, k, v, bool(causal), window, seg, m, sc


def attention(q, k, v, causal=False, sliding_window=None, segments=None, mask=None, scale=None, *,
              naive: bool = False) -> np.ndarray:
    """Flash-style attention on the C++ kernels; same arguments and result as nn.attention.

    q [Hq, Lq, D], k/v [Hkv, Lk, D] float32; causal (query i at position Lk-Lq+i), sliding_window (keys
    > pos - w), segments int [L] block ids (Lq == Lk), mask bool [Lq, Lk] (True = may attend),
    scale (default D**-0.5). Returns [Hq, Lq, D] float32.
    """
    C = _require()
    q, k, v, causal, window, seg, m, sc = _check_attention(q, k, v, causal, sliding_window, segments, mask, scale)
    return C.attention(q, k, v, causal, window, seg, m, sc, naive)


# ---------------------------------------------------------------------------------------------------------
# fused mixture of experts (csrc/moe.cpp)
# ---------------------------------------------------------------------------------------------------------
def _check_moe(x, chosen, mix, experts):
    """Validate a moe call; return x, mix, the sorted chosen expert ids [U] (a list), local [L, k] int64 (the
    position of each chosen id in that list) and the experts' (gate, up, down) weight lists, in the order of ids."""
    if not (type(x) is np.ndarray and x.dtype == np.float32 and x.flags.c_contiguous):
        x = _float32("moe: x", x)
    if x.ndim != 2:
        raise InputError(f"moe: x must be 2-D [L, H], got shape {x.shape}")
    idx = np.asarray(chosen)
    if idx.dtype.kind not in "iu":                                    # signed or unsigned integers
        raise TypeError(f"moe: chosen must hold integer expert ids, got dtype {idx.dtype}")
    if idx.ndim != 2 or idx.shape[0] != x.shape[0]:
        raise InputError(f"moe: chosen must be [L, k] = [{x.shape[0]}, k], got shape {idx.shape}")
    if idx.shape[1] > 64:
        raise InputError(f"moe: at most 64 experts per token, got k={idx.shape[1]}")
    mix = _float32("moe: mix", mix)
    if mix.shape != idx.shape:
        raise InputError(f"moe: mix weights {mix.shape} must have the shape of chosen {idx.shape}")
    if idx.shape[0] == 1:
        # One token (a decode step): its k ids as a Python list. The same checks as below without a NumPy call
        # each: between two layers the weights stream through every cache, and each NumPy call then costs ~5 us
        # (ops.moe_experts with a stub kernel, one token, 4 of 32 experts: 29 -> 22 us warm, 85 -> 74 us right
        # after writing 64 MB).
        row = idx[0].tolist()
        ids = sorted(set(row))                                       # [U] ascending: the experts to read
        if len(ids) != len(row):
            raise InputError(f"moe: token 0 chose expert {row} more than once")
        at = {e: u for u, e in enumerate(ids)}
        local = np.array([[at[e] for e in row]], np.int64)           # [1, k]
    else:
        ranked = np.sort(idx, axis=1)                                # [L, k] each token's ids ascending
        repeats = ranked[:, 1:] == ranked[:, :-1]                    # [L, k-1]
        if repeats.any():
            dup = np.nonzero(repeats.any(axis=1))[0]
            raise InputError(f"moe: token {dup[0]} chose expert {idx[dup[0]].tolist()} more than once")
        unique = np.unique(idx)                                      # [U] ascending: the only experts read
        local = np.searchsorted(unique, idx).astype(np.int64)        # [L, k] position of each id among them
        ids = unique.tolist()
    gate, up, down = [], [], []
    for e in ids:
        if e not in experts:
            raise InputError(f"moe: expert {e} was chosen but its weights were not passed "
                             f"(passed: {sorted(experts)[:8]}{'...' if len(experts) > 8 else ''})")
        t = experts[e]
        if len(t) != 3:
            raise InputError(f"moe: expert {e} needs (gate, up, down) weights, got {len(t)} arrays")
        g, u, d = t
        gate.append(g)
        up.append(u)
        down.append(d)
    return x, mix, ids, local, (gate, up, down)


def moe(x, chosen, mix, experts, *, naive: bool = False) -> np.ndarray:
    """Fused sparse MoE feed-forward on the C++ kernels; same arguments and result as nn.moe_experts.

    x [L, H] float32; chosen [L, k] int expert ids (no repeats within a row); mix [L, k] mixing weights;
    experts: a mapping {expert id: (gate_proj [I, H], up_proj [I, H], down_proj [H, I])} holding at least every
    chosen id (float32 arrays or BF16Weight; others are never touched). Returns [L, H] float32, the terms of
    a token added in ascending expert id, independent of the thread count.
    """
    C = _require()
    x, mix, ids, local, (gate, up, down) = _check_moe(x, chosen, mix, experts)
    H = x.shape[1]
    # all bf16: the kernel reads the bits; otherwise every weight as float32
    bf16 = bool(ids) and all(isinstance(w, BF16Weight) for m in (gate, up, down) for w in m)
    if bf16:
        gate, up, down = ([w.bits for w in m] for m in (gate, up, down))
    else:
        gate, up, down = ([w if type(w) is np.ndarray and w.dtype == np.float32 and w.flags.c_contiguous
                           else _float32(f"moe: expert {e} weight", as_float32(w)) for e, w in zip(ids, m)]
                          for m in (gate, up, down))           # a lone BF16Weight among them is widened
    for e, g, u, d in zip(ids, gate, up, down):
        if g.ndim != 2 or g.shape[1] != H or u.shape != g.shape or d.shape != (H, g.shape[0]):
            raise InputError(f"moe: expert {e} weights gate {g.shape}, up {u.shape}, down {d.shape} must be "
                             f"[I, {H}], [I, {H}], [{H}, I]")
    packed = None
    if not bf16 and not naive and PACK_WEIGHTS and x.shape[0] >= MOE_PACK_MIN_TOKENS:  # else no expert packs
        tokens = np.bincount(local.ravel(), minlength=len(ids))  # [U] tokens routed to each expert
        packed = []
        for n, g, u, d in zip(tokens.tolist(), gate, up, down):
            p = (packed_weight(g), packed_weight(u), packed_weight(d)) if n >= MOE_PACK_MIN_TOKENS else None
            packed.append(None if p is None or any(a is None for a in p) else p)  # None: packed per call
    return C.moe(x, local, mix, gate, up, down, naive, packed)


# ---------------------------------------------------------------------------------------------------------
# elementwise activations (csrc/elementwise.cpp): exact GELU and Code2Wav's SnakeBeta
# ---------------------------------------------------------------------------------------------------------


def _map(name: str, x, naive: bool) -> np.ndarray:
    """An elementwise C++ kernel `name` over any shape: float32 [...] -> float32 [...] (same shape)."""
    C = _require()
    shape = np.shape(x)                                  # before _float32, which makes 0-d arrays 1-d
    if not (type(x) is np.ndarray and x.dtype == np.float32 and x.flags.c_contiguous):
        x = _float32(f"{name}: x", x)
    y = getattr(C, name)(x.reshape(-1), naive).reshape(shape)                          # [n] -> [...]
    return y[()] if y.ndim == 0 else y


def gelu(x, *, naive: bool = False) -> np.ndarray:
    """Exact (erf) GELU on the C++ kernels, any shape: float32 [...] -> float32 [...] (same shape).

    erf is evaluated in double and rounded once (see csrc/elementwise_kernels.inc), the float32 steps around
    it follow nn.gelu. NaN stays NaN, gelu(inf) = inf, gelu(-inf) = nan, as in NumPy.
    """
    return _map("gelu", x, naive)


def gelu_tanh(x, *, naive: bool = False) -> np.ndarray:
    """GELU, tanh approximation (`gelu_pytorch_tanh`), on the C++ kernels: float32 [...] -> float32 [...].

    tanh is evaluated in double and rounded once (NumPy's float32 tanh is within an ulp or two of that), the
    float32 steps around it follow nn.gelu_tanh. NaN stays NaN, gelu_tanh(inf) = inf, gelu_tanh(-inf) = nan.
    """
    return _map("gelu_tanh", x, naive)


def _snake_channels(x, alpha, beta):
    """Validate a snake_beta call; return x as [M, C] and the per-channel (e^α, 1/(e^β + eps)), computed by
    NumPy in float32 exactly as the specification does."""
    if np.ndim(x) < 1:
        raise InputError(f"snake_beta: x must be [..., C] with channels last, got shape {np.shape(x)}")
    if not (type(x) is np.ndarray and x.dtype == np.float32 and x.flags.c_contiguous):
        x = _float32("snake_beta: x", x)
    alpha, beta = _float32("snake_beta: alpha", alpha), _float32("snake_beta: beta", beta)
    C = x.shape[-1]
    if alpha.shape != (C,) or beta.shape != (C,):
        raise InputError(f"snake_beta: alpha {alpha.shape} and beta {beta.shape} must both have shape ({C},), "
                         f"one value per channel of x {x.shape}")
    a = np.exp(alpha)                                                                   # [C]
    inv_b = np.float32(1.0) / (np.exp(beta) + np.float32(nn.SNAKE_EPS))                    # [C]
    return x.reshape(-1, C), a, inv_b


def snake_beta(x, alpha, beta, *, naive: bool = False) -> np.ndarray:
    """SnakeBeta on the C++ kernels.  x [..., C] float32, alpha/beta [C] (log-scale, as stored) -> [..., C]

    sin is evaluated in double after an exact range reduction (|x·e^α| < 1e6; libm beyond) and rounded once.
    """
    C = _require()
    x2, a, inv_b = _snake_channels(x, alpha, beta)
    return C.snake_beta(x2, a, inv_b, naive).reshape(np.shape(x))


# ---------------------------------------------------------------------------------------------------------
# RMSNorm and rotary embedding (csrc/norm_rope.cpp): the per-token ops around every attention
# ---------------------------------------------------------------------------------------------------------


def rms_norm(x, weight, eps, *, naive: bool = False) -> np.ndarray:
    """RMSNorm on the C++ kernels.  x [..., H] float32, weight [H], eps >= 0 -> [..., H] float32.

    The sum of squares is accumulated in double and rounded once; the float32 steps follow the reference.
    """
    C = _require()
    if not (type(x) is np.ndarray and x.dtype == np.float32 and x.flags.c_contiguous):  # else: checked copy
        if np.ndim(x) < 1:
            raise InputError(f"rms_norm: x must be [..., H], got shape {np.shape(x)}")
        x = _float32("rms_norm: x", x)
    if x.ndim < 1:
        raise InputError(f"rms_norm: x must be [..., H], got shape {x.shape}")
    w = _float32("rms_norm: weight", weight)
    H = x.shape[-1]
    if w.shape != (H,):
        raise InputError(f"rms_norm: weight must have shape ({H},) to match x {x.shape}, got {w.shape}")
    eps = float(eps)
    if not 0.0 <= eps < _INF:                        # also False for NaN
        raise InputError(f"rms_norm: eps must be finite and >= 0, got {eps}")
    if x.ndim == 2:                                  # [M, H] as is (the decoder's hidden rows)
        return C.rms_norm(x, w, eps, naive)
    M = x.size // H if H else int(np.prod(x.shape[:-1]))
    return C.rms_norm(x.reshape(M, H), w, eps, naive).reshape(x.shape)


def rotary(x, cos, sin, *, naive: bool = False) -> np.ndarray:
    """Rotary position embedding on the C++ kernels.  x [..., L, D] float32, cos/sin [L, D] -> [..., L, D].

    x may be a strided view (say q [L, nh, D].transpose(1, 0, 2)) if its last axis is contiguous: the kernel
    reads it in place and writes a fresh C-contiguous result, so the transpose costs no extra pass.
    """
    C = _require()
    if (x.ndim if type(x) is np.ndarray else np.ndim(x)) < 2:
        raise InputError(f"rotary: x must be [..., L, D], got shape {np.shape(x)}")
    if not (type(x) is np.ndarray and x.dtype == np.float32 and (x.shape[-1] <= 1 or x.strides[-1] == 4)):
        x = _float32("rotary: x", x)
    cos, sin = _float32("rotary: cos", cos), _float32("rotary: sin", sin)
    L, D = x.shape[-2:]
    if cos.shape != (L, D) or sin.shape != (L, D):
        raise InputError(f"rotary: x {x.shape} needs cos and sin of shape ({L}, {D}), got {cos.shape} and "
                         f"{sin.shape}")
    if x.ndim == 3:                                  # [heads, L, D]: as is, strided views included
        return C.rotary(x, cos, sin, naive)
    x3 = x.reshape(int(np.prod(x.shape[:-2])), L, D)   # may copy
    return C.rotary(x3, cos, sin, naive).reshape(x.shape)


# ---------------------------------------------------------------------------------------------------------
# machine / instruction-set controls (for tests and the bench)
# ---------------------------------------------------------------------------------------------------------
def isa() -> str:
    return _require().isa()


def best_isa() -> str:
    return _require().best_isa()


def set_isa(name: str) -> None:
    """Force 'avx512', 'avx2' or 'generic' kernels (ValueError if the CPU lacks it)."""
    _require().set_isa(name)


def supported_isas() -> list[str]:
    order = ["generic", "avx2", "avx512"]
    return order[: order.index(best_isa()) + 1]


def set_threads(n: int) -> None:
    """OpenMP threads for the kernels: an integer in [1, 1024] (csrc/cpu.h kMaxThreads), else ValueError."""
    n = _positive_int("set_threads: thread count", n)
    if n > 1024:
        raise InputError(f"set_threads: thread count must be in [1, 1024], got {n}")
    _require().set_threads(n)


def max_threads() -> int:
    return _require().max_threads()


# ---------------------------------------------------------------------------------------------------------
# optional CUDA kernels (built only with -DOMNIREF_CUDA=ON; csrc/cuda). Host arrays in, host arrays out.
# ---------------------------------------------------------------------------------------------------------
def cuda_available() -> bool:
    """True when the extension was built with CUDA and a GPU is visible."""
    return _C is not None and bool(getattr(_C, "has_cuda", False)) and _C.cuda_device_count() > 0


def cuda_linear(x, weight, bias=None, *, naive: bool = False):
    """(y [M, N], kernel ms) = x [M, K] @ weight [N, K]^T + bias on the GPU (same checks as `linear`)."""
    if not cuda_available():
        raise RuntimeError("CUDA kernels are not available (build with OMNIREF_CUDA=ON on a machine with a GPU)")
    x = _float32("cuda_linear: x", x)
    w = _float32("cuda_linear: weight", as_float32(weight))
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[1]:
        raise InputError(f"cuda_linear: need x [M, K] and weight [N, K], got {x.shape} and {w.shape}")
    b = None if bias is None else _float32("cuda_linear: bias", bias)
    if b is not None and b.shape != (w.shape[0],):
        raise InputError(f"cuda_linear: bias must have shape ({w.shape[0]},), got {b.shape}")
    return _C.cuda_linear(x, w, b, naive)


def cuda_attention(q, k, v, causal=False, sliding_window=None, segments=None, mask=None, scale=None):
    """(out [Hq, Lq, D], kernel ms) on the GPU; same arguments and checks as `attention` (D <= 256)."""
    if not cuda_available():
        raise RuntimeError("CUDA kernels are not available (build with OMNIREF_CUDA=ON on a machine with a GPU)")
    q, k, v, causal, window, seg, m, sc = _check_attention(q, k, v, causal, sliding_window, segments, mask, scale)
    if q.shape[2] > 256:
        raise InputError(f"cuda_attention: head dim {q.shape[2]} > 256 is not supported")
    return _C.cuda_attention(q, k, v, causal, window, seg, m, sc)


# ---------------------------------------------------------------------------------------------------------
# causal dilated 1-D convolution (Code2Wav's decoder; csrc/conv.cpp)
# ---------------------------------------------------------------------------------------------------------
def conv1d(x, weight, bias=None, dilation: int = 1, residual=None, *, naive: bool = False) -> np.ndarray:
    """Causal conv on the C++ kernels.  x [N, Cin], weight [Cout, Cin, K], bias [Cout] | None,
    residual [N, Cout] | None -> [N, Cout]

    y[t] = bias + Σ_j W[:, :, j] · x[t - d·(K-1-j)] (+ residual[t]), x = 0 before t = 0: the same sum as
    nn.causal_conv (its NumPy definition), as one GEMM with an implicit im2col.
    """
    C = _require()
    if not (type(x) is np.ndarray and x.dtype == np.float32 and x.flags.c_contiguous):
        x = _float32("conv1d: x", x)
    weight = _float32("conv1d: weight", weight)
    if x.ndim != 2 or weight.ndim != 3:
        raise InputError(f"conv1d: need x [N, Cin] and weight [Cout, Cin, K], got {x.shape} and {weight.shape}")
    if x.shape[1] != weight.shape[1]:
        raise InputError(f"conv1d: input has {x.shape[1]} channels, weight {weight.shape} expects {weight.shape[1]}")
    if weight.shape[2] < 1:
        raise InputError(f"conv1d: weight {weight.shape} has no taps")
    # a dilation of N or more leaves every tap but the last in the zero padding, like N itself: clamped so
    # that d·(K-1) fits int64 whatever was passed (a huge dilation used to wrap it into an out-of-bounds row)
    dilation = min(_positive_int("conv1d: dilation", dilation), max(x.shape[0], 1))
    b = None if bias is None else _float32("conv1d: bias", bias)
    if b is not None and b.shape != (weight.shape[0],):
        raise InputError(f"conv1d: bias must have shape ({weight.shape[0]},), got {b.shape}")
    r = None if residual is None else _float32("conv1d: residual", residual)
    if r is not None and r.shape != (x.shape[0], weight.shape[0]):
        raise InputError(f"conv1d: residual must have the output's shape {(x.shape[0], weight.shape[0])}, "
                         f"got {r.shape}")
    return C.conv1d(x, weight, b, int(dilation), r, naive)


def trans_conv1d(x, weight, bias=None, stride: int = 1, *, naive: bool = False) -> np.ndarray:
    """Trimmed transposed conv (upsampling ×stride) on the C++ kernels.  x [n, Cin], weight [Cin, Cout, K]
    (ConvTranspose1d layout, K >= stride), bias [Cout] | None -> [(n+1)·stride - K, Cout]

    The same samples as nn.causal_trans_conv (its NumPy definition). The kernel splits
    the output by phase (sample mod stride): each phase is a causal conv over x with ceil(K/stride) taps, and
    all phases run as one GEMM whose rows are already the interleaved samples (csrc/conv_kernels.inc).
    """
    C = _require()
    if not (type(x) is np.ndarray and x.dtype == np.float32 and x.flags.c_contiguous):
        x = _float32("trans_conv1d: x", x)
    weight = _float32("trans_conv1d: weight", weight)
    if x.ndim != 2 or weight.ndim != 3:
        raise InputError(f"trans_conv1d: need x [n, Cin] and weight [Cin, Cout, K], got {x.shape} and "
                         f"{weight.shape}")
    if x.shape[1] != weight.shape[0]:
        raise InputError(f"trans_conv1d: input has {x.shape[1]} channels, weight {weight.shape} [Cin, Cout, K] "
                         f"expects {weight.shape[0]}")
    stride = _positive_int("trans_conv1d: stride", stride)
    if weight.shape[2] < stride:
        raise InputError(f"trans_conv1d: need kernel K >= stride, got stride {stride} and weight {weight.shape}")
    b = None if bias is None else _float32("trans_conv1d: bias", bias)
    if b is not None and b.shape != (weight.shape[1],):
        raise InputError(f"trans_conv1d: bias must have shape ({weight.shape[1]},), got {b.shape}")
    return C.trans_conv1d(x, weight, b, int(stride), naive)


def conv2d_s2(x, weight, bias=None, *, naive: bool = False) -> np.ndarray:
    """3x3 convolution, stride 2, zero padding 1, channels-last, on the C++ kernels (the audio encoder's stem).
    x [B, H, W, Cin], weight [Cout, Cin, 3, 3], bias [Cout] | None -> [B, (H-1)//2+1, (W-1)//2+1, Cout]

    The same sum as nn.conv2d_stride2 (its NumPy definition, im2col + one matmul), as
    one GEMM whose im2col rows are packed straight from the padded neighbourhoods (never materialised).
    """
    C = _require()
    if not (type(x) is np.ndarray and x.dtype == np.float32 and x.flags.c_contiguous):
        x = _float32("conv2d_s2: x", x)
    weight = _float32("conv2d_s2: weight", weight)
    if x.ndim != 4 or weight.ndim != 4 or weight.shape[2:] != (3, 3):
        raise InputError(f"conv2d_s2: need x [B, H, W, Cin] and weight [Cout, Cin, 3, 3], got {x.shape} and "
                         f"{weight.shape}")
    if x.shape[3] != weight.shape[1]:
        raise InputError(f"conv2d_s2: input has {x.shape[3]} channels, weight {weight.shape} expects "
                         f"{weight.shape[1]}")
    b = None if bias is None else _float32("conv2d_s2: bias", bias)
    if b is not None and b.shape != (weight.shape[0],):
        raise InputError(f"conv2d_s2: bias must have shape ({weight.shape[0]},), got {b.shape}")
    return C.conv2d_s2(x, weight, b, naive)
