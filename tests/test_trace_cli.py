"""`omniref trace` on a golden case and on a generate run (--checkpoint), and `omniref compare` on the files."""
from __future__ import annotations

import numpy as np

from omniref.cli import main as cli
from omniref.tiny import write_tiny_checkpoint
from omniref.trace import load_trace

CASE = "tests/golden/tiny_f32"


def test_trace_a_case_limited_by_globs(tmp_path, capsys):
    out = tmp_path / "t.npz"
    assert cli(["trace", CASE, "-o", str(out), "--stage", "thinker", "--tap", "thinker.model.layers.0.*"]) == 0
    t = load_trace(out)
    outputs = [k for k in t.arrays if k not in t.inputs]
    assert outputs and all(k.startswith("thinker.model.layers.0.") for k in outputs)
    assert "thinker.model.layers.0.self_attn.q_rotary" in outputs
    assert {"thinker.input_ids", "mel.waveform"} <= t.inputs                  # inputs are kept whatever the globs
    # a limited trace against the whole golden case: nothing it did not ask for is "missing"
    assert cli(["compare", str(out), CASE]) == 0
    assert cli(["trace", CASE, "-o", str(out), "--stage", "thinker"]) == 2     # exists, no --force
    assert "already exists" in capsys.readouterr().err


def test_trace_a_generate_run_keeps_the_prompt_as_inputs(tmp_path):
    ckpt = write_tiny_checkpoint(tmp_path / "tiny")
    out = tmp_path / "gen.npz"
    assert cli(["trace", "--checkpoint", str(ckpt), "--prompt-ids", "100,101,102", "--max-new-tokens", "2",
                "-o", str(out), "--tap", "thinker.model.*"]) == 0
    t = load_trace(out)
    assert {"thinker.input_ids", "thinker.use_audio_in_video"} <= t.inputs
    ids = t.arrays["thinker.input_ids"]
    assert ids.ndim == 2 and ids.shape[0] == 1 and 100 in ids[0]
    L = ids.shape[1]
    assert t.arrays["thinker.model.layers.0"].shape[:2] == (1, L)             # the prefill, batch axis included
    assert t.meta["generation"]["thinker"]["max_new_tokens"] == 2
    assert all(k.startswith("thinker.model.") for k in t.arrays if k not in t.inputs)
    assert cli(["trace", "--checkpoint", str(ckpt), "--prompt-ids", "100"]) == 2         # no -o


def test_trace_of_a_case_agrees_with_its_golden_file(tmp_path):
    out = tmp_path / "c.npz"
    assert cli(["trace", "tests/golden/code2wav_q8", "-o", str(out)]) == 0
    assert cli(["compare", str(out), "tests/golden/code2wav_q8", "--first"]) == 0
    t = load_trace(out)
    wav = t.arrays["code2wav"]
    assert wav.shape[:2] == (1, 1) and np.abs(wav).max() <= 1.0
