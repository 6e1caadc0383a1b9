"""A deterministic tiny Qwen3-Omni-MoE checkpoint with seeded random weights, in the Hub key layout.

The demo and the tests need a whole model (audio encoder, vision encoder, MoE thinker, MoE talker with its
code predictor, Code2Wav) that runs in seconds on two cores and needs no download. This module builds one:
`tiny_config()` is a config dict shaped like a `save_pretrained` config.json, `tiny_weights(config)` draws
every tensor of the checkpoint name table (`checkpoint.expected_shapes`), and `write_tiny_checkpoint(dir)`
saves both with the project's own safetensors writer, so the rest of the code loads it exactly like a real
checkpoint.

Random weights mean the model says nothing meaningful and its "speech" is noise. The point is the traced
computation: every shape, every special token and every stage runs as in the 30B model, only narrower.

Determinism: each tensor has its own generator seeded from (seed, crc32 of the key), so the values depend only
on the seed and the key name, never on the order in which keys are drawn or on the numpy build.

Scales (why the numbers below): linear maps are drawn N(0, 1/fan_in) so activations keep unit size through the
stack; norm weights are 1; embeddings N(0, 1); biases small; layer scales / ConvNeXt gammas small as in the
reference initialisation; SnakeBeta log-parameters 0 (alpha = beta = 1). Code2Wav's last convolution is
scaled down so the waveform stays mostly inside [-1, 1] instead of saturating the final clamp.
"""
from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np

from .checkpoint import expected_shapes
from .config import load_config

__all__ = ["TINY_TOKEN_IDS", "tiny_config", "tiny_weights", "write_tiny_checkpoint", "load_tiny"]

# Token ids of the tiny vocabulary (256 ids): the chat/media specials first, then "text" ids 17.. .
TINY_TOKEN_IDS = {"unk": 0, "im_start": 1, "im_end": 2, "system": 3, "user": 4, "assistant": 5, "nl": 6,
                  "audio_start": 7, "audio_end": 8, "audio_pad": 9, "vision_start": 10, "vision_end": 11,
                  "image_pad": 12, "video_pad": 13, "tts_pad": 14, "tts_bos": 15, "tts_eos": 16}


