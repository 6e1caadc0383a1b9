# %% [markdown]
# # 06 · The talker: from thinker states to speech codes
#
# The thinker writes text. The *talker* turns that text, and what the thinker understood of the audio and
# images, into a grid of discrete speech codes, 16 numbers per 80 ms frame, that Code2Wav (tutorial 07)
# renders as a waveform. Three ideas carry the whole stage:
#
# 1. **Inputs are vectors, not ids.** The talker reads the thinker's embeddings (for text) and one of its
#    intermediate hidden states (for audio/image/video tokens), each pushed through a small 2-layer MLP.
# 2. **A 9-row assistant prefix** says, with codec special tokens, "no thinking, speaker X, start speaking".
# 3. **Codebook 0, then 1..15.** Each talker step predicts the coarsest codebook; a small dense decoder, the
#    code predictor, fills in the 15 residual codebooks of that frame one after another.
#
# This file runs in a few seconds as a script (`python tutorials/06_talker_and_codes.py`) or a notebook (figures
# inline in a notebook, saved under `tutorials/_output/` as a script) and checks every number it can against
# the golden case `tiny_f32` that ships in `tests/golden/` (the reference implementation's own tensors).

# %%
import matplotlib.pyplot as plt
import numpy as np

from omniref.golden import Case
from omniref.talker import Talker
from omniref.talker.inputs import user_positions
from omniref.talker.model import suppressed_ids
from omniref.course import check, repo_root, show

ROOT = repo_root()                                                      # the clone (tests/golden/ lives here)


def find_case():
    """The first golden case in tests/golden/ holding the talker stage."""
    for folder in (ROOT / "tests" / "golden",):
        for p in sorted(folder.glob("*/golden.npz")) if folder.is_dir() else []:
            case = Case(p.parent)
            if "talker.thinker_embed" in case.golden and case.config is not None:
                return case
    return None


