"""Traces: the named intermediates (taps) of one run, saved in data-flow order with the run's inputs.

    omniref trace CASE_DIR -o ours.npz [--tap 'thinker.model.layers.3.*']...   # run a golden case's stages
    omniref trace --checkpoint DIR [generate arguments] -o ours.npz           # a generate run (generate.py)
    omniref compare ours.npz REF [--first]                                    # omniref/compare.py

From Python:

    with omniref.trace.Trace(include=["thinker.model.layers.3.*"]) as tr:
        thinker.generate(prompt, 8)
    tr.save("ours.npz")

Every model module offers its intermediates through `omniref.taps.record(name, array)`; a `Trace` keeps those
whose name matches one of its glob patterns, in the order they were produced (the data flow). Names are the
module paths of the Hugging Face checkpoint (`thinker.model.layers.3.self_attn.q_norm` holds what that
module's forward returns, batch axis included), so a trace of the reference recorded with forward hooks
(tools/record_reference.py) or of a port in another framework lines up name by name. `TAPS` below is the table
of every name (docs/taps.md is generated from it).

A module called more than once in a run (a decode step, the code predictor per frame) keeps its first call (the
prefill) under the plain name; `calls="all"` keeps call n >= 1 as `name@n` too.

A trace file is an ordinary .npz: one array per name, in data-flow order, plus `__trace__`, a JSON string
holding {"order", "inputs", "include", "meta"}: inputs are the run's given arrays (ids,
features), not computed ones. `np.load` reads it; `load_trace` also reads a golden case directory or a plain
.npz (a port's dump) and works out its order and inputs.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import re
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import taps
from .verify import STAGES

__all__ = ["Tap", "TAPS", "LEGEND", "tap_for", "tap_table_markdown", "Trace", "TraceFile", "TraceError", "save_trace",
           "load_trace", "golden_inputs", "trace_case", "main_trace"]

META_KEY = "__trace__"


# ---------------------------------------------------------------------------------------------------------
# The tap table: every name a trace can hold. {i} layer, {k} DeepStack index, {u}/{b} code2wav stages.
# ---------------------------------------------------------------------------------------------------------
LEGEND = {
    "L": "tokens of one forward (the prompt at prefill, 1 per decode step)", "Lt": "talker prefill rows",
    "H": "hidden size of that stack", "nh / nkv": "query / key-value heads", "hd": "head size",
    "E": "experts", "k": "num_experts_per_tok", "V": "vocabulary",
    "F": "mel bins (num_mel_bins)", "C": "audio chunks of 2·n_window frames", "Tc": "frames per chunk",
    "ds": "downsample_hidden_size", "t": "tokens per chunk", "N": "audio tokens of all clips",
    "d": "audio d_model", "ffn": "encoder_ffn_dim", "O": "output size (= thinker hidden)",
    "P": "patches of all images (or videos) of one call", "hv": "vision hidden_size",
    "Pm": "merged visual tokens (P / spatial_merge_size²)", "Dt": "talker hidden",
    "n_trail": "trailing text rows", "Q": "quantizers", "T": "code frames", "Hc": "code2wav hidden",
    "S": "samples at that code2wav stage", "c": "channels at that stage",
}


@dataclass(frozen=True)
class Tap:
    name: str           # pattern with {i}-style placeholders
    shape: str          # in symbols, e.g. "[1, L, H]"
    meaning: str
    module: bool = True  # the output of a Hugging Face module of that path (False: a documented step)

    @property
    def token_axis(self) -> tuple[int, str] | None:
        """(axis, word) of the per-token axis, or None."""
        dims = [d.strip() for d in self.shape.strip("[]").split(",")]
        for axis, d in enumerate(dims):
            if d in _TOKEN_WORDS:
                return axis, _TOKEN_WORDS[d]
        return None


_TOKEN_WORDS = {"L": "token", "Lt": "token", "N": "audio token", "P": "patch", "Pm": "merged token",
                "T": "frame", "S": "sample"}


def _decoder_taps(stack: str, who: str, moe: bool, shared: bool, qk_norm: bool, scale: bool) -> list[Tap]:
    """The taps of one Qwen3 decoder stack (omniref/decoder.py) under `stack` (e.g. 'thinker.model.')."""
    p = stack + "layers.{i}."
    t = [Tap(stack + "rotary_emb", "[1, L, hd]", f"{who}: cos of the rotary angles of every position"),
         Tap(p + "input_layernorm", "[1, L, H]", "RMSNorm before attention"),
         Tap(p + "self_attn.q_proj", "[1, L, nh*hd]", "query projection"),
         Tap(p + "self_attn.k_proj", "[1, L, nkv*hd]", "key projection"),
         Tap(p + "self_attn.v_proj", "[1, L, nkv*hd]", "value projection")]
    if qk_norm:
        t += [Tap(p + "self_attn.q_norm", "[1, L, nh, hd]", "per-head RMSNorm of q (QK-norm)"),
              Tap(p + "self_attn.k_norm", "[1, L, nkv, hd]", "per-head RMSNorm of k")]
    t += [Tap(p + "self_attn.q_rotary", "[1, nh, L, hd]", "q after RoPE (x·cos + rotate_half(x)·sin)", False),
          Tap(p + "self_attn.k_rotary", "[1, nkv, L, hd]", "k after RoPE (before the KV cache)", False),
          Tap(p + "self_attn.attn_output", "[1, L, nh*hd]", "softmax(qkᵀ)v, heads side by side (o_proj's input)",
              False),
          Tap(p + "self_attn.o_proj", "[1, L, H]", "output projection"),
          Tap(p + "self_attn", "[1, L, H]", "the attention block's output (= o_proj)")]
    if scale:
        t += [Tap(p + "self_attn_layer_scale", "[1, L, H]", "attention output × learned per-channel scale")]
    t += [Tap(p + "post_attention_layernorm", "[1, L, H]", "RMSNorm before the MLP")]
    if moe:
        t += [Tap(p + "mlp.gate", "[L, E]", "router logits (no batch axis: the router flattens tokens)"),
              Tap(p + "mlp.gate.router_scores", "[L, k]", "mixing weights of the chosen experts "
                  "(softmax over all E, top-k, renormalised if norm_topk_prob)", False),
              Tap(p + "mlp.gate.router_indices", "[L, k]", "chosen expert ids, best first (int)", False),
              Tap(p + "mlp.experts", "[L, H]", "Σ weight · expert(x) over the chosen experts")]
        if shared:
            t += [Tap(p + "mlp.shared_expert", "[L, H]", "shared expert SwiGLU (before its sigmoid gate)"),
                  Tap(p + "mlp.shared_expert_gate", "[L, 1]", "shared expert gate logit")]
    t += [Tap(p + "mlp", "[1, L, H]", "MLP / MoE block output" + (" (routed + gated shared expert)" if shared
                                                                    else ""))]
    if scale:
        t += [Tap(p + "mlp_layer_scale", "[1, L, H]", "MLP output × learned per-channel scale")]
    return t + [Tap(stack + "layers.{i}", "[1, L, H]", "decoder layer output (the residual stream)"),
                Tap(stack + "norm", "[1, L, H]", "final RMSNorm")]


TAPS: list[Tap] = [
    # audio encoder (thinker.audio_tower), packed tokens of all clips, no batch axis
    Tap("thinker.audio_tower.conv2d1", "[C, ds, F/2, Tc/2]", "first 3x3 stride-2 conv (before GELU), NCHW"),
    Tap("thinker.audio_tower.conv2d2", "[C, ds, F/4, Tc/4]", "second conv (before GELU)"),
    Tap("thinker.audio_tower.conv2d3", "[C, ds, F/8, Tc/8]", "third conv (before GELU)"),
    Tap("thinker.audio_tower.conv_out", "[C, t, d]", "flattened (channel, frequency) -> d, per chunk"),
    Tap("thinker.audio_tower.inputs_embeds", "[N, d]", "conv_out + sinusoid positions, padding rows dropped "
        "(= golden audio.hidden_states.0)", False),
    Tap("thinker.audio_tower.layers.{i}.self_attn_layer_norm", "[N, d]", "LayerNorm before attention"),
    Tap("thinker.audio_tower.layers.{i}.self_attn", "[N, d]", "windowed bidirectional attention + out_proj"),
    Tap("thinker.audio_tower.layers.{i}.final_layer_norm", "[N, d]", "LayerNorm before the MLP"),
    Tap("thinker.audio_tower.layers.{i}.fc1", "[N, ffn]", "MLP up-projection (before GELU)"),
    Tap("thinker.audio_tower.layers.{i}.fc2", "[N, d]", "MLP output"),
    Tap("thinker.audio_tower.layers.{i}", "[N, d]", "encoder layer output"),
    Tap("thinker.audio_tower.ln_post", "[N, d]", "final LayerNorm"),
    Tap("thinker.audio_tower.proj1", "[N, d]", "first output projection (before GELU)"),
    Tap("thinker.audio_tower.proj2", "[N, O]", "audio embeddings for the thinker (= audio.output)"),
    # vision encoder (thinker.visual), packed patches of all images (or videos) of one call, no batch axis
    Tap("thinker.visual.patch_embed", "[P, hv]", "patch embedding (Conv3d with kernel = stride)"),
    Tap("thinker.visual.pos_embeds", "[P, hv]", "learned positions, bilinearly interpolated to the grid", False),
    Tap("thinker.visual.rotary_pos_emb", "[P, hd]", "cos of the 2-D rotary angles (row, column)"),
    Tap("thinker.visual.blocks.{i}.norm1", "[P, hv]", "LayerNorm before attention"),
    Tap("thinker.visual.blocks.{i}.attn", "[P, hv]", "attention inside one temporal grid + proj"),
    Tap("thinker.visual.blocks.{i}.norm2", "[P, hv]", "LayerNorm before the MLP"),
    Tap("thinker.visual.blocks.{i}.mlp", "[P, hv]", "MLP output"),
    Tap("thinker.visual.blocks.{i}", "[P, hv]", "ViT block output"),
    Tap("thinker.visual.merger_list.{k}", "[Pm, O]", "DeepStack merger k (after block deepstack_visual_indexes[k])"),
    Tap("thinker.visual.merger", "[Pm, O]", "final patch merger: the visual tokens"),
    # thinker text decoder
    Tap("thinker.model.embed_tokens", "[1, L, H]", "token embeddings (placeholders still text rows)"),
    Tap("thinker.model.inputs_embeds", "[1, L, H]", "embeddings with audio / image / video rows written in "
        "(= thinker.hidden_states.0)", False),
    Tap("thinker.model.position_ids", "[3, 1, L]", "MRoPE positions (rows: time, height, width), float", False),
    *_decoder_taps("thinker.model.", "thinker", moe=True, shared=False, qk_norm=True, scale=False),
    Tap("thinker.model.deepstack.{k}", "[1, L, H]", "layer k output + DeepStack feature k at the visual rows "
        "(what layer k+1 reads)", False),
    # talker
    Tap("talker.inputs_embeds", "[1, Lt, Dt]", "talker prefill input (user part + 9 assistant rows)", False),
    Tap("talker.trailing_text_hidden", "[1, n_trail, Dt]", "text rows added to the talker's decode steps", False),
    Tap("talker.model.position_ids", "[3, 1, L]", "talker MRoPE positions", False),
    *_decoder_taps("talker.model.", "talker", moe=True, shared=True, qk_norm=True, scale=False),
    Tap("talker.codes", "[1, G, T]", "codes of every frame (codebook 0 from the talker, 1..G-1 from the code "
        "predictor): what Code2Wav receives", False),
    # code predictor (a dense Qwen3 stack per frame)
    *_decoder_taps("talker.code_predictor.model.", "code predictor", moe=False, shared=False, qk_norm=True,
                   scale=False),
    # code2wav
    Tap("code2wav.code_embedding", "[1, Q, T, Hc]", "codebook vectors of every quantizer (before the mean)"),
    *_decoder_taps("code2wav.pre_transformer.", "code2wav", moe=False, shared=False, qk_norm=False, scale=True),
    Tap("code2wav.pre_transformer", "[1, T, Hc]", "the pre-transformer's output (= its final norm)"),
    Tap("code2wav.upsample.{u}.0", "[1, Hc, S]", "causal transposed conv ×r (trimmed K-r at both ends)"),
    Tap("code2wav.upsample.{u}.1", "[1, Hc, S]", "ConvNeXt block"),
    Tap("code2wav.decoder.0", "[1, c, S]", "first causal conv Hc -> decoder_dim"),
    Tap("code2wav.decoder.{b}.block.1", "[1, c, S]", "decoder block b's transposed conv ×rate (b >= 1)"),
    Tap("code2wav.decoder.{b}", "[1, c, S]", "decoder block b output; the last two: SnakeBeta, final conv"),
    Tap("code2wav", "[1, 1, S]", "waveform, clamped to [-1, 1]"),
]


def tap_table_markdown() -> str:
    """The table of docs/taps.md (tests/test_trace.py keeps that file equal to this)."""
    lines = ["| name | shape | meaning |", "| --- | --- | --- |"]
    for t in TAPS:
        kind = "" if t.module else " *(step, no module)*"
        lines.append(f"| `{t.name}` | `{t.shape}` | {t.meaning}{kind} |")
    legend = "; ".join(f"`{k}` {v}" for k, v in LEGEND.items())
    return "\n".join(lines) + f"\n\nShape letters: {legend}.\n"


def _pattern_regex(name: str) -> re.Pattern:
    return re.compile(re.escape(name).replace(r"\{i\}", r"\d+").replace(r"\{k\}", r"\d+")
                      .replace(r"\{u\}", r"\d+").replace(r"\{b\}", r"\d+") + r"(@\d+)?$")


_TAP_RE = [(_pattern_regex(t.name), t) for t in TAPS]


def tap_for(name: str) -> Tap | None:
    """The table entry a trace key belongs to (`name@n` calls included), or None for other keys."""
    for rx, tap in _TAP_RE:
        if rx.match(name):
            return tap
    return None


# ---------------------------------------------------------------------------------------------------------
# Recording
# ---------------------------------------------------------------------------------------------------------
_active: list["Trace"] = []


def _fan_out(name: str, array) -> None:
    for tr in _active:
        tr.offer(name, array)


class Trace:
    """Collects the taps of a run while active (a context manager). `arrays` keeps data-flow order.

    include: glob patterns (fnmatch) a name must match to be kept (None: everything); exclude: patterns that
    drop a name; calls: "first" (a repeated name keeps its first call) or "all" (call n >= 1 as `name@n`).
    """

    def __init__(self, include=None, exclude=(), calls: str = "first", meta: dict | None = None):
        if calls not in ("first", "all"):
            raise ValueError(f"calls must be 'first' or 'all', got {calls!r}")
        self.include = list(include) if include else None
        self.exclude = list(exclude)
        self.calls = calls
        self.arrays: dict[str, np.ndarray] = {}
        self.inputs: list[str] = []
        self.meta = dict(meta or {})       # saved with the file (generation settings for a replay)
        self._seen: dict[str, int] = {}
        self._wanted: dict[str, bool] = {}

    def __enter__(self) -> "Trace":
        _active.append(self)
        taps.sink = _fan_out
        return self

    def __exit__(self, *exc) -> bool:
        _active.remove(self)
        taps.sink = _fan_out if _active else None
        return False

    def wants(self, name: str) -> bool:
        """Does `name` pass the include / exclude patterns? (cached: the same names come back every step)"""
        hit = self._wanted.get(name)
        if hit is None:
            hit = ((self.include is None or any(fnmatch.fnmatchcase(name, p) for p in self.include))
                   and not any(fnmatch.fnmatchcase(name, p) for p in self.exclude))
            self._wanted[name] = hit
        return hit

    def offer(self, name: str, array) -> None:
        """The sink of `taps.record`: keep a copy of `array` if wanted (a later call of a name -> `name@n`)."""
        n = self._seen.get(name, 0)
        self._seen[name] = n + 1
        if (n and self.calls == "first") or not self.wants(name):
            return
        self.arrays[name if n == 0 else f"{name}@{n}"] = np.array(array, copy=True)

    def add(self, name: str, array, is_input: bool = False) -> None:
        """Add an array by hand: a run's input (always kept: a replay needs it), or a stage output (kept if
        wanted). An existing name is kept as it is."""
        if name in self.arrays or not (is_input or self.wants(name)):
            return
        self.arrays[name] = np.array(array, copy=True)
        if is_input:
            self.inputs.append(name)

    def __len__(self) -> int:
        return len(self.arrays)

    def save(self, path, force: bool = False) -> None:
        save_trace(path, self.arrays, self.inputs, self.include, force=force, meta=self.meta)


def save_trace(path, arrays: dict, inputs=(), include=None, force: bool = False, meta: dict | None = None) -> None:
    """Write a trace file: the arrays in the given (data-flow) order + the `__trace__` JSON entry.

    Anyone can write one (a port's dump too): `save_trace("port.npz", {"thinker.model.layers.0": h0, ...},
    inputs=["thinker.input_ids"])`. Refuses to overwrite an existing file unless `force`. `meta`: anything
    JSON a replay needs (e.g. {"generation": {...}}, the settings tools/record_reference.py reruns with).
    """
    path = Path(path)
    if path.exists() and not force:
        raise FileExistsError(f"{path}: already exists (use --force to overwrite)")
    header = {"format": "omniref-trace/1", "order": list(arrays), "inputs": [k for k in inputs if k in arrays],
              "include": include, "meta": meta or {}}
    payload = {k: np.asarray(v) for k, v in arrays.items()}
    payload[META_KEY] = np.array(json.dumps(header))
    with open(path, "wb") as f:                 # a file object: np.savez must not append ".npz" to the name
        np.savez_compressed(f, **payload)


# ---------------------------------------------------------------------------------------------------------
# Reading: a trace file, a plain .npz, or a golden case directory
# ---------------------------------------------------------------------------------------------------------
@dataclass
class TraceFile:
    path: str
    arrays: dict[str, np.ndarray]      # data-flow order
    inputs: set[str] = field(default_factory=set)
    include: list[str] | None = None   # the patterns it was recorded with (None: everything)
    ordered: bool = False              # True when the file states its order (a trace file)
    meta: dict = field(default_factory=dict)


class TraceError(ValueError):
    """A trace that cannot be read; the message is one line naming the file and what is wrong."""


def golden_inputs(keys) -> set[str]:
    """Keys of a golden.npz that are given to the run rather than computed by it: those no stage of
    omniref.verify outputs and that no tap names (ids, raw media, features, codes, chunk sizes)."""
    keys = list(keys)
    outputs = {k for s in STAGES for k in s.output_keys(keys)}
    return {k for k in keys if k not in outputs and tap_for(k) is None}


def load_trace(path) -> TraceFile:
    """Read a trace (.npz) or a golden case directory (its golden.npz). Raises TraceError (one line)."""
    p = Path(path)
    if p.is_dir():
        if not (p / "golden.npz").is_file():
            raise TraceError(f"{p}: a directory but not a golden case (no golden.npz inside)")
        p = p / "golden.npz"
    elif not p.exists():
        raise TraceError(f"{p}: no such file")
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise TraceError(f"{p}: not a readable .npz trace ({type(e).__name__}: {e})") from None
    if META_KEY not in arrays:
        return TraceFile(str(p), arrays, golden_inputs(arrays))
    try:
        meta = json.loads(str(arrays.pop(META_KEY)))
        order = [k for k in meta["order"] if k in arrays]
    except (ValueError, KeyError, TypeError) as e:
        raise TraceError(f"{p}: its {META_KEY} entry is not valid trace metadata ({e})") from None
    order += [k for k in arrays if k not in order]
    return TraceFile(str(p), {k: arrays[k] for k in order}, set(meta.get("inputs") or ()), meta.get("include"),
                     ordered=True, meta=meta.get("meta") or {})


# ---------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------
def trace_case(case_dir, include=None, calls: str = "first", stages=None) -> Trace:
    """Run a golden case's stages (as `omniref verify` does) under a Trace: the case's inputs first, then
    every tap, each stage's FORMAT.md outputs after its taps."""
    from .golden import Case
    from .verify import _load_runner
    case = Case(case_dir)
    tr = Trace(include, calls=calls)
    for key in case.golden:
        if key in golden_inputs(case.golden):
            tr.add(key, case.golden[key], is_input=True)
    with tr:
        for stage in STAGES:
            if (stages and stage.name not in stages) or not stage.applies(case.golden):
                continue
            fn = _load_runner(stage)
            for key, value in (fn(case) if fn is not None else {}).items():
                tr.add(key, value)
    return tr


def main_trace(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="omniref trace", description="run a golden case's stages and save every "
                                 "tap (named intermediate) in data-flow order; with --checkpoint DIR and the "
                                 "arguments of `omniref generate`, trace a generate run instead")
    ap.add_argument("case", help="golden case directory")
    ap.add_argument("-o", "--out", required=True, help="output trace (.npz)")
    ap.add_argument("--tap", action="append", help="keep only names matching this glob (repeatable), e.g. "
                    "'thinker.model.layers.3.*'")
    ap.add_argument("--stage", action="append", help="only this stage (repeatable)")
    ap.add_argument("--all-calls", action="store_true", help="also keep later calls of a module as NAME@n")
    ap.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if out.exists() and not args.force:
        print(f"error: {out}: already exists (use --force to overwrite)", file=sys.stderr)
        return 2
    if not (Path(args.case) / "golden.npz").is_file():
        print(f"error: {args.case}: not a golden case directory (no golden.npz)", file=sys.stderr)
        return 2
    try:
        tr = trace_case(args.case, args.tap, "all" if args.all_calls else "first", args.stage)
        tr.save(out, force=args.force)
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {len(tr)} arrays ({len(tr.inputs)} inputs) to {out}")
    return 0
