"""The end-to-end chain: `omniref demo` on the bundled default, and `pipeline.speak` against the goldens."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.io import wavfile

from omniref import demo, pipeline
from omniref.config import load_config
from omniref.errors import MediaError
from omniref.golden import Case
from omniref.tiny import tiny_config


def test_demo_writes_wav_and_figure(tmp_path, capsys):
    out = tmp_path / "demo"
    assert demo.main(["--out", str(out), "--thinker-max-new-tokens", "4", "--talker-max-new-tokens", "12"]) == 0
    text = capsys.readouterr().out
    assert "RANDOM weights" in text and "noise" in text
    for stage in ("mel features, patches", "audio+vision encoders", "thinker generate", "talker inputs",
                  "talker + code pred.", "code2wav"):
        assert stage in text, stage
    rate, pcm = wavfile.read(out / "speech.wav")
    codes = np.load(out / "codes.npy")
    cfg = load_config(tiny_config())
    G, T = codes.shape
    assert rate == 24000 and pcm.dtype == np.int16
    assert G == cfg.talker_config.num_code_groups and 1 <= T <= 11
    assert (codes >= 0).all() and (codes < cfg.code2wav_config.codebook_size).all()
    # one chunk (T <= 300): every frame is 1920 samples, minus the 555 the causal transposed convs trim
    assert pcm.shape == (1920 * T - 555,)
    assert np.abs(pcm).max() > 0
    assert (out / "speech.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the run is deterministic: same seed, same codes
    demo.main(["--out", str(tmp_path / "again"), "--thinker-max-new-tokens", "4", "--talker-max-new-tokens", "12"])
    assert np.array_equal(np.load(tmp_path / "again" / "codes.npy"), codes)


def test_demo_rejects_missing_input(tmp_path):
    with pytest.raises(MediaError, match="nope.wav: no such WAV file"):
        demo.main(["--out", str(tmp_path), "--audio", str(tmp_path / "nope.wav")])


def test_speak_reproduces_golden_end_to_end(golden_cases):
    """Thinker (from the raw golden inputs) -> speak -> the reference's talker codes and waveform."""
    from omniref.stages import prompt_from_case
    from omniref.thinker.model import Thinker
    cases = [Case(p) for p in golden_cases]
    cases = [c for c in cases if c.config is not None and "talker.wav" in c.golden and "talker.codes" in c.golden]
    if not cases:
        pytest.skip("no golden case with talker.wav")
    case = min(cases, key=lambda c: c.golden["thinker.input_ids"].shape[-1])
    gen = case.meta.get("generation", {})
    prompt = prompt_from_case(case)
    res = Thinker(case.weights, case.config).generate(
        prompt, int(gen["thinker"]["max_new_tokens"]), eos_token_id=gen["thinker"].get("eos_token_id"),
        record_layer=case.config.talker_config.accept_hidden_layer, progress=False)
    speech = pipeline.speak(case.weights, case.config, prompt, res,
                            speaker=gen["talker"].get("speaker_id", "ethan"),
                            max_new_tokens=int(gen["talker"]["max_new_tokens"]))
    assert np.array_equal(speech.codes, case.golden["talker.codes"][0])
    ref = case.golden["talker.wav"][0, 0]
    assert speech.wav.shape == ref.shape
    assert np.abs(speech.wav - ref).max() / np.abs(ref).max() <= 1e-4


def test_speak_needs_recorded_states(golden_cases):
    from omniref.thinker.model import GenerateResult
    cases = [Case(p) for p in golden_cases if (p / "config.json").is_file()]
    if not cases:
        pytest.skip("no model case")
    res = GenerateResult(position_ids=None, rope_delta=0, hidden_states=[], generated_ids=np.array([5, 6]))
    with pytest.raises(ValueError, match="record_layer"):
        pipeline.speak(cases[0].weights, cases[0].config, None, res)
