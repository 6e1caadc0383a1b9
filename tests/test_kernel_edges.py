"""The C++ kernels on the inputs that used to crash them or give a wrong answer (issue 12, item 5).

* NaN and inf planted in every operand travel exactly as in the NumPy specification (omniref.nn): the
  non-finite mask (NaN, +inf, -inf) is equal element for element, and the finite rest agrees to fp32 accuracy.
* Integer arguments of any size are refused with an InputError (a ValueError) naming them, or, where a huge value means the
  same as a smaller one (a dilation or a sliding window longer than the input), give that result; no index
  arithmetic overflows (a huge dilation used to segfault).
* Empty dimensions give the mathematical result: an empty sum is the bias (conv with no input channels used
  to return uninitialised memory), zero tokens give empty outputs.
* The packed-weight cache only keeps weights that provably cannot change.
.ci/sanitizers.sh runs this file under AddressSanitizer + UndefinedBehaviorSanitizer.
"""
import mmap

import numpy as np
import pytest

from omniref import _native, nn
from omniref.errors import InputError

pytestmark = [pytest.mark.skipif(not _native.available(), reason="C++ extension not built"),
              pytest.mark.filterwarnings("ignore::RuntimeWarning")]  # the NumPy references warn on NaN / inf

RTOL = 2e-5  # relative to max |finite reference|: the finite part of a result with planted non-finite values


def assert_same_nonfinite(out, ref):
    """NaN where the reference is NaN, +-inf where it is +-inf, and fp32-close everywhere else."""
    out, ref = np.asarray(out), np.asarray(ref, dtype=np.float32)
    assert out.shape == ref.shape
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref), err_msg="NaN mask")
    np.testing.assert_array_equal(np.isposinf(out), np.isposinf(ref), err_msg="+inf mask")
    np.testing.assert_array_equal(np.isneginf(out), np.isneginf(ref), err_msg="-inf mask")
    fin = np.isfinite(ref)
    if fin.any():
        scale = max(float(np.max(np.abs(ref[fin]))), 1e-30)
        assert float(np.max(np.abs(out[fin] - ref[fin]))) <= RTOL * scale


def planted(rng, shape, values=(np.nan, np.inf, -np.inf), count=3):
    """Standard normal float32 of `shape` with `count` of each non-finite value at random places."""
    a = rng.standard_normal(shape).astype(np.float32)
    flat = a.reshape(-1)
    for v in values:
        flat[rng.integers(0, flat.size, count)] = v
    return a


# ------------------------------------------------------------------------------------------- NaN and inf
@pytest.mark.parametrize("M", [1, 3, 20])
@pytest.mark.parametrize("where", ["x", "weight", "bias"])
def test_linear_nonfinite(isa, M, where):
    rng = np.random.default_rng(M)
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((M, 70), (33, 70), (33,)))
    if where == "x":
        x = planted(rng, x.shape, count=1)
    elif where == "weight":
        w = planted(rng, w.shape, count=2)
    else:
        b = planted(rng, b.shape, count=1)
    ref = nn.linear(x, w, b)
    assert_same_nonfinite(_native.linear(x, w, b), ref)
    assert_same_nonfinite(_native.linear(x, w, b, naive=True), ref)
    w.setflags(write=False)                                      # the cached pre-packed GEMM path
    assert_same_nonfinite(_native.linear(x, w, b), ref)
    wb = _native.BF16Weight.from_float32(w)
    assert_same_nonfinite(_native.linear(x, wb, b), nn.linear(x, wb.to_float32(), b))


ATTENTION_CASES = [  # Hq, Hkv, Lq, Lk, causal, window, segments, mask
    (4, 2, 1, 40, True, None, False, False),     # decode: one query row per head
    (8, 2, 1, 40, True, None, False, False),     # decode, GQA group of 4: the block's rows in vector lanes
    (8, 2, 3, 30, False, None, False, True),     # 3 new tokens x 4 heads in one block, explicit mask
    (4, 2, 37, 37, True, None, False, False),    # prefill: several query blocks, skipped key tiles
    (4, 2, 130, 130, True, None, False, False),  # prefill over several key tiles: whole tiles skipped
    (2, 1, 70, 70, False, 9, False, False),      # sliding window
    (2, 2, 50, 50, False, None, True, False),    # block-diagonal segments
    (2, 1, 6, 30, False, None, False, True),     # explicit mask, some rows see nothing
]


