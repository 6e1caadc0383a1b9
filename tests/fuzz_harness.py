"""Fuzz harness: run bad-input cases in bounded worker processes and classify every outcome.

    cases (fuzz_cases.py) --split over 2 workers--> worker: for each case, `omniref.cli.main(argv)` in-process,
    stdout/stderr captured --one JSON line per case--> parent: classify, tabulate (category x outcome)

A worker is a fresh `python tests/fuzz_harness.py --worker` with an address-space cap (RLIMIT_AS), no core
files and single-threaded BLAS. Running many cases per process keeps the suite at a couple of minutes on two
cores; safety comes from the parent, which watches the worker's progress: a case that runs past its timeout
is a *hang* (the worker is killed and restarted after that case), a worker that dies on a signal is a
*crash*, and a MemoryError under the cap is a *memory blow-up*. Cases that need their own environment (an
OMNIREF_BACKEND value read at import) get a worker of their own.

Outcomes, as the issue's table counts them:
    clear error    non-zero exit with the expected class's exit code, the last stderr line starts with
                   "omniref" and matches the case's culprit pattern (file / field / key / value)
    correct        exit 0 and stdout equal to the unmutated baseline's (a benign mutation)
    silent         exit 0 for a bad input, or a benign mutation that changed the output
    traceback      an exception escaped the CLI, or a Traceback on stderr
    unclear error  refused, but with the wrong exit code or a message that does not name the culprit
    crash / hang / memory    see above
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUTCOMES = ("clear error", "correct", "traceback", "crash", "hang", "silent", "memory", "unclear error")
FAILURES = ("traceback", "crash", "hang", "silent", "memory", "unclear error")
EXIT_CODES = {"OmnirefError": 2, "CheckpointError": 3, "ConfigError": 4, "MediaError": 5, "InputError": 6,
              "usage": 2}
MEMORY_CAP = 3 * 1024 ** 3       # bytes of address space per worker (the tiny model needs < 1 GiB)
CASE_TIMEOUT = 30.0              # seconds one case may take before it counts as a hang


@dataclass
class Case:
    """One bad (or benign) input: CLI arguments and what must come of them."""
    category: str
    name: str
    argv: list
    error: str | None = None       # expected error class (EXIT_CODES), "FAIL" (verify reports a mismatch of the
                                   # key `culprit`), or None: must equal the baseline
    culprit: str | None = None     # regex the error line must match (names the file / field / key)
    baseline: str | None = None    # name of the baseline case whose stdout a benign case must reproduce
    env: dict = field(default_factory=dict)   # a case with its own environment runs in its own worker
    files: list = field(default_factory=list)  # paths the case must not change or create (outputs refused)

    def __post_init__(self):
        self.argv = [str(a) for a in self.argv]


# -------------------------------------------------------------------------------------------------- worker
def _limit_worker() -> None:
    """preexec_fn: cap the address space, no core dumps, own process group (so a kill takes its children)."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.setpgrp()


def run_one(argv: list) -> dict:
    """Run the CLI in-process -> {rc, stdout, stderr, exc}."""
    from omniref import cli
    out, err = io.StringIO(), io.StringIO()
    exc = None
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = cli.main([str(a) for a in argv])
    except SystemExit as e:                       # argparse usage errors
        rc = e.code if isinstance(e.code, int) else 1
    except MemoryError:
        rc, exc = None, "MemoryError"
    except BaseException as e:                    # noqa: BLE001 - classified as a traceback by the parent
        rc, exc = None, f"{type(e).__name__}: {str(e)[:300]}"
    return {"rc": rc, "stdout": out.getvalue()[-4000:], "stderr": err.getvalue()[-4000:], "exc": exc}


def worker(case_file: str, result_file: str, start: int) -> None:
    cases = json.loads(Path(case_file).read_text())
    with open(result_file, "a") as res:
        for i in range(start, len(cases)):
            res.write(json.dumps({"start": i}) + "\n")
            res.flush()
            r = run_one(cases[i]["argv"])
            r["i"] = i
            res.write(json.dumps(r) + "\n")
            res.flush()


