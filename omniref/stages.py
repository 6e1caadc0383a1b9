"""Golden stage adapters: for each stage of `omniref verify`, the model run on a golden case's INPUT keys.

Each `NAME_stage(case) -> {key: array}` computes its outputs from the stage's golden input keys only, so a bug
shows up in the stage that has it instead of cascading; it returns only keys the case holds ({} when the case has
none of its inputs). The model modules know nothing of golden cases: everything case-shaped lives here.
"""
from __future__ import annotations

import re

import numpy as np

from .audio.encoder import audio_encoder
from .audio.mel import HOP_LENGTH, N_FFT, NUM_MEL_BINS, SAMPLING_RATE, extract_features
from .codec.code2wav import Code2Wav
from .golden import numbered
from .talker.model import Talker
from .thinker import prompt
from .thinker.model import Thinker, ThinkerPrompt
from .thinker.sampling import SamplingConfig
from .vision.encoder import vision_forward
from .vision.preprocess import (IMAGE_MAX_PIXELS, IMAGE_MIN_PIXELS, VIDEO_MAX_PIXELS, VIDEO_MIN_PIXELS, preprocess_image,
                                preprocess_video)

F32 = np.float32

__all__ = ["mel_stage", "image_stage", "video_stage", "audio_stage", "vision_stage", "vision_video_stage", "thinker_stage", "talker_stage",
           "code2wav_stage", "case_waveforms", "prompt_from_case"]


# ---------------------------------------------------------------------------------------------------------
# mel: waveform(s) -> log-mel features
# ---------------------------------------------------------------------------------------------------------
def _mel_settings(case):
    """Extractor settings of a case: meta.json's recorded extractor init, else config.json, else defaults."""
    init = ((case.meta or {}).get("preprocessing", {}).get("feature_extractor", {}).get("init", {}))
    n_mels = init.get("feature_size")
    if n_mels is None and case.config is not None:
        n_mels = case.config.thinker_config.audio_config.num_mel_bins
    return dict(num_mel_bins=int(n_mels or NUM_MEL_BINS), n_fft=int(init.get("n_fft", N_FFT)),
                hop_length=int(init.get("hop_length", HOP_LENGTH)),
                sampling_rate=int(init.get("sampling_rate", SAMPLING_RATE)))


def case_waveforms(case):
    """The clips of a case in prompt order: `mel.waveform`, or `mel.waveform.0`, `.1`, ... (list of [N_b])."""
    if "mel.waveform" in case.golden:
        return [np.asarray(case.golden["mel.waveform"])]
    return [np.asarray(c) for c in numbered(case.golden, "mel.waveform.")]


def mel_stage(case):
    """`mel.input_features` [B, M, T] and `mel.attention_mask` [B, T] from the case's waveform(s)."""
    clips = case_waveforms(case)
    if not clips:
        return {}
    features, mask = extract_features(clips, **_mel_settings(case))
    out = {"mel.input_features": features, "mel.attention_mask": mask}
    return {k: v for k, v in out.items() if k in case.golden}


# ---------------------------------------------------------------------------------------------------------
# image / video: raw pixels -> resized frames, patches, grids (the image and video processors)
# ---------------------------------------------------------------------------------------------------------
def _vision_settings(case, which: str) -> dict:
    """Processor settings of a case: patch/merge/temporal sizes from config.json's vision_config (or, in
    preprocessing-only cases, from meta.json's image_processor init), the pixel budget from meta.json."""
    meta = getattr(case, "meta", None) or {}
    pre = meta.get("preprocessing", {})
    init = pre.get("image_processor", {}).get("init", {})
    s = {"patch_size": init.get("patch_size"), "merge_size": init.get("merge_size"),
         "temporal_patch_size": init.get("temporal_patch_size", 2)}
    cfg = getattr(case, "config", None)
    if cfg is not None:
        vc = cfg.thinker_config.vision_config
        s.update(patch_size=vc.patch_size, merge_size=vc.spatial_merge_size,
                 temporal_patch_size=getattr(vc, "temporal_patch_size", 2))
    if s["patch_size"] is None or s["merge_size"] is None:
        raise ValueError(f"case {getattr(case, 'path', case)}: cannot find patch_size/merge_size in "
                         "config.json or meta.json['preprocessing']")
    if which == "image":
        s["min_pixels"] = init.get("min_pixels", IMAGE_MIN_PIXELS)
        s["max_pixels"] = init.get("max_pixels", IMAGE_MAX_PIXELS)
    else:
        size = pre.get("video_processor", {}).get("call_size", {})
        s["min_pixels"] = size.get("shortest_edge", VIDEO_MIN_PIXELS)
        s["max_pixels"] = size.get("longest_edge", VIDEO_MAX_PIXELS)
    return s