@pytest.mark.parametrize("case", ATTENTION_CASES)
@pytest.mark.parametrize("where", ["q", "k", "v", "k_neg"])
def test_attention_nonfinite(isa, case, where):
    Hq, Hkv, Lq, Lk, causal, window, seg, mask = case
    rng = np.random.default_rng(Lq * 7 + Lk)
    D = 16
    q, k, v = (rng.standard_normal(s).astype(np.float32) for s in ((Hq, Lq, D), (Hkv, Lk, D), (Hkv, Lk, D)))
    if where == "q":
        q = planted(rng, q.shape, values=(np.nan,), count=2)
    elif where == "k":
        k = planted(rng, k.shape, count=2)
    elif where == "k_neg":                                       # a visible score of -inf: weight 0, no NaN
        k[0, Lk // 2] = -np.inf * np.sign(q[0, -1])
    else:
        v = planted(rng, v.shape, count=2)
    segments = np.repeat(np.arange(5), 10)[:Lq] if seg else None
    m = None
    if mask:
        m = rng.random((Lq, Lk)) < 0.3
        m[2] = False                                            # a row that sees no key at all
    kw = dict(causal=causal, sliding_window=window, segments=segments, mask=m)
    ref = nn.attention(q, k, v, **kw)
    args = (q, k, v, causal, window, segments, m)
    assert_same_nonfinite(_native.attention(*args), ref)
    assert_same_nonfinite(_native.attention(*args, naive=True), ref)


def test_attention_issue_examples(isa):
    """A NaN in q and an inf in k used to come out as 0 and as finite values; NumPy gives NaN."""
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 4, 8)).astype(np.float32) for _ in range(3))
    q[0, 1, 2] = np.nan
    assert np.isnan(_native.attention(q, k, v, True)[0, 1]).all()
    q[0, 1, 2] = 1.0
    k[0, 0, 0] = np.inf
    assert_same_nonfinite(_native.attention(q, k, v, True), nn.attention(q, k, v, causal=True))


@pytest.mark.parametrize("where", ["x", "gate", "up", "down", "mix"])
@pytest.mark.parametrize("L", [1, 3, 30])
def test_moe_nonfinite(isa, where, L):
    """The fused MoE against nn.moe_experts (silu(x W_gᵀ) ⊙ x W_uᵀ, then W_dᵀ, mixed in ascending expert
    order); silu(-inf) = -inf · 0 = NaN, as expit gives."""
    rng = np.random.default_rng(L)
    H, I, E, k = 24, 20, 4, 2
    x = rng.standard_normal((L, H)).astype(np.float32)
    chosen = np.stack([rng.permutation(E)[:k] for _ in range(L)])
    mix = rng.random((L, k)).astype(np.float32)
    experts = {e: tuple(rng.standard_normal(s).astype(np.float32) for s in ((I, H), (I, H), (H, I)))
               for e in range(E)}
    if where == "x":
        x = planted(rng, x.shape, count=1)
    elif where == "mix":
        mix = planted(rng, mix.shape, values=(np.nan, np.inf), count=1)
    else:
        i = ("gate", "up", "down").index(where)
        for e in range(E):
            t = list(experts[e])
            t[i] = planted(rng, t[i].shape, count=2)
            experts[e] = tuple(t)
    ref = nn.moe_experts(x, chosen, mix, experts)
    assert_same_nonfinite(_native.moe(x, chosen, mix, experts), ref)
    assert_same_nonfinite(_native.moe(x, chosen, mix, experts, naive=True), ref)


def test_moe_silu_of_minus_inf_is_nan(isa):
    """silu(-inf) = -inf · expit(-inf) = -inf · 0 = NaN in NumPy; the kernel's clamped exp used to give
    -inf · (tiny > 0) = -inf, so the expert's output came out -inf instead of NaN."""
    for L in (1, 12):                                            # the dot-product path and the GEMM path
        x = np.ones((L, 8), np.float32)
        gate = np.zeros((8, 8), np.float32)
        gate[0, 0] = -np.inf
        experts = {0: (gate, np.ones((8, 8), np.float32), np.ones((8, 8), np.float32))}
        ch, mix = np.zeros((L, 1), np.int64), np.ones((L, 1), np.float32)
        for naive in (False, True):
            assert np.isnan(_native.moe(x, ch, mix, experts, naive=naive)).all()


