"""`python -m omniref summary [CONFIG]`: parameters per component, total vs active per token, thinker FLOPs.

A mixture-of-experts layer stores E experts but runs only k of them per token, so "how big is the model" has
two answers: the parameters you must hold (total) and the parameters one token touches (active). The 30B-A3B
name is exactly that: ~30B total, ~3B active in the thinker.
"""
from __future__ import annotations

import argparse
import re

import numpy as np

from .checkpoint import COMPONENTS, expected_shapes
from .config import PRESETS, OmniConfig, load_config

__all__ = ["component_params", "thinker_flops_per_token", "summary_table", "main"]

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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="omniref summary", description=__doc__.splitlines()[0])
    ap.add_argument("config", nargs="?", default="qwen3-omni-30b-a3b-instruct",
                    help=f"config.json, a checkpoint directory, or a preset ({', '.join(PRESETS)}; the default)")
    ap.add_argument("--context", type=int, default=4096, help="context length for the attention FLOPs")
    args = ap.parse_args(argv)
    if args.context < 1:
        from .errors import InputError
        raise InputError(f"--context {args.context}: expected a context length >= 1", field="--context",
                         value=args.context)
    cfg = load_config(args.config)
    print(f"omniref summary of {args.config}")
    print(summary_table(cfg, args.context))
    return 0