def rel(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


case = find_case()
if case is not None:
    cfg, weights, g = case.config, case.weights, case.golden
    ids, gen = g["thinker.input_ids"][0], g["thinker.generated_ids"][0]
    embed, hidden = g["talker.thinker_embed"][0], g["talker.thinker_hidden"][0]
    media = dict(image_grid_thw=g.get("image.grid_thw"), video_grid_thw=g.get("video.grid_thw"),
                 video_second_per_grid=g.get("video.second_per_grid"),
                 audio_feature_lengths=g["mel.attention_mask"].sum(-1) if "mel.attention_mask" in g else None)
    speaker = case.meta.get("generation", {}).get("talker", {}).get("speaker_id", "ethan")
    print(f"golden case {case.name}: prompt {ids.shape[0]} tokens, thinker generated {gen.shape[0]}")
else:   # no golden data: the tiny checkpoint with made-up thinker states of the right shapes
    from omniref.tiny import TINY_TOKEN_IDS as T, load_tiny
    cfg, weights = load_tiny()
    ids = np.array([T["im_start"], T["user"], T["nl"], 40, 41, 42, T["im_end"], T["nl"],
                    T["im_start"], T["assistant"], T["nl"]])
    gen = np.array([50, 51, 52, 53, T["im_end"]])
    rng = np.random.default_rng(0)
    embed = rng.standard_normal((ids.shape[0] + gen.shape[0] - 1, 48)).astype(np.float32)
    hidden = rng.standard_normal(embed.shape).astype(np.float32)
    media, speaker, g = {}, "ethan", {}
    print("no golden case found: using the tiny random checkpoint (no reference numbers to check)")
tc = cfg.talker_config
talker = Talker(weights, cfg)

# %% [markdown]
# ## 1. Which prompt rows the talker sees
# Only **user turns** condition the voice: a system prompt is dropped, and so are earlier assistant turns.
# A position belongs to the turn opened by the nearest `<im_start>` before it; the token after that
# `<im_start>` names the role. Audio/image/video placeholder rows take the thinker's hidden state of layer
# `accept_hidden_layer` (what the thinker *understood* of the media) through `hidden_projection`; text rows
# take the thinker's input embedding through `text_projection`.

# %%
user = user_positions(ids, cfg)
th = cfg.thinker_config
is_media = np.isin(ids[user], [th.audio_token_id, th.image_token_id, th.video_token_id])
print(f"user turn: prompt positions {user[0]}..{user[-1]} ({user.size} rows), "
      f"{is_media.sum()} media rows via hidden_projection (layer {tc.accept_hidden_layer}), "
      f"{(~is_media).sum()} text rows via text_projection")

ti = talker.build_inputs(ids, gen, embed, hidden, speaker=speaker, **media)
print(f"talker prefill: {ti.inputs_embeds.shape[0]} rows = {user.size} user rows + 9 assistant rows; "
      f"trailing text {ti.trailing_text_hidden.shape[0]} rows")

# %% [markdown]
# ## 2. The assistant prefix: think / nothink codec tokens and the speaker
# Each of the 9 rows is a *sum* of a text half and a codec half. The codec half spells, in the talker's own
# codec vocabulary (ids past the codebook): "no thinking" (`codec_nothink_id`), an empty think block
# (`codec_think_bos_id`, `codec_think_eos_id`), the speaker's id, then `codec_pad_id` and `codec_bos_id`
# ("speech starts now"). The text half is `<im_start> assistant \n`, four `tts_pad`, `tts_bos`, and the first
# generated text token: the talker reads the first word while emitting `codec_bos`.

# %%
spk = tc.speaker(speaker) if isinstance(speaker, str) else int(speaker)
rows = [("<im_start>", "0"), ("assistant", "0"), ("\\n", "0"), ("tts_pad", f"nothink {tc.codec_nothink_id}"),
        ("tts_pad", f"think_bos {tc.codec_think_bos_id}"), ("tts_pad", f"think_eos {tc.codec_think_eos_id}"),
        ("tts_pad", f"speaker {spk}"), ("tts_bos", f"codec_pad {tc.codec_pad_id}"),
        ("text token g0", f"codec_bos {tc.codec_bos_id}")]
for r, (text, codec) in enumerate(rows):
    print(f"  row {r}: text {text:<14} + codec {codec}")
# check: subtracting the text half leaves exactly the codec embedding row
E = weights["talker.model.codec_embedding.weight"]
codec_half = ti.inputs_embeds[-9:][3:] - np.stack([ti.tts_pad] * 4 + [ti.tts_special_embeds[0]] +
                                                  [ti.inputs_embeds[-1] - E[tc.codec_bos_id]])
assert np.allclose(codec_half, E[[tc.codec_nothink_id, tc.codec_think_bos_id, tc.codec_think_eos_id, spk,
                                  tc.codec_pad_id, tc.codec_bos_id]], atol=1e-5)
if g:
    for key, ours in [("talker.inputs_embeds", ti.inputs_embeds[None]),
                      ("talker.trailing_text_hidden", ti.trailing_text_hidden[None]),
                      ("talker.tts_special_embeds", ti.tts_special_embeds)]:
        print(f"{key:32s} rel err vs reference {rel(ours, g[key]):.1e}")
        assert rel(ours, g[key]) < 1e-4
    assert np.array_equal(ti.input_ids, g["talker.input_ids"][0])
    assert np.array_equal(ti.position_ids, g["talker.position_ids"][:, 0])
    print("talker.input_ids and talker.position_ids identical to the reference")

# %% [markdown]
# ## 3. Positions: the thinker's multimodal rope index, re-run on the talker's rows
# The talker has its own 3-row (time, height, width) positions, computed by the same walk as the thinker's
# (tutorial 04) over the talker ids, so image rows spread over a grid while text advances all rows together.

# %%
fig, ax = plt.subplots(figsize=(9, 3))
for r, name in enumerate(["temporal", "height", "width"]):
    ax.plot(ti.position_ids[r], label=name, lw=1.2, ls=["-", "--", ":"][r])
ax.set(xlabel="talker prefill row", ylabel="position", title="talker position ids (3 rows)")
ax.legend()
fig.tight_layout()
show(fig, "06_talker_positions")

# %% [markdown]
# ## 4. The loop: codebook 0 per talker step, codebooks 1..G-1 per code-predictor step
# At every step the talker's scores go through the repetition penalty (1.05, on the tokens it has already
# said) and the *suppression* of the special range `[Vt-1024, Vt)`: pad, bos, think markers and speakers are
# inputs only; the one special the talker may say is `codec_eos` ("I am done"). The token becomes codebook 0
# of a frame; the code predictor then runs its own tiny autoregression over positions 0..G-1 of that frame.
# The next talker input is the sum of all G code embeddings of the frame plus the next trailing text row.

# %%
gen_cfg = case.meta.get("generation", {}).get("talker", {}) if case is not None else {}
out = talker.generate(ti, max_new_tokens=int(gen_cfg.get("max_new_tokens", 20)))
G, T = out.codes.shape
supp = suppressed_ids(tc.text_config.vocab_size, tc.codec_eos_token_id)
print(f"{len(out.sequences)} talker steps -> {T} frames of {G} codes; ended with codec eos: {out.ended_with_eos}; "
      f"suppressed ids {supp[0]}..{supp[-1]} except {tc.codec_eos_token_id}")
print("codebook 0 per step:", out.sequences.tolist())
print("frame 0, all codebooks:", out.codes[:, 0].tolist())

if g:
    for key, ours in [("talker.step_logits", out.step_logits), ("talker.step_hidden", out.step_hidden),
                      ("code_predictor.logits", out.cp_logits)]:
        print(f"{key:32s} rel err vs reference {rel(ours, g[key]):.1e}")
        assert rel(ours, g[key]) < 1e-4
    assert np.array_equal(out.sequences, g["talker.sequences"][0])
    assert np.array_equal(out.codes, g["talker.codes"][0])
    print("talker.sequences and talker.codes identical to the reference")

fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [1.3, 1]})
im = axes[0].imshow(out.codes, aspect="auto", cmap="viridis", interpolation="nearest")
axes[0].set(xlabel="frame t (80 ms each)", ylabel="codebook",
            title="codes: row 0 from the talker, 1..G-1 from the code predictor")
axes[0].axhline(0.5, color="w", lw=1.5)
fig.colorbar(im, ax=axes[0], label="code id")
z = out.step_logits[0]
axes[1].plot(z, lw=0.6, color="gray")
axes[1].axvspan(supp[0], supp[-1], color="red", alpha=0.12, label="suppressed special range")
axes[1].axvline(tc.codec_eos_token_id, color="k", ls=":", label="codec eos (allowed)")
axes[1].set(xlabel="talker vocabulary id", ylabel="raw score", title="prefill step scores")
axes[1].legend(fontsize=7)
fig.tight_layout()
show(fig, "06_codes_and_scores")
assert g, "tests/golden/ must hold a case with the talker stage"

# %% [markdown]
# ## Exercises
# Check an answer here with `check("06.1", your_function)`, or from a file with
# `python -m omniref.course check 06.1 answers.py` (`python -m omniref.course list` shows every task).
#
# - **06.1** (implement) `suppressed_ids(vocab_size, eos_id)`: the codec ids the talker may never emit.
# - **06.2** (implement) `repetition_penalty(logits, previous, penalty)`: the CTRL rule of section 4.

# %%
def suppressed_ids(vocab_size, eos_id):
    raise NotImplementedError        # your answer


check("06.1", suppressed_ids)
