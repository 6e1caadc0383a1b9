"""The exercises of every chapter and their checkers.

An exercise asks for one function (`name`); its checker calls the student's function on inputs it draws and
compares with omniref's own implementation (the readable specification), so no expected value is written
down here. A checker raises `Wrong` with a sentence saying what differed; `run_check` turns that into a
result. Reference solutions live apart, in `omniref/course/solutions.py`.

    python -m omniref.course list               every exercise and its task
    python -m omniref.course check 08.1 FILE    import FILE, take the function the exercise names, check it
    check("08.1", fn)                           the same from a notebook (omniref.course.check)
"""
from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

__all__ = ["Exercise", "Result", "Wrong", "EXERCISES", "run_check", "load_answer"]


class Wrong(AssertionError):
    """The answer ran but gave a wrong result (the message says where)."""


@dataclass(frozen=True)
class Exercise:
    id: str                         # "CC.N": chapter CC, exercise N
    kind: str                       # "implement" | "predict" | "find the bug"
    name: str                       # the function the answer defines
    task: str                       # one paragraph: what to write
    check: Callable                 # check(fn) -> None, raises Wrong


@dataclass
class Result:
    exercise: str
    passed: bool
    message: str


def _close(got, want, what: str, rtol: float = 1e-5, atol: float = 1e-6):
    got = np.asarray(got)
    want = np.asarray(want)
    if got.shape != want.shape:
        raise Wrong(f"{what}: shape {list(got.shape)}, expected {list(want.shape)}")
    if not np.allclose(got, want, rtol=rtol, atol=atol, equal_nan=True):
        diff = np.abs(got.astype(np.float64) - want).max()
        raise Wrong(f"{what}: max abs difference {diff:.3g} from the expected values")


def _equal(got, want, what: str):
    if isinstance(want, np.ndarray) or isinstance(got, np.ndarray):
        if np.shape(got) != np.shape(want) or not np.array_equal(got, want):
            raise Wrong(f"{what}: got {np.asarray(got).tolist()!s:.200}, expected {np.asarray(want).tolist()!s:.200}")
    elif got != want:
        raise Wrong(f"{what}: got {got!r}, expected {want!r}")


def _rng(seed=0):
    return np.random.default_rng(seed)


# ---------------------------------------------------------------------------------------------------------
# 01 sound -> mel
# ---------------------------------------------------------------------------------------------------------
def _check_01_1(fn):
    from omniref.audio import mel
    hz = np.array([0.0, 200.0, 999.0, 1000.0, 1001.0, 4000.0, 8000.0])
    _close(fn(hz), mel.hertz_to_mel(hz), "hertz_to_mel at 0, 200, 999, 1000, 1001, 4000, 8000 Hz")


def _check_01_2(fn):
    from omniref.audio import mel
    for n in (160, 1000, 16000, 16159, 33333):
        _, mask = mel.extract_features(np.zeros(n, np.float32))
        _equal(int(fn(n)), int(mask.sum()), f"n_frames({n})")


# ---------------------------------------------------------------------------------------------------------
# 02 audio encoder
# ---------------------------------------------------------------------------------------------------------
def _check_02_1(fn):
    from omniref.audio.encoder import conv_length
    for n in (0, 1, 2, 7, 8, 9, 59, 100, 101, 1000):
        _equal(int(fn(n)), conv_length(n), f"conv_length({n})")


def _check_02_2(fn):
    from omniref.audio.encoder import audio_output_length
    for n in (1, 37, 99, 100, 101, 250, 418, 3000):
        _equal(int(fn(n)), int(audio_output_length(n)), f"audio_tokens({n})")


# ---------------------------------------------------------------------------------------------------------
# 03 pixels -> patches
# ---------------------------------------------------------------------------------------------------------
def _check_03_1(fn):
    from omniref.vision.preprocess import smart_resize
    for hw in ((20, 30), (61, 117), (181, 263), (512, 600), (1080, 1920), (4000, 6000)):
        _equal(tuple(int(v) for v in fn(*hw, 32)), smart_resize(*hw, 32), f"smart_resize{hw} with factor 32")


