"""The C++ elementwise kernels (csrc/elementwise.cpp) against their NumPy specifications, on every ISA.

gelu:       omniref.nn.gelu on the numpy backend (0.5x · (1 + erf(x/√2)) with scipy's float32 erf)
gelu_tanh:  omniref.nn.gelu_tanh (0.5x · (1 + tanh(√(2/π)(x + 0.044715x³))) with NumPy's float32 tanh)
snake_beta: omniref.nn.snake_beta (the specification) (x + sin²(x·e^α) / (e^β + 1e-9))
Both kernels evaluate erf / sin in double and round once, so they differ from the specification only by the
last-bit rounding of erf / sin; every other float32 step is the same. The bounds below are that: one float32
ulp of the transcendental, propagated through the formula (written out per test).
"""
import numpy as np
import pytest
from scipy import special

from omniref import _native, backend, nn
from omniref.backend import ops

pytestmark = pytest.mark.skipif(not _native.available(), reason="C++ extension not built")

EPS = float(np.finfo(np.float32).eps)  # 2^-23: one ulp of numbers in [1, 2)
F32 = np.float32


def gelu_spec(x):
    with backend.use("numpy"), np.errstate(invalid="ignore"):
        return nn.gelu(x)


def gelu_tanh_spec(x):
    with backend.use("numpy"), np.errstate(invalid="ignore", over="ignore"):
        return nn.gelu_tanh(x)


def snake_spec(x, alpha, beta):
    with backend.use("numpy"), np.errstate(invalid="ignore"):
        return nn.snake_beta(x, alpha, beta)


def wide_values(rng, n):
    """float32 values over many magnitudes, both signs, plus the special ones."""
    mags = 10.0 ** rng.uniform(-8, 2, n)
    x = (mags * rng.choice([-1.0, 1.0], n)).astype(F32)
    special_vals = [0.0, -0.0, 1e-45, -1e-45, 1e-38, 3.9, -3.9, 4.0, -4.0, 5.2, -5.2, 1.0, -1.0, 0.9999999,
                    1e30, -1e30, 3.4e38, -3.4e38, np.inf, -np.inf, np.nan]
    return np.concatenate([x, np.array(special_vals, F32)])


# ------------------------------------------------------------------------------------------------------ gelu
def test_gelu_matches_specification(isa):
    rng = np.random.default_rng(0)
    x = np.concatenate([wide_values(rng, 200_000), (rng.standard_normal(200_000) * 3).astype(F32)])
    out, ref = _native.gelu(x), gelu_spec(x)
    assert out.dtype == np.float32 and out.shape == x.shape
    assert np.array_equal(np.isnan(out), np.isnan(ref))                   # gelu(nan) = gelu(-inf) = nan
    ok = np.isfinite(ref)
    assert np.array_equal(out[~ok], ref[~ok], equal_nan=True)               # inf, nan where the spec has them
    # erf differs by at most one ulp of (1 + erf) in [0, 2]: 2^-23, times 0.5|x|, plus the last rounding.
    bound = 0.5 * np.abs(x[ok].astype(np.float64)) * EPS + np.abs(ref[ok].astype(np.float64)) * EPS
    assert np.all(np.abs(out[ok].astype(np.float64) - ref[ok]) <= bound)
    assert np.mean(out[ok] == ref[ok]) > 0.999                              # nearly always the same bits
    ends = _native.gelu(np.array([np.inf, -np.inf, np.nan, -0.0, 40.0, -40.0], F32))
    assert ends[0] == np.inf and np.all(np.isnan(ends[1:3]))                 # -inf -> -inf * 0 = nan
    assert ends[3] == 0 and np.signbit(ends[3]) and ends[4] == 40 and ends[5] == 0


def test_gelu_naive_equals_specification_bitwise(isa):
    """The naive loop is libm's double erf rounded once: exactly scipy's float32 erf, so exactly the spec."""
    x = wide_values(np.random.default_rng(1), 50_000)
    assert np.array_equal(_native.gelu(x, naive=True), gelu_spec(x), equal_nan=True)


