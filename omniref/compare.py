"""Compare a trace with a reference trace, key by key in data-flow order, and say where the first bug is.

    omniref compare OURS REF [--first] [--rtol R] [-q]      # REF: a trace (.npz) or a golden case directory

The keys are walked in the reference's data-flow order (a trace file states it; see omniref/trace.py). Per key:
max abs error, the error relative to max|ref| (FORMAT.md's measure, judged against the case tolerances of
omniref.verify: ids, positions and chosen experts exact, floats 1e-4), NMSE in dB and cosine similarity; for a
tensor with a token axis (docs/taps.md), the p50 / p99 / max over tokens of each token's relative error and the
first token past tolerance. An input the reference holds and ours lacks is no error (inputs are given, not
computed), nor is a name outside the glob patterns ours was recorded with. `--first` stops at the first
divergence: every key before it agrees, so the inputs of that module agree and its output does not:

    first divergence: thinker.model.layers.1.self_attn.v_proj: inputs of
    `thinker.model.layers.1.self_attn.v_proj` agree, its output differs (first at token 0)

Exit status: 0 when every shared key agrees and nothing expected is missing, 1 otherwise, 2 for a file that
cannot be read (one line naming it).
"""
from __future__ import annotations

import argparse
import fnmatch
import re
import sys
from dataclasses import dataclass

import numpy as np

from .trace import TraceError, TraceFile, load_trace, tap_for
from .verify import tolerance

__all__ = ["Row", "where", "compare_arrays", "compare", "first_divergence", "format_rows", "main"]


@dataclass
class Row:
    key: str
    status: str                      # OK / DIFF / SHAPE / MISSING
    shape: tuple = ()
    max_abs: float = float("nan")
    rel: float = float("nan")        # max_abs / max|ref|
    tol: float = float("nan")
    nmse_db: float = float("nan")    # 10 log10(Σ(ours-ref)² / Σref²)
    cosine: float = float("nan")
    token_word: str = ""             # what the token axis counts ("token", "patch", "sample", ...)
    token_q: tuple = ()              # (p50, p99, max) of the per-token relative error
    first_token: int | None = None   # first token past tolerance
    is_input: bool = False
    note: str = ""


# FORMAT.md keys of a golden case -> the module whose output they are ({n}: the key's number - 1), so that a
# comparison against a golden.npz, which holds no taps, still names a module
_GOLDEN_WHERE = [
    (r"thinker\.hidden_states\.0", "thinker.model.inputs_embeds"),
    (r"thinker\.hidden_states\.(\d+)", "thinker.model.layers.{n}"),      # the last index: thinker.model.norm
    (r"audio\.hidden_states\.0", "thinker.audio_tower.inputs_embeds"),
    (r"audio\.hidden_states\.(\d+)", "thinker.audio_tower.layers.{n}"),
    (r"audio\.output", "thinker.audio_tower.proj2"),
    (r"vision(?:_video)?\.hidden_states\.0", "thinker.visual.pos_embeds"),    # patch_embed + pos_embeds
    (r"vision(?:_video)?\.hidden_states\.(\d+)", "thinker.visual.blocks.{n}"),
    (r"vision(?:_video)?\.deepstack\.(\d+)", "thinker.visual.merger_list.{k}"),
    (r"vision(?:_video)?\.output", "thinker.visual.merger"),
    (r"thinker\.(?:position_ids|rope_deltas)", "thinker.model.position_ids"),
]


def where(key: str, ref_keys=()) -> tuple[str, bool]:
    """-> (the tap a key is, or that a golden key stands for; whether it is a Hugging Face module's output)."""
    base = key.split("@")[0]
    for pattern, name in _GOLDEN_WHERE:
        m = re.fullmatch(pattern, base)
        if m:
            num = int(m.group(1)) if m.groups() else 0
            if name == "thinker.model.layers.{n}" and f"thinker.hidden_states.{num + 1}" not in ref_keys:
                name = "thinker.model.norm"
            base = name.format(n=num - 1, k=num)
            break
    tap = tap_for(base)
    return base, tap is not None and tap.module


def _token_axis(key: str, shape: tuple) -> tuple[int, str] | None:
    tap = tap_for(key)
    if tap is not None:
        found = tap.token_axis
        return found if found and len(shape) == len(tap.shape.strip("[]").split(",")) else None
    if len(shape) == 3 and shape[:2] == (1, 1):
        return 2, "sample"                                   # waveforms [1, 1, S]
    if len(shape) == 3 and shape[:2] == (3, 1):
        return 2, "token"                                    # position ids [3, 1, L]
    if len(shape) == 3 and shape[0] == 1:
        return 1, "token"                                    # [1, L, H]
    if len(shape) == 2 and shape[0] > 1:
        return 0, "row"
    return None


