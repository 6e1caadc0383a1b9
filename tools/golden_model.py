"""Tiny Qwen3-Omni-MoE configs and deterministic random weights for the golden generator.

    case spec (dims, ids, switches) --build_config--> Qwen3OmniMoeConfig (HF field names and nesting)
    model + seed --det_init--> every parameter drawn from its own name-seeded normal, scaled so activations are O(1)
    model --calibrate_code2wav--> every code2wav convolution rescaled (LSUV style) so the waveform is not clipped

Name-seeded: parameter `name` is drawn from `np.random.default_rng([seed, crc32(name)])`, so a weight does not
depend on the order or the number of the other parameters.
"""
from __future__ import annotations

import zlib

import numpy as np

SPECIAL_NAMES = ["im_start", "im_end", "system", "user", "assistant", "nl", "audio_start", "audio_end",
                 "audio_pad", "vision_start", "vision_end", "image_pad", "video_pad", "tts_pad", "tts_bos",
                 "tts_eos"]
# Offsets of the talker's special codec ids past the codebook, as in the real checkpoint (codebook 2048:
# pad 2148, bos 2149, eos 2150, nothink 2155, think_bos 2156, think_eos 2157, speakers 2301-2303).
CODEC_OFFSETS = dict(codec_pad_id=100, codec_bos_id=101, codec_eos_token_id=102, codec_nothink_id=107,
                     codec_think_bos_id=108, codec_think_eos_id=109)
SPEAKER_OFFSETS = {"chelsie": 253, "ethan": 254, "aiden": 255}


def special_token_ids(vocab: int, first: int, seed: int) -> dict[str, int]:
    """Special thinker ids: the 16 ids `first .. first+15` in a seeded shuffled order (never the same layout
    as the shared tiny_omni case), plus `nl`."""
    perm = np.random.default_rng([seed, 7]).permutation(len(SPECIAL_NAMES))
    ids = {name: first + int(k) for name, k in zip(SPECIAL_NAMES, perm)}
    if max(ids.values()) >= vocab:
        raise ValueError(f"special ids up to {max(ids.values())} do not fit vocab {vocab}")
    return ids


