"""Audio encoder: length rule, conv stem, windowed attention, goldens, and inputs of any length.

Independent references: the reference's length formula written out, scipy's 2-D correlation for the conv,
the goldens for the whole tower, and invariances (window isolation, clip isolation) for lengths the goldens
do not cover.
"""

import numpy as np
import pytest
import scipy.signal

from omniref import backend, nn, stages
from omniref.audio import encoder, mel
from omniref.golden import Case


def _rel(ours, ref):
    return np.abs(np.asarray(ours, np.float64) - ref).max() / max(np.abs(ref).max(), 1e-12)


def _reference_length(n):
    """The reference's `_get_feat_extract_output_lengths`, written out with its hard-coded 100 and 13."""
    leave = n % 100
    feat = (leave - 1) // 2 + 1
    return ((feat - 1) // 2 + 1 - 1) // 2 + 1 + (n // 100) * 13


def _audio_cases(golden_cases):
    cases = [Case(d) for d in golden_cases]
    return [c for c in cases if "audio.input_features" in c.golden and c.weights is not None]


@pytest.fixture
def tiny(request):
    """Weights and audio config of the first golden model case (any case with an audio tower)."""
    dirs = request.getfixturevalue("golden_cases")
    for d in dirs:
        case = Case(d)
        if case.config is not None and "thinker.audio_tower.conv2d1.weight" in case.weights:
            return case.weights.scope("thinker.audio_tower."), case.config.thinker_config.audio_config
    pytest.skip("no golden case with an audio tower")


# ---------------------------------------------------------------------------------------------- lengths
def test_output_length_rule():
    table = {0: 0, 1: 1, 2: 1, 7: 1, 8: 1, 9: 2, 99: 13, 100: 13, 101: 14, 200: 26, 300: 39, 3000: 390}
    for n, tokens in table.items():
        assert encoder.audio_output_length(n) == tokens == _reference_length(n), n
    n = np.arange(0, 5000)
    np.testing.assert_array_equal(encoder.audio_output_length(n), _reference_length(n))
    # the same as "three stride-2 convs per 100-frame chunk"
    assert all(encoder.audio_output_length(n) == sum(encoder.conv_length(c) for c in
                                                      encoder.chunk_lengths([n], 100)) for n in (1, 250, 1234))
    with pytest.raises(ValueError, match=">= 0"):
        encoder.audio_output_length(-1)


def test_output_length_matches_prompt_placeholders(golden_cases):
    checked = 0
    for d in golden_cases:
        case = Case(d)
        if case.config is None or "thinker.input_ids" not in case.golden or "audio.feature_lens" not in case.golden:
            continue
        n_audio = int((case.golden["thinker.input_ids"] == case.config.thinker_config.audio_token_id).sum())
        assert n_audio == sum(encoder.audio_output_length(int(n)) for n in case.golden["audio.feature_lens"])
        checked += 1
    if not checked:
        pytest.skip("no model case with audio")


def test_chunks_and_windows():
    np.testing.assert_array_equal(encoder.chunk_lengths([250, 100, 30], 100), [100, 100, 50, 100, 30])
    np.testing.assert_array_equal(encoder.window_segments([5, 3], 2), [0, 0, 1, 1, 2, 3, 3, 4])


# ---------------------------------------------------------------------------------------------- blocks
def test_conv2d_matches_scipy():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 11, 8, 3)).astype(np.float32)          # [B, Hf, Wt, Cin]
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    ours = nn.conv2d_stride2(x, w, b)
    assert ours.shape == (2, 6, 4, 4)
    for i in range(2):
        for o in range(4):
            full = sum(scipy.signal.correlate2d(x[i, :, :, c].astype(np.float64), w[o, c], mode="same")
                       for c in range(3)) + b[o]                        # stride 1, zero padding 1
            np.testing.assert_allclose(ours[i, :, :, o], full[::2, ::2], atol=1e-5)


def test_sinusoids():
    table = encoder.sinusoids(5, 8)
    assert table.shape == (5, 8)
    np.testing.assert_array_equal(table[0], [0, 0, 0, 0, 1, 1, 1, 1])
    inv = np.exp(-np.log(10000.0) / 3 * np.arange(4))                  # slowest column = 1 / 10000
    np.testing.assert_allclose(table[3], np.concatenate([np.sin(3 * inv), np.cos(3 * inv)]), atol=1e-7)


# ---------------------------------------------------------------------------------------------- goldens
@pytest.mark.parametrize("backend_name", ["numpy", "cpp"])
def test_encoder_matches_goldens(golden_cases, backend_name):
    if backend_name == "cpp" and not backend.available():
        pytest.skip("C++ extension not built")
    cases = _audio_cases(golden_cases)
    if not cases:
        pytest.skip("no golden case with audio.* keys")
    for case in cases:
        with backend.use(backend_name):
            out = stages.audio_stage(case)
        assert "audio.output" in out and "audio.hidden_states.0" in out
        for key, value in out.items():
            assert value.shape == case.golden[key].shape, key
            assert _rel(value, case.golden[key]) <= 1e-4, (case, key)


