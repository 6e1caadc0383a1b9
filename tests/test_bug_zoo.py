"""A zoo of porting bugs: each is planted in omniref (one edited line) or in a copy of a committed checkpoint, and
`compare --first` must name the module where it lives, not merely say that something differs.

Every public port of Qwen3-Omni went wrong in the same places (position ids, audio chunk windows, DeepStack, the
talker's inputs, Code2Wav's chunk edges); these are those bugs. The reference is omniref's own trace of the
case without the bug (tools/record_reference.py shows that trace agrees with Hugging Face tap for tap).
A code bug is planted by editing one line of the function's source and re-defining it (`plant`), exactly the
one-line slip a porter makes; the NumPy backend runs so that the edited Python is what computes.
"""
from __future__ import annotations

import inspect
import shutil
import sys
import textwrap

import numpy as np
import pytest

from omniref import backend
from omniref.compare import compare, first_divergence, where
from omniref.trace import TraceFile, trace_case
from omniref.weights import load_weights, save_safetensors

CASES = "tests/golden/"
_clean: dict = {}


def plant(monkeypatch, owner, name: str, old: str, new: str) -> None:
    """Replace `old` by `new` in the source of `owner.name` (a function or method) and install the result
    everywhere the original is referenced: omniref modules, and the op table the models call (backend.OPS)."""
    original = getattr(owner, name)
    source = textwrap.dedent(inspect.getsource(original))
    assert source.count(old) == 1, f"bug zoo: {old!r} is not (exactly once) in {owner.__name__}.{name}"
    namespace = dict(original.__globals__)
    exec(compile(source.replace(old, new), inspect.getsourcefile(original), "exec"), namespace)
    monkeypatch.setattr(owner, name, namespace[name])
    for mod in list(sys.modules.values()):
        if getattr(mod, "__name__", "").startswith("omniref") and getattr(mod, name, None) is original:
            monkeypatch.setattr(mod, name, namespace[name])
    for op, (spec, kernel) in list(backend.OPS.items()):
        if spec is original:
            monkeypatch.setitem(backend.OPS, op, (namespace[name], kernel))


def traced(case: str, stages: list[str], calls: str = "first") -> TraceFile:
    """A trace of the case's stages (`case`: a committed case name or a directory)."""
    with backend.use("numpy"):
        tr = trace_case(case if "/" in case else CASES + case, stages=stages, calls=calls)
    return TraceFile(case, tr.arrays, set(tr.inputs), None, ordered=True)


def first_named(case: str, stages: list[str], clean_case: str | None = None) -> tuple[str, str]:
    """(the key compare --first stops at, its sentence) for the planted run against the clean trace."""
    ref = _clean[(clean_case or case, tuple(stages))]
    found = first_divergence(compare(traced(case, stages), ref)[0], ref.arrays)
    assert found is not None, "the planted bug changed nothing"
    return found[0].key, found[1]


@pytest.fixture(scope="module", autouse=True)
def clean_traces():
    for case, stages in [("tiny_f32", ("thinker",)), ("tiny_f32", ("thinker", "talker")), ("tiny_f32", ("audio",)),
                         ("code2wav_q8", ("code2wav",)), ("tiny_bf16_sharded", ("thinker",))]:
        _clean[(case, stages)] = traced(case, list(stages))
    yield
    _clean.clear()


def _nn():
    from omniref import nn
    return nn


def _decoder():
    from omniref import decoder
    return decoder


def _modules():
    from omniref.audio import encoder as audio
    from omniref.codec import code2wav
    from omniref.talker import inputs as talker_inputs
    from omniref.thinker import model as thinker, positions
    return audio, code2wav, talker_inputs, thinker, positions


