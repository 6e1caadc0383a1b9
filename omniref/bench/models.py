"""Whole-model benchmarks: the thinker text decoder (prefill, decode), Code2Wav and the audio encoder at the
sizes of ../shared/bench, with seeded random weights, on both backends."""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

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
from .torchref import NOT_INSTALLED, reference_module, time_reference, with_target


class DictWeights(dict):
    """In-memory weights with the `scope(prefix)` view the model code expects of omniref.weights.Weights."""

    def scope(self, prefix: str) -> "DictWeights":
        return DictWeights({k[len(prefix):]: v for k, v in self.items() if k.startswith(prefix)})


def _random(shape, rng, scale=None) -> np.ndarray:
    scale = 1.0 / np.sqrt(shape[-1]) if scale is None else scale
    return (rng.standard_normal(shape, dtype=np.float32) * np.float32(scale))


@dataclass
class BenchThinker:
    """The thinker text decoder of thinker_text_bench.json with seeded random weights, and its workload."""
    dec: Decoder
    embed: np.ndarray               # [V, H]
    lm_head: object                 # [V, H] float32 or BF16Weight
    head_dim: int
    theta: float
    mrope_section: list | None
    ids: np.ndarray                 # [L] prompt ids
    new_tokens: int
    layers: int

    def rope(self, start: int, n: int):
        """cos, sin [n, hd] for positions start..start+n-1 (text tokens: the three MRoPE rows are equal)."""
        pos = np.tile(np.arange(start, start + n, dtype=np.float32), (3, 1))     # [3, n]
        return rope_cos_sin(pos, self.head_dim, self.theta, self.mrope_section)

    def prefill(self, cache: KVCache) -> int:
        """The prompt in one forward -> the greedy next token (logits for the last position only)."""
        h = self.dec.forward(self.embed[self.ids], *self.rope(0, len(self.ids)), cache)    # [L, H]
        return int(np.argmax(ops.linear(h[-1:], self.lm_head)[0]))

    def step(self, tok: int, cache: KVCache) -> int:
        """One greedy decode step after the cached tokens -> the next token."""
        h = self.dec.forward(self.embed[[tok]], *self.rope(len(cache), 1), cache)          # [1, H]
        return int(np.argmax(ops.linear(h, self.lm_head)[0]))

    def run(self, tokens: list | None = None) -> tuple[float, float]:
        """Prefill + new_tokens - 1 decode steps from an empty cache -> (prefill seconds, decode tokens/s);
        the greedy tokens are appended to `tokens` if given."""
        cache = KVCache()
        t0 = time.perf_counter()
        tok = self.prefill(cache)
        t1 = time.perf_counter()
        made = [tok]
        for _ in range(self.new_tokens - 1):
            tok = self.step(tok, cache)
            made.append(tok)
        dt = time.perf_counter() - t1
        if tokens is not None:
            tokens.extend(made)
        return t1 - t0, (self.new_tokens - 1) / dt

    @contextlib.contextmanager
    def bf16(self):
        """The same model with its projection matrices kept as bfloat16 (rounded once; activations fp32):
        decode streams half the weight bytes."""
        w32, head32 = self.dec.weights, self.lm_head
        self.dec.weights = {k: _native.BF16Weight.from_float32(v) if v.ndim == 2 else v for k, v in w32.items()}
        self.lm_head = _native.BF16Weight.from_float32(head32)
        try:
            yield self
        finally:
            self.dec.weights, self.lm_head = w32, head32

    def decode_weight_bytes(self) -> int:
        """Bytes of weights one decode step must read: attention, router, top-k experts, norms, lm_head."""
        w, n = self.dec.weights, 0
        for i in range(self.layers):
            for k, v in w.items():
                if k.startswith(f"layers.{i}.") and ".experts." not in k:
                    n += v.nbytes
            for m in ("gate", "up", "down"):
                n += self.dec.num_experts_per_tok * w[f"layers.{i}.mlp.experts.0.{m}_proj.weight"].nbytes
        return n + w["norm.weight"].nbytes + self.lm_head.nbytes + self.embed.shape[1] * 4


def bench_thinker_model(quick: bool) -> BenchThinker:
    """Build the bench thinker (2 layers, 128 + 8 tokens with --quick)."""
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
    L, new = (128, 8) if quick else (work["prompt_tokens"], work["new_tokens"])
    return BenchThinker(dec, embed, lm_head, hd, c["rope_parameters"]["rope_theta"],
                        c["rope_parameters"].get("mrope_section"), rng.integers(0, V, L), new, layers)


