"""Which implementation runs each op: the NumPy specification (omniref/nn.py) or a C++ kernel.

The models call every op through one dispatch, `ops`:

    from omniref.backend import ops
    y = ops.linear(x, w, b)        # nn.linear's definition, or the C++ GEMM checked against it

`ops.NAME` is `op("NAME")`: the validated C++ wrapper below when the cpp backend is active and the op has a kernel,
else `nn.NAME` itself. Selecting the backend:

    OMNIREF_BACKEND=numpy|cpp      default: cpp when the extension `omniref._C` loads, else numpy
    backend.set_backend("numpy")   process-wide
    with backend.use("numpy"): ... this thread only, restored on exit
    OMNIREF_VALIDATE=1 / with backend.validate(): every native call also runs the NumPy definition and records
                                   the max abs / relative difference in `backend.validation_log`

Ops with a kernel (csrc/; argument checks in omniref/_native.py): "linear", "linear_many", "attention",
"moe_experts", "gelu", "gelu_tanh", "rms_norm", "apply_rotary", "snake_beta", "causal_conv", "causal_trans_conv", "conv2d_stride2".
Everything that decides *whether* a kernel pays (thresholds, fused variants) lives here, not in the models:
the models state the maths once and the answer does not depend on the choice (same bits as before this layering).
"""
from __future__ import annotations

import contextlib
import os
import threading
import warnings
from dataclasses import dataclass
from itertools import chain

import numpy as np

from omniref import _native, nn, weights
from omniref.errors import InputError

BACKENDS = ("numpy", "cpp")


class _ThreadState(threading.local):
    """Per-thread dispatch state. Both fields exist in every thread from the start: `getattr(local, name, default)`
    on a missing attribute raises and catches an AttributeError inside (~0.7 us), which `active()` and
    `validating()` paid on each of the ~100 op calls of a decode step."""

    def __init__(self):
        self.stack: list[str] = []      # the `use()` blocks of this thread, innermost last
        self.validate = 0               # depth of `validate()` blocks in this thread


_local = _ThreadState()
_state = {"global": None, "validate": None, "warned": False}

# Code2Wav's convs with fewer output channels than this (the final one: 1 channel) run nn's tap loop even on the
# cpp backend: the GEMM's panels would be mostly padding. A conv with a fused residual add always runs the kernel.
CPP_CONV_MIN_COUT = 32


@dataclass
class ValidationRecord:
    op: str
    shape: tuple
    max_abs: float
    max_rel: float  # max_abs / max(|numpy result|)


validation_log: list[ValidationRecord] = []


def available() -> bool:
    """True when the C++ extension is built and importable."""
    return _native.available()


def _warn_once() -> None:
    if not _state["warned"]:
        _state["warned"] = True
        warnings.warn(f"omniref: C++ extension not available ({_native.IMPORT_ERROR}); using the NumPy path",
                      RuntimeWarning, stacklevel=3)


def _check_name(name: str, source: str = "backend") -> str:
    """A backend name -> 'numpy' or 'cpp'; anything else is an InputError naming `source` (the option or
    environment variable it came from)."""
    name = str(name).strip().lower()
    if name not in BACKENDS:
        raise InputError(f"unknown omniref backend {name!r} (from {source}); choose one of "
                         f"{', '.join(BACKENDS)}", field=source, value=name)
    if name == "cpp" and not available():
        raise InputError(f"{source} 'cpp': the C++ extension is not available ({_native.IMPORT_ERROR}); build it "
                         "with `pip install -e .` or use numpy", field=source, value=name)
    return name


def _default() -> str:
    env = os.environ.get("OMNIREF_BACKEND", "").strip()
    if env:
        return _check_name(env, "OMNIREF_BACKEND")
    if available():
        return "cpp"
    _warn_once()
    return "numpy"


def active() -> str:
    """'numpy' or 'cpp': the innermost `use()` of this thread, else `set_backend()`, else the environment."""
    stack = _local.stack
    if stack:
        return stack[-1]
    if _state["global"] is None:
        _state["global"] = _default()
    return _state["global"]


def set_backend(name: str) -> None:
    """Select the backend for the whole process (a `use()` block still wins inside it)."""
    _state["global"] = _check_name(name)


@contextlib.contextmanager
def use(name: str):
    """`with use("numpy"):` run the block on that backend in this thread."""
    name = _check_name(name)
    stack = _local.stack
    stack.append(name)
    try:
        yield name
    finally:
        stack.pop()


