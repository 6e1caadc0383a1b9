"""Every C++ kernel against its NumPy definition, on every instruction set this CPU has.

Shapes include odd sizes (tails shorter than a vector), M = 1 (decode GEMV), M past the GEMV/GEMM switch,
bfloat16 weights, GQA, every mask kind and their combinations, KV-cache decode, and the validation errors.
References are computed in float64 from the same float32 inputs; the kernels must agree to fp32 accuracy
(relative to the reference's magnitude, like docs/golden_format.md's tolerances).
"""
import zlib

import numpy as np
import pytest

from omniref import _native, nn

pytestmark = pytest.mark.skipif(not _native.available(), reason="C++ extension not built")

RTOL = 2e-6  # fp32 accumulation over K <= ~2000 terms stays well inside this, relative to max |ref|


def rel_err(out, ref):
    ref = np.asarray(ref, dtype=np.float64)
    return float(np.max(np.abs(out - ref)) / max(np.max(np.abs(ref)), 1e-30))


# ---------------------------------------------------------------------------------------------------- linear
LINEAR_SHAPES = [(1, 1, 1), (1, 37, 19), (1, 64, 2048), (2, 5, 3), (3, 100, 67), (4, 33, 16), (8, 65, 31),
                 (9, 33, 129), (13, 70, 300), (50, 513, 257), (64, 64, 64), (100, 7, 1)]


@pytest.mark.parametrize("M,N,K", LINEAR_SHAPES)
def test_linear_f32(isa, M, N, K):
    rng = np.random.default_rng(M * 1000 + N * 10 + K)
    x = rng.standard_normal((M, K), dtype=np.float32)
    w = rng.standard_normal((N, K), dtype=np.float32)
    b = rng.standard_normal(N, dtype=np.float32)
    ref = x.astype(np.float64) @ w.T.astype(np.float64) + b
    assert rel_err(_native.linear(x, w, b), ref) < RTOL
    assert rel_err(_native.linear(x, w), ref - b) < RTOL
    assert rel_err(_native.linear(x, w, b, naive=True), ref) < RTOL


@pytest.mark.parametrize("N,K", [(37, 19), (100, 1030), (513, 257)])
def test_linear_rows_do_not_depend_on_the_batch(isa, N, K):
    """For M >= 2 (float32 weights) every path sums in the packed GEMM's order, so a row's output is the same
    bits whether it is computed alone with one neighbour or inside a 20-row call (chunked == one-shot)."""
    rng = np.random.default_rng(N + K)
    x = rng.standard_normal((20, K), dtype=np.float32)
    w = rng.standard_normal((N, K), dtype=np.float32)
    b = rng.standard_normal(N, dtype=np.float32)
    full = _native.linear(x, w, b)
    for m in (2, 3, 5, 8, 9, 13):
        for i in (0, 4):
            assert np.array_equal(_native.linear(x[i:i + m], w, b), full[i:i + m]), (m, i)


@pytest.mark.parametrize("M,N,K", [(1, 37, 19), (1, 300, 1000), (3, 17, 33), (7, 64, 128), (40, 129, 70)])
def test_linear_bf16(isa, M, N, K):
    rng = np.random.default_rng(7 + M + N + K)
    x = rng.standard_normal((M, K), dtype=np.float32)
    w = rng.standard_normal((N, K), dtype=np.float32)
    wb = _native.BF16Weight.from_float32(w)
    w_exact = wb.to_float32()  # the bf16 values widened: what the product must use
    assert np.max(np.abs(w_exact - w)) <= np.max(np.abs(w)) * 2.0 ** -8  # rounding, not truncation
    b = rng.standard_normal(N, dtype=np.float32)
    ref = x.astype(np.float64) @ w_exact.T.astype(np.float64) + b
    assert rel_err(_native.linear(x, wb, b), ref) < RTOL
    assert rel_err(_native.linear(x, wb, b, naive=True), ref) < RTOL
    assert np.array_equal(np.asarray(wb), w_exact)


def test_bf16_roundtrip_exact():
    """bf16 -> float32 is exact: the widened values are exactly representable and round back to the bits."""
    bits = np.arange(0, 65536, 7, dtype=np.uint16).reshape(1, -1)
    f = _native.BF16Weight(bits).to_float32()
    finite = np.isfinite(f)
    assert np.array_equal(_native.BF16Weight.from_float32(f).bits[finite], bits[finite])


