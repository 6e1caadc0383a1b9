# %% [markdown]
# # 05 · Mixture of experts: router, top-k, expert load, and why "30B-A3B"
#
# Every thinker layer replaces the dense feed-forward block by `E` small SwiGLU "experts" and a router
# (`omniref/decoder.py::moe`):
#
#     x [L, H] --router x·W_gᵀ--> logits [L, E] --softmax--> p [L, E] --top-k--> k experts per token
#        --(renormalise if norm_topk_prob)--> y = Σ_chosen p_e · down(silu(gate_e(x)) ⊙ up_e(x))
#
# Tokens are grouped per expert, so each chosen expert runs one matmul over its tokens and the others are
# never touched. Runs in a few seconds, saves figures under `tutorials/figures/`, checks its numbers.

# %%
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from omniref import nn
from omniref.config import load_config, qwen3_omni_30b_a3b_instruct
from omniref.decoder import moe, swiglu
from omniref.golden import Case
from omniref.stages import prompt_from_case
from omniref.thinker.model import Thinker, ThinkerPrompt
from omniref.tiny import write_tiny_checkpoint
from omniref.weights import load_weights

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "tutorials" / "figures"
FIGURES.mkdir(parents=True, exist_ok=True)

# %% [markdown]
# ## 1. A model and a prompt
# The shared golden case `tiny_omni` (audio + image + text prompt) when present, else the project's tiny
# random checkpoint with a text-only prompt.

# %%
golden = ROOT.parent / "shared" / "golden" / "tiny_omni"
if (golden / "golden.npz").is_file():
    case = Case(golden)
    cfg, weights, prompt = case.config, case.weights, prompt_from_case(case)
else:
    path = write_tiny_checkpoint(Path(tempfile.mkdtemp()) / "tiny", seed=0)
    cfg, weights = load_config(path), load_weights(path)
    prompt = ThinkerPrompt(input_ids=np.array([1, 4, 6] + list(range(20, 80)) + [2, 6, 1, 5, 6]))
text = cfg.thinker_config.text_config
E, k, H, I = text.num_experts, text.num_experts_per_tok, text.hidden_size, text.moe_intermediate_size
print(f"thinker: {text.num_hidden_layers} layers, E = {E} experts, top-{k}, hidden {H}, expert width {I}, "
      f"norm_topk_prob = {text.norm_topk_prob}")

thinker = Thinker(weights, cfg)
thinker.decoder.moe_stats = []                      # ask the decoder to keep every router decision
res = thinker.generate(prompt, 1, progress=False)
stats = thinker.decoder.moe_stats                   # one MoEStats per layer of the prefill (+ none for decode)
L = prompt.input_ids.shape[0]
print(f"prefill of {L} tokens recorded {len(stats)} router calls; first one: probs {stats[0].probs.shape}, "
      f"chosen experts {stats[0].experts.shape}")

# %% [markdown]
# ## 2. Router probabilities and the top-k choice
# Each row is a token, each column an expert; the dots mark the k experts the token is sent to.

# %%
s0 = stats[0]
assert np.allclose(s0.probs.sum(-1), 1, atol=1e-5)                  # a softmax over all E experts
assert np.all(np.take_along_axis(s0.probs, s0.experts, -1).min(-1)
              >= np.sort(s0.probs, -1)[:, -k - 1 if k < E else 0] - 1e-7)   # the chosen are the k largest
if text.norm_topk_prob:
    assert np.allclose(s0.weights.sum(-1), 1, atol=1e-5)            # renormalised among the chosen
fig, ax = plt.subplots(figsize=(7, 4.5))
im = ax.imshow(s0.probs.T, aspect="auto", cmap="magma", interpolation="nearest")
rows = np.repeat(np.arange(L), k)
ax.plot(rows, s0.experts.reshape(-1), "c.", ms=3, label=f"top-{k}")
ax.set_xlabel("token"); ax.set_ylabel("expert"); ax.set_title("layer 0 router probabilities"); ax.legend(loc="upper right")
fig.colorbar(im, ax=ax, fraction=0.03)
fig.tight_layout(); fig.savefig(FIGURES / "05_router_probs.png", dpi=120); plt.close(fig)