def bench_thinker(quick: bool) -> dict:
    m = bench_thinker_model(quick)
    layers, L, new, run = m.layers, len(m.ids), m.new_tokens, m.run

    res = {"layers": layers, "prompt_tokens": L, "new_tokens": new}
    tokens: dict[str, list] = {"numpy": [], "cpp": []}
    for name in ("numpy", "cpp"):
        with backend.use(name):
            settle()
            runs = [run(tokens[name] if r == 0 else None) for r in range(1 if quick else 2)]
        res[f"{name}_prefill_s"] = min(r[0] for r in runs)
        res[f"{name}_decode_tok_s"] = max(r[1] for r in runs)
    with m.bf16(), backend.use("cpp"):
        settle()
        runs = [run() for _ in range(1 if quick else 2)]
    res["cpp_bf16_prefill_s"] = min(r[0] for r in runs)
    res["cpp_bf16_decode_tok_s"] = max(r[1] for r in runs)
    res["prefill_ratio"] = res["numpy_prefill_s"] / res["cpp_prefill_s"]
    res["decode_ratio"] = res["cpp_decode_tok_s"] / res["numpy_decode_tok_s"]
    res.update(target_ratio=2.0, target_decode_vs_hf=1.5)
    res.update(_torch_thinker(m, 1 if quick else 2, tokens["cpp"]))
    if res.get("torch_decode_tok_s"):
        res["decode_vs_torch"] = res["cpp_decode_tok_s"] / res["torch_decode_tok_s"]
        res["prefill_vs_torch"] = res["torch_prefill_s"] / res["cpp_prefill_s"]
    else:       # the reference's figures as recorded on the machine that made ../shared/bench (not this run)
        res.update(hf_reference_prefill_s=0.69, hf_reference_decode_tok_s=27.0,
                   decode_vs_hf=res["cpp_decode_tok_s"] / 27.0)
    res["numpy_cpp_tokens_equal"] = tokens["numpy"] == tokens["cpp"]
    return res


def _torch_thinker(m: BenchThinker, repeat: int, cpp_tokens: list) -> dict:
    """`Qwen3OmniMoeThinkerTextModel` + the same lm_head on the same weights, where torch is installed, run
    exactly as BenchThinker.run: prefill, then greedy steps with its KV cache (DynamicCache), the logits of the
    last position only. Also says whether its greedy tokens are omniref's."""
    cfg = load_json(load_json("bench_inputs.json")["thinker"]["config"])
    ref = reference_module("Qwen3OmniMoeThinkerTextModel", "Qwen3OmniMoeTextConfig",
                           {**cfg, "num_hidden_layers": m.layers}, {**m.dec.weights, "embed_tokens.weight": m.embed})
    if ref is None:
        return {"torch_decode_tok_s": None, "torch_note": NOT_INSTALLED["torch_note"]}
    import torch
    from transformers.cache_utils import DynamicCache
    head = torch.from_numpy(np.asarray(m.lm_head))                                        # [V, H]

    def run() -> tuple[float, float, list]:
        cache = DynamicCache(config=ref.config)
        greedy = lambda ids: int(torch.argmax(                                          # noqa: E731
            ref(input_ids=ids, cache=cache, use_cache=True).last_hidden_state[0, -1] @ head.T))
        with torch.no_grad():
            t0 = time.perf_counter()
            made = [greedy(torch.from_numpy(m.ids)[None])]
            t1 = time.perf_counter()
            for _ in range(m.new_tokens - 1):
                made.append(greedy(torch.tensor([[made[-1]]])))
        return t1 - t0, (m.new_tokens - 1) / (time.perf_counter() - t1), made

    settle()
    runs = [run() for _ in range(repeat)]
    return {"torch_prefill_s": min(r[0] for r in runs), "torch_decode_tok_s": max(r[1] for r in runs),
            "torch_cpp_tokens_equal": runs[0][2] == cpp_tokens}


def random_code2wav(cfg: dict, seed: int = 0) -> Code2Wav:
    """A Code2Wav of config `cfg` (a code2wav_config dict) with omniref.tiny's seeded random weights."""
    full = {**tiny_config(), "code2wav_config": cfg}
    w = {k[len("code2wav."):]: v for k, v in tiny_weights(full, seed).items() if k.startswith("code2wav.")}
    for a in w.values():
        a.setflags(write=False)  # constants, as a checkpoint's weights are (the cpp backend may pre-pack them)
    return Code2Wav(Code2WavConfig.from_dict(cfg), w)


def bench_code2wav(quick: bool) -> dict:
    work = load_json("bench_inputs.json")["code2wav"]
    cfg = load_json(work["config"])
    model = random_code2wav(cfg, 0)
    T = 10 if quick else work["code_frames"]
    codes = np.random.default_rng(0).integers(0, model.cfg.codebook_size, (model.cfg.num_quantizers, T))
    t = both(lambda: model.forward_one(codes), 1 if quick else 2)
    seconds = model.output_length(T) / work["sample_rate"]
    res = {"frames": T, "audio_s": seconds, "numpy_s": t["numpy"], "cpp_s": t["cpp"],
           "ratio": t["numpy"] / t["cpp"], "cpp_real_time_factor": t["cpp"] / seconds,
           "hf_reference_s_for_50_frames": 2.7}
    # Qwen3OmniMoeCode2Wav.forward(codes [B, Q, T]) on the same weights, where torch is installed
    ref = reference_module("Qwen3OmniMoeCode2Wav", "Qwen3OmniMoeCode2WavConfig", cfg, model.w)
    res.update(time_reference(ref, lambda m, torch: m(torch.from_numpy(codes)[None]), 1 if quick else 2))
    return with_target(res, "cpp_s", 2.5)


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
    res = {"mel_frames": T, "numpy_s": t["numpy"], "cpp_s": t["cpp"], "ratio": t["numpy"] / t["cpp"],
           "hf_reference_s_for_3000_frames": 1.1}
    # Qwen3OmniMoeAudioEncoder.forward(input_features [mel, T], feature_lens [1]) on the same weights
    ref = reference_module("Qwen3OmniMoeAudioEncoder", "Qwen3OmniMoeAudioEncoderConfig", acfg, w)
    res.update(time_reference(ref, lambda m, torch: m(input_features=torch.from_numpy(feats),
                                                      feature_lens=torch.tensor([T])), 1 if quick else 2))
    return with_target(res, "cpp_s", 2.5)
