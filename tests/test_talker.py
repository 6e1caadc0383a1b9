"""Talker, code predictor and the tiny checkpoint: goldens plus independent properties.

Golden checks run on every case (shared and the project's own) that holds the talker stage's inputs; the
other tests need no golden data: they use the seeded tiny checkpoint of `omniref.tiny`.
"""
from __future__ import annotations

import numpy as np
import pytest

from omniref.config import load_config
from omniref.decoder import KVCache
from omniref.golden import Case
from omniref.talker import CodePredictor, Talker, build_talker_inputs
from omniref.talker.inputs import ASSISTANT_PREFIX_ROWS, resize_mlp, talker_position_ids, tts_special_embeds
from omniref.stages import talker_stage as golden_stage
from omniref.talker.model import reference_sampling, suppressed_ids
from omniref.checkpoint import check_weights, expected_shapes
from omniref.tiny import TINY_TOKEN_IDS, tiny_config, tiny_weights, write_tiny_checkpoint
from omniref.weights import load_weights

EXACT = ("talker.input_ids", "talker.attention_mask", "talker.sequences", "talker.codes",
         "code_predictor.tokens", "talker.position_ids", "talker.step_position_ids")


def _talker_cases(golden_cases):
    cases = [Case(p) for p in golden_cases]
    return [c for c in cases if c.config is not None and "talker.thinker_embed" in c.golden]


def _rel(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12)) if b.size else 0.0


def test_golden_talker_stage(golden_cases):
    cases = _talker_cases(golden_cases)
    if not cases:
        pytest.skip("no golden case with talker inputs")
    for case in cases:
        out = golden_stage(case)
        expected = [k for k in case.golden if k.startswith(("talker.", "code_predictor."))
                    and k not in ("talker.thinker_embed", "talker.thinker_hidden")]
        assert sorted(out) == sorted(expected), case.name
        for k in expected:
            ours, ref = out[k], case.golden[k]
            assert ours.shape == ref.shape, (case.name, k, ours.shape, ref.shape)
            if k in EXACT or ref.dtype.kind in "iu":
                assert np.array_equal(ours, ref), (case.name, k)
            else:
                assert _rel(ours, ref) <= 1e-4, (case.name, k, _rel(ours, ref))


# ---------------------------------------------------------------------------------------------------------
# tiny checkpoint fixtures
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = write_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), seed=3)
    return load_config(path), load_weights(path)


def _fake_thinker(cfg, n_new=6, seed=0, with_image=True):
    """A prompt with audio + image + text and random (but fixed) thinker states of the right shapes."""
    t = TINY_TOKEN_IDS
    user = [t["audio_start"]] + [t["audio_pad"]] * 4 + [t["audio_end"]]
    if with_image:
        user += [t["vision_start"]] + [t["image_pad"]] * 6 + [t["vision_end"]]
    user += [40, 41, 42]
    ids = ([t["im_start"], t["system"], t["nl"], 30, t["im_end"], t["nl"], t["im_start"], t["user"], t["nl"]]
           + user + [t["im_end"], t["nl"], t["im_start"], t["assistant"], t["nl"]])
    rng = np.random.default_rng(seed)
    gen = np.concatenate([rng.integers(17, 256, n_new - 1), [t["im_end"]]]).astype(np.int64)
    Th = cfg.talker_config.thinker_hidden_size
    L = len(ids)
    emb = rng.standard_normal((L + n_new - 1, Th)).astype(np.float32)
    hid = rng.standard_normal((L + n_new - 1, Th)).astype(np.float32)
    grids = dict(image_grid_thw=np.array([[1, 4, 6]]), audio_feature_lengths=np.array([32])) if with_image \
        else dict(audio_feature_lengths=np.array([32]))
    return np.array(ids, np.int64), gen, emb, hid, grids


def test_tiny_checkpoint_is_deterministic_and_complete(tmp_path):
    cfg = tiny_config()
    a, b = tiny_weights(cfg, seed=5), tiny_weights(cfg, seed=5)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    c = tiny_weights(cfg, seed=6)
    assert not np.array_equal(a["talker.codec_head.weight"], c["talker.codec_head.weight"])
    path = write_tiny_checkpoint(tmp_path / "bf16", seed=5, dtype="BF16")
    w = load_weights(path)
    shapes = expected_shapes(load_config(cfg))                 # the checkpoint name table (470 keys)
    assert set(w) == set(shapes) and len(shapes) == 470
    assert check_weights(w, load_config(path)) == ["audio", "code2wav", "talker", "thinker", "vision"]
    assert w.dtype("talker.codec_head.weight") == "BF16"
    # bf16 storage rounds each weight to 8 significant bits
    assert _rel(w["talker.codec_head.weight"], a["talker.codec_head.weight"]) < 1e-2
    assert all(tuple(w.shape(k)) == tuple(s) for k, s in shapes.items())
    # the tts rows are read from the bf16 table without widening it whole, and equal the widened rows
    ocfg = load_config(path)
    ids = [ocfg.tts_bos_token_id, ocfg.tts_eos_token_id, ocfg.tts_pad_token_id]
    expect = resize_mlp(w.scope("talker.text_projection."), w["thinker.model.embed_tokens.weight"][ids])
    assert np.array_equal(tts_special_embeds(w, ocfg), expect)


