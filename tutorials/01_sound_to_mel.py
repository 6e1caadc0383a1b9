# %% [markdown]
# # 01 · From sound to log-mel features
#
# The first arrow of Qwen3-Omni: a waveform (16 000 numbers per second) becomes a *log-mel spectrogram*
# (128 numbers per 10 ms), the picture the audio encoder looks at. Every step below is one function of
# `omniref/audio/mel.py`; this file runs as a script in a few seconds, saves its figures under
# `tutorials/figures/`, and checks its numbers against scipy and against the golden cases.
#
#     waveform [N] -> frames [T+1, 400] -> power spectrum [T+1, 201] -> mel energies [128, T] -> log-mel [128, T]

# %%
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import scipy.fft
import scipy.signal

from omniref import stages
from omniref.audio import mel, wav
from omniref.golden import Case

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "tutorials" / "figures"
FIGURES.mkdir(parents=True, exist_ok=True)
SR, N_FFT, HOP = mel.SAMPLING_RATE, mel.N_FFT, mel.HOP_LENGTH

# %% [markdown]
# ## 1. A real speech clip
# `omniref/data/speech.wav` was synthesised with espeak-ng ("Hello, this is a short test of the audio
# encoder.") and converted to 16 kHz mono 16-bit PCM with sox. `read_wav` scales int16 by 1/32768, averages
# stereo channels and resamples other rates to 16 kHz with a polyphase filter.

# %%
x = wav.read_wav(ROOT / "omniref" / "data" / "speech.wav")              # [N] float32 in [-1, 1)
print(f"speech.wav: {x.shape[0]} samples = {x.shape[0] / SR:.2f} s at {SR} Hz, peak {np.abs(x).max():.3f}")

# %% [markdown]
# ## 2. Frames, window, power spectrum
# Whisper (and so Qwen3-Omni) looks at 25 ms frames (`n_fft` = 400 samples) every 10 ms (hop 160).
# Frames are *centred*: the signal is first extended by 200 samples on each side by reflection, so frame t is
# centred on sample 160 t. Each frame is multiplied by a periodic Hann window (it fades the frame's edges to
# zero so that the cut does not smear energy across frequencies), then the FFT gives 201 frequency bins from
# 0 to 8 kHz, 40 Hz apart. The *power* |X|^2 is what the ear's filter banks integrate.

# %%
frames = mel.frame_signal(x, N_FFT, HOP)                                # [T+1, 400]
power = mel.power_spectrum(frames)                                      # [T+1, 201]
print(f"frames {frames.shape}, power spectrum {power.shape}")

# check against scipy: its 'even' boundary extension is the same reflection
win = scipy.signal.get_window("hann", N_FFT)                            # periodic Hann
_, _, z = scipy.signal.stft(x.astype(np.float64), window=win, nperseg=N_FFT, noverlap=N_FFT - HOP,
                            boundary="even", padded=False, detrend=False, scaling="spectrum")
ref = np.abs(z.T * win.sum()) ** 2
err = np.abs(power - ref).max() / ref.max()
print(f"power spectrum vs scipy.signal.stft: rel err {err:.1e}")
assert err < 1e-9

loud = int(np.argmax(power.sum(axis=1)))
freqs = mel.fft_frequencies(N_FFT, SR)
fig, ax = plt.subplots(1, 3, figsize=(14, 3.2))
ax[0].plot(np.arange(len(x)) / SR, x, lw=0.5)
ax[0].axvspan((loud * HOP - 200) / SR, (loud * HOP + 200) / SR, color="C3", alpha=0.3)
ax[0].set(title="waveform (red: the loudest frame)", xlabel="s")
ax[1].plot(frames[loud], lw=0.7, label="frame")
ax[1].plot(frames[loud] * mel.hann_window(), lw=0.7, label="× Hann window")
ax[1].set(title=f"frame {loud} (25 ms)", xlabel="sample")
ax[1].legend()
ax[2].plot(freqs, 10 * np.log10(power[loud] + 1e-12), lw=0.8)
ax[2].set(title="power spectrum of that frame", xlabel="Hz", ylabel="dB")
fig.tight_layout()
fig.savefig(FIGURES / "01_frame_spectrum.png", dpi=90)

# %% [markdown]
# ## 3. The mel scale
# Our pitch perception is roughly linear below 1 kHz and logarithmic above. The **Slaney** mel scale (the one
# Whisper uses, not the HTK formula `2595 log10(1 + f/700)`) is exactly that: `3f/200` below 1 kHz (15 mel at
# 1 kHz), then `15 + 27 ln(f/1000)/ln 6.4` (27 mel more for every factor 6.4).

# %%
hz = np.linspace(0, SR / 2, 801)
assert np.allclose(mel.mel_to_hertz(mel.hertz_to_mel(hz)), hz)        # the two directions are inverses
print(f"1 kHz = {mel.hertz_to_mel(1000.0):.1f} mel, 8 kHz = {mel.hertz_to_mel(8000.0):.2f} mel")
fig, ax = plt.subplots(figsize=(5, 3.2))
ax.plot(hz, mel.hertz_to_mel(hz), label="Slaney (Whisper)")
htk = 2595 * np.log10(1 + hz / 700)
ax.plot(hz, htk * mel.hertz_to_mel(8000.0) / htk[-1], "--", label="HTK, rescaled to the same 8 kHz")
ax.axvline(1000, color="gray", lw=0.5)
ax.set(xlabel="Hz", ylabel="mel", title="mel scale")
ax.legend()
fig.tight_layout()
fig.savefig(FIGURES / "01_mel_scale.png", dpi=90)

