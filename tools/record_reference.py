"""Record a trace of the Hugging Face reference, with the names and layout of `omniref trace`.

    python tools/record_reference.py CASE_DIR -o ref.npz [--tap PATTERN]... [--all-calls] [--force]
    python tools/record_reference.py CHECKPOINT_DIR --inputs ours.npz -o ref.npz

Needs the optional `golden` extra (torch 2.13.0, transformers 5.24.0; tools/README.md); omniref never
imports this file. It loads the checkpoint into `Qwen3OmniMoeForConditionalGeneration` (float32, eager
attention, as the golden cases were made), registers a forward hook on every module that `omniref.trace.TAPS`
names, runs the same inputs, and writes a trace file that `omniref compare` reads:

    omniref trace CASE -o ours.npz && python tools/record_reference.py CASE -o ref.npz
    omniref compare ours.npz ref.npz --first

Inputs come from the case's golden.npz, or (`--inputs`) from the input keys of an omniref trace, so a run on
the real 30B checkpoint with your own media is one `omniref trace` / `generate --trace` and one recorder run.
What runs: a thinker + talker `generate()` when the inputs hold `thinker.input_ids` (every audio / vision /
thinker / talker / code predictor / code2wav module is then called by the reference itself), else Code2Wav on
`code2wav.codes`. A module called several times keeps its first call (the prefill) unless --all-calls.

Names are honest by construction: omniref's tap names follow the checkpoint's keys; transformers 5 nests the
thinker one level deeper (`thinker.model.language_model.layers.3` holds `thinker.model.layers.3.*` weights).
Before anything runs, every module tap of the table is looked up in the real `named_modules()` under that
renaming, and every parameter of a tapped module must be a key of the checkpoint; a name that matches nothing
stops the run.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from omniref.trace import TAPS, Trace, load_trace  # noqa: E402
from omniref.weights import load_weights  # noqa: E402

# transformers-5 module path prefix -> the checkpoint's (and omniref's) prefix
RENAMES = (("thinker.model.language_model.", "thinker.model."), ("thinker.model.audio_tower.", "thinker.audio_tower."),
           ("thinker.model.visual.", "thinker.visual."))


def checkpoint_name(hf_name: str) -> str:
    for new, old in RENAMES:
        if hf_name.startswith(new) or hf_name + "." == new:
            return old + hf_name[len(new):] if hf_name + "." != new else old[:-1]
    return hf_name


def _tap_regex(name: str) -> re.Pattern:
    return re.compile(re.sub(r"\\\{[a-z]\\\}", r"\\d+", re.escape(name)) + "$")


MODULE_TAPS = [(_tap_regex(t.name), t) for t in TAPS if t.module]


def tapped_modules(model, weight_keys: set[str]) -> dict[str, object]:
    """checkpoint-style name -> module, for every module a tap names. Stops on a tap name that matches no
    module, or a tapped module whose parameters are not checkpoint keys under that name."""
    found, params_bad = {}, []
    parts = {k.split(".")[0] for k in weight_keys}          # a code2wav-only checkpoint has only "code2wav"
    for hf_name, module in model.named_modules():
        name = checkpoint_name(hf_name)
        if name.split(".")[0] in parts and any(rx.match(name) for rx, _ in MODULE_TAPS):
            found[name] = module
            for pname, _ in module.named_parameters(recurse=False):
                # transformers 5 fuses the experts in memory; the files keep one tensor per expert (FORMAT.md)
                key = {"gate_up_proj": f"{name}.0.gate_proj.weight", "down_proj": f"{name}.0.down_proj.weight"
                       }.get(pname, f"{name}.{pname}") if name.endswith(".experts") else f"{name}.{pname}"
                if key not in weight_keys:
                    params_bad.append(f"{name}.{pname} (module {hf_name})")
    unmatched = [t.name for rx, t in MODULE_TAPS
                 if t.name.split(".")[0] in parts and not any(rx.match(n) for n in found)]
    if params_bad:
        raise SystemExit(f"error: tapped modules whose parameters are not checkpoint keys: {params_bad[:5]}")
    if unmatched:
        raise SystemExit(f"error: tap names that match no module of the reference: {unmatched}")
    return found


def _np(t) -> np.ndarray:
    a = t.detach().cpu().numpy()
    return a.astype(np.float32) if a.dtype.kind == "f" else a.astype(np.int64)


def _first(output):
    """What a module 'returns' for the trace: the first element of a tuple / ModelOutput."""
    if isinstance(output, (tuple, list)):
        return output[0]
    if hasattr(output, "to_tuple"):
        return output.to_tuple()[0]
    return output


def install_hooks(model, modeling, trace: Trace, modules: dict):
    """Forward hooks for the module taps, plus the documented taps that have no module of their own."""
    handles, undo, attn_stack, ds_count = [], [], [], [0]
    rec = trace.offer

    def out_hook(name):
        def hook(mod, args, output):
            if name.endswith(".mlp.gate"):              # router: (logits, scores, indices)
                rec(name, _np(output[0]))
                rec(name + ".router_scores", _np(output[1]))
                rec(name + ".router_indices", _np(output[2]))
            else:
                rec(name, _np(_first(output)))
        return hook

    for name, module in modules.items():
        handles.append(module.register_forward_hook(out_hook(name)))
    # attention: q/k after RoPE (the module-level apply_rotary_pos_emb) and o_proj's input
    for name, module in modules.items():
        if name.endswith(".self_attn") and hasattr(module, "o_proj"):
            handles.append(module.register_forward_pre_hook(lambda m, a, n=name: attn_stack.append(n)))
            handles.append(module.register_forward_hook(lambda m, a, o: [attn_stack.pop(), None][1]))
            handles.append(module.o_proj.register_forward_pre_hook(
                lambda m, a, n=name: rec(n + ".attn_output", _np(a[0]))))
    original_rope = modeling.apply_rotary_pos_emb

    def rope(q, k, cos, sin, *args, **kwargs):
        q2, k2 = original_rope(q, k, cos, sin, *args, **kwargs)
        if attn_stack:
            rec(attn_stack[-1] + ".q_rotary", _np(q2))
            rec(attn_stack[-1] + ".k_rotary", _np(k2))
        return q2, k2
    modeling.apply_rotary_pos_emb = rope
    undo.append(lambda: setattr(modeling, "apply_rotary_pos_emb", original_rope))

    # thinker text model: fused inputs, positions, and the DeepStack step after layer k
    lm = model.thinker.model.language_model
    talker_model = model.talker.model

    def lm_pre(mod, args, kwargs):
        ds_count[0] = 0
        rec("thinker.model.inputs_embeds", _np(kwargs["inputs_embeds"]))
        pos = kwargs.get("position_ids")
        if pos is not None:
            rec("thinker.model.position_ids", _np(pos[1:] if pos.shape[0] == 4 else pos).astype(np.float32))
    handles.append(lm.register_forward_pre_hook(lm_pre, with_kwargs=True))

    def talker_pre(mod, args, kwargs):
        pos = kwargs.get("position_ids")
        if pos is not None:
            rec("talker.model.position_ids", _np(pos[1:] if pos.shape[0] == 4 else pos).astype(np.float32))
    handles.append(talker_model.register_forward_pre_hook(talker_pre, with_kwargs=True))
    original_ds = lm._deepstack_process

    def deepstack(hidden, mask, embeds):
        out = original_ds(hidden, mask, embeds)
        rec(f"thinker.model.deepstack.{ds_count[0]}", _np(out))
        ds_count[0] += 1
        return out
    lm._deepstack_process = deepstack
    undo.append(lambda: setattr(lm, "_deepstack_process", original_ds))

    # audio tower: the transformer's input (after conv_out + positions, padding rows dropped)
    tower = model.thinker.model.audio_tower
    handles.append(tower.layers[0].register_forward_pre_hook(
        lambda m, a: rec("thinker.audio_tower.inputs_embeds", _np(a[0]))))
    # vision: the interpolated learned positions, as the reference sums them
    visual = model.thinker.model.visual
    interp = {}
    original_interp = modeling.get_vision_interpolation_indices_and_weights

    def capture_interp(*args, **kwargs):
        interp["weights"] = out = original_interp(*args, **kwargs)
        return out
    modeling.get_vision_interpolation_indices_and_weights = capture_interp
    undo.append(lambda: setattr(modeling, "get_vision_interpolation_indices_and_weights", original_interp))
    handles.append(visual.pos_embed.register_forward_hook(
        lambda m, a, o: rec("thinker.visual.pos_embeds", _np((o * interp["weights"][1][:, :, None]).sum(1)))))

    # talker inputs: the arguments generate() hands to the talker
    original_gen = model.talker.generate

    def talker_generate(*args, **kwargs):
        rec("talker.inputs_embeds", _np(kwargs["inputs_embeds"]))
        rec("talker.trailing_text_hidden", _np(kwargs["trailing_text_hidden"]))
        return original_gen(*args, **kwargs)
    model.talker.generate = talker_generate
    undo.append(lambda: setattr(model.talker, "generate", original_gen))
    # the frames' codes, as generate() hands them to Code2Wav
    original_chunked = model.code2wav.chunked_decode

    def chunked_decode(codes, *args, **kwargs):
        rec("talker.codes", _np(codes))
        return original_chunked(codes, *args, **kwargs)
    model.code2wav.chunked_decode = chunked_decode
    undo.append(lambda: setattr(model.code2wav, "chunked_decode", original_chunked))
    return handles, undo


def run(model, inputs: dict, meta: dict):
    """Run the reference on golden-named inputs: generate() for a prompt, else Code2Wav on codes."""
    import torch
    t = lambda k, dtype=None: torch.from_numpy(np.ascontiguousarray(inputs[k] if dtype is None
                                                                    else inputs[k].astype(dtype)))
    with torch.no_grad():
        if "thinker.input_ids" not in inputs:
            return model.code2wav(t("code2wav.codes"))
        kw = dict(input_ids=t("thinker.input_ids"))
        if "mel.input_features" in inputs:
            kw.update(input_features=t("mel.input_features"), feature_attention_mask=t("mel.attention_mask", np.int64))
        if "image.pixel_values" in inputs:
            kw.update(pixel_values=t("image.pixel_values"), image_grid_thw=t("image.grid_thw"))
        if "video.pixel_values" in inputs:
            kw.update(pixel_values_videos=t("video.pixel_values"), video_grid_thw=t("video.grid_thw"),
                      video_second_per_grid=t("video.second_per_grid"))
        use_aiv = bool(int(inputs.get("thinker.use_audio_in_video", 0)))
        if "input_features" in kw and ("pixel_values" in kw or "pixel_values_videos" in kw):
            model.talker.config.audio_config = model.config.thinker_config.audio_config   # as tools/golden_run.py
        gen = meta.get("generation") or {}
        th, tk = gen.get("thinker") or {}, gen.get("talker") or {}
        if th.get("do_sample"):
            print("warning: the traced run sampled; the reference decodes greedily, so tokens may differ")
        return model.generate(
            **kw, speaker=tk.get("speaker", "Ethan"), use_audio_in_video=use_aiv,
            return_audio=bool(gen.get("return_audio", True)),
            thinker_max_new_tokens=int(th.get("max_new_tokens", 8)),
            thinker_eos_token_id=int(th.get("eos_token_id", model.config.im_end_token_id)),
            talker_max_new_tokens=int(tk.get("max_new_tokens", 16)), talker_do_sample=False,
            talker_repetition_penalty=float(tk.get("repetition_penalty", 1.05)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", help="golden case or checkpoint directory (config.json + safetensors)")
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--inputs", help="take the inputs from this trace (default: CHECKPOINT/golden.npz)")
    ap.add_argument("--tap", action="append", help="keep only names matching this glob (repeatable)")
    ap.add_argument("--all-calls", action="store_true", help="also keep later calls of a module as NAME@n")
    ap.add_argument("--force", action="store_true", help="overwrite --out")
    args = ap.parse_args(argv)
    if os.path.exists(args.out) and not args.force:
        raise SystemExit(f"error: {args.out}: already exists (use --force to overwrite)")
    src = load_trace(args.inputs or args.checkpoint)   # the prompt, features and codes under FORMAT.md names
    inputs = src.arrays
    meta_path = os.path.join(args.checkpoint, "meta.json")     # a case's generation settings, or the trace's
    meta = src.meta or (json.load(open(meta_path)) if os.path.isfile(meta_path) else {})

    import torch
    from transformers import Qwen3OmniMoeForConditionalGeneration
    from transformers.models.qwen3_omni_moe import modeling_qwen3_omni_moe as modeling
    torch.manual_seed(0)
    model = Qwen3OmniMoeForConditionalGeneration.from_pretrained(args.checkpoint, dtype=torch.float32,
                                                                 attn_implementation="eager").eval()
    modules = tapped_modules(model, set(load_weights(args.checkpoint).keys()))
    print(f"every module tap name found in the reference's named_modules(): {len(modules)} modules tapped")
    trace = Trace(args.tap, calls="all" if args.all_calls else "first")
    for k in src.inputs:
        trace.add(k, inputs[k], is_input=True)
    handles, undo = install_hooks(model, modeling, trace, modules)
    try:
        run(model, inputs, meta)
    finally:
        for h in handles:
            h.remove()
        for f in reversed(undo):
            f()
    trace.save(args.out, force=args.force)
    print(f"wrote {len(trace)} arrays ({len(trace.inputs)} inputs) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