def test_inputs_layout(tiny):
    cfg, w = tiny
    ids, gen, emb, hid, grids = _fake_thinker(cfg)
    ti = build_talker_inputs(w, cfg, ids, gen, emb, hid, speaker="chelsie", **grids)
    n_user = len(ids) - 6 - 3                       # system turn (6) and assistant header (3) dropped
    assert ti.input_ids.shape == (n_user + ASSISTANT_PREFIX_ROWS,)
    assert np.array_equal(ti.input_ids[:n_user], ids[6:6 + n_user])
    assert (ti.input_ids[n_user:] == cfg.tts_pad_token_id).all()
    assert ti.inputs_embeds.shape == (ti.input_ids.shape[0], 48)
    assert ti.trailing_text_hidden.shape == (len(gen) - 1, 48)
    # the last trailing row is tts_eos, and codec row 6 carries the chosen speaker (chelsie)
    assert np.allclose(ti.trailing_text_hidden[-1], ti.tts_special_embeds[1])
    E = w["talker.model.codec_embedding.weight"]
    spk = cfg.talker_config.speaker_id["chelsie"]
    assert np.allclose(ti.inputs_embeds[n_user + 6] - ti.tts_special_embeds[2], E[spk], atol=1e-5)
    # the image block's grid positions: 6 tokens = 1 x 2 x 3 merged patches
    pos = ti.position_ids
    vs = int(np.flatnonzero(ti.input_ids == TINY_TOKEN_IDS["vision_start"])[0])
    assert np.array_equal(pos[1, vs + 1:vs + 7], pos[1, vs] + 1 + np.array([0, 0, 0, 1, 1, 1]))
    assert np.array_equal(pos[2, vs + 1:vs + 7], pos[2, vs] + 1 + np.array([0, 1, 2, 0, 1, 2]))


def test_inputs_reject_bad_shapes(tiny):
    cfg, w = tiny
    ids, gen, emb, hid, grids = _fake_thinker(cfg)
    with pytest.raises(ValueError, match="L \\+ N - 1"):
        build_talker_inputs(w, cfg, ids, gen, emb[:-1], hid[:-1], **grids)
    with pytest.raises(ValueError, match="at least 2 generated"):
        build_talker_inputs(w, cfg, ids, gen[:1], emb[:len(ids)], hid[:len(ids)], **grids)
    with pytest.raises(ValueError, match="unknown speaker"):
        build_talker_inputs(w, cfg, ids, gen, emb, hid, speaker="nobody", **grids)
    no_assistant = ids.copy()
    no_assistant[-2] = 40
    with pytest.raises(ValueError, match="assistant"):
        build_talker_inputs(w, cfg, no_assistant, gen, emb, hid, **grids)


def test_text_only_positions_are_consecutive(tiny):
    cfg, _ = tiny
    ids = np.array([1, 4, 6, 40, 41, 2, 6, 14, 14], np.int64)
    assert np.array_equal(talker_position_ids(cfg, ids), np.tile(np.arange(9, dtype=np.float32), (3, 1)))


def test_generation_cache_equals_full_recompute(tiny):
    """Every decode step's hidden state equals a fresh forward over prefill + all step inputs so far."""
    cfg, w = tiny
    ids, gen, emb, hid, grids = _fake_thinker(cfg)
    talker = Talker(w, cfg)
    ti = talker.build_inputs(ids, gen, emb, hid, **grids)
    out = talker.generate(ti, max_new_tokens=6)
    n = out.step_inputs_embeds.shape[0]
    assert n >= 1
    x = np.concatenate([ti.inputs_embeds, out.step_inputs_embeds])                   # [Lt + n, Dt]
    pos = np.concatenate([ti.position_ids, out.step_position_ids], axis=1)           # [3, Lt + n]
    full = talker.forward(x, pos, KVCache())                                         # no cache reuse
    Lt = ti.inputs_embeds.shape[0]
    assert _rel(full[Lt - 1:], out.step_hidden[:n + 1]) < 1e-5
    assert _rel(talker.logits(full[Lt - 1:]), out.step_logits[:n + 1]) < 1e-5
    # decode positions continue from the prefill's largest position, +1 per step, equal in all rows
    assert np.array_equal(out.step_position_ids, np.tile(ti.position_ids.max() + 1 + np.arange(n), (3, 1)))