# %% [markdown]
# ## 4. The filterbank
# 130 edges equally spaced in mel between 0 and 8 kHz define 128 triangles: filter m rises from edge m to its
# peak at edge m+1 and falls to zero at edge m+2. Slaney normalisation scales each triangle by
# `2 / (f_right - f_left)` so that every filter has **area 1** in Hz: the wide high filters do not collect more
# energy than the narrow low ones. With only 201 FFT bins 40 Hz apart, the lowest filters (narrower than
# 40 Hz) touch one or two bins only.

# %%
fb = mel.mel_filter_bank(128, N_FFT, SR)                                # [201, 128]
fine = mel.mel_filter_bank(128, 64000, SR)                              # same filters on a 0.25 Hz grid
area = fine.sum(axis=0) * 0.25
print(f"filterbank {fb.shape}; filter areas on a fine grid: {area.min():.5f} .. {area.max():.5f} (Slaney: 1)")
assert np.allclose(area, 1.0, rtol=1e-3)
fig, ax = plt.subplots(figsize=(10, 3.2))
fine_freqs = mel.fft_frequencies(64000, SR)
for m in range(0, 128, 4):
    line, = ax.plot(fine_freqs[::8], fine[::8, m], lw=0.8)
    hit = fb[:, m] > 0                                                  # the FFT bins this filter sees
    ax.plot(freqs[hit], fb[hit, m], ".", ms=4, color=line.get_color())
ax.set(xlabel="Hz", title="every 4th of the 128 Slaney mel filters (lines: exact triangles, dots: the 201 FFT bins)")
fig.tight_layout()
fig.savefig(FIGURES / "01_filterbank.png", dpi=90)

# %% [markdown]
# ## 5. Log-mel
# `mel = filterbank^T @ power` (the last STFT frame is dropped: T = N // 160 frames), then Whisper's
# compression: `log10` with a 1e-10 floor, a **dynamic-range clamp** (nothing more than 8 decades = 80 dB
# below the clip's loudest value: silence does not dominate), and `(x + 4) / 4` to bring speech near [-1, 1].
# `extract_features` does all of this for one or several clips (zero-padded to the longest one) and returns
# the mask of valid frames.

# %%
features, mask = mel.extract_features(x)                                # [1, 128, T], [1, T]
logmel = features[0]
print(f"log-mel {features.shape}, valid frames {mask.sum()}, range {logmel.min():.3f} .. {logmel.max():.3f}")
assert logmel.max() - logmel.min() <= 2.0 + 1e-6                       # the 8-decade clamp, after /4

# %% [markdown]
# ## 6. MFCC
# The classic speech feature: a DCT-II of the log-mel along the mel axis. It decorrelates neighbouring bins;
# the first ~13-20 coefficients describe the spectral envelope (formants, i.e. *which vowel*), the rest the
# fine harmonic structure. Qwen3-Omni does not use MFCCs (its convolutions learn their own features), but they
# show what the log-mel contains.

# %%
coeffs = mel.mfcc(logmel, n_mfcc=20)                                    # [20, T]
err = np.abs(coeffs - scipy.fft.dct(logmel.astype(np.float64), type=2, norm="ortho", axis=0)[:20]).max()
print(f"MFCC {coeffs.shape}; vs scipy.fft.dct: max abs err {err:.1e}")
assert err < 1e-9

fig, ax = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
t_end = logmel.shape[1] * HOP / SR
ax[0].imshow(logmel, origin="lower", aspect="auto", extent=[0, t_end, 0, 128], cmap="magma")
ax[0].set(title="log-mel spectrogram of speech.wav (Qwen3-Omni features)", ylabel="mel bin")
ax[1].imshow(coeffs[1:], origin="lower", aspect="auto", extent=[0, t_end, 1, 20], cmap="coolwarm")
ax[1].set(title="MFCC 1..19 (c0, the loudness, left out)", xlabel="s", ylabel="coefficient")
fig.tight_layout()
fig.savefig(FIGURES / "01_logmel_mfcc.png", dpi=72)

# %% [markdown]
# ## 7. Check against the goldens
# The goldens hold the Hugging Face processor's own features for given waveforms. The reference computes its
# STFT in float32 while we use float64, so expect ~1e-5 relative differences (in low-energy bins), far inside
# the 1e-4 tolerance.

# %%
case_dirs = sorted(p.parent for p in (ROOT / "tests" / "golden").glob("*/golden.npz")) + \
    sorted(p.parent for p in (ROOT.parent / "shared" / "golden").glob("*/golden.npz"))
for case in map(Case, case_dirs):
    if "mel.input_features" not in case.golden:
        continue
    clips = stages.case_waveforms(case)                                    # mel.waveform or mel.waveform.{i}
    ours, our_mask = mel.extract_features(clips)
    ref = case.golden["mel.input_features"]
    rel = np.abs(ours - ref).max() / np.abs(ref).max()
    same_mask = np.array_equal(our_mask, case.golden["mel.attention_mask"])
    print(f"{case.name:>16}: {len(clips)} clip(s), features {ours.shape}: rel err {rel:.1e}, "
          f"mask {'exact' if same_mask else 'DIFFERS'}")
    assert rel <= 1e-4 and same_mask
print(f"figures saved in {FIGURES}")
