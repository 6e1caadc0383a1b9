"""Code2Wav: goldens, plus an independent float64 re-implementation written from
docs/golden_format.md §6.8 with naive loops.

Golden checks run on every case holding `code2wav.codes`. The other tests use seeded random weights
(omniref.tiny's drawing rules, with SnakeBeta / layer-scale / norm parameters re-drawn away from their
constant initial values so that a wrong broadcast or a missing exp() shows) and small configs that exercise
what the shared goldens do not: a sliding window shorter than the sequence, GQA, odd kernel/stride ratios.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy.special import erf

from omniref import backend
from omniref.codec import code2wav
from omniref.codec.code2wav import Code2Wav, embed_codes, output_length, pre_transformer
from omniref.nn import causal_conv, causal_trans_conv, depthwise_causal_conv, snake_beta
from omniref.stages import code2wav_stage as golden_stage
from omniref.config import Code2WavConfig
from omniref.golden import Case
from omniref.tiny import tiny_config, tiny_weights

F64 = np.float64


def _rel(a, b):
    return float(np.abs(np.asarray(a, F64) - b).max() / max(np.abs(b).max(), 1e-12))


def small_config(**over) -> dict:
    c = dict(tiny_config()["code2wav_config"])
    c.update(codebook_size=16, num_quantizers=4, hidden_size=16, num_attention_heads=4, num_key_value_heads=2,
             intermediate_size=24, sliding_window=3, upsample_rates=[3, 2], upsampling_ratios=[2],
             decoder_dim=16, num_hidden_layers=2)
    c.update(over)
    return c


def small_weights(cfg: dict, seed: int = 0) -> dict:
    w = {k[len("code2wav."):]: v for k, v in tiny_weights({**tiny_config(), "code2wav_config": cfg}, seed).items()
         if k.startswith("code2wav.")}
    rng = np.random.default_rng(seed + 100)
    for k, v in w.items():
        if k.endswith((".alpha", ".beta", ".scale", ".gamma", "norm.weight", "norm.bias")):
            w[k] = (0.5 * rng.standard_normal(v.shape) + (0.0 if k.endswith(("alpha", "beta", "bias")) else 1.0)
                    ).astype(np.float32)
    return w


# ---------------------------------------------------------------------------------------------------------
# Independent reference (float64, loops straight from the definitions)
# ---------------------------------------------------------------------------------------------------------
def ref_conv(x, W, b, d=1):
    """y[o, t] = b[o] + Σ_c Σ_j W[o, c, j] x[c, t - d(K-1-j)], zeros before the start."""
    Cout, Cin, K = W.shape
    N = x.shape[1]
    y = np.tile(b.astype(F64)[:, None], (1, N))
    for j in range(K):
        shift = d * (K - 1 - j)
        for t in range(shift, N):
            y[:, t] += W[:, :, j].astype(F64) @ x[:, t - shift]
    return y


def ref_trans_conv(x, W, b, r):
    """PyTorch ConvTranspose1d (full length (n-1)r + K), then K - r dropped at both ends."""
    Cin, Cout, K = W.shape
    n = x.shape[1]
    full = np.zeros((Cout, (n - 1) * r + K))
    for t in range(n):
        for k in range(K):
            full[:, t * r + k] += W[:, :, k].astype(F64).T @ x[:, t]
    full += b[:, None]
    return full[:, K - r:full.shape[1] - (K - r)]


def ref_snake(x, a, bt):
    return x + np.sin(x * np.exp(a.astype(F64))[:, None]) ** 2 / (np.exp(bt.astype(F64))[:, None] + 1e-9)


def ref_forward(codes, w, c):
    """The whole of docs/golden_format.md §6.8 in float64.  codes [Q, T] -> [S]"""
    return ref_convnet(ref_pre_transformer(codes, w, c).T, w, c)


def ref_pre_transformer(codes, w, c):
    """Embedding average and the sliding-window transformer.  codes [Q, T] -> [T, H]"""
    w = {k: v.astype(F64) for k, v in w.items()}
    Q, T = codes.shape
    x = np.mean([w["code_embedding.weight"][codes[q] + q * c["codebook_size"]] for q in range(Q)], axis=0)
    nh, nkv, H = c["num_attention_heads"], c["num_key_value_heads"], c["hidden_size"]
    hd, eps, win = H // nh, c["rms_norm_eps"], c["sliding_window"]
    ang = np.arange(T)[:, None] * c["rope_parameters"]["rope_theta"] ** (-np.arange(0, hd, 2) / hd)
    cos, sin = np.cos(ang), np.sin(ang)                                     # [T, hd/2]

    def rope(v):                                                            # [T, h, hd], split-half pairs
        a, b_ = v[..., :hd // 2], v[..., hd // 2:]
        return np.concatenate([a * cos[:, None] - b_ * sin[:, None], b_ * cos[:, None] + a * sin[:, None]], -1)

    def rms(v, g):
        return v / np.sqrt(np.mean(v * v, -1, keepdims=True) + eps) * g

    for i in range(c["num_hidden_layers"]):
        p = f"pre_transformer.layers.{i}."
        h = rms(x, w[p + "input_layernorm.weight"])
        q = rope((h @ w[p + "self_attn.q_proj.weight"].T).reshape(T, nh, hd))
        k = rope((h @ w[p + "self_attn.k_proj.weight"].T).reshape(T, nkv, hd))
        v = (h @ w[p + "self_attn.v_proj.weight"].T).reshape(T, nkv, hd)
        o = np.zeros((T, nh, hd))
        for head in range(nh):
            kv = head // (nh // nkv)
            for t in range(T):
                keys = range(max(0, t - win + 1), t + 1)                    # the sliding window, self included
                s = np.array([q[t, head] @ k[j, kv] for j in keys]) / np.sqrt(hd)
                pr = np.exp(s - s.max())
                o[t, head] = (pr / pr.sum()) @ v[list(keys), kv]
        x = x + w[p + "self_attn_layer_scale.scale"] * (o.reshape(T, H) @ w[p + "self_attn.o_proj.weight"].T)
        h = rms(x, w[p + "post_attention_layernorm.weight"])
        g = h @ w[p + "mlp.gate_proj.weight"].T
        m = (g / (1 + np.exp(-g)) * (h @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T
        x = x + w[p + "mlp_layer_scale.scale"] * m
    return rms(x, w["pre_transformer.norm.weight"])


def ref_convnet(x, w, c):
    """Upsampling stages and decoder.  x [H, T] (pre-transformer output, channels first) -> [S]"""
    w = {k: v.astype(F64) for k, v in w.items()}
    for u, r in enumerate(c["upsampling_ratios"]):
        p = f"upsample.{u}."
        x = ref_trans_conv(x, w[p + "0.conv.weight"], w[p + "0.conv.bias"], r)
        y = np.stack([ref_conv(x[ch:ch + 1], w[p + "1.dwconv.conv.weight"][ch:ch + 1],
                               w[p + "1.dwconv.conv.bias"][ch:ch + 1])[0] for ch in range(x.shape[0])]).T
        y = (y - y.mean(-1, keepdims=True)) / np.sqrt(y.var(-1, keepdims=True) + 1e-6)
        y = y * w[p + "1.norm.weight"] + w[p + "1.norm.bias"]
        y = y @ w[p + "1.pwconv1.weight"].T + w[p + "1.pwconv1.bias"]
        y = 0.5 * y * (1 + erf(y / np.sqrt(2)))
        y = y @ w[p + "1.pwconv2.weight"].T + w[p + "1.pwconv2.bias"]
        x = x + (w[p + "1.gamma"] * y).T
    x = ref_conv(x, w["decoder.0.conv.weight"], w["decoder.0.conv.bias"])
    for bi, r in enumerate(c["upsample_rates"]):
        p = f"decoder.{bi + 1}.block."
        x = ref_snake(x, w[p + "0.alpha"], w[p + "0.beta"])
        x = ref_trans_conv(x, w[p + "1.conv.weight"], w[p + "1.conv.bias"], r)
        for j, d in zip((2, 3, 4), (1, 3, 9)):
            q_ = f"{p}{j}."
            h = ref_snake(x, w[q_ + "act1.alpha"], w[q_ + "act1.beta"])
            h = ref_conv(h, w[q_ + "conv1.conv.weight"], w[q_ + "conv1.conv.bias"], d)
            h = ref_snake(h, w[q_ + "act2.alpha"], w[q_ + "act2.beta"])
            x = x + ref_conv(h, w[q_ + "conv2.conv.weight"], w[q_ + "conv2.conv.bias"])
    n = len(c["upsample_rates"])
    x = ref_snake(x, w[f"decoder.{n + 1}.alpha"], w[f"decoder.{n + 1}.beta"])
    x = ref_conv(x, w[f"decoder.{n + 2}.conv.weight"], w[f"decoder.{n + 2}.conv.bias"])
    return np.clip(x[0], -1, 1)


# ---------------------------------------------------------------------------------------------------------
# Goldens
# ---------------------------------------------------------------------------------------------------------
def test_golden_code2wav(golden_cases):
    cases = [c for c in map(Case, golden_cases) if c.config is not None and "code2wav.codes" in c.golden]
    if not cases:
        pytest.skip("no golden case with code2wav.codes")
    for case in cases:
        out = golden_stage(case)
        keys = [k for k in ("code2wav.wav", "code2wav.wav_chunked") if k in case.golden]
        assert sorted(out) == sorted(keys), case.name
        for k in keys:
            assert out[k].shape == case.golden[k].shape, (case.name, k)
            assert _rel(out[k], case.golden[k]) <= 1e-4, (case.name, k, _rel(out[k], case.golden[k]))


# ---------------------------------------------------------------------------------------------------------
# Building blocks against the naive definitions
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("K,d", [(7, 1), (7, 3), (7, 9), (1, 1), (4, 2)])
def test_causal_conv(K, d):
    rng = np.random.default_rng(K * 10 + d)
    x = rng.standard_normal((5, 40)).astype(np.float32)
    W, b = rng.standard_normal((3, 5, K)).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    assert _rel(causal_conv(x.T, W, b, d).T, ref_conv(x.astype(F64), W, b, d)) < 1e-6   # ours is time-major


def test_depthwise_causal_conv():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 30)).astype(np.float32)
    W, b = rng.standard_normal((4, 1, 7)).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    ref = np.stack([ref_conv(x[c:c + 1].astype(F64), W[c:c + 1], b[c:c + 1])[0] for c in range(4)])
    assert _rel(depthwise_causal_conv(x.T, W, b).T, ref) < 1e-6


@pytest.mark.parametrize("K,r", [(2, 2), (16, 8), (6, 3), (5, 2), (3, 3)])
def test_causal_trans_conv(K, r):
    rng = np.random.default_rng(K * 10 + r)
    x = rng.standard_normal((5, 9)).astype(np.float32)
    W, b = rng.standard_normal((5, 3, K)).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    y = causal_trans_conv(x.T, W, b, r)                                     # [samples, channels]
    assert y.shape == ((9 + 1) * r - K, 3)
    assert _rel(y.T, ref_trans_conv(x.astype(F64), W, b, r)) < 1e-6


def test_snake_beta():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 50)).astype(np.float32)
    a, bt = rng.standard_normal(3).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    x_in = x.copy()
    assert _rel(snake_beta(x.T, a, bt).T, ref_snake(x.astype(F64), a, bt)) < 1e-6
    assert np.array_equal(x, x_in)                                          # the input is not modified


# ---------------------------------------------------------------------------------------------------------
# The whole model against the independent reference
# ---------------------------------------------------------------------------------------------------------
CONFIGS = [{}, {"num_key_value_heads": 1, "upsample_rates": [2, 3, 2]}]


@pytest.mark.parametrize("over", CONFIGS)
def test_pre_transformer_matches_independent_reference(over):
    """T = 9 frames with sliding_window 3: the window really cuts (the shared goldens are shorter than 72)."""
    cfg = small_config(**over)
    w = small_weights(cfg)
    model = Code2Wav(cfg, w)
    codes = np.random.default_rng(3).integers(0, cfg["codebook_size"], (cfg["num_quantizers"], 9))
    x = pre_transformer(embed_codes(codes, w["code_embedding.weight"], cfg["codebook_size"]), model.w, model.cfg)
    assert x.dtype == np.float32
    assert _rel(x, ref_pre_transformer(codes, w, cfg)) < 1e-5


@pytest.mark.parametrize("over", CONFIGS)
def test_vocoder_matches_independent_reference_in_float64(over, monkeypatch):
    """Run in float64, the convolutional part must agree with the loop reference to rounding (1e-10): this
    checks the algorithm exactly, independent of float32 noise growing through the random decoder.
    (nn.layer_norm and nn.gelu use float32 constants by design, so float64 versions stand in here.)"""
    def layer_norm64(x, weight, bias, eps):
        c = x - x.mean(-1, keepdims=True)
        return c / np.sqrt((c * c).mean(-1, keepdims=True) + eps) * weight + bias
    monkeypatch.setitem(backend.OPS, "layer_norm", (layer_norm64, None))
    monkeypatch.setitem(backend.OPS, "gelu", (lambda x: 0.5 * x * (1 + erf(x / np.sqrt(2))), None))
    cfg = small_config(**over)
    w64 = {k: v.astype(F64) for k, v in small_weights(cfg).items()}
    x = np.random.default_rng(7).standard_normal((6, cfg["hidden_size"]))   # [T, Hc]
    wav = Code2Wav(cfg, w64).vocode(x)
    ref = ref_convnet(x.T, w64, cfg)
    assert wav.dtype == F64 and wav.shape == ref.shape
    assert np.abs(ref).max() > 1e-2                                         # a real signal, not all zeros
    assert _rel(wav, ref) < 1e-10


@pytest.mark.parametrize("over", CONFIGS)
def test_forward_matches_independent_reference(over):
    """End to end in float32 against the float64 reference, at the golden tolerance (rel <= 1e-4), or within
    twice float32's own noise where this random decoder amplifies it beyond that.

    The noise is measured, not assumed: the NumPy specification's vocoder run on its own input with a
    float32-ulp of random noise (what any float32 evaluation order adds). For the second config it reaches
    5e-5..1.1e-4 (the random SnakeBeta gains amplify input rounding ~40x), so a fixed 1e-4 failed on ulp-level
    reorderings (a new attention tile order gave 1.04e-4) while a real bug (a wrong eps, a missing bias, a
    swapped rotary half) gives 1e-3 and more and fails either way."""
    cfg = small_config(**over)
    w = small_weights(cfg)
    model = Code2Wav(cfg, w)
    codes = np.random.default_rng(3).integers(0, cfg["codebook_size"], (cfg["num_quantizers"], 7))
    wav = model(codes)
    ref = ref_forward(codes, w, cfg)
    assert wav.dtype == np.float32 and wav.shape == ref.shape == (output_length(7, model.cfg),)
    with backend.use("numpy"):
        x = pre_transformer(embed_codes(codes, model.w["code_embedding.weight"], cfg["codebook_size"]),
                            model.w, model.cfg)                                    # [T, Hc] float32
        rng = np.random.default_rng(0)
        ulp = np.float32(2.0 ** -24)
        noise = max(_rel(model.vocode((x * (1 + rng.choice([-1, 0, 1], x.shape) * ulp)).astype(np.float32)),
                         ref) for _ in range(4))
    assert noise < 2e-4                                  # the specification itself stays near the golden bound
    assert _rel(wav, ref) < max(1e-4, 2 * noise)


def test_output_length_formula():
    cfg = Code2WavConfig()                                                  # the published model's rates
    for T in (1, 2, 13, 50, 300):
        assert output_length(T, cfg) == 1920 * T - 555
    small = Code2WavConfig.from_dict(small_config())
    model = Code2Wav(small, small_weights(small_config()))
    for T in (1, 2, 5):
        codes = np.zeros((small.num_quantizers, T), np.int64)
        assert model(codes).shape == (model.output_length(T),)


def test_batch_layout():
    cfg = small_config()
    model = Code2Wav(cfg, small_weights(cfg))
    codes = np.random.default_rng(4).integers(0, 16, (2, 4, 5))
    wav = model(codes)
    assert wav.shape == (2, 1, model.output_length(5))
    assert np.array_equal(wav[1, 0], model(codes[1]))


def test_prefix_property_and_chunking_with_full_context():
    """Every op is causal and the trims drop exactly the samples that need unseen frames, so decoding a
    prefix of the codes reproduces the start of the one-shot waveform; chunks with full left context
    therefore equal the matching one-shot samples, each chunk ending output_length(...) short."""
    cfg = small_config()
    model = Code2Wav(cfg, small_weights(cfg))
    T, cs = 11, 4
    codes = np.random.default_rng(5).integers(0, 16, (4, T))
    full = model(codes)
    U = model.total_upsample
    chunked = model.chunked_decode(codes, chunk_size=cs, left_context_size=T)
    expected = np.concatenate([full[s * U:s * U + model.output_length(min(s + cs, T) - s)]
                               for s in range(0, T, cs)])
    assert chunked.shape == expected.shape
    assert np.abs(chunked - expected).max() <= 1e-6 * max(1.0, np.abs(full).max())


def test_chunked_decode_reference_rule():
    """Limited left context: chunk c is the forward over codes[start-ctx:end] minus ctx frames of samples."""
    cfg = small_config()
    model = Code2Wav(cfg, small_weights(cfg))
    codes = np.random.default_rng(6).integers(0, 16, (1, 4, 10))
    out = model.chunked_decode(codes, chunk_size=3, left_context_size=2)
    U, parts = model.total_upsample, []
    for start in range(0, 10, 3):
        ctx = 2 if start - 2 > 0 else start                                  # the reference's rule
        parts.append(model(codes[:, :, start - ctx:min(start + 3, 10)])[..., ctx * U:])
    assert out.shape == (1, 1, sum(p.shape[-1] for p in parts))
    assert np.array_equal(out, np.concatenate(parts, axis=-1))


# ---------------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------------
def test_bad_codes_are_rejected_with_numbers():
    cfg = small_config()
    model = Code2Wav(cfg, small_weights(cfg))
    good = np.zeros((4, 3), np.int64)
    with pytest.raises(ValueError, match="expected 4 quantizers.*got 3"):
        model(good[:3])
    with pytest.raises(ValueError, match=r"code 16 is outside \[0, 16\)"):
        model(np.where(np.arange(3) == 1, 16, good))
    with pytest.raises(ValueError, match=r"code -1 is outside"):
        model.chunked_decode(good - 1, 2, 1)
    with pytest.raises(ValueError, match="integers"):
        model(good.astype(np.float32))
    with pytest.raises(ValueError, match="no frames"):
        model(np.zeros((4, 0), np.int64))
    with pytest.raises(ValueError, match="chunk_size"):
        model.chunked_decode(good, 0, 1)
    with pytest.raises(ValueError, match="left_context_size"):
        model.chunked_decode(good, 2, -1)
    with pytest.raises(ValueError, match="code_embedding.weight"):
        Code2Wav(small_config(num_quantizers=5), small_weights(cfg))
