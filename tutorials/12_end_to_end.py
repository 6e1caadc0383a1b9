# %% [markdown]
# # 12 · End to end: one prompt through every stage, a timeline, first-audio latency, streaming edges
#
# The whole chain as one story (`omniref/pipeline.py`; HF `Qwen3OmniMoeForConditionalGeneration.generate`):
#
#     prompt ids [L] + log-mel + patches ─encoders─> audio/image rows ─Thinker─> text ids [N]
#       + thinker states ─Talker─> codebook 0, one per 80 ms frame ─code predictor─> codebooks 1..G-1
#       ─Code2Wav, in chunks with left context─> 24 kHz waveform
#
# We run the golden case `tiny_f32` (in `tests/golden/`) through every stage with the model's own functions,
# record when each piece ran (by wrapping the model's methods with a stopwatch, not by copying its loops),
# check every output against the reference, draw the timeline, and work out when the first sound could be
# played. Prerequisites: chapters 05-08 and 11. Runs in a few seconds as a script or a notebook. Timings are
# wall-clock on whatever machine runs this, and on a tiny random model: read the *shape* of the timeline.

# %%
import time

import matplotlib.pyplot as plt
import numpy as np

from omniref.codec.code2wav import Code2Wav
from omniref.talker import Talker
from omniref.stages import prompt_from_case
from omniref.thinker.model import Thinker, encode_media
from omniref.thinker.sampling import SamplingConfig
from omniref.course import case as golden_case, check, show

case = golden_case("tiny_f32")
g, cfg, weights = case.golden, case.config, case.weights
gen = case.meta["generation"]
events = []                                    # (stage, start s, end s)
T0 = time.perf_counter()


def stopwatch(obj, method, stage):
    """Wrap obj.method so that every call is recorded as an event of `stage` (the model's code is unchanged)."""
    inner = getattr(obj, method)

    def timed(*args, **kwargs):
        t = time.perf_counter()
        out = inner(*args, **kwargs)
        events.append((stage, t - T0, time.perf_counter() - T0))
        return out
    setattr(obj, method, timed)