# The checkpoint loader hands out 2-D bf16 tensors as their raw bits (weights.BF16Weight) only where a kernel
# consumes them: on the cpp backend. The data layer asks through this hook instead of importing upward.
weights.keeps_bf16 = lambda: active() == "cpp"


def validating() -> bool:
    if _local.validate:
        return True
    if _state["validate"] is None:
        _state["validate"] = os.environ.get("OMNIREF_VALIDATE", "").strip() not in ("", "0", "false", "no")
    return _state["validate"]


@contextlib.contextmanager
def validate():
    """`with validate():` each native call in this thread also runs the NumPy path and logs the difference."""
    _local.validate += 1
    try:
        yield validation_log
    finally:
        _local.validate -= 1


def _is_f32(a) -> bool:
    """None, a BF16Weight or a float32 array: data the float32 kernels take as they are."""
    return a is None or getattr(a, "dtype", None) == np.float32


def _all_f32(arrays) -> bool:
    """_is_f32 of every array (one loop, no call per array: an MoE layer passes 3 weights per chosen expert)."""
    for a in arrays:
        if not (a is None or getattr(a, "dtype", None) == np.float32):
            return False
    return True


def _check(name: str, out, args, kwargs=None) -> None:
    """Validate mode: run the NumPy definition on the same arguments and log the difference."""
    ref = np.asarray(getattr(nn, name)(*args, **(kwargs or {})))
    out = np.asarray(out)
    err = float(np.max(np.abs(out - ref))) if out.size else 0.0
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    rec = ValidationRecord(name, tuple(out.shape), err, err / max(scale, 1e-12))
    validation_log.append(rec)
    if rec.max_rel > 1e-4:
        warnings.warn(f"omniref validate: {name}{rec.shape} cpp vs numpy max rel diff {rec.max_rel:.3g}",
                      RuntimeWarning, stacklevel=3)


# The wrappers below are what `op()` hands out on the cpp backend. They are on the decode hot path (a few hundred
# calls per token), so they stay thin: plain parameters, no signature binding. Calls whose data is not float32
# (e.g. float64 cross-checks in tests) keep NumPy's semantics exactly by running the NumPy definition.
def _linear(x, weight, bias=None):
    if not (_is_f32(x) and _is_f32(weight) and _is_f32(bias)):
        return nn.linear(x, weight, bias)
    out = _native.linear(x, weight, bias)
    if validating():
        _check("linear", out, (x, weight, bias))
    return out


def _linear_many(x, weights):
    if not (_is_f32(x) and _all_f32(weights)):
        return nn.linear_many(x, weights)
    out = _native.linear_many(x, weights)
    if validating():
        for y, w in zip(out, weights):
            _check("linear", y, (x, w))
    return out


def _attention(q, k, v, *, causal=False, sliding_window=None, segments=None, mask=None, scale=None):
    kw = dict(causal=causal, sliding_window=sliding_window, segments=segments, mask=mask, scale=scale)
    if not (_is_f32(q) and _is_f32(k) and _is_f32(v)):
        return nn.attention(q, k, v, **kw)
    nn.check_attention_shapes(q, k, v)                # the specification's own messages
    if scale is None:
        kw["scale"] = float(q.shape[2]) ** -0.5
    out = _native.attention(q, k, v, **kw)
    if validating():
        _check("attention", out, (q, k, v), kw)
    return out


def _moe_experts(x, chosen, mix, experts):
    """experts: {expert id: (gate, up, down)} for (at least) every chosen id; see _native.moe."""
    if not (_is_f32(x) and _is_f32(mix) and _all_f32(chain.from_iterable(experts.values()))):
        return nn.moe_experts(x, chosen, mix, experts)
    out = _native.moe(x, chosen, mix, experts)
    if validating():
        _check("moe_experts", out, (x, chosen, mix, experts))
    return out


def _activation(name: str):
    """The cpp wrapper of an elementwise activation (`gelu`, `gelu_tanh`): _native.<name> on float32, nn.<name>
    (NumPy's semantics) on any other dtype."""
    spec, kernel = getattr(nn, name), getattr(_native, name)

    def run(x):
        if not _is_f32(x):
            return spec(x)
        out = kernel(x)
        if validating():
            _check(name, out, (x,))
        return out
    return run