def build_config(spec: dict):
    """spec (see make_golden.CASES) -> Qwen3OmniMoeConfig with every id, size and switch of the case."""
    from transformers import Qwen3OmniMoeConfig

    ids, a, v, t, tk, cp, cw = (spec[k] for k in ("ids", "audio", "vision", "text", "talker", "code_predictor",
                                                  "code2wav"))
    C = cw["codebook_size"]
    thinker_ids = dict(audio_token_id=ids["audio_pad"], image_token_id=ids["image_pad"],
                       video_token_id=ids["video_pad"], audio_start_token_id=ids["audio_start"],
                       vision_start_token_id=ids["vision_start"])
    audio_config = dict(num_mel_bins=128, encoder_layers=a["layers"], encoder_attention_heads=a["heads"],
                        encoder_ffn_dim=a["ffn"], d_model=a["d_model"], output_dim=t["hidden"], n_window=50,
                        n_window_infer=a["n_window_infer"], downsample_hidden_size=a["ds"],
                        max_source_positions=1500, conv_chunksize=500)
    vision_config = dict(depth=v["depth"], hidden_size=v["hidden"], num_heads=v["heads"],
                         intermediate_size=v["intermediate"], patch_size=v["patch"], spatial_merge_size=2,
                         temporal_patch_size=2, out_hidden_size=t["hidden"],
                         num_position_embeddings=v["num_position_embeddings"],
                         deepstack_visual_indexes=list(v["deepstack"]), hidden_act="gelu_pytorch_tanh",
                         rope_parameters={"rope_theta": 10000.0, "rope_type": "axial"})
    text_config = dict(vocab_size=t["vocab"], hidden_size=t["hidden"], intermediate_size=t["hidden"] * 2,
                       num_hidden_layers=t["layers"], num_attention_heads=t["heads"],
                       num_key_value_heads=t["kv_heads"], head_dim=t["head_dim"], rms_norm_eps=1e-6,
                       rope_parameters={"rope_theta": t["rope_theta"], "rope_type": "default",
                                        "mrope_section": list(t["mrope_section"]), "interleaved": True,
                                        "mrope_interleaved": True},
                       num_experts=t["experts"], num_experts_per_tok=t["top_k"],
                       moe_intermediate_size=t["moe_intermediate"], norm_topk_prob=t["norm_topk_prob"],
                       decoder_sparse_step=1, mlp_only_layers=[])
    thinker_config = dict(audio_config=audio_config, vision_config=vision_config, text_config=text_config,
                          position_id_per_seconds=spec["position_id_per_seconds"], user_token_id=ids["user"],
                          audio_end_token_id=ids["audio_end"], vision_end_token_id=ids["vision_end"],
                          **thinker_ids)
    talker_text = dict(vocab_size=1024 + C, hidden_size=tk["hidden"], intermediate_size=tk["intermediate"],
                       num_hidden_layers=tk["layers"], num_attention_heads=tk["heads"],
                       num_key_value_heads=tk["kv_heads"], head_dim=tk["head_dim"], rms_norm_eps=1e-6,
                       rope_parameters={"rope_theta": tk["rope_theta"], "rope_type": "default",
                                        "mrope_section": list(tk["mrope_section"]), "interleaved": True},
                       num_experts=tk["experts"], num_experts_per_tok=tk["top_k"],
                       moe_intermediate_size=tk["moe_intermediate"], norm_topk_prob=tk["norm_topk_prob"],
                       shared_expert_intermediate_size=tk["shared_intermediate"], decoder_sparse_step=1,
                       mlp_only_layers=[])
    code_predictor = dict(vocab_size=C, hidden_size=tk["hidden"], intermediate_size=cp["intermediate"],
                          num_hidden_layers=cp["layers"], num_attention_heads=cp["heads"],
                          num_key_value_heads=cp["kv_heads"], head_dim=cp["head_dim"], rms_norm_eps=1e-6,
                          rope_parameters={"rope_theta": cp["rope_theta"], "rope_type": "default"},
                          num_code_groups=cw["num_quantizers"])
    talker_config = dict(text_config=talker_text, code_predictor_config=code_predictor,
                         num_code_groups=cw["num_quantizers"], thinker_hidden_size=t["hidden"],
                         accept_hidden_layer=tk["accept_hidden_layer"],
                         position_id_per_seconds=spec["position_id_per_seconds"], spatial_merge_size=2,
                         speaker_id={name: C + off for name, off in SPEAKER_OFFSETS.items()},
                         **{k: C + off for k, off in CODEC_OFFSETS.items()}, **thinker_ids)
    code2wav_config = dict(codebook_size=C, hidden_size=cw["hidden"], num_attention_heads=cw["heads"],
                           num_key_value_heads=cw["kv_heads"], num_hidden_layers=cw["layers"],
                           intermediate_size=cw["intermediate"], rms_norm_eps=1e-5,
                           rope_parameters={"rope_theta": cw["rope_theta"], "rope_type": "default"},
                           sliding_window=cw["sliding_window"], num_quantizers=cw["num_quantizers"],
                           upsample_rates=list(cw["upsample_rates"]),
                           upsampling_ratios=list(cw["upsampling_ratios"]), decoder_dim=cw["decoder_dim"])
    return Qwen3OmniMoeConfig(
        thinker_config=thinker_config, talker_config=talker_config, code2wav_config=code2wav_config,
        enable_audio_output=True, im_start_token_id=ids["im_start"], im_end_token_id=ids["im_end"],
        tts_pad_token_id=ids["tts_pad"], tts_bos_token_id=ids["tts_bos"], tts_eos_token_id=ids["tts_eos"],
        system_token_id=ids["system"], user_token_id=ids["user"], assistant_token_id=ids["assistant"])


# ----------------------------------------------------------------------------------------------------------
# deterministic initialisation
# ----------------------------------------------------------------------------------------------------------
def _draw(seed: int, name: str, shape) -> np.ndarray:
    """Standard normal of `shape`, seeded by (seed, crc32(name))."""
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    return rng.standard_normal(shape)


