"""The course's exercises: every reference solution passes its checker, empty and wrong answers fail, every
chapter has 2-4 exercises, and the command line checks answer files and guards the HTML output folder."""
from __future__ import annotations

import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from omniref.course import render
from omniref.course.exercises import EXERCISES, run_check
from omniref.course.solutions import SOLUTIONS


def test_every_exercise_has_a_solution_and_every_chapter_2_to_4_exercises():
    assert set(SOLUTIONS) == set(EXERCISES)
    per_chapter = Counter(i.split(".")[0] for i in EXERCISES)
    chapters = [p.name[:2] for p in render.chapters()]
    assert sorted(per_chapter) == chapters
    assert all(2 <= n <= 4 for n in per_chapter.values()), per_chapter


@pytest.mark.parametrize("exercise", sorted(EXERCISES))
def test_reference_solution_passes(exercise):
    result = run_check(exercise, SOLUTIONS[exercise], quiet=True)
    assert result.passed, result.message


@pytest.mark.parametrize("exercise", sorted(EXERCISES))
def test_empty_answers_fail(exercise):
    def stub(*args, **kwargs):
        raise NotImplementedError

    assert run_check(exercise, stub, quiet=True).message.startswith("NOT YET")
    result = run_check(exercise, lambda *args, **kwargs: None, quiet=True)
    assert not result.passed and result.message.startswith("FAIL")


def test_planted_bugs_are_caught():
    from omniref.course.solutions import chat_prompt_fixed

    def no_final_newline(ids, content):
        return chat_prompt_fixed(ids, content)[:-1]

    def interleaved_rotate_half(x):                       # the GPT-J pairing instead of split-half
        out = np.empty_like(x)
        out[..., 0::2], out[..., 1::2] = -x[..., 1::2], x[..., 0::2]
        return out

    assert not run_check("08.3", no_final_newline, quiet=True).passed
    assert not run_check("04.2", interleaved_rotate_half, quiet=True).passed


def test_check_command_on_answer_files(tmp_path):
    good, bad = tmp_path / "good.py", tmp_path / "bad.py"
    good.write_text("def conv_length(n):\n    for _ in range(3):\n        n = (n - 1) // 2 + 1\n    return n\n")
    bad.write_text("def conv_length(n):\n    return n // 8\n")
    run = lambda *a: subprocess.run([sys.executable, "-m", "omniref.course", *a], capture_output=True, text=True)
    ok = run("check", "02.1", str(good))
    assert ok.returncode == 0 and "PASS" in ok.stdout
    wrong = run("check", "02.1", str(bad))
    assert wrong.returncode == 1 and "FAIL" in wrong.stdout
    missing = run("check", "02.1", str(tmp_path / "none.py"))
    assert missing.returncode == 2 and "no such answer file" in missing.stderr and "Traceback" not in missing.stderr
    unknown = run("check", "99.9", str(good))
    assert unknown.returncode == 2 and "no exercise" in unknown.stderr


def test_html_refuses_an_existing_folder(tmp_path):
    r = subprocess.run([sys.executable, "-m", "omniref.course", "html", str(tmp_path)], capture_output=True,
                       text=True)
    assert r.returncode == 2 and "--force" in r.stderr and list(tmp_path.iterdir()) == []
