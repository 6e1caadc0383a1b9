"""The Hub key layout: which tensors a Qwen3-Omni-MoE checkpoint must hold, and with which shapes.

This is the one name table between `model.safetensors` and omniref's modules. Each component reads its
weights through a prefix view (`weights.scope(PREFIXES["audio"])`) with the names below, exactly as in the
public `Qwen/Qwen3-Omni-30B-A3B-Instruct` checkpoint. `expected_shapes(config)` lists every
key a full checkpoint has; `check_weights` compares a loaded checkpoint with it and names the tensor and both
shapes on any mismatch, so a wrong config or a corrupt file fails at load time, not deep inside a matmul.

Legend: d audio width, ds audio conv channels, hv vision width, p patch, m merge size, H / Dt / Hc thinker /
talker / code2wav hidden, V / Vt vocabularies, E experts, I expert width, nh / nkv / hd heads and head size,
C codebook size, G code groups, Q quantizers, Dd decoder_dim.
"""
from __future__ import annotations

from .config import OmniConfig
from .weights import SafetensorsError, Weights

__all__ = ["PREFIXES", "expected_shapes", "check_weights"]

# component -> key prefix in the checkpoint (the module that consumes it)
PREFIXES = {
    "audio": "thinker.audio_tower.",        # omniref/audio/encoder.py
    "vision": "thinker.visual.",            # omniref/vision/encoder.py
    "thinker": "thinker.model.",            # omniref/thinker/model.py (+ thinker.lm_head.weight)
    "talker": "talker.",                    # omniref/talker/ (model., codec_head, projections, code_predictor.)
    "code2wav": "code2wav.",                # omniref/codec/code2wav.py
}


def _attention(p: str, H: int, nh: int, nkv: int, hd: int, qk_norm: bool) -> dict:
    s = {p + "q_proj.weight": (nh * hd, H), p + "k_proj.weight": (nkv * hd, H),
         p + "v_proj.weight": (nkv * hd, H), p + "o_proj.weight": (H, nh * hd)}
    if qk_norm:
        s.update({p + "q_norm.weight": (hd,), p + "k_norm.weight": (hd,)})
    return s


def _swiglu(p: str, H: int, I: int) -> dict:
    return {p + "gate_proj.weight": (I, H), p + "up_proj.weight": (I, H), p + "down_proj.weight": (H, I)}


def _decoder_layers(p: str, cfg, H: int, *, moe: bool, shared: bool = False, qk_norm: bool = True) -> dict:
    """Keys of `cfg.num_hidden_layers` Qwen3 decoder layers under prefix p (`...layers.`)."""
    s = {}
    for i in range(cfg.num_hidden_layers):
        q = f"{p}{i}."
        s[q + "input_layernorm.weight"] = (H,)
        s[q + "post_attention_layernorm.weight"] = (H,)
        s.update(_attention(q + "self_attn.", H, cfg.num_attention_heads, cfg.num_key_value_heads,
                            cfg.head_dim, qk_norm))
        if moe and cfg.is_moe_layer(i):
            s[q + "mlp.gate.weight"] = (cfg.num_experts, H)
            for e in range(cfg.num_experts):
                s.update(_swiglu(f"{q}mlp.experts.{e}.", H, cfg.moe_intermediate_size))
            if shared:
                s.update(_swiglu(q + "mlp.shared_expert.", H, cfg.shared_expert_intermediate_size))
                s[q + "mlp.shared_expert_gate.weight"] = (1, H)
        else:
            s.update(_swiglu(q + "mlp.", H, cfg.intermediate_size))
    return s


