"""Log-mel features -> audio embeddings: the thinker's audio encoder `thinker.audio_tower`
(transformers' `Qwen3OmniMoeAudioEncoder`).

    features [M, T] --split into chunks of 2*n_window frames, zero-pad to the longest chunk--> [C, M, Tc]
      --3 x (conv 3x3 stride 2 + GELU)--> [C, M/8, Tc/8, ds] --flatten, conv_out, + sinusoid(0..)--> [C, t, d]
      --keep each chunk's valid rows, concatenate--> [N, d]                        (audio.hidden_states.0)
      --encoder_layers x (LN, windowed MHA, LN, MLP)--> [N, d]                      (audio.hidden_states.i)
      --ln_post, proj1, GELU, proj2--> [N, output_dim]                             (audio.output)

Legend (dimension letters used in the shape comments of this module):
    M  mel bins (num_mel_bins, 128)        T  feature frames of a clip or of all clips
    C  chunks of all clips                 Tc frames per chunk (2*n_window = 100, or the longest remainder)
    Hf, Wt  frequency rows / time columns of a conv feature map
    ds downsample_hidden_size (conv channels)   d  d_model   nh heads   hd = d / nh
    N  audio tokens of all clips           O  output_dim (= thinker hidden size)

Why chunks: every 100-frame (1 s) chunk goes through the conv stem on its own, with positions restarting at
0, so a clip of any length costs memory linear in its length and the model never sees a position beyond 13.
Why windows: attention then mixes tokens only inside windows of `n_window_infer` frames (8 s with the Hub's
800), so the cost stays linear too; tokens of different windows or clips never see each other.
"""

from __future__ import annotations

import numpy as np

from omniref import backend, taps
from omniref.backend import ops

TAP = "thinker.audio_tower."  # taps (omniref.taps) are named after the reference's modules under this path
LAYER_NORM_EPS = 1e-5          # fixed in the reference (nn.LayerNorm default), not in config.json
REFERENCE_CHUNK_FRAMES = 100   # the reference's length rule hard-codes 100-frame chunks (n_window = 50)


# ----------------------------------------------------------------------------------------------------------
# Lengths
# ----------------------------------------------------------------------------------------------------------
def conv_length(n_frames):
    """Frames left after the three stride-2, kernel-3, padding-1 convolutions: n -> (n - 1) // 2 + 1, thrice.

    Works elementwise on ints or integer arrays; 0 stays 0 (floor division: (0 - 1) // 2 + 1 = 0).
    """
    n = np.asarray(n_frames, dtype=np.int64)
    for _ in range(3):
        n = (n - 1) // 2 + 1
    return n if n.ndim else int(n)


