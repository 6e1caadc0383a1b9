"""The bench's tools: the per-op profiler leaves the op table as it found it and counts real calls; the llama.cpp
comparison says plainly when llama.cpp is not there; the ratios are omniref over llama.cpp speed."""
import numpy as np
import pytest

from omniref import backend
from omniref.backend import ops
from omniref.bench import llamacpp
from omniref.bench.profile import op_timers


def test_op_timers_count_calls_and_restore_the_table():
    before = dict(backend.OPS)
    x = np.ones((2, 4), np.float32)
    w = np.ones((3, 4), np.float32)
    with backend.use("numpy"), op_timers() as totals:
        ops.linear(x, w)
        ops.linear(x, w)
        ops.linear_many(x, [w, w])            # nn.linear_many calls nn.linear directly: one op, not three
        ops.softmax(x, axis=-1)
    assert totals["linear"][0] == 2 and totals["linear_many"][0] == 1 and totals["softmax"][0] == 1
    assert all(t >= 0 for _, t in totals.values())
    assert backend.OPS == before              # the very same callables: no timing left behind


def test_llamacpp_missing_is_reported(monkeypatch, tmp_path):
    monkeypatch.setattr(llamacpp.importlib.util, "find_spec", lambda name: None)
    monkeypatch.delenv("OMNIREF_LLAMACPP_PYTHON", raising=False)
    python, note = llamacpp.llamacpp_python(None)
    assert python is None and "llama.cpp not found" in note
    python, note = llamacpp.llamacpp_python(str(tmp_path / "no-such-python"))
    assert python is None and "cannot run" in note
    res = llamacpp.bench_vs_llamacpp(False, {}, None, note, 2)
    assert res == {"found": False, "note": note}


def test_ratios_are_omniref_over_llamacpp():
    omni = {"cpp_decode_tok_s": 150.0, "cpp_bf16_decode_tok_s": 220.0, "cpp_prefill_s": 0.25,
            "cpp_bf16_prefill_s": 0.2, "numpy_decode_tok_s": 100.0}
    llama = {"f32_exact": {"decode_tok_s": 100.0, "prefill_s": 0.5}, "bf16": {"decode_tok_s": 200.0, "prefill_s": 0.3}}
    r = llamacpp.ratios(omni, llama)
    assert r["decode_fp32_vs_llamacpp"] == pytest.approx(1.5) and r["decode_bf16_vs_llamacpp"] == pytest.approx(1.1)
    assert r["prefill_fp32_vs_llamacpp"] == pytest.approx(2.0) and r["prefill_bf16_vs_llamacpp"] == pytest.approx(1.5)
    assert r["decode_cpp_vs_numpy"] == pytest.approx(1.5)


def test_torch_reference_gets_the_stacked_expert_layout():
    """fuse_experts turns the Hub's per-expert matrices into transformers 5's stacked parameters, in expert
    order, gate rows before up rows; other keys pass through untouched."""
    from omniref.bench.torchref import fuse_experts
    rng = np.random.default_rng(0)
    E, I, H = 3, 2, 4
    hub = {f"model.layers.0.mlp.experts.{e}.{m}_proj.weight": rng.standard_normal((H, I) if m == "down" else (I, H))
           for e in range(E) for m in ("gate", "up", "down")}
    hub["model.layers.0.mlp.gate.weight"] = gate = rng.standard_normal((E, H))
    out = fuse_experts(dict(hub))
    assert sorted(out) == ["model.layers.0.mlp.experts.down_proj", "model.layers.0.mlp.experts.gate_up_proj",
                           "model.layers.0.mlp.gate.weight"]
    gu, down = out["model.layers.0.mlp.experts.gate_up_proj"], out["model.layers.0.mlp.experts.down_proj"]
    assert gu.shape == (E, 2 * I, H) and down.shape == (E, H, I)
    for e in range(E):
        np.testing.assert_array_equal(gu[e, :I], hub[f"model.layers.0.mlp.experts.{e}.gate_proj.weight"])
        np.testing.assert_array_equal(gu[e, I:], hub[f"model.layers.0.mlp.experts.{e}.up_proj.weight"])
        np.testing.assert_array_equal(down[e], hub[f"model.layers.0.mlp.experts.{e}.down_proj.weight"])
    assert out["model.layers.0.mlp.gate.weight"] is gate


def test_torch_reference_is_optional(monkeypatch):
    """Without torch the reference is reported as not timed, and no ratio is made up."""
    from omniref.bench import torchref
    monkeypatch.setattr(torchref, "_hf", lambda: None)
    assert torchref.reference_module("Qwen3OmniMoeCode2Wav", "Qwen3OmniMoeCode2WavConfig", {}, {}) is None
    res = torchref.with_target({"cpp_s": 1.0, **torchref.time_reference(None, None, 1)}, "cpp_s", 2.5)
    assert res["torch_s"] is None and "not installed" in res["torch_note"] and "torch_ratio" not in res
    assert res["target_vs_torch"] == 2.5
