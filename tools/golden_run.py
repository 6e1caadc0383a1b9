"""Run the Hugging Face reference on a saved tiny case and capture every FORMAT.md key (sections 6.1-6.8).

    saved case dir --from_pretrained(float32, eager)--> reference model
        audio_tower(output_hidden_states)    -> audio.*              (6.1)
        visual(output_hidden_states)         -> vision.* / vision_video.*   (6.2)
        get_rope_index                       -> thinker.position_ids / rope_deltas (6.3)
        thinker forward                      -> thinker.hidden_states.* / logits (6.4)
        generate() with recording wrappers   -> thinker.generated_ids, talker.*, code_predictor.* (6.5-6.7)
        code2wav forward / chunked_decode    -> code2wav.*            (6.8)

The model part is always the reference itself; the wrappers only record what the reference's own `generate`
computes (arguments and results of talker.generate / talker.forward / code_predictor.generate /
code_predictor.forward / code2wav.chunked_decode, and every MoE router's logits for the decision margins).
"""
from __future__ import annotations

import functools

import numpy as np


def _np(t, dtype=np.float32) -> np.ndarray:
    return t.detach().cpu().numpy().astype(dtype)


class Recorder:
    """Wraps methods of reference modules so that generate() leaves a trace; `restore()` undoes it."""

    def __init__(self):
        self._undo = []

    def wrap(self, obj, name: str, make):
        original = getattr(obj, name)
        setattr(obj, name, make(original))
        self._undo.append((obj, name, original))

    def restore(self):
        for obj, name, original in reversed(self._undo):
            setattr(obj, name, original)
        self._undo.clear()


def topk_gap(router_logits, top_k: int) -> float:
    """Smallest gap, over all tokens, between the k-th and (k+1)-th softmax probability of a router
    ([tokens, E] logits). Softmax in float32 as the reference does."""
    import torch

    probs = torch.softmax(router_logits.float(), dim=-1)
    top = torch.topk(probs, min(top_k + 1, probs.shape[-1]), dim=-1).values
    if top.shape[-1] <= top_k:
        return float("inf")
    return float((top[:, top_k - 1] - top[:, top_k]).min())


def argmax_gap(scores) -> float:
    """top-1 minus top-2 of a score vector ([V]); -inf entries (suppressed ids) never count as runner-up."""
    s = np.asarray(scores, np.float64).ravel()
    s = s[np.isfinite(s)]
    top2 = np.sort(s)[-2:]
    return float(top2[1] - top2[0])


def talker_processed_scores(raw: np.ndarray, produced: list[int], penalty: float, vocab: int,
                            eos: int) -> np.ndarray:
    """FORMAT 6.7 step 1 on one raw logits row [Vt]: repetition penalty over the distinct tokens produced so
    far, then ids [Vt-1024, Vt) except eos set to -inf. Used to check the reference's greedy choice."""
    s = raw.astype(np.float32).copy()
    for tok in sorted(set(produced)):
        s[tok] = s[tok] / penalty if s[tok] > 0 else s[tok] * penalty
    suppressed = np.ones(vocab, bool)
    suppressed[: vocab - 1024] = False
    suppressed[eos] = False
    s[suppressed] = -np.inf
    return s