def _audio(cfg) -> dict:
    a = cfg.thinker_config.audio_config
    p, d, ds = PREFIXES["audio"], a.d_model, a.downsample_hidden_size
    freq = a.num_mel_bins
    for _ in range(3):                      # three stride-2, pad-1, kernel-3 convolutions
        freq = (freq - 1) // 2 + 1
    s = {p + "conv2d1.weight": (ds, 1, 3, 3), p + "conv2d1.bias": (ds,),
         p + "conv2d2.weight": (ds, ds, 3, 3), p + "conv2d2.bias": (ds,),
         p + "conv2d3.weight": (ds, ds, 3, 3), p + "conv2d3.bias": (ds,),
         p + "conv_out.weight": (d, ds * freq),
         p + "ln_post.weight": (d,), p + "ln_post.bias": (d,),
         p + "proj1.weight": (d, d), p + "proj1.bias": (d,),
         p + "proj2.weight": (a.output_dim, d), p + "proj2.bias": (a.output_dim,)}
    for i in range(a.encoder_layers):
        q = f"{p}layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            s[f"{q}self_attn.{proj}.weight"] = (d, d)
            s[f"{q}self_attn.{proj}.bias"] = (d,)
        for ln in ("self_attn_layer_norm", "final_layer_norm"):
            s[f"{q}{ln}.weight"] = (d,)
            s[f"{q}{ln}.bias"] = (d,)
        s.update({q + "fc1.weight": (a.encoder_ffn_dim, d), q + "fc1.bias": (a.encoder_ffn_dim,),
                  q + "fc2.weight": (d, a.encoder_ffn_dim), q + "fc2.bias": (d,)})
    return s


def _vision(cfg) -> dict:
    v = cfg.thinker_config.vision_config
    p, hv, m2 = PREFIXES["vision"], v.hidden_size, v.spatial_merge_size ** 2
    s = {p + "patch_embed.proj.weight": (hv, v.in_channels, v.temporal_patch_size, v.patch_size, v.patch_size),
         p + "patch_embed.proj.bias": (hv,), p + "pos_embed.weight": (v.num_position_embeddings, hv)}
    for i in range(v.depth):
        q = f"{p}blocks.{i}."
        s.update({q + "norm1.weight": (hv,), q + "norm1.bias": (hv,), q + "norm2.weight": (hv,),
                  q + "norm2.bias": (hv,), q + "attn.qkv.weight": (3 * hv, hv), q + "attn.qkv.bias": (3 * hv,),
                  q + "attn.proj.weight": (hv, hv), q + "attn.proj.bias": (hv,),
                  q + "mlp.linear_fc1.weight": (v.intermediate_size, hv), q + "mlp.linear_fc1.bias": (v.intermediate_size,),
                  q + "mlp.linear_fc2.weight": (hv, v.intermediate_size), q + "mlp.linear_fc2.bias": (hv,)})

    def merger(q: str, ln: int) -> dict:
        return {q + "ln_q.weight": (ln,), q + "ln_q.bias": (ln,), q + "mlp.0.weight": (m2 * hv, m2 * hv),
                q + "mlp.0.bias": (m2 * hv,), q + "mlp.2.weight": (v.out_hidden_size, m2 * hv),
                q + "mlp.2.bias": (v.out_hidden_size,)}
    s.update(merger(p + "merger.", hv))
    for k in range(len(v.deepstack_visual_indexes)):
        s.update(merger(f"{p}merger_list.{k}.", m2 * hv))   # DeepStack mergers normalise the merged row
    return s


def _thinker(cfg) -> dict:
    t = cfg.thinker_config.text_config
    p, H = PREFIXES["thinker"], t.hidden_size
    s = {p + "embed_tokens.weight": (t.vocab_size, H), p + "norm.weight": (H,),
         "thinker.lm_head.weight": (t.vocab_size, H)}
    s.update(_decoder_layers(p + "layers.", t, H, moe=True))
    return s


def _talker(cfg) -> dict:
    tk = cfg.talker_config
    t, cp = tk.text_config, tk.code_predictor_config
    p, Dt, Th, Ti = PREFIXES["talker"], t.hidden_size, tk.thinker_hidden_size, t.intermediate_size
    s = {}
    for proj in ("text_projection", "hidden_projection"):
        s.update({f"{p}{proj}.linear_fc1.weight": (Ti, Th), f"{p}{proj}.linear_fc1.bias": (Ti,),
                  f"{p}{proj}.linear_fc2.weight": (Dt, Ti), f"{p}{proj}.linear_fc2.bias": (Dt,)})
    s.update({p + "model.codec_embedding.weight": (t.vocab_size, Dt), p + "codec_head.weight": (t.vocab_size, Dt),
              p + "model.norm.weight": (Dt,)})
    s.update(_decoder_layers(p + "model.layers.", t, Dt, moe=True, shared=True))
    c = p + "code_predictor."
    for j in range(tk.num_code_groups - 1):
        s[f"{c}model.codec_embedding.{j}.weight"] = (cp.vocab_size, cp.hidden_size)
        s[f"{c}lm_head.{j}.weight"] = (cp.vocab_size, cp.hidden_size)
    s[c + "model.norm.weight"] = (cp.hidden_size,)
    s.update(_decoder_layers(c + "model.layers.", cp, cp.hidden_size, moe=False))
    return s


