"""Talker prefill input -> codec frames: the talker MoE decoder, its codec head and the generation loop
(HF `Qwen3OmniMoeTalkerForConditionalGeneration`, driven by `Qwen3OmniMoeForConditionalGeneration.generate`).

Each talker step emits codebook 0 of one 80 ms frame; the code predictor completes the frame; the whole frame
(all G embeddings summed) plus one row of trailing text is the next talker input:

    prefill(inputs_embeds [Lt, Dt]) ──> h ──codec_head──> scores ──penalty, suppress──> tok_0 ─┐
         ┌─────────────────────────────────────────────────────────────────────────────────┘
         └─> code predictor(h, E(tok_0)) -> g_1..g_{G-1}                 frame 0 = [tok_0, g_1, ..]
             x_1 = E(tok_0) + Σ_j E_cp[j-1](g_j) + trailing_text[0] ──> decode ──> h ──> tok_1 ...
    until tok = codec_eos_token_id (it gets no frame) or max_new_tokens.

The decoder is the thinker's (RMSNorm, GQA with q/k norms, interleaved MRoPE, causal) with the talker's
sizes and, in every layer, routed experts plus a sigmoid-gated shared expert (`omniref.decoder.moe`).
Decode step k sits at (last prefill position + 1 + k) in all three rows.

Legend: Lt talker prefill length, Dt talker hidden, Vt talker vocab (= codebook size + 1024 specials),
G num_code_groups, C codebook size, T frames, n_steps talker forwards (T + 1 when it ends with eos).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import taps
from ..backend import ops
from ..decoder import Decoder, KVCache, rope_cos_sin
from ..thinker.sampling import SamplingConfig, next_token, progress_bar
from .code_predictor import CodePredictor
from .inputs import TalkerInputs, build_talker_inputs

__all__ = ["Talker", "TalkerOutput", "suppressed_ids", "reference_sampling",
           "code_predictor_sampling"]


def suppressed_ids(vocab_size: int, eos_id: int) -> np.ndarray:
    """Codec ids the talker may never emit: the special range [Vt-1024, Vt) except codec eos (the
    `suppress_tokens` HF `Qwen3OmniMoeForConditionalGeneration.generate` gives the talker).

    (pad, bos, think markers and speaker ids are *inputs*; the only special the talker may say is "stop".)
    """
    ids = np.arange(max(0, vocab_size - 1024), vocab_size)
    return ids[ids != eos_id]


def reference_sampling(seed: int | None = None) -> SamplingConfig:
    """The reference `generate()` defaults for sampled speech: temperature 0.9, top-k 50, top-p 1.0,
    repetition penalty 1.05 (the goldens use the same penalty with greedy choice)."""
    return SamplingConfig(do_sample=True, temperature=0.9, top_k=50, top_p=1.0, repetition_penalty=1.05,
                          seed=seed)


def code_predictor_sampling(talker: SamplingConfig) -> SamplingConfig:
    """The code predictor follows the talker's do_sample; when sampling, the reference uses top-k 50, top-p 0.8."""
    if talker.greedy:
        return SamplingConfig(do_sample=False)
    return SamplingConfig(do_sample=True, temperature=1.0, top_k=50, top_p=0.8, seed=talker.seed)


@dataclass
class TalkerOutput:
    sequences: np.ndarray           # [n_steps] int64 codebook-0 tokens (may end with codec eos)
    codes: np.ndarray               # [G, T] int64, column t = frame t
    prefill_hidden: np.ndarray      # [Lt, Dt] final-norm hidden of the prefill
    step_logits: np.ndarray         # [n_steps, Vt] raw codec_head logits of every forward's last row
    step_hidden: np.ndarray         # [n_steps, Dt]
    step_inputs_embeds: np.ndarray  # [n_steps-1, Dt]
    step_position_ids: np.ndarray   # [3, n_steps-1] float32
    cp_inputs_embeds: np.ndarray    # [T, 2, Dt]
    cp_logits: np.ndarray           # [T, G-1, C]
    cp_tokens: np.ndarray           # [T, G-1] int64
    ended_with_eos: bool


