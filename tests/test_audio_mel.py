"""Audio front end: WAV reading, resampling, the Slaney mel scale and filterbank, STFT, log-mel, MFCC.

Independent references: closed-form values of the mel scale, numerical integration of the filters,
scipy.signal.stft for the power spectrum, scipy.fft.dct for the MFCC, and the goldens for the features.
"""
from pathlib import Path

import numpy as np
import pytest
import scipy.fft
import scipy.signal
from scipy.io import wavfile

from omniref import stages
from omniref.audio import mel, wav
from omniref.golden import Case
from omniref.errors import MediaError

SPEECH = Path(__file__).resolve().parents[1] / "omniref" / "data" / "speech.wav"


def _rel(ours, ref):
    return np.abs(np.asarray(ours, np.float64) - ref).max() / max(np.abs(ref).max(), 1e-12)


# ---------------------------------------------------------------------------------------------- mel scale
def test_mel_scale_known_values_and_round_trip():
    # Slaney: 3 mel per 200 Hz up to 1 kHz (= 15 mel), then 27 mel per factor 6.4
    np.testing.assert_allclose(mel.hertz_to_mel([0.0, 200.0, 1000.0, 6400.0]), [0.0, 3.0, 15.0, 42.0], atol=1e-12)
    np.testing.assert_allclose(mel.mel_to_hertz([0.0, 3.0, 15.0, 42.0]), [0.0, 200.0, 1000.0, 6400.0], rtol=1e-12)
    freqs = np.random.default_rng(0).uniform(0.0, 8000.0, 1000)
    np.testing.assert_allclose(mel.mel_to_hertz(mel.hertz_to_mel(freqs)), freqs, rtol=1e-12, atol=1e-9)
    mels = np.linspace(0.0, 45.0, 500)
    np.testing.assert_allclose(mel.hertz_to_mel(mel.mel_to_hertz(mels)), mels, rtol=1e-12, atol=1e-12)
    # monotone and continuous at the 1 kHz knee
    assert np.all(np.diff(mel.hertz_to_mel(np.linspace(0, 8000, 4001))) > 0)
    assert abs(mel.hertz_to_mel(1000.0 - 1e-9) - mel.hertz_to_mel(1000.0)) < 1e-9


# ---------------------------------------------------------------------------------------------- filterbank
def test_filterbank_shape_and_whisper_layout():
    fb = mel.mel_filter_bank(128, 400, 16000)
    assert fb.shape == (201, 128)
    assert np.all(fb >= 0)
    np.testing.assert_allclose(mel.fft_frequencies(400, 16000)[[0, 1, -1]], [0.0, 40.0, 8000.0])