def test_norm_rope_activations_nonfinite(isa):
    rng = np.random.default_rng(5)
    x = planted(rng, (9, 40), count=2)
    w = rng.standard_normal(40).astype(np.float32)
    x[4, 7] = 3e19                                               # its square overflows float32: NumPy's norm is inf
    x[5] = 1e18                                                  # squares finite, their float32 sum is not
    assert_same_nonfinite(_native.rms_norm(x, w, 1e-6), nn.rms_norm(x, w, 1e-6))
    xr = planted(rng, (3, 9, 16), count=2)
    cos, sin = rng.standard_normal((9, 16)).astype(np.float32), rng.standard_normal((9, 16)).astype(np.float32)
    assert_same_nonfinite(_native.rotary(xr, cos, sin), nn.apply_rotary(xr, cos, sin))
    xg = planted(rng, (7, 300), count=5)
    assert_same_nonfinite(_native.gelu(xg), nn.gelu(xg))
    xs = planted(rng, (50, 24), count=3)
    alpha, beta = rng.standard_normal(24).astype(np.float32), rng.standard_normal(24).astype(np.float32)
    assert_same_nonfinite(_native.snake_beta(xs, alpha, beta), nn.snake_beta(xs, alpha, beta))


@pytest.mark.parametrize("M", [5, 600])  # short inputs split channels, long ones rows (csrc/conv_kernels.inc)
@pytest.mark.parametrize("where", ["x", "weight"])
def test_convs_nonfinite(isa, M, where):
    """Including an inf weight at the causal conv's padding: the NumPy tap loop never multiplies the padding,
    so there the output stays inf where a padded GEMM would make 0 · inf = NaN."""
    rng = np.random.default_rng(M)
    Cin, Cout = 6, 40
    x = rng.standard_normal((M, Cin)).astype(np.float32)
    w = rng.standard_normal((Cout, Cin, 3)).astype(np.float32)
    b = rng.standard_normal(Cout).astype(np.float32)
    if where == "x":
        x = planted(rng, x.shape, count=1)
    else:
        w[3, 2, 0] = np.inf                                      # a tap that reads the padding for t < 2d
        w[5, 1, 2] = np.nan
    for d in (1, 3):
        ref = nn.causal_conv(x, w, b, d)
        assert_same_nonfinite(_native.conv1d(x, w, b, d), ref)
        assert_same_nonfinite(_native.conv1d(x, w, b, d, naive=True), ref)
    wt = planted(rng, (Cin, Cout, 8), count=1) if where == "weight" else rng.standard_normal((Cin, Cout, 8))
    wt = wt.astype(np.float32)
    assert_same_nonfinite(_native.trans_conv1d(x, wt, b, 4), nn.causal_trans_conv(x, wt, b, 4))
    x2 = planted(rng, (1, 9, 7, Cin), count=1) if where == "x" else rng.standard_normal((1, 9, 7, Cin))
    x2 = x2.astype(np.float32)
    w2 = planted(rng, (Cout, Cin, 3, 3), count=1) if where == "weight" else rng.standard_normal((Cout, Cin, 3, 3))
    w2 = w2.astype(np.float32)
    assert_same_nonfinite(_native.conv2d_s2(x2, w2, b), nn.conv2d_stride2(x2, w2, b))


# ------------------------------------------------------------------------------------- integer arguments
def test_conv1d_huge_dilation_is_the_input_length(isa):
    """d·(K-1) used to overflow int64 (only `s >= 0` was checked) and read far outside x: a segfault."""
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((50, 8)).astype(np.float32), rng.standard_normal((16, 8, 3)).astype(np.float32)
    want = _native.conv1d(x, w, None, 50)          # taps 0 and 1 both read the zero padding only
    for d in (2**63 - 2**39, 2**62, 2**70, np.int64(2**62), 51, 10**30):
        np.testing.assert_array_equal(_native.conv1d(x, w, None, d), want)
        np.testing.assert_array_equal(_native.conv1d(x, w, None, d, naive=True),
                                      _native.conv1d(x, w, None, 50, naive=True))


def test_attention_huge_window_is_no_window(isa):
    rng = np.random.default_rng(2)
    q, k, v = (rng.standard_normal((2, 9, 8)).astype(np.float32) for _ in range(3))
    want = _native.attention(q, k, v, True)
    for win in (9, 10, 2**62, 2**70):
        np.testing.assert_array_equal(_native.attention(q, k, v, True, win), want)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "3", None, float("nan"), float("inf"), -2**70])
