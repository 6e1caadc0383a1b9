"""The Hugging Face PyTorch reference timed next to omniref, where torch and transformers happen to be installed.

Never required: without them every function returns {"torch_s": None, "torch_note": why}, and the bench prints
omniref's figures alone. With them, the reference module is built from the same config dict, loaded with the
same seeded random weights (every key must match: a module running its own random init would time the same
shapes but prove nothing about the weights), run under torch.no_grad() on `torch_threads` threads
(bench_inputs.json: 2, as the shared reference timings were taken) and timed with the same `best_time`.
"""
from __future__ import annotations

import numpy as np

from .timing import best_time, load_json

NOT_INSTALLED = {"torch_s": None, "torch_note": "torch/transformers not installed: reference not timed"}


def _hf():
    """(torch, the qwen3_omni_moe modeling module, its configuration module), or None when not importable."""
    try:
        import torch
        from transformers.models.qwen3_omni_moe import configuration_qwen3_omni_moe as conf
        from transformers.models.qwen3_omni_moe import modeling_qwen3_omni_moe as hf
    except ImportError:
        return None
    return torch, hf, conf


def reference_module(model_cls: str, config_cls: str, cfg: dict, weights):
    """`model_cls(config_cls(**cfg))` in eval mode with `weights` (a mapping of the module's own keys to arrays)
    loaded strictly; None when torch/transformers are missing."""
    mods = _hf()
    if mods is None:
        return None
    torch, hf, conf = mods
    torch.set_num_threads(int(load_json("bench_inputs.json").get("torch_threads", 2)))
    model = getattr(hf, model_cls)._from_config(getattr(conf, config_cls)(**cfg)).eval()
    state = {k: torch.from_numpy(v) for k, v in
             fuse_experts({k: np.array(weights[k], dtype=np.float32) for k in weights.keys()}).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in dict(model.named_buffers())]   # buffers (rope, offsets) are computed
    if missing or unexpected:
        raise RuntimeError(f"{model_cls}: weights do not match the reference module "
                           f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model


def fuse_experts(state: dict) -> dict:
    """The Hub layout's per-expert matrices (`...experts.{e}.gate_proj.weight` [I, H], up, down [H, I]) as the
    stacked parameters transformers 5 modules hold: `...experts.gate_up_proj` [E, 2I, H] (gate rows, then up
    rows) and `...experts.down_proj` [E, H, I], as its checkpoint conversion does when it loads the Hub files.
    NumPy arrays in and out; every other key passes through."""
    groups: dict[str, dict] = {}
    for key in list(state):
        head, sep, tail = key.partition(".experts.")
        e, _, leaf = tail.partition(".")
        if sep and e.isdigit() and leaf in ("gate_proj.weight", "up_proj.weight", "down_proj.weight"):
            groups.setdefault(head + ".experts.", {})[(int(e), leaf)] = state.pop(key)
    for prefix, g in groups.items():
        E = 1 + max(e for e, _ in g)
        state[prefix + "gate_up_proj"] = np.stack(
            [np.concatenate([g[(e, "gate_proj.weight")], g[(e, "up_proj.weight")]]) for e in range(E)])
        state[prefix + "down_proj"] = np.stack([g[(e, "down_proj.weight")] for e in range(E)])
    return state


def time_reference(model, call, repeat: int) -> dict:
    """{"torch_s": fastest of `repeat` runs of call(model) under no_grad} (or the not-installed note)."""
    if model is None:
        return dict(NOT_INSTALLED)
    import torch
    with torch.no_grad():
        return {"torch_s": best_time(lambda: call(model, torch), repeat)}


def with_target(res: dict, ours: str, target: float) -> dict:
    """res plus torch_ratio = torch_s / res[ours] (how many times faster omniref's cpp path ran than the
    reference, side by side in this run) and the issue's target for it."""
    res["target_vs_torch"] = target
    if res.get("torch_s"):
        res["torch_ratio"] = res["torch_s"] / res[ours]
    return res
