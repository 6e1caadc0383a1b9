"""Traces: the named intermediates of one run, saved in data-flow order, and a comparison that finds a bug.

    omniref trace CASE_DIR -o ours.npz [--tap 'thinker.model.layers.3.*']...   # run a golden case's stages
    omniref compare ours.npz REF [--first] [--rtol R]                           # REF: a trace or a case dir

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
holding {"order": [...], "inputs": [...], "include": [...]}; inputs are the run's given arrays (ids,
features), not computed ones. `np.load` reads it; `load_trace` also reads a golden case directory or a plain
.npz (a port's dump) and works out its order and inputs.

`compare` walks the reference's keys in its data-flow order. Per key: max abs error, error relative to
max|ref| (the FORMAT.md measure, judged against the case tolerances of omniref.verify), NMSE in dB and cosine
similarity; for a tensor with a token axis, the p50 / p99 / max over tokens of each token's relative error and
the first token past tolerance. `--first` stops at the first divergence and names where to look: all keys
before it agree, so the inputs of that module agree and its own output does not.
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
from .verify import STAGES, tolerance

__all__ = ["Tap", "TAPS", "LEGEND", "tap_for", "tap_table_markdown", "Trace", "TraceFile", "save_trace", "load_trace", "Row", "compare",
           "first_divergence", "format_report", "main_trace", "main_compare"]

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
    # code predictor (a dense Qwen3 stack per frame)
    *_decoder_taps("talker.code_predictor.model.", "code predictor", moe=False, shared=False, qk_norm=True,
                   scale=False),
    # code2wav
    Tap("code2wav.code_embedding", "[1, Q, T, Hc]", "codebook vectors of every quantizer (before the mean)"),
    *_decoder_taps("code2wav.pre_transformer.", "code2wav", moe=False, shared=False, qk_norm=False, scale=True),
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
# Comparing
# ---------------------------------------------------------------------------------------------------------
@dataclass
class Row:
    key: str
    status: str                      # OK / DIFF / SHAPE / MISSING
    shape: tuple = ()
    max_abs: float = float("nan")
    rel: float = float("nan")        # max_abs / max|ref|
    tol: float = float("nan")
    nmse_db: float = float("nan")    # 10 log10(Σ(ours-ref)² / Σref²)
    cosine: float = float("nan")
    token_word: str = ""             # what the token axis counts ("token", "patch", "sample", ...)
    token_q: tuple = ()              # (p50, p99, max) of the per-token relative error
    first_token: int | None = None   # first token past tolerance
    is_input: bool = False
    note: str = ""


# FORMAT.md keys of a golden case -> the module whose output they are ({n}: the key's number - 1), so that a
# comparison against a golden.npz, which holds no taps, still names a module
_GOLDEN_WHERE = [
    (r"thinker\.hidden_states\.0", "thinker.model.inputs_embeds"),
    (r"thinker\.hidden_states\.(\d+)", "thinker.model.layers.{n}"),      # the last index: thinker.model.norm
    (r"audio\.hidden_states\.0", "thinker.audio_tower.inputs_embeds"),
    (r"audio\.hidden_states\.(\d+)", "thinker.audio_tower.layers.{n}"),
    (r"audio\.output", "thinker.audio_tower.proj2"),
    (r"vision(?:_video)?\.hidden_states\.0", "thinker.visual.pos_embeds"),    # patch_embed + pos_embeds
    (r"vision(?:_video)?\.hidden_states\.(\d+)", "thinker.visual.blocks.{n}"),
    (r"vision(?:_video)?\.deepstack\.(\d+)", "thinker.visual.merger_list.{k}"),
    (r"vision(?:_video)?\.output", "thinker.visual.merger"),
    (r"thinker\.(?:position_ids|rope_deltas)", "thinker.model.position_ids"),
]


def where(key: str, ref_keys=()) -> tuple[str, bool]:
    """-> (the tap a key is, or that a golden key stands for; whether it is a Hugging Face module's output)."""
    base = key.split("@")[0]
    for pattern, name in _GOLDEN_WHERE:
        m = re.fullmatch(pattern, base)
        if m:
            num = int(m.group(1)) if m.groups() else 0
            if name == "thinker.model.layers.{n}" and f"thinker.hidden_states.{num + 1}" not in ref_keys:
                name = "thinker.model.norm"
            base = name.format(n=num - 1, k=num)
            break
    tap = tap_for(base)
    return base, tap is not None and tap.module


def _token_axis(key: str, shape: tuple) -> tuple[int, str] | None:
    tap = tap_for(key)
    if tap is not None:
        found = tap.token_axis
        return found if found and len(shape) == len(tap.shape.strip("[]").split(",")) else None
    if len(shape) == 3 and shape[:2] == (1, 1):
        return 2, "sample"                                   # waveforms [1, 1, S]
    if len(shape) == 3 and shape[:2] == (3, 1):
        return 2, "token"                                    # position ids [3, 1, L]
    if len(shape) == 3 and shape[0] == 1:
        return 1, "token"                                    # [1, L, H]
    if len(shape) == 2 and shape[0] > 1:
        return 0, "row"
    return None


def _shape_problem(ours: tuple, ref: tuple) -> str:
    msg = f"shape {list(ours)} != reference {list(ref)}"
    if ref[:1] == (1,) and ours == ref[1:]:
        return msg + ": ours lacks the leading batch axis of 1"
    if ours[:1] == (1,) and ours[1:] == ref:
        return msg + ": ours has a leading axis of 1 that the reference lacks"
    if sorted(ours) == sorted(ref):
        return msg + ": the same axes in another order (a transposed layout?)"
    if int(np.prod(ours)) == int(np.prod(ref)):
        return msg + ": the same number of elements (a reshape?)"
    return msg


def compare_arrays(key: str, ours: np.ndarray, ref: np.ndarray, rtol: float | None = None) -> Row:
    """One key: shape check, then the error measures against the reference's magnitude."""
    ours, ref = np.asarray(ours), np.asarray(ref)
    if ours.shape != ref.shape:
        return Row(key, "SHAPE", tuple(ref.shape), note=_shape_problem(ours.shape, ref.shape))
    base = key.split("@")[0]
    exact = tolerance(base, ref) == 0.0
    tol = 0.0 if exact else (rtol if rtol is not None else tolerance(base, ref))
    row = Row(key, "OK", tuple(ref.shape), tol=tol)
    if ref.size == 0:
        row.max_abs = row.rel = 0.0
        return row
    a, b = ours.astype(np.float64), ref.astype(np.float64)
    finite = np.isfinite(b)
    if not np.array_equal(np.isfinite(a), finite):
        row.status, row.note = "DIFF", "non-finite values where the reference has none (or the reverse)"
        a = np.where(np.isfinite(a), a, 0.0)
    diff = np.where(finite, np.abs(a - b), 0.0)
    b0 = np.where(finite, b, 0.0)
    scale = max(float(np.abs(b0).max()), 1e-12)
    row.max_abs, row.rel = float(diff.max()), float(diff.max()) / scale
    err2, ref2 = float(np.sum(diff ** 2)), float(np.sum(b0 ** 2))
    row.nmse_db = 10 * np.log10(err2 / ref2) if err2 and ref2 else (-np.inf if not err2 else np.inf)
    na, nb = float(np.linalg.norm(np.where(finite, a, 0.0))), float(np.linalg.norm(b0))
    row.cosine = float(np.sum(np.where(finite, a, 0.0) * b0) / (na * nb)) if na and nb else float(na == nb)
    bad = row.rel > tol if not exact else row.max_abs > 0
    if bad:
        row.status = "DIFF"
    found = _token_axis(base, ref.shape)
    if found is not None and ref.shape[found[0]] > 0:
        axis, row.token_word = found
        per = np.moveaxis(diff, axis, 0).reshape(ref.shape[axis], -1).max(axis=1) / scale   # [tokens]
        row.token_q = (float(np.percentile(per, 50)), float(np.percentile(per, 99)), float(per.max()))
        over = np.flatnonzero(per > tol) if not exact else np.flatnonzero(per > 0)
        row.first_token = int(over[0]) if over.size else None
    return row


def _merged_order(primary: list[str], other: list[str]) -> list[str]:
    """primary's keys in order; a key only in `other` goes right after the key that precedes it there."""
    out, seen = list(primary), set(primary)
    for i, k in enumerate(other):
        if k in seen:
            continue
        prev = next((other[j] for j in range(i - 1, -1, -1) if other[j] in seen), None)
        out.insert(out.index(prev) + 1 if prev is not None else 0, k)
        seen.add(k)
    return out


def compare(ours: TraceFile, ref: TraceFile, rtol: float | None = None) -> tuple[list[Row], list[str]]:
    """Walk both traces in data-flow order (the reference's, unless only ours states one).

    -> (rows for every key the reference expects or both hold, keys only in ours). Not rows: a reference
    input that ours lacks (inputs are given, not computed), and a reference key outside the patterns ours
    was recorded with. A reference key that ours should have but lacks is MISSING.
    """
    first, second = (ours, ref) if ours.ordered and not ref.ordered else (ref, ours)
    rows, extra = [], []
    for key in _merged_order(list(first.arrays), list(second.arrays)):
        is_input = key in ref.inputs or key in ours.inputs
        if key in ours.arrays and key in ref.arrays:
            row = compare_arrays(key, ours.arrays[key], ref.arrays[key], rtol)
        elif key in ref.arrays:
            traced = ours.include is None or any(fnmatch.fnmatchcase(key, p) for p in ours.include)
            if is_input or not traced:
                continue
            row = Row(key, "MISSING", tuple(ref.arrays[key].shape), note="not in ours")
        else:
            extra.append(key)
            continue
        row.is_input = is_input
        rows.append(row)
    return rows, extra


def first_divergence(rows: list[Row], ref_keys=()) -> tuple[Row, str] | None:
    """The first DIFF / SHAPE row, or MISSING tap (a step that did not run), and a sentence saying where to
    look; None when all agree. (A missing FORMAT.md key is no divergence: a stage may not have been traced.)"""
    for row in rows:
        if row.status == "MISSING" and tap_for(row.key) is not None and not row.is_input:
            return row, (f"`{row.key}` is missing from ours while everything before it agrees: the step that "
                         f"computes it (inside `{row.key.rsplit('.', 1)[0]}`) did not run")
        if row.status not in ("DIFF", "SHAPE"):
            continue
        at = f" (first at {row.token_word} {row.first_token})" if row.first_token is not None else ""
        if row.status == "SHAPE":
            at = f" ({row.note})"
        if row.is_input:
            return row, f"the inputs differ: `{row.key}`{at}; the two runs were not given the same inputs"
        mod, is_module = where(row.key, ref_keys)
        if is_module:
            return row, f"inputs of `{mod}` agree, its output differs{at}"
        parent = re.sub(r"(\.\d+)+$", "", mod).rsplit(".", 1)[0]        # deepstack.0 -> thinker.model
        return row, (f"`{mod}` is the first to differ{at}; everything before it agrees: look at the step that "
                     f"computes it inside `{parent}`")
    return None


def _num(v: float, fmt: str) -> str:
    return "-" if v != v else f"{v:{fmt}}"


def format_rows(rows: list[Row]) -> list[str]:
    lines = [f"{'status':<8}{'key':<58}{'max_abs':>10}{'rel':>10}{'tol':>8}{'NMSE dB':>9}{'cosine':>10}  "
             f"per-token rel p50 / p99 / max, first past tol"]
    for r in rows:
        tol = "exact" if r.tol == 0.0 else _num(r.tol, ".0e")
        tok = ""
        if r.token_q:
            tok = " / ".join(f"{q:.1e}" for q in r.token_q)
            tok += f", {r.token_word} {r.first_token}" if r.first_token is not None else ""
        name = r.key + (" (input)" if r.is_input else "")
        lines.append(f"{r.status:<8}{name:<58}{_num(r.max_abs, '.2e'):>10}{_num(r.rel, '.2e'):>10}{tol:>8}"
                     f"{_num(r.nmse_db, '.1f'):>9}{_num(r.cosine, '.6f'):>10}  {tok or r.note}")
    return lines


# ---------------------------------------------------------------------------------------------------------
# Command lines
# ---------------------------------------------------------------------------------------------------------
def main_compare(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="omniref compare", description="compare a trace with a reference trace "
                                 "key by key, in data-flow order")
    ap.add_argument("ours", help="trace under test (.npz)")
    ap.add_argument("reference", help="reference trace (.npz) or golden case directory")
    ap.add_argument("--rtol", type=float, help="relative tolerance for every float key (default: the case "
                    "tolerances of omniref verify, 1e-4 for most)")
    ap.add_argument("--first", action="store_true", help="stop at the first divergence and say where to look")
    ap.add_argument("-q", "--quiet", action="store_true", help="print only keys that do not agree")
    args = ap.parse_args(argv)
    try:
        ours, ref = load_trace(args.ours), load_trace(args.reference)
    except TraceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows, extra = compare(ours, ref, args.rtol)
    found = first_divergence(rows, ref.arrays)
    shown = rows[:rows.index(found[0]) + 1] if args.first and found else rows
    print("\n".join(format_rows([r for r in shown if not args.quiet or r.status != "OK"])))
    counts = {s: sum(r.status == s for r in rows) for s in ("OK", "DIFF", "SHAPE", "MISSING")}
    print(f"{counts['OK']} agree, {counts['DIFF']} differ, {counts['SHAPE']} shape, {counts['MISSING']} missing; "
          f"{len(extra)} only in ours (not compared)")
    if found:
        print(f"first divergence: {found[0].key}: {found[1]}")
    elif not rows:
        print("no key in common: nothing was compared")
        return 1
    return 1 if found or counts["MISSING"] else 0


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
                                 "tap (named intermediate) in data-flow order")
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