def test_encode_audio_from_processor_outputs(golden_cases):
    cases = [c for c in _audio_cases(golden_cases) if "mel.input_features" in c.golden]
    if not cases:
        pytest.skip("no golden case with both mel.* and audio.* keys")
    for case in cases:
        feats, mask = case.golden["mel.input_features"], case.golden["mel.attention_mask"]
        out = encoder.encode_audio(case.weights.scope("thinker.audio_tower."),
                                   case.config.thinker_config.audio_config, feats, mask)
        assert _rel(out, case.golden["audio.output"]) <= 1e-4
        # and from our own log-mel of the waveform(s): the whole audio arrow
        ours_feats, ours_mask = mel.extract_features(stages.case_waveforms(case))
        out2 = encoder.encode_audio(case.weights.scope("thinker.audio_tower."),
                                    case.config.thinker_config.audio_config, ours_feats, ours_mask)
        assert _rel(out2, case.golden["audio.output"]) <= 1e-4


# ---------------------------------------------------------------------------------------------- any length
def _encode(tiny, n_frames, seed=0, feats=None):
    w, cfg = tiny
    if feats is None:
        feats = np.random.default_rng(seed).uniform(-1.0, 1.0, (cfg.num_mel_bins, sum(n_frames))).astype(np.float32)
    out, hidden = encoder.audio_encoder(w, cfg, feats, n_frames)
    return feats, out, hidden


@pytest.mark.parametrize("n_frames", [3, 37, 100, 200, 500])
def test_lengths_short_and_exact_multiples(tiny, n_frames):
    w, cfg = tiny
    _, out, hidden = _encode(tiny, [n_frames])
    n = encoder.audio_output_length(n_frames)
    assert out.shape == (n, cfg.output_dim) and len(hidden) == cfg.encoder_layers + 1
    assert all(h.shape == (n, cfg.d_model) for h in hidden) and np.all(np.isfinite(out))


def test_long_audio_windows_isolate(tiny):
    w, cfg = tiny
    chunk = 2 * cfg.n_window
    window_frames = cfg.n_window_infer // chunk * chunk                # frames per attention window
    n_frames = 2 * window_frames + 3 * chunk + 37                      # > 2 windows, ragged tail
    feats, out, _ = _encode(tiny, [n_frames])
    window_tokens = encoder.audio_output_length(window_frames)         # tokens per full window
    assert out.shape[0] == encoder.audio_output_length(n_frames) > 2 * window_tokens
    # perturb frames of the middle window only
    changed = feats.copy()
    changed[:, window_frames + 10: window_frames + 20] += 0.5
    _, out2, _ = _encode(tiny, [n_frames], feats=changed)
    mid = slice(window_tokens, 2 * window_tokens)
    np.testing.assert_allclose(out2[:window_tokens], out[:window_tokens], rtol=0, atol=1e-6)
    np.testing.assert_allclose(out2[2 * window_tokens:], out[2 * window_tokens:], rtol=0, atol=1e-6)
    diff = np.abs(out2[mid] - out[mid]).max(axis=1)                    # [window tokens]
    # the perturbed chunk changed, and attention carried it to the other chunks of the same window
    far = np.arange(window_tokens) >= encoder.audio_output_length(chunk) * 2
    assert diff.max() > 1e-2 and diff[far].min() > 1e-6


def test_clips_do_not_see_each_other(tiny):
    # chunks of both calls pad to the same 100 frames, so the only link between clips would be attention
    a, b = 230, 150
    feats, out, _ = _encode(tiny, [a, b])
    _, out_a, _ = _encode(tiny, [a], feats=np.ascontiguousarray(feats[:, :a]))
    _, out_b, _ = _encode(tiny, [b], feats=np.ascontiguousarray(feats[:, a:]))
    # equal up to float32 noise (different batch shapes sum in a different order); a leak across clips
    # through attention would show at the 1e-2 level (see test_long_audio_windows_isolate)
    np.testing.assert_allclose(out, np.concatenate([out_a, out_b]), rtol=0, atol=1e-5)


def test_chunk_padding_is_call_wide(tiny):
    # a lone 30-frame clip pads to 30; beside a 100-frame clip it pads to 100, which changes its last rows
    feats, out, _ = _encode(tiny, [100, 30])
    _, alone, _ = _encode(tiny, [30], feats=np.ascontiguousarray(feats[:, 100:]))
    assert out.shape[0] == 13 + 4 and alone.shape[0] == 4
    assert np.abs(out[13:] - alone).max() > 1e-4


# ---------------------------------------------------------------------------------------------- bad input
def test_bad_input(tiny):
    w, cfg = tiny
    good = np.zeros((cfg.num_mel_bins, 50), np.float32)
    with pytest.raises(ValueError, match="num_mel_bins"):
        encoder.audio_encoder(w, cfg, np.zeros((64, 50), np.float32), [50])
    with pytest.raises(ValueError, match="sum to"):
        encoder.audio_encoder(w, cfg, good, [40])
    with pytest.raises(ValueError, match="positive"):
        encoder.audio_encoder(w, cfg, good, [50, 0])
    nan = good.copy()
    nan[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        encoder.audio_encoder(w, cfg, nan, [50])
    feats = np.zeros((1, cfg.num_mel_bins, 10), np.float32)
    with pytest.raises(ValueError, match="prefix"):
        encoder.encode_audio(w, cfg, feats, np.array([[1, 0, 1, 0, 0, 0, 0, 0, 0, 0]]))
    with pytest.raises(ValueError, match="expected input_features"):
        encoder.encode_audio(w, cfg, feats[0], np.ones((1, 10)))
