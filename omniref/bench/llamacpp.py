"""`omniref bench --vs-llamacpp`: the llama.cpp thinker figures on the same config and workload, in the same run.

llama.cpp is the CPU engine people pick for Qwen3-MoE, so it is the anchor the thinker's decode and prefill are
measured against. It is never a dependency of omniref: the figures come from ../shared/bench/llamacpp_thinker.py
(it writes the bench config as a random-weight `qwen3moe` GGUF, checks it against a float64 NumPy forward and
times a 512-token prefill + 64 greedy steps), run in an interpreter that can import `llama_cpp`:

    this interpreter, when `llama_cpp` is importable here, else
    --llamacpp-python PATH / OMNIREF_LLAMACPP_PYTHON (e.g. a separate venv with `pip install llama-cpp-python gguf`)

When none is found the omniref figures are printed alone with a line saying why.
Rows compared (the script's names): `f32_exact` (fp32 weights, fp32 KV cache, no flash attention: fp32 arithmetic,
like omniref's fp32 path) and `bf16` (bf16 weights with llama.cpp's defaults, f16 KV cache).
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile

from .timing import bench_dir

SCRIPT = "llamacpp_thinker.py"
ROWS = "f32_exact,bf16"


def llamacpp_python(explicit: str | None) -> tuple[str | None, str]:
    """(interpreter that can import llama_cpp, or None; a line saying which / why none)."""
    if importlib.util.find_spec("llama_cpp") is not None:
        return sys.executable, "llama_cpp importable here"
    path = explicit or os.environ.get("OMNIREF_LLAMACPP_PYTHON", "").strip()
    if not path:
        return None, ("llama.cpp not found: llama_cpp is not importable here and no --llamacpp-python / "
                      "OMNIREF_LLAMACPP_PYTHON was given")
    try:
        ok = subprocess.run([path, "-c", "import llama_cpp, gguf"], capture_output=True, timeout=120).returncode == 0
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"llama.cpp not found: cannot run {path} ({exc})"
    return (path, f"llama_cpp from {path}") if ok else (None, f"llama.cpp not found: {path} cannot import "
                                                               f"llama_cpp and gguf")


def run_llamacpp(python: str, threads: int, reps: int, sanity: bool) -> dict:
    """Run ../shared/bench/llamacpp_thinker.py now, measuring at once (no waiting for a quiet machine, so the
    figures sit beside omniref's) -> {row: {prefill_s, decode_tok_s, ...}, "sanity_f32_max_rel_err": ...}."""
    script = bench_dir() / SCRIPT
    if not script.exists():
        return {"error": f"{script} not found (the llama.cpp anchor script lives in ../shared/bench)"}
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "llamacpp.json")
        cmd = [python, str(script), "--out", out, "--rows", ROWS, "--reps", str(reps), "--threads", str(threads)]
        env = {**os.environ, "BENCH_MAX_WAIT": "0", "BENCH_RETRIES": "0"}
        proc = subprocess.run(cmd + ([] if sanity else ["--no-sanity"]), capture_output=True, text=True, env=env)
        if proc.returncode != 0 or not os.path.exists(out):
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            return {"error": f"{SCRIPT} exited with {proc.returncode}: {tail[0]}"}
        data = json.loads(open(out).read())
    res = {r["row"]: {k: r[k] for k in ("prefill_s", "decode_tok_s", "prefill_s_all", "decode_s_all",
                                         "decode_weight_gbs", "dram_probe_numpy_dot_gbs_after")}
           for r in data["rows"]}
    res.update(sanity_f32_max_rel_err=data.get("sanity_f32_max_rel_err"), llama_version=data.get("llama_version"),
               system_info=data.get("system_info"))
    return res


def ratios(omni: dict, llama: dict) -> dict:
    """omniref / llama.cpp speed ratios (> 1: omniref faster) from bench_thinker's figures and run_llamacpp's."""
    f32, bf16 = llama["f32_exact"], llama["bf16"]
    return {"decode_fp32_vs_llamacpp": omni["cpp_decode_tok_s"] / f32["decode_tok_s"],
            "decode_bf16_vs_llamacpp": omni["cpp_bf16_decode_tok_s"] / bf16["decode_tok_s"],
            "prefill_fp32_vs_llamacpp": f32["prefill_s"] / omni["cpp_prefill_s"],
            "prefill_bf16_vs_llamacpp": bf16["prefill_s"] / omni["cpp_bf16_prefill_s"],
            "decode_cpp_vs_numpy": omni["cpp_decode_tok_s"] / omni["numpy_decode_tok_s"],
            "targets": "decode >= 1.1x llama.cpp (fp32 and bf16) and >= 1.5x NumPy; prefill bf16 >= 1.2x, fp32 >= 2x"}


def bench_vs_llamacpp(quick: bool, thinker: dict, python: str | None, note: str, threads: int) -> dict:
    """llama.cpp's figures beside `thinker` (bench_thinker's result of this run) and the ratios."""
    res = {"found": python is not None, "note": note}
    if python is None:
        return res
    if quick:   # --quick shrinks omniref's thinker (2 layers, 128 tokens): llama.cpp runs the full config
        res["note"] += "; --quick: omniref ran a smaller thinker, so no ratios (llama.cpp not run)"
        return res
    res["llamacpp"] = run_llamacpp(python, threads, reps=2, sanity=True)
    if "error" not in res["llamacpp"] and "error" not in thinker:
        res["ratios"] = ratios(thinker, res["llamacpp"])
    return res
