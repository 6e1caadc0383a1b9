"""`python -m omniref bench`: the C++ hot path against the NumPy path, side by side in one run.

    python -m omniref bench [--quick] [--json PATH] [--only PART,...]     parts: see PARTS below
    python -m omniref bench --full-width [--checkpoint DIR] [--quick]     (bench/fullwidth.py)
    python -m omniref bench --profile [--quick]          per-op profile of one thinker decode step (profile.py)
    python -m omniref bench --vs-llamacpp [--llamacpp-python PATH]   + llama.cpp's thinker figures (llamacpp.py)

Figures (best of a few runs each: the machine is shared, the fastest run is the least disturbed one):
  kernels    fp32 GEMM x[M,K] @ W[N,K]^T at M=512, K=N=2048 and GEMV at M=1: GFLOP/s cpp vs NumPy (OpenBLAS)
  attention  16 heads x 128 dims, causal, seq 2048: cpp vs the NumPy path of omniref.nn (vs torch SDPA only if
             torch happens to be importable; never required)
  bf16       bf16-weight GEMV bandwidth (weight bytes / time) vs a measured memory copy bandwidth
  thinker    the thinker text decoder of ../shared/bench/thinker_text_bench.json with random weights: prefill
             of 512 tokens and greedy-free decode tokens/s with a KV cache, both backends
  code2wav   Code2Wav at code2wav_default.json: 50 frames (4 s of 24 kHz audio), both backends
  audio      audio encoder at audio_encoder_bench.json on 30 s of log-mel, both backends
  vision     vision encoder at vision_encoder_bench.json on a 1280x720 image, both backends (media.py)
  talker     talker + code predictor frames/s and time to the first audio chunk, both backends (media.py)
  taps       what the trace taps cost with no trace active: tiny-model thinker decode steps without a trace and
             with a trace that keeps nothing, interleaved; the taps per step and one inactive record() call
code2wav, audio, vision and talker also time the Hugging Face PyTorch reference on the same weights and inputs
in the same run where torch and transformers happen to be importable (torchref.py; never required), and print
torch_ratio (reference seconds / cpp seconds) beside the issue's target.
Workloads come from bench_inputs.json (shared with the Hugging Face reference scripts, so figures compare);
configs are read from ../shared/bench beside the repo when present, else from omniref/data/bench.
Targets (issue 7) are printed beside each ratio.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .. import _native, backend
from ..errors import InputError, output_file
from .kernels import bench_attention, bench_bf16, bench_kernels
from .llamacpp import bench_vs_llamacpp, llamacpp_python
from .media import bench_talker, bench_vision
from .models import bench_audio, bench_code2wav, bench_thinker
from .profile import bench_profile, print_profile
from .taps import bench_taps
from .timing import bench_dir

PARTS = ("kernels", "attention", "bf16", "thinker", "code2wav", "audio", "vision", "talker", "taps")

BENCHES = {"kernels": bench_kernels, "attention": bench_attention, "bf16": bench_bf16,
           "thinker": bench_thinker, "code2wav": bench_code2wav, "audio": bench_audio,
           "vision": bench_vision, "talker": bench_talker, "taps": bench_taps}


def _print(name: str, r: dict) -> None:
    print(f"== {name}")
    for k, v in r.items():
        if isinstance(v, dict):
            _print(f"{name}.{k}", v)
        else:
            print(f"  {k:32s} {v:.4g}" if isinstance(v, float) else f"  {k:32s} {v}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="omniref bench", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small shapes, one repetition: a smoke run")
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    ap.add_argument("--only", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    ap.add_argument("--threads", type=int, help="OpenMP threads for the cpp kernels (default: all cores)")
    ap.add_argument("--full-width", action="store_true", help="per-layer cost at the published widths, "
                    "extrapolated to the published depths (bench/fullwidth.py)")
    ap.add_argument("--checkpoint", help="with --full-width: a full-width checkpoint of >= 2 layers per stack "
                    "(default: write one into a temp dir)")
    ap.add_argument("--force", action="store_true", help="overwrite an existing --json file")
    ap.add_argument("--profile", action="store_true",
                    help="only a per-op profile of one thinker decode step (both backends) against the weight floor")
    ap.add_argument("--vs-llamacpp", action="store_true",
                    help="also run llama.cpp's thinker figures on the same config in this run and print the ratios "
                         "(needs llama_cpp importable here or --llamacpp-python)")
    ap.add_argument("--llamacpp-python", metavar="PATH",
                    help="an interpreter that can import llama_cpp and gguf (default: $OMNIREF_LLAMACPP_PYTHON)")
    args = ap.parse_args(argv)
    if args.json:                                   # refused now, not after minutes of timing
        output_file(args.json, "--json output", force=args.force)
    if args.threads is not None and not 1 <= args.threads <= 4096:
        raise InputError(f"--threads {args.threads}: expected an integer in [1, 4096]", field="--threads",
                         value=args.threads)
    if args.full_width:
        from .fullwidth import run
        try:
            print(run(args.checkpoint, prompt_tokens=32 if args.quick else 128, decode_tokens=2 if args.quick else 4))
        except (ValueError, OSError) as e:
            print(f"omniref bench --full-width: {e}")
            return 2
        return 0
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    if args.vs_llamacpp and "thinker" not in parts:
        parts.append("thinker")
    unknown = [p for p in parts if p not in BENCHES]
    if unknown:
        ap.error(f"unknown part(s) {unknown}; choose from {', '.join(PARTS)}")
    if not backend.available():
        print(f"omniref bench needs the C++ extension ({_native.IMPORT_ERROR})")
        return 2
    if args.threads:
        _native.set_threads(args.threads)
    results = {"info": backend.info(), "bench_dir": str(bench_dir()), "quick": args.quick}
    _print("machine", results["info"])
    if args.profile:
        results["profile"] = bench_profile(args.quick)
        print_profile(results["profile"])
        parts = []
    for p in parts:
        try:
            results[p] = BENCHES[p](args.quick)
        except Exception as exc:  # a model part may not exist yet in this tree: report, keep going
            results[p] = {"error": f"{type(exc).__name__}: {exc}"}
        _print(p, results[p])
    if args.vs_llamacpp:
        python, note = llamacpp_python(args.llamacpp_python)
        print(f"== vs_llamacpp: {note}")
        results["vs_llamacpp"] = bench_vs_llamacpp(args.quick, results["thinker"], python, note,
                                                   args.threads or _native.max_threads())
        _print("vs_llamacpp", results["vs_llamacpp"])
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=float))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
