"""`python -m omniref summary [CONFIG | CHECKPOINT_DIR]`: parameters, bytes per token, memory, decode speed.

A mixture-of-experts layer stores E experts but runs only k of them per token, so "how big is the model" has
two answers: the parameters you must hold (total) and the parameters one token touches (active). The 30B-A3B
name is exactly that: ~30B total, ~3B active in the thinker.

Decoding one token is bound by memory bandwidth, not arithmetic: every weight the token touches is read
once from RAM (a matrix-vector product does 2 FLOPs per 2-byte bf16 weight, far below what a core can do
per byte). So the expected speed is `bandwidth / bytes read per token`, where the bytes per token are the
active weights (an embedding lookup reads one row; a routed expert k/E of the time) plus the KV cache.
For a checkpoint directory the bytes come from the stored dtypes; for a bare config, bf16 (the published
dtype) is assumed. The bandwidth is measured on this machine (a streaming read of a large array).
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import numpy as np

from .checkpoint import COMPONENTS, expected_shapes
from .config import PRESETS, OmniConfig, load_config

__all__ = ["component_params", "thinker_flops_per_token", "summary_table", "decode_bytes", "kv_bytes_per_token",
           "measure_bandwidth", "estimate_table", "main"]

EXPERT = re.compile(r"\.mlp\.experts\.(\d+)\.")


def component_params(cfg: OmniConfig) -> dict[str, tuple[int, int]]:
    """{component: (total parameters, active parameters per token)}.

    Active: every dense tensor plus, in each MoE layer, the share k/E of the routed experts (the router and a
    shared expert always run). Embedding tables count fully in both (a lookup touches one row, but the table
    is part of what must be held; we follow the usual convention of counting it).
    """
    out = {}
    for name in COMPONENTS:
        shapes = expected_shapes(cfg, [name])
        if name == "thinker":
            tc = cfg.thinker_config.text_config
        elif name == "talker":
            tc = cfg.talker_config.text_config
        else:
            tc = None
        total = active = 0
        for key, shape in shapes.items():
            n = int(np.prod(shape, dtype=np.int64))
            total += n
            if tc is not None and EXPERT.search(key) and "code_predictor" not in key:
                active += n * tc.num_experts_per_tok / tc.num_experts
            else:
                active += n
        out[name] = (total, int(round(active)))
    return out


def thinker_flops_per_token(cfg: OmniConfig, context: int) -> dict[str, float]:
    """Forward FLOPs of one thinker token at a given context length (2 FLOPs per multiply-add).

    matmuls: 2 × active weights that multiply activations (everything but the embedding lookup);
    attention: per layer QKᵀ and PV over `context` keys = 2 · 2 · nh · hd · context.
    """
    t = cfg.thinker_config.text_config
    shapes = expected_shapes(cfg, ["thinker"])
    weights = 0.0
    for key, shape in shapes.items():
        if key.endswith("embed_tokens.weight") or len(shape) < 2:
            continue
        n = float(np.prod(shape))
        weights += n * t.num_experts_per_tok / t.num_experts if EXPERT.search(key) else n
    attn = 4.0 * t.num_hidden_layers * t.num_attention_heads * t.head_dim * context
    return {"matmul": 2.0 * weights, "attention": attn, "total": 2.0 * weights + attn}


def _fmt(n: float) -> str:
    for unit, div in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}"


def summary_table(cfg: OmniConfig, context: int = 4096) -> str:
    params = component_params(cfg)
    rows = [f"{'component':<12}{'total params':>15}{'active/token':>15}"]
    for name, (tot, act) in params.items():
        rows.append(f"{name:<12}{_fmt(tot):>15}{_fmt(act):>15}")
    tot = sum(p[0] for p in params.values())
    act = sum(p[1] for p in params.values())
    rows.append(f"{'all':<12}{_fmt(tot):>15}{_fmt(act):>15}")
    t = cfg.thinker_config.text_config
    fl = thinker_flops_per_token(cfg, context)
    rows += ["", f"thinker: {t.num_hidden_layers} layers, hidden {t.hidden_size}, GQA {t.num_attention_heads}q/"
                 f"{t.num_key_value_heads}kv x {t.head_dim}, {t.num_experts} experts (top {t.num_experts_per_tok}, "
                 f"width {t.moe_intermediate_size}), vocab {t.vocab_size}",
             f"thinker FLOPs per token at context {context}: matmul {_fmt(fl['matmul'])}, "
             f"attention {_fmt(fl['attention'])}, total {_fmt(fl['total'])}FLOP"]
    return "\n".join(rows)


# ---- bytes per token, memory, expected speed ----------------------------------------------------------------
EMBEDDING = re.compile(r"(embed_tokens|codec_embedding(\.\d+)?)\.weight$")


def decode_bytes(cfg: OmniConfig, itemsize=None) -> dict[str, float]:
    """Weight bytes one decode step reads: {"thinker": per text token, "talker": per codec frame}.

    itemsize: {key: bytes per element} of a real checkpoint (default 2: bf16). A thinker token reads the
    attention and router of every layer, k/E of the experts, one embedding row and the whole lm_head. A
    talker frame reads the talker decoder the same way plus the code predictor once per extra codebook
    (G - 1 small forwards) with one of its G - 1 heads and embedding rows each.
    """
    size = (lambda k: 2) if itemsize is None else itemsize.__getitem__
    out = {}
    for name in ("thinker", "talker"):
        tc = cfg.thinker_config.text_config if name == "thinker" else cfg.talker_config.text_config
        G = cfg.talker_config.num_code_groups
        total = 0.0
        for key, shape in expected_shapes(cfg, [name]).items():
            n = float(np.prod(shape))
            if "projection." in key:
                continue                                      # talker input projections: prefill only
            if EMBEDDING.search(key):
                n = shape[1]                                  # a lookup reads one row
            elif "code_predictor.model.layers." in key or key.endswith("code_predictor.model.norm.weight"):
                n *= G - 1                                    # one small forward per codebook 1..G-1
            elif EXPERT.search(key):
                n *= tc.num_experts_per_tok / tc.num_experts
            total += n * size(key)
        out[name] = total
    return out


def kv_bytes_per_token(cfg: OmniConfig, itemsize: int = 4) -> int:
    """KV cache bytes each thinker context token adds (keys and values of every layer; float32 here)."""
    t = cfg.thinker_config.text_config
    return 2 * t.num_hidden_layers * t.num_key_value_heads * t.head_dim * itemsize


def measure_bandwidth(nbytes: int = 256 << 20, repeats: int = 3) -> float:
    """Memory read bandwidth of this machine in bytes/s: the best of a few sums over an array bigger than
    any cache (what a decode step does to its weights)."""
    a = np.ones(nbytes // 8, np.float64)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a.dot(a)                                  # BLAS: one streaming pass, SIMD, all cores
        best = min(best, time.perf_counter() - t0)
    return nbytes / best


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def estimate_table(cfg: OmniConfig, *, weight_bytes: float, itemsize=None, context: int = 4096,
                   bandwidth: float, big_bandwidth: float = 200e9, big_memory: float = 128 * 2**30,
                   memory: float = 24 * 2**30) -> str:
    """Bytes per token, memory needed and expected decode speed here and on a bigger machine."""
    per = decode_bytes(cfg, itemsize)
    kv = kv_bytes_per_token(cfg) * context
    need = weight_bytes + kv
    rows = [f"weights: {_gib(weight_bytes)} held (memory-mapped); thinker KV cache at context {context}: {_gib(kv)}",
            f"memory needed: {_gib(need)}" + ("" if need <= memory else
                                               f"  -- does NOT fit in {_gib(memory)}: weights would stream "
                                               "from disk every token")]
    for name, unit in (("thinker", "token"), ("talker", "codec frame")):
        if name == "talker" and not cfg.has_talker:
            rows.append("talker: none (thinker-only checkpoint)")
            continue
        b = per[name] + (kv if name == "thinker" else 0)
        here = f"{bandwidth / b:.1f}" if need <= memory else "- (does not fit)"
        big = f"{big_bandwidth / b:.1f}" if need <= big_memory else "- (does not fit)"
        rows.append(f"{name}: {b / 2**20:.1f} MiB read per {unit}; expected {unit}s/s: {here} here "
                    f"({bandwidth / 1e9:.1f} GB/s), {big} on a {big_bandwidth / 1e9:.0f} GB/s {_gib(big_memory)} machine")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="omniref summary", description=__doc__.splitlines()[0])
    ap.add_argument("config", nargs="?", default="qwen3-omni-30b-a3b-instruct",
                    help=f"config.json, a checkpoint directory, or a preset ({', '.join(PRESETS)}; the default)")
    ap.add_argument("--context", type=int, default=4096, help="context length for the attention FLOPs and KV")
    ap.add_argument("--bandwidth", type=float, help="memory bandwidth in GB/s (default: measured here)")
    ap.add_argument("--big-bandwidth", type=float, default=200.0, help="the bigger machine's GB/s (200)")
    ap.add_argument("--big-memory", type=float, default=128.0, help="the bigger machine's GiB (128)")
    ap.add_argument("--memory", type=float, default=24.0, help="this machine's memory in GiB (24)")
    args = ap.parse_args(argv)
    if args.context < 1:
        from .errors import InputError
        raise InputError(f"--context {args.context}: expected a context length >= 1", field="--context",
                         value=args.context)
    try:
        cfg = load_config(args.config)
        itemsize, note = None, "bf16 assumed (no weights)"
        weight_bytes = 2.0 * sum(component_params(cfg)[c][0] for c in
                                 (COMPONENTS if cfg.has_talker else ("audio", "vision", "thinker")))
        path = Path(args.config)
        if path.is_dir() and any(path.glob("*.safetensors")):
            from .weights import DTYPES, load_weights
            w = load_weights(path)
            sizes = {k: DTYPES[w.dtype(k)].itemsize for k in w}
            itemsize = _Sizes(sizes)
            weight_bytes = float(sum(sizes[k] * np.prod(w.shape(k)) for k in w))
            note = f"{len(w)} tensors in {len(w.files)} file(s), dtypes {sorted({w.dtype(k) for k in w})}"
    except FileNotFoundError as e:          # omniref errors go to the CLI's one-line report with their exit code
        print(f"omniref summary: {e}", file=sys.stderr)
        return 2
    bandwidth = args.bandwidth * 1e9 if args.bandwidth else measure_bandwidth()
    print(f"omniref summary of {args.config} ({cfg.variant}; {note})")
    unknown = cfg.unknown_fields()
    if unknown:   # kept in each section's `extra`, never an error
        print(f"config: {len(unknown)} fields kept but not used by omniref ({', '.join(unknown[:3])}, ...)")
    print(summary_table(cfg, args.context))
    print()
    print(estimate_table(cfg, weight_bytes=weight_bytes, itemsize=itemsize, context=args.context,
                         bandwidth=bandwidth, big_bandwidth=args.big_bandwidth * 1e9,
                         big_memory=args.big_memory * 2**30, memory=args.memory * 2**30))
    return 0


class _Sizes(dict):
    """Bytes per element by key; a key the checkpoint lacks (a component it does not have) counts as bf16."""

    def __missing__(self, key):
        return 2
