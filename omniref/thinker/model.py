"""The Thinker: prompt ids + media features -> hidden states, logits, generated text ids
(HF `Qwen3OmniMoeThinkerForConditionalGeneration`).

    input_ids [L] ──embed_tokens──> [L, H] ──write audio/image/video features into their placeholders──> x
    x ── decoder layer 0 ──(+DeepStack 0 at visual rows)── layer 1 ──(+DeepStack 1)── ... ── final RMSNorm ── lm_head
         rotary angles from the 3-row multimodal positions (positions.py), interleaved MRoPE (decoder.rope_cos_sin)

Every layer is attention (GQA, per-head q/k RMSNorm) + a sparse MoE (decoder.py). DeepStack (Meng et al. 2024,
as used by Qwen3-VL): the vision encoder also emits features from intermediate blocks; feature k is added to
the residual stream at the visual token rows right after decoder layer k, so low-level visual detail enters
the language model a few layers deep instead of only at its input.

Hidden-state recording (what HF `output_hidden_states=True` returns): index 0 = the fused
input embeddings, index i = raw output of layer i-1 *before* its DeepStack addition, last index = the
final-norm output. The talker's `accept_hidden_layer` indexes this same list.

Legend: L prompt tokens, H hidden, V vocabulary, Na/Ni/Nv audio/image/video feature rows, K DeepStack taps.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from omniref import taps
from omniref.backend import ops
from omniref.decoder import Decoder, KVCache, rope_cos_sin
from omniref.thinker.positions import decode_positions, rope_ids_from_config, rope_index
from omniref.thinker.sampling import SamplingConfig, next_token, progress_bar
from omniref.weights import take_rows

__all__ = ["Media", "ThinkerPrompt", "Thinker", "GenerateResult", "encode_media"]

F32 = np.float32


@dataclass
class Media:
    """Encoder outputs in prompt order. deepstack lists hold one [N, H] array per DeepStack tap."""
    audio: np.ndarray | None = None                         # [Na, H]
    image: np.ndarray | None = None                         # [Ni, H]
    video: np.ndarray | None = None                         # [Nv, H]
    image_deepstack: list = field(default_factory=list)     # K x [Ni, H]
    video_deepstack: list = field(default_factory=list)     # K x [Nv, H]


@dataclass
class ThinkerPrompt:
    """Everything the thinker reads for one prompt (the processor's outputs, batch of 1)."""
    input_ids: np.ndarray                                   # [L] int64
    input_features: np.ndarray | None = None                # [n_clips, 128, F] log-mel
    feature_attention_mask: np.ndarray | None = None        # [n_clips, F] valid frames
    pixel_values: np.ndarray | None = None                  # [P, 3*2*p*p] image patches
    image_grid_thw: np.ndarray | None = None                # [n_img, 3]
    video_pixel_values: np.ndarray | None = None            # [Pv, 3*2*p*p]
    video_grid_thw: np.ndarray | None = None                # [n_vid, 3]
    video_second_per_grid: np.ndarray | None = None         # [n_vid]
    use_audio_in_video: bool = False

    @property
    def audio_frames(self) -> np.ndarray | None:
        """Valid mel frames per clip [n_clips] (what the rope index and the audio encoder count)."""
        m = self.feature_attention_mask
        return None if m is None else np.asarray(m).sum(axis=-1).astype(np.int64)


def encode_media(weights, thinker_cfg, prompt: ThinkerPrompt) -> Media:
    """Run the audio and vision encoders on the prompt's media (images and videos are encoded separately)."""
    media = Media()
    if prompt.input_features is not None:
        from omniref.audio.encoder import encode_audio
        media.audio = encode_audio(weights.scope("thinker.audio_tower."), thinker_cfg.audio_config,
                                   prompt.input_features, prompt.feature_attention_mask)
    if prompt.pixel_values is not None or prompt.video_pixel_values is not None:
        from omniref.vision.encoder import encode_vision
        vis = weights.scope("thinker.visual.")
        if prompt.pixel_values is not None:
            media.image, media.image_deepstack = encode_vision(vis, thinker_cfg.vision_config,
                                                               prompt.pixel_values, prompt.image_grid_thw)
        if prompt.video_pixel_values is not None:
            media.video, media.video_deepstack = encode_vision(vis, thinker_cfg.vision_config,
                                                               prompt.video_pixel_values, prompt.video_grid_thw)
    return media


class Thinker:
    """The thinker text model with its multimodal front end. `weights`: the whole checkpoint (Weights)."""

    def __init__(self, weights, config):
        self.weights, self.config = weights, config
        self.cfg = config.thinker_config
        self.text = self.cfg.text_config
        self.decoder = Decoder.from_config(weights.scope("thinker.model."), self.text)
        self.rope_ids = rope_ids_from_config(self.cfg)
        vocab = weights.shape("thinker.model.embed_tokens.weight")[0]
        if vocab != self.text.vocab_size:
            raise ValueError(f"embed_tokens has {vocab} rows but text_config.vocab_size is {self.text.vocab_size}")

    # ---- pieces -----------------------------------------------------------------------------------------
    def embed(self, ids) -> np.ndarray:
        """[L] ids -> [L, H] token embeddings."""
        ids = np.asarray(ids, np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.text.vocab_size):
            raise ValueError(f"token ids must lie in [0, {self.text.vocab_size}), got range "
                             f"[{ids.min()}, {ids.max()}]")
        x = take_rows(self.weights.raw("thinker.model.embed_tokens.weight"), ids)      # only these rows widen
        taps.record("thinker.model.embed_tokens", x, add_batch=True)
        return x                                                                  # [L, H]

    def fuse(self, input_ids, media: Media) -> tuple[np.ndarray, np.ndarray, list]:
        """Embeddings with the encoder rows written into the placeholders.

        -> inputs_embeds [L, H], visual_mask [L] bool (image or video rows), deepstack K x [n_visual, H]
        (image rows take the image DeepStack features in order, video rows the video ones).
        """
        ids = np.asarray(input_ids, np.int64).reshape(-1)
        x = self.embed(ids)                                                   # [L, H]
        masks = {}
        for name, tok, feats in (("audio", self.cfg.audio_token_id, media.audio),
                                 ("image", self.cfg.image_token_id, media.image),
                                 ("video", self.cfg.video_token_id, media.video)):
            mask = ids == tok
            n_feat = 0 if feats is None else feats.shape[0]
            if int(mask.sum()) != n_feat:
                raise ValueError(f"{name} placeholders and features do not match: the prompt has "
                                 f"{int(mask.sum())} {name} tokens (id {tok}) but the encoder produced {n_feat} "
                                 f"{name} feature rows")
            if n_feat:
                if feats.shape[1] != x.shape[1]:
                    raise ValueError(f"{name} features have width {feats.shape[1]}, the thinker hidden size is "
                                     f"{x.shape[1]}")
                x[mask] = feats                                               # rows in order
            masks[name] = mask
        visual = masks["image"] | masks["video"]                              # [L]
        deepstack = []
        n_taps = max(len(media.image_deepstack), len(media.video_deepstack))
        for k in range(n_taps):
            joint = np.zeros((int(visual.sum()), x.shape[1]), F32)            # [n_visual, H]
            if media.image is not None:
                joint[masks["image"][visual]] = media.image_deepstack[k]
            if media.video is not None:
                joint[masks["video"][visual]] = media.video_deepstack[k]
            deepstack.append(joint)
        return x, visual, deepstack

    def positions(self, prompt: ThinkerPrompt) -> tuple[np.ndarray, np.float32]:
        """Prompt rope positions [3, L] float32 and rope_delta (positions.py)."""
        return rope_index(prompt.input_ids, self.rope_ids, image_grid_thw=prompt.image_grid_thw,
                          video_grid_thw=prompt.video_grid_thw, second_per_grid=prompt.video_second_per_grid,
                          audio_frames=prompt.audio_frames, use_audio_in_video=prompt.use_audio_in_video)

    def forward(self, x: np.ndarray, positions: np.ndarray, cache: KVCache | None = None,
                visual_mask: np.ndarray | None = None, deepstack=(), hidden_states: list | None = None):
        """Decoder stack.  x [L, H], positions [3, L] -> final-norm hidden [L, H].

        With a cache, the L rows follow the cached tokens (their positions must say so).
        """
        taps.record("thinker.model.inputs_embeds", x, add_batch=True)       # what the text model reads
        taps.record("thinker.model.position_ids", positions[:, None, :])    # [3, 1, L]
        cos, sin = rope_cos_sin(positions, self.text.head_dim, self.text.rope_theta, self.text.mrope_section)

        def add_deepstack(i, h):                    # after layer i: + DeepStack feature i at the visual rows
            if i >= len(deepstack):
                return h
            h = h.copy()                            # the recorded hidden state stays the pre-addition one
            h[visual_mask] += deepstack[i]
            taps.record(f"thinker.model.deepstack.{i}", h, add_batch=True)
            return h

        return self.decoder.forward(x, cos, sin, cache=cache, hidden_states=hidden_states,
                                    after_layer=add_deepstack if len(deepstack) else None)

    def lm_head(self, h: np.ndarray) -> np.ndarray:
        """[n, H] final-norm hidden -> [n, V] logits (call it on the rows you need, not all L)."""
        return ops.linear(h, self.weights["thinker.lm_head.weight"])

    # ---- generation -------------------------------------------------------------------------------------
    def prefill(self, prompt: ThinkerPrompt, media: Media | None, cache: KVCache) -> GenerateResult:
        """The whole prompt in one forward (its K/V go into `cache`) -> positions and hidden states
        (hidden_states[0] the fused input embeddings, [-1] the final-norm output)."""
        media = encode_media(self.weights, self.cfg, prompt) if media is None else media
        x, visual, deepstack = self.fuse(prompt.input_ids, media)            # [L, H], [L], K x [n_visual, H]
        pos, delta = self.positions(prompt)                                   # [3, L], scalar
        hs = []
        self.forward(x, pos, cache, visual, deepstack, hidden_states=hs)      # hs: n_layers+1 x [L, H]
        return GenerateResult(position_ids=pos, rope_delta=delta, hidden_states=hs)

    def decode_step(self, tok: int, position: np.ndarray, cache: KVCache) -> tuple[np.ndarray, np.ndarray, list]:
        """One new token at position [3, 1] after the cached rows -> (embedding [1, H], logits [V], hidden states)."""
        e = self.embed([tok])                                                 # [1, H]
        hs = []
        h = self.forward(e, position, cache, hidden_states=hs)                # [1, H]
        return e, self.lm_head(h)[0], hs                                      # [1, H], [V], n_layers+1 x [1, H]

    def generate(self, prompt: ThinkerPrompt, max_new_tokens: int, sampling: SamplingConfig | None = None,
                 eos_token_id: int | None = None, media: Media | None = None, record_layer: int | None = None,
                 full_logits: bool = False, progress: bool | None = None) -> "GenerateResult":
        """Prefill the prompt, then decode token by token with a KV cache until eos or max_new_tokens
        (`GenerationMixin.generate` on Qwen3OmniMoeThinkerForConditionalGeneration, batch of 1).

        record_layer: a hidden-state index to collect over every forward (the talker's accept_hidden_layer).
        progress: a tqdm bar (thinker.sampling.progress_bar; None = only for runs over 64 tokens).
        """
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if record_layer is not None and not 0 <= record_layer <= self.text.num_hidden_layers:
            raise ValueError(f"record_layer {record_layer} outside 0..{self.text.num_hidden_layers}")
        sampling = sampling or SamplingConfig()
        rng = sampling.generator()
        eos = self.config.im_end_token_id if eos_token_id is None else int(eos_token_id)
        cache = KVCache()
        res = self.prefill(prompt, media, cache)
        L, hs = res.position_ids.shape[1], res.hidden_states
        res.logits = self.lm_head(hs[-1]) if full_logits else None                        # [L, V]
        res.logits_last = res.logits[-1] if full_logits else self.lm_head(hs[-1][-1:])[0]  # [V]
        embeds, recorded = [hs[0]], [hs[record_layer]] if record_layer is not None else []   # [L, H] each
        history = [int(t) for t in np.asarray(prompt.input_ids).reshape(-1)]  # for the repetition penalty
        out, step_logits = [next_token(res.logits_last, sampling, history, rng)], [res.logits_last]
        bar = progress_bar(max_new_tokens - 1, "thinker decode", "tok", progress)
        while len(out) < max_new_tokens and out[-1] != eos:                   # new token k sits at L + k - 1
            pos = decode_positions(L, res.rope_delta, 1, start=len(out) - 1)   # [3, 1]
            e, logits, step_hs = self.decode_step(out[-1], pos, cache)        # [1, H], [V]
            embeds.append(e)
            recorded += [step_hs[record_layer]] if record_layer is not None else []
            history.append(out[-1])
            step_logits.append(logits)                                        # [V]
            out.append(next_token(logits, sampling, history, rng))
            bar.update(1)
        bar.close()
        res.generated_ids = np.asarray(out, np.int64)                         # [n_new]
        res.step_logits = np.stack(step_logits)                               # [n_new, V]
        res.embeds = np.concatenate(embeds)                                   # [L + n_new - 1, H]
        res.recorded = np.concatenate(recorded) if recorded else None         # [L + n_new - 1, H]
        return res


@dataclass
class GenerateResult:
    position_ids: np.ndarray                   # [3, L]
    rope_delta: np.float32
    hidden_states: list                        # num_layers + 1 arrays [L, H] of the prefill
    logits: np.ndarray | None = None           # [L, V] (only when asked)
    logits_last: np.ndarray | None = None      # [V]
    generated_ids: np.ndarray | None = None    # [n_new]
    embeds: np.ndarray | None = None           # [L + n_new - 1, H] hidden_states[0] of every forward
    recorded: np.ndarray | None = None         # [L + n_new - 1, H] hidden_states[record_layer] of every forward
    step_logits: np.ndarray | None = None      # [n_new, V] the logits each generated token was chosen from


