"""The published Qwen3-Omni-30B-A3B files as data: config.json (every field), preprocessor_config.json, and the
small files around them, for the three released variants.

Nothing here can download the checkpoint, so the shape of what `from_pretrained` reads is written down once:
`config.load_config` turns `published_config()` into the 30B preset, and `omniref.fullwidth` writes these
dicts next to random weights so that a generated directory looks like a downloaded one, down to the fields
omniref does not use (dropouts, `initializer_range`, `use_cache`, `tokens_per_second`, ...), which the config
reader must keep and ignore.

Where the values come from: the Hub `Qwen/Qwen3-Omni-30B-A3B-Instruct` config.json as transformers 5.x
serialises it (`Qwen3OmniMoeConfig`), minus the generic `PretrainedConfig` bookkeeping keys (`id2label`,
`return_dict`, ...). The `-Thinking` and `-Captioner` checkpoints keep the same thinker but set
`enable_audio_output` false and ship no `talker.*` / `code2wav.*` tensors (`Qwen3OmniMoeForConditionalGeneration`
builds the talker only when `enable_audio_output` is true).
"""
from __future__ import annotations

import copy

__all__ = ["VARIANTS", "published_config", "published_preprocessor_config", "published_generation_config",
           "CHAT_TEMPLATE"]

VARIANTS = ("instruct", "thinking", "captioner")

_MROPE = {"interleaved": True, "mrope_interleaved": True, "mrope_section": [24, 20, 20], "rope_theta": 1000000,
          "rope_type": "default", "type": "default"}

_CONFIG = {
    "architectures": ["Qwen3OmniMoeForConditionalGeneration"],
    "assistant_token_id": 77091,
    "code2wav_config": {
        "attention_bias": False, "attention_dropout": 0.0, "codebook_dim": 512, "codebook_size": 2048,
        "decoder_dim": 1536, "hidden_act": "silu", "hidden_size": 1024, "initializer_range": 0.02,
        "intermediate_size": 3072, "layer_scale_initial_scale": 0.01, "max_position_embeddings": 8000,
        "model_type": "", "num_attention_heads": 16, "num_hidden_layers": 8, "num_key_value_heads": 16,
        "num_quantizers": 16, "num_semantic_quantizers": 1, "rms_norm_eps": 1e-05,
        "rope_parameters": {"rope_theta": 10000, "rope_type": "default"}, "semantic_codebook_size": 4096,
        "sliding_window": 72, "upsample_rates": [8, 5, 4, 3], "upsampling_ratios": [2, 2],
        "vector_quantization_hidden_dimension": 512},
    "dtype": "bfloat16",
    "enable_audio_output": True,
    "im_end_token_id": 151645,
    "im_start_token_id": 151644,
    "initializer_range": 0.02,
    "model_type": "qwen3_omni_moe",
    "system_token_id": 8948,
    "talker_config": {
        "accept_hidden_layer": 24, "audio_end_token_id": 151670, "audio_start_token_id": 151669,
        "audio_token_id": 151675,
        "code_predictor_config": {
            "attention_bias": False, "attention_dropout": 0, "head_dim": 128, "hidden_act": "silu",
            "hidden_size": 1024, "initializer_range": 0.02, "intermediate_size": 3072,
            "layer_types": ["full_attention"] * 5, "max_position_embeddings": 32768, "max_window_layers": 28,
            "model_type": "qwen3_omni_moe_talker_code_predictor", "num_attention_heads": 16, "num_code_groups": 16,
            "num_hidden_layers": 5, "num_key_value_heads": 8, "rms_norm_eps": 1e-06,
            "rope_parameters": {"rope_theta": 1000000, "rope_type": "default"}, "sliding_window": None,
            "tie_word_embeddings": False, "use_cache": True, "use_sliding_window": False, "vocab_size": 2048},
        "codec_bos_id": 2149, "codec_eos_token_id": 2150, "codec_nothink_id": 2155, "codec_pad_id": 2148,
        "codec_think_bos_id": 2156, "codec_think_eos_id": 2157, "image_token_id": 151655,
        "initializer_range": 0.02, "model_type": "", "num_code_groups": 16, "output_router_logits": False,
        "position_id_per_seconds": 13, "seconds_per_chunk": 2, "spatial_merge_size": 2,
        "speaker_id": {"aiden": 2303, "chelsie": 2301, "ethan": 2302},
        "text_config": {
            "attention_bias": False, "attention_dropout": 0, "decoder_sparse_step": 1, "head_dim": 128,
            "hidden_act": "silu", "hidden_size": 1024, "initializer_range": 0.02, "intermediate_size": 2048,
            "max_position_embeddings": 65536, "mlp_only_layers": [], "model_type": "qwen3_omni_moe_talker_text",
            "moe_intermediate_size": 384, "norm_topk_prob": True, "num_attention_heads": 16,
            "num_experts_per_tok": 6, "num_hidden_layers": 20, "num_key_value_heads": 2, "num_local_experts": 128,
            "output_router_logits": False, "rms_norm_eps": 1e-06,
            "rope_parameters": {k: v for k, v in _MROPE.items() if k != "mrope_interleaved"},
            "router_aux_loss_coef": 0.001, "shared_expert_intermediate_size": 768, "sliding_window": None,
            "tie_word_embeddings": False, "use_cache": True, "use_sliding_window": False, "vocab_size": 3072},
        "thinker_hidden_size": 2048, "tie_word_embeddings": False, "video_token_id": 151656,
        "vision_start_token_id": 151652},
    "thinker_config": {
        "audio_config": {
            "activation_dropout": 0, "activation_function": "gelu", "attention_dropout": 0, "conv_chunksize": 500,
            "d_model": 1280, "downsample_hidden_size": 480, "dropout": 0, "encoder_attention_heads": 20,
            "encoder_ffn_dim": 5120, "encoder_layers": 32, "initializer_range": 0.02, "max_source_positions": 1500,
            "model_type": "qwen3_omni_moe_audio_encoder", "n_window": 50, "n_window_infer": 800,
            "num_mel_bins": 128, "output_dim": 2048, "scale_embedding": False, "tie_word_embeddings": True},
        "audio_end_token_id": 151670, "audio_start_token_id": 151669, "audio_token_id": 151675,
        "dtype": "bfloat16", "image_token_id": 151655, "initializer_range": 0.02,
        "model_type": "qwen3_omni_moe_thinker", "position_id_per_seconds": 13, "seconds_per_chunk": 2,
        "text_config": {
            "attention_bias": False, "attention_dropout": 0.0, "decoder_sparse_step": 1, "head_dim": 128,
            "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 768,
            "max_position_embeddings": 65536, "mlp_only_layers": [], "model_type": "qwen3_omni_moe_text",
            "moe_intermediate_size": 768, "norm_topk_prob": True, "num_attention_heads": 32, "num_experts": 128,
            "num_experts_per_tok": 8, "num_hidden_layers": 48, "num_key_value_heads": 4,
            "output_router_logits": False, "rms_norm_eps": 1e-06, "rope_parameters": _MROPE,
            "router_aux_loss_coef": 0.001, "shared_expert_intermediate_size": 0, "sliding_window": None,
            "tie_word_embeddings": False, "use_cache": True, "use_qk_norm": True, "use_sliding_window": False,
            "vocab_size": 152064},
        "tie_word_embeddings": False, "user_token_id": 872, "video_token_id": 151656,
        "vision_config": {
            "apply_vit_abs_pos_embed": True, "deepstack_visual_indexes": [8, 16, 24], "depth": 27,
            "hidden_act": "gelu_pytorch_tanh", "hidden_size": 1152, "image_size": 768, "in_channels": 3,
            "in_chans": 3, "initializer_range": 0.02, "intermediate_size": 4304,
            "model_type": "qwen3_omni_moe_vision_encoder", "num_heads": 16, "num_position_embeddings": 2304,
            "out_hidden_size": 2048, "patch_size": 16, "spatial_merge_size": 2, "spatial_patch_size": 16,
            "temporal_patch_size": 2, "tokens_per_second": 2},
        "vision_end_token_id": 151653, "vision_start_token_id": 151652},
    "transformers_version": "5.7.0",
    "tts_bos_token_id": 151672,
    "tts_eos_token_id": 151673,
    "tts_pad_token_id": 151671,
    "user_token_id": 872,
}

