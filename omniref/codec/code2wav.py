"""Code2Wav: residual-VQ speech codes -> 24 kHz waveform (transformers' `Qwen3OmniMoeCode2Wav`).

The talker emits, every 80 ms (12.5 Hz), one code per quantizer. Code2Wav turns that [Q, T] grid into sound
with a fully causal network, so audio can stream out while the talker is still speaking:

    codes [Q, T] --embed_codes (offset per quantizer, mean over Q)--> [T, Hc]
      --pre_transformer (sliding-window causal attention, 1-D RoPE, layer scale)--> [T, Hc]      (12.5 Hz)
      --upsample: for r in upsampling_ratios: transposed conv ×r + ConvNeXt block--> [4T, Hc]    (50 Hz)
      --decoder: causal conv Hc -> Dd, then per rate r in upsample_rates:
                 SnakeBeta, transposed conv ×r (channels halve), 3 dilated residual units (d = 1, 3, 9)
      --SnakeBeta, causal conv -> 1 channel, clamp to [-1, 1]--> wav [S]                          (24 kHz)

Two conventions explain every sample count (`Qwen3OmniMoeCausalConvNet`,
`Qwen3OmniMoeCausalTransConvNet`):
  * causal conv: pad d·(k-1) zeros on the LEFT only, so output t never sees input t+1 ("no future").
  * causal transposed conv (kernel K, stride r): the full transposed conv has (n-1)·r + K samples; the
    reference trims K - r at the start AND at the end. With K = 2r every decoder block loses r samples,
    so S = 1920·T - 555 with the default rates, not 1920·T (see `output_length`).

Legend (dimension letters of the shape comments):
    Q quantizers (num_quantizers)     T code frames             Hc hidden_size       I intermediate_size
    nh / nkv query / key-value heads  hd head size              C channels at the current stage
    N samples at the current stage    K kernel taps             r stride (upsampling factor)   S output samples

Layout and speed: >95% of the FLOPs are the decoder's convolutions. Activations are time-major [N, C]
(PyTorch's Conv1d uses [C, N]; the maths is the same). A stride-1 conv with K taps is K matrix products
of a weight tap with a shifted block of rows (a view, no copy), a transposed conv one product followed by
an overlap-add: BLAS does the work. Large arrays are reused where the algorithm allows (`out=`), because
fresh multi-megabyte allocations cost page faults comparable to the arithmetic on a small machine.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .. import taps
from ..backend import ops
from ..config import Code2WavConfig
from ..decoder import Decoder, rope_cos_sin
from ..weights import WeightView

__all__ = ["Code2Wav", "embed_codes", "pre_transformer", "convnext_block", "residual_unit", "decoder_block",
           "output_length"]

F32 = np.float32
LAYER_NORM_EPS = 1e-6          # ConvNeXt's LayerNorm (fixed in the reference, not in the config)
RESIDUAL_DILATIONS = (1, 3, 9)  # the three residual units of every decoder block (HiFi-GAN / DAC style)


# ----------------------------------------------------------------------------------------------------------
# 1. Codes -> frame embeddings
# ----------------------------------------------------------------------------------------------------------
def embed_codes(codes: np.ndarray, table: np.ndarray, codebook_size: int, tap: str = "") -> np.ndarray:
    """Average of the Q codebook vectors of each frame.  codes [Q, T] int, table [Q·V, Hc] -> [T, Hc]

    All Q codebooks share one embedding table; quantizer q owns rows q·V .. q·V + V-1 (V = codebook_size),
    so code c of quantizer q is row c + q·V. RVQ decodes by *summing* codebook vectors; the mean is that
    sum divided by Q, a fixed scale the network was trained with.
    """
    Q = codes.shape[0]
    offsets = np.arange(Q)[:, None] * codebook_size                 # [Q, 1]
    vectors = table[codes + offsets]                                # [Q, T, Hc]
    taps.record(tap, vectors, add_batch=True)                       # `code2wav.code_embedding`
    return vectors.mean(axis=0, dtype=table.dtype)                  # [Q, T, Hc] -> [T, Hc]


# ----------------------------------------------------------------------------------------------------------
# 2. Pre-transformer: Qwen3 decoder layers over the code frames (12.5 Hz, sliding window)
# ----------------------------------------------------------------------------------------------------------
def pre_transformer(x: np.ndarray, w: Mapping, cfg: Code2WavConfig) -> np.ndarray:
    """Qwen3 decoder layers over the code frames (`Qwen3OmniMoeCode2WavTransformerModel`; omniref/decoder.py).
    [T, Hc] -> [T, Hc]

    What makes it Code2Wav's: no q/k norm (the checkpoint has no q_norm keys), plain 1-D RoPE over frames
    0..T-1, causal attention limited to a sliding window (frame t sees t-sliding_window+1 .. t, so streaming
    needs only bounded history), and layer scale (CaiT, Touvron et al. 2021): each residual branch is
    multiplied by a learned per-channel vector that starts at 0.01, so every layer begins near the identity.
        x += scale_attn ⊙ o_proj(Attn(RMSNorm(x)))      x += scale_mlp ⊙ SwiGLU(RMSNorm(x))
    """
    w = w if hasattr(w, "scope") else WeightView(w, "")                             # a plain dict works too
    cos, sin = rope_cos_sin(np.arange(x.shape[0]), cfg.head_dim, cfg.rope_theta)   # [T, hd]
    return Decoder.from_config(w.scope("pre_transformer."), cfg).forward(x, cos, sin)


# ----------------------------------------------------------------------------------------------------------
# 3. Convolution blocks, time-major: x [N, C] (samples x channels), the transpose of PyTorch's Conv1d layout
#    [C, N]. The ops themselves (causal_conv, causal_trans_conv, snake_beta, depthwise_causal_conv) are
#    defined in omniref/nn.py and called through `ops`.
# ----------------------------------------------------------------------------------------------------------
def convnext_block(x: np.ndarray, w: Mapping, p: str) -> np.ndarray:
    """ConvNeXt block (Liu et al. 2022; `Qwen3OmniMoeConvNeXtBlock`) on audio.  x [N, C] -> [N, C]

    causal depthwise conv (k=7) -> LayerNorm over channels -> Linear C->4C -> GELU -> Linear 4C->C,
    scaled by `gamma` and added to the input.
    """
    y = ops.depthwise_causal_conv(x, w[p + "dwconv.conv.weight"], w[p + "dwconv.conv.bias"])  # [N, C]
    y = ops.layer_norm(y, w[p + "norm.weight"], w[p + "norm.bias"], LAYER_NORM_EPS)
    y = ops.gelu(ops.linear(y, w[p + "pwconv1.weight"], w[p + "pwconv1.bias"]))             # [N, 4C]
    y = ops.linear(y, w[p + "pwconv2.weight"], w[p + "pwconv2.bias"])                      # [N, C]
    return x + w[p + "gamma"] * y


def residual_unit(x: np.ndarray, w: Mapping, p: str, dilation: int) -> np.ndarray:
    """x + conv2(Snake(conv1(Snake(x)))), conv1 causal k=7 with `dilation`, conv2 k=1
    (`Qwen3OmniMoeCode2WavDecoderResidualUnit`).  [N, C] -> [N, C]

    Dilations 1, 3, 9 let three units see 6·(1+3+9) = 78 past samples at this stage's rate.
    """
    h = ops.snake_beta(x, w[p + "act1.alpha"], w[p + "act1.beta"])
    h = ops.causal_conv(h, w[p + "conv1.conv.weight"], w[p + "conv1.conv.bias"], dilation)
    h = ops.snake_beta(h, w[p + "act2.alpha"], w[p + "act2.beta"])
    return ops.causal_conv(h, w[p + "conv2.conv.weight"], w[p + "conv2.conv.bias"], 1, residual=x)  # + x


def decoder_block(x: np.ndarray, w: Mapping, p: str, rate: int, tap=None) -> np.ndarray:
    """SnakeBeta -> transposed conv ×rate (kernel 2·rate, channels halve) -> residual units d = 1, 3, 9
    (`Qwen3OmniMoeCode2WavDecoderBlock`).
    x [n, C] -> [(n-1)·rate, C/2]. tap(name, y): shows the transposed conv's output to a trace."""
    x = ops.snake_beta(x, w[p + "block.0.alpha"], w[p + "block.0.beta"])
    x = ops.causal_trans_conv(x, w[p + "block.1.conv.weight"], w[p + "block.1.conv.bias"], rate)
    if tap is not None:
        tap(p + "block.1", x)
    for u, d in enumerate(RESIDUAL_DILATIONS):
        x = residual_unit(x, w, f"{p}block.{u + 2}.", d)
    return x