def test_integer_arguments_refused(bad):
    x = np.ones((10, 4), np.float32)
    with pytest.raises(InputError, match="dilation"):
        _native.conv1d(x, np.ones((3, 4, 2), np.float32), None, bad)
    with pytest.raises(InputError, match="stride"):
        _native.trans_conv1d(x, np.ones((4, 3, 4), np.float32), None, bad)
    if bad is not None:                                          # sliding_window=None means no window
        q = np.ones((1, 3, 4), np.float32)
        with pytest.raises(InputError, match="sliding_window"):
            _native.attention(q, q, q, False, bad)


@pytest.mark.parametrize("bad", [0, -3, 1025, 10**6, 2**70, 1.5, "2"])
def test_thread_count_bounded(bad):
    """A huge thread count used to be passed to OpenMP as it was (a million threads on the next call)."""
    before = _native.max_threads()
    with pytest.raises(InputError, match="thread count"):
        _native.set_threads(bad)
    with pytest.raises((ValueError, TypeError)):                # the C++ wall, for a caller that skips ours
        _native._C.set_threads(bad if isinstance(bad, int) and abs(bad) < 2**31 else 0)
    assert _native.max_threads() == before


def test_stride_longer_than_the_kernel_refused():
    with pytest.raises(ValueError, match="stride"):
        _native.trans_conv1d(np.ones((10, 4), np.float32), np.ones((4, 3, 4), np.float32), None, 2**70)


def test_dimensions_past_the_index_range_refused():
    """Empty arrays can have any dimension; the kernels index with int64 and refuse dimensions >= 2^31."""
    with pytest.raises(ValueError, match="at most 2147483647"):
        _native._C.linear(np.zeros((2**31, 0), np.float32), np.zeros((3, 0), np.float32), None, False, None)
    with pytest.raises(ValueError, match="at most 2147483647"):
        _native._C.conv1d(np.zeros((4, 0), np.float32), np.zeros((2, 0, 2**40), np.float32), None, 1, None,
                          False)


def test_unaligned_arrays(isa):
    """A float32 buffer at an odd byte offset: copied to an aligned one by the argument checks, or refused by
    the C++ wall with a ValueError (a misaligned float load is undefined behaviour), never read as it is."""
    raw = np.zeros(4 * 12 + 1, np.uint8)
    x = np.frombuffer(raw.data, np.float32, 12, offset=1).reshape(3, 4)
    assert not x.flags.aligned
    w = np.arange(8, dtype=np.float32).reshape(2, 4)
    calls = [(lambda: _native.linear(x, w), np.zeros((3, 2))),
             (lambda: _native.linear(np.ones((3, 4), np.float32), x), np.full((3, 3), 0.0)),
             (lambda: _native.rms_norm(x, np.ones(4, np.float32), 1e-6), np.zeros((3, 4))),
             (lambda: _native.gelu(x), np.zeros((3, 4))),
             (lambda: _native.attention(x[None], x[None], x[None]), np.zeros((1, 3, 4)))]
    for call, want in calls:
        try:
            np.testing.assert_array_equal(call(), want)
        except ValueError as e:
            assert "aligned" in str(e)
    with pytest.raises(ValueError, match="aligned"):
        _native._C.linear(x, w, None, False, None)


# ---------------------------------------------------------------------------------------- empty dimensions
def test_conv_without_input_channels_is_the_bias(isa):
    """Cin = 0: an empty sum. The fast paths used to return uninitialised memory."""
    b = np.arange(5, dtype=np.float32)
    res = np.full((40, 5), 0.5, np.float32)
    for naive in (False, True):
        y = _native.conv1d(np.zeros((40, 0), np.float32), np.zeros((5, 0, 3), np.float32), b, 2, res, naive=naive)
        np.testing.assert_array_equal(y, np.broadcast_to(b + 0.5, (40, 5)))
        y = _native.trans_conv1d(np.zeros((40, 0), np.float32), np.zeros((0, 5, 4), np.float32), b, 2,
                                 naive=naive)
        np.testing.assert_array_equal(y, np.broadcast_to(b, (41 * 2 - 4, 5)))
        y = _native.conv2d_s2(np.zeros((1, 6, 5, 0), np.float32), np.zeros((5, 0, 3, 3), np.float32), b,
                              naive=naive)
        np.testing.assert_array_equal(y, np.broadcast_to(b, (1, 3, 3, 5)))


