"""Token ids -> 3-D multimodal rope positions (HF `Qwen3OmniMoeThinkerForConditionalGeneration.get_rope_index`).

Qwen3-Omni gives every token three position numbers instead of one: a temporal one, a height one and a width
one (rows 0, 1, 2). Text advances all three together, so for a text-only prompt the three rows are the
ordinary `0..L-1`. Vision tokens spread out over a grid: the `h/m x w/m` merged patches of an image share
one temporal value and take their row/column index as height/width. Video time advances at
`position_id_per_seconds` positions per second of video, so it can be fractional. Audio tokens are
consecutive (one position per encoder output token, i.e. 80 ms of sound).

    tokens   : <im_start> user \\n <vision_start> [img][img][img][img] <vision_end> hello
    temporal :     0       1   2        3          4    4    4    4        6          7
    height   :     0       1   2        3          4    4    5    5        6          7
    width    :     0       1   2        3          4    5    4    5        6          7

After a media block, text continues at 1 + the largest position of the block just written (here 5 + 1), so
a prompt's last position is usually smaller than its length: `rope_deltas = max + 1 - L` (negative) shifts
the positions of the tokens generated afterwards (`decode_positions`).

Legend: L tokens, n clips/images/videos, t/h/w grid sizes in patches, m `spatial_merge_size`.

The walk below follows the reference's dispatch rules block by block (the order in which it looks for the
next `<vision_start>` / `<audio_start>`, and the fact that text resumes at 1 + the maximum of the *last*
block written), because the goldens were made by it and because the talker reuses the same rules with its own
ids and `use_audio_in_video` forced off (HF `Qwen3OmniMoeTalkerForConditionalGeneration.get_rope_index`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["RopeIds", "rope_ids_from_config", "Block", "cut_blocks", "block_positions", "rope_index",
           "decode_positions", "audio_output_length"]

F32 = np.float32


def audio_output_length(n_frames: int) -> int:
    """Number of audio-encoder tokens for a clip of `n_frames` mel frames (HF `_get_feat_extract_output_lengths`).

    The audio encoder owns the definition (omniref.audio.encoder); the rope index and the prompt builder
    call it through this wrapper so that all three agree by construction.
    """
    from omniref.audio.encoder import audio_output_length as out_len
    return int(out_len(int(n_frames)))


@dataclass(frozen=True)
class RopeIds:
    """The ids and constants the rope index needs (thinker's or talker's; both configs carry them)."""

    image_token_id: int
    video_token_id: int
    audio_token_id: int
    vision_start_token_id: int
    audio_start_token_id: int
    position_id_per_seconds: float
    spatial_merge_size: int


def rope_ids_from_config(cfg) -> RopeIds:
    """RopeIds from a thinker_config (merge size from its vision_config) or a talker_config (own field)."""
    merge = getattr(cfg, "spatial_merge_size", None)
    if merge is None:
        merge = cfg.vision_config.spatial_merge_size
    return RopeIds(image_token_id=int(cfg.image_token_id), video_token_id=int(cfg.video_token_id),
                   audio_token_id=int(cfg.audio_token_id), vision_start_token_id=int(cfg.vision_start_token_id),
                   audio_start_token_id=int(cfg.audio_start_token_id),
                   position_id_per_seconds=float(cfg.position_id_per_seconds), spatial_merge_size=int(merge))


def _run(start: F32, n: int) -> np.ndarray:
    """n consecutive positions from `start` in all three rows: [3, n] float32 (text and audio)."""
    return np.broadcast_to(np.arange(n, dtype=F32) + F32(start), (3, n)).copy()


def _vision_grid(start: F32, grid_thw: Sequence[int], t_step: F32, merge: int) -> np.ndarray:
    """Positions of one image/video's merged tokens: [3, t*(h/m)*(w/m)] float32, row-major over (t, i, j).

    temporal = start + t*t_step, height = start + i, width = start + j. `t_step` is the float32 number of
    positions per temporal grid (position_id_per_seconds for images, second_per_grid * that for videos).
    """
    t, h, w = (int(v) for v in grid_thw)
    gh, gw = h // merge, w // merge
    # float32 like the reference: (arange(t) * second_per_grid) * position_id_per_seconds, each step rounded
    tt = np.repeat(np.arange(t, dtype=F32) * t_step[0] * t_step[1], gh * gw)     # [t*gh*gw]
    ii = np.tile(np.repeat(np.arange(gh, dtype=F32), gw), t)                      # [t*gh*gw]
    jj = np.tile(np.arange(gw, dtype=F32), t * gh)                                # [t*gh*gw]
    return np.stack([tt, ii, jj]) + F32(start)                                    # [3, t*gh*gw]


def _interleave(video: np.ndarray, audio: np.ndarray) -> list[np.ndarray]:
    """Merge video [3, Nv] and audio [3, Na] columns by temporal value (video first on ties): list of slices.

    Returned as the list of pieces in emission order, because the text after the block resumes at
    1 + the maximum of the *last piece* written (the reference's rule), not of the whole block.
    """
    pieces, iv, ia = [], 0, 0
    while iv < video.shape[1] and ia < audio.shape[1]:
        if video[0, iv] <= audio[0, ia]:
            pieces.append(video[:, iv:iv + 1]); iv += 1
        else:
            pieces.append(audio[:, ia:ia + 1]); ia += 1
    if iv < video.shape[1]:
        pieces.append(video[:, iv:])
    if ia < audio.shape[1]:
        pieces.append(audio[:, ia:])
    return pieces


@dataclass(frozen=True)
class Block:
    """One media block of the prompt: its markers and the media tokens between them.

    kind: "audio" | "image" | "video" | "audio_in_video" (a video interleaved with its own audio track).
    Tokens [start, start + n_open) are the opening markers <vision_start>[<audio_start>] (<audio_start> for
    audio), then `n_media` media tokens, then `n_close` closing markers [<audio_end>]<vision_end>.
    """
    kind: str
    start: int                       # index of the first opening marker in the prompt
    n_open: int                      # 1, or 2 for audio_in_video
    n_close: int                     # 1, or 2 for audio_in_video
    n_audio: int = 0                 # audio tokens (audio, audio_in_video)
    grid_thw: tuple = ()             # (t, h, w) patch grid (image, video, audio_in_video)
    t_step: tuple = ()               # (second_per_grid, position_id_per_seconds) float32: temporal step factors
    merge: int = 1                   # spatial_merge_size

    @property
    def n_visual(self) -> int:
        """Merged visual tokens t*h*w/m^2 (0 for audio)."""
        return int(np.prod(self.grid_thw)) // self.merge ** 2 if self.grid_thw else 0

    @property
    def end(self) -> int:
        """Index of the first token after the block."""
        return self.start + self.n_open + self.n_audio + self.n_visual + self.n_close


def cut_blocks(toks: list[int], ids: RopeIds, img: np.ndarray, vid: np.ndarray, spg: np.ndarray,
               frames: list[int], use_audio_in_video: bool) -> list[Block]:
    """Cut the prompt [L] into its media blocks, in order (text lies between and around them).

    img [n_img, 3] / vid [n_vid, 3] patch grids, spg [n_vid] seconds per temporal grid, frames [n_clips] valid
    mel frames, each consumed in prompt order. Follows the dispatch of HF `get_rope_index`: count the blocks
    up front, then repeatedly take whichever of the next <vision_start> / <audio_start> comes first.
    """
    L = len(toks)
    pps, merge = F32(ids.position_id_per_seconds), ids.spatial_merge_size
    after_vs = [toks[i + 1] for i in range(L - 1) if toks[i] == ids.vision_start_token_id]
    left_img = after_vs.count(ids.image_token_id)
    left_vid = after_vs.count(ids.audio_start_token_id if use_audio_in_video else ids.video_token_id)
    left_aud = toks.count(ids.audio_start_token_id)
    n_blocks = left_img + left_aud + (0 if use_audio_in_video else left_vid)
    has_vision = ids.image_token_id in toks or ids.video_token_id in toks
    blocks, st, i_img, i_vid, i_aud = [], 0, 0, 0, 0      # st: first token not yet in a block or its text
    for found in range(n_blocks):
        vs = toks.index(ids.vision_start_token_id, st) if has_vision and (left_img > 0 or left_vid > 0) else L + 1
        as_ = toks.index(ids.audio_start_token_id, st) if ids.audio_token_id in toks and left_aud > 0 else L + 1
        first = min(vs, as_)
        if first > L:
            raise ValueError(f"rope index: expected {n_blocks} media blocks but found only {found} in {L} tokens")
        if first == as_:                                     # <audio_start> audio x n <audio_end>
            b = Block("audio", first, 1, 1, n_audio=audio_output_length(frames[i_aud]))
            i_aud += 1; left_aud -= 1
        elif toks[vs + 1] == ids.image_token_id:             # <vision_start> image x t*h*w/m^2 <vision_end>
            b = Block("image", first, 1, 1, grid_thw=tuple(img[i_img]), t_step=(F32(1), pps), merge=merge)
            i_img += 1; left_img -= 1
        elif toks[vs + 1] == ids.video_token_id:             # <vision_start> video x t*h*w/m^2 <vision_end>
            b = Block("video", first, 1, 1, grid_thw=tuple(vid[i_vid]), t_step=(spg[i_vid], pps), merge=merge)
            i_vid += 1; left_vid -= 1
        elif vs + 1 == as_:                                  # <vision_start><audio_start> both, by time <..><..>
            b = Block("audio_in_video", first, 2, 2, n_audio=audio_output_length(frames[i_aud]),
                      grid_thw=tuple(vid[i_vid]), t_step=(spg[i_vid], pps), merge=merge)
            i_aud += 1; i_vid += 1; left_aud -= 1; left_vid -= 1
        else:
            raise ValueError(f"token {toks[vs + 1]} after <vision_start> at index {vs} is neither an image, "
                             f"a video nor an audio start token")
        blocks.append(b)
        st = b.end
    return blocks


def block_positions(b: Block, start: F32) -> list[np.ndarray]:
    """Positions of one block's media tokens from `start`: [3, n] float32 pieces in token order.

    Audio is consecutive; an image/video is its grid (temporal step second_per_grid * position_id_per_seconds);
    audio_in_video merges the two by temporal value, one piece per switch (text after the block resumes at
    1 + the maximum of the *last* piece, the reference's rule).
    """
    if b.kind == "audio":
        return [_run(start, b.n_audio)]                                           # [3, n_audio]
    grid = _vision_grid(start, b.grid_thw, b.t_step, b.merge)                     # [3, t*h*w/m^2]
    if b.kind in ("image", "video"):
        return [grid]
    return _interleave(grid, _run(start, b.n_audio))                              # pieces of [3, k]


def rope_index(input_ids, ids: RopeIds, *, image_grid_thw=None, video_grid_thw=None, second_per_grid=None,
               audio_frames=None, use_audio_in_video: bool = False) -> tuple[np.ndarray, np.float32]:
    """[L] token ids -> (positions [3, L] float32, rope_delta float32 scalar = max + 1 - L)
    (HF `Qwen3OmniMoeThinkerForConditionalGeneration.get_rope_index`, batch of 1).

    image_grid_thw [n_img, 3], video_grid_thw [n_vid, 3] (patch grids, in prompt order), second_per_grid
    [n_vid] (seconds per temporal grid of each video), audio_frames [n_clips] (valid mel frames of each clip,
    in prompt order; the token count comes from `audio_output_length`).
    """
    toks = [int(v) for v in np.asarray(input_ids).reshape(-1)]
    L = len(toks)
    if image_grid_thw is None and video_grid_thw is None:
        # no vision at all: plain 1-D positions in all rows (audio-only prompts too), delta 0
        return _run(F32(0), L), F32(0)
    img = np.zeros((0, 3), np.int64) if image_grid_thw is None else np.asarray(image_grid_thw).reshape(-1, 3)
    vid = np.zeros((0, 3), np.int64) if video_grid_thw is None else np.asarray(video_grid_thw).reshape(-1, 3)
    spg = np.ones(len(vid), F32) if second_per_grid is None else np.asarray(second_per_grid, F32).reshape(-1)
    frames = [] if audio_frames is None else [int(v) for v in np.asarray(audio_frames).reshape(-1)]

    pieces: list[np.ndarray] = []            # [3, n] float32 pieces in token order
    nxt = lambda: F32(pieces[-1].max() + 1) if pieces else F32(0)   # 1 + max of the last piece written
    st = 0                                   # index of the first token not yet given a position
    for b in cut_blocks(toks, ids, img, vid, spg, frames, use_audio_in_video):
        s = nxt()
        if b.start - st:                                     # text up to the block: consecutive positions
            pieces.append(_run(s, b.start - st)); s = F32(s + (b.start - st))       # [3, n_text]
        pieces.append(_run(s, b.n_open)); s = F32(s + b.n_open)                     # [3, n_open] markers
        pieces += block_positions(b, s)                                             # [3, n_media] in pieces
        pieces.append(_run(nxt(), b.n_close))                                       # [3, n_close] markers
        st = b.end
    if st < L:                                               # trailing text
        pieces.append(_run(nxt(), L - st))                                          # [3, L - st]
    pos = np.concatenate(pieces, axis=1)                     # [3, L]
    if pos.shape[1] != L:
        raise ValueError(f"rope index produced {pos.shape[1]} positions for {L} tokens: the placeholder "
                         f"counts do not match the media grids / clip lengths")
    return pos, F32(pos.max() + 1 - L)


def decode_positions(prompt_len: int, rope_delta, n_steps: int, start: int = 0) -> np.ndarray:
    """Positions of generated tokens start..start+n_steps-1: [3, n_steps] float32.

    Token number `prompt_len + k` of the whole sequence sits at `(prompt_len + k) + rope_delta` in every row,
    i.e. 1 + the prompt's largest position, + 1 per step.
    """
    k = np.arange(prompt_len + start, prompt_len + start + n_steps, dtype=F32)   # [n_steps]
    return np.broadcast_to(k + F32(rope_delta), (3, n_steps)).copy()