def image_stage(case) -> dict[str, np.ndarray]:
    """`image.raw` -> `image.resized`, `image.pixel_values`, `image.grid_thw`."""
    g = case.golden
    if "image.raw" not in g:
        return {}
    out = preprocess_image(g["image.raw"], **_vision_settings(case, "image"))
    got = {"image.resized": out.resized, "image.pixel_values": out.pixel_values, "image.grid_thw": out.grid_thw}
    return {k: v for k, v in got.items() if k in g}


def video_stage(case) -> dict[str, np.ndarray]:
    """`video.raw`, `video.fps` -> `video.pixel_values`, `video.grid_thw`, `video.second_per_grid`."""
    g = case.golden
    if "video.raw" not in g:
        return {}
    fps = float(np.asarray(g["video.fps"]).reshape(-1)[0]) if "video.fps" in g else 1.0
    out = preprocess_video(g["video.raw"], fps=fps, **_vision_settings(case, "video"))
    got = {"video.pixel_values": out.pixel_values, "video.grid_thw": out.grid_thw,
           "video.second_per_grid": np.array([out.second_per_grid], dtype=np.float32)}
    return {k: v for k, v in got.items() if k in g}


# ---------------------------------------------------------------------------------------------------------
# audio: features -> audio encoder states
# ---------------------------------------------------------------------------------------------------------
def audio_stage(case):
    """`audio.hidden_states.{i}` and `audio.output` from `audio.input_features` + `audio.feature_lens`."""
    if case.weights is None or case.config is None or "audio.input_features" not in case.golden:
        return {}
    out, hidden = audio_encoder(case.weights.scope("thinker.audio_tower."), case.config.thinker_config.audio_config,
                                case.golden["audio.input_features"], case.golden["audio.feature_lens"])
    result = {f"audio.hidden_states.{i}": h for i, h in enumerate(hidden)}
    result["audio.output"] = out
    return {k: v for k, v in result.items() if k in case.golden}


# ---------------------------------------------------------------------------------------------------------
# vision / vision_video: patches -> vision encoder states
# ---------------------------------------------------------------------------------------------------------
def _golden(case, prefix: str, fallback: str) -> dict[str, np.ndarray]:
    g = case.golden
    src = prefix if f"{prefix}.pixel_values" in g else fallback
    if f"{src}.pixel_values" not in g or case.weights is None or case.config is None:
        return {}
    if not any(k.startswith(prefix + ".") and k not in (f"{prefix}.pixel_values", f"{prefix}.grid_thw")
               for k in g):
        return {}                                            # the case holds no outputs of this stage
    out = vision_forward(case.weights.scope("thinker.visual."), case.config.thinker_config.vision_config,
                         g[f"{src}.pixel_values"], g[f"{src}.grid_thw"], record_hidden=True)
    got = {f"{prefix}.output": out.merged}
    got.update({f"{prefix}.hidden_states.{i}": h for i, h in enumerate(out.hidden_states)})
    got.update({f"{prefix}.deepstack.{k}": d for k, d in enumerate(out.deepstack)})
    return {k: v for k, v in got.items() if k in g}


def vision_stage(case) -> dict[str, np.ndarray]:
    """`vision.pixel_values`, `vision.grid_thw` -> `vision.hidden_states.*`, `vision.deepstack.*`, `vision.output`."""
    return _golden(case, "vision", "image")


def vision_video_stage(case) -> dict[str, np.ndarray]:
    """The same encoder on the prompt's video(s): `vision_video.*` from `video.pixel_values`/`video.grid_thw`."""
    return _golden(case, "vision_video", "video")


