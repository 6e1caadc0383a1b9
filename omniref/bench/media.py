"""Vision encoder and talker benchmarks at the sizes of omniref/data/bench (seeded random weights, both backends).

  vision   a 1280x720 image (the processor's own resize and patchify) through the vision encoder of
           vision_encoder_bench.json: seconds per image, patches per second
  talker   the talker + code predictor of talker_bench.json after a prefill of random embeddings: frames per
           second (one frame = one talker step + G-1 code predictor steps), and the time to the first audio chunk
           = talker prefill + `first_chunk_frames` frames + Code2Wav (code2wav_default.json) on those frames
The PyTorch reference is timed the same way only where torch and transformers are installed (never required).
"""
from __future__ import annotations

import time

import numpy as np

from .. import backend
from ..checkpoint import expected_shapes
from ..codec.code2wav import Code2Wav
from ..config import VisionEncoderConfig, load_config
from ..talker.inputs import TalkerInputs
from ..talker.model import Talker
from ..tiny import _draw, tiny_config
from ..vision.encoder import encode_vision
from ..vision.preprocess import preprocess_image
from .models import DictWeights, random_code2wav
from .timing import best_time, both, load_json, settle
from .torchref import NOT_INSTALLED, reference_module, time_reference, with_target

IMAGE_HW = (720, 1280)           # a 1280x720 frame (height, width)


def _random_weights(full: dict, component: str, prefix: str) -> DictWeights:
    """omniref.tiny's seeded random tensors for every key of `component`, relative to `prefix`, read-only."""
    shapes = expected_shapes(load_config(full), [component])
    w = DictWeights({k[len(prefix):]: _draw(k, s, 0) for k, s in shapes.items() if k.startswith(prefix)})
    for a in w.values():
        a.setflags(write=False)  # constants, as a checkpoint's weights are (the cpp backend may pre-pack them)
    return w


def bench_vision(quick: bool) -> dict:
    vcfg = load_json("vision_encoder_bench.json")
    if quick:
        vcfg.update(depth=1, deepstack_visual_indexes=[0])
    full = tiny_config()
    full["thinker_config"]["vision_config"] = vcfg
    w = _random_weights(full, "vision", "thinker.visual.")
    cfg = VisionEncoderConfig.from_dict(vcfg)
    hw = (180, 320) if quick else IMAGE_HW
    image = np.random.default_rng(0).integers(0, 256, hw + (3,), dtype=np.uint8)      # [H, W, 3]
    inp = preprocess_image(image, cfg.patch_size, cfg.spatial_merge_size, cfg.temporal_patch_size)
    t = both(lambda: encode_vision(w, cfg, inp.pixel_values, inp.grid_thw), 1 if quick else 2)
    P = inp.pixel_values.shape[0]
    res = {"image_hw": list(hw), "grid_thw": inp.grid_thw[0].tolist(), "patches": P, "depth": cfg.depth,
           "numpy_s": t["numpy"], "cpp_s": t["cpp"], "ratio": t["numpy"] / t["cpp"],
           "cpp_patches_per_s": P / t["cpp"]}
    # Qwen3OmniMoeVisionEncoder.forward(pixel_values [P, C*T*p*p], grid_thw [1, 3]) on the same weights
    ref = reference_module("Qwen3OmniMoeVisionEncoder", "Qwen3OmniMoeVisionEncoderConfig", vcfg, w)
    res.update(time_reference(ref, lambda m, torch: m(torch.from_numpy(inp.pixel_values),
                                                      grid_thw=torch.from_numpy(np.asarray(inp.grid_thw))),
                              1 if quick else 2))
    return with_target(res, "cpp_s", 1.5)


def random_talker(tcfg: dict) -> Talker:
    """The talker + code predictor of a `talker_config` dict with omniref.tiny's seeded random weights."""
    full = tiny_config()
    full["talker_config"] = {**full["talker_config"], **tcfg}
    w = _random_weights(full, "talker", "")
    return Talker(w, load_config(full))