def _check_03_2(fn):
    from omniref.vision.preprocess import smart_resize
    for hw in ((61, 117), (512, 600), (1080, 1920)):
        h, w = smart_resize(*hw, 32)
        _equal(int(fn(*hw)), h * w // 32 ** 2, f"image_tokens{hw} (patch 16, merge 2)")


# ---------------------------------------------------------------------------------------------------------
# 04 positions and RoPE
# ---------------------------------------------------------------------------------------------------------
def _check_04_1(fn):
    from omniref.decoder import rope_cos_sin
    pos = np.array([0, 1, 5, 100, 4096], np.float32)
    cos, sin = fn(pos, 16, 1_000_000.0)
    want_cos, want_sin = rope_cos_sin(pos, 16, 1_000_000.0)
    _close(cos, want_cos, "cos", rtol=1e-4, atol=1e-5)
    _close(sin, want_sin, "sin", rtol=1e-4, atol=1e-5)


def _check_04_2(fn):
    from omniref import nn
    x = _rng(4).standard_normal((2, 3, 8)).astype(np.float32)
    _close(fn(x), nn.rotate_half(x), "rotate_half on [2, 3, 8]")


# ---------------------------------------------------------------------------------------------------------
# 05 mixture of experts
# ---------------------------------------------------------------------------------------------------------
def _route_reference(probs, k, norm):
    chosen = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
    w = np.take_along_axis(probs, chosen, axis=-1)
    return chosen, (w / w.sum(-1, keepdims=True) if norm else w)


def _check_05_1(fn):
    from omniref import nn
    probs = nn.softmax(_rng(5).standard_normal((7, 8)).astype(np.float32))
    for norm in (False, True):
        experts, weights = fn(probs, 2, norm)
        want_e, want_w = _route_reference(probs, 2, norm)
        _equal(np.asarray(experts), want_e, f"experts chosen (norm_topk_prob={norm})")
        _close(weights, want_w, f"mixing weights (norm_topk_prob={norm})")


def _check_05_2(fn):
    from omniref.decoder import swiglu
    r = _rng(6)
    x = r.standard_normal((5, 12)).astype(np.float32)
    w = {"gate_proj.weight": r.standard_normal((20, 12)).astype(np.float32),
         "up_proj.weight": r.standard_normal((20, 12)).astype(np.float32),
         "down_proj.weight": r.standard_normal((12, 20)).astype(np.float32)}
    _close(fn(x, w["gate_proj.weight"], w["up_proj.weight"], w["down_proj.weight"]), swiglu(x, w, ""),
           "swiglu(x, gate, up, down)", rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------------------
# 06 talker
# ---------------------------------------------------------------------------------------------------------
def _check_06_1(fn):
    from omniref.talker.model import suppressed_ids
    for vocab, eos in ((3072, 2150), (1048, 126), (1064, 142)):
        _equal(np.sort(np.asarray(fn(vocab, eos))), suppressed_ids(vocab, eos), f"suppressed_ids({vocab}, {eos})")


def _check_06_2(fn):
    from omniref.thinker.sampling import apply_repetition_penalty
    logits = np.array([2.0, -1.0, 0.5, -3.0, 4.0, 0.0], np.float32)
    for prev in ([0, 1], [1, 1, 3, 4], [5]):
        _close(fn(logits.copy(), prev, 1.05), apply_repetition_penalty(logits, prev, 1.05),
               f"penalty 1.05 after tokens {prev}")


# ---------------------------------------------------------------------------------------------------------
# 07 codes -> waveform
# ---------------------------------------------------------------------------------------------------------
def _check_07_1(fn):
    from omniref.codec.code2wav import output_length
    from omniref.config import Code2WavConfig
    for ups, rates in (((2, 2), (8, 5, 4, 3)), ((3, 2), (5, 4, 3))):
        cfg = Code2WavConfig(upsampling_ratios=list(ups), upsample_rates=list(rates))
        for T in (1, 2, 10, 50):
            _equal(int(fn(T, list(ups), list(rates))), output_length(T, cfg), f"output_length({T}, {ups}, {rates})")


def _check_07_2(fn):
    from omniref.codec.code2wav import embed_codes
    r = _rng(7)
    table = r.standard_normal((4 * 10, 6)).astype(np.float32)
    codes = r.integers(0, 10, (4, 5))
    _close(fn(codes, table, 10), embed_codes(codes, table, 10), "embed_codes(codes [4, 5], table [40, 6], 10)")


# ---------------------------------------------------------------------------------------------------------
# 08 fusion and the chat template
# ---------------------------------------------------------------------------------------------------------
def _tiny_prompt_ids():
    from omniref.thinker.prompt import PromptIds
    return PromptIds(im_start=1, im_end=2, system=3, user=4, assistant=5, nl=6, audio_start=7, audio_end=8,
                     audio=9, vision_start=10, vision_end=11, image=12, video=13, merge_size=2)


def _check_08_1(fn):
    from omniref.thinker.prompt import Audio, Image, Video, media_tokens
    ids = _tiny_prompt_ids()
    for item in (Audio(1), Audio(99), Audio(418), Audio(3000), Image((1, 4, 8)), Image((1, 36, 40)),
                 Video((2, 4, 8)), Video((5, 20, 36), second_per_grid=2.0)):
        _equal(int(fn(item, 2)), len(media_tokens(item, ids)) - 2, f"count_placeholders({item}, 2)")


def _check_08_2(fn):
    r = _rng(8)
    ids = np.array([3, 9, 9, 4, 9, 5])
    embeds = r.standard_normal((6, 4)).astype(np.float32)
    rows = r.standard_normal((3, 4)).astype(np.float32)
    want = embeds.copy()
    want[ids == 9] = rows
    got = fn(embeds.copy(), ids, 9, rows)
    _close(got, want, "write_rows: rows 1, 2, 4 replaced in order")
    try:
        fn(embeds.copy(), ids, 9, rows[:2])
    except ValueError:
        pass
    else:
        raise Wrong("write_rows must raise ValueError when 3 placeholders meet 2 rows")


def _check_08_3(fn):
    from omniref.thinker.prompt import chat_prompt
    ids = _tiny_prompt_ids()
    for content in ([40, 41], [], [7, 9, 9, 8, 50]):
        _equal([int(v) for v in fn(ids, content)], chat_prompt(ids, [content]).tolist(),
               f"chat_prompt_fixed(ids, {content})")


# ---------------------------------------------------------------------------------------------------------
# 09 TMRoPE
# ---------------------------------------------------------------------------------------------------------
def _check_09_1(fn):
    for t, spg, pps in ((3, 2.0, 13.0), (2, 2 / 3, 13.0), (4, 0.5, 25.0)):
        want = np.arange(t, dtype=np.float32) * np.float32(spg) * np.float32(pps)
        _close(np.asarray(fn(t, spg, pps), np.float32), want, f"video_times({t}, {spg:.3g}, {pps})")


def _check_09_2(fn):
    from omniref.thinker.prompt import Video, media_tokens
    ids = _tiny_prompt_ids()
    for grid, spg, frames in (((3, 4, 4), 2.0, 600), ((2, 4, 8), 2 / 3, 100), ((4, 2, 2), 0.5, 250)):
        block = media_tokens(Video(grid, spg, audio_frames=frames), ids)[2:-2]
        want = "".join("v" if b == ids.video else "a" for b in block)
        _equal("".join(fn(grid, spg, frames)), want, f"interleave_order({grid}, {spg:.3g}, {frames})")


def _check_09_3(fn):
    from omniref.thinker.positions import decode_positions
    for L, delta, k in ((89, -12.0, 0), (89, -12.0, 5), (325, -40.5, 3)):
        _close(float(fn(L, delta, k)), float(decode_positions(L, delta, 1, start=k)[0, 0]),
               f"decode_position({L}, {delta}, {k})")


# ---------------------------------------------------------------------------------------------------------
# 10 video input
# ---------------------------------------------------------------------------------------------------------
def _check_10_1(fn):
    from omniref.vision.preprocess import sample_frame_indices
    for total, vfps, fps in ((300, 30.0, 2.0), (90, 30.0, 1.0), (25, 25.0, 2.0), (3000, 25.0, 1.0)):
        _equal(np.asarray(fn(total, vfps, fps)), sample_frame_indices(total, video_fps=vfps, fps=fps),
               f"frame_indices({total}, {vfps}, {fps})")


def _check_10_2(fn):
    from omniref.vision.preprocess import smart_resize, VIDEO_MAX_PIXELS, VIDEO_MIN_PIXELS
    for n, H, W in ((4, 256, 512), (3, 256, 512), (16, 360, 640), (7, 480, 854)):
        h, w = smart_resize(H, W, 32, VIDEO_MIN_PIXELS, VIDEO_MAX_PIXELS)
        _equal(int(fn(n, H, W)), math.ceil(n / 2) * h * w // 32 ** 2, f"video_tokens({n}, {H}, {W})")


# ---------------------------------------------------------------------------------------------------------
# 11 the decoder block
# ---------------------------------------------------------------------------------------------------------
def _check_11_1(fn):
    from omniref import nn
    r = _rng(11)
    q = r.standard_normal((4, 5, 8)).astype(np.float32)
    k, v = r.standard_normal((2, 2, 5, 8)).astype(np.float32)
    _close(fn(q, k, v), nn.attention(q, k, v, causal=True), "causal GQA, 4 query heads on 2 kv heads",
           rtol=1e-4, atol=1e-5)


def _check_11_2(fn):
    from omniref.thinker.sampling import top_p_filter
    logits = np.array([3.0, 1.0, 2.5, -1.0, 0.0, 2.9], np.float32)
    for p in (0.1, 0.5, 0.8, 0.95):
        got = np.asarray(fn(logits.copy(), p))
        _equal(np.isfinite(got), np.isfinite(top_p_filter(logits, p)), f"tokens kept by top_p_filter(p={p})")


def _check_11_3(fn):
    from omniref import nn
    r = _rng(13)
    x = r.standard_normal((3, 4, 16)).astype(np.float32)
    w = (1 + 0.1 * r.standard_normal(16)).astype(np.float32)
    _close(fn(x, w, 1e-6), nn.rms_norm(x, w, 1e-6), "qk_norm of [3, 4, 16]", rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------
# 12 end to end
# ---------------------------------------------------------------------------------------------------------
def chunk_plan_reference(T: int, chunk_size: int, left_context: int) -> list[tuple[int, int, int]]:
    """(context start, chunk start, chunk end) of each chunk, the rule of Code2Wav.chunked_decode."""
    out, start = [], 0
    while start < T:
        end = min(start + chunk_size, T)
        ctx = left_context if start - left_context > 0 else start
        out.append((start - ctx, start, end))
        start = end
    return out


def _check_12_1(fn):
    for T, cs, lc in ((11, 4, 2), (6, 2, 1), (700, 300, 25), (3, 300, 25)):
        _equal([tuple(int(v) for v in c) for c in fn(T, cs, lc)], chunk_plan_reference(T, cs, lc),
               f"chunk_plan({T}, {cs}, {lc})")


def _check_12_2(fn):
    from omniref.config import Code2WavConfig
    from omniref.codec.code2wav import output_length
    cfg = Code2WavConfig()
    for T, cs in ((50, 300), (700, 300), (11, 4)):
        want = sum(output_length(e - s, cfg) for _, s, e in chunk_plan_reference(T, cs, 25)) / 24000
        _close(float(fn(T, cs)), want, f"streamed_seconds({T}, {cs})")


EXERCISES: dict[str, Exercise] = {e.id: e for e in [
    Exercise("01.1", "implement", "hertz_to_mel",
             "hertz_to_mel(f) -> mel: the Slaney scale, 3f/200 below 1 kHz and 15 + 27 ln(f/1000)/ln 6.4 above "
             "(f a float array).", _check_01_1),
    Exercise("01.2", "predict", "n_frames",
             "n_frames(n_samples) -> int: how many log-mel frames extract_features gives a clip of n samples.",
             _check_01_2),
    Exercise("02.1", "implement", "conv_length",
             "conv_length(n) -> int: frames left after three kernel-3, stride-2, padding-1 convolutions.",
             _check_02_1),
    Exercise("02.2", "predict", "audio_tokens",
             "audio_tokens(n_frames) -> int: audio encoder tokens for a clip of n mel frames (100-frame chunks).",
             _check_02_2),
    Exercise("03.1", "implement", "smart_resize",
             "smart_resize(height, width, factor) -> (h, w): multiples of factor nearest to the input, "
             "rescaled into the pixel budget [3136, 12845056] (down: floor, up: ceil).", _check_03_1),
    Exercise("03.2", "predict", "image_tokens",
             "image_tokens(height, width) -> int: visual tokens of an H x W photo (patch 16, merge 2).",
             _check_03_2),
    Exercise("04.1", "implement", "rope_cos_sin",
             "rope_cos_sin(positions [L], head_dim, theta) -> cos, sin [L, head_dim], split-half layout "
             "(angles repeated twice).", _check_04_1),
    Exercise("04.2", "find the bug", "rotate_half",
             "rotate_half(x): the chapter's buggy version pairs channel 2i with 2i+1 (GPT-J layout); write the "
             "split-half version that Qwen uses.", _check_04_2),
    Exercise("05.1", "implement", "route",
             "route(probs [L, E], k, norm_topk_prob) -> (experts [L, k] best first, weights [L, k]).",
             _check_05_1),
    Exercise("05.2", "implement", "swiglu",
             "swiglu(x [L, H], gate [I, H], up [I, H], down [H, I]) -> [L, H] = down(silu(gate x) * up x).",
             _check_05_2),
    Exercise("06.1", "implement", "suppressed_ids",
             "suppressed_ids(vocab_size, eos_id) -> ids the talker may never emit: [V-1024, V) except eos.",
             _check_06_1),
    Exercise("06.2", "implement", "repetition_penalty",
             "repetition_penalty(logits [V], previous ids, penalty) -> [V]: previous tokens' positive scores "
             "divided by penalty, negative ones multiplied.", _check_06_2),
    Exercise("07.1", "predict", "output_length",
             "output_length(T, upsampling_ratios, upsample_rates) -> samples Code2Wav makes from T frames.",
             _check_07_1),
    Exercise("07.2", "implement", "embed_codes",
             "embed_codes(codes [Q, T], table [Q*V, Hc], V) -> [T, Hc]: mean of the Q codebook rows per frame.",
             _check_07_2),
    Exercise("08.1", "predict", "count_placeholders",
             "count_placeholders(item, merge_size) -> int: placeholder tokens of an Audio, Image or Video item.",
             _check_08_1),
    Exercise("08.2", "implement", "write_rows",
             "write_rows(embeds [L, H], input_ids [L], token_id, rows [N, H]) -> [L, H] with the token_id rows "
             "replaced in order; ValueError when the counts differ.", _check_08_2),
    Exercise("08.3", "find the bug", "chat_prompt_fixed",
             "chat_prompt_fixed(ids, content): the chapter's chat_prompt_buggy drops the newline after "
             "'assistant'; return the correct user-turn prompt as a list of ids.", _check_08_3),
    Exercise("09.1", "implement", "video_times",
             "video_times(t, second_per_grid, position_id_per_seconds) -> [t] float32 temporal positions of "
             "the temporal grids (relative to the block start).", _check_09_1),
    Exercise("09.2", "implement", "interleave_order",
             "interleave_order(grid_thw, second_per_grid, audio_frames) -> list of 'v'/'a': the order of video "
             "and audio tokens in an audio-in-video block (13 positions per second, video first on ties).",
             _check_09_2),
    Exercise("09.3", "predict", "decode_position",
             "decode_position(prompt_len, rope_delta, k) -> the position (all three rows) of generated token k.",
             _check_09_3),
    Exercise("10.1", "implement", "frame_indices",
             "frame_indices(total_frames, video_fps, fps) -> indices of the frames kept when sampling at fps "
             "(at least 4, at most 768, a multiple of 2).", _check_10_1),
    Exercise("10.2", "predict", "video_tokens",
             "video_tokens(n_frames, height, width) -> placeholder tokens of a video of n sampled frames "
             "(patch 16, merge 2, 2 frames per temporal patch, the video pixel budget).", _check_10_2),
    Exercise("11.1", "implement", "gqa_attention",
             "gqa_attention(q [nh, L, hd], k [nkv, L, hd], v [nkv, L, hd]) -> [nh, L, hd], causal, scaled by "
             "hd^-1/2; query head h reads kv head h // (nh // nkv).", _check_11_1),
    Exercise("11.2", "implement", "top_p",
             "top_p(logits [V], p) -> [V]: keep the smallest most-likely set whose probability reaches p "
             "(the crossing token kept), -inf elsewhere.", _check_11_2),
    Exercise("11.3", "implement", "qk_norm",
             "qk_norm(x [..., hd], weight [hd], eps) -> RMSNorm over the last axis times weight.", _check_11_3),
    Exercise("12.1", "implement", "chunk_plan",
             "chunk_plan(T, chunk_size, left_context) -> [(context_start, start, end), ...] as "
             "Code2Wav.chunked_decode cuts T frames.", _check_12_1),
    Exercise("12.2", "predict", "streamed_seconds",
             "streamed_seconds(T, chunk_size) -> seconds of audio the published Code2Wav streams for T frames "
             "(left context 25; each chunk loses its trailing samples).", _check_12_2),
]}


def load_answer(path, name: str):
    """Import an answer file and return its function `name` (a clear error when either is missing)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such answer file")
    spec = importlib.util.spec_from_file_location(f"omniref_course_answer_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, name):
        raise AttributeError(f"{path}: defines no function {name!r} (the exercise asks for {name})")
    return getattr(module, name)


def run_check(exercise_id: str, answer, quiet: bool = False) -> Result:
    """Check `answer` (a function, or a path to a file defining the exercise's function); print one line."""
    if exercise_id not in EXERCISES:
        raise KeyError(f"no exercise {exercise_id!r}; known: {', '.join(EXERCISES)}")
    ex = EXERCISES[exercise_id]
    fn = answer if callable(answer) else load_answer(answer, ex.name)
    try:
        ex.check(fn)
        result = Result(ex.id, True, "PASS")
    except NotImplementedError:
        result = Result(ex.id, False, f"NOT YET: {ex.name} raises NotImplementedError")
    except Wrong as e:
        result = Result(ex.id, False, f"FAIL: {e}")
    except Exception as e:                                   # the answer crashed: say how, no traceback
        result = Result(ex.id, False, f"FAIL: {ex.name} raised {type(e).__name__}: {e}")
    if not quiet:
        print(f"exercise {ex.id} ({ex.name}): {result.message}")
    return result
