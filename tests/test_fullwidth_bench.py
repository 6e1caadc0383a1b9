"""`omniref bench --full-width`: the byte counts it reports and a smoke run (its timings are not tested)."""
from __future__ import annotations

from omniref import bench
from omniref.config import qwen3_omni_30b_a3b_instruct
from omniref.bench.fullwidth import PUBLISHED_DEPTH, layer_bytes, report, with_depth
from omniref.tiny import write_tiny_checkpoint


def test_layer_bytes_at_the_published_width():
    cfg = qwen3_omni_30b_a3b_instruct()
    b = layer_bytes(cfg, "thinker", tokens=1)
    attention = (4096 + 512 + 512) * 2048 + 2048 * 4096 + 2 * 128
    expert = 3 * 768 * 2048
    norms_router = 2 * 2048 + 128 * 2048
    assert b["decode"] == 2 * (attention + norms_router + 8 * expert)        # bf16, 8 of 128 experts
    assert b["prefill"] == b["decode"]                                        # one token: the same experts
    many = layer_bytes(cfg, "thinker", tokens=4096)["prefill"]
    assert abs(many - 2 * (attention + norms_router + 128 * expert)) < 1e-3 * many   # every expert touched
    assert layer_bytes(cfg, "audio", tokens=100)["decode"] == 2 * (4 * (1280 * 1280 + 1280) + 4 * 1280
                                                                 + 2 * 5120 * 1280 + 5120 + 1280)
    deeper = with_depth(cfg, "talker", 1)
    assert deeper.talker_config.text_config.num_hidden_layers == 1 and cfg.talker_config.text_config.num_hidden_layers == 20
    assert with_depth(cfg, "vision", 2).thinker_config.vision_config.deepstack_visual_indexes == []


def test_report_extrapolates_to_the_published_depths():
    times = {"thinker": {"prefill": [1.0, 1.5], "decode": [0.2, 0.25]},
             "audio": {"prefill": [0.3, 0.4], "decode": None}}
    text = report(times, prompt_tokens=128, bandwidth=10e9)
    thinker = next(line for line in text.splitlines() if line.startswith("thinker"))
    # fixed 0.5 s + 48 x 0.5 s prefill; fixed 0.15 s + 48 x 0.05 s decode
    assert "24.50 s" in thinker and "2.550 s" in thinker and f"{1 / 2.55:.2f}" in thinker
    assert f"{PUBLISHED_DEPTH['audio']}" in text and "does NOT fit in 24 GiB" in text


def test_bench_full_width_runs_on_a_small_checkpoint(tmp_path, capsys):
    path = write_tiny_checkpoint(tmp_path / "tiny")
    assert bench.main(["--full-width", "--checkpoint", str(path), "--quick"]) == 0
    out = capsys.readouterr().out
    for stack in ("thinker", "audio", "vision", "talker"):
        assert any(line.startswith(stack) for line in out.splitlines()), stack
    assert "peak RSS" in out