_gelu, _gelu_tanh = _activation("gelu"), _activation("gelu_tanh")


def _snake_beta(x, alpha, beta):
    if not (_is_f32(x) and _is_f32(alpha) and _is_f32(beta)):  # e.g. float64: the specification
        return nn.snake_beta(x, alpha, beta)
    out = _native.snake_beta(x, alpha, beta)
    if validating():
        _check("snake_beta", out, (x, alpha, beta))
    return out


def _causal_conv(x, weight, bias, dilation=1, residual=None):
    """Code2Wav's causal conv (+ optional fused residual add) as one GEMM with an implicit im2col (csrc/conv.cpp)."""
    if not (_is_f32(x) and _is_f32(weight) and _is_f32(bias) and _is_f32(residual)) or (
            residual is None and weight.shape[0] < CPP_CONV_MIN_COUT):
        return nn.causal_conv(x, weight, bias, dilation, residual)
    out = _native.conv1d(x, weight, bias, dilation, residual)
    if validating():
        _check("causal_conv", out, (x, weight, bias, dilation, residual))
    return out


def _causal_trans_conv(x, weight, bias, stride):
    """Code2Wav's trimmed transposed conv, by phase as one conv GEMM (csrc/conv.cpp)."""
    if not (_is_f32(x) and _is_f32(weight) and _is_f32(bias)) or weight.shape[1] < CPP_CONV_MIN_COUT:
        return nn.causal_trans_conv(x, weight, bias, stride)
    out = _native.trans_conv1d(x, weight, bias, stride)
    if validating():
        _check("causal_trans_conv", out, (x, weight, bias, stride))
    return out


def _conv2d_stride2(x, weight, bias):
    """The audio encoder's 3x3 stride-2 conv as one GEMM whose im2col rows are never written (csrc/conv.cpp)."""
    if not (_is_f32(x) and _is_f32(weight) and _is_f32(bias)):
        return nn.conv2d_stride2(x, weight, bias)
    out = _native.conv2d_s2(x, weight, bias)
    if validating():
        _check("conv2d_stride2", out, (x, weight, bias))
    return out


def _rms_norm(x, weight, eps):
    if not (type(x) is np.ndarray and x.dtype == np.float32 and x.ndim >= 1 and type(weight) is np.ndarray
            and weight.dtype == np.float32 and weight.shape == x.shape[-1:]):
        return nn.rms_norm(x, weight, eps)                       # other dtypes / broadcasts: the definition
    out = _native.rms_norm(x, weight, eps)
    if validating():
        _check("rms_norm", out, (x, weight, eps))
    return out


def _apply_rotary(x, cos, sin):
    """x [..., L, D] (strided views welcome), cos/sin [L, D]."""
    if not (type(x) is np.ndarray and x.dtype == np.float32 and x.ndim >= 2 and _is_f32(cos) and _is_f32(sin)
            and getattr(cos, "shape", None) == x.shape[-2:] and getattr(sin, "shape", None) == x.shape[-2:]):
        return nn.apply_rotary(x, cos, sin)                      # other dtypes / broadcasts: the definition
    out = _native.rotary(x, cos, sin)
    if validating():
        _check("apply_rotary", out, (x, cos, sin))
    return out


# ---------------------------------------------------------------------------------------------------------
# Memory budgets: how big one call may be. They bound memory, never change a result.
# ---------------------------------------------------------------------------------------------------------
SCORE_BUDGET = 1 << 26        # at most this many attention scores (256 MB of float32) per attention call
IM2COL_BUDGET = 1 << 24       # floats (64 MiB) per im2col matrix of nn.conv2d_stride2 (the audio stem)


