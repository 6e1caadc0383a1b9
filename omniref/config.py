"""Configuration dataclasses, one per component, with the Hugging Face `Qwen3OmniMoe*Config` names and defaults.

A `config.json` written by `save_pretrained` nests the components like the model does:

    Qwen3OmniMoeConfig
    ├── thinker_config              ThinkerConfig: token ids of the media placeholders, position_id_per_seconds
    │   ├── audio_config            AudioEncoderConfig   (waveform features -> audio tokens)
    │   ├── vision_config           VisionEncoderConfig  (pixels -> visual tokens + DeepStack features)
    │   └── text_config             TextConfig           (the MoE text decoder)
    ├── talker_config               TalkerConfig: codec special ids, accept_hidden_layer, speaker ids
    │   ├── text_config             TalkerTextConfig     (MoE decoder + shared expert; experts as num_local_experts)
    │   └── code_predictor_config   CodePredictorConfig  (small dense decoder for codebooks 1..G-1)
    └── code2wav_config             Code2WavConfig       (codes -> 24 kHz waveform)

Rotary settings live in a nested `rope_parameters` dict (`rope_theta`, `mrope_section`, `interleaved`,
`mrope_interleaved`); we flatten them into fields of the same names. Fields that `config.json` has but the
dataclass does not declare are kept in `extra` so nothing is silently lost. Defaults equal the HF classes
(transformers 5.24.0); the published Qwen3-Omni-30B-A3B-Instruct checkpoint differs from them in places (see
`qwen3_omni_30b_a3b_instruct()`), which is why every value is always read from the file when present.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .published import published_config

__all__ = ["AudioEncoderConfig", "VisionEncoderConfig", "TextConfig", "ThinkerConfig", "TalkerTextConfig",
           "CodePredictorConfig", "TalkerConfig", "Code2WavConfig", "OmniConfig", "load_config",
           "qwen3_omni_30b_a3b_instruct", "qwen3_omni_30b_a3b_thinking", "qwen3_omni_30b_a3b_captioner", "PRESETS", "validate"]

ROPE_KEYS = ("rope_theta", "mrope_section", "interleaved", "mrope_interleaved", "rope_type")


def _ratio(a, b):
    """a // b for the default head_dim; None while either is not a positive integer (validate names it)."""
    ok = all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in (a, b))
    return a // b if ok else None


class _Section:
    """Shared parsing: known fields from the dict, `rope_parameters` flattened, the rest kept in `extra`."""

    # field name in the dataclass -> alternative key names accepted in config.json (first found wins)
    ALIASES: dict[str, tuple[str, ...]] = {}
    NESTED: dict[str, type] = {}

    @classmethod
    def from_dict(cls, d: dict | None):
        d = dict(d or {})
        rope = d.pop("rope_parameters", None) or d.pop("rope_scaling", None) or {}
        for k in ROPE_KEYS:
            if k in rope and k not in d:
                d[k] = rope[k]
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for name, alts in cls.ALIASES.items():
            for alt in alts:
                if alt in d and name not in d:
                    d[name] = d[alt]
        for name in names - {"extra"}:
            if name in d:
                value = d.pop(name)
                if name in cls.NESTED:
                    value = cls.NESTED[name].from_dict(value)
                kwargs[name] = value
        for name, sub in cls.NESTED.items():
            kwargs.setdefault(name, sub.from_dict(None))
        obj = cls(**kwargs)
        obj.extra = d
        obj.__post_init__()
        return obj

    def __post_init__(self):
        pass

    def unknown_fields(self, prefix: str = "") -> list[str]:
        """Dotted names of the config.json fields omniref keeps in `extra` but does not use (training-only
        settings such as dropouts, bookkeeping such as `model_type`, and anything newer than this reader)."""
        out = [prefix + k for k in sorted(self.extra)]
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, _Section):
                out += v.unknown_fields(f"{prefix}{f.name}.")
        return out

    def to_dict(self) -> dict:
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "extra":
                continue
            out[f.name] = v.to_dict() if isinstance(v, _Section) else copy.deepcopy(v)
        return out


