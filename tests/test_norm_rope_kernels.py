"""C++ RMSNorm / rotary kernels (csrc/norm_rope.cpp) and the in-place KV-cache views of the attention kernel,
held to the NumPy definitions in omniref/nn.py (float32 noise) and to float64 maths."""
import numpy as np
import pytest

from omniref.backend import ops
from omniref import _native, backend, nn
from omniref.decoder import KVCache

pytestmark = pytest.mark.skipif(not _native.available(), reason="C++ extension not built")


def _rand(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _numpy(fn, *args, **kw):
    with backend.use("numpy"):
        return fn(*args, **kw)


@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (5, 2, 33), (64, 128), (300, 129), (1, 4096)])
@pytest.mark.parametrize("naive", [False, True])
def test_rms_norm_matches_numpy_and_float64(shape, naive):
    rng = np.random.default_rng(sum(shape))
    x, w = _rand(rng, *shape, scale=3.0), _rand(rng, shape[-1])
    y = _native.rms_norm(x, w, 1e-6, naive=naive)
    assert y.shape == x.shape and y.dtype == np.float32
    ref = _numpy(nn.rms_norm, x, w, 1e-6)
    np.testing.assert_allclose(y, ref, rtol=2e-6, atol=2e-6 * np.abs(ref).max())
    x64 = x.astype(np.float64)
    exact = w * x64 / np.sqrt(np.mean(x64 * x64, axis=-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(y, exact, rtol=1e-6, atol=1e-6 * np.abs(exact).max())


def test_rms_norm_eps_dominates_zero_rows():
    x = np.zeros((2, 8), np.float32)
    x[1] = 1e-4
    y = _native.rms_norm(x, np.ones(8, np.float32), 0.1)
    np.testing.assert_array_equal(y[0], 0.0)
    np.testing.assert_allclose(y[1], 1e-4 / np.sqrt(1e-8 + 0.1), rtol=1e-6)


def _rot64(x, cos, sin):
    x = x.astype(np.float64)
    h = x.shape[-1] // 2
    return x * cos + np.concatenate([-x[..., h:], x[..., :h]], axis=-1) * sin


@pytest.mark.parametrize("B,L,D", [(1, 1, 2), (3, 5, 6), (4, 17, 64), (2, 9, 7), (16, 300, 128)])
@pytest.mark.parametrize("naive", [False, True])
def test_rotary_matches_numpy_bit_for_bit(B, L, D, naive):
    rng = np.random.default_rng(B * 1000 + L + D)
    ang = rng.uniform(0, 100, (L, D))
    cos, sin = np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)
    x = _rand(rng, B, L, D, scale=2.0)
    y = _native.rotary(x, cos, sin, naive=naive)
    # same float32 operations in the same order, no FMA: identical to the NumPy definition
    np.testing.assert_array_equal(y, _numpy(nn.apply_rotary, x, cos, sin))
    np.testing.assert_allclose(y, _rot64(x, cos, sin), rtol=1e-5, atol=1e-5)


def test_rotary_reads_strided_views_in_place():
    rng = np.random.default_rng(1)
    L, nh, D = 11, 6, 10
    q = _rand(rng, L, nh, D)                         # [L, nh, D] as the projection gives it
    ang = rng.uniform(0, 10, (L, D))
    cos, sin = np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)
    view = q.transpose(1, 0, 2)                      # [nh, L, D], not contiguous
    assert not view.flags.c_contiguous
    y = ops.apply_rotary(view, cos, sin)              # cpp backend by default
    assert y.flags.c_contiguous and y.shape == (nh, L, D)
    np.testing.assert_array_equal(y, _numpy(nn.apply_rotary, np.ascontiguousarray(view), cos, sin))
    # 2-D and 4-D inputs too
    np.testing.assert_array_equal(_native.rotary(q[:, 0], cos, sin), _numpy(nn.apply_rotary, q[:, 0], cos, sin))
    x4 = _rand(rng, 2, 3, L, D)
    np.testing.assert_array_equal(_native.rotary(x4, cos, sin), _numpy(nn.apply_rotary, x4, cos, sin))


def test_nn_dispatch_and_fallbacks():
    rng = np.random.default_rng(2)
    x, w = _rand(rng, 4, 3, 8), _rand(rng, 8)
    with backend.use("cpp"):
        np.testing.assert_allclose(ops.rms_norm(x, w, 1e-5), _numpy(nn.rms_norm, x, w, 1e-5), rtol=2e-6, atol=1e-6)
        # float64 and broadcast cos/sin keep NumPy's semantics exactly (the definition runs)
        x64 = x.astype(np.float64)
        assert ops.rms_norm(x64, w, 1e-5).dtype == np.float64
        cos1 = np.cos(rng.uniform(size=(1, 8))).astype(np.float32)     # [1, D] broadcasts over L
        out = ops.apply_rotary(x, cos1, cos1)
        np.testing.assert_array_equal(out, _numpy(nn.apply_rotary, x, cos1, cos1))
        with backend.validate() as log:
            n0 = len(log)
            ops.rms_norm(x, w, 1e-5)
            ops.apply_rotary(x, cos1.repeat(3, 0), cos1.repeat(3, 0))
            assert [r.op for r in log[n0:]] == ["rms_norm", "apply_rotary"]
            assert max(r.max_rel for r in log[n0:]) < 1e-6


