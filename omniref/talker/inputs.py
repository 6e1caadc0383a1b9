"""Thinker states -> the talker's prefill input (HF `Qwen3OmniMoeForConditionalGeneration.generate`:
`_get_talker_user_parts`, `_get_talker_assistant_parts`).

The talker never sees token ids of the conversation; it sees *vectors* built from what the thinker computed:

    prompt (L tokens)                      thinker forwards (L + N - 1 rows: prompt, then generated 0..N-2)
    <im_start> system ... <im_end> \\n      --- dropped: only user turns condition the voice
    <im_start> user \\n [media] text ...   --> user part: media rows  hidden_projection(thinker_hidden[pos])
                  <im_end> \\n                              text rows   text_projection(thinker_embed[pos])
    <im_start> assistant \\n  g0 g1 ...    --> 9-row assistant prefix + trailing text (one row per talker step)

Assistant prefix, text half + codec half, row by row (A = text_projection(thinker_embed[a:])):

    row   text half            codec half (talker codec_embedding)
    0-2   A[0..2]              0           <im_start> assistant \\n
    3     tts_pad              codec_nothink_id      "no thinking"  marker
    4     tts_pad              codec_think_bos_id    empty think block ...
    5     tts_pad              codec_think_eos_id    ... closed at once
    6     tts_pad              speaker_id            which voice
    7     tts_bos              codec_pad_id          text starts
    8     A[3] (token g0)      codec_bos_id          codec starts: the first code frame is predicted here

The rest of the answer (g1 .. g_{N-2}, then tts_eos) is *trailing text*: the talker adds one row per decode
step to its codec input, so text and speech advance together (then tts_pad once the text has run out).

Legend: L prompt tokens, N thinker tokens generated, Th thinker hidden, Dt talker hidden, Lt talker prefill
length (user rows + 9), n_trail = N - 1.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import taps
from ..backend import ops
from ..weights import take_rows

__all__ = ["TalkerInputs", "resize_mlp", "user_positions", "tts_special_embeds", "build_talker_inputs",
           "talker_position_ids", "ASSISTANT_PREFIX_ROWS"]

ASSISTANT_PREFIX_ROWS = 9


@dataclass
class TalkerInputs:
    input_ids: np.ndarray             # [Lt] int64, only used for the rope index
    inputs_embeds: np.ndarray         # [Lt, Dt] talker prefill input
    trailing_text_hidden: np.ndarray  # [n_trail, Dt] added to decode step k while k < n_trail
    tts_special_embeds: np.ndarray    # [3, Dt] rows tts_bos, tts_eos, tts_pad
    position_ids: np.ndarray          # [3, Lt] float32 (rows temporal, height, width)

    @property
    def tts_pad(self) -> np.ndarray:  # [Dt] added to decode steps once the trailing text ran out
        return self.tts_special_embeds[2]


def resize_mlp(w, x: np.ndarray) -> np.ndarray:
    """`text_projection` / `hidden_projection`: fc2(silu(fc1(x))), both with bias.  [n, Th] -> [n, Dt]"""
    h = ops.silu(ops.linear(x, w["linear_fc1.weight"], w["linear_fc1.bias"]))  # [n, Ti]
    return ops.linear(h, w["linear_fc2.weight"], w["linear_fc2.bias"])          # [n, Dt]


def tts_special_embeds(weights, cfg) -> np.ndarray:
    """text_projection(thinker embed_tokens([tts_bos, tts_eos, tts_pad])) -> [3, Dt] (rows bos, eos, pad)."""
    ids = [cfg.tts_bos_token_id, cfg.tts_eos_token_id, cfg.tts_pad_token_id]
    key = "thinker.model.embed_tokens.weight"                                  # [V, Th]
    V = weights.shape(key)[0]
    for i in ids:
        if not 0 <= i < V:
            raise ValueError(f"tts token id {i} outside the thinker vocabulary [0, {V})")
    # read only the 3 rows: a real 152064-row table would be ~1.2 GB once widened to float32
    rows = take_rows(weights.raw(key), ids)                                    # [3, Th]
    taps.record("thinker.model.embed_tokens", rows, add_batch=True)          # the reference embeds them too
    return resize_mlp(weights.scope("talker.text_projection."), rows)         # [3, Dt]


def talker_position_ids(cfg, input_ids: np.ndarray, *, image_grid_thw=None, video_grid_thw=None,
                        video_second_per_grid=None, audio_feature_lengths=None) -> np.ndarray:
    """The thinker's multimodal rope index (positions.rope_index) over the talker ids -> [3, Lt] float32.

    Same walk as the thinker's, but with the *talker* config's token ids, `position_id_per_seconds` and
    `spatial_merge_size`, and always with use_audio_in_video off: the reference does not forward that flag to
    the talker, so a video that carries its own audio is read as text plus one audio block
    (HF `Qwen3OmniMoeTalkerForConditionalGeneration.get_rope_index`).
    """
    from ..thinker import positions
    pos, _ = positions.rope_index(
        np.asarray(input_ids, dtype=np.int64), positions.rope_ids_from_config(cfg.talker_config),
        image_grid_thw=image_grid_thw, video_grid_thw=video_grid_thw, second_per_grid=video_second_per_grid,
        audio_frames=audio_feature_lengths, use_audio_in_video=False)
    return pos                                                               # [3, Lt] float32


def user_positions(input_ids: np.ndarray, cfg) -> np.ndarray:
    """Prompt positions that belong to user turns, in order.  [L] -> [n_user] int

    A position belongs to the turn opened by the nearest `<im_start>` at or before it; the turn is a user turn
    when the token right after that `<im_start>` is `user_token_id`. (Positions before any `<im_start>` look at
    token 1, as the reference's clamped index does.)
    """
    L = input_ids.shape[0]
    idx = np.arange(L)
    opened = np.maximum.accumulate(np.where(input_ids == cfg.im_start_token_id, idx, -1))  # [L] turn start
    role = input_ids[np.minimum(np.maximum(opened, 0) + 1, L - 1)]                        # [L] role token
    return idx[role == cfg.user_token_id]


def build_talker_inputs(weights, cfg, input_ids, generated_ids, thinker_embed, thinker_hidden, *,
                        speaker: str | int = "ethan", thinker_eos_token_id: int | None = None,
                        image_grid_thw=None, video_grid_thw=None, video_second_per_grid=None,
                        audio_feature_lengths=None) -> TalkerInputs:
    """Prompt ids [L], generated ids [N], thinker_embed / thinker_hidden [L+N-1, Th] -> TalkerInputs.

    `thinker_embed` holds hidden_states[0] of every thinker forward (the prompt's spliced inputs_embeds, then
    the embeddings of generated tokens 0..N-2); `thinker_hidden` holds hidden_states[accept_hidden_layer] of the
    same forwards. `speaker` is a name from config `speaker_id` or a codec id. `thinker_eos_token_id` (an id
    or a list; default `im_end_token_id`) marks where the spoken text ends.
    """
    tc = cfg.talker_config
    ids = np.asarray(input_ids, dtype=np.int64).reshape(-1)                  # [L]
    gen = np.asarray(generated_ids, dtype=np.int64).reshape(-1)              # [N]
    emb = np.asarray(thinker_embed, dtype=np.float32)
    hid = np.asarray(thinker_hidden, dtype=np.float32)
    emb = emb.reshape(emb.shape[-2], emb.shape[-1]) if emb.ndim == 3 else emb  # [1, L+N-1, Th] -> [L+N-1, Th]
    hid = hid.reshape(hid.shape[-2], hid.shape[-1]) if hid.ndim == 3 else hid  # [1, L+N-1, Th] -> [L+N-1, Th]
    L, N = ids.shape[0], gen.shape[0]
    if N < 2:
        raise ValueError(f"the talker needs at least 2 generated thinker tokens (the first text token sits in "
                         f"the assistant prefix, the rest trail); got {N}")
    if emb.shape != hid.shape or emb.ndim != 2 or emb.shape[0] != L + N - 1:
        raise ValueError(f"thinker_embed {emb.shape} and thinker_hidden {hid.shape} must both be "
                         f"[L + N - 1, Th] = [{L + N - 1}, Th] for a prompt of L={L} and N={N} generated tokens")
    if emb.shape[1] != tc.thinker_hidden_size:
        raise ValueError(f"thinker hidden size {emb.shape[1]} != talker_config.thinker_hidden_size "
                         f"{tc.thinker_hidden_size}")
    speaker_id = tc.speaker(speaker) if isinstance(speaker, str) else int(speaker)
    codec_table = weights["talker.model.codec_embedding.weight"]             # [Vt, Dt]
    if not 0 <= speaker_id < codec_table.shape[0]:
        raise ValueError(f"speaker id {speaker_id} outside the talker vocabulary [0, {codec_table.shape[0]})")
    text_proj = weights.scope("talker.text_projection.")
    bos, eos, pad = special = tts_special_embeds(weights, cfg)               # 3 x [Dt]

    # 1. user part: media rows from the accept_hidden_layer state, text rows from the embeddings
    th = cfg.thinker_config
    user = user_positions(ids, cfg)                                         # [n_user]
    media = np.isin(ids[user], [th.audio_token_id, th.image_token_id, th.video_token_id])   # [n_user] bool
    user_rows = np.empty((user.shape[0], codec_table.shape[1]), np.float32)  # [n_user, Dt]
    if media.any():
        user_rows[media] = resize_mlp(weights.scope("talker.hidden_projection."), hid[user[media]])  # [n_media, Dt]
    if (~media).any():
        user_rows[~media] = resize_mlp(text_proj, emb[user[~media]])        # [n_text, Dt]

    # 2. the 9-row assistant prefix (table in the module docstring)
    starts = np.flatnonzero((ids[:-1] == cfg.im_start_token_id) & (ids[1:] == cfg.assistant_token_id))
    if starts.size == 0:
        raise ValueError("the prompt has no '<im_start> assistant' header (im_start_token_id "
                         f"{cfg.im_start_token_id} followed by assistant_token_id {cfg.assistant_token_id})")
    a = int(starts[-1])
    A = resize_mlp(text_proj, emb[a:])                                       # [L-a+N-1, Dt]
    if A.shape[0] < 4:
        raise ValueError(f"the assistant header at position {a} must be '<im_start> assistant \\n' followed by "
                         f"at least one generated token; only {A.shape[0]} rows from there")
    text_half = np.stack([A[0], A[1], A[2], pad, pad, pad, pad, bos, A[3]])  # [9, Dt]
    codec_ids = [tc.codec_nothink_id, tc.codec_think_bos_id, tc.codec_think_eos_id, speaker_id,
                 tc.codec_pad_id, tc.codec_bos_id]
    codec_half = np.concatenate([np.zeros((3, codec_table.shape[1]), np.float32), codec_table[codec_ids]])
    prefix = text_half + codec_half                                          # [9, Dt]

    # 3. trailing text: entry j holds generated token j+1; after the text, tts_eos
    trailing = np.concatenate([A[4:], eos[None]])                            # [N-1, Dt]
    eos_ids = cfg.im_end_token_id if thinker_eos_token_id is None else thinker_eos_token_id
    hits = np.flatnonzero(np.isin(gen, np.asarray(eos_ids, np.int64).reshape(-1)))   # one id or a list
    if hits.size:                      # text ended at generated token e: marker at entry e, pads after it
        e = int(hits[0])
        trailing[e + 1:] = pad
        if e < trailing.shape[0]:
            trailing[e] = eos

    talker_ids = np.concatenate([ids[user], np.full(ASSISTANT_PREFIX_ROWS, cfg.tts_pad_token_id, np.int64)])
    positions = talker_position_ids(cfg, talker_ids, image_grid_thw=image_grid_thw,
                                    video_grid_thw=video_grid_thw, video_second_per_grid=video_second_per_grid,
                                    audio_feature_lengths=audio_feature_lengths)
    inputs_embeds = np.concatenate([user_rows, prefix])                      # [Lt, Dt]
    taps.record("talker.inputs_embeds", inputs_embeds, add_batch=True)
    taps.record("talker.trailing_text_hidden", trailing, add_batch=True)
    return TalkerInputs(input_ids=talker_ids, inputs_embeds=inputs_embeds,
                        trailing_text_hidden=trailing, tts_special_embeds=special, position_ids=positions)
