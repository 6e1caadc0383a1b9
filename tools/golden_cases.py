"""The committed golden cases of omniref (tests/golden/<name>): what each one holds and why.

Each entry is a spec for tools/make_golden.py: `kind` (mel, code2wav, full), the first seed to try, a
description that goes to meta.json, media sizes, generation settings and every model dimension
(golden_model.build_config turns them into a Qwen3OmniMoeConfig). Sizes are chosen so each case differs from the
shared ones (other ids, GQA ratios, MRoPE sections, patch size, DeepStack indexes, windows, quantizers, storage).
"""
CASES = {
    "mel_multi": dict(
        kind="mel", seed=301,
        description="Log-mel features only (no model): three synthetic clips of different lengths in one "
                    "extractor call -- 0.73 s (shorter than 1 s), 1.907 s (30517 samples, not a multiple of "
                    "the 160-sample hop, ends in 0.1 s of digital silence) and 1.25 s (exactly 125 hops). The "
                    "shorter clips are zero-padded to the longest, which changes their last frames.",
        clips=[(11680, 0), (30517, 1600), (20000, 0)]),
    "code2wav_q8": dict(
        kind="code2wav", seed=401,
        description="Code2Wav only: num_quantizers 8, codebook 40, GQA pre-transformer (4 heads, 2 kv heads) "
                    "with sliding window 5 over 14 random code frames, upsampling_ratios (3, 2), "
                    "upsample_rates (5, 4, 3); full and chunked decoding (chunk 5, left context 3 -> 3 "
                    "chunks).",
        n_frames=14, chunk_size=5, left_context_size=3,
        code2wav=dict(codebook_size=40, hidden=32, heads=4, kv_heads=2, layers=2, intermediate=64,
                      rope_theta=10000.0, sliding_window=5, num_quantizers=8, upsample_rates=[5, 4, 3],
                      upsampling_ratios=[3, 2], decoder_dim=48)),
    "tiny_f32": dict(
        kind="full", seed=501, dtype="float32", shard=None,
        description="Tiny full model, float32: GQA 4:1 thinker (4 heads, 1 kv head), mrope_section [4, 2, 2], "
                    "patch_size 14 (resize factor 28), deepstack_visual_indexes [0, 2] of 3 vision blocks, "
                    "n_window_infer 400 (attention windows of 52 audio tokens), accept_hidden_layer 3 (= the "
                    "final-norm output), shuffled special ids at the top of a 200-token vocab, code2wav "
                    "sliding window 6. Prompt: system turn + user turn with one 4.18 s audio clip (418 mel "
                    "frames -> 55 tokens in 2 windows), one 61x117 image (resized to 56x112) and text, then "
                    "the assistant header. Greedy thinker, talker, code predictor, code2wav.",
        media=dict(audio=[(66950, 0)], image=(61, 117), video=None, audio_in_video=False),
        gen=dict(thinker_max_new_tokens=7, talker_max_new_tokens=12, speaker="Chelsie",
                 repetition_penalty=1.05, left_context_size=2), min_frames=6,
        ids=dict(vocab=200, first_special=180),
        audio=dict(d_model=32, layers=2, heads=4, ffn=48, ds=8, n_window_infer=400),
        vision=dict(depth=3, hidden=16, heads=2, intermediate=32, patch=14, num_position_embeddings=36,
                    deepstack=[0, 2]),
        text=dict(vocab=200, hidden=32, layers=3, heads=4, kv_heads=1, head_dim=16, rope_theta=1e6,
                  mrope_section=[4, 2, 2], experts=6, top_k=2, moe_intermediate=16, norm_topk_prob=True),
        talker=dict(hidden=24, intermediate=40, layers=2, heads=2, kv_heads=1, head_dim=16, rope_theta=1e6,
                    mrope_section=[3, 3, 2], experts=4, top_k=2, moe_intermediate=12, norm_topk_prob=False,
                    shared_intermediate=20, accept_hidden_layer=3),
        code_predictor=dict(intermediate=32, layers=2, heads=4, kv_heads=2, head_dim=8, rope_theta=10000.0),
        code2wav=dict(codebook_size=24, hidden=24, heads=4, kv_heads=2, layers=2, intermediate=48,
                      rope_theta=10000.0, sliding_window=6, num_quantizers=16, upsample_rates=[8, 5, 4, 3],
                      upsampling_ratios=[2, 2], decoder_dim=32)),
    "tiny_bf16_sharded": dict(
        kind="full", seed=601, dtype="bfloat16", shard="300KB",
        description="Tiny full model stored as a bfloat16 checkpoint sharded in several files with an index "
                    "(goldens computed in float32 from the widened bf16 weights). Thinker norm_topk_prob false, "
                    "talker norm_topk_prob true, accept_hidden_layer 1, GQA 2:1, patch 16, one DeepStack "
                    "index [1], 12 quantizers with codebook 40. Prompt: system turn + user turn with a 0.8 s "
                    "audio clip, a 3-frame 256x512 video at fps 3 (odd frame count -> last frame repeated, "
                    "grid t = 2, second_per_grid 2/3 -> fractional temporal positions) carrying its own 1.0 s "
                    "audio track (exactly 100 frames -> 13 tokens) interleaved with it (use_audio_in_video), a "
                    "second 1.232 s audio clip and text, then the assistant header. The interleaved block ends "
                    "with a run of audio tokens whose positions are lower than the widest video token's, so the "
                    "positions after it follow the reference's rule (1 + max of that trailing run, not 1 + the "
                    "largest position so far). The talker stops at codec_eos (tiny_f32 stops at max_new_tokens). "
                    "thinker.logits omitted (only thinker.logits_last).",
        media=dict(audio=[(12800, 0), (19712, 0)], image=None, video=(3, 256, 512, 3.0),
                   video_audio=(16000, 0), audio_in_video=True),
        omit_keys=["thinker.logits"],
        gen=dict(thinker_max_new_tokens=6, talker_max_new_tokens=14, speaker="Aiden",
                 repetition_penalty=1.05, left_context_size=1), min_frames=5, require_eos=True, codec_eos_scale=2.0,
        ids=dict(vocab=160, first_special=7),
        audio=dict(d_model=24, layers=2, heads=3, ffn=32, ds=8, n_window_infer=800),
        vision=dict(depth=2, hidden=16, heads=2, intermediate=32, patch=16, num_position_embeddings=49,
                    deepstack=[1]),
        text=dict(vocab=160, hidden=32, layers=3, heads=4, kv_heads=2, head_dim=8, rope_theta=1e6,
                  mrope_section=[2, 1, 1], experts=5, top_k=2, moe_intermediate=16, norm_topk_prob=False),
        talker=dict(hidden=24, intermediate=40, layers=2, heads=2, kv_heads=2, head_dim=12, rope_theta=1e6,
                    mrope_section=[2, 2, 2], experts=4, top_k=2, moe_intermediate=12, norm_topk_prob=True,
                    shared_intermediate=20, accept_hidden_layer=1),
        code_predictor=dict(intermediate=32, layers=1, heads=2, kv_heads=1, head_dim=12, rope_theta=1e6),
        code2wav=dict(codebook_size=40, hidden=24, heads=3, kv_heads=1, layers=2, intermediate=40,
                      rope_theta=10000.0, sliding_window=72, num_quantizers=12, upsample_rates=[8, 5, 4, 3],
                      upsampling_ratios=[2, 2], decoder_dim=32)),
}