# -------------------------------------------------------------------------------------------------- parent
def _worker_env(extra: dict) -> dict:
    env = dict(os.environ)
    env.update({"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                "OMNIREF_NUM_THREADS": "1", "PYTHONHASHSEED": "0"})
    env.update(extra)
    return env


def _run_chunk(cases: list[Case], workdir: Path, tag: str, env: dict) -> dict[int, dict]:
    """Run `cases` in one worker (environment `env` added), restarting it after a hang or crash
    -> {index: raw result}."""
    case_file, result_file = workdir / f"cases_{tag}.json", workdir / f"results_{tag}.jsonl"
    case_file.write_text(json.dumps([asdict(c) for c in cases]))
    result_file.write_text("")
    results: dict[int, dict] = {}
    start = 0
    env = _worker_env(env)
    while start < len(cases):
        proc = subprocess.Popen([sys.executable, __file__, "--worker", str(case_file), str(result_file), str(start)],
                                cwd=ROOT, env=env, preexec_fn=_limit_worker,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        current, last = None, time.monotonic()
        seen = 0
        while True:
            lines = _complete_lines(result_file)
            for line in lines[seen:]:
                r = json.loads(line)
                if "start" in r:
                    current, last = r["start"], time.monotonic()
                elif "i" in r:
                    results[r["i"]] = r
                    current = None
            seen = len(lines)
            rc = proc.poll()
            if rc is not None:
                break
            if current is not None and time.monotonic() - last > CASE_TIMEOUT:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                results[current] = {"hang": True}
                break
            time.sleep(0.02)
        lines = _complete_lines(result_file)
        for line in lines[seen:]:
            r = json.loads(line)
            if "i" in r:
                results[r["i"]] = r
            elif "start" in r:
                current = r["start"]
        if current is not None and current not in results:
            stderr = proc.stderr.read().decode(errors="replace")[-300:] if proc.stderr else ""
            results[current] = {"crash": proc.returncode, "stderr": stderr}
        if proc.stderr:
            proc.stderr.close()
        start = max([start - 1] + list(results)) + 1
    return results


def _norm(stdout: str | None) -> str | None:
    """Output minus what legitimately differs between two runs on copies of a case: its folder, timings."""
    if stdout is None:
        return None
    lines = [ln for ln in stdout.splitlines() if not ln.startswith("== ")]          # verify's case header
    lines = [re.sub(r"^\S+: (\d+ pass)", r"CASE: \1", ln) for ln in lines]           # verify's summary line
    return "\n".join(re.sub(r"\[\d+\.\d+ s\]", "", ln) for ln in lines)


def _complete_lines(path: Path) -> list[str]:
    """The lines the worker has finished writing (a line still being written has no newline yet), as JSON
    texts; a line cut short by a killed worker (and glued to the next worker's first line) becomes "{}"."""
    text = path.read_text()
    lines = text[:text.rfind("\n") + 1].splitlines()
    out = []
    for line in lines:
        try:
            json.loads(line)
            out.append(line)
        except json.JSONDecodeError:
            out.append("{}")
    return out


def classify(case: Case, r: dict, baselines: dict[str, str]) -> tuple[str, str]:
    """Raw result -> (outcome, detail)."""
    if r.get("hang"):
        return "hang", f"no result after {CASE_TIMEOUT:.0f} s"
    if "crash" in r:
        return "crash", f"worker exit {r['crash']}: {r.get('stderr', '')}"
    if r["exc"] == "MemoryError":
        return "memory", "MemoryError under the address-space cap"
    if r["exc"]:
        return "traceback", r["exc"]
    lines = [ln for ln in r["stderr"].splitlines() if ln.strip()]
    if "Traceback (most recent call last)" in r["stderr"]:
        return "traceback", lines[-1] if lines else ""
    if lines and "unexpected" in lines[-1] and "--debug" in lines[-1]:   # the CLI's net for unforeseen errors
        return "traceback", lines[-1]
    changed = [f for f in case.files if _changed(f)]
    if r["rc"] == 0:
        if case.error is not None:
            return "silent", f"exit 0; expected {case.error}" + (f"; wrote {changed}" if changed else "")
        if case.baseline is not None and _norm(r["stdout"]) != _norm(baselines.get(case.baseline)):
            return "silent", f"stdout {r['stdout'][:120]!r} != baseline {str(baselines.get(case.baseline))[:120]!r}"
        return "correct", ""
    last = lines[-1] if lines else ""
    if changed:
        return "silent", f"refused but changed {changed}"
    if case.error is None:
        return "unclear error", f"a valid input was refused (exit {r['rc']}): {last}"
    if case.error == "usage":
        ok = r["rc"] == 2 and "error:" in last
    elif case.error == "FAIL":                    # verify must report a mismatch, naming the key
        ok = r["rc"] == 1 and any("FAIL" in ln and re.search(case.culprit, ln) for ln in r["stdout"].splitlines())
        last = next((ln for ln in r["stdout"].splitlines() if "FAIL" in ln), last)
    else:                                         # "A|B": either class is right (an ambiguous input)
        codes = {EXIT_CODES[e] for e in case.error.split("|")}
        ok = r["rc"] in codes and last.startswith("omniref") and (
            case.culprit is None or re.search(case.culprit, last) is not None)
    return ("clear error" if ok else "unclear error"), f"exit {r['rc']}: {last}"


_SNAPSHOTS: dict[str, tuple] = {}


def _snapshot(path: str) -> tuple:
    try:
        st = os.lstat(path)
        return (st.st_mtime_ns, st.st_size, st.st_mode)
    except OSError:
        return ()


def _changed(path: str) -> bool:
    return _snapshot(path) != _SNAPSHOTS.get(path)


def run_cases(cases: list[Case], workdir: Path, workers: int = 2) -> list[tuple[Case, str, str]]:
    """Run every case (baselines first in each worker) -> [(case, outcome, detail)]."""
    for c in cases:
        for f in c.files:
            _SNAPSHOTS[f] = _snapshot(f)
    plain = [c for c in cases if not c.env]
    own_env = [c for c in cases if c.env]
    chunks = [plain[k::workers] for k in range(workers)] + [[c] for c in own_env]
    baselines_cases = [c for c in plain if c.category == "baseline"]
    # every worker first runs the baselines so that its own results are comparable
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(_run_chunk, baselines_cases + [c for c in ch if c.category != "baseline"],
                               workdir, f"w{k}", ch[0].env if ch else {}) for k, ch in enumerate(chunks)]
        raw = [f.result() for f in futures]
    out, baselines = [], {}
    for k, ch in enumerate(chunks):
        ordered = baselines_cases + [c for c in ch if c.category != "baseline"]
        res = raw[k]
        if k == 0:
            for j, c in enumerate(baselines_cases):
                r = res.get(j, {})
                if r.get("rc") != 0:
                    raise RuntimeError(f"baseline {c.name} failed: {r}")
                baselines[c.name] = r["stdout"]
        for j, c in enumerate(ordered):
            if c.category == "baseline":
                continue
            out.append((c, *classify(c, res.get(j, {"crash": "no result"}), baselines)))
    return out


def table(results: list[tuple[Case, str, str]]) -> str:
    """Markdown table: category x outcome counts."""
    cats = sorted({c.category for c, _, _ in results}, key=lambda s: list(CATEGORY_ORDER).index(s)
                  if s in CATEGORY_ORDER else 99)
    head = "| category | tried | " + " | ".join(OUTCOMES) + " |"
    rows = [head, "|" + "---|" * (len(OUTCOMES) + 2)]
    for cat in cats + ["total"]:
        mine = [o for c, o, _ in results if c.category == cat or cat == "total"]
        rows.append(f"| {cat} | {len(mine)} | " + " | ".join(str(mine.count(o)) for o in OUTCOMES) + " |")
    return "\n".join(rows)


CATEGORY_ORDER = ("checkpoint mutants (generate)", "config mutants (generate)", "config mutants (verify)",
                  "media (WAV / image / video)", "token / code inputs", "CLI misuse")


def main() -> int:
    import argparse
    import tempfile
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import fuzz_cases
    p = argparse.ArgumentParser(description="run the fuzz suite and print the category x outcome table")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--show", default="failures", choices=["failures", "all"])
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="omniref_fuzz_") as tmp:
        t0 = time.monotonic()
        cases = fuzz_cases.all_cases(Path(tmp), args.seed)
        results = run_cases(cases, Path(tmp))
        for c, o, d in results:
            if args.show == "all" or o in FAILURES:
                print(f"{o:14s} {c.category} / {c.name}: {d}")
        print(table(results))
        print(f"{len(results)} cases in {time.monotonic() - t0:.0f} s (seed {args.seed})")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        sys.exit(main())
