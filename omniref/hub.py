"""Open a Hugging Face checkpoint directory as it was downloaded.

    Qwen3-Omni-30B-A3B-Instruct/              what each file gives omniref
    ├── config.json                            OmniConfig (fields omniref does not use are kept, listed in notes)
    ├── generation_config.json                 a plain dict (sampling defaults, end-of-turn ids)
    ├── preprocessor_config.json               ProcessorSettings: mel and image/video processor settings
    ├── tokenizer_config.json                  special tokens (`added_tokens_decoder`) and the chat template
    ├── vocab.json + merges.txt                the byte-level BPE (or tokenizer.json, or a *.tiktoken file)
    ├── model.safetensors.index.json           which shard holds each tensor
    └── model-0000k-of-0000n.safetensors       bf16 weights, memory-mapped: opening reads only the headers

Variants: Instruct has the talker and Code2Wav; Thinking and Captioner are the thinker alone
(`enable_audio_output` false, no `talker.*` / `code2wav.*` tensors). `require_talker` is the one place a
command that needs speech output says, in one line, that this checkpoint has none.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from .checkpoint import check_weights
from .config import OmniConfig, load_config
from .errors import InputError
from .preprocessor_config import ProcessorSettings, load_processor_settings
from .thinker.tokenizer import Tokenizer, load_tokenizer
from .weights import Weights, load_weights

__all__ = ["Checkpoint", "NoTalkerError", "open_checkpoint", "require_talker"]


class NoTalkerError(InputError):
    """A command needs speech output but the checkpoint is thinker-only."""


@dataclass
class Checkpoint:
    path: Path
    config: OmniConfig
    weights: Weights
    tokenizer: Tokenizer | None
    processor: ProcessorSettings
    generation: dict
    components: list[str]                        # which of audio/vision/thinker/talker/code2wav have weights
    notes: list[str] = field(default_factory=list)

    @property
    def variant(self) -> str:
        return self.config.variant

    @property
    def has_talker(self) -> bool:
        return self.config.has_talker and "talker" in self.components and "code2wav" in self.components


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def open_checkpoint(path: str | os.PathLike, *, check: bool = True) -> Checkpoint:
    """A downloaded (or generated) checkpoint directory -> Checkpoint. Weights stay memory-mapped.

    check: compare every tensor's name and shape with the config (reads only the safetensors headers).
    """
    d = Path(path)
    cfg = load_config(d)
    weights = load_weights(d)
    components = check_weights(weights, cfg) if check else []
    gen = _json(d / "generation_config.json") if (d / "generation_config.json").is_file() else {}
    ckpt = Checkpoint(path=d, config=cfg, weights=weights, tokenizer=load_tokenizer(d),
                      processor=load_processor_settings(d), generation=gen, components=components)
    if cfg.has_talker and check and not {"talker", "code2wav"} <= set(components):
        raise ValueError(f"{d / 'config.json'}: enable_audio_output is true but the weights have no "
                         f"{' / '.join(c for c in ('talker', 'code2wav') if c not in components)} tensors")
    unknown = cfg.unknown_fields()
    if unknown:
        ckpt.notes.append(f"config.json: {len(unknown)} fields kept but not used by omniref "
                          f"({', '.join(unknown[:4])}{', ...' if len(unknown) > 4 else ''})")
    if ckpt.processor.unknown_fields:
        ckpt.notes.append(f"preprocessor_config.json: {len(ckpt.processor.unknown_fields)} fields not used "
                          f"({', '.join(ckpt.processor.unknown_fields[:4])}, ...)")
    if ckpt.tokenizer is None:
        ckpt.notes.append("no tokenizer files (vocab.json + merges.txt, tokenizer.json or *.tiktoken)")
    return ckpt


def require_talker(config: OmniConfig, what: str = "speech output") -> None:
    """Raise NoTalkerError (one line) when `config` is a thinker-only checkpoint."""
    if not config.has_talker:
        raise NoTalkerError(f"{what} needs the talker, and this checkpoint ({config.variant.capitalize()}, "
                            "enable_audio_output false) has none: use the Instruct checkpoint")
