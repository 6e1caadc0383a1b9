"""Logits of the last position -> the next token id (greedy or sampled), and the decode loops' progress bar.

Legend: V vocabulary size.

Order of the logit processors (the conventional one, as in Hugging Face `generate`):
    raw logits --repetition penalty--> --/temperature--> --top-k--> --top-p--> softmax --> draw
Greedy decoding skips everything after the penalty and takes the argmax (ties: the lowest id, like
`np.argmax` and `torch.argmax`). Sampling draws from a seeded `numpy.random.Generator`, so a run is
reproducible from its seed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SamplingConfig", "apply_repetition_penalty", "top_k_filter", "top_p_filter", "next_token",
           "progress_bar"]


@dataclass
class SamplingConfig:
    """Decoding settings. `temperature == 0` or `do_sample=False` means greedy."""

    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0                    # 0 = no top-k filter
    top_p: float = 1.0                # 1.0 = no nucleus filter
    repetition_penalty: float = 1.0   # 1.0 = off; > 1 discourages tokens already produced
    seed: int | None = None

    def __post_init__(self):
        if not (self.temperature >= 0):
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if int(self.top_k) < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not (0.0 < self.top_p <= 1.0):
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if not (self.repetition_penalty > 0):
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")

    @property
    def greedy(self) -> bool:
        return not self.do_sample or self.temperature == 0

    def generator(self) -> np.random.Generator:
        return np.random.default_rng(self.seed)


def apply_repetition_penalty(logits: np.ndarray, previous, penalty: float) -> np.ndarray:
    """[V] -> [V]: every distinct previous token's score is divided by `penalty` if positive, else multiplied.

    (CTRL's rule, Keskar et al. 2019; dividing a negative score would *raise* it, hence the two cases.)
    """
    if penalty == 1.0 or previous is None or len(previous) == 0:
        return logits
    out = np.array(logits, dtype=np.float32, copy=True)
    prev = np.unique(np.asarray(previous, dtype=np.int64))
    s = out[prev]
    out[prev] = np.where(s > 0, s / np.float32(penalty), s * np.float32(penalty))
    return out


def top_k_filter(logits: np.ndarray, k: int) -> np.ndarray:
    """[V] -> [V] with every score below the k-th largest set to -inf (k = 0 or k >= V: unchanged)."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = np.partition(logits, -k)[-k]                      # the k-th largest value
    return np.where(logits < kth, -np.inf, logits).astype(np.float32)


def top_p_filter(logits: np.ndarray, p: float) -> np.ndarray:
    """[V] -> [V] keeping the smallest set of most likely tokens whose probability sum reaches p (nucleus).

    The token that crosses p is kept, so at least one token always survives.
    """
    if p >= 1.0:
        return logits
    order = np.argsort(-logits, kind="stable")               # [V] most likely first
    probs = _softmax(logits[order].astype(np.float64))
    before = np.cumsum(probs) - probs                        # mass strictly before each token
    keep = np.zeros(logits.shape[-1], bool)
    keep[order[before < p]] = True
    return np.where(keep, logits, -np.inf).astype(np.float32)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - np.max(x))
    return e / e.sum()


def next_token(logits, cfg: SamplingConfig, previous=None, rng: np.random.Generator | None = None,
               suppress=None) -> int:
    """[V] logits of the last position -> one token id.

    previous: ids already in the sequence (for the repetition penalty); suppress: ids never to choose.
    """
    x = np.asarray(logits, dtype=np.float32).reshape(-1)
    if np.isnan(x).any():
        raise ValueError("logits contain NaN")
    x = apply_repetition_penalty(x, previous, cfg.repetition_penalty)
    if suppress is not None and len(suppress):
        x = np.array(x, copy=True); x[np.asarray(suppress, np.int64)] = -np.inf
    if cfg.greedy:
        return int(np.argmax(x))
    x = x / np.float32(cfg.temperature)
    x = top_p_filter(top_k_filter(x, int(cfg.top_k)), cfg.top_p)
    probs = _softmax(x.astype(np.float64))                   # -inf -> probability 0
    rng = rng if rng is not None else cfg.generator()
    return int(rng.choice(probs.shape[0], p=probs))


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, desc: str, unit: str, show: bool | None):
    """The one progress mechanism of the thinker's and the talker's decode loops: a tqdm bar over `total`
    steps when `show` is True (None: only for runs over 64 steps), else (or without tqdm) a no-op bar."""
    if show is False or (show is None and total <= 64):
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, desc=desc, unit=unit, leave=False)