# ---------------------------------------------------------------------------------------------------------
# Thinker encoders
# ---------------------------------------------------------------------------------------------------------
@dataclass
class AudioEncoderConfig(_Section):
    num_mel_bins: int = 128            # log-mel rows fed to the first conv2d
    encoder_layers: int = 32
    encoder_attention_heads: int = 20
    encoder_ffn_dim: int = 5120
    d_model: int = 1280
    activation_function: str = "gelu"
    scale_embedding: bool = False
    max_source_positions: int = 1500   # rows of the sinusoid position table
    n_window: int = 100                # chunk = 2*n_window mel frames (the Hub checkpoint uses 50)
    output_dim: int = 3584             # = thinker hidden size
    n_window_infer: int = 400          # attention window in frames (the Hub checkpoint uses 800)
    conv_chunksize: int = 500          # chunks per conv batch in the reference (memory only, no numerics)
    downsample_hidden_size: int = 480  # channels of the three stride-2 conv2d layers
    extra: dict = field(default_factory=dict, repr=False)


@dataclass
class VisionEncoderConfig(_Section):
    depth: int = 27
    hidden_size: int = 1152
    hidden_act: str = "gelu_pytorch_tanh"
    intermediate_size: int = 4304
    num_heads: int = 16
    in_channels: int = 3
    patch_size: int = 16
    spatial_merge_size: int = 2        # 2x2 patches merge into one token
    temporal_patch_size: int = 2       # two frames per patch (a still image is repeated)
    out_hidden_size: int = 3584        # = thinker hidden size
    num_position_embeddings: int = 2304  # a 48x48 grid of learned positions, interpolated to each image
    deepstack_visual_indexes: list = field(default_factory=lambda: [8, 16, 24])
    rope_theta: float = 10000.0
    extra: dict = field(default_factory=dict, repr=False)


# ---------------------------------------------------------------------------------------------------------
# Decoders
# ---------------------------------------------------------------------------------------------------------
@dataclass
class TextConfig(_Section):
    """Qwen3OmniMoeTextConfig: the thinker's MoE text decoder."""
    vocab_size: int = 3584
    hidden_size: int = 2048
    intermediate_size: int = 18944
    num_hidden_layers: int = 28
    num_attention_heads: int = 28
    num_key_value_heads: int = 4
    head_dim: int | None = None        # None -> hidden_size // num_attention_heads
    hidden_act: str = "silu"
    max_position_embeddings: int = 32768
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1000000.0
    mrope_section: list | None = None  # rotary frequency slots per (time, height, width) axis
    interleaved: bool = True           # present in config.json; the reference interleaves regardless
    mrope_interleaved: bool = True
    attention_bias: bool = False
    sliding_window: int | None = None
    decoder_sparse_step: int = 1
    moe_intermediate_size: int = 768
    num_experts_per_tok: int = 8
    num_experts: int = 128
    norm_topk_prob: bool = True
    mlp_only_layers: list = field(default_factory=list)
    tie_word_embeddings: bool = False
    extra: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        if self.head_dim is None:
            self.head_dim = _ratio(self.hidden_size, self.num_attention_heads)
        if self.mlp_only_layers is None:
            self.mlp_only_layers = []
        if self.mrope_section is None and isinstance(self.head_dim, int):
            # without an explicit split all rotary slots follow the temporal row = plain 1-D RoPE
            self.mrope_section = [self.head_dim // 2, 0, 0]

    def is_moe_layer(self, i: int) -> bool:
        return i not in self.mlp_only_layers and self.num_experts > 0 and (i + 1) % self.decoder_sparse_step == 0


@dataclass
class ThinkerConfig(_Section):
    audio_config: AudioEncoderConfig = None
    vision_config: VisionEncoderConfig = None
    text_config: TextConfig = None
    audio_token_id: int = 151646
    image_token_id: int = 151655
    video_token_id: int = 151656
    audio_start_token_id: int = 151647
    audio_end_token_id: int = 151648
    vision_start_token_id: int = 151652
    vision_end_token_id: int = 151653
    user_token_id: int = 872
    position_id_per_seconds: float = 25
    seconds_per_chunk: float = 2
    extra: dict = field(default_factory=dict, repr=False)
    NESTED = {"audio_config": AudioEncoderConfig, "vision_config": VisionEncoderConfig, "text_config": TextConfig}


@dataclass
class TalkerTextConfig(TextConfig):
    """Qwen3OmniMoeTalkerTextConfig: like the thinker's, but every layer is MoE + a gated shared expert, and
    config.json stores the expert count as `num_local_experts`."""
    vocab_size: int = 3072
    hidden_size: int = 1024
    intermediate_size: int = 2048      # width of text_projection / hidden_projection
    num_hidden_layers: int = 20
    num_attention_heads: int = 16
    num_key_value_heads: int = 2
    moe_intermediate_size: int = 384
    num_experts_per_tok: int = 8
    num_experts: int = 128
    shared_expert_intermediate_size: int = 768
    norm_topk_prob: bool = False
    extra: dict = field(default_factory=dict, repr=False)
    ALIASES = {"num_experts": ("num_local_experts",)}

    def is_moe_layer(self, i: int) -> bool:
        return True   # every talker layer is MoE + shared expert, whatever mlp_only_layers says (golden format §9.6)


@dataclass
class CodePredictorConfig(_Section):
    """A dense Qwen3 decoder: per frame it predicts codebooks 1..G-1 from the talker state and codebook 0."""
    vocab_size: int = 2048             # = codebook size
    hidden_size: int = 1024
    intermediate_size: int = 3072
    num_hidden_layers: int = 5
    num_attention_heads: int = 16
    num_key_value_heads: int = 8
    head_dim: int | None = 128
    hidden_act: str = "silu"
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1000000.0
    num_code_groups: int = 32
    max_position_embeddings: int = 32768
    extra: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        if self.head_dim is None:
            self.head_dim = _ratio(self.hidden_size, self.num_attention_heads)


@dataclass
class TalkerConfig(_Section):
    code_predictor_config: CodePredictorConfig = None
    text_config: TalkerTextConfig = None
    num_code_groups: int = 32
    thinker_hidden_size: int = 2048
    accept_hidden_layer: int = 18      # which thinker hidden state conditions the talker's multimodal rows
    codec_eos_token_id: int = 4198
    codec_nothink_id: int = 4203
    codec_think_bos_id: int = 4204
    codec_think_eos_id: int = 4205
    codec_pad_id: int = 4196
    codec_bos_id: int = 4197
    audio_token_id: int = 151646
    image_token_id: int = 151655
    video_token_id: int = 151656
    vision_start_token_id: int = 151652
    audio_start_token_id: int = 151669
    audio_end_token_id: int = 151670
    position_id_per_seconds: float = 25
    spatial_merge_size: int = 2        # not declared by the HF class but present in config.json
    speaker_id: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict, repr=False)
    NESTED = {"code_predictor_config": CodePredictorConfig, "text_config": TalkerTextConfig}

    def speaker(self, name: str) -> int:
        """Speaker name (any case) -> codec id."""
        table = {k.lower(): v for k, v in (self.speaker_id or {}).items()}
        if name.lower() not in table:
            from .errors import InputError
            raise InputError(f"unknown speaker '{name}'; this checkpoint has {sorted(table) or 'none'}",
                             field="speaker", value=name)
        return int(table[name.lower()])