class Talker:
    """The talker and its code predictor, from a checkpoint (`Weights`) and an `OmniConfig`."""

    def __init__(self, weights, cfg):
        self.cfg, self.tc = cfg, cfg.talker_config
        tt = self.tc.text_config
        self.weights = weights
        self.decoder = Decoder.from_config(weights.scope("talker.model."), tt)
        self.codec_embedding = weights["talker.model.codec_embedding.weight"]           # [Vt, Dt]
        self.codec_head = weights["talker.codec_head.weight"]                           # [Vt, Dt]
        Vt = self.codec_embedding.shape[0]
        if self.codec_head.shape[0] != Vt or Vt != tt.vocab_size:
            raise ValueError(f"talker vocab mismatch: codec_embedding {Vt} rows, codec_head "
                             f"{self.codec_head.shape[0]} rows, config vocab_size {tt.vocab_size}")
        cp = self.tc.code_predictor_config
        if int(cp.num_code_groups) != int(self.tc.num_code_groups):
            raise ValueError(f"talker_config.num_code_groups {self.tc.num_code_groups} != "
                             f"code_predictor_config.num_code_groups {cp.num_code_groups}")
        self.code_predictor = CodePredictor(weights.scope("talker.code_predictor."), cp)
        self.G, self.C = int(self.tc.num_code_groups), int(cp.vocab_size)
        for name, i in (("codec_eos_token_id", self.tc.codec_eos_token_id), ("codec_bos_id", self.tc.codec_bos_id)):
            if not 0 <= i < Vt:
                raise ValueError(f"talker_config.{name} = {i} is outside the talker vocabulary [0, {Vt})")

    # --- one forward -------------------------------------------------------------------------------------
    def forward(self, x: np.ndarray, positions: np.ndarray, cache: KVCache) -> np.ndarray:
        """x [L, Dt] at positions [3, L] (after the `len(cache)` cached rows) -> final-norm hidden [L, Dt]."""
        tt = self.tc.text_config
        taps.record("talker.model.position_ids", positions[:, None, :])              # [3, 1, L]
        cos, sin = rope_cos_sin(positions, tt.head_dim, tt.rope_theta, tt.mrope_section)  # [L, hd] each
        return self.decoder.forward(np.asarray(x, np.float32), cos, sin, cache)

    def logits(self, h: np.ndarray) -> np.ndarray:
        """codec_head: [..., Dt] -> [..., Vt] (codebook-0 ids and the special codec ids)."""
        return ops.linear(h, self.codec_head)

    # --- inputs from thinker states ----------------------------------------------------------------------
    def build_inputs(self, input_ids, generated_ids, thinker_embed, thinker_hidden, **kw) -> TalkerInputs:
        """See `omniref.talker.inputs.build_talker_inputs`."""
        return build_talker_inputs(self.weights, self.cfg, input_ids, generated_ids, thinker_embed,
                                   thinker_hidden, **kw)

    # --- the loop ----------------------------------------------------------------------------------------
    def generate(self, inputs: TalkerInputs, *, max_new_tokens: int = 4096,
                 sampling: SamplingConfig | None = None, progress: bool | None = None) -> TalkerOutput:
        """Prefill with `inputs`, then one frame per step until codec eos (the talker half of
        Qwen3OmniMoeForConditionalGeneration.generate: Qwen3OmniMoeTalkerForConditionalGeneration decoding).

        sampling: SamplingConfig of the talker (default: greedy with repetition penalty 1.05, the reference's
        default penalty). The code predictor samples (top-k 50, top-p 0.8) iff the talker does, from the same
        seeded generator. progress: a tqdm bar (thinker.sampling.progress_bar; None = only over 64 steps).
        """
        x, p = self._checked_inputs(inputs, max_new_tokens)                 # [Lt, Dt], [3, Lt]
        max_new_tokens = int(max_new_tokens)                                # 4096.0 is fine too
        sampling = sampling if sampling is not None else SamplingConfig(repetition_penalty=1.05)
        rng = sampling.generator()
        cp_sampling = code_predictor_sampling(sampling)
        cp_choose = (lambda z: int(np.argmax(z))) if cp_sampling.greedy else \
            (lambda z: next_token(z, cp_sampling, rng=rng))
        eos = int(self.tc.codec_eos_token_id)
        suppress = suppressed_ids(self.codec_head.shape[0], eos)
        trailing = np.asarray(inputs.trailing_text_hidden, np.float32).reshape(-1, x.shape[1])   # [n_trail, Dt]
        cache, tokens, frames, steps = KVCache(), [], [], {"logits": [], "hidden": [], "x": [], "pos": []}
        h = prefill_hidden = self.forward(x, p, cache)                      # [Lt, Dt]
        p = p[:, -1:]                                                       # [3, 1] last prefill position
        bar = progress_bar(max_new_tokens, "  talker steps", "step", progress)
        for s in range(max_new_tokens):
            scores = self.logits(h[-1])                                     # [Vt] raw
            tokens.append(next_token(scores, sampling, previous=tokens, rng=rng, suppress=suppress))
            steps["logits"].append(scores); steps["hidden"].append(h[-1])
            bar.update(1)
            if tokens[-1] == eos or s + 1 == max_new_tokens:                # the final token gets no frame
                break
            frames.append(self.code_predictor.predict_frame(h[-1], self.codec_embedding[tokens[-1]],
                                                            choose=cp_choose))
            x = self.next_input(tokens[-1], frames[-1], trailing[s] if s < len(trailing) else inputs.tts_pad)
            # decode positions: previous + 1 in every row, in float32 as the reference's generate() does
            # (video positions can be fractional; stepping by 1 keeps the exact same roundings)
            p = (p + np.float32(1)).astype(np.float32)                      # [3, 1]
            steps["x"].append(x); steps["pos"].append(p)
            h = self.forward(x[None], p, cache)                             # [1, Dt]
        bar.close()
        return self._output(tokens, frames, prefill_hidden, steps, eos)

    def _checked_inputs(self, inputs: TalkerInputs, max_new_tokens) -> tuple[np.ndarray, np.ndarray]:
        """inputs_embeds [Lt, Dt] and position_ids [3, Lt] as float32, after checking them and max_new_tokens."""
        if int(max_new_tokens) != max_new_tokens or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens}")
        x0 = np.asarray(inputs.inputs_embeds, np.float32)
        Dt = self.codec_embedding.shape[1]
        if x0.ndim != 2 or x0.shape[1] != Dt or x0.shape[0] < 1:
            raise ValueError(f"talker inputs_embeds must be [Lt, {Dt}], got {list(x0.shape)}")
        pos0 = np.asarray(inputs.position_ids, np.float32).reshape(3, -1)
        if pos0.shape[1] != x0.shape[0]:
            raise ValueError(f"talker position_ids cover {pos0.shape[1]} rows but inputs_embeds has {x0.shape[0]}")
        return x0, pos0

    def next_input(self, tok: int, frame, text_row: np.ndarray) -> np.ndarray:
        """The next talker input "hears" the whole frame just spoken, plus one row of the text still to be
        spoken: E(tok_0) + Σ_j E_cp[j-1](g_j) + text_row  -> [Dt]."""
        x = self.codec_embedding[tok] + self.code_predictor.residual_embedding(frame.tokens)   # [Dt]
        return x + text_row                                                                    # [Dt]

    def _output(self, tokens: list, frames: list, prefill_hidden: np.ndarray, steps: dict, eos: int) -> TalkerOutput:
        """Stack the per-step records; codes [G, T] has frame t in column t (codebook 0 = the talker's token)."""
        T, G, C, Dt = len(frames), self.G, self.C, prefill_hidden.shape[1]
        codes = np.zeros((G, T), np.int64)
        for t, f in enumerate(frames):
            codes[0, t], codes[1:, t] = tokens[t], f.tokens
        taps.record("talker.codes", codes, add_batch=True)                  # what Code2Wav receives [1, G, T]
        return TalkerOutput(
            sequences=np.asarray(tokens, np.int64), codes=codes, prefill_hidden=prefill_hidden,
            step_logits=np.stack(steps["logits"]), step_hidden=np.stack(steps["hidden"]),        # [n_steps, *]
            step_inputs_embeds=np.stack(steps["x"]) if steps["x"] else np.zeros((0, Dt), np.float32),
            step_position_ids=np.concatenate(steps["pos"], axis=1) if steps["pos"]
            else np.zeros((3, 0), np.float32),                                                   # [3, n_steps-1]
            cp_inputs_embeds=np.stack([f.inputs_embeds for f in frames]) if frames
            else np.zeros((0, 2, Dt), np.float32),                                               # [T, 2, Dt]
            cp_logits=np.stack([f.logits for f in frames]) if frames else np.zeros((0, G - 1, C), np.float32),
            cp_tokens=codes[1:].T.copy(), ended_with_eos=bool(tokens and tokens[-1] == eos))