def _torch_talker(talker: Talker, inputs: TalkerInputs, c2w_cfg: dict, c2w: Code2Wav, N: int, K: int,
                  reps: int) -> dict:
    """The Hugging Face talker (`Qwen3OmniMoeTalkerForConditionalGeneration.generate`, called with the arguments
    `Qwen3OmniMoeForConditionalGeneration.generate` passes it: greedy, repetition penalty 1.05, the codec's
    special ids suppressed except eos) and Code2Wav on the same weights and inputs, timed as omniref is above."""
    cfg = talker.tc
    tk = {k[len("talker."):]: talker.weights[k] for k in talker.weights.keys() if k.startswith("talker.")}
    ref = reference_module("Qwen3OmniMoeTalkerForConditionalGeneration", "Qwen3OmniMoeTalkerConfig",
                           cfg.to_dict(), tk)
    ref_c2w = reference_module("Qwen3OmniMoeCode2Wav", "Qwen3OmniMoeCode2WavConfig", c2w_cfg, c2w.w)
    if ref is None or ref_c2w is None:
        return {"torch_frames_per_s": None, "torch_note": NOT_INSTALLED["torch_note"]}
    import torch
    V = cfg.text_config.vocab_size
    suppress = [i for i in range(V - 1024, V) if i != cfg.codec_eos_token_id]
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))[None]                  # noqa: E731  [..] -> [1, ..]
    kw = dict(inputs_embeds=t(inputs.inputs_embeds), trailing_text_hidden=t(inputs.trailing_text_hidden),
              tts_pad_embed=t(inputs.tts_pad[None]), talker_input_ids=t(inputs.input_ids),
              attention_mask=torch.ones(1, len(inputs.input_ids), dtype=torch.long), do_sample=False,
              repetition_penalty=1.05, suppress_tokens=suppress, eos_token_id=cfg.codec_eos_token_id,
              output_hidden_states=True, return_dict_in_generate=True)

    def timed(frames: int):
        """-> (seconds, codes [G, frames made])"""
        t0 = time.perf_counter()
        with torch.no_grad():
            out = ref.generate(max_new_tokens=frames + 1, **kw)
        s = time.perf_counter() - t0
        codes = torch.stack([h[-1] for h in out.hidden_states if h[-1] is not None], dim=1)[0].T   # [G, n]
        return s, codes.numpy()

    timed(1)
    s_first, codes_first = min((timed(K) for _ in range(reps)), key=lambda r: r[0])
    s_all, codes_all = min((timed(N) for _ in range(reps)), key=lambda r: r[0])
    res = time_reference(ref_c2w, lambda m, torch: m(torch.from_numpy(codes_first)[None]), reps)
    made = codes_all.shape[1] - codes_first.shape[1]
    return {"torch_frames_per_s": made / (s_all - s_first) if made > 0 else float("nan"),
            "torch_first_audio_s": s_first + res["torch_s"], "torch_first_chunk_code2wav_s": res["torch_s"]}


def talker_inputs(talker: Talker, L: int, n_trail: int) -> TalkerInputs:
    """Random prefill embeddings [L, Dt] at positions 0..L-1 and n_trail rows of trailing text."""
    rng = np.random.default_rng(0)
    Dt = talker.codec_embedding.shape[1]
    emb = lambda n: (rng.standard_normal((n, Dt), dtype=np.float32) * np.float32(0.02))   # noqa: E731
    return TalkerInputs(input_ids=np.zeros(L, np.int64), inputs_embeds=emb(L), trailing_text_hidden=emb(n_trail),
                        tts_special_embeds=emb(3), position_ids=np.tile(np.arange(L, dtype=np.float32), (3, 1)))


def bench_talker(quick: bool) -> dict:
    work = load_json("talker_bench.json")
    tcfg = tiny_config()["talker_config"] if quick else work["talker_config"]      # --quick: omniref.tiny's
    c2w_name = load_json("bench_inputs.json")["code2wav"]["config"]
    c2w_cfg = tiny_config()["code2wav_config"] if quick else load_json(c2w_name)
    talker = random_talker(tcfg)
    c2w: Code2Wav = random_code2wav(c2w_cfg, 0)
    L, N, K = (16, 4, 2) if quick else (work["prefill_tokens"], work["frames"], work["first_chunk_frames"])
    inputs = talker_inputs(talker, L, N)

    def timed(frames: int):
        """-> (seconds, frames actually made: random weights may pick codec eos early, then fewer)."""
        t0 = time.perf_counter()
        out = talker.generate(inputs, max_new_tokens=frames + 1, progress=False)   # greedy, penalty 1.05
        return time.perf_counter() - t0, out.codes

    res = {"prefill_tokens": L, "frames": N, "first_chunk_frames": K,
           "talker_layers": tcfg["text_config"]["num_hidden_layers"],
           "code_groups": tcfg["num_code_groups"]}
    reps = 1 if quick else 2
    for name in ("numpy", "cpp"):
        with backend.use(name):
            settle()
            timed(1)                                                     # warm-up: first touches, packing
            s_first, codes_first = min((timed(K) for _ in range(reps)), key=lambda r: r[0])
            s_all, codes_all = min((timed(N) for _ in range(reps)), key=lambda r: r[0])
            s_c2w = best_time(lambda: c2w.forward_one(codes_first), reps)
        made = codes_all.shape[1] - codes_first.shape[1]
        res[f"{name}_frames_per_s"] = made / (s_all - s_first) if made > 0 else float("nan")
        res[f"{name}_first_audio_s"] = s_first + s_c2w
        res[f"{name}_first_chunk_code2wav_s"] = s_c2w
    res["frames_ratio"] = res["cpp_frames_per_s"] / res["numpy_frames_per_s"]
    res["first_audio_ratio"] = res["numpy_first_audio_s"] / res["cpp_first_audio_s"]
    res["real_time_frames_per_s"] = 12.5    # one frame = 80 ms of audio
    res.update(_torch_talker(talker, inputs, c2w_cfg, c2w, N, K, reps))
    if res.get("torch_frames_per_s"):
        res["frames_vs_torch"] = res["cpp_frames_per_s"] / res["torch_frames_per_s"]
        res["first_audio_vs_torch"] = res["torch_first_audio_s"] / res["cpp_first_audio_s"]
    return res