@dataclass
class Code2WavConfig(_Section):
    codebook_size: int = 2048
    hidden_size: int = 1024
    max_position_embeddings: int = 8000
    rope_theta: float = 10000.0
    num_attention_heads: int = 16
    num_key_value_heads: int = 16
    attention_bias: bool = False
    sliding_window: int = 72           # each code frame attends to the previous 72 frames (itself included)
    intermediate_size: int = 3072
    hidden_act: str = "silu"
    layer_scale_initial_scale: float = 0.01
    rms_norm_eps: float = 1e-5
    num_hidden_layers: int = 8
    num_quantizers: int = 16
    upsample_rates: list = field(default_factory=lambda: [8, 5, 4, 3])
    upsampling_ratios: list = field(default_factory=lambda: [2, 2])
    decoder_dim: int = 1536
    extra: dict = field(default_factory=dict, repr=False)

    @property
    def head_dim(self) -> int:
        return _ratio(self.hidden_size, self.num_attention_heads)

    @property
    def total_upsample(self) -> int:
        """Waveform samples per code frame: prod(upsampling_ratios) * prod(upsample_rates) (1920 by default)."""
        n = 1
        for r in list(self.upsampling_ratios) + list(self.upsample_rates):
            n *= r
        return n


@dataclass
class OmniConfig(_Section):
    thinker_config: ThinkerConfig = None
    talker_config: TalkerConfig = None
    code2wav_config: Code2WavConfig = None
    enable_audio_output: bool = True
    im_start_token_id: int = 151644
    im_end_token_id: int = 151645
    tts_pad_token_id: int = 151671
    tts_bos_token_id: int = 151672
    tts_eos_token_id: int = 151673
    system_token_id: int = 8948
    user_token_id: int = 872
    assistant_token_id: int = 77091
    extra: dict = field(default_factory=dict, repr=False)
    NESTED = {"thinker_config": ThinkerConfig, "talker_config": TalkerConfig, "code2wav_config": Code2WavConfig}

    source = ""    # where the config was read from (a directory or file name): a hint for `variant`

    @property
    def has_talker(self) -> bool:
        """Whether the checkpoint speaks: `Qwen3OmniMoeForConditionalGeneration` builds the talker and Code2Wav
        only when `enable_audio_output` is true (Instruct); Thinking and Captioner are thinker-only."""
        return bool(self.enable_audio_output)

    @property
    def variant(self) -> str:
        """"instruct" (thinker + talker + Code2Wav) or, thinker-only, "captioner" when the checkpoint's name
        says so (config.json has no field telling the two apart), else "thinking"."""
        if self.has_talker:
            return "instruct"
        name = f"{self.source} {self.extra.get('_name_or_path', '')}".lower()
        return "captioner" if "captioner" in name else "thinking"

    @property
    def thinker(self) -> ThinkerConfig:
        return self.thinker_config

    @property
    def talker(self) -> TalkerConfig:
        return self.talker_config

    @property
    def code2wav(self) -> Code2WavConfig:
        return self.code2wav_config