def test_linear_batched_leading_dims_and_noncontiguous():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 20, 24), dtype=np.float32)[..., ::2]  # [2, 3, 20, 12], strided
    w = rng.standard_normal((12, 9), dtype=np.float32).T  # [9, 12], Fortran order
    y = _native.linear(x, w)
    assert y.shape == (2, 3, 20, 9)
    assert rel_err(y, x.astype(np.float64) @ w.T.astype(np.float64)) < RTOL


def test_linear_empty_and_k0():
    w = np.ones((4, 0), np.float32)
    b = np.arange(4, dtype=np.float32)
    y = _native.linear(np.ones((3, 0), np.float32), w, b)
    assert np.array_equal(y, np.tile(b, (3, 1)))
    assert _native.linear(np.ones((0, 5), np.float32), np.ones((4, 5), np.float32)).shape == (0, 4)


def test_linear_errors():
    x = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match="K=3"):
        _native.linear(x, np.ones((4, 5), np.float32))
    with pytest.raises(ValueError, match="bias must have shape"):
        _native.linear(x, np.ones((4, 3), np.float32), np.ones(5, np.float32))
    with pytest.raises(ValueError, match="2-D"):
        _native.linear(x, np.ones((4, 3, 1), np.float32))
    with pytest.raises(TypeError, match="float32"):
        _native.linear(x.astype(np.int32), np.ones((4, 3), np.float32))
    with pytest.raises(TypeError, match="uint16"):
        _native.BF16Weight(np.ones((2, 2), np.float32))
    # the C++ layer checks too, when called directly with bad arguments
    from omniref import _C
    with pytest.raises(TypeError):
        _C.linear(x.astype(np.float64), np.ones((4, 3), np.float32), None, False)
    with pytest.raises(ValueError, match="C-contiguous"):
        _C.linear(np.ones((3, 4), np.float32).T, np.ones((4, 3), np.float32), None, False)
    with pytest.raises(ValueError, match="disagree"):
        _C.linear(x, np.ones((4, 2), np.float32), None, False)


# ------------------------------------------------------------------------------------------------- attention
def attention_ref64(q, k, v, causal=False, window=None, seg=None, mask=None, scale=None):
    """float64 softmax(scale q k^T + masks) v with GQA; rows that see nothing are 0."""
    Hq, Lq, D = q.shape
    Hkv, Lk, _ = k.shape
    G = Hq // Hkv
    scale = D ** -0.5 if scale is None else scale
    kk = np.repeat(k, G, 0).astype(np.float64)
    vv = np.repeat(v, G, 0).astype(np.float64)
    s = np.einsum("hid,hjd->hij", q.astype(np.float64), kk) * scale
    pos = (Lk - Lq + np.arange(Lq))[:, None]
    j = np.arange(Lk)[None, :]
    ok = np.ones((Lq, Lk), bool)
    if causal:
        ok &= j <= pos
    if window:
        ok &= j > pos - window
    if seg is not None:
        ok &= seg[:, None] == seg[None, :]
    if mask is not None:
        ok &= mask
    s = np.where(ok, s, -np.inf)
    mx = s.max(-1, keepdims=True)
    e = np.exp(s - np.where(np.isfinite(mx), mx, 0.0))
    den = e.sum(-1, keepdims=True)
    return (e @ vv) / np.where(den > 0, den, 1.0)


ATTN_CASES = [
    # Hq, Hkv, Lq, Lk, D, causal, window, segments, mask
    (1, 1, 1, 1, 1, False, None, False, False),
    (4, 2, 7, 7, 16, True, None, False, False),
    (8, 2, 1, 70, 64, True, None, False, False),        # KV-cache decode, GQA group of 4
    (4, 4, 1, 129, 128, True, None, False, False),      # decode without GQA (single-row path)
    (16, 4, 3, 200, 64, True, None, False, False),      # 3 new tokens on a cache
    (2, 2, 100, 100, 72, True, 5, False, False),        # sliding window, head dim not a vector multiple
    (2, 1, 150, 150, 64, True, 72, False, False),       # Code2Wav-like window
    (3, 1, 65, 65, 33, False, None, True, False),       # block-diagonal segments (audio/vision cu_seqlens)
    (4, 4, 37, 50, 128, False, None, False, True),      # explicit mask, Lq != Lk
    (2, 1, 130, 130, 64, True, 40, True, True),         # everything at once
    (5, 5, 33, 33, 80, False, None, False, False),      # no mask at all, odd head count
    # the multi-row path (csrc/attention_kernels.inc `attention_rows`): blocks of 32 rows, 48-key tiles,
    # register blocks of 6 keys / 6 head-dim columns, each with its tail
    (16, 4, 100, 100, 64, True, None, False, False),    # GQA prefill: blocks of 8 positions x 4 heads
    (3, 3, 200, 200, 72, False, None, False, False),    # the vision head dim (12 x 6), 200 keys (4 x 48 + 8)
    (2, 2, 45, 130, 13, False, None, False, False),     # Lq < Lk, head dim neither a multiple of 6 nor of 8
    (4, 1, 60, 160, 64, True, 50, False, False),        # a chunk of a prompt on a cache, sliding window
]


