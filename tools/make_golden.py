"""Generate omniref's own golden cases with the Hugging Face reference (FORMAT.md is the contract).

    python tools/make_golden.py --case NAME --out DIR [--seed N] [--tries K]
    python tools/make_golden.py --all --out tests/golden          # every committed case

Needs the optional `golden` extra (torch 2.13.0, transformers 5.24.0, pillow, safetensors); see tools/README.md.
omniref itself never imports this.

Pipeline of a full-model case:
    spec --golden_model.build_config--> config --det_init + calibrate_code2wav--> model
         --save_pretrained (f32, or bf16 sharded)--> case dir --from_pretrained(float32, eager)--> reference
    media --golden_media--> mel / image / video inputs --prompt--> thinker.input_ids
    reference + inputs --golden_run.run_full--> golden keys, decision margins, stats
    margins too small, or a fragile generation --> re-draw everything with seed + 1

Goldens are always computed from the model re-loaded from the files written, so a bf16 case is exactly "the
bf16 weights widened to float32".
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import golden_media as gm  # noqa: E402
import golden_meta as gmeta  # noqa: E402
import golden_model as gmod  # noqa: E402

MIN_ROUTER_GAP = 1e-5      # MoE top-k boundary, router probability
MIN_ARGMAX_GAP = 1e-4      # every greedy decision, logits

# ----------------------------------------------------------------------------------------------------------
# the committed cases
# ----------------------------------------------------------------------------------------------------------
CASES = {
    "mel_multi": dict(
        kind="mel", seed=301,
        description="Log-mel features only (no model): three synthetic clips of different lengths in one "
                    "extractor call -- 0.73 s (shorter than 1 s), 1.907 s (30517 samples, not a multiple of "
                    "the 160-sample hop, ends in 0.1 s of digital silence) and 1.25 s (exactly 125 hops). The "
                    "shorter clips are zero-padded to the longest, which changes their last frames.",
        clips=[(11680, 0), (30517, 1600), (20000, 0)]),
    "code2wav_q8": dict(
        kind="code2wav", seed=401,
        description="Code2Wav only: num_quantizers 8, codebook 40, GQA pre-transformer (4 heads, 2 kv heads) "
                    "with sliding window 5 over 14 random code frames, upsampling_ratios (3, 2), "
                    "upsample_rates (5, 4, 3); full and chunked decoding (chunk 5, left context 3 -> 3 "
                    "chunks).",
        n_frames=14, chunk_size=5, left_context_size=3,
        code2wav=dict(codebook_size=40, hidden=32, heads=4, kv_heads=2, layers=2, intermediate=64,
                      rope_theta=10000.0, sliding_window=5, num_quantizers=8, upsample_rates=[5, 4, 3],
                      upsampling_ratios=[3, 2], decoder_dim=48)),
    "tiny_f32": dict(
        kind="full", seed=501, dtype="float32", shard=None,
        description="Tiny full model, float32: GQA 4:1 thinker (4 heads, 1 kv head), mrope_section [4, 2, 2], "
                    "patch_size 14 (resize factor 28), deepstack_visual_indexes [0, 2] of 3 vision blocks, "
                    "n_window_infer 400 (attention windows of 52 audio tokens), accept_hidden_layer 3 (= the "
                    "final-norm output), shuffled special ids at the top of a 200-token vocab, code2wav "
                    "sliding window 6. Prompt: system turn + user turn with one 4.18 s audio clip (418 mel "
                    "frames -> 55 tokens in 2 windows), one 61x117 image (resized to 56x112) and text, then "
                    "the assistant header. Greedy thinker, talker, code predictor, code2wav.",
        media=dict(audio=[(66950, 0)], image=(61, 117), video=None, audio_in_video=False),
        gen=dict(thinker_max_new_tokens=7, talker_max_new_tokens=12, speaker="Chelsie",
                 repetition_penalty=1.05, chunk_size=4, left_context_size=2),
        ids=dict(vocab=200, first_special=180),
        audio=dict(d_model=32, layers=2, heads=4, ffn=48, ds=8, n_window_infer=400),
        vision=dict(depth=3, hidden=16, heads=2, intermediate=32, patch=14, num_position_embeddings=36,
                    deepstack=[0, 2]),
        text=dict(vocab=200, hidden=32, layers=3, heads=4, kv_heads=1, head_dim=16, rope_theta=1e6,
                  mrope_section=[4, 2, 2], experts=6, top_k=2, moe_intermediate=16, norm_topk_prob=True),
        talker=dict(hidden=24, intermediate=40, layers=2, heads=2, kv_heads=1, head_dim=16, rope_theta=1e6,
                    mrope_section=[3, 3, 2], experts=4, top_k=2, moe_intermediate=12, norm_topk_prob=False,
                    shared_intermediate=20, accept_hidden_layer=3),
        code_predictor=dict(intermediate=32, layers=2, heads=4, kv_heads=2, head_dim=8, rope_theta=10000.0),
        code2wav=dict(codebook_size=24, hidden=24, heads=4, kv_heads=2, layers=2, intermediate=48,
                      rope_theta=10000.0, sliding_window=6, num_quantizers=16, upsample_rates=[8, 5, 4, 3],
                      upsampling_ratios=[2, 2], decoder_dim=32)),
    "tiny_bf16_sharded": dict(
        kind="full", seed=601, dtype="bfloat16", shard="300KB",
        description="Tiny full model stored as a bfloat16 checkpoint sharded in several files with an index "
                    "(goldens computed in float32 from the widened bf16 weights). Thinker norm_topk_prob false, "
                    "talker norm_topk_prob true, accept_hidden_layer 1, GQA 2:1, patch 16, one DeepStack "
                    "index [1], 12 quantizers with codebook 40. Prompt: system turn + user turn with a 0.8 s "
                    "audio clip, a 3-frame 256x512 video at fps 3 (odd frame count -> last frame repeated, "
                    "grid t = 2, second_per_grid 2/3 -> fractional temporal positions) carrying its own 1.5 s "
                    "audio track interleaved with it (use_audio_in_video), a second 1.232 s audio clip and "
                    "text, then the assistant header. thinker.logits omitted (only thinker.logits_last).",
        media=dict(audio=[(12800, 0), (19712, 0)], image=None, video=(3, 256, 512, 3.0),
                   video_audio=(24000, 0), audio_in_video=True),
        omit_keys=["thinker.logits"],
        gen=dict(thinker_max_new_tokens=6, talker_max_new_tokens=10, speaker="Aiden",
                 repetition_penalty=1.05, chunk_size=3, left_context_size=1),
        ids=dict(vocab=160, first_special=7),
        audio=dict(d_model=24, layers=2, heads=3, ffn=32, ds=8, n_window_infer=800),
        vision=dict(depth=2, hidden=16, heads=2, intermediate=32, patch=16, num_position_embeddings=49,
                    deepstack=[1]),
        text=dict(vocab=160, hidden=32, layers=3, heads=4, kv_heads=2, head_dim=8, rope_theta=1e6,
                  mrope_section=[2, 1, 1], experts=5, top_k=2, moe_intermediate=16, norm_topk_prob=False),
        talker=dict(hidden=24, intermediate=40, layers=2, heads=2, kv_heads=2, head_dim=12, rope_theta=1e6,
                    mrope_section=[2, 2, 2], experts=4, top_k=2, moe_intermediate=12, norm_topk_prob=True,
                    shared_intermediate=20, accept_hidden_layer=1),
        code_predictor=dict(intermediate=32, layers=1, heads=2, kv_heads=1, head_dim=12, rope_theta=1e6),
        code2wav=dict(codebook_size=40, hidden=24, heads=3, kv_heads=1, layers=2, intermediate=40,
                      rope_theta=10000.0, sliding_window=72, num_quantizers=12, upsample_rates=[8, 5, 4, 3],
                      upsampling_ratios=[2, 2], decoder_dim=32)),
}


# ----------------------------------------------------------------------------------------------------------
# writing a case
# ----------------------------------------------------------------------------------------------------------
def write_case(out_dir: str, arrays: dict, meta: dict) -> None:
    os.makedirs(out_dir, exist_ok=True)
    for k, v in arrays.items():
        if not isinstance(v, np.ndarray):
            raise TypeError(f"{k}: not an ndarray")
        if v.dtype == np.float64:
            raise TypeError(f"{k}: float64 (FORMAT wants float32)")
    np.savez_compressed(os.path.join(out_dir, "golden.npz"), **arrays)
    meta = dict(meta, keys=gmeta.keys_table(arrays))
    with open(os.path.join(out_dir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
        f.write("\n")


def base_meta(name: str, spec: dict, seed: int) -> dict:
    return {"case": name, "split": "project", "description": spec["description"], "seed": seed,
            "generator": "tools/make_golden.py", "versions": gmeta.versions()}


# ----------------------------------------------------------------------------------------------------------
# mel-only
# ----------------------------------------------------------------------------------------------------------
def make_mel(name: str, spec: dict, out_dir: str, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    waves = [gm.synth_waveform(rng, n, tail) for n, tail in spec["clips"]]
    mel = gm.mel_features(waves)
    arrays = {f"mel.waveform.{i}": w for i, w in enumerate(waves)} if len(waves) > 1 else {"mel.waveform": waves[0]}
    arrays["mel.input_features"] = mel["input_features"]
    arrays["mel.attention_mask"] = mel["attention_mask"]
    meta = base_meta(name, spec, seed)
    meta.update(decision_margins={}, preprocessing=gmeta.preprocessing(None),
                stats={"clip_samples": [int(len(w)) for w in waves],
                       "valid_frames": [int(x) for x in mel["attention_mask"].sum(1)]})
    write_case(out_dir, arrays, meta)
    return meta


# ----------------------------------------------------------------------------------------------------------
# code2wav-only
# ----------------------------------------------------------------------------------------------------------
def tiny_shell_spec(c2w: dict) -> dict:
    """A minimal thinker/talker around a code2wav config, so config.json is a complete Qwen3OmniMoeConfig
    (its weights are not stored in a code2wav-only case)."""
    ids = gmod.special_token_ids(64, 40, 0)
    return dict(ids=ids, position_id_per_seconds=13,
                audio=dict(d_model=16, layers=1, heads=2, ffn=16, ds=4, n_window_infer=800),
                vision=dict(depth=1, hidden=16, heads=2, intermediate=16, patch=16, num_position_embeddings=16,
                            deepstack=[0]),
                text=dict(vocab=64, hidden=16, layers=1, heads=2, kv_heads=1, head_dim=8, rope_theta=1e6,
                          mrope_section=[2, 1, 1], experts=2, top_k=1, moe_intermediate=8, norm_topk_prob=True),
                talker=dict(hidden=16, intermediate=16, layers=1, heads=2, kv_heads=1, head_dim=8,
                            rope_theta=1e6, mrope_section=[2, 1, 1], experts=2, top_k=1, moe_intermediate=8,
                            norm_topk_prob=False, shared_intermediate=8, accept_hidden_layer=1),
                code_predictor=dict(intermediate=16, layers=1, heads=2, kv_heads=1, head_dim=8,
                                    rope_theta=1e6),
                code2wav=c2w)


def save_code2wav_only(code2wav, config, out_dir: str) -> None:
    """config.json + generation_config.json + model.safetensors holding only `code2wav.*` (Hub names)."""
    from safetensors.torch import save_file
    from transformers import GenerationConfig

    os.makedirs(out_dir, exist_ok=True)
    config.save_pretrained(out_dir)
    GenerationConfig.from_model_config(config).save_pretrained(out_dir)
    tensors = {f"code2wav.{k}": p.detach().contiguous() for k, p in code2wav.named_parameters()}
    save_file(tensors, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})


def load_code2wav_only(out_dir: str):
    import torch
    from safetensors.torch import load_file
    from transformers import Qwen3OmniMoeConfig
    from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import Qwen3OmniMoeCode2Wav

    cfg = Qwen3OmniMoeConfig.from_pretrained(out_dir)
    model = Qwen3OmniMoeCode2Wav._from_config(cfg.code2wav_config, dtype=torch.float32)
    sd = {k[len("code2wav."):]: v.float() for k, v in load_file(os.path.join(out_dir, "model.safetensors")).items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    params = {k for k, _ in model.named_parameters()}
    if unexpected or params & set(missing):
        raise RuntimeError(f"code2wav reload: missing {missing}, unexpected {unexpected}")
    model.eval()
    return model


def code2wav_goldens(c2w, codes: np.ndarray, chunk_size: int, left_context_size: int) -> dict:
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


def make_code2wav(name: str, spec: dict, out_dir: str, seed: int) -> dict:
    import torch
    from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import Qwen3OmniMoeCode2Wav

    cw = spec["code2wav"]
    config = gmod.build_config(tiny_shell_spec(cw))
    model = Qwen3OmniMoeCode2Wav._from_config(config.code2wav_config, dtype=torch.float32)
    with torch.no_grad():                          # name-seed with the Hub names ("code2wav." prefix)
        for k, p in model.named_parameters():
            p.copy_(torch.from_numpy(gmod.init_value(f"code2wav.{k}", tuple(p.shape), seed).astype(np.float32)))
    n_cal = gmod.calibrate_code2wav(model, seed)
    for f in ("config.json", "generation_config.json", "model.safetensors", "model.safetensors.index.json"):
        if os.path.exists(os.path.join(out_dir, f)):
            os.remove(os.path.join(out_dir, f))
    save_code2wav_only(model, config, out_dir)
    ref = load_code2wav_only(out_dir)
    rng = np.random.default_rng([seed, 1])
    codes = rng.integers(0, cw["codebook_size"], (1, cw["num_quantizers"], spec["n_frames"])).astype(np.int64)
    arrays = code2wav_goldens(ref, codes, spec["chunk_size"], spec["left_context_size"])
    n_chunks = -(-spec["n_frames"] // spec["chunk_size"])
    wav = arrays["code2wav.wav"]
    meta = base_meta(name, spec, seed)
    meta.update(
        decision_margins={}, code2wav_calibrated_convs=n_cal,
        weights={"dtype": "float32", "sharded": False, "layout": "Hub layout; only code2wav.* tensors are "
                 "stored (config.json still holds a complete tiny Qwen3OmniMoeConfig whose thinker/talker "
                 "have no weights in this case)", "init": "name-seeded normal (golden_model.init_value) + "
                 "LSUV calibration of every code2wav convolution (golden_model.calibrate_code2wav)"},
        config_summary={"code2wav": cw},
        stats={"n_frames": spec["n_frames"], "n_chunks": n_chunks, "wav_samples": int(wav.shape[-1]),
               "wav_chunked_samples": int(arrays["code2wav.wav_chunked"].shape[-1]),
               "wav_std": float(wav.std()), "wav_clipped_fraction": float(np.mean(np.abs(wav) >= 1.0))})
    write_case(out_dir, arrays, meta)
    return meta


# ----------------------------------------------------------------------------------------------------------
# full model
# ----------------------------------------------------------------------------------------------------------
def interleave_video_audio(video_grid_thw, second_per_grid: float, n_audio_tokens: int, ids: dict) -> list[int]:
    """The processor's own replace_video_with_audio_token on one-character stand-ins, mapped to ids:
    `<audio_start>` + time-ordered video/audio tokens + `<audio_end>` (FORMAT 5.4)."""
    from transformers.models.qwen3_omni_moe.processing_qwen3_omni_moe import Qwen3OmniMoeProcessor

    class Stub:                                    # only the attributes the method reads
        audio_bos_token, audio_eos_token, video_token, audio_token = "B", "E", "V", "A"

        class video_processor:
            merge_size = 2

    text = Qwen3OmniMoeProcessor.replace_video_with_audio_token(
        Stub(), {"video_grid_thw": np.asarray(video_grid_thw), "video_second_per_grid": [second_per_grid]}, 0,
        {"num_audio_tokens": [n_audio_tokens]}, 0, position_id_per_seconds=Qwen3OmniMoeProcessor.position_id_per_seconds)
    table = {"B": ids["audio_start"], "E": ids["audio_end"], "V": ids["video_pad"], "A": ids["audio_pad"]}
    return [table[c] for c in text]


def build_prompt(ids: dict, rng, text_ids: np.ndarray, media_blocks: list[list[int]]) -> list[int]:
    """Chat layout of FORMAT 5.4; "text" tokens are random non-special ids."""
    def text(n):
        return [int(x) for x in rng.choice(text_ids, n)]
    p = [ids["im_start"], ids["system"], ids["nl"]] + text(4) + [ids["im_end"], ids["nl"]]
    p += [ids["im_start"], ids["user"], ids["nl"]]
    for block in media_blocks:
        p += block
    p += text(5) + [ids["im_end"], ids["nl"], ids["im_start"], ids["assistant"], ids["nl"]]
    return p


def case_inputs(spec: dict, ids: dict, seed: int):
    """Media + preprocessing + prompt of a full case -> (golden input arrays, model inputs)."""
    from transformers.models.qwen3_omni_moe.processing_qwen3_omni_moe import _get_feat_extract_output_lengths

    rng = np.random.default_rng([seed, 11])
    media = spec["media"]
    p = spec["vision"]["patch"]
    arrays, inputs = {}, {}
    # clips in prompt order: first stand-alone clip, then the video's own track (if any), then the others
    clips = [gm.synth_waveform(rng, n, tail) for n, tail in media["audio"]]
    video_clip = None
    if media.get("audio_in_video"):
        video_clip = gm.synth_waveform(rng, *media["video_audio"])
        clips.insert(1, video_clip)
    blocks, order = [], []
    if clips:
        mel = gm.mel_features(clips)
        n_tok = [int(x) for x in _get_feat_extract_output_lengths(mel["attention_mask"].sum(-1).astype(np.int64))]
        if len(clips) == 1:
            arrays["mel.waveform"] = clips[0]
        else:
            for i, c in enumerate(clips):
                arrays[f"mel.waveform.{i}"] = c
        arrays["mel.input_features"] = mel["input_features"]
        arrays["mel.attention_mask"] = mel["attention_mask"]
        inputs["input_features"] = mel["input_features"]
        inputs["feature_attention_mask"] = mel["attention_mask"]
    if media.get("image"):
        h, w = media["image"]
        raw = gm.synth_image(rng, h, w)
        im = gm.image_inputs(raw, p, 2)
        arrays["image.raw"] = raw
        arrays["image.resized"] = im["resized"]
        arrays["image.pixel_values"] = im["pixel_values"]
        arrays["image.grid_thw"] = im["grid_thw"]
        inputs["pixel_values"] = im["pixel_values"]
        inputs["image_grid_thw"] = im["grid_thw"]
    if media.get("video"):
        t, h, w, fps = media["video"]
        frames = gm.synth_video(rng, t, h, w)
        vid = gm.video_pixel_values(frames, p, 2, fps=fps)
        arrays["video.raw"] = frames
        arrays["video.pixel_values"] = vid["pixel_values"]
        arrays["video.grid_thw"] = vid["grid_thw"]
        arrays["video.fps"] = vid["fps"]
        arrays["video.second_per_grid"] = vid["second_per_grid"]
        inputs["pixel_values_videos"] = vid["pixel_values"]
        inputs["video_grid_thw"] = vid["grid_thw"]
        inputs["video_second_per_grid"] = vid["second_per_grid"]
    # placeholder blocks in prompt order: audio 0, [video (with audio 1)], image, remaining audio
    def audio_block(n):
        return [ids["audio_start"]] + [ids["audio_pad"]] * n + [ids["audio_end"]]
    ai = 0
    if clips:
        blocks.append(audio_block(n_tok[0]))
        ai = 1
    if media.get("video"):
        g = arrays["video.grid_thw"]
        if media.get("audio_in_video"):
            inner = interleave_video_audio(g, float(2.0 / media["video"][3]), n_tok[1], ids)
            blocks.append([ids["vision_start"]] + inner + [ids["vision_end"]])
            ai = 2
        else:
            blocks.append([ids["vision_start"]] + [ids["video_pad"]] * int(g.prod() // 4) + [ids["vision_end"]])
    if media.get("image"):
        g = arrays["image.grid_thw"]
        blocks.append([ids["vision_start"]] + [ids["image_pad"]] * int(g.prod() // 4) + [ids["vision_end"]])
    for n in n_tok[ai:] if clips else []:
        blocks.append(audio_block(n))
    special = set(ids.values())
    text_ids = np.array([i for i in range(spec["ids"]["vocab"]) if i not in special])
    prompt = build_prompt(ids, rng, text_ids, blocks)
    inputs["input_ids"] = np.array([prompt], np.int64)
    inputs["use_audio_in_video"] = bool(media.get("audio_in_video"))
    return arrays, inputs


def model_ids(spec: dict) -> dict:
    """The case's special ids (fixed per case: re-drawn seeds change weights and media, not the id layout)."""
    return gmod.special_token_ids(spec["ids"]["vocab"], spec["ids"]["first_special"], spec["seed"])