def output_length(T: int, cfg: Code2WavConfig) -> int:
    """Samples produced by one forward over T frames (`Qwen3OmniMoeCode2Wav.forward`).

    Upsampling stages (kernel = stride = r) multiply exactly; each decoder block (kernel 2r) turns n into
    (n - 1)·r. Default config: ((((4T-1)·8-1)·5-1)·4-1)·3 = 1920·T - 555.
    """
    n = int(T)
    for r in cfg.upsampling_ratios:
        n *= int(r)
    for r in cfg.upsample_rates:
        n = (n - 1) * int(r)
    return n


# ----------------------------------------------------------------------------------------------------------
# 4. The model
# ----------------------------------------------------------------------------------------------------------
class Code2Wav:
    """codes -> waveform.  Code2Wav(cfg, weights)(codes [Q, T] or [B, Q, T]) -> [S] or [B, 1, S]

    cfg: the `code2wav_config` (Code2WavConfig, or a dict of its fields); weights: the tensors under
    `code2wav.` with relative keys (`load_weights(case).scope("code2wav.")`, or a plain dict).
    """

    def __init__(self, cfg: Code2WavConfig | dict, weights: Mapping):
        cfg = getattr(cfg, "code2wav_config", cfg)                                  # a whole OmniConfig is fine too
        self.cfg = Code2WavConfig.from_dict(cfg) if isinstance(cfg, dict) else cfg
        self.w = weights if hasattr(weights, "scope") else WeightView(weights, "")
        self.tap = self.w.prefix                                                    # "code2wav.": the taps' names
        if "pre_transformer.layers.0.self_attn.q_proj.bias" in self.w:
            raise ValueError("code2wav: the checkpoint has attention biases (attention_bias = true); "
                             "omniref.decoder implements the published model, which has none")
        table = self.w["code_embedding.weight"].shape                               # [Q·V, Hc]
        expected = (self.cfg.codebook_size * self.cfg.num_quantizers, self.cfg.hidden_size)
        if tuple(table) != expected:
            raise ValueError(f"code2wav: code_embedding.weight has shape {list(table)}, the config implies "
                             f"{list(expected)} (codebook_size·num_quantizers, hidden_size)")

    @property
    def total_upsample(self) -> int:
        """Samples per code frame (1920 = 2·2·8·5·4·3 by default: 12.5 Hz -> 24 kHz)."""
        return self.cfg.total_upsample

    def output_length(self, T: int) -> int:
        return output_length(T, self.cfg)

    def check_codes(self, codes) -> np.ndarray:
        """Validate and return codes as int64 [B, Q, T] (ValueError/TypeError naming the numbers)."""
        codes = np.asarray(codes)
        if codes.dtype.kind not in "iu":
            raise TypeError(f"code2wav: codes must be integers, got dtype {codes.dtype}")
        if codes.ndim == 2:
            codes = codes[None]
        if codes.ndim != 3:
            raise ValueError(f"code2wav: codes must be [Q, T] or [B, Q, T], got shape {list(codes.shape)}")
        B, Q, T = codes.shape
        if Q != self.cfg.num_quantizers:
            raise ValueError(f"code2wav: expected {self.cfg.num_quantizers} quantizers (num_quantizers), "
                             f"got {Q} rows of codes (shape {list(codes.shape)})")
        if T < 1:
            raise ValueError("code2wav: codes hold no frames (T = 0)")
        lo, hi = int(codes.min()), int(codes.max())
        if lo < 0 or hi >= self.cfg.codebook_size:
            bad = lo if lo < 0 else hi
            raise ValueError(f"code2wav: code {bad} is outside [0, {self.cfg.codebook_size}) "
                             f"(codebook_size = {self.cfg.codebook_size}); codes range over [{lo}, {hi}]")
        return codes.astype(np.int64)

    def forward_one(self, codes: np.ndarray) -> np.ndarray:
        """The whole chain for one validated code grid.  codes [Q, T] -> wav [S]"""
        x = embed_codes(codes, self.w["code_embedding.weight"], self.cfg.codebook_size,
                        tap=self.tap + "code_embedding")                            # [T, Hc]
        x = pre_transformer(x, self.w, self.cfg)                                    # [T, Hc]
        taps.record(self.tap + "pre_transformer", x, add_batch=True)
        return self.vocode(x)                                                       # [S]

    def vocode(self, x: np.ndarray) -> np.ndarray:
        """The convolutional part: upsampling stages, decoder, clamp.  x [T, Hc] (time-major) -> [S]"""
        w, cfg = self.w, self.cfg
        tap = lambda name, y: taps.record(self.tap + name, y, axes=(1, 0), add_batch=True)  # [N, C] -> [1, C, N]
        for i, r in enumerate(cfg.upsampling_ratios):                               # 12.5 Hz -> 50 Hz
            p = f"upsample.{i}."
            x = ops.causal_trans_conv(x, w[p + "0.conv.weight"], w[p + "0.conv.bias"], r)  # [N·r, Hc]
            tap(p + "0", x)
            x = convnext_block(x, w, p + "1.")
            tap(p + "1", x)
        x = ops.causal_conv(x, w["decoder.0.conv.weight"], w["decoder.0.conv.bias"])    # [N, Dd]
        tap("decoder.0", x)
        for i, r in enumerate(cfg.upsample_rates):                                  # 50 Hz -> 24 kHz
            x = decoder_block(x, w, f"decoder.{i + 1}.", r, tap)                    # [(N-1)·r, C/2]
            tap(f"decoder.{i + 1}", x)
        j = len(cfg.upsample_rates) + 1
        x = ops.snake_beta(x, w[f"decoder.{j}.alpha"], w[f"decoder.{j}.beta"])
        tap(f"decoder.{j}", x)
        x = ops.causal_conv(x, w[f"decoder.{j + 1}.conv.weight"], w[f"decoder.{j + 1}.conv.bias"])  # [S, 1]
        tap(f"decoder.{j + 1}", x)
        x = np.clip(x, -1.0, 1.0)                                                   # [S, 1]
        taps.record(self.tap.rstrip("."), x, axes=(1, 0), add_batch=True)          # the module's output [1, 1, S]
        return x[:, 0]                                                              # [S]

    def __call__(self, codes) -> np.ndarray:
        """codes [Q, T] -> [S];  [B, Q, T] -> [B, 1, S] (the reference's output layout)."""
        single = np.ndim(codes) == 2
        codes = self.check_codes(codes)
        wav = np.stack([self.forward_one(c) for c in codes])[:, None, :]            # [B, 1, S]
        return wav[0, 0] if single else wav

    def chunked_decode(self, codes, chunk_size: int = 300, left_context_size: int = 25) -> np.ndarray:
        """Streaming decode: chunks of `chunk_size` frames, each re-run with up to `left_context_size`
        earlier frames as context whose samples are then dropped (`Qwen3OmniMoeCode2Wav.chunked_decode`).
        codes [Q, T] -> [S'] or [B, Q, T] -> [B, 1, S'],  S' = Σ_chunks output_length(chunk) (1920·T - 555·chunks).

        A chunk equals the matching stretch of the one-shot output only where the left context covers the
        receptive field (attention window and convs); each chunk also ends `output_length` short.
        """
        for name, v, low in (("chunk_size", chunk_size, 1), ("left_context_size", left_context_size, 0)):
            if int(v) != v or v < low:
                raise ValueError(f"code2wav.chunked_decode: {name} must be an integer >= {low}, got {v}")
        single = np.ndim(codes) == 2
        codes = self.check_codes(codes)                                             # [B, Q, T]
        chunk_size, left_context_size = int(chunk_size), int(left_context_size)
        T, wavs, start = codes.shape[-1], [], 0
        while start < T:
            end = min(start + chunk_size, T)
            # The reference's rule: a full left context once there is more than that much history.
            ctx = left_context_size if start - left_context_size > 0 else start
            wav = np.stack([self.forward_one(c) for c in codes[:, :, start - ctx:end]])  # [B, S_chunk]
            wavs.append(wav[:, ctx * self.total_upsample:])                          # drop the context's samples
            start = end
        wav = np.concatenate(wavs, axis=-1)[:, None, :]                             # [B, 1, S']
        return wav[0, 0] if single else wav