MAX_CONFIG_BYTES = 16 * 1024 * 1024   # a Hub config.json is a few kB; this bounds what we read and parse


def load_config(source: str | os.PathLike | dict) -> OmniConfig:
    """A case/checkpoint directory, a config.json path, a dict, or a preset name -> OmniConfig.

    A file is validated: anything wrong (not a regular file, not UTF-8 JSON, a duplicate key, a field of the
    wrong type or range) raises ConfigError naming the file and the field. A dict is taken as given, since
    partial dicts (the class defaults for the rest) are how tests and tutorials build one component; pass
    it through `validate` to check it.
    """
    from .errors import ConfigError, parse_json, regular_file
    if isinstance(source, dict):
        return _from_dict(source, "config")
    if isinstance(source, str) and source in PRESETS:
        return PRESETS[source]()
    path = Path(source)
    if path.is_dir():
        path = path / "config.json"
    if not os.path.lexists(path):
        raise ConfigError(f"{path}: no config.json (known presets: {', '.join(PRESETS)})", file=path)
    regular_file(path, "config", ConfigError, MAX_CONFIG_BYTES)
    data = parse_json(path.read_bytes(), path, "config", ConfigError, max_depth=16)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a JSON object, got a {type(data).__name__}", file=path)
    cfg = validate(_from_dict(data, path), path)
    cfg.source = str(path.parent if path.name == "config.json" else path)
    return cfg


def _from_dict(data: dict, source) -> OmniConfig:
    """OmniConfig.from_dict, with a section or rope_parameters of the wrong JSON type named as a ConfigError."""
    from .errors import ConfigError

    def walk(d, cls, where):
        for name, sub in cls.NESTED.items():
            if name in d and d[name] is not None:
                if not isinstance(d[name], dict):
                    raise ConfigError(f"{source}: {where}{name} = {d[name]!r}: expected an object",
                                      field=where + name, value=d[name])
                walk(d[name], sub, f"{where}{name}.")
        for name in ("rope_parameters", "rope_scaling"):
            if d.get(name) is not None and not isinstance(d[name], dict):
                raise ConfigError(f"{source}: {where}{name} = {d[name]!r}: expected an object",
                                  field=where + name, value=d[name])
    walk(data, OmniConfig, "")
    return OmniConfig.from_dict(data)


def qwen3_omni_30b_a3b_instruct() -> OmniConfig:
    """The published Qwen/Qwen3-Omni-30B-A3B-Instruct config.json (`published.published_config`).

    Where it differs from the class defaults: audio n_window 50 / n_window_infer 800 / output_dim 2048,
    audio_token_id 151675, position_id_per_seconds 13, accept_hidden_layer 24, 16 code groups, talker
    norm_topk_prob true, the codec ids past the 2048-entry codebook.
    """
    return OmniConfig.from_dict(published_config("instruct"))


def qwen3_omni_30b_a3b_thinking() -> OmniConfig:
    """Qwen3-Omni-30B-A3B-Thinking: the same thinker, no talker (`enable_audio_output` false)."""
    cfg = OmniConfig.from_dict(published_config("thinking"))
    cfg.source = "Qwen3-Omni-30B-A3B-Thinking"
    return cfg