def rel(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


# %% [markdown]
# ## 1. Encoders and the thinker
# The prompt: a system turn, a 4.18 s clip, a 61×117 photo, text (chapter 08). The thinker generates greedily
# until its `<|im_end|>` or 7 tokens, keeping the states the talker needs: every input embedding and the
# hidden state of layer `accept_hidden_layer`.

# %%
prompt = prompt_from_case(case)
t = time.perf_counter()
media = encode_media(weights, cfg.thinker_config, prompt)                     # [Na, H], [Ni, H]
events.append(("encoders", t - T0, time.perf_counter() - T0))
thinker = Thinker(weights, cfg)
stopwatch(thinker, "forward", "thinker")
res = thinker.generate(prompt, gen["thinker"]["max_new_tokens"], eos_token_id=gen["thinker"]["eos_token_id"],
                       media=media, record_layer=cfg.talker_config.accept_hidden_layer, progress=False)
L, N = len(prompt.input_ids), len(res.generated_ids)
print(f"prompt {L} tokens -> audio rows {media.audio.shape}, image rows {media.image.shape}; "
      f"thinker: {N} text tokens {res.generated_ids.tolist()}")
assert np.array_equal(res.generated_ids, g["thinker.generated_ids"][0])
assert rel(res.embeds, g["talker.thinker_embed"][0]) < 1e-5 and rel(res.recorded, g["talker.thinker_hidden"][0]) < 1e-4

# %% [markdown]
# ## 2. Talker and code predictor
# One talker step = one 80 ms frame: the talker picks codebook 0, the code predictor fills codebooks
# 1..G-1 of that frame one after another (chapter 06).

# %%
talker = Talker(weights, cfg)
ti = talker.build_inputs(prompt.input_ids, res.generated_ids, res.embeds, res.recorded,
                         speaker=gen["talker"]["speaker_id"], audio_feature_lengths=prompt.audio_frames,
                         image_grid_thw=prompt.image_grid_thw)
stopwatch(talker, "forward", "talker")
stopwatch(talker.code_predictor, "predict_frame", "code predictor")
out = talker.generate(ti, max_new_tokens=gen["talker"]["max_new_tokens"],
                      sampling=SamplingConfig(repetition_penalty=gen["talker"]["repetition_penalty"]), progress=False)
G, T = out.codes.shape
print(f"talker prefill {ti.inputs_embeds.shape[0]} rows; {len(out.sequences)} steps -> codes [{G}, {T}] "
      f"({T} frames = {T * 0.08:.2f} s of speech), ended with eos: {out.ended_with_eos}")
assert np.array_equal(out.codes, g["talker.codes"][0])

# %% [markdown]
# ## 3. Code2Wav in chunks
# `chunked_decode(codes, chunk_size, left_context_size)` decodes `chunk_size` frames at a time, each with
# up to `left_context_size` earlier frames whose samples are thrown away (chapter 07). The golden case used
# chunks of 4 frames with 2 frames of context; the published setting is 300 and 25.

# %%
c2w = Code2Wav(cfg.code2wav_config, weights.scope("code2wav."))
cs, lc = int(g["code2wav.chunk_size"]), int(g["code2wav.left_context_size"])
stopwatch(c2w, "forward_one", "code2wav")
wav = c2w.chunked_decode(out.codes, cs, lc)                                   # [S]
print(f"code2wav: {T} frames in chunks of {cs} (left context {lc}) -> {wav.shape[0]} samples "
      f"= {wav.shape[0] / 24000:.3f} s; rel err vs the reference's wav_chunked "
      f"{rel(wav, g['code2wav.wav_chunked'][0, 0]):.1e}")
assert rel(wav, g["code2wav.wav_chunked"][0, 0]) < 1e-4

# %% [markdown]
# ## 4. The timeline, and the first-audio latency
# Above, each stage ran to completion before the next one started (as HF `generate` does). A streaming
# server overlaps them: the talker can start once the thinker has produced its first text token, and the
# first chunk of sound can be played as soon as `chunk_size` frames are coded and vocoded. From the measured
# step times:
#
#     first audio ≈ encoders + thinker prefill + 1 thinker step + talker prefill
#                   + chunk_size · (talker step + code predictor) + Code2Wav(first chunk)

# %%
stages = ["encoders", "thinker", "talker", "code predictor", "code2wav"]
dur = {s: [e - b for st, b, e in events if st == s] for s in stages}
prefill_thinker, step_thinker = dur["thinker"][0], np.median(dur["thinker"][1:])
prefill_talker, step_talker = dur["talker"][0], np.median(dur["talker"][1:])
step_cp, first_chunk = np.median(dur["code predictor"]), dur["code2wav"][0]
first_audio = (dur["encoders"][0] + prefill_thinker + step_thinker + prefill_talker
               + cs * (step_talker + step_cp) + first_chunk)
sequential = events[-1][2] - events[0][1]
print(f"measured: encoders {dur['encoders'][0] * 1e3:.1f} ms, thinker prefill {prefill_thinker * 1e3:.1f} ms + "
      f"{len(dur['thinker']) - 1} steps of {step_thinker * 1e3:.1f} ms, talker prefill {prefill_talker * 1e3:.1f} ms + "
      f"steps of {step_talker * 1e3:.1f} ms, code predictor {step_cp * 1e3:.1f} ms per frame, "
      f"Code2Wav {first_chunk * 1e3:.1f} ms per chunk")
print(f"sequential run: {sequential * 1e3:.0f} ms until the last sample; streaming estimate of the first audio "
      f"(chunk {cs} frames = {cs * 80} ms of speech): {first_audio * 1e3:.0f} ms")
assert len(dur["thinker"]) == N and len(dur["code predictor"]) == T and len(dur["code2wav"]) == -(-T // cs)

fig, ax = plt.subplots(1, 2, figsize=(13, 3.6), gridspec_kw={"width_ratios": [1.6, 1]})
colour = dict(zip(stages, ["#999999", "#4878d0", "#ee854a", "#d65f5f", "#6acc64"]))
for row, s in enumerate(stages):
    spans = [(b, e - b) for st, b, e in events if st == s]
    ax[0].broken_barh([(b * 1e3, d * 1e3) for b, d in spans], (row - 0.4, 0.8), color=colour[s],
                      edgecolor="k", linewidth=0.3)
    ax[0].text(spans[-1][0] * 1e3 + spans[-1][1] * 1e3, row, f"  x{len(spans)}", va="center", fontsize=7)
labels = ["encoders", f"thinker ({N} tokens)", f"talker ({len(out.sequences)} steps)",
          f"code predictor ({T} frames x {G - 1})", f"Code2Wav ({len(dur['code2wav'])} chunks)"]
ax[0].set(yticks=range(len(stages)), yticklabels=labels,
          xlabel="wall-clock time since the start (ms)", title="tiny_f32 through every stage (sequential, as run)")
ax[0].invert_yaxis()
chunks = np.array([1, 2, 4, 8, 16, 25, 50, 100, 300])
lat = dur["encoders"][0] + prefill_thinker + step_thinker + prefill_talker + chunks * (step_talker + step_cp) + \
    first_chunk * chunks / cs
ax[1].loglog(chunks * 80, lat * 1e3, "o-")
ax[1].set(xlabel="first chunk (ms of speech = 80 ms x frames)", ylabel="time to first audio (ms)",
          title="streaming: first-audio latency\nvs first chunk size")
fig.tight_layout()
show(fig, "12_timeline")

# %% [markdown]
# ## 5. Why chunk edges need left context
# Code2Wav's attention looks `sliding_window` frames back and its convolutions reach back a fraction of a
# frame per layer (chapter 07). A chunk decoded alone starts from silence: its first samples differ from
# the one-shot decode. With enough left context the chunk sees the same past and its samples equal the
# one-shot ones. Below: the difference to the one-shot decode of the same 11 frames, chunk by chunk.
# (Differences around 1e-6 are float32 rounding: the same causal sums over matrices of other shapes.)

# %%
U = c2w.total_upsample                                                        # samples per frame
one_shot = c2w(out.codes)                                                     # [1920·T − 555]
fig, ax = plt.subplots(figsize=(11, 3.2))
worst = {}
for ctx in (0, lc, 8):
    got, pos, diff = c2w.chunked_decode(out.codes, cs, ctx), 0, []
    for start in range(0, T, cs):
        n_out = c2w.output_length(min(start + cs, T) - start)
        diff.append(np.abs(got[pos:pos + n_out] - one_shot[start * U:start * U + n_out]))
        pos += n_out
    worst[ctx] = max(d.max() for d in diff)
    colour_ctx = {0: "C0", lc: "C1", 8: "C2"}[ctx]
    for k, (start, d) in enumerate(zip(range(0, T, cs), diff)):           # one line per chunk: no false joins
        ax.semilogy(np.arange(start * U, start * U + len(d)), np.maximum(d, 1e-9), lw=0.6, color=colour_ctx,
                    label=f"left context {ctx} frames" if k == 0 else None)
for start in range(cs, T, cs):
    ax.axvline(start * U, color="k", lw=0.6, ls="--")
ax.set(xlabel="output sample (24 kHz; dashed: chunk edges)", ylabel="|chunked − one-shot| (floor 1e-9)",
       title=f"chunks of {cs} frames vs one-shot decoding of the same {T} frames")
ax.legend(fontsize=7)
fig.tight_layout()
show(fig, "12_chunk_edges")
print("worst difference to one-shot per left context: " + ", ".join(f"{k}: {v:.1e}" for k, v in worst.items()))
assert worst[8] < 1e-4 < worst[0]

# %% [markdown]
# ## Exercises
# `check("12.1", fn)` here, or `python -m omniref.course check 12.1 answers.py`.
#
# - **12.1** (implement) `chunk_plan(T, chunk_size, left_context)`: the list of
#   `(context_start, start, end)` triples that `Code2Wav.chunked_decode` decodes.
# - **12.2** (predict) `streamed_seconds(T, chunk_size)`: the seconds of audio the published Code2Wav streams
#   for T frames with left context 25 (each chunk ends short, chapter 07).

# %%
def chunk_plan(T, chunk_size, left_context):
    raise NotImplementedError        # your answer


check("12.1", chunk_plan)