def init_value(name: str, shape: tuple, seed: int, router_gain: float = 1.0) -> np.ndarray:
    """The rule that gives parameter `name` its value (float64, cast by the caller).

    - norm weights (LayerNorm / RMSNorm incl. q_norm/k_norm): 1 + 0.15 N     (near identity, not exactly)
    - biases: 0.1 N;  code2wav layer scales and ConvNeXt gammas: 0.25 + 0.05 N (the defaults 0.01 / 1e-6
      would make those branches invisible); SnakeBeta log-alpha / log-beta: 0.2 N
    - embeddings / position tables: N
    - MoE routers: router_gain * N / sqrt(in); gain 1 keeps router logits O(1), which maximises the
      smallest top-k probability gap over many tokens (larger gains squeeze the runner-up probabilities)
    - every other matrix or conv kernel: N / sqrt(fan_in), fan_in = product of all dims but the first
      (fused experts [E, out, in]: in; ConvTranspose1d [in, out, k]: in * k / 2, then calibrated)
    """
    n = _draw(seed, name, shape)
    leaf = name.rsplit(".", 1)[-1]
    if name.endswith(".bias"):
        return 0.1 * n
    if leaf in ("scale", "gamma"):
        return 0.25 + 0.05 * n
    if leaf in ("alpha", "beta"):
        return 0.2 * n
    if len(shape) == 1:                                            # every 1-D weight left is a norm weight
        return 1.0 + 0.15 * n
    if "embed" in name and "patch_embed" not in name:             # token / codec / code / position tables
        return n
    if name.endswith("mlp.gate.weight"):                           # MoE router [E, H]
        return router_gain * n / np.sqrt(shape[1])
    if "experts" in name and len(shape) == 3:                      # fused experts [E, out, in]
        return n / np.sqrt(shape[2])
    if "upsample" in name and name.endswith(".0.conv.weight") or ("block.1.conv.weight" in name):
        return n / np.sqrt(shape[0] * shape[2] / 2)                # ConvTranspose1d [in, out, k]
    return n / np.sqrt(int(np.prod(shape[1:])))


def det_init(model, seed: int, router_gain: float = 1.0) -> int:
    """Overwrite every parameter of `model` (in place, float32) by `init_value`; returns the count."""
    import torch

    count = 0
    with torch.no_grad():
        for name, p in model.named_parameters():
            val = init_value(name, tuple(p.shape), seed, router_gain)
            p.copy_(torch.from_numpy(val.astype(np.float32)))
            count += 1
    return count


def calibrate_code2wav(code2wav, seed: int, n_frames: int = 24, final_std: float = 0.22) -> int:
    """LSUV-style calibration: walk every convolution of code2wav in forward order and rescale its weight and
    bias so its output has std 1 on random codes (the last one: `final_std`, so the clamp to [-1, 1] rarely
    bites). Returns the number of convolutions rescaled."""
    import torch

    cfg = code2wav.config
    rng = np.random.default_rng([seed, 99])
    codes = torch.from_numpy(rng.integers(0, cfg.codebook_size, (1, cfg.num_quantizers, n_frames)))
    convs = [m for m in code2wav.modules() if isinstance(m, (torch.nn.Conv1d, torch.nn.ConvTranspose1d))]
    stats = {}

    def hook(module, inputs, output):
        stats["std"] = float(output.std())

    with torch.no_grad():
        for i, conv in enumerate(convs):
            handle = conv.register_forward_hook(hook)
            code2wav(codes)
            handle.remove()
            target = final_std if i == len(convs) - 1 else 1.0
            factor = target / max(stats["std"], 1e-6)
            conv.weight.mul_(factor)
            if conv.bias is not None:
                conv.bias.mul_(factor)
    return len(convs)


# ----------------------------------------------------------------------------------------------------------
# code2wav-only checkpoints (a case that stores only code2wav.* tensors)
# ----------------------------------------------------------------------------------------------------------
def save_code2wav_only(code2wav, config, out_dir: str) -> None:
    """config.json + generation_config.json + model.safetensors holding only `code2wav.*` (Hub names)."""
    from safetensors.torch import save_file
    from transformers import GenerationConfig

    import os

    os.makedirs(out_dir, exist_ok=True)
    config.save_pretrained(out_dir)
    GenerationConfig.from_model_config(config).save_pretrained(out_dir)
    tensors = {f"code2wav.{k}": p.detach().contiguous() for k, p in code2wav.named_parameters()}
    save_file(tensors, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})


def load_code2wav_only(out_dir: str):
    import os

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
