"""Traces and their comparison: recording, the file format, the measures, the verdict and its exit code."""
from __future__ import annotations

import numpy as np
import pytest

from omniref import taps
from omniref.compare import compare, compare_arrays, first_divergence
from omniref.compare import main as main_compare
from omniref.trace import TAPS, Trace, TraceError, load_trace, save_trace, tap_for


def test_record_without_a_trace_touches_nothing():
    class Loud:                               # any use of the array would raise
        def __getattr__(self, name):
            raise AssertionError(f"record used the array ({name}) with no trace active")

        def __getitem__(self, i):
            raise AssertionError("record indexed the array with no trace active")
    assert taps.sink is None
    taps.record("x", Loud(), add_batch=True, axes=(1, 0))


def test_trace_keeps_insertion_order_globs_first_calls_and_copies():
    a = np.arange(4, dtype=np.float32)
    with Trace(include=["m.layers.1*", "m.norm"], calls="first") as tr:
        taps.record("m.layers.10.x", a)
        taps.record("m.layers.2.x", a)          # not matched
        taps.record("m.layers.1.x", a, add_batch=True)
        taps.record("m.norm", a.reshape(2, 2), axes=(1, 0))
        taps.record("m.layers.1.x", a + 1)      # a second call: dropped with calls="first"
        a[:] = -1                               # the trace holds a copy, not a view
    assert taps.sink is None
    assert list(tr.arrays) == ["m.layers.10.x", "m.layers.1.x", "m.norm"]
    assert tr.arrays["m.layers.1.x"].shape == (1, 4) and tr.arrays["m.layers.1.x"][0, 3] == 3
    np.testing.assert_array_equal(tr.arrays["m.norm"], [[0, 2], [1, 3]])
    with Trace(calls="all") as tr2:
        for step in range(3):
            taps.record("s", np.full(1, step))
    assert list(tr2.arrays) == ["s", "s@1", "s@2"] and tr2.arrays["s@2"][0] == 2


def test_file_keeps_order_and_inputs_and_refuses_to_overwrite(tmp_path):
    arrays = {"z.ids": np.arange(3), "b.out": np.ones(2, np.float32), "a.out": np.zeros(2, np.float32)}
    path = tmp_path / "t.npz"
    save_trace(path, arrays, inputs=["z.ids"], include=["*"])
    t = load_trace(path)
    assert list(t.arrays) == ["z.ids", "b.out", "a.out"] and t.inputs == {"z.ids"} and t.ordered
    with pytest.raises(FileExistsError, match="--force"):
        save_trace(path, arrays)
    save_trace(path, {"only": np.ones(1)}, force=True)
    assert list(load_trace(path).arrays) == ["only"]