def _shape_problem(ours: tuple, ref: tuple) -> str:
    msg = f"shape {list(ours)} != reference {list(ref)}"
    if ref[:1] == (1,) and ours == ref[1:]:
        return msg + ": ours lacks the leading batch axis of 1"
    if ours[:1] == (1,) and ours[1:] == ref:
        return msg + ": ours has a leading axis of 1 that the reference lacks"
    if sorted(ours) == sorted(ref):
        return msg + ": the same axes in another order (a transposed layout?)"
    if int(np.prod(ours)) == int(np.prod(ref)):
        return msg + ": the same number of elements (a reshape?)"
    return msg


def compare_arrays(key: str, ours: np.ndarray, ref: np.ndarray, rtol: float | None = None) -> Row:
    """One key: shape check, then the error measures against the reference's magnitude."""
    ours, ref = np.asarray(ours), np.asarray(ref)
    if ours.shape != ref.shape:
        return Row(key, "SHAPE", tuple(ref.shape), note=_shape_problem(ours.shape, ref.shape))
    base = key.split("@")[0]
    exact = tolerance(base, ref) == 0.0
    tol = 0.0 if exact else (rtol if rtol is not None else tolerance(base, ref))
    row = Row(key, "OK", tuple(ref.shape), tol=tol)
    if ref.size == 0:
        row.max_abs = row.rel = 0.0
        return row
    a, b = ours.astype(np.float64), ref.astype(np.float64)
    finite = np.isfinite(b)
    if not np.array_equal(np.isfinite(a), finite):
        row.status, row.note = "DIFF", "non-finite values where the reference has none (or the reverse)"
        a = np.where(np.isfinite(a), a, 0.0)
    diff = np.where(finite, np.abs(a - b), 0.0)
    b0 = np.where(finite, b, 0.0)
    scale = max(float(np.abs(b0).max()), 1e-12)
    row.max_abs, row.rel = float(diff.max()), float(diff.max()) / scale
    err2, ref2 = float(np.sum(diff ** 2)), float(np.sum(b0 ** 2))
    row.nmse_db = 10 * np.log10(err2 / ref2) if err2 and ref2 else (-np.inf if not err2 else np.inf)
    na, nb = float(np.linalg.norm(np.where(finite, a, 0.0))), float(np.linalg.norm(b0))
    row.cosine = float(np.sum(np.where(finite, a, 0.0) * b0) / (na * nb)) if na and nb else float(na == nb)
    bad = row.rel > tol if not exact else row.max_abs > 0
    if bad:
        row.status = "DIFF"
    found = _token_axis(base, ref.shape)
    if found is not None and ref.shape[found[0]] > 0:
        axis, row.token_word = found
        per = np.moveaxis(diff, axis, 0).reshape(ref.shape[axis], -1).max(axis=1) / scale   # [tokens]
        row.token_q = (float(np.percentile(per, 50)), float(np.percentile(per, 99)), float(per.max()))
        over = np.flatnonzero(per > tol) if not exact else np.flatnonzero(per > 0)
        row.first_token = int(over[0]) if over.size else None
    return row


def _merged_order(primary: list[str], other: list[str]) -> list[str]:
    """primary's keys in order; a key only in `other` goes right after the key that precedes it there."""
    out, seen = list(primary), set(primary)
    for i, k in enumerate(other):
        if k in seen:
            continue
        prev = next((other[j] for j in range(i - 1, -1, -1) if other[j] in seen), None)
        out.insert(out.index(prev) + 1 if prev is not None else 0, k)
        seen.add(k)
    return out


def compare(ours: TraceFile, ref: TraceFile, rtol: float | None = None) -> tuple[list[Row], list[str]]:
    """Walk both traces in data-flow order (the reference's, unless only ours states one).

    -> (rows for every key the reference expects or both hold, keys only in ours). Not rows: a reference
    input that ours lacks (inputs are given, not computed), and a reference key outside the patterns ours
    was recorded with. A reference key that ours should have but lacks is MISSING.
    """
    first, second = (ours, ref) if ours.ordered and not ref.ordered else (ref, ours)
    rows, extra = [], []
    for key in _merged_order(list(first.arrays), list(second.arrays)):
        is_input = key in ref.inputs or key in ours.inputs
        if key in ours.arrays and key in ref.arrays:
            row = compare_arrays(key, ours.arrays[key], ref.arrays[key], rtol)
        elif key in ref.arrays:
            traced = ours.include is None or any(fnmatch.fnmatchcase(key, p) for p in ours.include)
            if is_input or not traced:
                continue
            row = Row(key, "MISSING", tuple(ref.arrays[key].shape), note="not in ours")
        else:
            extra.append(key)
            continue
        row.is_input = is_input
        rows.append(row)
    return rows, extra


