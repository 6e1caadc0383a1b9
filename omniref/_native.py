"""Validated Python wrappers around the compiled kernels in `omniref._C` (csrc/).

Nothing reaches C++ unchecked: every wrapper checks dtypes, shapes and ranges here and raises a
ValueError/TypeError that names the problem and the numbers, then hands C-contiguous float32 arrays to the
kernel. The NumPy definitions in this file (`linear_reference`, `attention_reference`) state the exact
semantics each kernel must reproduce to fp32 accuracy; omniref/nn.py holds the same maths as the model's
specification.

Legend: M tokens (rows of x), K input features, N output features, Hq / Hkv query / key-value heads,
Lq / Lk query / key positions, D head dim.
"""
from __future__ import annotations

import os

import numpy as np

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
# bfloat16 weights
# ---------------------------------------------------------------------------------------------------------
class BF16Weight:
    """A weight matrix kept as bfloat16 bits (uint16 [N, K]) so decoding streams half the bytes.

    bf16 is the top half of a float32 word, so widening is exact: `float32 = bits << 16`. The weights loader
    may hand these to `linear` instead of float32 arrays; NumPy code sees the widened float32 matrix through
    `np.asarray(w)` (or `.to_float32()`), which is exactly the value a float32 checkpoint load would give.
    """

    __array_priority__ = 10.0

    def __init__(self, bits: np.ndarray):
        bits = np.asarray(bits)
        if bits.dtype != np.uint16:
            raise TypeError(f"BF16Weight needs uint16 bfloat16 bits, got dtype {bits.dtype}")
        if bits.ndim != 2:
            raise ValueError(f"BF16Weight must be 2-D [N, K], got shape {bits.shape}")
        self.bits = np.ascontiguousarray(bits)  # [N, K] uint16

    @classmethod
    def from_float32(cls, w: np.ndarray) -> "BF16Weight":
        """Round a float32 matrix to bfloat16 (round to nearest even, NaN kept NaN)."""
        w = np.ascontiguousarray(w, dtype=np.float32)
        u = w.view(np.uint32)
        rounded = ((u + np.uint32(0x7FFF) + ((u >> 16) & np.uint32(1))) >> 16).astype(np.uint16)
        nan = np.isnan(w)
        rounded[nan] = ((u[nan] >> 16) | np.uint32(0x40)).astype(np.uint16)  # keep a quiet NaN
        return cls(rounded)

    @property
    def shape(self) -> tuple[int, int]:
        return self.bits.shape

    @property
    def ndim(self) -> int:
        return 2

    @property
    def dtype(self):
        return np.dtype(np.float32)  # what it means to the maths: float32 values

    @property
    def nbytes(self) -> int:
        return self.bits.nbytes

    def to_float32(self) -> np.ndarray:
        """[N, K] float32, exact."""
        return (self.bits.astype(np.uint32) << 16).view(np.float32)

    def __array__(self, dtype=None, copy=None):
        out = self.to_float32()
        return out if dtype is None else out.astype(dtype)

    @property
    def T(self) -> np.ndarray:  # lets `x @ w.T` in NumPy code work unchanged
        return self.to_float32().T

    def __repr__(self) -> str:
        return f"BF16Weight(shape={self.shape})"


def as_float32(w) -> np.ndarray:
    """float32 view of a weight that may be a BF16Weight (for NumPy code paths)."""
    return w.to_float32() if isinstance(w, BF16Weight) else w


