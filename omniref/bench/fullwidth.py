"""`omniref bench --full-width`: what one layer costs at the published widths, and what the real model would.

The 30B checkpoint does not fit in this machine's 24 GiB, but its layers are all alike, so one measured layer
says most of it. On a random checkpoint with the exact published widths (`omniref.fullwidth`, 2 layers per
stack), each stack runs twice on the same weights, once told it has 1 layer and once 2; the difference is
one layer, the rest (embeddings, lm_head, conv stem, mergers, code predictor) is the fixed part:

    T(L) = fixed + L * per_layer        ->   T(48) for the thinker, T(32) audio, T(27) vision, T(20) talker

Stacks: the thinker (prefill of a text prompt, then KV-cached decode per token), the audio encoder and the
vision encoder (one input each, no decode), the talker (prefill, then per codec frame, its code predictor
included in the fixed part). Bytes read per layer are counted from the shapes (a decode token reads the
attention, the router and k of E experts; a prefill of N tokens touches E(1 - (1 - k/E)^N) experts).
Timings come from one run on a shared machine: compare them with each other, not with another day's.
"""
from __future__ import annotations

import copy
import resource
import tempfile
from pathlib import Path

import numpy as np

from .. import backend
from ..checkpoint import expected_shapes
from ..config import qwen3_omni_30b_a3b_instruct
from ..summary import EXPERT, component_params, kv_bytes_per_token, measure_bandwidth
from .timing import best_time, settle

__all__ = ["PUBLISHED_DEPTH", "with_depth", "layer_bytes", "measure", "report", "run"]

PUBLISHED_DEPTH = {"thinker": 48, "audio": 32, "vision": 27, "talker": 20}


def with_depth(cfg, stack: str, layers: int):
    """A copy of `cfg` whose `stack` has `layers` layers (the weights of deeper layers are simply not read)."""
    c = copy.deepcopy(cfg)
    if stack == "thinker":
        c.thinker_config.text_config.num_hidden_layers = layers
    elif stack == "audio":
        c.thinker_config.audio_config.encoder_layers = layers
    elif stack == "vision":
        c.thinker_config.vision_config.depth = layers
        c.thinker_config.vision_config.deepstack_visual_indexes = []   # same fixed part at every depth
    elif stack == "talker":
        c.talker_config.text_config.num_hidden_layers = layers
    return c


def layer_bytes(cfg, stack: str, tokens: int) -> dict[str, float]:
    """bf16 bytes layer 0 of `stack` reads: {"decode": one token, "prefill": `tokens` tokens at once}."""
    comp = {"thinker": "thinker", "audio": "audio", "vision": "vision", "talker": "talker"}[stack]
    marker = {"thinker": "thinker.model.layers.0.", "audio": "audio_tower.layers.0.",
              "vision": "visual.blocks.0.", "talker": "talker.model.layers.0."}[stack]
    tc = cfg.thinker_config.text_config if stack == "thinker" else cfg.talker_config.text_config
    k_over_e = tc.num_experts_per_tok / tc.num_experts
    touched = 1 - (1 - k_over_e) ** tokens              # share of the experts N routed tokens touch
    dec = pre = 0.0
    for key, shape in expected_shapes(cfg, [comp]).items():
        if marker not in key:
            continue
        n = 2.0 * float(np.prod(shape))
        expert = EXPERT.search(key) is not None
        dec += n * k_over_e if expert else n
        pre += n * touched if expert else n
    return {"decode": dec, "prefill": pre}


def _timed(fn) -> float:
    """Fastest of two calls after an untimed one (which also pages the memory-mapped weights in)."""
    settle()
    return best_time(fn, 2)