def first_divergence(rows: list[Row], ref_keys=()) -> tuple[Row, str] | None:
    """The first DIFF / SHAPE row, or MISSING tap (a step that did not run), and a sentence saying where to
    look; None when all agree. (A missing FORMAT.md key is no divergence: a stage may not have been traced.)"""
    for row in rows:
        if row.status == "MISSING" and tap_for(row.key) is not None and not row.is_input:
            return row, (f"`{row.key}` is missing from ours while everything before it agrees: the step that "
                         f"computes it (inside `{row.key.rsplit('.', 1)[0]}`) did not run")
        if row.status not in ("DIFF", "SHAPE"):
            continue
        at = f" (first at {row.token_word} {row.first_token})" if row.first_token is not None else ""
        if row.status == "SHAPE":
            at = f" ({row.note})"
        if row.is_input:
            return row, f"the inputs differ: `{row.key}`{at}; the two runs were not given the same inputs"
        mod, is_module = where(row.key, ref_keys)
        if is_module:
            return row, f"inputs of `{mod}` agree, its output differs{at}"
        if tap_for(mod) is None:                      # a golden-case key that stands for no tap
            return row, (f"`{row.key}` is the first to differ{at}; every traced tap before it agrees: it is made "
                         f"by steps that are not traced (decode steps and later calls need --all-calls)")
        parent = re.sub(r"(\.\d+)+$", "", mod).rsplit(".", 1)[0]        # deepstack.0 -> thinker.model
        return row, (f"`{mod}` is the first to differ{at}; everything before it agrees: look at the step that "
                     f"computes it inside `{parent}`")
    return None


def _num(v: float, fmt: str) -> str:
    return "-" if v != v else f"{v:{fmt}}"


def format_rows(rows: list[Row]) -> list[str]:
    lines = [f"{'status':<8}{'key':<58}{'max_abs':>10}{'rel':>10}{'tol':>8}{'NMSE dB':>9}{'cosine':>10}  "
             f"per-token rel p50 / p99 / max, first past tol"]
    for r in rows:
        tol = "exact" if r.tol == 0.0 else _num(r.tol, ".0e")
        tok = ""
        if r.token_q:
            tok = " / ".join(f"{q:.1e}" for q in r.token_q)
            tok += f", {r.token_word} {r.first_token}" if r.first_token is not None else ""
        name = r.key + (" (input)" if r.is_input else "")
        lines.append(f"{r.status:<8}{name:<58}{_num(r.max_abs, '.2e'):>10}{_num(r.rel, '.2e'):>10}{tol:>8}"
                     f"{_num(r.nmse_db, '.1f'):>9}{_num(r.cosine, '.6f'):>10}  {tok or r.note}")
    return lines



# ---------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="omniref compare", description="compare a trace with a reference trace "
                                 "key by key, in data-flow order")
    ap.add_argument("ours", help="trace under test (.npz)")
    ap.add_argument("reference", help="reference trace (.npz) or golden case directory")
    ap.add_argument("--rtol", type=float, help="relative tolerance for every float key (default: the case "
                    "tolerances of omniref verify, 1e-4 for most)")
    ap.add_argument("--first", action="store_true", help="stop at the first divergence and say where to look")
    ap.add_argument("-q", "--quiet", action="store_true", help="print only keys that do not agree")
    args = ap.parse_args(argv)
    try:
        ours, ref = load_trace(args.ours), load_trace(args.reference)
    except TraceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows, extra = compare(ours, ref, args.rtol)
    found = first_divergence(rows, ref.arrays)
    shown = rows[:rows.index(found[0]) + 1] if args.first and found else rows
    print("\n".join(format_rows([r for r in shown if not args.quiet or r.status != "OK"])))
    counts = {s: sum(r.status == s for r in rows) for s in ("OK", "DIFF", "SHAPE", "MISSING")}
    print(f"{counts['OK']} agree, {counts['DIFF']} differ, {counts['SHAPE']} shape, {counts['MISSING']} missing; "
          f"{len(extra)} only in ours (not compared)")
    if found:
        print(f"first divergence: {found[0].key}: {found[1]}")
    elif not rows:
        print("no key in common: nothing was compared")
        return 1
    return 1 if found or counts["MISSING"] else 0


if __name__ == "__main__":
    sys.exit(main())