def qwen3_omni_30b_a3b_captioner() -> OmniConfig:
    """Qwen3-Omni-30B-A3B-Captioner: the thinker fine-tuned to describe audio, no talker."""
    cfg = OmniConfig.from_dict(published_config("captioner"))
    cfg.source = "Qwen3-Omni-30B-A3B-Captioner"
    return cfg


PRESETS = {"qwen3-omni-30b-a3b-instruct": qwen3_omni_30b_a3b_instruct,
           "qwen3-omni-30b-a3b-thinking": qwen3_omni_30b_a3b_thinking,
           "qwen3-omni-30b-a3b-captioner": qwen3_omni_30b_a3b_captioner}


# ---------------------------------------------------------------------------------------------------------
# Validation: every field the model reads, checked once at load, before anything is sized from it
# ---------------------------------------------------------------------------------------------------------
# Upper bounds far above any published Qwen3-Omni size (30B-A3B: 48 layers, 128 experts, hidden 2048, vocab
# 152064) that still keep the key table of `checkpoint.expected_shapes` and every buffer finite. A config
# beyond them is almost surely corrupt (`num_hidden_layers: 1e9` once grew memory until the process was killed).
MAX_LAYERS, MAX_WIDTH, MAX_HEADS, MAX_EXPERTS = 1024, 1 << 17, 1024, 1024
MAX_VOCAB, MAX_POSITIONS = 1 << 22, 1 << 24
DECODER_ACTIVATIONS = ("silu", "swish")                     # decoder.swiglu is SiLU-gated; nothing else is built
AUDIO_ACTIVATIONS = ("gelu", "gelu_pytorch_tanh", "gelu_new", "silu", "swish")
VISION_ACTIVATIONS = ("gelu_pytorch_tanh", "gelu_new", "gelu", "silu")


class _Check:
    """Collects the rules of one config section; each failure is a ConfigError naming file, field and value."""

    def __init__(self, section, where: str, source):
        self.section, self.where, self.source = section, where, source

    def fail(self, name: str, expected: str):
        from .errors import ConfigError
        value = getattr(self.section, name) if hasattr(self.section, name) else self.section.extra.get(name)
        field_path = f"{self.where}.{name}" if self.where else name
        raise ConfigError(f"{self.source}: {field_path} = {value!r}: expected {expected}", file=self.source
                          if self.source != "config" else None, field=field_path, value=value)

    def int(self, name: str, lo: int = 1, hi: int = MAX_WIDTH, optional: bool = False) -> None:
        v = getattr(self.section, name)
        if v is None and optional:
            return
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            self.fail(name, f"an integer in [{lo}, {hi}]" + (" or null" if optional else ""))

    def float(self, name: str, positive: bool = True, hi: float = 1e12) -> None:
        v = getattr(self.section, name)
        if (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or (positive and v <= 0)
                or abs(v) > hi):
            self.fail(name, "a finite number" + (" > 0" if positive else "") + f" of at most {hi:g}")

    def bool(self, name: str) -> None:
        if not isinstance(getattr(self.section, name), bool):
            self.fail(name, "true or false")

    def choice(self, name: str, allowed) -> None:
        if getattr(self.section, name) not in allowed:
            self.fail(name, f"one of {', '.join(map(str, allowed))} (the others are not implemented)")

    def int_list(self, name: str, lo: int, hi: int, length: int | None = None, max_len: int = MAX_LAYERS) -> None:
        v = getattr(self.section, name)
        ok = isinstance(v, list) and len(v) <= max_len and (length is None or len(v) == length) and all(
            isinstance(x, int) and not isinstance(x, bool) and lo <= x <= hi for x in v)
        if not ok:
            self.fail(name, (f"a list of {length} " if length else "a list of ") + f"integers in [{lo}, {hi}]")

    def require(self, ok: bool, name: str, expected: str) -> None:
        if not ok:
            self.fail(name, expected)


def _check_rope_type(c: _Check, allowed=("default",)) -> None:
    """rope_type (from rope_parameters): scaled variants (yarn, linear, dynamic, ...) are not implemented."""
    rope_type = c.section.extra.get("rope_type")
    if rope_type is not None and rope_type not in allowed:
        c.fail("rope_type", " or ".join(map(repr, allowed)) + " (scaled RoPE variants are not implemented)")