def _code2wav(cfg) -> dict:
    c = cfg.code2wav_config
    p, Hc, Dd = PREFIXES["code2wav"], c.hidden_size, c.decoder_dim
    s = {p + "code_embedding.weight": (c.num_quantizers * c.codebook_size, Hc)}
    for i in range(c.num_hidden_layers):
        q = f"{p}pre_transformer.layers.{i}."
        s.update(_attention(q + "self_attn.", Hc, c.num_attention_heads, c.num_key_value_heads, c.head_dim, False))
        s.update(_swiglu(q + "mlp.", Hc, c.intermediate_size))
        for k in ("input_layernorm.weight", "post_attention_layernorm.weight", "self_attn_layer_scale.scale",
                  "mlp_layer_scale.scale"):
            s[q + k] = (Hc,)
    s[p + "pre_transformer.norm.weight"] = (Hc,)            # after the layers, in data-flow order
    for u, r in enumerate(c.upsampling_ratios):
        q = f"{p}upsample.{u}."
        s.update({q + "0.conv.weight": (Hc, Hc, r), q + "0.conv.bias": (Hc,),
                  q + "1.dwconv.conv.weight": (Hc, 1, 7), q + "1.dwconv.conv.bias": (Hc,),
                  q + "1.norm.weight": (Hc,), q + "1.norm.bias": (Hc,),
                  q + "1.pwconv1.weight": (4 * Hc, Hc), q + "1.pwconv1.bias": (4 * Hc,),
                  q + "1.pwconv2.weight": (Hc, 4 * Hc), q + "1.pwconv2.bias": (Hc,), q + "1.gamma": (Hc,)})
    s.update({p + "decoder.0.conv.weight": (Dd, Hc, 7), p + "decoder.0.conv.bias": (Dd,)})
    nb = len(c.upsample_rates)
    for b, r in enumerate(c.upsample_rates):
        din, dout, q = Dd // 2 ** b, Dd // 2 ** (b + 1), f"{p}decoder.{b + 1}.block."
        s.update({q + "0.alpha": (din,), q + "0.beta": (din,),
                  q + "1.conv.weight": (din, dout, 2 * r), q + "1.conv.bias": (dout,)})
        for j in (2, 3, 4):
            s.update({f"{q}{j}.act1.alpha": (dout,), f"{q}{j}.act1.beta": (dout,),
                      f"{q}{j}.conv1.conv.weight": (dout, dout, 7), f"{q}{j}.conv1.conv.bias": (dout,),
                      f"{q}{j}.act2.alpha": (dout,), f"{q}{j}.act2.beta": (dout,),
                      f"{q}{j}.conv2.conv.weight": (dout, dout, 1), f"{q}{j}.conv2.conv.bias": (dout,)})
    dl = Dd // 2 ** nb
    s.update({f"{p}decoder.{nb + 1}.alpha": (dl,), f"{p}decoder.{nb + 1}.beta": (dl,),
              f"{p}decoder.{nb + 2}.conv.weight": (1, dl, 7), f"{p}decoder.{nb + 2}.conv.bias": (1,)})
    return s


COMPONENTS = {"audio": _audio, "vision": _vision, "thinker": _thinker, "talker": _talker, "code2wav": _code2wav}


def component_of(key: str) -> str | None:
    if key == "thinker.lm_head.weight":
        return "thinker"
    for name, prefix in PREFIXES.items():
        if key.startswith(prefix):
            return name
    return None


def expected_shapes(cfg: OmniConfig, components=None) -> dict[str, tuple[int, ...]]:
    """{key: shape} of every tensor of the named components (all by default) for this config."""
    out = {}
    for name in components or COMPONENTS:
        out.update(COMPONENTS[name](cfg))
    return out


