"""The fuzz suite: seeded bad inputs (checkpoints, configs, media, ids, CLI misuse) against the real CLI.

Every case must end in the expected omniref error (its exit code, a one-line message naming the culprit) or,
for a benign mutation, in exactly the unmutated output. A traceback, crash, hang, silent acceptance, changed
output, refused valid input or memory blow-up fails the test, listing each failing case. The cases are built
from the committed golden cases into a temporary folder (fuzz_cases.py) and run in capped worker processes
(fuzz_harness.py); `python tests/fuzz_harness.py [--seed N]` prints the same table outside pytest.
OMNIREF_FUZZ_SEED picks another seed (the default, 0, is what CI runs).
"""
from __future__ import annotations

import os
from collections import Counter

import fuzz_cases
from fuzz_harness import FAILURES, run_cases, table

SEED = int(os.environ.get("OMNIREF_FUZZ_SEED", "0"))


def test_fuzz_suite(tmp_path):
    cases = fuzz_cases.all_cases(tmp_path, SEED)
    sizes = Counter(c.category for c in cases)
    assert sizes[fuzz_cases.CKPT] >= 200 and sizes[fuzz_cases.CONFIG] >= 200 and sizes[fuzz_cases.MEDIA] >= 100
    assert sizes[fuzz_cases.TOKENS] >= 20 and sizes[fuzz_cases.CLI] >= 20
    results = run_cases(cases, tmp_path)
    print("\n" + table(results))
    failed = [f"{o}: {c.category} / {c.name}: {d}" for c, o, d in results if o in FAILURES]
    assert not failed, f"{len(failed)} of {len(results)} fuzz cases failed (seed {SEED}):\n" + "\n".join(failed)