def attention_inputs(case):
    """Seeded q, k, v, segments and mask of one ATTN_CASES entry (every row keeps at least one key)."""
    Hq, Hkv, Lq, Lk, D, causal, window, use_seg, use_mask = case
    rng = np.random.default_rng(zlib.crc32(repr(case).encode()))
    q = rng.standard_normal((Hq, Lq, D), dtype=np.float32)
    k = rng.standard_normal((Hkv, Lk, D), dtype=np.float32)
    v = rng.standard_normal((Hkv, Lk, D), dtype=np.float32)
    seg = np.sort(rng.integers(0, 4, Lq)) if use_seg else None
    mask = rng.random((Lq, Lk)) < 0.7 if use_mask else None
    if mask is not None:
        mask[:, Lk - 1] = True  # keep every row non-empty so the NumPy definition has no 0/0
        if causal or window:
            mask[:, :] |= np.eye(Lq, Lk, Lk - Lq, dtype=bool)
    return q, k, v, causal, window, seg, mask


@pytest.mark.parametrize("case", ATTN_CASES, ids=lambda c: "x".join(map(str, c)))
def test_attention(isa, case):
    Hq, Lq, D = case[0], case[2], case[4]
    q, k, v, causal, window, seg, mask = attention_inputs(case)
    ref = attention_ref64(q, k, v, causal, window, seg, mask)
    out = _native.attention(q, k, v, causal, window, seg, mask)
    assert out.shape == (Hq, Lq, D) and out.dtype == np.float32
    assert rel_err(out, ref) < RTOL
    assert rel_err(_native.attention(q, k, v, causal, window, seg, mask, naive=True), ref) < RTOL
    # the NumPy reference in _native (float32) agrees too
    assert rel_err(nn.attention(q, k, v, causal=causal, sliding_window=window, segments=seg, mask=mask), ref) < 1e-5


def test_attention_scale_and_large_scores(isa):
    """Online softmax must stay stable when scores are large (max-subtraction across tiles).

    Scores here reach ~100, where one float32 ulp is ~8e-6, so the softmax weights themselves carry ~1e-5
    relative error in any float32 implementation: the bound is 5e-5, not the usual 2e-6."""
    rng = np.random.default_rng(3)
    q = rng.standard_normal((2, 90, 32), dtype=np.float32) * 6
    k = rng.standard_normal((2, 300, 32), dtype=np.float32) * 6
    v = rng.standard_normal((2, 300, 32), dtype=np.float32)
    ref = attention_ref64(q, k, v, True, None, None, None, 0.5)
    out = _native.attention(q, k, v, causal=True, scale=0.5)
    assert np.all(np.isfinite(out)) and rel_err(out, ref) < 5e-5


@pytest.mark.parametrize("window", [None, 100])  # a window longer than a key tile
def test_attention_rows_independent_of_their_call(isa, window):
    """A query row's result does not depend on the other rows of its call: a prompt fed through a KV cache in
    chunks gives the same bits as fed at once, and so does any subset of the queries without a mask (key tiles
    start at fixed multiples of the tile size whatever the block of rows; masked keys add exact zeros).
    Chunks of one token are left out: a single query row runs the decode path, summed in another order."""
    rng = np.random.default_rng(5)
    q, k, v = (rng.standard_normal(s, dtype=np.float32) for s in ((8, 150, 64), (2, 150, 64), (2, 150, 64)))
    whole = _native.attention(q, k, v, True, window)
    for a, b in [(0, 37), (37, 39), (39, 100), (100, 150)]:
        np.testing.assert_array_equal(_native.attention(q[:, a:b], k[:, :b], v[:, :b], True, window),
                                      whole[:, a:b])
    bidirectional = _native.attention(q, k, v)
    np.testing.assert_array_equal(_native.attention(q[:, 70:135], k, v), bidirectional[:, 70:135])


def test_attention_unsorted_segments_and_empty_rows(isa):
    rng = np.random.default_rng(4)
    L = 70
    q, k, v = (rng.standard_normal((2, L, 16), dtype=np.float32) for _ in range(3))
    seg = rng.integers(0, 3, L)  # ids need not be sorted or contiguous
    ref = attention_ref64(q, k, v, seg=seg)
    assert rel_err(_native.attention(q, k, v, segments=seg), ref) < RTOL
    mask = np.ones((L, L), bool)
    mask[5] = False  # row 5 sees nothing: defined as 0
    out = _native.attention(q, k, v, mask=mask)
    assert np.all(out[:, 5] == 0) and np.all(np.isfinite(out))


