"""The verification harness itself: tolerances, PASS/FAIL/MISSING, exit codes (traces: test_trace.py)."""
from __future__ import annotations

import numpy as np
import pytest

from omniref import verify
from conftest import all_golden_cases


def test_tolerances_per_key():
    f = np.zeros(3, np.float32)
    assert verify.tolerance("thinker.generated_ids", np.zeros(3, np.int64)) == 0.0
    assert verify.tolerance("thinker.position_ids", f) == 0.0
    assert verify.tolerance("image.resized", np.zeros(3, np.uint8)) == 0.0
    assert verify.tolerance("image.pixel_values", f) == 1e-6
    assert verify.tolerance("thinker.logits", f) == 1e-4


def test_compare_arrays_relative_to_reference_magnitude():
    ref = np.array([10.0, -20.0], np.float32)
    problem, err, rel = verify.compare_arrays(ref + np.float32(0.002), ref)
    assert problem is None and err == pytest.approx(0.002, rel=1e-3) and rel == pytest.approx(1e-4, rel=1e-3)
    problem, *_ = verify.compare_arrays(np.zeros(3), ref)
    assert "shape" in problem


def _fake_case(tmp_path, arrays):
    d = tmp_path / "case"
    d.mkdir()
    np.savez(d / "golden.npz", **arrays)
    return d


def test_mel_stage_pass_and_fail(tmp_path):
    src = next((c for c in all_golden_cases() if c.name == "mel_basic" or
                (c / "golden.npz").is_file() and "mel.waveform" in np.load(c / "golden.npz").files), None)
    if src is None:
        pytest.skip("no mel case")
    g = dict(np.load(src / "golden.npz"))
    keep = {k: v for k, v in g.items() if k.startswith("mel.")}
    good = _fake_case(tmp_path, keep)
    assert verify.main([str(good)]) == 0
    # corrupt the expected features: the harness must notice
    bad_arrays = dict(keep)
    bad_arrays["mel.input_features"] = keep["mel.input_features"] + np.float32(0.01)
    bad = tmp_path / "bad"
    bad.mkdir()
    np.savez(bad / "golden.npz", **bad_arrays)
    assert verify.main([str(bad)]) == 1


def test_missing_stage_fails_unless_allowed(tmp_path, monkeypatch):
    stage = verify.Stage("fake", "omniref.does_not_exist:golden_stage", (("fake.in",),), ("fake.",), ("fake.in",))
    monkeypatch.setattr(verify, "STAGES", [stage])
    d = _fake_case(tmp_path, {"fake.in": np.zeros(2), "fake.out": np.ones(2)})
    rows = verify.run_case(d)
    assert [r.status for r in rows] == ["MISSING"]
    assert verify.main([str(d)]) == 1
    assert verify.main([str(d), "--allow-missing"]) == 0


def test_stage_error_is_a_failure(tmp_path, monkeypatch):
    import types
    import sys
    mod = types.ModuleType("omniref_fake_stage")
    mod.golden_stage = lambda case: 1 / 0
    monkeypatch.setitem(sys.modules, "omniref_fake_stage", mod)
    stage = verify.Stage("fake", "omniref_fake_stage:golden_stage", (("fake.in",),), ("fake.",), ("fake.in",))
    monkeypatch.setattr(verify, "STAGES", [stage])
    d = _fake_case(tmp_path, {"fake.in": np.zeros(2), "fake.out": np.ones(2)})
    rows = verify.run_case(d)
    assert rows[0].status == "ERROR" and "ZeroDivisionError" in rows[0].note
    assert verify.main([str(d), "--allow-missing"]) == 1