def tiny_shell_spec(c2w: dict) -> dict:
    """A minimal thinker/talker around a code2wav config, so config.json is a complete Qwen3OmniMoeConfig
    (its weights are not stored in a code2wav-only case)."""
    from golden_model import special_token_ids

    ids = special_token_ids(64, 40, 0)
    return dict(ids=ids, position_id_per_seconds=13,
                audio=dict(d_model=16, layers=1, heads=2, ffn=16, ds=4, n_window_infer=800),
                vision=dict(depth=1, hidden=16, heads=2, intermediate=16, patch=16, num_position_embeddings=16,
                            deepstack=[0]),
                text=dict(vocab=64, hidden=16, layers=1, heads=2, kv_heads=1, head_dim=8, rope_theta=1e6,
                          mrope_section=[2, 1, 1], experts=2, top_k=1, moe_intermediate=8, norm_topk_prob=True),
                talker=dict(hidden=16, intermediate=16, layers=1, heads=2, kv_heads=1, head_dim=8,
                            rope_theta=1e6, mrope_section=[2, 1, 1], experts=2, top_k=1, moe_intermediate=8,
                            norm_topk_prob=False, shared_intermediate=8, accept_hidden_layer=1),
                code_predictor=dict(intermediate=16, layers=1, heads=2, kv_heads=1, head_dim=8,
                                    rope_theta=1e6),
                code2wav=c2w)