def test_erf_accuracy_inside_gelu(isa):
    """Read erf back from gelu where 1 + erf is exact enough: for x > 0 the kernel's erf(x/√2) rounds to the
    float32 nearest the true value (float64 scipy) within one ulp, over the whole range [0, 4] and beyond."""
    x = np.linspace(0.0, 8.0, 400_001, dtype=F32)[1:]
    t = (x * F32(1 / np.sqrt(2.0))).astype(np.float64)
    true = special.erf(t)                                                    # float64
    g = _native.gelu(x).astype(np.float64)
    implied = g / (0.5 * x.astype(np.float64)) - 1.0                          # 1 + erf recovered, minus 1
    assert np.max(np.abs(implied - true)) <= 2 * EPS                          # <= 1 ulp of 1 + erf, + rounding


# ------------------------------------------------------------------------------------------------- gelu_tanh
def test_gelu_tanh_is_libm_tanh_rounded_once(isa):
    """The kernel's tanh (expm1 polynomial in double, csrc/elementwise_kernels.inc) gives the same float32 as
    libm's double tanh rounded once (the naive loop): both are within 5e-16 of the truth, so they can only
    differ where the exact value sits at a float32 rounding tie."""
    rng = np.random.default_rng(5)
    x = np.concatenate([wide_values(rng, 200_000), (rng.standard_normal(200_000) * 3).astype(F32)])
    out, naive = _native.gelu_tanh(x), _native.gelu_tanh(x, naive=True)
    assert np.array_equal(np.isnan(out), np.isnan(naive))
    ok = np.isfinite(naive)
    assert np.array_equal(out[~ok], naive[~ok], equal_nan=True)
    assert np.mean(out[ok] == naive[ok]) > 0.99999
    assert np.all(np.abs(out[ok].astype(np.float64) - naive[ok]) <= np.abs(naive[ok].astype(np.float64)) * EPS)


def test_gelu_tanh_matches_specification(isa):
    rng = np.random.default_rng(6)
    x = np.concatenate([wide_values(rng, 200_000), (rng.standard_normal(200_000) * 3).astype(F32)])
    out, ref = _native.gelu_tanh(x), gelu_tanh_spec(x)
    assert out.dtype == np.float32 and out.shape == x.shape
    assert np.array_equal(np.isnan(out), np.isnan(ref))                   # nan, and -inf * 0 at x = -inf
    ok = np.isfinite(ref)
    assert np.array_equal(out[~ok], ref[~ok], equal_nan=True)
    # NumPy's float32 tanh is not correctly rounded (it differs from libm's rounded double in ~1 of 5 values
    # here); allow 2 ulp of (1 + tanh) in [0, 2], times 0.5|x|, plus the last rounding.
    bound = 0.5 * np.abs(x[ok].astype(np.float64)) * 2 * EPS + np.abs(ref[ok].astype(np.float64)) * EPS
    assert np.all(np.abs(out[ok].astype(np.float64) - ref[ok]) <= bound)
    ends = _native.gelu_tanh(np.array([np.inf, -np.inf, np.nan, -0.0, 40.0, -40.0, 1e30], F32))
    assert ends[0] == np.inf and np.all(np.isnan(ends[1:3]))
    assert ends[3] == 0 and np.signbit(ends[3]) and ends[4] == 40 and ends[5] == 0 and ends[6] == F32(1e30)


def test_gelu_tanh_dispatch():
    x = np.random.default_rng(7).standard_normal((4, 9)).astype(F32)
    with backend.use("cpp"):
        assert np.array_equal(ops.gelu_tanh(x), _native.gelu_tanh(x))
        x64 = x.astype(np.float64)
        assert np.array_equal(ops.gelu_tanh(x64), gelu_tanh_spec(x64))       # float64 keeps NumPy's semantics
    with backend.use("numpy"):
        assert np.array_equal(ops.gelu_tanh(x), gelu_tanh_spec(x))