def items_per_call(floats_per_item: int, n_items: int, cap: int | None = None) -> int:
    """How many items (e.g. audio chunks) one conv2d_stride2 call may take so that its im2col matrix stays under
    IM2COL_BUDGET floats; at least 1, at most `cap` (the config's own limit) and n_items."""
    return max(1, min(int(cap or n_items), IM2COL_BUDGET // floats_per_item))


def attention_by_blocks(q: np.ndarray, k: np.ndarray, v: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """Block-diagonal attention under a memory budget (the vision encoder's per-image attention, `cu_seqlens`):
    the same result as `ops.attention(q, k, v, segments=segments)`, in as many calls as SCORE_BUDGET needs.
    q/k/v [nh, P, hd], segments int [P] -> [nh, P, hd], each patch attending only inside its segment.

    Segments are contiguous runs. Consecutive whole segments are grouped while their [nh, L, L] scores fit
    SCORE_BUDGET and handed to `ops.attention(segments=...)`, so a long video never builds a [P, P] score
    matrix. A single segment too large for the budget (a huge image) is split by query rows, which is exact
    for bidirectional attention (each query's softmax needs all keys, not the other queries).
    """
    nh, P, _ = q.shape
    bounds = [int(i) for i in np.flatnonzero(np.r_[True, segments[1:] != segments[:-1]])] + [P]
    out = np.empty_like(q)
    j = 0
    while j < len(bounds) - 1:
        a, j = bounds[j], j + 1                                  # take at least one whole segment ...
        while j < len(bounds) - 1 and nh * (bounds[j + 1] - a) ** 2 <= SCORE_BUDGET:
            j += 1                                               # ... and more while their scores fit
        b = bounds[j]
        seg, L = segments[a:b], b - a
        rows = max(1, SCORE_BUDGET // (nh * L))                  # query rows per call
        if rows >= L:
            one = seg[0] == seg[-1]                              # one segment: no mask needed
            out[:, a:b] = op("attention")(q[:, a:b], k[:, a:b], v[:, a:b], segments=None if one else seg)
            continue
        for s in range(a, b, rows):                              # a single huge segment, by query chunks
            e = min(s + rows, b)
            out[:, s:e] = op("attention")(q[:, s:e], k[:, a:b], v[:, a:b])
    return out


# op name -> (specification, validated C++ wrapper or None). Every public function of nn is an op.
OPS: dict[str, tuple] = {name: (getattr(nn, name), None) for name in nn.__all__}
OPS.update({name: (getattr(nn, name), fn) for name, fn in (
    ("linear", _linear), ("linear_many", _linear_many), ("attention", _attention), ("moe_experts", _moe_experts),
    ("gelu", _gelu), ("gelu_tanh", _gelu_tanh), ("snake_beta", _snake_beta), ("causal_conv", _causal_conv),
    ("causal_trans_conv", _causal_trans_conv), ("conv2d_stride2", _conv2d_stride2), ("rms_norm", _rms_norm),
    ("apply_rotary", _apply_rotary))})
OPS["attention_by_blocks"] = (attention_by_blocks, None)   # a schedule of `attention` calls, on either backend


def op(name: str):
    """The callable that runs op `name` now: its C++ wrapper on the cpp backend, else nn's definition."""
    try:
        spec, fn = OPS[name]
    except KeyError:
        raise KeyError(f"no op named {name!r}; known: {', '.join(OPS)}") from None
    if fn is None:                               # no kernel: the definition, whatever the backend
        return spec
    return fn if active() == "cpp" else spec


class _Ops:
    """`ops.linear(...)` is `op("linear")(...)`: the one way the models call an op."""

    def __getattribute__(self, name: str):
        # op(name), inlined: this runs a few hundred times per decoded token
        pair = OPS.get(name)
        if pair is None:
            return object.__getattribute__(self, name) if name.startswith("__") else op(name)  # op: the KeyError
        spec, fn = pair
        return fn if fn is not None and active() == "cpp" else spec

    def __dir__(self):
        return list(OPS)


ops = _Ops()


def kernels() -> tuple[str, ...]:
    """Names of the ops that have a native kernel."""
    return tuple(name for name, (_, fn) in OPS.items() if fn is not None)


def kernel(name: str):
    """Validated native callable for op `name` when the cpp backend is active, else None."""
    if name not in kernels():
        raise KeyError(f"no native kernel named {name!r}; known: {', '.join(kernels())}")
    return OPS[name][1] if active() == "cpp" else None


def native_available() -> bool:
    """Alias of `available()` (used by .ci/run)."""
    return available()


def info() -> dict:
    """What the native side looks like on this machine (for `omniref bench` and bug reports)."""
    d = {"backend": active(), "extension": available()}
    if available():
        C = _native._C
        d.update(isa=C.isa(), best_isa=C.best_isa(), threads=C.max_threads(), avx512_bf16=C.cpu_has("avx512_bf16"),
                 cuda=bool(C.has_cuda), sanitized=bool(C.sanitized))
    else:
        d["error"] = str(_native.IMPORT_ERROR)
    return d


native_info = info
