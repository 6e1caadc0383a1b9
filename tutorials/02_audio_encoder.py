# %% [markdown]
# # 02 · The audio encoder: log-mel frames -> audio tokens
#
# `omniref/audio/encoder.py`, step by step, on the speech clip of tutorial 01:
#
#     features [128, T] -> chunks of 100 frames -> 3 stride-2 convs -> 13 tokens per chunk (+ positions)
#       -> transformer layers with attention inside windows of n_window_infer frames -> [N, output_dim]
#
# The weights come from the first golden model case found (the project's own `tests/golden/` cases or the
# shared ones); without any, a tiny random tower with the same structure is drawn, so the script always runs.

# %%
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from omniref import nn
from omniref.backend import ops
from omniref.audio import encoder, mel, wav
from omniref.config import load_config
from omniref.golden import Case
from omniref.weights import load_weights

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "tutorials" / "figures"
FIGURES.mkdir(parents=True, exist_ok=True)
# model cases whose checkpoint has an audio tower (a code2wav-only case has a config but no audio weights)
CASE_DIRS = [p.parent for p in sorted((ROOT / "tests" / "golden").glob("*/config.json")) +
             sorted((ROOT.parent / "shared" / "golden").glob("*/config.json"))
             if "thinker.audio_tower.conv2d1.weight" in load_weights(p.parent)]

# %% [markdown]
# ## 1. The output length rule, and why it assumes 100-frame chunks
# Features come at 100 frames per second. The encoder cuts them into chunks of `2 * n_window` frames; each
# chunk goes through three convolutions of stride 2 (kernel 3, padding 1), each mapping n frames to
# `(n - 1) // 2 + 1`, so a 100-frame chunk becomes 100 -> 50 -> 25 -> **13** tokens (~7.7 tokens per second).
#
# **n_window 100/400 vs 50/800.** The mission's table (and the config class defaults) say `n_window` = 100 and
# `n_window_infer` = 400; the Hub checkpoint's `config.json` and every golden case say 50 and 800. Only 50 is
# consistent with the reference: its `_get_feat_extract_output_lengths`, which the *processor* also uses to
# decide how many `<audio>` placeholders to put in the prompt, hard-codes "13 tokens per 100 frames". With
# `n_window` = 100 the encoder would cut 200-frame chunks giving `conv_length(200)` = 25 tokens, while the
# processor would have expanded 26 placeholders: the counts would not match and the thinker would fail.
# `n_window_infer` is only the attention window in frames; 800 frames = 8 s (104 tokens), 400 = 4 s (52).
# omniref reads both values from `config.json` and documents the rule in `audio_output_length`.

# %%
for n in (1, 37, 99, 100, 101, 300, 3000):
    print(f"{n:5d} frames ({n / 100:5.2f} s) -> {encoder.audio_output_length(n):4d} tokens")
print(f"n_window 100 would give {encoder.conv_length(200)} tokens per 200-frame chunk; "
      f"the reference rule expects {encoder.audio_output_length(200)}")


# %% [markdown]
# ## 2. Weights

# %%
class RandomTower(dict):
    """A dict of random audio-tower weights with the `scope` method the encoder uses (fallback only)."""

    def scope(self, prefix):
        return RandomTower({k[len(prefix):]: v for k, v in self.items() if k.startswith(prefix)})


def random_tower(cfg, seed=0):
    rng = np.random.default_rng(seed)
    d, ds, f = cfg.d_model, cfg.downsample_hidden_size, cfg.encoder_ffn_dim
    shapes = {"conv2d1.weight": (ds, 1, 3, 3), "conv2d2.weight": (ds, ds, 3, 3), "conv2d3.weight": (ds, ds, 3, 3),
              "conv2d1.bias": (ds,), "conv2d2.bias": (ds,), "conv2d3.bias": (ds,), "conv_out.weight": (d, ds * 16),
              "ln_post.weight": (d,), "ln_post.bias": (d,), "proj1.weight": (d, d), "proj1.bias": (d,),
              "proj2.weight": (cfg.output_dim, d), "proj2.bias": (cfg.output_dim,)}
    for i in range(cfg.encoder_layers):
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes[f"layers.{i}.self_attn.{name}.weight"], shapes[f"layers.{i}.self_attn.{name}.bias"] = (d, d), (d,)
        for name in ("self_attn_layer_norm", "final_layer_norm"):
            shapes[f"layers.{i}.{name}.weight"], shapes[f"layers.{i}.{name}.bias"] = (d,), (d,)
        shapes.update({f"layers.{i}.fc1.weight": (f, d), f"layers.{i}.fc1.bias": (f,),
                       f"layers.{i}.fc2.weight": (d, f), f"layers.{i}.fc2.bias": (d,)})
    tower = RandomTower({k: (0.1 * rng.standard_normal(s)).astype(np.float32) for k, s in shapes.items()})
    for k in tower:
        if k.endswith("norm.weight") or k == "ln_post.weight":
            tower[k] += 1.0
    return tower


case_dir = next((d for d in CASE_DIRS if (d / "model.safetensors").exists()
                 or (d / "model.safetensors.index.json").exists()), None)
if case_dir is not None:
    cfg = load_config(case_dir).thinker_config.audio_config
    tower = load_weights(case_dir).scope("thinker.audio_tower.")
    print(f"weights of case {case_dir.name}")
else:
    cfg = load_config({}).thinker_config.audio_config
    for key, value in dict(encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=96, d_model=64,
                           downsample_hidden_size=16, output_dim=48, n_window=50, n_window_infer=800).items():
        setattr(cfg, key, value)
    tower = random_tower(cfg)
    print("no golden model case found: random weights")
