"""Kernel benchmarks: fp32 GEMM / GEMV, causal attention and bf16-weight GEMV, C++ against NumPy."""
from __future__ import annotations

import numpy as np

from .. import _native
from ..backend import ops
from .timing import GF, best_time, both, settle

def bench_kernels(quick: bool) -> dict:
    """fp32 GEMM and decode GEMV, cpp vs NumPy (OpenBLAS), interleaved so both see the same machine load.

    gemv: M = 1 over 16 distinct 2048x2048 matrices (256 MiB) streamed once each, as decoding streams its
    weights from memory. gemv_cached: one matrix called 20 times back to back, so it sits in the L3 (shown
    for information: that measures the cache, not decoding).
    """
    rng = np.random.default_rng(0)
    out = {}
    for label, (M, N, K, n, calls) in {"gemm": (512, 2048, 2048, 1, 1), "gemv": (1, 2048, 2048, 4 if quick else 16, 1),
                                       "gemv_cached": (1, 2048, 2048, 1, 20)}.items():
        x = rng.standard_normal((M, K), dtype=np.float32)
        ws = [rng.standard_normal((N, K), dtype=np.float32) for _ in range(n)]
        wts = [w.T for w in ws]
        rep = 3 if quick else (10 if M == 1 else 5)
        flops = 2.0 * M * N * K * n * calls
        t_np = t_c = float("inf")
        for _ in range(rep):  # interleave so both see the same machine load
            settle()
            t_np = min(t_np, best_time(lambda: [x @ wt for _ in range(calls) for wt in wts], 1))
            settle()
            t_c = min(t_c, best_time(lambda: [_native.linear(x, w) for _ in range(calls) for w in ws], 1))
        out[label] = {"shape": [M, N, K], "matrices": n, "numpy_gflops": flops / t_np / GF,
                      "cpp_gflops": flops / t_c / GF, "ratio": t_np / t_c, "target": 0.9 if M > 1 else 1.0}
    return out


def bench_attention(quick: bool) -> dict:
    H, L, D = (16, 1024, 128) if quick else (16, 2048, 128)
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal((H, L, D), dtype=np.float32) for _ in range(3))
    flops = 2 * 2.0 * H * L * L * D / 2  # QK^T and PV, causal half
    t = both(lambda: ops.attention(q, k, v, causal=True), 1 if quick else 2)
    res = {"shape": [H, L, D], "numpy_s": t["numpy"], "cpp_s": t["cpp"], "cpp_gflops": flops / t["cpp"] / GF,
           "ratio_vs_numpy": t["numpy"] / t["cpp"], "target_vs_numpy": 3.0}
    try:  # optional: torch's SDPA, only when torch happens to be installed
        import torch
        torch.set_num_threads(_native.max_threads())
        tq, tk, tv = (torch.from_numpy(a)[None] for a in (q, k, v))
        ts = best_time(lambda: torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, is_causal=True), 2)
        res.update(torch_sdpa_s=ts, ratio_vs_torch=ts / t["cpp"], target_vs_torch=1.0)
    except ImportError:
        res["torch_sdpa_s"] = None
    return res


def bench_bf16(quick: bool) -> dict:
    # Several distinct matrices, streamed one after the other, 4x the 32 MiB L3 and more: one matrix read again
    # and again would partly stay in the L3 (a victim cache) and report more than memory can deliver.
    N, K, n = (4096, 4096, 2) if quick else (8192, 4096, 4)   # n x 64 MiB of bf16 weights
    rng = np.random.default_rng(2)
    w32 = [rng.standard_normal((N, K), dtype=np.float32) for _ in range(n)]
    wb = [_native.BF16Weight.from_float32(w) for w in w32]
    x = rng.standard_normal((1, K), dtype=np.float32)
    t = best_time(lambda: [_native.linear(x, w) for w in wb], 3 if quick else 5)
    src = np.ones(wb[0].nbytes // 4 * 2, np.float32)  # copy twice one matrix's bytes
    dst = np.empty_like(src)
    tc = best_time(lambda: np.copyto(dst, src), 5)
    bw = n * wb[0].nbytes / t / GF
    copy_bw = 2 * src.nbytes / tc / GF  # STREAM convention: bytes read + bytes written
    t32 = best_time(lambda: [_native.linear(x, w) for w in w32], 3 if quick else 5)
    return {"shape": [N, K], "matrices": n, "bf16_gemv_GBps": bw, "f32_gemv_GBps": n * w32[0].nbytes / t32 / GF,
            "copy_GBps": copy_bw, "fraction_of_copy": bw / copy_bw, "target_fraction": 0.7,
            "f32_gemv_s": t32 / n, "bf16_gemv_s": t / n, "bf16_speedup_vs_f32": t32 / t}
