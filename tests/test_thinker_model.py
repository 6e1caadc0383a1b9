"""Thinker decoder: goldens, KV-cached decoding == full recompute, fusion errors, DeepStack, sampling loop."""
import numpy as np
import pytest

from omniref.config import load_config
from omniref.golden import Case
from omniref.stages import thinker_stage as golden_stage
from omniref.thinker.model import Media, Thinker, ThinkerPrompt
from omniref.thinker.positions import decode_positions
from omniref.thinker.prompt import Audio, Image, PromptIds, Video, chat_prompt
from omniref.thinker.sampling import SamplingConfig
from omniref.tiny import TINY_TOKEN_IDS, write_tiny_checkpoint
from omniref.weights import load_weights

from conftest import model_cases


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = write_tiny_checkpoint(tmp_path_factory.mktemp("tiny_thinker"), seed=3)
    cfg, w = load_config(path), load_weights(path)
    return cfg, w, Thinker(w, cfg)


def _mixed_prompt(cfg, rng, image_grid=(1, 4, 6), video_grid=(2, 4, 4), audio_frames=250, video_audio=None):
    """A system + user prompt with an audio clip, an image and a video, and matching random features."""
    ids = PromptIds.from_config(cfg, nl=TINY_TOKEN_IDS["nl"])
    video = Video(video_grid, second_per_grid=0.5, audio_frames=video_audio)
    user = [Audio(audio_frames), Image(image_grid), video, [40, 41, 42]]
    input_ids = chat_prompt(ids, user, system=[20, 21])
    H = cfg.thinker_config.text_config.hidden_size
    K = len(cfg.thinker_config.vision_config.deepstack_visual_indexes)
    n = lambda tok: int((input_ids == tok).sum())
    media = Media(audio=rng.standard_normal((n(ids.audio), H)).astype(np.float32),
                  image=rng.standard_normal((n(ids.image), H)).astype(np.float32),
                  video=rng.standard_normal((n(ids.video), H)).astype(np.float32))
    media.image_deepstack = [rng.standard_normal(media.image.shape).astype(np.float32) for _ in range(K)]
    media.video_deepstack = [rng.standard_normal(media.video.shape).astype(np.float32) for _ in range(K)]
    frames = [audio_frames] + ([video_audio] if video_audio else [])
    prompt = ThinkerPrompt(input_ids=input_ids, feature_attention_mask=np.array(
        [[1] * f + [0] * (max(frames) - f) for f in frames]), image_grid_thw=np.array([image_grid]),
        video_grid_thw=np.array([video_grid]), video_second_per_grid=np.array([0.5], np.float32),
        use_audio_in_video=video_audio is not None)
    return prompt, media


@pytest.mark.parametrize("video_audio", [None, 120])
def test_kv_cache_decoding_equals_full_recompute(tiny, video_audio):
    cfg, w, thinker = tiny
    prompt, media = _mixed_prompt(cfg, np.random.default_rng(0), video_audio=video_audio)
    accept = 2
    res = thinker.generate(prompt, 6, eos_token_id=-1, media=media, record_layer=accept)
    assert res.generated_ids.shape == (6,)
    L = prompt.input_ids.shape[0]
    # one forward over prompt + generated tokens 0..n-2, no cache
    x, visual, deepstack = thinker.fuse(prompt.input_ids, media)
    x = np.concatenate([x, thinker.embed(res.generated_ids[:-1])])
    visual = np.concatenate([visual, np.zeros(5, bool)])
    pos = np.concatenate([res.position_ids, decode_positions(L, res.rope_delta, 5)], axis=1)
    hs = []
    h = thinker.forward(x, pos, None, visual, deepstack, hidden_states=hs)
    full_logits = thinker.lm_head(h[L - 1:])                                   # [6, V]
    scale = np.abs(full_logits).max()
    assert np.abs(full_logits - res.step_logits).max() <= 1e-5 * scale
    assert np.array_equal(full_logits.argmax(-1), res.generated_ids)
    assert np.abs(hs[accept] - res.recorded).max() <= 1e-5 * np.abs(hs[accept]).max()
    assert np.array_equal(hs[0], res.embeds)


def test_placeholder_feature_mismatch_names_both_counts(tiny):
    cfg, w, thinker = tiny
    prompt, media = _mixed_prompt(cfg, np.random.default_rng(1))
    n_img = media.image.shape[0]
    media.image = media.image[:-1]
    with pytest.raises(ValueError, match=rf"{n_img} image tokens.*{n_img - 1} image feature rows"):
        thinker.fuse(prompt.input_ids, media)
    prompt2, media2 = _mixed_prompt(cfg, np.random.default_rng(1))
    media2.audio = None
    with pytest.raises(ValueError, match=r"audio tokens .* produced 0 audio"):
        thinker.fuse(prompt2.input_ids, media2)
    with pytest.raises(ValueError, match="token ids must lie in"):
        thinker.embed([0, cfg.thinker_config.text_config.vocab_size])