def save_model(model, out_dir: str, dtype: str, shard: str | None) -> None:
    import torch

    for f in os.listdir(out_dir) if os.path.isdir(out_dir) else []:
        if f.endswith(".safetensors") or f.endswith(".index.json") or f in ("config.json",
                                                                             "generation_config.json"):
            os.remove(os.path.join(out_dir, f))
    if dtype == "bfloat16":
        model = model.to(torch.bfloat16)
    kwargs = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(out_dir, **kwargs)


def check_checkpoint(out_dir: str, want_shards: bool) -> dict:
    """The files hold Hub names only (no fused expert tensors); returns layout facts for meta.json."""
    from safetensors import safe_open

    files = sorted(f for f in os.listdir(out_dir) if f.endswith(".safetensors"))
    keys, dtypes = [], set()
    for f in files:
        with safe_open(os.path.join(out_dir, f), "pt") as s:
            for k in s.keys():
                keys.append(k)
                dtypes.add(str(s.get_slice(k).get_dtype()))
    fused = [k for k in keys if k.endswith("gate_up_proj") or k.endswith("experts.down_proj")]
    if fused:
        raise RuntimeError(f"fused expert tensors in the checkpoint: {fused[:3]}")
    index = os.path.join(out_dir, "model.safetensors.index.json")
    if want_shards and (len(files) < 2 or not os.path.exists(index)):
        raise RuntimeError(f"expected a sharded checkpoint, got {files}")
    return {"files": files, "n_tensors": len(keys), "dtypes": sorted(dtypes)}


