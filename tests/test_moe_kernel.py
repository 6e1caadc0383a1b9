"""The fused C++ mixture-of-experts kernel (csrc/moe.cpp) against the NumPy loop it replaces.

out[t] = Σ_j mix[t, j] · down_e(silu(gate_e x_t) ⊙ up_e x_t), e = chosen[t, j], summed in ascending expert id.
References are computed in float64 from the same float32 inputs (and the NumPy loop of omniref.decoder.moe is
checked too); the kernel must agree to fp32 accuracy relative to the reference's magnitude. Shapes cover odd
sizes (vector tails), k = 1..8, L = 1 (decode), experts that stream their weights (<= 4 tokens) and experts that
run the packed GEMM (more), experts no token chose, bf16 weights, every instruction set, and thread counts.
"""
import numpy as np
import pytest

from omniref import _native, backend, decoder, nn

pytestmark = pytest.mark.skipif(not _native.available(), reason="C++ extension not built")

RTOL = 1e-5  # two chained fp32 matmuls (K <= ~300 here) and a SiLU, relative to max |ref|


def make(L, H, I, E, k, seed, bf16=False):
    """x [L, H], chosen [L, k] (distinct per row), mix [L, k], experts {e: (gate, up, down)} for all E."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((L, H), dtype=np.float32)
    chosen = np.argsort(rng.random((L, E)), axis=1)[:, :k]
    mix = rng.random((L, k)).astype(np.float32)
    experts = {}
    for e in range(E):
        mats = (rng.standard_normal((I, H), dtype=np.float32) / np.float32(np.sqrt(H)),
                rng.standard_normal((I, H), dtype=np.float32) / np.float32(np.sqrt(H)),
                rng.standard_normal((H, I), dtype=np.float32) / np.float32(np.sqrt(I)))
        experts[e] = tuple(_native.BF16Weight.from_float32(m) for m in mats) if bf16 else mats
    return x, chosen, mix, experts


def reference64(x, chosen, mix, experts):
    """float64 definition, term by term."""
    out = np.zeros(x.shape, np.float64)
    for t in range(x.shape[0]):
        for j in range(chosen.shape[1]):
            g, u, d = (np.asarray(m, dtype=np.float64) for m in experts[int(chosen[t, j])])
            a = g @ x[t].astype(np.float64)
            h = a / (1.0 + np.exp(-a)) * (u @ x[t].astype(np.float64))
            out[t] += float(mix[t, j]) * (d @ h)
    return out


def rel_err(out, ref):
    ref = np.asarray(ref, dtype=np.float64)
    return float(np.max(np.abs(out - ref)) / max(np.max(np.abs(ref)), 1e-30))


CASES = [  # L, H, I, E, k
    (1, 37, 19, 5, 1),       # decode, one expert, tails shorter than a vector
    (1, 64, 48, 8, 8),       # decode, k = 8 (every expert)
    (3, 33, 17, 6, 2),       # only streaming experts
    (7, 70, 45, 4, 3),       # mixed: some experts > 4 tokens (packed GEMM)
    (40, 129, 66, 9, 4),     # mostly GEMM experts, odd H and I
    (64, 96, 300, 3, 2),     # I spans several column blocks; every expert has many tokens
    (5, 48, 24, 40, 2),      # most of the 40 experts chosen by no token
    (30, 520, 40, 6, 5),     # H > KC: several k slices in the gate/up GEMM
]


@pytest.mark.parametrize("L,H,I,E,k", CASES)
def test_moe_matches_reference(isa, L, H, I, E, k):
    x, chosen, mix, experts = make(L, H, I, E, k, seed=L * 100 + H + k)
    ref = reference64(x, chosen, mix, experts)
    out = _native.moe(x, chosen, mix, experts)
    assert out.shape == (L, H) and out.dtype == np.float32
    assert rel_err(out, ref) < RTOL
    assert rel_err(_native.moe(x, chosen, mix, experts, naive=True), ref) < RTOL
    assert rel_err(nn.moe_experts(x, chosen, mix, experts), ref) < RTOL


@pytest.mark.parametrize("L,H,I,E,k", [(1, 37, 19, 5, 2), (9, 70, 45, 4, 3), (40, 129, 66, 9, 4)])
def test_moe_bf16_weights(isa, L, H, I, E, k):
    """bf16 weights are widened exactly, so the reference uses the widened values."""
    x, chosen, mix, experts = make(L, H, I, E, k, seed=7 + L + H, bf16=True)
    widened = {e: tuple(m.to_float32() for m in t) for e, t in experts.items()}
    ref = reference64(x, chosen, mix, widened)
    assert rel_err(_native.moe(x, chosen, mix, experts), ref) < RTOL
    assert rel_err(_native.moe(x, chosen, mix, experts, naive=True), ref) < RTOL
    mixed = dict(widened)
    mixed[int(chosen[0, 0])] = experts[int(chosen[0, 0])]  # bf16 and float32 experts in one call: widened
    assert rel_err(_native.moe(x, chosen, mix, mixed), ref) < RTOL


class Recording(dict):
    """An experts mapping that remembers which ids were looked up."""

    def __init__(self, *a):
        super().__init__(*a)
        self.asked = set()

    def __getitem__(self, e):
        self.asked.add(e)
        return super().__getitem__(e)


def test_unchosen_experts_are_never_read():
    x, chosen, mix, experts = make(6, 32, 16, 50, 2, seed=3)
    rec = Recording(experts)
    out = _native.moe(x, chosen, mix, rec)
    assert rec.asked == set(np.unique(chosen).tolist())
    # weights of the chosen experts only: unchosen ids need not be present at all
    only = {e: experts[e] for e in np.unique(chosen).tolist()}
    assert np.array_equal(_native.moe(x, chosen, mix, only), out)


def test_moe_empty_and_zero_mix():
    x, chosen, mix, experts = make(4, 24, 8, 5, 2, seed=11)
    assert _native.moe(x[:0], chosen[:0], mix[:0], experts).shape == (0, 24)
    zero = _native.moe(x, chosen, np.zeros_like(mix), experts)
    assert np.array_equal(zero, np.zeros_like(x))


@pytest.mark.parametrize("L,H,I,E,k", [(100, 129, 66, 9, 4), (2, 200, 300, 7, 3)])
def test_moe_does_not_depend_on_thread_count(L, H, I, E, k):
    x, chosen, mix, experts = make(L, H, I, E, k, seed=5)
    before = _native.max_threads()
    try:
        outs = []
        for n in (1, 2, 3):
            _native.set_threads(n)
            outs.append(_native.moe(x, chosen, mix, experts))
    finally:
        _native.set_threads(before)
    assert all(np.array_equal(o, outs[0]) for o in outs[1:])


def test_moe_rows_do_not_depend_on_other_tokens():
    """A token's result is the same bits whether its experts also serve 50 other tokens or only it (packed
    GEMM rows are independent; the streaming path is used below 5 tokens, so compare within the GEMM path)."""
    x, chosen, mix, experts = make(60, 64, 40, 3, 2, seed=9)
    full = _native.moe(x, chosen, mix, experts)
    part = _native.moe(x[10:40], chosen[10:40], mix[10:40], experts)
    assert np.array_equal(part, full[10:40])


@pytest.mark.parametrize("H,I,k,bf16", [(37, 19, 1, False), (70, 45, 3, False), (96, 300, 8, False),
                                        (70, 45, 3, True), (129, 66, 4, True)])
def test_one_token_path_has_the_batch_bits(isa, H, I, k, bf16):
    """Decode (L = 1) runs its own two-phase path (moe_one_token in csrc/moe_kernels.inc); a token's result is
    the same bits as that token in a batch of 3, where every expert has <= 3 tokens and the general three-phase
    kernel streams its weights with the same dot products. Odd H and I leave vector tails and partial blocks;
    H = 96 > 32 and I = 300 give several row blocks per task list; every thread count agrees."""
    x, chosen, mix, experts = make(3, H, I, 9, k, seed=H + I + k, bf16=bf16)
    batch = _native.moe(x, chosen, mix, experts)
    before = _native.max_threads()
    try:
        for n in (1, 2, 3):
            _native.set_threads(n)
            for t in range(3):
                one = _native.moe(x[t:t + 1], chosen[t:t + 1], mix[t:t + 1], experts)
                assert np.array_equal(one, batch[t:t + 1]), (n, t)
    finally:
        _native.set_threads(before)


def test_decoder_moe_cpp_matches_numpy_loop():
    """omniref.decoder.moe: the fused kernel (cpp backend) against the NumPy loop (numpy backend), with the
    router, a shared expert and every expert key the checkpoint layout uses."""
    rng = np.random.default_rng(0)
    L, H, I, E, k = 21, 48, 32, 8, 3
    w = {"mlp.gate.weight": rng.standard_normal((E, H), dtype=np.float32),
         "mlp.shared_expert_gate.weight": rng.standard_normal((1, H), dtype=np.float32) / 7,
         "mlp.shared_expert.gate_proj.weight": rng.standard_normal((2 * I, H), dtype=np.float32) / 7,
         "mlp.shared_expert.up_proj.weight": rng.standard_normal((2 * I, H), dtype=np.float32) / 7,
         "mlp.shared_expert.down_proj.weight": rng.standard_normal((H, 2 * I), dtype=np.float32) / 8}
    for e in range(E):
        for m, shape in (("gate", (I, H)), ("up", (I, H)), ("down", (H, I))):
            w[f"mlp.experts.{e}.{m}_proj.weight"] = rng.standard_normal(shape, dtype=np.float32) / 7
    x = rng.standard_normal((L, H), dtype=np.float32)
    outs = {}
    for name in ("numpy", "cpp"):
        with backend.use(name):
            stats = []
            outs[name] = decoder.moe(x, w, "mlp.", E, k, True, stats=stats)
            assert stats[0].experts.shape == (L, k)
    assert rel_err(outs["cpp"], outs["numpy"]) < RTOL
    with backend.use("cpp"), backend.validate() as log:
        n = len(log)
        decoder.moe(x, w, "mlp.", E, k, False)
        assert [r.op for r in log[n:]].count("moe_experts") == 1
        assert all(r.max_rel < RTOL for r in log[n:])


def test_moe_errors():
    x, chosen, mix, experts = make(4, 24, 8, 5, 2, seed=1)
    with pytest.raises(ValueError, match="2-D"):
        _native.moe(x[0], chosen, mix, experts)
    with pytest.raises(TypeError, match="integer"):
        _native.moe(x, chosen.astype(np.float32), mix, experts)
    with pytest.raises(ValueError, match=r"\[L, k\]"):
        _native.moe(x, chosen[:3], mix, experts)
    with pytest.raises(ValueError, match="mix"):
        _native.moe(x, chosen, mix[:, :1], experts)
    missing = {e: t for e, t in experts.items() if e != int(chosen[0, 0])}
    with pytest.raises(ValueError, match=f"expert {int(chosen[0, 0])} was chosen"):
        _native.moe(x, chosen, mix, missing)
    dup = chosen.copy()
    dup[2, 1] = dup[2, 0]
    with pytest.raises(ValueError, match="more than once"):
        _native.moe(x, dup, mix, experts)
    bad = dict(experts)
    e0 = int(chosen[0, 0])
    bad[e0] = (experts[e0][0], experts[e0][1], experts[e0][2].T.copy())
    with pytest.raises(ValueError, match="down"):
        _native.moe(x, chosen, mix, bad)
    bad[e0] = experts[e0][:2]
    with pytest.raises(ValueError, match="gate, up, down"):
        _native.moe(x, chosen, mix, bad)
    with pytest.raises(ValueError, match="at most 64"):
        _native.moe(np.zeros((1, 4), np.float32), np.arange(65)[None], np.ones((1, 65), np.float32), {})


def test_native_entry_point_checks():
    """The C++ layer re-checks what it is given (a second wall behind _native.moe)."""
    C = _native._C
    x, _, mix, experts = make(3, 16, 8, 2, 2, seed=2)
    g, u, d = ([experts[e][i] for e in range(2)] for i in range(3))
    local = np.array([[0, 1], [1, 0], [0, 1]], np.int64)
    assert C.moe(x, local, mix, g, u, d).shape == (3, 16)
    with pytest.raises(ValueError, match="outside"):
        C.moe(x, local + 1, mix, g, u, d)
    with pytest.raises(ValueError, match="same experts"):
        C.moe(x, local, mix, g, u, d[:1])
    with pytest.raises(ValueError, match="hidden size"):
        C.moe(x, local, mix, [m[:, :8].copy() for m in g], u, d)
    with pytest.raises(TypeError):
        C.moe(x, local.astype(np.int32), mix, g, u, d)
    with pytest.raises(TypeError):
        C.moe(x, local, mix, g, u, [m.astype(np.float64) for m in d])


def test_weights_keep_bf16_hands_out_the_file_bits():
    """Weights.keep_bf16: 2-D BF16 tensors come back as BF16Weight on the cpp backend (exactly the float32 values
    a normal load gives), float32 arrays on the numpy backend; other tensors are unaffected."""
    from pathlib import Path

    from omniref.weights import load_weights
    case = Path(__file__).parent / "golden" / "tiny_bf16_sharded"
    if not case.exists():
        pytest.skip("tests/golden/tiny_bf16_sharded not present")
    plain, w = load_weights(case), load_weights(case)
    w.keep_bf16 = True
    keys = [k for k in w if w.dtype(k) == "BF16" and len(w.shape(k)) == 2]
    assert keys
    for key in keys[:20]:
        with backend.use("cpp"):
            got = w[key]
            assert isinstance(got, _native.BF16Weight)
            assert np.array_equal(np.asarray(got), plain[key])
            assert np.array_equal(got[[1, 0]], plain[key][[1, 0]])  # row lookups (embeddings) widen exactly
        with backend.use("numpy"):
            assert type(w[key]) is np.ndarray
    other = next(k for k in w if len(w.shape(k)) != 2)
    with backend.use("cpp"):
        assert type(w[other]) is np.ndarray


def _read_only(experts):
    for mats in experts.values():
        for m in mats:
            m.setflags(write=False)
    return experts


@pytest.mark.parametrize("L, H, I, E, k", [CASES[3], CASES[5], CASES[7]])
def test_pre_packed_weights_give_the_same_bits(isa, L, H, I, E, k):
    # read-only float32 experts are packed once and the kernel reads their panels: same arithmetic, same bits
    x, chosen, mix, experts = make(L, H, I, E, k, seed=21)
    plain = _native.moe(x, chosen, mix, experts)
    _read_only(experts)
    packed = _native.moe(x, chosen, mix, experts)
    assert np.array_equal(packed, plain)
    assert rel_err(packed, reference64(x, chosen, mix, experts)) < RTOL
    busy = [e for e in range(E) if np.count_nonzero(chosen == e) >= _native.MOE_PACK_MIN_TOKENS]
    assert busy, "the case must have an expert that runs as a GEMM"
    g = experts[busy[0]][0]
    p = _native.packed_weight(g)
    assert p is not None and p.ndim == 1 and p.size == _native._C.packed_weight_size(*g.shape)
    assert _native.packed_weight(g) is p                        # made once, then reused


def test_packed_weight_cache_rules():
    rng = np.random.default_rng(4)
    w = rng.standard_normal((40, 24), dtype=np.float32)
    assert _native.packed_weight(w) is None                     # writable: it could change under a cache
    w.setflags(write=False)
    p = _native.packed_weight(w)
    key = next(k for k, (ref, _) in _native._packed_cache.items() if ref() is w)
    del w, p                                                     # the packing lives as long as the weight
    assert key not in _native._packed_cache


def test_packed_argument_is_checked():
    x, chosen, mix, experts = make(7, 70, 45, 4, 3, seed=5)
    ids = sorted(experts)
    local = np.ascontiguousarray(chosen, np.int64)     # all E experts passed: local id = expert id
    gate, up, down = ([experts[e][i] for e in ids] for i in range(3))
    good = [tuple(_native._C.pack_weight(m) for m in experts[e]) for e in ids]
    C = _native._C
    assert np.array_equal(C.moe(x, local, mix, gate, up, down, False, good),
                          C.moe(x, local, mix, gate, up, down, False, None))
    with pytest.raises(ValueError, match="one entry per expert"):
        C.moe(x, local, mix, gate, up, down, False, good[:2])
    short = [(p[0][:-1], p[1], p[2]) for p in good]
    with pytest.raises(ValueError, match="instruction set's layout needs"):
        C.moe(x, local, mix, gate, up, down, False, short)
    with pytest.raises(TypeError):
        C.moe(x, local, mix, gate, up, down, False, "packed")
    with pytest.raises(TypeError):
        C.moe(x, local, mix, gate, up, down, False, [[1, 2, 3]] * len(ids))


def test_checkpoint_weights_are_read_only(tmp_path):
    from omniref.weights import load_weights
    from safetensors.numpy import save_file
    save_file({"a.weight": np.ones((3, 4), np.float32)}, str(tmp_path / "model.safetensors"))
    w = load_weights(tmp_path)["a.weight"]
    assert not w.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        w[0, 0] = 2.0