@pytest.mark.parametrize("shape", [(0,), (1,), (15,), (17,), (16385,), (3, 7), (2, 3, 33), (5, 1, 16384)])
def test_gelu_shapes(isa, shape):
    rng = np.random.default_rng(sum(shape) + len(shape))
    x = (rng.standard_normal(shape) * 4).astype(F32)
    out = _native.gelu(x)
    assert out.shape == x.shape
    np.testing.assert_allclose(out, gelu_spec(x), rtol=0, atol=4 * EPS * (1 + float(np.abs(x).max(initial=0))))


def test_gelu_dispatch_and_dtypes():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 9)).astype(F32)
    with backend.use("cpp"):
        assert np.array_equal(ops.gelu(x), _native.gelu(x))
        x64 = x.astype(np.float64)
        y64 = ops.gelu(x64)                                                   # float64 keeps NumPy's semantics
        assert y64.dtype == np.float64 and np.array_equal(y64, gelu_spec(x64))
        assert np.array_equal(ops.gelu(x.T), _native.gelu(np.ascontiguousarray(x.T)))  # non-contiguous input
        s = ops.gelu(F32(1.5))
        assert np.ndim(s) == 0 and np.isclose(float(s), 1.5 * 0.5 * (1 + special.erf(1.5 / np.sqrt(2))))
        with backend.validate() as log:
            ops.gelu(x)
        assert log and log[-1].op == "gelu" and log[-1].max_rel < 1e-6


def test_gelu_validation_errors():
    with pytest.raises(TypeError, match="float32"):
        _native.gelu(np.arange(5))                                           # integers are not activations
    with pytest.raises(TypeError, match="float32"):
        _native.gelu(np.ones(3, np.complex64))
    with pytest.raises(TypeError, match="float32"):
        _native._C.gelu(np.ones(3), False)                                   # the C++ wall: float64
    with pytest.raises(ValueError, match="contiguous"):
        _native._C.gelu(np.ones((4, 4), F32).T, False)


# ------------------------------------------------------------------------------------------------ snake_beta
def snake_bound(x, alpha, beta):
    """|kernel - spec| bound: sin differs by <= 1 ulp (relative 2^-23 ... 2^-24), so sin² by ~2 ulps, then
    the two roundings of · inv_b and + x."""
    a = np.exp(alpha.astype(np.float64))
    inv_b = 1 / (np.exp(beta.astype(np.float64)) + 1e-9)
    s2 = np.sin(x.astype(np.float64) * a) ** 2 * inv_b
    return 3 * EPS * s2 + EPS * (np.abs(x) + s2)


def test_snake_beta_matches_specification(isa):
    rng = np.random.default_rng(4)
    C = 37
    x = (rng.standard_normal((2001, C)) * rng.choice([0.01, 1, 10, 1000], (2001, 1))).astype(F32)
    alpha, beta = (rng.standard_normal(C) * 0.7).astype(F32), (rng.standard_normal(C) * 0.7).astype(F32)
    out, ref = _native.snake_beta(x, alpha, beta), snake_spec(x, alpha, beta)
    assert out.dtype == np.float32 and out.shape == x.shape
    assert np.all(np.abs(out.astype(np.float64) - ref) <= snake_bound(x, alpha, beta))
    # np.sin (float32) is itself off by one ulp in ~15% of cases; the naive loop (libm's double sin, rounded
    # once) is the correctly rounded one, and the SIMD loop agrees with it nearly always bit for bit

    assert np.mean(out == _native.snake_beta(x, alpha, beta, naive=True)) > 0.999