def _check_decoder(c: _Check, *, moe: bool) -> None:
    """The fields a Qwen3 decoder (decoder.Decoder) reads: sizes, GQA grouping, RoPE and the MoE router."""
    s = c.section
    c.int("vocab_size", 1, MAX_VOCAB)
    c.int("hidden_size"), c.int("intermediate_size"), c.int("num_hidden_layers", 1, MAX_LAYERS)
    c.int("num_attention_heads", 1, MAX_HEADS), c.int("num_key_value_heads", 1, MAX_HEADS)
    c.int("head_dim", 2, MAX_WIDTH)
    # GQA: each kv head serves num_attention_heads / num_key_value_heads query heads
    c.require(s.num_attention_heads % s.num_key_value_heads == 0, "num_key_value_heads",
              f"a divisor of num_attention_heads = {s.num_attention_heads}")
    c.require(s.head_dim % 2 == 0, "head_dim", "an even number (RoPE rotates pairs of dimensions)")
    c.choice("hidden_act", DECODER_ACTIVATIONS)
    c.float("rms_norm_eps", hi=1.0), c.float("rope_theta")         # 1e12: still a finite float32 frequency base
    c.int("max_position_embeddings", 1, MAX_POSITIONS)
    _check_rope_type(c)
    _check_unsupported(c)
    if moe:
        c.int("num_experts", 0 if not isinstance(s, TalkerTextConfig) else 1, MAX_EXPERTS)
        c.int("moe_intermediate_size")
        c.bool("norm_topk_prob")
        if s.num_experts > 0:
            c.int("num_experts_per_tok", 1, s.num_experts)
        c.int("decoder_sparse_step", 1, MAX_LAYERS)
        c.int_list("mlp_only_layers", 0, s.num_hidden_layers - 1)


def _field(section, name: str, default=None):
    """A declared field, else the value config.json gave in `extra`, else default."""
    return getattr(section, name) if hasattr(section, name) else section.extra.get(name, default)


def _check_unsupported(c: _Check) -> None:
    """Variants of a decoder section that omniref does not implement are refused, declared field or not:
    biases in the attention projections, sliding-window layers (Qwen3-Omni's decoders attend to the whole
    context; a window applies only to `sliding_attention` layers, which the published checkpoints do not
    have), tied embeddings."""
    s = c.section
    if _field(s, "attention_bias", False) not in (False, None):
        c.fail("attention_bias", "false (q/k/v/o biases are not implemented)")
    if _field(s, "sliding_window") is not None or _field(s, "use_sliding_window", False) not in (False, None):
        c.fail("sliding_window", "null (sliding-window layers are not implemented for this decoder)")
    layer_types = _field(s, "layer_types")
    if layer_types is not None and (not isinstance(layer_types, list)
                                    or any(t != "full_attention" for t in layer_types)):
        c.fail("layer_types", "a list of 'full_attention' (other layer types are not implemented)")
    if _field(s, "tie_word_embeddings", False) not in (False, None):
        c.fail("tie_word_embeddings", "false (the checkpoint's own lm_head is read; tying is not implemented)")


