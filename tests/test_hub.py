"""Opening a checkpoint directory as downloaded: every published config field, the processor settings, the
three variants (Instruct, Thinking, Captioner), and the one-line refusal of speech without a talker."""
from __future__ import annotations

import json

import numpy as np
import pytest

from omniref.audio import mel
from omniref.config import load_config
from omniref.preprocessor_config import ProcessorSettings, load_processor_settings
from omniref.fullwidth import write_checkpoint
from omniref.generate import main as generate_main
from omniref.hub import NoTalkerError, open_checkpoint, require_talker
from omniref.published import published_config, published_preprocessor_config
from omniref.tiny import TINY_TOKEN_IDS, tiny_config
from omniref.vision import preprocess


def _variant_config(variant: str) -> dict:
    """The tiny model shaped like a published variant: Thinking and Captioner have no audio output."""
    cfg = tiny_config()
    cfg["enable_audio_output"] = variant == "instruct"
    cfg["thinker_config"]["text_config"]["use_qk_norm"] = True          # a published field omniref ignores
    cfg["thinker_config"]["a_field_from_the_future"] = {"x": 1}          # and one nobody knows yet
    return cfg


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    root = tmp_path_factory.mktemp("variants")
    return {v: write_checkpoint(root / f"Qwen3-Omni-tiny-{v.capitalize()}", _variant_config(v), seed=3)
            for v in ("instruct", "thinking", "captioner")}


def test_three_variants_are_detected(variants):
    for variant, path in variants.items():
        ck = open_checkpoint(path)
        assert ck.variant == variant
        assert ck.has_talker == (variant == "instruct")
        expected = {"audio", "vision", "thinker"} | ({"talker", "code2wav"} if variant == "instruct" else set())
        assert set(ck.components) == expected
        assert not any(k.startswith(("talker.", "code2wav.")) for k in ck.weights) or variant == "instruct"
        assert len(ck.weights.files) >= 1 and (path / "model.safetensors.index.json").is_file()
        assert all(ck.weights.dtype(k) == "BF16" for k in ck.weights)


def test_unknown_fields_are_kept_and_noted(variants):
    ck = open_checkpoint(variants["thinking"])
    unknown = ck.config.unknown_fields()
    assert "thinker_config.a_field_from_the_future" in unknown
    assert "thinker_config.text_config.use_qk_norm" in unknown
    assert ck.config.thinker_config.extra["a_field_from_the_future"] == {"x": 1}
    assert any("fields kept but not used" in n for n in ck.notes)


def test_speech_needs_a_talker(variants, capsys):
    require_talker(load_config(variants["instruct"]))
    with pytest.raises(NoTalkerError, match="Captioner.*has none"):
        require_talker(load_config(variants["captioner"]))
    from omniref import cli
    rc = cli.main(["generate", "--checkpoint", str(variants["thinking"]), "--prompt-ids", "40,41", "--wav",
                   str(variants["thinking"] / "out.wav"), "--nl-id", str(TINY_TOKEN_IDS["nl"])])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == NoTalkerError.exit_code and len(err) == 1 and "Thinking" in err[0] and "has none" in err[0]
    assert not (variants["thinking"] / "out.wav").exists()
    # the thinker alone still answers
    assert generate_main(["--checkpoint", str(variants["captioner"]), "--prompt-ids", "40,41",
                          "--max-new-tokens", "2"]) == 0
    assert len(capsys.readouterr().out.split()) in (1, 2)


def test_enable_audio_output_without_talker_weights_is_an_error(variants, tmp_path):
    cfg = _variant_config("instruct")
    path = variants["thinking"]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    for f in path.glob("model*"):
        (tmp_path / f.name).symlink_to(f)
    with pytest.raises(ValueError, match="enable_audio_output is true but the weights have no talker"):
        open_checkpoint(tmp_path)


def test_published_config_has_every_field_and_the_presets():
    for variant in ("instruct", "thinking", "captioner"):
        cfg = load_config(f"qwen3-omni-30b-a3b-{variant}")
        assert cfg.variant == variant and cfg.has_talker == (variant == "instruct")
        t = cfg.thinker_config.text_config
        assert (t.hidden_size, t.num_experts, t.num_experts_per_tok, t.vocab_size) == (2048, 128, 8, 152064)
    raw = published_config()
    cfg = load_config(raw)
    # every field of the file is either read or kept: the round trip loses nothing but the rope_parameters dict
    for section, obj in (("", cfg), ("thinker_config.vision_config.", cfg.thinker_config.vision_config)):
        src = raw if not section else raw["thinker_config"]["vision_config"]
        for key in src:
            assert key in obj.extra or hasattr(obj, key) or key == "rope_parameters", section + key
    assert "thinker_config.vision_config.tokens_per_second" in cfg.unknown_fields()


def test_processor_settings_come_from_the_file(tmp_path):
    # the defaults are the numbers the preprocessing modules use when called without settings
    d = ProcessorSettings()
    assert (d.sampling_rate, d.n_fft, d.hop_length, d.feature_size) == \
        (mel.SAMPLING_RATE, mel.N_FFT, mel.HOP_LENGTH, mel.NUM_MEL_BINS)
    assert (d.min_pixels, d.max_pixels, d.video_min_pixels, d.video_max_pixels) == \
        (preprocess.IMAGE_MIN_PIXELS, preprocess.IMAGE_MAX_PIXELS, preprocess.VIDEO_MIN_PIXELS,
         preprocess.VIDEO_MAX_PIXELS)
    assert load_processor_settings(tmp_path) == d                      # no file: the published values
    pc = published_preprocessor_config()
    pc.update(hop_length=320, max_pixels=200704)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(pc))
    (tmp_path / "video_preprocessor_config.json").write_text(json.dumps({"size": {"longest_edge": 65536}}))
    s = load_processor_settings(tmp_path)
    assert (s.hop_length, s.max_pixels, s.video_max_pixels, s.n_fft) == (320, 200704, 65536, 400)
    assert "feature_extractor_type" in s.unknown_fields
    pc["image_mean"] = [0.48, 0.46, 0.41]
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(pc))
    with pytest.raises(ValueError, match="preprocessor_config.json: image_mean"):
        load_processor_settings(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"hop_length": "fast"}))
    with pytest.raises(ValueError, match="hop_length is 'fast', expected a positive number"):
        load_processor_settings(tmp_path)


def test_generate_uses_the_checkpoint_processor(variants, tmp_path, capsys):
    """A hop of 320 samples halves the mel frames, so the prompt has fewer audio tokens."""
    from omniref.audio.wav import write_wav
    path = variants["captioner"]
    write_wav(tmp_path / "a.wav", (0.1 * np.random.default_rng(0).standard_normal(32000)).astype(np.float32), 16000)
    lengths = []
    for hop in (160, 320):
        (path / "preprocessor_config.json").write_text(json.dumps({**published_preprocessor_config(),
                                                                  "hop_length": hop}))
        assert generate_main(["--checkpoint", str(path), "--audio", str(tmp_path / "a.wav"),
                              "--prompt-ids", "40", "--max-new-tokens", "1"]) == 0
        lengths.append(int(capsys.readouterr().err.split("prompt: ")[1].split()[0]))
    assert lengths[1] < lengths[0]
