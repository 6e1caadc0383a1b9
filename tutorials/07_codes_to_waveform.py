# %% [markdown]
# # 07 · From codes to a waveform: residual VQ and Code2Wav
#
# The talker (tutorial 06) speaks in *codes*: every 80 ms frame it emits Q = 16 integers, one per codebook.
# This tutorial follows the last arrow, codes -> 24 kHz samples, in four steps:
#
# 1. **Residual vector quantization (RVQ)**: why 16 small codebooks describe a frame far better than one,
#    shown by fitting a toy RVQ to real speech features (`omniref/codec/rvq.py`).
# 2. **The upsampling chain** of Code2Wav (`omniref/codec/code2wav.py`): 12.5 Hz frames become 24 000
#    samples per second through ×2 ×2 ×8 ×5 ×4 ×3, and why the output is 1920·T − 555 samples, not 1920·T.
# 3. **Receptive field**: which samples one code frame can influence, computed on paper and measured.
# 4. **Streaming**: decoding in chunks with a little left context equals one-shot decoding where the
#    context covers the receptive field (and only there).
#
# Runs in a few seconds as a script (`python tutorials/07_codes_to_waveform.py`) or a notebook (figures inline
# in a notebook, saved under `tutorials/_output/` as a script) and asserts every number it states. The model
# is the golden case `tiny_f32` that ships in `tests/golden/` (its Code2Wav is checked against the
# reference's waveform; docs/golden_format.md describes the keys). Random weights make noise, not speech: the
# point here is the computation, whose shapes and timing are those of the real model.

# %%
import matplotlib.pyplot as plt
import numpy as np

from omniref.audio import mel, wav as wavfile
from omniref.codec.code2wav import Code2Wav, embed_codes, output_length
from omniref.codec.rvq import fit_rvq, rvq_decode, rvq_encode, rvq_errors
from omniref.config import Code2WavConfig
from omniref.golden import Case
from omniref.tiny import load_tiny
from omniref.course import check, data_file, repo_root, show

ROOT = repo_root()                                                      # the clone (tests/golden/ lives here)


