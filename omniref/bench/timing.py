"""What every benchmark part shares: where the workloads live, and how to time fairly on a shared machine."""
from __future__ import annotations

import json
import time
from pathlib import Path

from .. import backend

GF = 1e9


def bench_dir() -> Path:
    """../shared/bench relative to the repo if present, else the copies shipped in omniref/data/bench."""
    omniref = Path(__file__).resolve().parent.parent
    shared = omniref.parent.parent / "shared" / "bench"
    return shared if (shared / "bench_inputs.json").exists() else omniref / "data" / "bench"


def load_json(name: str) -> dict:
    """A bench config from bench_dir(), else the copy shipped in omniref/data/bench (the vision and talker
    configs live only there), without its "_comment" keys."""
    path = bench_dir() / name
    if not path.exists():
        path = Path(__file__).resolve().parent.parent / "data" / "bench" / name
    return {k: v for k, v in json.loads(path.read_text()).items() if not k.startswith("_")}


def best_time(fn, repeat: int) -> float:
    """Fastest of `repeat` timed calls after one warm-up call (seconds)."""
    fn()
    best = float("inf")
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def settle() -> None:
    """Let the other side's idle threads go to sleep before timing: OpenBLAS workers spin for tens of
    milliseconds after a NumPy matmul, OpenMP workers for about a millisecond after a kernel, and on 2 cores a
    spinning pool would bill its idle time to whatever is measured next."""
    time.sleep(0.2)


def both(fn, repeat: int) -> dict:
    """Time fn() on the numpy and the cpp backend, alternating, best of `repeat` each."""
    t = {"numpy": float("inf"), "cpp": float("inf")}
    for _ in range(max(1, repeat)):
        for name in ("numpy", "cpp"):
            with backend.use(name):
                settle()
                t[name] = min(t[name], best_time(fn, 1))
    return t