def _check_text(c: _Check) -> None:
    s = c.section
    _check_decoder(c, moe=True)
    # M-RoPE: the head_dim/2 rotary frequencies are split between the (time, height, width) position rows
    c.int_list("mrope_section", 0, s.head_dim // 2, length=3)
    c.require(sum(s.mrope_section) == s.head_dim // 2, "mrope_section",
              f"three counts summing to head_dim / 2 = {s.head_dim // 2}")
    if isinstance(s, TalkerTextConfig):
        c.int("shared_expert_intermediate_size")


def _check_audio(c: _Check) -> None:
    s = c.section
    for name in ("num_mel_bins", "d_model", "encoder_ffn_dim", "downsample_hidden_size", "output_dim"):
        c.int(name)
    c.int("encoder_layers", 1, MAX_LAYERS), c.int("encoder_attention_heads", 1, MAX_HEADS)
    c.require(s.d_model % s.encoder_attention_heads == 0, "encoder_attention_heads",
              f"a divisor of d_model = {s.d_model}")
    # the processor's placeholder count (Qwen3OmniMoeProcessor) hard-codes 100-frame chunks: n_window = 50
    c.int("n_window", 1, MAX_POSITIONS)
    c.require(s.n_window == 50, "n_window", "50 (the processor's placeholder count assumes 100-frame chunks)")
    c.int("n_window_infer", 2 * s.n_window, MAX_POSITIONS)       # a window holds whole 2*n_window chunks
    chunk_tokens = 2 * s.n_window
    for _ in range(3):                                            # three stride-2 convolutions
        chunk_tokens = (chunk_tokens - 1) // 2 + 1
    c.int("max_source_positions", chunk_tokens, MAX_POSITIONS)    # a chunk's tokens index the position table
    c.int("conv_chunksize", 1, MAX_POSITIONS, optional=True)
    c.choice("activation_function", AUDIO_ACTIVATIONS)
    c.bool("scale_embedding")


def _check_vision(c: _Check) -> None:
    s = c.section
    c.int("depth", 1, MAX_LAYERS), c.int("hidden_size"), c.int("intermediate_size"), c.int("out_hidden_size")
    c.int("num_heads", 1, MAX_HEADS)
    c.require(s.hidden_size % s.num_heads == 0 and (s.hidden_size // s.num_heads) % 4 == 0, "num_heads",
              f"a divisor of hidden_size = {s.hidden_size} leaving a head size divisible by 4 (2-D RoPE)")
    c.int("in_channels", 3, 3)                                    # the processor always makes RGB patches
    c.int("patch_size", 1, 1024), c.int("spatial_merge_size", 1, 64), c.int("temporal_patch_size", 1, 64)
    c.int("num_position_embeddings", 1, MAX_POSITIONS)
    side = math.isqrt(s.num_position_embeddings)
    c.require(side * side == s.num_position_embeddings, "num_position_embeddings",
              "a square number (a side x side grid of learned positions)")
    c.int_list("deepstack_visual_indexes", 0, s.depth - 1)
    c.choice("hidden_act", VISION_ACTIVATIONS)
    c.float("rope_theta")
    _check_rope_type(c, allowed=("axial", "default"))           # the vision tower's 2-D (row, column) rotary


def _check_code_predictor(c: _Check) -> None:
    _check_decoder(c, moe=False)
    c.int("num_code_groups", 2, 1024)


def _check_code2wav(c: _Check) -> None:
    s = c.section
    c.int("codebook_size", 1, MAX_VOCAB), c.int("hidden_size"), c.int("intermediate_size")
    c.int("num_hidden_layers", 1, MAX_LAYERS), c.int("num_quantizers", 1, 1024), c.int("decoder_dim")
    c.int("num_attention_heads", 1, MAX_HEADS), c.int("num_key_value_heads", 1, MAX_HEADS)
    c.require(s.hidden_size % s.num_attention_heads == 0 and s.head_dim % 2 == 0, "num_attention_heads",
              f"a divisor of hidden_size = {s.hidden_size} leaving an even head size")
    c.require(s.num_attention_heads % s.num_key_value_heads == 0, "num_key_value_heads",
              f"a divisor of num_attention_heads = {s.num_attention_heads}")
    c.int("max_position_embeddings", 1, MAX_POSITIONS), c.int("sliding_window", 1, MAX_POSITIONS)
    c.float("rope_theta"), c.float("rms_norm_eps", hi=1.0), c.float("layer_scale_initial_scale", positive=False)
    c.choice("hidden_act", DECODER_ACTIVATIONS)
    c.require(s.attention_bias is False, "attention_bias", "false (attention biases are not implemented)")
    _check_rope_type(c)
    c.int_list("upsample_rates", 1, 64, max_len=16), c.int_list("upsampling_ratios", 1, 64, max_len=16)
    c.require(len(s.upsample_rates) >= 1, "upsample_rates", "at least one rate")
    # each decoder block halves the channels: decoder_dim / 2^len(upsample_rates) must stay whole
    c.require(s.decoder_dim % (1 << len(s.upsample_rates)) == 0, "decoder_dim",
              f"a multiple of 2^len(upsample_rates) = {1 << len(s.upsample_rates)}")


def validate(cfg: OmniConfig, source="config") -> OmniConfig:
    """Check every field the model reads (types, ranges, divisibility, cross-component sizes) -> cfg.

    Raises ConfigError naming `source` (the config.json path), the dotted field path and its value, e.g.
    `tiny/config.json: thinker_config.text_config.num_experts_per_tok = 0: expected an integer in [1, 6]`.
    Called by `load_config`, so no model is ever sized from an unchecked value.
    """
    th, tk, c2w = cfg.thinker_config, cfg.talker_config, cfg.code2wav_config
    text = th.text_config
    _check_text(_Check(text, "thinker_config.text_config", source))
    _check_audio(_Check(th.audio_config, "thinker_config.audio_config", source))
    _check_vision(_Check(th.vision_config, "thinker_config.vision_config", source))
    # token ids index the embedding tables: every special id must be a row of its vocabulary
    t = _Check(th, "thinker_config", source)
    if _field(th, "tie_word_embeddings", False) not in (False, None):
        t.fail("tie_word_embeddings", "false (tying is not implemented)")
    for name in ("audio_token_id", "image_token_id", "video_token_id", "audio_start_token_id",
                 "audio_end_token_id", "vision_start_token_id", "vision_end_token_id", "user_token_id"):
        t.int(name, 0, text.vocab_size - 1)
    t.float("position_id_per_seconds", hi=1e4), t.float("seconds_per_chunk", hi=1e4)
    o = _Check(cfg, "", source)
    o.bool("enable_audio_output")
    speech = ("tts_pad_token_id", "tts_bos_token_id", "tts_eos_token_id") if cfg.has_talker else ()
    for name in ("im_start_token_id", "im_end_token_id", "system_token_id", "user_token_id",
                 "assistant_token_id") + speech:
        o.int(name, 0, text.vocab_size - 1)
    dtype = _field(cfg, "dtype") if _field(cfg, "dtype") is not None else _field(cfg, "torch_dtype")
    if dtype is not None and dtype not in ("float32", "bfloat16", "float16", "float64"):
        o.fail("dtype" if _field(cfg, "dtype") is not None else "torch_dtype",
               "float32, bfloat16, float16, float64 or null (the dtype the weights are stored in)")
    # the encoders and the talker are sized to feed the thinker (and the thinker's hidden states the talker)
    a = _Check(th.audio_config, "thinker_config.audio_config", source)
    a.require(th.audio_config.output_dim == text.hidden_size, "output_dim",
              f"the thinker's hidden_size = {text.hidden_size}")
    v = _Check(th.vision_config, "thinker_config.vision_config", source)
    v.require(th.vision_config.out_hidden_size == text.hidden_size, "out_hidden_size",
              f"the thinker's hidden_size = {text.hidden_size}")
    if cfg.has_talker:                          # Thinking / Captioner checkpoints have no talker or Code2Wav
        _check_speech(cfg, source)
    return cfg


def _check_speech(cfg: OmniConfig, source) -> None:
    """The talker, its code predictor and Code2Wav (enable_audio_output true), and how they fit the thinker."""
    th, tk, c2w = cfg.thinker_config, cfg.talker_config, cfg.code2wav_config
    text = th.text_config
    _check_text(_Check(tk.text_config, "talker_config.text_config", source))
    _check_code_predictor(_Check(tk.code_predictor_config, "talker_config.code_predictor_config", source))
    _check_code2wav(_Check(c2w, "code2wav_config", source))
    k = _Check(tk, "talker_config", source)
    if _field(tk, "tie_word_embeddings", False) not in (False, None):
        k.fail("tie_word_embeddings", "false (tying is not implemented)")
    k.require(tk.thinker_hidden_size == text.hidden_size, "thinker_hidden_size",
              f"the thinker's hidden_size = {text.hidden_size}")
    k.int("accept_hidden_layer", 0, text.num_hidden_layers)
    k.int("num_code_groups", 2, 1024)
    k.require(tk.num_code_groups == tk.code_predictor_config.num_code_groups, "num_code_groups",
              f"code_predictor_config.num_code_groups = {tk.code_predictor_config.num_code_groups}")
    k.require(tk.num_code_groups <= c2w.num_quantizers, "num_code_groups",
              f"at most code2wav_config.num_quantizers = {c2w.num_quantizers}")
    for name in ("codec_eos_token_id", "codec_nothink_id", "codec_think_bos_id", "codec_think_eos_id",
                 "codec_pad_id", "codec_bos_id"):
        k.int(name, 0, tk.text_config.vocab_size - 1)
    # matched against the thinker's ids, never embedded: any id, even one outside the vocabulary, is valid
    for name in ("audio_token_id", "image_token_id", "video_token_id", "vision_start_token_id",
                 "audio_start_token_id", "audio_end_token_id"):
        k.int(name, 0, (1 << 31) - 1)
    k.float("position_id_per_seconds", hi=1e4), k.int("spatial_merge_size", 1, 64)
    ok = isinstance(tk.speaker_id, dict) and all(
        isinstance(n, str) and isinstance(i, int) and not isinstance(i, bool) and 0 <= i < tk.text_config.vocab_size
        for n, i in tk.speaker_id.items())
    k.require(ok, "speaker_id", f"an object {{name: codec id in [0, {tk.text_config.vocab_size - 1}]}}")