# ---------------------------------------------------------------------------------------------------------
# thinker: prompt + media -> positions, hidden states, logits, generated ids
# ---------------------------------------------------------------------------------------------------------
def prompt_from_case(case) -> ThinkerPrompt:
    """The thinker stage's inputs (prompt ids, mel features, pixels, grids) from a golden case."""
    g = case.golden
    get = lambda k: g[k] if k in g else None
    return ThinkerPrompt(
        input_ids=g["thinker.input_ids"].reshape(-1), input_features=get("mel.input_features"),
        feature_attention_mask=get("mel.attention_mask"), pixel_values=get("image.pixel_values"),
        image_grid_thw=get("image.grid_thw"), video_pixel_values=get("video.pixel_values"),
        video_grid_thw=get("video.grid_thw"), video_second_per_grid=get("video.second_per_grid"),
        use_audio_in_video=bool(int(g["thinker.use_audio_in_video"])) if "thinker.use_audio_in_video" in g else False)


def thinker_stage(case) -> dict[str, np.ndarray]:
    """thinker.* and talker.thinker_embed / talker.thinker_hidden from the prompt and raw media inputs."""
    if case.weights is None or case.config is None:
        raise NotImplementedError("the case has no checkpoint")
    g, cfg = case.golden, case.config
    thinker = Thinker(case.weights, cfg)
    gen = (case.meta.get("generation") or {}).get("thinker") or {}
    n_new = int(gen.get("max_new_tokens", g["thinker.generated_ids"].shape[-1] if "thinker.generated_ids" in g
                        else 1))
    accept = cfg.talker_config.accept_hidden_layer if "talker.thinker_hidden" in g else None
    res = thinker.generate(prompt_from_case(case), n_new, SamplingConfig(),
                           eos_token_id=gen.get("eos_token_id", cfg.im_end_token_id), record_layer=accept,
                           full_logits="thinker.logits" in g, progress=False)
    out = {"thinker.position_ids": res.position_ids[:, None, :],
           "thinker.rope_deltas": np.asarray(res.rope_delta, F32).reshape(1, 1),
           "thinker.logits_last": res.logits_last[None],
           "thinker.generated_ids": res.generated_ids[None],
           "talker.thinker_embed": res.embeds[None]}
    for i, h in enumerate(res.hidden_states):
        out[f"thinker.hidden_states.{i}"] = h[None]
    if res.logits is not None:
        out["thinker.logits"] = res.logits[None]
    if res.recorded is not None:
        out["talker.thinker_hidden"] = res.recorded[None]
    return {k: v for k, v in out.items() if k in g}


# ---------------------------------------------------------------------------------------------------------
# talker: thinker states -> talker inputs, codes (and code_predictor.*)
# ---------------------------------------------------------------------------------------------------------
INPUT_KEYS = ("talker.thinker_embed", "talker.thinker_hidden", "thinker.input_ids", "thinker.generated_ids")


def talker_stage(case) -> dict[str, np.ndarray]:
    """Every `talker.*` key (except its inputs thinker_embed / thinker_hidden) and every `code_predictor.*`
    key, from the thinker states, the prompt ids, the media grids and the clip frame counts."""
    g = case.golden
    if case.config is None or case.weights is None or not all(k in g for k in INPUT_KEYS):
        return {}
    cfg = case.config
    gen = (case.meta.get("generation") or {})
    tgen, thgen = gen.get("talker") or {}, gen.get("thinker") or {}
    speaker = tgen.get("speaker_id", tgen.get("speaker", "ethan"))
    talker = Talker(case.weights, cfg)
    inputs = talker.build_inputs(
        g["thinker.input_ids"][0], g["thinker.generated_ids"][0], g["talker.thinker_embed"][0],
        g["talker.thinker_hidden"][0], speaker=speaker, thinker_eos_token_id=thgen.get("eos_token_id"),
        image_grid_thw=g.get("image.grid_thw"), video_grid_thw=g.get("video.grid_thw"),
        video_second_per_grid=g.get("video.second_per_grid"),
        audio_feature_lengths=g["mel.attention_mask"].sum(-1) if "mel.attention_mask" in g else None)
    sampling = SamplingConfig(repetition_penalty=float(tgen.get("repetition_penalty", 1.05)))
    out = talker.generate(inputs, max_new_tokens=int(tgen.get("max_new_tokens", 4096)), sampling=sampling)
    res = {
        "talker.tts_special_embeds": inputs.tts_special_embeds,
        "talker.input_ids": inputs.input_ids[None],
        "talker.attention_mask": np.ones((1, inputs.input_ids.shape[0]), np.int64),
        "talker.inputs_embeds": inputs.inputs_embeds[None],
        "talker.trailing_text_hidden": inputs.trailing_text_hidden[None],
        "talker.position_ids": inputs.position_ids[:, None, :],
        "talker.prefill_hidden": out.prefill_hidden[None],
        "talker.step_logits": out.step_logits,
        "talker.step_hidden": out.step_hidden,
        "talker.step_inputs_embeds": out.step_inputs_embeds,
        "talker.step_position_ids": out.step_position_ids[:, None, :],
        "talker.sequences": out.sequences[None],
        "talker.codes": out.codes[None],
        "code_predictor.inputs_embeds": out.cp_inputs_embeds,
        "code_predictor.logits": out.cp_logits,
        "code_predictor.tokens": out.cp_tokens,
    }
    if "talker.wav" in g:
        res["talker.wav"] = Code2Wav(cfg.code2wav_config, case.weights.scope("code2wav.")).chunked_decode(
            out.codes[None], chunk_size=300, left_context_size=25)            # [1, 1, S]
    return {k: v for k, v in res.items() if k in g}


