"""The safetensors reader: agreement with the `safetensors` package, sharding, bf16, and every corruption."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from omniref.checkpoint import check_weights, expected_shapes
from omniref.config import load_config
from omniref.weights import (SafetensorsError, SafetensorsFile, bf16_to_f32, f32_to_bf16, load_weights,
                             save_safetensors)
from conftest import model_cases

rng = np.random.default_rng(0)


def _tensors():
    return {"a.weight": rng.standard_normal((5, 7)).astype(np.float32),
            "b.bias": rng.standard_normal(3).astype(np.float32),
            "c.ids": np.arange(6, dtype=np.int64).reshape(2, 3),
            "d.half": rng.standard_normal((4, 2)).astype(np.float16),
            "e.empty": np.zeros((0, 4), np.float32)}


def test_reader_matches_safetensors_package(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    t = _tensors()
    st.save_file(t, str(tmp_path / "x.safetensors"))
    f = SafetensorsFile(tmp_path / "x.safetensors")
    assert sorted(f.keys()) == sorted(t)
    for k, v in t.items():
        got = f[k]
        assert got.shape == v.shape
        np.testing.assert_array_equal(got, v.astype(np.float32) if v.dtype.kind == "f" else v)


def test_writer_is_read_by_safetensors_package(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    t = _tensors()
    save_safetensors(tmp_path / "y.safetensors", t)
    back = st.load_file(str(tmp_path / "y.safetensors"))
    for k, v in t.items():
        np.testing.assert_array_equal(back[k], v)


def test_bf16_widening_is_exact_and_rounding_is_nearest_even():
    x = np.array([1.0, -2.5, 3.1415927, 1e-30, 65504.0, np.inf, -np.inf], np.float32)
    bits = f32_to_bf16(x)
    back = bf16_to_f32(bits)
    # widening puts the 16 bits in the high half: exact
    assert np.all(back.view(np.uint32) & 0xFFFF == 0)
    # rounding error of bf16 (8 significant bits) is at most half an ulp: 2^-9 relative
    finite = np.isfinite(x)
    assert np.all(np.abs(back[finite] - x[finite]) <= np.abs(x[finite]) * 2.0 ** -8)
    assert np.array_equal(back[~finite], x[~finite])
    # 1 + 2^-8 is exactly half-way between two bf16 values: ties go to even (1.0)
    assert bf16_to_f32(f32_to_bf16(np.array([1 + 2 ** -8], np.float32)))[0] == 1.0
    assert bf16_to_f32(f32_to_bf16(np.array([1 + 3 * 2 ** -8], np.float32)))[0] == 1 + 2 ** -6
    assert np.isnan(bf16_to_f32(f32_to_bf16(np.array([np.nan], np.float32))))[0]


def test_bf16_file_agrees_with_safetensors_package(tmp_path):
    torch = pytest.importorskip("torch")   # the package reads bf16 only through torch; optional
    import safetensors.torch as stt
    x = torch.randn(4, 6).to(torch.bfloat16)
    stt.save_file({"w": x}, str(tmp_path / "b.safetensors"))
    np.testing.assert_array_equal(SafetensorsFile(tmp_path / "b.safetensors")["w"], x.float().numpy())


def test_bf16_roundtrip_through_our_writer(tmp_path):
    x = rng.standard_normal((3, 8)).astype(np.float32)
    save_safetensors(tmp_path / "b.safetensors", {"w": x}, dtype="BF16")
    f = SafetensorsFile(tmp_path / "b.safetensors")
    assert f.dtype("w") == "BF16" and f.raw("w").dtype == np.uint16
    np.testing.assert_array_equal(f["w"], bf16_to_f32(f32_to_bf16(x)))


def test_sharded_checkpoint_with_index(tmp_path):
    t = _tensors()
    names = sorted(t)
    shards = {"model-00001-of-00002.safetensors": names[:2], "model-00002-of-00002.safetensors": names[2:]}
    weight_map = {}
    for fname, keys in shards.items():
        save_safetensors(tmp_path / fname, {k: t[k] for k in keys})
        weight_map.update({k: fname for k in keys})
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    w = load_weights(tmp_path)
    assert sorted(w) == names and len(w) == len(names)
    np.testing.assert_array_equal(w["c.ids"], t["c.ids"])
    assert w.scope("a.")["weight"].shape == (5, 7)
    # an index that names a tensor its shard lacks
    weight_map["zz.missing"] = "model-00001-of-00002.safetensors"
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(SafetensorsError, match="zz.missing"):
        load_weights(tmp_path)


# ------------------------------------------------------------------------------------------------ corruption
def _good_file(tmp_path):
    p = tmp_path / "m.safetensors"
    save_safetensors(p, {"layer.weight": np.ones((4, 4), np.float32), "layer.bias": np.zeros(4, np.float32)})
    return p


def _rewrite_header(p, mutate):
    raw = p.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    mutate(header)
    text = json.dumps(header).encode()
    p.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n:])


def test_truncated_file(tmp_path):
    p = _good_file(tmp_path)
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(SafetensorsError, match=r"layer\.weight.*outside the data.*truncated"):
        SafetensorsFile(p)


def test_file_shorter_than_length_prefix(tmp_path):
    p = tmp_path / "tiny.safetensors"
    p.write_bytes(b"\x01\x02")
    with pytest.raises(SafetensorsError, match="truncated file"):
        SafetensorsFile(p)


def test_header_larger_than_file(tmp_path):
    p = _good_file(tmp_path)
    raw = p.read_bytes()
    p.write_bytes(struct.pack("<Q", 10 ** 6) + raw[8:])
    with pytest.raises(SafetensorsError, match="header length 1000000 is larger than the file"):
        SafetensorsFile(p)


def test_header_not_json(tmp_path):
    p = _good_file(tmp_path)
    raw = bytearray(p.read_bytes())
    raw[8] = ord("#")
    p.write_bytes(bytes(raw))
    with pytest.raises(SafetensorsError, match="not valid JSON"):
        SafetensorsFile(p)


def test_unknown_dtype(tmp_path):
    p = _good_file(tmp_path)
    _rewrite_header(p, lambda h: h["layer.bias"].update(dtype="F8_E9M9"))
    with pytest.raises(SafetensorsError, match=r"layer\.bias.*unknown dtype 'F8_E9M9'"):
        SafetensorsFile(p)


def test_offsets_disagree_with_shape(tmp_path):
    p = _good_file(tmp_path)
    _rewrite_header(p, lambda h: h["layer.bias"].update(shape=[5]))
    with pytest.raises(SafetensorsError, match=r"layer\.bias.*16 bytes for shape \[5\]"):
        SafetensorsFile(p)


def test_missing_file_named(tmp_path):
    with pytest.raises(SafetensorsError, match="nope: no such checkpoint"):
        load_weights(tmp_path / "nope")


# ------------------------------------------------------------------------------------ Hub layout vs config
@pytest.mark.parametrize("case", model_cases(), ids=lambda p: p.name)
def test_golden_checkpoints_match_the_layout(case):
    cfg = load_config(case)
    w = load_weights(case)
    present = check_weights(w, cfg)
    assert present, "no component found"
    exp = expected_shapes(cfg, present)
    assert set(exp) == set(w)
    for k in list(exp)[:50]:
        assert w[k].dtype == np.float32 and w[k].shape == exp[k]


def _copy_case_weights(case, tmp_path, mutate):
    """Rewrite a golden checkpoint through our writer with `mutate(dict)` applied."""
    w = load_weights(case)
    t = {k: w[k] for k in w}
    mutate(t)
    save_safetensors(tmp_path / "model.safetensors", t)
    return load_weights(tmp_path)


def _has_thinker(case):
    return "thinker.lm_head.weight" in load_weights(case)


@pytest.mark.parametrize("case", [c for c in model_cases() if _has_thinker(c)][:1], ids=lambda p: p.name)
def test_layout_errors_name_the_tensor(case, tmp_path):
    cfg = load_config(case)
    key = "thinker.model.layers.0.self_attn.k_proj.weight"

    def wrong_shape(t):
        t[key] = t[key][:, :-1].copy()
    with pytest.raises(SafetensorsError, match=r"self_attn\.k_proj\.weight' has shape .* config implies"):
        check_weights(_copy_case_weights(case, tmp_path, wrong_shape), cfg)

    def missing(t):
        del t[key]
    with pytest.raises(SafetensorsError, match=r"missing key 'thinker\.model\.layers\.0\.self_attn\.k_proj"):
        check_weights(_copy_case_weights(case, tmp_path, missing), cfg)

    def unexpected(t):
        t["thinker.model.layers.0.self_attn.extra.weight"] = np.zeros(3, np.float32)
    with pytest.raises(SafetensorsError, match=r"unexpected key 'thinker\.model\.layers\.0\.self_attn\.extra"):
        check_weights(_copy_case_weights(case, tmp_path, unexpected), cfg)


def test_widened_tensors_stay_within_the_cache_budget(tmp_path, monkeypatch):
    """The NumPy path widens bf16 per use: beyond OMNIREF_WIDEN_CACHE_MB the least recently used copy goes."""
    from omniref import backend
    from omniref.tiny import write_tiny_checkpoint
    path = write_tiny_checkpoint(tmp_path / "bf16", dtype="BF16")
    monkeypatch.setenv("OMNIREF_WIDEN_CACHE_MB", "0.05")              # 52 KB
    w = load_weights(path)
    big = "thinker.lm_head.weight"                                    # [256, 48] f32 = 48 KB: fits alone
    with backend.use("numpy"):
        first = w[big]
        assert w[big] is first and w._cache_bytes == first.nbytes
        keys = [k for k in w if k.startswith("thinker.model.layers.0.mlp.experts.")]
        for k in keys:
            a = w[k]
            assert a.dtype == np.float32 and np.array_equal(a, bf16_to_f32(w.raw(k)))
            assert w._cache_bytes <= w.cache_budget
        again = w[big]                                                # evicted meanwhile: widened afresh
        assert again is not first and np.array_equal(again, first) and not again.flags.writeable
    monkeypatch.setenv("OMNIREF_WIDEN_CACHE_MB", "0.01")
    small = load_weights(path)
    with backend.use("numpy"):
        assert small[big] is not small[big] and small._cache_bytes == 0   # larger than the budget: never kept