def test_snake_beta_large_and_special_arguments(isa):
    """|x·e^α| >= 1e6 leaves the fast range reduction: those elements are redone by libm, so they equal the
    naive loop exactly; inf and nan give nan like np.sin."""
    x = wide_values(np.random.default_rng(5), 3000)
    x = np.concatenate([x, np.array([1e6, -1e6, 999_999.94, 1.5e7, 2.0 ** 24, 1e10], F32)])
    x = x[: len(x) // 8 * 8].reshape(-1, 8)
    alpha = np.array([0, 0.5, -0.5, 2, -3, 0, 1, 0], F32)
    beta = np.zeros(8, F32)
    out = _native.snake_beta(x, alpha, beta)
    naive = _native.snake_beta(x, alpha, beta, naive=True)
    ref = snake_spec(x, alpha, beta)
    assert np.array_equal(np.isnan(out), np.isnan(ref))
    big = np.abs(x * np.exp(alpha)) >= 1e6
    assert np.array_equal(out[big], naive[big], equal_nan=True)
    ok = ~np.isnan(ref)
    assert np.all(np.abs(out[ok].astype(np.float64) - ref[ok]) <= snake_bound(x, alpha, beta)[ok])


@pytest.mark.parametrize("shape", [(1, 1), (0, 5), (3, 1), (17, 15), (5, 16), (1, 100_003), (2, 7, 9)])
def test_snake_beta_shapes(isa, shape):
    rng = np.random.default_rng(sum(shape))
    C = shape[-1]
    x = (rng.standard_normal(shape) * 3).astype(F32)
    alpha, beta = rng.standard_normal(C).astype(F32), rng.standard_normal(C).astype(F32)
    out = _native.snake_beta(x, alpha, beta)
    assert out.shape == x.shape
    assert np.all(np.abs(out.astype(np.float64) - snake_spec(x, alpha, beta)) <= snake_bound(x, alpha, beta))


def test_snake_beta_dispatch_and_dtypes():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((50, 6)).astype(F32)
    alpha, beta = rng.standard_normal(6).astype(F32), rng.standard_normal(6).astype(F32)
    x_in = x.copy()
    with backend.use("cpp"):
        assert np.array_equal(ops.snake_beta(x, alpha, beta), _native.snake_beta(x, alpha, beta))
        assert np.array_equal(x, x_in)                                        # the input is not modified
        y64 = ops.snake_beta(x.astype(np.float64), alpha.astype(np.float64), beta.astype(np.float64))
        assert y64.dtype == np.float64                                        # float64 keeps NumPy's semantics
        ref64 = x + np.sin(x * np.exp(alpha.astype(np.float64))) ** 2 / (np.exp(beta.astype(np.float64)) + 1e-9)
        np.testing.assert_allclose(y64, ref64, rtol=1e-12)
        with backend.validate() as log:
            ops.snake_beta(x, alpha, beta)
        assert log and log[-1].op == "snake_beta" and log[-1].max_rel < 1e-6
    with backend.use("numpy"):
        assert np.array_equal(ops.snake_beta(x, alpha, beta), nn.snake_beta(x, alpha, beta))


def test_snake_beta_validation_errors():
    x = np.ones((4, 3), F32)
    with pytest.raises(ValueError, match=r"alpha \(2,\).*\(3,\)"):
        _native.snake_beta(x, np.ones(2, F32), np.ones(3, F32))
    with pytest.raises(ValueError, match="channels last"):
        _native.snake_beta(np.float32(1.0), np.ones(1, F32), np.ones(1, F32))
    with pytest.raises(TypeError, match="float32"):
        _native.snake_beta(np.ones((4, 3), np.int32), np.ones(3, F32), np.ones(3, F32))
    with pytest.raises(ValueError, match="C=3 channels"):                     # the C++ wall
        _native._C.snake_beta(x, np.ones(2, F32), np.ones(3, F32), False)
    with pytest.raises(ValueError, match="dimensions"):
        _native._C.snake_beta(np.ones(3, F32), np.ones(3, F32), np.ones(3, F32), False)
