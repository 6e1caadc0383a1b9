"""Golden cases: a directory of reference inputs/outputs produced by the Hugging Face implementation.

    case/
      config.json          Qwen3OmniMoeConfig (model cases only)
      model.safetensors    Hub key layout (or model-0000k-of-0000n.safetensors + model.safetensors.index.json)
      golden.npz           inputs and expected outputs of every stage, keyed "stage.name[.i]"
      meta.json            provenance, generation settings, per-key documentation

Every key is described in `docs/golden_format.md`; `tests/golden/` holds the project's own cases in that format.
"""
from __future__ import annotations

import json
import os
import re
from functools import cached_property
from pathlib import Path

import numpy as np

from .config import OmniConfig, load_config
from .errors import InputError, parse_json, regular_file
from .weights import Weights, load_weights

__all__ = ["Case", "numbered", "natural_key"]


# keys that hold ids, codes, counts, grids or masks: the reference stores them as integers, and a float there
# (1.5 read as token 1) would be accepted silently
INTEGER_SUFFIXES = ("input_ids", "generated_ids", "sequences", "codes", "tokens", "grid_thw", "feature_lens",
                    "attention_mask", "chunk_size", "left_context_size", "use_audio_in_video")


def natural_key(key: str):
    """Sort "x.hidden_states.10" after "x.hidden_states.9" (numbers compared as numbers)."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key)]


def numbered(mapping, prefix: str) -> list:
    """Values of `prefix0, prefix1, ...` (keys numbered from 0 without gaps) as a list."""
    out, i = [], 0
    while f"{prefix}{i}" in mapping:
        out.append(mapping[f"{prefix}{i}"])
        i += 1
    return out


class Case:
    """One golden case directory. Everything is loaded lazily: a preprocessing-only case has no weights."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not (self.path / "golden.npz").is_file():
            raise InputError(f"{self.path}: not a golden case (no golden.npz)", file=self.path)
        self.name = self.path.name

    @cached_property
    def golden(self) -> dict[str, np.ndarray]:
        """golden.npz as {key: array}: plain arrays only (no pickles), id/code keys integer-typed."""
        path = regular_file(self.path / "golden.npz", "golden file", InputError)
        try:
            with np.load(path, allow_pickle=False) as z:
                golden = {k: z[k] for k in z.files}
        except (ValueError, OSError, EOFError) as e:
            raise InputError(f"{path}: not a readable .npz of plain arrays ({e})", file=path) from None
        for k, v in golden.items():
            if k.endswith(INTEGER_SUFFIXES) and v.dtype.kind not in "iub":
                raise InputError(f"{path}: key '{k}' has dtype {v.dtype}, expected integers (ids, codes, counts "
                                 "and masks are integer-valued)", file=path, field=k, value=str(v.dtype))
        return golden

    @cached_property
    def meta(self) -> dict:
        p = self.path / "meta.json"
        if not os.path.lexists(p):
            return {}
        meta = parse_json(regular_file(p, "meta.json", InputError).read_bytes(), p, "meta.json", InputError, 64)
        if not isinstance(meta, dict):
            raise InputError(f"{p}: meta.json must be a JSON object", file=p)
        return meta

    @cached_property
    def config(self) -> OmniConfig | None:
        # lexists, not is_file: a FIFO or directory named config.json is an error load_config names
        return load_config(self.path) if os.path.lexists(self.path / "config.json") else None

    @cached_property
    def weights(self) -> Weights | None:
        has = any(os.path.lexists(self.path / n) for n in ("model.safetensors", "model.safetensors.index.json"))
        return load_weights(self.path) if has else None

    def has(self, *keys: str) -> bool:
        return all(k in self.golden for k in keys)

    def __repr__(self) -> str:
        return f"Case({str(self.path)!r})"
