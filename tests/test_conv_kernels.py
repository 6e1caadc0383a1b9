"""The C++ convolutions (csrc/conv.cpp: each one GEMM with an implicit im2col) against their NumPy definitions,
omniref.codec.code2wav.causal_conv (a tap-by-tap loop) and causal_trans_conv (matmul + overlap-add), on every
ISA.

Reference: the NumPy definition evaluated in float64 (exact enough to be "the true value" here). Bound: a
float32 sum of n products, in any order, is within n·ε·Σ|wᵢ xᵢ| of the true sum (Higham's γₙ), with
n = K·Cin taps·channels (+2 for the bias and residual adds); Σ|wᵢ xᵢ| is the convolution of |W| and |x|.
"""
import numpy as np
import pytest

from omniref import _native, backend
from omniref.backend import ops
from omniref.codec import code2wav as c2w

pytestmark = pytest.mark.skipif(not _native.available(), reason="C++ extension not built")

EPS = float(np.finfo(np.float32).eps)
F32 = np.float32


def draw(n, cin, cout, k, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, cin), dtype=F32)
    w = (rng.standard_normal((cout, cin, k)) / np.sqrt(cin * k)).astype(F32)
    b = rng.standard_normal(cout, dtype=F32)
    r = rng.standard_normal((n, cout), dtype=F32)
    return x, w, b, r


def truth_and_bound(x, w, b, d, r=None):
    """float64 value of the NumPy definition, and the float32 rounding bound (module docstring)."""
    with backend.use("numpy"):
        y = ops.causal_conv(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), d)
        mag = ops.causal_conv(np.abs(x).astype(np.float64), np.abs(w).astype(np.float64), None, d)
    mag = mag + np.abs(b)
    if r is not None:
        y, mag = y + r, mag + np.abs(r)
    n = w.shape[1] * w.shape[2] + 2
    return y, n * EPS * mag + 1e-30


