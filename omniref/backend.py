"""Which implementation runs the hot ops: the NumPy specification or the C++ kernels.

    OMNIREF_BACKEND=numpy|cpp      default: cpp when the extension `omniref._C` loads, else numpy
    backend.set_backend("numpy")   process-wide
    with backend.use("numpy"): ... this thread only, restored on exit
    OMNIREF_VALIDATE=1 / with backend.validate(): every native call also runs the NumPy path and records
                                   the max abs / relative difference in `backend.validation_log`

omniref/nn.py asks `kernel(name)` for each op: a callable when the cpp backend is active, else None:

    fn = backend.kernel("linear")
    if fn is not None:
        return fn(x, weight, bias)
    ... NumPy definition ...

Ops: "linear" (x, weight, bias), "attention" (q, k, v, causal, sliding_window, segments, mask, scale) and
"moe" (x, chosen, mix, experts: the fused routed-experts feed-forward of omniref.decoder.moe);
"gelu" (x) and "snake_beta" (x, alpha, beta: Code2Wav's activation, omniref/codec/code2wav.py);
"causal_conv" (x, weight, bias, dilation, residual=None: Code2Wav's causal conv, csrc/conv.cpp) and
"trans_conv" (x, weight, bias, stride: its trimmed transposed conv, same file); "conv2d_s2" (x, weight, bias:
the audio encoder's 3x3 stride-2 conv, same file);
"rms_norm" (x, weight, eps) and "rotary" (x, cos, sin: nn.apply_rotary), csrc/norm_rope.cpp;
their validated wrappers and semantics are in omniref/_native.py.
"""
from __future__ import annotations

import contextlib
import os
import threading
import warnings
from dataclasses import dataclass

import numpy as np

from omniref import _native
from omniref.errors import InputError

BACKENDS = ("numpy", "cpp")
_local = threading.local()
_state = {"global": None, "validate": None, "warned": False}


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
    stack = getattr(_local, "stack", None)
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
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    stack.append(name)
    try:
        yield name
    finally:
        stack.pop()


def validating() -> bool:
    if getattr(_local, "validate", 0):
        return True
    if _state["validate"] is None:
        _state["validate"] = os.environ.get("OMNIREF_VALIDATE", "").strip() not in ("", "0", "false", "no")
    return _state["validate"]


@contextlib.contextmanager
def validate():
    """`with validate():` each native call in this thread also runs the NumPy path and logs the difference."""
    _local.validate = getattr(_local, "validate", 0) + 1
    try:
        yield validation_log
    finally:
        _local.validate -= 1


def _numpy_op(name: str):
    """The NumPy definition of op `name`: omniref.nn's when it exists, else the reference in _native."""
    try:
        from omniref import nn  # the model's specification
        fn = getattr(nn, name, None)
    except Exception:
        fn = None
    if fn is None:
        return getattr(_native, f"{name}_reference")

    def run(*args):
        with use("numpy"):
            if name == "attention":  # nn.attention takes the mask arguments by keyword
                q, k, v, causal, sliding_window, segments, mask, scale = args
                return fn(q, k, v, causal=causal, sliding_window=sliding_window, segments=segments, mask=mask,
                          scale=scale)
            return fn(*args)
    return run


def _is_f32(a) -> bool:
    """None, a BF16Weight or a float32 array: data the float32 kernels take as they are."""
    return a is None or getattr(a, "dtype", None) == np.float32


def _check(name: str, out, args) -> None:
    """Validate mode: run the NumPy definition on the same arguments and log the difference."""
    ref = np.asarray(_numpy_op(name)(*args))
    err = float(np.max(np.abs(out - ref))) if out.size else 0.0
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    rec = ValidationRecord(name, tuple(out.shape), err, err / max(scale, 1e-12))
    validation_log.append(rec)
    if rec.max_rel > 1e-4:
        warnings.warn(f"omniref validate: {name}{rec.shape} cpp vs numpy max rel diff {rec.max_rel:.3g}",
                      RuntimeWarning, stacklevel=3)


# The two wrappers below are what `kernel()` hands out. They are on the decode hot path (a few hundred calls
# per token), so they stay thin: plain parameters, no signature binding. Calls whose data is not float32
# (e.g. float64 cross-checks in tests) keep NumPy's semantics exactly by running the NumPy definition.
def _linear(x, weight, bias=None):
    if not (_is_f32(x) and _is_f32(weight) and _is_f32(bias)):
        return _numpy_op("linear")(x, weight, bias)
    out = _native.linear(x, weight, bias)
    if validating():
        _check("linear", out, (x, weight, bias))
    return out