def test_validation_errors():
    x = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"weight must have shape \(4,\)"):
        _native.rms_norm(x, np.ones(5, np.float32), 1e-6)
    with pytest.raises(ValueError, match="eps must be finite"):
        _native.rms_norm(x, np.ones(4, np.float32), float("nan"))
    with pytest.raises(ValueError, match=r"must be \[\.\.\., H\]"):
        _native.rms_norm(np.float32(1.0), np.ones(1, np.float32), 1e-6)
    with pytest.raises(TypeError, match="float32"):
        _native.rms_norm(np.ones((2, 4), np.int32), np.ones(4, np.float32), 1e-6)
    with pytest.raises(ValueError, match=r"cos and sin of shape \(3, 4\)"):
        _native.rotary(x, np.ones((3, 5), np.float32), np.ones((3, 4), np.float32))
    with pytest.raises(ValueError, match=r"must be \[\.\.\., L, D\]"):
        _native.rotary(np.ones(4, np.float32), np.ones((1, 4), np.float32), np.ones((1, 4), np.float32))
    # the second wall, in C++: wrong rank / stride go to ValueError, not out-of-bounds reads
    C = _native._C
    with pytest.raises(ValueError):
        C.rms_norm(np.ones((2, 2, 2), np.float32), np.ones(2, np.float32), 1e-6)
    with pytest.raises(ValueError):
        C.rotary(np.ones((2, 3, 8), np.float32)[:, :, ::2], np.ones((3, 4), np.float32), np.ones((3, 4), np.float32))


@pytest.mark.parametrize("Hq,Hkv,Lq,D", [(4, 2, 1, 16), (6, 3, 7, 10), (8, 8, 33, 64)])
def test_attention_reads_kv_cache_views_in_place(Hq, Hkv, Lq, D):
    """The cache's [Hkv, capacity, D] buffers sliced to [:, :P] go to the kernel without a copy."""
    rng = np.random.default_rng(Hq + Lq + D)
    cache = KVCache()
    k, v = cache.append(0, _rand(rng, Hkv, 20, D), _rand(rng, Hkv, 20, D))
    k, v = cache.append(0, _rand(rng, Hkv, Lq, D), _rand(rng, Hkv, Lq, D))       # [Hkv, 20 + Lq, D] views
    assert Hkv == 1 or not k.flags.c_contiguous
    q = _rand(rng, Hq, Lq, D)
    ref = nn.attention(q, np.ascontiguousarray(k), np.ascontiguousarray(v), causal=True)
    for naive in (False, True):
        out = _native.attention(q, k, v, causal=True, naive=naive)
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    with backend.use("numpy"):
        np.testing.assert_allclose(ops.attention(q, k, v, causal=True), ref, rtol=1e-5, atol=1e-5)


def test_attention_rejects_overlapping_or_scattered_kv():
    q = np.ones((2, 1, 4), np.float32)
    k = np.ones((2, 3, 4), np.float32)
    C = _native._C
    overlap = np.lib.stride_tricks.as_strided(np.ones(64, np.float32), (2, 3, 4), (4 * 4, 4 * 4, 4))
    with pytest.raises(ValueError, match="must not overlap"):
        C.attention(q, overlap, k, False, 0, None, None, 0.5, False)
    scattered = np.ones((2, 3, 8), np.float32)[:, :, ::2]
    with pytest.raises(ValueError, match="C-contiguous"):
        C.attention(q, scattered, k, False, 0, None, None, 0.5, False)
    # the Python wrapper copies such arrays instead, so the result is still right
    np.testing.assert_allclose(_native.attention(q, scattered, k), nn.attention(q, k, k), rtol=1e-6)


def test_empty_shapes():
    z = np.zeros
    assert _native.rms_norm(z((3, 0), np.float32), z(0, np.float32), 1e-6).shape == (3, 0)
    assert _native.rms_norm(z((0, 4), np.float32), np.ones(4, np.float32), 1e-6).shape == (0, 4)
    assert _native.rotary(z((2, 0, 4), np.float32), z((0, 4), np.float32), z((0, 4), np.float32)).shape == (2, 0, 4)
    assert _native.rotary(z((0, 3, 4), np.float32), z((3, 4), np.float32), z((3, 4), np.float32)).shape == (0, 3, 4)