# (samples, Cin, Cout, taps, dilation): dilations 1/3/9, odd sizes, k=1, fewer samples than the receptive
# field, Cout not a multiple of the micro-tile, K·Cin spanning several 512-wide reduction slices with tap
# boundaries inside a slice (80·7 = 560, 96·7 = 672), and Cin alone over a slice (600). Inputs up to 32 micro-
# tile rows split the work by output channel, longer ones by rows (csrc/conv_kernels.inc): 500 is long on
# every ISA, 203 only where the micro-tile has 4 or 6 rows.
SHAPES = [(37, 5, 7, 3, 3), (100, 13, 40, 7, 9), (1, 8, 33, 7, 1), (5, 16, 16, 7, 9), (50, 96, 96, 1, 1),
          (203, 80, 45, 7, 3), (131, 96, 96, 7, 9), (29, 600, 17, 1, 1), (64, 3, 130, 2, 1),
          (500, 24, 70, 7, 3)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_conv1d_matches_definition(isa, shape):
    n, cin, cout, k, d = shape
    x, w, b, r = draw(n, cin, cout, k, seed=sum(shape))
    truth, bound = truth_and_bound(x, w, b, d)
    y = _native.conv1d(x, w, b, d)
    assert y.shape == (n, cout) and y.dtype == F32
    assert np.all(np.abs(y - truth) <= bound), float(np.max(np.abs(y - truth) / bound))
    # the tap loop itself (float32) agrees with the same truth: both are float32 evaluations of one sum
    with backend.use("numpy"):
        y_np = ops.causal_conv(x, w, b, d)
    assert np.all(np.abs(y_np - truth) <= bound)
    # fused residual, and no bias
    truth_r, bound_r = truth_and_bound(x, w, b, d, r)
    assert np.all(np.abs(_native.conv1d(x, w, b, d, r) - truth_r) <= bound_r)
    truth0, bound0 = truth_and_bound(x, w, np.zeros_like(b), d)
    assert np.all(np.abs(_native.conv1d(x, w, None, d) - truth0) <= bound0)


@pytest.mark.parametrize("shape", SHAPES[:5], ids=lambda s: "x".join(map(str, s)))
def test_naive_loop_matches_definition(shape):
    n, cin, cout, k, d = shape
    x, w, b, r = draw(n, cin, cout, k, seed=7)
    truth, bound = truth_and_bound(x, w, b, d, r)
    assert np.all(np.abs(_native.conv1d(x, w, b, d, r, naive=True) - truth) <= bound)


def test_causality_and_left_padding():
    # an impulse at sample t0 moves output only at t0 + d·(K-1-j) for the taps j: never before t0
    x = np.zeros((40, 4), F32)
    x[11, 2] = 1.0
    w = np.random.default_rng(3).standard_normal((6, 4, 3)).astype(F32)
    y = _native.conv1d(x, w, None, 4)
    assert np.all(y[:11] == 0)
    for j, t in enumerate((19, 15, 11)):                       # s_j = 4·(2-j) samples later
        assert np.array_equal(y[t], w[:, 2, j])
    assert np.count_nonzero(np.abs(y).sum(axis=1)) == 3


def test_backend_dispatch_and_residual_unit():
    rng = np.random.default_rng(5)
    C = 40                                                     # >= CPP_CONV_MIN_COUT: dispatched
    w = {f"u.act{i}.{n}": rng.standard_normal(C, dtype=F32) * 0.1 for i in (1, 2) for n in ("alpha", "beta")}
    w.update({
        "u.conv1.conv.weight": (rng.standard_normal((C, C, 7)) * 0.1).astype(F32),
        "u.conv1.conv.bias": rng.standard_normal(C, dtype=F32),
        "u.conv2.conv.weight": (rng.standard_normal((C, C, 1)) * 0.1).astype(F32),
        "u.conv2.conv.bias": rng.standard_normal(C, dtype=F32)})
    x = rng.standard_normal((300, C), dtype=F32)
    with backend.use("numpy"):
        ref = c2w.residual_unit(x, w, "u.", 9)
    with backend.use("cpp"):
        out = c2w.residual_unit(x, w, "u.", 9)
        conv = ops.causal_conv(x, w["u.conv1.conv.weight"], w["u.conv1.conv.bias"], 3)
    assert np.allclose(out, ref, rtol=1e-5, atol=1e-5)
    assert np.array_equal(conv, _native.conv1d(x, w["u.conv1.conv.weight"], w["u.conv1.conv.bias"], 3))
    narrow = w["u.conv1.conv.weight"][:backend.CPP_CONV_MIN_COUT - 1]                  # stays on the tap loop
    with backend.use("cpp"):
        y_narrow = ops.causal_conv(x, narrow, None, 3)
    with backend.use("numpy"):
        assert np.array_equal(y_narrow, ops.causal_conv(x, narrow, None, 3))
    # float64 data keeps NumPy semantics (the kernel is float32 only)
    with backend.use("cpp"):
        y64 = backend.kernel("causal_conv")(x.astype(np.float64), w["u.conv1.conv.weight"].astype(np.float64),
                                            w["u.conv1.conv.bias"].astype(np.float64), 3)
    assert y64.dtype == np.float64


def test_non_contiguous_input():
    x, w, b, _ = draw(60, 10, 12, 3, seed=1)
    xs = np.repeat(x, 2, axis=1)[:, ::2]                       # same values, strided view
    assert np.array_equal(_native.conv1d(xs, w, b, 2), _native.conv1d(x, w, b, 2))


def test_validation_errors():
    x, w, b, r = draw(10, 4, 6, 3, seed=2)
    with pytest.raises(ValueError, match="channels"):
        _native.conv1d(x[:, :3], w, b)
    with pytest.raises(ValueError, match="dilation"):
        _native.conv1d(x, w, b, 0)
    with pytest.raises(ValueError, match="bias"):
        _native.conv1d(x, w, b[:5])
    with pytest.raises(ValueError, match="residual"):
        _native.conv1d(x, w, b, 1, r[:9])
    with pytest.raises(ValueError, match="Cout, Cin, K"):
        _native.conv1d(x, w[:, :, 0], b)
    with pytest.raises(ValueError, match="no taps"):
        _native.conv1d(x, w[:, :, :0], b)
    with pytest.raises(TypeError, match="float32"):
        _native.conv1d(x.astype(np.int32), w, b)
    # the C++ layer's own checks (second wall), called directly
    with pytest.raises(TypeError):
        _native._C.conv1d(x.astype(np.float64), w, b, 1, None, False)
    with pytest.raises(ValueError):
        _native._C.conv1d(x, w, b, -1, None, False)
    with pytest.raises(ValueError):
        _native._C.conv1d(x, w.transpose(0, 2, 1), b, 1, None, False)    # not C-contiguous
    with pytest.raises(ValueError, match="channels"), backend.use("cpp"):
        ops.causal_conv(x[:, :3], w, b)


# ---- transposed conv (upsampling) ----------------------------------------------------------------------------
def trans_truth_and_bound(x, w, b, r):
    """float64 value of code2wav.causal_trans_conv and the float32 bound: each output sums ceil(K/r)·Cin
    products (+1 for the bias)."""
    with backend.use("numpy"):
        y = ops.causal_trans_conv(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), r)
        mag = ops.causal_trans_conv(np.abs(x).astype(np.float64), np.abs(w).astype(np.float64),
                                    np.abs(b).astype(np.float64), r)
    n = -(-w.shape[2] // r) * w.shape[0] + 1
    return y, n * EPS * mag + 1e-30


# (samples, Cin, Cout, kernel K, stride r): Code2Wav's K = 2r blocks and K = r upsampling, K not a multiple of
# r (padded taps, an odd trim), Cout not a multiple of the micro-tile, a Cin over a reduction slice, short
# inputs (split by channel) and long ones (split by rows), down to a single input sample.
TRANS = [(10, 16, 8, 4, 2), (7, 5, 3, 5, 2), (33, 64, 40, 16, 8), (50, 96, 96, 10, 5), (20, 40, 20, 6, 3),
         (3, 4, 4, 7, 3), (1, 4, 4, 2, 2), (25, 33, 70, 2, 2), (450, 24, 36, 8, 4), (90, 520, 17, 3, 3)]


@pytest.mark.parametrize("shape", TRANS, ids=lambda s: "x".join(map(str, s)))
def test_trans_conv1d_matches_definition(isa, shape):
    n, cin, cout, k, r = shape
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal((n, cin), dtype=F32)
    w = (rng.standard_normal((cin, cout, k)) / np.sqrt(cin * k / r)).astype(F32)
    b = rng.standard_normal(cout, dtype=F32)
    truth, bound = trans_truth_and_bound(x, w, b, r)
    y = _native.trans_conv1d(x, w, b, r)
    assert y.shape == ((n + 1) * r - k, cout) and y.dtype == F32
    assert np.all(np.abs(y - truth) <= bound), float(np.max(np.abs(y - truth) / bound))
    assert np.all(np.abs(_native.trans_conv1d(x, w, b, r, naive=True) - truth) <= bound)
    truth0, bound0 = trans_truth_and_bound(x, w, np.zeros_like(b), r)
    assert np.all(np.abs(_native.trans_conv1d(x, w, None, r) - truth0) <= bound0)


def test_trans_conv_dispatch_and_errors():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((30, 40), dtype=F32)
    w = (rng.standard_normal((40, 48, 10)) * 0.1).astype(F32)
    b = rng.standard_normal(48, dtype=F32)
    with backend.use("cpp"):
        y = ops.causal_trans_conv(x, w, b, 5)
    assert np.array_equal(y, _native.trans_conv1d(x, w, b, 5))      # cpp backend runs the kernel
    with backend.use("numpy"):
        ref = ops.causal_trans_conv(x, w, b, 5)
    assert y.shape == ref.shape == (145, 48) and np.allclose(y, ref, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="channels"):
        _native.trans_conv1d(x[:, :39], w, b, 5)
    with pytest.raises(ValueError, match="stride"):
        _native.trans_conv1d(x, w, b, 11)                               # kernel shorter than the stride
    with pytest.raises(ValueError, match="stride"):
        _native.trans_conv1d(x, w, b, 0)
    with pytest.raises(ValueError, match="bias"):
        _native.trans_conv1d(x, w, b[:5], 5)
    with pytest.raises(TypeError):
        _native._C.trans_conv1d(x.astype(np.float64), w, b, 5, False)   # the C++ layer's own check


# ---- 3x3 stride-2 conv (the audio encoder's stem) ------------------------------------------------------------
# (B, H, W, Cin, Cout): the stem's 1-channel first conv, odd and even sizes (the padding on the far edge differs),
# tiny images, Cin·9 over a reduction slice (60·9 = 540), many rows split by rows, few split by channel.
CONV2D = [(2, 9, 7, 1, 20), (3, 40, 30, 1, 48), (2, 16, 11, 60, 40), (1, 1, 1, 3, 33), (1, 2, 3, 5, 7),
          (12, 32, 25, 16, 36)]


@pytest.mark.parametrize("shape", CONV2D, ids=lambda s: "x".join(map(str, s)))
def test_conv2d_s2_matches_definition(isa, shape):
    B, H, W, cin, cout = shape
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal((B, H, W, cin), dtype=F32)
    w = (rng.standard_normal((cout, cin, 3, 3)) / np.sqrt(9 * cin)).astype(F32)
    b = rng.standard_normal(cout, dtype=F32)
    with backend.use("numpy"):
        truth = ops.conv2d_stride2(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64))
        mag = ops.conv2d_stride2(np.abs(x).astype(np.float64), np.abs(w).astype(np.float64), np.abs(b).astype(np.float64))
    bound = (9 * cin + 1) * EPS * mag + 1e-30
    y = _native.conv2d_s2(x, w, b)
    assert y.shape == ((B, (H - 1) // 2 + 1, (W - 1) // 2 + 1, cout)) and y.dtype == F32
    assert np.all(np.abs(y - truth) <= bound), float(np.max(np.abs(y - truth) / bound))
    assert np.all(np.abs(_native.conv2d_s2(x, w, b, naive=True) - truth) <= bound)
    with backend.use("cpp"):
        assert np.array_equal(ops.conv2d_stride2(x, w, b), y)               # the encoder dispatches to the kernel


def test_conv2d_s2_errors():
    x = np.zeros((1, 6, 6, 4), F32)
    w = np.zeros((5, 4, 3, 3), F32)
    with pytest.raises(ValueError, match="channels"):
        _native.conv2d_s2(x[..., :3], w)
    with pytest.raises(ValueError, match="3, 3"):
        _native.conv2d_s2(x, w[:, :, :2])
    with pytest.raises(ValueError, match="bias"):
        _native.conv2d_s2(x, w, np.zeros(4, F32))
    with pytest.raises(ValueError, match="B, H, W, Cin"):
        _native.conv2d_s2(x[0], w)
    with pytest.raises(TypeError):
        _native._C.conv2d_s2(x.astype(np.float64), w, None, False)       # the C++ layer's own check