def rel(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


# %% [markdown]
# ## 1. Residual vector quantization
#
# A vector quantizer with V entries sends log2(V) bits per vector. To describe a frame finely with one
# codebook you would need an astronomically large V. RVQ instead quantizes in stages: codebook 0 captures
# the coarse shape, codebook 1 the *residual* that codebook 0 left, and so on; the decoder adds the chosen
# vectors up. Q stages of V entries cost Q·log2(V) bits, and the error drops with every stage.
#
# We fit it to the log-mel frames of the bundled speech clip (128 numbers every 10 ms): codebooks are
# learned on the first 70% of the clip and judged on the last 30%, words they have never seen.

# %%
speech = wavfile.read_wav(data_file("speech.wav"))                # [N] at 16 kHz
features, _ = mel.extract_features(speech)                                           # [1, 128, F]
frames = features[0].T.astype(np.float64)                                           # [F, 128]
split = int(0.7 * len(frames))
mean = frames[:split].mean(axis=0)                                                  # "send nothing" = the mean
train, test = frames[:split] - mean, frames[split:] - mean                          # [F_train, 128], [F_test, 128]
Q_TOY, V_TOY = 8, 16
books = fit_rvq(train, Q_TOY, V_TOY, seed=0)                                        # [Q, V, 128]
codes = rvq_encode(test, books)                                                     # [F_test, Q]
train_err, errors = rvq_errors(train, books), rvq_errors(test, books)               # [Q + 1] each
print(f"speech: {len(frames)} log-mel frames of {frames.shape[1]} bins ({split} to fit, {len(test)} held out); "
      f"RVQ with {Q_TOY} codebooks of {V_TOY} entries = {Q_TOY * np.log2(V_TOY):.0f} bits per frame")
for q in range(Q_TOY + 1):
    print(f"  {q} quantizers: mean squared error {train_err[q]:7.3f} (fit) {errors[q]:7.3f} (held out)"
          f"  = {errors[q] / errors[0]:6.1%} of the held-out energy")
assert np.all(np.diff(train_err) < 0), "each stage must reduce the error on its training data"
assert np.all(np.diff(errors) < 0)                                                  # and here on new frames too
assert np.allclose(rvq_decode(codes, books), sum(books[q][codes[:, q]] for q in range(Q_TOY)))

# One codebook with the same 32 bits would need 2^32 entries. With the same *storage* (Q·V = 128 vectors)
# a single k-means codebook sends only 7 bits and memorises its training frames instead of generalising:
single = fit_rvq(train, 1, Q_TOY * V_TOY, seed=0)
single_fit, single_err = rvq_errors(train, single)[1], rvq_errors(test, single)[1]
print(f"one codebook of {Q_TOY * V_TOY} entries: error {single_fit:.3f} (fit) {single_err:.3f} (held out); "
      f"RVQ {Q_TOY}x{V_TOY}: {train_err[-1]:.3f} (fit) {errors[-1]:.3f} (held out)")
assert errors[-1] < single_err

fig, ax = plt.subplots(1, 2, figsize=(11, 3.6))
ax[0].semilogy(range(Q_TOY + 1), errors, "o-", label=f"RVQ, {V_TOY} entries per stage (held out)")
ax[0].semilogy(range(Q_TOY + 1), train_err, "o:", color="C0", alpha=0.5, label="RVQ (fitted frames)")
ax[0].axhline(single_err, color="C3", ls="--", label=f"one codebook of {Q_TOY * V_TOY} entries (held out)")
ax[0].set(xlabel="quantizers used", ylabel="mean squared error", title="RVQ error vs number of quantizers")
ax[0].legend(fontsize=7)
shown = [0, 1, 2, Q_TOY]
for q in shown:
    recon = (rvq_decode(codes[:, :q], books) if q else np.zeros_like(test)) + mean
    ax[1].plot(recon[len(test) // 2], lw=1, label=f"{q} quantizers")
ax[1].plot(test[len(test) // 2] + mean, "k", lw=1.5, alpha=0.5, label="original")
ax[1].set(xlabel="mel bin", ylabel="log-mel", title="a held-out frame, reconstructed stage by stage")
ax[1].legend(fontsize=7)
fig.tight_layout()
show(fig, "07_rvq_error")

# %% [markdown]
# Code2Wav reads its codes the same way: one embedding table holds a block of V rows per quantizer, code c
# of quantizer q is row c + q·V, and the Q rows of a frame are combined (Code2Wav *averages* them, a sum
# scaled by 1/Q). A quick check that averaging looked-up rows is "RVQ decode divided by Q":

# %%
case = None
for folder in (ROOT / "tests" / "golden",):
    for p in sorted(folder.glob("*/golden.npz")) if folder.is_dir() else []:
        c = Case(p.parent)
        if c.config is not None and "code2wav.codes" in c.golden:
            case = case or c
if case is not None:
    cfg, weights = case.config.code2wav_config, case.weights
    print(f"model: golden case {case.name}")
else:
    config, weights = load_tiny()
    cfg = config.code2wav_config
    print("model: seeded tiny checkpoint (no golden case found)")
model = Code2Wav(cfg, weights.scope("code2wav."))
table = weights["code2wav.code_embedding.weight"]                                   # [Q·V, Hc]
Q, V = cfg.num_quantizers, cfg.codebook_size
rng = np.random.default_rng(0)
demo_codes = rng.integers(0, V, (Q, 5))                                             # [Q, T]
as_rvq = rvq_decode(demo_codes.T, table.reshape(Q, V, -1)) / Q                      # [T, Hc]
assert np.allclose(embed_codes(demo_codes, table, V), as_rvq, atol=1e-6)
print(f"embedding table {list(table.shape)} = {Q} codebooks x {V} entries; mean of rows == RVQ decode / Q")

if case is not None:                                                                # the reference's own waveforms
    g = case.golden
    one_shot = model(g["code2wav.codes"])
    chunked = model.chunked_decode(g["code2wav.codes"], int(g["code2wav.chunk_size"]),
                                   int(g["code2wav.left_context_size"]))
    print(f"golden {case.name}: wav rel err {rel(one_shot, g['code2wav.wav']):.1e}, "
          f"wav_chunked rel err {rel(chunked, g['code2wav.wav_chunked']):.1e}")
    assert rel(one_shot, g["code2wav.wav"]) < 1e-4 and rel(chunked, g["code2wav.wav_chunked"]) < 1e-4

# %% [markdown]
# ## 2. The upsampling chain
#
# After the pre-transformer (sliding-window attention over frames), everything is convolutional. Two
# ConvNeXt stages upsample ×2 each with kernel = stride (exactly n·r samples), then four decoder blocks
# upsample ×8, ×5, ×4, ×3 with a transposed conv of kernel 2r. The reference trims K − r = r samples at
# *both* ends of those, so a block turns n samples into (n − 1)·r. Shown for the published model's sizes:

# %%
real = Code2WavConfig()                                                             # the published config
T = 50
n, rate, ch = T, 12.5, real.hidden_size
rows = [("codes", n, rate, ch)]
for r in real.upsampling_ratios:
    n, rate = n * r, rate * r
    rows.append((f"upsample x{r} + ConvNeXt", n, rate, ch))
ch = real.decoder_dim
rows.append(("decoder.0 causal conv", n, rate, ch))
for r in real.upsample_rates:
    n, rate, ch = (n - 1) * r, rate * r, ch // 2
    rows.append((f"decoder block x{r}", n, rate, ch))
rows.append(("SnakeBeta + conv -> 1 channel", n, rate, 1))
print(f"{'stage':32s}{'samples':>9s}{'rate (Hz)':>11s}{'channels':>10s}")
for name, n_, r_, c_ in rows:
    print(f"{name:32s}{n_:9d}{r_:11g}{c_:10d}")
assert n == output_length(T, real) == 1920 * T - 555 and rate == 24000
print(f"{T} frames -> {n} samples = 1920·{T} − 555: each decoder block drops r samples at its end")

# the model loaded above follows the same rule with its own rates
U = model.total_upsample                                                            # samples per code frame
for t in (1, 3, 8):
    assert model(rng.integers(0, V, (Q, t))).shape == (model.output_length(t),)
print(f"this model: rates {cfg.upsampling_ratios} then {cfg.upsample_rates}: {U} samples per frame, "
      f"T frames -> {U}·T − {U - model.output_length(1)} samples")

# %% [markdown]
# ## 3. Receptive field: what one code frame touches
#
# Follow the samples that one input position can change, stage by stage:
# * causal conv (k taps, dilation d): input i reaches outputs i .. i + d·(k − 1)  (the future, never the past);
# * transposed conv (kernel K, stride r, trimmed K − r at the start): input i reaches i·r − (K − r) ..
#   i·r + r − 1. With K = 2r that starts r samples *before* the input's own block: a one-frame look-ahead,
#   which is exactly why the last r samples must be dropped when the next frame is unknown.
# We apply these rules to frame t0 of the convolutional part and compare with a measurement: perturb frame
# t0 of the pre-transformer output and see which samples change.

# %%
def reach(lo, hi, cfg):
    """Samples of the final waveform that input frames lo..hi (of the conv part) can change."""
    def conv(lo, hi, k, d=1):
        return lo, hi + d * (k - 1)

    def tconv(lo, hi, K, r):
        return lo * r - (K - r), hi * r + r - 1
    for r in cfg.upsampling_ratios:
        lo, hi = conv(*tconv(lo, hi, r, r), 7)                                       # x r, ConvNeXt dwconv k=7
    lo, hi = conv(lo, hi, 7)                                                         # decoder.0
    for r in cfg.upsample_rates:
        lo, hi = tconv(lo, hi, 2 * r, r)
        for d in (1, 3, 9):
            lo, hi = conv(lo, hi, 7, d)                                              # residual unit conv1
    return conv(lo, hi, 7)                                                           # output conv


# Measured in float64: at the far edge of the reach the effect is ~1e-8 of the signal, below float32's
# resolution, while outside the reach the two runs are bit-identical whatever the precision.
T_RF, t0 = 20, 8
w64 = {k: np.asarray(v, np.float64) for k, v in model.w.items()}
model64 = Code2Wav(cfg, w64)
hidden = rng.standard_normal((T_RF, cfg.hidden_size))                               # [T, Hc]
bumped = hidden.copy()
bumped[t0] += 1.0
diff = np.abs(model64.vocode(bumped) - model64.vocode(hidden))                      # [S]
changed = np.flatnonzero(diff > 0)
lo, hi = reach(t0, t0, cfg)
print(f"frame {t0} (its own block starts at sample {t0 * U}) changes samples {changed[0]}..{changed[-1]}; "
      f"the rules predict {lo}..{hi}")
print(f"  look-ahead: {t0 * U - lo} samples before its block ({(t0 * U - lo) / 24:.1f} ms); "
      f"reach into the future: {hi - t0 * U + 1} samples = {(hi - t0 * U + 1) / U:.2f} frames")
assert hi < diff.shape[0] and changed[0] == lo and changed[-1] == hi
past_frames = int(np.ceil((hi - t0 * U + 1) / U))                                    # conv context a chunk needs
print(f"  so a chunk needs ~{past_frames} frames of left context for the convolutions, plus the attention's: "
      f"{cfg.num_hidden_layers} layers x {cfg.sliding_window - 1} frames")

fig, ax = plt.subplots(figsize=(11, 3))
ax.semilogy(np.maximum(diff, 1e-12), lw=0.5)
ax.axvspan(lo, hi, color="C1", alpha=0.15, label="predicted reach")
for f in range(T_RF + 1):
    ax.axvline(f * U, color="k", lw=0.3)
ax.set(xlabel=f"output sample (lines: {U}-sample frame blocks)", ylabel="|change|",
       title=f"receptive field of the convolutional decoder: perturbing frame {t0}")
ax.legend()
fig.tight_layout()
show(fig, "07_receptive_field")

# %% [markdown]
# ## 4. Streaming: chunked decoding
#
# `chunked_decode(codes, chunk_size, left_context_size)` decodes frames [start, end) together with up to
# `left_context_size` earlier frames, then throws away the context's samples. Every operation is causal, so
# with enough context a chunk reproduces the one-shot samples *exactly*: chunk c equals one-shot samples
# start·1920 .. start·1920 + output_length(end − start). Its last 555 samples are missing (the trims), so the
# concatenation is 555 samples shorter per chunk. With less context the chunk starts from a different
# state: the attention window and the convolutions see zeros instead of the real past.

# %%
T_S, CS = 24, 8
codes_s = rng.integers(0, V, (Q, T_S))                                               # [Q, T]
full = model(codes_s)                                                                # [output_length(T)]
contexts = [0, 2, 8, 32]
worst, outs = [], {}
for lc in contexts:
    out = outs[lc] = model.chunked_decode(codes_s, CS, lc)
    assert out.shape == (sum(model.output_length(min(s + CS, T_S) - s) for s in range(0, T_S, CS)),)
    errs, pos = [], 0
    for start in range(0, T_S, CS):
        n_out = model.output_length(min(start + CS, T_S) - start)
        errs.append(np.abs(out[pos:pos + n_out] - full[start * U:start * U + n_out]).max())
        pos += n_out
    worst.append(max(errs))
    print(f"left context {lc:2d} frames: max |chunked − one-shot| over the chunks = {worst[-1]:.2e}")
assert worst[-1] < 1e-4 * max(1.0, np.abs(full).max())                               # full context: equal
assert worst[0] > 100 * worst[-1]                                                    # no context: different

fig, ax = plt.subplots(1, 2, figsize=(11, 3.4))
ax[0].semilogy(contexts, np.maximum(worst, 1e-9), "o-")
ax[0].set(xlabel="left_context_size (frames)", ylabel="max |chunked − one-shot|",
          title=f"chunks of {CS} frames vs one-shot ({T_S} frames)")
s0 = CS * U
seg = slice(s0 - 300, s0 + 900)
ax[1].plot(np.arange(seg.start, seg.stop), full[seg], lw=0.8, label="one-shot")
out0 = outs[0]
ax[1].plot(np.arange(s0, s0 + 900), out0[model.output_length(CS):model.output_length(CS) + 900], lw=0.8,
           label="chunk 2, no left context")
ax[1].axvline(s0, color="k", lw=0.5)
ax[1].set(xlabel="output sample (24 kHz)", ylabel="amplitude", title="the start of a chunk without context")
ax[1].legend(fontsize=7)
fig.tight_layout()
show(fig, "07_streaming")
assert case is not None, "tests/golden/ must hold a case with a Code2Wav stage"

# %% [markdown]
# ## Exercises
# Check an answer here with `check("07.1", your_function)`, or from a file with
# `python -m omniref.course check 07.1 answers.py` (`python -m omniref.course list` shows every task).
#
# - **07.1** (predict a count) `output_length(T, upsampling_ratios, upsample_rates)`: samples produced from T frames
#   (section 2).
# - **07.2** (implement) `embed_codes(codes, table, codebook_size)`: the mean of each frame's Q codebook rows (section
#   1).

# %%
def output_length(T, upsampling_ratios, upsample_rates):
    raise NotImplementedError        # your answer


check("07.1", output_length)
