"""Vision encoder (omniref/vision/encoder.py): goldens, an independent float64 re-derivation, and the
properties a reader relies on (per-grid attention isolation, 2-D RoPE relativity, batching invariance).
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
from scipy import ndimage, special

from omniref import backend, stages
from omniref.config import load_config
from omniref.golden import Case
from omniref.tiny import tiny_config, tiny_weights
from omniref.vision import encoder as enc
from omniref.weights import load_weights, save_safetensors

REL = 1e-4            # FORMAT 7: encoder outputs


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


# ----------------------------------------------------------------------------------------------------------
# checkpoints: the tiny model's vision tower, and a variant with patch 14, 3 blocks, 4 heads, other taps
# ----------------------------------------------------------------------------------------------------------
VARIANTS = {
    "tiny": {},
    "p14": dict(depth=3, num_heads=4, patch_size=14, num_position_embeddings=36, deepstack_visual_indexes=[2, 1],
                intermediate_size=48),
}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def tower(request, tmp_path_factory):
    """(vision_config, weights view "thinker.visual.") of one variant, written and read as a real checkpoint."""
    cfg = copy.deepcopy(tiny_config())
    cfg["thinker_config"]["vision_config"].update(VARIANTS[request.param])
    w = {k: v for k, v in tiny_weights(cfg, seed=11).items() if k.startswith("thinker.visual.")}
    rng = np.random.default_rng(12)
    for k in w:                      # non-trivial norms and biases, so a swapped weight/bias shows up
        if k.endswith(("norm1.weight", "norm2.weight", "ln_q.weight")):
            w[k] = (1 + 0.3 * rng.standard_normal(w[k].shape)).astype(np.float32)
        elif k.endswith(".bias"):
            w[k] = (0.2 * rng.standard_normal(w[k].shape)).astype(np.float32)
    path = tmp_path_factory.mktemp(f"vision_{request.param}") / "model.safetensors"
    save_safetensors(path, w)
    return load_config(cfg).thinker_config.vision_config, load_weights(path).scope("thinker.visual.")


def _pixels(vc, grid, seed=0):
    P = int(np.prod(np.asarray(grid), axis=1).sum())
    D = 3 * vc.temporal_patch_size * vc.patch_size ** 2
    return np.random.default_rng(seed).uniform(-1, 1, (P, D)).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------
# an independent float64 reference: loops, scipy's bilinear map_coordinates, complex-number RoPE
# ----------------------------------------------------------------------------------------------------------
def _ln(x, w, b, eps=1e-6):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) * w + b


def _reference(vc, w, pixel_values, grid_thw):
    W = {k: np.asarray(w[k], np.float64) for k in w}
    hv, nh, m = vc.hidden_size, vc.num_heads, vc.spatial_merge_size
    hd = hv // nh
    s = int(round(np.sqrt(vc.num_position_embeddings)))
    table = W["pos_embed.weight"].reshape(s, s, hv)
    rows, cols, seg = [], [], []
    for gi, (t, h, ww) in enumerate(grid_thw):
        for ti in range(t):
            for idx in range(h * ww):                       # merge-block order, decoded index by index
                blk, inner = divmod(idx, m * m)
                br, bc = divmod(blk, ww // m)
                ir, ic = divmod(inner, m)
                rows.append((br * m + ir, h))
                cols.append((bc * m + ic, ww))
                seg.append((gi, ti))
    coord = lambda rc: np.array([r * (s - 1) / (n - 1) if n > 1 else 0.0 for r, n in rc])
    cy, cx = coord(rows), coord(cols)
    pos = np.stack([ndimage.map_coordinates(table[:, :, c], [cy, cx], order=1, mode="nearest")
                    for c in range(hv)], axis=1)            # bilinear, aligned corners
    x = pixel_values.astype(np.float64) @ W["patch_embed.proj.weight"].reshape(hv, -1).T \
        + W["patch_embed.proj.bias"] + pos
    freq = vc.rope_theta ** (-np.arange(hd // 4) * 4.0 / hd)                     # θ^(-2j/(hd/2))
    r_idx = np.array([r for r, _ in rows], float)
    c_idx = np.array([c for c, _ in cols], float)
    rot = np.exp(1j * np.concatenate([r_idx[:, None] * freq, c_idx[:, None] * freq], axis=1))  # [P, hd/2]

    def rope(v):                                    # v [P, nh, hd]: pair dim i with i + hd/2 as a complex number
        z = (v[..., :hd // 2] + 1j * v[..., hd // 2:]) * rot[:, None, :]
        return np.concatenate([z.real, z.imag], axis=-1)

    seg = np.array([hash(sg) for sg in seg])
    hidden, deep = [x], {}
    gelu_tanh = lambda u: 0.5 * u * (1 + np.tanh(np.sqrt(2 / np.pi) * (u + 0.044715 * u ** 3)))
    gelu = lambda u: 0.5 * u * (1 + special.erf(u / np.sqrt(2)))

    def merger(xx, pre, post):                      # post: LayerNorm after grouping (DeepStack mergers)
        ln = lambda u: _ln(u, W[pre + "ln_q.weight"], W[pre + "ln_q.bias"])
        g = ln(xx.reshape(-1, m * m * hv)) if post else ln(xx).reshape(-1, m * m * hv)
        g = gelu(g @ W[pre + "mlp.0.weight"].T + W[pre + "mlp.0.bias"])
        return g @ W[pre + "mlp.2.weight"].T + W[pre + "mlp.2.bias"]

    for i in range(vc.depth):
        b = f"blocks.{i}."
        hn = _ln(x, W[b + "norm1.weight"], W[b + "norm1.bias"])
        qkv = (hn @ W[b + "attn.qkv.weight"].T + W[b + "attn.qkv.bias"]).reshape(len(x), 3, nh, hd)
        q, k, v = rope(qkv[:, 0]), rope(qkv[:, 1]), qkv[:, 2]
        out = np.zeros_like(v)
        for sid in np.unique(seg):
            sel = np.flatnonzero(seg == sid)
            sc = np.einsum("qhd,khd->hqk", q[sel], k[sel]) / np.sqrt(hd)
            pr = np.exp(sc - sc.max(-1, keepdims=True))
            pr /= pr.sum(-1, keepdims=True)
            out[sel] = np.einsum("hqk,khd->qhd", pr, v[sel])
        x = x + out.reshape(len(x), hv) @ W[b + "attn.proj.weight"].T + W[b + "attn.proj.bias"]
        hn = _ln(x, W[b + "norm2.weight"], W[b + "norm2.bias"])
        x = x + gelu_tanh(hn @ W[b + "mlp.linear_fc1.weight"].T + W[b + "mlp.linear_fc1.bias"]) \
            @ W[b + "mlp.linear_fc2.weight"].T + W[b + "mlp.linear_fc2.bias"]
        hidden.append(x)
        # reference semantics: features in block order, block i uses merger_list.{index of i in the list}
        if i in vc.deepstack_visual_indexes:
            kk = list(vc.deepstack_visual_indexes).index(i)
            deep[len(deep)] = merger(x, f"merger_list.{kk}.", post=True)
    return hidden, merger(x, "merger.", post=False), [deep[k] for k in range(len(deep))]


def _backend(name):
    if name == "cpp" and not backend.available():
        pytest.skip("C++ extension not built")
    return backend.use(name)


@pytest.mark.parametrize("backend_name", ["numpy", "cpp"])
@pytest.mark.parametrize("grid", [[[1, 4, 6]], [[3, 2, 4]], [[1, 2, 2], [2, 4, 2]], [[1, 6, 2]]])
def test_matches_independent_reference(tower, grid, backend_name):
    vc, w = tower
    grid = np.array(grid, np.int64)
    pv = _pixels(vc, grid, seed=int(grid.sum()))
    with _backend(backend_name):
        out = enc.vision_forward(w, vc, pv, grid, record_hidden=True)
    hidden, merged, deep = _reference(vc, w, pv, grid)
    assert len(out.hidden_states) == vc.depth + 1
    for i, (a, b) in enumerate(zip(out.hidden_states, hidden)):
        assert a.dtype == np.float32 and _rel(a, b) < 1e-5, f"hidden_states.{i}"
    assert out.merged.shape == (len(pv) // vc.spatial_merge_size ** 2, vc.out_hidden_size)
    assert _rel(out.merged, merged) < 1e-5
    assert len(out.deepstack) == len(vc.deepstack_visual_indexes)
    for k, (a, b) in enumerate(zip(out.deepstack, deep)):
        assert _rel(a, b) < 1e-5, f"deepstack.{k}"


# ----------------------------------------------------------------------------------------------------------
# goldens
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend_name", ["numpy", "cpp"])
@pytest.mark.parametrize("prefix, stage", [("vision", stages.vision_stage), ("vision_video", stages.vision_video_stage)])
def test_golden_cases(golden_cases, prefix, stage, backend_name):
    cases = [c for c in map(Case, golden_cases) if f"{prefix}.output" in c.golden]
    if not cases:
        pytest.skip(f"no golden case holds {prefix}.output")
    for case in cases:
        with _backend(backend_name):
            got = stage(case)
        expected = [k for k in case.golden
                    if k.startswith(prefix + ".") and not k.endswith(("pixel_values", "grid_thw"))]
        assert sorted(got) == sorted(expected), case.name
        for k in expected:
            assert got[k].shape == case.golden[k].shape, k
            assert _rel(got[k], case.golden[k]) <= REL, f"{case.name} {k}"


# ----------------------------------------------------------------------------------------------------------
# properties
# ----------------------------------------------------------------------------------------------------------
def test_temporal_grids_do_not_attend_to_each_other(tower):
    vc, w = tower
    grid = np.array([[3, 4, 4]])
    n = 16                                           # patches per temporal grid
    pv = _pixels(vc, grid, seed=3)
    base = enc.vision_forward(w, vc, pv, grid, record_hidden=True)
    pv2 = pv.copy()
    pv2[n:2 * n] += np.random.default_rng(4).standard_normal((n, pv.shape[1])).astype(np.float32)  # grid 1 only
    pert = enc.vision_forward(w, vc, pv2, grid, record_hidden=True)
    keep = np.r_[0:n, 2 * n:3 * n]
    g = vc.spatial_merge_size ** 2
    keep_tok = np.r_[0:n // g, 2 * n // g:3 * n // g]
    for a, b in zip(base.hidden_states, pert.hidden_states):
        np.testing.assert_array_equal(a[keep], b[keep])             # other grids: bit-identical
        assert not np.allclose(a[n:2 * n], b[n:2 * n])              # the perturbed grid did change
    for a, b in zip([base.merged] + base.deepstack, [pert.merged] + pert.deepstack):
        np.testing.assert_array_equal(a[keep_tok], b[keep_tok])
        assert not np.allclose(a[n // g:2 * n // g], b[n // g:2 * n // g])


def test_video_equals_its_frames_encoded_one_by_one(tower):
    """A t=3 video is three images sharing positions: encoding each temporal grid alone gives the same rows."""
    vc, w = tower
    grid = np.array([[3, 2, 6]])
    pv = _pixels(vc, grid, seed=5)
    merged, deep = enc.encode_vision(w, vc, pv, grid)
    n = 12
    parts = [enc.encode_vision(w, vc, pv[i * n:(i + 1) * n], np.array([[1, 2, 6]])) for i in range(3)]
    np.testing.assert_allclose(merged, np.concatenate([p[0] for p in parts]), rtol=0, atol=1e-5)
    for k in range(len(deep)):
        np.testing.assert_allclose(deep[k], np.concatenate([p[1][k] for p in parts]), rtol=0, atol=1e-5)


@pytest.mark.parametrize("budget", [2 * 24 ** 2, 2 * 48 ** 2 + 1, 1000, 7])
def test_attention_grouping_and_query_chunks_change_nothing(tower, monkeypatch, budget):
    """Small score budgets force per-segment calls and query-chunked calls: same result as one big call."""
    vc, w = tower
    grid = np.array([[2, 4, 6], [1, 2, 2]])
    pv = _pixels(vc, grid, seed=9)
    ref, ref_deep = enc.encode_vision(w, vc, pv, grid)
    monkeypatch.setattr(backend, "SCORE_BUDGET", budget)
    got, deep = enc.encode_vision(w, vc, pv, grid)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)
    for a, b in zip(deep, ref_deep):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_two_images_in_one_call_equal_two_calls(tower):
    vc, w = tower
    ga, gb = np.array([[1, 4, 2]]), np.array([[1, 2, 6]])
    pa, pb = _pixels(vc, ga, seed=6), _pixels(vc, gb, seed=7)
    both, _ = enc.encode_vision(w, vc, np.concatenate([pa, pb]), np.concatenate([ga, gb]))
    a, _ = enc.encode_vision(w, vc, pa, ga)
    b, _ = enc.encode_vision(w, vc, pb, gb)
    np.testing.assert_allclose(both, np.concatenate([a, b]), rtol=0, atol=1e-5)


def test_accepts_whole_checkpoint_or_scoped_view(tower):
    vc, w = tower
    grid = np.array([[1, 2, 2]])
    pv = _pixels(vc, grid)
    a, _ = enc.encode_vision(w, vc, pv, grid)
    b, _ = enc.encode_vision(w.weights, vc, pv, grid)      # the unscoped checkpoint
    np.testing.assert_array_equal(a, b)


def test_rope_depends_only_on_relative_offsets():
    hd = 16
    pos = np.array([[0, 0], [3, 5], [7, 1], [10, 6]])
    cos, sin = enc.rotary_cos_sin(pos, hd, 10000.0)
    rng = np.random.default_rng(8)
    q, k = rng.standard_normal(hd).astype(np.float32), rng.standard_normal(hd).astype(np.float32)
    rq = q * cos + np.concatenate([-q[hd // 2:], q[:hd // 2]]) * sin        # [4, hd]
    rk = k * cos + np.concatenate([-k[hd // 2:], k[:hd // 2]]) * sin
    # (3,5)-(0,0) and (10,6)-(7,1) are the same offset: same score
    assert rq[1] @ rk[0] == pytest.approx(float(rq[3] @ rk[2]), rel=1e-5)
    # rows and columns use separate halves of the frequencies: a pure column shift leaves the row part alone
    assert np.allclose(cos[0, :hd // 4], 1)
    assert np.allclose(cos[1, :hd // 4], np.cos(3 * 10000.0 ** (-np.arange(4) / 4)))


def test_position_embeddings_hit_table_corners():
    s, hv = 5, 3
    table = np.arange(s * s * hv, dtype=np.float32).reshape(s * s, hv)
    emb = enc.position_embeddings(table, np.array([[2, 4, 6]]), 2)              # [2*24, hv]
    pos = enc.patch_positions(np.array([[2, 4, 6]]), 2)
    corner = {(0, 0): 0, (0, 5): s - 1, (3, 0): (s - 1) * s, (3, 5): s * s - 1}
    for (r, c), t_idx in corner.items():
        rows = np.flatnonzero((pos[:, 0] == r) & (pos[:, 1] == c))
        assert len(rows) == 2                                                     # once per temporal grid
        np.testing.assert_array_equal(emb[rows], np.tile(table[t_idx], (2, 1)))


def test_patch_positions_merge_block_order():
    pos = enc.patch_positions(np.array([[1, 4, 4]]), 2)
    assert pos[:8].tolist() == [[0, 0], [0, 1], [1, 0], [1, 1], [0, 2], [0, 3], [1, 2], [1, 3]]
    np.testing.assert_array_equal(enc.segment_ids(np.array([[2, 2, 2], [1, 2, 4]])), [0] * 4 + [1] * 4 + [2] * 8)


def test_refusals(tower):
    vc, w = tower
    grid = np.array([[1, 2, 2]])
    pv = _pixels(vc, grid)
    with pytest.raises(ValueError, match="pixel_values must be"):
        enc.encode_vision(w, vc, pv[:-1], grid)
    with pytest.raises(ValueError, match="pixel_values must be"):
        enc.encode_vision(w, vc, pv[:, :-1], grid)
    with pytest.raises(ValueError, match="multiples of spatial_merge_size"):
        enc.encode_vision(w, vc, _pixels(vc, [[1, 3, 2]]), np.array([[1, 3, 2]]))
    with pytest.raises(ValueError, match="integer"):
        enc.encode_vision(w, vc, pv, grid.astype(float))
    with pytest.raises(ValueError, match="positive"):
        enc.encode_vision(w, vc, pv[:0], np.array([[0, 2, 2]]))
    bad = copy.deepcopy(vc)
    bad.deepstack_visual_indexes = [vc.depth]
    with pytest.raises(ValueError, match="outside"):
        enc.encode_vision(w, bad, pv, grid)