# ---------------------------------------------------------------------------------------------------------
# code2wav: codes -> waveform
# ---------------------------------------------------------------------------------------------------------
def code2wav_stage(case) -> dict[str, np.ndarray]:
    """`code2wav.wav` and `code2wav.wav_chunked` from `code2wav.codes` and the case's code2wav weights."""
    g = case.golden
    if case.config is None or case.weights is None or "code2wav.codes" not in g:
        return {}
    model = Code2Wav(case.config.code2wav_config, case.weights.scope("code2wav."))
    codes = g["code2wav.codes"]                                                     # [1, Q, T]
    out = {}
    if "code2wav.wav" in g:
        out["code2wav.wav"] = model(codes)                                          # [1, 1, S]
    if "code2wav.wav_chunked" in g:
        out["code2wav.wav_chunked"] = model.chunked_decode(
            codes, int(g["code2wav.chunk_size"]), int(g["code2wav.left_context_size"]))
    return out


# ---------------------------------------------------------------------------------------------------------
# processor: vision placeholders expanded from the grids (HF Qwen3OmniMoeProcessor)
# ---------------------------------------------------------------------------------------------------------
def processor_stage(case) -> dict[str, np.ndarray]:
    """`processor.input_ids` (the processor's chat-template expansion, HF Qwen3OmniMoeProcessor): <vision_start><image_pad><vision_end><vision_start><video_pad>
    <vision_end> expanded with the case's image/video grids. The token ids come from meta.json `token_ids`,
    else config.json, else the `name=id` pairs documented in the key's meaning; without them the stage is
    reported MISSING."""
    if "processor.input_ids" not in case.golden:
        return {}
    tid = dict(case.meta.get("token_ids") or {})
    cfg = case.config
    if cfg is not None:
        t = cfg.thinker_config
        tid.setdefault("vision_start", t.vision_start_token_id); tid.setdefault("vision_end", t.vision_end_token_id)
        tid.setdefault("image_pad", t.image_token_id); tid.setdefault("video_pad", t.video_token_id)
    need = ("vision_start", "vision_end", "image_pad", "video_pad")
    if not all(k in tid for k in need):
        # a preprocessing-only case documents its ids in the key's meaning: "(... vision_start=10, ...)"
        meaning = ((case.meta.get("keys") or {}).get("processor.input_ids") or {}).get("meaning", "")
        for name, value in re.findall(r"(\w+)=(\d+)", meaning):
            tid.setdefault(name, int(value))
    if not all(k in tid for k in need):
        raise NotImplementedError("the case gives no token ids for the vision markers (meta.json token_ids)")
    merge = ((case.meta.get("preprocessing") or {}).get("image_processor") or {}).get("init", {}).get("merge_size")
    if merge is None and cfg is not None:
        merge = cfg.thinker_config.vision_config.spatial_merge_size
    g = case.golden
    out: list[int] = []
    for kind, pad in (("image", "image_pad"), ("video", "video_pad")):
        if f"{kind}.grid_thw" in g:
            for grid in np.asarray(g[f"{kind}.grid_thw"]).reshape(-1, 3):
                out += [tid["vision_start"]] + [tid[pad]] * prompt.n_visual_tokens(grid, int(merge or 2)) + [tid["vision_end"]]
    return {"processor.input_ids": np.asarray(out, dtype=np.int64)[None]}