def make_full(name: str, spec: dict, out_dir: str, seed: int, tries: int) -> dict:
    import torch
    from transformers import Qwen3OmniMoeForConditionalGeneration
    import golden_run

    rejected = []
    for attempt in range(tries):
        s = seed + attempt
        ids = model_ids(spec)
        full_spec = dict(spec, ids=ids, position_id_per_seconds=13)
        config = gmod.build_config(full_spec)
        torch.manual_seed(s)
        model = Qwen3OmniMoeForConditionalGeneration(config)
        gmod.det_init(model, s)
        n_cal = gmod.calibrate_code2wav(model.code2wav, s)
        os.makedirs(out_dir, exist_ok=True)
        save_model(model, out_dir, spec["dtype"], spec["shard"])
        layout = check_checkpoint(out_dir, spec["shard"] is not None)
        arrays, inputs = case_inputs(spec, ids, s)
        gen = dict(spec["gen"])
        res, margins, stats, ref, trace = golden_run.run_full(out_dir, inputs, gen)
        reasons = list(stats["problems"])
        if margins["moe_router_topk_gap(prob)"] < MIN_ROUTER_GAP:
            reasons.append(f"router gap {margins['moe_router_topk_gap(prob)']:.2e}")
        for k in ("thinker_argmax_gap", "talker_argmax_gap", "code_predictor_argmax_gap"):
            if margins[k] < MIN_ARGMAX_GAP:
                reasons.append(f"{k} {margins[k]:.2e}")
        gen_ids = res["thinker.generated_ids"][0]
        media_ids = {ids["audio_pad"], ids["image_pad"], ids["video_pad"]}
        if gen_ids[0] == ids["im_end"] or len(gen_ids) < 3:
            reasons.append("thinker stopped at once")
        if media_ids & set(int(x) for x in gen_ids):
            reasons.append("thinker generated a media placeholder id")
        if stats["n_code_columns"] < 3:
            reasons.append(f"only {stats['n_code_columns']} code columns")
        if stats["wav_clipped_fraction"] > 0.02:
            reasons.append(f"waveform clipped {stats['wav_clipped_fraction']:.3f}")
        if reasons:
            rejected.append({"seed": s, "why": reasons})
            print(f"[{name}] seed {s} rejected: {reasons}", flush=True)
            continue
        # code2wav stage on the talker's codes, with chunking that yields several chunks
        c2w = code2wav_goldens(ref.code2wav, res["talker.codes"], gen["chunk_size"], gen["left_context_size"])
        res.update(c2w)
        if not np.allclose(res["talker.wav"], res["code2wav.wav"], atol=1e-6) and res["talker.codes"].shape[-1] <= 300:
            reasons.append("talker.wav != code2wav forward")
        arrays.update(res)
        for k in spec.get("omit_keys", []):
            arrays.pop(k, None)
        meta = base_meta(name, spec, s)
        tc = config.thinker_config
        meta.update(
            decision_margins=margins, rejected_seeds=rejected, code2wav_calibrated_convs=n_cal,
            token_ids={k: int(v) for k, v in sorted(ids.items())},
            generation={
                "thinker": {"do_sample": False, "max_new_tokens": gen["thinker_max_new_tokens"],
                            "eos_token_id": int(config.im_end_token_id)},
                "talker": {"do_sample": False, "max_new_tokens": gen["talker_max_new_tokens"],
                           "repetition_penalty": gen["repetition_penalty"], "speaker": gen["speaker"],
                           "speaker_id": int(config.talker_config.speaker_id[gen["speaker"].lower()]),
                           "eos_token_id": int(config.talker_config.codec_eos_token_id),
                           "suppress_tokens": "[vocab-1024, vocab) except codec_eos_token_id"},
                "code_predictor": {"do_sample": False,
                                   "max_new_tokens": int(config.talker_config.num_code_groups) - 1},
                "code2wav_in_generate": {"chunk_size": 300, "left_context_size": 25},
                "use_audio_in_video": bool(inputs["use_audio_in_video"])},
            weights={"dtype": spec["dtype"], "sharded": spec["shard"] is not None, "files": layout["files"],
                     "n_tensors": layout["n_tensors"], "storage_dtypes": layout["dtypes"],
                     "layout": "Hub layout written by save_pretrained (per-expert 2-D tensors)",
                     "init": "name-seeded normal (tools/golden_model.init_value) + LSUV calibration of every "
                             "code2wav convolution; goldens computed from from_pretrained(dtype=float32)"},
            config_summary={k: spec[k] for k in ("audio", "vision", "text", "talker", "code_predictor",
                                                 "code2wav")},
            preprocessing=gmeta.preprocessing(spec["vision"]["patch"]),
            talker_audio_config_attached=bool("input_features" in inputs and (
                "pixel_values" in inputs or "pixel_values_videos" in inputs)),
            stats={k: v for k, v in stats.items() if k != "problems"},
            omitted_keys=spec.get("omit_keys", []))
        write_case(out_dir, arrays, meta)
        return meta
    raise RuntimeError(f"[{name}] no acceptable seed in {seed}..{seed + tries - 1}: {rejected}")


def make_case(name: str, out_dir: str, seed: int | None = None, tries: int = 8) -> dict:
    spec = CASES[name]
    seed = spec["seed"] if seed is None else seed
    if spec["kind"] == "mel":
        return make_mel(name, spec, out_dir, seed)
    if spec["kind"] == "code2wav":
        return make_code2wav(name, spec, out_dir, seed)
    return make_full(name, spec, out_dir, seed, tries)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", choices=sorted(CASES), action="append")
    ap.add_argument("--all", action="store_true", help="every case, each into OUT/<case>")
    ap.add_argument("--out", required=True, help="case directory (with --all: parent directory)")
    ap.add_argument("--seed", type=int, default=None, help="first seed to try (default: the case's)")
    ap.add_argument("--tries", type=int, default=8, help="seeds to try before giving up")
    args = ap.parse_args(argv)
    names = sorted(CASES) if args.all else (args.case or [])
    if not names:
        ap.error("give --case NAME or --all")
    for name in names:
        out = os.path.join(args.out, name) if (args.all or len(names) > 1) else args.out
        meta = make_case(name, out, args.seed, args.tries)
        size = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
        print(f"{name}: seed {meta['seed']}, {size / 1e6:.2f} MB, margins {meta.get('decision_margins')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
