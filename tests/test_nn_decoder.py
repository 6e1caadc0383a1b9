"""omniref.nn primitives and the shared decoder, against independent loop/float64 definitions."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special

from omniref import backend, nn
from omniref.decoder import Decoder, KVCache, moe, rope_cos_sin, rope_inv_freq

rng = np.random.default_rng(7)
BACKENDS = ["numpy"] + (["cpp"] if backend.available() else [])


def _naive_attention(q, k, v, allowed, scale):
    """Loops over heads and queries in float64: the textbook definition."""
    nh, Lq, hd = q.shape
    nkv = k.shape[0]
    out = np.zeros((nh, Lq, hd))
    for h in range(nh):
        kv = h // (nh // nkv)
        for i in range(Lq):
            s = np.array([q[h, i] @ k[kv, j] * scale if allowed[i, j] else -np.inf for j in range(k.shape[1])])
            if np.isinf(s).all():
                continue
            p = np.exp(s - s.max())
            out[h, i] = (p / p.sum()) @ v[kv]
    return out


@pytest.mark.parametrize("be", BACKENDS)
@pytest.mark.parametrize("nh,nkv,Lq,Lk", [(4, 4, 5, 5), (8, 2, 3, 11), (6, 3, 1, 9)])
def test_attention_masks_match_loops(be, nh, nkv, Lq, Lk):
    hd = 8
    q = rng.standard_normal((nh, Lq, hd), dtype=np.float32)
    k = rng.standard_normal((nkv, Lk, hd), dtype=np.float32)
    v = rng.standard_normal((nkv, Lk, hd), dtype=np.float32)
    qpos = np.arange(Lk - Lq, Lk)[:, None]
    kpos = np.arange(Lk)[None, :]
    with backend.use(be):
        # causal with a KV-cache offset: query i sits at position Lk - Lq + i
        got = nn.attention(q, k, v, causal=True)
        np.testing.assert_allclose(got, _naive_attention(q, k, v, kpos <= qpos, hd ** -0.5), atol=2e-6)
        # sliding window of 3 (itself and the 2 previous keys)
        got = nn.attention(q, k, v, causal=True, sliding_window=3)
        allowed = (kpos <= qpos) & (kpos > qpos - 3)
        np.testing.assert_allclose(got, _naive_attention(q, k, v, allowed, hd ** -0.5), atol=2e-6)
        if Lq == Lk:
            seg = np.repeat(np.arange(3), [2, Lq - 4, 2])
            got = nn.attention(q, k, v, segments=seg)
            np.testing.assert_allclose(got, _naive_attention(q, k, v, seg[:, None] == seg[None, :], hd ** -0.5),
                                       atol=2e-6)
        # a row that may see nothing attends to nothing (0, on both backends)
        mask = np.ones((Lq, Lk), bool)
        mask[0] = False
        got = nn.attention(q, k, v, mask=mask, scale=0.3)
        np.testing.assert_allclose(got, _naive_attention(q, k, v, mask, 0.3), atol=2e-6)
        assert np.all(got[:, 0] == 0)


def test_norms_and_activations_match_definitions():
    x = rng.standard_normal((4, 16)).astype(np.float32)
    w, b = rng.standard_normal(16).astype(np.float32), rng.standard_normal(16).astype(np.float32)
    x64 = x.astype(np.float64)
    rms = x64 / np.sqrt((x64 ** 2).mean(-1, keepdims=True) + 1e-6) * w
    np.testing.assert_allclose(nn.rms_norm(x, w, 1e-6), rms, rtol=1e-5, atol=1e-6)
    ln = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + 1e-5) * w + b
    np.testing.assert_allclose(nn.layer_norm(x, w, b, 1e-5), ln, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(nn.gelu(x), x64 * 0.5 * (1 + special.erf(x64 / math.sqrt(2))), atol=1e-6)
    tanh = 0.5 * x64 * (1 + np.tanh(math.sqrt(2 / math.pi) * (x64 + 0.044715 * x64 ** 3)))
    np.testing.assert_allclose(nn.gelu_tanh(x), tanh, atol=1e-6)
    np.testing.assert_allclose(nn.silu(x), x64 / (1 + np.exp(-x64)), atol=1e-6)
    big = np.array([-1000.0, 0.0, 1000.0], np.float32)
    with np.errstate(over="raise", invalid="raise"):   # underflow to 0 is fine, overflow is not
        assert np.allclose(nn.softmax(big), [0, 0, 1]) and np.allclose(nn.sigmoid(big), [0, 0.5, 1])
    np.testing.assert_array_equal(nn.rotate_half(np.arange(4.0)), [-2, -3, 0, 1])


def test_interleaved_mrope_slot_assignment():
    hd, sec = 32, [6, 5, 5]                # 16 frequency slots
    pos = np.stack([np.full(3, 10.0), np.full(3, 20.0), np.full(3, 30.0)]).astype(np.float32)
    cos, sin = rope_cos_sin(pos, hd, 10000.0, sec)
    angles = np.arctan2(sin[0, :16], cos[0, :16])
    inv = rope_inv_freq(hd, 10000.0)
    for i in range(16):
        row = 1 if (i % 3 == 1 and i < 3 * sec[1]) else 2 if (i % 3 == 2 and i < 3 * sec[2]) else 0
        expect = np.angle(np.exp(1j * (10.0, 20.0, 30.0)[row] * inv[i]))
        assert abs(angles[i] - expect) < 1e-4, f"slot {i}"
    # equal rows (text tokens): MRoPE is plain 1-D RoPE
    same = np.tile(np.arange(5, dtype=np.float32), (3, 1))
    np.testing.assert_array_equal(rope_cos_sin(same, hd, 1e6, sec)[0], rope_cos_sin(same[0], hd, 1e6)[0])


def test_kv_cache_grows_and_returns_all_tokens():
    c = KVCache()
    chunks = [rng.standard_normal((2, n, 4), dtype=np.float32) for n in (3, 1, 20, 1)]
    for ch in chunks:
        k, v = c.append(0, ch, ch * 2)
    np.testing.assert_array_equal(k, np.concatenate(chunks, axis=1))
    np.testing.assert_array_equal(v, 2 * np.concatenate(chunks, axis=1))
    assert len(c) == 25


def _moe_weights(E, H, I, shared):
    w = {"gate.weight": rng.standard_normal((E, H), dtype=np.float32)}
    for e in range(E):
        for n, s in (("gate_proj", (I, H)), ("up_proj", (I, H)), ("down_proj", (H, I))):
            w[f"experts.{e}.{n}.weight"] = rng.standard_normal(s, dtype=np.float32) * np.float32(0.3)
    if shared:
        for n, s in (("gate_proj", (I, H)), ("up_proj", (I, H)), ("down_proj", (H, I))):
            w[f"shared_expert.{n}.weight"] = rng.standard_normal(s, dtype=np.float32) * np.float32(0.3)
        w["shared_expert_gate.weight"] = rng.standard_normal((1, H), dtype=np.float32)
    return w


@pytest.mark.parametrize("norm,shared", [(True, False), (False, True)])
def test_moe_equals_dense_mixture(norm, shared):
    """Dense-equivalent check: running EVERY expert on every token and mixing with the top-k weights gives
    the same output as the grouped sparse computation."""
    E, H, I, k, L = 6, 8, 5, 2, 9
    w = _moe_weights(E, H, I, shared)
    x = rng.standard_normal((L, H), dtype=np.float32)
    stats = []
    got = moe(x, w, "", E, k, norm, stats=stats, shared_expert=shared)
    x64 = x.astype(np.float64)
    logits = x64 @ w["gate.weight"].T
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)

    def mlp(pre):
        g, u = x64 @ w[pre + "gate_proj.weight"].T, x64 @ w[pre + "up_proj.weight"].T
        return (g / (1 + np.exp(-g)) * u) @ w[pre + "down_proj.weight"].T
    dense = np.stack([mlp(f"experts.{e}.") for e in range(E)], axis=1)       # [L, E, H]
    mix = np.zeros((L, E))
    for t in range(L):
        top = np.argsort(-p[t])[:k]
        mix[t, top] = p[t, top] / (p[t, top].sum() if norm else 1.0)
    want = np.einsum("le,leh->lh", mix, dense)
    if shared:
        want += mlp("shared_expert.") / (1 + np.exp(-(x64 @ w["shared_expert_gate.weight"].T)))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert stats[0].experts.shape == (L, k) and np.allclose(stats[0].probs.sum(-1), 1, atol=1e-6)


def test_moe_never_reads_unchosen_experts():
    E, H, I = 8, 4, 3
    w = _moe_weights(E, H, I, False)
    w["gate.weight"][:] = 0
    w["gate.weight"][2] = 5.0                       # every token prefers expert 2, then 5
    w["gate.weight"][5] = 2.0
    x = np.abs(rng.standard_normal((3, H), dtype=np.float32)) + 0.1

    class Guard(dict):
        def __getitem__(self, key):
            if key.startswith("experts.") and key.split(".")[1] not in ("2", "5"):
                raise AssertionError(f"read unchosen expert weight {key}")
            return super().__getitem__(key)
    moe(x, Guard(w), "", E, 2, True)


def test_decoder_cache_matches_full_recompute():
    H, nh, nkv, hd, L = 16, 4, 2, 4, 7
    w = {"norm.weight": np.ones(H, np.float32)}
    for i in range(2):
        p = f"layers.{i}."
        w.update({p + "input_layernorm.weight": rng.random(H, dtype=np.float32) + 0.5,
                  p + "post_attention_layernorm.weight": rng.random(H, dtype=np.float32) + 0.5,
                  p + "self_attn.q_proj.weight": rng.standard_normal((nh * hd, H), dtype=np.float32) * 0.3,
                  p + "self_attn.k_proj.weight": rng.standard_normal((nkv * hd, H), dtype=np.float32) * 0.3,
                  p + "self_attn.v_proj.weight": rng.standard_normal((nkv * hd, H), dtype=np.float32) * 0.3,
                  p + "self_attn.o_proj.weight": rng.standard_normal((H, nh * hd), dtype=np.float32) * 0.3,
                  p + "mlp.gate_proj.weight": rng.standard_normal((8, H), dtype=np.float32) * 0.3,
                  p + "mlp.up_proj.weight": rng.standard_normal((8, H), dtype=np.float32) * 0.3,
                  p + "mlp.down_proj.weight": rng.standard_normal((H, 8), dtype=np.float32) * 0.3})
    dec = Decoder(w, 2, nh, nkv, hd, 1e-6, sliding_window=4, qk_norm=False)
    x = rng.standard_normal((L, H), dtype=np.float32)
    cos, sin = rope_cos_sin(np.arange(L, dtype=np.float32), hd, 100.0)
    full = dec.forward(x, cos, sin)
    cache = KVCache()
    parts = [dec.forward(x[:4], cos[:4], sin[:4], cache)]
    for t in range(4, L):
        parts.append(dec.forward(x[t:t + 1], cos[t:t + 1], sin[t:t + 1], cache))
    np.testing.assert_allclose(np.concatenate(parts), full, rtol=1e-5, atol=1e-5)
    hs = []
    dec.forward(x, cos, sin, hidden_states=hs)
    assert len(hs) == 3 and hs[0] is x and np.allclose(hs[-1], full)


def test_decoder_variants_come_from_the_config():
    """QK-norm, shared expert, layer scale and MoE layers follow the config fields, not the weight keys."""
    from omniref.config import OmniConfig
    from omniref.tiny import tiny_config
    cfg = OmniConfig.from_dict(tiny_config())
    thinker = Decoder.from_config({}, cfg.thinker_config.text_config)
    talker = Decoder.from_config({}, cfg.talker_config.text_config)
    predictor = Decoder.from_config({}, cfg.talker_config.code_predictor_config, num_experts=0)
    code2wav = Decoder.from_config({}, cfg.code2wav_config)
    assert thinker.qk_norm and not thinker.shared_expert and not thinker.layer_scale and thinker.is_moe_layer(0)
    assert talker.shared_expert and all(talker.is_moe_layer(i) for i in range(talker.num_layers))
    assert predictor.qk_norm and not predictor.is_moe_layer(0)
    assert code2wav.layer_scale and not code2wav.qk_norm and not code2wav.is_moe_layer(0)


def test_a_missing_weight_is_an_error_naming_the_key():
    """A checkpoint without a layer's q_norm no longer runs a different model: the key is named."""
    from omniref.errors import CheckpointError
    H, nh, nkv, hd, L = 8, 2, 1, 4, 3
    w = {"norm.weight": np.ones(H, np.float32)}
    for name, shape in (("input_layernorm.weight", (H,)), ("post_attention_layernorm.weight", (H,)),
                        ("self_attn.q_proj.weight", (nh * hd, H)), ("self_attn.k_proj.weight", (nkv * hd, H)),
                        ("self_attn.v_proj.weight", (nkv * hd, H)), ("self_attn.o_proj.weight", (H, nh * hd)),
                        ("self_attn.k_norm.weight", (hd,)), ("mlp.gate_proj.weight", (5, H)),
                        ("mlp.up_proj.weight", (5, H)), ("mlp.down_proj.weight", (H, 5))):
        w["layers.0." + name] = rng.standard_normal(shape).astype(np.float32)
    x = rng.standard_normal((L, H)).astype(np.float32)
    cos, sin = rope_cos_sin(np.arange(L), hd, 100.0)
    with pytest.raises(CheckpointError, match="layers.0.self_attn.q_norm.weight"):
        Decoder(w, 1, nh, nkv, hd, 1e-6).forward(x, cos, sin)
    assert isinstance(CheckpointError("x"), ValueError)
    w["layers.0.self_attn.q_norm.weight"] = np.ones(hd, np.float32)
    assert Decoder(w, 1, nh, nkv, hd, 1e-6).forward(x, cos, sin).shape == (L, H)
