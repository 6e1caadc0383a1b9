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
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .published import published_config

__all__ = ["AudioEncoderConfig", "VisionEncoderConfig", "TextConfig", "ThinkerConfig", "TalkerTextConfig",
           "CodePredictorConfig", "TalkerConfig", "Code2WavConfig", "OmniConfig", "load_config",
           "qwen3_omni_30b_a3b_instruct", "qwen3_omni_30b_a3b_thinking", "qwen3_omni_30b_a3b_captioner", "PRESETS"]

ROPE_KEYS = ("rope_theta", "mrope_section", "interleaved", "mrope_interleaved", "rope_type")


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
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.mlp_only_layers is None:
            self.mlp_only_layers = []
        if self.mrope_section is None:
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
            self.head_dim = self.hidden_size // self.num_attention_heads


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
            raise ValueError(f"unknown speaker '{name}'; this checkpoint has {sorted(table) or 'none'}")
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
        return self.hidden_size // self.num_attention_heads

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


def load_config(source: str | os.PathLike | dict) -> OmniConfig:
    """A case/checkpoint directory, a config.json path, a dict, or a preset name -> OmniConfig."""
    if isinstance(source, dict):
        return OmniConfig.from_dict(source)
    if isinstance(source, str) and source in PRESETS:
        return PRESETS[source]()
    path = Path(source)
    if path.is_dir():
        path = path / "config.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no config.json (known presets: {', '.join(PRESETS)})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config must be a JSON object")
    cfg = OmniConfig.from_dict(data)
    cfg.source = str(path.parent if path.name == "config.json" else path)
    return cfg


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