def _attention(q, k, v, causal=False, sliding_window=None, segments=None, mask=None, scale=None):
    args = (q, k, v, causal, sliding_window, segments, mask, scale)
    if not (_is_f32(q) and _is_f32(k) and _is_f32(v)):
        return _numpy_op("attention")(*args)
    out = _native.attention(*args)
    if validating():
        _check("attention", out, args)
    return out


def _moe(x, chosen, mix, experts):
    """experts: {expert id: (gate, up, down)} for (at least) every chosen id; see _native.moe."""
    if not (_is_f32(x) and _is_f32(mix) and all(_is_f32(w) for t in experts.values() for w in t)):
        return _native.moe_reference(x, chosen, mix, experts)
    out = _native.moe(x, chosen, mix, experts)
    if validating():
        _check("moe", out, (x, chosen, mix, experts))
    return out


def _gelu(x):
    if not _is_f32(x):
        return _numpy_op("gelu")(x)
    out = _native.gelu(x)
    if validating():
        _check("gelu", np.asarray(out), (x,))
    return out


def _snake_beta(x, alpha, beta):
    if not (_is_f32(x) and _is_f32(alpha) and _is_f32(beta)):  # e.g. float64: the specification, on NumPy
        from omniref.codec.code2wav import snake_beta
        with use("numpy"):
            return snake_beta(x, alpha, beta)
    out = _native.snake_beta(x, alpha, beta)
    if validating():
        _check("snake_beta", out, (x, alpha, beta))
    return out


def _causal_conv(x, weight, bias, dilation=1, residual=None):
    """Code2Wav's causal conv (+ optional fused residual add); the NumPy definition is code2wav.causal_conv."""
    if not (_is_f32(x) and _is_f32(weight) and _is_f32(bias) and _is_f32(residual)):
        from omniref.codec.code2wav import causal_conv
        with use("numpy"):
            y = causal_conv(x, weight, bias, dilation)
        return y if residual is None else y + residual
    out = _native.conv1d(x, weight, bias, dilation, residual)
    if validating():
        _check("causal_conv", out, (x, weight, bias, dilation, residual))
    return out


def _trans_conv(x, weight, bias, stride):
    """Code2Wav's trimmed transposed conv; the NumPy definition is code2wav.causal_trans_conv."""
    if not (_is_f32(x) and _is_f32(weight) and _is_f32(bias)):
        return _native.trans_conv1d_reference(x, weight, bias, stride)
    out = _native.trans_conv1d(x, weight, bias, stride)
    if validating():
        _check("trans_conv1d", out, (x, weight, bias, stride))
    return out


def _conv2d_s2(x, weight, bias):
    """The audio encoder's 3x3 stride-2 conv; the NumPy definition is audio.encoder.conv2d_stride2."""
    if not (_is_f32(x) and _is_f32(weight) and _is_f32(bias)):
        return _native.conv2d_s2_reference(x, weight, bias)
    out = _native.conv2d_s2(x, weight, bias)
    if validating():
        _check("conv2d_s2", out, (x, weight, bias))
    return out


def _rms_norm(x, weight, eps):
    if not (type(x) is np.ndarray and x.dtype == np.float32 and x.ndim >= 1 and type(weight) is np.ndarray
            and weight.dtype == np.float32 and weight.shape == x.shape[-1:]):
        return _numpy_op("rms_norm")(x, weight, eps)             # other dtypes / broadcasts: the definition
    out = _native.rms_norm(x, weight, eps)
    if validating():
        _check("rms_norm", out, (x, weight, eps))
    return out


def _rotary(x, cos, sin):
    """x [..., L, D] (strided views welcome), cos/sin [L, D]: nn.apply_rotary."""
    if not (type(x) is np.ndarray and x.dtype == np.float32 and x.ndim >= 2 and _is_f32(cos) and _is_f32(sin)
            and np.shape(cos) == x.shape[-2:] and np.shape(sin) == x.shape[-2:]):
        from omniref import nn                                   # other dtypes / broadcasts: the definition
        with use("numpy"):
            return nn.apply_rotary(x, cos, sin)
    out = _native.rotary(x, cos, sin)
    if validating():
        _check("rotary", out, (x, cos, sin))
    return out


_KERNELS = {"linear": _linear, "attention": _attention, "moe": _moe, "gelu": _gelu, "snake_beta": _snake_beta,
            "causal_conv": _causal_conv, "trans_conv": _trans_conv, "conv2d_s2": _conv2d_s2, "rms_norm": _rms_norm,
            "rotary": _rotary}


def kernels() -> tuple[str, ...]:
    """Names of the ops that have a native kernel."""
    return tuple(_KERNELS)


def kernel(name: str):
    """Validated native callable for op `name` when the cpp backend is active, else None."""
    if name not in _KERNELS:
        raise KeyError(f"no native kernel named {name!r}; known: {', '.join(_KERNELS)}")
    return _KERNELS[name] if active() == "cpp" else None


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