def test_moe_expert_of_width_zero(isa):
    """I = 0: each expert adds nothing. With more than a few tokens the GEMM path used to leave y unwritten."""
    rng = np.random.default_rng(3)
    for L in (1, 30):
        x = rng.standard_normal((L, 16)).astype(np.float32)
        experts = {e: (np.zeros((0, 16), np.float32), np.zeros((0, 16), np.float32), np.zeros((16, 0), np.float32))
                   for e in range(3)}
        chosen = np.stack([rng.permutation(3)[:2] for _ in range(L)])
        mix = np.ones((L, 2), np.float32)
        for naive in (False, True):
            np.testing.assert_array_equal(_native.moe(x, chosen, mix, experts, naive=naive), np.zeros((L, 16)))


def test_empty_inputs_give_empty_outputs(isa):
    rng = np.random.default_rng(4)
    w = rng.standard_normal((6, 5)).astype(np.float32)
    assert _native.linear(np.zeros((0, 5), np.float32), w).shape == (0, 6)
    b = np.arange(6, dtype=np.float32)
    np.testing.assert_array_equal(_native.linear(np.zeros((3, 0), np.float32), np.zeros((6, 0), np.float32), b),
                                  np.broadcast_to(b, (3, 6)))
    q = np.zeros((2, 0, 8), np.float32)
    kv = rng.standard_normal((1, 5, 8)).astype(np.float32)
    assert _native.attention(q, kv, kv, True).shape == (2, 0, 8)
    experts = {0: (w, w, w.T.copy())}
    assert _native.moe(np.zeros((0, 5), np.float32), np.zeros((0, 1), np.int64), np.zeros((0, 1), np.float32),
                       experts).shape == (0, 5)
    assert _native.rms_norm(np.zeros((0, 5), np.float32), np.ones(5, np.float32), 1e-6).shape == (0, 5)
    assert _native.gelu(np.zeros((0, 3), np.float32)).shape == (0, 3)
    assert _native.conv1d(np.zeros((0, 5), np.float32), np.ones((2, 5, 3), np.float32)).shape == (0, 2)


# ------------------------------------------------------------------------------------- packed-weight cache
def test_packed_cache_never_serves_a_changed_weight(isa):
    """A read-only view of a writable array used to be packed once and cached: writing to the base was then
    ignored by every later GEMM on the view."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((20, 32)).astype(np.float32)        # 20 rows: the packed GEMM path
    base = rng.standard_normal((48, 32)).astype(np.float32)
    view = base[:]
    view.setflags(write=False)
    y1 = _native.linear(x, view)
    base *= 2
    np.testing.assert_allclose(_native.linear(x, view), 2 * y1, rtol=1e-6)
    assert _native.packed_weight(view) is None
    experts = {0: (view, view, base.T.copy())}
    ch, mix = np.zeros((20, 1), np.int64), np.ones((20, 1), np.float32)
    out1 = _native.moe(x, ch, mix, experts)
    base *= 0.5
    assert not np.array_equal(_native.moe(x, ch, mix, experts), out1)


def test_packed_cache_keeps_what_cannot_change(tmp_path):
    rng = np.random.default_rng(7)
    owner = rng.standard_normal((40, 24)).astype(np.float32)
    owner.setflags(write=False)
    assert _native._immutable(owner) and _native._immutable(owner[::2])
    from_bytes = np.frombuffer(owner.tobytes(), np.float32).reshape(40, 24)
    assert _native._immutable(from_bytes)
    writable_buffer = np.frombuffer(bytearray(owner.tobytes()), np.float32).reshape(40, 24)
    writable_buffer.setflags(write=False)
    assert not _native._immutable(writable_buffer)               # the bytearray can still be written
    f = tmp_path / "w.bin"
    f.write_bytes(owner.tobytes())
    with open(f, "rb") as fh:
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    mapped = np.frombuffer(mm, np.float32).reshape(40, 24)
    assert _native._immutable(mapped)                            # a checkpoint's weights: read-only mapping
    if _native.PACK_WEIGHTS:
        assert _native.packed_weight(mapped) is not None
    del mapped
