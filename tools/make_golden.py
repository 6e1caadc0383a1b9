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
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import golden_media as gm  # noqa: E402
import golden_meta as gmeta  # noqa: E402
import golden_model as gmod  # noqa: E402
import golden_run  # noqa: E402
from golden_cases import CASES, tiny_shell_spec  # noqa: E402

MIN_ROUTER_GAP = 1e-5      # MoE top-k boundary, router probability
MIN_ARGMAX_GAP = 1e-4      # every greedy decision, logits

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
    for f in os.listdir(out_dir):                  # safetensors' save_file writes 0600
        os.chmod(os.path.join(out_dir, f), 0o644)


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
    gmod.save_code2wav_only(model, config, out_dir)
    ref = gmod.load_code2wav_only(out_dir)
    rng = np.random.default_rng([seed, 1])
    codes = rng.integers(0, cw["codebook_size"], (1, cw["num_quantizers"], spec["n_frames"])).astype(np.int64)
    arrays = golden_run.code2wav_goldens(ref, codes, spec["chunk_size"], spec["left_context_size"])
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
def interleave_video_audio(video_grid_thw, second_per_grid: float, n_audio_tokens: int,
                           ids: dict) -> list[int]:
    """The processor's own replace_video_with_audio_token on one-character stand-ins, mapped to ids:
    `<audio_start>` + time-ordered video/audio tokens + `<audio_end>` (FORMAT 5.4)."""
    from transformers.models.qwen3_omni_moe.processing_qwen3_omni_moe import Qwen3OmniMoeProcessor

    class Stub:                                    # only the attributes the method reads
        audio_bos_token, audio_eos_token, video_token, audio_token = "B", "E", "V", "A"

        class video_processor:
            merge_size = 2

    text = Qwen3OmniMoeProcessor.replace_video_with_audio_token(
        Stub(), {"video_grid_thw": np.asarray(video_grid_thw), "video_second_per_grid": [second_per_grid]}, 0,
        {"num_audio_tokens": [n_audio_tokens]}, 0,
        position_id_per_seconds=Qwen3OmniMoeProcessor.position_id_per_seconds)
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
    if media.get("audio_in_video"):
        clips.insert(1, gm.synth_waveform(rng, *media["video_audio"]))
    blocks = []
    if clips:
        mel = gm.mel_features(clips)
        frames = mel["attention_mask"].sum(-1).astype(np.int64)
        n_tok = [int(x) for x in _get_feat_extract_output_lengths(frames)]      # the processor's own rule
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
        eos_scale = spec.get("codec_eos_scale", 1.0)
        if eos_scale != 1.0:                       # make the talker's codec_eos logit swing wider, so it stops
            with torch.no_grad():
                model.talker.codec_head.weight[config.talker_config.codec_eos_token_id] *= eos_scale
        os.makedirs(out_dir, exist_ok=True)
        save_model(model, out_dir, spec["dtype"], spec["shard"])
        layout = check_checkpoint(out_dir, spec["shard"] is not None)
        arrays, inputs = case_inputs(spec, ids, s)
        gen = dict(spec["gen"])
        try:
            res, margins, stats, ref, trace = golden_run.run_full(out_dir, inputs, gen)
        except RuntimeError as err:                # e.g. the reference cannot decode a talker that emits
            rejected.append({"seed": s, "why": [f"reference failed: {err}"]})    # codec_eos first (9.8)
            print(f"[{name}] seed {s} rejected: reference failed: {err}", flush=True)
            continue
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
        if stats["n_code_columns"] < spec.get("min_frames", 3):
            reasons.append(f"only {stats['n_code_columns']} code columns")
        if spec.get("require_eos") and not stats["talker_ended_with_eos"]:
            reasons.append("talker did not end with codec_eos")
        if stats["wav_clipped_fraction"] > 0.02:
            reasons.append(f"waveform clipped {stats['wav_clipped_fraction']:.3f}")
        if reasons:
            rejected.append({"seed": s, "why": reasons})
            print(f"[{name}] seed {s} rejected: {reasons}", flush=True)
            continue
        # code2wav stage on the talker's codes, chunked into 3 chunks (the last one shorter when T % 3 != 0)
        T = res["talker.codes"].shape[-1]
        gen["chunk_size"] = -(-T // 3)
        c2w = golden_run.code2wav_goldens(ref.code2wav, res["talker.codes"], gen["chunk_size"],
                                          gen["left_context_size"])
        res.update(c2w)
        if T <= 300 and not np.array_equal(res["talker.wav"], res["code2wav.wav"]):
            raise RuntimeError("talker.wav (chunked_decode 300/25 of <= 300 codes) != code2wav forward")
        arrays.update(res)
        for k in spec.get("omit_keys", []):
            arrays.pop(k, None)
        meta = base_meta(name, spec, s)
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
                "code2wav_chunked_key": {"chunk_size": gen["chunk_size"],
                                         "left_context_size": gen["left_context_size"]},
                "use_audio_in_video": bool(inputs["use_audio_in_video"])},
            weights={"codec_eos_scale": spec.get("codec_eos_scale", 1.0), "dtype": spec["dtype"], "sharded": spec["shard"] is not None, "files": layout["files"],
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


def make_case(name: str, out_dir: str, seed: int | None = None, tries: int = 16) -> dict:
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
    ap.add_argument("--tries", type=int, default=16, help="seeds to try before giving up")
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
