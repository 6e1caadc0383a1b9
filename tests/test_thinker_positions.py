"""Rope index (FORMAT.md 6.3), the prompt builder (5.4) and the sampling processors."""
import numpy as np
import pytest

from omniref.audio.encoder import audio_output_length
from omniref.golden import Case
from omniref.thinker.positions import RopeIds, decode_positions, rope_ids_from_config, rope_index
from omniref.thinker.prompt import Audio, Image, PromptIds, Video, chat_prompt, media_tokens
from omniref.stages import processor_stage as golden_processor_stage
from omniref.thinker.sampling import (SamplingConfig, apply_repetition_penalty, next_token, top_k_filter,
                                      top_p_filter)

IDS = RopeIds(image_token_id=12, video_token_id=13, audio_token_id=9, vision_start_token_id=10,
              audio_start_token_id=7, position_id_per_seconds=13, spatial_merge_size=2)
P = PromptIds(im_start=1, im_end=2, system=3, user=4, assistant=5, nl=6, audio_start=7, audio_end=8, audio=9,
              vision_start=10, vision_end=11, image=12, video=13, merge_size=2)


def test_text_only_is_plain_positions():
    pos, delta = rope_index(np.arange(20, 27), IDS)
    assert pos.dtype == np.float32 and np.array_equal(pos, np.tile(np.arange(7, dtype=np.float32), (3, 1)))
    assert delta == 0


def test_image_grid_positions_match_docstring_example():
    ids = [1, 4, 6] + media_tokens(Image((1, 4, 4)), P) + [40]          # 2x2 merged tokens
    pos, delta = rope_index(ids, IDS, image_grid_thw=[[1, 4, 4]])
    assert pos[0].tolist() == [0, 1, 2, 3, 4, 4, 4, 4, 6, 7]
    assert pos[1].tolist() == [0, 1, 2, 3, 4, 4, 5, 5, 6, 7]
    assert pos[2].tolist() == [0, 1, 2, 3, 4, 5, 4, 5, 6, 7]
    assert delta == 7 + 1 - 10


def test_video_temporal_positions_are_fractional_float32():
    spg = np.float32(2 / 3)                                               # fps 3 -> 0.666.. s per grid
    ids = [1] + media_tokens(Video((3, 2, 2), spg), P) + [40, 41]
    pos, delta = rope_index(ids, IDS, video_grid_thw=[[3, 2, 2]], second_per_grid=[spg])
    t = pos[0, 2:5]
    expected = np.float32(2) + np.arange(3, dtype=np.float32) * spg * np.float32(13)
    assert np.array_equal(t, expected) and t[1] % 1 != 0
    assert pos[:, -1].tolist() == [pos[0, -2] + 1] * 3                    # text continues after the block
    assert delta == np.float32(pos.max() + 1 - len(ids))
    dp = decode_positions(len(ids), delta, 3)
    assert np.array_equal(dp[0], pos.max() + np.float32([1, 2, 3])) and np.array_equal(dp[0], dp[2])


def test_audio_blocks_are_consecutive_and_lengths_follow_the_encoder():
    for frames in (1, 99, 100, 101, 300, 1234):
        block = media_tokens(Audio(frames), P)
        assert block.count(P.audio) == audio_output_length(frames)
    ids = [1] + media_tokens(Audio(230), P) + media_tokens(Image((1, 2, 2)), P) + [40]
    pos, _ = rope_index(ids, IDS, image_grid_thw=[[1, 2, 2]], audio_frames=[230])
    n = audio_output_length(230) + 2
    assert np.array_equal(pos[:, :1 + n], np.tile(np.arange(1 + n, dtype=np.float32), (3, 1)))


def test_audio_in_video_block_interleaves_consistently_with_the_prompt_builder():
    grid, spg, frames = (4, 4, 4), 2.0 / 3, 260                          # 4 tokens per temporal grid
    ids = [1, 4, 6] + media_tokens(Video(grid, spg, audio_frames=frames), P) + [40, 2]
    toks = np.asarray(ids)
    assert toks[3:5].tolist() == [P.vision_start, P.audio_start] and toks[-4:-2].tolist() == [P.audio_end, 11]
    assert (toks == P.video).sum() == 16 and (toks == P.audio).sum() == audio_output_length(frames)
    pos, _ = rope_index(ids, IDS, video_grid_thw=[grid], second_per_grid=[spg], audio_frames=[frames],
                        use_audio_in_video=True)
    inner = slice(5, len(ids) - 4)
    assert np.all(np.diff(pos[0, inner]) >= 0)                            # merged by time
    is_video = toks[inner] == P.video
    a = pos[:, inner][:, ~is_video]
    assert np.array_equal(a[0], a[1]) and np.array_equal(a[0], 5 + np.arange(a.shape[1], dtype=np.float32))
    v = pos[:, inner][:, is_video]
    assert v[1].tolist() == [5, 5, 6, 6] * 4 and v[2].tolist() == [5, 6, 5, 6] * 4
    # the talker reads the same ids with use_audio_in_video off: without images this is text + audio,
    # i.e. plain consecutive positions (FORMAT.md 6.6 step 5)
    talker_pos, _ = rope_index(ids, IDS, video_grid_thw=[grid], second_per_grid=[spg], audio_frames=[frames])
    assert np.array_equal(talker_pos, np.tile(np.arange(len(ids), dtype=np.float32), (3, 1)))