@pytest.mark.parametrize("make, message", [
    (lambda p: None, "no such file"),
    (lambda p: p.write_bytes(b"not a zip"), "not a readable .npz"),
    (lambda p: p.mkdir(), "not a golden case"),
])
def test_unreadable_inputs_are_one_line_errors(tmp_path, capsys, make, message):
    bad = tmp_path / "bad.npz"
    make(bad)
    with pytest.raises(TraceError, match=message):
        load_trace(bad)
    good = tmp_path / "good.npz"
    save_trace(good, {"x": np.ones(1)})
    assert main_compare([str(bad), str(good)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1


def test_measures_against_hand_computed_values():
    ref = np.array([[1.0, -2.0, 4.0], [0.5, 0.5, 0.5]], np.float32)[None]      # [1, L=2, 3]
    ours = ref.copy()
    ours[0, 1, 2] += 0.01
    assert compare_arrays("thinker.model.layers.0", ours, ref).status == "DIFF"     # rel 2.5e-3 > 1e-4
    row = compare_arrays("thinker.model.layers.0", ours + np.float32(0), ref, rtol=1e-2)
    assert row.status == "OK" and row.rel == pytest.approx(0.01 / 4, rel=1e-3)
    row = compare_arrays("thinker.model.layers.0", ours, ref)
    err2, ref2 = 0.01 ** 2, float(np.sum(ref.astype(np.float64) ** 2))
    assert row.nmse_db == pytest.approx(10 * np.log10(err2 / ref2), abs=0.05)
    o, r = ours.astype(np.float64), ref.astype(np.float64)
    cos = float(np.sum(o * r) / np.linalg.norm(o) / np.linalg.norm(r))
    assert row.cosine == pytest.approx(cos, abs=1e-9)
    assert row.token_word == "token" and row.first_token == 1
    assert row.token_q[0] == pytest.approx(0.5 * 0.01 / 4, rel=1e-3)        # median of (0, 2.5e-3)
    assert row.token_q[2] == pytest.approx(0.01 / 4, rel=1e-3)


def test_measures_flag_differences_at_the_right_token():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((1, 20, 8)).astype(np.float32)
    ours = ref.copy()
    ours[0, 17:, 3] += 0.5
    row = compare_arrays("thinker.model.layers.3.self_attn", ours, ref)
    assert row.status == "DIFF" and row.first_token == 17
    ids = np.arange(6)[None]
    row = compare_arrays("talker.input_ids", ids + (np.arange(6) == 4), ids)
    assert row.status == "DIFF" and row.tol == 0.0


@pytest.mark.parametrize("ours_shape, ref_shape, says", [
    ((5, 8), (1, 5, 8), "lacks the leading batch axis of 1"),
    ((1, 5, 8), (5, 8), "leading axis of 1 that the reference lacks"),
    ((8, 5), (5, 8), "transposed"),
    ((40,), (5, 8), "reshape"),
])
def test_shape_mismatch_says_what_is_wrong(ours_shape, ref_shape, says):
    row = compare_arrays("x", np.zeros(ours_shape), np.zeros(ref_shape))
    assert row.status == "SHAPE" and says in row.note


def _tf(arrays, inputs=(), include=None, ordered=True):
    from omniref.trace import TraceFile
    return TraceFile("mem", dict(arrays), set(inputs), include, ordered)


def test_compare_walks_the_reference_order_skips_absent_inputs_and_names_the_module():
    x = np.ones((1, 4, 2), np.float32)
    ref = _tf({"thinker.input_ids": np.arange(4)[None], "thinker.model.layers.0": x,
               "thinker.model.layers.1.self_attn": x, "thinker.model.layers.1": x, "talker.model.layers.0": x},
              inputs=["thinker.input_ids"])
    bad = x.copy()
    bad[0, 2] = 3
    ours = _tf({"talker.model.layers.0": bad, "thinker.model.layers.1": bad, "thinker.model.layers.0": x,
                "thinker.model.layers.1.self_attn": bad, "extra.key": x})
    rows, extra = compare(ours, ref)
    assert [r.key for r in rows] == ["thinker.model.layers.0", "thinker.model.layers.1.self_attn",
                                     "thinker.model.layers.1", "talker.model.layers.0"]   # no input row
    assert extra == ["extra.key"]
    row, says = first_divergence(rows)
    assert row.key == "thinker.model.layers.1.self_attn"
    assert says == "inputs of `thinker.model.layers.1.self_attn` agree, its output differs (first at token 2)"
    # a documented step (no module of its own) names its parent
    ref2 = _tf({"thinker.model.layers.0.self_attn.q_rotary": np.ones((1, 2, 4, 3))})
    ours2 = _tf({"thinker.model.layers.0.self_attn.q_rotary": -np.ones((1, 2, 4, 3))})
    _, says = first_divergence(compare(ours2, ref2)[0])
    assert "q_rotary` is the first to differ" in says and "inside `thinker.model.layers.0.self_attn`" in says


def test_exit_codes_inputs_missing_and_include(tmp_path, capsys):
    x = np.ones((1, 3, 2), np.float32)
    save_trace(tmp_path / "ref.npz", {"thinker.input_ids": np.arange(3)[None], "thinker.model.layers.0": x,
                                      "thinker.model.layers.1": x}, inputs=["thinker.input_ids"])
    save_trace(tmp_path / "ours.npz", {"thinker.model.layers.0": x, "thinker.model.layers.1": x})
    assert main_compare([str(tmp_path / "ours.npz"), str(tmp_path / "ref.npz")]) == 0   # input absent: fine
    save_trace(tmp_path / "part.npz", {"thinker.model.layers.0": x})
    assert main_compare([str(tmp_path / "part.npz"), str(tmp_path / "ref.npz")]) == 1   # layers.1 MISSING
    assert "MISSING thinker.model.layers.1" in capsys.readouterr().out.replace("  ", " ")
    save_trace(tmp_path / "lim.npz", {"thinker.model.layers.0": x}, include=["thinker.model.layers.0*"])
    assert main_compare([str(tmp_path / "lim.npz"), str(tmp_path / "ref.npz")]) == 0    # not asked for
    save_trace(tmp_path / "diff.npz", {"thinker.model.layers.0": x * 2, "thinker.model.layers.1": x})
    assert main_compare([str(tmp_path / "diff.npz"), str(tmp_path / "ref.npz"), "--first"]) == 1
    out = capsys.readouterr().out
    assert "first divergence: thinker.model.layers.0: inputs of `thinker.model.layers.0` agree" in out
    assert "thinker.model.layers.1 " not in out.split("first divergence")[0].split("\n", 2)[2]   # stopped


def test_a_golden_case_is_a_reference_and_its_inputs_are_known():
    t = load_trace("tests/golden/tiny_f32")
    assert {"thinker.input_ids", "mel.waveform", "code2wav.codes", "code2wav.chunk_size"} <= t.inputs
    assert not {"thinker.hidden_states.1", "talker.thinker_embed", "mel.input_features"} & t.inputs
    assert not t.ordered


def test_tap_table_patterns_and_token_axes():
    names = [t.name for t in TAPS]
    assert len(names) == len(set(names))
    assert tap_for("thinker.model.layers.12.mlp.gate").shape == "[L, E]"
    assert tap_for("thinker.model.layers.12.mlp.gate@3").name == "thinker.model.layers.{i}.mlp.gate"
    assert tap_for("thinker.model.layers.x") is None
    assert tap_for("code2wav.decoder.3").token_axis == (2, "sample")
    assert tap_for("thinker.model.layers.0.self_attn.q_rotary").token_axis == (2, "token")


def test_docs_table_is_the_tap_table():
    """docs/taps.md holds the table generated from TAPS (regenerate: omniref.trace.tap_table_markdown())."""
    from pathlib import Path

    from omniref.trace import tap_table_markdown
    doc = (Path(__file__).resolve().parent.parent / "docs" / "taps.md").read_text()
    assert tap_table_markdown() in doc
    assert f"## The table ({len(TAPS)} names)" in doc


def test_golden_keys_are_localised_to_their_module():
    """Against a golden.npz (no taps), a FORMAT.md key still names the module whose output it is."""
    x = np.ones((1, 3, 2), np.float32)
    ref = _tf({f"thinker.hidden_states.{i}": x for i in range(4)}, ordered=False)
    for i, module in [(0, "thinker.model.inputs_embeds"), (2, "thinker.model.layers.1"), (3, "thinker.model.norm")]:
        ours = _tf({**ref.arrays, f"thinker.hidden_states.{i}": x * 2})
        row, says = first_divergence(compare(ours, ref)[0], ref.arrays)
        assert row.key == f"thinker.hidden_states.{i}" and f"`{module}`" in says


def test_inputs_that_differ_are_reported_as_such():
    ids = np.arange(5)[None]
    ref = _tf({"thinker.input_ids": ids, "thinker.model.layers.0": np.ones((1, 5, 2))}, inputs=["thinker.input_ids"])
    ours = _tf({"thinker.input_ids": ids + 1, "thinker.model.layers.0": np.ones((1, 5, 2))},
               inputs=["thinker.input_ids"])
    row, says = first_divergence(compare(ours, ref)[0])
    assert row.key == "thinker.input_ids" and says.startswith("the inputs differ")