def measure(ck, *, prompt_tokens: int = 128, decode_tokens: int = 4, audio_seconds: float = 10.0,
            image_side: int = 448, log=print) -> dict:
    """{stack: {"prefill": (T1, T2), "decode": (T1, T2) or None}} seconds at depth 1 and 2."""
    from ..audio import mel
    from ..audio.encoder import encode_audio
    from ..talker import Talker
    from ..thinker.model import Thinker, ThinkerPrompt
    from ..thinker.prompt import PromptIds, chat_prompt
    from ..vision.encoder import encode_vision
    from ..vision.preprocess import preprocess_image
    cfg, w = ck.config, ck.weights
    rng = np.random.default_rng(0)
    vocab = cfg.thinker_config.text_config.vocab_size
    text = rng.integers(vocab // 2, min(vocab, 151643), prompt_tokens - 10).tolist()   # ordinary text tokens
    ids = chat_prompt(PromptIds.from_config(cfg, min(198, vocab - 1)), [text])   # [N] one user turn
    feats, mask = mel.extract_features([(0.1 * rng.standard_normal(int(16000 * audio_seconds))).astype(np.float32)])
    vc = cfg.thinker_config.vision_config
    vi = preprocess_image(rng.integers(0, 256, (image_side, image_side, 3), dtype=np.uint8), vc.patch_size,
                          vc.spatial_merge_size, vc.temporal_patch_size)
    out: dict = {}
    for L in (1, 2):
        log(f"  depth {L}: thinker ...")
        th = Thinker(w, with_depth(cfg, "thinker", L))
        prompt = ThinkerPrompt(input_ids=ids)
        t_pre = _timed(lambda: th.generate(prompt, 1))
        t_all = _timed(lambda: th.generate(prompt, 1 + decode_tokens))
        out.setdefault("thinker", {"prefill": [], "decode": []})
        out["thinker"]["prefill"].append(t_pre)
        out["thinker"]["decode"].append((t_all - t_pre) / decode_tokens)
        log(f"  depth {L}: audio, vision ...")
        ac = with_depth(cfg, "audio", L).thinker_config.audio_config
        out.setdefault("audio", {"prefill": [], "decode": None})["prefill"].append(
            _timed(lambda: encode_audio(w.scope("thinker.audio_tower."), ac, feats, mask)))
        vcl = with_depth(cfg, "vision", L).thinker_config.vision_config
        out.setdefault("vision", {"prefill": [], "decode": None})["prefill"].append(
            _timed(lambda: encode_vision(w.scope("thinker.visual."), vcl, vi.pixel_values, vi.grid_thw)))
    if ck.has_talker:
        accept = cfg.talker_config.accept_hidden_layer
        res = Thinker(w, cfg).generate(ThinkerPrompt(input_ids=ids), 4, record_layer=accept)
        for L in (1, 2):
            log(f"  depth {L}: talker ...")
            tk = Talker(w, with_depth(cfg, "talker", L))
            inputs = tk.build_inputs(ids, res.generated_ids, res.embeds, res.recorded)
            t_pre = _timed(lambda: tk.generate(inputs, max_new_tokens=1))
            t_all = _timed(lambda: tk.generate(inputs, max_new_tokens=1 + decode_tokens))
            steps = len(tk.generate(inputs, max_new_tokens=1 + decode_tokens).sequences)   # eos may come early
            out.setdefault("talker", {"prefill": [], "decode": []})
            out["talker"]["prefill"].append(t_pre)
            out["talker"]["decode"].append((t_all - t_pre) / max(steps - 1, 1))
    return out


def _split(t1: float, t2: float) -> tuple[float, float]:
    """(fixed, per layer) from the times at depth 1 and 2 (noise can make the difference negative)."""
    per = max(t2 - t1, 0.0)
    return t1 - per, per


def report(times: dict, *, prompt_tokens: int, bandwidth: float, big_bandwidth: float = 200e9,
           memory: float = 24 * 2**30, context: int = 4096) -> str:
    """The per-layer table and its extrapolation to the published depths."""
    real = qwen3_omni_30b_a3b_instruct()
    rows = [f"{'stack':<8}{'layers':>7}{'prefill/layer':>15}{'decode/layer':>14}{'MB/layer dec':>14}"
            f"{'MB/layer pre':>14}{'prefill total':>15}{'decode total':>14}{'units/s':>9}"]
    decode_total = {}
    for stack, t in times.items():
        L = PUBLISHED_DEPTH[stack]
        fp, pp = _split(*t["prefill"])
        b = layer_bytes(real, stack, prompt_tokens)
        line = f"{stack:<8}{L:>7}{pp * 1e3:>12.1f} ms"
        if t["decode"] is not None:
            fd, pd = _split(*t["decode"])
            decode_total[stack] = fd + L * pd
            line += f"{pd * 1e3:>11.1f} ms{b['decode'] / 1e6:>14.1f}{b['prefill'] / 1e6:>14.1f}" \
                    f"{(fp + L * pp):>13.2f} s{decode_total[stack]:>12.3f} s{1 / decode_total[stack]:>9.2f}"
        else:
            line += f"{'-':>14}{'-':>14}{b['prefill'] / 1e6:>14.1f}{(fp + L * pp):>13.2f} s{'-':>14}{'-':>9}"
        rows.append(line)
    weights = 2.0 * sum(p[0] for p in component_params(real).values())
    need = weights + kv_bytes_per_token(real) * context
    rows += ["",
             f"the published model: {weights / 2**30:.1f} GiB of bf16 weights + {context}-token KV cache = "
             f"{need / 2**30:.1f} GiB" + ("" if need <= memory else
                                          f": does NOT fit in {memory / 2**30:.0f} GiB here (every token "
                                          "would page weights in from disk; the speeds above assume it fits)"),
             f"units/s = thinker tokens, talker codec frames, at this machine's {bandwidth / 1e9:.1f} GB/s measured; "
             f"a {big_bandwidth / 1e9:.0f} GB/s machine with >= {need / 2**30:.0f} GiB would run decode about "
             f"{big_bandwidth / bandwidth:.0f}x faster where it is bandwidth-bound: "
             + ", ".join(f"{k} {big_bandwidth / bandwidth / v:.1f}/s" for k, v in decode_total.items())]
    return "\n".join(rows)


def run(checkpoint: str | None = None, *, prompt_tokens: int = 128, decode_tokens: int = 4, log=print) -> str:
    """Measure (generating a 2-layer full-width checkpoint in a temp dir when none is given) and report."""
    from ..fullwidth import fullwidth_config, write_checkpoint
    from ..hub import open_checkpoint
    tmp = None
    if checkpoint is None:
        tmp = tempfile.TemporaryDirectory(prefix="omniref_fullwidth_")
        log(f"writing a 2-layer full-width checkpoint (~5.3 GB) into {tmp.name} ...")
        checkpoint = write_checkpoint(Path(tmp.name) / "ckpt", fullwidth_config(layers=2))
    try:
        ck = open_checkpoint(checkpoint)
        if ck.config.thinker_config.text_config.num_hidden_layers < 2:
            raise ValueError(f"{checkpoint}: the full-width bench needs >= 2 layers per stack")
        log(f"backend {backend.active()}; prompt {prompt_tokens} tokens, {decode_tokens} decode steps")
        times = measure(ck, prompt_tokens=prompt_tokens, decode_tokens=decode_tokens, log=log)
        text = report(times, prompt_tokens=prompt_tokens, bandwidth=measure_bandwidth())
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return text + f"\npeak RSS of this run: {peak / 2**30:.2f} GiB (backend {backend.active()})"
    finally:
        if tmp is not None:
            tmp.cleanup()
