"""ops.linear_many (decode's q, k, v projections in one kernel call) gives exactly one ops.linear per weight,
on both backends, for float32 and bf16 weights, one token (the fused kernel) and several (one call each)."""
import numpy as np
import pytest

from omniref import _native, backend, nn
from omniref.backend import ops
from omniref.weights import BF16Weight

needs_cpp = pytest.mark.skipif(not _native.available(), reason="C++ extension not built")


def _weights(bf16: bool, K: int = 200):
    rng = np.random.default_rng(0)
    ws = [rng.standard_normal((n, K), dtype=np.float32) for n in (130, 64, 1, 77)]   # ragged 64-row blocks
    return [BF16Weight.from_float32(w) for w in ws] if bf16 else ws


def test_spec_is_one_linear_per_weight():
    x = np.random.default_rng(1).standard_normal((3, 200), dtype=np.float32)
    ws = _weights(False)
    for y, w in zip(nn.linear_many(x, ws), ws):
        np.testing.assert_array_equal(y, x @ w.T)


@needs_cpp
@pytest.mark.parametrize("bf16", [False, True])
@pytest.mark.parametrize("M", [1, 3, 20])
def test_cpp_same_bits_as_separate_linears(bf16, M):
    x = np.random.default_rng(2).standard_normal((M, 200), dtype=np.float32)
    ws = _weights(bf16)
    with backend.use("cpp"):
        fused = ops.linear_many(x, ws)
        alone = [ops.linear(x, w) for w in ws]
    assert [y.shape for y in fused] == [(M, w.shape[0]) for w in ws]
    for a, b in zip(fused, alone):
        np.testing.assert_array_equal(a, b)                       # same bits, not a tolerance
    ref = nn.linear_many(x, [np.asarray(w) for w in ws])          # and the specification's values
    for a, r in zip(fused, ref):
        np.testing.assert_allclose(a, r, rtol=2e-5, atol=2e-5)


@needs_cpp
def test_cpp_kernel_checks_its_input():
    x = np.ones((1, 8), np.float32)
    with pytest.raises(ValueError, match="disagree on the input size K"):
        _native._C.linear_many(x, [np.ones((4, 8), np.float32), np.ones((4, 9), np.float32)])
    with pytest.raises(ValueError, match="all float32 or all bf16"):
        _native._C.linear_many(x, [np.ones((4, 8), np.float32), np.ones((4, 8), np.uint16)])
    with pytest.raises(ValueError, match="one token"):
        _native._C.linear_many(np.ones((2, 8), np.float32), [np.ones((4, 8), np.float32)])
    mixed = [np.ones((4, 8), np.float32), BF16Weight.from_float32(np.ones((4, 8), np.float32))]
    for y in _native.linear_many(x, mixed):                       # mixed types: one linear call each
        np.testing.assert_array_equal(y, np.full((1, 4), 8, np.float32))
