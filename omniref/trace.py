"""Traces: named activations saved to `.npz`, and a layer-by-layer comparison of two traces.

    python -m omniref trace CASE_DIR -o ours.npz [--stage S]   # run the case's stages, save every output
    python -m omniref compare ours.npz theirs.npz [--rtol 1e-4] [--first]

A golden.npz is itself a trace of the reference, so `compare ours.npz CASE_DIR/golden.npz` walks our run
against Hugging Face's. When porting to another framework, dump its activations under the same names
(e.g. "thinker.hidden_states.3") and compare. Each key prints OK / DIFF / SHAPE / MISSING with max abs and
relative error, in data-flow order; `--first` stops at the first divergence, which is usually the bug.

Inside code, `record(name, array)` adds an activation to the active trace (a no-op otherwise), so a module can
expose any intermediate without changing its return values:

    with Trace() as tr:
        run_something()
    tr.save("run.npz")
"""
from __future__ import annotations

import argparse
import math
import sys
import zipfile
from pathlib import Path

import numpy as np

from .errors import InputError, output_file, regular_file
from .golden import natural_key

__all__ = ["Trace", "record", "compare_traces", "main_trace", "main_compare"]

_active: list["Trace"] = []


class Trace(dict):
    """A dict name -> array that collects `record(...)` calls while it is active (a context manager)."""

    def __enter__(self):
        _active.append(self)
        return self

    def __exit__(self, *exc):
        _active.remove(self)
        return False

    def save(self, path) -> None:
        np.savez_compressed(path, **{k: np.asarray(v) for k, v in self.items()})


def record(name: str, array) -> None:
    """Store a copy of `array` under `name` in every active trace (cheap no-op when none is active)."""
    for tr in _active:
        tr[name] = np.array(array, copy=True)


def _load(path) -> dict[str, np.ndarray]:
    """A trace .npz -> {name: array}; a missing, non-regular or non-.npz file is an InputError naming it."""
    regular_file(path, "trace", InputError)
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError, AttributeError, zipfile.BadZipFile) as e:
        raise InputError(f"{path}: not a trace .npz ({e})", file=path) from None


def compare_traces(ours: dict, ref: dict, rtol: float = 1e-4, first: bool = False) -> tuple[list[str], int]:
    """-> (report lines, number of DIFF/SHAPE/MISSING entries). Keys of `ref` define what is expected."""
    from .verify import compare_arrays
    lines, bad = [], 0
    for key in sorted(set(ref) | set(ours), key=natural_key):
        if key not in ours or key not in ref:
            status, detail = "MISSING", "only in " + ("reference" if key in ref else "ours")
        else:
            problem, err, rel = compare_arrays(ours[key], ref[key])
            if problem:
                status, detail = "SHAPE", problem
            else:
                exact = ref[key].dtype.kind in "iub"
                ok = rel == 0.0 if exact else rel <= rtol
                status, detail = ("OK" if ok else "DIFF"), f"max_abs {err:.3e}  rel {rel:.3e}"
        lines.append(f"{status:<8}{key:<44}{detail}")
        if status != "OK":
            bad += 1
            if first and status != "MISSING":
                lines.append(f"first divergence: {key}")
                break
    return lines, bad


def main_trace(argv=None) -> int:
    from .golden import Case
    from .verify import STAGES, _load_runner
    ap = argparse.ArgumentParser(prog="omniref trace", description="run a case's stages and save every output")
    ap.add_argument("case")
    ap.add_argument("-o", "--out", required=True, help="output .npz")
    ap.add_argument("--stage", action="append")
    ap.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    args = ap.parse_args(argv)
    if not (Path(args.case) / "golden.npz").is_file():
        raise InputError(f"{args.case}: not a golden case (no golden.npz)", file=args.case)
    unknown = sorted(set(args.stage or []) - {s.name for s in STAGES})
    if unknown:
        raise InputError(f"--stage {', '.join(unknown)}: unknown; known: {', '.join(s.name for s in STAGES)}",
                         field="--stage", value=unknown)
    output_file(args.out, "trace", force=args.force, inputs=list(Path(args.case).iterdir()))  # before any stage
    case = Case(args.case)
    if case.weights is not None:
        from .checkpoint import check_weights
        check_weights(case.weights, case.config)
    with Trace() as tr:
        for stage in STAGES:
            if (args.stage and stage.name not in args.stage) or not stage.applies(case.golden):
                continue
            fn = _load_runner(stage)
            if fn is None:
                print(f"{stage.name}: not implemented, skipped")
                continue
            tr.update(fn(case))
            print(f"{stage.name}: traced")
    tr.save(args.out)
    print(f"wrote {len(tr)} arrays to {args.out}")
    return 0


def main_compare(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="omniref compare", description="compare two traces layer by layer")
    ap.add_argument("ours")
    ap.add_argument("reference")
    ap.add_argument("--rtol", type=float, default=1e-4, help="relative tolerance for float arrays")
    ap.add_argument("--first", action="store_true", help="stop at the first DIFF/SHAPE")
    ap.add_argument("--only-common", action="store_true", help="ignore keys present in just one trace")
    args = ap.parse_args(argv)
    if not (math.isfinite(args.rtol) and args.rtol > 0):
        raise InputError(f"--rtol {args.rtol}: expected a finite number > 0", field="--rtol", value=args.rtol)
    ours, ref = _load(args.ours), _load(args.reference)
    if args.only_common:
        common = set(ours) & set(ref)
        ours = {k: v for k, v in ours.items() if k in common}
        ref = {k: v for k, v in ref.items() if k in common}
    lines, bad = compare_traces(ours, ref, args.rtol, args.first)
    print("\n".join(lines))
    print(f"{len(lines) - bad} ok, {bad} differ or missing")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main_compare())