def tiny_config() -> dict:
    """config.json of the tiny model (Hugging Face field names and nesting; only fields that matter)."""
    t = TINY_TOKEN_IDS
    media_ids = dict(audio_token_id=t["audio_pad"], image_token_id=t["image_pad"], video_token_id=t["video_pad"],
                     audio_start_token_id=t["audio_start"], audio_end_token_id=t["audio_end"],
                     vision_start_token_id=t["vision_start"], position_id_per_seconds=13)
    mrope = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3],
             "interleaved": True, "mrope_interleaved": True}
    C = 32                                             # codebook size; codec specials sit past it as on the Hub
    return {
        "architectures": ["Qwen3OmniMoeForConditionalGeneration"], "model_type": "qwen3_omni_moe",
        "dtype": "float32", "enable_audio_output": True,
        "im_start_token_id": t["im_start"], "im_end_token_id": t["im_end"], "system_token_id": t["system"],
        "user_token_id": t["user"], "assistant_token_id": t["assistant"], "tts_pad_token_id": t["tts_pad"],
        "tts_bos_token_id": t["tts_bos"], "tts_eos_token_id": t["tts_eos"],
        "thinker_config": {
            **media_ids, "vision_end_token_id": t["vision_end"], "user_token_id": t["user"],
            "audio_config": dict(num_mel_bins=128, d_model=64, encoder_layers=2, encoder_attention_heads=4,
                                 encoder_ffn_dim=96, downsample_hidden_size=16, output_dim=48, n_window=50,
                                 n_window_infer=800, max_source_positions=1500, conv_chunksize=500),
            "vision_config": dict(depth=2, hidden_size=32, num_heads=2, intermediate_size=64, patch_size=16,
                                  spatial_merge_size=2, temporal_patch_size=2, in_channels=3, out_hidden_size=48,
                                  num_position_embeddings=64, deepstack_visual_indexes=[0, 1],
                                  hidden_act="gelu_pytorch_tanh",
                                  rope_parameters={"rope_type": "axial", "rope_theta": 10000.0}),
            "text_config": dict(vocab_size=256, hidden_size=48, intermediate_size=96, num_hidden_layers=3,
                                num_attention_heads=4, num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-6,
                                rope_parameters=mrope, num_experts=8, num_experts_per_tok=2,
                                moe_intermediate_size=16, norm_topk_prob=True, mlp_only_layers=[],
                                decoder_sparse_step=1),
        },
        "talker_config": {
            **media_ids, "accept_hidden_layer": 2, "thinker_hidden_size": 48, "num_code_groups": 16,
            "spatial_merge_size": 2,
            "codec_pad_id": C + 100, "codec_bos_id": C + 101, "codec_eos_token_id": C + 102,
            "codec_nothink_id": C + 107, "codec_think_bos_id": C + 108, "codec_think_eos_id": C + 109,
            "speaker_id": {"chelsie": C + 253, "ethan": C + 254, "aiden": C + 255},
            "text_config": dict(vocab_size=1024 + C, hidden_size=48, intermediate_size=64, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-6,
                                rope_parameters=dict(mrope, interleaved=True), num_local_experts=4,
                                num_experts_per_tok=2, moe_intermediate_size=16,
                                shared_expert_intermediate_size=32, norm_topk_prob=False, mlp_only_layers=[]),
            "code_predictor_config": dict(vocab_size=C, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                                          num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                          rms_norm_eps=1e-6, num_code_groups=16,
                                          rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
        },
        "code2wav_config": dict(codebook_size=C, num_quantizers=16, hidden_size=32, num_attention_heads=2,
                                num_key_value_heads=2, num_hidden_layers=2, intermediate_size=64,
                                rms_norm_eps=1e-5, rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                                sliding_window=72, upsample_rates=[8, 5, 4, 3], upsampling_ratios=[2, 2],
                                decoder_dim=48, layer_scale_initial_scale=0.01),
    }


def _draw(key: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """One tensor, from its own generator seeded by (seed, crc32(key)); the scale follows the key's role."""
    rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
    leaf = key.rsplit(".", 1)[-1]
    if "norm" in key.rsplit(".", 2)[-2] or key.endswith(("ln_q.weight", "ln_post.weight")) or \
            (leaf == "weight" and len(shape) == 1):
        return np.ones(shape, np.float32)                       # RMSNorm / LayerNorm gains
    if leaf in ("alpha", "beta"):
        return np.zeros(shape, np.float32)                      # SnakeBeta logs: e^0 = 1
    if leaf == "scale":
        return np.full(shape, 0.01, np.float32)                 # code2wav layer scale (reference initial value)
    if leaf == "gamma":
        return np.full(shape, 0.1, np.float32)                  # ConvNeXt residual gain
    if leaf == "bias":
        return (0.02 * rng.standard_normal(shape)).astype(np.float32)
    return (rng.standard_normal(shape) * weight_std(key, shape)).astype(np.float32)


def weight_std(key: str, shape: tuple[int, ...]) -> float:
    """Standard deviation of a random matrix / conv / embedding weight: 1/sqrt(fan_in), embeddings 1."""
    if "embed_tokens" in key or "codec_embedding" in key or "code_embedding" in key or "pos_embed" in key:
        return 1.0                                              # embedding tables: unit-size rows
    if "upsample" in key and key.endswith("0.conv.weight") or (key.startswith("code2wav.decoder.")
                                                               and ".block.1." in key):
        fan_in = shape[0] * shape[2] / max(1, shape[2] // 2)    # transposed conv: [in, out, k], ~k/stride taps
    elif "dwconv" in key:
        fan_in = shape[2]                                       # depthwise: one input channel per output
    else:
        fan_in = int(np.prod(shape[1:]))                        # linear [out, in] and conv [out, in, k...]
    std = 1.0 / np.sqrt(fan_in)
    if key.startswith("code2wav.decoder.") and key.endswith("conv.weight") and shape[0] == 1:
        # last conv: the dilated residual units let the signal grow ~30x through the decoder, so without
        # this gain nearly every sample would hit the final clamp; 0.008 gives an RMS of ~0.3, <1% clipped
        std *= 0.008
    return float(std)


def tiny_weights(config: dict | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """{checkpoint key: float32 array} for every tensor of `config` (default `tiny_config()`)."""
    config = tiny_config() if config is None else config
    shapes = expected_shapes(load_config(config))             # checkpoint's name table: {key: shape}
    w = {k: _draw(k, shape, seed) for k, shape in shapes.items()}
    # a smaller codec-eos row makes "stop talking" unlikely early, so the demo speaks for a few seconds
    # instead of stopping after a frame or two (the golden generator has the same knob, `codec_eos_scale`)
    w["talker.codec_head.weight"][config["talker_config"]["codec_eos_token_id"]] *= 0.25
    return w


def write_tiny_checkpoint(out_dir, seed: int = 0, *, dtype: str | None = None) -> Path:
    """Write config.json + model.safetensors of the tiny model into `out_dir` (created); returns the path.

    dtype="BF16" stores the weights as bfloat16 (they widen back exactly to float32 on load).
    """
    from .weights import save_safetensors
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = tiny_config()
    declared = {"BF16": "bfloat16"}.get(dtype, config["dtype"])     # config.json names the stored dtype
    (out / "config.json").write_text(json.dumps({**config, "dtype": declared}, indent=2))
    save_safetensors(out / "model.safetensors", tiny_weights(config, seed), dtype=dtype,
                     metadata={"format": "pt", "omniref": f"tiny random weights, seed {seed}"})
    return out


def load_tiny(cache_dir=None, seed: int = 0):
    """(OmniConfig, Weights) of the tiny model, writing it to `cache_dir` (default a temp dir) if needed."""
    import tempfile
    from .weights import load_weights
    base = Path(cache_dir) if cache_dir is not None else Path(tempfile.gettempdir()) / "omniref_tiny"
    path = base / f"seed{seed}"
    if not (path / "model.safetensors").exists() or not (path / "config.json").exists():
        write_tiny_checkpoint(path, seed)
    return load_config(path), load_weights(path)
