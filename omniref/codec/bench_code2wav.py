"""Time Code2Wav at the real model's size with seeded random weights (no checkpoint needed).

    python -m omniref.codec.bench_code2wav [CONFIG_JSON] [--frames 50] [--seed 0]

CONFIG_JSON is a `code2wav_config` dict (default: the Qwen3OmniMoeCode2WavConfig defaults = the published
model: hidden 1024, decoder_dim 1536, 8 layers, 16 quantizers). 50 frames are 4 s of 24 kHz audio, so the
real-time factor is `seconds / (samples / 24000)`: below 1 means faster than real time.
Per-stage timings show where the time goes (the decoder's convolutions, not the transformer).
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from ..config import Code2WavConfig
from ..tiny import tiny_config, tiny_weights
from . import code2wav as c2w

SAMPLE_RATE = 24000


def random_code2wav(cfg: dict, seed: int = 0) -> c2w.Code2Wav:
    """A Code2Wav of config `cfg` (a code2wav_config dict) with omniref.tiny's seeded random weights."""
    full = {**tiny_config(), "code2wav_config": cfg}
    w = {k[len("code2wav."):]: v for k, v in tiny_weights(full, seed).items() if k.startswith("code2wav.")}
    for a in w.values():
        a.setflags(write=False)  # constants, as a checkpoint's weights are (the cpp backend may pre-pack them)
    return c2w.Code2Wav(Code2WavConfig.from_dict(cfg), w)


def timed_forward(model: c2w.Code2Wav, codes: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    """Code2Wav.forward_one with a stopwatch around each stage.  codes [Q, T] -> wav [S], {stage: seconds}"""
    w, cfg, t = model.w, model.cfg, {}
    t0 = time.perf_counter()
    x = c2w.embed_codes(codes, w["code_embedding.weight"], cfg.codebook_size)
    x = c2w.pre_transformer(x, w, cfg)
    t["embed + pre_transformer"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i, r in enumerate(cfg.upsampling_ratios):
        x = c2w.causal_trans_conv(x, w[f"upsample.{i}.0.conv.weight"], w[f"upsample.{i}.0.conv.bias"], r)
        x = c2w.convnext_block(x, w, f"upsample.{i}.1.")
    x = c2w.causal_conv(x, w["decoder.0.conv.weight"], w["decoder.0.conv.bias"])
    t["upsample + decoder.0"] = time.perf_counter() - t0
    for i, r in enumerate(cfg.upsample_rates):
        t0 = time.perf_counter()
        x = c2w.decoder_block(x, w, f"decoder.{i + 1}.", r)
        t[f"decoder block {i} (x{r}, {x.shape[1]} ch, {x.shape[0]} samples)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    j = len(cfg.upsample_rates) + 1
    x = c2w.snake_beta(x, w[f"decoder.{j}.alpha"], w[f"decoder.{j}.beta"])
    x = c2w.causal_conv(x, w[f"decoder.{j + 1}.conv.weight"], w[f"decoder.{j + 1}.conv.bias"])
    t["output conv + clamp"] = time.perf_counter() - t0
    return np.clip(x[:, 0], -1.0, 1.0), t


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", nargs="?", help="code2wav_config JSON (default: the published model's)")
    ap.add_argument("--frames", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=3, help="report the fastest of this many runs")
    args = ap.parse_args(argv)
    cfg = Code2WavConfig().to_dict()
    if args.config:
        cfg = {k: v for k, v in json.load(open(args.config)).items() if not k.startswith("_")}
    model = random_code2wav(cfg, args.seed)
    rng = np.random.default_rng(args.seed)
    codes = rng.integers(0, model.cfg.codebook_size, (model.cfg.num_quantizers, args.frames))   # [Q, T]
    model.forward_one(codes[:, :2])                               # warm up (BLAS threads, first touches)
    best = None
    for _ in range(max(1, args.repeat)):                          # shared machines are noisy: keep the fastest
        t0 = time.perf_counter()
        wav, stages = timed_forward(model, codes)
        total = time.perf_counter() - t0
        if best is None or total < best[0]:
            best = (total, wav, stages)
    total, wav, stages = best
    seconds = wav.shape[0] / SAMPLE_RATE
    for name, s in stages.items():
        print(f"  {name:55s} {s:7.3f} s")
    print(f"code2wav: {args.frames} frames -> {wav.shape[0]} samples ({seconds:.2f} s audio) in {total:.3f} s,"
          f" real-time factor {total / seconds:.3f}")


if __name__ == "__main__":
    main()