def test_loop_rules(tiny):
    cfg, w = tiny
    ids, gen, emb, hid, grids = _fake_thinker(cfg)
    talker = Talker(w, cfg)
    ti = talker.build_inputs(ids, gen, emb, hid, **grids)
    out = talker.generate(ti, max_new_tokens=5)
    tc = cfg.talker_config
    eos = tc.codec_eos_token_id
    T = out.codes.shape[1]
    assert T == len(out.sequences) - 1                 # the last token (eos or the budget's last) gets no frame
    assert len(out.sequences) == 5 or out.sequences[-1] == eos
    assert np.array_equal(out.codes[0], out.sequences[:T])
    C = tc.code_predictor_config.vocab_size
    assert out.codes.shape[0] == tc.num_code_groups and (out.codes >= 0).all() and (out.codes < C).all()
    assert np.array_equal(out.cp_tokens, out.codes[1:].T)
    # the step scores reproduce the choice: penalty, suppression of the special range, argmax
    supp = suppressed_ids(tc.text_config.vocab_size, eos)
    assert eos not in supp and len(supp) == 1023
    for s, tok in enumerate(out.sequences):
        z = out.step_logits[s].copy()
        prev = np.unique(out.sequences[:s])
        z[prev] = np.where(z[prev] > 0, z[prev] / np.float32(1.05), z[prev] * np.float32(1.05))
        z[supp] = -np.inf
        assert tok == int(np.argmax(z))
    # code predictor logits reproduce its greedy tokens
    assert np.array_equal(out.cp_logits.argmax(-1), out.cp_tokens)


def test_sampling_is_seeded(tiny):
    cfg, w = tiny
    ids, gen, emb, hid, grids = _fake_thinker(cfg)
    talker = Talker(w, cfg)
    ti = talker.build_inputs(ids, gen, emb, hid, **grids)
    s = reference_sampling
    a = talker.generate(ti, max_new_tokens=6, sampling=s(1))
    b = talker.generate(ti, max_new_tokens=6, sampling=s(1))
    c = talker.generate(ti, max_new_tokens=6, sampling=s(2))
    assert np.array_equal(a.codes, b.codes) and np.array_equal(a.sequences, b.sequences)
    assert not np.array_equal(a.codes, c.codes)


def test_code_predictor_frame_equals_full_recompute(tiny):
    cfg, w = tiny
    cp = CodePredictor(w.scope("talker.code_predictor."), cfg.talker_config.code_predictor_config)
    rng = np.random.default_rng(0)
    h, e0 = rng.standard_normal((2, 48)).astype(np.float32)
    f = cp.predict_frame(h, e0)
    rows = [h, e0] + [cp.embeddings[j][f.tokens[j]] for j in range(cp.G - 2)]        # [G, Dt]
    full = cp.decoder.forward(np.stack(rows), cp.cos, cp.sin, KVCache())              # [G, Dt]
    logits = np.stack([full[j + 1] @ cp.heads[j].T for j in range(cp.G - 1)])         # [G-1, C]
    assert _rel(logits, f.logits) < 1e-5


def test_code_predictor_rejects_missing_heads(tiny):
    cfg, w = tiny
    cp_cfg = load_config({**tiny_config(), "talker_config": {
        **tiny_config()["talker_config"],
        "code_predictor_config": {**tiny_config()["talker_config"]["code_predictor_config"], "num_code_groups": 20}},
    }).talker_config.code_predictor_config
    with pytest.raises(ValueError, match="num_code_groups=20"):
        CodePredictor(w.scope("talker.code_predictor."), cp_cfg)


def test_talker_rejects_bad_inputs(tiny):
    cfg, w = tiny
    talker = Talker(w, cfg)
    ids, gen, emb, hid, grids = _fake_thinker(cfg)
    ti = talker.build_inputs(ids, gen, emb, hid, **grids)
    with pytest.raises(ValueError, match="max_new_tokens"):
        talker.generate(ti, max_new_tokens=0)
    ti.position_ids = ti.position_ids[:, :-1]
    with pytest.raises(ValueError, match="position_ids"):
        talker.generate(ti, max_new_tokens=2)