def check_weights(weights: Weights, cfg: OmniConfig | None, *, allow_extra: bool = False) -> list[str]:
    """Check names, shapes and dtypes of a loaded checkpoint against its config; return the components present.

    A checkpoint may hold only some components (a code2wav-only case), but a component that is present must
    be complete: the architecture comes from the config, never from which keys happen to exist. Raises
    SafetensorsError (a CheckpointError) naming the missing, unexpected or misshapen keys (the first few and
    how many in all), or a tensor whose dtype is not the checkpoint's float dtype. allow_extra: tensors the
    config does not imply are fine (a model class built with fewer layers than the file has, as the
    full-width bench does; the entry points are strict).
    """
    if cfg is None:
        return []
    present = sorted({c for c in map(component_of, weights) if c is not None})
    unknown = [k for k in weights if component_of(k) is None]
    if unknown and not allow_extra:
        raise SafetensorsError(f"{weights.where}: unexpected key {_names(unknown)} outside the Hub layout",
                               field=unknown[0])
    if not allow_extra:
        _check_key_count(weights, cfg, present)
    expected = expected_shapes(cfg, present)
    missing = [k for k in expected if k not in weights]
    if missing:
        raise SafetensorsError(f"{weights.where}: missing key {_names(missing)} (the config implies shape "
                               f"{list(expected[missing[0]])} for the first)", field=missing[0])
    extra = [k for k in weights if k not in expected]
    if extra and not allow_extra:
        raise SafetensorsError(f"{weights.where}: unexpected key {_names(extra)} (shape "
                               f"{list(weights.shape(extra[0]))} for the first) that the config does not "
                               "imply", field=extra[0])
    wrong = [k for k, shape in expected.items() if tuple(weights.shape(k)) != tuple(shape)]
    if wrong:
        k = wrong[0]
        more = f" ({len(wrong) - 1} more tensors misshapen: {_names(wrong[1:])})" if len(wrong) > 1 else ""
        raise SafetensorsError(f"{weights.where}: tensor '{k}' has shape {list(weights.shape(k))}, the config "
                               f"implies {list(expected[k])}{more}", field=k)
    _check_dtypes(weights, cfg)
    return present


# config.json's `dtype` (or older `torch_dtype`) -> the safetensors dtype of every float tensor
CONFIG_DTYPES = {"float32": "F32", "bfloat16": "BF16", "float16": "F16", "float64": "F64"}
FLOAT_DTYPES = ("F32", "BF16", "F16", "F64")


def _names(keys: list[str], shown: int = 3) -> str:
    """'a', 'b', 'c' and 4 more (7 in all): a one-line list that names each culprit up to `shown`."""
    head = ", ".join(f"'{k}'" for k in keys[:shown])
    return head + (f" and {len(keys) - shown} more ({len(keys)} in all)" if len(keys) > shown else "")


def _check_key_count(weights: Weights, cfg: OmniConfig, present: list[str]) -> None:
    """Refuse a config implying far more tensors than the checkpoint holds before building the key table
    (config.validate bounds each size, but 1024 layers x 1024 experts would still be millions of keys)."""
    n = 0
    for name in present:
        for dec in {"thinker": [cfg.thinker_config.text_config], "talker": [cfg.talker_config.text_config,
                    cfg.talker_config.code_predictor_config]}.get(name, []):
            n += dec.num_hidden_layers * (3 * max(1, getattr(dec, "num_experts", 1)) + 12)
    if n > 2 * len(weights) + 10000:
        raise SafetensorsError(f"{weights.where}: the config implies at least {n} tensors but the checkpoint "
                               f"holds {len(weights)}: config and checkpoint do not belong together")


def _check_dtypes(weights: Weights, cfg: OmniConfig) -> None:
    """Every weight is stored in one float dtype, the one most tensors have (config.json's `dtype` is often
    stale, so the file decides; it breaks ties).

    A relabelled tensor (F32 bytes read as I32, BF16 bytes read as F16) has the right size and shape, so
    only its dtype can give it away; computing with it would silently change every output.
    """
    extra = getattr(cfg, "extra", None) or {}
    declared = CONFIG_DTYPES.get(extra.get("dtype") or extra.get("torch_dtype") or "")
    dtypes: dict[str, list[str]] = {}
    for k in weights:
        dtypes.setdefault(weights.dtype(k), []).append(k)
    floats = [d for d in dtypes if d in FLOAT_DTYPES]
    want = max(floats, key=lambda d: (len(dtypes[d]), d == declared)) if floats else "F32"
    for d, keys in dtypes.items():
        if d != want:
            raise SafetensorsError(f"{weights.where}: tensor {_names(keys)} stored as {d}, but the other "
                                   f"{len(dtypes.get(want, []))} tensors are {want}", field=keys[0], value=d)
