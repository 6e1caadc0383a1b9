"""A random checkpoint at the published widths, in the Hub layout, written a tensor at a time.

The 30B checkpoint cannot be downloaded here, but everything about it except its depth and its trained values
can be reproduced: `fullwidth_config(layers)` is the published config.json with every stack cut to `layers`
layers (thinker hidden 2048, 128 experts top-8, 32 query / 4 kv heads of 128; audio d_model 1280; vision
1152; talker 1024 with 128 experts top-6; Code2Wav decoder_dim 1536; vocabulary 152064), and
`write_checkpoint` fills it with seeded random bf16 weights, sharded with a `model.safetensors.index.json`,
next to the processor, generation and (given the Qwen ranks) tokenizer files of a downloaded directory.

Size: 2 layers per stack is about 5.3 GB of bf16 (1.25 GB of it the two 152064 x 2048 vocabulary tables, 1.2 GB
per thinker MoE layer). Hence streaming: each shard's header is computed from the shapes alone, then each
tensor is drawn and written in slices of a few MB, so the writer never holds more than one slice. A large
weight is drawn straight as bf16 bits: a random sign and 7-bit mantissa under one fixed exponent, i.e.
magnitudes spread over one octave with the standard deviation `tiny.weight_std` asks for (within a factor
sqrt(2)). Small tensors (norms, biases, small convs) come from `tiny`'s own initialisation, rounded to bf16.

    python -m omniref fullwidth OUT_DIR [--layers 2] [--experts 128] [--variant instruct|thinking|captioner]
                                        [--tiktoken qwen.tiktoken] [--shard-gb 2] [--seed 0] [--force]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
import zlib
from pathlib import Path

import numpy as np

from .checkpoint import expected_shapes
from .config import OmniConfig
from .published import (CHAT_TEMPLATE, VARIANTS, published_config, published_generation_config,
                        published_preprocessor_config)
from .tiny import _draw, weight_std
from .weights import f32_to_bf16, write_safetensors

__all__ = ["fullwidth_config", "write_checkpoint", "main"]

SMALL = 1 << 18          # tensors up to 256K elements use tiny's float32 initialisation (then bf16)
SLICE = 1 << 23          # elements per slice when a large tensor is drawn and written (16 MB of bf16)


def fullwidth_config(layers: int = 2, experts: int | None = None, variant: str = "instruct") -> dict:
    """The published config.json with every stack `layers` deep (and, for a lighter test, `experts` experts)."""
    if layers < 1:
        raise ValueError(f"layers must be >= 1, got {layers}")
    cfg = published_config(variant)
    th, tk = cfg["thinker_config"], cfg["talker_config"]
    th["text_config"]["num_hidden_layers"] = layers
    th["audio_config"]["encoder_layers"] = layers
    vc = th["vision_config"]
    vc["depth"] = layers
    if layers < 27:   # DeepStack taps must lie inside the tower: keep three taps where there is room for them
        vc["deepstack_visual_indexes"] = list(range(layers))[-3:]
    tk["accept_hidden_layer"] = min(tk["accept_hidden_layer"], layers)
    tk["text_config"]["num_hidden_layers"] = layers
    cp = tk["code_predictor_config"]
    cp["num_hidden_layers"] = min(cp["num_hidden_layers"], layers)
    cp["layer_types"] = ["full_attention"] * cp["num_hidden_layers"]
    cfg["code2wav_config"]["num_hidden_layers"] = min(cfg["code2wav_config"]["num_hidden_layers"], layers)
    if experts is not None:
        th["text_config"].update(num_experts=experts, num_experts_per_tok=min(8, experts))
        tk["text_config"].update(num_local_experts=experts, num_experts_per_tok=min(6, experts))
    return cfg


def _components(cfg: OmniConfig) -> list[str]:
    return ["audio", "vision", "thinker"] + (["talker", "code2wav"] if cfg.has_talker else [])


def _bf16_slices(key: str, shape: tuple[int, ...], seed: int, damp_row: int | None = None):
    """Yield the bf16 bits (uint16) of one random tensor, in row-major slices of at most SLICE elements.

    damp_row: a row scaled by 0.25 (as `tiny` does to the codec-eos row, so random speech lasts a few frames).
    """
    n = math.prod(shape)
    if n <= SMALL or damp_row is not None:
        w = _draw(key, shape, seed)
        if damp_row is not None:
            w[damp_row] *= 0.25
        yield f32_to_bf16(w).reshape(-1)
        return
    # one octave of magnitudes under exponent e: |w| in [2^e, 2^(e+1)), std = 2^e * sqrt(7/3)
    e = round(math.log2(weight_std(key, shape) / math.sqrt(7 / 3)))
    exponent = np.uint16((e + 127) << 7)
    bitgen = np.random.default_rng([seed, zlib.crc32(key.encode())]).bit_generator
    for start in range(0, n, SLICE):
        m = min(SLICE, n - start)
        raw = bitgen.random_raw((m + 3) // 4).view(np.uint16)[:m]   # 64 random bits = four bf16 patterns
        bits = raw & np.uint16(0x807F)            # keep the sign bit and the 7 mantissa bits
        bits |= exponent
        yield bits


def _shards(shapes: dict[str, tuple[int, ...]], shard_bytes: int) -> list[list[str]]:
    """Keys in sorted order, cut into shards of about `shard_bytes` (a tensor never straddles two)."""
    shards, size = [[]], 0
    for key in sorted(shapes):
        nbytes = 2 * math.prod(shapes[key])
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(key)
        size += nbytes
    return shards


def _write_shard(path: Path, keys: list[str], shapes: dict, seed: int, damp: dict[str, int]) -> int:
    """One .safetensors file: header from the shapes, then every tensor streamed. Returns its data bytes."""
    def chunks(key):
        return (bits.astype("<u2", copy=False).tobytes() for bits in _bf16_slices(key, shapes[key], seed,
                                                                                  damp.get(key)))
    return write_safetensors(path, [(k, "BF16", shapes[k]) for k in keys], chunks, metadata={"format": "pt"})


def write_checkpoint(out_dir, config: dict, *, seed: int = 0, shard_bytes: int = 2 << 30, tokenizer=None,
                     force: bool = False, log=None) -> Path:
    """Write a Hub-layout checkpoint of `config` (a config.json dict) with random bf16 weights into `out_dir`.

    tokenizer: an omniref `Tokenizer` (e.g. `Tokenizer.from_tiktoken(qwen.tiktoken)`) to write as
    vocab.json + merges.txt + tokenizer_config.json; None writes tokenizer_config.json alone.
    """
    out = Path(out_dir)
    if (out / "config.json").exists() and not force:
        raise FileExistsError(f"{out}: already holds a checkpoint (config.json); pass --force to overwrite it")
    out.mkdir(parents=True, exist_ok=True)
    cfg = OmniConfig.from_dict(config)
    shapes = expected_shapes(cfg, _components(cfg))
    variant = cfg.variant
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    (out / "generation_config.json").write_text(json.dumps(published_generation_config(variant), indent=2))
    (out / "preprocessor_config.json").write_text(json.dumps(published_preprocessor_config(), indent=2))
    if tokenizer is not None:
        tokenizer.chat_template = tokenizer.chat_template or CHAT_TEMPLATE
        tokenizer.save_vocab_merges(out)
    else:
        (out / "tokenizer_config.json").write_text(json.dumps({"chat_template": CHAT_TEMPLATE}, indent=2))
    shards = _shards(shapes, shard_bytes)
    damp = {"talker.codec_head.weight": cfg.talker_config.codec_eos_token_id}
    weight_map, total = {}, 0
    for i, keys in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        t0 = time.perf_counter()
        total += _write_shard(out / name, keys, shapes, seed, damp)
        weight_map.update({k: name for k in keys})
        if log:
            log(f"  {name}: {len(keys)} tensors, {total / 1e9:.2f} GB so far ({time.perf_counter() - t0:.1f} s)")
    (out / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="omniref fullwidth", description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--layers", type=int, default=2, help="layers per stack (published: 48/32/27/20)")
    ap.add_argument("--experts", type=int, help="experts per MoE layer (default: the published 128)")
    ap.add_argument("--variant", choices=VARIANTS, default="instruct")
    ap.add_argument("--tiktoken", help="Qwen BPE ranks (qwen.tiktoken) to write vocab.json + merges.txt from")
    ap.add_argument("--shard-gb", type=float, default=2.0, help="shard size in GB (default 2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true", help="overwrite an existing checkpoint in OUT_DIR")
    args = ap.parse_args(argv)
    try:
        tok = None
        if args.tiktoken:
            from .thinker.tokenizer import Tokenizer
            tok = Tokenizer.from_tiktoken(args.tiktoken)
        config = fullwidth_config(args.layers, args.experts, args.variant)
        t0 = time.perf_counter()
        out = write_checkpoint(args.out_dir, config, seed=args.seed, shard_bytes=int(args.shard_gb * 1e9),
                               tokenizer=tok, force=args.force, log=print)
    except (ValueError, OSError) as e:
        print(f"omniref fullwidth: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({args.variant}, {args.layers} layers per stack) in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