# %% [markdown]
# ## 3. Expert load over the prompt
# How many tokens each expert received in each layer. Trained routers are pushed towards balance by an
# auxiliary loss (`router_aux_loss_coef`); random routers are merely noisy.

# %%
load = np.stack([np.bincount(s.experts.reshape(-1), minlength=E) for s in stats])     # [layers, E]
assert np.all(load.sum(1) == L * k)                                                    # every token used k slots
fig, ax = plt.subplots(figsize=(7, 3))
width = 0.8 / len(stats)
for i, row in enumerate(load):
    ax.bar(np.arange(E) + i * width, row, width, label=f"layer {stats[i].layer}")
ax.axhline(L * k / E, color="k", ls="--", lw=1, label="perfect balance")
ax.set_xlabel("expert"); ax.set_ylabel("tokens routed"); ax.legend(fontsize=7)
fig.tight_layout(); fig.savefig(FIGURES / "05_expert_load.png", dpi=120); plt.close(fig)
print("tokens per expert, layer by layer:\n", load)

# %% [markdown]
# ## 4. Grouped MoE == the dense definition
# The dense definition runs *every* expert on *every* token and multiplies by a weight that is zero for the
# experts not chosen. Same numbers, E/k times the work.

# %%
w = weights.scope("thinker.model.")
x = np.random.default_rng(0).standard_normal((L, H)).astype(np.float32)
grouped = moe(x, w, "layers.0.mlp.", E, k, text.norm_topk_prob)
probs = nn.softmax(nn.linear(x, w["layers.0.mlp.gate.weight"]), axis=-1)               # [L, E]
kth = np.sort(probs, -1)[:, -k][:, None]
gate = np.where(probs >= kth, probs, 0)                                                # zero for unchosen
if text.norm_topk_prob:
    gate = gate / gate.sum(-1, keepdims=True)
dense = sum(gate[:, e:e + 1] * swiglu(x, w, f"layers.0.mlp.experts.{e}.") for e in range(E))
err = np.abs(grouped - dense).max() / np.abs(dense).max()
print(f"grouped vs dense MoE: max rel error {err:.2e}")
assert err < 1e-5

# %% [markdown]
# ## 5. Active vs total parameters
# Per token only k of the E experts run, so the *active* parameter count is far below the total. For the
# published model this is the "30B-A3B" in its name. (Counted for the thinker's text decoder.)

# %%
def thinker_text_params(t):
    attn = t.hidden_size * t.head_dim * (2 * t.num_attention_heads + 2 * t.num_key_value_heads) + 2 * t.head_dim
    norms, router = 2 * t.hidden_size, t.num_experts * t.hidden_size
    expert = 3 * t.hidden_size * t.moe_intermediate_size
    per_layer_fixed = attn + norms + router
    embed = 2 * t.vocab_size * t.hidden_size + t.hidden_size                  # embed_tokens + lm_head + norm
    total = embed + t.num_hidden_layers * (per_layer_fixed + t.num_experts * expert)
    active = embed + t.num_hidden_layers * (per_layer_fixed + t.num_experts_per_tok * expert)
    return total, active


total, active = thinker_text_params(text)
on_disk = sum(int(np.prod(weights.shape(key))) for key in weights
              if key.startswith("thinker.model.") or key == "thinker.lm_head.weight")
assert total == on_disk, (total, on_disk)                                 # the formula counts every tensor
big_total, big_active = thinker_text_params(qwen3_omni_30b_a3b_instruct().thinker_config.text_config)
print(f"this checkpoint : total {total:,}  active {active:,}  ({active / total:.0%})")
print(f"Qwen3-Omni 30B-A3B thinker: total {big_total / 1e9:.1f} B, active {big_active / 1e9:.2f} B per token")
assert 25e9 < big_total < 35e9 and 2e9 < big_active < 4e9