def test_mismatched_grid_raises():
    ids = [1] + media_tokens(Image((1, 4, 4)), P) + [40]
    with pytest.raises(ValueError, match="positions for"):
        rope_index(ids, IDS, image_grid_thw=[[1, 4, 8]])


def test_golden_positions_and_prompt_layout(shared_golden):
    case = Case(shared_golden / "tiny_omni")
    g, cfg = case.golden, case.config
    frames = g["mel.attention_mask"].sum(1)
    pos, delta = rope_index(g["thinker.input_ids"][0], rope_ids_from_config(cfg.thinker_config),
                            image_grid_thw=g["image.grid_thw"], audio_frames=frames)
    assert np.array_equal(pos, g["thinker.position_ids"][:, 0]) and delta == g["thinker.rope_deltas"][0, 0]
    tpos, _ = rope_index(g["talker.input_ids"][0], rope_ids_from_config(cfg.talker_config),
                         image_grid_thw=g["image.grid_thw"], audio_frames=frames)
    assert np.array_equal(tpos, g["talker.position_ids"][:, 0])
    # rebuild the prompt from its text ids and media: the processor's expansion exactly
    ids = PromptIds.from_config(cfg, nl=case.meta["token_ids"]["nl"])
    inp = g["thinker.input_ids"][0].tolist()
    sys_text = inp[3:inp.index(ids.im_end)]
    user_text = inp[inp.index(ids.vision_end) + 1:len(inp) - 5]
    built = chat_prompt(ids, [Audio(int(frames[0])), Image(g["image.grid_thw"][0]), user_text], system=sys_text)
    assert built.tolist() == inp


def test_processor_stage_image_basic(shared_golden):
    case = Case(shared_golden / "image_basic")
    out = golden_processor_stage(case)
    assert np.array_equal(out["processor.input_ids"], case.golden["processor.input_ids"])


def test_chat_prompt_text_needs_a_tokenizer():
    with pytest.raises(ValueError, match="no tokenizer"):
        chat_prompt(P, "hello")
    assert chat_prompt(P, "hi", encode=lambda s: [50 + len(s)]).tolist() == [1, 4, 6, 52, 2, 6, 1, 5, 6]
    with pytest.raises(ValueError, match="merge size"):
        media_tokens(Image((1, 3, 4)), P)


# ---- sampling --------------------------------------------------------------------------------------------
def test_repetition_penalty_divides_positive_and_multiplies_negative():
    x = np.array([2.0, -2.0, 1.0, 0.5], np.float32)
    y = apply_repetition_penalty(x, [0, 1, 1], 2.0)
    assert y.tolist() == [1.0, -4.0, 1.0, 0.5] and x[0] == 2.0


def test_top_k_and_top_p_filters():
    x = np.log(np.array([0.5, 0.2, 0.15, 0.1, 0.05], np.float32))
    assert np.isfinite(top_k_filter(x, 2)).tolist() == [True, True, False, False, False]
    assert np.isfinite(top_p_filter(x, 0.6)).tolist() == [True, True, False, False, False]
    assert np.isfinite(top_p_filter(x, 0.5)).tolist() == [True, False, False, False, False]
    assert np.isfinite(top_p_filter(x, 0.86)).tolist() == [True, True, True, True, False]


def test_greedy_and_seeded_sampling():
    logits = np.array([0.1, 3.0, 2.9, -1.0], np.float32)
    assert next_token(logits, SamplingConfig()) == 1
    assert next_token(logits, SamplingConfig(repetition_penalty=1.2), previous=[1]) == 2
    assert next_token(logits, SamplingConfig(), suppress=[1]) == 2
    cfg = SamplingConfig(do_sample=True, temperature=1.0, seed=0)
    rng = cfg.generator()
    draws = np.array([next_token(logits, cfg, rng=rng) for _ in range(4000)])
    p = np.exp(logits - logits.max()); p /= p.sum()
    freq = np.bincount(draws, minlength=4) / len(draws)
    assert np.abs(freq - p).max() < 0.03                                  # draws follow softmax(logits)
    rng2 = cfg.generator()
    assert [next_token(logits, cfg, rng=rng2) for _ in range(50)] == draws[:50].tolist()
    topk1 = SamplingConfig(do_sample=True, top_k=1, seed=1)
    assert all(next_token(logits, topk1, rng=topk1.generator()) == 1 for _ in range(20))
    for bad in (dict(temperature=-1), dict(top_p=0), dict(top_k=-2), dict(repetition_penalty=0)):
        with pytest.raises(ValueError):
            SamplingConfig(**bad)
    with pytest.raises(ValueError, match="NaN"):
        next_token(np.array([np.nan, 1.0]), SamplingConfig())
