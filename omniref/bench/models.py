"""Whole-model benchmarks: the thinker text decoder (prefill, decode), Code2Wav and the audio encoder at the
sizes of ../shared/bench, with seeded random weights, on both backends."""
from __future__ import annotations

import time

import numpy as np

from .. import _native, backend
from ..backend import ops
from ..audio.encoder import audio_encoder
from ..checkpoint import expected_shapes
from ..codec.code2wav import Code2Wav
from ..config import AudioEncoderConfig, Code2WavConfig, load_config
from ..decoder import Decoder, KVCache, rope_cos_sin
from ..tiny import _draw, tiny_config, tiny_weights
from .timing import both, load_json, settle


class DictWeights(dict):
    """In-memory weights with the `scope(prefix)` view the model code expects of omniref.weights.Weights."""

    def scope(self, prefix: str) -> "DictWeights":
        return DictWeights({k[len(prefix):]: v for k, v in self.items() if k.startswith(prefix)})


def _random(shape, rng, scale=None) -> np.ndarray:
    scale = 1.0 / np.sqrt(shape[-1]) if scale is None else scale
    return (rng.standard_normal(shape, dtype=np.float32) * np.float32(scale))


def bench_thinker(quick: bool) -> dict:
    work = load_json("bench_inputs.json")["thinker"]
    c = load_json(work["config"])
    layers = 2 if quick else c["num_hidden_layers"]
    H, nh, nkv, hd = c["hidden_size"], c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
    E, I, V = c["num_experts"], c["moe_intermediate_size"], c["vocab_size"]
    rng = np.random.default_rng(work.get("seed", 0) if "seed" in work else 0)
    w = {"norm.weight": np.ones(H, np.float32)}
    for i in range(layers):
        p = f"layers.{i}."
        w.update({p + "input_layernorm.weight": np.ones(H, np.float32),
                  p + "post_attention_layernorm.weight": np.ones(H, np.float32),
                  p + "self_attn.q_proj.weight": _random((nh * hd, H), rng),
                  p + "self_attn.k_proj.weight": _random((nkv * hd, H), rng),
                  p + "self_attn.v_proj.weight": _random((nkv * hd, H), rng),
                  p + "self_attn.o_proj.weight": _random((H, nh * hd), rng),
                  p + "self_attn.q_norm.weight": np.ones(hd, np.float32),
                  p + "self_attn.k_norm.weight": np.ones(hd, np.float32),
                  p + "mlp.gate.weight": _random((E, H), rng)})
        for e in range(E):
            q = f"{p}mlp.experts.{e}."
            w.update({q + "gate_proj.weight": _random((I, H), rng), q + "up_proj.weight": _random((I, H), rng),
                      q + "down_proj.weight": _random((H, I), rng)})
    for a in w.values():
        a.setflags(write=False)     # model weights are constants (as a checkpoint's are): kernels may pre-pack
    embed = rng.standard_normal((V, H), dtype=np.float32)
    lm_head = _random((V, H), rng)
    dec = Decoder(w, layers, nh, nkv, hd, c["rms_norm_eps"], E, c["num_experts_per_tok"], c["norm_topk_prob"])
    theta, sec = c["rope_parameters"]["rope_theta"], c["rope_parameters"].get("mrope_section")
    L, new = (128, 8) if quick else (work["prompt_tokens"], work["new_tokens"])
    ids = rng.integers(0, V, L)

    def pos3(start, n):  # text tokens: the three MRoPE rows are equal
        return np.tile(np.arange(start, start + n, dtype=np.float32), (3, 1))

    def run():
        cache = KVCache()
        t0 = time.perf_counter()
        cos, sin = rope_cos_sin(pos3(0, L), hd, theta, sec)
        h = dec.forward(embed[ids], cos, sin, cache)
        tok = int(np.argmax(ops.linear(h[-1:], lm_head)[0]))
        t1 = time.perf_counter()
        for s in range(new - 1):  # greedy decode, logits only for the last position
            cos, sin = rope_cos_sin(pos3(L + s, 1), hd, theta, sec)
            h = dec.forward(embed[[tok]], cos, sin, cache)
            tok = int(np.argmax(ops.linear(h, lm_head)[0]))
        return t1 - t0, (new - 1) / (time.perf_counter() - t1)

    res = {"layers": layers, "prompt_tokens": L, "new_tokens": new}
    for name in ("numpy", "cpp"):
        with backend.use(name):
            settle()
            runs = [run() for _ in range(1 if quick else 2)]
        res[f"{name}_prefill_s"] = min(r[0] for r in runs)
        res[f"{name}_decode_tok_s"] = max(r[1] for r in runs)
    # Same model with its projection matrices kept as bfloat16 (the weights rounded once; activations fp32):
    # decode streams half the weight bytes.
    w32 = dict(w)
    dec.weights = {k: _native.BF16Weight.from_float32(v) if v.ndim == 2 else v for k, v in w32.items()}
    lm_head32, lm_head = lm_head, _native.BF16Weight.from_float32(lm_head)
    with backend.use("cpp"):
        settle()
        runs = [run() for _ in range(1 if quick else 2)]
    res["cpp_bf16_prefill_s"] = min(r[0] for r in runs)
    res["cpp_bf16_decode_tok_s"] = max(r[1] for r in runs)
    dec.weights, lm_head = w32, lm_head32
    res["prefill_ratio"] = res["numpy_prefill_s"] / res["cpp_prefill_s"]
    res["decode_ratio"] = res["cpp_decode_tok_s"] / res["numpy_decode_tok_s"]
    res.update(target_ratio=2.0, hf_reference_prefill_s=0.69, hf_reference_decode_tok_s=27.0,
               decode_vs_hf=res["cpp_decode_tok_s"] / 27.0, target_decode_vs_hf=1.5)
    return res


