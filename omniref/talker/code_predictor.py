"""Talker state + codebook 0 -> codebooks 1..G-1 of one frame: the code predictor (HF
`Qwen3OmniMoeTalkerCodePredictorModelForConditionalGeneration`).

The codec quantises each 80 ms frame with G residual codebooks. The talker predicts only codebook 0 (the
coarsest); a small *dense* Qwen3 decoder then fills in the finer residual codebooks one after another, each
conditioned on all coarser ones. It is a little language model whose "sentence" is one frame:

    position   0                         1                    2                  ...  G-1
    input      talker hidden h_s         E_talker(tok_s)      E_0(g_1)           ...  E_{G-3}(g_{G-2})
    output     -                         lm_head_0 -> g_1     lm_head_1 -> g_2   ...  lm_head_{G-2} -> g_{G-1}

Every step j has its *own* embedding table E_{j-1} and head lm_head_j (codebook j means something different
from codebook j-1, even for the same id). The KV cache lives for one frame only: frames do not see each other
here (the talker carries the history).

Legend: Dt talker hidden (= code predictor hidden), G num_code_groups, C codebook size (code predictor vocab).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..backend import ops
from ..decoder import Decoder, KVCache, rope_cos_sin

__all__ = ["CodePredictor", "FrameCodes"]


@dataclass
class FrameCodes:
    tokens: np.ndarray         # [G-1] int64 codebooks 1..G-1
    logits: np.ndarray         # [G-1, C] raw logits of each step
    inputs_embeds: np.ndarray  # [2, Dt] the prefill rows (talker hidden, codebook-0 embedding)


class CodePredictor:
    """`talker.code_predictor.*` weights + `code_predictor_config` -> per-frame residual codes.

    weights: a view with keys relative to `talker.code_predictor.` (`model.layers.0...`, `lm_head.3.weight`).
    """

    def __init__(self, weights, cfg):
        self.cfg = cfg
        self.G = int(cfg.num_code_groups)
        if self.G < 2:
            raise ValueError(f"code_predictor_config.num_code_groups must be >= 2, got {self.G}")
        missing = [k for j in range(self.G - 1)
                   for k in (f"model.codec_embedding.{j}.weight", f"lm_head.{j}.weight") if k not in weights]
        if missing:
            raise ValueError(f"code predictor: num_code_groups={self.G} needs {self.G - 1} embedding tables and "
                             f"heads, but the checkpoint lacks talker.code_predictor.{missing[0]} "
                             f"({len(missing)} keys missing)")
        self.embeddings = [weights[f"model.codec_embedding.{j}.weight"] for j in range(self.G - 1)]  # [C, Dt]
        self.heads = [weights[f"lm_head.{j}.weight"] for j in range(self.G - 1)]                   # [C, Dt]
        self.decoder = Decoder.from_config(weights.scope("model."), cfg, num_experts=0)
        # plain 1-D RoPE over the G positions of a frame, computed once
        self.cos, self.sin = rope_cos_sin(np.arange(self.G, dtype=np.float32), cfg.head_dim,
                                          cfg.rope_theta)                                   # [G, hd] each

    def residual_embedding(self, tokens: np.ndarray) -> np.ndarray:
        """Σ_j E_{j-1}(g_j) over the G-1 residual codes of one frame.  tokens [G-1] -> [Dt]

        This sum (plus the talker's own embedding of codebook 0) is the talker's next input: the talker
        "hears" the whole frame it just produced.
        """
        out = np.zeros(self.embeddings[0].shape[1], np.float32)                 # [Dt]
        for j, g in enumerate(tokens):
            out += self.embeddings[j][int(g)]                                   # + [Dt] row of table j
        return out

    def predict_frame(self, talker_hidden: np.ndarray, code0_embed: np.ndarray,
                      choose=None) -> FrameCodes:
        """talker_hidden [Dt] (final-norm state that produced codebook 0), code0_embed [Dt] -> FrameCodes.

        choose(logits [C]) -> id picks each code (default: greedy argmax).
        """
        choose = choose if choose is not None else (lambda z: int(np.argmax(z)))
        cache = KVCache()                                                       # fresh for every frame
        x = np.stack([talker_hidden, code0_embed]).astype(np.float32)          # [2, Dt]
        h = self.decoder.forward(x, self.cos[:2], self.sin[:2], cache)          # [2, Dt]
        tokens = np.zeros(self.G - 1, np.int64)                                 # [G-1]
        logits = np.zeros((self.G - 1, self.heads[0].shape[0]), np.float32)     # [G-1, C]
        for j in range(self.G - 1):                                             # step j predicts codebook j+1
            logits[j] = ops.linear(h[-1], self.heads[j])                         # [C]
            tokens[j] = choose(logits[j])
            if j < self.G - 2:                                                  # feed it back at position j+2
                e = self.embeddings[j][tokens[j]][None]                         # [1, Dt]
                h = self.decoder.forward(e, self.cos[j + 2:j + 3], self.sin[j + 2:j + 3], cache)   # [1, Dt]
        return FrameCodes(tokens=tokens, logits=logits, inputs_embeds=x)