chunk = 2 * cfg.n_window
print(f"d_model {cfg.d_model}, {cfg.encoder_layers} layers x {cfg.encoder_attention_heads} heads, "
      f"conv channels {cfg.downsample_hidden_size}, n_window {cfg.n_window} (chunk {chunk} frames), "
      f"n_window_infer {cfg.n_window_infer}")

# %% [markdown]
# ## 3. Chunking the speech clip
# 3.6 s of speech = 359 frames = chunks of 100, 100, 100, 59. The last chunk is zero-padded to 100 before the
# convolutions (to the longest chunk of the whole call), and its rows that come only from padding are dropped.

# %%
x = wav.read_wav(ROOT / "omniref" / "data" / "speech.wav")
features, mask = mel.extract_features(x)                                  # [1, 128, T], [1, T]
n_frames = int(mask.sum())
lengths = encoder.chunk_lengths([n_frames], chunk)
print(f"{n_frames} frames -> chunks {lengths.tolist()} -> kept tokens {encoder.conv_length(lengths).tolist()}")

# %% [markdown]
# ## 4. The conv stem, shape by shape
# A chunk is a one-channel image: 128 mel rows x 100 time columns. Each 3x3 stride-2 convolution halves both
# axes (written as im2col + one matrix product, so the GEMM does the work), GELU after each. The 16 remaining
# frequency rows times `downsample_hidden_size` channels are flattened per time step and projected by
# `conv_out` to `d_model`; then a fixed sinusoid table adds positions 0..12, restarting in every chunk.

# %%
act = encoder.activation(cfg.activation_function)
h = features[0, :, :chunk][None, :, :, None]                              # [1, 128, 100, 1]
print(f"chunk as an image     {h.shape[1:3]} x 1 channel")
for name in ("conv2d1", "conv2d2", "conv2d3"):
    h = act(ops.conv2d_stride2(h, tower[f"{name}.weight"], tower[f"{name}.bias"]))
    print(f"after {name}        {h.shape[1:3]} x {h.shape[3]} channels")
flat = h[0].transpose(1, 2, 0).reshape(h.shape[2], -1)                    # [13, ds*16]
tokens = nn.linear(flat, tower["conv_out.weight"]) + encoder.sinusoids(len(flat), cfg.d_model)
print(f"flatten (ch, freq)    {flat.shape}; conv_out + positions -> {tokens.shape}")

# %% [markdown]
# ## 5. Attention windows
# Inside the transformer, attention is block-diagonal: tokens are cut, per clip, into windows of
# `13 x (n_window_infer // 100)` tokens; a token sees only its own window. Drawn here for a 25 s clip
# (2500 frames, 325 tokens) and two clips of 25 s and 6 s, with the configured window and with the
# class-default 400.

# %%
fig, axes = plt.subplots(1, 3, figsize=(13, 4.4))
setups = [([2500], cfg.n_window_infer), ([2500], 400), ([2500, 600], cfg.n_window_infer)]
for ax, (clips, n_infer) in zip(axes, setups):
    per_clip = [encoder.audio_output_length(n) for n in clips]
    window = encoder.conv_length(chunk) * max(1, n_infer // chunk)
    seg = encoder.window_segments(per_clip, window)
    allowed = nn.attention_mask(len(seg), len(seg), segments=seg)         # [N, N] True = may attend
    ax.imshow(allowed, cmap="Greys", interpolation="nearest")
    ax.set(title=f"clips {clips} frames, n_window_infer {n_infer}\nwindow {window} tokens",
           xlabel="key token", ylabel="query token")
fig.tight_layout()
fig.savefig(FIGURES / "02_attention_windows.png", dpi=90)

# %% [markdown]
# ## 6. The whole encoder on the speech clip

# %%
out = encoder.encode_audio(tower, cfg, features, mask)                    # [N, output_dim]
print(f"speech.wav: {n_frames} frames -> audio tokens {out.shape} "
      f"(audio_output_length = {encoder.audio_output_length(n_frames)})")
assert out.shape == (encoder.audio_output_length(n_frames), cfg.output_dim)

fig, ax = plt.subplots(2, 1, figsize=(10, 5.5))
ax[0].imshow(features[0], origin="lower", aspect="auto", cmap="magma")
for b in np.cumsum(lengths)[:-1]:
    ax[0].axvline(b - 0.5, color="cyan", lw=1)
ax[0].set(title="log-mel features, cyan lines = 100-frame chunk boundaries", ylabel="mel bin")
ax[1].imshow(out.T, origin="lower", aspect="auto", cmap="coolwarm")
ax[1].set(title=f"encoder output: {out.shape[0]} tokens x {out.shape[1]} (13 per chunk)",
          xlabel="token", ylabel="channel")
fig.tight_layout()
fig.savefig(FIGURES / "02_encoder_output.png", dpi=72)

# %% [markdown]
# ## 7. Check against the goldens
# Every golden model case holds the reference's `audio.*` tensors for its own `audio.input_features`.

# %%
for case in map(Case, CASE_DIRS):
    if "audio.input_features" not in case.golden:
        continue
    out, hidden = encoder.audio_encoder(case.weights.scope("thinker.audio_tower."),
                                        case.config.thinker_config.audio_config,
                                        case.golden["audio.input_features"], case.golden["audio.feature_lens"])
    ours = {f"audio.hidden_states.{i}": h for i, h in enumerate(hidden)} | {"audio.output": out}
    for key, value in ours.items():
        if key in case.golden:
            ref = case.golden[key]
            rel = np.abs(value - ref).max() / np.abs(ref).max()
            print(f"{case.name:>12} {key:24s} {str(value.shape):10s} rel err {rel:.1e}")
            assert rel <= 1e-4
print(f"figures saved in {FIGURES}")