def test_attention_errors():
    q = np.ones((4, 3, 8), np.float32)
    kv = np.ones((3, 5, 8), np.float32)
    with pytest.raises(ValueError, match="multiple"):
        _native.attention(q, kv, kv)
    kv = np.ones((2, 5, 8), np.float32)
    with pytest.raises(ValueError, match="segments"):
        _native.attention(q, kv, kv, segments=np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="mask shape"):
        _native.attention(q, kv, kv, mask=np.ones((3, 4), bool))
    with pytest.raises(TypeError, match="boolean"):
        _native.attention(q, kv, kv, mask=np.ones((3, 5), np.float32))
    with pytest.raises(ValueError, match="sliding_window"):
        _native.attention(q, kv, kv, sliding_window=0)
    with pytest.raises(ValueError, match="3-D"):
        _native.attention(q[0], kv, kv)
    with pytest.raises(ValueError, match="do not|must be"):
        _native.attention(q, kv, np.ones((2, 6, 8), np.float32))
    with pytest.raises(ValueError, match="Lq <= Lk"):
        _native.attention(np.ones((2, 6, 8), np.float32), kv, kv, causal=True)
    from omniref import _C
    with pytest.raises(ValueError, match="multiple"):
        _C.attention(q, np.ones((3, 5, 8), np.float32), np.ones((3, 5, 8), np.float32), False, 0, None, None,
                     1.0, False)
    with pytest.raises(ValueError, match="window"):
        _C.attention(q, kv, kv, False, -1, None, None, 1.0, False)


# ------------------------------------------------------------------------------------------------------ misc
def test_isa_controls():
    assert _native.best_isa() in ("generic", "avx2", "avx512")
    assert "generic" in _native.supported_isas()
    with pytest.raises(ValueError):
        _native.set_isa("sse9")


# ------------------------------------------------------------------------------------------- optional CUDA
needs_gpu = pytest.mark.skipif(not (_native.available() and _native.cuda_available()),
                               reason="extension built without CUDA, or no GPU visible")


@needs_gpu
@pytest.mark.parametrize("M,N,K", [(1, 37, 19), (9, 33, 129), (64, 64, 64), (130, 257, 300)])
def test_cuda_linear(M, N, K):
    rng = np.random.default_rng(M + N + K)
    x = rng.standard_normal((M, K), dtype=np.float32)
    w = rng.standard_normal((N, K), dtype=np.float32)
    b = rng.standard_normal(N, dtype=np.float32)
    ref = x.astype(np.float64) @ w.T.astype(np.float64) + b
    for naive in (False, True):
        y, _ms = _native.cuda_linear(x, w, b, naive=naive)
        assert rel_err(y, ref) < RTOL


@needs_gpu
@pytest.mark.parametrize("case", ATTN_CASES, ids=lambda c: "x".join(map(str, c)))
def test_cuda_attention(case):
    q, k, v, causal, window, seg, mask = attention_inputs(case)
    out, _ms = _native.cuda_attention(q, k, v, causal, window, seg, mask)
    assert rel_err(out, attention_ref64(q, k, v, causal, window, seg, mask)) < RTOL


def test_linear_reads_pre_packed_read_only_weights(isa):
    # a GEMM on a read-only float32 weight uses its packing (made once): the same arithmetic, the same bits
    rng = np.random.default_rng(12)
    x = rng.standard_normal((37, 70), dtype=np.float32)
    w = rng.standard_normal((45, 70), dtype=np.float32)
    b = rng.standard_normal(45, dtype=np.float32)
    plain = _native.linear(x, w, b)
    w.setflags(write=False)
    packed = _native.linear(x, w, b)
    assert np.array_equal(packed, plain)
    p = _native.packed_weight(w)
    assert p is not None and _native.packed_weight(w) is p
    assert np.array_equal(_native._C.linear(x, w, b, False, p), plain)
    assert np.array_equal(_native.linear(x[:3], w, b), plain[:3])      # GEMV rows: packing not used
    with pytest.raises(ValueError, match="layout"):
        _native._C.linear(x, w, b, False, p[:-1])
    wb = _native.BF16Weight.from_float32(w)
    with pytest.raises(ValueError, match="float32 weights"):
        _native._C.linear(x, wb.bits, b, False, p)
