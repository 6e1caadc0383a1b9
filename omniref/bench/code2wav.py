"""Time Code2Wav at the real model's size with seeded random weights (no checkpoint needed).

    python -m omniref.bench.code2wav [CONFIG_JSON] [--frames 50] [--seed 0] [--repeat 3]

CONFIG_JSON is a `code2wav_config` dict (default: the Qwen3OmniMoeCode2WavConfig defaults = the published
model: hidden 1024, decoder_dim 1536, 8 layers, 16 quantizers). 50 frames are 4 s of 24 kHz audio, so the
real-time factor is `seconds / (samples / 24000)`: below 1 means faster than real time.
The two timed stages are the model's own (`Code2Wav.forward_one` = embed + pre_transformer, then `vocode`):
they show where the time goes (the vocoder's convolutions, not the transformer).
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from ..codec import code2wav as c2w
from ..config import Code2WavConfig
from .models import random_code2wav

SAMPLE_RATE = 24000


def timed_forward(model: c2w.Code2Wav, codes: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    """Code2Wav.forward_one with a stopwatch around its two halves.  codes [Q, T] -> wav [S], {stage: seconds}"""
    t = {}
    t0 = time.perf_counter()
    x = c2w.embed_codes(codes, model.w["code_embedding.weight"], model.cfg.codebook_size)   # [T, Hc]
    x = c2w.pre_transformer(x, model.w, model.cfg)                                         # [T, Hc]
    t["embed + pre_transformer"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    wav = model.vocode(x)                                                                   # [S]
    t["vocode (upsample, decoder convolutions, clamp)"] = time.perf_counter() - t0
    return wav, t


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