def test_filterbank_peaks_at_centres_and_unit_area():
    # A fine frequency grid (n_fft = 64000 -> bins every 0.25 Hz) resolves every triangle.
    n_mels, sr, n_fft = 40, 16000, 64000
    fb = mel.mel_filter_bank(n_mels, n_fft, sr)                        # [K, M]
    freqs = mel.fft_frequencies(n_fft, sr)
    edges = mel.mel_to_hertz(np.linspace(0.0, mel.hertz_to_mel(sr / 2), n_mels + 2))
    step = freqs[1] - freqs[0]
    peak_freq = freqs[fb.argmax(axis=0)]
    np.testing.assert_allclose(peak_freq, edges[1:-1], atol=step)      # each peak sits at its centre edge
    # the peak height is 2 / (right - left): the Slaney normalisation of a unit-height triangle
    np.testing.assert_allclose(fb.max(axis=0), 2.0 / (edges[2:] - edges[:-2]), rtol=2 * step / 23.0)
    # area in Hz is 1 for every filter (triangle area = height * width / 2)
    area = fb.sum(axis=0) * step
    np.testing.assert_allclose(area, np.ones(n_mels), rtol=1e-4)
    # zero outside [left, right]
    for m in (0, n_mels // 2, n_mels - 1):
        outside = (freqs < edges[m] - step) | (freqs > edges[m + 2] + step)
        assert np.all(fb[outside, m] == 0.0)


def test_filterbank_rejects_bad_range():
    with pytest.raises(ValueError, match="max_frequency"):
        mel.mel_filter_bank(128, 400, 16000, max_frequency=9000.0)


# ---------------------------------------------------------------------------------------------- STFT
def test_power_spectrum_matches_scipy_stft():
    x = np.random.default_rng(1).standard_normal(5003)
    ours = mel.power_spectrum(mel.frame_signal(x, 400, 160))           # [T+1, K]
    # scipy's 'even' boundary extension is reflection without repeating the edge sample, like ours
    win = scipy.signal.get_window("hann", 400)                         # periodic by default
    _, _, z = scipy.signal.stft(x, window=win, nperseg=400, noverlap=240, boundary="even", padded=False,
                                detrend=False, scaling="spectrum")
    ref = np.abs(z.T * win.sum()) ** 2                                 # undo scipy's 1/sum(window) scaling
    assert ours.shape == ref.shape == (1 + 5003 // 160, 201)
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-9 * ref.max())


def test_hann_window_is_periodic():
    np.testing.assert_allclose(mel.hann_window(400), scipy.signal.get_window("hann", 400), atol=1e-15)
    assert mel.hann_window(400)[0] == 0.0 and mel.hann_window(400)[200] == 1.0


# ---------------------------------------------------------------------------------------------- MFCC
def test_mfcc_matches_scipy_dct():
    logmel = np.random.default_rng(2).standard_normal((2, 128, 17))
    ours = mel.mfcc(logmel, n_mfcc=20)
    ref = scipy.fft.dct(logmel, type=2, norm="ortho", axis=-2)[:, :20]
    assert ours.shape == (2, 20, 17)
    np.testing.assert_allclose(ours, ref, atol=1e-12)
    with pytest.raises(ValueError, match="n_mfcc"):
        mel.mfcc(logmel, n_mfcc=129)


# ---------------------------------------------------------------------------------------------- features
def _mel_cases(golden_cases):
    cases = [Case(d) for d in golden_cases]
    return [c for c in cases if "mel.input_features" in c.golden]


def test_mel_matches_goldens(golden_cases):
    cases = _mel_cases(golden_cases)
    if not cases:
        pytest.skip("no golden case with mel.* keys")
    for case in cases:
        out = stages.mel_stage(case)
        assert set(out) >= {"mel.input_features"}
        ref = case.golden["mel.input_features"]
        assert out["mel.input_features"].shape == ref.shape
        assert _rel(out["mel.input_features"], ref) <= 1e-4, case
        if "mel.attention_mask" in case.golden:
            np.testing.assert_array_equal(out["mel.attention_mask"], case.golden["mel.attention_mask"])


def test_mel_basic_shared(shared_golden):
    case = Case(Path(shared_golden) / "mel_basic")
    out = stages.mel_stage(case)
    assert _rel(out["mel.input_features"], case.golden["mel.input_features"]) <= 1e-4
    np.testing.assert_array_equal(out["mel.attention_mask"], case.golden["mel.attention_mask"])


def test_several_clips_pad_to_longest_and_mask():
    rng = np.random.default_rng(3)
    long, short = rng.standard_normal(3217).astype(np.float32), rng.standard_normal(1000).astype(np.float32)
    feats, mask = mel.extract_features([short, long])
    assert feats.shape == (2, 128, 3217 // 160) and feats.dtype == np.float32 and mask.dtype == np.int32
    # frame t is valid iff 160 t < samples: ceil(1000/160) = 7 for the short clip, all 20 for the long one
    np.testing.assert_array_equal(mask.sum(axis=1), [7, 20])
    alone_long, _ = mel.extract_features(long)
    np.testing.assert_array_equal(feats[1], alone_long[0])
    # the short clip's frames whose window never reaches the padding equal its stand-alone features
    alone_short, _ = mel.extract_features(short)
    safe = (1000 - 200) // 160                                         # frames t with t*160 + 200 <= 1000
    np.testing.assert_allclose(feats[0, :, :safe], alone_short[0, :, :safe], atol=1e-6)
    # near its end the short clip sees the zeros of the padding, exactly as if it had been zero-extended
    padded, _ = mel.extract_features(np.concatenate([short, np.zeros(3217 - 1000, np.float32)]))
    np.testing.assert_array_equal(feats[0], padded[0])
    assert np.abs(feats[0, :, 5] - alone_short[0, :, 5]).max() < 1e-6      # frame 5 ends at sample 999
    assert np.abs(feats[0, :, 4:7]).max() > 0                              # (padding region is not silent)


def test_dynamic_range_clamp_is_per_clip():
    t = np.arange(16000) / 16000
    loud = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    feats, _ = mel.extract_features([loud, 1e-3 * loud])
    for b in range(2):
        assert feats[b].max() - feats[b].min() <= 2.0 + 1e-6           # 8 decades / 4 after scaling
    assert feats[0].max() > feats[1].max() + 1.0                        # 60 dB quieter is still 1.5 lower


@pytest.mark.parametrize("bad, err, match", [
    (np.zeros(0, np.float32), ValueError, "empty"),
    (np.array([0.1, np.nan] * 200, np.float32), ValueError, "NaN"),
    (np.array([0.1, np.inf] * 200, np.float32), ValueError, "NaN or infinite"),
    (np.ones(400, np.complex64), TypeError, "dtype"),
    (np.array(["a"] * 400), TypeError, "dtype"),
    (np.zeros((2, 400), np.float32), ValueError, "mono"),
    (np.zeros(100, np.float32), ValueError, "fewer than one hop"),
])
def test_bad_waveforms(bad, err, match):
    with pytest.raises(err, match=match):
        mel.extract_features([bad])


# ---------------------------------------------------------------------------------------------- WAV files
@pytest.mark.parametrize("dtype, scale", [(np.int16, 32768.0), (np.int32, 2.0 ** 31), (np.float32, 1.0)])
def test_read_wav_formats_stereo_to_mono(tmp_path, dtype, scale):
    rng = np.random.default_rng(4)
    left, right = rng.uniform(-0.5, 0.5, 800), rng.uniform(-0.5, 0.5, 800)
    pcm = (np.stack([left, right], axis=1) * scale).astype(dtype)
    path = tmp_path / "stereo.wav"
    wavfile.write(path, 16000, pcm)
    x = wav.read_wav(path)
    expect = pcm.astype(np.float64).mean(axis=1) / scale
    assert x.dtype == np.float32 and x.shape == (800,)
    np.testing.assert_allclose(x, expect, atol=1e-7)


def test_read_wav_uint8(tmp_path):
    path = tmp_path / "u8.wav"
    wavfile.write(path, 16000, np.array([0, 128, 255], np.uint8))
    np.testing.assert_allclose(wav.read_wav(path), [-1.0, 0.0, 127 / 128])


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resample_keeps_a_sine(rate):
    f0, seconds = 440.0, 0.5
    n = int(rate * seconds)
    x = np.sin(2 * np.pi * f0 * np.arange(n) / rate)
    y = wav.resample(x, rate, 16000)
    assert len(y) == int(np.ceil(n * 16000 / rate))
    ref = np.sin(2 * np.pi * f0 * np.arange(len(y)) / 16000)
    interior = slice(200, len(y) - 200)                                # away from the filter's edge transients
    assert np.abs(y[interior] - ref[interior]).max() < 2e-3


def test_read_wav_errors(tmp_path):
    with pytest.raises(MediaError, match="missing.wav: no such WAV file"):
        wav.read_wav(tmp_path / "missing.wav")
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"this is not a RIFF file at all")
    with pytest.raises(MediaError, match="junk.wav: not a WAV file"):
        wav.read_wav(junk)
    empty = tmp_path / "empty.wav"
    wavfile.write(empty, 16000, np.zeros(0, np.int16))
    with pytest.raises(ValueError, match="empty"):
        wav.read_wav(empty)
    nan = tmp_path / "nan.wav"
    wavfile.write(nan, 16000, np.array([0.0, np.nan, 0.5], np.float32))
    with pytest.raises(ValueError, match="NaN"):
        wav.read_wav(nan)
    with pytest.raises(TypeError, match="int64"):
        wav.prepare(np.zeros(10, np.int64), 16000)
    with pytest.raises(ValueError, match="sampling rates"):
        wav.resample(np.zeros(10), 0)


def test_shipped_speech_clip():
    x = wav.read_wav(SPEECH)
    assert 2.0 <= len(x) / 16000 <= 4.0 and SPEECH.stat().st_size < 150_000
    feats, mask = mel.extract_features(x)
    assert feats.shape == (1, 128, len(x) // 160) and mask.sum() == len(x) // 160
    # speech has energy: the loudest frame is far above the quietest
    energy = feats[0].mean(axis=0)
    assert energy.max() - energy.min() > 0.5