# ---------------------------------------------------------------------------------------------------------
# validation helpers
# ---------------------------------------------------------------------------------------------------------
def _float32(name: str, a) -> np.ndarray:
    """Real floating arrays become C-contiguous float32; anything else is a TypeError."""
    a = np.asarray(a)
    if not (np.issubdtype(a.dtype, np.floating) and a.dtype.itemsize <= 8):
        raise TypeError(f"{name}: expected a float32 array, got dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.float32)


# ---------------------------------------------------------------------------------------------------------
# linear
# ---------------------------------------------------------------------------------------------------------
def linear_reference(x, weight, bias=None) -> np.ndarray:
    """NumPy definition: [..., K] @ [N, K]^T + [N] -> [..., N]."""
    y = np.asarray(x, dtype=np.float32) @ np.asarray(as_float32(weight), dtype=np.float32).T
    return y + bias if bias is not None else y


def linear(x, weight, bias=None, *, naive: bool = False) -> np.ndarray:
    """y[..., N] = x[..., K] @ weight[N, K]^T + bias[N] on the C++ kernels.

    weight: float32 [N, K] or a BF16Weight. naive=True runs the reference triple loop (tests only).
    """
    C = _require()
    if not (type(x) is np.ndarray and x.dtype == np.float32 and x.flags.c_contiguous):  # fast path: as is
        x = _float32("linear: x", x)
    if x.ndim < 1:
        raise ValueError(f"linear: x must have at least 1 dimension [..., K], got shape {x.shape}")
    if isinstance(weight, BF16Weight):
        w = weight.bits
    elif type(weight) is np.ndarray and weight.dtype == np.float32 and weight.flags.c_contiguous:
        w = weight
    else:
        w = _float32("linear: weight", weight)
    if w.ndim != 2:
        raise ValueError(f"linear: weight must be 2-D [N, K], got shape {w.shape}")
    N, K = w.shape
    if x.shape[-1] != K:
        raise ValueError(f"linear: x {x.shape} has K={x.shape[-1]} but weight {w.shape} expects K={K}")
    b = None
    if bias is not None:
        b = _float32("linear: bias", bias)
        if b.shape != (N,):
            raise ValueError(f"linear: bias must have shape ({N},), got {b.shape}")
    if x.ndim == 2:
        return C.linear(x, w, b, naive)  # [M, K] -> [M, N]
    lead = x.shape[:-1]
    M = int(np.prod(lead, dtype=np.int64))
    y = C.linear(x.reshape(M, K), w, b, naive)  # [M, K] -> [M, N]
    return y.reshape(*lead, N)


# ---------------------------------------------------------------------------------------------------------
# attention
# ---------------------------------------------------------------------------------------------------------
def _check_attention(q, k, v, causal, sliding_window, segments, mask, scale):
    q, k, v = _float32("attention: q", q), _float32("attention: k", k), _float32("attention: v", v)
    if q.ndim != 3 or k.ndim != 3 or v.ndim != 3:
        raise ValueError(f"attention: q, k, v must be 3-D [heads, L, D], got {q.shape}, {k.shape}, {v.shape}")
    Hq, Lq, D = q.shape
    Hkv, Lk, Dk = k.shape
    if Dk != D or v.shape != k.shape:
        raise ValueError(f"attention: q {q.shape}, k {k.shape}, v {v.shape} must be [Hq, Lq, D], [Hkv, Lk, D], "
                         f"[Hkv, Lk, D]")
    if Hkv == 0 or Hq % Hkv:
        raise ValueError(f"attention: query heads {Hq} must be a multiple of key/value heads {Hkv} (GQA)")
    if causal and Lq > Lk:
        raise ValueError(f"attention: causal attention needs Lq <= Lk (queries are the last Lq positions), "
                         f"got Lq={Lq} Lk={Lk}")
    window = 0
    if sliding_window is not None:
        window = int(sliding_window)
        if window < 1:
            raise ValueError(f"attention: sliding_window must be >= 1 or None, got {sliding_window}")
    seg = None
    if segments is not None:
        seg = np.asarray(segments)
        if not np.issubdtype(seg.dtype, np.integer):
            raise TypeError(f"attention: segments must be integer block ids, got dtype {seg.dtype}")
        if Lq != Lk or seg.shape != (Lq,):
            raise ValueError(f"attention: segments shape {seg.shape} must be ({Lq},) with Lq == Lk "
                             f"(got Lq={Lq}, Lk={Lk})")
        seg = np.ascontiguousarray(seg, dtype=np.int64)
    m = None
    if mask is not None:
        m = np.asarray(mask)
        if m.dtype != np.bool_:
            raise TypeError(f"attention: mask must be boolean (True = may attend), got dtype {m.dtype}")
        if m.shape != (Lq, Lk):
            raise ValueError(f"attention: mask shape {m.shape} must be (Lq, Lk) = ({Lq}, {Lk})")
        m = np.ascontiguousarray(m)
    sc = float(D) ** -0.5 if scale is None else float(scale)
    if not np.isfinite(sc):
        raise ValueError(f"attention: scale must be finite, got {scale}")
    return q, k, v, bool(causal), window, seg, m, sc


def attention_reference(q, k, v, causal=False, sliding_window=None, segments=None, mask=None, scale=None):
    """NumPy definition: softmax(scale * q k^T + masks) v, GQA by repeating kv heads; rows that may see no key
    are 0. q [Hq, Lq, D], k/v [Hkv, Lk, D] -> [Hq, Lq, D]."""
    q, k, v, causal, window, seg, m, sc = _check_attention(q, k, v, causal, sliding_window, segments, mask, scale)
    Hq, Lq, D = q.shape
    Hkv, Lk, _ = k.shape
    G = Hq // Hkv  # GQA: each kv head serves G query heads
    k, v = np.repeat(k, G, axis=0), np.repeat(v, G, axis=0)  # [Hq, Lk, D]
    s = (q @ k.transpose(0, 2, 1)) * np.float32(sc)  # [Hq, Lq, Lk]
    pos = (Lk - Lq + np.arange(Lq))[:, None]  # absolute position of each query (KV cache aware)
    key = np.arange(Lk)[None, :]
    ok = np.ones((Lq, Lk), dtype=bool)
    if causal:
        ok &= key <= pos
    if window:
        ok &= key > pos - window
    if seg is not None:
        ok &= seg[:, None] == seg[None, :]
    if m is not None:
        ok &= m
    s = np.where(ok, s, -np.inf)
    mx = s.max(axis=-1, keepdims=True)
    mx = np.where(np.isfinite(mx), mx, 0.0)
    e = np.exp(s - mx)
    den = e.sum(axis=-1, keepdims=True)
    return ((e @ v) / np.where(den > 0, den, 1.0)).astype(np.float32)


def attention(q, k, v, causal=False, sliding_window=None, segments=None, mask=None, scale=None, *,
              naive: bool = False) -> np.ndarray:
    """Flash-style attention on the C++ kernels; same arguments and result as `attention_reference`.

    q [Hq, Lq, D], k/v [Hkv, Lk, D] float32; causal (query i at position Lk-Lq+i), sliding_window (keys
    > pos - w), segments int [L] block ids (Lq == Lk), mask bool [Lq, Lk] (True = may attend),
    scale (default D**-0.5). Returns [Hq, Lq, D] float32.
    """
    C = _require()
    q, k, v, causal, window, seg, m, sc = _check_attention(q, k, v, causal, sliding_window, segments, mask, scale)
    return C.attention(q, k, v, causal, window, seg, m, sc, naive)


# ---------------------------------------------------------------------------------------------------------
# MoE dispatch helper (pure NumPy: the grouping is cheap, the expert matmuls go through `linear`)
# ---------------------------------------------------------------------------------------------------------
def group_by_expert(topk_idx: np.ndarray, num_experts: int):
    """Group (token, slot) pairs by chosen expert so each used expert runs once on its tokens.

    topk_idx [L, k] int -> (order [L*k] flat indices into topk_idx sorted by expert (stable),
    offsets [E+1]: expert e owns order[offsets[e]:offsets[e+1]]). Experts with no tokens get an empty range
    and must not be touched (their weights are never read).
    """
    idx = np.asarray(topk_idx)
    if not np.issubdtype(idx.dtype, np.integer) or idx.ndim != 2:
        raise TypeError(f"group_by_expert: topk_idx must be an integer [L, k] array, got {idx.dtype} {idx.shape}")
    if idx.size and (idx.min() < 0 or idx.max() >= num_experts):
        raise ValueError(f"group_by_expert: expert ids must be in [0, {num_experts}), got range "
                         f"[{idx.min()}, {idx.max()}]")
    flat = idx.reshape(-1)
    order = np.argsort(flat, kind="stable")  # [L*k]
    counts = np.bincount(flat, minlength=num_experts)  # [E]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)  # [E+1]
    return order, offsets


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
    _require().set_threads(int(n))


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
        raise ValueError(f"cuda_linear: need x [M, K] and weight [N, K], got {x.shape} and {w.shape}")
    b = None if bias is None else _float32("cuda_linear: bias", bias)
    if b is not None and b.shape != (w.shape[0],):
        raise ValueError(f"cuda_linear: bias must have shape ({w.shape[0]},), got {b.shape}")
    return _C.cuda_linear(x, w, b, naive)


def cuda_attention(q, k, v, causal=False, sliding_window=None, segments=None, mask=None, scale=None):
    """(out [Hq, Lq, D], kernel ms) on the GPU; same arguments and checks as `attention` (D <= 256)."""
    if not cuda_available():
        raise RuntimeError("CUDA kernels are not available (build with OMNIREF_CUDA=ON on a machine with a GPU)")
    q, k, v, causal, window, seg, m, sc = _check_attention(q, k, v, causal, sliding_window, segments, mask, scale)
    if q.shape[2] > 256:
        raise ValueError(f"cuda_attention: head dim {q.shape[2]} > 256 is not supported")
    return _C.cuda_attention(q, k, v, causal, window, seg, m, sc)