def load_reference(case_dir: str):
    import torch
    from transformers import Qwen3OmniMoeForConditionalGeneration

    model = Qwen3OmniMoeForConditionalGeneration.from_pretrained(
        case_dir, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    return model


def run_full(case_dir: str, inputs: dict, gen: dict):
    """Run every model stage of a full case.

    inputs: numpy arrays `input_ids [1, L]`, optional `input_features [n, 128, F]`, `feature_attention_mask
    [n, F]`, `pixel_values`, `image_grid_thw`, `pixel_values_videos`, `video_grid_thw`,
    `video_second_per_grid`, and `use_audio_in_video` (bool).
    gen: thinker_max_new_tokens, talker_max_new_tokens, speaker, repetition_penalty, chunk_size,
    left_context_size.
    Returns (arrays by golden key, decision margins, stats incl. a list of `problems`, the reference model,
    the raw trace).
    """
    import torch

    model = load_reference(case_dir)
    cfg = model.config
    tcfg = cfg.thinker_config
    thinker = model.thinker
    out: dict[str, np.ndarray] = {}
    margins: dict[str, float] = {}

    ids = torch.from_numpy(inputs["input_ids"])
    attn = torch.ones_like(ids)
    t_in = dict(input_ids=ids, attention_mask=attn)
    has_audio = "input_features" in inputs
    has_image = "pixel_values" in inputs
    has_video = "pixel_values_videos" in inputs
    if has_audio:
        t_in["input_features"] = torch.from_numpy(inputs["input_features"])
        t_in["feature_attention_mask"] = torch.from_numpy(inputs["feature_attention_mask"].astype(np.int64))
    if has_image:
        t_in["pixel_values"] = torch.from_numpy(inputs["pixel_values"])
        t_in["image_grid_thw"] = torch.from_numpy(inputs["image_grid_thw"])
    if has_video:
        t_in["pixel_values_videos"] = torch.from_numpy(inputs["pixel_values_videos"])
        t_in["video_grid_thw"] = torch.from_numpy(inputs["video_grid_thw"])
        t_in["video_second_per_grid"] = torch.from_numpy(inputs["video_second_per_grid"])
    use_aiv = bool(inputs.get("use_audio_in_video", False))

    # FORMAT 9.8: the talker's rope index reads config.audio_config (absent from the talker config) as soon as
    # a prompt holds audio together with an image or video; attach the thinker's at run time (never saved).
    if has_audio and (has_image or has_video):
        model.talker.config.audio_config = tcfg.audio_config

    # ---------------- routers: decision margins of every MoE layer, whatever runs them -------------------
    router_gaps = {"thinker": [], "talker": []}
    hooks = []
    for part, module in (("thinker", thinker), ("talker", model.talker)):
        for name, sub in module.named_modules():
            if type(sub).__name__.endswith("TopKRouter"):
                k = sub.top_k

                def hook(mod, args, output, part=part, k=k):
                    router_gaps[part].append(topk_gap(output[0], k))
                hooks.append(sub.register_forward_hook(hook))

    with torch.no_grad():
        # ---------------- 6.1 audio encoder ----------------
        if has_audio:
            mask = t_in["feature_attention_mask"].bool()
            feats = t_in["input_features"].permute(0, 2, 1)[mask].permute(1, 0)     # [128, sum F_i]
            lens = mask.sum(1)
            a = thinker.model.audio_tower(feats, feature_lens=lens, output_hidden_states=True)
            out["audio.input_features"] = _np(feats)
            out["audio.feature_lens"] = _np(lens, np.int64)
            for i, h in enumerate(a.hidden_states):
                out[f"audio.hidden_states.{i}"] = _np(h)
            out["audio.output"] = _np(a.last_hidden_state)
        # ---------------- 6.2 vision encoder (images and videos run separately, as the model does) --------
        for prefix, pv_key, grid_key in (("vision", "pixel_values", "image_grid_thw"),
                                         ("vision_video", "pixel_values_videos", "video_grid_thw")):
            if pv_key not in t_in:
                continue
            v = thinker.model.visual(t_in[pv_key], grid_thw=t_in[grid_key], output_hidden_states=True)
            out[f"{prefix}.pixel_values"] = _np(t_in[pv_key])
            out[f"{prefix}.grid_thw"] = _np(t_in[grid_key], np.int64)
            for i, h in enumerate(v.hidden_states):
                out[f"{prefix}.hidden_states.{i}"] = _np(h)
            out[f"{prefix}.output"] = _np(v.pooler_output)
            for k, d in enumerate(v.deepstack_features):
                out[f"{prefix}.deepstack.{k}"] = _np(d)
        # ---------------- 6.3 rope index ----------------
        pos, deltas = thinker.get_rope_index(
            ids, t_in.get("image_grid_thw"), t_in.get("video_grid_thw"), attn, use_aiv,
            t_in["feature_attention_mask"].sum(1) if has_audio else None, t_in.get("video_second_per_grid"))
        out["thinker.position_ids"] = _np(pos)
        out["thinker.rope_deltas"] = _np(deltas).reshape(1, 1)
        # ---------------- 6.4 thinker prefill ----------------
        router_gaps["thinker"].clear()
        tf = thinker(**t_in, use_audio_in_video=use_aiv, output_hidden_states=True)
        out["thinker.input_ids"] = inputs["input_ids"].astype(np.int64)
        out["thinker.attention_mask"] = _np(attn, np.int64)
        out["thinker.use_audio_in_video"] = np.array(int(use_aiv), np.int64)
        for i, h in enumerate(tf.hidden_states):
            out[f"thinker.hidden_states.{i}"] = _np(h)
        out["thinker.logits"] = _np(tf.logits)
        out["thinker.logits_last"] = _np(tf.logits[:, -1])
    prefill_router_gap = min(router_gaps["thinker"]) if router_gaps["thinker"] else float("inf")

    # ---------------- 6.5-6.8 generate() with recorders ----------------
    rec = Recorder()
    trace = {"talker_fwd": [], "cp_gen": [], "cp_logits": [], "chunked_codes": [], "talker_gen": {}}

    def wrap_talker_generate(orig):
        @functools.wraps(orig)
        def f(*args, **kwargs):
            trace["talker_gen"]["kwargs"] = kwargs
            kwargs = dict(kwargs, output_scores=True, output_logits=True)
            res = orig(*args, **kwargs)
            trace["talker_gen"]["result"] = res
            return res
        return f

    def wrap_talker_forward(orig):
        @functools.wraps(orig)
        def f(*args, **kwargs):
            res = orig(*args, **kwargs)
            trace["talker_fwd"].append({
                "inputs_embeds": _np(kwargs["inputs_embeds"]),
                "position_ids": _np(kwargs["position_ids"]) if kwargs.get("position_ids") is not None else None,
                "logits_last": _np(res.logits[:, -1]),
                "hidden_last": _np(res.hidden_states[0][-1][:, -1]),
                "hidden_all": _np(res.hidden_states[0][-1]),
            })
            return res
        return f

    def wrap_cp_generate(orig):
        @functools.wraps(orig)
        def f(*args, **kwargs):
            res = orig(*args, **kwargs)
            trace["cp_gen"].append({"inputs_embeds": _np(kwargs["inputs_embeds"]),
                                    "sequences": _np(res.sequences, np.int64)})
            return res
        return f

    def wrap_cp_forward(orig):
        @functools.wraps(orig)
        def f(*args, **kwargs):
            res = orig(*args, **kwargs)
            trace["cp_logits"].append(_np(res.logits[:, -1]))
            return res
        return f

    def wrap_chunked(orig):
        @functools.wraps(orig)
        def f(codes, *args, **kwargs):
            trace["chunked_codes"].append(_np(codes, np.int64))
            return orig(codes, *args, **kwargs)
        return f

    def wrap_thinker_generate(orig):
        @functools.wraps(orig)
        def f(*args, **kwargs):
            res = orig(*args, **kwargs)
            trace["thinker_result"] = res
            return res
        return f

    rec.wrap(thinker, "generate", wrap_thinker_generate)
    rec.wrap(model.talker, "generate", wrap_talker_generate)
    rec.wrap(model.talker, "forward", wrap_talker_forward)
    rec.wrap(model.talker.code_predictor, "generate", wrap_cp_generate)
    rec.wrap(model.talker.code_predictor, "forward", wrap_cp_forward)
    rec.wrap(model.code2wav, "chunked_decode", wrap_chunked)

    gen_kwargs = {k: v for k, v in t_in.items() if k != "input_ids"}
    try:
        with torch.no_grad():
            sequences, wav = model.generate(
                input_ids=ids, speaker=gen["speaker"], use_audio_in_video=use_aiv, return_audio=True,
                thinker_max_new_tokens=gen["thinker_max_new_tokens"], thinker_eos_token_id=cfg.im_end_token_id,
                talker_max_new_tokens=gen["talker_max_new_tokens"], talker_do_sample=False,
                talker_repetition_penalty=gen["repetition_penalty"], thinker_output_logits=True, **gen_kwargs)
    finally:
        rec.restore()
        for h in hooks:
            h.remove()

    L = ids.shape[1]
    gen_ids = _np(sequences[:, L:], np.int64)
    out["thinker.generated_ids"] = gen_ids

    # thinker margins: the raw logits of every generated token (greedy, no logits processors)
    th = trace["thinker_result"]
    thinker_gaps = [argmax_gap(_np(lg[0])) for lg in th.logits]
    for s, lg in enumerate(th.logits):
        if int(lg[0].argmax()) != int(gen_ids[0, s]):
            raise RuntimeError(f"thinker token {s} is not the argmax of its logits")
    # talker.thinker_embed / thinker_hidden: generate() concatenates hidden_states[0] / [accept_hidden_layer]
    # of every thinker forward (prompt, then one row per fed-back token)
    out["talker.thinker_embed"] = np.concatenate([_np(h[0]) for h in th.hidden_states], 1)
    out["talker.thinker_hidden"] = np.concatenate(
        [_np(h[cfg.talker_config.accept_hidden_layer]) for h in th.hidden_states], 1)
    # the stand-alone prefill forward (thinker.hidden_states.*) must be what generate() computed
    prefill_diff = max(float(np.abs(_np(h) - out[f"thinker.hidden_states.{i}"]).max())
                       for i, h in enumerate(th.hidden_states[0]))

    tk = trace["talker_gen"]
    kw, res = tk["kwargs"], tk["result"]
    tcfg_t = cfg.talker_config
    Vt = tcfg_t.text_config.vocab_size
    eos = tcfg_t.codec_eos_token_id

    # ---------------- 6.6 talker input ----------------
    out["talker.input_ids"] = _np(kw["talker_input_ids"], np.int64)
    out["talker.attention_mask"] = _np(kw["attention_mask"], np.int64)
    out["talker.inputs_embeds"] = _np(kw["inputs_embeds"])
    out["talker.trailing_text_hidden"] = _np(kw["trailing_text_hidden"])
    with torch.no_grad():
        special = torch.tensor([[cfg.tts_bos_token_id, cfg.tts_eos_token_id, cfg.tts_pad_token_id]])
        out["talker.tts_special_embeds"] = _np(model.talker.text_projection(
            thinker.get_input_embeddings()(special)))[0]

    # ---------------- 6.7 talker loop ----------------
    fwd = trace["talker_fwd"]
    n_steps = len(fwd)
    seq = _np(res.sequences, np.int64)
    if seq.shape[1] != n_steps:
        seq = seq[:, -n_steps:]
    out["talker.sequences"] = seq
    pre = fwd[0]
    out["talker.prefill_hidden"] = pre["hidden_all"]
    pos0 = pre["position_ids"]
    out["talker.position_ids"] = pos0[1:] if pos0.shape[0] == 4 else pos0
    out["talker.step_logits"] = np.concatenate([f["logits_last"] for f in fwd], 0)
    out["talker.step_hidden"] = np.concatenate([f["hidden_last"] for f in fwd], 0)
    if n_steps > 1:
        out["talker.step_inputs_embeds"] = np.concatenate([f["inputs_embeds"][:, -1] for f in fwd[1:]], 0)
        steps_pos = [f["position_ids"] for f in fwd[1:]]
        steps_pos = [p[1:] if p.shape[0] == 4 else p for p in steps_pos]
        out["talker.step_position_ids"] = np.concatenate(steps_pos, axis=-1).astype(np.float32)
    codes = trace["chunked_codes"][0]
    out["talker.codes"] = codes
    out["talker.wav"] = _np(wav)
    T = codes.shape[-1]
    G = codes.shape[1]
    cp = trace["cp_gen"]
    out["code_predictor.inputs_embeds"] = np.stack([c["inputs_embeds"][0] for c in cp], 0)
    out["code_predictor.tokens"] = np.stack([c["sequences"][0, -(G - 1):] for c in cp], 0)
    cpl = np.concatenate(trace["cp_logits"], 0)                               # [T*(G-1), C]
    out["code_predictor.logits"] = cpl.reshape(len(cp), G - 1, -1)

    # ---------------- consistency checks against FORMAT.md ----------------
    problems = []
    if prefill_diff > 1e-5:
        problems.append(f"generate() prefill hidden states differ from the thinker forward by {prefill_diff:.2e}")
    if len(cp) != T:
        problems.append(f"{len(cp)} code predictor runs for {T} code columns")
    if not np.array_equal(out["code_predictor.tokens"].T, codes[0, 1:]):
        problems.append("code predictor tokens != talker.codes[0, 1:]")
    if not np.array_equal(out["code_predictor.logits"].argmax(-1), out["code_predictor.tokens"]):
        problems.append("code predictor tokens are not the argmax of its logits")
    produced = []
    talker_gaps = []
    for s in range(n_steps):
        sc = talker_processed_scores(out["talker.step_logits"][s], produced, gen["repetition_penalty"], Vt, eos)
        if int(np.argmax(sc)) != int(seq[0, s]):
            problems.append(f"talker step {s}: argmax of processed scores {int(np.argmax(sc))} != {seq[0, s]}")
        talker_gaps.append(argmax_gap(sc))
        produced.append(int(seq[0, s]))
    if res.scores is not None:
        ref_scores = np.stack([_np(s[0]) for s in res.scores])
        mine = np.stack([talker_processed_scores(out["talker.step_logits"][s], list(seq[0, :s]),
                                                 gen["repetition_penalty"], Vt, eos) for s in range(n_steps)])
        fin = np.isfinite(ref_scores)
        if not (np.array_equal(fin, np.isfinite(mine)) and np.allclose(ref_scores[fin], mine[fin], atol=1e-5)):
            problems.append("talker processed scores differ from FORMAT 6.7 step 1")
    if seq[0, 0] == eos:
        problems.append("talker's first token is codec_eos (the reference cannot decode that)")

    cp_gaps = [argmax_gap(r) for r in cpl]
    margins.update({
        "moe_router_topk_gap(prob)": float(min(min(router_gaps["thinker"] or [np.inf]),
                                           min(router_gaps["talker"] or [np.inf]), prefill_router_gap)),
        "thinker_moe_topk_gap(prob)": float(min(min(router_gaps["thinker"] or [np.inf]), prefill_router_gap)),
        "talker_moe_topk_gap(prob)": float(min(router_gaps["talker"] or [np.inf])),
        "thinker_argmax_gap": float(min(thinker_gaps)),
        "talker_argmax_gap": float(min(talker_gaps)),
        "code_predictor_argmax_gap": float(min(cp_gaps)),
    })
    stats = {"n_prompt": int(L), "n_thinker_new": int(gen_ids.shape[1]), "n_talker_steps": int(n_steps),
             "n_code_columns": int(T), "talker_ended_with_eos": bool(seq[0, -1] == eos),
             "wav_samples": int(out["talker.wav"].shape[-1]),
             "wav_clipped_fraction": float(np.mean(np.abs(out["talker.wav"]) >= 1.0)),
             "problems": problems}
    return out, margins, stats, model, trace


def code2wav_goldens(c2w, codes: np.ndarray, chunk_size: int, left_context_size: int) -> dict:
    """6.8: code2wav forward of all codes [1, Q, T] and chunked decoding -> the code2wav.* keys."""
    import torch

    with torch.no_grad():
        c = torch.from_numpy(codes)
        wav = c2w(c)
        chunked = c2w.chunked_decode(c, chunk_size=chunk_size, left_context_size=left_context_size)
    return {"code2wav.codes": codes.astype(np.int64),
            "code2wav.wav": wav.numpy().astype(np.float32),
            "code2wav.wav_chunked": chunked.numpy().astype(np.float32),
            "code2wav.chunk_size": np.array(chunk_size, np.int64),
            "code2wav.left_context_size": np.array(left_context_size, np.int64)}