# (id, case, stages, owner, function, old line, buggy line, the name compare --first must give)
BUGS = [
    ("rotate_half sign", "code2wav_q8", ["code2wav"], lambda: _nn(), "rotate_half",
     "[-x[..., half:], x[..., :half]]", "[x[..., half:], -x[..., :half]]",
     "code2wav.pre_transformer.layers.0.self_attn.q_rotary"),
    ("mrope height/width sections swapped", "tiny_f32", ["thinker"], lambda: _decoder(), "rope_cos_sin",
     "row[(slot % 3 == 1) & (slot < 3 * mrope_section[1])] = 1",
     "row[(slot % 3 == 1) & (slot < 3 * mrope_section[1])] = 2", "thinker.model.rotary_emb"),
    ("q_norm skipped", "tiny_f32", ["thinker"], lambda: _decoder().Decoder, "attention",
     'q = ops.rms_norm(q, self.w(p + "q_norm.weight"), self.rms_norm_eps)', "q = q",
     "thinker.model.layers.0.self_attn.q_norm"),
    ("softmax after top-k instead of before", "tiny_f32", ["thinker", "talker"], lambda: _decoder(), "moe",
     "weights = np.take_along_axis(probs, chosen, axis=-1)",
     "weights = ops.softmax(np.take_along_axis(logits, chosen, axis=-1), axis=-1)",
     "talker.model.layers.0.mlp.gate.router_scores"),    # the thinker renormalises, where both agree
    ("norm_topk_prob ignored", "tiny_f32", ["thinker"], lambda: _decoder(), "moe",
     "if norm_topk_prob:", "if False:", "thinker.model.layers.0.mlp.gate.router_scores"),
    ("DeepStack added after the wrong layer", "tiny_f32", ["thinker"], lambda: _modules()[3].Thinker, "forward",
     "h[visual_mask] += deepstack[i]\n", "h[visual_mask] += deepstack[i - 1] if i else 0\n",
     "thinker.model.deepstack.0"),
    ("audio attention window off by one", "tiny_f32", ["audio"], lambda: _modules()[0], "audio_encoder",
     "window = int(kept.max()) * max(1, cfg.n_window_infer // chunk)",
     "window = int(kept.max()) * max(1, cfg.n_window_infer // chunk) - 1",
     "thinker.audio_tower.layers.0.self_attn"),
    ("audio conv stem flattened (frequency, channel)", "tiny_f32", ["audio"], lambda: _modules()[0], "conv_stem",
     "x.transpose(0, 2, 3, 1).reshape(c, t, ds * hf)", "x.transpose(0, 2, 1, 3).reshape(c, t, ds * hf)",
     "thinker.audio_tower.conv_out"),
    ("audio-in-video positions not interleaved", "tiny_bf16_sharded", ["thinker"], lambda: _modules()[4],
     "block_positions", "return _interleave(grid, _run(start, b.n_audio))", "return [grid, _run(start, b.n_audio)]",
     "thinker.model.position_ids"),
    ("the talker's trailing text dropped", "tiny_f32", ["thinker", "talker"], lambda: _modules()[2],
     "build_talker_inputs", "trailing = np.concatenate([A[4:], eos[None]])", "trailing = eos[None]",
     "talker.trailing_text_hidden"),
    ("Code2Wav transposed-conv trim shifted by one sample", "code2wav_q8", ["code2wav"], lambda: _nn(),
     "causal_trans_conv", "return full[trim:full.shape[0] - trim]", "return full[trim + 1:full.shape[0] - trim + 1]",
     "code2wav.upsample.0.0"),
]


@pytest.mark.parametrize("bug", BUGS, ids=[b[0] for b in BUGS])
def test_first_divergence_names_the_module_of_the_bug(monkeypatch, bug):
    _, case, stages, owner, func, old, new, expect = bug
    plant(monkeypatch, owner(), func, old, new)
    key, says = first_named(case, stages)
    assert key == expect, f"first divergence at {key}: {says}"
    assert f"`{where(key)[0]}`" in says


@pytest.mark.parametrize("weight", [
    "thinker.model.layers.1.self_attn.v_proj.weight",
    "thinker.model.layers.2.mlp.gate.weight",
    "talker.model.layers.1.mlp.shared_expert_gate.weight",
    "talker.code_predictor.model.layers.0.post_attention_layernorm.weight",
])
def test_one_perturbed_weight_is_localised_to_its_module(tmp_path, weight):
    """A copy of tiny_f32 whose one tensor is scaled by 1.01: the first divergence is that weight's module."""
    src = CASES + "tiny_f32"
    for f in ("config.json", "generation_config.json", "golden.npz", "meta.json"):
        shutil.copy(f"{src}/{f}", tmp_path / f)
    w = load_weights(src)
    tensors = {k: np.array(w.raw(k)) for k in w.keys()}
    tensors[weight] = (tensors[weight] * np.float32(1.01)).astype(np.float32)
    save_safetensors(tmp_path / "model.safetensors", tensors)
    key, says = first_named(str(tmp_path), ["thinker", "talker"], clean_case="tiny_f32")
    module = weight.rsplit(".", 1)[0]
    assert key == module, f"first divergence at {key}: {says}"
    assert says.startswith(f"inputs of `{module}` agree, its output differs")


def test_compare_first_on_the_command_line_and_a_skipped_step(tmp_path, monkeypatch, capsys):
    """The CLI's sentence for a planted bug, and a step that silently does not run (MISSING, not skipped over)."""
    from omniref.compare import main as main_compare
    from omniref.trace import save_trace
    ref = _clean[("tiny_f32", ("thinker",))]
    save_trace(tmp_path / "ref.npz", ref.arrays, ref.inputs)
    plant(monkeypatch, _modules()[3].Thinker, "forward", "if i >= len(deepstack):", "if True:")
    ours = traced("tiny_f32", ["thinker"])
    save_trace(tmp_path / "ours.npz", ours.arrays, ours.inputs)
    assert main_compare([str(tmp_path / "ours.npz"), str(tmp_path / "ref.npz"), "--first"]) == 1
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("first divergence: thinker.model.deepstack.0: `thinker.model.deepstack.0` is missing")


def test_a_decode_step_bug_needs_all_calls_and_then_names_the_step(monkeypatch):
    """Decode positions one too far: the prefill taps all agree, so a first-call trace can only point at the
    golden key the decode steps make (and says so); with every call traced it names the first decode step."""
    clean_first, clean_all = _clean[("tiny_f32", ("thinker",))], traced("tiny_f32", ["thinker"], calls="all")
    plant(monkeypatch, _modules()[3].Thinker, "generate", "start=len(out) - 1)", "start=len(out))")
    buggy = traced("tiny_f32", ["thinker"])
    row, says = first_divergence(compare(buggy, clean_first)[0], clean_first.arrays)
    assert row.key.startswith(("talker.thinker_hidden", "thinker.generated_ids")) and "--all-calls" in says
    buggy = traced("tiny_f32", ["thinker"], calls="all")
    row, says = first_divergence(compare(buggy, clean_all)[0], clean_all.arrays)
    assert row.key == "thinker.model.position_ids@1"