# preprocessor_config.json: Whisper's feature extractor (16 kHz, 25 ms windows every 10 ms, 128 mel bins) and
# the Qwen2-VL image processor (patch 16, merge 2, mean = std = 0.5), under the one Qwen3OmniMoeProcessor.
_PREPROCESSOR = {
    "chunk_length": 300, "dither": 0.0, "feature_extractor_type": "WhisperFeatureExtractor", "feature_size": 128,
    "hop_length": 160, "n_fft": 400, "n_samples": 4800000, "nb_max_frames": 30000, "padding_side": "right",
    "padding_value": 0.0, "return_attention_mask": True, "sampling_rate": 16000,
    "do_convert_rgb": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
    "image_mean": [0.5, 0.5, 0.5], "image_processor_type": "Qwen2VLImageProcessor", "image_std": [0.5, 0.5, 0.5],
    "max_pixels": 12845056, "merge_size": 2, "min_pixels": 3136, "patch_size": 16, "resample": 3,
    "rescale_factor": 0.00392156862745098, "temporal_patch_size": 2, "processor_class": "Qwen3OmniMoeProcessor",
}

# A Qwen chat template (ChatML: <|im_start|>role\n ... <|im_end|>\n), kept in tokenizer_config.json as text;
# omniref builds the same layout itself in `thinker.prompt.chat_prompt`.
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def published_config(variant: str = "instruct") -> dict:
    """config.json of Qwen3-Omni-30B-A3B-{Instruct, Thinking, Captioner} (a fresh copy)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant '{variant}' (expected one of {', '.join(VARIANTS)})")
    cfg = copy.deepcopy(_CONFIG)
    if variant != "instruct":
        cfg["enable_audio_output"] = False   # thinker only: no talker, no Code2Wav weights
    return cfg


def published_preprocessor_config() -> dict:
    return copy.deepcopy(_PREPROCESSOR)


def published_generation_config(variant: str = "instruct") -> dict:
    """generation_config.json shaped like the Hub file: the end-of-turn ids, the thinker's sampling settings (the
    Qwen3 recommendation for non-thinking chat, not copied from the file) and, for Instruct, the talker's (the
    defaults of the reference `Qwen3OmniMoeForConditionalGeneration.generate`)."""
    g = {"bos_token_id": 151643, "eos_token_id": [151645, 151643], "pad_token_id": 151643,
         "do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20, "transformers_version": "5.7.0"}
    if variant == "instruct":
        g.update(talker_temperature=0.9, talker_top_k=50, talker_top_p=1.0, talker_repetition_penalty=1.05)
    return g