def test_deepstack_enters_after_the_layer_and_only_at_visual_rows(tiny):
    cfg, w, thinker = tiny
    prompt, media = _mixed_prompt(cfg, np.random.default_rng(2))
    x, visual, ds = thinker.fuse(prompt.input_ids, media)
    pos, _ = thinker.positions(prompt)
    hs_with, hs_without = [], []
    thinker.forward(x, pos, None, visual, ds, hidden_states=hs_with)
    thinker.forward(x, pos, None, visual, [], hidden_states=hs_without)
    first_visual = int(np.argmax(visual))
    # recorded states are taken before the addition: layer 0's output is identical with or without DeepStack
    assert np.array_equal(hs_with[1], hs_without[1])
    # after layer 1 the visual rows (and everything causally after them) differ; rows before do not
    assert np.array_equal(hs_with[2][:first_visual], hs_without[2][:first_visual])
    assert np.abs(hs_with[2][visual] - hs_without[2][visual]).max() > 1e-3
    # the image rows take the image features in order, the video rows the video ones
    img_rows = (prompt.input_ids == cfg.thinker_config.image_token_id)[visual]
    assert np.array_equal(ds[0][img_rows], media.image_deepstack[0])
    assert np.array_equal(ds[1][~img_rows], media.video_deepstack[1])


def test_generate_stops_at_eos_and_sampling_is_seeded(tiny):
    cfg, w, thinker = tiny
    prompt, media = _mixed_prompt(cfg, np.random.default_rng(3))
    greedy = thinker.generate(prompt, 5, eos_token_id=-1, media=media)
    first = int(greedy.generated_ids[0])
    stopped = thinker.generate(prompt, 5, eos_token_id=first, media=media)
    assert stopped.generated_ids.tolist() == [first]                # eos is emitted, then decoding stops
    assert stopped.embeds.shape[0] == prompt.input_ids.shape[0]     # the eos token is never fed back
    s = SamplingConfig(do_sample=True, temperature=1.5, top_k=20, top_p=0.95, seed=7)
    a = thinker.generate(prompt, 5, s, eos_token_id=-1, media=media).generated_ids
    b = thinker.generate(prompt, 5, s, eos_token_id=-1, media=media).generated_ids
    assert np.array_equal(a, b)
    with pytest.raises(ValueError):
        thinker.generate(prompt, 0, media=media)


def test_full_logits_only_when_asked(tiny):
    cfg, w, thinker = tiny
    prompt, media = _mixed_prompt(cfg, np.random.default_rng(4))
    res = thinker.generate(prompt, 1, media=media)
    assert res.logits is None and res.logits_last.shape == (cfg.thinker_config.text_config.vocab_size,)
    full = thinker.generate(prompt, 1, media=media, full_logits=True)
    assert np.array_equal(full.logits[-1], full.logits_last)
    assert np.abs(full.logits_last - res.logits_last).max() < 1e-5


@pytest.mark.parametrize("case_dir", [c for c in model_cases()], ids=lambda p: p.name)
def test_golden_thinker_stage(case_dir):
    case = Case(case_dir)
    if "thinker.input_ids" not in case.golden:
        pytest.skip("no thinker keys")
    out = golden_stage(case)
    g = case.golden
    assert out, "stage produced nothing"
    for k, v in out.items():
        ref = g[k]
        assert v.shape == ref.shape, k
        if ref.dtype.kind in "iu" or k.endswith(("position_ids", "rope_deltas")):
            assert np.array_equal(v, ref), k
        else:
            rel = np.abs(v - ref).max() / max(np.abs(ref).max(), 1e-12)
            assert rel <= 1e-4, (k, rel)
    assert "thinker.generated_ids" in out and "thinker.logits_last" in out


def test_golden_stage_without_full_logits_key(shared_golden):
    """A large-vocabulary case has only logits_last: the stage must not return (or need) [L, V] logits."""
    case = Case(shared_golden / "tiny_omni")
    case.golden = {k: v for k, v in case.golden.items() if k != "thinker.logits"}
    out = golden_stage(case)
    assert "thinker.logits" not in out and "thinker.logits_last" in out
    ref = Case(shared_golden / "tiny_omni").golden["thinker.logits_last"]
    assert np.abs(out["thinker.logits_last"] - ref).max() <= 1e-4 * np.abs(ref).max()