def audio_output_length(n_frames, chunk_frames=REFERENCE_CHUNK_FRAMES):
    """Number of audio tokens the encoder emits for a clip of `n_frames` feature frames (10 ms each).

    out_len(n) = 13 * (n // 100) + conv_length(n % 100): each full 100-frame chunk gives
    conv_length(100) = 13 tokens, and the remainder chunk gives conv_length(remainder).
    Examples: 1 -> 1, 99 -> 13, 100 -> 13, 101 -> 14, 300 -> 39, 3000 (30 s) -> 390.
    The reference (and its processor, which expands `<audio>` placeholders with it) hard-codes the 100 and
    the 13, i.e. it assumes `n_window` = 50; `chunk_frames` = 2 * n_window generalises it.
    """
    n = np.asarray(n_frames, dtype=np.int64)
    if np.any(n < 0):
        raise ValueError(f"audio_output_length: frame counts must be >= 0, got {n_frames}")
    out = conv_length(chunk_frames) * (n // chunk_frames) + conv_length(n % chunk_frames)
    return out if np.ndim(out) else int(out)


def chunk_lengths(feature_lens, chunk_frames):
    """Split each clip into consecutive chunks of `chunk_frames`; the last keeps the remainder.

    [B] -> [C]; e.g. lens (250, 100) with chunk 100 -> (100, 100, 50, 100).
    """
    out = []
    for n in np.asarray(feature_lens).tolist():
        full, rest = divmod(int(n), chunk_frames)
        out += [chunk_frames] * full + ([rest] if rest else [])
    return np.array(out, dtype=np.int64)


def window_segments(tokens_per_clip, window):
    """Window id of every audio token: each clip is cut into windows of `window` tokens (last one shorter).

    [B] -> [N] ints; tokens attend only to tokens with the same id (block-diagonal attention).
    """
    ids, next_id = [], 0
    for n in np.asarray(tokens_per_clip).tolist():
        n_windows = -(-int(n) // window)                                           # ceil(n / window)
        ids.append(next_id + np.arange(int(n)) // window)
        next_id += n_windows
    return np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)


# ----------------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------------
def sinusoids(length, channels, max_timescale=10000.0):
    """Whisper's fixed position table: d/2 sine columns, then d/2 cosine columns.  -> [length, channels]

    Column k of each half oscillates with frequency exp(-k ln(max_timescale) / (d/2 - 1)), from 1 rad per
    position (k = 0) down to 1/max_timescale (k = d/2 - 1): geometric, as in "Attention is all you need".
    """
    if channels % 2:
        raise ValueError(f"sinusoids: channels must be even, got {channels}")
    half = channels // 2
    inv_timescales = np.exp(-np.log(max_timescale) / (half - 1) * np.arange(half))  # [d/2]
    angles = np.arange(length)[:, None] * inv_timescales[None, :]                   # [length, d/2]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1).astype(np.float32)


_ACTIVATIONS = {"gelu": "gelu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh",
                "silu": "silu", "swish": "silu"}


def activation(name):
    """The op behind a config's `activation_function` name ('gelu' = the exact erf GELU)."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"unsupported audio activation_function {name!r}; known: {sorted(_ACTIVATIONS)}")
    return lambda x: getattr(ops, _ACTIVATIONS[name])(x)


def conv_stem(w, cfg, chunks):
    """Chunks of features -> token rows: 3 x (conv + act), flatten (channel, frequency), conv_out, positions.

    chunks [C, M, Tc] -> [C, t, d] with t = conv_length(Tc); positions 0..t-1 restart in every chunk.
    Chunks go through the convolutions in groups (at most `conv_chunksize`, the reference's own memory guard,
    and few enough that the largest im2col matrix, conv2d2's, stays under backend.IM2COL_BUDGET floats).
    """
    act = activation(cfg.activation_function)
    _, m, tc = chunks.shape
    half = lambda n: (n - 1) // 2 + 1                                                # one stride-2 conv
    im2col_per_chunk = half(half(m)) * half(half(tc)) * 9 * cfg.downsample_hidden_size  # conv2d2's rows x cols
    step = backend.items_per_call(im2col_per_chunk, len(chunks), cfg.conv_chunksize)   # memory bound
    out = []
    for start in range(0, len(chunks), step):
        x = chunks[start:start + step, :, :, None]                                  # [c, M, Tc, 1]: 1-channel image
        for name in ("conv2d1", "conv2d2", "conv2d3"):
            x = ops.conv2d_stride2(x, w[f"{name}.weight"], w[f"{name}.bias"])           # [c, Hf', Wt', ds]
            taps.record(TAP + name, x, axes=(0, 3, 1, 2))                           # the reference's NCHW
            x = act(x)
        c, hf, t, ds = x.shape
        x = x.transpose(0, 2, 3, 1).reshape(c, t, ds * hf)                          # [c, t, ds*Hf]: index ch*Hf + f
        out.append(ops.linear(x, w["conv_out.weight"]))                              # [c, t, d] (no bias)
        taps.record(TAP + "conv_out", out[-1])
    x = np.concatenate(out, axis=0)                                                  # [C, t, d]
    if x.shape[1] > cfg.max_source_positions:
        raise ValueError(f"a chunk yields {x.shape[1]} tokens, more than max_source_positions "
                         f"{cfg.max_source_positions}")
    return x + sinusoids(x.shape[1], x.shape[2])[None]                              # [C, t, d]


def encoder_layer(w, x, n_heads, segments, act, tap=""):
    """One pre-norm transformer layer with block-diagonal self-attention (`Qwen3OmniMoeAudioEncoderLayer`).
    [N, d] -> [N, d]

    w: weights of `layers.{i}.` (relative keys). Attention is bidirectional inside a window, absent across.
    """
    n, d = x.shape
    hd = d // n_heads
    h = ops.layer_norm(x, w["self_attn_layer_norm.weight"], w["self_attn_layer_norm.bias"], LAYER_NORM_EPS)
    taps.record(tap + "self_attn_layer_norm", h)

    def heads(name):                                                                 # [N, d] -> [nh, N, hd]
        y = ops.linear(h, w[f"self_attn.{name}.weight"], w[f"self_attn.{name}.bias"])
        return y.reshape(n, n_heads, hd).transpose(1, 0, 2)

    attn = ops.attention(heads("q_proj"), heads("k_proj"), heads("v_proj"), segments=segments,
                        scale=hd ** -0.5)                                            # [nh, N, hd]
    attn = attn.transpose(1, 0, 2).reshape(n, d)                                     # [N, d]
    attn = ops.linear(attn, w["self_attn.out_proj.weight"], w["self_attn.out_proj.bias"])   # [N, d]
    taps.record(tap + "self_attn", attn)
    x = x + attn
    h = ops.layer_norm(x, w["final_layer_norm.weight"], w["final_layer_norm.bias"], LAYER_NORM_EPS)
    taps.record(tap + "final_layer_norm", h)
    h = ops.linear(h, w["fc1.weight"], w["fc1.bias"])                                 # [N, d] -> [N, ffn]
    taps.record(tap + "fc1", h)
    h = ops.linear(act(h), w["fc2.weight"], w["fc2.bias"])                            # [N, ffn] -> [N, d]
    taps.record(tap + "fc2", h)
    x = x + h
    taps.record(tap[:-1], x)                                                         # the layer's output
    return x


# ----------------------------------------------------------------------------------------------------------
# The encoder
# ----------------------------------------------------------------------------------------------------------
def audio_encoder(w, cfg, input_features, feature_lens):
    """The whole audio tower on the valid frames of all clips.

    w: weights scoped to `thinker.audio_tower.`; cfg: the audio_config.
    input_features [M, T] (clips concatenated along time), feature_lens [B] (frames per clip, sum = T).
    Returns (output [N, O], hidden_states: list of encoder_layers + 1 arrays [N, d]).
    """
    feats = np.asarray(input_features, dtype=np.float32)
    lens = np.asarray(feature_lens, dtype=np.int64).reshape(-1)
    if feats.ndim != 2 or feats.shape[0] != cfg.num_mel_bins:
        raise ValueError(f"input_features must be [num_mel_bins={cfg.num_mel_bins}, frames], got {feats.shape}")
    if lens.size == 0 or np.any(lens <= 0) or lens.sum() != feats.shape[1]:
        raise ValueError(f"feature_lens {lens.tolist()} must be positive and sum to the {feats.shape[1]} frames")
    if not np.all(np.isfinite(feats)):
        raise ValueError("input_features contain NaN or infinite values")
    act = activation(cfg.activation_function)
    chunk = 2 * cfg.n_window                                                         # frames per chunk

    # 1. chunks, zero-padded on the right to the longest chunk of the whole call
    lengths = chunk_lengths(lens, chunk)                                             # [C]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    padded = np.zeros((len(lengths), feats.shape[0], lengths.max()), dtype=np.float32)  # [C, M, Tc]
    for c, (s, n) in enumerate(zip(starts, lengths)):
        padded[c, :, :n] = feats[:, s:s + n]

    # 2-3. conv stem, conv_out, positions; 4. keep each chunk's valid rows (drop rows made of padding)
    rows = conv_stem(w, cfg, padded)                                                 # [C, t, d]
    kept = conv_length(lengths)                                                      # [C]
    x = np.concatenate([rows[c, :k] for c, k in enumerate(kept)], axis=0)            # [N, d]
    taps.record(TAP + "inputs_embeds", x)

    # 5. attention windows: (longest chunk's kept rows) x (n_window_infer // chunk) tokens, per clip
    window = int(kept.max()) * max(1, cfg.n_window_infer // chunk)
    clip_of_chunk = np.repeat(np.arange(len(lens)), -(-lens // chunk))               # [C] clip of each chunk
    tokens_per_clip = np.bincount(clip_of_chunk, weights=kept, minlength=len(lens)).astype(np.int64)
    segments = window_segments(tokens_per_clip, window)                              # [N]

    # 6. transformer layers
    hidden_states = [x]
    for i in range(cfg.encoder_layers):
        x = encoder_layer(w.scope(f"layers.{i}."), x, cfg.encoder_attention_heads, segments, act,
                          tap=f"{TAP}layers.{i}.")
        hidden_states.append(x)

    # 7. ln_post, proj1, act, proj2
    h = ops.layer_norm(x, w["ln_post.weight"], w["ln_post.bias"], LAYER_NORM_EPS)
    taps.record(TAP + "ln_post", h)
    h = ops.linear(h, w["proj1.weight"], w["proj1.bias"])                             # [N, d]
    taps.record(TAP + "proj1", h)
    out = ops.linear(act(h), w["proj2.weight"], w["proj2.bias"])                      # [N, d] -> [N, O]
    taps.record(TAP + "proj2", out)
    return out, hidden_states


def encode_audio(weights, audio_config, input_features, feature_attention_mask):
    """Thinker entry point: processor outputs -> audio embeddings that replace the audio placeholders.

    weights: view scoped to `thinker.audio_tower.`; input_features [B, M, F] = `mel.input_features`;
    feature_attention_mask [B, F] = `mel.attention_mask` (valid frames form a prefix of each row).
    Returns [N, O] with N = sum over clips of audio_output_length(valid frames).
    """
    feats = np.asarray(input_features)
    mask = np.asarray(feature_attention_mask)
    if feats.ndim != 3 or mask.shape != (feats.shape[0], feats.shape[2]):
        raise ValueError(f"expected input_features [B, M, F] and mask [B, F], got {feats.shape} and {mask.shape}")
    mask = mask.astype(bool)
    lens = mask.sum(axis=1)                                                          # [B]
    if np.any(mask != (np.arange(mask.shape[1])[None, :] < lens[:, None])):
        raise ValueError("feature_attention_mask must mark a prefix of valid frames in every row")
    valid = np.concatenate([feats[b, :, :n] for b, n in enumerate(lens)], axis=1)    # [M, sum(lens)]
    return audio_encoder(weights, audio_config, valid, lens)[0]
