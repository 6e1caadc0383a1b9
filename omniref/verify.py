"""`python -m omniref verify CASE_DIR`: run every stage a golden case contains and compare with the reference.

A stage is checked when its input keys and at least one of its output keys are in `golden.npz`
(docs/golden_format.md §4).
Each stage is one function `NAME_stage(case) -> {key: array}` in omniref/stages.py (the adapters live there, not in
the model modules); it computes its outputs from the stage's golden INPUT keys only, so a bug shows up in the stage
that has it instead of cascading. Until a module exists its stage is MISSING.

Tolerances (docs/golden_format.md §7), chosen per key and written down only here:
    integer keys (ids, codes, grids, masks), position ids, rope deltas, image.resized   exact
    *.pixel_values                                                                      rel <= 1e-6
    every other float key                                                               rel <= 1e-4
with rel = max|ours - golden| / max(max|golden|, 1e-12): the error relative to the reference's magnitude.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from dataclasses import dataclass

import numpy as np

from . import backend
from .errors import InputError, OmnirefError
from .golden import Case, natural_key

__all__ = ["Stage", "STAGES", "tolerance", "compare_arrays", "run_case", "main"]


@dataclass(frozen=True)
class Stage:
    name: str
    runner: str                        # "module:function"
    inputs: tuple[tuple[str, ...], ...]  # every group must have at least one key present
    outputs: tuple[str, ...]           # key prefixes (ending in '.') or exact keys this stage produces
    exclude: tuple[str, ...] = ()      # keys under those prefixes that are inputs, not outputs

    def output_keys(self, golden) -> list[str]:
        keys = [k for k in golden if any(k == o or (o.endswith(".") and k.startswith(o)) for o in self.outputs)
                and k not in self.exclude and not any(k.startswith(e) for e in self.exclude if e.endswith("."))]
        return sorted(keys, key=natural_key)

    def applies(self, golden) -> bool:
        return all(any(k in golden for k in group) for group in self.inputs) and bool(self.output_keys(golden))


STAGES: list[Stage] = [
    Stage("mel", "omniref.stages:mel_stage", (("mel.waveform", "mel.waveform.0"),),
          ("mel.input_features", "mel.attention_mask")),
    Stage("image", "omniref.stages:image_stage", (("image.raw",),),
          ("image.resized", "image.pixel_values", "image.grid_thw")),
    Stage("video", "omniref.stages:video_stage", (("video.raw",),),
          ("video.pixel_values", "video.grid_thw", "video.second_per_grid")),
    Stage("processor", "omniref.stages:processor_stage",
          (("image.grid_thw", "video.grid_thw"),), ("processor.input_ids",)),
    Stage("audio", "omniref.stages:audio_stage", (("audio.input_features",), ("audio.feature_lens",)),
          ("audio.",), ("audio.input_features", "audio.feature_lens")),
    Stage("vision", "omniref.stages:vision_stage", (("vision.pixel_values",), ("vision.grid_thw",)),
          ("vision.",), ("vision.pixel_values", "vision.grid_thw")),
    Stage("vision_video", "omniref.stages:vision_video_stage",
          (("vision_video.pixel_values",), ("vision_video.grid_thw",)),
          ("vision_video.",), ("vision_video.pixel_values", "vision_video.grid_thw")),
    Stage("thinker", "omniref.stages:thinker_stage", (("thinker.input_ids",),),
          ("thinker.", "talker.thinker_embed", "talker.thinker_hidden"),
          ("thinker.input_ids", "thinker.attention_mask", "thinker.use_audio_in_video")),
    Stage("talker", "omniref.stages:talker_stage",
          (("talker.thinker_embed",), ("talker.thinker_hidden",), ("thinker.input_ids",)),
          ("talker.", "code_predictor."), ("talker.thinker_embed", "talker.thinker_hidden")),
    Stage("code2wav", "omniref.stages:code2wav_stage", (("code2wav.codes",),),
          ("code2wav.wav", "code2wav.wav_chunked")),
]

EXACT_SUFFIXES = ("position_ids", "rope_deltas", "image.resized")


def tolerance(key: str, golden: np.ndarray) -> float:
    """Allowed relative error for one key (0.0 = must be identical)."""
    if golden.dtype.kind in "iub" or key.endswith(EXACT_SUFFIXES):
        return 0.0
    if key.endswith("pixel_values"):
        return 1e-6
    return 1e-4


def compare_arrays(ours: np.ndarray, ref: np.ndarray) -> tuple[str | None, float, float]:
    """-> (problem or None, max abs error, error relative to max|ref|).

    Integer references need integer results. A non-finite reference value passes only where ours is the same
    non-finite value (NaN for NaN, +inf for +inf); everywhere else both must be finite.
    """
    ours = np.asarray(ours)
    if ours.shape != ref.shape:
        return f"shape {list(ours.shape)} != golden {list(ref.shape)}", float("inf"), float("inf")
    if ref.dtype.kind in "iub" and ours.dtype.kind not in "iub":
        return f"dtype {ours.dtype}, expected integers like the golden {ref.dtype}", float("inf"), float("inf")
    if ref.size == 0:
        return None, 0.0, 0.0
    a, b = ours.astype(np.float64), ref.astype(np.float64)
    fa, fb = np.isfinite(a), np.isfinite(b)
    same = fb & fa | ~fb & ((np.isnan(a) & np.isnan(b)) | (a == b))      # finite both, or the same NaN/inf
    if not same.all():
        bad = np.flatnonzero(~same.reshape(-1))
        i = int(bad[0])
        return (f"non-finite values differ at {bad.size} of {b.size} positions (first at flat index {i}: ours "
                f"{a.reshape(-1)[i]}, golden {b.reshape(-1)[i]})"), float("inf"), float("inf")
    with np.errstate(invalid="ignore"):       # inf - inf where both are the same inf: masked out below
        diff = np.where(fb, np.abs(a - b), 0.0)
    err = float(diff.max())
    scale = max(float(np.abs(b[fb]).max(initial=0.0)), 1e-12)
    return None, err, err / scale


@dataclass
class Row:
    stage: str
    key: str
    status: str          # PASS / FAIL / MISSING / ERROR
    shape: tuple = ()
    err: float = float("nan")
    rel: float = float("nan")
    tol: float = float("nan")
    note: str = ""


def _load_runner(stage: Stage):
    """The stage function, or None when its module/function does not exist yet (the stage is MISSING)."""
    module, func = stage.runner.split(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and (module == e.name or module.startswith(e.name + ".")):
            return None
        raise
    return getattr(mod, func, None)


def run_stage(case: Case, stage: Stage) -> list[Row]:
    keys = stage.output_keys(case.golden)
    try:
        fn = _load_runner(stage)
    except Exception as e:  # an import error inside an existing module is a bug, not a missing stage
        return [Row(stage.name, k, "ERROR", note=f"import failed: {type(e).__name__}: {e}") for k in keys]
    if fn is None:
        return [Row(stage.name, k, "MISSING", note="stage not implemented") for k in keys]
    t0 = time.perf_counter()
    try:
        outputs = fn(case)
    except NotImplementedError as e:
        return [Row(stage.name, k, "MISSING", note=str(e) or "not implemented") for k in keys]
    except OmnirefError as e:             # the case's inputs are bad (ids, codes, weights): one clear error
        inputs = ", ".join(k for group in stage.inputs for k in group if k in case.golden)
        raise type(e)(f"{case.path}: stage {stage.name} (golden inputs {inputs}): {e}", file=e.file,
                      field=e.field, value=e.value) from None
    except Exception as e:
        tb = traceback.format_exc(limit=-3)
        return [Row(stage.name, k, "ERROR", note=f"{type(e).__name__}: {e}\n{tb}") for k in keys]
    elapsed = time.perf_counter() - t0
    rows = []
    for k in keys:
        ref = case.golden[k]
        if k not in outputs:
            rows.append(Row(stage.name, k, "MISSING", tuple(ref.shape), note="not produced"))
            continue
        problem, err, rel = compare_arrays(outputs[k], ref)
        tol = tolerance(k, ref)
        ok = problem is None and (rel == 0.0 if tol == 0.0 else rel <= tol)
        rows.append(Row(stage.name, k, "PASS" if ok else "FAIL", tuple(ref.shape), err, rel, tol,
                        problem or ""))
    if rows:
        rows[-1].note = (rows[-1].note + " " if rows[-1].note else "") + f"[{elapsed:.2f} s]"
    return rows


def run_case(case_dir, stages: list[str] | None = None) -> list[Row]:
    case = Case(case_dir)
    rows = []
    unknown = set(stages or []) - {s.name for s in STAGES}
    if unknown:
        raise InputError(f"--stage {', '.join(sorted(unknown))}: unknown; known: "
                         f"{', '.join(s.name for s in STAGES)}", field="--stage", value=sorted(unknown))
    if case.config is not None:
        case.config  # parse early: a broken config.json is reported before any stage runs
    if case.weights is not None:
        from .checkpoint import check_weights
        check_weights(case.weights, case.config)   # key names and shapes vs the config, one clear error
    for stage in STAGES:
        if stages and stage.name not in stages:
            continue
        if stage.applies(case.golden):
            rows += run_stage(case, stage)
    return rows


def format_rows(rows: list[Row]) -> str:
    lines = [f"{'stage':<13}{'key':<38}{'shape':<18}{'max_abs':>11}{'rel':>11}{'tol':>8}  status"]
    for r in rows:
        shape = "x".join(map(str, r.shape)) if r.shape else "-"
        num = lambda v, f: f"{v:{f}}" if v == v else "-"   # NaN (not compared) -> "-"
        tol = "exact" if r.tol == 0.0 else num(r.tol, ".0e")
        lines.append(f"{r.stage:<13}{r.key:<38}{shape:<18}{num(r.err, '.3e'):>11}{num(r.rel, '.3e'):>11}{tol:>8}  "
                     f"{r.status}{'  ' + r.note.splitlines()[0] if r.note else ''}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="omniref verify", description=__doc__.splitlines()[0])
    ap.add_argument("case", nargs="+", help="golden case directory (several allowed)")
    ap.add_argument("--stage", action="append", help="only this stage (repeatable): "
                    + ", ".join(s.name for s in STAGES))
    ap.add_argument("--backend", choices=["numpy", "cpp"], help="compute backend (default: OMNIREF_BACKEND)")
    ap.add_argument("--allow-missing", action="store_true", help="MISSING stages do not fail the run")
    ap.add_argument("-v", "--verbose", action="store_true", help="print tracebacks of stages that raised")
    args = ap.parse_args(argv)
    status = 0
    for case_dir in args.case:
        ctx = backend.use(args.backend) if args.backend else _nullcontext()
        with ctx:
            print(f"== {case_dir}  (backend {backend.active()})")
            try:
                rows = run_case(case_dir, args.stage)
            except OmnirefError as e:           # a broken case: one line on stderr, the class's exit code
                print(f"omniref verify: {e}", file=sys.stderr)
                status = max(status, e.exit_code)
                continue
        print(format_rows(rows))
        if args.verbose:
            for r in rows:
                if r.status == "ERROR" and "\n" in r.note:
                    print(f"--- {r.stage} {r.key}\n{r.note}")
                    break
        counts = {s: sum(r.status == s for r in rows) for s in ("PASS", "FAIL", "ERROR", "MISSING")}
        print(f"{case_dir}: {counts['PASS']} pass, {counts['FAIL'] + counts['ERROR']} fail, "
              f"{counts['MISSING']} missing" + (" (allowed)" if args.allow_missing and counts["MISSING"] else ""))
        if not rows:
            print("no stage of this case could be checked")
            status = 1
        if counts["FAIL"] or counts["ERROR"] or (counts["MISSING"] and not args.allow_missing):
            status = 1
    return status


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False


if __name__ == "__main__":
    sys.exit(main())