def random_code2wav(cfg: dict, seed: int = 0) -> Code2Wav:
    """A Code2Wav of config `cfg` (a code2wav_config dict) with omniref.tiny's seeded random weights."""
    full = {**tiny_config(), "code2wav_config": cfg}
    w = {k[len("code2wav."):]: v for k, v in tiny_weights(full, seed).items() if k.startswith("code2wav.")}
    for a in w.values():
        a.setflags(write=False)  # constants, as a checkpoint's weights are (the cpp backend may pre-pack them)
    return Code2Wav(Code2WavConfig.from_dict(cfg), w)


def bench_code2wav(quick: bool) -> dict:
    work = load_json("bench_inputs.json")["code2wav"]
    model = random_code2wav(load_json(work["config"]), 0)
    T = 10 if quick else work["code_frames"]
    codes = np.random.default_rng(0).integers(0, model.cfg.codebook_size, (model.cfg.num_quantizers, T))
    t = both(lambda: model.forward_one(codes), 1 if quick else 2)
    seconds = model.output_length(T) / work["sample_rate"]
    return {"frames": T, "audio_s": seconds, "numpy_s": t["numpy"], "cpp_s": t["cpp"],
            "ratio": t["numpy"] / t["cpp"], "cpp_real_time_factor": t["cpp"] / seconds,
            "hf_reference_s_for_50_frames": 2.7}


def bench_audio(quick: bool) -> dict:
    work = load_json("bench_inputs.json")["audio_encoder"]
    acfg = load_json(work["config"])
    full = tiny_config()
    full["thinker_config"]["audio_config"] = acfg
    pre = "thinker.audio_tower."
    shapes = expected_shapes(load_config(full), ["audio"])
    w = DictWeights({k[len(pre):]: _draw(k, s, 0) for k, s in shapes.items()})
    for a in w.values():
        a.setflags(write=False)  # constants, as a checkpoint's weights are
    cfg = AudioEncoderConfig.from_dict(acfg)
    T = 500 if quick else work["mel_frames"]
    feats = np.random.default_rng(0).standard_normal((acfg["num_mel_bins"], T), dtype=np.float32)
    t = both(lambda: audio_encoder(w, cfg, feats, [T]), 1 if quick else 2)
    return {"mel_frames": T, "numpy_s": t["numpy"], "cpp_s": t["cpp"], "ratio": t["numpy"] / t["cpp"],
            "hf_reference_s_for_3000_frames": 1.1}
