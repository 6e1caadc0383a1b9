"""The omniref course: what the tutorials need to run both as scripts and as notebooks, the exercise
checkers, and the static-HTML rendering of the whole course.

    notebook.py    where files live (repo root, bundled data, shipped golden cases, output folder) and `show`
    exercises.py   every exercise: its task, the function it asks for, and a checker
    solutions.py   reference solutions, kept apart from the exercises (the tests prove each one passes)
    render.py      tutorials/*.py -> executed notebooks -> static HTML with figures
    __main__.py    `python -m omniref.course list | check ID [FILE] | html OUT_DIR [--force]`

An app-layer package: it imports the model and the harness, nothing imports it except the tutorials.
"""
from omniref.course.notebook import case, data_file, in_notebook, output_dir, repo_root, show

__all__ = ["case", "data_file", "in_notebook", "output_dir", "repo_root", "show", "check"]


def check(exercise_id: str, answer) -> bool:
    """Check an answer from a notebook or script: prints PASS / FAIL / NOT YET and returns True on PASS.

    Never raises on a wrong or missing answer, so a tutorial keeps running with its exercise stubs.
    """
    from omniref.course.exercises import run_check
    return run_check(exercise_id, answer).passed
