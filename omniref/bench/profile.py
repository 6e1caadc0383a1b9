"""Where one thinker decode step spends its time: a per-op profile against the weight-bytes floor.

    python -m omniref bench --profile [--quick]

Every op the model calls goes through `backend.ops`, which looks the op up in `backend.OPS` on each call. For the
duration of a profile, `op_timers` swaps each entry for a timed wrapper (exclusive time: an op called inside another
op is billed to itself only) and restores the table afterwards, so an unprofiled run pays nothing. What the timers
do not see is Python between the ops (the router's top-k, reshapes, the KV-cache append, the per-layer loop):
that is `step - sum(ops)`, printed as "outside ops".

The floor: a decode step must read every weight it uses once (attention, router, the chosen experts, lm_head), so
`decode_weight_bytes / read bandwidth` is the fastest a step can be; the read bandwidth is measured in the same
run (a NumPy float32 dot of two 128 MiB vectors, the method of ../shared/bench/llamacpp_thinker.py).
"""
from __future__ import annotations

import contextlib
import time

import numpy as np

from .. import backend
from ..decoder import KVCache
from .models import bench_thinker_model
from .timing import GF, settle


@contextlib.contextmanager
def op_timers():
    """Within the block every op of backend.OPS is timed: yields {op name: [calls, exclusive seconds]}."""
    totals: dict[str, list] = {}
    stack = [0.0]                                   # child time accumulated by the op running now

    def timed(name, fn):
        def call(*args, **kwargs):
            stack.append(0.0)
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                dt = time.perf_counter() - t0
                child = stack.pop()
                stack[-1] += dt
                rec = totals.setdefault(name, [0, 0.0])
                rec[0] += 1
                rec[1] += dt - child
        return call

    saved = dict(backend.OPS)
    backend.OPS.update({name: (timed(name, spec), None if fn is None else timed(name, fn))
                        for name, (spec, fn) in saved.items()})
    try:
        yield totals
    finally:
        backend.OPS.clear()
        backend.OPS.update(saved)


def read_bandwidth_gbs(mib: int = 128, reps: int = 5) -> float:
    """Memory read bandwidth now (GB/s): float32 dot of two `mib` MiB vectors, best of `reps`."""
    a = np.ones(mib * 2**20 // 4, np.float32)
    b = np.ones_like(a)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        np.dot(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * a.nbytes / best / GF


def profile_decode(m, steps: int) -> dict:
    """Per-op time of `steps` decode steps after the prompt (the active backend; the model m as it is)."""
    cache = KVCache()
    tok = m.prefill(cache)
    for _ in range(2):                              # warm-up: packed weights, first touches
        tok = m.step(tok, cache)
    settle()
    with op_timers() as totals:
        t0 = time.perf_counter()
        for _ in range(steps):
            tok = m.step(tok, cache)
        total = time.perf_counter() - t0
    ops = {name: {"calls_per_step": c / steps, "ms_per_step": 1e3 * s / steps}
           for name, (c, s) in sorted(totals.items(), key=lambda kv: -kv[1][1])}
    inside = sum(s for _, s in totals.values())
    return {"ms_per_step": 1e3 * total / steps, "ops": ops, "outside_ops_ms_per_step": 1e3 * (total - inside) / steps}


def bench_profile(quick: bool) -> dict:
    """Per-op profile of a thinker decode step on both backends, fp32 and bf16 (cpp), against the floor."""
    m = bench_thinker_model(quick)
    steps = 4 if quick else 16
    bw = read_bandwidth_gbs(32 if quick else 128)
    res = {"layers": m.layers, "steps": steps, "read_GBps": bw}
    for label, ctx, name in (("numpy_fp32", contextlib.nullcontext(), "numpy"),
                             ("cpp_fp32", contextlib.nullcontext(), "cpp"), ("cpp_bf16", m.bf16(), "cpp")):
        with ctx, backend.use(name):
            r = profile_decode(m, steps)
            floor_ms = 1e3 * m.decode_weight_bytes() / (bw * GF)
            r.update(weight_MB_per_step=m.decode_weight_bytes() / 1e6, floor_ms_per_step=floor_ms,
                     fraction_of_floor=floor_ms / r["ms_per_step"])
        res[label] = r
    return res


def print_profile(res: dict) -> None:
    """A table per run: op, calls per step, ms per step, share of the step."""
    print(f"== profile: one thinker decode step ({res['layers']} layers, mean of {res['steps']} steps), "
          f"read bandwidth {res['read_GBps']:.1f} GB/s")
    for label in ("numpy_fp32", "cpp_fp32", "cpp_bf16"):
        r = res[label]
        print(f"  -- {label}: {r['ms_per_step']:.2f} ms/step; weights {r['weight_MB_per_step']:.0f} MB -> floor "
              f"{r['floor_ms_per_step']:.2f} ms ({100 * r['fraction_of_floor']:.0f}% of the floor reached)")
        rows = list(r["ops"].items()) + [("(outside ops: Python)", {"calls_per_step": float("nan"),
                                                                    "ms_per_step": r["outside_ops_ms_per_step"]})]
        for name, o in rows:
            print(f"     {name:24s} {o['calls_per_step']:6.0f} calls {o['ms_per_step']:8.3f} ms "
                  f"{100 * o['ms_per_step'] / r['ms_per_step']:5.1f}%")
