"""What the taps cost when no trace is active (omniref.taps): thinker decode steps of the tiny model, with no trace
and with a trace limited to nothing, side by side; and one inactive `taps.record` call, timed alone.

The tiny model is the worst case for the share: its decode step is a few hundred microseconds of arithmetic,
so a fixed per-call cost weighs most there; on the 30B model the same calls are ~10^4 times smaller in share.
"""
from __future__ import annotations

import time
import timeit

import numpy as np

from .. import backend, taps
from ..decoder import KVCache
from ..thinker.model import Thinker
from ..tiny import load_tiny
from ..trace import Trace
from .timing import settle


def bench_taps(quick: bool) -> dict:
    cfg, weights = load_tiny()
    thinker = Thinker(weights, cfg)
    rng = np.random.default_rng(0)
    L, steps = 32, (16 if quick else 64)
    ids = rng.integers(0, cfg.thinker_config.text_config.vocab_size, L)

    def decode() -> float:
        """Seconds per decode step after a prefill of L text tokens (positions equal in the 3 MRoPE rows)."""
        cache = KVCache()
        thinker.forward(thinker.embed(ids), np.tile(np.arange(L, dtype=np.float32), (3, 1)), cache)
        t0 = time.perf_counter()
        for s in range(steps):
            thinker.forward(thinker.embed(ids[s % L:s % L + 1]), np.full((3, 1), L + s, np.float32), cache)
        return (time.perf_counter() - t0) / steps

    calls = [0]

    def count(name, array):
        calls[0] += 1

    res = {}
    with backend.use("cpp" if backend.available() else "numpy"):
        decode()                                                    # warm-up: weights read, kernels packed
        best = {"no_trace": float("inf"), "empty_trace": float("inf")}
        for _ in range(2 if quick else 5):                          # interleaved: both see the same machine load
            settle()
            best["no_trace"] = min(best["no_trace"], decode())
            with Trace(include=["(nothing)"]):
                best["empty_trace"] = min(best["empty_trace"], decode())
        taps.sink = count                                           # how many taps one decode step passes
        try:
            before = calls[0]
            decode()
        finally:
            taps.sink = None
        per_step = (calls[0] - before) / (steps + 1)               # the prefill's calls averaged in
    x = np.zeros((4, 4), np.float32)
    n = 200_000
    per_call = timeit.timeit(lambda: taps.record("thinker.model.layers.0.mlp", x, add_batch=True), number=n) / n
    res.update(decode_us_no_trace=best["no_trace"] * 1e6, decode_us_empty_trace=best["empty_trace"] * 1e6,
               taps_per_decode_step=per_step, inactive_record_ns=per_call * 1e9,
               inactive_share_of_step=per_step * per_call / best["no_trace"])
    return res
