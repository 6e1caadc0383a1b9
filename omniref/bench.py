"""`python -m omniref bench`: the C++ hot path against the NumPy path, side by side in one run.

    python -m omniref bench [--quick] [--json PATH] [--only kernels,attention,bf16,thinker,code2wav,audio]

Figures (best of a few runs each: the machine is shared, the fastest run is the least disturbed one):
  kernels    fp32 GEMM x[M,K] @ W[N,K]^T at M=512, K=N=2048 and GEMV at M=1: GFLOP/s cpp vs NumPy (OpenBLAS)
  attention  16 heads x 128 dims, causal, seq 2048: cpp vs the NumPy path of omniref.nn (vs torch SDPA only if
             torch happens to be importable; never required)
  bf16       bf16-weight GEMV bandwidth (weight bytes / time) vs a measured memory copy bandwidth
  thinker    the thinker text decoder of ../shared/bench/thinker_text_bench.json with random weights: prefill
             of 512 tokens and greedy-free decode tokens/s with a KV cache, both backends
  code2wav   Code2Wav at code2wav_default.json: 50 frames (4 s of 24 kHz audio), both backends
  audio      audio encoder at audio_encoder_bench.json on 30 s of log-mel, both backends
Workloads come from bench_inputs.json (shared with the Hugging Face reference scripts, so figures compare);
configs are read from ../shared/bench beside the repo when present, else from omniref/data/bench.
Targets (issue 7) are printed beside each ratio.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from . import _native, backend, nn

GF = 1e9
PARTS = ("kernels", "attention", "bf16", "thinker", "code2wav", "audio")


def bench_dir() -> Path:
    """../shared/bench relative to the repo if present, else the copies shipped in omniref/data/bench."""
    here = Path(__file__).resolve().parent
    shared = here.parent.parent / "shared" / "bench"
    return shared if (shared / "bench_inputs.json").exists() else here / "data" / "bench"


def load_json(name: str) -> dict:
    return {k: v for k, v in json.loads((bench_dir() / name).read_text()).items() if not k.startswith("_")}


def best_time(fn, repeat: int) -> float:
    """Fastest of `repeat` timed calls after one warm-up call (seconds)."""
    fn()
    best = float("inf")
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def settle() -> None:
    """Let the other side's idle threads go to sleep before timing: OpenBLAS workers spin for tens of
    milliseconds after a NumPy matmul, OpenMP workers for about a millisecond after a kernel, and on 2 cores a
    spinning pool would bill its idle time to whatever is measured next."""
    time.sleep(0.2)


def both(fn, repeat: int) -> dict:
    """Time fn() on the numpy and the cpp backend, alternating, best of `repeat` each."""
    t = {"numpy": float("inf"), "cpp": float("inf")}
    for _ in range(max(1, repeat)):
        for name in ("numpy", "cpp"):
            with backend.use(name):
                settle()
                t[name] = min(t[name], best_time(fn, 1))
    return t


# ---------------------------------------------------------------------------------------------- kernels
def bench_kernels(quick: bool) -> dict:
    """fp32 GEMM and decode GEMV, cpp vs NumPy (OpenBLAS), interleaved so both see the same machine load.

    gemv: M = 1 over 16 distinct 2048x2048 matrices (256 MiB) streamed once each, as decoding streams its
    weights from memory. gemv_cached: one matrix called 20 times back to back, so it sits in the L3 (shown
    for information: that measures the cache, not decoding).
    """
    rng = np.random.default_rng(0)
    out = {}
    for label, (M, N, K, n, calls) in {"gemm": (512, 2048, 2048, 1, 1), "gemv": (1, 2048, 2048, 4 if quick else 16, 1),
                                       "gemv_cached": (1, 2048, 2048, 1, 20)}.items():
        x = rng.standard_normal((M, K), dtype=np.float32)
        ws = [rng.standard_normal((N, K), dtype=np.float32) for _ in range(n)]
        wts = [w.T for w in ws]
        rep = 3 if quick else (10 if M == 1 else 5)
        flops = 2.0 * M * N * K * n * calls
        t_np = t_c = float("inf")
        for _ in range(rep):  # interleave so both see the same machine load
            settle()
            t_np = min(t_np, best_time(lambda: [x @ wt for _ in range(calls) for wt in wts], 1))
            settle()
            t_c = min(t_c, best_time(lambda: [_native.linear(x, w) for _ in range(calls) for w in ws], 1))
        out[label] = {"shape": [M, N, K], "matrices": n, "numpy_gflops": flops / t_np / GF,
                      "cpp_gflops": flops / t_c / GF, "ratio": t_np / t_c, "target": 0.9 if M > 1 else 1.0}
    return out


def bench_attention(quick: bool) -> dict:
    H, L, D = (16, 1024, 128) if quick else (16, 2048, 128)
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal((H, L, D), dtype=np.float32) for _ in range(3))
    flops = 2 * 2.0 * H * L * L * D / 2  # QK^T and PV, causal half
    t = both(lambda: nn.attention(q, k, v, causal=True), 1 if quick else 2)
    res = {"shape": [H, L, D], "numpy_s": t["numpy"], "cpp_s": t["cpp"], "cpp_gflops": flops / t["cpp"] / GF,
           "ratio_vs_numpy": t["numpy"] / t["cpp"], "target_vs_numpy": 3.0}
    try:  # optional: torch's SDPA, only when torch happens to be installed
        import torch
        torch.set_num_threads(_native.max_threads())
        tq, tk, tv = (torch.from_numpy(a)[None] for a in (q, k, v))
        ts = best_time(lambda: torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, is_causal=True), 2)
        res.update(torch_sdpa_s=ts, ratio_vs_torch=ts / t["cpp"], target_vs_torch=1.0)
    except ImportError:
        res["torch_sdpa_s"] = None
    return res


def bench_bf16(quick: bool) -> dict:
    # Several distinct matrices, streamed one after the other, 4x the 32 MiB L3 and more: one matrix read again
    # and again would partly stay in the L3 (a victim cache) and report more than memory can deliver.
    N, K, n = (4096, 4096, 2) if quick else (8192, 4096, 4)   # n x 64 MiB of bf16 weights
    rng = np.random.default_rng(2)
    w32 = [rng.standard_normal((N, K), dtype=np.float32) for _ in range(n)]
    wb = [_native.BF16Weight.from_float32(w) for w in w32]
    x = rng.standard_normal((1, K), dtype=np.float32)
    t = best_time(lambda: [_native.linear(x, w) for w in wb], 3 if quick else 5)
    src = np.ones(wb[0].nbytes // 4 * 2, np.float32)  # copy twice one matrix's bytes
    dst = np.empty_like(src)
    tc = best_time(lambda: np.copyto(dst, src), 5)
    bw = n * wb[0].nbytes / t / GF
    copy_bw = 2 * src.nbytes / tc / GF  # STREAM convention: bytes read + bytes written
    t32 = best_time(lambda: [_native.linear(x, w) for w in w32], 3 if quick else 5)
    return {"shape": [N, K], "matrices": n, "bf16_gemv_GBps": bw, "f32_gemv_GBps": n * w32[0].nbytes / t32 / GF,
            "copy_GBps": copy_bw, "fraction_of_copy": bw / copy_bw, "target_fraction": 0.7,
            "f32_gemv_s": t32 / n, "bf16_gemv_s": t / n, "bf16_speedup_vs_f32": t32 / t}


# ------------------------------------------------------------------------------------------------ models
class DictWeights(dict):
    """In-memory weights with the `scope(prefix)` view the model code expects of omniref.weights.Weights."""

    def scope(self, prefix: str) -> "DictWeights":
        return DictWeights({k[len(prefix):]: v for k, v in self.items() if k.startswith(prefix)})


def _random(shape, rng, scale=None) -> np.ndarray:
    scale = 1.0 / np.sqrt(shape[-1]) if scale is None else scale
    return (rng.standard_normal(shape, dtype=np.float32) * np.float32(scale))


def bench_thinker(quick: bool) -> dict:
    from .decoder import Decoder, KVCache, rope_cos_sin
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
        tok = int(np.argmax(nn.linear(h[-1:], lm_head)[0]))
        t1 = time.perf_counter()
        for s in range(new - 1):  # greedy decode, logits only for the last position
            cos, sin = rope_cos_sin(pos3(L + s, 1), hd, theta, sec)
            h = dec.forward(embed[[tok]], cos, sin, cache)
            tok = int(np.argmax(nn.linear(h, lm_head)[0]))
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


def bench_code2wav(quick: bool) -> dict:
    from .codec.bench_code2wav import random_code2wav
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
    from .audio.encoder import audio_encoder
    from .config import AudioEncoderConfig
    from .tiny import _draw, tiny_config, tiny_weight_shapes
    work = load_json("bench_inputs.json")["audio_encoder"]
    acfg = load_json(work["config"])
    full = tiny_config()
    full["thinker_config"]["audio_config"] = acfg
    pre = "thinker.audio_tower."
    w = DictWeights({k[len(pre):]: _draw(k, s, 0) for k, s in tiny_weight_shapes(full).items() if k.startswith(pre)})
    for a in w.values():
        a.setflags(write=False)  # constants, as a checkpoint's weights are
    cfg = AudioEncoderConfig.from_dict(acfg)
    T = 500 if quick else work["mel_frames"]
    feats = np.random.default_rng(0).standard_normal((acfg["num_mel_bins"], T), dtype=np.float32)
    t = both(lambda: audio_encoder(w, cfg, feats, [T]), 1 if quick else 2)
    return {"mel_frames": T, "numpy_s": t["numpy"], "cpp_s": t["cpp"], "ratio": t["numpy"] / t["cpp"],
            "hf_reference_s_for_3000_frames": 1.1}


BENCHES = {"kernels": bench_kernels, "attention": bench_attention, "bf16": bench_bf16,
           "thinker": bench_thinker, "code2wav": bench_code2wav, "audio": bench_audio}


def _print(name: str, r: dict) -> None:
    print(f"== {name}")
    for k, v in r.items():
        if isinstance(v, dict):
            _print(f"{name}.{k}", v)
        else:
            print(f"  {k:32s} {v:.4g}" if isinstance(v, float) else f"  {k:32s} {v}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="omniref bench", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small shapes, one repetition: a smoke run")
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    ap.add_argument("--only", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    ap.add_argument("--threads", type=int, help="OpenMP threads for the cpp kernels (default: all cores)")
    ap.add_argument("--full-width", action="store_true", help="per-layer cost at the published widths, "
                    "extrapolated to the published depths (omniref.fullwidth_bench)")
    ap.add_argument("--checkpoint", help="with --full-width: a full-width checkpoint of >= 2 layers per stack "
                    "(default: write one into a temp dir)")
    args = ap.parse_args(argv)
    if args.full_width:
        from .fullwidth_bench import run
        try:
            print(run(args.checkpoint, prompt_tokens=32 if args.quick else 128, decode_tokens=2 if args.quick else 4))
        except (ValueError, OSError) as e:
            print(f"omniref bench --full-width: {e}")
            return 2
        return 0
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = [p for p in parts if p not in BENCHES]
    if unknown:
        ap.error(f"unknown part(s) {unknown}; choose from {', '.join(PARTS)}")
    if not backend.available():
        print(f"omniref bench needs the C++ extension ({_native.IMPORT_ERROR})")
        return 2
    if args.threads:
        _native.set_threads(args.threads)
    results = {"info": backend.info(), "bench_dir": str(bench_dir()), "quick": args.quick}
    _print("machine", results["info"])
    for p in parts:
        try:
            results[p] = BENCHES[p](args.quick)
        except Exception as exc:  # a model part may not exist yet in this tree: report, keep going
            results[p] = {"error": f"{type(exc).__name__}: {exc}"}
        _print(p, results[p])
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=float))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
