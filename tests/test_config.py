"""Config parsing: HF names and nesting, rope_parameters, num_local_experts, presets, summary numbers."""
from __future__ import annotations

import json

import pytest

from omniref.config import OmniConfig, load_config, qwen3_omni_30b_a3b_instruct
from omniref.summary import component_params, main as summary_main, thinker_flops_per_token
from omniref.errors import ConfigError
from conftest import model_cases


def test_defaults_follow_the_hf_classes():
    cfg = OmniConfig.from_dict({})
    a, t, c = cfg.thinker_config.audio_config, cfg.thinker_config.text_config, cfg.code2wav_config
    assert (a.n_window, a.n_window_infer, a.d_model) == (100, 400, 1280)
    assert t.head_dim == t.hidden_size // t.num_attention_heads   # head_dim None -> derived
    assert (c.upsample_rates, c.upsampling_ratios, c.total_upsample) == ([8, 5, 4, 3], [2, 2], 1920)
    assert cfg.talker_config.text_config.is_moe_layer(0)


def test_rope_parameters_are_flattened_and_aliases_read():
    cfg = load_config({
        "thinker_config": {"text_config": {"hidden_size": 64, "num_attention_heads": 4, "head_dim": 16,
                                           "rope_parameters": {"rope_theta": 5.0, "mrope_section": [4, 2, 2],
                                                               "mrope_interleaved": True}}},
        "talker_config": {"spatial_merge_size": 3, "shared_expert_intermediate_size": 7,
                          "text_config": {"num_local_experts": 6, "shared_expert_intermediate_size": 11}},
    })
    t = cfg.thinker_config.text_config
    assert (t.rope_theta, t.mrope_section, t.head_dim) == (5.0, [4, 2, 2], 16)
    assert cfg.talker_config.text_config.num_experts == 6
    assert cfg.talker_config.text_config.shared_expert_intermediate_size == 11
    assert cfg.talker_config.spatial_merge_size == 3
    assert cfg.talker_config.extra["shared_expert_intermediate_size"] == 7   # undeclared fields are kept


@pytest.mark.parametrize("case", model_cases(), ids=lambda p: p.name)
def test_golden_configs_parse(case):
    raw = json.loads((case / "config.json").read_text())
    cfg = load_config(case)
    tt = raw["talker_config"]["text_config"]
    assert cfg.talker_config.text_config.num_experts == tt["num_local_experts"]
    assert cfg.thinker_config.text_config.mrope_section == \
        raw["thinker_config"]["text_config"]["rope_parameters"]["mrope_section"]
    assert cfg.talker_config.accept_hidden_layer == raw["talker_config"]["accept_hidden_layer"]
    assert cfg.code2wav_config.num_quantizers == raw["code2wav_config"]["num_quantizers"]
    assert cfg.tts_pad_token_id == raw["tts_pad_token_id"]


def test_30b_preset_and_summary(capsys):
    cfg = qwen3_omni_30b_a3b_instruct()
    assert cfg.thinker_config.audio_token_id == 151675
    assert cfg.thinker_config.position_id_per_seconds == 13
    assert cfg.talker_config.accept_hidden_layer == 24
    assert cfg.talker_config.text_config.norm_topk_prob is True
    total, active = component_params(cfg)["thinker"]
    # the model's name: ~30.5B total, ~3.3B active in the thinker
    assert 30.0e9 < total < 31.0e9 and 3.0e9 < active < 3.6e9
    fl = thinker_flops_per_token(cfg, context=0)
    assert fl["attention"] == 0 and 5e9 < fl["matmul"] < 7e9   # ≈ 2 × active non-embedding weights
    assert summary_main([]) == 0
    out = capsys.readouterr().out
    assert "thinker" in out and "30.53B" in out and "FLOPs per token" in out


def test_bad_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="no config.json"):
        load_config(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_config(tmp_path)


def test_summary_estimates_bytes_memory_and_speed(tmp_path, capsys):
    from omniref.summary import decode_bytes, kv_bytes_per_token
    from omniref.tiny import write_tiny_checkpoint
    cfg = qwen3_omni_30b_a3b_instruct()
    per = decode_bytes(cfg)
    t = cfg.thinker_config.text_config
    attn = t.num_hidden_layers * 2 * (t.num_attention_heads + t.num_key_value_heads) * t.head_dim * t.hidden_size
    experts = t.num_hidden_layers * t.num_experts_per_tok * 3 * t.moe_intermediate_size * t.hidden_size
    lm_head = t.vocab_size * t.hidden_size
    # a token reads attention, 8 of 128 experts, the router and lm_head (bf16), not the embedding table
    assert 2 * (attn + experts + lm_head) < per["thinker"] < 2 * (attn + experts + lm_head) * 1.01
    assert kv_bytes_per_token(cfg) == 2 * 48 * 4 * 128 * 4
    assert summary_main(["--bandwidth", "100", "--context", "1000"]) == 0
    out = capsys.readouterr().out
    assert "does NOT fit in 24.0 GiB" in out and "MiB read per token" in out and "- (does not fit) here" in out
    # a checkpoint directory: bytes from the stored dtypes (the tiny one is float32: 4 bytes a weight)
    path = write_tiny_checkpoint(tmp_path / "tiny")
    assert summary_main([str(path), "--bandwidth", "10"]) == 0
    out = capsys.readouterr().out
    assert "F32" in out and "tokens/s:" in out and "does NOT fit" not in out
    mib = float(out.split("thinker: ")[2].split(" MiB")[0])
    tiny = load_config(path)
    expected = decode_bytes(tiny, _four())["thinker"] + 4096 * kv_bytes_per_token(tiny)   # weights + KV cache
    assert abs(mib * 2**20 - expected) <= 0.05 * 2**20
    with pytest.raises(ConfigError, match="nowhere"):                     # the CLI prints it in one line, exit 4
        summary_main([str(tmp_path / "nowhere")])


class _four(dict):
    def __missing__(self, key):
        return 4
